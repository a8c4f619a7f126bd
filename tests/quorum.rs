//! Quorum mode (three independent Redis masters), each server behind a fault
//! proxy (tests/support/proxy.rs): leadership with one server down or
//! partitioned, step-down when a majority is lost, no leader on a minority,
//! a server restarted empty rejoining, fencing tokens across handovers, and
//! the configuration rule on the number of URLs.

#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/quorum.rs"]
mod quorum;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use proxy::{Fault, Proxy};
use quorum::*;
use support::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn refs(c: &[Leaderd]) -> Vec<&Leaderd> {
    c.iter().collect()
}

fn token_of(d: &Leaderd) -> u64 {
    let st = d.status();
    st["fencing_token"]
        .as_u64()
        .unwrap_or_else(|| panic!("{} has no fencing_token: {st}", d.identity()))
}

fn lost_total(d: &Leaderd) -> f64 {
    d.metric("leaderd_leadership_lost_total")
}

fn acquired_total(d: &Leaderd) -> f64 {
    d.metric("leaderd_leadership_acquired_total")
}

/// For `how_long`, polls all candidates: `leader` (when given) must be the
/// only one answering /leader 200 in every round, or nobody must lead
/// (`None`).
fn hold_for(c: &[Leaderd], leader: Option<usize>, how_long: Duration, what: &str) {
    let all = refs(c);
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        let now = sole_leader(&all);
        assert_eq!(
            now,
            leader,
            "{what}: expected {:?} to lead, round says {:?}",
            leader.map(|i| c[i].identity()),
            now.map(|i| c[i].identity())
        );
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// The lock value on node `i` parsed as JSON.
fn lock_json(cluster: &Cluster, i: usize, name: &str) -> Option<serde_json::Value> {
    cluster
        .lock_on(i, name)
        .and_then(|raw| serde_json::from_str(&raw).ok())
}

/// One inline command on a raw connection, and whatever arrives within
/// `wait` (an empty string if nothing does, `None` on EOF or reset).
fn raw(stream: &mut TcpStream, command: &str, wait: Duration) -> Option<String> {
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    read_some(stream, wait)
}

fn read_some(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    stream.set_read_timeout(Some(wait)).expect("read timeout");
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        Ok(0) => None,
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Some(String::new())
        }
        Err(_) => None,
    }
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy")
}

/// Waits until `d` answers /leader 503 and returns how long after `failed`
/// that was; panics if it still answered 200 to a request sent a lease
/// after `failed` (the keys may have expired on the servers by then).
fn steps_down_before_lease_end(d: &Leaderd, failed: Instant) -> Duration {
    let give_up = failed + PATIENCE;
    loop {
        let sent = Instant::now();
        match d.leader_code() {
            Some(200) => assert!(
                sent < failed + LEASE,
                "{} still led {:?} after losing the majority",
                d.identity(),
                sent - failed
            ),
            Some(503) => return Instant::now() - failed,
            _ => assert!(Instant::now() < give_up, "/leader never answered 503"),
        }
    }
}

