//! Configuration errors and `leaderd check`: exit codes and messages that
//! name the file and the field.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use support::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// A valid config with one part replaced.
fn cfg(election: &str, redis: &str, http: &str) -> String {
    format!("election:\n{election}backend:\n  redis:\n{redis}http:\n{http}")
}

const ELECTION: &str =
    "  name: cfgtest\n  lease_duration: 1s\n  renew_deadline: 600ms\n  retry_period: 150ms\n";
const REDIS: &str = "    urls: [\"redis://127.0.0.1:1\"]\n    key_prefix: leaderd\n";
const HTTP: &str = "  listen: \"127.0.0.1:0\"\n";

fn election(name: &str, lease: &str, renew: &str, retry: &str) -> String {
    format!(
        "  name: {name}\n  lease_duration: {lease}\n  renew_deadline: {renew}\n  retry_period: {retry}\n"
    )
}

struct Case {
    what: &'static str,
    /// File name (must appear in stderr).
    file: &'static str,
    /// `None`: the file is not created.
    yaml: Option<String>,
    /// Every group must match; within a group any alternative may.
    expect: &'static [&'static [&'static str]],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "missing file",
            file: "does-not-exist.yaml",
            yaml: None,
            expect: &[],
        },
        Case {
            what: "YAML syntax error",
            file: "syntax.yaml",
            yaml: Some("election:\n  name: [unclosed\n  lease_duration: 1s\n".into()),
            expect: &[],
        },
        Case {
            what: "unknown key",
            file: "unknown-key.yaml",
            yaml: Some(cfg(&format!("{ELECTION}  bogus_knob: 3\n"), REDIS, HTTP)),
            expect: &[&["bogus_knob"], &["election"]],
        },
        Case {
            what: "missing election.name",
            file: "no-name.yaml",
            yaml: Some(cfg(
                "  lease_duration: 1s\n  renew_deadline: 600ms\n  retry_period: 150ms\n",
                REDIS,
                HTTP,
            )),
            expect: &[&["election.name", "`name`"], &["election"]],
        },
        Case {
            what: "bad name characters",
            file: "bad-name.yaml",
            yaml: Some(cfg(
                &election("\"My Controller!\"", "1s", "600ms", "150ms"),
                REDIS,
                HTTP,
            )),
            expect: &[&["election.name"]],
        },
        Case {
            what: "name too long",
            file: "long-name.yaml",
            yaml: Some(cfg(
                &election(&"a".repeat(64), "1s", "600ms", "150ms"),
                REDIS,
                HTTP,
            )),
            expect: &[&["election.name"]],
        },
        Case {
            what: "empty name",
            file: "empty-name.yaml",
            yaml: Some(cfg(&election("\"\"", "1s", "600ms", "150ms"), REDIS, HTTP)),
            expect: &[&["election.name"]],
        },
        Case {
            what: "renew_deadline >= lease_duration",
            file: "renew-ge-lease.yaml",
            yaml: Some(cfg(&election("cfgtest", "15s", "20s", "2s"), REDIS, HTTP)),
            expect: &[&["election.renew_deadline"], &["election.lease_duration"]],
        },
        Case {
            what: "renew_deadline == lease_duration",
            file: "renew-eq-lease.yaml",
            yaml: Some(cfg(&election("cfgtest", "10s", "10s", "2s"), REDIS, HTTP)),
            expect: &[&["election.renew_deadline"]],
        },
        Case {
            what: "renew_deadline <= 1.2 * retry_period",
            file: "renew-vs-retry.yaml",
            yaml: Some(cfg(
                &election("cfgtest", "15s", "2400ms", "2s"),
                REDIS,
                HTTP,
            )),
            expect: &[&["election.renew_deadline", "election.retry_period"]],
        },
        Case {
            what: "zero retry_period",
            file: "zero-retry.yaml",
            yaml: Some(cfg(&election("cfgtest", "15s", "10s", "0s"), REDIS, HTTP)),
            expect: &[&["election.retry_period"]],
        },
        Case {
            what: "zero lease_duration",
            file: "zero-lease.yaml",
            yaml: Some(cfg(&election("cfgtest", "0s", "10s", "2s"), REDIS, HTTP)),
            expect: &[&["election.lease_duration", "election.renew_deadline"]],
        },
        Case {
            what: "bad duration",
            file: "parsecs.yaml",
            yaml: Some(cfg(
                &election("cfgtest", "5 parsecs", "600ms", "150ms"),
                REDIS,
                HTTP,
            )),
            expect: &[&["election.lease_duration"]],
        },
        Case {
            what: "empty backend.redis.urls",
            file: "no-urls.yaml",
            yaml: Some(cfg(ELECTION, "    urls: []\n", HTTP)),
            expect: &[&["backend.redis.urls"]],
        },
        Case {
            what: "two backend.redis.urls",
            file: "two-urls.yaml",
            yaml: Some(cfg(
                ELECTION,
                "    urls: [\"redis://127.0.0.1:1\", \"redis://127.0.0.1:2\"]\n",
                HTTP,
            )),
            expect: &[&["backend.redis.urls"]],
        },
        Case {
            what: "bad url scheme",
            file: "http-url.yaml",
            yaml: Some(cfg(
                ELECTION,
                "    urls: [\"http://127.0.0.1:6379\"]\n",
                HTTP,
            )),
            expect: &[&["backend.redis.urls"]],
        },
        Case {
            what: "bad http.listen",
            file: "bad-listen.yaml",
            yaml: Some(cfg(ELECTION, REDIS, "  listen: \"not an address\"\n")),
            expect: &[&["http.listen"]],
        },
    ]
}

