#!/usr/bin/env bash
# Builds the due programs of bench/due (due's own client, gate and node and the harness tools) into a
# directory of binaries (default bench/.build/bin/) and prints that directory.
#
#   build.sh [OUT]                 due v2.4.2 from the Go module proxy (go.mod), with go1.25.5, which the go
#                                  command fetches through GOTOOLCHAIN: v2.4.2 pins sonic v1.14.1, which does
#                                  not compile with Go 1.26.
#   DUE_SRC=DIR build.sh [OUT]     due v2.5.8 from the source tree DIR (the main module and its submodules
#                                  network/tcp, network/ws, locate/redis, registry/etcd), with the installed Go
#                                  (1.26) and the build tag due258 (internal/duever: renamed options). The module
#                                  file is generated under bench/.build/ (go.mod plus `replace` lines pointing
#                                  at DIR) and passed with -modfile, so bench/due/go.mod stays v2.4.2's.
#   DUE_VERSION=v2.5.8 build.sh    the same without a source tree: the module proxy at v2.5.8 (needs the
#                                  submodules published at that version, which this machine's proxy lacks).
#
# Used by the benchmark (bench/run.py) and by the test suite (tests/due_client.rs runs `scenario`).
# Idempotent: go's build cache makes a second run take seconds.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../.build/bin}"
mkdir -p "$out"
command -v go >/dev/null 2>&1 || { echo "bench/due/build.sh: go is missing" >&2; exit 1; }
if [[ -n "${DUE_SRC:-}" ]]; then
	DUE_SRC="$(cd "$DUE_SRC" && pwd)" || { echo "bench/due/build.sh: DUE_SRC=$DUE_SRC is not a directory" >&2; exit 2; }
fi
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$here"
submodules=(network/tcp network/ws locate/redis registry/etcd)
if [[ -z "${DUE_SRC:-}" && "${DUE_VERSION:-v2.4.2}" == "v2.4.2" ]]; then
	GOTOOLCHAIN=go1.25.5 GOFLAGS="-mod=readonly -buildvcs=false" nice -n 10 go build -trimpath -o "$out/" ./... >&2
	cd "$out" && pwd
	exit 0
fi
version="${DUE_VERSION:-v2.5.8}"
[[ "$version" == "v2.5.8" ]] || { echo "bench/due/build.sh: DUE_VERSION must be v2.4.2 or v2.5.8, not $version" >&2; exit 2; }
modfile_dir="$here/../.build/due-$version-mod"
mkdir -p "$modfile_dir"
modfile="$modfile_dir/go.mod"
cp go.mod "$modfile"
# The installed Go (1.26): due v2.5.8 asks for sonic v1.14.2, which does not compile with Go 1.26; sonic
# v1.15.5 does, so it is required explicitly (the same pin as the note on building due v2.5.8).
go mod edit -modfile="$modfile" -go=1.25.0 -toolchain=none
edits=(-require="github.com/dobyte/due/v2@$version" -require="github.com/bytedance/sonic@v1.15.5")
if [[ -n "${DUE_SRC:-}" ]]; then
	src="$DUE_SRC"
	[[ -f "$src/go.mod" ]] || { echo "bench/due/build.sh: DUE_SRC=$DUE_SRC holds no go.mod (not a due source tree)" >&2; exit 2; }
	grep -q '^module github.com/dobyte/due/v2$' "$src/go.mod" || { echo "bench/due/build.sh: $src/go.mod is not github.com/dobyte/due/v2" >&2; exit 2; }
	edits+=(-replace="github.com/dobyte/due/v2=$src")
	for m in "${submodules[@]}"; do
		edits+=(-require="github.com/dobyte/due/$m/v2@$version" -replace="github.com/dobyte/due/$m/v2=$src/$m")
	done
else
	for m in "${submodules[@]}"; do edits+=(-require="github.com/dobyte/due/$m/v2@$version"); done
fi
go mod edit -modfile="$modfile" "${edits[@]}"
[[ -f "$modfile_dir/go.sum" ]] || cp go.sum "$modfile_dir/go.sum"
GOTOOLCHAIN=local GOFLAGS="-buildvcs=false" go mod tidy -modfile="$modfile" >&2
GOTOOLCHAIN=local GOFLAGS="-buildvcs=false" nice -n 10 go build -modfile="$modfile" -tags due258 -trimpath -o "$out/" ./... >&2
cd "$out" && pwd