fn write_config(dir: &tempfile::TempDir, file: &str, urls: &[String]) -> String {
    let path = dir.path().join(file);
    std::fs::write(
        &path,
        quorum_config("cfg", urls, LEASE, RENEW_DEADLINE, RETRY),
    )
    .expect("write config");
    path.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------
// The proxy itself
// ---------------------------------------------------------------------------

#[test]
fn proxy_passes_delays_refuses_blackholes_and_heals() {
    let mut redis = RedisServer::start();
    let proxy = Proxy::start(redis.port());
    let short = Duration::from_millis(300);

    // Pass.
    let mut a = connect(proxy.port());
    assert_eq!(
        raw(&mut a, "PING", Duration::from_secs(2)).as_deref(),
        Some("+PONG\r\n")
    );

    // Delay applies to open connections, each direction.
    proxy.delay(Duration::from_millis(150));
    let t = Instant::now();
    assert_eq!(
        raw(&mut a, "PING", Duration::from_secs(2)).as_deref(),
        Some("+PONG\r\n")
    );
    let rtt = t.elapsed();
    assert!(
        rtt >= Duration::from_millis(290) && rtt < Duration::from_secs(2),
        "round trip with 150ms each way took {rtt:?}"
    );
    proxy.heal();
    let t = Instant::now();
    assert_eq!(
        raw(&mut a, "PING", Duration::from_secs(2)).as_deref(),
        Some("+PONG\r\n")
    );
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );

    // Blackhole: connections stay open, nothing passes; on heal the held
    // bytes are delivered in order, even for a client that hung up.
    proxy.blackhole();
    assert_eq!(raw(&mut a, "SET held 1", short).as_deref(), Some(""));
    let mut b = connect(proxy.port());
    assert_eq!(raw(&mut b, "SET late 1", short).as_deref(), Some(""));
    drop(b);
    std::thread::sleep(short);
    assert_eq!(redis.get("held"), None, "a blackhole forwarded a request");
    assert_eq!(redis.get("late"), None, "a blackhole forwarded a request");
    assert_eq!(proxy.fault(), Fault::Blackhole);
    proxy.heal();
    assert_eq!(
        read_some(&mut a, Duration::from_secs(2)).as_deref(),
        Some("+OK\r\n")
    );
    wait_until(Duration::from_secs(2), "held requests delivered", || {
        redis.get("held").is_some() && redis.get("late").is_some()
    });

    // Refuse: open connections are closed, new ones too.
    proxy.refuse();
    assert_eq!(
        read_some(&mut a, Duration::from_secs(2)),
        None,
        "not closed"
    );
    let mut c = connect(proxy.port());
    assert_eq!(
        raw(&mut c, "PING", Duration::from_secs(2)),
        None,
        "not refused"
    );
    proxy.heal();
    let mut d = connect(proxy.port());
    assert_eq!(
        raw(&mut d, "PING", Duration::from_secs(2)).as_deref(),
        Some("+PONG\r\n")
    );

    // A dead upstream: the connection is closed at once.
    redis.kill();
    assert_eq!(read_some(&mut d, Duration::from_secs(2)), None);
    let mut e = connect(proxy.port());
    assert_eq!(raw(&mut e, "PING", Duration::from_secs(2)), None);
    redis.restart_empty();
    let mut f = connect(proxy.port());
    assert_eq!(
        raw(&mut f, "PING", Duration::from_secs(2)).as_deref(),
        Some("+PONG\r\n")
    );
    assert!(proxy.accepted() >= 6);
    assert!(proxy.forwarded_bytes() > 0);

    // Dropping the proxy with open (even blackholed) connections is prompt
    // and closes them.
    proxy.blackhole();
    let mut g = connect(proxy.port());
    let _ = raw(&mut g, "PING", Duration::from_millis(50));
    let port = proxy.port();
    let t = Instant::now();
    drop(proxy);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "drop took {:?}",
        t.elapsed()
    );
    assert_eq!(read_some(&mut f, Duration::from_secs(2)), None);
    assert_eq!(read_some(&mut g, Duration::from_secs(2)), None);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

// ---------------------------------------------------------------------------
// One server of three down
// ---------------------------------------------------------------------------

