//! Leader-only processes never outlive leaderd's control: whatever happens
//! to the daemon (frozen with SIGSTOP, killed with SIGKILL, a second signal
//! during shutdown), every process of its term is killed before another
//! candidate can lead, and nothing it started is left behind.
//!
//! The processes are watched directly (`support/procs.rs`): their pids are
//! followed in `/proc` on this machine's monotonic clock, so an overlap is
//! seen even if every leaderd said the right thing.

#[path = "support/procs.rs"]
mod procs;
mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use procs::{ProcessWatcher, recording_command, running};
use support::*;

/// The shared config: lease 1 s, renew 600 ms, retry 150 ms, and a leader
/// process that records itself in `pids`.
fn guarded(name: &str, redis: &RedisServer, pids: &Path, extra: &str) -> String {
    format!(
        "{}leader_process:\n  command: {}\n  grace_period: 200ms\n{extra}",
        config(name, &redis.url()),
        recording_command(pids)
    )
}

fn wait_running(watcher: &ProcessWatcher, identity: &str) {
    // The shell and its background child.
    wait_until(
        PATIENCE,
        &format!("{identity}'s leader process runs"),
        || watcher.running_of(identity).len() == 2,
    );
}

#[test]
fn a_frozen_leaderd_s_leader_process_is_killed_before_anyone_else_leads() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let watcher = ProcessWatcher::start(&dir.path().join("pids"));
    let cfg = guarded("frozen", &redis, watcher.file(), "");
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    wait_running(&watcher, "a");
    let b = Leaderd::start(&cfg, "b");
    wait_until(PATIENCE, "b sees a", || b.status()["leader"] == "a");

    a.signal("STOP");
    // Killed while a is still stopped: nothing of a's runs any more.
    wait_until(PATIENCE, "a's leader processes are gone", || {
        watcher.running_of("a").is_empty()
    });
    wait_until(PATIENCE, "b leads", || b.is_leading());
    wait_running(&watcher, "b");
    watcher.assert_no_overlap();
    assert!(
        b.log().contains("became leader"),
        "b never led:\n{}",
        b.log()
    );

    // Thawed, a finds its term over and starts nothing for it.
    a.signal("CONT");
    wait_until(PATIENCE, "a answers as a follower", || {
        a.try_status()
            .is_some_and(|s| s["is_leader"] == false && s["leader"] == "b")
    });
    assert!(watcher.running_of("a").is_empty(), "{:?}", watcher.lives());
    watcher.assert_no_overlap();
    let log = a.log();
    assert!(
        log.contains("guard") && log.contains("killed"),
        "the guard's kill is not in a's log:\n{log}"
    );
}

#[test]
fn a_killed_leaderd_leaves_no_leader_process_behind() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let watcher = ProcessWatcher::start(&dir.path().join("pids"));
    let cfg = guarded("killed", &redis, watcher.file(), "");
    // a's own TMPDIR, to see its term file's directory go.
    let a_tmp = dir.path().join("a-tmp");
    fs::create_dir(&a_tmp).expect("a's TMPDIR");
    let a = Leaderd::builder(&cfg)
        .identity("a")
        .env("TMPDIR", a_tmp.to_str().expect("utf-8 path"))
        .start();
    wait_until(PATIENCE, "a leads", || a.is_leading());
    wait_running(&watcher, "a");
    let b = Leaderd::start(&cfg, "b");
    wait_until(PATIENCE, "b sees a", || b.status()["leader"] == "a");
    let entries = |path: &Path| fs::read_dir(path).map_or(0, Iterator::count);
    assert_eq!(entries(&a_tmp), 1, "a's term file directory");

    a.kill();
    wait_until(PATIENCE, "a's orphaned leader processes are gone", || {
        watcher.running_of("a").is_empty()
    });
    wait_until(PATIENCE, "b leads", || b.is_leading());
    wait_running(&watcher, "b");
    watcher.assert_no_overlap();
    // The guard removed what a could not: no stale term file is left.
    wait_until(PATIENCE, "a's term file directory is removed", || {
        entries(&a_tmp) == 0
    });
}

