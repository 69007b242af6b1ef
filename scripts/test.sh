#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what the tests need, then runs every tier.
#   ./scripts/test.sh            everything
#   ./scripts/test.sh quick      formatting, lints and the Rust tests only
set -euo pipefail
cd "$(dirname "$0")/.."
tier=${1:-all}

step() { printf '\n==> %s\n' "$*"; }

step "formatting"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Rust tests (unit, property, integration against real processes)"
cargo test --workspace --locked

if [ "$tier" = quick ]; then
  exit 0
fi

step "fuzz targets build"
./fuzz/check.sh --smoke