#[test]
fn one_node_killed_leader_is_elected_and_renews_on_the_other_two() {
    let name = "q-killed";
    let mut cluster = Cluster::start(3);
    cluster.kill(2);
    let c = start_candidates(&cluster.config(name), "qk", 3);
    let l = wait_for_leader(&refs(&c), PATIENCE);
    let token = token_of(&c[l]);

    let v0 = lock_json(&cluster, 0, name).expect("lock on node 0");
    let v1 = lock_json(&cluster, 1, name).expect("lock on node 1");
    assert_eq!(v0, v1, "the two live nodes hold different values");
    assert_eq!(v0["holder"], c[l].identity());
    assert_eq!(v0["token"], token);

    let renewed_before = renewals_ok(&c[l].metrics());
    hold_for(&c, Some(l), 3 * LEASE, "leading on two of three");
    let m = c[l].metrics();
    assert!(
        renewals_ok(&m) >= renewed_before + 10.0,
        "too few renewals in 3 leases: {} -> {}",
        renewed_before,
        renewals_ok(&m)
    );
    assert_eq!(lost_total(&c[l]), 0.0, "the leader stepped down");
    assert_eq!(acquired_total(&c[l]), 1.0);

    // A handover works on two of three as well.
    c[l].signal("TERM");
    assert_eq!(c[l].wait_exit(PATIENCE), Some(0));
    let rest: Vec<&Leaderd> = c
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != l)
        .map(|(_, d)| d)
        .collect();
    let n = wait_for_leader(&rest, PATIENCE);
    assert!(token_of(rest[n]) > token, "token did not increase");
}

#[test]
fn one_node_blackholed_leader_keeps_leading_and_failover_still_works() {
    let name = "q-blackhole";
    let cluster = Cluster::start(3);
    let mut c = start_candidates(&cluster.config(name), "qb", 3);
    let l = wait_for_leader(&refs(&c), PATIENCE);
    let token = token_of(&c[l]);

    cluster.proxies[0].blackhole();
    hold_for(&c, Some(l), 3 * LEASE, "leading with one node partitioned");
    assert_eq!(lost_total(&c[l]), 0.0, "the leader stepped down");
    assert!(
        c[l].metric("leaderd_renewals_total") > 0.0,
        "no renewal counted at all"
    );

    // SIGKILL the leader while node 0 is still partitioned: a follower
    // acquires on nodes 1 and 2, after the old lease expired there.
    let dead = c.remove(l);
    let record = kill_and_record(dead, "leader");
    let killed = Instant::now();
    let n = wait_for_leader(&refs(&c), PATIENCE);
    let took = killed.elapsed();
    // The last renewal reached the servers at most a retry period (and a
    // bit) before the kill, so its lease ran until ~LEASE - RETRY after it.
    assert!(
        took >= LEASE - 2 * RETRY,
        "took over {took:?} after SIGKILL: before the old lease could expire"
    );
    let new_token = token_of(&c[n]);
    assert!(new_token > token, "{new_token} > {token}");

    // Healed: the partitioned node ends up holding the new term (renewals
    // restore it once whatever it held expired).
    cluster.proxies[0].heal();
    wait_until(PATIENCE, "node 0 holds the new term again", || {
        lock_json(&cluster, 0, name).is_some_and(|v| v["token"] == new_token)
            && cluster.fence_on(0, name) >= Some(new_token)
    });
    assert_eq!(lost_total(&c[n]), 0.0);

    let mut records = vec![record];
    for (i, d) in c.into_iter().enumerate() {
        d.signal("TERM");
        assert_eq!(d.wait_exit(PATIENCE), Some(0));
        records.push(record_exited(d, &format!("cand-{i}")));
    }
    let verdict = check(&all_intervals(&records, None), &[], LEASE);
    assert!(verdict.safe(), "{}", verdict.safety_report());
}

// ---------------------------------------------------------------------------
// Majority lost
// ---------------------------------------------------------------------------

