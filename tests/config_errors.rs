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
        Case {
            what: "an admin listener off loopback (it needs no token)",
            file: "admin-listen-open.yaml",
            yaml: Some(cfg(
                ELECTION,
                REDIS,
                "  listen: \"127.0.0.1:0\"\n  admin_listen: \"0.0.0.0:9091\"\n",
            )),
            expect: &[&["http.admin_listen"], &["loopback"]],
        },
        Case {
            what: "preempt_delay without preempt",
            file: "preempt-delay-alone.yaml",
            yaml: Some(cfg(
                &format!("{ELECTION}  preempt_delay: 5s\n"),
                REDIS,
                HTTP,
            )),
            expect: &[&["election.preempt_delay"], &["preempt: true"]],
        },
        Case {
            what: "priority on an observer",
            file: "observer-priority.yaml",
            yaml: Some(cfg(
                &format!("{ELECTION}  mode: observe\n  priority: 5\n"),
                REDIS,
                HTTP,
            )),
            expect: &[&["election.priority"], &["observer"]],
        },
        Case {
            what: "an unhealthy_backoff shorter than a lease",
            file: "short-backoff.yaml",
            yaml: Some(format!(
                "{}health:\n  exec: [\"true\"]\n  unhealthy_backoff: 0s\n",
                cfg(ELECTION, REDIS, HTTP)
            )),
            expect: &[&["health.unhealthy_backoff"], &["lease_duration"]],
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

// ---------------------------------------------------------------------------
// Input that cannot hurt, and messages that blame the right place
// ---------------------------------------------------------------------------

/// `leaderd run` and `leaderd check --offline` on `path` with `env`: each
/// must exit 2 (within the bound of `run_leaderd`: a hang fails the test).
/// Returns their stderr.
fn refused_by_run_and_check(path: &str, env: &[(&str, &str)]) -> Vec<String> {
    [
        vec!["run", "--config", path, "--identity", "x"],
        vec!["check", "--offline", "--config", path],
    ]
    .iter()
    .map(|args| {
        let out = run_leaderd_with_env(args, env, RUN_TIMEOUT);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "leaderd {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "leaderd {args:?}: {stderr}");
        stderr
    })
    .collect()
}

#[test]
fn special_and_oversized_files_are_refused_without_reading_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("config.fifo");
    make_fifo(&fifo);
    let big = dir.path().join("big.yaml");
    // A comment of 1 MiB: valid YAML, but more than leaderd reads.
    std::fs::write(&big, format!("# {}\n", "x".repeat(1024 * 1024))).expect("write");
    let subdir = dir.path().join("a-directory");
    std::fs::create_dir(&subdir).expect("mkdir");
    for (path, reason) in [
        ("/dev/zero", "is a character device, not a regular file"),
        ("/dev/urandom", "is a character device, not a regular file"),
        (fifo.to_str().expect("utf-8"), "is a pipe (FIFO)"),
        (subdir.to_str().expect("utf-8"), "is a directory"),
        (
            big.to_str().expect("utf-8"),
            "at most 1 MiB of configuration",
        ),
    ] {
        for stderr in refused_by_run_and_check(path, &[]) {
            assert!(
                stderr.contains(path) && stderr.contains(reason),
                "{path}: want {reason:?}: {stderr}"
            );
        }
    }
}

#[test]
fn long_values_are_cut_in_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = "a".repeat(1_000_000);
    // YAML limits a plain key to 1024 characters.
    let key = "k".repeat(1000);
    for (file, yaml, field, bytes) in [
        (
            "long-name.yaml",
            cfg(&election(&long, "1s", "600ms", "150ms"), REDIS, HTTP),
            "election.name: \"aaaa",
            "…\" (1000000 bytes)",
        ),
        (
            "long-key.yaml",
            cfg(&format!("{ELECTION}  {key}: 1\n"), REDIS, HTTP),
            "unknown field `kkkk",
            "…` (1000 bytes)",
        ),
        (
            "long-url.yaml",
            cfg(ELECTION, &format!("    urls: [\"{long}\"]\n"), HTTP),
            "backend.redis.urls[0]: \"aaaa",
            "…\" (1000000 bytes)",
        ),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, yaml).expect("write");
        for stderr in refused_by_run_and_check(path.to_str().expect("utf-8"), &[]) {
            assert!(
                stderr.len() < 1500,
                "{file}: {} bytes of stderr; the value must be cut",
                stderr.len()
            );
            assert!(
                stderr.contains(field) && stderr.contains(bytes),
                "{file}: want {field:?} and {bytes:?}: {stderr}"
            );
        }
    }
}

