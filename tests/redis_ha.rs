//! Redis high availability against real servers: Sentinel failovers while
//! leading, a hung Sentinel, a partition that splits the Sentinels,
//! `min_replica_acks`, TLS with a CA made by the test, ACL users and secret
//! redaction, Redis Cluster (and `WAIT` there), a candidate far from Redis,
//! and the configuration errors of these modes.
//!
//! Every process (redis-server, Sentinels, leaderd) runs in a tempdir of its
//! own, on 127.0.0.1 or (the partition) in network namespaces the test
//! creates, and is killed and reaped on drop; every wait is bounded. Safety
//! ("never two leaders") is checked by a background monitor that polls every
//! candidate's /leader round after round.

#[path = "support/netns.rs"]
mod netns;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/redis_ha.rs"]
mod redis_ha;
mod support;

use std::fs;
use std::time::{Duration, Instant};

use netns::ADDR_B;
use redis_ha::*;
use support::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn refs(c: &[Leaderd]) -> Vec<&Leaderd> {
    c.iter().collect()
}

fn addrs(c: &[Leaderd]) -> Vec<String> {
    c.iter().map(|d| d.addr().to_string()).collect()
}

fn token_of(d: &Leaderd) -> u64 {
    let st = d.status();
    st["fencing_token"]
        .as_u64()
        .unwrap_or_else(|| panic!("{} has no fencing_token: {st}", d.identity()))
}

fn assert_no_overlap(monitor: Monitor, c: &[Leaderd], what: &str) -> MonitorState {
    let st = monitor.finish();
    let name = |addr: &str| {
        c.iter()
            .find(|d| d.addr() == addr)
            .map_or(addr.to_string(), |d| d.identity().to_string())
    };
    let overlaps: Vec<String> = st
        .overlaps
        .iter()
        .map(|(ms, addrs)| {
            let who: Vec<String> = addrs.iter().map(|a| name(a)).collect();
            format!("+{ms}ms {who:?}")
        })
        .collect();
    assert!(
        overlaps.is_empty(),
        "{what}: two candidates answered /leader 200 in the same round, {} of {} rounds (time since the monitor started): {}",
        overlaps.len(),
        st.rounds,
        overlaps.join(", ")
    );
    assert!(st.rounds >= 5, "{what}: the monitor barely ran: {st:?}");
    st
}

fn assert_no_panic(d: &Leaderd) {
    let log = d.log();
    assert!(
        !log.contains("panicked"),
        "{} panicked:\n{log}",
        d.identity()
    );
}

/// The `stepped down` log lines of a candidate.
fn step_downs(d: &Leaderd) -> Vec<String> {
    d.log()
        .lines()
        .filter(|l| l.contains("stepped down"))
        .map(str::to_string)
        .collect()
}

/// The lock value at a server as JSON (plain port, no auth).
fn lock_at(node: &Node, name: &str) -> Option<serde_json::Value> {
    match query(node.port, None, &["GET", &lock_key(name)]) {
        Ok(redis::Value::BulkString(b)) => Some(
            serde_json::from_slice(&b)
                .unwrap_or_else(|e| panic!("lock value is not JSON ({e}): {b:?}")),
        ),
        _ => None,
    }
}

fn sentinel_yaml(s: &SentinelSetup) -> String {
    format!(
        "    sentinel:\n      master_name: {MASTER_NAME}\n      urls: {}\n",
        yaml_list(&s.sentinel_urls())
    )
}

/// Waits until `d` no longer answers /leader 200; the instant it was seen.
fn wait_stepped_down(d: &Leaderd, timeout: Duration) -> Instant {
    wait_for(timeout, &format!("{} steps down", d.identity()), || {
        (d.leader_code() == Some(503)).then(Instant::now)
    })
}

// ---------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------