#[test]
fn leader_steps_down_when_two_of_three_nodes_are_lost() {
    let name = "q-majority-lost";
    let mut cluster = Cluster::start(3);
    let c = start_candidates(&cluster.config(name), "qm", 3);
    let l = wait_for_leader(&refs(&c), PATIENCE);

    // One server dies, another is partitioned.
    let failed = Instant::now();
    cluster.kill(0);
    cluster.proxies[1].blackhole();
    let after = steps_down_before_lease_end(&c[l], failed);
    eprintln!("stepped down {after:?} after losing two of three nodes");
    wait_until(PATIENCE, "reason renew_failed", || {
        c[l].status()["reason"] == "renew_failed"
    });
    assert_eq!(
        c[l].metrics()
            .lines()
            .filter(|line| line.starts_with("leaderd_leadership_lost_total")
                && line.contains("renew_failed"))
            .count(),
        1,
        "leaderd_leadership_lost_total{{reason=renew_failed}} missing"
    );
    let log = c[l].log();
    let line = log
        .lines()
        .find(|line| line.contains("stepped down"))
        .expect("a stepped-down line");
    assert_eq!(log_field(line, "reason"), Some("renew_failed"), "{line}");

    // Nobody leads on the one node left.
    hold_for(&c, None, 3 * LEASE, "only one node of three reachable");

    // The partition heals: two of three again, and a leader.
    cluster.proxies[1].heal();
    wait_for_leader(&refs(&c), PATIENCE);
}

#[test]
fn no_leader_while_only_a_minority_is_up() {
    let name = "q-minority";
    let mut cluster = Cluster::start(3);
    cluster.kill(0);
    cluster.kill(1);
    let c = start_candidates(&cluster.config(name), "qn", 3);
    hold_for(&c, None, 3 * LEASE, "only one node of three up");
    for d in &c {
        let st = d.status();
        assert_eq!(st["is_leader"], false, "{st}");
        assert_eq!(lost_total(d) + acquired_total(d), 0.0, "{st}");
    }
    // Partial grants on the one node are given back: it is not left
    // holding a lease for longer than an attempt.
    wait_until(PATIENCE, "no stale partial grant on node 2", || {
        cluster.lock_on(2, name).is_none()
    });

    cluster.restart_empty(0);
    let l = wait_for_leader(&refs(&c), PATIENCE);
    let token = token_of(&c[l]);
    hold_for(&c, Some(l), LEASE, "leading on two of three");
    assert!(token >= 1);
}

/// A lock value on one server of three is not a lease: with the other two
/// down nobody can lead, so nobody may be reported as leader and the
/// backend counts as unreachable (`/readyz` 503). The same happens for a
/// moment in every split vote, when one candidate sees another's partial
/// grant.
#[test]
fn a_key_on_a_minority_of_nodes_is_not_reported_as_the_leader() {
    let name = "q-ghost";
    let mut cluster = Cluster::start(3);
    cluster.kill(0);
    cluster.kill(1);
    // What a candidate's partial grant looks like (node-local token).
    let value = r#"{"holder":"ghost","token":7,"term":"0123456789abcdef0123456789abcdef","acquired_at":"2026-01-01T00:00:00.000Z"}"#;
    cluster.nodes[2].cmd(&["SET", &lock_key(name), value, "PX", "60000"]);
    let c = start_candidates(&cluster.config(name), "qg", 3);
    hold_for(&c, None, LEASE, "one node of three up");
    for d in &c {
        let st = d.status();
        assert!(st["leader"].is_null(), "reports a leader: {st}");
        assert_eq!(d.get("/readyz").0, 503, "ready with 2 of 3 down: {st}");
    }
}

// ---------------------------------------------------------------------------
// A server restarted empty
// ---------------------------------------------------------------------------

