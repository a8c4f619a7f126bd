//! Operators steer leadership: every candidate is listed, a switchover to a
//! named candidate (or to the best other one) happens now or at a set time
//! and can be cancelled, through any candidate's daemon; the admin token
//! guards it; observers never lead. Real redis-server, real daemons.

#[path = "support/procs.rs"]
mod procs;
mod support;

use std::fs;

use procs::{ProcessWatcher, recording_command};
use support::*;

/// The admin token every test configures.
const TOKEN: &str = "s3cret-token";

fn admin_config(name: &str, redis: &RedisServer, dir: &std::path::Path, extra: &str) -> String {
    let token = dir.join("admin-token");
    fs::write(&token, format!("{TOKEN}\n")).expect("write token");
    format!(
        "{}{extra}",
        config(name, &redis.url()).replace(
            "http:\n  listen: \"127.0.0.1:0\"\n",
            &format!(
                "http:\n  listen: \"127.0.0.1:0\"\n  admin_token_file: {}\n",
                token.display()
            ),
        )
    )
}

/// POST /switchover with the token; (code, JSON body).
fn switchover(d: &Leaderd, body: &str) -> (u16, serde_json::Value) {
    request(d, "POST", body, Some(TOKEN))
}

fn request(d: &Leaderd, method: &str, body: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let (code, text) = http_request_with(
        d.addr(),
        method,
        "/switchover",
        body,
        token.map(|t| format!("Bearer {t}")).as_deref(),
        PATIENCE,
    )
    .unwrap_or_else(|e| panic!("{method} /switchover on {}: {e}", d.identity()));
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

fn leader_of(d: &Leaderd) -> Option<String> {
    d.try_status()
        .and_then(|s| s["leader"].as_str().map(str::to_string))
}

fn start_three(cfg: &str) -> Vec<Leaderd> {
    let group = vec![
        Leaderd::start(cfg, "a"),
        Leaderd::start(cfg, "b"),
        Leaderd::start(cfg, "c"),
    ];
    wait_for_leader(&group.iter().collect::<Vec<_>>(), PATIENCE);
    // Everyone has announced itself.
    wait_until(PATIENCE, "every candidate is listed", || {
        group[0]
            .try_status()
            .is_some_and(|s| s["candidates"].as_array().is_some_and(|c| c.len() == 3))
    });
    group
}

fn by_name<'a>(group: &'a [Leaderd], name: &str) -> &'a Leaderd {
    group
        .iter()
        .find(|d| d.identity() == name)
        .unwrap_or_else(|| panic!("no candidate {name}"))
}

#[test]
fn status_lists_every_candidate_and_the_cli_shows_them() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let group = start_three(&admin_config("roster", &redis, dir.path(), ""));
    let status = group[1].status();
    let candidates = status["candidates"].as_array().expect("candidates");
    let leader = status["leader"].as_str().expect("a leader");
    for c in candidates {
        assert_eq!(c["is_leader"], c["identity"] == leader, "{c}");
        assert_eq!(c["healthy"], true, "{c}");
        assert_eq!(c["priority"], 0, "{c}");
        assert!(c["last_seen_ms"].as_u64().is_some(), "{c}");
        assert!(
            c["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
            "{c}"
        );
    }
    assert_eq!(
        metric_sum(&group[2].metrics(), "leaderd_candidates", &[]),
        3.0
    );
    let shown = run_leaderd(&["status", "--url", group[0].addr()], PATIENCE);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("CANDIDATE") && text.contains("leader"),
        "{text}"
    );
    for name in ["a", "b", "c"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{text}"
        );
    }

    // A candidate that stops is gone from the list at once.
    let gone = group
        .iter()
        .find(|d| d.identity() != leader)
        .expect("a follower");
    gone.signal("TERM");
    assert_eq!(gone.wait_exit(PATIENCE), Some(0));
    let still = group
        .iter()
        .find(|d| d.identity() != gone.identity())
        .expect("another");
    wait_until(
        PATIENCE,
        "the stopped candidate is no longer listed",
        || {
            still.try_status().is_some_and(|s| {
                s["candidates"].as_array().is_some_and(|c| {
                    c.len() == 2 && c.iter().all(|c| c["identity"] != gone.identity())
                })
            })
        },
    );
}