#[test]
fn a_hook_running_for_the_term_is_killed_when_leaderd_freezes() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let watcher = ProcessWatcher::start(&dir.path().join("pids"));
    // started_leading records itself and hangs (within its timeout).
    let hook = recording_command(watcher.file());
    let cfg = format!(
        "{}hooks:\n  started_leading: {hook}\n  timeout: 60s\n",
        config("hookfreeze", &redis.url())
    );
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    wait_running(&watcher, "a");
    a.signal("STOP");
    wait_until(PATIENCE, "a's started_leading hook is gone", || {
        watcher.running_of("a").is_empty()
    });
    a.signal("CONT");
}

#[test]
fn a_second_signal_kills_the_leader_process_then_exits_130() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let watcher = ProcessWatcher::start(&pids);
    // The leader process ignores SIGTERM, so the shutdown waits its grace
    // period; the operator does not want to wait.
    let file = pids.display();
    let cfg = format!(
        "{}leader_process:\n  command: [\"sh\", \"-c\", \"trap '' TERM; echo \\\"$$ $LEADERD_FENCING_TOKEN $LEADERD_IDENTITY\\\" >> {file}; sleep 600 & echo \\\"$! $LEADERD_FENCING_TOKEN $LEADERD_IDENTITY child\\\" >> {file}; exec sleep 600\"]\n  grace_period: 2s\n",
        config_with(
            "second",
            &redis.url(),
            Duration::from_secs(4),
            Duration::from_secs(1),
            Duration::from_millis(250)
        )
    );
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    wait_running(&watcher, "a");
    a.signal("INT");
    wait_until(PATIENCE, "a stepped down", || {
        a.log().contains("stopping the leader process")
    });
    a.signal("INT");
    assert_eq!(a.wait_exit(PATIENCE), Some(130), "{}", a.log());
    // SIGKILL was sent before the exit; dying takes the kernel a moment.
    wait_until(PATIENCE, "the term's processes are gone", || {
        watcher.lives().iter().all(|l| !running(l.pid))
    });
}

#[test]
fn a_second_signal_kills_a_running_stopped_leading_hook_then_exits_130() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let watcher = ProcessWatcher::start(&pids);
    let cfg = format!(
        "{}hooks:\n  stopped_leading: {}\n  timeout: 60s\n",
        config("secondhook", &redis.url()),
        recording_command(&pids)
    );
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    a.signal("INT");
    wait_running(&watcher, "a");
    a.signal("INT");
    assert_eq!(a.wait_exit(PATIENCE), Some(130), "{}", a.log());
    wait_until(PATIENCE, "the hook's processes are gone", || {
        watcher.lives().iter().all(|l| !running(l.pid))
    });
    assert!(
        a.log().contains("second signal: killing every process"),
        "{}",
        a.log()
    );
}

#[test]
fn the_term_file_tells_the_leader_process_until_when_it_may_act() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = dir.path().join("term-file-path");
    // The leader process tells the test where its term file is.
    let cfg = format!(
        "{}leader_process:\n  command: [\"sh\", \"-c\", \"echo $LEADERD_TERM_FILE > {}; exec sleep 600\"]\n  grace_period: 200ms\n",
        config("termfile", &redis.url()),
        seen.display()
    );
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let path = wait_for(
        PATIENCE,
        "the leader process wrote LEADERD_TERM_FILE",
        || {
            fs::read_to_string(&seen)
                .ok()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
        },
    );
    let token = a.status()["fencing_token"].as_u64().expect("a's token");
    let read = || -> (u64, u64) {
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut words = text.split_whitespace().map(|w| w.parse::<u64>().ok());
        match (words.next().flatten(), words.next().flatten()) {
            (Some(t), Some(until)) => (t, until),
            _ => (0, 0),
        }
    };
    // While a leads, the deadline is ahead and keeps moving with renewals.
    let (t, first) = read();
    assert_eq!(t, token, "term file holds another token");
    assert!(first > monotonic_ns(), "term file deadline already passed");
    wait_until(PATIENCE, "renewals move the deadline", || read().1 > first);

    // Frozen leaderd: the deadline in the file runs out on its own.
    a.signal("STOP");
    wait_until(PATIENCE, "the frozen term's deadline passes", || {
        read().1 <= monotonic_ns()
    });
    a.signal("CONT");

    // After a graceful stop, the file no longer grants anything.
    a.signal("TERM");
    assert_eq!(a.wait_exit(PATIENCE), Some(0), "{}", a.log());
    let (_, until) = read();
    assert!(
        until <= monotonic_ns(),
        "a stopped leader's term file is valid"
    );
}

