"""The benchmark scenarios. Each returns plain data (dicts) for report.py.

Scenario numbers follow issue 7:
  1 graceful handover, 2 crash failover   -> handover_and_crash()
  3 cost at rest, 4 footprint              -> at_rest(), footprint_http()
  5 status endpoint                        -> http_throughput()
  6 scale                                  -> scale_one_election(), scale_many_elections()
  7 quorum mode / Kubernetes backend       -> rows from tools.Todo until they land
  8 first leadership (a far Redis, a brand-new Redis)  -> first_leadership()
  9 switchover handover (issue 12)          -> switchover_handover()
 10 at rest with membership, observers      -> membership_at_rest()
 11 health failover (issue 13)              -> health_failover()

Every leaderd election starts with a fencing counter in place
(`Leaderd.prepare`): on a brand-new Redis leaderd waits one lease_duration
before the first term, and that one-time wait belongs in scenario 8 only.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import threading
import time
from pathlib import Path

from . import procs
from .delay_proxy import DelayProxy
from .redis_server import RedisServer, count_monitor
from .stats import summary
from .tools import Candidate, Leaderd, Tool

LEASE_S = 2.0
RETRY_S = 0.5
# How long to let candidates settle before a measuring window; a quick run
# shortens it (set by __main__).
SETTLE_S = {"value": 2.0}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Group:
    """Candidates of one tool for one election; keeps `size` of them alive."""

    def __init__(self, tool: Tool, servers: list[RedisServer], election: str, workdir: Path, size: int = 3):
        self.tool = tool
        self.servers = servers
        self.urls = [s.url for s in servers]
        self.election = election
        self.workdir = workdir
        self.size = size
        self.cands: list[Candidate] = []
        self.started = 0
        tool.prepare(servers, election)

    def add(self) -> Candidate:
        self.started += 1
        cand = self.tool.start(f"{self.tool.name}-{self.started}", self.urls, self.election, self.workdir)
        self.cands.append(cand)
        return cand

    def alive(self) -> list[Candidate]:
        return [c for c in self.cands if c.alive()]

    def top_up(self) -> None:
        while len(self.alive()) < self.size:
            self.add()

    def settled(self, min_age: float = 0.3) -> bool:
        now = time.time()
        for cand in self.alive():
            cand.poll()
            if cand.settled:
                continue
            # Peers print READY right before their first (blocking) acquire;
            # count them as waiting shortly after it.
            ready = cand.first("ready")
            if not (ready and not isinstance(cand.tool, Leaderd) and now - ready.ts >= min_age):
                return False
        return True

    def leader(self) -> Candidate | None:
        holders = []
        for cand in self.alive():
            cand.poll()
            if cand.holding:
                holders.append(cand)
        return holders[0] if len(holders) == 1 else None

    def wait_ready(self, timeout: float = 20.0) -> Candidate:
        for cand in self.cands:
            if cand.proc.poll() is not None and cand.killed_with is None:
                raise RuntimeError(f"{cand.identity} exited with {cand.proc.returncode}; see {cand.log}")
        try:
            procs.wait_until(self.settled, timeout, 0.01, f"{self.tool.label} candidates to settle")
            return procs.wait_until(self.leader, timeout, 0.01, f"a {self.tool.label} leader")
        except TimeoutError as err:
            states = "; ".join(
                f"{c.identity}: {'holding' if c.holding else 'not holding'}, "
                f"{'settled' if c.settled else 'not settled'}, last {c.events[-1].kind if c.events else 'nothing'}"
                for c in self.alive()
            )
            raise TimeoutError(f"{err} ({states})") from None

    def new_leader_after(self, t: float, exclude: Candidate) -> tuple[Candidate, float] | None:
        best = None
        for cand in self.alive():
            if cand is exclude:
                continue
            event = cand.first("acquired", after=t)
            if event and (best is None or event.ts < best[1]):
                best = (cand, event.ts)
        return best

    def stop(self) -> None:
        procs.stop_many([c.proc for c in self.cands])


def lease_expiry(servers: list[RedisServer], key: str) -> tuple[float, float] | None:
    """When the lease becomes free after its holder was killed, as
    (estimate, ± uncertainty) in unix seconds; None if no server holds it.

    With one server: when its copy expires. With n servers (quorum, Redlock):
    when a majority of them no longer hold it; servers that never got a copy
    count as free from the start."""
    expiries = []
    for server in servers:
        before, pttl, after = server.pttl_bracketed(key)
        if pttl < 0:
            continue  # no copy here (-2), or no TTL (-1: not a lease we know)
        # The key expires `pttl` ms after Redis answered, which happened
        # between `before` and `after`; PTTL itself is whole milliseconds.
        expiries.append(((before + after) / 2 + pttl / 1000, (after - before) / 2 + 0.001))
    if not expiries:
        return None
    expiries.sort()
    majority = len(servers) // 2 + 1
    free_already = len(servers) - len(expiries)
    needed = majority - free_already  # copies that must still expire
    return expiries[max(needed, 1) - 1]


def handover_and_crash(tool: Tool, workdir: Path, rounds_graceful: int, rounds_crash: int) -> dict:
    """Scenarios 1 and 2 for one tool: three candidates on private Redis
    server(s); SIGTERM (then SIGKILL) to the leader, each time a new candidate
    replaces the stopped one."""
    servers = tool.servers(workdir, "ho")
    group = Group(tool, servers, "bench", workdir)
    graceful, release, exit_codes, crash, overshoot, errors = [], [], [], [], [], []
    uncertainty = []
    try:
        group.top_up()
        for kind, rounds in (("graceful", rounds_graceful), ("crash", rounds_crash)):
            for _ in range(rounds):
                group.top_up()
                group.wait_ready()
                # Random phase relative to renewals and follower polls.
                time.sleep(random.uniform(0.3, 0.8))
                old = group.wait_ready()
                sig = signal.SIGTERM if kind == "graceful" else signal.SIGKILL
                t_kill = time.time()
                os.kill(old.pid, sig)
                old.killed_with = sig
                expiry = tool.expiry(servers, group.election) if kind == "crash" else None
                try:
                    cand, ts = procs.wait_until(
                        lambda: group.new_leader_after(t_kill, old),
                        timeout=LEASE_S * 3 + 5,
                        interval=0.001,
                        what=f"a new {tool.label} leader after {sig.name}",
                    )
                except TimeoutError as err:
                    errors.append(str(err))
                    procs.stop(old.proc)
                    continue
                if kind == "crash":
                    code = procs.stop(old.proc, signal.SIGKILL, timeout=10)
                else:
                    code = old.proc.wait(timeout=10)
                if kind == "graceful":
                    graceful.append(ts - t_kill)
                    exit_codes.append(code)
                    rel = old.first("released", after=t_kill - 0.001)
                    if rel:
                        release.append(rel.ts - t_kill)
                else:
                    crash.append(ts - t_kill)
                    if expiry is None:
                        errors.append("lease key missing on every server right after SIGKILL")
                    else:
                        overshoot.append(ts - expiry[0])
                        uncertainty.append(expiry[1])
                procs.forget_exited()
    finally:
        group.stop()
        for server in servers:
            server.stop()
    return {
        "graceful": summary(graceful),
        "release": summary(release),
        "exit_codes": sorted(set(exit_codes)),
        "crash": summary(crash),
        "overshoot": summary(overshoot),
        "overshoot_uncertainty_max": max(uncertainty) if uncertainty else None,
        "errors": errors,
        "raw": {"graceful": graceful, "crash": crash, "overshoot": overshoot},
    }


def at_rest(tools: list[Tool], workdir: Path, window: float) -> dict:
    """Scenarios 3 and 4 (idle part) for all tools at once, each on its own
    Redis server(s): one leader and two followers, measured over `window`."""
    setups = []
    try:
        for tool in tools:
            servers = tool.servers(workdir, "rest")
            group = Group(tool, servers, "bench", workdir)
            group.top_up()
            setups.append((tool, servers, group))
        for _tool, _servers, group in setups:
            group.wait_ready(timeout=30)
        time.sleep(SETTLE_S["value"])
        measures = []
        for tool, servers, group in setups:
            leader = group.leader()
            ours = {s.client.client_info()["addr"] for s in servers}
            captures = []
            for i, server in enumerate(servers):
                path = workdir / f"monitor-{tool.name}-{i}.txt"
                captures.append((server.monitor(path), path))
            measures.append({"leader": leader, "ours": ours, "captures": captures})
        time.sleep(0.3)  # let MONITOR attach before the window opens
        for (_tool, servers, group), m in zip(setups, measures, strict=True):
            m["stats0"] = [s.commandstats() for s in servers]
            m["cpu0"] = {c.identity: procs.cpu_seconds(c.pid) for c in group.alive()}
            m["rcpu0"] = [s.cpu_seconds() for s in servers]
            m["t0"] = time.monotonic()
            m["mon_t0"] = time.time()
        time.sleep(window)
        results = {}
        for (tool, servers, group), m in zip(setups, measures, strict=True):
            elapsed = time.monotonic() - m["t0"]
            mon_t1 = time.time()
            stats1 = [s.commandstats() for s in servers]
            cpu1 = {c.identity: procs.cpu_seconds(c.pid) for c in group.alive()}
            rcpu1 = [s.cpu_seconds() for s in servers]
            for proc, _path in m["captures"]:
                procs.stop(proc)
            requests = inner = 0
            by_command: dict[str, int] = {}
            for _proc, path in m["captures"]:
                r, i, by = count_monitor_window(path, m["ours"], m["mon_t0"], mon_t1)
                requests += r
                inner += i
                for k, v in by.items():
                    by_command[k] = by_command.get(k, 0) + v
            mon_elapsed = mon_t1 - m["mon_t0"]
            total = 0
            for s0, s1 in zip(m["stats0"], stats1, strict=True):
                for name, calls in s1.items():
                    if name.split("|")[0] in ("info", "monitor", "client", "config", "ping"):
                        continue
                    total += calls - s0.get(name, 0)
            leader = m["leader"]
            cpu = {}
            for cand in group.alive():
                a, b = m["cpu0"].get(cand.identity), cpu1.get(cand.identity)
                if a is not None and b is not None:
                    cpu[cand.identity] = (b - a) / elapsed * 3600
            followers = [c for c in group.alive() if c is not leader]
            rss = {c.identity: procs.status_kib(c.pid, "VmRSS") for c in group.alive()}
            results[tool.name] = {
                "window_s": elapsed,
                "requests_per_s": requests / mon_elapsed,
                "by_command_per_s": {k: v / mon_elapsed for k, v in sorted(by_command.items())},
                "inner_per_s": inner / mon_elapsed,
                "commandstats_per_s": total / elapsed,
                "per_candidate_per_retry": requests / mon_elapsed * RETRY_S / len(group.alive()),
                "redis_cpu_ms_per_s": sum(b - a for a, b in zip(m["rcpu0"], rcpu1, strict=True)) / elapsed * 1000,
                "cpu_s_per_h_leader": cpu.get(leader.identity) if leader else None,
                "cpu_s_per_h_follower": (
                    sum(cpu.get(c.identity, 0) for c in followers) / len(followers) if followers else None
                ),
                "rss_kib_leader": rss.get(leader.identity) if leader else None,
                "rss_kib_follower": (
                    max(rss.get(c.identity) or 0 for c in followers) if followers else None
                ),
                "threads_leader": procs.threads(leader.pid) if leader else None,
                "candidates": len(group.alive()),
            }
        return results
    finally:
        for _tool, servers, group in setups:
            group.stop()
            for server in servers:
                server.stop()


def count_monitor_window(path: Path, ours: set[str], t0: float, t1: float):
    """count_monitor restricted to lines stamped within [t0, t1]."""
    trimmed = path.with_suffix(".window.txt")
    with open(path, "rb") as src, open(trimmed, "wb") as dst:
        for line in src:
            try:
                ts = float(line.split(b" ", 1)[0])
            except ValueError:
                continue
            if t0 <= ts <= t1:
                dst.write(line)
    return count_monitor(trimmed, ours)


def http_get_loop(hostport: str, path: str, count: int) -> float:
    """`count` sequential GETs on one keep-alive connection; returns seconds."""
    host, port = hostport.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    start = time.monotonic()
    for _ in range(count):
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}")
    conn.close()
    return time.monotonic() - start


def footprint(leaderd: Leaderd, workdir: Path, requests: int) -> dict:
    """Scenario 4 for leaderd: RSS of a leader and a follower when idle, and
    of the leader after `requests` GET /status; binary size."""
    server = RedisServer(workdir, "footprint")
    group = Group(leaderd, [server], "bench", workdir)
    try:
        group.top_up()
        leader = group.wait_ready()
        time.sleep(SETTLE_S["value"])
        follower = next(c for c in group.alive() if c is not leader)
        idle = procs.status_kib(leader.pid, "VmRSS")
        idle_follower = procs.status_kib(follower.pid, "VmRSS")
        took = http_get_loop(leader.listen, "/status", requests)
        time.sleep(0.5)
        return {
            "binary_bytes": leaderd.binary.stat().st_size,
            "rss_idle_leader_kib": idle,
            "rss_idle_follower_kib": idle_follower,
            "rss_after_kib": procs.status_kib(leader.pid, "VmRSS"),
            "hwm_after_kib": procs.status_kib(leader.pid, "VmHWM"),
            "requests": requests,
            "requests_took_s": took,
            "threads": procs.threads(leader.pid),
        }
    finally:
        group.stop()
        server.stop()


# A leader process that does nothing: with one configured, leaderd starts its
# guard (hooks would too).
GUARDED_YAML = 'leader_process:\n  command: ["sleep", "3600"]\n  grace_period: 200ms\n'


def guard_cost(leaderd: Leaderd, workdir: Path, window: float) -> dict:
    """Scenario 4, the guard: a leader with a leader process configured, so
    that leaderd runs `leaderd-guard` next to it. RSS and PSS of the guard
    and of that leaderd when idle, and both processes' CPU over `window`
    (leaderd now also tells the guard every renewal)."""
    guarded = Leaderd(leaderd.binary, extra_yaml=GUARDED_YAML)
    guarded.name = "leaderd-guarded"
    server = RedisServer(workdir, "guard")
    group = Group(guarded, [server], "bench", workdir, size=1)
    try:
        group.top_up()
        leader = group.wait_ready()
        guard = procs.wait_until(lambda: procs.child_named(leader.pid, "leaderd-guard"), 10, 0.02,
                                 "the leaderd-guard process")
        time.sleep(SETTLE_S["value"])
        cpu0 = {p: procs.cpu_seconds(p) for p in (leader.pid, guard)}
        t0 = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - t0
        cpu = {p: ((procs.cpu_seconds(p) or 0) - (cpu0[p] or 0)) / elapsed * 3600 for p in cpu0}
        return {
            "guard_rss_kib": procs.status_kib(guard, "VmRSS"),
            "guard_pss_kib": procs.pss_kib(guard),
            "guard_threads": procs.threads(guard),
            "guard_cpu_s_per_h": cpu[guard],
            "leaderd_rss_kib": procs.status_kib(leader.pid, "VmRSS"),
            "leaderd_pss_kib": procs.pss_kib(leader.pid),
            "leaderd_cpu_s_per_h": cpu[leader.pid],
            "window_s": elapsed,
        }
    finally:
        group.stop()
        server.stop()


def first_leadership(leaderd: Leaderd, workdir: Path, rounds: int, brand_new_rounds: int,
                     delay_s: float) -> dict:
    """Scenario 8: time from starting a lone candidate to its `became
    leader` line, with the timing of issue 10's latency case (lease 2 s,
    renew 1.5 s, retry 300 ms):

    - local: Redis on loopback, the election's fencing counter in place;
    - far: the same through a proxy that delays every chunk by `delay_s`
      each way (connect, handshake, script loads and the acquire all pay
      it); a candidate whose round trip is below retry_period / 2 must lead;
    - brand-new: local, but the election has no fencing counter, as on a
      new Redis: leaderd cannot tell it from a store that lost its data and
      grants nothing for one lease_duration (a one-time cost).

    Each round is a new election and a new process."""
    tool = Leaderd(leaderd.binary, lease_ms=2000, renew_ms=1500, retry_ms=300)
    tool.name = "leaderd-first"
    server = RedisServer(workdir, "first")
    proxy = DelayProxy(server.port, delay_s)
    results: dict = {"delay_ms": delay_s * 1000, "lease_ms": tool.lease_ms, "retry_ms": tool.retry_ms}
    try:
        for case, url, primed, n in (("local", server.url, True, rounds),
                                     ("far", proxy.url, True, rounds),
                                     ("brand-new", server.url, False, brand_new_rounds)):
            times = []
            for i in range(n):
                election = f"first-{case}-{i}"
                if primed:
                    tool.prepare([server], election)
                t0 = time.time()
                cand = tool.start(f"{case}-{i}", [url], election, workdir)
                try:
                    event = procs.wait_until(lambda: cand.first("acquired"), 30, 0.002,
                                             f"the {case} candidate to lead")
                    times.append(event.ts - t0)
                finally:
                    procs.stop(cand.proc)
                    procs.forget_exited()
            results[case] = summary(times)
        return results
    finally:
        proxy.close()
        server.stop()


WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_wrk(text: str) -> dict:
    out = {}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    out["rps"] = float(m.group(1)) if m else None
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([0-9.]+)(us|ms|s)\s*$", text, re.M)
        out[f"p{pct}_s"] = float(m.group(1)) * WRK_UNITS[m.group(2)] if m else None
    m = re.search(r"(\d+) requests in ([0-9.]+)(ms|s)", text)
    out["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:.*", text)
    out["socket_errors"] = m.group(0) if m else None
    return out


WRK_PACED = Path(__file__).resolve().parent / "wrk_paced.lua"


def http_throughput(leaderd: Leaderd, workdir: Path, duration: float, runs: int,
                    modes: dict[str, dict]) -> dict:
    """Scenario 5: leaderd pinned to CPU 0 with taskset, wrk (one thread) and
    Redis on CPU 1; GET /status and GET /leader on the leader.

    Each mode (name -> {connections, delay_ms}) is run `runs` times for
    `duration`: "saturation" = closed loop, as fast as leaderd answers
    (throughput); "paced" = each connection waits delay_ms after every
    response (latency at a given load, ~connections/(delay+latency) req/s).
    Besides wrk's numbers each run records leaderd's own CPU time per request
    (its cost, whatever else runs on the machine) and how long its threads
    waited for a CPU (other processes on its core, or its own threads)."""
    wrk = shutil.which("wrk")
    if not wrk:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    server = RedisServer(workdir, "http")
    try:
        os.sched_setaffinity(server.pid, {1})
    except OSError:
        pass
    cand = leaderd.start("http-1", [server.url], "bench", workdir, taskset="0")
    group = Group(leaderd, [server], "bench", workdir, size=1)
    group.cands.append(cand)
    results = {"duration_s": duration, "modes": modes, "runs": {}}
    try:
        group.wait_ready()
        # taskset execs leaderd, so the pid is leaderd's own.
        url = f"http://{cand.listen}"
        for path in ("/status", "/leader"):
            # Warm up (connections, allocator), then measure.
            if duration > 1:
                procs.spawn(["taskset", "-c", "1", wrk, "-t1", "-c16", "-d", "1s", url + path]).wait(timeout=30)
            for mode, spec in modes.items():
                key = f"{path} {mode}"
                results["runs"][key] = []
                for i in range(runs):
                    argv = ["taskset", "-c", "1", wrk, "-t1", "-c", str(spec["connections"]),
                            "-d", f"{duration:g}s", "--latency"]
                    env = None
                    if spec.get("delay_ms"):
                        argv += ["-s", str(WRK_PACED)]
                        env = {"WRK_DELAY_MS": str(spec["delay_ms"])}
                    cpu0, wait0 = procs.cpu_seconds(cand.pid), procs.run_queue_wait(cand.pid)
                    t0 = time.monotonic()
                    out_path = workdir / f"wrk{path.replace('/', '-')}-{mode}-{i}.txt"
                    with open(out_path, "wb") as out:
                        proc = procs.spawn(argv + [url + path], stdout=out, env=env)
                        proc.wait(timeout=duration + 60)
                    elapsed = time.monotonic() - t0
                    cpu1, wait1 = procs.cpu_seconds(cand.pid), procs.run_queue_wait(cand.pid)
                    parsed = parse_wrk(out_path.read_text())
                    parsed["mode"] = mode
                    parsed["connections"] = spec["connections"]
                    parsed["leaderd_cpu_share"] = (cpu1 - cpu0) / elapsed
                    parsed["leaderd_cpu_us_per_request"] = (
                        (cpu1 - cpu0) / parsed["requests"] * 1e6 if parsed.get("requests") else None
                    )
                    parsed["leaderd_wait_share"] = (wait1 - wait0) / elapsed
                    parsed["load"] = Path("/proc/loadavg").read_text().split()[0]
                    results["runs"][key].append(parsed)
        results["affinity"] = sorted(os.sched_getaffinity(cand.pid))
        results["threads"] = procs.threads(cand.pid)
        return results
    finally:
        group.stop()
        server.stop()


def best_run(runs: list[dict], key: str = "p99_s") -> dict:
    """The least disturbed run: lowest p99, or (key="rps") highest throughput."""
    ok = [r for r in runs if r.get("rps") and r.get(key) is not None]
    if not ok:
        return {}
    return max(ok, key=lambda r: r["rps"]) if key == "rps" else min(ok, key=lambda r: r[key])


def _holder(server: RedisServer, key: str) -> str | None:
    raw = server.client.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)["holder"]
    except (ValueError, KeyError):
        return None


def _measure_window(server: RedisServer, cands: list[Candidate], window: float) -> dict:
    s0 = server.commandstats()
    r0 = server.cpu_seconds()
    c0 = {c.pid: procs.cpu_seconds(c.pid) or 0.0 for c in cands}
    t0 = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    s1 = server.commandstats()
    r1 = server.cpu_seconds()
    c1 = {c.pid: procs.cpu_seconds(c.pid) or 0.0 for c in cands}
    delta = {k: v - s0.get(k, 0) for k, v in s1.items()}
    ignored = ("info", "monitor", "client", "config", "ping")
    total = sum(v for k, v in delta.items() if k.split("|")[0] not in ignored)
    rss = [procs.status_kib(c.pid, "VmRSS") or 0 for c in cands]
    pss = [procs.pss_kib(c.pid) or 0 for c in cands]
    return {
        "window_s": elapsed,
        "redis_cpu_share": (r1 - r0) / elapsed,
        "evalsha_per_s": delta.get("evalsha", 0) / elapsed,
        "commands_incl_scripts_per_s": total / elapsed,
        "candidates_cpu_share": sum(c1[p] - c0[p] for p in c0) / elapsed,
        "rss_mib_total": sum(rss) / 1024,
        "pss_mib_total": sum(pss) / 1024,
        "rss_kib_mean": sum(rss) / len(rss) if rss else None,
        "threads_per_candidate": procs.threads(cands[0].pid) if cands else None,
    }


def _start_many(leaderd: Leaderd, server: RedisServer, workdir: Path, specs: list[tuple[str, str]]) -> list[Candidate]:
    cands = []
    for identity, election in specs:
        cands.append(leaderd.start(identity, [server.url], election, workdir))
        # A short pause every 50 keeps the fork rate sane on 2 cores.
        if len(cands) % 50 == 0:
            time.sleep(0.05)
    return cands


def _wait_all_settled(cands: list[Candidate], timeout: float) -> float:
    start = time.monotonic()
    pending = list(cands)

    def check():
        nonlocal pending
        dead = [c for c in pending if c.proc.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead[0].identity} exited with {dead[0].proc.returncode}; see {dead[0].log}")
        still = []
        for c in pending:
            c.poll()
            if not c.settled:
                still.append(c)
        pending = still
        return not pending

    procs.wait_until(check, timeout, 0.2, f"{len(cands)} candidates to settle")
    return time.monotonic() - start


def _handover_by_key(server, key, by_identity, exclude_pid=None, timeout=15.0) -> dict:
    """SIGTERM the current holder; returns the time until the next holder's
    'became leader' log line."""
    holder = procs.wait_until(lambda: _holder(server, key), timeout, 0.01, "a holder")
    old = by_identity[holder]
    r0 = server.cpu_seconds()
    t_kill = time.time()
    os.kill(old.pid, signal.SIGTERM)
    old.killed_with = signal.SIGTERM
    new_identity = procs.wait_until(
        lambda: (lambda h: h if h and h != holder else None)(_holder(server, key)),
        timeout, 0.001, "a new holder",
    )
    seen = time.time()
    new = by_identity[new_identity]
    event = procs.wait_until(lambda: new.first("acquired", after=t_kill), 5.0, 0.005, "the 'became leader' line")
    old.proc.wait(timeout=10)
    time.sleep(0.2)
    return {
        "handover_s": event.ts - t_kill,
        "seen_in_redis_s": seen - t_kill,
        "redis_cpu_s_burst": server.cpu_seconds() - r0,
    }


def scale_one_election(leaderd: Leaderd, workdir: Path, n: int, window: float, handovers: int) -> dict:
    """Scenario 6a: `n` leaderd processes on one election, one Redis."""
    server = RedisServer(workdir, f"scale{n}", maxclients=max(10000, 4 * n))
    sub = workdir / f"scale-{n}"
    sub.mkdir(exist_ok=True)
    cands: list[Candidate] = []
    try:
        leaderd.prepare([server], "scale")
        t0 = time.monotonic()
        cands = _start_many(leaderd, server, sub, [(f"c{i}", "scale") for i in range(n)])
        settle = _wait_all_settled(cands, timeout=max(60.0, n * 0.15))
        started = time.monotonic() - t0
        time.sleep(SETTLE_S["value"])
        measured = _measure_window(server, cands, window)
        by_identity = {c.identity: c for c in cands}
        rounds = [_handover_by_key(server, leaderd.key("scale"), by_identity) for _ in range(handovers)]
        measured.update({
            "candidates": n,
            "start_to_settled_s": started,
            "settle_s": settle,
            "handovers": summary([r["handover_s"] for r in rounds]),
            "seen_in_redis": summary([r["seen_in_redis_s"] for r in rounds]),
            "handover_redis_cpu": summary([r["redis_cpu_s_burst"] for r in rounds]),
        })
        return measured
    finally:
        procs.stop_many([c.proc for c in cands], timeout=30)
        procs.forget_exited()
        server.stop()


def scale_many_elections(leaderd: Leaderd, workdir: Path, n: int, window: float, sampled: int) -> dict:
    """Scenario 6b: `n` elections with one leaderd each on one Redis; for the
    handover time, `sampled` of them get a second candidate (a standby)."""
    server = RedisServer(workdir, f"elections{n}", maxclients=max(10000, 4 * n))
    sub = workdir / f"elections-{n}"
    sub.mkdir(exist_ok=True)
    cands: list[Candidate] = []
    try:
        for i in range(n):
            leaderd.prepare([server], f"e{i}")
        t0 = time.monotonic()
        specs = [(f"e{i}-a", f"e{i}") for i in range(n)]
        cands = _start_many(leaderd, server, sub, specs)
        _wait_all_settled(cands, timeout=max(60.0, n * 0.15))
        standbys = _start_many(leaderd, server, sub, [(f"e{i}-b", f"e{i}") for i in range(sampled)])
        _wait_all_settled(standbys, timeout=60)
        started = time.monotonic() - t0
        time.sleep(SETTLE_S["value"])
        measured = _measure_window(server, cands + standbys, window)
        by_identity = {c.identity: c for c in cands + standbys}
        rounds = []
        for i in range(sampled):
            rounds.append(_handover_by_key(server, leaderd.key(f"e{i}"), by_identity))
        measured.update({
            "elections": n,
            "candidates": n + sampled,
            "start_to_settled_s": started,
            "handovers": summary([r["handover_s"] for r in rounds]),
            "seen_in_redis": summary([r["seen_in_redis_s"] for r in rounds]),
            "handover_redis_cpu": summary([r["redis_cpu_s_burst"] for r in rounds]),
        })
        return measured
    finally:
        procs.stop_many([c.proc for c in cands], timeout=30)
        procs.forget_exited()
        server.stop()


def quorum_probe(leaderd: Leaderd, workdir: Path) -> str | None:
    """None when this leaderd accepts three Redis URLs (quorum mode), else
    its own words for why not."""
    import subprocess

    path = workdir / "quorum-probe.yaml"
    path.write_text(
        "election: {name: probe, lease_duration: 2s, renew_deadline: 1500ms, retry_period: 500ms}\n"
        'backend: {redis: {urls: ["redis://127.0.0.1:1", "redis://127.0.0.1:2", "redis://127.0.0.1:3"]}}\n'
    )
    out = subprocess.run(
        [str(leaderd.binary), "check", "--config", str(path), "--offline"],
        capture_output=True, text=True, timeout=30,
    )
    if out.returncode == 0:
        return None
    text = (out.stderr or out.stdout).strip()
    return text.splitlines()[-1] if text else f"exit {out.returncode}"


def kube_probe(leaderd: Leaderd, workdir: Path) -> str | None:
    """None when this leaderd accepts a Kubernetes Lease backend, else why not."""
    import subprocess

    path = workdir / "kube-probe.yaml"
    path.write_text(
        "election: {name: probe, lease_duration: 2s, renew_deadline: 1500ms, retry_period: 500ms}\n"
        "backend: {kubernetes: {namespace: bench, lease_name: probe}}\n"
        "kubernetes: {api_url: 'http://127.0.0.1:1'}\n"
    )
    out = subprocess.run(
        [str(leaderd.binary), "check", "--config", str(path), "--offline"],
        capture_output=True, text=True, timeout=30,
    )
    if out.returncode == 0:
        return None
    text = (out.stderr or out.stdout).strip()
    return text.splitlines()[-1] if text else f"exit {out.returncode}"


def run_threads(jobs: dict, parallel: bool) -> dict:
    """Runs `jobs` (name -> callable) one after another, or all at once."""
    results: dict = {}
    if not parallel:
        for name, job in jobs.items():
            try:
                results[name] = job()
            except Exception as err:  # a tool failing must not end the run
                log(f"{name}: FAILED: {err}")
                results[name] = {"failed": str(err)}
        return results

    def wrap(name, job):
        try:
            results[name] = job()
        except Exception as err:
            log(f"{name}: FAILED: {err}")
            results[name] = {"failed": str(err)}

    threads = [threading.Thread(target=wrap, args=item, daemon=True) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return results


# ---------------------------------------------------------------------------
# Scenarios 9–11: steering leadership (issue 12) and health (issue 13)
# ---------------------------------------------------------------------------

ADMIN_TOKEN = "bench-admin-token"


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None,
             token: str | None = None) -> tuple[int, dict]:
    headers = {}
    payload = None
    if body is not None:
        payload = json.dumps(body)
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    raw = response.read()
    try:
        return response.status, json.loads(raw or b"{}")
    except ValueError:
        return response.status, {"raw": raw.decode("utf-8", "replace")}


def _connect(hostport: str) -> http.client.HTTPConnection:
    host, port = hostport.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=10)


def switchover_handover(leaderd: Leaderd, workdir: Path, rounds: int) -> dict:
    """Scenario 9: three candidates; `POST /switchover {"candidate": X}` to
    the leader (with the admin token), X a follower chosen in turn. Times
    from the instant the request is sent: X's `became leader` line; the
    first `GET /status` of X (polled on a keep-alive connection as fast as
    it answers) that says is_leader; the 200 answer to the POST."""
    token_file = workdir / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    token_file.chmod(0o600)
    tool = Leaderd(leaderd.binary, extra_yaml=f"http:\n  admin_token_file: {token_file}\n")
    tool.name = "leaderd-switchover"
    server = RedisServer(workdir, "switchover")
    group = Group(tool, [server], "bench", workdir)
    line, status_seen, answered, errors, codes = [], [], [], [], []
    try:
        group.top_up()
        for i in range(rounds):
            group.wait_ready()
            time.sleep(random.uniform(0.3, 0.8))  # a random phase of renewals and polls
            leader = group.wait_ready()
            followers = [c for c in group.alive() if c is not leader]
            target = followers[i % len(followers)]
            admin, watch = _connect(leader.listen), _connect(target.listen)
            _request(admin, "GET", "/switchover")  # connected and warm before the clock starts
            _request(watch, "GET", "/status")
            # One thread: the POST is sent without waiting for its answer,
            # then X's /status is polled; the answer's arrival is noticed
            # between polls (select), to within one poll.
            sent: dict = {}
            body = json.dumps({"candidate": target.identity})
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"}
            seen = None
            deadline = time.monotonic() + LEASE_S * 3
            sent["t0"] = time.time()
            admin.request("POST", "/switchover", body=body, headers=headers)
            while time.monotonic() < deadline and (seen is None or "t1" not in sent):
                if seen is None:
                    code, status = _request(watch, "GET", "/status")
                    if code == 200 and status.get("is_leader"):
                        seen = time.time()
                if "t1" not in sent and select.select([admin.sock], [], [], 0 if seen is None else 0.05)[0]:
                    sent["t1"] = time.time()
            try:
                response = admin.getresponse()
                sent["code"], sent["body"] = response.status, response.read().decode("utf-8", "replace")
            except (OSError, http.client.HTTPException) as err:
                sent["error"] = str(err)
            admin.close()
            watch.close()
            codes.append(sent.get("code"))
            event = procs.wait_until(lambda t=target, s=sent: t.first("acquired", after=s.get("t0", 0)) or None,
                                     LEASE_S * 3, 0.005, f"{target.identity}'s 'became leader' line") \
                if seen is not None else None
            if seen is None or event is None or sent.get("code") != 200 or "t1" not in sent:
                errors.append(f"round {i}: POST answered {sent.get('code')} {sent.get('body') or sent.get('error')}, "
                              f"/status {'said leader' if seen else 'never said leader'}")
                continue
            line.append(event.ts - sent["t0"])
            status_seen.append(seen - sent["t0"])
            answered.append(sent["t1"] - sent["t0"])
            procs.wait_until(lambda old=leader: not (old.poll(), old.holding)[1], 5, 0.005,
                             "the old leader to step down")
    finally:
        group.stop()
        server.stop()
    return {
        "became_leader": summary(line),
        "status_says_leader": summary(status_seen),
        "post_answered": summary(answered),
        "codes": sorted({c for c in codes if c is not None}),
        "errors": errors,
        "raw": {"became_leader": line, "status_says_leader": status_seen, "post_answered": answered},
    }


def _count_by_addr(path: Path, t0: float, t1: float) -> dict[str, int]:
    """Client requests (not the commands scripts run) per client address,
    from a `redis-cli monitor` capture, within [t0, t1)."""
    counts: dict[str, int] = {}
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace")
            try:
                ts = float(line.split(" ", 1)[0])
            except ValueError:
                continue
            if not t0 <= ts < t1:
                continue
            start = line.find("[")
            end = line.find("]", start)
            if start < 0 or end < 0:
                continue
            source = line[start + 1:end].split(" ", 1)[-1]
            if source != "lua":
                counts[source] = counts.get(source, 0) + 1
    return counts


def membership_at_rest(leaderd: Leaderd, workdir: Path, window: float) -> dict:
    """Scenario 10: three candidates and two observers (`run --observe`) on
    one election, membership on (it always is). Redis requests per process
    per retry_period, counted with MONITOR and put down to each process by
    its sockets, over two windows: *unwatched* (nobody asks) and *watched*
    (the harness reads every daemon's /status every 100 ms, which makes the
    daemons list the candidates). Idle RSS of each role, read at the end of
    the unwatched window."""
    server = RedisServer(workdir, "membership")
    group = Group(leaderd, [server], "bench", workdir)
    observer_tool = Leaderd(leaderd.binary, extra_args=("--observe",))
    observer_tool.name = "leaderd-observer"
    observers: list[Candidate] = []
    try:
        group.top_up()
        leader = group.wait_ready()
        for i in range(2):
            observers.append(observer_tool.start(f"observer-{i + 1}", [server.url], "bench", workdir))
        procs.wait_until(lambda: all(o.first("settled") and o.listen for o in observers), 20, 0.01,
                         "the observers to see the leader")
        time.sleep(SETTLE_S["value"])
        leader = group.wait_ready()
        roles = {c.pid: ("leader" if c is leader else "follower") for c in group.alive()}
        roles.update({o.pid: "observer" for o in observers})
        everyone = group.alive() + observers
        capture = workdir / "monitor-membership.txt"
        monitor = server.monitor(capture)
        time.sleep(0.3)  # let MONITOR attach
        windows = {}
        rss = {}
        for name in ("unwatched", "watched"):
            stop = threading.Event()
            watcher = None
            if name == "watched":
                def watch():
                    conns = [_connect(c.listen) for c in everyone]
                    while not stop.is_set():
                        for conn in conns:
                            _request(conn, "GET", "/status")
                        stop.wait(0.1)
                    for conn in conns:
                        conn.close()
                watcher = threading.Thread(target=watch, daemon=True)
                watcher.start()
            addrs0 = {c.pid: procs.tcp_local_addrs(c.pid) for c in everyone}
            # Counted over exactly `window` (a whole number of retry
            # periods), half-open: a request every retry_period counts
            # window / retry_period times whatever its phase.
            t0 = time.time()
            time.sleep(window + 0.05)
            t1 = t0 + window
            addrs1 = {c.pid: procs.tcp_local_addrs(c.pid) for c in everyone}
            if watcher:
                stop.set()
                watcher.join(timeout=10)
            if name == "unwatched":
                rss = {c.pid: procs.status_kib(c.pid, "VmRSS") for c in everyone}
            windows[name] = (t0, t1, {pid: addrs0[pid] | addrs1[pid] for pid in addrs0})
        time.sleep(0.3)
        procs.stop(monitor)
        results: dict = {"window_s": window, "retry_s": RETRY_S, "candidates": len(group.alive()),
                         "observers": len(observers)}
        for name, (t0, t1, addrs) in windows.items():
            counts = _count_by_addr(capture, t0, t1)
            per: dict[str, list[float]] = {"leader": [], "follower": [], "observer": []}
            for pid, own in addrs.items():
                n = sum(counts.get(a, 0) for a in own)
                per[roles[pid]].append(n / (t1 - t0) * RETRY_S)
            results[name] = {
                role: {"mean": sum(v) / len(v) if v else None, "max": max(v) if v else None}
                for role, v in per.items()
            }
            candidates = per["leader"] + per["follower"]
            results[name]["candidate_mean"] = sum(candidates) / len(candidates) if candidates else None
            results[name]["candidate_max"] = max(candidates) if candidates else None
            results[name]["unattributed_per_s"] = (
                sum(counts.values()) - sum(counts.get(a, 0) for own in addrs.values() for a in own)) / (t1 - t0)
        by_role: dict[str, list[int]] = {"leader": [], "follower": [], "observer": []}
        for pid, kib in rss.items():
            if kib is not None:
                by_role[roles[pid]].append(kib)
        results["rss_kib"] = {role: max(v) if v else None for role, v in by_role.items()}
        return results
    finally:
        procs.stop_many([o.proc for o in observers])
        group.stop()
        server.stop()


def _eligible_other(leader: Candidate) -> bool:
    """Whether the leader's /status lists another candidate that is healthy
    and not standing aside (a leader with none keeps leading, unhealthy)."""
    conn = _connect(leader.listen)
    try:
        code, status = _request(conn, "GET", "/status")
    finally:
        conn.close()
    return code == 200 and any(
        c.get("identity") != leader.identity and c.get("healthy") and not c.get("standing_aside")
        for c in status.get("candidates", [])
    )


def health_failover(leaderd: Leaderd, workdir: Path, rounds: int, period_ms: int = 100,
                    failure_threshold: int = 2, backoff_ms: int = 2000) -> dict:
    """Scenario 11: three candidates, each with an exec probe `test -e
    <its own file>`; the harness removes the leader's file and times, from
    that instant, the old leader's `handing over` line (the probe's verdict)
    and the next leader's `became leader` line. The file comes back after
    each round; the old leader then stands aside for unhealthy_backoff, so
    a round starts only when the leader lists another candidate that is
    healthy and not standing aside (else it would rightly keep leading)."""
    health_dir = workdir / "health"
    health_dir.mkdir(exist_ok=True)

    def probe_yaml(identity: str) -> str:
        return (
            "health:\n"
            f'  exec: ["test", "-e", "{health_dir / identity}"]\n'
            f"  period: {period_ms}ms\n"
            f"  timeout: {period_ms}ms\n"
            f"  failure_threshold: {failure_threshold}\n"
            "  success_threshold: 1\n"
            f"  unhealthy_backoff: {backoff_ms}ms\n"
        )

    tool = Leaderd(leaderd.binary, identity_yaml=probe_yaml)
    tool.name = "leaderd-health"
    server = RedisServer(workdir, "health")
    group = Group(tool, [server], "bench", workdir)
    original_add = group.add

    def add_healthy():
        (health_dir / f"{tool.name}-{group.started + 1}").touch()
        return original_add()

    group.add = add_healthy
    failover, verdict, errors = [], [], []
    config = {"period_ms": period_ms, "failure_threshold": failure_threshold, "timeout_ms": period_ms,
              "success_threshold": 1, "unhealthy_backoff": f"{backoff_ms} ms",
              "target_s": failure_threshold * period_ms / 1000 + 0.010}
    try:
        group.top_up()
        for i in range(rounds):
            leader = group.wait_ready()
            # A previous round's leader stands aside for unhealthy_backoff:
            # wait until the leader lists someone it may hand over to.
            procs.wait_until(lambda leader=leader: _eligible_other(leader), LEASE_S * 3 + 5, 0.05,
                             "a healthy candidate that is not standing aside")
            time.sleep(random.uniform(0.3, 0.8))  # a random phase of probes and renewals
            old = group.wait_ready()
            path = health_dir / old.identity
            t0 = time.time()
            path.unlink()
            try:
                new, ts = procs.wait_until(lambda: group.new_leader_after(t0, old), LEASE_S * 3, 0.001,
                                           "a healthy leader")
            except TimeoutError as err:
                errors.append(f"round {i}: {err}")
                path.touch()
                continue
            failover.append(ts - t0)
            handing = old.first("handing_over", after=t0)
            if handing:
                verdict.append(handing.ts - t0)
            path.touch()
            procs.wait_until(lambda: not (old.poll(), old.holding)[1], 5, 0.005, "the old leader to step down")
    finally:
        group.stop()
        server.stop()
    return {
        "config": config,
        "failover": summary(failover),
        "verdict": summary(verdict),
        "errors": errors,
        "raw": {"failover": failover, "verdict": verdict},
    }
