//! A Redis that lost its data (FLUSHALL, a restart without persistence, a
//! failover to a replica that never had the keys) must neither hand the
//! lease to a candidate that never saw the old one while the old leader may
//! still act, nor hand out a token smaller than one it handed out before.
//! Also: the other ways the scripts could touch keys leaderd did not write,
//! and a full Redis; and a lock deleted alone under its live holder.

#[path = "support/procs.rs"]
mod procs;
mod support;

use procs::{ProcessWatcher, recording_command};
use support::*;

fn token_of(d: &Leaderd) -> u64 {
    let st = d.status();
    st["fencing_token"]
        .as_u64()
        .unwrap_or_else(|| panic!("{} has no fencing_token: {st}", d.identity()))
}

fn with_process(name: &str, redis: &RedisServer, watcher: &ProcessWatcher) -> String {
    format!(
        "{}leader_process:\n  command: {}\n  grace_period: 200ms\n",
        config(name, &redis.url()),
        recording_command(watcher.file())
    )
}

#[test]
fn a_candidate_started_after_a_flush_never_overlaps_the_old_leader_and_gets_a_greater_token() {
    let redis = RedisServer::start();
    let name = "flushed";
    let dir = tempfile::tempdir().expect("tempdir");
    let watcher = ProcessWatcher::start(&dir.path().join("pids"));
    // Forty-one terms already happened.
    redis.cmd(&["SET", &fence_key(name), "41"]);
    let cfg = with_process(name, &redis, &watcher);
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    assert_eq!(token_of(&a), 42);
    wait_until(PATIENCE, "a's leader process runs", || {
        watcher.running_of("a").len() == 2
    });

    // a is frozen (it cannot notice anything), the store forgets
    // everything, and a candidate that never saw the lease joins at once.
    a.signal("STOP");
    redis.cmd(&["FLUSHALL"]);
    let c = Leaderd::start(&cfg, "c");
    wait_until(PATIENCE, "c leads", || c.is_leading());
    let token = token_of(&c);
    assert!(
        token > 42,
        "c leads with token {token} after the flush; 42 was handed out before"
    );
    wait_until(PATIENCE, "c's leader process runs", || {
        watcher.running_of("c").len() == 2
    });
    watcher.assert_no_overlap();
    assert!(
        c.log().contains("no fencing counter"),
        "c did not say why the store made it wait:\n{}",
        c.log()
    );
    a.signal("CONT");
    wait_until(PATIENCE, "a follows c", || {
        a.try_status().is_some_and(|s| s["leader"] == "c")
    });
    watcher.assert_no_overlap();
}

#[test]
fn tokens_keep_growing_when_redis_restarts_empty_and_every_candidate_is_new() {
    let mut redis = RedisServer::start();
    let name = "amnesia";
    redis.cmd(&["SET", &fence_key(name), "41"]);
    let cfg = config(name, &redis.url());
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    assert_eq!(token_of(&a), 42);
    a.signal("TERM");
    assert_eq!(a.wait_exit(PATIENCE), Some(0), "{}", a.log());

    // Nobody who saw token 42 is left, and Redis forgot it too.
    redis.restart_empty();
    let b = Leaderd::start(&cfg, "b");
    wait_until(PATIENCE, "b leads", || b.is_leading());
    let token = token_of(&b);
    assert!(token > 42, "b got token {token} after 42 was handed out");
}

#[test]
fn a_restart_under_the_same_identity_waits_for_its_old_lease_without_a_duplicate_warning() {
    let redis = RedisServer::start();
    let cfg = config("restarted", &redis.url());
    let first = Leaderd::start(&cfg, "node-1");
    wait_until(PATIENCE, "node-1 leads", || first.is_leading());
    first.kill();
    // The same candidate, restarted by its supervisor.
    let second = Leaderd::start(&cfg, "node-1");
    wait_until(PATIENCE, "node-1 leads again", || second.is_leading());
    let log = second.log();
    assert!(
        !log.contains("another candidate leads under this same identity"),
        "its own previous lease was taken for a duplicate:\n{log}"
    );
    assert!(
        log.contains("previous run"),
        "the wait for the old lease is not explained:\n{log}"
    );

    // A real duplicate (one that keeps renewing) is still reported.
    let duplicate = Leaderd::start(&cfg, "node-1");
    wait_until(PATIENCE, "the duplicate is reported", || {
        duplicate
            .log()
            .contains("another candidate leads under this same identity")
    });
}

