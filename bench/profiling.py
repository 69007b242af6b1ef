#!/usr/bin/env python3
"""Profiles the gate and the node of a system under one benchmark cell: starts the system the way the
benchmark does (bench/harness/systems.py, with etcd and Redis on loopback), warms it up, then drives it
with the cell's load generator while `perf record -g` samples the gate and the node. Each cell gets a
folder under bench/results/profiles/ with

    summary.json        TPS, and per request: CPU µs and context switches (wake-ups) of gate and node
    gate.txt, node.txt  flat profiles: share of samples per DSO (kernel vs. user space) and top symbols
    gate.data, ...      the perf recordings (git-ignored; open with `perf report -i`)

and one line per cell is printed as a markdown table row (bench/analysis.md quotes them).

    bench/profile.sh                                    # Switchyard, TCP, `switchyard bench`, 1,000 conns, 1 KiB
    bench/profile.sh --cells ws/due/1000@1024,tcp/switchyard/1000@2048
    bench/profile.sh --systems due-v2.5.8 --due-env GOMAXPROCS=1 --cells tcp/switchyard/1000@1024

A cell is TRANSPORT/CLIENT/CONNECTIONS@LETTERS: transport tcp or ws, load generator switchyard
(`switchyard bench`) or due (due's client), the connection count and the letters in the echoed message.
Needs perf (Debian: linux-perf) and the programs bench/run.py builds (run it once, or --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import procfs  # noqa: E402
from harness.phases import client_cmd, log, parse_env  # noqa: E402
from harness.procs import run_client  # noqa: E402
from harness.systems import CLIENT_ENV, DUE_VERSIONS, FLOOR, SWITCHYARD, Infra, Ports, due_bin, topology  # noqa: E402

# Seconds of load before perf attaches (connections open, queues at their steady size) and after it stops.
LEAD_SECS = 2.0


@dataclass(frozen=True)
class Cell:
    transport: str
    client: str
    connections: int
    payload: int

    @classmethod
    def parse(cls, text: str) -> Cell:
        """TRANSPORT/CLIENT/CONNECTIONS@LETTERS, e.g. ws/due/1000@1024."""
        try:
            transport, client, rest = text.strip().split("/")
            conns, letters = rest.split("@")
            cell = cls(transport, client, int(conns), int(letters))
        except ValueError as e:
            raise ValueError(f"cell {text!r}: expected TRANSPORT/CLIENT/CONNECTIONS@LETTERS ({e})") from e
        if cell.transport not in ("tcp", "ws") or cell.client not in CLIENT_ENV or cell.connections < 1:
            raise ValueError(f"cell {text!r}: transport tcp|ws, client {'|'.join(CLIENT_ENV)}, connections ≥ 1")
        return cell

    def label(self, system: str) -> str:
        return f"{system}-{self.transport}-{self.client}-{self.connections}-{self.payload}"


def thread_switches(pid: int) -> int:
    """Voluntary + involuntary context switches over every thread of a process so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
        except OSError:
            pass  # a thread that ended between listing and reading
    return total


def flat_profile(data: Path, side: str) -> str:
    """perf report as text: share of samples per DSO, then the top symbols (no call graphs)."""
    def report(sort: str, lines: int) -> list[str]:
        p = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", sort, "--stdio",
                            "-g", "none"], capture_output=True, text=True)
        return [line.rstrip(" -") for line in p.stdout.splitlines() if "%" in line and not line.startswith("#")][:lines]
    return "\n".join([f"# {side}: share of samples per DSO", *report("dso", 8), "",
                      f"# {side}: top symbols", *report("dso,symbol", 40), ""])