/// CLOCK_MONOTONIC in ns, the clock of the term file.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

#[test]
fn as_pid_1_leaderd_reaps_orphaned_grandchildren() {
    let redis = RedisServer::start();
    // The leader process leaves orphans behind: each subshell exits at
    // once, so its `sleep` is re-parented to PID 1 of the namespace.
    let cfg = format!(
        "{}leader_process:\n  command: [\"sh\", \"-c\", \"for i in 1 2 3 4 5 6 7 8 9 10; do (sleep 0.3 &); done; exec sleep 600\"]\n  grace_period: 200ms\n",
        config("pid1", &redis.url())
    );
    let a = Leaderd::builder(&cfg)
        .identity("a")
        .wrapped_in(&["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"])
        .start();
    wait_until(PATIENCE, "a leads", || a.is_leading());
    // PID 1 of the namespace: unshare's child.
    let init = wait_for(PATIENCE, "the namespace's PID 1", || {
        children_of(a.pid()).into_iter().next()
    });
    wait_until(PATIENCE, "orphans are re-parented to PID 1", || {
        children_of(init)
            .iter()
            .any(|pid| cmdline(*pid) == "sleep 0.3")
    });
    wait_until(PATIENCE, "every orphan is reaped (no zombie left)", || {
        children_of(init)
            .iter()
            .all(|pid| cmdline(*pid) != "sleep 0.3" && running(*pid))
    });
    // unshare ignores SIGTERM; PID 1 forwards it to the daemon, which
    // stops gracefully, and PID 1 exits with the daemon's status.
    send_signal(init, "TERM");
    assert_eq!(a.wait_exit(PATIENCE), Some(0), "{}", a.log());
}

/// Pids whose parent is `parent` (from `/proc`).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// The command line of `pid`, arguments separated by spaces.
fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            String::from_utf8_lossy(&raw)
                .trim_end_matches('\0')
                .replace('\0', " ")
        })
        .unwrap_or_default()
}

// A term hook cut short by the term's end (attacker review of e8d7f51).

const ADMIN_TOKEN: &str = "s3cret-token";

/// A started_leading hook that records itself (and a background child) like
/// `recording_command`, but ignores SIGTERM, as a hook doing a long warm-up
/// with `trap '' TERM` (or a JVM with its own handler that takes a while)
/// would.
fn stubborn_hook(file: &std::path::Path) -> String {
    let file = file.display();
    format!(
        "[\"sh\", \"-c\", \"trap '' TERM; echo \\\"$$ $LEADERD_FENCING_TOKEN $LEADERD_IDENTITY\\\" >> {file}; sleep 600 & echo \\\"$! $LEADERD_FENCING_TOKEN $LEADERD_IDENTITY child\\\" >> {file}; wait\"]"
    )
}

/// Two candidates sharing the stubborn started_leading hook; `a` leads,
/// its hook runs, and `b` is listed. Returns (redis, dir, watcher, a, b).
fn leader_with_stubborn_hook(
    name: &str,
) -> (
    RedisServer,
    tempfile::TempDir,
    ProcessWatcher,
    Leaderd,
    Leaderd,
) {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let watcher = ProcessWatcher::start(&dir.path().join("pids"));
    let token_file = dir.path().join("admin-token");
    fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).expect("write token");
    let cfg = format!(
        "{}hooks:\n  started_leading: {}\n  timeout: 60s\n",
        config(name, &redis.url()).replace(
            "http:\n  listen: \"127.0.0.1:0\"\n",
            &format!(
                "http:\n  listen: \"127.0.0.1:0\"\n  admin_token_file: {}\n",
                token_file.display()
            ),
        ),
        stubborn_hook(watcher.file())
    );
    let a = Leaderd::start(&cfg, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let b = Leaderd::start(&cfg, "b");
    wait_until(PATIENCE, "both candidates are listed", || {
        a.try_status()
            .is_some_and(|s| s["candidates"].as_array().is_some_and(|c| c.len() == 2))
    });
    wait_until(PATIENCE, "a's started_leading hook runs", || {
        watcher.running_of("a").len() == 2
    });
    (redis, dir, watcher, a, b)
}

