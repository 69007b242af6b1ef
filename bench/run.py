#!/usr/bin/env python3
"""Switchyard vs due benchmark runner.

Builds Switchyard (cargo, release) and the due v2.4.2 harness programs (bench/due, Go), starts etcd and
Redis on loopback, then for every repetition, system (Switchyard, due, plain relay) and transport (TCP,
WebSocket) starts one gate process and one node process, runs every workload cell with both load
generators (`switchyard bench` and the due client), and records throughput, latency, CPU seconds of the
gate and the node (from /proc/<pid>/stat), their peak RSS (VmHWM, reset before each run), and the
machine's other load. Then it measures gate memory per idle connection, writes the results JSON and
calls report.py for the tables and the chart.

Everything listens and connects on 127.0.0.0/8 only. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / ".build"
GO_BIN = BUILD / "bin"
GO_TOOLCHAIN = "go1.25.5"  # as bench/due/build.sh: due v2.4.2 pins sonic v1.14.1, which does not build with Go 1.26
DUE_ETC = HERE / "due" / "etc"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

SYSTEMS = ("switchyard", "due", "relay")
CLIENTS = ("switchyard", "due")
TRANSPORTS = ("tcp", "ws")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_kb(pid: int) -> int:
    """Resident set size from statm (cheap to sample)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_KB


def reset_hwm(pid: int) -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0, needs permission on the process)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(v) for v in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    steal = vals[7] if len(vals) > 7 else 0
    guest = sum(vals[8:10]) if len(vals) > 9 else 0  # already counted in user/nice
    return (sum(vals[:8]) - idle - steal - guest) / CLK_TCK


class RssSampler(threading.Thread):
    """Samples the RSS of some processes every 50 ms and keeps the maximum (used if VmHWM can't be reset)."""

    def __init__(self, pids: dict[str, int]):
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {name: 0 for name in pids}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for name, pid in self.pids.items():
                try:
                    self.peak[name] = max(self.peak[name], rss_kb(pid))
                except OSError:
                    pass
            self._halt.wait(0.05)

    def stop(self) -> dict[str, int]:
        self._halt.set()
        self.join()
        return self.peak


# ------------------------------------------------------------------------------------------- processes


