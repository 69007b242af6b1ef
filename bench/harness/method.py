"""The method section of the benchmark report, filled in from a run's configuration. BENCHMARKS.md's
method section says the same (bench/README.md explains the options)."""

from __future__ import annotations


def method_text(meta: dict) -> str:
    c = meta["config"]
    run = (f"{c['run_secs']:.0f} s" if c.get("run_secs") else f"{c['run_requests']:,} requests")
    cells = ", ".join(f"{x['connections']:,}" + ("" if x["payload_bytes"] == 1024 else f" ({x['payload_bytes']:,} letters)")
                      for x in c["cells"])
    dues = ", ".join(s.removeprefix("due-") for s in c["systems"] if s.startswith("due-"))
    oc, ec = c["open_cell"], c["eff_cell"]
    return f"""- **Systems.** Switchyard (`switchyard gate` + `switchyard node`, release build, static `--nodes`,
  Redis locator); due {dues} (the harness's `bench/due` gate and node, etcd registry, Redis locator, run mode
  `release`), each version built separately: v2.5.8 against its source tree with the installed Go (build tag
  `due258` selects its renamed options), v2.4.2 from the module proxy with go1.25.5; the **floor**
  (`bench/floor`: a minimal Rust relay multiplexing all clients onto one link to an echo process that does the
  same JSON decode and encode as a node — the least work this architecture must do); and **direct** (clients
  straight to the floor's echo, no hop; TCP only). Switchyard is reported as a fraction of the floor.
- **Topology.** Gate, node and load generator share the machine; everything on 127.0.0.0/8. Each system and
  transport gets a freshly started gate and node, warmed up with {c['warmup_secs']:g} s of load from each load
  generator (not recorded). Route 1 echoes `{{"message": s}}` → `{{"code":0,"message": s}}`; route and seq 4 bytes,
  big-endian, heartbeats off.
- **Matrix.** Connections {cells}; {c['pipeline']} requests in flight per connection; each run lasts {run}; two load
  generators (`switchyard bench` and due's own client, `cluster/client` of due {c['due_client'].removeprefix('due ')})
  against every system. {c['reps']} repetitions, interleaved: every repetition visits every system, rotating which
  goes first, and alternates which load generator goes first.
- **Statistics.** Medians over the repetitions with a 95 % distribution-free interval (order statistics of the
  binomial(n, ½); with fewer than 6 repetitions min–max, and its lower coverage is printed). Goals are judged on
  the **conservative bound**: Switchyard's worst repetition against due's best (for costs, Switchyard's highest
  against due's lowest). A run with any error, timeout or lost connection, or a non-zero exit, is **failed**: it is
  listed and never enters a median.
- **Open-loop latency.** `switchyard bench --rate R` sends on a fixed schedule (connection i of n sends its k-th
  request at start + (i + k·n)/R) and measures each request from its scheduled send time, so a server that
  falls behind shows its queue instead of slowing the load (no coordinated omission). R is
  {', '.join(f'{f:.0%}' for f in c['open_fractions'])} of due {meta.get('due_anchor', '')}'s measured maximum (median matrix TPS at
  {oc[0]:,} connections with `switchyard bench`), the same R for every system; {oc[0]:,} connections, at most
  {c['open_pipeline']} in flight each, {c['open_secs']:g} s, {c['open_reps']} repetitions. due's client has no open-loop mode,
  so our generator drives every system here.
- **Efficiency.** At {ec[0]:,} connections: gate + node CPU (utime + stime from `/proc/<pid>/stat`) per request,
  system calls per request (every call, `perf stat -e raw_syscalls:sys_enter -p <pid>` when perf works; the
  read/write families from `/proc/<pid>/io` syscr + syscw always, which miss Rust's socket calls and so do
  not compare runtimes), peak RSS (VmHWM, reset through
  `/proc/<pid>/clear_refs` before each run); once with the load generator sharing both cores and once pinned
  (load generator on CPU 1 with `taskset`, gate and node on CPU 0).
- **due at its best.** A tuning pass runs due {meta.get('due_anchor', '')} with each runtime setting of its gate and node
  ({'; '.join(e or 'default' for e in c.get('due_tune', []))}) on {c['tune_cell'][0]:,} TCP connections and keeps the one with the
  highest median TPS for every due run after it; what was tried is in the tuning table.
- **Idle memory.** A freshly started gate; RSS once it settles; then {c['idle_conns']:,} silent connections (TCP, or
  WebSocket after the handshake) from {c['idle_sources']} source addresses 127.0.0.2…; RSS once it settles again; KiB per
  connection = growth / sockets the gate holds (from its descriptors). For due's Go gate also after a forced
  collection (SIGUSR1 → `debug.FreeOSMemory()`), since Go keeps freed heap until its scavenger returns it. The
  baseline is read after a forced collection too. {c['idle_reps']} run(s) per system and transport.
- **Scale.** {c['scale_conns']:,} client connections over {c['scale_gates']} Switchyard gate processes (each under the
  open-file limit; gate g listens on 127.0.0.(10+g) so no address pair runs short of ephemeral ports) and one
  node, one load generator per gate, open loop at {c['scale_rate']:,.0f} requests/s in total for {c['scale_secs']:g} s:
  gate RSS growth per connection, p99 per gate, errors and timeouts.
- **Machine load.** The machine's busy CPU outside the measured processes is recorded for every run.
"""
