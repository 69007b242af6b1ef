#!/usr/bin/env python3
"""Turns a results JSON written by bench/run.py (benchmark v2) into a markdown report (method, machine,
tables of medians with 95 % intervals and conservative bounds, the floor, open-loop latency, efficiency,
idle memory, scale) and a PNG chart of TPS against concurrency.

    python3 bench/report.py bench/results/full-YYYYMMDD-HHMMSS.json            # writes BENCHMARKS.md
    python3 bench/report.py RESULTS.json --out some.md [--chart some.png]

Results of the first harness (no "format": 2 in their meta) are rendered by the report of that commit
(git show 36cf2a3:bench/report.py), not by this one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from harness.method import method_text  # noqa: E402
from harness.stats import conservative_ratio, median, median_interval, paired_ratio  # noqa: E402
from harness.systems import system_label, systems_for  # noqa: E402

CLIENT_NAMES = {"switchyard": "`switchyard bench`", "due": "due client"}
TRANSPORT_NAMES = {"tcp": "TCP", "ws": "WebSocket"}
GOALS = {"tps": 2.0, "p99": 0.5, "cpu": 0.25, "idle": 0.25, "floor": 0.8}
# Goals a ratio meets by reaching them (the others it meets by staying at or below them).
AT_LEAST = {"tps", "floor"}


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def with_interval(values, digits=0):
    """median [low–high] (95 % order-statistic interval; min–max with its coverage when n < 6)."""
    if not values:
        return "–"
    lo, hi, cov = median_interval(values)
    m = median(values)
    if len(values) == 1:
        return f"{fmt(m, digits)} (n=1)"
    mark = "" if cov >= 0.95 else f", {cov:.0%}"
    return f"{fmt(m, digits)} [{fmt(lo, digits)}–{fmt(hi, digits)}{mark}]"


def ratio(a, b, digits=2):
    return "–" if a is None or not b else f"{a / b:.{digits}f}×"


def metrics(run):
    r = run.get("report") or {}
    ok = r.get("requests_ok") or 0
    lat = r.get("latency_us", {})
    per = (1e6 / ok) if ok else None  # per million requests
    out = {
        "tps": r.get("tps"), "p50": lat.get("p50", 0) / 1000, "p99": lat.get("p99", 0) / 1000,
        "p999": lat.get("p999", 0) / 1000,
        "cpu": (run["gate_cpu_s"] + run["node_cpu_s"]) * per if per else None,
        "gate_cpu": run["gate_cpu_s"] * per if per else None,
        "node_cpu": run["node_cpu_s"] * per if per and run["node_peak_rss_kb"] else None,  # direct: no node
        "client_cpu": run["client_cpu_s"] * per if per else None,
        "busy_cores": (run["gate_cpu_s"] + run["node_cpu_s"] + run["client_cpu_s"]) / run["wall_secs"]
        if run.get("wall_secs") else None,
        "gate_rss": run["gate_peak_rss_kb"] / 1024,
        "node_rss": run["node_peak_rss_kb"] / 1024 if run["node_peak_rss_kb"] else None,  # direct: no node
        "rw_sys": (run.get("gate_rw_syscalls", 0) + run.get("node_rw_syscalls", 0)) / ok if ok else None,
    }
    if run.get("gate_syscalls") is not None and ok:
        out["sys"] = (run["gate_syscalls"] + (run.get("node_syscalls") or 0)) / ok
    return out


def group_by_rep(runs, phase):
    """{(transport, client, conns, payload, system, fraction, pinned): {metric: {rep: value}}}, failed runs left out."""
    groups = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        if run.get("phase") != phase or run.get("failed"):
            continue
        key = (run["transport"], run["client"], run["connections"], run["payload_bytes"], run["system"],
               run.get("fraction"), run.get("pinned", False))
        for name, value in metrics(run).items():
            if value is not None:
                groups[key][name][run.get("rep")] = value
    return groups


def as_lists(by_rep):
    """group_by_rep's groups with each metric's values as a list (one per repetition)."""
    return {key: {name: list(reps.values()) for name, reps in names.items()} for key, names in by_rep.items()}


def group(runs, phase):
    return as_lists(group_by_rep(runs, phase))


def systems_of(meta, kind=None):
    s = meta["config"]["systems"]
    if kind == "due":
        return [x for x in s if x.startswith("due-")]
    return s


def times(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}×"


def misses(v, goal: str) -> bool:
    """Whether a measured ratio misses its goal (a ratio not measured misses nothing)."""
    return v is not None and (v < GOALS[goal] if goal in AT_LEAST else v > GOALS[goal])


def judged(v, goal: str) -> str:
    """A ratio, in bold when it misses its goal."""
    return f"**{times(v)}**" if misses(v, goal) else times(v)


def bounds(ours_by_rep, theirs_by_rep, goal: str):
    """(conservative, paired) bounds of one ratio, from {rep: value} of both sides."""
    higher = goal in AT_LEAST
    return (conservative_ratio(list(ours_by_rep.values()), list(theirs_by_rep.values()), higher_is_better=higher),
            paired_ratio(ours_by_rep, theirs_by_rep, higher_is_better=higher))


def open_loop_worst(g_open, results, transport, due):
    """Switchyard's highest p99 against due's lowest, worst over the offered rates."""
    cfg = results["meta"]["config"]
    conns, payload = cfg["open_cell"]
    worst = None
    for fraction in cfg["open_fractions"]:
        sy = g_open.get((transport, "switchyard", conns, payload, "switchyard", fraction, False), {}).get("p99")
        dv = g_open.get((transport, "switchyard", conns, payload, due, fraction, False), {}).get("p99")
        c = conservative_ratio(sy, dv, higher_is_better=False)
        if c is not None:
            worst = c if worst is None else max(worst, c)
    return worst


def goal_tables(g_reps, results, idle_per, full):
    meta = results["meta"]
    cfg = meta["config"]
    g_open = group(results["runs"], "open")
    cells = [(c["connections"], c["payload_bytes"]) for c in cfg["cells"]]
    out = []
    for due in systems_of(meta, "due"):
        out.append(f"#### Against {system_label(due)}\n")
        out.append("Per cell: medians (95 % interval), the ratio of medians, then two bounds. The conservative "
                   "bound is Switchyard's worst repetition against due's best (for CPU, Switchyard's highest against "
                   "due's lowest); the paired bound is the worst of the per-repetition ratios, which cancels a drift "
                   "of the machine between the interleaved repetitions. Goals are judged on the conservative bound; "
                   "a bound in bold misses its goal (TPS ≥ 2× due, CPU per request ≤ ¼ of due's, TPS ≥ 0.8 of the "
                   "floor's). The last column holds the floor itself to the first two goals (paired bounds): where the floor "
                   "misses a goal, no gate–node pair of this architecture meets it in that cell on this machine.\n")
        out.append("| transport | load generator | conns | payload | due TPS | Switchyard TPS | × medians | "
                   "TPS × conservative / paired | CPU/request × conservative / paired | "
                   "TPS / floor, conservative / paired | floor × due: TPS / CPU, paired |")
        out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        worst = {}
        for transport in cfg["transports"]:
            for client in cfg["clients"]:
                for conns, payload in cells:
                    d = g_reps.get((transport, client, conns, payload, due, None, False), {})
                    s = g_reps.get((transport, client, conns, payload, "switchyard", None, False), {})
                    f = g_reps.get((transport, client, conns, payload, "floor", None, False), {})
                    s_tps, d_tps = list(s.get("tps", {}).values()), list(d.get("tps", {}).values())
                    w = worst.setdefault((transport, client), defaultdict(list))
                    cell = [f"| {TRANSPORT_NAMES[transport]} | {CLIENT_NAMES[client]} | {conns:,} | {payload} B | "
                            f"{with_interval(d_tps)} | {with_interval(s_tps)} | "
                            f"{ratio(median(s_tps), median(d_tps))} |"]
                    for goal, metric, theirs in (("tps", "tps", d), ("cpu", "cpu", d), ("floor", "tps", f)):
                        cons, paired = bounds(s.get(metric, {}), theirs.get(metric, {}), goal)
                        for kind, value in ((goal, cons), (goal + "_paired", paired)):
                            if value is not None:
                                w[kind].append(value)
                        cell.append(f" {judged(cons, goal)} / {judged(paired, goal)} |")
                    floor_tps = bounds(f.get("tps", {}), d.get("tps", {}), "tps")[1]
                    floor_cpu = bounds(f.get("cpu", {}), d.get("cpu", {}), "cpu")[1]
                    cell.append(f" {judged(floor_tps, 'tps')} / {judged(floor_cpu, 'cpu')} |")
                    out.append("".join(cell))
        out.append("")
        out.append("Worst cell, conservative bound (and paired bound, after the slash). Open-loop p99 (same offered "
                   "rates, `switchyard bench` drives both) and idle memory (Switchyard's highest against due's lowest) "
                   "are per transport.\n")
        out.append("| transport | load generator | worst TPS × (goal ≥ 2×) | worst CPU/request × (goal ≤ ¼) | "
                   "idle KiB/conn × (goal ≤ ¼) | open-loop p99 × (goal ≤ ½) | TPS / floor (goal ≥ 0.8) |"
                   + (" goals met |" if full else ""))
        out.append("|---|---|--:|--:|--:|--:|--:|" + ("---|" if full else ""))
        for (transport, client), w in worst.items():
            s_idle, d_idle = idle_per.get(("switchyard", transport)), idle_per.get((due, transport))
            idle_r = max(s_idle) / min(d_idle) if s_idle and d_idle and min(d_idle) > 0 else None
            tps, cpu, floor = min(w["tps"], default=None), max(w["cpu"], default=None), min(w["floor"], default=None)
            p99 = open_loop_worst(g_open, results, transport, due)
            row = (f"| {TRANSPORT_NAMES[transport]} | {CLIENT_NAMES[client]} | "
                   f"{judged(tps, 'tps')} / {judged(min(w['tps_paired'], default=None), 'tps')} | "
                   f"{judged(cpu, 'cpu')} / {judged(max(w['cpu_paired'], default=None), 'cpu')} | "
                   f"{judged(idle_r, 'idle')} | {judged(p99, 'p99')} | "
                   f"{judged(floor, 'floor')} / {judged(min(w['floor_paired'], default=None), 'floor')} |")
            if full:
                met = all(v is not None and not misses(v, goal) for v, goal in
                          ((tps, "tps"), (cpu, "cpu"), (idle_r, "idle"), (p99, "p99"), (floor, "floor")))
                row += f" {'yes' if met else 'no'} |"
            out.append(row)
        out.append("")
    return out


def throughput_tables(g, meta):
    cfg = meta["config"]
    cells = [(c["connections"], c["payload_bytes"]) for c in cfg["cells"]]
    out = []
    for transport in cfg["transports"]:
        systems = systems_for(transport, cfg["systems"])
        out.append(f"### {TRANSPORT_NAMES[transport]}: throughput (requests per second)\n")
        head = ["load generator", "conns", "payload"] + [system_label(s) for s in systems]
        if "floor" in systems:
            head += ["Switchyard / floor", "Switchyard / floor, conservative"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * 3 + ["--:"] * (len(head) - 3)) + "|")
        for client in cfg["clients"]:
            for conns, payload in cells:
                vals = {s: g.get((transport, client, conns, payload, s, None, False), {}) for s in systems}
                row = [CLIENT_NAMES[client], f"{conns:,}", f"{payload} B"]
                row += [with_interval(vals[s].get("tps")) for s in systems]
                if "floor" in systems:
                    sy, fl = vals.get("switchyard", {}).get("tps"), vals["floor"].get("tps")
                    cons = conservative_ratio(sy, fl)
                    row += [ratio(median(sy), median(fl)), f"{cons:.2f}×" if cons is not None else "–"]
                out.append("| " + " | ".join(row) + " |")
        out.append("")
        out.append(f"### {TRANSPORT_NAMES[transport]}: closed-loop latency (ms, medians over repetitions)\n")
        out.append("Closed loop (a fixed number in flight): these percentiles mostly restate throughput; the "
                   "open-loop table below is the latency comparison.\n")
        head = ["load generator", "conns", "payload"] + [f"{system_label(s)} p50 / p99" for s in systems]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * 3 + ["--:"] * (len(head) - 3)) + "|")
        for client in cfg["clients"]:
            for conns, payload in cells:
                row = [CLIENT_NAMES[client], f"{conns:,}", f"{payload} B"]
                for s in systems:
                    v = g.get((transport, client, conns, payload, s, None, False), {})
                    row.append(f"{fmt(median(v.get('p50')), 2)} / {fmt(median(v.get('p99')), 2)}" if v else "–")
                out.append("| " + " | ".join(row) + " |")
        out.append("")
    return out


def cost_tables(g, meta):
    """CPU µs per request of each process (gate / node / load generator), closed loop, medians."""
    cfg = meta["config"]
    cells = [(c["connections"], c["payload_bytes"]) for c in cfg["cells"]]
    busy = [v for vals in g.values() for v in vals.get("busy_cores", [])]
    out = [f"Gate, node and load generator share the machine's {meta['machine'].get('cores', '?')} cores and keep "
           f"{median(busy):.2f} of them busy (median over the matrix's runs), so TPS ≈ busy cores / (gate + node + load "
           "generator CPU per request): a load generator that costs more per request leaves less for the servers, "
           "whichever system they are. Medians over the repetitions, µs per request.\n" if busy else ""]
    for transport in cfg["transports"]:
        systems = systems_for(transport, cfg["systems"])
        out.append(f"#### {TRANSPORT_NAMES[transport]}: CPU per request, gate / node / load generator (µs)\n")
        out.append("| load generator | conns | payload | " + " | ".join(system_label(s) for s in systems) + " |")
        out.append("|---|--:|--:|" + "--:|" * len(systems))
        for client in cfg["clients"]:
            for conns, payload in cells:
                row = [CLIENT_NAMES[client], f"{conns:,}", f"{payload} B"]
                for s in systems:
                    v = g.get((transport, client, conns, payload, s, None, False), {})
                    row.append(" / ".join(fmt(median(v.get(k)), 1) if v.get(k) else "–"
                                          for k in ("gate_cpu", "node_cpu", "client_cpu")) if v else "–")
                out.append("| " + " | ".join(row) + " |")
        out.append("")
    return out


def open_loop_tables(g, results):
    meta = results["meta"]
    cfg = meta["config"]
    info = results.get("open_loop_max", {})
    if not info:
        return ["Not measured in this run.", ""]
    conns, payload = cfg["open_cell"]
    anchor = meta.get("due_anchor")
    out = [f"Every system driven by `switchyard bench --rate` (open loop; due's client has no open-loop mode), "
           f"{conns:,} connections, {payload}-letter message, at most {cfg['open_pipeline']} in flight per "
           f"connection. Latency in ms from each request's scheduled send time, medians over the repetitions "
           f"(95 % interval for p99). p99 × conservative: Switchyard's highest p99 against due's lowest.\n"]
    for transport, m in info.items():
        systems = systems_for(transport, cfg["systems"])
        out.append(f"#### {TRANSPORT_NAMES[transport]} (due {anchor or ''} maximum "
                   f"{fmt(m['tps'])} requests/s)\n")
        head = ["offered", "rate"] + [f"{system_label(s)} p50 / p99 / p99.9" for s in systems]
        dues = [s for s in systems if s.startswith("due-")]
        head += [f"p99 × vs {system_label(d)} (conservative)" for d in dues]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["--:"] * len(head)) + "|")
        for fraction, rate in zip(cfg["open_fractions"], m["rates"]):
            row = [f"{fraction:.0%}", f"{rate:,}/s"]
            for s in systems:
                v = g.get((transport, "switchyard", conns, payload, s, fraction, False), {})
                row.append(f"{fmt(median(v.get('p50')), 2)} / {with_interval(v.get('p99'), 2)} / "
                           f"{fmt(median(v.get('p999')), 2)}" if v else "–")
            sy = g.get((transport, "switchyard", conns, payload, "switchyard", fraction, False), {}).get("p99")
            for d in dues:
                dv = g.get((transport, "switchyard", conns, payload, d, fraction, False), {}).get("p99")
                c = conservative_ratio(sy, dv, higher_is_better=False)
                row.append(f"{c:.2f}×" if c is not None else "–")
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return out


def efficiency_tables(g, meta):
    cfg = meta["config"]
    conns, payload = cfg["eff_cell"]
    src = meta.get("syscall_source", "?")
    out = [f"`switchyard bench` at {conns:,} connections, {payload}-letter message, closed loop, "
           f"{cfg['eff_secs']:.0f} s per run. CPU: gate + node µs per request (utime + stime). System calls: gate + "
           f"node per request, counted with {src}. Next to them the read/write calls from `/proc/<pid>/io` (syscr + "
           f"syscw), which count only read(2)/write(2)-family calls through the VFS: Go's net package uses those, "
           f"Rust's socket calls (recvfrom, sendto, ...) do not show there, so that column compares runtimes badly "
           f"and the perf column is the figure. Peak RSS: VmHWM. Pinned: load generator on CPU 1 (`taskset -c 1`), gate and node on CPU 0.\n"]
    out.append("| transport | pinned | system | TPS | CPU µs/request | syscalls/request | read+write calls/request | "
               "gate peak RSS MiB | node peak RSS MiB |")
    out.append("|---|---|---|--:|--:|--:|--:|--:|--:|")
    for transport in cfg["transports"]:
        for pinned in (False, True):
            for s in cfg["systems"]:
                v = g.get((transport, "switchyard", conns, payload, s, None, pinned))
                if not v:
                    continue
                out.append(f"| {TRANSPORT_NAMES[transport]} | {'yes' if pinned else 'no'} | {system_label(s)} | "
                           f"{with_interval(v.get('tps'))} | {fmt(median(v.get('cpu')), 1)} | "
                           f"{fmt(median(v.get('sys')), 2)} | {fmt(median(v.get('rw_sys')), 2)} | "
                           f"{fmt(median(v.get('gate_rss')), 1)} | {fmt(median(v.get('node_rss')), 1)} |")
    out.append("")
    return out


def tuning_table(results):
    t = results.get("tuning")
    if not t:
        env = results["meta"].get("due_env", "default")
        return [f"No tuning pass in this run; due ran with: {env}.", ""]
    conns, payload = t["cell"]
    out = [f"due {t['version']}, TCP, {conns:,} connections, {payload}-letter message, `switchyard bench`; env of "
           f"due's gate and node. Chosen (highest median TPS): **{t['chosen']}**, used for every due run after it.\n",
           "| env | runs | TPS |", "|---|--:|--:|"]
    for tried in t["tried"]:
        out.append(f"| `{tried['env']}` | {len(tried['tps'])} | {with_interval(tried['tps'])} |")
    out.append("")
    return out


def idle_table(idle):
    per = defaultdict(list)
    per_gc = defaultdict(list)
    fails = []
    held = defaultdict(list)
    for rec in idle:
        if "error" in rec or rec.get("kb_per_conn") is None:
            fails.append(rec)
            continue
        per[(rec["system"], rec["transport"])].append(rec["kb_per_conn"])
        held[(rec["system"], rec["transport"])].append(rec["held_by_gate"])
        if rec.get("kb_per_conn_after_gc") is not None:
            per_gc[(rec["system"], rec["transport"])].append(rec["kb_per_conn_after_gc"])
    if not per and not fails:
        return ["Not measured in this run.", ""], {}
    out = ["| gate | transport | runs | connections held | KiB per connection, as-is | after forced GC |",
           "|---|---|--:|--:|--:|--:|"]
    for (system, transport), values in sorted(per.items()):
        gc = per_gc.get((system, transport))
        out.append(f"| {system_label(system)} | {TRANSPORT_NAMES[transport]} | {len(values)} | "
                   f"{min(held[(system, transport)]):,} | {with_interval(values, 2)} | "
                   f"{with_interval(gc, 2) if gc else 'n/a (no GC)'} |")
    for f in fails:
        out.append(f"| {system_label(f['system'])} | {TRANSPORT_NAMES[f['transport']]} | failed | "
                   f"{(f.get('error') or '')[:100]} | | |")
    out.append("")
    # the conservative bound compares with due's best reading: as-is or after the forced GC
    best = {key: values + per_gc.get(key, []) for key, values in per.items()}
    return out, best


def scale_section(rec, failed_attempts=()):
    earlier = [f"An earlier attempt failed and was measured again: {a.get('cause') or a.get('error', '?')} "
               f"(at {a.get('failed_at', '?')}; kept in the raw data as `scale_failed_attempts`).\n"
               for a in failed_attempts]
    if not rec:
        return earlier + ["Not measured in this run.", ""]
    if "error" in rec:
        return earlier + [f"Failed: {rec['error'][:300]}", ""]
    held = sum(r.get("connections", 0) for r in rec["reports"] if "error" not in r)
    return earlier + [f"Switchyard, TCP: {held:,} of {rec['connections']:,} client connections held over {rec['gates']} gate "
            f"processes ({rec['per_gate']:,} each, gate g listening on 127.0.0.(10+g)) and one node; open loop at "
            f"{fmt(rec['offered_rate'])} requests/s in total for {rec['secs']:.0f} s.\n",
            "| gate RSS per connection | p99, median gate | p99, worst gate | requests answered | errors | timeouts | "
            "load generators failed |",
            "|--:|--:|--:|--:|--:|--:|--:|",
            f"| {fmt(rec['kb_per_conn'], 2)} KiB | {fmt((rec['p99_us_median_gate'] or 0) / 1000, 2)} ms | "
            f"{fmt((rec['p99_us_worst_gate'] or 0) / 1000, 2)} ms | {rec['requests_ok']:,} | {rec['errors']:,} | "
            f"{rec['timeouts']:,} | {rec['client_failures']} |", ""]


def failures(results):
    out = []
    for f in results["runs"]:
        if not f.get("failed"):
            continue
        r = f.get("report") or {}
        out.append(f"- {f.get('phase')} rep {f.get('rep')} {f.get('system')} {f.get('transport')} "
                   f"client={f.get('client', '-')} conns={f.get('connections', '-')}: exit {f.get('exit_code', '-')}, "
                   f"{r.get('errors', '-')} errors, {r.get('timeouts', '-')} timeouts"
                   + (f"; {(f.get('error') or '').strip().splitlines()[-1][:200]}" if f.get("error") else ""))
    return out


def chart(g, meta, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: matplotlib is not installed (bench/install.sh installs it); no chart", file=sys.stderr)
        return False
    cfg = meta["config"]
    base = min(c["payload_bytes"] for c in cfg["cells"])
    conc = sorted({c["connections"] for c in cfg["cells"] if c["payload_bytes"] == base})
    fig, axes = plt.subplots(1, len(cfg["transports"]), figsize=(6.5 * len(cfg["transports"]), 4.6), squeeze=False)
    styles = {"switchyard": "-", "due": "--"}
    for col, transport in enumerate(cfg["transports"]):
        ax = axes[0][col]
        for system in cfg["systems"]:
            for client in cfg["clients"]:
                xs, ys, lo, hi = [], [], [], []
                for c in conc:
                    vals = g.get((transport, client, c, base, system, None, False), {}).get("tps")
                    if vals:
                        m = median(vals)
                        low, high, _ = median_interval(vals)
                        xs.append(c)
                        ys.append(m)
                        lo.append(m - low)
                        hi.append(high - m)
                if xs:
                    ax.errorbar(xs, ys, yerr=[lo, hi], linestyle=styles.get(client, "-"), marker="o", capsize=3,
                                label=f"{system_label(system)} — {CLIENT_NAMES[client].strip('`')}")
        ax.set_xscale("log")
        ax.set_xticks(conc)
        ax.set_xticklabels([f"{c:,}" for c in conc])
        ax.minorticks_off()
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel("requests per second")
        ax.set_title(f"{TRANSPORT_NAMES[transport]}: median TPS, 95 % interval ({base}-letter message)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    title = "Switchyard, due and the floor: gate + node + load generator on one machine"
    if meta["mode"] != "full":
        title += "  —  SMOKE RUN, NOT A MEASUREMENT"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def render(results, results_path, out_path, chart_path):
    meta = results["meta"]
    cfg = meta["config"]
    full = meta["mode"] == "full"
    g_matrix_reps = group_by_rep(results["runs"], "matrix")
    g_matrix = as_lists(g_matrix_reps)
    idle_lines, idle_per = idle_table(results.get("idle", []))
    have_chart = chart(g_matrix, meta, chart_path)
    rel_chart = os.path.relpath(chart_path, out_path.parent)
    rel_results = os.path.relpath(results_path, ROOT)
    m = meta["machine"]
    L = ["# Benchmarks: Switchyard, due and the floor, same machine, same run\n"]
    if not full:
        L.append("> **SMOKE RUN — NOT A MEASUREMENT.** These tables come from `bench/run.py --quick` (short runs, "
                 "few repetitions, small idle and scale counts) on a shared machine. They show that the harness "
                 "works end to end; no claim may be drawn from them.\n")
    L.append(f"This run: `{meta.get('command', '')}`, {meta.get('started', '')} → {meta.get('finished', '')} "
             f"({meta.get('duration_secs', 0) / 60:.0f} min measuring). Re-render: `python3 bench/report.py {rel_results}`.\n")
    segments = meta.get("segments", [])
    if len(segments) > 1:
        L.append(f"It ran in {len(segments)} segments (cut off, then resumed with `--resume` with the same options, "
                 "programs (SHA-256 in the raw data) and machine; the block that was cut off was measured again):\n")
        L += [f"{i}. {s.get('started', '?')} → {s.get('finished', '?')}, commit {s.get('commit', '?')}: "
              f"`{s.get('command', '')}`" for i, s in enumerate(segments, 1)] + [""]
    L.append("## Goals, on the conservative bound\n")
    L += goal_tables(g_matrix_reps, results, idle_per, full)
    L.append("## Method\n")
    L.append(method_text(meta))
    L.append("## Machine\n")
    L.append(f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; memory {m.get('memory_gib', '?')} GiB; "
             f"Linux {m.get('kernel', '?')}; open-file limit {cfg['nofile'][0]:,} (hard {cfg['nofile'][1]:,}).")
    for k, val in meta["versions"].items():
        L.append(f"- {k}: {val}")
    L.append(f"- due runtime env (gate and node): {meta.get('due_env', 'default')}")
    other = [r["other_cpu_s"] / max(r["wall_secs"], 1e-9) for r in results["runs"] if "other_cpu_s" in r]
    if other:
        L.append(f"- Load from other processes during the runs (cores busy outside gate, node, load generator, etcd "
                 f"and Redis): median {median(other):.2f}, max {max(other):.2f} of {m.get('cores', '?')}.")
    L.append("")
    L.append("## Results\n")
    if have_chart:
        L.append(f"![median TPS against concurrency]({rel_chart})\n")
    L += throughput_tables(g_matrix, meta)
    L.append("### CPU per request by process\n")
    L += cost_tables(g_matrix, meta)
    L.append("### Open-loop latency at fixed offered rates\n")
    L += open_loop_tables(group(results["runs"], "open"), results)
    L.append("### Efficiency: CPU, system calls and peak memory per request\n")
    L += efficiency_tables(group(results["runs"], "efficiency"), meta)
    L.append("### due tuning pass\n")
    L += tuning_table(results)
    L.append("### Gate memory per idle connection\n")
    L += idle_lines
    L.append("### Scale: many connections over several gates\n")
    L += scale_section(results.get("scale"), results.get("scale_failed_attempts", []))
    fails = failures(results)
    L.append("### Failed runs (recorded, left out of every median)\n")
    L += (fails or ["None."]) + [""]
    L.append(f"Raw data: `{rel_results}`. Profiles and levers: [bench/analysis.md](bench/analysis.md).\n")
    out_path.write_text("\n".join(L))
    return out_path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="results JSON from bench/run.py")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--chart", help="PNG path (default: bench/benchmarks.png for BENCHMARKS.md, else next to --out)")
    a = ap.parse_args(argv)
    results_path = Path(a.results).resolve()
    results = json.loads(results_path.read_text())
    if results["meta"].get("format") != 2:
        raise SystemExit("report.py: results of the first harness; render them with "
                         "`git show 36cf2a3:bench/report.py > /tmp/report_v1.py` and run that")
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
