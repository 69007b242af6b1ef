"""The systems under test and how each one is started: Switchyard (gate + node), due at each version the
harness built (gate + node, etcd registry, Redis locator), the floor (bench/floor's multiplexing relay
and JSON echo) and the direct run (clients straight to the floor's echo, no hop); plus the load
generators' command lines and the loopback infrastructure (etcd, Redis)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from .procfs import cpu_seconds
from .procs import Proc, run_client, wait_port

HERE = Path(__file__).resolve().parent.parent
ROOT = HERE.parent
SWITCHYARD = ROOT / "target" / "release" / "switchyard"
FLOOR = ROOT / "target" / "release" / "switchyard-floor"
DUE_ETC = HERE / "due" / "etc"
BUILD = HERE / ".build"

# due versions the harness knows: where their binaries go. v2.4.2 comes from the module proxy (go.mod),
# v2.5.8 from a source tree (DUE_SRC / --due-src) or the proxy.
DUE_VERSIONS = ("v2.5.8", "v2.4.2")


def due_bin(version: str) -> Path:
    return BUILD / ("bin" if version == "v2.4.2" else f"bin-{version}")


def system_label(system: str) -> str:
    return {"switchyard": "Switchyard", "switchyard-mtls": "Switchyard, mTLS links", "floor": "floor",
            "direct": "direct"}.get(system, system.replace("due-", "due "))


def link_tls_flags(folder: Path) -> list[str]:
    """Gate and node flags of mutual TLS on the link: a throwaway CA and leaves (P-256, as the operator mints
    them: the gate's for clientAuth, the node's for serverAuth on the name switchyard-link), made with
    openssl into `folder`. Returns the gate's flags; the node's are the same with node.* files."""
    folder.mkdir(parents=True, exist_ok=True)
    def openssl(*args: str, extensions: str | None = None) -> None:
        ext = []
        if extensions is not None:
            (folder / "ext.cnf").write_text(extensions)
            ext = ["-extfile", str(folder / "ext.cnf")]
        subprocess.run(["openssl", *args, *ext], cwd=folder, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench-link-ca",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for role, usage, name in (("gate", "clientAuth", "gate"), ("node", "serverAuth", "switchyard-link")):
        openssl("req", *ec, "-keyout", f"{role}.key", "-out", f"{role}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{role}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-out", f"{role}.crt",
                extensions=f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                           f"extendedKeyUsage={usage}\nsubjectAltName=DNS:{name}\n")
    return tls_flags(folder, "gate")


def tls_flags(folder: Path, role: str) -> list[str]:
    return ["--link-tls-ca", str(folder / "ca.crt"), "--link-tls-cert", str(folder / f"{role}.crt"),
            "--link-tls-key", str(folder / f"{role}.key")]


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
        self.floor_relay = base + 30
        self.floor_link = base + 31
        self.floor_direct = base + 32
        self.scale_base = base + 100  # scale mode: gate g uses scale_base + 2g (client) and + 2g + 1 (HTTP)


class Infra:
    """etcd (due's registry) and Redis (both systems' locator) on loopback, in a temporary folder."""

    def __init__(self, ports: Ports, logdir: Path):
        self.dir = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
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


class Topology:
    """One gate process and one node process of one system, serving one transport."""

    system = ""
    host = "127.0.0.1"
    port = 0

    def __init__(self, system: str, transport: str, ports: Ports, logdir: Path, args):
        self.system = system
        self.transport = transport
        self.ports = ports
        self.logdir = logdir
        self.args = args
        self.gate: Proc | None = None
        self.node: Proc | None = None
        self.tag = f"{system}-{transport}-{uuid.uuid4().hex[:8]}".replace(".", "")

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
            report, _, rc, err = run_client(switchyard_bench(self.addr, self.transport, 2, 1, 16,
                                                             requests=10, timeout_ms=1000), 20)
            if report and report.get("requests_ok") == 10:
                return
            last = err
            time.sleep(0.5)
        raise RuntimeError(f"{self.system} {self.transport} never answered the echo route: {last}")


class SwitchyardTopo(Topology):
    def start(self) -> None:
        p, a = self.ports, self.args
        self.port = p.sy_gate
        common = ["--route-bytes", "4", "--seq-bytes", "4", "--max-packet-bytes", str(a.max_packet_bytes),
                  "--locator", f"redis://127.0.0.1:{p.redis}", "--locator-prefix", self.tag, "--log", "warn"]
        gate_tls, node_tls = [], []
        if self.system == "switchyard-mtls":
            folder = self.logdir / f"{self.tag}-link-tls"
            gate_tls, node_tls = link_tls_flags(folder), tls_flags(folder, "node")
        self.node = Proc(f"{self.tag}-node", [
            str(SWITCHYARD), "node", "--id", f"node-{self.tag}", "--link", f"127.0.0.1:{p.sy_node_link}",
            "--http", f"127.0.0.1:{p.sy_node_http}", "--drain-deadline", "2s"] + common + node_tls, self.logdir)
        wait_port("127.0.0.1", p.sy_node_link, 30, [self.node])
        self.gate = switchyard_gate(self.tag, self.transport, f"127.0.0.1:{p.sy_gate}",
                                    f"127.0.0.1:{p.sy_gate_http}", f"127.0.0.1:{p.sy_node_link}",
                                    common + gate_tls, self.logdir)


def switchyard_gate(tag: str, transport: str, listen: str, http: str, node_link: str, common: list[str],
                    logdir: Path) -> Proc:
    return Proc(f"{tag}-gate", [
        str(SWITCHYARD), "gate", "--id", f"gate-{tag}", "--nodes", node_link, "--http", http,
        "--tcp", listen if transport == "tcp" else "", "--ws", listen if transport == "ws" else "",
        "--heartbeat-interval", "0", "--max-connections", "100000", "--gate-drain-deadline", "2s"] + common,
        logdir)


class DueTopo(Topology):
    """due at one version; `args.due_env` (GOMAXPROCS, GOGC, GOMEMLIMIT, ...) goes to its gate and node."""

    def start(self) -> None:
        p, a = self.ports, self.args
        version = self.system.removeprefix("due-")
        bins = due_bin(version)
        self.port = p.due_gate
        env = {"DUE_ETC": str(DUE_ETC), **a.due_env}
        common = ["-route-bytes", "4", "-seq-bytes", "4", "-buffer-bytes", str(a.max_packet_bytes),
                  "-etcd", f"127.0.0.1:{p.etcd}", "-namespace", self.tag,
                  "-redis", f"127.0.0.1:{p.redis}", "-redis-prefix", self.tag]
        self.node = Proc(f"{self.tag}-node", [
            str(bins / "node"), "-link", f"127.0.0.1:{p.due_node_link}"] + common, self.logdir, env)
        wait_port("127.0.0.1", p.due_node_link, 30, [self.node])
        self.gate = Proc(f"{self.tag}-gate", [
            str(bins / "gate"), "-transport", self.transport, "-addr", f"127.0.0.1:{p.due_gate}",
            "-link", f"127.0.0.1:{p.due_gate_link}", "-max-conns", "100000"] + common, self.logdir, env)


class FloorTopo(Topology):
    """The floor: bench/floor's relay multiplexing every client onto one link to its JSON echo."""

    def start(self) -> None:
        p, a = self.ports, self.args
        self.port = p.floor_relay
        self.node = Proc(f"{self.tag}-echo", [
            str(FLOOR), "echo", "--link", f"127.0.0.1:{p.floor_link}",
            "--max-packet-bytes", str(a.max_packet_bytes)], self.logdir)
        wait_port("127.0.0.1", p.floor_link, 30, [self.node])
        listen = f"--{self.transport}"
        self.gate = Proc(f"{self.tag}-relay", [
            str(FLOOR), "relay", listen, f"127.0.0.1:{p.floor_relay}", "--upstream", f"127.0.0.1:{p.floor_link}",
            "--max-packet-bytes", str(a.max_packet_bytes)], self.logdir)


