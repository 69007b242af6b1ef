#!/usr/bin/env bash
# Makes the container tools the image and node tests use available: umoci and jq (scripts/image.sh),
# containerd, runc and ctr (running images, tests/image.rs and the e2e node), the CNI plugins, iptables and
# conntrack (the e2e node's pod network and kube-proxy), nft and nsenter (its NetworkPolicy enforcement and
# the tests of it).
#
# Idempotent: when every command is already on PATH it only reports versions. Otherwise it installs the
# Debian packages (running `apt-get update` first when the package lists do not know them) without
# letting a package start its system service: the tests start their own containerd with its own root,
# state and socket, and one left running would only cost memory.
set -euo pipefail

# command -> Debian package
declare -A want=(
  [umoci]=umoci [jq]=jq [containerd]=containerd [ctr]=containerd [runc]=runc
  [iptables]=iptables [conntrack]=conntrack [nft]=nftables [nsenter]=util-linux
)
missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || missing+=(containernetworking-plugins)

if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || {
    echo "container-tools: missing ${missing[*]} and this is not a Debian-like system" >&2
    exit 1
  }
  [ "$(id -u)" -eq 0 ] || { echo "container-tools: installing ${missing[*]} needs root" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
  # Keep invoke-rc.d from starting containerd during the installation (policy-rc.d exit 101: "action
  # forbidden"). An existing policy is left alone.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-cache show "${packages[0]}" >/dev/null 2>&1 || apt-get update -qq
  echo "container-tools: apt-get install ${packages[*]}"
  if ! apt-get install -y -qq "${packages[@]}" >/dev/null; then
    apt-get update -qq # stale package lists: refresh once and retry
    apt-get install -y -qq "${packages[@]}" >/dev/null
  fi
  if command -v service >/dev/null 2>&1; then
    service containerd stop >/dev/null 2>&1 || true
  fi
fi

echo "container-tools: umoci $(umoci --version | awk '{print $3}'), containerd $(containerd --version | awk '{print $3}'), $(runc --version | head -n1)"
