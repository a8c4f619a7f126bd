//! HTTP API, metrics and the `leaderd status` client.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::*;

#[test]
fn status_and_leader_bodies_follow_the_contract() {
    let redis = RedisServer::start();
    let cfg = config("api", &redis.url());
    let c = start_candidates(&cfg, "api", 2);
    let all: Vec<&Leaderd> = c.iter().collect();
    let l = wait_for_leader(&all, PATIENCE);
    let f = 1 - l;
    wait_until(PATIENCE, "follower sees the leader", || {
        c[f].status()["leader"] == c[l].identity()
    });

    for (i, d) in c.iter().enumerate() {
        let st = d.status();
        let keys: BTreeSet<&str> = st
            .as_object()
            .unwrap_or_else(|| panic!("/status is not an object: {st}"))
            .keys()
            .map(String::as_str)
            .collect();
        for k in [
            "election",
            "identity",
            "is_leader",
            "leader",
            "fencing_token",
            "lease_remaining_ms",
            "term_started_at",
            "version",
            "ready",
            "backend",
            "reason",
            "backend_error",
        ] {
            assert!(keys.contains(k), "/status lacks {k}: {st}");
        }
        assert_eq!(st["election"], "api");
        assert_eq!(st["identity"], d.identity());
        assert_eq!(st["backend"], "redis");
        assert_eq!(st["ready"], true);
        assert!(st["version"].is_string());
        assert!(st["backend_error"].is_null(), "{st}");
        assert_eq!(st["leader"], c[l].identity());
        if i == l {
            assert_eq!(st["is_leader"], true);
            assert!(st["fencing_token"].is_u64(), "{st}");
            let rem = st["lease_remaining_ms"]
                .as_u64()
                .expect("lease_remaining_ms");
            assert!(rem > 0 && rem <= LEASE.as_millis() as u64, "{st}");
            assert!(st["term_started_at"].is_string(), "{st}");
            assert_eq!(st["reason"], "acquired");
            let (code, body) = d.get("/leader");
            assert_eq!(code, 200);
            let lb: serde_json::Value = serde_json::from_str(&body).expect("/leader JSON");
            assert_eq!(lb["is_leader"], true);
            assert_eq!(lb["identity"], d.identity());
        } else {
            assert_eq!(st["is_leader"], false);
            let (code, body) = d.get("/leader");
            assert_eq!(code, 503);
            let lb: serde_json::Value = serde_json::from_str(&body).expect("/leader JSON");
            assert_eq!(lb["is_leader"], false);
            assert_eq!(lb["leader"], c[l].identity());
        }
        let (code, body) = d.get("/healthz");
        assert_eq!((code, body.trim()), (200, "ok"));
        assert_eq!(d.get("/readyz").0, 200);
    }
}

#[test]
fn unknown_path_is_404_and_wrong_method_is_405() {
    let redis = RedisServer::start();
    let a = Leaderd::start(&config("routes", &redis.url()), "routes-a");
    assert_eq!(a.get("/nope").0, 404);
    assert_eq!(a.get("/status/extra").0, 404);
    assert_eq!(a.request("POST", "/status").0, 405);
    assert_eq!(a.request("DELETE", "/leader").0, 405);
    assert_eq!(a.request("PUT", "/metrics").0, 405);
    assert_eq!(a.get("/status").0, 200);
}

const FAMILIES: &[&str] = &[
    "leaderd_is_leader",
    "leaderd_fencing_token",
    "leaderd_leadership_acquired_total",
    "leaderd_leadership_lost_total",
    "leaderd_renewals_total",
    "leaderd_renew_duration_seconds",
    "leaderd_backend_errors_total",
    "leaderd_lease_remaining_seconds",
    "leaderd_leader_changes_observed_total",
    "leaderd_build_info",
    "leaderd_foreign_lock_value_total",
    "leader_election_master_status",
];

/// Families missing from a scrape (by sample name, histograms by base name).
fn missing_families(text: &str) -> Vec<&'static str> {
    let scrape = parse_metrics(text);
    FAMILIES
        .iter()
        .copied()
        .filter(|f| !scrape.samples.iter().any(|s| s.metric == *f))
        .collect()
}