class DirectTopo(Topology):
    """Clients straight to the floor's echo (TCP only): no hop at all. The echo stands in as "gate"."""

    def start(self) -> None:
        p, a = self.ports, self.args
        if self.transport != "tcp":
            raise RuntimeError("the direct run is TCP only (the echo speaks no WebSocket)")
        self.port = p.floor_direct
        self.gate = Proc(f"{self.tag}-echo", [
            str(FLOOR), "echo", "--direct", f"127.0.0.1:{p.floor_direct}",
            "--max-packet-bytes", str(a.max_packet_bytes)], self.logdir)


def systems_for(transport: str, systems: list[str]) -> list[str]:
    """The systems that serve `transport`: the direct run has no WebSocket."""
    return [s for s in systems if not (s == "direct" and transport != "tcp")]


def topology(system: str, transport: str, ports: Ports, logdir: Path, args) -> Topology:
    if system in ("switchyard", "switchyard-mtls"):
        cls = SwitchyardTopo
    elif system.startswith("due-"):
        cls = DueTopo
    elif system == "floor":
        cls = FloorTopo
    elif system == "direct":
        cls = DirectTopo
    else:
        raise ValueError(f"unknown system {system!r}")
    return cls(system, transport, ports, logdir, args)


def switchyard_bench(addr: str, transport: str, conns: int, pipeline: int, payload: int, *,
                     requests: int | None = None, secs: float | None = None, rate: float | None = None,
                     timeout_ms: int = 10000) -> list[str]:
    cmd = [str(SWITCHYARD), "bench", "--addr", addr, "--transport", transport, "--connections", str(conns),
           "--pipeline", str(pipeline), "--payload-bytes", str(payload), "--route-bytes", "4", "--seq-bytes", "4",
           "--warmup-secs", "0", "--timeout-ms", str(timeout_ms), "--json"]
    cmd += ["--requests", str(requests)] if requests else ["--duration", str(secs)]
    if rate:
        cmd += ["--rate", f"{rate:.1f}"]
    return cmd


def due_client(version: str, addr: str, transport: str, conns: int, pipeline: int, payload: int, *,
               requests: int | None = None, secs: float | None = None, timeout_ms: int = 10000) -> list[str]:
    cmd = [str(due_bin(version) / "client"), "-addr", addr, "-transport", transport,
           "-connections", str(conns), "-pipeline", str(pipeline), "-payload-bytes", str(payload),
           "-route-bytes", "4", "-seq-bytes", "4", "-warmup-secs", "0", "-timeout-ms", str(timeout_ms), "-json"]
    cmd += ["-requests", str(requests)] if requests else ["-requests", "0", "-duration", str(secs)]
    return cmd


CLIENT_ENV = {"due": {"DUE_ETC": str(DUE_ETC)}, "switchyard": {}}
