"""Processes the benchmark starts: spawning, reaping, and reading /proc.

Every process goes through `spawn`, which records it; `reap_all` (called on
every exit path of the harness, including signals) sends SIGTERM to the ones
still running, waits a bounded time, then SIGKILLs and waits for them. Only
processes this harness started are ever signalled, always by pid.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

_registry: list[subprocess.Popen] = []
_lock = threading.Lock()
_used_ports: set[int] = set()


def spawn(argv: list[str], *, stdout=None, stderr=None, env=None, cwd=None) -> subprocess.Popen:
    """Starts a process and remembers it for `reap_all`."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=stderr if stderr is not None else subprocess.DEVNULL,
        env=full_env,
        cwd=cwd,
        close_fds=True,
    )
    with _lock:
        _registry.append(proc)
    return proc


def spawn_logged(argv: list[str], log: Path, *, both=False, env=None) -> subprocess.Popen:
    """Starts a process with stderr (and stdout too when `both`) in `log`."""
    with open(log, "ab", buffering=0) as out:
        if both:
            return spawn(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        return spawn(argv, stdout=subprocess.DEVNULL, stderr=out, env=env)


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout=5.0) -> int | None:
    """Signals one process and waits for it (SIGKILL after `timeout`)."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait(timeout=10)


def stop_many(procs: list[subprocess.Popen], timeout=10.0) -> None:
    """SIGTERM to all at once, then wait for all (SIGKILL stragglers)."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for proc in procs:
        left = max(0.0, deadline - time.monotonic())
        try:
            proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def reap_all() -> None:
    """Ends every process this harness started that is still running."""
    with _lock:
        procs = list(_registry)
        _registry.clear()
    stop_many(procs, timeout=5.0)


def forget_exited() -> None:
    """Drops finished processes from the registry (keeps it small)."""
    with _lock:
        _registry[:] = [p for p in _registry if p.poll() is None]


def free_port() -> int:
    """A loopback TCP port nobody listens on, below the ephemeral range
    (so that outgoing connections cannot be holding it)."""
    for _ in range(500):
        port = random.randint(20000, 32000)
        if port in _used_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used_ports.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def _schedstat(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) summed over
    the live threads of a process, in nanosecond precision
    (/proc/PID/task/TID/schedstat)."""
    run = wait = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


def cpu_seconds(pid: int) -> float | None:
    """CPU time of a process (all its live threads), in seconds: from
    schedstat (ns) when the kernel has it, else utime + stime (ticks)."""
    sched = _schedstat(pid)
    if sched is not None and sched[0] > 0:
        return sched[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_queue_wait(pid: int) -> float | None:
    """Seconds the process's threads spent runnable but not running."""
    sched = _schedstat(pid)
    return sched[1] if sched is not None else None


def status_kib(pid: int, key: str) -> int | None:
    """A `kB` value of /proc/PID/status (VmRSS, VmHWM, ...), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def pss_kib(pid: int) -> int | None:
    """Proportional set size (shared pages divided among their users), KiB."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def child_named(pid: int, name: str) -> int | None:
    """The pid of a child of `pid` whose command name (comm) is `name`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        fields = stat.rsplit(")", 1)[1].split()
        # fields[1] is the parent pid (field 4 of stat).
        if comm == name and int(fields[1]) == pid:
            return int(entry)
    return None


def threads(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def wait_until(cond, timeout: float, interval: float = 0.005, what: str = "condition"):
    """Polls `cond()` until it returns a truthy value; bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.1f} s")
        time.sleep(interval)


def install_signal_handlers() -> None:
    """SIGTERM/SIGINT/SIGHUP to the harness: reap everything, then exit."""

    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, handler)


def tcp_local_addrs(pid: int) -> set[str]:
    """The local addresses ("127.0.0.1:PORT") of the IPv4 TCP sockets `pid`
    holds: the client addresses Redis sees (CLIENT LIST, MONITOR), so that
    each request in a capture can be put down to the process that sent it."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    addrs = set()
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return set()
    for line in lines:
        fields = line.split()
        if len(fields) > 9 and fields[9] in inodes:
            ip_hex, port_hex = fields[1].split(":")
            ip = ".".join(str(b) for b in reversed(bytes.fromhex(ip_hex)))
            addrs.add(f"{ip}:{int(port_hex, 16)}")
    return addrs
