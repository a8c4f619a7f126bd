//! Election scenarios with healthy processes: one leader, graceful handover,
//! misconfigured duplicate identities.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn three_candidates_elect_exactly_one_leader_and_agree() {
    let redis = RedisServer::start();
    let cfg = config("trio", &redis.url());
    let c = start_candidates(&cfg, "trio", 3);
    let all: Vec<&Leaderd> = c.iter().collect();

    let leader = wait_for_leader(&all, PATIENCE);
    let leader_id = c[leader].identity().to_string();

    // Every candidate ends up naming the same leader.
    wait_until(PATIENCE, "all three /status agree on the leader", || {
        c.iter().all(|d| d.status()["leader"] == leader_id.as_str())
    });
    let round = leader_round(&all);
    assert_eq!(
        round.iter().filter(|r| **r == Some(200)).count(),
        1,
        "exactly one /leader 200 expected, got {round:?}"
    );
    assert_eq!(round[leader], Some(200));
    for (i, code) in round.iter().enumerate() {
        if i != leader {
            assert_eq!(*code, Some(503), "follower {} /leader", c[i].identity());
        }
    }

    let st = c[leader].status();
    assert_eq!(st["is_leader"], true);
    assert_eq!(st["identity"], leader_id.as_str());
    assert_eq!(st["reason"], "acquired");
    let token = st["fencing_token"]
        .as_u64()
        .unwrap_or_else(|| panic!("leader has no fencing_token: {st}"));
    assert!(token >= 1);
    for (i, d) in c.iter().enumerate() {
        if i != leader {
            let s = d.status();
            assert_eq!(s["is_leader"], false, "{s}");
            assert_eq!(s["leader"], leader_id.as_str(), "{s}");
        }
    }

    // The lock key is the contract's JSON and agrees with the leader.
    let lock = lock_value(&redis, "trio").expect("lock key is set while someone leads");
    assert_eq!(lock["holder"], leader_id.as_str(), "{lock}");
    assert_eq!(lock["token"].as_u64(), Some(token), "{lock}");
    let term = lock["term"].as_str().expect("term is a string");
    assert_eq!(term.len(), 32, "term must be 32 hex chars: {term}");
    assert!(term.chars().all(|ch| ch.is_ascii_hexdigit()), "{term}");
    assert!(lock["acquired_at"].is_string(), "{lock}");
    let ttl: i64 = redis
        .cmd(&["PTTL", &lock_key("trio")])
        .parse()
        .expect("PTTL is an integer");
    assert!(
        ttl > 0 && ttl <= LEASE.as_millis() as i64,
        "lock TTL {ttl}ms must be within the lease"
    );
    assert_eq!(
        redis.cmd(&["GET", &fence_key("trio")]),
        token.to_string(),
        "fence counter holds the last token minted"
    );
    assert!(c[leader].log().contains("became leader"));
}

#[test]
fn sigterm_hands_leadership_over_with_a_greater_token() {
    let redis = RedisServer::start();
    let cfg = config("handover", &redis.url());
    let c = start_candidates(&cfg, "ho", 3);
    let all: Vec<&Leaderd> = c.iter().collect();

    let old = wait_for_leader(&all, PATIENCE);
    let old_token = c[old].status()["fencing_token"]
        .as_u64()
        .expect("leader has a fencing_token");

    let sent = Instant::now();
    c[old].signal("TERM");
    assert_eq!(
        c[old].wait_exit(Duration::from_secs(10)),
        Some(0),
        "leader must exit 0 after SIGTERM; log:\n{}",
        c[old].log()
    );
    let old_log = c[old].log();
    assert!(
        old_log.contains("stepped down"),
        "old leader logs its step-down:\n{old_log}"
    );

    let rest: Vec<&Leaderd> = c
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != old)
        .map(|(_, d)| d)
        .collect();
    let new = wait_for_leader(&rest, PATIENCE);
    let took = sent.elapsed();
    let st = rest[new].status();
    let new_token = st["fencing_token"]
        .as_u64()
        .expect("new leader has a token");
    assert!(
        new_token > old_token,
        "new token {new_token} must be greater than {old_token}"
    );
    let lock = lock_value(&redis, "handover").expect("new leader holds the lock");
    assert_eq!(lock["holder"], rest[new].identity(), "{lock}");
    assert_eq!(lock["token"].as_u64(), Some(new_token), "{lock}");
    assert!(rest[new].log().contains("became leader"));
    // A released lock is taken over without waiting for the lease to
    // expire; allow generous slack for a loaded machine.
    eprintln!("handover took {took:?}");
    assert!(
        took < LEASE * 3,
        "handover after release took {took:?} (lease {LEASE:?})"
    );
}

