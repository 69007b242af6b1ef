#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what the tests need, then runs every tier.
#   ./scripts/test.sh            everything
#   ./scripts/test.sh quick      formatting, lints and the Rust tests that need only redis-server and prometheus
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
  summary
  printf '%s\n' "tier durations:" "${durations[@]}"
}

step "prerequisites: redis-server, prometheus + promtool, umoci, containerd, runc (Debian packages), openssl"
./scripts/redis.sh
./scripts/prometheus.sh
./scripts/container-tools.sh
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }

step "Kubernetes control plane and helm from Go modules (about 20 minutes the first time, cached after)"
./e2e/toolchain/build.sh

step "formatting"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Rust tests: unit, property, and integration against real processes and redis-server"
cargo test --workspace --locked

if [ "$tier" = quick ]; then
  summary
  exit 0
fi

step "fuzz targets build and survive a smoke run"
./fuzz/check.sh --smoke

step "tests against a real kube-apiserver: Kubernetes registry, operator, Helm chart"
cargo test --workspace --locked --exclude switchyard-e2e -- --ignored

step "end-to-end: control plane and pod runner in a network namespace"
./e2e/run.sh

summary
