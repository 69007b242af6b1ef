"""Readings from /proc: CPU seconds, RSS and its peak, open descriptors, the machine's busy time, TCP
sockets in TIME_WAIT, and
system calls (perf stat on the raw_syscalls:sys_enter tracepoint where perf works, /proc/<pid>/io's
syscr + syscw otherwise, which count only the read and write families)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


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


def time_wait_sockets(sockstat: str = "/proc/net/sockstat") -> int:
    """TCP sockets in TIME_WAIT, machine-wide (the `tw` field of the TCP line)."""
    with open(sockstat) as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()[1:]
                return int(dict(zip(fields[::2], fields[1::2])).get("tw", 0))
    return 0


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


def io_syscalls(pid: int) -> int:
    """syscr + syscw of /proc/<pid>/io: read- and write-family system calls so far (all threads)."""
    counts = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            key, _, value = line.partition(":")
            counts[key] = int(value)
    return counts.get("syscr", 0) + counts.get("syscw", 0)


def perf_works() -> bool:
    """Whether `perf stat` can count the raw_syscalls:sys_enter tracepoint here."""
    if not shutil.which("perf"):
        return False
    try:
        p = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and "raw_syscalls:sys_enter" in p.stderr and "<not" not in p.stderr


class SyscallCounter:
    """Counts every system call of some processes while it runs: one `perf stat -p` per process."""

    def __init__(self, pids: dict[str, int]):
        self.files = {}
        self.procs = {}
        for name, pid in pids.items():
            out = tempfile.NamedTemporaryFile(prefix=f"perf-{name}-", suffix=".csv", delete=False)
            out.close()
            self.files[name] = out.name
            self.procs[name] = subprocess.Popen(
                ["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-o", out.name, "-p", str(pid)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, int | None]:
        counts = {}
        for name, p in self.procs.items():
            p.send_signal(signal.SIGINT)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            counts[name] = None
            try:
                for line in open(self.files[name]):
                    m = re.match(r"^(\d+),", line)
                    if m and "raw_syscalls:sys_enter" in line:
                        counts[name] = int(m.group(1))
                os.unlink(self.files[name])
            except OSError:
                pass
        return counts
