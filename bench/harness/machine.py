"""What the numbers were measured on and with: machine, versions, commit."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from .tools import BENCH, REPO


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip()


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor() or "unknown",
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _run(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
    }


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def git_state() -> str:
    commit = _run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO)
    dirty = _run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"], cwd=REPO)
    return f"{commit}{' + uncommitted changes in src/ or Cargo.*' if dirty else ''}" if commit else "unknown"


def _cargo_lock_version(lock: Path, name: str) -> str:
    try:
        text = lock.read_text()
    except OSError:
        return "?"
    m = re.search(rf'name = "{re.escape(name)}"\nversion = "([^"]+)"', text)
    return m.group(1) if m else "?"


def _npm_version(package: str) -> str:
    try:
        return json.loads((BENCH / f"peers/node/node_modules/{package}/package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "not installed"


def versions(python: Path, leaderd: Path) -> dict:
    py = _run([
        str(python), "-c",
        "import importlib.metadata as m, sys\n"
        "for p in ('redis', 'python-redis-lock', 'pottery'):\n"
        "    try: print(p, m.version(p))\n"
        "    except Exception: print(p, 'not installed')\n"
        "print('python', sys.version.split()[0])",
    ])
    found = dict(line.split(" ", 1) for line in py.splitlines() if " " in line)
    node = shutil.which("node")
    wrk = shutil.which("wrk")
    return {
        "leaderd": _run([str(leaderd), "--version"]) or "?",
        "rustc": _run(["rustc", "--version"]),
        "redis-server": _run(["redis-server", "--version"]),
        "python": found.get("python", "?"),
        "redis-py": found.get("redis", "?"),
        "python-redis-lock": found.get("python-redis-lock", "?"),
        "pottery": found.get("pottery", "?"),
        "node": _run([node, "--version"]) if node else "not installed",
        "redlock (npm)": _npm_version("redlock"),
        "ioredis (npm)": _npm_version("ioredis"),
        "rslock (crate)": _cargo_lock_version(BENCH / "peers/rslock/Cargo.lock", "rslock"),
        "redis (crate, used by rslock)": _cargo_lock_version(BENCH / "peers/rslock/Cargo.lock", "redis"),
        "wrk": (_run([wrk, "--version"]).splitlines() or ["?"])[0] if wrk else "not installed",
    }
