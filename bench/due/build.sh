#!/usr/bin/env bash
# Builds the due programs of bench/due (due's own client, gate and node and the harness tools) into
# bench/.build/bin/, from the Go module proxy, with the Go toolchain due v2.4.2 builds with (go1.25.5,
# fetched by the go command itself through GOTOOLCHAIN: due's pinned sonic v1.14.1 does not compile with Go
# 1.26). Used by the benchmark (bench/run.py) and by the test suite (tests/due_client.rs runs `scenario`).
# Idempotent: go's build cache makes a second run take seconds. Prints the directory of the binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../.build/bin}"
mkdir -p "$out"
command -v go >/dev/null 2>&1 || { echo "bench/due/build.sh: go is missing" >&2; exit 1; }
cd "$here"
GOTOOLCHAIN=go1.25.5 GOFLAGS="-mod=readonly -buildvcs=false" nice -n 10 go build -trimpath -o "$out/" ./... >&2
cd "$out" && pwd