#[test]
fn node_restarted_empty_rejoins_through_renewals() {
    let name = "q-rejoin";
    let mut cluster = Cluster::start(3);
    let c = start_candidates(&cluster.config(name), "qr", 3);
    let l = wait_for_leader(&refs(&c), PATIENCE);
    let token = token_of(&c[l]);
    // A master still in its first-start quarantine may have refused the
    // grant; the renewals restore the key there.
    let value = wait_for(PATIENCE, "the lease on all three nodes", || {
        let value = cluster.lock_on(0, name)?;
        (cluster.lock_on(1, name).as_ref() == Some(&value)
            && cluster.lock_on(2, name).as_ref() == Some(&value))
        .then_some(value)
    });

    cluster.restart_empty(1);
    assert_eq!(cluster.lock_on(1, name), None);
    wait_until(PATIENCE, "renewals restore the key on node 1", || {
        cluster.lock_on(1, name).as_ref() == Some(&value)
    });
    let pttl: i64 = cluster.nodes[1]
        .cmd(&["PTTL", &lock_key(name)])
        .parse()
        .expect("PTTL");
    assert!(
        pttl > 0 && pttl <= LEASE.as_millis() as i64,
        "restored key has PTTL {pttl}"
    );
    assert!(
        cluster.fence_on(1, name) >= Some(token),
        "fencing counter not restored: {:?} < {token}",
        cluster.fence_on(1, name)
    );

    // It counts: with node 0 gone now, nodes 1 (restored) and 2 are the
    // majority that keeps the same leader.
    cluster.kill(0);
    hold_for(
        &c,
        Some(l),
        3 * LEASE,
        "leading on node 2 and the restored node 1",
    );
    assert_eq!(lost_total(&c[l]), 0.0, "the leader stepped down");
    assert_eq!(token_of(&c[l]), token);
}

// ---------------------------------------------------------------------------
// Fencing tokens across handovers
// ---------------------------------------------------------------------------

#[test]
fn fencing_tokens_increase_across_handovers_in_quorum_mode() {
    let name = "q-tokens";
    let cluster = Cluster::start(3);
    let cfg = cluster.config(name);
    let ids = ["qt-0", "qt-1", "qt-2"];
    let mut c: Vec<Leaderd> = ids.iter().map(|id| Leaderd::start(&cfg, id)).collect();
    let mut incarnation = [0usize; 3];
    let mut records = Vec::new();
    let mut tokens: Vec<u64> = Vec::new();

    // Each handover happens with a different node partitioned, so that
    // consecutive terms are won by different majorities; every leader that
    // goes away comes back as a fresh process that starts with no token.
    for step in 0..6 {
        let l = wait_for_leader(&refs(&c), PATIENCE);
        let token = token_of(&c[l]);
        if let Some(&last) = tokens.last() {
            assert!(token > last, "step {step}: token {token} after {last}");
        }
        tokens.push(token);
        // Let the term settle on every reachable node.
        std::thread::sleep(2 * RETRY);

        let partitioned = step % 3;
        cluster.proxies[partitioned].blackhole();
        let who = format!("{}#{}", ids[l], incarnation[l]);
        let gone = c.remove(l);
        if step % 2 == 0 {
            gone.signal("TERM");
            assert_eq!(gone.wait_exit(PATIENCE), Some(0), "graceful exit");
            records.push(record_exited(gone, &who));
        } else {
            records.push(kill_and_record(gone, &who));
        }
        // The successor is elected by the two reachable nodes; then heal.
        let n = wait_for_leader(&refs(&c), PATIENCE);
        let next = token_of(&c[n]);
        assert!(next > token, "step {step}: {next} after {token}");
        cluster.proxies[partitioned].heal();
        // The old leader comes back as a fresh process.
        incarnation[l] += 1;
        c.insert(l, Leaderd::start(&cfg, ids[l]));
    }

    for (i, d) in c.into_iter().enumerate() {
        d.signal("TERM");
        assert_eq!(d.wait_exit(PATIENCE), Some(0));
        records.push(record_exited(d, &format!("{}#{}", ids[i], incarnation[i])));
    }
    let intervals = all_intervals(&records, None);
    assert!(intervals.len() >= 7, "{} terms", intervals.len());
    let verdict = check(&intervals, &[], LEASE);
    assert!(verdict.safe(), "{}", verdict.safety_report());
    eprintln!("tokens across handovers: {tokens:?}");
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[test]
fn two_or_four_urls_are_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = |p: u16| format!("redis://127.0.0.1:{p}");
    for (file, urls) in [
        ("two.yaml", vec![url(1), url(2)]),
        ("four.yaml", vec![url(1), url(2), url(3), url(4)]),
    ] {
        let path = write_config(&dir, file, &urls);
        for args in [
            vec!["run", "--config", &path],
            vec!["check", "--offline", "--config", &path],
        ] {
            let out = run_leaderd(&args, Duration::from_secs(10));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains("backend.redis.urls"), "{args:?}: {stderr}");
            assert!(
                stderr.contains(file),
                "{args:?} does not name the file: {stderr}"
            );
        }
    }
    // Three is accepted (offline: nothing needs to listen there).
    let path = write_config(&dir, "three.yaml", &[url(1), url(2), url(3)]);
    let out = run_leaderd(
        &["check", "--offline", "--config", &path],
        Duration::from_secs(10),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The log-based interval reader and checker on a tiny synthetic run (the
/// chaos tests rely on them; see tests/chaos.rs for more cases).
#[test]
fn intervals_are_read_from_real_logs() {
    let cluster = Cluster::start(3);
    let cfg = cluster.config("q-log");
    let a = Leaderd::start(&cfg, "ql-a");
    wait_until(PATIENCE, "ql-a leads", || a.is_leading());
    let t = token_of(&a);
    a.signal("TERM");
    assert_eq!(a.wait_exit(PATIENCE), Some(0));
    let before = SystemTime::now();
    let r = record_exited(a, "ql-a");
    let v = r.intervals(None).expect("intervals");
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].token, t);
    assert_eq!(v[0].end_reason, "shutdown");
    assert!(v[0].start < v[0].end && v[0].end <= before, "{v:?}");
}

