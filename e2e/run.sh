#!/usr/bin/env bash
# Runs the e2e tests (every #[ignore]d test of the switchyard-e2e crate), each in network, pid and mount
# namespaces of its own with a real control plane: see e2e/README.md.
#
#   e2e/run.sh                      all e2e tests
#   e2e/run.sh harness_smoke        the tests whose name contains this (libtest filter)
#
# Needs root (unshare), util-linux, iproute2, redis-server, Go (first build of the control plane only), and
# for the real node containerd, runc, CNI plugins, iptables, nft, umoci (scripts/container-tools.sh installs
# them). The real node's tests: e2e/tests/node.rs, and e2e/tests/network_policy.rs (NetworkPolicies enforced by
# the toolchain's kube-network-policies; `e2e/run.sh network_policy` runs just those).
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

bin="$(./e2e/toolchain/build.sh | tail -n1)" # instant when the binaries are current
cargo build --locked --bin switchyard

# The real node's images (e2e/src/node.rs imports every archive here): ours from the binary just built (twice:
# the journey rolls from one to the other), the
# managed Redis from Debian's redis-server, the pod sandbox and CoreDNS from the toolchain. Rebuilt only when
# the binary is newer than its archive (image.sh is reproducible, so a rebuild gives the same digest anyway).
./scripts/container-tools.sh >/dev/null
images=target/images/e2e
mkdir -p "$images"
image() { # image ARCHIVE BINARY ARGS...
  local archive="$images/$1" binary="$2"
  shift 2
  if [ ! -f "$archive" ] || [ "$binary" -nt "$archive" ] || [ scripts/image.sh -nt "$archive" ]; then
    ./scripts/image.sh "$@" --out "$archive" >/dev/null
  fi
}
image switchyard-e2e.tar target/debug/switchyard --binary target/debug/switchyard --name registry.local/switchyard:e2e
# The journey's rollouts: the same binary as another image (version label `rolled`: another config, another
# digest), so a rollout really changes what the kubelet runs.
image switchyard-rolled.tar target/debug/switchyard --binary target/debug/switchyard --name registry.local/switchyard:rolled
image redis-e2e.tar "$(readlink -f "$(command -v redis-server)")" --redis --name registry.local/redis:e2e
image pause-e2e.tar "$bin/pause" --binary "$bin/pause" --name registry.local/pause:e2e --user 65535
image coredns-e2e.tar "$bin/coredns" --binary "$bin/coredns" --name registry.local/coredns:e2e
cargo test --locked -p switchyard-e2e --no-run
exec cargo test --locked -p switchyard-e2e --test '*' -- --ignored --test-threads=1 --nocapture "$@"
