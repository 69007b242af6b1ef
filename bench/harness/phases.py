"""The measuring phases of a run: one measured load-generator run against a running topology, the
throughput matrix, the due tuning pass, open-loop latency, efficiency (system calls, pinned variant),
idle memory and the scale run. Each returns plain records for the results JSON; a failed run is
recorded with its error and never enters a median.

Every phase is a sequence of blocks (one topology start, or one idle or scale run), each named by a key
such as `matrix/3/tcp/switchyard`. A block's records carry its key, and the key joins `results["done"]`
once the block has finished, so a run cut off part-way can be resumed (`run.py --resume`): finished blocks
are skipped, and the records of the block that was cut off are dropped and measured again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from . import procfs
from .procs import Proc, run_client, wait_port
from .systems import (CLIENT_ENV, SWITCHYARD, Ports, due_bin, due_client, switchyard_bench, switchyard_gate, systems_for,
                      topology)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def block(results, save, key: str, body) -> None:
    """Runs body(tag) unless the block `key` finished in the run being resumed; tag(rec) marks a record as
    the block's. The key is recorded as done (and saved) once body returns: a body records its own failures,
    so an exception out of it (an interrupt) leaves the block unfinished, to be measured again."""
    done = results.setdefault("done", [])
    if key in done:
        log(f"{key}: finished in the run resumed, skipped")
        return

    def tag(rec: dict) -> dict:
        rec["block"] = key
        return rec

    body(tag)
    done.append(key)
    save()


def drop_unfinished(results) -> int:
    """Drops the records of blocks that did not finish (a run cut off); returns how many."""
    done = set(results.setdefault("done", []))
    dropped = 0
    for kind in ("runs", "idle"):
        kept = [r for r in results.get(kind, []) if r.get("block", "") in done]
        dropped += len(results.get(kind, [])) - len(kept)
        results[kind] = kept
    return dropped


def client_cmd(client: str, args, addr: str, transport: str, conns: int, payload: int, *,
               secs: float | None = None, requests: int | None = None, rate: float | None = None,
               pipeline: int | None = None) -> list[str]:
    pipeline = pipeline or args.pipeline
    if client == "switchyard":
        return switchyard_bench(addr, transport, conns, pipeline, payload, requests=requests, secs=secs, rate=rate,
                                timeout_ms=args.timeout_ms)
    return due_client(args.due_client_version, addr, transport, conns, pipeline, payload, requests=requests,
                      secs=secs, timeout_ms=args.timeout_ms)


def failed(rec: dict) -> bool:
    r = rec.get("report") or {}
    return (not r or rec.get("exit_code", 1) != 0 or "error" in rec or (r.get("errors") or 0) > 0
            or (r.get("timeouts") or 0) > 0 or (r.get("connections_lost") or 0) > 0 or not r.get("requests_ok"))


def measure(topo, infra, client: str, conns: int, payload: int, args, *, secs=None, requests=None, rate=None,
            pipeline=None, syscalls: bool = False, pin: bool = False) -> dict:
    """One measured run of a load generator against a running topology, with the servers' CPU seconds,
    peak RSS, read/write system calls (and, with `syscalls`, every system call through perf stat)."""
    servers = {name: p.pid for name, p in (("gate", topo.gate), ("node", topo.node)) if p}
    hwm_ok = all(procfs.reset_hwm(pid) for pid in servers.values())
    sampler = procfs.RssSampler(servers)
    sampler.start()
    counter = procfs.SyscallCounter(servers) if syscalls else None
    if counter:
        time.sleep(0.3)  # perf attaches
    load0 = os.getloadavg()[0]
    cpu0 = {n: procfs.cpu_seconds(pid) for n, pid in servers.items()}
    io0 = {n: procfs.io_syscalls(pid) for n, pid in servers.items()}
    i0, m0 = infra.cpu(), procfs.machine_busy_seconds()
    cmd = client_cmd(client, args, topo.addr, topo.transport, conns, payload, secs=secs, requests=requests,
                     rate=rate, pipeline=pipeline)
    if pin:
        cmd = ["taskset", "-c", "1"] + cmd
    t0 = time.time()
    report, client_cpu, rc, err = run_client(cmd, 120 + (secs or 0) * 2 + (requests or 0) / 2000, CLIENT_ENV[client])
    wall = time.time() - t0
    cpu1 = {n: procfs.cpu_seconds(pid) for n, pid in servers.items()}
    io1 = {n: procfs.io_syscalls(pid) for n, pid in servers.items()}
    i1, m1 = infra.cpu(), procfs.machine_busy_seconds()
    counts = counter.stop() if counter else {}
    peaks = sampler.stop()
    peak = {n: (procfs.status_kb(pid, "VmHWM") if hwm_ok else peaks[n]) for n, pid in servers.items()}
    server_cpu = {n: cpu1[n] - cpu0[n] for n in servers}
    other = max(0.0, (m1 - m0) - sum(server_cpu.values()) - (i1 - i0) - client_cpu)
    rec = {
        "system": topo.system, "transport": topo.transport, "client": client, "connections": conns,
        "pipeline": pipeline or args.pipeline, "payload_bytes": payload, "secs": secs, "requests": requests,
        "offered_rate": rate, "pinned": pin, "exit_code": rc, "wall_secs": round(wall, 3),
        "gate_cpu_s": round(server_cpu.get("gate", 0.0), 3), "node_cpu_s": round(server_cpu.get("node", 0.0), 3),
        "client_cpu_s": round(client_cpu, 3), "infra_cpu_s": round(i1 - i0, 3), "other_cpu_s": round(other, 3),
        "loadavg_1m_before": load0,
        "gate_peak_rss_kb": peak.get("gate", 0), "node_peak_rss_kb": peak.get("node", 0),
        "peak_rss_source": "VmHWM" if hwm_ok else "sampled VmRSS (50 ms)",
        "gate_rw_syscalls": io1.get("gate", 0) - io0.get("gate", 0),
        "node_rw_syscalls": io1.get("node", 0) - io0.get("node", 0),
        "report": report,
    }
    if counter:
        rec["gate_syscalls"], rec["node_syscalls"] = counts.get("gate"), counts.get("node")
    if report is None or rc != 0:
        rec["error"] = err
    rec["failed"] = failed(rec)
    return rec


def describe(rec: dict) -> str:
    r = rec.get("report") or {}
    lat = r.get("latency_us", {})
    extra = f" rate={rec['offered_rate']:.0f}" if rec.get("offered_rate") else ""
    return (f"{rec['system']:11} {rec['transport']} client={rec['client']:10} c={rec['connections']:<6} "
            f"{rec['payload_bytes']}B{extra} tps={r.get('tps', 0):9.0f} p99={lat.get('p99', 0) / 1000:7.2f}ms "
            f"ok={r.get('requests_ok', 0)} err={r.get('errors', '?')} to={r.get('timeouts', '?')} "
            f"cpu g/n={rec['gate_cpu_s']:.2f}/{rec['node_cpu_s']:.2f}s"
            + ("  FAILED" if rec["failed"] else "") + (f": {rec['error'][:160]}" if "error" in rec else ""))


def with_topology(system, transport, ports, logdir, args, infra, body):
    """Starts a fresh topology, warms it up with every load generator, runs body(topo), stops it."""
    topo = topology(system, transport, ports, logdir, args)
    topo.start()
    try:
        topo.wait_ready()
        for client in args.client_list:
            run_client(client_cmd(client, args, topo.addr, transport, 100, args.payload_bytes,
                                  secs=args.warmup_secs), 120 + args.warmup_secs * 2, CLIENT_ENV[client])
        return body(topo)
    finally:
        topo.stop()


def topology_block(results, save, key: str, setup, fields: dict, body) -> None:
    """One block of measured runs on a fresh topology of `fields["system"]` and `fields["transport"]`:
    `body(topo, tag)` records them. A topology that does not start or answer is recorded as one failed run
    with `fields` (phase, rep, ...), and the block counts as finished."""
    ports, logdir, args, infra = setup

    def measured(tag):
        try:
            with_topology(fields["system"], fields["transport"], ports, logdir, args, infra,
                          lambda topo: body(topo, tag))
        except Exception as e:  # keep going: record the failure
            log(f"{key}: {e}")
            results["runs"].append(tag({**fields, "error": str(e)[:2000], "failed": True}))
    block(results, save, key, measured)


def matrix(args, ports, logdir, infra, results, save) -> None:
    """Every cell with every load generator, `reps` times; repetitions rotate the order of the systems
    and the load generators, so no system always runs first or on a warmer machine."""
    for rep in range(args.reps):
        order = args.system_list[rep % len(args.system_list):] + args.system_list[:rep % len(args.system_list)]
        for transport in args.transport_list:
            for system in systems_for(transport, order):
                def cells(topo, tag, rep=rep):
                    for conns, payload in args.cells:
                        for k in range(len(args.client_list)):
                            client = args.client_list[(k + rep + conns) % len(args.client_list)]
                            rec = measure(topo, infra, client, conns, payload, args, secs=args.run_secs,
                                          requests=args.run_requests)
                            rec.update(phase="matrix", rep=rep)
                            results["runs"].append(tag(rec))
                            log(f"matrix rep {rep}: {describe(rec)}")
                            save()
                topology_block(results, save, f"matrix/{rep}/{transport}/{system}", (ports, logdir, args, infra),
                               {"phase": "matrix", "rep": rep, "system": system, "transport": transport}, cells)


def tune_due(args, ports, logdir, infra, results, save) -> dict:
    """One pass over due runtime settings (env of its gate and node) on the tuning cell; returns the env
    with the best median TPS. Everything tried is recorded."""
    version = args.due_versions[0]
    if "tune" in results.get("done", []) and "tuning" in results:
        chosen = results["tuning"]["chosen"]
        log(f"tune: finished in the run resumed, due runs with {chosen}")
        return parse_env("" if chosen == "default" else chosen)
    conns, payload = args.tune_cell
    tried = []
    for env_text in args.due_tune:
        env = parse_env(env_text)
        saved, args.due_env = args.due_env, env
        tps = []
        try:
            def body(topo):
                for rep in range(args.tune_reps):
                    rec = measure(topo, infra, "switchyard", conns, payload, args, secs=args.tune_secs)
                    rec.update(phase="tuning", rep=rep, due_env=env_text or "default", block="tune")
                    results["runs"].append(rec)
                    log(f"tuning {env_text or 'default'}: {describe(rec)}")
                    if not rec["failed"]:
                        tps.append(rec["report"]["tps"])
                    save()
            with_topology(f"due-{version}", "tcp", ports, logdir, args, infra, body)
        except Exception as e:
            log(f"tuning {env_text}: {e}")
        finally:
            args.due_env = saved
        tried.append({"env": env_text or "default", "tps": tps})
    best = max(tried, key=lambda t: sorted(t["tps"])[len(t["tps"]) // 2] if t["tps"] else 0.0)
    results["tuning"] = {"version": version, "cell": [conns, payload], "tried": tried, "chosen": best["env"]}
    results.setdefault("done", []).append("tune")
    save()
    return parse_env("" if best["env"] == "default" else best["env"])


def parse_env(text: str) -> dict:
    env = {}
    for item in text.replace(",", " ").split():
        key, _, value = item.partition("=")
        env[key] = value
    return env


def open_loop(args, ports, logdir, infra, results, save) -> None:
    """Latency at fixed offered rates (fractions of due's measured maximum), every system driven by
    `switchyard bench --rate` (the due client has no open-loop mode), latency from the scheduled send."""
    conns, payload = args.open_cell
    anchor = f"due-{args.due_versions[0]}"
    for transport in args.transport_list:
        best = [r["report"]["tps"] for r in results["runs"]
                if r.get("phase") == "matrix" and not r["failed"] and r["system"] == anchor
                and r["transport"] == transport and r["client"] == "switchyard" and r["connections"] == conns
                and r["payload_bytes"] == payload]
        if not best and transport in results.get("open_loop_max", {}):
            best = [results["open_loop_max"][transport]["tps"]]  # probed in the run resumed
        if not best:
            probe = []
            with_topology(anchor, transport, ports, logdir, args, infra, lambda topo: probe.append(
                measure(topo, infra, "switchyard", conns, payload, args, secs=args.open_secs)))
            best = [probe[0]["report"]["tps"]] if not probe[0]["failed"] else []
        if not best:
            log(f"open loop {transport}: due's maximum could not be measured; skipped")
            continue
        due_max = sorted(best)[len(best) // 2]
        rates = [round(due_max * f) for f in args.open_fractions]
        results.setdefault("open_loop_max", {})[transport] = {"system": anchor, "tps": due_max, "rates": rates}
        for rep in range(args.open_reps):
            order = args.system_list[rep % len(args.system_list):] + args.system_list[:rep % len(args.system_list)]
            for system in systems_for(transport, order):
                def rates_of(topo, tag, rep=rep, rates=rates):
                    for fraction, rate in zip(args.open_fractions, rates):
                        rec = measure(topo, infra, "switchyard", conns, payload, args, secs=args.open_secs,
                                      rate=rate, pipeline=args.open_pipeline)
                        rec.update(phase="open", rep=rep, fraction=fraction)
                        results["runs"].append(tag(rec))
                        log(f"open loop {fraction:.0%}: {describe(rec)}")
                        save()
                topology_block(results, save, f"open/{transport}/{rep}/{system}", (ports, logdir, args, infra),
                               {"phase": "open", "rep": rep, "system": system, "transport": transport}, rates_of)


def efficiency(args, ports, logdir, infra, results, save) -> None:
    """CPU, every system call (perf stat) and peak RSS per request on one cell, with the load generator
    sharing the cores and pinned: load generator on CPU 1, gate and node on CPU 0."""
    conns, payload = args.eff_cell
    counting = procfs.perf_works()
    results["meta"]["syscall_source"] = ("perf stat -e raw_syscalls:sys_enter" if counting
                                         else "/proc/<pid>/io syscr + syscw (read and write families only)")
    pin_ok = (os.cpu_count() or 1) >= 2 and subprocess.run(["taskset", "-c", "0", "true"]).returncode == 0
    for rep in range(args.eff_reps):
        for pin in ([False, True] if pin_ok else [False]):
            for transport in args.transport_list:
                for system in systems_for(transport, args.system_list):
                    def one(topo, tag, pin=pin, rep=rep):
                        if pin:
                            for p in topo.procs():
                                subprocess.run(["taskset", "-a", "-p", "-c", "0", str(p.pid)],
                                               stdout=subprocess.DEVNULL, check=False)
                        rec = measure(topo, infra, "switchyard", conns, payload, args, secs=args.eff_secs,
                                      syscalls=counting, pin=pin)
                        rec.update(phase="efficiency", rep=rep)
                        results["runs"].append(tag(rec))
                        log(f"efficiency{' pinned' if pin else ''}: {describe(rec)}")
                        save()
                    topology_block(results, save, f"efficiency/{rep}/{'pinned' if pin else 'shared'}/{transport}/{system}",
                                   (ports, logdir, args, infra), {"phase": "efficiency", "rep": rep, "system": system,
                                                                  "transport": transport, "pinned": pin}, one)


def idle(args, ports, logdir, infra, results, save) -> None:
    """Gate RSS per idle connection, `idle_reps` times per system and transport: RSS with N silent
    connections minus RSS with none, over the sockets the gate holds; for due also after a forced GC
    (SIGUSR1: debug.FreeOSMemory in the harness's gate)."""
    systems = [s for s in args.system_list if s == "switchyard" or s.startswith("due-")]
    for rep in range(args.idle_reps):
        for system in systems:
            for transport in args.transport_list:
                def one(tag, rep=rep, system=system, transport=transport):
                    try:
                        rec = idle_once(system, transport, ports, logdir, args)
                        rec["rep"] = rep
                        log(f"idle rep {rep}: {system} {transport}: {rec['held_by_gate']} held, "
                            f"{rec['kb_per_conn']} KiB per connection as-is, "
                            f"{rec.get('kb_per_conn_after_gc')} after GC")
                    except Exception as e:
                        rec = {"system": system, "transport": transport, "rep": rep, "error": str(e)[:2000]}
                        log(f"idle: {system} {transport}: {e}")
                    results["idle"].append(tag(rec))
                block(results, save, f"idle/{rep}/{system}/{transport}", one)


def open_holders(idle_bin: Path, addr: str, transport: str, count: int, per: int,
                 sources: list[str]) -> tuple[list, int]:
    holders, left = [], count
    while left > 0:
        n = min(per, left)
        left -= n
        holders.append(subprocess.Popen(
            [str(idle_bin), "-addr", addr, "-transport", transport, "-count", str(n),
             "-sources", ",".join(sources)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    opened = 0
    for h in holders:
        line = h.stdout.readline().strip()
        if line.startswith("ready "):
            opened += int(line.split()[1])
    return holders, opened


def close_holders(holders) -> None:
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


def idle_once(system: str, transport: str, ports: Ports, logdir: Path, args) -> dict:
    topo = topology(system, transport, ports, logdir, args)
    topo.start()
    holders = []
    try:
        topo.wait_ready()
        time.sleep(1.0)
        gate = topo.gate.pid
        go = system.startswith("due-")
        if go:
            force_gc(topo.gate)
        fds0, rss0 = procfs.fd_count(gate), settle_rss(gate)
        sources = [f"127.0.0.{i}" for i in range(2, 2 + args.idle_sources)]
        t0 = time.time()
        holders, opened = open_holders(due_bin(args.due_client_version) / "idle", topo.addr, transport,
                                       args.idle_conns, args.idle_per_holder, sources)
        open_secs = time.time() - t0
        time.sleep(2.0)
        rss1 = settle_rss(gate)
        held = procfs.fd_count(gate) - fds0
        rec = {"system": system, "transport": transport, "requested": args.idle_conns, "opened_by_client": opened,
               "held_by_gate": held, "rss_before_kb": rss0, "rss_after_kb": rss1,
               "kb_per_conn": round((rss1 - rss0) / held, 3) if held > 0 else None,
               "open_secs": round(open_secs, 2), "sources": len(sources)}
        if go:
            force_gc(topo.gate)
            rss2 = settle_rss(gate)
            rec["rss_after_gc_kb"] = rss2
            rec["kb_per_conn_after_gc"] = round((rss2 - rss0) / held, 3) if held > 0 else None
        return rec
    finally:
        close_holders(holders)
        topo.stop()


def force_gc(gate: Proc) -> None:
    """SIGUSR1 to the harness's due gate (debug.FreeOSMemory), then waits for its "freed" line."""
    before = gate.logpath.read_text(errors="replace").count("freed")
    os.kill(gate.pid, signal.SIGUSR1)
    deadline = time.time() + 30
    while time.time() < deadline:
        if gate.logpath.read_text(errors="replace").count("freed") > before:
            return
        time.sleep(0.2)
    raise RuntimeError("the due gate did not confirm the forced GC (SIGUSR1)")


def settle_rss(pid: int, timeout: float = 15.0) -> int:
    """RSS once it stops moving (two readings 1 s apart within 0.5 %), or after the timeout."""
    last = procfs.rss_kb(pid)
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(1.0)
        now = procfs.rss_kb(pid)
        if abs(now - last) <= max(64, last * 0.005):
            return now
        last = now
    return last


# TIME_WAIT sockets the machine may hold when the scale phase starts (each may pin a source port).
TIME_WAIT_CALM = 1000


def scale(args, ports, logdir, infra, results, save) -> None:
    """Switchyard with `scale_conns` client connections over several gate processes (each within the
    open-file limit), one node; each gate listens on its own 127.0.0.x address so no source/destination
    pair runs short of ephemeral ports. Open loop at `scale_rate` in total; gate RSS per connection,
    p99 and errors."""
    if "scale" in results.get("done", []):
        log("scale: finished in the run resumed, skipped")
        return
    # The idle phase just closed hundreds of thousands of connections whose source ports it had bound; while
    # they sit in TIME_WAIT (60 s) those ports are refused to every connect(), and the scale clients would
    # fail with EADDRNOTAVAIL before opening a connection. Wait for them to go.
    waited, deadline = time.time(), time.time() + 120
    while procfs.time_wait_sockets() > TIME_WAIT_CALM and time.time() < deadline:
        time.sleep(2)
    if time.time() - waited > 1:
        log(f"scale: waited {time.time() - waited:.0f} s for TIME_WAIT sockets to go "
            f"({procfs.time_wait_sockets()} left, calm at {TIME_WAIT_CALM})")
    gates = args.scale_gates
    per_gate = -(-args.scale_conns // gates)
    tag = f"scale-{int(time.time())}"
    p = ports
    common = ["--route-bytes", "4", "--seq-bytes", "4", "--max-packet-bytes", str(args.max_packet_bytes),
              "--locator", f"redis://127.0.0.1:{p.redis}", "--locator-prefix", tag, "--log", "warn"]
    node = Proc(f"{tag}-node", [str(SWITCHYARD), "node", "--id", f"node-{tag}", "--link",
                                f"127.0.0.1:{p.sy_node_link}", "--http", f"127.0.0.1:{p.sy_node_http}",
                                "--drain-deadline", "2s"] + common, logdir)
    procs, clients = [node], []
    rec = {"connections": args.scale_conns, "gates": gates, "per_gate": per_gate, "offered_rate": args.scale_rate,
           "secs": args.scale_secs}
    try:
        wait_port("127.0.0.1", p.sy_node_link, 30, [node])
        addrs = []
        for g in range(gates):
            host = f"127.0.0.{10 + g}"
            addr = f"{host}:{p.scale_base + 2 * g}"
            procs.append(switchyard_gate(f"{tag}-{g}", "tcp", addr, f"127.0.0.1:{p.scale_base + 2 * g + 1}",
                                         f"127.0.0.1:{p.sy_node_link}", common, logdir))
            addrs.append((host, p.scale_base + 2 * g))
        for host, port in addrs:
            wait_port(host, port, 60, procs)
        rss0 = [procfs.rss_kb(g.pid) for g in procs[1:]]
        for host, port in addrs:
            cmd = switchyard_bench(f"{host}:{port}", "tcp", per_gate, args.open_pipeline, args.payload_bytes,
                                   secs=args.scale_secs, rate=args.scale_rate / gates, timeout_ms=args.timeout_ms)
            # warm-up covers opening the connections: requests start after it
            cmd[cmd.index("--warmup-secs") + 1] = str(args.scale_warmup_secs)
            clients.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        peak = [0] * gates
        while any(c.poll() is None for c in clients):
            for i, g in enumerate(procs[1:]):
                try:
                    peak[i] = max(peak[i], procfs.rss_kb(g.pid))
                except OSError:
                    pass
            time.sleep(0.5)
        reports = []
        for c in clients:
            out, err = c.communicate()
            line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), None)
            reports.append(json.loads(line) if line else {"error": err.strip()[-500:]})
        held = sum(r.get("connections", 0) for r in reports if "error" not in r)
        rec.update({
            "gate_rss_before_kb": rss0, "gate_rss_peak_kb": peak,
            "kb_per_conn": round((sum(peak) - sum(rss0)) / held, 3) if held else None,
            "reports": reports,
            "requests_ok": sum(r.get("requests_ok", 0) for r in reports),
            "errors": sum((r.get("errors", 0) or 0) + (r.get("connections_lost", 0) or 0) for r in reports),
            "timeouts": sum(r.get("timeouts", 0) or 0 for r in reports),
            "p99_us_worst_gate": max((r.get("latency_us", {}).get("p99", 0) for r in reports), default=None),
            "p99_us_median_gate": sorted(r.get("latency_us", {}).get("p99", 0) for r in reports)[len(reports) // 2],
            "client_failures": sum(1 for r in reports if "error" in r),
        })
        log(f"scale: {held} connections over {gates} gates, {rec['kb_per_conn']} KiB per connection, "
            f"p99 worst gate {rec['p99_us_worst_gate']} us, errors {rec['errors']}, timeouts {rec['timeouts']}")
    except Exception as e:
        rec["error"] = str(e)[:2000]
        log(f"scale: {e}")
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait()
        for proc in procs:
            proc.stop()
    results["scale"] = rec
    results.setdefault("done", []).append("scale")
    save()