#[test]
fn a_full_redis_is_reported_as_full_and_the_election_recovers() {
    let redis = RedisServer::start();
    let name = "full";
    // Fill Redis to its limit with something that cannot be evicted.
    redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let used: u64 = redis
        .cmd(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    redis.cmd(&["CONFIG", "SET", "maxmemory", &(used + 200_000).to_string()]);
    let blob = "x".repeat(50_000);
    for i in 0..100 {
        if redis.cmd(&["SET", &format!("ballast:{i}"), &blob]) != "OK" {
            break;
        }
    }
    let a = Leaderd::start(&config(name, &redis.url()), "a");
    wait_until(PATIENCE, "the daemon says Redis is full", || {
        a.log().contains("maxmemory")
    });
    assert!(!a.is_leading());
    assert!(
        !a.log().contains("did not write"),
        "a full Redis was reported as foreign data:\n{}",
        a.log()
    );
    assert!(
        metric_sum(&a.metrics(), "leaderd_store_full_total", &[]) >= 1.0,
        "not counted"
    );
    // Room again: the election goes on by itself.
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_until(PATIENCE, "a leads once Redis has room", || a.is_leading());
}

#[test]
fn a_foreign_released_marker_is_left_alone() {
    let redis = RedisServer::start();
    let name = "foreignreleased";
    let released = format!("leaderd:{{{name}}}:released");
    redis.cmd(&["SET", &released, "operator's note"]);
    let a = Leaderd::start(&config(name, &redis.url()), "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    a.signal("TERM");
    assert_eq!(a.wait_exit(PATIENCE), Some(0), "{}", a.log());
    assert_eq!(
        redis.get(&released).as_deref(),
        Some("operator's note"),
        "release overwrote a key leaderd did not write"
    );
    assert_eq!(
        redis.get(&lock_key(name)),
        None,
        "the lease was not released"
    );
    assert!(a.log().contains("did not write"), "{}", a.log());
}

#[test]
fn a_foreign_fence_counter_is_left_alone() {
    let redis = RedisServer::start();
    let name = "foreignfence";
    redis.cmd(&["SET", &fence_key(name), "not a number"]);
    let a = Leaderd::start(&config(name, &redis.url()), "a");
    wait_until(PATIENCE, "the foreign counter is reported", || {
        a.log().contains("did not write") || a.log().contains("not a fencing counter")
    });
    assert!(!a.is_leading());
    assert_eq!(redis.get(&fence_key(name)).as_deref(), Some("not a number"));
}

/// Only the lock key lost, under a live holder (an operator's DEL, eviction
/// under an allkeys policy, a failover that lost the last write): the
/// fencing counter survives, so there is no quarantine, and a candidate that
/// just started never saw the holder. The term key (the lock value again,
/// with its TTL) keeps the lease held until the old term could have ended.
/// Found by an attacker's review: the leader processes overlapped ~1 s.
#[test]
fn a_fresh_candidate_does_not_take_a_lease_that_vanished_under_its_holder() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let watcher = ProcessWatcher::start(&dir.path().join("pids"));
    let cfg = format!(
        "{}leader_process:\n  command: {}\n  grace_period: 200ms\n",
        config_with(
            "vanished",
            &redis.url(),
            std::time::Duration::from_secs(3),
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(1),
        ),
        recording_command(watcher.file())
    );
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    wait_until(PATIENCE, "a's leader process runs", || {
        watcher.running_of("a").len() == 2
    });
    redis.cmd(&["DEL", &lock_key("vanished")]);
    let b = Leaderd::start(&cfg, "b");
    wait_until(PATIENCE, "someone leads again", || {
        b.is_leading() || a.is_leading()
    });
    wait_until(
        PATIENCE,
        "the first term's processes are gone or b's run",
        || watcher.running_of("a").is_empty() || watcher.running_of("b").len() == 2,
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    watcher.assert_no_overlap();
}