/// SIGKILL of the master while leading: the leader steps down before its
/// lease (as the replica, the next master, holds it) can expire; after the
/// failover someone leads on the new master with a greater token (the spare
/// replica, now following the new master, acknowledges it).
#[test]
fn sentinel_master_killed_while_leading() {
    let mut s = SentinelSetup::start();
    let name = "sentinel-kill";
    let cfg = ha_config(name, SLOW, &sentinel_yaml(&s));
    let c = start_candidates(&cfg, "sk", 2);
    let all = refs(&c);
    let monitor = Monitor::start(addrs(&c));

    let old = wait_for_leader(&all, PATIENCE);
    let old_token = token_of(&c[old]);
    let value = lock_at(&s.master, name).expect("lock key on the master");
    assert_eq!(value["holder"], c[old].identity(), "{value}");
    assert_eq!(value["token"].as_u64(), Some(old_token), "{value}");
    // The term reached the replica (asynchronous replication, but fast).
    wait_until(Duration::from_secs(5), "the replica has the lease", || {
        lock_at(&s.replica, name).is_some_and(|v| v["token"].as_u64() == Some(old_token))
    });

    s.master.kill();
    let killed = Instant::now();
    // The lease as the replica (the next master) holds it: it cannot expire
    // before this instant.
    let pttl: i64 = query_text(s.replica.port, None, &["PTTL", &lock_key(name)])
        .parse()
        .expect("PTTL is an integer");
    assert!(pttl > 0, "the lease has no TTL left on the replica: {pttl}");
    let lease_end = killed + Duration::from_millis(u64::try_from(pttl).unwrap_or(0));

    let stepped = wait_stepped_down(&c[old], PATIENCE);
    assert!(
        stepped < lease_end,
        "the leader was still leading {:?} after the lease could have expired (stepped down {:?} after the kill, lease had {pttl} ms left)\n{}",
        stepped - lease_end,
        stepped - killed,
        c[old].log()
    );

    wait_until(
        Duration::from_secs(20),
        "the Sentinels promote the replica",
        || s.agreed_master() == Some(s.replica.addr()),
    );
    let new = wait_for_leader(&all, PATIENCE);
    let new_token = token_of(&c[new]);
    assert!(
        new_token > old_token,
        "token after failover {new_token} must exceed {old_token}"
    );
    let value = lock_at(&s.replica, name).expect("lock key on the new master");
    assert_eq!(value["holder"], c[new].identity(), "{value}");
    assert_eq!(value["token"].as_u64(), Some(new_token), "{value}");

    let downs = step_downs(&c[old]);
    assert!(
        downs
            .iter()
            .any(|l| l.contains("renew_failed") || l.contains("lock_lost")),
        "the old leader's step-down reason: {downs:?}"
    );
    assert_no_overlap(monitor, &c, "master SIGKILL");
    for d in &c {
        assert_no_panic(d);
    }
}

/// A forced `SENTINEL FAILOVER` with the old master alive (it becomes a
/// replica): the leader notices the master change, steps down, and
/// leadership resumes on the new master.
#[test]
fn sentinel_forced_failover_while_leading() {
    let s = SentinelSetup::start();
    let name = "sentinel-force";
    let cfg = ha_config(name, SLOW, &sentinel_yaml(&s));
    let c = start_candidates(&cfg, "sf", 2);
    let all = refs(&c);
    let monitor = Monitor::start(addrs(&c));

    let old = wait_for_leader(&all, PATIENCE);
    let old_token = token_of(&c[old]);
    wait_until(Duration::from_secs(5), "the replica has the lease", || {
        lock_at(&s.replica, name).is_some_and(|v| v["token"].as_u64() == Some(old_token))
    });

    let reply = s.sentinels[0].cmd(&["SENTINEL", "FAILOVER", MASTER_NAME]);
    assert_eq!(reply, "OK", "SENTINEL FAILOVER: {reply}");
    let forced = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "the Sentinels name the replica as master",
        || s.agreed_master() == Some(s.replica.addr()),
    );

    wait_until(
        Duration::from_secs(10),
        "the old leader logs the master change and steps down",
        || {
            let log = c[old].log();
            log.contains("the Redis master changed") && log.contains("stepped down")
        },
    );
    let downs = step_downs(&c[old]);
    assert!(
        downs
            .iter()
            .any(|l| l.contains("lock_lost") || l.contains("renew_failed")),
        "step-down reason: {downs:?}"
    );

    let new = wait_for_leader(&all, PATIENCE);
    let again = forced.elapsed();
    let new_token = token_of(&c[new]);
    assert!(
        new_token > old_token,
        "token after failover {new_token} must exceed {old_token}"
    );
    let value = lock_at(&s.replica, name).expect("lock key on the new master");
    assert_eq!(value["holder"], c[new].identity(), "{value}");
    assert_eq!(value["token"].as_u64(), Some(new_token), "{value}");
    // The old master is a replica now.
    wait_until(
        Duration::from_secs(10),
        "the old master is a replica",
        || s.master.cmd(&["ROLE"]).starts_with("slave"),
    );
    eprintln!("forced failover: leader again {again:?} after SENTINEL FAILOVER");

    assert_no_overlap(monitor, &c, "forced failover");
    for d in &c {
        assert_no_panic(d);
    }
}