// ---------------------------------------------------------------------------
// Outside the safety assumptions
// ---------------------------------------------------------------------------

/// A server that lost its data and rejoins at once used to let a
/// candidate that never saw the lease take it while the leader still led
/// (the README then asked for `appendfsync always` or a delayed restart).
/// Here the leader holds the lease on node 0 only for a moment (node 2 was
/// cut off long enough for its copy to expire, node 1 restarts empty), and
/// a fresh candidate starts: node 1, which has no fencing counter any more,
/// grants nothing for one lease (its quarantine), so the fresh candidate
/// only leads once the old leader has stopped.
#[test]
fn immediate_empty_restart_does_not_let_a_fresh_candidate_overlap() {
    let name = "q-hazard";
    let mut cluster = Cluster::start(3);
    let cfg = cluster.config(name);
    let old = Leaderd::start(&cfg, "qh-old");
    wait_until(PATIENCE, "qh-old leads", || old.is_leading());

    // Node 2 refuses (no stale renewal reaches it later) until its copy
    // of the lease expired; the leader keeps leading on nodes 0 and 1.
    cluster.proxies[2].refuse();
    std::thread::sleep(LEASE + 3 * RETRY);
    assert!(old.is_leading());

    // The leader stalls (so nothing restores node 2 or node 1), node 2 is
    // reachable again, node 1 restarts empty, and a new candidate starts.
    old.signal("STOP");
    cluster.proxies[2].heal();
    cluster.restart_empty(1);
    let fresh = Leaderd::start(&cfg, "qh-new");
    wait_until(PATIENCE, "qh-new leads", || fresh.is_leading());
    old.signal("CONT");
    wait_until(PATIENCE, "qh-old stepped down", || {
        old.log().contains("stepped down")
    });

    let records = vec![
        kill_and_record(old, "qh-old"),
        kill_and_record(fresh, "qh-new"),
    ];
    let verdict = check(&all_intervals(&records, None), &[], LEASE);
    assert!(verdict.safe(), "{}", verdict.safety_report());
}

