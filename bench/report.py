#!/usr/bin/env python3
"""Turns a results JSON written by bench/run.py into BENCHMARKS.md (method, machine, tables of medians,
spread and Switchyard/due ratios) and a PNG chart of TPS and p99 latency against concurrency.

    python3 bench/report.py bench/results/full-YYYYMMDD-HHMMSS.json            # writes BENCHMARKS.md
    python3 bench/report.py RESULTS.json --out some.md [--chart some.png]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SYSTEM_NAMES = {"switchyard": "Switchyard", "due": "due", "relay": "relay"}
CLIENT_NAMES = {"switchyard": "`switchyard bench`", "due": "due client"}
TRANSPORT_NAMES = {"tcp": "TCP", "ws": "WebSocket"}
GOALS = {"tps": 2.0, "p99": 0.5, "cpu": 0.5, "idle": 0.25}


def med(values):
    return statistics.median(values) if values else None


def spread(values):
    """Half the range over the median, in percent (0 for a single value)."""
    if not values or len(values) < 2:
        return None
    m = statistics.median(values)
    return 100.0 * (max(values) - min(values)) / 2 / m if m else None


def fmt_num(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def cell(values, digits=0):
    m = med(values)
    if m is None:
        return "–"
    s = spread(values)
    return fmt_num(m, digits) + (f" ±{s:.0f}%" if s is not None else "")


def ratio(a, b, digits=2):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.{digits}f}×"


def metrics(run):
    r = run["report"]
    ok = r.get("requests_ok") or 0
    lat = r.get("latency_us", {})
    per_m = (1e6 / ok) if ok else None
    return {
        "tps": r.get("tps"),
        "p50": lat.get("p50", 0) / 1000,
        "p99": lat.get("p99", 0) / 1000,
        "max": lat.get("max", 0) / 1000,
        "gate_cpu": run["gate_cpu_s"] * per_m if per_m else None,
        "node_cpu": run["node_cpu_s"] * per_m if per_m else None,
        "cpu": (run["gate_cpu_s"] + run["node_cpu_s"]) * per_m if per_m else None,
        "client_cpu": run["client_cpu_s"] * per_m if per_m else None,
        "gate_rss": run["gate_peak_rss_kb"] / 1024,
        "node_rss": run["node_peak_rss_kb"] / 1024,
        "other_cpu": run.get("other_cpu_s", 0) / max(run.get("wall_secs", 1), 1e-9),
        "errors": (r.get("errors") or 0) + (r.get("timeouts") or 0),
    }


def group(runs):
    groups = defaultdict(lambda: defaultdict(list))
    failures = []
    for run in runs:
        if not run.get("report") or run.get("exit_code", 1) != 0 or "error" in run:
            failures.append(run)
            if not run.get("report"):
                continue
        key = (run["transport"], run["client"], run["connections"], run["payload_bytes"], run["system"])
        for name, value in metrics(run).items():
            if value is not None:
                groups[key][name].append(value)
    return groups, failures


def perf_tables(groups, meta):
    cfg = meta["config"]
    out = []
    cells = [(c["connections"], c["payload_bytes"]) for c in cfg["cells"]]
    clients = cfg["clients"]
    systems = cfg["systems"]
    has_relay = "relay" in systems
    for transport in cfg["transports"]:
        tname = TRANSPORT_NAMES[transport]
        out.append(f"### {tname}: throughput and latency\n")
        out.append("Medians over the repetitions, ± half the range (min to max) in percent. "
                   "Latency in milliseconds. × is Switchyard / due.\n")
        head = ["load generator", "conns", "payload", "due TPS", "Switchyard TPS", "×"]
        if has_relay:
            head.append("relay TPS (ceiling)")
        head += ["due p50", "Switchyard p50", "due p99", "Switchyard p99", "×", "due max", "Switchyard max"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * 3 + ["--:"] * (len(head) - 3)) + "|")
        for client in clients:
            for conns, payload in cells:
                d = groups.get((transport, client, conns, payload, "due"), {})
                s = groups.get((transport, client, conns, payload, "switchyard"), {})
                r = groups.get((transport, client, conns, payload, "relay"), {})
                row = [CLIENT_NAMES[client], f"{conns:,}", f"{payload} B",
                       cell(d.get("tps")), cell(s.get("tps")), ratio(med(s.get("tps")), med(d.get("tps")))]
                if has_relay:
                    row.append(cell(r.get("tps")))
                row += [cell(d.get("p50"), 2), cell(s.get("p50"), 2), cell(d.get("p99"), 2), cell(s.get("p99"), 2),
                        ratio(med(s.get("p99")), med(d.get("p99"))), cell(d.get("max"), 1), cell(s.get("max"), 1)]
                out.append("| " + " | ".join(row) + " |")
        out.append("")
        out.append(f"### {tname}: CPU and memory\n")
        out.append("CPU seconds per million requests (user + system, all threads, from `/proc/<pid>/stat`), "
                   "peak RSS in MiB (VmHWM, reset before each run). For the relay, \"gate\" is the relay and "
                   "\"node\" the echo server.\n")
        head = ["load generator", "conns", "payload", "due gate CPU", "Switchyard gate CPU", "due node CPU",
                "Switchyard node CPU", "due gate+node", "Switchyard gate+node", "×"]
        if has_relay:
            head.append("relay+echo")
        head += ["due gate RSS", "Switchyard gate RSS", "due node RSS", "Switchyard node RSS"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * 3 + ["--:"] * (len(head) - 3)) + "|")
        for client in clients:
            for conns, payload in cells:
                d = groups.get((transport, client, conns, payload, "due"), {})
                s = groups.get((transport, client, conns, payload, "switchyard"), {})
                r = groups.get((transport, client, conns, payload, "relay"), {})
                row = [CLIENT_NAMES[client], f"{conns:,}", f"{payload} B",
                       cell(d.get("gate_cpu"), 2), cell(s.get("gate_cpu"), 2),
                       cell(d.get("node_cpu"), 2), cell(s.get("node_cpu"), 2),
                       cell(d.get("cpu"), 2), cell(s.get("cpu"), 2), ratio(med(s.get("cpu")), med(d.get("cpu")))]
                if has_relay:
                    row.append(cell(r.get("cpu"), 2))
                row += [cell(d.get("gate_rss"), 1), cell(s.get("gate_rss"), 1),
                        cell(d.get("node_rss"), 1), cell(s.get("node_rss"), 1)]
                out.append("| " + " | ".join(row) + " |")
        out.append("")
    return out


def idle_table(idle):
    if not idle:
        return ["Not measured in this run.", ""], {}
    out = ["| gate | transport | connections held | RSS before (MiB) | RSS after (MiB) | KiB per connection |",
           "|---|---|--:|--:|--:|--:|"]
    per = {}
    for rec in idle:
        if "error" in rec:
            out.append(f"| {SYSTEM_NAMES[rec['system']]} | {TRANSPORT_NAMES[rec['transport']]} | failed: "
                       f"{rec['error'][:120]} | | | |")
            continue
        per[(rec["system"], rec["transport"])] = rec["kb_per_conn"]
        out.append(f"| {SYSTEM_NAMES[rec['system']]} | {TRANSPORT_NAMES[rec['transport']]} | "
                   f"{rec['held_by_gate']:,} | {rec['rss_before_kb'] / 1024:,.1f} | {rec['rss_after_kb'] / 1024:,.1f} | "
                   f"{fmt_num(rec['kb_per_conn'], 2)} |")
    out.append("")
    ratios = []
    for transport in ("tcp", "ws"):
        s, d = per.get(("switchyard", transport)), per.get(("due", transport))
        if s is not None and d:
            ratios.append(f"{TRANSPORT_NAMES[transport]}: Switchyard / due = {s / d:.2f}×")
    if ratios:
        out.append("Per-connection ratio — " + "; ".join(ratios) + ".")
        out.append("")
    return out, per


def client_cost_table(groups, meta):
    """CPU seconds per million requests of the load generator, next to the gate + node it drives.

    On a 2-core machine the load generator's own CPU caps every system's TPS; this table shows by how much.
    """
    cfg = meta["config"]
    cells = [(c["connections"], c["payload_bytes"]) for c in cfg["cells"]]
    systems = [s for s in ("due", "switchyard", "relay") if s in cfg["systems"]]
    out = ["| transport | load generator | conns | payload | "
           + " | ".join(f"client CPU on {SYSTEM_NAMES[s]}" for s in systems)
           + " | Switchyard gate+node CPU | client share of CPU, Switchyard |",
           "|" + "|".join(["---"] * 4 + ["--:"] * (len(systems) + 2)) + "|"]
    for transport in cfg["transports"]:
        for client in cfg["clients"]:
            for conns, payload in cells:
                row = [TRANSPORT_NAMES[transport], CLIENT_NAMES[client], f"{conns:,}", f"{payload} B"]
                for system in systems:
                    values = groups.get((transport, client, conns, payload, system), {}).get("client_cpu")
                    row.append(fmt_num(med(values), 1) if values else "–")
                sy = groups.get((transport, client, conns, payload, "switchyard"), {})
                if sy.get("client_cpu") and sy.get("cpu"):
                    client_cpu, server_cpu = med(sy["client_cpu"]), med(sy["cpu"])
                    row += [fmt_num(server_cpu, 1), f"{client_cpu / (client_cpu + server_cpu):.0%}"]
                else:
                    row += ["–", "–"]
                out.append("| " + " | ".join(row) + " |")
    out.append("")
    return out


def goal_table(groups, meta, idle_per, full):
    cfg = meta["config"]
    cells = [(c["connections"], c["payload_bytes"]) for c in cfg["cells"]]
    out = []
    head = ["transport", "load generator", "worst TPS ×", "worst p99 ×", "worst CPU/request ×", "idle KiB/conn ×"]
    if full:
        head.append("goals met")
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] * 2 + ["--:"] * (len(head) - 2)) + "|")
    for transport in cfg["transports"]:
        for client in cfg["clients"]:
            tps, p99, cpu = [], [], []
            for conns, payload in cells:
                d = groups.get((transport, client, conns, payload, "due"), {})
                s = groups.get((transport, client, conns, payload, "switchyard"), {})
                if d.get("tps") and s.get("tps"):
                    tps.append(med(s["tps"]) / med(d["tps"]))
                if d.get("p99") and s.get("p99") and med(d["p99"]):
                    p99.append(med(s["p99"]) / med(d["p99"]))
                if d.get("cpu") and s.get("cpu") and med(d["cpu"]):
                    cpu.append(med(s["cpu"]) / med(d["cpu"]))
            s_idle, d_idle = idle_per.get(("switchyard", transport)), idle_per.get(("due", transport))
            idle_r = s_idle / d_idle if s_idle is not None and d_idle else None
            row = [TRANSPORT_NAMES[transport], CLIENT_NAMES[client],
                   f"{min(tps):.2f}× (goal ≥ {GOALS['tps']}×)" if tps else "–",
                   f"{max(p99):.2f}× (goal ≤ {GOALS['p99']}×)" if p99 else "–",
                   f"{max(cpu):.2f}× (goal ≤ {GOALS['cpu']}×)" if cpu else "–",
                   f"{idle_r:.2f}× (goal ≤ {GOALS['idle']}×)" if idle_r is not None else "–"]
            if full:
                met = (tps and min(tps) >= GOALS["tps"] and p99 and max(p99) <= GOALS["p99"] and cpu
                       and max(cpu) <= GOALS["cpu"] and idle_r is not None and idle_r <= GOALS["idle"])
                row.append("yes" if met else "no")
            out.append("| " + " | ".join(row) + " |")
    out.append("")
    return out


def chart(groups, meta, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: matplotlib is not installed (bench/install.sh installs it); no chart", file=sys.stderr)
        return False
    cfg = meta["config"]
    base_payload = min(c["payload_bytes"] for c in cfg["cells"])
    conc = sorted({c["connections"] for c in cfg["cells"] if c["payload_bytes"] == base_payload})
    transports = cfg["transports"]
    fig, axes = plt.subplots(len(transports), 2, figsize=(13, 4.6 * len(transports)), squeeze=False)
    colors = {"switchyard": "#1f77b4", "due": "#d62728", "relay": "#7f7f7f"}
    styles = {"switchyard": "-", "due": "--"}
    markers = {"switchyard": "o", "due": "s"}
    for row, transport in enumerate(transports):
        for col, (metric, label) in enumerate((("tps", "requests per second"), ("p99", "p99 latency (ms)"))):
            ax = axes[row][col]
            for system in cfg["systems"]:
                for client in cfg["clients"]:
                    xs, ys, lo, hi = [], [], [], []
                    for c in conc:
                        vals = groups.get((transport, client, c, base_payload, system), {}).get(metric)
                        if vals:
                            m = med(vals)
                            xs.append(c)
                            ys.append(m)
                            lo.append(m - min(vals))
                            hi.append(max(vals) - m)
                    if not xs:
                        continue
                    ax.errorbar(xs, ys, yerr=[lo, hi], color=colors[system], linestyle=styles[client],
                                marker=markers[client], capsize=3, linewidth=1.6, markersize=5,
                                label=f"{SYSTEM_NAMES[system]} — {CLIENT_NAMES[client].strip('`')}")
            ax.set_xscale("log")
            ax.set_xticks(conc)
            ax.set_xticklabels([f"{c:,}" for c in conc])
            ax.minorticks_off()
            ax.set_xlabel("concurrent connections")
            ax.set_ylabel(label)
            if metric == "p99":
                ax.set_yscale("log")
            ax.set_title(f"{TRANSPORT_NAMES[transport]}: {label} ({base_payload} B message, "
                         f"pipeline {cfg['pipeline']})")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7.5)
    title = "Switchyard vs due v2.4.2: gate + node + client on one machine"
    if meta["mode"] != "full":
        title += "  —  SMOKE TEST, NOT A MEASUREMENT"
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(results, results_path, out_path, chart_path):
    meta = results["meta"]
    cfg = meta["config"]
    full = meta["mode"] == "full"
    groups, failures = group(results["runs"])
    idle_lines, idle_per = idle_table(results.get("idle", []))
    have_chart = chart(groups, meta, chart_path)
    rel_chart = os.path.relpath(chart_path, out_path.parent)
    rel_results = os.path.relpath(results_path, ROOT)
    m = meta["machine"]
    v = meta["versions"]
    other = [metrics(r)["other_cpu"] for r in results["runs"] if r.get("report")]
    loads = [r["loadavg_1m_before"] for r in results["runs"] if "loadavg_1m_before" in r]

    L = []
    L.append("# Benchmarks: Switchyard and due, same machine, same run\n")
    if not full:
        L.append("> **SMOKE TEST — NOT A MEASUREMENT.** These tables come from `bench/run.py --quick` "
                 f"({cfg['requests']:,} requests per run, {cfg['reps']} repetition, "
                 f"{cfg['idle_conns']:,} idle connections) on a shared machine. They show that the harness "
                 "works end to end; no claim may be drawn from them. Run the full benchmark for numbers.\n")
    L.append("Regenerate everything (build, run, tables, chart) with one command:\n")
    L.append("```sh\npython3 bench/run.py            # full run; --quick for a smoke test\n```\n")
    L.append(f"Re-render this file and the chart from the recorded data:\n")
    L.append(f"```sh\npython3 bench/report.py {rel_results}\n```\n")
    L.append(f"This run: `{meta.get('command', '')}`, {meta.get('started', '')} → {meta.get('finished', '')} "
             f"({meta.get('duration_secs', 0) / 60:.0f} min).\n")

    L.append("## Summary\n")
    L.append("Worst case over all workload cells of the ratio Switchyard / due (medians), next to the goals "
             "of the performance issue. CPU/request counts gate + node.\n")
    L += goal_table(groups, meta, idle_per, full)
    if not full:
        L.append("No verdict is given for a smoke test.\n")

    L.append("## Method\n")
    L.append(f"""- **Topology**, identical for both systems: one gate process, one node process and one load-generator
  process on the same machine, all on 127.0.0.1. Each (system, transport) pair gets a freshly started gate and
  node; the gate listens on the one transport being measured (due's gate component takes exactly one network
  server, so Switchyard's gate is also started with only that listener). Repetitions rotate the order of the systems, and
  the two load generators alternate who goes first, so neither system always runs on a cooler or hotter machine.
- **due**: `github.com/dobyte/due/v2` v2.4.2 with its `network/tcp`, `network/ws`, `locate/redis` and
  `registry/etcd` submodules at the same commit (e5cd0097bf4d), built from Go modules (`bench/due/go.mod`,
  `go.sum`) with {v.get('go (due harness)', 'go1.25.5')} (due v2.4.2 pins sonic v1.14.1, which does not build with
  Go 1.26). The gate (`bench/due/gate`), node (`bench/due/node`) and client (`bench/due/client`) are small mains
  written for this harness. Registry: Debian's etcd-server; locator: Debian's redis-server. Run mode `release`
  (due's default `debug` formats a debug log line for every packet the gate forwards), log level `error` (as
  due's own benchmark configuration).
- **Switchyard**: `switchyard gate` and `switchyard node` (release build, `cargo build --release`), static
  registry (`--nodes`), the same Redis as locator, log level `warn`.
- **Packets and route**: route 4 bytes, seq 4 bytes, big-endian, heartbeats off, largest packet
  {cfg.get('max_packet_bytes', 65536):,} bytes on both. Route 1 is
  stateless and echoes `{{"message": s}}` → `{{"code":0,"message": s}}` (JSON decode and encode on the node).
- **Workload** (due's benchmark): the message is 1,024 letters (1,051 bytes per request on the wire), plus a
  2,048-letter cell at 1,000 connections; {cfg['requests']:,} counted requests per run; connections:
  {', '.join(f"{c['connections']:,}" for c in cfg['cells'])}; {cfg['pipeline']} requests kept in flight per
  connection by both load generators (due's own benchmark pushes without bound; a bound is needed for latency
  to mean something and is the same for everyone). Each run's requests are all counted (no warm-up inside the
  run); instead each freshly started topology is warmed up with {cfg['warmup_requests']:,} requests from each load
  generator, which are not recorded.
- **Load generators**, both against every server: `switchyard bench` (Rust, one task per connection, a raw
  pipelined loop) and the due client (`bench/due/client`: due's `cluster/client` component over due's own TCP or
  WebSocket network client, in the style of due's benchmark client, plus a per-connection in-flight bound,
  per-request latency by seq and an answer check). Both check every answer (`code` 0 and the same letters) and
  report the same JSON: TPS = answered requests / time from the first request to the last answer; latency
  from an HDR histogram in microseconds.
- **CPU**: utime + stime of the gate and node processes from `/proc/<pid>/stat` before and after each run,
  divided by the requests answered, ×10⁶. **Peak RSS**: VmHWM of each process, reset with
  `/proc/<pid>/clear_refs` before each run (sampled VmRSS every 50 ms where that is not allowed).
- **Idle connections**: on a freshly started gate, RSS is read once it settles, then {cfg['idle_conns']:,} TCP
  (or WebSocket, after the handshake) connections are opened from {cfg.get('idle_sources', 8)} source addresses
  127.0.0.2… and left silent; RSS is read again once it settles. KiB per connection = RSS growth / connections
  the gate holds (counted from its open file descriptors). The issue asks for 20,000 per gate; this machine's
  hard `RLIMIT_NOFILE` is {cfg['nofile'][1]:,} and cannot be raised from inside its sandbox, so a gate process
  holds at most about {cfg['nofile'][1] - 100:,} sockets: a full run uses 19,000, this run used
  {cfg['idle_conns']:,}.
- **Ceiling** (`relay` rows): a plain relay in the gate's place (`bench/due/relay`: one upstream TCP connection
  per client; TCP bytes are copied through a 64 KiB buffer each way; for WebSocket, gorilla/websocket does the
  handshake, then frames are moved by hand, each binary frame's payload written upstream and the upstream
  stream cut at the size field into frames) and a framing echo server in the node's place (`bench/due/echo`:
  reads each packet by its size field and answers at once with the same header, route and seq and the body
  spliced from `{{"message":…}}` to `{{"code":0,"message":…}}`, no JSON parsing, no routing). It shows what the
  machine does with the least per-packet work that still gives the load generators correct answers. It is a
  reference rather than a strict upper bound: it keeps one upstream connection per client, where both gates
  multiplex all clients onto one gate–node link, which can mean fewer system calls at high connection counts.
