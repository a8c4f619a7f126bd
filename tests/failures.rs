//! Failure scenarios: dead or frozen leaders, dead/frozen/wiped Redis,
//! foreign lock values. Safety claims are checked by polling, never by sleeps.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn token_of(d: &Leaderd) -> u64 {
    let st = d.status();
    st["fencing_token"]
        .as_u64()
        .unwrap_or_else(|| panic!("{} has no fencing_token: {st}", d.identity()))
}

#[test]
fn sigkilled_leader_is_replaced_only_after_its_lock_is_gone() {
    let redis = RedisServer::start();
    let cfg = config("sigkill", &redis.url());
    let c = start_candidates(&cfg, "sk", 3);
    let all: Vec<&Leaderd> = c.iter().collect();
    let old = wait_for_leader(&all, PATIENCE);
    let old_token = token_of(&c[old]);
    let old_value = redis
        .get(&lock_key("sigkill"))
        .expect("lock key set while leading");

    c[old].signal("KILL");
    let killed = Instant::now();
    assert!(c[old].wait_exit(Duration::from_secs(5)).is_some());

    let followers: Vec<&Leaderd> = c
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != old)
        .map(|(_, d)| d)
        .collect();
    let deadline = Instant::now() + PATIENCE;
    let new = loop {
        // Followers first, then the key: a 200 followed by the old value
        // still present means a follower led while the old lock existed.
        let round = leader_round(&followers);
        let value = redis.get(&lock_key("sigkill"));
        let leaders: Vec<usize> = (0..round.len())
            .filter(|i| round[*i] == Some(200))
            .collect();
        assert!(leaders.len() <= 1, "two followers lead at once: {round:?}");
        if let Some(&i) = leaders.first() {
            assert_ne!(
                value.as_deref(),
                Some(old_value.as_str()),
                "{} answered /leader 200 while the dead leader's lock was still in Redis",
                followers[i].identity()
            );
            break i;
        }
        assert!(Instant::now() < deadline, "nobody took over after SIGKILL");
    };
    let took = killed.elapsed();
    eprintln!("takeover after SIGKILL took {took:?}");
    let new_token = token_of(followers[new]);
    assert!(new_token > old_token, "{new_token} > {old_token}");
    let lock = lock_value(&redis, "sigkill").expect("new lock");
    assert_eq!(lock["holder"], followers[new].identity());
}

/// Polls the leader's /leader after a backend failure at `failed`. Panics if
/// it answers 200 to a request sent after `failed + LEASE`, and unless the
/// first 503 arrives before `failed + LEASE`. Returns when 503 was seen.
fn assert_steps_down_before_lease_expiry(d: &Leaderd, failed: Instant) -> Duration {
    let lease_end = failed + LEASE;
    let give_up = failed + PATIENCE;
    loop {
        let sent = Instant::now();
        let code = d.try_get("/leader", Duration::from_secs(1)).map(|r| r.0);
        let received = Instant::now();
        match code {
            Some(200) => assert!(
                sent < lease_end,
                "leader still answered /leader 200 {:?} after the backend failed (lease {LEASE:?})",
                sent - failed
            ),
            Some(503) => {
                assert!(
                    received < lease_end,
                    "first /leader 503 only {:?} after the backend failed; the lease ({LEASE:?}) may have expired on the server before step-down",
                    received - failed
                );
                return received - failed;
            }
            other => assert!(
                received < give_up,
                "/leader never went 503 after the backend failed (last answer {other:?})"
            ),
        }
    }
}

