#!/usr/bin/env bash
# Profiles Switchyard's gate and node under the benchmark workload: starts Redis, `switchyard node` and
# `switchyard gate` on loopback (ports below the ephemeral range), drives them with `switchyard bench`
# (route 1 JSON echo of 1,024 letters, route 4 / seq 4 bytes, pipeline 8), and records both processes with
# `perf record -g` for a few seconds of steady load. Writes, under bench/results/profile-<time>/:
#   gate.data, node.data          perf recordings (open with `perf report -i ...`)
#   gate.txt, node.txt            flat profiles: share per DSO (kernel vs. user space) and top symbols
#   bench.json                    the load generator's result for the profiled run
#
# usage: bench/profile.sh [CONNECTIONS] [REQUESTS]     (defaults: 1000 600000)
# needs: perf (Debian: linux-perf), redis-server, a release build (cargo build --release -p switchyard)
set -euo pipefail

conns=${1:-1000}
requests=${2:-600000}
root=$(cd "$(dirname "$0")/.." && pwd)
sy="$root/target/release/switchyard"
out="$root/bench/results/profile-$(date -u +%Y%m%d-%H%M%S)"
for tool in perf redis-server; do
    command -v "$tool" >/dev/null || { echo "profile.sh: $tool not found (apt-get install linux-perf redis-server)" >&2; exit 2; }
done
[ -x "$sy" ] || { echo "profile.sh: $sy missing: run cargo build --release -p switchyard" >&2; exit 2; }
mkdir -p "$out"

base=23370
redis_port=$((base + 9)) link=$((base + 10)) node_http=$((base + 11)) gate_http=$((base + 12)) gate=$((base + 13))
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$out" >"$out/redis.log" 2>&1 &
pids+=($!)
common=(--route-bytes 4 --seq-bytes 4 --max-packet-bytes 65536 --locator "redis://127.0.0.1:$redis_port"
    --locator-prefix profile --log warn)
sleep 0.5
"$sy" node --id node-profile --link "127.0.0.1:$link" --http "127.0.0.1:$node_http" --drain-deadline 2s \
    "${common[@]}" >"$out/node.log" 2>&1 &
node_pid=$!
pids+=("$node_pid")
sleep 1
"$sy" gate --id gate-profile --nodes "127.0.0.1:$link" --http "127.0.0.1:$gate_http" --tcp "127.0.0.1:$gate" \
    --ws "" --heartbeat-interval 0 --max-connections 100000 --gate-drain-deadline 2s \
    "${common[@]}" >"$out/gate.log" 2>&1 &
gate_pid=$!
pids+=("$gate_pid")
sleep 1.5

bench=("$sy" bench --addr "127.0.0.1:$gate" --connections "$conns" --pipeline 8 --payload-bytes 1024
    --route-bytes 4 --seq-bytes 4 --log warn --json)
"${bench[@]}" --requests 20000 >/dev/null # warm-up
perf record -F 999 -g -p "$gate_pid" -o "$out/gate.data" -- sleep 6 >/dev/null 2>&1 &
perf_gate=$!
perf record -F 999 -g -p "$node_pid" -o "$out/node.data" -- sleep 6 >/dev/null 2>&1 &
perf_node=$!
"${bench[@]}" --requests "$requests" >"$out/bench.json"
wait "$perf_gate" "$perf_node"

for side in gate node; do
    {
        echo "# $side: share of samples per DSO"
        { perf report -i "$out/$side.data" --no-children --sort dso --stdio -g none 2>/dev/null || true; } |
            grep '%' | sed 's/ *$//' | head -8
        echo
        echo "# $side: top symbols"
        { perf report -i "$out/$side.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null || true; } |
            grep '%' | sed 's/[ -]*$//' | head -40
    } >"$out/$side.txt" || true
done
echo "profile.sh: $(cat "$out/bench.json")"
echo "profile.sh: wrote $out"
