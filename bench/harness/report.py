"""Renders the results as Markdown (bench/results/latest.md)."""

from __future__ import annotations

from .scenarios import best_run
from .stats import ms

TARGETS_NOTE = "Targets from issue 7."


def _mib(kib) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f}"


def _num(x, fmt="{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def _verdict(ok) -> str:
    if ok is None:
        return "n/a"
    return "**pass**" if ok else "**FAIL**"


def targets(r: dict) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows; a quick run judges nothing."""
    rows = _targets(r)
    if r["config"].get("quick"):
        rows = [(t, m, "not judged (quick run)") for t, m, _v in rows]
    return rows


def _targets(r: dict) -> list[tuple[str, str, str]]:
    rows = []
    ho = r.get("handover", {})
    ld = ho.get("leaderd", {})
    g = ld.get("graceful", {}) if isinstance(ld, dict) else {}
    p50 = g.get("p50")
    rows.append((
        "Graceful handover p50 ≤ 20 ms",
        f"{ms(p50)} ms (n={g.get('n', 0)})" if p50 is not None else "not measured",
        _verdict(None if p50 is None else p50 <= 0.020),
    ))
    peers = {k: v["graceful"]["p50"] for k, v in ho.items()
             if not k.startswith("leaderd") and isinstance(v, dict) and v.get("graceful", {}).get("p50") is not None}
    if p50 is not None and peers:
        best = min(peers, key=peers.get)
        rows.append((
            "Graceful handover faster than every peer (p50)",
            f"leaderd {ms(p50)} ms vs fastest peer {r['labels'].get(best, best)} {ms(peers[best])} ms",
            _verdict(p50 < peers[best]),
        ))
    else:
        rows.append(("Graceful handover faster than every peer (p50)", "no peer measured", "n/a"))
    o = ld.get("overshoot", {}) if isinstance(ld, dict) else {}
    rows.append((
        "Crash overshoot p50 ≤ 50 ms",
        f"{ms(o.get('p50'))} ms (n={o.get('n', 0)})" if o.get("p50") is not None else "not measured",
        _verdict(None if o.get("p50") is None else o["p50"] <= 0.050),
    ))
    rest = r.get("rest", {}).get("leaderd", {})
    per = rest.get("per_candidate_per_retry") if isinstance(rest, dict) else None
    rows.append((
        "≤ 1 Redis command per candidate per retry_period at rest",
        f"{per:.2f} requests per candidate per 0.5 s" if per is not None else "not measured",
        _verdict(None if per is None else per <= 1.0 + 1e-9),
    ))
    fp = r.get("footprint", {})
    idle = [v for v in (fp.get("rss_idle_leader_kib"), fp.get("rss_idle_follower_kib")) if v is not None]
    rows.append((
        "Idle RSS ≤ 10 MiB",
        f"leader {_mib(fp.get('rss_idle_leader_kib'))} MiB, follower {_mib(fp.get('rss_idle_follower_kib'))} MiB"
        if idle else "not measured",
        _verdict(None if not idle else max(idle) <= 10 * 1024),
    ))
    runs = r.get("http", {}).get("runs", {})
    sat = best_run(runs.get("/status saturation", []), key="rps")
    rps = sat.get("rps")
    rows.append((
        "≥ 20 000 GET /status per second on one core",
        f"{rps:,.0f} /s at saturation (best of {len(runs.get('/status saturation', []))} runs)"
        if rps is not None else "not measured",
        _verdict(None if rps is None else rps >= 20000),
    ))
    paced = best_run([x for x in runs.get("/status paced", []) if (x.get("rps") or 0) >= 20000])
    p99 = paced.get("p99_s")
    if p99 is not None:
        measured = (f"{ms(p99, 2)} ms at {paced['rps']:,.0f} /s (paced; least disturbed of "
                    f"{len(runs.get('/status paced', []))} runs)")
    elif runs.get("/status paced"):
        measured = "no paced run reached 20 000 /s"
    else:
        measured = "not measured"
    rows.append((
        "GET /status p99 ≤ 2 ms at ≥ 20 000 /s",
        measured,
        _verdict(None if not runs.get("/status paced") else (p99 is not None and p99 <= 0.002)),
    ))
    rows += _steering_targets(r)
    return rows


def _steering_targets(r: dict) -> list[tuple[str, str, str]]:
    """Issue 12 (switchover, membership, observers) and issue 13 (health)."""
    rows = []
    sw = r.get("switchover", {})
    st = sw.get("status_says_leader", {})
    p50 = st.get("p50")
    rows.append((
        "Switchover handover p50 ≤ 5 ms (POST /switchover → the named candidate's /status says leader)",
        f"{ms(p50)} ms (p95 {ms(st.get('p95'))} ms, n={st.get('n', 0)}; its `became leader` line "
        f"{ms(sw['became_leader']['p50'])} ms)" if p50 is not None else "not measured",
        _verdict(None if p50 is None else p50 <= 0.005),
    ))
    mb = r.get("membership", {})
    un, wa = mb.get("unwatched", {}), mb.get("watched", {})
    cand = [x.get("candidate_max") for x in (un, wa) if x.get("candidate_max") is not None]
    rows.append((
        "≤ 2 Redis requests per candidate per retry_period with membership",
        f"{_num(un.get('candidate_max'), '{:.2f}')} unwatched, {_num(wa.get('candidate_max'), '{:.2f}')} "
        "with every /status read every 100 ms (the busiest candidate, per 0.5 s)" if cand else "not measured",
        _verdict(None if not cand else max(cand) <= 2.0 + 1e-9),
    ))
    # At rest = nobody reads the observer's /status; a read lists the
    # candidates (one more request per retry_period), shown beside it.
    obs = un.get("observer", {}).get("max")
    rows.append((
        "≤ 1 Redis request per observer per retry_period at rest",
        f"{_num(obs, '{:.2f}')} unwatched (judged), {_num(wa.get('observer', {}).get('max'), '{:.2f}')} "
        "with its /status read every 100 ms (the busier of 2 observers, per 0.5 s)"
        if obs is not None else "not measured",
        _verdict(None if obs is None else obs <= 1.0 + 1e-9),
    ))
    rss = mb.get("rss_kib", {}) if isinstance(mb, dict) else {}
    gd = r.get("guard", {})
    sizes = {role: rss.get(role) for role in ("leader", "follower", "observer")}
    sizes["guard"] = gd.get("guard_rss_kib") if isinstance(gd, dict) else None
    known = [v for v in sizes.values() if v is not None]
    rows.append((
        "Idle RSS ≤ 10 MiB per daemon process, with membership (leader, follower, observer; the guard)",
        ", ".join(f"{role} {_mib(kib)} MiB" for role, kib in sizes.items()) if known else "not measured",
        _verdict(None if not known else max(known) <= 10 * 1024),
    ))
    hf = r.get("health", {})
    f = hf.get("failover", {})
    c = hf.get("config", {})
    if f.get("p50") is not None:
        measured = (f"{ms(f['p50'])} ms (p95 {ms(f.get('p95'))} ms, n={f.get('n', 0)}); target "
                    f"{ms(c['target_s'], 0)} ms with an exec probe, period {c['period_ms']} ms, "
                    f"failure_threshold {c['failure_threshold']}")
    else:
        measured = "not measured"
    rows.append((
        "Health failover p50 ≤ failure_threshold × period + 10 ms (probe fails → healthy candidate leads)",
        measured,
        _verdict(None if f.get("p50") is None else f["p50"] <= c["target_s"]),
    ))
    return rows


def render(r: dict) -> str:
    m, v, cfg = r["machine"], r["versions"], r["config"]
    prov = f"{m['date']}, {m['nproc']}× {m['cpu']}, `{r['command']}`"
    out = []
    w = out.append
    w(f"# leaderd benchmark results{' (quick smoke run: not for quoting)' if cfg['quick'] else ''}\n")
    w(f"- **Date:** {m['date']}")
    w(f"- **Machine:** {m['nproc']} cores ({m['cpu']}), {m['mem_gib']} GiB, {m['os']}, Linux {m['kernel']}")
    w(f"- **Command:** `{r['command']}` (took {r['took_s'] / 60:.1f} min)")
    w(f"- **leaderd:** {v['leaderd']}, {cfg['build']} build (`{cfg['binary']}`), commit {r['git']}; {v['rustc']}")
    w(f"- **Load average** at start / end: {r['load_start']} / {r['load_end']} "
      "(the machine may be shared with other work; see bench/README.md); "
      f"every process of the benchmark ran at nice {cfg.get('nice', 0)}")
    w("- **Lease settings, every tool:** lease 2 s; leaderd renew_deadline 1.5 s, retry_period 0.5 s; "
      "one Redis 7 server per scenario and tool, started by the benchmark on 127.0.0.1, no persistence.")
    w("")
    w("Every number below was produced by this command on this machine on this date.\n")

    w("## Targets\n")
    w("| target | measured | verdict |")
    w("|---|---|---|")
    for row in targets(r):
        w("| " + " | ".join(row) + " |")
    w(f"\n_{prov}._\n")

    w("## Versions\n")
    w("| component | version |")
    w("|---|---|")
    for k, val in v.items():
        w(f"| {k} | {val} |")
    w("")

    if "handover" in r:
        w("## 1–2. Graceful handover and crash failover\n")
        w("Three candidates per tool. **Graceful**: SIGTERM to the leader; time from the instant the signal "
          "was sent to the new leader's acquisition (leaderd: its `became leader` log line; peers: the "
          "adapter's `ACQUIRED` line), and how much of it the old leader took to release. **Crash**: SIGKILL; "
          "time to the new leader, and *overshoot* = new leader's acquisition − the instant the old lease "
          "really expired in Redis (PTTL read right after the kill; with 3 nodes, when a majority no longer holds it); "
          "± is the largest uncertainty of that instant (half the time the PTTL call took, + 1 ms for PTTL's "
          "whole milliseconds). "
          f"Graceful rounds: {cfg['rounds_graceful']}, crash rounds: {cfg['rounds_crash']} per tool. Times in ms.\n")
        w("| tool | followers wait by | renews | graceful p50 | p95 | max | of which release p50 "
          "| crash failover p50 | p95 | overshoot p50 | p95 | max | ± |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, res in r["handover"].items():
            label = r["labels"].get(name, name)
            if "failed" in res:
                w(f"| {label} | | | failed: {res['failed']} | | | | | | | | | |")
                continue
            g, c, o, rel = res["graceful"], res["crash"], res["overshoot"], res["release"]
            w(f"| {label} | {r['waits'].get(name, '')} | {r['renewals'].get(name, '')} "
              f"| {ms(g['p50'])} | {ms(g['p95'])} | {ms(g['max'])} | {ms(rel['p50'])} "
              f"| {ms(c['p50'])} | {ms(c['p95'])} | {ms(o['p50'])} | {ms(o['p95'])} | {ms(o['max'])} "
              f"| {ms(res.get('overshoot_uncertainty_max'))} |")
        errors = {k: v2["errors"] for k, v2 in r["handover"].items() if v2.get("errors")}
        if errors:
            w("")
            for k, errs in errors.items():
                w(f"- {r['labels'].get(k, k)}: {len(errs)} round(s) not counted: {errs[0]}")
        w(f"\n_{prov}._\n")

    if "rest" in r:
        w("## 3. Cost at rest\n")
        w(f"One leader and two followers per tool, idle, measured over {cfg['rest_window']:.0f} s (all tools at once, "
          "each on its own Redis). **Requests** are the commands clients sent (counted with MONITOR); "
          "**incl. scripts** adds the commands Lua scripts ran inside Redis (INFO commandstats). "
          "The per-candidate figure is requests/s × 0.5 s ÷ 3, i.e. per leaderd retry_period.\n")
        w("| tool | requests/s (3 candidates) | per candidate per 0.5 s | requests by command (/s) "
          "| incl. scripts /s | Redis CPU ms/s | CPU s/h leader | CPU s/h follower |")
        w("|---|---|---|---|---|---|---|---|")
        for name, res in r["rest"].items():
            label = r["labels"].get(name, name)
            if "failed" in res:
                w(f"| {label} | failed: {res['failed']} | | | | | | |")
                continue
            by = ", ".join(f"{k} {val:.1f}" for k, val in res["by_command_per_s"].items())
            w(f"| {label} | {res['requests_per_s']:.1f} | {res['per_candidate_per_retry']:.2f} | {by} "
              f"| {res['commandstats_per_s']:.1f} | {res['redis_cpu_ms_per_s']:.2f} "
              f"| {_num(res['cpu_s_per_h_leader'])} | {_num(res['cpu_s_per_h_follower'])} |")
        w(f"\n_{prov}._\n")

    if "rest" in r or "footprint" in r:
        w("## 4. Footprint\n")
        fp = r.get("footprint", {})
        w("RSS (VmRSS) of one candidate process at the end of the idle window of scenario 3; for leaderd "
          f"also in a separate run before and after {fp.get('requests', 0):,} sequential `GET /status` "
          "on one keep-alive connection.\n")
        w("| tool | RSS idle, leader (MiB) | RSS idle, follower (MiB) | threads (leader) | executable |")
        w("|---|---|---|---|---|")
        for name, res in r.get("rest", {}).items():
            if "failed" in res:
                continue
            exe = r["executables"].get(name, "")
            w(f"| {r['labels'].get(name, name)} | {_mib(res['rss_kib_leader'])} | {_mib(res['rss_kib_follower'])} "
              f"| {_num(res['threads_leader'], '{:d}')} | {exe} |")
        if fp and "failed" not in fp:
            w("")
            w(f"- leaderd binary: {fp['binary_bytes'] / 1024 / 1024:.1f} MiB ({cfg['build']} build, "
              "stripped as the release profile says)")
            w(f"- leaderd RSS: leader idle {_mib(fp['rss_idle_leader_kib'])} MiB, follower idle "
              f"{_mib(fp['rss_idle_follower_kib'])} MiB; after {fp['requests']:,} GET /status "
              f"{_mib(fp['rss_after_kib'])} MiB (peak {_mib(fp['hwm_after_kib'])} MiB); "
              f"{fp['threads']} threads; the requests took {fp['requests_took_s']:.2f} s")
        elif fp:
            w(f"\n- leaderd footprint run failed: {fp['failed']}")
        gd = r.get("guard", {})
        if gd and "failed" not in gd:
            w(f"- with a leader process configured, leaderd runs its guard (`leaderd-guard`, "
              f"{gd['guard_threads']} thread): guard RSS {_mib(gd['guard_rss_kib'])} MiB (PSS "
              f"{_mib(gd['guard_pss_kib'])} MiB), CPU {_num(gd['guard_cpu_s_per_h'], '{:.2f}')} s/h; that leaderd "
              f"(the leader) RSS {_mib(gd['leaderd_rss_kib'])} MiB (PSS {_mib(gd['leaderd_pss_kib'])} MiB), "
              f"CPU {_num(gd['leaderd_cpu_s_per_h'])} s/h; idle, over {gd['window_s']:.0f} s")
        elif gd:
            w(f"- guard run failed: {gd['failed']}")
        w(f"\n_{prov}._\n")

    if "http" in r:
        h = r["http"]
        w("## 5. Status endpoint\n")
        if "skipped" in h or "failed" in h:
            w(f"Not measured: {h.get('skipped') or h.get('failed')}\n")
        else:
            modes = h.get("modes", {})
            paced = modes.get("paced", {})
            w(f"One leaderd (the leader, {h.get('threads')} threads) pinned to CPU {h.get('affinity')} with "
              f"`taskset`; `wrk -t1 --latency` pinned to the other core (as is Redis), {h['duration_s']:g} s per run. "
              f"*saturation*: {modes.get('saturation', {}).get('connections')} connections as fast as leaderd "
              f"answers (throughput); *paced*: {paced.get('connections')} connections, each waiting "
              f"{paced.get('delay_ms')} ms after every response (`bench/harness/wrk_paced.lua`), i.e. latency at "
              "a fixed load above 20 000 /s instead of at saturation. *CPU/req* is leaderd's own CPU time per "
              "request (its cost, whatever else runs); *waited* is the share of the run its threads were "
              "runnable but not running, summed over its threads (other processes on its core, and its two "
              "tokio workers waiting for each other on the one core). Verdicts use the best saturation run "
              "and the least disturbed (lowest p99) paced run at ≥ 20 000 /s. "
              "The peers are libraries and have no HTTP endpoint.\n")
            w("| endpoint | mode | run | requests/s | p50 (ms) | p90 (ms) | p99 (ms) | non-2xx | leaderd CPU (cores) "
              "| CPU/req (µs) | one-core capacity (req/s) | waited | load avg |")
            w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for key, runs in h.get("runs", {}).items():
                path, mode = key.split(" ", 1)
                for i, x in enumerate(runs, 1):
                    per = x.get("leaderd_cpu_us_per_request")
                    w(f"| GET {path} | {mode} | {i} | {_num(x.get('rps'), '{:,.0f}')} | {ms(x.get('p50_s'), 3)} "
                      f"| {ms(x.get('p90_s'), 3)} | {ms(x.get('p99_s'), 3)} | {x.get('non_2xx', '–')} "
                      f"| {_num(x.get('leaderd_cpu_share'), '{:.2f}')} | {_num(per)} "
                      f"| {_num(1e6 / per if per else None, '{:,.0f}')} "
                      f"| {_num(x.get('leaderd_wait_share'), '{:.2f}')} | {x.get('load', '')} |")
        w(f"\n_{prov}._\n")

    if "scale" in r:
        w("## 6. Scale (leaderd)\n")
        w("Every candidate is a separate leaderd process (release build, the daemon's own 2 tokio worker "
          "threads each) on one Redis. Handover = SIGTERM to the current holder → the next holder's "
          "`became leader` line. For *N elections* each election has one candidate; to time handovers, a "
          "few of them get a second candidate (counted in *candidates*). Redis and candidate CPU are shares "
          "of one core over the idle window. *New holder seen in Redis*: when the harness, polling the lease "
          "key every millisecond, first read the new holder; *Redis CPU per handover*: Redis CPU time in the "
          "~0.2 s around one handover (the followers' acquire burst).\n")
        w("| setup | candidates | Redis CPU (cores) | EVALSHA/s | commands incl. scripts /s | candidates' CPU (cores) "
          "| memory total, PSS (MiB) | handover p50 (ms) | max (ms) | new holder seen in Redis p50 (ms) "
          "| Redis CPU per handover (ms) | rounds | start → all settled (s) |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, res in r["scale"].items():
            if "failed" in res:
                w(f"| {name} | failed: {res['failed']} | | | | | | | | | | | |")
                continue
            hs = res["handovers"]
            w(f"| {name} | {res['candidates']} | {res['redis_cpu_share']:.3f} | {res['evalsha_per_s']:.0f} "
              f"| {res['commands_incl_scripts_per_s']:.0f} | {res['candidates_cpu_share']:.2f} "
              f"| {res.get('pss_mib_total', 0):.0f} | {ms(hs['p50'])} | {ms(hs['max'])} "
              f"| {ms(res.get('seen_in_redis', {}).get('p50'))} | {ms(res.get('handover_redis_cpu', {}).get('p50'))} "
              f"| {hs['n']} | {res['start_to_settled_s']:.1f} |")
        w(f"\n_{prov}._\n")

    w("## 7. Quorum mode and Kubernetes backend\n")
    w("| row | scenarios | status |")
    w("|---|---|---|")
    for todo in r.get("todo", []):
        status = todo["reason"] if todo.get("done") else f"TODO: {todo['reason']}"
        w(f"| {todo['label']} | {todo['scenarios']} | {status} |")
    w("")
    if "first" in r:
        f = r["first"]
        w("## 8. First leadership\n")
        if "failed" in f:
            w(f"Not measured: {f['failed']}\n")
        else:
            w(f"One leaderd started alone on an election nobody holds (lease {f['lease_ms'] / 1000:g} s, "
              f"retry_period {f['retry_ms']} ms: issue 10's latency case); time from the spawn to its "
              "`became leader` line, a new process and a new election each round. *local*: Redis on loopback; "
              f"*{f['delay_ms']:.0f} ms away*: through a proxy that delays every chunk by {f['delay_ms']:.0f} ms "
              "each way (`bench/harness/delay_proxy.py`), so connecting, loading the scripts and the acquire "
              "all pay the distance; *brand-new store*: local, but the election has no fencing counter yet — "
              "leaderd cannot tell that from a store that lost its data, and grants nothing for one "
              "lease_duration (a one-time cost; every other scenario starts with the counter in place).\n")
            w("| case | rounds | p50 (ms) | p95 (ms) | min (ms) | max (ms) |")
            w("|---|---|---|---|---|---|")
            for case, label in (("local", "local"), ("far", f"{f['delay_ms']:.0f} ms away (each way)"),
                                ("brand-new", "brand-new store (local)")):
                x = f.get(case, {})
                w(f"| {label} | {x.get('n', 0)} | {ms(x.get('p50'))} | {ms(x.get('p95'))} "
                  f"| {ms(x.get('min'))} | {ms(x.get('max'))} |")
        w(f"\n_{prov}._\n")

    if "switchover" in r:
        sw = r["switchover"]
        w("## 9. Switchover handover (leaderd)\n")
        if "failed" in sw:
            w(f"Not measured: {sw['failed']}\n")
        else:
            w("Three candidates, the admin token configured (`http.admin_token_file`). After a random "
              "0.3–0.8 s, `POST /switchover {\"candidate\": X}` to the leader, X one of the followers in turn. "
              "Times from the instant the request was sent: X's `became leader` line; the first `GET /status` "
              "of X saying `is_leader` (the harness polls it on a keep-alive connection as fast as it answers); "
              "the leader's 200 answer to the POST (it answers once it sees the new leader).\n")
            w("| from the request to | rounds | p50 (ms) | p95 (ms) | min (ms) | max (ms) |")
            w("|---|---|---|---|---|---|")
            for key, label in (("became_leader", "X's `became leader` line"),
                               ("status_says_leader", "X's `/status` says leader"),
                               ("post_answered", "the POST answered (200)")):
                x = sw.get(key, {})
                w(f"| {label} | {x.get('n', 0)} | {ms(x.get('p50'))} | {ms(x.get('p95'))} "
                  f"| {ms(x.get('min'))} | {ms(x.get('max'))} |")
            if sw.get("errors"):
                w(f"\n- {len(sw['errors'])} round(s) not counted: {sw['errors'][0]}")
        w(f"\n_{prov}._\n")

    if "membership" in r:
        mb = r["membership"]
        w("## 10. At rest with membership, and observers (leaderd)\n")
        if "failed" in mb:
            w(f"Not measured: {mb['failed']}\n")
        else:
            w(f"{mb['candidates']} candidates and {mb['observers']} observers (`leaderd run --observe`) on one "
              f"election and one Redis, idle. Redis requests (MONITOR; not the commands scripts run inside "
              f"Redis) put down to each process by its sockets' addresses, per retry_period ({mb['retry_s']:g} s), "
              f"over two {mb['window_s']:.0f} s windows: *unwatched* (nobody asks) and *watched* (the harness "
              "reads every daemon's `GET /status`, which lists the candidates, every 100 ms). RSS of each role "
              "at the end of the unwatched window.\n")
            w("| window | leader | follower (mean / max) | observer (mean / max) | unattributed requests/s |")
            w("|---|---|---|---|---|")
            for name in ("unwatched", "watched"):
                x = mb.get(name, {})
                lf, fo, ob = x.get("leader", {}), x.get("follower", {}), x.get("observer", {})
                w(f"| {name} | {_num(lf.get('max'), '{:.2f}')} "
                  f"| {_num(fo.get('mean'), '{:.2f}')} / {_num(fo.get('max'), '{:.2f}')} "
                  f"| {_num(ob.get('mean'), '{:.2f}')} / {_num(ob.get('max'), '{:.2f}')} "
                  f"| {_num(x.get('unattributed_per_s'), '{:.2f}')} |")
            rss = mb.get("rss_kib", {})
            w("")
            w(f"- idle RSS: leader {_mib(rss.get('leader'))} MiB, follower {_mib(rss.get('follower'))} MiB, "
              f"observer {_mib(rss.get('observer'))} MiB (the larger where there are two)")
        w(f"\n_{prov}._\n")

    if "health" in r:
        hf = r["health"]
        w("## 11. Health failover (leaderd)\n")
        if "failed" in hf:
            w(f"Not measured: {hf['failed']}\n")
        else:
            c = hf["config"]
            w(f"Three candidates, each with `health: exec: [test, -e, <its own file>]`, period {c['period_ms']} "
              f"ms, timeout {c['timeout_ms']} ms, failure_threshold {c['failure_threshold']}, success_threshold "
              f"{c['success_threshold']}, unhealthy_backoff {c['unhealthy_backoff']}. After a random 0.3–0.8 s "
              "the harness removes the leader's file; times from that instant: the old leader's `handing over` "
              "line (the probe's verdict), and the next leader's `became leader` line. The file comes back "
              "after each round, and a round starts only once the leader lists another candidate that is "
              f"healthy and not standing aside (a leader with none rightly keeps leading). Target: p50 ≤ failure_threshold × period + 10 ms = {ms(c['target_s'], 0)} ms "
              "(the probe runs once per period, so the verdict falls nominally between (failure_threshold − 1) × "
              "period and failure_threshold × period after the failure begins).\n")
            w("| from the file's removal to | rounds | p50 (ms) | p95 (ms) | min (ms) | max (ms) |")
            w("|---|---|---|---|---|---|")
            for key, label in (("verdict", "the leader's `handing over` line"),
                               ("failover", "a healthy candidate's `became leader` line")):
                x = hf.get(key, {})
                w(f"| {label} | {x.get('n', 0)} | {ms(x.get('p50'))} | {ms(x.get('p95'))} "
                  f"| {ms(x.get('min'))} | {ms(x.get('max'))} |")
            if hf.get("errors"):
                w(f"\n- {len(hf['errors'])} round(s) not counted: {hf['errors'][0]}")
        w(f"\n_{prov}._\n")

    if r.get("skipped_tools"):
        w("## Tools not run\n")
        for name, why in r["skipped_tools"].items():
            w(f"- {name}: {why}")
        w("")
    return "\n".join(out) + "\n"