#[test]
fn metrics_parse_and_count_a_leadership_term() {
    let mut redis = RedisServer::start();
    let a = Leaderd::start(&config("metrics", &redis.url()), "m-a");
    wait_until(PATIENCE, "m-a leads", || a.is_leading());
    // At least one renewal after acquiring.
    wait_until(PATIENCE, "a renewal is counted", || {
        renewals_ok(&a.metrics()) >= 1.0
    });

    let text = a.metrics();
    let scrape = parse_metrics(&text);
    for s in &scrape.samples {
        if s.metric.starts_with("leaderd_") {
            assert_eq!(
                s.labels.get("election"),
                Some("metrics"),
                "{} lacks election=\"metrics\": {}",
                s.metric,
                s.labels
            );
        }
    }
    let must_exist_now = [
        "leaderd_is_leader",
        "leaderd_fencing_token",
        "leaderd_leadership_acquired_total",
        "leaderd_renewals_total",
        "leaderd_renew_duration_seconds",
        "leaderd_lease_remaining_seconds",
        "leaderd_build_info",
        "leaderd_foreign_lock_value_total",
        "leader_election_master_status",
    ];
    let missing: Vec<_> = must_exist_now
        .iter()
        .filter(|f| !scrape.samples.iter().any(|s| s.metric == **f))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in:\n{text}");

    assert!(metric_sum(&text, "leaderd_leadership_acquired_total", &[]) >= 1.0);
    assert_eq!(metric_sum(&text, "leaderd_is_leader", &[]), 1.0, "{text}");
    let token = a.status()["fencing_token"].as_u64().expect("token") as f64;
    assert_eq!(metric_sum(&text, "leaderd_fencing_token", &[]), token);
    assert_eq!(
        metric_sum(
            &text,
            "leader_election_master_status",
            &[("name", "metrics")]
        ),
        1.0,
        "{text}"
    );
    let remaining = metric_sum(&text, "leaderd_lease_remaining_seconds", &[]);
    assert!(
        remaining > 0.0 && remaining <= LEASE.as_secs_f64(),
        "{remaining}"
    );
    let build = scrape
        .samples
        .iter()
        .find(|s| s.metric == "leaderd_build_info")
        .expect("build_info");
    assert!(build.labels.get("version").is_some(), "{}", build.labels);
    let hist = scrape
        .samples
        .iter()
        .find(|s| s.metric == "leaderd_renew_duration_seconds")
        .expect("histogram");
    assert!(
        matches!(&hist.value, prometheus_parse::Value::Histogram(b) if !b.is_empty()),
        "renew_duration is a histogram: {:?}",
        hist.value
    );

    // Lose leadership (backend dies): every family is now populated.
    redis.kill();
    wait_until(PATIENCE, "m-a steps down", || {
        a.leader_code() == Some(503) && a.status()["reason"] == "renew_failed"
    });
    wait_until(PATIENCE, "loss and backend errors counted", || {
        let t = a.metrics();
        metric_sum(
            &t,
            "leaderd_leadership_lost_total",
            &[("reason", "renew_failed")],
        ) >= 1.0
            && metric_sum(&t, "leaderd_backend_errors_total", &[]) >= 1.0
    });
    let text = a.metrics();
    assert_eq!(missing_families(&text), Vec::<&str>::new(), "{text}");
    assert_eq!(metric_sum(&text, "leaderd_is_leader", &[]), 0.0);
    assert_eq!(
        metric_sum(
            &text,
            "leader_election_master_status",
            &[("name", "metrics")]
        ),
        0.0
    );
    assert!(metric_sum(&text, "leaderd_leadership_acquired_total", &[]) >= 1.0);
}

