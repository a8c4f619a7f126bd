//! Leadership follows health and priority: an unhealthy leader hands over
//! to a healthy candidate (but never leaves the election leaderless), a
//! hung probe never delays a renewal, a flapping pair cannot ping-pong, and
//! the preferred candidate leads — when the lease is free, or, with
//! `preempt`, by taking over after `preempt_delay`. Real processes, real
//! shell probes.

#[path = "support/proxy.rs"]
mod proxy;
mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use proxy::Proxy;
use support::*;

/// A probe that fails while `flag` exists.
fn probe_failing_while(flag: &Path) -> String {
    format!(
        "health:\n  exec: [\"sh\", \"-c\", \"test ! -e {}\"]\n  period: 100ms\n  timeout: 100ms\n  failure_threshold: 2\n  success_threshold: 1\n",
        flag.display()
    )
}

fn with(name: &str, redis: &RedisServer, extra: &str) -> String {
    format!("{}{extra}", config(name, &redis.url()))
}

fn lost(d: &Leaderd, reason: &str) -> f64 {
    metric_sum(
        &d.metrics(),
        "leaderd_leadership_lost_total",
        &[("reason", reason)],
    )
}

fn acquired(d: &Leaderd) -> f64 {
    d.metric("leaderd_leadership_acquired_total")
}

#[test]
fn an_unhealthy_leader_hands_over_to_a_healthy_candidate() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let reasons = dir.path().join("reasons");
    let hook = format!(
        "hooks:\n  stopped_leading: [\"sh\", \"-c\", \"echo $LEADERD_REASON >> {}\"]\n  timeout: 100ms\n",
        reasons.display()
    );
    let flags = [dir.path().join("a-sick"), dir.path().join("b-sick")];
    let a = Leaderd::start(
        &with(
            "sick",
            &redis,
            &format!("{}{hook}", probe_failing_while(&flags[0])),
        ),
        "a",
    );
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let b = Leaderd::start(
        &with(
            "sick",
            &redis,
            &format!("{}{hook}", probe_failing_while(&flags[1])),
        ),
        "b",
    );
    wait_until(PATIENCE, "b is listed healthy", || {
        a.try_status().is_some_and(|s| {
            s["candidates"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["identity"] == "b" && c["healthy"] == true)
            })
        })
    });

    fs::write(&flags[0], "").expect("make a sick");
    wait_until(PATIENCE, "b leads", || b.is_leading());
    assert!(!a.is_leading());
    assert_eq!(lost(&a, "unhealthy"), 1.0);
    wait_until(PATIENCE, "stopped_leading got reason unhealthy", || {
        fs::read_to_string(&reasons).is_ok_and(|r| r.contains("unhealthy"))
    });
    let status = a.status();
    assert_eq!(status["healthy"], false, "{status}");
    assert_eq!(a.metric("leaderd_healthy"), 0.0);
    assert!(
        metric_sum(
            &a.metrics(),
            "leaderd_health_checks_total",
            &[("result", "failed")]
        ) >= 2.0
    );
}

#[test]
fn when_every_candidate_is_unhealthy_the_leader_stays_and_says_so() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("all-sick");
    let cfg = with("allsick", &redis, &probe_failing_while(&flag));
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let b = Leaderd::start(&cfg, "b");
    wait_until(PATIENCE, "b follows", || {
        b.try_status().is_some_and(|s| s["leader"] == "a")
    });
    fs::write(&flag, "").expect("make everyone sick");
    // The probes fail at slightly different instants: a may have handed
    // over to b while b still looked healthy. Then whoever leads stays.
    let group = [&a, &b];
    let leader = wait_for(
        PATIENCE,
        "the leader reports leading while unhealthy",
        || {
            group.iter().copied().find(|d| {
                d.try_status().is_some_and(|s| {
                    s["is_leader"] == true
                        && s["leading_unhealthy"] == true
                        && s["healthy"] == false
                })
            })
        },
    );
    let terms = acquired(&a) + acquired(&b);
    // Nobody to hand over to: it keeps leading.
    std::thread::sleep(LEASE * 2);
    assert!(leader.is_leading());
    assert_eq!(
        acquired(&a) + acquired(&b),
        terms,
        "a hand-over to an unhealthy candidate"
    );
    assert!(
        leader
            .log()
            .contains("leading although the health probe fails"),
        "{}",
        leader.log()
    );
    // Health returns: the report goes away.
    fs::remove_file(&flag).expect("heal");
    wait_until(PATIENCE, "the leader no longer reports it", || {
        leader
            .try_status()
            .is_some_and(|s| s["leading_unhealthy"] == false && s["healthy"] == true)
    });
    assert!(leader.is_leading());
}