#[test]
fn a_switchover_sent_to_a_follower_hands_over_to_the_named_candidate() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let watcher = ProcessWatcher::start(&dir.path().join("pids"));
    let cfg = admin_config(
        "named",
        &redis,
        dir.path(),
        &format!(
            "hooks:\n  stopped_leading: [\"sh\", \"-c\", \"echo $LEADERD_REASON >> {}\"]\n  timeout: 100ms\nleader_process:\n  command: {}\n  grace_period: 100ms\n",
            dir.path().join("reasons").display(),
            recording_command(watcher.file())
        ),
    );
    let group = start_three(&cfg);
    let old = leader_of(&group[0]).expect("a leader");
    let old_token = by_name(&group, &old).status()["fencing_token"]
        .as_u64()
        .expect("token");
    let others: Vec<&str> = ["a", "b", "c"].into_iter().filter(|n| *n != old).collect();
    let (target, via) = (others[0], by_name(&group, others[1]));

    let (code, body) = switchover(via, &format!("{{\"candidate\": \"{target}\"}}"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["leader"], target, "{body}");
    let new = by_name(&group, target);
    assert!(new.is_leading());
    assert!(new.status()["fencing_token"].as_u64().expect("token") > old_token);
    // The old leader went through the graceful loss sequence.
    wait_until(
        PATIENCE,
        "stopped_leading ran with reason switchover",
        || fs::read_to_string(dir.path().join("reasons")).is_ok_and(|r| r.contains("switchover")),
    );
    let old_d = by_name(&group, &old);
    assert_eq!(
        metric_sum(
            &old_d.metrics(),
            "leaderd_leadership_lost_total",
            &[("reason", "switchover")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &via.metrics(),
            "leaderd_switchovers_total",
            &[("result", "done")]
        ),
        1.0
    );
    wait_until(PATIENCE, "the new leader's process runs", || {
        watcher.running_of(target).len() == 2
    });
    watcher.assert_no_overlap();
    // Nothing is left pending.
    let (code, body) = request(via, "GET", "", None);
    assert_eq!((code, &body["pending"]), (200, &serde_json::Value::Null));
}

#[test]
fn step_down_hands_over_to_another_candidate_with_the_cli() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let group = start_three(&admin_config("stepdown", &redis, dir.path(), ""));
    let old = leader_of(&group[0]).expect("a leader");
    let out = run_leaderd_with_env(
        &["step-down", "--url", &by_name(&group, &old).url()],
        &[("LEADERD_ADMIN_TOKEN", TOKEN)],
        PATIENCE,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = leader_of(&group[0]).expect("a leader");
    assert_ne!(now, old);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{now} leads now")));
}

#[test]
fn answer_codes_of_switchover() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let group = start_three(&admin_config("codes", &redis, dir.path(), ""));
    let leader = leader_of(&group[0]).expect("a leader");
    let d = &group[0];

    // Unknown candidate, the leader itself, bad bodies.
    assert_eq!(switchover(d, "{\"candidate\": \"nobody\"}").0, 404);
    assert_eq!(
        switchover(d, &format!("{{\"candidate\": \"{leader}\"}}")).0,
        412
    );
    assert_eq!(switchover(d, "{\"candiate\": \"b\"}").0, 400);
    assert_eq!(switchover(d, "{\"scheduled_at\": \"tomorrow\"}").0, 400);
    assert_eq!(
        switchover(d, "{\"scheduled_at\": \"2030-01-01T02:00:00\"}").0,
        400,
        "a time without an offset is ambiguous"
    );

    // Scheduled: 202, visible everywhere, a second one conflicts, and a
    // cancel (through another daemon) removes it.
    let target = ["a", "b", "c"]
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    let (code, body) = switchover(
        d,
        &format!(
            "{{\"candidate\": \"{target}\", \"scheduled_at\": \"2099-01-01T02:00:00+01:00\"}}"
        ),
    );
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["pending"]["scheduled_at"], "2099-01-01T01:00:00Z");
    let (code, body) = request(&group[2], "GET", "", None);
    assert_eq!(code, 200);
    assert_eq!(body["pending"]["candidate"], target, "{body}");
    assert_eq!(switchover(&group[1], "{}").0, 409);
    let (code, _) = request(&group[2], "DELETE", "", Some(TOKEN));
    assert_eq!(code, 200);
    let (code, _) = request(&group[2], "DELETE", "", Some(TOKEN));
    assert_eq!(code, 404, "nothing left to cancel");
    // Nothing happened to the leader meanwhile.
    assert_eq!(leader_of(&group[1]).as_deref(), Some(leader.as_str()));
}