/// A delayed restart used to protect the lease but not the fencing
/// counter: node 2 missed every term (partitioned), node 0 is restarted
/// empty after a full lease, and with node 1 partitioned a candidate that
/// never saw a token wins nodes 0 and 2, whose counters know nothing of the
/// terms before. A server without a counter now starts it from its clock
/// in microseconds, above every token handed out before.
#[test]
fn delayed_restart_of_one_node_and_a_stale_node_keep_tokens_increasing() {
    let name = "q-stale";
    let mut cluster = Cluster::start(3);
    let cfg = cluster.config(name);
    let mut records = Vec::new();

    // Terms on nodes 0 and 1 only; node 2 never hears of them.
    cluster.proxies[2].refuse();
    let mut last = 0;
    for round in 0..3 {
        let d = Leaderd::start(&cfg, &format!("qs-{round}"));
        wait_until(PATIENCE, "a leader", || d.is_leading());
        last = token_of(&d);
        d.signal("TERM");
        assert_eq!(d.wait_exit(PATIENCE), Some(0));
        records.push(record_exited(d, &format!("qs-{round}")));
    }
    assert_eq!(cluster.fence_on(2, name), None, "node 2 heard of a term");

    // Node 2 is back, node 0 restarts empty after a full lease, node 1 is
    // cut off: the reachable majority remembers no token.
    cluster.proxies[2].heal();
    cluster.kill(0);
    std::thread::sleep(LEASE + RETRY);
    cluster.restart_empty(0);
    cluster.proxies[1].refuse();

    let fresh = Leaderd::start(&cfg, "qs-fresh");
    wait_until(PATIENCE, "the fresh candidate leads", || fresh.is_leading());
    let token = token_of(&fresh);
    fresh.signal("TERM");
    assert_eq!(fresh.wait_exit(PATIENCE), Some(0));
    records.push(record_exited(fresh, "qs-fresh"));

    let verdict = check(&all_intervals(&records, None), &[], LEASE);
    assert!(token > last, "token {token} after {last}");
    assert!(verdict.safe(), "{}", verdict.safety_report());
}

// ---------------------------------------------------------------------------
// Late renewals
// ---------------------------------------------------------------------------

/// A renewal held up in the network (a partition that heals later) reaches
/// a server after its term is over. It used to recreate the dead term's
/// key there (a renewal restores a missing key in quorum mode): an orphan
/// that blocked the server for a whole lease. The server now refuses a
/// renewal that arrives after the deadline its sender gave it.
#[test]
fn a_renewal_delayed_in_the_network_does_not_recreate_a_dead_term() {
    let name = "q-late";
    let cluster = Cluster::start(3);
    let cfg = cluster.config(name);
    let old = Leaderd::start(&cfg, "ql-old");
    wait_until(PATIENCE, "ql-old leads", || old.is_leading());
    let old_term = lock_json(&cluster, 1, name).expect("lock on node 1")["term"].clone();
    // A few renewals first, so that node 1 knows the renew script.
    let renewed = renewals_ok(&old.metrics());
    wait_until(PATIENCE, "ql-old renews", || {
        renewals_ok(&old.metrics()) >= renewed + 3.0
    });

    // Node 1 is cut off (its renewals are held, not lost) and node 0
    // refuses: the leader can no longer renew on a majority and steps down.
    cluster.proxies[1].blackhole();
    cluster.proxies[0].refuse();
    wait_until(PATIENCE, "ql-old steps down", || {
        old.log().contains("stepped down")
    });
    // Its lease runs out everywhere, node 1 included.
    std::thread::sleep(LEASE + 2 * RETRY);
    assert_eq!(cluster.lock_on(1, name), None, "node 1 still holds a lease");

    // The partition heals and delivers the held renewals, long after
    // their term ended.
    let before = cluster.proxies[1].forwarded_bytes();
    cluster.proxies[1].heal();
    let watch_until = Instant::now() + 4 * RETRY;
    while Instant::now() < watch_until {
        let on_node_1 = lock_json(&cluster, 1, name);
        assert!(
            on_node_1.as_ref().is_none_or(|v| v["term"] != old_term),
            "a late renewal recreated the dead term on node 1: {on_node_1:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        cluster.proxies[1].forwarded_bytes() > before,
        "nothing held was delivered"
    );
}
