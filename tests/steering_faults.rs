//! Faults around steering (switchover, health, priority) found by a
//! hostile review: each test failed before its fix. A crashed candidate is
//! never handed the lease; a resigning preferred leader does not take it
//! back; a switchover replaced during a hand-over is not lost or
//! misreported; a switchover answered "done" is not carried out again; a
//! file probe on a hung mount (a FUSE server that never answers) costs its
//! timeout, not the daemon.

mod support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const TOKEN: &str = "review-token";

/// A probe that fails while `flag` exists.
fn probe_failing_while(flag: &Path, backoff: &str) -> String {
    format!(
        "health:\n  exec: [\"sh\", \"-c\", \"test ! -e {}\"]\n  period: 100ms\n  timeout: 100ms\n  failure_threshold: 2\n  success_threshold: 1\n  unhealthy_backoff: {backoff}\n",
        flag.display()
    )
}

/// README, "Health and priority": "If no healthy candidate stands it keeps
/// leading". A follower that crashed (SIGKILL, power loss, or cut off from
/// Redis) stays in `…:preferred`, because only acquire.lua trims stale
/// members and nobody calls acquire while the leader renews (renew.lua
/// ignores `member_ttl_ms`). The leader then hands over to the dead
/// candidate, reserves the lease for it for one lease, and stands aside
/// for `unhealthy_backoff`: nobody leads for the whole backoff.
#[test]
fn an_unhealthy_leader_does_not_hand_over_to_a_crashed_candidate() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let a_sick = dir.path().join("a-sick");
    let b_sick = dir.path().join("b-sick");
    let name = "stalepref";
    let a = Leaderd::start(
        &format!(
            "{}{}",
            config(name, &redis.url()),
            probe_failing_while(&a_sick, "8s")
        ),
        "a",
    );
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let b = Leaderd::start(
        &format!(
            "{}{}",
            config(name, &redis.url()),
            probe_failing_while(&b_sick, "8s")
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
    b.kill();
    // b is gone from the candidates list (its presence is older than one
    // lease)...
    wait_until(PATIENCE, "b is no longer listed", || {
        a.try_status().is_some_and(|s| {
            s["candidates"]
                .as_array()
                .is_some_and(|c| c.iter().all(|c| c["identity"] != "b"))
        })
    });
    // ...but still ranked as a healthy, preferred candidate.
    let preferred = redis.cmd(&[
        "ZRANGE",
        &format!("leaderd:{{{name}}}:preferred"),
        "0",
        "-1",
    ]);
    eprintln!("…:preferred after b was killed: {preferred}");

    fs::write(&a_sick, "").expect("make a sick");
    // The README's promise: a keeps leading and says so.
    let start = Instant::now();
    let mut leaderless_since: Option<Instant> = None;
    let mut longest_vacancy = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(5) {
        if a.is_leading() {
            leaderless_since = None;
        } else {
            let since = *leaderless_since.get_or_insert_with(Instant::now);
            longest_vacancy = longest_vacancy.max(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let lost_unhealthy = metric_sum(
        &a.metrics(),
        "leaderd_leadership_lost_total",
        &[("reason", "unhealthy")],
    );
    assert!(
        lost_unhealthy == 0.0 && longest_vacancy < LEASE,
        "a handed over to the crashed b ({lost_unhealthy} hand-overs for health) and nobody led for {longest_vacancy:?} (…:preferred held {preferred}); log:\n{}",
        a.log()
    );
}

fn admin_config(name: &str, redis: &RedisServer, dir: &Path, extra: &str) -> String {
    let token = dir.join("admin-token");
    fs::write(&token, format!("{TOKEN}\n")).expect("write token");
    // A longer lease, so that the step-down window (lease − renew) leaves
    // room for a slow stopped_leading hook.
    format!(
        "{}{extra}",
        config_with(
            name,
            &redis.url(),
            Duration::from_millis(3000),
            Duration::from_millis(1000),
            Duration::from_millis(200),
        )
        .replace(
            "http:\n  listen: \"127.0.0.1:0\"\n",
            &format!(
                "http:\n  listen: \"127.0.0.1:0\"\n  admin_token_file: {}\n",
                token.display()
            ),
        )
    )
}

fn post(d: &Leaderd, method: &str, body: &str) -> (u16, serde_json::Value) {
    let (code, text) = http_request_with(
        d.addr(),
        method,
        "/switchover",
        body,
        Some(&format!("Bearer {TOKEN}")),
        PATIENCE,
    )
    .unwrap_or_else(|e| panic!("{method} /switchover on {}: {e}", d.identity()));
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// README, "Steering leadership": 200 means "carried out", `DELETE`
/// cancels the pending one. While the leader carries out switchover #1
/// (its graceful step-down, here a 1.2 s stopped_leading hook), an
/// operator cancels it (200 "cancelled") and asks for switchover #2 to
/// another candidate (accepted). The leader's release (release.lua) then
/// deletes the switchover key whatever it holds — #2 is silently lost —
/// and the lease goes to #1's candidate anyway; the daemon that took #2
/// answers 200 "done" naming #1's candidate.
#[test]
fn a_switchover_requested_during_a_hand_over_is_not_lost_or_misreported() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = "hooks:\n  stopped_leading: [\"sleep\", \"1.2\"]\n  timeout: 1500ms\n";
    let cfg = admin_config("racing", &redis, dir.path(), hook);
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let b = Leaderd::start(&cfg, "b");
    let c = Leaderd::start(&cfg, "c");
    wait_until(PATIENCE, "every candidate is listed", || {
        a.try_status()
            .is_some_and(|s| s["candidates"].as_array().is_some_and(|c| c.len() == 3))
    });

    std::thread::scope(|scope| {
        let first = scope.spawn(|| post(&b, "POST", r#"{"candidate":"b"}"#));
        // a has stepped down locally and is running its stopped_leading hook.
        wait_until(PATIENCE, "a steps down", || !a.is_leading());
        let (code, body) = post(&c, "DELETE", "");
        eprintln!("DELETE /switchover during the hand-over: {code} {body}");
        let second = post(&c, "POST", r#"{"candidate":"c"}"#);
        let first = first.join().expect("first request");
        eprintln!("switchover to b: {first:?}");
        eprintln!("switchover to c: {second:?}");
        let pending = post(&c, "GET", "");
        eprintln!("pending afterwards: {pending:?}");
        let leader = wait_for(PATIENCE, "someone leads", || {
            [&a, &b, &c]
                .into_iter()
                .find(|d| d.is_leading())
                .map(|d| d.identity().to_string())
        });
        // Honest answers: carried out to c; or "overtaken" (b leads, as the
        // leader's hand-over to b was under way); or still pending for c.
        let second_ok = match second.0 {
            200 => second.1["leader"] == "c" && leader == "c",
            409 => second.1["result"] == "overtaken" && second.1["leader"] == leader.as_str(),
            _ => pending.1["pending"]["candidate"] == "c",
        };
        assert!(
            second_ok,
            "switchover to c answered {:?}, {leader} leads, pending: {:?}",
            second, pending
        );
    });
}

/// A FUSE file system that never answers (no FUSE_INIT reply): every
/// `stat` of a path under it blocks until the server goes away — what a
/// hung NFS or FUSE mount does to a heartbeat file.
struct HungMount {
    server: std::process::Child,
    dir: std::path::PathBuf,
}

impl HungMount {
    fn new(dir: &Path) -> HungMount {
        let mnt = dir.join("hung");
        fs::create_dir_all(&mnt).expect("mount point");
        let script = r#"
import ctypes, os, sys, time
fd = os.open("/dev/fuse", os.O_RDWR)
libc = ctypes.CDLL("libc.so.6", use_errno=True)
opts = ("fd=%d,rootmode=40000,user_id=0,group_id=0" % fd).encode()
if libc.mount(b"hung", sys.argv[1].encode(), b"fuse", 0, opts) != 0:
    print("mount failed:", os.strerror(ctypes.get_errno()), flush=True)
    sys.exit(1)
print("mounted", flush=True)
time.sleep(120)
"#;
        let mut server = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&mnt)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 for the hung mount");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(server.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("hung mount says whether it mounted");
        assert_eq!(
            line.trim(),
            "mounted",
            "cannot mount a FUSE file system here"
        );
        HungMount { server, dir: mnt }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.join("heartbeat")
    }
}

impl Drop for HungMount {
    fn drop(&mut self) {
        // Closing /dev/fuse aborts the connection: blocked stats return.
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

fn file_probe(link: &Path) -> String {
    format!(
        "health:\n  file: {}\n  max_age: 30s\n  period: 100ms\n  timeout: 100ms\n  failure_threshold: 2\n",
        link.display()
    )
}

/// README: "a probe that hangs costs its own timeout, never a renewal"
/// and "a timeout counts as a failure". The heartbeat file moves onto a
/// hung mount (a FUSE server that never answers, as a hung NFS mount): the
/// probe times out (its stat waits on a thread of its own, and the next
/// period reports that it has not returned), the leader hands over for
/// health and keeps answering HTTP. Before the fix, stat(2) ran on the
/// runtime and froze the whole daemon.
#[test]
fn a_file_probe_on_a_hung_mount_times_out_and_the_leader_hands_over() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = HungMount::new(dir.path());
    let real = dir.path().join("heartbeat");
    fs::write(&real, "").expect("heartbeat");
    let link = dir.path().join("a-heartbeat");
    std::os::unix::fs::symlink(&real, &link).expect("link");
    let a = Leaderd::start(
        &format!("{}{}", config("hungfile", &redis.url()), file_probe(&link)),
        "a",
    );
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let b = Leaderd::start(
        &format!("{}{}", config("hungfile", &redis.url()), file_probe(&real)),
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
    // a's heartbeat now lives on the hung mount.
    fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink(mount.path(), &link).expect("relink");
    let handed_over = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        b.is_leading()
    });
    // Expected: b leads because a's probe timed out and a handed over
    // (reason unhealthy), and a still answers HTTP.
    let metrics = a
        .try_get("/metrics", Duration::from_secs(2))
        .map(|(_, m)| m);
    let status = a.try_status();
    let log = a.log();
    drop(b);
    drop(a);
    drop(mount);
    let timeouts = metrics
        .as_deref()
        .map(|m| metric_sum(m, "leaderd_health_checks_total", &[("result", "timeout")]));
    let handed_over_for_health = metrics.as_deref().map(|m| {
        metric_sum(
            m,
            "leaderd_leadership_lost_total",
            &[("reason", "unhealthy")],
        )
    });
    assert!(
        handed_over && timeouts.is_some_and(|t| t >= 1.0) && handed_over_for_health == Some(1.0),
        "a's heartbeat is on a hung mount: b leads: {handed_over}; a's probe timeouts: {timeouts:?}; a's hand-overs for health: {handed_over_for_health:?}; a's status: {status:?}\n--- a's log ---\n{log}"
    );
}

/// README, "Acting on leadership": when the leader process exits,
/// `on_exit: release` "steps down and releases the lease, then stays out of
/// the race for one retry_period so that another candidate takes over".
/// With `election.priority`, the candidate that resigned stays present and
/// healthy in `…:preferred`, so acquire.lua keeps the vacancy *for it* for
/// one retry_period — exactly as long as it sits out: the others defer to
/// it and the failing node takes the lease back (a failing leader process
/// keeps its node leading, restarting on every term).
#[test]
fn a_preferred_leader_whose_process_fails_lets_another_take_over() {
    let redis = RedisServer::start();
    let high = format!(
        "{}leader_process:\n  command: [\"sh\", \"-c\", \"sleep 0.3; exit 1\"]\n  grace_period: 100ms\n  on_exit: release\n",
        config("resign", &redis.url())
            .replace("  name: resign\n", "  name: resign\n  priority: 10\n")
    );
    let low = format!(
        "{}leader_process:\n  command: [\"sleep\", \"600\"]\n  grace_period: 100ms\n",
        config("resign", &redis.url())
    );
    let a = Leaderd::start(&high, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let b = Leaderd::start(&low, "b");
    wait_until(PATIENCE, "b is listed", || {
        a.try_status()
            .is_some_and(|s| s["candidates"].as_array().is_some_and(|c| c.len() == 2))
    });
    let a_terms_before = a.metric("leaderd_leadership_acquired_total");
    wait_until(PATIENCE, "b leads", || b.is_leading());
    let a_terms = a.metric("leaderd_leadership_acquired_total") - a_terms_before;
    assert_eq!(
        a_terms,
        0.0,
        "a's leader process failed, a resigned, yet a took the lease back {a_terms} time(s) before b led; a's log:\n{}",
        a.log()
    );
}

/// README: 200 means the switchover was carried out. When the leader dies
/// (here: frozen) right after a step-down is requested, the daemon that
/// took the request sees a new leader and answers 200 "done" — but the
/// record stays in the store (only the old leader's release would have
/// deleted it), so the *new* leader reads it at its first renewal and
/// steps down too: one request, two hand-overs. The record names the
/// leader it was meant for (`leader`), but `handover::decide` ignores it.
#[test]
fn a_switchover_answered_done_is_not_carried_out_again_by_the_next_leader() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("admin-token");
    fs::write(&token, TOKEN).expect("token");
    let cfg = config("twice", &redis.url()).replace(
        "http:\n  listen: \"127.0.0.1:0\"\n",
        &format!(
            "http:\n  listen: \"127.0.0.1:0\"\n  admin_token_file: {}\n",
            token.display()
        ),
    );
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let b = Leaderd::start(&cfg, "b");
    let c = Leaderd::start(&cfg, "c");
    wait_until(PATIENCE, "every candidate is listed", || {
        b.try_status()
            .is_some_and(|s| s["candidates"].as_array().is_some_and(|c| c.len() == 3))
    });
    a.signal("STOP");
    let answer = post(&b, "POST", "{}");
    eprintln!("step-down while a is frozen: {answer:?}");
    std::thread::sleep(LEASE * 2);
    let pending = post(&b, "GET", "");
    let switchovers: f64 = [&b, &c]
        .iter()
        .map(|d| {
            metric_sum(
                &d.metrics(),
                "leaderd_leadership_lost_total",
                &[("reason", "switchover")],
            )
        })
        .sum();
    a.signal("CONT");
    assert!(
        !(answer.0 == 200 && switchovers > 0.0),
        "the step-down was answered {answer:?}, then the next leader carried it out again ({switchovers} hand-overs by b or c); pending now: {pending:?}"
    );
}