/// One Sentinel hangs (SIGSTOP: it still accepts connections, never
/// answers), the first one every candidate asks: the leader keeps its term,
/// a handover still works, and a candidate started meanwhile follows.
#[test]
fn sentinel_one_hung_sentinel_does_not_stop_the_election() {
    let s = SentinelSetup::start();
    let name = "sentinel-hung";
    let cfg = ha_config(name, SLOW, &sentinel_yaml(&s));
    let c = start_candidates(&cfg, "sh", 2);
    let all = refs(&c);
    let monitor = Monitor::start(addrs(&c));
    let first = wait_for_leader(&all, PATIENCE);

    send_signal(s.sentinels[0].pid(), "STOP");
    let hung = Instant::now();
    // Two leases: long enough for a leader that cannot renew to step down.
    while hung.elapsed() < SLOW.lease * 2 {
        assert!(
            c[first].is_leading(),
            "the leader stopped leading {:?} after the first Sentinel hung:\n{}",
            hung.elapsed(),
            c[first].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        step_downs(&c[first]).is_empty(),
        "{:?}",
        step_downs(&c[first])
    );

    c[first].signal("TERM");
    let next = &c[1 - first];
    wait_until(PATIENCE, "the other candidate takes over", || {
        next.is_leading()
    });
    assert_eq!(c[first].wait_exit(Duration::from_secs(10)), Some(0));

    // A fresh candidate connects to every Sentinel while one hangs.
    let late = Leaderd::start(&cfg, "sh-late");
    wait_until(PATIENCE, "the late candidate names the leader", || {
        late.status()["leader"] == next.identity() && late.get("/readyz").0 == 200
    });

    // `leaderd check` names the silent Sentinel, and is still satisfied:
    // two of three name the master. The test servers run with
    // min-replicas-to-write 0, which it warns about.
    let check = |config: &std::path::Path| {
        let out = run_leaderd(
            &["check", "--config", &config.display().to_string()],
            Duration::from_secs(20),
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = check(late.config_path());
    eprintln!("leaderd check with a hung Sentinel:\n{text}");
    assert_eq!(code, Some(0), "{text}");
    let master = s.master.addr();
    for expected in [
        "a master counts when 2 of them name it",
        &format!("{} names master {master}", s.sentinels[1].url()),
        &format!("{}: no answer", s.sentinels[0].url()),
        "min-replicas-to-write is 0",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    assert!(!text.contains("min_replica_acks is 0"), "{text}");
    let dir = tempfile::tempdir().expect("tempdir");
    let no_acks = dir.path().join("no-acks.yaml");
    fs::write(
        &no_acks,
        cfg.replace("    sentinel:", "    min_replica_acks: 0\n    sentinel:"),
    )
    .expect("write config");
    let (code, text) = check(&no_acks);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("min_replica_acks is 0"), "{text}");
    send_signal(s.sentinels[0].pid(), "CONT");

    assert_no_overlap(monitor, &c, "one hung Sentinel");
    for d in c.iter().chain([&late]) {
        assert_no_panic(d);
    }
}

/// The partition of issue 10: {M1, R1, Sentinel s1, leader L} apart from
/// {B1, B2, s2, s3, candidate N}, each candidate listing its nearest
/// Sentinel first. The majority side promotes B1 or B2 and N leads there;
/// L, which still reaches M1 and R1 (so its writes are even replicated),
/// must step down because it cannot hear from a majority of the Sentinels.
/// After the partition heals, L follows N.
#[test]
fn sentinel_partition_leaves_one_leader() {
    let p = SentinelPartition::start();
    let name = "sentinel-partition";
    let urls: Vec<String> = p.sentinels.iter().map(NsServer::url).collect();
    let config = |order: [usize; 3]| {
        let listed: Vec<String> = order.iter().map(|&i| urls[i].clone()).collect();
        ha_config(
            name,
            SLOW,
            &format!(
                "    sentinel:\n      master_name: {MASTER_NAME}\n      urls: {}\n",
                yaml_list(&listed)
            ),
        )
    };
    let l = NsLeaderd::start(&p.net.a, &config([0, 1, 2]), "L", 9090);
    wait_until(PATIENCE, "L leads", || l.is_leading());
    let n = NsLeaderd::start(&p.net.b, &config([1, 2, 0]), "N", 9090);
    wait_until(PATIENCE, "N follows L", || n.status()["leader"] == "L");
    let old_token = l.status()["fencing_token"]
        .as_u64()
        .expect("L has a fencing token");
    wait_until(PATIENCE, "every replica has L's term", || {
        p.servers[1..].iter().all(|r| {
            r.cmd(&["GET", &lock_key(name)])
                .contains(&format!("\"token\":{old_token}"))
        })
    });
    let monitor = Monitor::with_probes(vec![l.probe(), n.probe()]);

    p.net.partition();
    let cut = Instant::now();
    let promoted = wait_for(
        Duration::from_secs(30),
        "the majority side's Sentinels promote a replica there",
        || p.agreed_master(&[1, 2]).filter(|m| m.starts_with(ADDR_B)),
    );
    eprintln!(
        "partition: {promoted} promoted {:?} after the cut",
        cut.elapsed()
    );
    // Generous: the new master also needs a replica that follows it.
    wait_until(Duration::from_secs(30), "N leads on the new master", || {
        n.is_leading()
    });
    eprintln!("partition: N leads {:?} after the cut", cut.elapsed());
    let during = monitor.snapshot();
    assert!(
        during.overlaps.is_empty(),
        "two leaders during the partition (ms since the monitor started): {:?}\n--- L ---\n{}\n--- N ---\n{}",
        during.overlaps,
        l.log(),
        n.log()
    );
    assert!(!l.is_leading(), "L still leads on the minority side");
    assert!(
        l.log()
            .lines()
            .any(|line| line.contains("stepped down") && line.contains("renew_failed")),
        "L's step-down reason:\n{}",
        l.log()
    );
    let new_token = n.status()["fencing_token"]
        .as_u64()
        .expect("N has a fencing token");
    assert!(new_token > old_token, "{new_token} > {old_token}");
    // N's term is on the new master.
    let value = p.server_at(&promoted).cmd(&["GET", &lock_key(name)]);
    assert!(value.contains("\"holder\":\"N\""), "{value}");

    // Heal: the old master becomes a replica of the new one, and L follows.
    p.net.heal();
    wait_until(
        Duration::from_secs(30),
        "every Sentinel names the new master",
        || p.agreed_master(&[0, 1, 2]).as_deref() == Some(promoted.as_str()),
    );
    wait_until(PATIENCE, "L follows N", || l.status()["leader"] == "N");
    assert!(n.is_leading(), "{}", n.log());
    let st = monitor.finish();
    assert!(
        st.overlaps.is_empty(),
        "two leaders (ms since the monitor started): {:?}",
        st.overlaps
    );
    assert!(st.rounds >= 5, "the monitor barely ran: {st:?}");
    for log in [l.log(), n.log()] {
        assert!(!log.contains("panicked"), "{log}");
    }
}

// ---------------------------------------------------------------------------
// min_replica_acks
// ---------------------------------------------------------------------------

/// `min_replica_acks: 1`: leads while the replica acknowledges; with the
/// replica gone nobody leads and no lock key is left behind by the failed
/// acquires; once the replica is back someone leads at once.
#[test]
fn min_replica_acks_requires_a_live_replica() {
    let t = Timing {
        lease: Duration::from_millis(2000),
        renew_deadline: Duration::from_millis(1200),
        retry: Duration::from_millis(200),
    };
    let mut r = Replicated::start();
    let name = "acks";
    let cfg = ha_config(
        name,
        t,
        &format!(
            "    urls: [\"{}\"]\n    min_replica_acks: 1\n",
            r.master.url()
        ),
    );
    let c = start_candidates(&cfg, "ack", 2);
    let all = refs(&c);
    let monitor = Monitor::start(addrs(&c));

    let old = wait_for_leader(&all, PATIENCE);
    let old_token = token_of(&c[old]);
    let old_value = query_text(r.master.port, None, &["GET", &lock_key(name)]);
    // WAIT 1 succeeded, so the replica has it.
    assert_eq!(
        query_text(r.replica.port, None, &["GET", &lock_key(name)]),
        old_value
    );

    r.replica.kill();
    let killed = Instant::now();
    let stepped = wait_stepped_down(&c[old], t.lease + Duration::from_secs(3));
    assert!(
        stepped - killed < t.renew_deadline + t.retry + Duration::from_millis(500),
        "stepped down only {:?} after the replica died",
        stepped - killed
    );
    assert!(
        step_downs(&c[old])
            .iter()
            .any(|l| l.contains("renew_failed")),
        "{:?}",
        step_downs(&c[old])
    );

    // The old term's key expires on its own (the master still took the
    // renewals whose WAIT failed).
    wait_until(
        t.lease + t.renew_deadline + Duration::from_secs(2),
        "the old term's lock key expires",
        || query_text(r.master.port, None, &["GET", &lock_key(name)]) != old_value,
    );

    // Now: nobody leads, and the failed acquires leave no key behind (each
    // grant is undone; an orphan would stay for a whole lease).
    let window = Instant::now() + Duration::from_millis(1500);
    let mut seen: Vec<(String, Instant, Instant)> = Vec::new();
    while Instant::now() < window {
        let round = leader_round(&all);
        assert!(
            !round.contains(&Some(200)),
            "someone leads without the replica's acknowledgement: {round:?}"
        );
        let value = query_text(r.master.port, None, &["GET", &lock_key(name)]);
        let now = Instant::now();
        if !value.is_empty() {
            match seen.iter_mut().find(|(v, _, _)| *v == value) {
                Some(entry) => entry.2 = now,
                None => seen.push((value, now, now)),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (value, first, last) in &seen {
        assert!(
            *last - *first < t.lease / 2,
            "a lock value stayed {:?} although nobody leads (orphaned grant): {value}",
            *last - *first
        );
    }
    // A candidate whose acquire failed says why (the WAIT shortfall or,
    // when WAIT's own timeout loses the race against the call's deadline, a
    // timeout). Another may be seeing that attempt's short-lived key.
    let errors: Vec<String> = c
        .iter()
        .filter_map(|d| d.status()["backend_error"].as_str().map(str::to_string))
        .collect();
    eprintln!("min_replica_acks without the replica: {errors:?}");
    assert!(
        !errors.is_empty(),
        "nobody reports the failing acquires in backend_error"
    );

    r.replica.restart();
    wait_replica_synced(&r.replica, Duration::from_secs(10));
    let back = Instant::now();
    let new = wait_for_leader(&all, PATIENCE);
    let took = back.elapsed();
    assert!(
        took < t.lease,
        "leader only {took:?} after the replica was back: a leftover key blocked the election?"
    );
    let new_token = token_of(&c[new]);
    assert!(new_token > old_token, "{new_token} > {old_token}");
    let value = query_text(r.master.port, None, &["GET", &lock_key(name)]);
    let lock: serde_json::Value = serde_json::from_str(&value).expect("lock JSON");
    assert_eq!(lock["holder"], c[new].identity(), "{lock}");
    wait_until(
        Duration::from_secs(2),
        "the replica has the new term",
        || query_text(r.replica.port, None, &["GET", &lock_key(name)]) == value,
    );

    assert_no_overlap(monitor, &c, "min_replica_acks");
    for d in &c {
        assert_no_panic(d);
    }
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// `rediss://` with the test's CA leads; without `tls_ca_file` (system
/// roots) the certificate is refused, with an error saying so, and leaderd
/// keeps running.
#[test]
fn tls_with_the_test_ca_and_without_it() {
    let ca = TestCa::generate();
    let server = ca.tls_server();
    let url = format!("rediss://127.0.0.1:{}", server.port);

    let with_ca = ha_config(
        "tls",
        FAST,
        &format!(
            "    urls: [\"{url}\"]\n    tls_ca_file: \"{}\"\n",
            ca.ca_pem.display()
        ),
    );
    let c = start_candidates(&with_ca, "tls", 2);
    let all = refs(&c);
    let leader = wait_for_leader(&all, PATIENCE);
    let st = c[leader].status();
    assert_eq!(st["is_leader"], true, "{st}");
    assert!(st["fencing_token"].as_u64().is_some(), "{st}");
    let follower = &c[1 - leader];
    wait_until(
        PATIENCE,
        "the follower is ready and names the leader",
        || follower.get("/readyz").0 == 200 && follower.status()["leader"] == c[leader].identity(),
    );

    // `leaderd check` connects over TLS as well.
    let out = run_leaderd(
        &[
            "check",
            "--config",
            &c[0].config_path().display().to_string(),
        ],
        Duration::from_secs(10),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "check with the CA:\n{text}");

    // Without the CA: system roots do not know it.
    let without_ca = ha_config("tls-noca", FAST, &format!("    urls: [\"{url}\"]\n"));
    let d = Leaderd::start(&without_ca, "tls-noca");
    let err = wait_for(PATIENCE, "a certificate error in /status", || {
        d.status()["backend_error"]
            .as_str()
            .filter(|e| e.to_lowercase().contains("certificate"))
            .map(str::to_string)
    });
    eprintln!("without the CA: {err}");
    assert_eq!(d.get("/readyz").0, 503, "backend_error: {err}");
    assert_eq!(d.leader_code(), Some(503));
    // Keeps trying, does not die.
    std::thread::sleep(FAST.retry * 3);
    assert_eq!(d.get("/healthz").0, 200);
    assert!(
        d.wait_exit(Duration::ZERO).is_none(),
        "leaderd exited:\n{}",
        d.log()
    );
    assert!(
        d.log().to_lowercase().contains("certificate"),
        "the log should name the certificate problem:\n{}",
        d.log()
    );
    assert_no_panic(&d);

    let out = run_leaderd(
        &["check", "--config", &d.config_path().display().to_string()],
        Duration::from_secs(15),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "check without the CA:\n{text}");
    assert!(
        text.to_lowercase().contains("certificate"),
        "check output should name the certificate problem:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    for d in &c {
        assert_no_panic(d);
    }
}

// ---------------------------------------------------------------------------
// ACL user, password_file, redaction
// ---------------------------------------------------------------------------

const SECRET: &str = "s3cret-Pa55";
const WRONG_IN_FILE: &str = "wr0ng-file-Pa55";
const WRONG_IN_URL: &str = "wr0ng-url-Pa55";

fn acl_server() -> Node {
    let pass = format!(">{SECRET}");
    Node::plain(&[
        "--user",
        "leaderd",
        "on",
        &pass,
        "~leaderd:*",
        "&*",
        "+@all",
        "--user",
        "default",
        "off",
    ])
}

/// Everything leaderd shows about itself: log, /status, /metrics, and what
/// `leaderd check` prints for the same config (with its exit code).
fn everything_shown(d: &Leaderd) -> (Option<i32>, String) {
    let check = run_leaderd(
        &["check", "--config", &d.config_path().display().to_string()],
        Duration::from_secs(15),
    );
    let shown = format!(
        "--- log ---\n{}\n--- /status ---\n{}\n--- /metrics ---\n{}\n--- check (exit {:?}) ---\n{}{}",
        d.log(),
        d.get("/status").1,
        d.get("/metrics").1,
        check.status.code(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    (check.status.code(), shown)
}

fn assert_redacted(d: &Leaderd, shown: &str) {
    for secret in [SECRET, WRONG_IN_FILE, WRONG_IN_URL] {
        assert!(
            !shown.contains(secret),
            "{} shows the password {secret:?}:\n{shown}",
            d.identity()
        );
    }
}

#[test]
fn acl_user_password_file_and_redaction() {
    let server = acl_server();
    let port = server.port;
    let dir = tempfile::tempdir().expect("tempdir");
    let good_file = dir.path().join("password");
    let bad_file = dir.path().join("wrong-password");
    fs::write(&good_file, format!("{SECRET}\n")).expect("write password file");
    fs::write(&bad_file, format!("{WRONG_IN_FILE}\n")).expect("write password file");
    // The default user is off: unauthenticated commands are refused.
    assert!(
        query_text(port, None, &["GET", "x"]).contains("NOAUTH"),
        "{}",
        query_text(port, None, &["GET", "x"])
    );

    let plain = format!("redis://127.0.0.1:{port}");
    let start = |name: &str, redis: String| {
        Leaderd::builder(&ha_config(name, FAST, &redis))
            .identity(name)
            // Every target at debug: dependencies must not log it either.
            .env("LEADERD_LOG", "debug")
            .start()
    };
    let file_ok = start(
        "acl-file",
        format!(
            "    urls: [\"{plain}\"]\n    username: leaderd\n    password_file: \"{}\"\n",
            good_file.display()
        ),
    );
    let url_ok = start(
        "acl-url",
        format!("    urls: [\"redis://leaderd:{SECRET}@127.0.0.1:{port}\"]\n"),
    );
    // password_file wins over the password in the URL.
    let file_overrides_url = start(
        "acl-override",
        format!(
            "    urls: [\"redis://leaderd:{WRONG_IN_URL}@127.0.0.1:{port}\"]\n    password_file: \"{}\"\n",
            good_file.display()
        ),
    );
    let file_bad = start(
        "acl-badfile",
        format!(
            "    urls: [\"{plain}\"]\n    username: leaderd\n    password_file: \"{}\"\n",
            bad_file.display()
        ),
    );
    let url_bad = start(
        "acl-badurl",
        format!("    urls: [\"redis://leaderd:{WRONG_IN_URL}@127.0.0.1:{port}\"]\n"),
    );

    for d in [&file_ok, &url_ok, &file_overrides_url] {
        wait_until(PATIENCE, &format!("{} leads", d.identity()), || {
            d.is_leading()
        });
        assert_eq!(d.get("/readyz").0, 200);
        let name = d.identity();
        let raw = query_text(port, Some(("leaderd", SECRET)), &["GET", &lock_key(name)]);
        let lock: serde_json::Value = serde_json::from_str(&raw)
            .unwrap_or_else(|e| panic!("lock of {name} is not JSON ({e}): {raw}"));
        assert_eq!(lock["holder"], name, "{lock}");
    }
    for d in [&file_bad, &url_bad] {
        let err = wait_for(PATIENCE, "an authentication error in /status", || {
            d.status()["backend_error"].as_str().map(str::to_string)
        });
        eprintln!("{}: {err}", d.identity());
        let lower = err.to_lowercase();
        assert!(
            lower.contains("wrongpass") || lower.contains("auth") || lower.contains("password"),
            "{}: backend_error should be an auth error: {err}",
            d.identity()
        );
        assert_eq!(d.get("/readyz").0, 503, "{}", d.identity());
        assert_eq!(d.leader_code(), Some(503));
        assert!(d.wait_exit(Duration::ZERO).is_none(), "{}", d.log());
    }

    for (d, usable) in [
        (&file_ok, true),
        (&url_ok, true),
        (&file_overrides_url, true),
        (&file_bad, false),
        (&url_bad, false),
    ] {
        let (check, shown) = everything_shown(d);
        assert_redacted(d, &shown);
        assert_eq!(
            check,
            Some(if usable { 0 } else { 1 }),
            "leaderd check for {}:\n{shown}",
            d.identity()
        );
        assert_no_panic(d);
    }
    // A graceful stop logs the release; still nothing secret.
    url_ok.signal("TERM");
    assert_eq!(url_ok.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!url_ok.log().contains(SECRET), "{}", url_ok.log());
}

// ---------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------

#[test]
fn redis_cluster_elects_one_leader_and_hands_over() {
    let cluster = Cluster::start();
    let name = "cluster-elect";
    let cfg = ha_config(
        name,
        FAST,
        &format!(
            "    urls: {}\n    cluster: true\n",
            yaml_list(&cluster.urls())
        ),
    );
    let c = start_candidates(&cfg, "cl", 3);
    let all = refs(&c);
    let monitor = Monitor::start(addrs(&c));

    let old = wait_for_leader(&all, PATIENCE);
    let old_token = token_of(&c[old]);
    wait_until(PATIENCE, "every candidate names the leader", || {
        c.iter().all(|d| d.status()["leader"] == c[old].identity())
    });

    // The keys of the election share the slot of its hash tag, on the node
    // that owns that slot.
    let n0 = &cluster.nodes[0];
    let slot = n0.cmd(&["CLUSTER", "KEYSLOT", name]);
    assert_eq!(n0.cmd(&["CLUSTER", "KEYSLOT", &lock_key(name)]), slot);
    assert_eq!(n0.cmd(&["CLUSTER", "KEYSLOT", &fence_key(name)]), slot);
    let owners: Vec<&Node> = cluster
        .nodes
        .iter()
        .filter(|n| lock_at(n, name).is_some())
        .collect();
    assert_eq!(
        owners.len(),
        1,
        "exactly one node holds the lock key: {:?}",
        cluster
            .nodes
            .iter()
            .map(|n| n.cmd(&["GET", &lock_key(name)]))
            .collect::<Vec<_>>()
    );
    let owner = owners[0];
    let lock = lock_at(owner, name).expect("lock");
    assert_eq!(lock["holder"], c[old].identity(), "{lock}");
    assert_eq!(lock["token"].as_u64(), Some(old_token), "{lock}");
    let in_slot: u64 = owner
        .cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot])
        .parse()
        .expect("count");
    assert!(in_slot >= 2, "lock and fence in slot {slot}: {in_slot}");
    for n in &cluster.nodes {
        if n.port != owner.port {
            let reply = n.cmd(&["GET", &lock_key(name)]);
            assert!(
                reply.starts_with("MOVED") && reply.contains(&format!("{slot} ")),
                "node {} should redirect slot {slot} to {}: {reply}",
                n.port,
                owner.addr()
            );
        }
    }

    // Graceful handover.
    c[old].signal("TERM");
    let sent = Instant::now();
    let others: Vec<&Leaderd> = c
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != old)
        .map(|(_, d)| d)
        .collect();
    let new = wait_for_leader(&others, PATIENCE);
    let took = sent.elapsed();
    assert_eq!(c[old].wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        took < FAST.lease,
        "handover took {took:?}: the lease was not released?"
    );
    let new_token = token_of(others[new]);
    assert!(new_token > old_token, "{new_token} > {old_token}");
    let lock = lock_at(owner, name).expect("lock after handover");
    assert_eq!(lock["holder"], others[new].identity(), "{lock}");
    eprintln!("cluster handover took {took:?}");
    // The new term renews on the cluster: still the same leader and token
    // after two leases.
    std::thread::sleep(FAST.lease * 2);
    assert!(others[new].is_leading(), "{}", others[new].log());
    assert_eq!(token_of(others[new]), new_token);

    assert_no_overlap(monitor, &c, "cluster");
    for d in &c {
        assert_no_panic(d);
    }
}

/// `min_replica_acks: 1` on a cluster of three masters with one replica
/// each: only the replica of the master that owns the election's slot
/// matters. Losing another master's replica changes nothing; losing the
/// owner's stops the leader (nobody leads) until it is back.
#[test]
fn redis_cluster_waits_for_the_slot_owners_replica_only() {
    let mut cluster = Cluster::with_replicas();
    let name = "cluster-acks";
    let t = Timing {
        lease: Duration::from_millis(2000),
        renew_deadline: Duration::from_millis(1200),
        retry: Duration::from_millis(200),
    };
    let cfg = ha_config(
        name,
        t,
        &format!(
            "    urls: {}\n    cluster: true\n    min_replica_acks: 1\n",
            yaml_list(&cluster.urls())
        ),
    );
    let c = start_candidates(&cfg, "ca", 2);
    let all = refs(&c);
    let monitor = Monitor::start(addrs(&c));
    let leader = wait_for_leader(&all, PATIENCE);
    let token = token_of(&c[leader]);

    let owner = cluster.owner_of(&lock_key(name));
    let owner_port = owner.port;
    let own_replica = cluster.replica_of(owner);
    let other_master = cluster
        .nodes
        .iter()
        .find(|n| n.port != owner_port && n.cmd(&["ROLE"]).starts_with("master"))
        .expect("another master");
    let other_replica = cluster.replica_of(other_master);

    cluster.nodes[other_replica].kill();
    let killed = Instant::now();
    while killed.elapsed() < t.lease * 2 {
        assert!(
            c[leader].is_leading(),
            "the leader stopped leading {:?} after another master's replica died:\n{}",
            killed.elapsed(),
            c[leader].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(token_of(&c[leader]), token, "the same term goes on");

    cluster.nodes[own_replica].kill();
    wait_stepped_down(&c[leader], t.lease + Duration::from_secs(3));
    // /leader answers 503 from safe-until on; the log line follows.
    wait_until(
        Duration::from_secs(5),
        "the leader logs its step-down (renew_failed)",
        || {
            step_downs(&c[leader])
                .iter()
                .any(|l| l.contains("renew_failed"))
        },
    );
    let quiet = Instant::now();
    while quiet.elapsed() < t.lease {
        let round = leader_round(&all);
        assert!(
            !round.contains(&Some(200)),
            "someone leads without the owner's replica: {round:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    cluster.nodes[own_replica].restart();
    wait_replica_synced(&cluster.nodes[own_replica], Duration::from_secs(20));
    let new = wait_for_leader(&all, PATIENCE);
    assert!(token_of(&c[new]) > token);

    assert_no_overlap(monitor, &c, "cluster min_replica_acks");
    for d in &c {
        assert_no_panic(d);
    }
}

// ---------------------------------------------------------------------------
// Latency
// ---------------------------------------------------------------------------

/// A candidate 70 ms away from Redis (each way), started after the delay
/// is on, acquires: its round trip (140 ms) is below retry_period / 2, so
/// connection set-up (connect, handshake, script load) must not eat the
/// budget of its operations. A warmed-up leader keeps leading at 100 ms.
#[test]
fn a_candidate_70ms_away_acquires() {
    let redis = RedisServer::start();
    let proxy = proxy::Proxy::start(redis.port());
    proxy.delay(Duration::from_millis(70));
    let t = Timing {
        lease: Duration::from_millis(2000),
        renew_deadline: Duration::from_millis(1500),
        retry: Duration::from_millis(300),
    };
    let cfg = ha_config("far", t, &format!("    urls: [\"{}\"]\n", proxy.url()));
    let d = Leaderd::start(&cfg, "far-0");
    let started = Instant::now();
    wait_until(PATIENCE, "the candidate 70 ms away leads", || {
        d.is_leading()
    });
    eprintln!("70 ms each way: leader {:?} after start", started.elapsed());
    let token = token_of(&d);

    // A second candidate behind the same delay follows, then takes over.
    let e = Leaderd::start(&cfg, "far-1");
    wait_until(PATIENCE, "the second candidate names the leader", || {
        e.status()["leader"] == "far-0"
    });
    proxy.delay(Duration::from_millis(100));
    let slower = Instant::now();
    while slower.elapsed() < t.lease * 2 {
        assert!(d.is_leading(), "lost the lease at 100 ms:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(token_of(&d), token);
    proxy.delay(Duration::from_millis(70));
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    wait_until(PATIENCE, "the second candidate takes over", || {
        e.is_leading()
    });
    assert!(token_of(&e) > token);
    for x in [&d, &e] {
        assert_no_panic(x);
    }
}

// ---------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------

#[test]
fn ha_configuration_errors_name_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("not-a-cert.pem");
    fs::write(&not_pem, "hello, I am no certificate\n").expect("write");
    let missing = dir.path().join("no-such-password-file");
    // A FIFO with no writer: opening it to read would wait for ever.
    let fifo = dir.path().join("ca-fifo");
    make_fifo(&fifo);
    let one = "redis://127.0.0.1:1";
    let sentinel =
        "    sentinel:\n      master_name: mymaster\n      urls: [\"redis://127.0.0.1:2\"]\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "sentinel-and-urls",
            format!("    urls: [\"{one}\"]\n{sentinel}"),
            "backend.redis.urls",
        ),
        (
            "cluster-and-sentinel",
            format!("{sentinel}    cluster: true\n"),
            "backend.redis.cluster",
        ),
        (
            "two-urls",
            format!("    urls: [\"{one}\", \"redis://127.0.0.1:3\"]\n"),
            "backend.redis.urls",
        ),
        (
            "four-urls",
            format!(
                "    urls: [\"{one}\", \"redis://127.0.0.1:3\", \"redis://127.0.0.1:4\", \"redis://127.0.0.1:5\"]\n"
            ),
            "backend.redis.urls",
        ),
        (
            "password-file-missing",
            format!(
                "    urls: [\"{one}\"]\n    password_file: \"{}\"\n",
                missing.display()
            ),
            "backend.redis.password_file",
        ),
        (
            // Never read (it would not end): refused as a device.
            "password-file-dev-zero",
            format!("    urls: [\"{one}\"]\n    password_file: /dev/zero\n"),
            "backend.redis.password_file",
        ),
        (
            "tls-ca-fifo",
            format!(
                "    urls: [\"rediss://127.0.0.1:1\"]\n    tls_ca_file: \"{}\"\n",
                fifo.display()
            ),
            "backend.redis.tls_ca_file",
        ),
        (
            "sentinel-password-file-missing",
            format!(
                "    sentinel:\n      master_name: mymaster\n      urls: [\"redis://127.0.0.1:2\"]\n      password_file: \"{}\"\n",
                missing.display()
            ),
            "backend.redis.sentinel.password_file",
        ),
        (
            "tls-ca-not-a-certificate",
            format!(
                "    urls: [\"rediss://127.0.0.1:1\"]\n    tls_ca_file: \"{}\"\n",
                not_pem.display()
            ),
            "backend.redis.tls_ca_file",
        ),
    ];
    let mut failures = Vec::new();
    for (what, redis, field) in &cases {
        let file = dir.path().join(format!("{what}.yaml"));
        fs::write(&file, ha_config("cfg-ha", FAST, redis)).expect("write config");
        let file_arg = file.display().to_string();
        for args in [
            vec!["run", "--config", &file_arg, "--listen", "127.0.0.1:0"],
            vec!["check", "--offline", "--config", &file_arg],
        ] {
            let out = run_leaderd(&args, Duration::from_secs(10));
            let stderr = String::from_utf8_lossy(&out.stderr);
            let ok = out.status.code() == Some(2)
                && stderr.contains(&format!("{what}.yaml"))
                && stderr.contains(&format!("{field}:"))
                && !stderr.contains("panicked");
            if !ok {
                failures.push(format!(
                    "{what} ({}): exit {:?}, expected 2 naming {field}:\n{stderr}",
                    args[0],
                    out.status.code()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
