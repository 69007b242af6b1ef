#!/usr/bin/env bash
# Installs what the benchmark harness needs, idempotently: Debian's etcd-server (due's registry),
# redis-server (both systems' locator) and linux-perf (system calls, profiles), and matplotlib (the chart). Rust (cargo) and Go must already be
# there; the Go toolchain due v2.4.2 builds with (go1.25.5) is fetched by the go command itself through
# the Go module proxy (GOTOOLCHAIN), because due's pinned sonic v1.14.1 does not compile with Go 1.26.
set -euo pipefail

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# perf: system calls per request (efficiency phase) and bench/profile.sh
command -v perf >/dev/null 2>&1 || need_apt+=(linux-perf)
if ((${#need_apt[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "install.sh: apt-get install ${need_apt[*]}"
    $SUDO apt-get update -qq
    # Debian's packages start system services where systemd runs; the harness starts its own instances
    # on its own ports and never uses those.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import matplotlib' >/dev/null 2>&1; then
    echo "install.sh: pip install matplotlib"
    "$PY" -m pip install -q matplotlib 2>/dev/null || "$PY" -m pip install -q --user matplotlib
fi

command -v cargo >/dev/null 2>&1 || { echo "install.sh: cargo is missing" >&2; exit 1; }
command -v go >/dev/null 2>&1 || { echo "install.sh: go is missing" >&2; exit 1; }
echo "install.sh: etcd $(etcd --version | head -1 | awk '{print $3}'), $(redis-server --version | awk '{print $3}'), matplotlib $("$PY" -c 'import matplotlib; print(matplotlib.__version__)')"