#[test]
fn a_hanging_probe_never_delays_a_renewal() {
    let redis = RedisServer::start();
    let cfg = with(
        "hang",
        &redis,
        "health:\n  exec: [\"sleep\", \"600\"]\n  period: 200ms\n  timeout: 200ms\n",
    );
    let a = Leaderd::start(&cfg, "a");
    // Unhealthy from its first probe, but nobody else stands: it leads.
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let before = renewals_ok(&a.metrics());
    std::thread::sleep(LEASE * 2);
    let m = a.metrics();
    let renewed = renewals_ok(&m) - before;
    // Two leases of renewals every retry_period (150 ms): about 13.
    assert!(
        renewed >= 8.0,
        "only {renewed} renewals while the probe hangs"
    );
    assert_eq!(
        metric_sum(&m, "leaderd_renewals_total", &[("result", "error")]),
        0.0
    );
    assert_eq!(a.metric("leaderd_leadership_lost_total"), 0.0);
    assert!(metric_sum(&m, "leaderd_health_checks_total", &[("result", "timeout")]) >= 3.0);
}

#[test]
fn a_flapping_pair_does_not_ping_pong() {
    let redis = RedisServer::start();
    // Both probes flap together: healthy for 250 ms, unhealthy for 250 ms.
    let cfg = with(
        "flap",
        &redis,
        "health:\n  exec: [\"sh\", \"-c\", \"[ $(( $(date +%s%N) / 250000000 % 2 )) -eq 0 ]\"]\n  period: 50ms\n  timeout: 50ms\n  failure_threshold: 1\n  success_threshold: 1\n  unhealthy_backoff: 3s\n",
    );
    let a = Leaderd::start(&cfg, "a");
    let b = Leaderd::start(&cfg, "b");
    wait_for_leader(&[&a, &b], PATIENCE);
    let terms_before = acquired(&a) + acquired(&b);
    std::thread::sleep(Duration::from_secs(6));
    let terms = acquired(&a) + acquired(&b) - terms_before;
    // Without the backoff every flap would hand over (about 12 in 6 s);
    // with it, a candidate that handed over cannot be handed back to for
    // 3 s.
    assert!(terms <= 4.0, "{terms} terms in 6 s: ping-pong");
}

#[test]
fn the_preferred_candidate_takes_a_free_lease() {
    let redis = RedisServer::start();
    // The preferred candidate reaches Redis through a proxy that, once all
    // stand, delays it by 20 ms each way: it would lose the race for a free
    // lease to low-1 on speed alone, so only the hold-back makes it win.
    let proxy = Proxy::start(redis.port());
    let low = with("prio", &redis, "");
    let high = low
        .replace("  name: prio\n", "  name: prio\n  priority: 10\n")
        .replace(&redis.url(), &proxy.url());
    let first = Leaderd::start(&low, "low-0");
    wait_until(PATIENCE, "low-0 leads", || first.is_leading());
    // The preferred candidate joins late: without preempt it waits.
    let preferred = Leaderd::start(&high, "high");
    let other = Leaderd::start(&low, "low-1");
    wait_until(PATIENCE, "everyone is listed", || {
        first
            .try_status()
            .is_some_and(|s| s["candidates"].as_array().is_some_and(|c| c.len() == 3))
    });
    std::thread::sleep(LEASE * 2);
    assert!(
        first.is_leading(),
        "without preempt, priority must not take over"
    );
    proxy.delay(Duration::from_millis(20));
    // Each time the lease is free, the preferred one takes it.
    first.signal("TERM");
    assert_eq!(first.wait_exit(PATIENCE), Some(0));
    wait_until(PATIENCE, "the preferred candidate leads", || {
        preferred.is_leading()
    });
    assert!(!other.is_leading());
    assert_eq!(
        preferred.status()["candidates"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["identity"] == "high"))
            .map(|c| c["priority"].clone()),
        Some(serde_json::json!(10))
    );
    assert_eq!(
        metric_sum(
            &preferred.metrics(),
            "leaderd_candidate_priority",
            &[("candidate", "high")]
        ),
        10.0
    );
}

#[test]
fn with_preempt_the_preferred_candidate_takes_over_after_the_delay() {
    let redis = RedisServer::start();
    let low = with("preempt", &redis, "").replace(
        "  name: preempt\n",
        "  name: preempt\n  preempt: true\n  preempt_delay: 1s\n",
    );
    let high = low.replace("  preempt: true\n", "  preempt: true\n  priority: 5\n");
    let a = Leaderd::start(&low, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let b = Leaderd::start(&high, "b");
    wait_until(PATIENCE, "b takes over", || b.is_leading());
    assert_eq!(lost(&a, "preempted"), 1.0);
    // And it stays there.
    std::thread::sleep(LEASE * 2);
    assert!(b.is_leading());
}

#[test]
fn a_bad_health_section_names_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    for (section, field) in [
        ("health:\n  period: 1s\n", "health.exec"),
        ("health:\n  file: /tmp/x\n", "health.max_age"),
        (
            "health:\n  exec: [\"true\"]\n  failure_threshold: 0\n",
            "health.failure_threshold",
        ),
        ("health:\n  http: ftp://x/\n", "health.http"),
    ] {
        fs::write(
            &path,
            format!("{}{section}", config("bad", "redis://127.0.0.1:1")),
        )
        .expect("write");
        let out = run_leaderd(
            &[
                "check",
                "--offline",
                "--config",
                path.to_str().expect("utf8"),
            ],
            PATIENCE,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{section}: {err}");
        assert!(err.contains(field), "{section}: {err}");
    }
}