#[test]
fn follower_counts_observed_leader_changes() {
    let redis = RedisServer::start();
    let cfg = config("changes", &redis.url());
    let c = start_candidates(&cfg, "ch", 3);
    let all: Vec<&Leaderd> = c.iter().collect();
    let l = wait_for_leader(&all, PATIENCE);
    let watcher = (l + 1) % 3;
    wait_until(PATIENCE, "watcher observes first leader", || {
        c[watcher].status()["leader"] == c[l].identity()
    });
    let before = c[watcher].metric("leaderd_leader_changes_observed_total");
    c[l].signal("TERM");
    assert_eq!(c[l].wait_exit(Duration::from_secs(10)), Some(0));
    wait_until(PATIENCE, "watcher counts a leader change", || {
        c[watcher].metric("leaderd_leader_changes_observed_total") > before
    });
    assert!(
        c[watcher].log().contains("new leader observed"),
        "{}",
        c[watcher].log()
    );
}

#[test]
fn status_command_prints_json_and_text() {
    let redis = RedisServer::start();
    let a = Leaderd::start(&config("cli", &redis.url()), "cli-a");
    wait_until(PATIENCE, "cli-a leads", || a.is_leading());
    let url = a.url();

    let out = run_leaderd(
        &["status", "--url", &url, "--json"],
        Duration::from_secs(10),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {stdout}"));
    assert_eq!(v["is_leader"], true, "{v}");
    assert_eq!(v["identity"], "cli-a");

    let out = run_leaderd(&["status", "--url", &url], Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("cli-a"),
        "human status names the identity: {stdout}"
    );
    assert!(
        serde_json::from_str::<serde_json::Value>(stdout.trim()).is_err(),
        "without --json the output is human text: {stdout}"
    );

    // A URL without a scheme is taken as http://.
    let out = run_leaderd(&["status", "--url", a.addr()], Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cli-a"), "{stdout}");

    // What went wrong, in words that say what to check.
    let dead = format!("127.0.0.1:{}", free_port());
    for (url, want) in [
        (
            format!("http://{dead}"),
            format!(
                "nothing answers at http://{dead}: is leaderd running, and is that its http.listen?"
            ),
        ),
        (
            format!("https://{}", a.addr()),
            format!(
                "leaderd serves plain HTTP, not https; use http://{}",
                a.addr()
            ),
        ),
    ] {
        let out = run_leaderd(&["status", "--url", &url], Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url}: {stderr}");
        assert!(stderr.contains(&want), "{url}: want {want:?}: {stderr}");
    }
}

#[test]
fn identity_flag_beats_env_and_env_beats_default() {
    let redis = RedisServer::start();
    let cfg = config("ids", &redis.url());
    let a = Leaderd::builder(&cfg)
        .env("LEADERD_IDENTITY", "from-env")
        .start();
    assert_eq!(a.status()["identity"], "from-env");
    let b = Leaderd::builder(&cfg)
        .env("LEADERD_IDENTITY", "from-env-2")
        .identity("from-flag")
        .start();
    assert_eq!(b.status()["identity"], "from-flag");
    let c = Leaderd::builder(&cfg).env("POD_NAME", "pod-7").start();
    assert_eq!(c.status()["identity"], "pod-7");
}

#[test]
fn sigint_also_shuts_down_gracefully() {
    let redis = RedisServer::start();
    let a = Leaderd::start(&config("sigint", &redis.url()), "si-a");
    wait_until(PATIENCE, "si-a leads", || a.is_leading());
    a.signal("INT");
    assert_eq!(a.wait_exit(Duration::from_secs(10)), Some(0), "{}", a.log());
    // A requested stop is routine: INFO, not WARN.
    let log = a.log();
    let line = log
        .lines()
        .find(|line| line.contains("stepped down"))
        .unwrap_or_else(|| panic!("no 'stepped down' line: {log}"));
    assert!(
        line.contains(" INFO ") && line.contains("shutdown"),
        "{line}"
    );
    assert_eq!(
        redis.get(&lock_key("sigint")),
        None,
        "graceful shutdown releases (deletes) its own lock"
    );
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let redis = RedisServer::start();
    let a = Leaderd::builder(&config("jsonlog", &redis.url()))
        .identity("jl-a")
        .arg("--log-format")
        .arg("json")
        .start();
    wait_until(PATIENCE, "jl-a leads", || a.is_leading());
    wait_until(PATIENCE, "became leader is logged", || {
        a.log().contains("became leader")
    });
    let log = a.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
    }
}
