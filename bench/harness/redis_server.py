"""A private redis-server on a free loopback port, and what we read from it."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from . import procs


class RedisServer:
    def __init__(self, workdir: Path, name: str = "redis", maxclients: int = 10000):
        self.port = procs.free_port()
        self.dir = workdir / f"{name}-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}"
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--maxclients", str(maxclients),
            # Benchmark clients come and go by the thousand; keep the
            # defaults otherwise (no persistence: nothing is measured on disk).
        ]
        self.proc = procs.spawn_logged(argv, self.dir / "redis.log", both=True)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)
        procs.wait_until(self._ping, timeout=10, interval=0.02, what=f"redis-server on port {self.port}")

    def _ping(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited; see {self.dir / 'redis.log'}")
        try:
            return bool(self.client.ping())
        except redis.exceptions.ConnectionError:
            return False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def version(self) -> str:
        return str(self.client.info("server")["redis_version"])

    def commandstats(self) -> dict[str, int]:
        """calls per command since start (or the last CONFIG RESETSTAT)."""
        raw = self.client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in raw.items()}

    def cpu_seconds(self) -> float:
        return procs.cpu_seconds(self.pid) or 0.0

    def pttl_bracketed(self, key: str) -> tuple[float, int, float]:
        """(wall time before the call, PTTL in ms, wall time after)."""
        before = time.time()
        pttl = int(self.client.pttl(key))
        after = time.time()
        return before, pttl, after

    def monitor(self, out: Path) -> subprocess.Popen:
        """`redis-cli monitor` into a file: one line per command, with `[db lua]`
        for the commands scripts run and `[db addr]` for clients' requests."""
        return procs.spawn(
            [shutil.which("redis-cli") or "redis-cli", "-p", str(self.port), "monitor"],
            stdout=open(out, "wb"),
        )

    def stop(self) -> None:
        # SIGTERM: redis-server shuts down at once (nothing to save).
        self.client.close()
        procs.stop(self.proc)


def count_monitor(path: Path, exclude_addrs: set[str]) -> tuple[int, int, dict[str, int]]:
    """(client requests, commands run inside scripts, requests by command)
    from a `redis-cli monitor` capture, leaving out our own connections."""
    requests = inner = 0
    by_command: dict[str, int] = {}
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace")
            start = line.find("[")
            end = line.find("]", start)
            if start < 0 or end < 0:
                continue
            source = line[start + 1 : end].split(" ", 1)[-1]
            if source == "lua":
                inner += 1
                continue
            if source in exclude_addrs:
                continue
            requests += 1
            rest = line[end + 1 :].strip()
            command = rest.split(" ", 1)[0].strip('"').lower()
            by_command[command] = by_command.get(command, 0) + 1
    return requests, inner, by_command
