#!/usr/bin/env python3
"""Switchyard vs due benchmark runner (benchmark v2).

Builds Switchyard and the floor (cargo, release), the due harness programs for every due version asked
for (v2.5.8 from a source tree named by --due-src / DUE_SRC, or the module proxy; v2.4.2 from the module
proxy), starts etcd and Redis on loopback, then runs the phases: the throughput matrix (every system,
transport, cell and load generator, repeated and interleaved), a due tuning pass, open-loop latency at
fixed offered rates, efficiency (CPU, system calls and peak RSS per request; load generator pinned),
idle memory per connection, and a scale run over several gate processes. Writes the results JSON and
calls report.py for the tables and the chart.

    python3 bench/run.py            # the full specification (hours), writes BENCHMARKS.md
    python3 bench/run.py --quick    # the short configuration (minutes), writes bench/results/quick/
    python3 bench/run.py --resume bench/results/full-YYYYMMDD-HHMMSS.json   # go on with a run cut off

Everything listens and connects on 127.0.0.0/8 only. See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import phases  # noqa: E402
from harness.phases import log  # noqa: E402
from harness.systems import BUILD, DUE_VERSIONS, FLOOR, ROOT, SWITCHYARD, Infra, Ports, due_bin  # noqa: E402

GO_TOOLCHAIN_V242 = "go1.25.5"  # bench/due/build.sh: due v2.4.2 pins sonic v1.14.1, which does not build with Go 1.26
DUE_TUNE_DEFAULT = "default;GOGC=200;GOGC=400;GOGC=off,GOMEMLIMIT=1GiB;GOMAXPROCS=1"

# The full specification and the short configuration: (full, quick).
DEFAULTS = {
    "reps": (6, 2), "run_secs": (20.0, 2.0), "warmup_secs": (3.0, 0.5),
    "concurrency": ("50,100,200,500,1000", "200"), "big_payload": ("2048@1000", ""),
    "tune_secs": (10.0, 2.0), "tune_reps": (3, 1), "due_tune": (DUE_TUNE_DEFAULT, "default;GOGC=400"),
    "open_secs": (20.0, 2.0), "open_reps": (5, 1),
    "eff_secs": (20.0, 2.0), "eff_reps": (3, 1),
    "idle_conns": (19_000, 2_000), "idle_reps": (3, 1),
    "scale_conns": (100_000, 4_000), "scale_gates": (None, 2), "scale_rate": (10_000.0, 2_000.0),
    "scale_secs": (30.0, 4.0),
}
PHASES = ("tune", "matrix", "open", "efficiency", "idle", "scale")
# The options that narrow what a run measures.
SCOPE = ("phases", "systems", "clients", "transports", "due_versions")


def report_default(args, out: Path) -> Path:
    """Where the report goes without --report: the published BENCHMARKS.md for the whole full specification only."""
    if args.quick:
        return HERE / "results" / "quick" / "BENCHMARKS.md"
    return ROOT / "BENCHMARKS.md" if args.whole_specification else out.with_suffix("") / "BENCHMARKS.md"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the short configuration (a few minutes)")
    ap.add_argument("--phases", default=",".join(PHASES), help=f"phases to run, of {','.join(PHASES)}")
    ap.add_argument("--due-src", default=os.environ.get("DUE_SRC"),
                    help="due v2.5.8 source tree (directory or .tar.gz) to build against; default $DUE_SRC, "
                         "else the module proxy")
    ap.add_argument("--due-versions", default=",".join(DUE_VERSIONS),
                    help="due versions to build and measure; the first is the anchor (tuning, open-loop rates, "
                         "the due client)")
    ap.add_argument("--systems", help="systems to measure (default: switchyard, due-<each version>, floor, direct; also switchyard-mtls: mutual TLS on the gate-node link)")
    ap.add_argument("--clients", default="switchyard,due", help="load generators of the matrix")
    ap.add_argument("--transports", default="tcp,ws")
    ap.add_argument("--reps", type=int, help="repetitions of the matrix (full 6: the 95%% median interval needs 6)")
    ap.add_argument("--run-secs", type=float, help="seconds per measured run (full 20)")
    ap.add_argument("--run-requests", type=int, help="requests per measured run instead of --run-secs")
    ap.add_argument("--warmup-secs", type=float, help="load per load generator after each topology start")
    ap.add_argument("--concurrency", help="connection counts with the base payload")
    ap.add_argument("--big-payload", help="extra cells LETTERS@CONNS[,...] (due's: 2048@1000); empty for none")
    ap.add_argument("--payload-bytes", type=int, default=1024, help="letters in the message (due's: 1024)")
    ap.add_argument("--pipeline", type=int, default=8, help="requests in flight per connection (closed loop)")
    ap.add_argument("--timeout-ms", type=int, default=10000, help="request timeout of both clients")
    ap.add_argument("--max-packet-bytes", type=int, default=65536)
    ap.add_argument("--due-env", help="env of due's gate and node, e.g. 'GOGC=400 GOMEMLIMIT=1GiB' "
                                      "(default: the tuning pass's choice)")
    ap.add_argument("--due-tune", help="';'-separated due env settings the tuning pass tries ('default': none)")
    ap.add_argument("--tune-cell", default="1000@1024", help="CONNS@LETTERS of the tuning pass (TCP)")
    ap.add_argument("--tune-secs", type=float)
    ap.add_argument("--tune-reps", type=int)
    ap.add_argument("--open-cell", default="200@1024", help="CONNS@LETTERS of the open-loop runs")
    ap.add_argument("--open-fractions", default="0.25,0.5,0.75", help="offered rates as fractions of due's maximum")
    ap.add_argument("--open-secs", type=float)
    ap.add_argument("--open-reps", type=int)
    ap.add_argument("--open-pipeline", type=int, default=64, help="most requests in flight per connection, open loop")
    ap.add_argument("--eff-cell", default="200@1024", help="CONNS@LETTERS of the efficiency runs")
    ap.add_argument("--eff-secs", type=float)
    ap.add_argument("--eff-reps", type=int)
    ap.add_argument("--idle-conns", type=int, help="idle connections per gate (full 19,000)")
    ap.add_argument("--idle-reps", type=int, help="idle runs per system and transport (full 3)")
    ap.add_argument("--idle-sources", type=int, default=8, help="127.0.0.x source addresses for idle connections")
    ap.add_argument("--idle-per-holder", type=int, default=10000, help="idle connections per holder process")
    ap.add_argument("--scale-conns", type=int, help="client connections of the scale run (full 100,000)")
    ap.add_argument("--scale-gates", type=int, help="gate processes of the scale run (default: ≤ 17,000 each)")
    ap.add_argument("--scale-rate", type=float, help="offered requests per second in total, scale run")
    ap.add_argument("--scale-secs", type=float)
    ap.add_argument("--scale-warmup-secs", type=float, default=2.0)
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--port-base", type=int, default=29000, help="ports PORT_BASE+1 … +120 on 127.0.0.x")
    ap.add_argument("--out", help="results JSON (default bench/results/<full|quick>-<time>.json)")
    ap.add_argument("--resume", help="results JSON of a run that was cut off: run the blocks it did not finish, with "
                                     "the same options and commit (checked), into the same file")
    ap.add_argument("--report", help="markdown to write (default: BENCHMARKS.md for the whole full specification; "
                                     "next to the results JSON for a subset of it; bench/results/quick/BENCHMARKS.md "
                                     "for --quick)")
    a = ap.parse_args(argv)
    # Only the whole specification may replace the published BENCHMARKS.md; a subset (--phases, --systems, ...)
    # would replace its tables with a part of them.
    a.whole_specification = not a.quick and all(getattr(a, name) == ap.get_default(name) for name in SCOPE)
    k = 1 if a.quick else 0
    for name, values in DEFAULTS.items():
        if getattr(a, name, None) is None:
            setattr(a, name, values[k])
    if a.run_requests:
        a.run_secs = None
    a.phase_list = [p for p in a.phases.split(",") if p]
    for p in a.phase_list:
        if p not in PHASES:
            ap.error(f"unknown phase {p!r}")
    a.due_versions = [v for v in a.due_versions.split(",") if v]
    a.client_list = [c for c in a.clients.split(",") if c]
    a.transport_list = [t for t in a.transports.split(",") if t]
    a.cells = [(int(c), a.payload_bytes) for c in a.concurrency.split(",") if c.strip()]
    for item in filter(None, (s.strip() for s in a.big_payload.split(","))):
        size, conns = item.split("@")
        a.cells.append((int(conns), int(size)))
    cell = lambda text: tuple(int(x) for x in text.split("@"))  # noqa: E731
    a.tune_cell, a.open_cell, a.eff_cell = cell(a.tune_cell), cell(a.open_cell), cell(a.eff_cell)
    a.open_fractions = [float(f) for f in a.open_fractions.split(",")]
    a.due_tune = [("" if s.strip() == "default" else s.strip()) for s in a.due_tune.split(";")]
    a.due_env = phases.parse_env(a.due_env) if a.due_env else {}
    a.due_env_explicit = bool(a.due_env)
    return a


def unpack_due_src(src: str) -> Path:
    """A due source tree: the directory itself, or a .tar.gz unpacked under bench/.build/."""
    path = Path(src).resolve()
    if path.is_dir():
        return path
    if not path.is_file():
        raise SystemExit(f"--due-src/DUE_SRC {src}: no such directory or archive")
    dest = BUILD / f"due-src-{path.name.removesuffix('.tar.gz').removesuffix('.tgz')}"
    if not (dest / "go.mod").exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path) as tar:
            tar.extractall(dest, filter="data")
    return dest


def build(args) -> dict:
    versions = {}
    built = []
    if not args.no_build:
        log("building switchyard and the floor (cargo build --release)")
        subprocess.run(["nice", "-n", "10", "cargo", "build", "--release", "-p", "switchyard", "--bin", "switchyard",
                        "-p", "switchyard-bench-floor", "--bin", "switchyard-floor"], cwd=ROOT, check=True)
    for version in args.due_versions:
        env = dict(os.environ)
        env.pop("DUE_SRC", None)
        how = "the Go module proxy"
        if version != "v2.4.2":
            env["DUE_VERSION"] = version
            if args.due_src:
                env["DUE_SRC"] = str(unpack_due_src(args.due_src))
                how = f"the source tree {env['DUE_SRC']}"
        if not args.no_build:
            log(f"building the due {version} harness programs from {how} (bench/due/build.sh)")
            p = subprocess.run([str(HERE / "due" / "build.sh"), str(due_bin(version))], env=env,
                               stdout=subprocess.DEVNULL)
            if p.returncode != 0:
                log(f"due {version} did not build from {how}: it is left out of this run"
                    + ("" if args.due_src or version == "v2.4.2" else " (name a source tree with --due-src/DUE_SRC)"))
                versions[f"due {version}"] = f"not built from {how}"
                continue
        if not (due_bin(version) / "gate").exists():
            log(f"due {version}: no binaries in {due_bin(version)}; left out")
            continue
        built.append(version)
        go = "go1.25.5 (GOTOOLCHAIN)" if version == "v2.4.2" else "the installed Go"
        versions[f"due {version}"] = f"built from {how} with {go}"
    for path in [SWITCHYARD, FLOOR]:
        if not path.exists():
            raise SystemExit(f"missing {path}: run without --no-build")

    def out(cmd, **kw):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, **kw).stdout.strip()
        except OSError:
            return "?"

    versions["rustc"] = out(["rustc", "--version"])
    versions["go (due v2.4.2)"] = out(["go", "version"], env=dict(os.environ, GOTOOLCHAIN=GO_TOOLCHAIN_V242))
    versions["go (due v2.5.8)"] = out(["go", "version"], env=dict(os.environ, GOTOOLCHAIN="local"))
    versions["etcd"] = (out(["etcd", "--version"]) or "?").splitlines()[0]
    versions["redis"] = out(["redis-server", "--version"])
    versions["perf"] = out(["perf", "--version"]) or "not installed"
    versions["switchyard commit"] = out(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT)
    if out(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT):
        versions["switchyard commit"] += " (with uncommitted changes)"
    args.due_versions = built
    return versions


def programs() -> dict:
    """SHA-256 of every program a run measures (ours and each built due's), so a resumed run can check
    that it measures the same programs even when the commit moved on (a docs change rebuilds the same)."""
    paths = [SWITCHYARD, FLOOR] + sorted(p for d in BUILD.glob("bin*") if d.is_dir() for p in d.iterdir() if p.is_file())
    return {os.path.relpath(p, ROOT): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.exists()}
def machine_info() -> dict:
    info = {"kernel": platform.release(), "cores": os.cpu_count()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    info["nofile_limit"] = resource.getrlimit(resource.RLIMIT_NOFILE)
    return info



def raise_nofile(want: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for candidate in (max(want, hard), want if hard == resource.RLIM_INFINITY else min(want, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (candidate, max(candidate, hard)))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def resumed(path: str, meta: dict) -> dict:
    """The results of a run that was cut off, ready to go on: refused when this run's options, programs
    (by SHA-256) or machine differ from its (its figures would not compare), with the records of its
    unfinished block dropped. The commit may differ (each segment records its own)."""
    results = json.loads(Path(path).read_text())
    old = results.get("meta", {})
    if old.get("format") != 2:
        raise SystemExit(f"--resume {path}: not a results file of this harness (format 2)")
    meta = json.loads(json.dumps(meta))  # as it will be stored (tuples become lists), to compare with the file
    differ = [key for key in ("mode", "machine", "config", "programs") if old.get(key) != meta.get(key)]
    differ += [f"versions[{k}]" for k in meta["versions"]
               if k != "switchyard commit" and old.get("versions", {}).get(k) != meta["versions"][k]]
    if differ:
        raise SystemExit(f"--resume {path}: this run differs from the one resumed in {', '.join(differ)}; "
                         "resume with the same options, programs and machine, or start a new run")
    if not old.get("segments"):  # the first segment: the run's own start, end, command and commit
        old["segments"] = [{k: v for k, v in (("started", old.get("started")), ("finished", old.get("finished")),
                                              ("command", old.get("command")),
                                              ("commit", old.get("versions", {}).get("switchyard commit")))
                            if v is not None}]
    dropped = phases.drop_unfinished(results)
    log(f"resuming {path}: {len(results['done'])} blocks finished, {dropped} records of an unfinished block dropped")
    return results


def stop_on_signals() -> None:
    """SIGTERM and SIGINT (which a shell ignores in background jobs) end the run the way Ctrl-C does: the
    running block is left unfinished, every process started is stopped, and the results are saved."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    mode = "quick" if args.quick else "full"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_dir = HERE / "results"
    out = Path(args.out or args.resume) if (args.out or args.resume) else results_dir / f"{mode}-{stamp}.json"
    logdir = results_dir / "logs" / f"{mode}-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)

    subprocess.run([str(HERE / "install.sh")], check=True)
    nofile = raise_nofile(max(args.idle_conns, 20_000) + 1000)
    per_process = nofile[0] - 500
    if args.idle_conns > per_process:
        log(f"RLIMIT_NOFILE is {nofile}: a gate cannot hold {args.idle_conns} connections, using {per_process}")
        args.idle_conns = per_process
    if not args.scale_gates:
        args.scale_gates = max(1, -(-args.scale_conns // min(17_000, per_process)))
    if -(-args.scale_conns // args.scale_gates) > per_process:
        raise SystemExit(f"--scale-gates {args.scale_gates}: more than {per_process} connections per gate "
                         f"(RLIMIT_NOFILE {nofile})")
    versions = build(args)
    if not args.due_versions:
        raise SystemExit("no due version built")
    args.due_client_version = args.due_versions[0]
    args.system_list = ([s for s in args.systems.split(",") if s] if args.systems else
                        ["switchyard"] + [f"due-{v}" for v in args.due_versions] + ["floor", "direct"])
    args.system_list = [s for s in args.system_list
                        if not s.startswith("due-") or s.removeprefix("due-") in args.due_versions]
    ports = Ports(args.port_base)
    meta = {
        "format": 2, "mode": mode, "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine_info(),
        "versions": versions, "programs": programs(), "due_anchor": args.due_versions[0],
        "config": {
            "phases": args.phase_list, "reps": args.reps, "run_secs": args.run_secs, "run_requests": args.run_requests,
            "pipeline": args.pipeline, "cells": [{"connections": c, "payload_bytes": p} for c, p in args.cells],
            "systems": args.system_list, "clients": args.client_list, "transports": args.transport_list,
            "due_client": f"due {args.due_client_version}", "warmup_secs": args.warmup_secs,
            "timeout_ms": args.timeout_ms, "max_packet_bytes": args.max_packet_bytes, "route_bytes": 4,
            "seq_bytes": 4, "heartbeat": "off", "byte_order": "big",
            "due_tune": args.due_tune, "tune_cell": args.tune_cell, "tune_secs": args.tune_secs,
            "tune_reps": args.tune_reps,
            "open_cell": args.open_cell, "open_fractions": args.open_fractions, "open_secs": args.open_secs,
            "open_reps": args.open_reps, "open_pipeline": args.open_pipeline,
            "eff_cell": args.eff_cell, "eff_secs": args.eff_secs, "eff_reps": args.eff_reps,
            "idle_conns": args.idle_conns, "idle_reps": args.idle_reps, "idle_sources": args.idle_sources,
            "scale_conns": args.scale_conns, "scale_gates": args.scale_gates, "scale_rate": args.scale_rate,
            "scale_secs": args.scale_secs, "nofile": list(nofile),
        },
        "command": " ".join(["bench/run.py"] + (argv if argv is not None else sys.argv[1:])),
    }
    segment = {"started": meta["started"], "command": meta["command"],
               "commit": meta["versions"].get("switchyard commit")}
    results = resumed(args.resume, meta) if args.resume else {"meta": meta, "runs": [], "idle": []}
    meta = results["meta"]
    meta.setdefault("segments", []).append(segment)

    def save():
        results["meta"]["finished"] = segment["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(out)

    infra = Infra(ports, logdir)
    started = time.time() - meta.get("duration_secs", 0)
    try:
        if "tune" in args.phase_list and not args.due_env_explicit and len(args.due_tune) > 1:
            args.due_env = phases.tune_due(args, ports, logdir, infra, results, save)
        meta["due_env"] = " ".join(f"{k}={v}" for k, v in args.due_env.items()) or "default"
        log(f"due runs with env: {meta['due_env']}")
        for phase in ("matrix", "open", "efficiency", "idle", "scale"):
            if phase in args.phase_list:
                log(f"phase {phase}")
                getattr(phases, {"open": "open_loop"}.get(phase, phase))(args, ports, logdir, infra, results, save)
    except KeyboardInterrupt as stop:
        log(f"interrupted ({stop}): the finished blocks are in {out}; go on with "
            f"`python3 bench/run.py --resume {out}` and this run's options")
        return 130
    finally:
        infra.stop()
        results["meta"]["duration_secs"] = round(time.time() - started)
        save()
    log(f"results: {out} ({round(time.time() - started)} s)")

    report_path = args.report or str(report_default(args, Path(out)))
    subprocess.run([sys.executable, str(HERE / "report.py"), str(out), "--out", report_path], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
