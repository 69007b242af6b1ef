#!/usr/bin/env bash
# Runs the e2e tests (every #[ignore]d test of the switchyard-e2e crate), each in network, pid and mount
# namespaces of its own with a real control plane: see e2e/README.md.
#
#   e2e/run.sh                      all e2e tests
#   e2e/run.sh harness_smoke        the tests whose name contains this (libtest filter)
#
# Needs root (unshare), util-linux, iproute2, redis-server, Go (first build of the control plane only).
# Builds, all cached after the first run: the control plane (e2e/toolchain/build.sh), the switchyard binary
# and the test binaries. Cargo runs outside the namespaces (it may need the registry); only the built test
# binaries run inside. Logs of every run are kept in target/e2e-runs/ (the path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'e2e/run.sh: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root: each test creates its own network namespace with unshare"
for tool in unshare ip redis-server; do
  command -v "$tool" >/dev/null || die "$tool not found (Debian: util-linux, iproute2, redis-server)"
done

./e2e/toolchain/build.sh >/dev/null # instant when the binaries are current
cargo build --locked --bin switchyard
cargo test --locked -p switchyard-e2e --no-run
exec cargo test --locked -p switchyard-e2e --test '*' -- --ignored --test-threads=1 --nocapture "$@"
