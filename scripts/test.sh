#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what the tests need, then runs every tier.
#   ./scripts/test.sh            everything
#   ./scripts/test.sh quick      formatting, lints and the Rust tests (not the TypeScript, browser, fuzz,
#                                kube-apiserver and end-to-end tiers)
set -euo pipefail
cd "$(dirname "$0")/.."
tier=${1:-all}
started=$SECONDS

step() { printf '\n==> [%4ss] %s\n' "$((SECONDS - started))" "$*"; tier_started=$SECONDS; }
# Prints how long the tier since the last step took.
took() { printf '    (%ss)\n' "$((SECONDS - tier_started))"; }

step "prerequisites: redis-server and prometheus + promtool (Debian packages), openssl"
./scripts/redis.sh
./scripts/prometheus.sh
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }

step "prerequisites: Node.js, the TypeScript SDK's npm packages, Debian's chromium, python3, due's Go client"
./scripts/clients.sh
took

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

if [ "$tier" = quick ]; then
  exit 0
fi

step "TypeScript SDK: build (tsc) and unit tests (node --test), the demo page's copy of the SDK checked fresh"
(cd clients/typescript && npm run --silent build && node --test test/unit/)
took

step "TypeScript SDK: integration tests against real switchyard dev processes (TCP, WebSocket, heartbeats, reconnect)"
(cd clients/typescript && SWITCHYARD_BIN="$PWD/../../target/debug/switchyard" node --test --test-concurrency=1 test/integration/)
took

step "browser demo in headless Chromium: two players chat in two pages"
(cd clients/typescript && SWITCHYARD_BIN="$PWD/../../target/debug/switchyard" node --test test/browser/)
took

step "fuzz targets build and survive a smoke run"
./fuzz/check.sh --smoke

step "tests against a real kube-apiserver: Kubernetes registry, operator, Helm chart"
cargo test --workspace --locked --exclude switchyard-e2e -- --ignored

step "end-to-end: control plane and pod runner in a network namespace"
./e2e/run.sh

step "done in $((SECONDS - started))s"
