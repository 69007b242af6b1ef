"""Child processes of the harness: long-running servers with their output in a log file, waiting for a
port, and running a load generator to completion with its rusage."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


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