def profile_cell(system: str, cell: Cell, args, ports: Ports, logdir: Path, infra: Infra, out: Path) -> dict:
    folder = out / cell.label(system)
    folder.mkdir(parents=True, exist_ok=True)
    topo = topology(system, cell.transport, ports, logdir, args)
    topo.start()
    try:
        topo.wait_ready()
        run_client(client_cmd(cell.client, args, topo.addr, cell.transport, cell.connections, cell.payload,
                              secs=args.warmup_secs), 120 + args.warmup_secs * 2, CLIENT_ENV[cell.client])
        servers = {name: p.pid for name, p in (("gate", topo.gate), ("node", topo.node)) if p}
        cmd = client_cmd(cell.client, args, topo.addr, cell.transport, cell.connections, cell.payload,
                         secs=args.secs + 2 * LEAD_SECS)
        client = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **CLIENT_ENV[cell.client]})
        time.sleep(LEAD_SECS)
        before = {n: (procfs.cpu_seconds(pid), thread_switches(pid)) for n, pid in servers.items()}
        t0 = time.time()
        perfs = [subprocess.Popen(["perf", "record", "-F", str(args.frequency), "-g", "-p", str(pid),
                                   "-o", str(folder / f"{n}.data"), "--", "sleep", str(args.secs)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for n, pid in servers.items()]
        for p in perfs:
            p.wait()
        window = time.time() - t0
        after = {n: (procfs.cpu_seconds(pid), thread_switches(pid)) for n, pid in servers.items()}
        stdout, stderr = client.communicate(timeout=120 + args.secs * 2)
    finally:
        topo.stop()
    report = next((json.loads(line) for line in reversed(stdout.splitlines()) if line.startswith("{")), None)
    if not report or not report.get("tps"):
        raise RuntimeError(f"{cell.label(system)}: the load generator gave no result: {stderr.strip()[-500:]}")
    requests = report["tps"] * window  # the load is steady over the window: the run's TPS stands for it
    summary = {
        "system": system, "transport": cell.transport, "client": cell.client, "connections": cell.connections,
        "payload_bytes": cell.payload, "pipeline": args.pipeline, "perf_hz": args.frequency,
        "window_secs": round(window, 2), "tps": round(report["tps"]), "p99_ms": report["latency_us"]["p99"] / 1000,
        "errors": report.get("errors", 0), "timeouts": report.get("timeouts", 0),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=HERE).stdout.strip(),
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for n in servers:
        summary[f"{n}_cpu_us_per_request"] = round((after[n][0] - before[n][0]) * 1e6 / requests, 2)
        summary[f"{n}_switches_per_request"] = round((after[n][1] - before[n][1]) / requests, 3)
    for n in servers:
        (folder / f"{n}.txt").write_text(flat_profile(folder / f"{n}.data", n))
    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def table_row(s: dict) -> str:
    def per(side: str, key: str) -> str:
        v = s.get(f"{side}_{key}")
        return "–" if v is None else f"{v:g}"
    return (f"| {s['system']} | {s['transport']} | {s['client']} | {s['connections']:,} | {s['payload_bytes']} | "
            f"{s['tps']:,} | {per('gate', 'cpu_us_per_request')} / {per('node', 'cpu_us_per_request')} | "
            f"{per('gate', 'switches_per_request')} / {per('node', 'switches_per_request')} |")


TABLE_HEAD = ("| system | transport | load generator | conns | letters | TPS under perf | CPU µs/request gate / node "
              "| context switches/request gate / node |\n|---|---|---|--:|--:|--:|--:|--:|")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="switchyard",
                    help=f"systems to profile: switchyard, floor, due-{'/'.join(DUE_VERSIONS)} (comma-separated)")
    ap.add_argument("--cells", default="tcp/switchyard/1000@1024", help="cells, comma-separated (see above)")
    ap.add_argument("--secs", type=float, default=8.0, help="seconds perf records")
    ap.add_argument("--warmup-secs", type=float, default=3.0, help="load before the profiled run")
    ap.add_argument("--frequency", type=int, default=999, help="perf samples per second")
    ap.add_argument("--pipeline", type=int, default=8, help="requests in flight per connection (the matrix's)")
    ap.add_argument("--due-env", default="", help="env of due's gate and node, e.g. GOMAXPROCS=1 (the full run's "
                                                  "tuning pass chooses one; BENCHMARKS.md names it)")
    ap.add_argument("--due-client-version", default=DUE_VERSIONS[0], help="due version whose client drives 'due' cells")
    ap.add_argument("--port-base", type=int, default=27000, help="ports (apart from a running bench/run.py's)")
    ap.add_argument("--out", default=str(HERE / "results" / "profiles"), help="folder of the cells' folders")
    a = ap.parse_args(argv)
    try:
        a.cell_list = [Cell.parse(c) for c in a.cells.split(",") if c.strip()]
    except ValueError as e:
        ap.error(str(e))
    a.system_list = [s for s in a.systems.split(",") if s]
    a.due_env = parse_env(a.due_env) if a.due_env else {}
    a.max_packet_bytes, a.timeout_ms = 65536, 10000
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    needed = [SWITCHYARD, FLOOR] + [due_bin(s.removeprefix("due-")) / "gate" for s in args.system_list
                                    if s.startswith("due-")]
    if any(c.client == "due" for c in args.cell_list):
        needed.append(due_bin(args.due_client_version) / "client")
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise SystemExit(f"profiling: missing {', '.join(missing)}: build them with `python3 bench/run.py --quick` first")
    if not procfs.perf_works():
        raise SystemExit("profile: perf does not work here (Debian: apt-get install linux-perf)")
    out = Path(args.out).resolve()
    logdir = HERE / "results" / "logs" / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    logdir.mkdir(parents=True, exist_ok=True)
    ports = Ports(args.port_base)
    infra = Infra(ports, logdir)
    rows = []
    try:
        for system in args.system_list:
            for cell in args.cell_list:
                log(f"profiling {cell.label(system)}")
                summary = profile_cell(system, cell, args, ports, logdir, infra, out)
                rows.append(table_row(summary))
                log(f"wrote {out / cell.label(system)}")
    finally:
        infra.stop()
    print(TABLE_HEAD)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