#[test]
fn bad_configs_exit_2_naming_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    for case in cases() {
        let path = dir.path().join(case.file);
        if let Some(yaml) = &case.yaml {
            std::fs::write(&path, yaml).expect("write config");
        }
        let path_str = path.to_str().expect("utf-8 path");
        for sub in ["run", "check"] {
            let mut args = vec![sub, "--config", path_str];
            if sub == "run" {
                // No --listen: it would override the file's http.listen.
                args.extend(["--identity", "x"]);
            } else {
                args.push("--offline");
            }
            let out = run_leaderd(&args, RUN_TIMEOUT);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let mut problems = Vec::new();
            if out.status.code() != Some(2) {
                problems.push(format!("exit {:?}, want 2", out.status.code()));
            }
            if !stderr.contains(case.file) {
                problems.push(format!("stderr does not name the file {}", case.file));
            }
            for group in case.expect {
                if !group.iter().any(|s| stderr.contains(s)) {
                    problems.push(format!("stderr names none of {group:?}"));
                }
            }
            if stderr.contains("panicked") {
                problems.push("panicked".into());
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "[{sub}] {}: {}\n    stderr: {}",
                    case.what,
                    problems.join("; "),
                    stderr.trim().replace('\n', "\n            ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} config error case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn config_error_message_has_contract_shape() {
    // `<file>: <field.path>: <reason>`
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        cfg(&election("cfgtest", "15s", "20s", "2s"), REDIS, HTTP),
    )
    .expect("write");
    let p = path.to_str().expect("utf-8");
    let out = run_leaderd(&["run", "--config", p], RUN_TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml: election.renew_deadline: "),
        "message shape `<file>: <field.path>: <reason>` expected, got: {stderr}"
    );
}

#[test]
fn check_offline_accepts_a_good_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("good.yaml");
    std::fs::write(&path, config("good", "redis://127.0.0.1:1")).expect("write");
    let p = path.to_str().expect("utf-8");
    let out = run_leaderd(&["check", "--config", p, "--offline"], RUN_TIMEOUT);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_online_needs_a_reachable_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start();
    let up = dir.path().join("up.yaml");
    std::fs::write(&up, config("online", &redis.url())).expect("write");
    let out = run_leaderd(
        &["check", "--config", up.to_str().expect("utf-8")],
        Duration::from_secs(20),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("7."),
        "check prints the Redis version: {text}"
    );

    let down = dir.path().join("down.yaml");
    std::fs::write(
        &down,
        config("online", &format!("redis://127.0.0.1:{}", free_port())),
    )
    .expect("write");
    let out = run_leaderd(
        &["check", "--config", down.to_str().expect("utf-8")],
        Duration::from_secs(30),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "unreachable Redis: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn http_port_taken_exits_1_naming_the_address() {
    let redis = RedisServer::start();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("port.yaml");
    std::fs::write(&path, config("porttaken", &redis.url())).expect("write");
    let out = run_leaderd(
        &[
            "run",
            "--config",
            path.to_str().expect("utf-8"),
            "--identity",
            "p",
            "--listen",
            &addr,
        ],
        RUN_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&addr), "stderr must name {addr}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(taken);
}

#[test]
fn run_without_config_is_a_usage_error() {
    let out = run_leaderd(&["run"], RUN_TIMEOUT);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