#[test]
fn a_scheduled_switchover_happens_at_its_time() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let group = start_three(&admin_config("scheduled", &redis, dir.path(), ""));
    let leader = leader_of(&group[0]).expect("a leader");
    let target = ["a", "b", "c"]
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1500);
    let (code, body) = switchover(
        &group[0],
        &format!("{{\"candidate\": \"{target}\", \"scheduled_at\": \"{at}\"}}"),
    );
    assert_eq!(code, 202, "{body}");
    assert_eq!(leader_of(&group[0]).as_deref(), Some(leader.as_str()));
    wait_until(PATIENCE, "the named candidate leads", || {
        by_name(&group, target).is_leading()
    });
    assert!(
        jiff::Timestamp::now() >= at,
        "handed over before the scheduled time"
    );
}

#[test]
fn a_named_candidate_that_died_is_replaced_by_anyone_after_the_window() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let group = start_three(&admin_config("deadtarget", &redis, dir.path(), ""));
    let leader = leader_of(&group[0]).expect("a leader");
    let target = ["a", "b", "c"]
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    let third = ["a", "b", "c"]
        .into_iter()
        .find(|n| *n != leader && *n != target)
        .expect("a third");
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(500);
    let (code, _) = switchover(
        by_name(&group, third),
        &format!("{{\"candidate\": \"{target}\", \"scheduled_at\": \"{at}\"}}"),
    );
    assert_eq!(code, 202);
    // The named candidate dies before the time; its presence is still
    // listed when the switchover is due.
    by_name(&group, target).kill();
    wait_until(PATIENCE, "the old leader handed over", || {
        by_name(&group, &leader)
            .log()
            .contains("reason=\"switchover\"")
    });
    // Reserved for the dead one for one lease, then someone else leads.
    wait_until(PATIENCE, "another candidate leads", || {
        [&leader, third]
            .iter()
            .any(|n| by_name(&group, n).is_leading())
    });
}

#[test]
fn the_admin_token_guards_switchover() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let group = start_three(&admin_config("token", &redis, dir.path(), ""));
    let d = &group[0];
    assert_eq!(request(d, "POST", "{}", None).0, 401);
    assert_eq!(request(d, "POST", "{}", Some("wrong")).0, 401);
    assert_eq!(request(d, "DELETE", "", None).0, 401);
    assert_eq!(
        metric_sum(
            &d.metrics(),
            "leaderd_switchovers_total",
            &[("result", "unauthorized")]
        ),
        3.0
    );
    // Reading stays open.
    assert_eq!(request(d, "GET", "", None).0, 200);
    // The token is never logged.
    for d in &group {
        assert!(
            !d.log().contains(TOKEN),
            "token in the log of {}",
            d.identity()
        );
    }
    assert_eq!(request(d, "POST", "{}", Some(TOKEN)).0, 200);
}