class Proc:
    """A long-running child process with its output in a log file."""

    def __init__(self, name: str, cmd: list[str], logdir: Path, env: dict | None = None):
        self.name = name
        self.cmd = cmd
        self.logpath = logdir / f"{name}.log"
        self.logfile = open(self.logpath, "ab")
        self.logfile.write(("$ " + " ".join(cmd) + "\n").encode())
        self.logfile.flush()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(
            cmd, stdout=self.logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait()
            except ProcessLookupError:
                pass
        self.logfile.close()

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.logpath.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def wait_port(host: str, port: int, timeout: float, procs: list[Proc] = ()) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited early:\n{p.tail()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


def run_client(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[dict | None, float, int, str]:
    """Runs a load generator to completion. Returns (JSON report, client CPU seconds, exit code, stderr)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env)
        deadline = time.time() + timeout
        rusage = None
        status = 0
        while True:
            pid, status, rusage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                p.kill()
                _, status, rusage = os.wait4(p.pid, 0)
                break
            time.sleep(0.01)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    report = None
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                report = json.loads(line)
                break
            except json.JSONDecodeError:
                pass
    cpu = rusage.ru_utime + rusage.ru_stime if rusage else 0.0
    return report, cpu, p.returncode, (stderr.strip()[-2000:] or stdout.strip()[-2000:])


# ------------------------------------------------------------------------------------------------ build


def build(args) -> dict:
    versions = {}
    if not args.no_build:
        log("building switchyard (cargo build --release)")
        subprocess.run(["nice", "-n", "10", "cargo", "build", "--release", "-p", "switchyard", "--bin", "switchyard"],
                       cwd=ROOT, check=True)
        log(f"building the due harness programs with {GO_TOOLCHAIN} (bench/due/build.sh)")
        subprocess.run([str(HERE / "due" / "build.sh"), str(GO_BIN)], check=True, stdout=subprocess.DEVNULL)
    sy = ROOT / "target" / "release" / "switchyard"
    for path in [sy] + [GO_BIN / n for n in ("gate", "node", "client", "relay", "echo", "idle")]:
        if not path.exists():
            raise SystemExit(f"missing {path}: run without --no-build")

    def out(cmd, **kw):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, **kw).stdout.strip()
        except OSError:
            return "?"

    versions["rustc"] = out(["rustc", "--version"])
    versions["go (due harness)"] = out(["go", "version"], env=dict(os.environ, GOTOOLCHAIN=GO_TOOLCHAIN))
    versions["due"] = "github.com/dobyte/due/v2 v2.4.2 (network/tcp, network/ws, locate/redis, registry/etcd at the same commit e5cd0097bf4d)"
    versions["etcd"] = out(["etcd", "--version"]).splitlines()[0] if out(["etcd", "--version"]) else "?"
    versions["redis"] = out(["redis-server", "--version"])
    versions["switchyard commit"] = out(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT)
    dirty = out(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT)
    if dirty:
        versions["switchyard commit"] += " (with uncommitted changes)"
    return versions


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


# ----------------------------------------------------------------------------------------------- infra


class Ports:
    def __init__(self, base: int):
        self.etcd = base + 1
        self.etcd_peer = base + 2
        self.redis = base + 3
        self.sy_gate = base + 10      # client TCP or WS listener (one transport per topology)
        self.sy_gate_http = base + 11
        self.sy_node_link = base + 12
        self.sy_node_http = base + 13
        self.due_gate = base + 20
        self.due_gate_link = base + 21
        self.due_node_link = base + 22
        self.relay = base + 30
        self.echo = base + 31


class Infra:
    """etcd (due's registry) and Redis (both systems' locator) on loopback, in a temporary folder."""

    def __init__(self, ports: Ports, logdir: Path):
        self.dir = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
        self.procs = []
        p = ports
        self.etcd = Proc("etcd", [
            "etcd", "--name", "bench", "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{p.etcd}", "--advertise-client-urls", f"http://127.0.0.1:{p.etcd}",
            "--listen-peer-urls", f"http://127.0.0.1:{p.etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{p.etcd_peer}",
            "--initial-cluster", f"bench=http://127.0.0.1:{p.etcd_peer}", "--log-level", "warn",
        ], logdir)
        self.redis = Proc("redis", [
            "redis-server", "--port", str(p.redis), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.dir),
        ], logdir)
        self.procs = [self.etcd, self.redis]
        wait_port("127.0.0.1", p.etcd, 30, self.procs)
        wait_port("127.0.0.1", p.redis, 30, self.procs)

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs if p.alive())

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# -------------------------------------------------------------------------------------------- topology


class Topology:
    """One gate process and one node process of one system, serving one transport."""

    system = ""

    def __init__(self, transport: str, ports: Ports, logdir: Path, args):
        self.transport = transport
        self.ports = ports
        self.logdir = logdir
        self.args = args
        self.gate: Proc | None = None
        self.node: Proc | None = None
        self.tag = f"{self.system}-{transport}-{uuid.uuid4().hex[:8]}"

    host = "127.0.0.1"
    port = 0

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        raise NotImplementedError

    def procs(self) -> list[Proc]:
        return [p for p in (self.gate, self.node) if p]

    def stop(self) -> None:
        for p in (self.gate, self.node):
            if p:
                p.stop()

    def wait_ready(self, timeout: float = 60) -> None:
        wait_port(self.host, self.port, timeout, self.procs())
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            for p in self.procs():
                if not p.alive():
                    raise RuntimeError(f"{p.name} exited:\n{p.tail()}")
            report, _, rc, err = run_client(client_cmd("switchyard", self, 2, 1, 16, 10, 0.0, 1000), 20)
            if report and report.get("requests_ok") == 10:
                return
            last = err
            time.sleep(0.5)
        raise RuntimeError(f"{self.system} {self.transport} never answered the echo route: {last}")


class SwitchyardTopo(Topology):
    system = "switchyard"

    def start(self) -> None:
        p, a = self.ports, self.args
        sy = str(ROOT / "target" / "release" / "switchyard")
        self.port = p.sy_gate
        common = ["--route-bytes", "4", "--seq-bytes", "4", "--max-packet-bytes", str(a.max_packet_bytes),
                  "--locator", f"redis://127.0.0.1:{p.redis}", "--locator-prefix", self.tag, "--log", "warn"]
        self.node = Proc(f"{self.tag}-node", [
            sy, "node", "--id", f"node-{self.tag}", "--link", f"127.0.0.1:{p.sy_node_link}",
            "--http", f"127.0.0.1:{p.sy_node_http}", "--drain-deadline", "2s"] + common, self.logdir)
        wait_port("127.0.0.1", p.sy_node_link, 30, [self.node])
        tcp = f"127.0.0.1:{p.sy_gate}" if self.transport == "tcp" else ""
        ws = f"127.0.0.1:{p.sy_gate}" if self.transport == "ws" else ""
        self.gate = Proc(f"{self.tag}-gate", [
            sy, "gate", "--id", f"gate-{self.tag}", "--nodes", f"127.0.0.1:{p.sy_node_link}",
            "--http", f"127.0.0.1:{p.sy_gate_http}", "--tcp", tcp, "--ws", ws,
            "--heartbeat-interval", "0", "--max-connections", "100000", "--gate-drain-deadline", "2s"] + common,
            self.logdir)


class DueTopo(Topology):
    system = "due"

    def start(self) -> None:
        p, a = self.ports, self.args
        self.port = p.due_gate
        env = {"DUE_ETC": str(DUE_ETC)}
        common = ["-route-bytes", "4", "-seq-bytes", "4", "-buffer-bytes", str(a.max_packet_bytes),
                  "-etcd", f"127.0.0.1:{p.etcd}", "-namespace", self.tag,
                  "-redis", f"127.0.0.1:{p.redis}", "-redis-prefix", self.tag]
        self.node = Proc(f"{self.tag}-node", [
            str(GO_BIN / "node"), "-link", f"127.0.0.1:{p.due_node_link}"] + common, self.logdir, env)
        wait_port("127.0.0.1", p.due_node_link, 30, [self.node])
        self.gate = Proc(f"{self.tag}-gate", [
            str(GO_BIN / "gate"), "-transport", self.transport, "-addr", f"127.0.0.1:{p.due_gate}",
            "-link", f"127.0.0.1:{p.due_gate_link}", "-max-conns", "100000"] + common, self.logdir, env)


class RelayTopo(Topology):
    """The ceiling: a byte relay in the gate's place and a framing echo server in the node's place."""

    system = "relay"

    def start(self) -> None:
        p = self.ports
        self.port = p.relay
        self.node = Proc(f"{self.tag}-echo", [
            str(GO_BIN / "echo"), "-addr", f"127.0.0.1:{p.echo}", "-route-bytes", "4", "-seq-bytes", "4"],
            self.logdir)
        wait_port("127.0.0.1", p.echo, 30, [self.node])
        tcp = f"127.0.0.1:{p.relay}" if self.transport == "tcp" else ""
        ws = f"127.0.0.1:{p.relay}" if self.transport == "ws" else ""
        self.gate = Proc(f"{self.tag}-relay", [
            str(GO_BIN / "relay"), "-tcp", tcp, "-ws", ws, "-upstream", f"127.0.0.1:{p.echo}"], self.logdir)


TOPOLOGIES = {"switchyard": SwitchyardTopo, "due": DueTopo, "relay": RelayTopo}


def client_cmd(client: str, topo: Topology, conns: int, pipeline: int, payload: int, requests: int,
               warmup: float, timeout_ms: int) -> list[str]:
    if client == "switchyard":
        return [str(ROOT / "target" / "release" / "switchyard"), "bench", "--addr", topo.addr,
                "--transport", topo.transport, "--connections", str(conns), "--pipeline", str(pipeline),
                "--payload-bytes", str(payload), "--requests", str(requests), "--route-bytes", "4",
                "--seq-bytes", "4", "--warmup-secs", str(warmup), "--timeout-ms", str(timeout_ms),
                "--log", "warn", "--json"]
    return [str(GO_BIN / "client"), "-addr", topo.addr, "-transport", topo.transport,
            "-connections", str(conns), "-pipeline", str(pipeline), "-payload-bytes", str(payload),
            "-requests", str(requests), "-route-bytes", "4", "-seq-bytes", "4",
            "-warmup-secs", str(warmup), "-timeout-ms", str(timeout_ms), "-json"]


CLIENT_ENV = {"due": {"DUE_ETC": str(DUE_ETC)}, "switchyard": {}}


# ------------------------------------------------------------------------------------------- measuring


def measure(topo: Topology, infra: Infra, client: str, conns: int, payload: int, args) -> dict:
    gate, node = topo.gate, topo.node
    hwm_ok = reset_hwm(gate.pid) and reset_hwm(node.pid)
    sampler = RssSampler({"gate": gate.pid, "node": node.pid})
    sampler.start()
    load0 = os.getloadavg()[0]
    g0, n0, i0, m0 = cpu_seconds(gate.pid), cpu_seconds(node.pid), infra.cpu(), machine_busy_seconds()
    t0 = time.time()
    cmd = client_cmd(client, topo, conns, args.pipeline, payload, args.requests, 0.0, args.timeout_ms)
    timeout = 120 + args.requests / 2000
    report, client_cpu, rc, err = run_client(cmd, timeout, CLIENT_ENV[client])
    wall = time.time() - t0
    g1, n1, i1, m1 = cpu_seconds(gate.pid), cpu_seconds(node.pid), infra.cpu(), machine_busy_seconds()
    peaks = sampler.stop()
    if hwm_ok:
        peak_gate, peak_node = status_kb(gate.pid, "VmHWM"), status_kb(node.pid, "VmHWM")
    else:
        peak_gate, peak_node = peaks["gate"], peaks["node"]
    gate_cpu, node_cpu, infra_cpu = g1 - g0, n1 - n0, i1 - i0
    other_cpu = max(0.0, (m1 - m0) - gate_cpu - node_cpu - infra_cpu - client_cpu)
    rec = {
        "system": topo.system, "transport": topo.transport, "client": client, "connections": conns,
        "pipeline": args.pipeline, "payload_bytes": payload, "requests": args.requests,
        "exit_code": rc, "wall_secs": round(wall, 3),
        "gate_cpu_s": round(gate_cpu, 3), "node_cpu_s": round(node_cpu, 3),
        "client_cpu_s": round(client_cpu, 3), "infra_cpu_s": round(infra_cpu, 3),
        "other_cpu_s": round(other_cpu, 3), "loadavg_1m_before": load0,
        "gate_peak_rss_kb": peak_gate, "node_peak_rss_kb": peak_node,
        "peak_rss_source": "VmHWM" if hwm_ok else "sampled VmRSS (50 ms)",
        "report": report,
    }
    if report is None or rc != 0:
        rec["error"] = err
    return rec


def idle_test(system: str, transport: str, ports: Ports, logdir: Path, args) -> dict:
    """Gate RSS per idle connection: RSS with N idle connections minus RSS with none, over N."""
    topo = TOPOLOGIES[system](transport, ports, logdir, args)
    topo.start()
    holders: list[subprocess.Popen] = []
    try:
        topo.wait_ready()
        time.sleep(1.0)
        gate = topo.gate.pid
        fds0 = fd_count(gate)
        rss0 = settle_rss(gate)
        sources = [f"127.0.0.{i}" for i in range(2, 2 + args.idle_sources)]
        per = args.idle_per_holder
        left = args.idle_conns
        t0 = time.time()
        while left > 0:
            n = min(per, left)
            left -= n
            holders.append(subprocess.Popen(
                [str(GO_BIN / "idle"), "-addr", topo.addr, "-transport", transport, "-count", str(n),
                 "-sources", ",".join(sources)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        opened = 0
        for h in holders:
            line = h.stdout.readline().strip()
            if line.startswith("ready "):
                opened += int(line.split()[1])
        open_secs = time.time() - t0
        time.sleep(2.0)
        rss1 = settle_rss(gate)
        fds1 = fd_count(gate)
        held = fds1 - fds0
        rec = {
            "system": system, "transport": transport, "requested": args.idle_conns, "opened_by_client": opened,
            "held_by_gate": held, "rss_before_kb": rss0, "rss_after_kb": rss1,
            "kb_per_conn": round((rss1 - rss0) / held, 3) if held > 0 else None,
            "open_secs": round(open_secs, 2), "sources": len(sources),
        }
        if system in ("switchyard", "due"):
            rec["node_rss_kb"] = rss_kb(topo.node.pid)
        return rec
    finally:
        for h in holders:
            try:
                h.stdin.close()
            except OSError:
                pass
        for h in holders:
            try:
                h.wait(30)
            except subprocess.TimeoutExpired:
                h.kill()
                h.wait()
        topo.stop()


def settle_rss(pid: int, timeout: float = 15.0) -> int:
    """RSS once it stops moving (two readings 1 s apart within 0.5 %), or after the timeout."""
    last = rss_kb(pid)
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(1.0)
        now = rss_kb(pid)
        if abs(now - last) <= max(64, last * 0.005):
            return now
        last = now
    return last


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 20,000 requests per cell, 1 repetition, 2,000 idle connections")
    ap.add_argument("--requests", type=int, help="requests per measured run (full: 1,000,000)")
    ap.add_argument("--reps", type=int, help="repetitions of the whole matrix (full: 3)")
    ap.add_argument("--concurrency", default="50,100,200,500,1000", help="connection counts (1 KiB payload)")
    ap.add_argument("--big-payload", default="2048@1000",
                    help="extra cells BYTES@CONNS[,...] (due's benchmark: 2 KiB at 1,000); empty for none")
    ap.add_argument("--payload-bytes", type=int, default=1024, help="letters in the message (due's: 1024)")
    ap.add_argument("--pipeline", type=int, default=8, help="requests in flight per connection (both clients)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--transports", default=",".join(TRANSPORTS))
    ap.add_argument("--warmup-requests", type=int, help="requests per client after each topology start (not recorded)")
    ap.add_argument("--timeout-ms", type=int, default=10000, help="request timeout of both clients")
    ap.add_argument("--max-packet-bytes", type=int, default=65536)
    ap.add_argument("--idle-conns", type=int, help="idle connections per gate and transport (full: 19,000)")
    ap.add_argument("--idle-sources", type=int, default=8, help="127.0.0.x source addresses for idle connections")
    ap.add_argument("--idle-per-holder", type=int, default=10000, help="idle connections per holder process")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle-connection test")
    ap.add_argument("--no-matrix", action="store_true", help="skip the throughput matrix")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--port-base", type=int, default=29000, help="harness ports are PORT_BASE+1..+31 on 127.0.0.1")
    ap.add_argument("--out", help="results JSON (default bench/results/<full|quick>-<time>.json)")
    ap.add_argument("--report", help="markdown to write (default: BENCHMARKS.md for a full run, "
                                     "bench/results/quick/BENCHMARKS.md for --quick)")
    a = ap.parse_args(argv)
    a.requests = a.requests or (20_000 if a.quick else 1_000_000)
    a.reps = a.reps or (1 if a.quick else 3)
    a.warmup_requests = a.warmup_requests if a.warmup_requests is not None else (2_000 if a.quick else 50_000)
    a.idle_conns = a.idle_conns or (2_000 if a.quick else 19_000)
    return a


def cells(args) -> list[tuple[int, int]]:
    out = [(int(c), args.payload_bytes) for c in args.concurrency.split(",") if c.strip()]
    for item in filter(None, (s.strip() for s in args.big_payload.split(","))):
        size, conns = item.split("@")
        out.append((int(conns), int(size)))
    return out


def raise_nofile(want: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    for candidate in (max(want, hard), target):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (candidate, max(candidate, hard)))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def main(argv=None) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_dir = HERE / "results"
    out = Path(args.out) if args.out else results_dir / f"{mode}-{stamp}.json"
    logdir = results_dir / "logs" / f"{mode}-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)

    subprocess.run([str(HERE / "install.sh")], check=True)
    nofile = raise_nofile(args.idle_conns + 1000)
    if nofile[0] < args.idle_conns + 200:
        fit = max(1000, nofile[0] - 200)
        log(f"RLIMIT_NOFILE is {nofile}: a gate cannot hold {args.idle_conns} connections, using {fit}")
        args.idle_conns = fit
    versions = build(args)
    ports = Ports(args.port_base)
    systems = [s for s in args.systems.split(",") if s]
    clients = [c for c in args.clients.split(",") if c]
    transports = [t for t in args.transports.split(",") if t]
    matrix = cells(args)

    meta = {
        "mode": mode, "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine_info(),
        "versions": versions,
        "config": {
            "requests": args.requests, "reps": args.reps, "pipeline": args.pipeline,
            "cells": [{"connections": c, "payload_bytes": p} for c, p in matrix],
            "systems": systems, "clients": clients, "transports": transports,
            "warmup_requests": args.warmup_requests, "timeout_ms": args.timeout_ms,
            "max_packet_bytes": args.max_packet_bytes, "route_bytes": 4, "seq_bytes": 4, "heartbeat": "off", "byte_order": "big",
            "idle_conns": args.idle_conns, "idle_sources": args.idle_sources, "nofile": list(nofile),
        },
        "command": " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
    }
    results = {"meta": meta, "runs": [], "idle": []}

    def save():
        results["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(out)

    infra = Infra(ports, logdir)
    started = time.time()
    try:
        total = args.reps * len(systems) * len(transports) * len(matrix) * len(clients)
        done = 0
        if not args.no_matrix:
            log(f"{total} measured runs of {args.requests} requests ({mode}); logs in {logdir}")
            for rep in range(args.reps):
                order = systems[rep % len(systems):] + systems[:rep % len(systems)]  # rotate who goes first
                for system in order:
                    for transport in transports:
                        topo = TOPOLOGIES[system](transport, ports, logdir, args)
                        topo.start()
                        try:
                            topo.wait_ready()
                            for client in clients:  # warm the servers up once per topology (not recorded)
                                run_client(client_cmd(client, topo, 100, args.pipeline, args.payload_bytes,
                                                      args.warmup_requests, 0.0, args.timeout_ms),
                                           120 + args.warmup_requests / 2000, CLIENT_ENV[client])
                            for conns, payload in matrix:
                                for k in range(len(clients)):  # alternate which client goes first
                                    client = clients[(k + rep + conns) % len(clients)]
                                    rec = measure(topo, infra, client, conns, payload, args)
                                    rec["rep"] = rep
                                    results["runs"].append(rec)
                                    done += 1
                                    r = rec["report"] or {}
                                    lat = r.get("latency_us", {})
                                    log(f"[{done}/{total}] rep {rep} {system:10} {transport} client={client:10} "
                                        f"c={conns:<5} {payload}B  tps={r.get('tps', 0):9.0f}  "
                                        f"p99={lat.get('p99', 0) / 1000:7.2f}ms  ok={r.get('requests_ok', 0)} "
                                        f"err={r.get('errors', '?')} to={r.get('timeouts', '?')}  "
                                        f"cpu g/n={rec['gate_cpu_s']:.2f}/{rec['node_cpu_s']:.2f}s"
                                        + (f"  ERROR: {rec['error'][:200]}" if "error" in rec else ""))
                                    save()
                        except Exception as e:  # keep going: record the failure
                            log(f"{system} {transport}: {e}")
                            results["runs"].append({"system": system, "transport": transport, "rep": rep,
                                                    "error": str(e)[:2000]})
                            save()
                        finally:
                            topo.stop()
        if not args.no_idle:
            for system in [s for s in systems if s in ("switchyard", "due")]:
                for transport in transports:
                    log(f"idle: {args.idle_conns} idle {transport} connections on the {system} gate")
                    try:
                        rec = idle_test(system, transport, ports, logdir, args)
                        log(f"idle: {system} {transport}: {rec['held_by_gate']} held, "
                            f"{rec['kb_per_conn']} KiB per connection")
                    except Exception as e:
                        rec = {"system": system, "transport": transport, "error": str(e)[:2000]}
                        log(f"idle: {system} {transport}: {e}")
                    results["idle"].append(rec)
                    save()
    finally:
        infra.stop()
        results["meta"]["duration_secs"] = round(time.time() - started)
        save()
    log(f"results: {out} ({round(time.time() - started)} s)")

    report_path = args.report or (str(ROOT / "BENCHMARKS.md") if mode == "full" else
                                  str(results_dir / "quick" / "BENCHMARKS.md"))
    subprocess.run([sys.executable, str(HERE / "report.py"), str(out), "--out", report_path], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