#[test]
fn redis_killed_while_leading_steps_down_before_lease_expiry() {
    let mut redis = RedisServer::start();
    let cfg = config("rkill", &redis.url());
    let a = Leaderd::start(&cfg, "rk-a");
    wait_until(PATIENCE, "rk-a leads", || a.is_leading());
    let t0 = token_of(&a);

    let failed = Instant::now();
    redis.kill();
    let after = assert_steps_down_before_lease_expiry(&a, failed);
    eprintln!("stepped down {after:?} after Redis died");

    wait_until(PATIENCE, "status reason renew_failed", || {
        let st = a.status();
        st["is_leader"] == false && st["reason"] == "renew_failed"
    });
    wait_until(PATIENCE, "/readyz 503 while Redis is down", || {
        a.get("/readyz").0 == 503
    });
    let m = a.metrics();
    assert!(
        metric_sum(
            &m,
            "leaderd_leadership_lost_total",
            &[("reason", "renew_failed")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric_sum(&m, "leaderd_backend_errors_total", &[]) >= 1.0,
        "{m}"
    );
    assert_eq!(metric_sum(&m, "leaderd_is_leader", &[]), 0.0, "{m}");
    let log = a.log();
    assert!(log.contains("stepped down"), "{log}");
    assert!(log.contains("backend unreachable"), "{log}");

    // Redis comes back empty (fence counter lost): leadership resumes with a
    // token greater than any seen before.
    redis.restart_empty();
    wait_until(PATIENCE, "rk-a leads again after Redis restart", || {
        a.is_leading()
    });
    let t1 = token_of(&a);
    assert!(t1 > t0, "token after Redis data loss {t1} must exceed {t0}");
    wait_until(PATIENCE, "/readyz 200 again", || a.get("/readyz").0 == 200);
    assert!(a.log().contains("backend reachable again"), "{}", a.log());
}

#[test]
fn redis_frozen_while_leading_steps_down_before_lease_expiry() {
    let redis = RedisServer::start();
    let cfg = config("rfreeze", &redis.url());
    let a = Leaderd::start(&cfg, "rf-a");
    wait_until(PATIENCE, "rf-a leads", || a.is_leading());
    let t0 = token_of(&a);

    let failed = Instant::now();
    redis.freeze();
    let after = assert_steps_down_before_lease_expiry(&a, failed);
    eprintln!("stepped down {after:?} after Redis froze");
    wait_until(PATIENCE, "status reason renew_failed", || {
        let st = a.status();
        st["is_leader"] == false && st["reason"] == "renew_failed"
    });
    // The daemon stays alive and healthy-ish while the backend hangs.
    assert!(a.wait_exit(Duration::ZERO).is_none());

    redis.thaw();
    wait_until(PATIENCE, "rf-a leads again after thaw", || a.is_leading());
    let t1 = token_of(&a);
    assert!(t1 > t0, "{t1} > {t0}");
}

#[test]
fn redis_restarted_empty_while_leading_loses_lock_and_token_keeps_growing() {
    let mut redis = RedisServer::start();
    let cfg = config("rwipe", &redis.url());
    let a = Leaderd::start(&cfg, "rw-a");
    wait_until(PATIENCE, "rw-a leads", || a.is_leading());
    let t0 = token_of(&a);

    redis.restart_empty();
    wait_until(PATIENCE, "leadership lost is counted", || {
        let m = a.metrics();
        metric_sum(
            &m,
            "leaderd_leadership_lost_total",
            &[("reason", "lock_lost")],
        ) + metric_sum(
            &m,
            "leaderd_leadership_lost_total",
            &[("reason", "renew_failed")],
        ) >= 1.0
    });
    assert!(a.log().contains("stepped down"));
    wait_until(PATIENCE, "rw-a leads again", || a.is_leading());
    let t1 = token_of(&a);
    assert!(
        t1 > t0,
        "after the fence counter was wiped the token went {t0} -> {t1}"
    );
    let lock = lock_value(&redis, "rwipe").expect("lock re-created");
    assert_eq!(lock["token"].as_u64(), Some(t1));
}

#[test]
fn redis_restarted_empty_any_next_leader_has_a_greater_token() {
    let mut redis = RedisServer::start();
    let cfg = config("rwipe2", &redis.url());
    let c = start_candidates(&cfg, "rw2", 2);
    let all: Vec<&Leaderd> = c.iter().collect();
    let l0 = wait_for_leader(&all, PATIENCE);
    let t0 = token_of(&c[l0]);
    // The follower has seen the leader's token (via the lock value).
    wait_until(PATIENCE, "follower observes the leader", || {
        c[1 - l0].status()["leader"] == c[l0].identity()
    });

    redis.restart_empty();
    // Wait for a *new* term (the lock is re-created with a fresh value).
    // (Overlap is checked by `redis_wipe_never_yields_two_leaders`.)
    let (l1, t1) = wait_for(PATIENCE, "a new term after the wipe", || {
        let lock = lock_value(&redis, "rwipe2")?;
        let t = lock["token"].as_u64()?;
        let i = c.iter().position(|d| d.identity() == lock["holder"])?;
        (t != t0 && c[i].is_leading()).then_some((i, t))
    });
    assert!(
        t1 > t0,
        "{} leads with token {t1} after wipe, previous leader had {t0}",
        c[l1].identity()
    );
}

#[test]
fn redis_wipe_never_yields_two_leaders() {
    // Redis loses its data (restart without persistence) while a leader's
    // lease is running. The follower sees no lock key, but the old leader
    // still believes in its lease until its next renewal fails: a follower
    // that acquires at once overlaps with it. At most one 200 per round.
    let mut redis = RedisServer::start();
    let cfg = config("wipeoverlap", &redis.url());
    let c = start_candidates(&cfg, "wo", 2);
    let all: Vec<&Leaderd> = c.iter().collect();
    let l0 = wait_for_leader(&all, PATIENCE);
    let t0 = token_of(&c[l0]);
    wait_until(PATIENCE, "follower observes the leader", || {
        c[1 - l0].status()["leader"] == c[l0].identity()
    });
    // Right after a renewal, so the old leader's lease has most of its time left.
    let renewals = |d: &Leaderd| renewals_ok(&d.metrics());
    let r0 = renewals(&c[l0]);
    wait_until(PATIENCE, "a renewal", || renewals(&c[l0]) > r0);

    redis.restart_empty();
    let mut overlaps = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let round = leader_round(&all);
        if round.iter().filter(|r| **r == Some(200)).count() > 1 {
            overlaps.push(round);
        }
        let settled = lock_value(&redis, "wipeoverlap")
            .and_then(|l| l["token"].as_u64())
            .is_some_and(|t| t != t0)
            && c.iter().all(|d| {
                d.try_status().is_some_and(|st| {
                    st["leader"] != c[l0].identity() || st["fencing_token"].as_u64() != Some(t0)
                })
            });
        if settled {
            break;
        }
        assert!(Instant::now() < deadline, "no new term after the wipe");
    }
    assert!(
        overlaps.is_empty(),
        "{} round(s) with two /leader 200 after Redis lost its data (e.g. {:?})",
        overlaps.len(),
        overlaps[0]
    );
}

#[test]
fn frozen_leader_is_replaced_and_never_overlaps_after_thaw() {
    let redis = RedisServer::start();
    let cfg = config("lfreeze", &redis.url());
    let c = start_candidates(&cfg, "lf", 3);
    let all: Vec<&Leaderd> = c.iter().collect();
    let old = wait_for_leader(&all, PATIENCE);
    let old_token = token_of(&c[old]);
    let old_value = redis.get(&lock_key("lfreeze")).expect("lock set");

    c[old].signal("STOP");
    let frozen = Instant::now();
    // Rounds over all candidates concurrently; the frozen one never answers.
    let deadline = frozen + PATIENCE;
    let new = loop {
        let round = leader_round(&all);
        let value = redis.get(&lock_key("lfreeze"));
        let leaders: Vec<usize> = (0..3).filter(|i| round[*i] == Some(200)).collect();
        assert!(leaders.len() <= 1, "two leaders in one round: {round:?}");
        if let Some(&i) = leaders.first()
            && i != old
        {
            assert_ne!(
                value.as_deref(),
                Some(old_value.as_str()),
                "{} leads while the frozen leader's lock is still in Redis",
                c[i].identity()
            );
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "nobody replaced the frozen leader"
        );
    };
    eprintln!("replaced frozen leader after {:?}", frozen.elapsed());
    let new_id = c[new].identity().to_string();
    assert!(token_of(&c[new]) > old_token);

    c[old].signal("CONT");
    let next = c[old]
        .try_get("/leader", Duration::from_secs(5))
        .map(|r| r.0);
    assert_eq!(
        next,
        Some(503),
        "thawed old leader must not claim leadership"
    );
    // Keep watching until the old leader has caught up with the new one.
    wait_until(PATIENCE, "thawed leader observes the new leader", || {
        let round = leader_round(&all);
        let leaders = round.iter().filter(|r| **r == Some(200)).count();
        assert!(
            leaders <= 1,
            "two leaders in one round after thaw: {round:?}"
        );
        assert_ne!(round[old], Some(200), "thawed leader answered 200");
        c[old]
            .try_status()
            .is_some_and(|st| st["leader"] == new_id.as_str() && st["is_leader"] == false)
    });
    for _ in 0..10 {
        let round = leader_round(&all);
        assert_eq!(
            round.iter().filter(|r| **r == Some(200)).count(),
            1,
            "{round:?}"
        );
        assert_eq!(round[new], Some(200));
    }
    assert!(c[old].metric("leaderd_leadership_lost_total") >= 1.0);
}

#[test]
fn redis_down_at_start_then_up() {
    let port = free_port();
    let cfg = config("late", &format!("redis://127.0.0.1:{port}"));
    let a = Leaderd::start(&cfg, "late-a");
    assert_eq!(a.get("/healthz").0, 200);
    let (code, body) = a.get("/readyz");
    assert_eq!(code, 503, "/readyz with Redis down: {body}");
    let st = a.status();
    assert_eq!(st["ready"], false, "{st}");
    assert_eq!(st["is_leader"], false, "{st}");
    assert_ne!(a.leader_code(), Some(200));
    wait_until(PATIENCE, "backend_error is reported", || {
        !a.status()["backend_error"].is_null()
    });

    let redis = RedisServer::start_on(port);
    wait_until(PATIENCE, "/readyz 200 once Redis is up", || {
        a.get("/readyz").0 == 200
    });
    wait_until(PATIENCE, "late-a leads", || a.is_leading());
    let st = a.status();
    assert_eq!(st["ready"], true);
    assert!(st["backend_error"].is_null(), "{st}");
    let lock = lock_value(&redis, "late").expect("lock set");
    assert_eq!(lock["holder"], "late-a");
}

/// A foreign value in the lock key: nobody leads, nobody touches it, it is
/// counted; once the operator deletes it, election proceeds.
fn foreign_lock_scenario(
    name: &str,
    plant: &[&[&str]],
    noticed: impl Fn(&Leaderd) -> bool,
    check_untouched: impl Fn(&RedisServer),
) {
    let redis = RedisServer::start();
    for cmd in plant {
        redis.cmd(cmd);
    }
    check_untouched(&redis);
    let cfg = config(name, &redis.url());
    let c = start_candidates(&cfg, name, 2);
    let all: Vec<&Leaderd> = c.iter().collect();

    wait_until(PATIENCE, "every candidate noticed the foreign lock", || {
        c.iter().all(&noticed)
    });
    // Watch for a few leases: no leader, key untouched (value, type, no TTL).
    let until = Instant::now() + LEASE * 2;
    while Instant::now() < until {
        let round = leader_round(&all);
        assert!(
            round.iter().all(|r| *r != Some(200)),
            "someone leads over a foreign lock value: {round:?}"
        );
        check_untouched(&redis);
    }
    for d in &c {
        assert_eq!(d.status()["is_leader"], false);
        assert!(d.wait_exit(Duration::ZERO).is_none(), "daemon died");
    }

    redis.cmd(&["DEL", &lock_key(name)]);
    let l = wait_for_leader(&all, PATIENCE);
    let lock = lock_value(&redis, name).expect("lock set");
    assert_eq!(lock["holder"], c[l].identity());
}

fn counted(d: &Leaderd) -> bool {
    d.metric("leaderd_foreign_lock_value_total") > 0.0
}

#[test]
fn foreign_string_lock_value_is_never_touched() {
    let key = lock_key("foreign");
    foreign_lock_scenario("foreign", &[&["SET", &key, "garbage"]], counted, |r| {
        assert_eq!(r.get(&key).as_deref(), Some("garbage"), "value changed");
        assert_eq!(r.cmd(&["PTTL", &key]), "-1", "a TTL was set");
    });
}

#[test]
fn foreign_json_lock_value_without_ttl_is_never_touched() {
    // Looks like ours, but was not written by any of these candidates.
    let key = lock_key("foreignjson");
    let v = r#"{"holder":"someone-else","token":999,"term":"00000000000000000000000000000000","acquired_at":"2020-01-01T00:00:00Z"}"#;
    // Either counted as foreign or shown as held by "someone-else".
    let noticed = |d: &Leaderd| counted(d) || d.status()["leader"] == "someone-else";
    foreign_lock_scenario("foreignjson", &[&["SET", &key, v]], noticed, |r| {
        assert_eq!(r.get(&key).as_deref(), Some(v), "value changed");
        assert_eq!(r.cmd(&["PTTL", &key]), "-1", "a TTL was set");
    });
}

#[test]
fn foreign_hash_lock_value_is_never_touched() {
    let key = lock_key("foreignhash");
    foreign_lock_scenario(
        "foreignhash",
        &[&["HSET", &key, "owner", "other"]],
        counted,
        |r| {
            assert_eq!(r.cmd(&["TYPE", &key]), "hash", "key type changed");
            assert_eq!(r.cmd(&["HGET", &key, "owner"]), "other", "hash changed");
            assert_eq!(r.cmd(&["HLEN", &key]), "1", "hash changed");
            assert_eq!(r.cmd(&["PTTL", &key]), "-1", "a TTL was set");
        },
    );
}

/// A log reader that stops reading (Docker's blocking log mode, a stuck
/// collector, a full pipe) must not freeze the election: leaderd writes its
/// log from a thread of its own and drops lines it cannot hand on. Here its
/// stderr is a pipe shrunk to one page and filled before leaderd starts, so
/// that its very first log line would block it for good.
#[test]
fn a_stalled_stderr_never_freezes_the_election() {
    use std::io::Write;
    use std::os::fd::{FromRawFd, OwnedFd};

    let redis = RedisServer::start();
    let cfg = config("stalledlog", &redis.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("leaderd.yaml");
    std::fs::write(&config_path, &cfg).expect("write config");

    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) writes two fds into the array we own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: the fds were just returned by pipe(2) and are owned here only.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on an fd we own.
    let size = unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 4096) };
    assert!(size > 0, "F_SETPIPE_SZ");
    let mut filler = std::fs::File::from(write_end.try_clone().expect("dup"));
    // SAFETY: as above; non-blocking so that filling stops when full.
    unsafe { libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK) };
    let chunk = [b'#'; 512];
    let mut filled = 0;
    while filler.write(&chunk).is_ok_and(|n| n > 0) {
        filled += 1;
        assert!(filled < 10_000, "the pipe never filled");
    }
    // leaderd gets a blocking write end, as a real stderr would be.
    // SAFETY: as above.
    unsafe { libc::fcntl(fds[1], libc::F_SETFL, 0) };

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut a = leaderd_command()
        .args(["run", "--config"])
        .arg(&config_path)
        .args(["--listen", &addr, "--identity", "a"])
        .env("LEADERD_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(write_end))
        .spawn()
        .expect("spawn leaderd");
    let leads = |addr: &str| {
        http_get(addr, "/leader", Duration::from_secs(1)).is_some_and(|(code, _)| code == 200)
    };
    wait_until(PATIENCE, "a leads with its stderr stalled", || leads(&addr));
    // It keeps renewing (the lease outlives several lease durations).
    let first = http_get(&addr, "/status", Duration::from_secs(1)).expect("status");
    let token = serde_json::from_str::<serde_json::Value>(&first.1).expect("json")["fencing_token"]
        .as_u64();
    let until = Instant::now() + LEASE * 3;
    while Instant::now() < until {
        assert!(leads(&addr), "a lost its lease with its stderr stalled");
        std::thread::sleep(Duration::from_millis(100));
    }
    let b = Leaderd::start(&cfg, "b");
    wait_until(PATIENCE, "b sees a", || b.status()["leader"] == "a");
    let now = http_get(&addr, "/status", Duration::from_secs(1)).expect("status");
    let same =
        serde_json::from_str::<serde_json::Value>(&now.1).expect("json")["fencing_token"].as_u64();
    assert_eq!(token, same, "a's term changed");

    // A graceful stop still hands over at once and exits 0.
    send_signal(a.id(), "TERM");
    wait_until(PATIENCE, "b leads after a's SIGTERM", || b.is_leading());
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = a.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = a.kill();
            let _ = a.wait();
            panic!("a did not exit after SIGTERM with its stderr stalled");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "a's exit");
    drop(read_end);
}
