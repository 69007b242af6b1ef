#!/usr/bin/env bash
# Makes prometheus and promtool available for the observability tests (tests/observability.rs), which
# start their own Prometheus on a free loopback port and check the chart's alert rules with promtool.
#
# Idempotent: when both are already on PATH it only reports their version. Otherwise it installs Debian's
# prometheus package (it ships both binaries; `apt-get update` first when the package lists do not know
# it) without its recommended extras and without letting the package start its system service, and makes
# sure no such service stays enabled or running: the tests need no Prometheus on port 9090, and one left
# running would scrape nothing and cost memory.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  echo "prometheus: $(prometheus --version 2>&1 | head -n 1)"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "prometheus: prometheus is not on PATH and this is not a Debian-like system; install Prometheus (>= 2.40)" >&2
  echo "            so that prometheus and promtool are on PATH" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "prometheus: installing the prometheus package needs root (or sudo)" >&2
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

install=("${sudo[@]}" apt-get install -y -qq --no-install-recommends prometheus)
if ! apt-cache show prometheus >/dev/null 2>&1; then
  echo "prometheus: apt-get update"
  "${sudo[@]}" apt-get update -qq
fi
echo "prometheus: apt-get install prometheus"
if ! "${install[@]}" >/dev/null; then
  # Stale package lists (a mirror moved on): refresh once and retry.
  "${sudo[@]}" apt-get update -qq
  "${install[@]}" >/dev/null
fi

# The tests run their own instances: disable and stop any service the package set up.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  "${sudo[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
elif command -v service >/dev/null 2>&1; then
  "${sudo[@]}" service prometheus stop >/dev/null 2>&1 || true
fi
if command -v update-rc.d >/dev/null 2>&1; then
  "${sudo[@]}" update-rc.d prometheus disable >/dev/null 2>&1 || true
fi

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "prometheus: installed the prometheus package, but prometheus or promtool is still not on PATH" >&2
  exit 1
fi
echo "prometheus: $(prometheus --version 2>&1 | head -n 1)"
