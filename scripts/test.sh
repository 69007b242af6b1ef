#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what the tests need, then runs every tier.
#   ./scripts/test.sh            everything
#   ./scripts/test.sh quick      formatting, lints, the Rust tests and the benchmark harness's unit tests (not the TypeScript, browser, fuzz,
#                                kube-apiserver and end-to-end tiers)
set -euo pipefail
cd "$(dirname "$0")/.."
tier=${1:-all}
started=$SECONDS

# Each step prints the elapsed time when it starts; the previous step's own duration is printed then too,
# and the list of all of them at the end (on success; a failing step ends the run where it fails).
durations=() current="" current_start=$SECONDS
step() {
  if [ -n "$current" ]; then
    durations+=("$(printf '%5ss  %s' "$((SECONDS - current_start))" "$current")")
    printf '<== %ss: %s\n' "$((SECONDS - current_start))" "$current"
  fi
  current="$*" current_start=$SECONDS
  printf '\n==> [%4ss] %s\n' "$((SECONDS - started))" "$*"
}
summary() {
  step "done in $((SECONDS - started))s"
  printf '%s\n' "tier durations:" "${durations[@]}"
}

step "prerequisites: redis-server, prometheus + promtool, umoci, containerd, runc (Debian packages), openssl"
./scripts/redis.sh
./scripts/prometheus.sh
./scripts/container-tools.sh
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }

step "prerequisites: Node.js, the TypeScript SDK's npm packages, Debian's chromium, python3, due's Go client"
./scripts/clients.sh

step "Kubernetes control plane and helm from Go modules (about 20 minutes the first time, cached after)"
./e2e/toolchain/build.sh

step "formatting"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The node SDK without its default features (no Redis, Kubernetes or OTLP): the lean build a game may pick.
cargo clippy -p switchyard-node -p switchyard-cluster --no-default-features --lib --locked -- -D warnings

step "Rust tests: unit, property, and integration against real processes and redis-server"
cargo test --workspace --locked

step "benchmark harness: unit tests (resuming a run, the phases' bookkeeping, the report's bounds, the TIME_WAIT reading, the profiler's cells)"
python3 -m unittest discover -s bench/tests

if [ "$tier" = quick ]; then
  summary
  exit 0
fi

step "TypeScript SDK: build (tsc) and unit tests (node --test), the demo page's copy of the SDK checked fresh"
(cd clients/typescript && npm run --silent build && node --test test/unit/)

step "TypeScript SDK: integration tests against real switchyard dev processes (TCP, WebSocket, heartbeats, reconnect)"
(cd clients/typescript && SWITCHYARD_BIN="$PWD/../../target/debug/switchyard" node --test --test-concurrency=1 test/integration/)

step "browser demo in headless Chromium: two players chat in two pages"
(cd clients/typescript && SWITCHYARD_BIN="$PWD/../../target/debug/switchyard" node --test test/browser/)

step "fuzz targets build and survive a smoke run"
./fuzz/check.sh --smoke

step "tests against a real kube-apiserver: Kubernetes registry, operator, Helm chart"
cargo test --workspace --locked --exclude switchyard-e2e -- --ignored

step "end-to-end: control plane and a real node (kubelet, containerd, kube-proxy, CoreDNS) in a network namespace"
./e2e/run.sh

summary