#[test]
fn sigterm_to_a_follower_exits_zero_and_leader_keeps_leading() {
    let redis = RedisServer::start();
    let cfg = config("fexit", &redis.url());
    let c = start_candidates(&cfg, "fx", 2);
    let all: Vec<&Leaderd> = c.iter().collect();
    let leader = wait_for_leader(&all, PATIENCE);
    let follower = 1 - leader;
    let token = c[leader].status()["fencing_token"].as_u64();

    c[follower].signal("TERM");
    assert_eq!(c[follower].wait_exit(Duration::from_secs(10)), Some(0));
    assert!(c[leader].is_leading());
    assert_eq!(c[leader].status()["fencing_token"].as_u64(), token);
    let lock = lock_value(&redis, "fexit").expect("lock still held");
    assert_eq!(lock["holder"], c[leader].identity());
}

#[test]
fn duplicate_identity_does_not_make_two_leaders() {
    let redis = RedisServer::start();
    let cfg = config("twins", &redis.url());
    let a = Leaderd::start(&cfg, "twin");
    wait_until(PATIENCE, "first twin leads", || a.is_leading());
    let token = a.status()["fencing_token"].as_u64();

    let b = Leaderd::start(&cfg, "twin");
    let both = [&a, &b];
    // B must come to know there is a leader (itself by name, but not its term).
    wait_until(PATIENCE, "second twin observes a leader", || {
        b.status()["leader"] == "twin"
    });
    // Watch several lease periods: renewals by one must never make the other
    // a leader too.
    let until = Instant::now() + LEASE * 3;
    let mut a_led = 0;
    while Instant::now() < until {
        let round = leader_round(&both);
        assert!(
            round.iter().filter(|r| **r == Some(200)).count() <= 1,
            "both processes with identity 'twin' lead: {round:?}"
        );
        assert_ne!(round[1], Some(200), "second twin took over a live lease");
        if round[0] == Some(200) {
            a_led += 1;
        }
    }
    assert!(a_led > 0, "first twin should keep leading");
    assert_eq!(b.status()["is_leader"], false);
    assert_eq!(a.status()["fencing_token"].as_u64(), token);
}

#[test]
fn release_never_deletes_someone_elses_lock() {
    let redis = RedisServer::start();
    let cfg = config("norelease", &redis.url());
    let a = Leaderd::start(&cfg, "nr-a");
    wait_until(PATIENCE, "nr-a leads", || a.is_leading());

    // Someone else's value replaces ours (e.g. an operator or a split brain).
    let key = lock_key("norelease");
    redis.cmd(&["SET", &key, "not-yours", "PX", "60000"]);
    a.signal("TERM");
    assert_eq!(a.wait_exit(Duration::from_secs(10)), Some(0), "{}", a.log());
    assert_eq!(
        redis.get(&key).as_deref(),
        Some("not-yours"),
        "release must only delete the lock if the value is ours"
    );
}

#[test]
fn acquire_and_release_are_published() {
    let redis = RedisServer::start();
    let mut sub = redis.subscribe(&events_channel("pubsub"));
    let cfg = config("pubsub", &redis.url());
    let a = Leaderd::start(&cfg, "ps-a");
    wait_until(PATIENCE, "ps-a leads", || a.is_leading());
    let acquired = sub.next_message(PATIENCE);
    assert!(acquired.is_some(), "no message published on acquire");
    eprintln!("acquire notice: {acquired:?}");

    a.signal("TERM");
    assert_eq!(a.wait_exit(Duration::from_secs(10)), Some(0));
    let released = sub.next_message(PATIENCE);
    assert!(released.is_some(), "no message published on release");
    eprintln!("release notice: {released:?}");
    assert_eq!(redis.get(&lock_key("pubsub")), None, "own lock deleted");
}