- **Everything** connects on 127.0.0.0/8 only; etcd, Redis, gate and node listen on 127.0.0.1.
""")

    L.append("## Machine\n")
    L.append(f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; memory {m.get('memory_gib', '?')} GiB; "
             f"Linux {m.get('kernel', '?')}; open-file limit {cfg['nofile'][0]:,} (hard {cfg['nofile'][1]:,}).")
    for k, val in v.items():
        L.append(f"- {k}: {val}")
    if other:
        L.append(f"- Machine load from other processes during the runs (CPU cores busy outside gate, node, client, "
                 f"etcd and Redis): median {med(other):.2f}, max {max(other):.2f} of {m.get('cores', '?')} cores; "
                 f"1-minute load average before runs: median {med(loads):.1f}." if loads else "")
    L.append("")

    L.append("## Results\n")
    if have_chart:
        L.append(f"![TPS and p99 latency against concurrency]({rel_chart})\n")
        L.append("Solid lines: `switchyard bench` as load generator; dashed: the due client. Error bars: min to max "
                 "over the repetitions.\n")
    L += perf_tables(groups, meta)
    L.append("### Gate memory per idle connection\n")
    L += idle_lines
    if failures:
        L.append("### Runs with errors\n")
        for f in failures[:40]:
            r = f.get("report") or {}
            L.append(f"- rep {f.get('rep')} {f.get('system')} {f.get('transport')} client={f.get('client', '-')} "
                     f"conns={f.get('connections', '-')}: exit {f.get('exit_code', '-')}, "
                     f"{r.get('errors', '-')} errors, {r.get('timeouts', '-')} timeouts; "
                     f"{(f.get('error') or '').strip().splitlines()[-1][:200] if f.get('error') else ''}")
        L.append("")
    L.append("### Load generator cost\n")
    L.append("CPU seconds per million requests of the load generator itself (user + system, from `wait4`), "
             "medians. Gate, node and load generator share the machine's cores, so the load generator's cost "
             "caps the TPS of every system it drives; the last column is its share of the CPU spent on a "
             "Switchyard request.\n")
    L += client_cost_table(groups, meta)
    L.append("Profiles of the gate and the node, what limits the cells that miss a goal, and the next levers: "
             "[bench/analysis.md](bench/analysis.md) (`bench/profile.sh` records new ones).\n")
    L.append(f"Raw data: `{rel_results}` (every run, with both processes' CPU seconds, peak RSS, the client's CPU "
             "and the machine's other load).\n")
    out_path.write_text("\n".join(L))
    return out_path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="results JSON from bench/run.py")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--chart", help="PNG path (default: bench/benchmarks.png for BENCHMARKS.md, "
                                    "else next to --out)")
    a = ap.parse_args(argv)
    results_path = Path(a.results).resolve()
    results = json.loads(results_path.read_text())
    out = Path(a.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.chart:
        chart_path = Path(a.chart).resolve()
    elif out == (ROOT / "BENCHMARKS.md").resolve():
        chart_path = HERE / "benchmarks.png"
    else:
        chart_path = out.with_suffix(".png")
    render(results, results_path, out, chart_path)
    print(f"report.py: wrote {out} and {chart_path}")


if __name__ == "__main__":
    main()
