#!/usr/bin/env bash
# Prints the path of the helm binary (v4.3.2) that e2e/toolchain/build.sh builds from Go modules into
# ${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/k8s-<version>/bin, building it first when it is missing.
#
#   "$(scripts/helm.sh)" lint charts/switchyard
#
# The first build makes the whole toolchain (etcd, kube-apiserver, kubectl, helm, ...; ~19 min on two busy
# cores, see e2e/toolchain/README.md); afterwards this is instant. Build output goes to stderr, so stdout
# is only the path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/e2e/toolchain/build.sh"

bin="$("$build" --print-bin-dir)"
if [ ! -x "$bin/helm" ]; then
	echo "helm.sh: $bin/helm is missing; building the toolchain with e2e/toolchain/build.sh" >&2
	"$build" >&2
fi
if [ ! -x "$bin/helm" ]; then
	echo "helm.sh: e2e/toolchain/build.sh finished but $bin/helm is still missing" >&2
	exit 1
fi
echo "$bin/helm"