#[test]
fn an_empty_file_says_it_is_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, yaml) in [
        ("empty.yaml", ""),
        ("comments.yaml", "# leaderd\n# (to be written)\n\n"),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, yaml).expect("write");
        for stderr in refused_by_run_and_check(path.to_str().expect("utf-8"), &[]) {
            assert!(
                stderr.contains(&format!("{file}: the file is empty")),
                "{stderr}"
            );
            assert!(!stderr.contains("missing field"), "{stderr}");
        }
    }
}

#[test]
fn a_bad_listen_or_identity_names_the_flag_or_variable_not_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fine.yaml");
    std::fs::write(&path, cfg(ELECTION, REDIS, HTTP)).expect("write");
    let p = path.to_str().expect("utf-8");
    // (flags, environment, what stderr must say)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (&["--listen", "unreach"], &[], "--listen: \"unreach\""),
        (
            &[],
            &[("LEADERD_LISTEN", "unreach")],
            "LEADERD_LISTEN: \"unreach\"",
        ),
        (
            // The flag wins over the variable, and is the one named.
            &["--listen", "also:bad"],
            &[("LEADERD_LISTEN", "127.0.0.1:0")],
            "--listen: \"also:bad\"",
        ),
        (
            &[],
            &[("LEADERD_IDENTITY", "two\nlines")],
            "LEADERD_IDENTITY: \"two\\nlines\"",
        ),
    ];
    for (flags, env, want) in cases {
        let mut args = vec!["run", "--config", p];
        args.extend_from_slice(flags);
        let out = run_leaderd_with_env(&args, env, RUN_TIMEOUT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(want),
            "{args:?} {env:?}: want {want:?}: {stderr}"
        );
        assert!(
            !stderr.contains("fine.yaml"),
            "{args:?} {env:?}: the file is not to blame: {stderr}"
        );
    }
}

#[test]
fn an_invalid_log_filter_is_refused_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fine.yaml");
    std::fs::write(&path, cfg(ELECTION, REDIS, HTTP)).expect("write");
    let p = path.to_str().expect("utf-8");
    // `verbose` would select a module called verbose: no log at all.
    for filter in ["verbose", "bogus[", "info,loud", "leaderd=loud"] {
        for stderr in refused_by_run_and_check(p, &[("LEADERD_LOG", filter)]) {
            assert!(stderr.contains("LEADERD_LOG: "), "{filter}: {stderr}");
        }
    }
    for filter in ["debug", "warn,leaderd=debug", ""] {
        let out = run_leaderd_with_env(
            &["check", "--offline", "--config", p],
            &[("LEADERD_LOG", filter)],
            RUN_TIMEOUT,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "LEADERD_LOG={filter:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_offline_checks_the_shipped_examples_without_their_environment() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).expect("read config/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|ext| ext != "yaml") {
            continue;
        }
        checked += 1;
        // leaderd_command() removes POD_NAME and POD_NAMESPACE.
        let out = run_leaderd(
            &[
                "check",
                "--offline",
                "--config",
                path.to_str().expect("utf-8"),
            ],
            RUN_TIMEOUT,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {stdout}{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        if stdout.contains("pod_label") {
            assert!(
                stdout.contains("note: pod_label: `leaderd run` needs POD_NAME"),
                "{}: say what run will need: {stdout}",
                path.display()
            );
        }
    }
    assert!(
        checked >= 5,
        "only {checked} examples in {}",
        examples.display()
    );
    // `run` still needs them.
    let sidecar = examples.join("sidecar-pod-label.yaml");
    let out = run_leaderd(
        &["run", "--config", sidecar.to_str().expect("utf-8")],
        RUN_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pod_label: needs POD_NAME"), "{stderr}");
}

#[test]
fn durations_in_messages_read_like_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("timing.yaml");
    std::fs::write(
        &path,
        cfg(&election("cfgtest", "1s", "1500ms", "150ms"), REDIS, HTTP),
    )
    .expect("write");
    for stderr in refused_by_run_and_check(path.to_str().expect("utf-8"), &[]) {
        assert!(
            stderr.contains("1.5s must be shorter than election.lease_duration (1s)"),
            "{stderr}"
        );
    }
}
