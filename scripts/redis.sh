#!/usr/bin/env bash
# Makes redis-server and redis-cli available for the Redis locator tests (cluster/tests/redis_locator.rs),
# which start their own redis-server processes on free loopback ports.
#
# Idempotent: when both are already on PATH it only reports their version. Otherwise it installs Debian's
# redis-server package (running `apt-get update` first when the package lists do not know it) without
# letting the package start its system service, and makes sure no such service stays enabled or running:
# the tests need no Redis on port 6379, and one left running would only cost memory.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
  echo "redis: $(redis-server --version)"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "redis: redis-server is not on PATH and this is not a Debian-like system; install Redis (>= 6) so that" >&2
  echo "       redis-server and redis-cli are on PATH" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "redis: installing redis-server needs root (or sudo)" >&2
    exit 1
  fi
  sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive

# Keep invoke-rc.d / deb-systemd-invoke from starting the service during the installation (policy-rc.d
# exit code 101: "action forbidden"). An existing policy is left alone.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  own_policy=true
fi
cleanup() {
  if [ "$own_policy" = true ]; then
    "${sudo[@]}" rm -f "$policy"
  fi
}
trap cleanup EXIT

if ! apt-cache show redis-server >/dev/null 2>&1; then
  echo "redis: apt-get update"
  "${sudo[@]}" apt-get update -qq
fi
echo "redis: apt-get install redis-server"
if ! "${sudo[@]}" apt-get install -y -qq redis-server >/dev/null; then
  # Stale package lists (a mirror moved on): refresh once and retry.
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq redis-server >/dev/null
fi

# The tests run their own instances: disable and stop any service the package set up.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  "${sudo[@]}" systemctl disable --now redis-server.service >/dev/null 2>&1 || true
elif command -v service >/dev/null 2>&1; then
  "${sudo[@]}" service redis-server stop >/dev/null 2>&1 || true
fi
if command -v update-rc.d >/dev/null 2>&1; then
  "${sudo[@]}" update-rc.d redis-server disable >/dev/null 2>&1 || true
fi

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "redis: installed redis-server, but redis-server or redis-cli is still not on PATH" >&2
  exit 1
fi
echo "redis: $(redis-server --version)"