fn switch_to_b(a: &Leaderd) {
    let (code, body) = http_request_with(
        a.addr(),
        "POST",
        "/switchover",
        "{\"candidate\": \"b\"}",
        Some(&format!("Bearer {ADMIN_TOKEN}")),
        PATIENCE,
    )
    .expect("POST /switchover");
    assert_eq!(code, 200, "{body}");
}

/// A started_leading hook cut short by the end of its term is SIGTERMed and
/// only SIGKILLed HOOK_KILL_GRACE later by a detached task, but the term is
/// reported stopped (`Ended` to the guard, `busy_term` cleared) at once: the
/// elector releases, the next leader's hook starts, and the old term's hook
/// still runs. Expected: no overlap. On e8d7f51: the two hooks overlap for
/// ~90 ms on a switchover during a started_leading hook.
#[test]
fn a_cut_short_started_leading_hook_never_overlaps_the_next_term() {
    let (_redis, _dir, watcher, a, _b) = leader_with_stubborn_hook("stubbornhook");
    switch_to_b(&a);
    wait_until(PATIENCE, "b's started_leading hook runs", || {
        watcher.running_of("b").len() == 2
    });
    wait_until(PATIENCE, "a's hook is gone", || {
        watcher.running_of("a").is_empty()
    });
    watcher.assert_no_overlap();
}

/// The same hook, and leaderd `a` SIGKILLed right after the switchover (the
/// detached SIGKILL task never runs): the guard was already told `ended`
/// for the term, so it forgets the hook's group and does not kill it when
/// the pipe closes; PR_SET_PDEATHSIG reaches the shell only. Expected:
/// nothing of a's term survives a. On e8d7f51: the hook's background child
/// runs on (forever), next to b's term.
#[test]
fn a_cut_short_hook_does_not_outlive_a_killed_leaderd() {
    let (_redis, _dir, watcher, a, _b) = leader_with_stubborn_hook("stubbornkill");
    switch_to_b(&a);
    a.kill();
    wait_until(PATIENCE, "b's started_leading hook runs", || {
        watcher.running_of("b").len() == 2
    });
    wait_until(PATIENCE, "nothing of a's term survives a", || {
        watcher.running_of("a").is_empty()
    });
}

/// A term file that cannot be written (its disk stalls: a busy or network
/// `/tmp`) must not cost the leader its leader process: the guard's
/// deadlines travel on their own, never behind a file write. Here the
/// write blocks for good: a FIFO without a reader takes the place of the
/// file's temporary name, so opening it for writing never returns.
#[test]
fn a_stalled_term_file_write_never_starves_the_guard() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = dir.path().join("tmp");
    fs::create_dir(&runtime).expect("runtime dir");
    let watcher = ProcessWatcher::start(&dir.path().join("pids"));
    let cfg = guarded("stalled", &redis, watcher.file(), "");
    let a = Leaderd::builder(&cfg)
        .identity("a")
        .env("TMPDIR", runtime.to_str().expect("utf-8 path"))
        .start();
    // leaderd made its private directory and wrote the first (empty) term.
    let term_dir = wait_for(PATIENCE, "leaderd's term file directory", || {
        fs::read_dir(&runtime)
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| path.join("term").exists())
    });
    let fifo = term_dir.join("term.next");
    make_fifo(&fifo);

    wait_until(PATIENCE, "a leads", || a.is_leading());
    wait_running(&watcher, "a");
    let token = a.status()["fencing_token"].as_u64().expect("token");
    // Many renewals later, a still leads the same term and its leader
    // process still runs: nothing waited for the term file.
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < until {
        let status = a.status();
        assert_eq!(status["is_leader"], true, "a lost its term:\n{}", a.log());
        assert_eq!(status["fencing_token"].as_u64(), Some(token), "{}", a.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(watcher.running_of("a").len(), 2, "{}", a.log());
    assert!(!a.log().contains("guard: killed"), "{}", a.log());
    // Wake the stalled write (a non-blocking open for reading does, and
    // returns even if leaderd is gone), so that leaderd can shut down.
    use std::os::unix::fs::OpenOptionsExt;
    let _ = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo);
}