#[test]
fn without_an_admin_credential_switchover_is_refused_and_says_how_to_enable_it() {
    let redis = RedisServer::start();
    let d = Leaderd::start(&config("noadmin", &redis.url()), "a");
    wait_until(PATIENCE, "a leads", || d.is_leading());
    let (code, body) = request(&d, "POST", "{}", Some("anything"));
    assert_eq!(code, 403);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("admin_token_file") && m.contains("admin_listen")),
        "{body}"
    );
}

#[test]
fn the_admin_listener_needs_no_token() {
    let redis = RedisServer::start();
    let admin_port = free_port();
    let cfg = config("adminlisten", &redis.url()).replace(
        "http:\n  listen: \"127.0.0.1:0\"\n",
        &format!("http:\n  listen: \"127.0.0.1:0\"\n  admin_listen: \"127.0.0.1:{admin_port}\"\n"),
    );
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let b = Leaderd::start(
        &cfg.replace(&admin_port.to_string(), &free_port().to_string()),
        "b",
    );
    wait_until(PATIENCE, "b is listed", || {
        a.try_status()
            .is_some_and(|s| s["candidates"].as_array().is_some_and(|c| c.len() == 2))
    });
    // The main listener refuses; the admin one does it.
    assert_eq!(request(&a, "POST", "{}", None).0, 403);
    let (code, text) = http_request_with(
        &format!("127.0.0.1:{admin_port}"),
        "POST",
        "/switchover",
        "{}",
        None,
        PATIENCE,
    )
    .expect("admin listener answers");
    assert_eq!(code, 200, "{text}");
    assert!(b.is_leading());
}

#[test]
fn an_observer_never_leads_but_reports_the_leader_and_the_candidates() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let hook_log = dir.path().join("new-leader");
    let observer_cfg = format!(
        "{}hooks:\n  new_leader: [\"sh\", \"-c\", \"echo $LEADERD_LEADER >> {}\"]\n",
        config("observed", &redis.url()),
        hook_log.display()
    );
    let o = Leaderd::builder(&observer_cfg)
        .identity("watcher")
        .arg("--observe")
        .start();
    // Nobody else stands: still it does not lead.
    std::thread::sleep(LEASE * 2);
    let status = o.status();
    assert_eq!(status["is_leader"], false);
    assert_eq!(status["observer"], true);
    assert!(status["leader"].is_null(), "{status}");
    assert!(redis.get(&lock_key("observed")).is_none());

    let a = Leaderd::start(&config("observed", &redis.url()), "a");
    wait_until(PATIENCE, "the observer sees a lead", || {
        o.try_status().is_some_and(|s| s["leader"] == "a")
    });
    wait_until(PATIENCE, "new_leader ran on the observer", || {
        fs::read_to_string(&hook_log).is_ok_and(|t| t.contains('a'))
    });
    let candidates = o.status()["candidates"].clone();
    assert_eq!(
        candidates
            .as_array()
            .map(|c| c.iter().map(|c| c["identity"].clone()).collect::<Vec<_>>()),
        Some(vec![serde_json::json!("a")]),
        "an observer is not a candidate: {candidates}"
    );
    // A graceful handover is seen at once.
    a.signal("TERM");
    assert_eq!(a.wait_exit(PATIENCE), Some(0));
    let b = Leaderd::start(&config("observed", &redis.url()), "b");
    wait_until(PATIENCE, "the observer sees b lead", || {
        o.try_status().is_some_and(|s| s["leader"] == "b")
    });
    assert_eq!(o.metric("leaderd_leadership_acquired_total"), 0.0);
    drop(b);
}

#[test]
fn an_observer_with_a_leader_process_is_a_configuration_error() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    fs::write(
        &path,
        format!(
            "{}leader_process:\n  command: [\"true\"]\n",
            config("x", &redis.url()).replace("  name: x\n", "  name: x\n  mode: observe\n")
        ),
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
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("leader_process"));
}
