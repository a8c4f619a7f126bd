//! Hooks and the leader-only process: real shell scripts append one line per
//! event (with a wall-clock timestamp, their pid and the LEADERD_* environment)
//! to a file in a tempdir; the tests read that file back and check order,
//! environment and timing against the election seen over HTTP and in Redis.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Recording scripts
// ---------------------------------------------------------------------------

/// Fields every record carries; `<unset>` marks a variable that was not set.
const FIELDS: &[(&str, &str)] = &[
    ("event", "LEADERD_EVENT"),
    ("reason", "LEADERD_REASON"),
    ("token", "LEADERD_FENCING_TOKEN"),
    ("leader", "LEADERD_LEADER"),
    ("prev", "LEADERD_PREVIOUS_LEADER"),
    ("is_leader", "LEADERD_IS_LEADER"),
    ("identity", "LEADERD_IDENTITY"),
    ("election", "LEADERD_ELECTION"),
    ("status_url", "LEADERD_STATUS_URL"),
];

/// One line of the events file.
#[derive(Debug, Clone)]
struct Rec {
    /// Line number in the file (the order of appends).
    seq: usize,
    /// Wall clock, ns since the epoch (`date +%s%N`).
    ts: u128,
    kind: String,
    pid: u32,
    f: BTreeMap<String, String>,
}

impl Rec {
    fn get(&self, k: &str) -> &str {
        self.f.get(k).map_or("<missing>", String::as_str)
    }
    fn who(&self) -> &str {
        self.get("identity")
    }
    fn event(&self) -> &str {
        self.get("event")
    }
}

/// A tempdir with shell scripts that append records to `events`.
struct Recorder {
    dir: TempDir,
    events: PathBuf,
}

impl Recorder {
    fn new() -> Recorder {
        let dir = tempfile::tempdir().expect("tempdir for hooks");
        let events = dir.path().join("events");
        fs::write(&events, "").expect("create events file");
        Recorder { dir, events }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `body` as a shell script preceded by a `rec KIND [EXTRA]`
    /// function; returns the YAML flow sequence that runs it with `sh`
    /// (not exec'd directly: no ETXTBSY while other tests fork).
    fn script(&self, name: &str, body: &str) -> String {
        let mut fmt = String::from("ts=%s\\tkind=%s\\tpid=%s\\textra=%s");
        let mut args = String::from("\"$(date +%s%N)\" \"$1\" \"$$\" \"${2-}\"");
        for (k, var) in FIELDS {
            fmt.push_str(&format!("\\t{k}=%s"));
            args.push_str(&format!(" \"${{{var}-<unset>}}\""));
        }
        let text = format!(
            "#!/bin/sh\nrec() {{\n  printf '{fmt}\\n' {args} >> '{}'\n}}\n{body}\n",
            self.events.display()
        );
        let path = self.path(name);
        fs::write(&path, text).expect("write script");
        format!("[\"sh\", \"{}\"]", path.display())
    }

    /// A hook that records `hook` and prints a line to stdout.
    fn hook(&self) -> String {
        self.script(
            "hook.sh",
            "rec hook\necho \"hook says $LEADERD_EVENT for $LEADERD_IDENTITY\"\nsleep 0.05\nrec hook-end",
        )
    }

    /// A leader process: records `proc-start`, then sleeps (for at most a
    /// minute). `on_term` is the body of its TERM trap.
    fn leader_process(&self, name: &str, on_term: &str) -> String {
        self.script(
            name,
            &format!(
                "trap '{on_term}' TERM\nrec proc-start\ni=0\nwhile [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\nrec proc-timeout"
            ),
        )
    }

    fn records(&self) -> Vec<Rec> {
        let text = fs::read_to_string(&self.events).unwrap_or_default();
        text.lines()
            .enumerate()
            .filter_map(|(seq, line)| {
                let f: BTreeMap<String, String> = line
                    .split('\t')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                Some(Rec {
                    seq,
                    ts: f.get("ts")?.parse().ok()?,
                    kind: f.get("kind")?.clone(),
                    pid: f.get("pid")?.parse().ok()?,
                    f,
                })
            })
            .collect()
    }

    fn find(&self, pred: impl Fn(&Rec) -> bool) -> Vec<Rec> {
        self.records().into_iter().filter(|r| pred(r)).collect()
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&Rec) -> bool) -> Rec {
        wait_for(PATIENCE, what, || self.records().into_iter().find(&pred))
    }

    fn dump(&self) -> String {
        fs::read_to_string(&self.events).unwrap_or_default()
    }
}

impl Drop for Recorder {
    /// Kills processes still running one of our scripts (a leaderd that was
    /// SIGKILLed leaves its children behind).
    fn drop(&mut self) {
        let dir = self.dir.path().display().to_string();
        for r in self.records() {
            let cmdline = fs::read(format!("/proc/{}/cmdline", r.pid)).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&dir) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &r.pid.to_string()])
                    .status();
            }
        }
        if thread::panicking() {
            eprintln!("--- events ---\n{}--- end of events ---", self.dump());
        }
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after epoch")
        .as_nanos()
}

/// Wall-clock ns of an earlier `Instant`.
fn wall_of(i: Instant) -> u128 {
    now_ns() - i.elapsed().as_nanos()
}

/// From a script's timestamp to an `Instant` of the test.
fn since(ts: u128, then: Instant) -> Duration {
    Duration::from_nanos(wall_of(then).saturating_sub(ts) as u64)
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits until `pid` is gone; returns when that was first seen.
fn wait_gone(pid: u32, timeout: Duration, what: &str) -> Instant {
    wait_for(timeout, what, || (!alive(pid)).then(Instant::now))
}

fn token_of(d: &Leaderd) -> u64 {
    let st = d.status();
    st["fencing_token"]
        .as_u64()
        .unwrap_or_else(|| panic!("{} has no fencing_token: {st}", d.identity()))
}

fn hook_runs(d: &Leaderd, hook: &str, result: &str) -> f64 {
    metric_sum(
        &d.metrics(),
        "leaderd_hook_runs_total",
        &[("hook", hook), ("result", result)],
    )
}

fn lost(d: &Leaderd, reason: &str) -> f64 {
    metric_sum(
        &d.metrics(),
        "leaderd_leadership_lost_total",
        &[("reason", reason)],
    )
}

/// The election config with extra top-level YAML sections appended.
fn cfg(name: &str, redis: &RedisServer, extra: &str) -> String {
    format!("{}{extra}", config(name, &redis.url()))
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Asserts every documented variable is set and the per-instance ones match.
fn assert_env(r: &Rec, d: &Leaderd, election: &str) {
    for (k, var) in FIELDS {
        assert_ne!(r.get(k), "<unset>", "{var} not set for {r:?}");
    }
    assert_eq!(r.get("identity"), d.identity(), "{r:?}");
    assert_eq!(r.get("election"), election, "{r:?}");
    assert_eq!(r.get("status_url"), format!("{}/status", d.url()), "{r:?}");
    assert!(
        ["true", "false"].contains(&r.get("is_leader")),
        "LEADERD_IS_LEADER {:?}",
        r.get("is_leader")
    );
}

// ---------------------------------------------------------------------------
// Hooks
// ---------------------------------------------------------------------------

#[test]
fn hooks_fire_in_order_with_the_documented_environment() {
    let redis = RedisServer::start();
    let rec = Recorder::new();
    let hook = rec.hook();
    let name = "hookorder";
    let c = cfg(
        name,
        &redis,
        &format!(
            "hooks:\n  started_leading: {hook}\n  stopped_leading: {hook}\n  new_leader: {hook}\n  timeout: 250ms\n"
        ),
    );
    let a = Leaderd::start(&c, "ho-a");
    wait_until(PATIENCE, "ho-a leads", || a.is_leading());
    let ta = token_of(&a);
    let a_started = rec.wait_for("started_leading on ho-a", |r| {
        r.who() == "ho-a" && r.event() == "started_leading"
    });
    let b = Leaderd::start(&c, "ho-b");
    let cc = Leaderd::start(&c, "ho-c");
    for d in [&b, &cc] {
        rec.wait_for("new_leader on a follower", |r| {
            r.who() == d.identity() && r.event() == "new_leader"
        });
    }
    rec.wait_for("new_leader on ho-a itself", |r| {
        r.who() == "ho-a" && r.event() == "new_leader" && r.get("leader") == "ho-a"
    });
    wait_until(PATIENCE, "ho-a counts its started_leading run", || {
        hook_runs(&a, "started_leading", "ok") >= 1.0
    });
    assert!(
        a.metrics().contains("leaderd_hook_duration_seconds"),
        "no leaderd_hook_duration_seconds in /metrics"
    );
    wait_until(PATIENCE, "hook stdout in leaderd's log, prefixed", || {
        a.log()
            .contains("hook started_leading: hook says started_leading for ho-a")
    });

    // Signals only once an instance's hooks are done: a loss of leadership
    // (and a shutdown) kills a hook still running, by contract.
    let idle = |who: &str| {
        wait_until(PATIENCE, &format!("hooks of {who} are done"), || {
            let mine = rec.find(|r| r.who() == who);
            let begun = mine.iter().filter(|r| r.kind == "hook").count();
            begun == mine.iter().filter(|r| r.kind == "hook-end").count()
        })
    };

    // A follower that never led shuts down: no stopped_leading.
    idle("ho-c");
    cc.signal("TERM");
    assert_eq!(cc.wait_exit(PATIENCE), Some(0));
    // Handover a -> b, then b shuts down.
    idle("ho-a");
    a.signal("TERM");
    assert_eq!(a.wait_exit(PATIENCE), Some(0));
    wait_until(PATIENCE, "ho-b leads", || b.is_leading());
    let tb = token_of(&b);
    rec.wait_for("started_leading on ho-b", |r| {
        r.who() == "ho-b" && r.event() == "started_leading"
    });
    rec.wait_for("new_leader on ho-b naming itself", |r| {
        r.who() == "ho-b" && r.event() == "new_leader" && r.get("leader") == "ho-b"
    });
    idle("ho-b");
    b.signal("TERM");
    assert_eq!(b.wait_exit(PATIENCE), Some(0));
    rec.wait_for("stopped_leading on ho-b", |r| {
        r.who() == "ho-b" && r.event() == "stopped_leading"
    });
    thread::sleep(Duration::from_millis(200)); // stray records would show up now

    let all = rec.records();
    let of = |who: &str, event: &str| -> Vec<Rec> {
        all.iter()
            .filter(|r| r.kind == "hook" && r.who() == who && r.event() == event)
            .cloned()
            .collect()
    };
    for r in &all {
        let d = [&a, &b, &cc]
            .into_iter()
            .find(|d| d.identity() == r.who())
            .unwrap_or_else(|| panic!("record from an unknown identity: {r:?}"));
        assert_env(r, d, name);
    }

    // One hook at a time per instance: each `hook` record is followed by its
    // `hook-end` (same pid) before the next hook of that instance begins.
    for who in ["ho-a", "ho-b", "ho-c"] {
        let mine: Vec<&Rec> = all
            .iter()
            .filter(|r| r.who() == who && r.kind.starts_with("hook"))
            .collect();
        for pair in mine.chunks(2) {
            assert!(
                pair.len() == 2
                    && pair[0].kind == "hook"
                    && pair[1].kind == "hook-end"
                    && pair[0].pid == pair[1].pid,
                "{who}: hooks overlap or one was cut short: {pair:?}"
            );
        }
    }

    // ho-a: started (acquired), then stopped (shutdown).
    let (sa, xa) = (of("ho-a", "started_leading"), of("ho-a", "stopped_leading"));
    assert_eq!((sa.len(), xa.len()), (1, 1), "ho-a: {sa:?} {xa:?}");
    assert_eq!(sa[0].seq, a_started.seq);
    assert_eq!(sa[0].get("reason"), "acquired");
    assert_eq!(sa[0].get("is_leader"), "true");
    assert_eq!(sa[0].get("leader"), "ho-a");
    assert_eq!(sa[0].get("token"), ta.to_string());
    assert!(
        xa[0].seq > sa[0].seq,
        "stopped_leading before started_leading"
    );
    assert_eq!(xa[0].get("reason"), "shutdown", "{:?}", xa[0]);
    assert_eq!(xa[0].get("is_leader"), "false", "{:?}", xa[0]);
    assert!(
        [ta.to_string().as_str(), ""].contains(&xa[0].get("token")),
        "stopped_leading of ho-a carries token {:?}, its term had {ta}",
        xa[0].get("token")
    );
    let na = of("ho-a", "new_leader");
    assert!(
        na.iter()
            .any(|r| r.get("leader") == "ho-a" && r.get("token") == ta.to_string()),
        "ho-a's new_leader about itself: {na:?}"
    );

    // ho-c never led: only new_leader, the first one naming ho-a.
    assert!(of("ho-c", "started_leading").is_empty());
    assert!(
        of("ho-c", "stopped_leading").is_empty(),
        "stopped_leading ran on a candidate that never led: {:?}",
        of("ho-c", "stopped_leading")
    );
    for who in ["ho-b", "ho-c"] {
        let first = of(who, "new_leader")
            .into_iter()
            .next()
            .expect("new_leader on follower");
        assert_eq!(first.get("leader"), "ho-a", "{first:?}");
        assert_eq!(first.get("token"), ta.to_string(), "{first:?}");
        assert_eq!(first.get("prev"), "", "{first:?}");
        assert_eq!(first.get("is_leader"), "false", "{first:?}");
        assert_eq!(first.get("reason"), "observed", "{first:?}");
    }

    // ho-b: started only after ho-a's stopped_leading ran (a hook finishes
    // before the release that lets b acquire), then stopped on shutdown.
    let (sb, xb) = (of("ho-b", "started_leading"), of("ho-b", "stopped_leading"));
    assert_eq!((sb.len(), xb.len()), (1, 1), "ho-b: {sb:?} {xb:?}");
    assert!(
        sb[0].seq > xa[0].seq,
        "ho-b's started_leading (line {}) before ho-a's stopped_leading (line {})",
        sb[0].seq,
        xa[0].seq
    );
    assert_eq!(sb[0].get("reason"), "acquired");
    assert_eq!(sb[0].get("leader"), "ho-b");
    assert_eq!(sb[0].get("is_leader"), "true");
    assert_eq!(sb[0].get("token"), tb.to_string());
    assert!(tb > ta);
    assert!(xb[0].seq > sb[0].seq);
    assert_eq!(xb[0].get("reason"), "shutdown");
    let nb_self = of("ho-b", "new_leader")
        .into_iter()
        .find(|r| r.get("leader") == "ho-b")
        .expect("checked above");
    assert_eq!(nb_self.get("token"), tb.to_string(), "{nb_self:?}");
    assert!(
        ["ho-a", ""].contains(&nb_self.get("prev")),
        "ho-b's new_leader about itself names previous leader {:?}",
        nb_self.get("prev")
    );
}

#[test]
fn hanging_hook_is_killed_with_its_process_group_at_timeout() {
    let redis = RedisServer::start();
    let rec = Recorder::new();
    let hang = rec.script(
        "hang.sh",
        "sleep 30 &\nrec hang-start \"$!\"\nsleep 30\nrec hang-end",
    );
    let hook = rec.hook();
    let timeout = Duration::from_millis(250);
    let c = cfg(
        "hookhang",
        &redis,
        &format!(
            "hooks:\n  started_leading: {hang}\n  new_leader: {hook}\n  timeout: {}\n",
            ms(timeout)
        ),
    );
    let a = Leaderd::start(&c, "hh-a");
    wait_until(PATIENCE, "hh-a leads", || a.is_leading());
    let start = rec.wait_for("the hanging hook started", |r| r.kind == "hang-start");
    let grandchild: u32 = start.get("extra").parse().expect("grandchild pid");
    let hook_gone = wait_gone(start.pid, PATIENCE, "the hanging hook is killed");
    let gc_gone = wait_gone(
        grandchild,
        Duration::from_secs(2),
        "its grandchild sleep is killed too",
    );
    let killed_after = since(start.ts, hook_gone.max(gc_gone));
    eprintln!("hook and grandchild gone {killed_after:?} after the hook started");
    assert!(
        killed_after >= timeout - Duration::from_millis(100),
        "hook killed after {killed_after:?}, before its timeout {timeout:?}"
    );
    assert!(
        killed_after < timeout + Duration::from_millis(1000),
        "hook and grandchild still alive {killed_after:?} after start (timeout {timeout:?})"
    );
    assert!(rec.find(|r| r.kind == "hang-end").is_empty());
    wait_until(PATIENCE, "the timeout is counted", || {
        hook_runs(&a, "started_leading", "timeout") >= 1.0
    });
    assert_eq!(hook_runs(&a, "started_leading", "ok"), 0.0);

    // The election goes on: still leading, other hooks still run.
    rec.wait_for("new_leader hook ran", |r| r.event() == "new_leader");
    let until = Instant::now() + LEASE * 2;
    while Instant::now() < until {
        assert!(a.is_leading(), "hh-a stopped leading after a hook timeout");
    }
    assert_eq!(a.metric("leaderd_leadership_lost_total"), 0.0);
}

#[test]
fn hook_still_running_at_step_down_is_killed_and_the_process_never_starts() {
    let redis = RedisServer::start();
    let rec = Recorder::new();
    // Hangs the first time only (well within its 5s timeout).
    let marker = rec.path("hung-once");
    let promote = rec.script(
        "promote.sh",
        &format!(
            "if [ ! -e '{m}' ]; then touch '{m}'; sleep 30 & rec hang-start \"$!\"; sleep 30; rec hang-end; fi",
            m = marker.display()
        ),
    );
    let proc_ = rec.leader_process("proc.sh", TERM_EXITS);
    let c = cfg(
        "hookloss",
        &redis,
        &format!(
            "hooks:\n  started_leading: {promote}\n  timeout: 5s\nleader_process:\n  command: {proc_}\n  grace_period: 150ms\n"
        ),
    );
    let a = Leaderd::start(&c, "hl-a");
    wait_until(PATIENCE, "hl-a leads", || a.is_leading());
    let t0 = token_of(&a);
    let hang = rec.wait_for("started_leading hangs", |r| r.kind == "hang-start");
    let grandchild: u32 = hang.get("extra").parse().expect("grandchild pid");
    let r0 = renewals_ok(&a.metrics());
    wait_until(PATIENCE, "a renewal", || renewals_ok(&a.metrics()) > r0);

    let frozen = Instant::now();
    redis.freeze();
    let hook_gone = wait_gone(
        hang.pid,
        PATIENCE,
        "the running hook is killed at step-down",
    );
    let gc_gone = wait_gone(grandchild, Duration::from_secs(2), "its grandchild too");
    let gone = hook_gone.max(gc_gone) - frozen;
    eprintln!("hook killed {gone:?} after Redis froze");
    assert!(
        gone < LEASE,
        "started_leading hook still running {gone:?} after Redis froze (lease {LEASE:?})"
    );
    assert!(
        rec.find(|r| r.kind == "proc-start").is_empty(),
        "the leader process started after a lost term: {}",
        rec.dump()
    );

    redis.thaw();
    let again = rec.wait_for("the next term starts the leader process", |r| {
        r.kind == "proc-start"
    });
    let t1: u64 = again.get("token").parse().expect("token");
    assert!(
        t1 > t0,
        "leader process of the lost term {t0} started: {again:?}"
    );
}

#[test]
fn missing_hook_binary_is_counted_not_found_and_election_goes_on() {
    let redis = RedisServer::start();
    let rec = Recorder::new();
    let hook = rec.hook();
    let missing = "/nonexistent/leaderd-test/promote";
    let c = cfg(
        "hookmissing",
        &redis,
        &format!(
            "hooks:\n  started_leading: [\"{missing}\", \"--now\"]\n  stopped_leading: [\"{missing}\"]\n  new_leader: {hook}\n  timeout: 250ms\n"
        ),
    );
    let a = Leaderd::start(&c, "hm-a");
    wait_until(PATIENCE, "hm-a leads", || a.is_leading());
    wait_until(PATIENCE, "not_found counted", || {
        hook_runs(&a, "started_leading", "not_found") >= 1.0
    });
    let log = a.log();
    let line = log
        .lines()
        .find(|l| l.contains(missing))
        .unwrap_or_else(|| panic!("nothing in the log names {missing}:\n{log}"));
    assert!(
        line.contains("ERROR"),
        "the line naming {missing} is not an error: {line}"
    );
    rec.wait_for("new_leader hook ran", |r| r.event() == "new_leader");
    let until = Instant::now() + LEASE * 2;
    while Instant::now() < until {
        assert!(a.is_leading(), "hm-a stopped leading after a missing hook");
    }
    a.signal("TERM");
    assert_eq!(a.wait_exit(PATIENCE), Some(0), "{}", a.log());
}

#[test]
fn failing_started_leading_with_step_down_on_failure_hands_over() {
    let redis = RedisServer::start();
    let rec = Recorder::new();
    // Fails the first time anywhere, succeeds afterwards.
    let marker = rec.path("failed-once");
    let promote = rec.script(
        "promote.sh",
        &format!(
            "rec hook\nif [ ! -e '{m}' ]; then touch '{m}'; rec promote-failed; exit 1; fi",
            m = marker.display()
        ),
    );
    let hook = rec.hook();
    let c = cfg(
        "stepdown",
        &redis,
        &format!(
            "hooks:\n  started_leading: {promote}\n  stopped_leading: {hook}\n  timeout: 250ms\n  step_down_on_failure: true\n"
        ),
    );
    let cands = start_candidates(&c, "sd", 2);
    let failed = rec.wait_for("a started_leading failed", |r| r.kind == "promote-failed");
    let x = cands
        .iter()
        .position(|d| d.identity() == failed.who())
        .expect("failing candidate");
    let tx: u64 = failed
        .get("token")
        .parse()
        .expect("token of the failed term");
    // (It may lead again later: the counter, not /status, is checked.)
    wait_until(PATIENCE, "the failing candidate counts a step_down", || {
        lost(&cands[x], "step_down") >= 1.0
    });
    assert!(hook_runs(&cands[x], "started_leading", "failed") >= 1.0);
    let stopped = rec.wait_for("stopped_leading after the failed term", |r| {
        r.who() == failed.who() && r.event() == "stopped_leading"
    });
    assert_eq!(stopped.get("reason"), "step_down", "{stopped:?}");
    assert!(stopped.seq > failed.seq);
    let all: Vec<&Leaderd> = cands.iter().collect();
    let (l, t) = wait_for(PATIENCE, "a new term after the step-down", || {
        let l = sole_leader(&all)?;
        let t = cands[l].try_status()?["fencing_token"].as_u64()?;
        (t > tx).then_some((l, t))
    });
    eprintln!(
        "{} leads with token {t} after the step-down",
        cands[l].identity()
    );
}

// ---------------------------------------------------------------------------
// Leader process
// ---------------------------------------------------------------------------

/// TERM trap that records and exits.
const TERM_EXITS: &str = "rec proc-term; exit 0";

#[test]
fn leader_process_runs_only_on_the_leader_after_started_leading() {
    let redis = RedisServer::start();
    let rec = Recorder::new();
    let hook = rec.hook();
    let proc_ = rec.leader_process("proc.sh", TERM_EXITS);
    let name = "lponly";
    let c = cfg(
        name,
        &redis,
        &format!(
            "hooks:\n  started_leading: {hook}\n  timeout: 250ms\nleader_process:\n  command: {proc_}\n  grace_period: 150ms\n"
        ),
    );
    let cands = start_candidates(&c, "lpo", 3);
    let all: Vec<&Leaderd> = cands.iter().collect();
    let l = wait_for_leader(&all, PATIENCE);
    let token = token_of(&cands[l]);
    let started = rec.wait_for("the leader process started", |r| r.kind == "proc-start");
    assert_eq!(started.who(), cands[l].identity(), "{started:?}");
    assert_env(&started, &cands[l], name);
    assert_eq!(started.event(), "started_leading", "{started:?}");
    assert_eq!(started.get("token"), token.to_string(), "{started:?}");
    assert_eq!(started.get("is_leader"), "true");
    assert_eq!(started.get("leader"), cands[l].identity());
    let hook_run = rec
        .find(|r| r.event() == "started_leading" && r.kind == "hook")
        .into_iter()
        .next()
        .expect("started_leading hook ran before the leader process");
    assert!(
        hook_run.seq < started.seq,
        "process started before the hook"
    );

    // Nothing starts anywhere else while the leader keeps leading.
    let until = Instant::now() + LEASE * 3;
    while Instant::now() < until {
        assert_eq!(sole_leader(&all), Some(l));
        thread::sleep(Duration::from_millis(50));
    }
    let starts = rec.find(|r| r.kind == "proc-start");
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert!(alive(started.pid), "the leader process died");
}

#[test]
fn leader_process_is_terminated_before_the_lease_can_expire_when_redis_freezes() {
    let redis = RedisServer::start();
    let rec = Recorder::new();
    let proc_ = rec.leader_process("proc.sh", TERM_EXITS);
    let hook = rec.hook();
    let c = cfg(
        "lpfreeze",
        &redis,
        &format!(
            "hooks:\n  new_leader: {hook}\n  timeout: 250ms\nleader_process:\n  command: {proc_}\n  grace_period: 150ms\n"
        ),
    );
    let a = Leaderd::start(&c, "lpf-a");
    wait_until(PATIENCE, "lpf-a leads", || a.is_leading());
    let t0 = token_of(&a);
    let started = rec.wait_for("the leader process started", |r| r.kind == "proc-start");
    // Right after a renewal, so the lease has all its time left.
    let r0 = renewals_ok(&a.metrics());
    wait_until(PATIENCE, "a renewal", || renewals_ok(&a.metrics()) > r0);

    let frozen_wall = now_ns();
    let frozen = Instant::now();
    redis.freeze();
    let gone = wait_gone(started.pid, PATIENCE, "the leader process is stopped");
    let term = rec.wait_for("the leader process got TERM", |r| r.kind == "proc-term");
    let term_after = Duration::from_nanos((term.ts.saturating_sub(frozen_wall)) as u64);
    eprintln!(
        "TERM trapped {term_after:?}, process gone {:?} after Redis froze (lease {LEASE:?})",
        gone - frozen
    );
    assert!(
        term.ts < frozen_wall + LEASE.as_nanos(),
        "leader process got TERM {term_after:?} after Redis froze: the lease ({LEASE:?}) may have expired first"
    );
    assert!(
        gone - frozen < LEASE,
        "leader process still alive {:?} after Redis froze (lease {LEASE:?})",
        gone - frozen
    );

    redis.thaw();
    wait_until(PATIENCE, "lpf-a leads again", || a.is_leading());
    let t1 = token_of(&a);
    assert!(t1 > t0);
    let again = rec.wait_for("the leader process started again", |r| {
        r.kind == "proc-start" && r.get("token") == t1.to_string()
    });
    assert!(again.seq > term.seq);
    // Same holder, new token: that is a change of leader too.
    rec.wait_for("new_leader for the new token of the same holder", |r| {
        r.event() == "new_leader" && r.get("leader") == "lpf-a" && r.get("token") == t1.to_string()
    });
}

#[test]
fn leader_process_ignoring_sigterm_is_killed_after_grace_period() {
    let redis = RedisServer::start();
    let rec = Recorder::new();
    // The trap records but does not exit: only SIGKILL ends it.
    let proc_ = rec.leader_process("stubborn.sh", "rec proc-term-ignored");
    let grace = Duration::from_millis(150);
    let c = cfg(
        "lpstubborn",
        &redis,
        &format!(
            "leader_process:\n  command: {proc_}\n  grace_period: {}\n",
            ms(grace)
        ),
    );
    let a = Leaderd::start(&c, "lps-a");
    wait_until(PATIENCE, "lps-a leads", || a.is_leading());
    let started = rec.wait_for("the leader process started", |r| r.kind == "proc-start");
    let r0 = renewals_ok(&a.metrics());
    wait_until(PATIENCE, "a renewal", || renewals_ok(&a.metrics()) > r0);

    let frozen = Instant::now();
    redis.freeze();
    let gone = wait_gone(
        started.pid,
        PATIENCE,
        "the stubborn leader process is killed",
    );
    let term = rec.wait_for("TERM reached the process", |r| {
        r.kind == "proc-term-ignored"
    });
    // The trap runs once the current `sleep 0.05` ends (unless the whole
    // group got TERM): the record may lag the signal by up to ~50 ms.
    let term_to_kill = since(term.ts, gone);
    eprintln!(
        "TERM -> gone {term_to_kill:?} (grace {grace:?}); gone {:?} after the freeze",
        gone - frozen
    );
    assert!(
        term_to_kill >= grace - Duration::from_millis(60),
        "killed {term_to_kill:?} after TERM, grace period is {grace:?}"
    );
    assert!(
        term_to_kill < grace + Duration::from_millis(600),
        "still alive {term_to_kill:?} after TERM, grace period is {grace:?}"
    );
    assert!(
        gone - frozen < LEASE,
        "stubborn leader process alive {:?} after Redis froze (lease {LEASE:?})",
        gone - frozen
    );
    assert!(rec.find(|r| r.kind == "proc-timeout").is_empty());
}

#[test]
fn on_exit_release_hands_over_to_another_candidate() {
    let redis = RedisServer::start();
    let rec = Recorder::new();
    let hook = rec.hook();
    // Exits 3 the first time anywhere, runs forever afterwards.
    let marker = rec.path("exited-once");
    let proc_ = rec.script(
        "proc.sh",
        &format!(
            "trap '{TERM_EXITS}' TERM\nrec proc-start\nif [ ! -e '{m}' ]; then touch '{m}'; sleep 0.5; rec proc-exit; exit 3; fi\ni=0\nwhile [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
            m = marker.display()
        ),
    );
    let c = cfg(
        "lprelease",
        &redis,
        &format!(
            "hooks:\n  stopped_leading: {hook}\n  timeout: 150ms\nleader_process:\n  command: {proc_}\n  grace_period: 100ms\n  on_exit: release\n"
        ),
    );
    let cands = start_candidates(&c, "lpr", 2);
    let all: Vec<&Leaderd> = cands.iter().collect();
    let exited = rec.wait_for("the first leader process exited", |r| r.kind == "proc-exit");
    let x = cands
        .iter()
        .position(|d| d.identity() == exited.who())
        .expect("exiting candidate");
    let y = 1 - x;
    let tx: u64 = exited.get("token").parse().expect("token");
    wait_until(PATIENCE, "the other candidate takes over", || {
        sole_leader(&all) == Some(y)
    });
    let ty = token_of(&cands[y]);
    assert!(ty > tx, "{ty} > {tx}");
    let st = cands[x].status();
    assert_eq!(st["is_leader"], false, "{st}");
    assert_eq!(st["reason"], "leader_process_exited", "{st}");
    assert!(lost(&cands[x], "leader_process_exited") >= 1.0);
    let stopped = rec.wait_for("stopped_leading on the released term", |r| {
        r.who() == exited.who() && r.event() == "stopped_leading"
    });
    assert_eq!(
        stopped.get("reason"),
        "leader_process_exited",
        "{stopped:?}"
    );
    let y_start = rec.wait_for("the new leader's process", |r| {
        r.kind == "proc-start" && r.who() == cands[y].identity()
    });
    assert_eq!(y_start.get("token"), ty.to_string());
    // The new leader keeps it.
    let until = Instant::now() + LEASE * 2;
    while Instant::now() < until {
        assert_eq!(sole_leader(&all), Some(y));
        thread::sleep(Duration::from_millis(50));
    }
    assert!(alive(y_start.pid));
}

#[test]
fn on_exit_restart_restarts_in_the_same_term() {
    let redis = RedisServer::start();
    let rec = Recorder::new();
    let proc_ = rec.script(
        "proc.sh",
        "trap 'rec proc-term; exit 0' TERM\nrec proc-start\nsleep 0.2\nrec proc-exit\nexit 1",
    );
    let name = "lprestart";
    let c = cfg(
        name,
        &redis,
        &format!(
            "leader_process:\n  command: {proc_}\n  grace_period: 150ms\n  on_exit: restart\n"
        ),
    );
    let a = Leaderd::start(&c, "lpt-a");
    wait_until(PATIENCE, "lpt-a leads", || a.is_leading());
    let token = token_of(&a);
    let term = lock_value(&redis, name).expect("lock")["term"].clone();
    wait_until(PATIENCE, "three starts", || {
        rec.find(|r| r.kind == "proc-start").len() >= 3
    });
    let starts = rec.find(|r| r.kind == "proc-start");
    let exits = rec.find(|r| r.kind == "proc-exit");
    for s in &starts {
        assert_eq!(
            s.get("token"),
            token.to_string(),
            "restart with another token: {s:?}"
        );
        assert_eq!(s.event(), "started_leading");
    }
    assert!(a.is_leading());
    assert_eq!(token_of(&a), token);
    assert_eq!(
        lock_value(&redis, name).expect("lock")["term"],
        term,
        "term changed"
    );
    assert_eq!(a.metric("leaderd_leadership_lost_total"), 0.0);
    assert_eq!(a.metric("leaderd_leadership_acquired_total"), 1.0);
    // Backoff: 100 ms, then 200 ms (exit of run i -> start of run i+1).
    let gap = |i: usize| Duration::from_nanos(starts[i + 1].ts.saturating_sub(exits[i].ts) as u64);
    eprintln!("restart gaps: {:?} {:?}", gap(0), gap(1));
    assert!(
        gap(0) >= Duration::from_millis(80),
        "first restart after {:?}",
        gap(0)
    );
    assert!(
        gap(1) >= Duration::from_millis(160),
        "second restart after {:?} (backoff should double)",
        gap(1)
    );
    assert!(gap(1) < Duration::from_secs(3));
}

#[test]
fn on_exit_exit_makes_leaderd_exit_with_the_child_code_and_release() {
    for (script, expected) in [
        ("sleep 0.3\nexit 7", 7),
        ("sleep 0.3\nkill -KILL $$", 128 + 9),
    ] {
        let redis = RedisServer::start();
        let rec = Recorder::new();
        let proc_ = rec.script("proc.sh", &format!("rec proc-start\n{script}"));
        let name = "lpexit";
        let c = cfg(
            name,
            &redis,
            &format!(
                "leader_process:\n  command: {proc_}\n  grace_period: 150ms\n  on_exit: exit\n"
            ),
        );
        let a = Leaderd::builder(&c).identity("lpe-a").no_wait().start();
        let code = a.wait_exit(PATIENCE);
        let lock = redis.get(&lock_key(name));
        assert_eq!(
            code,
            Some(expected),
            "child ended with `{script}`; leaderd log:\n{}",
            a.log()
        );
        assert!(
            rec.find(|r| r.kind == "proc-start").len() == 1,
            "{}",
            rec.dump()
        );
        assert_eq!(lock, None, "lock not released when leaderd exited");
    }
}

#[test]
fn sigterm_while_leading_stops_process_then_runs_stopped_leading_then_releases() {
    let redis = RedisServer::start();
    let rec = Recorder::new();
    let name = "lpshutdown";
    let key = lock_key(name);
    // The hook records the lock value it sees while it runs.
    let demote = rec.script(
        "demote.sh",
        &format!(
            "rec hook \"$(redis-cli -p {} --raw GET '{key}' | tr -d '\\t\\n')\"",
            redis.port()
        ),
    );
    // At TERM, the process asks leaderd's /leader: it must already be 503.
    let proc_ = rec.leader_process(
        "proc.sh",
        "rec proc-term \"$(curl -s -m 1 -o /dev/null -w %{http_code} ${LEADERD_STATUS_URL%/status}/leader || echo nocurl)\"; exit 0",
    );
    // A wider step-down window than the other tests: the TERM trap runs
    // curl, which a loaded CI machine may not finish within 100 ms.
    let c = format!(
        "{}hooks:\n  stopped_leading: {demote}\n  timeout: 300ms\nleader_process:\n  command: {proc_}\n  grace_period: 500ms\n",
        config_with(
            name,
            &redis.url(),
            Duration::from_secs(2),
            Duration::from_secs(1),
            Duration::from_millis(250)
        )
    );
    let l = Leaderd::start(&c, "lps-l");
    wait_until(PATIENCE, "lps-l leads", || l.is_leading());
    let f = Leaderd::start(&c, "lps-f");
    wait_until(PATIENCE, "lps-f sees lps-l", || {
        f.status()["leader"] == "lps-l"
    });
    let started = rec.wait_for("leader process started", |r| r.kind == "proc-start");

    l.signal("TERM");
    assert_eq!(l.wait_exit(PATIENCE), Some(0), "{}", l.log());
    let after_exit = redis.get(&key);
    let records = rec.records();
    let term = records
        .iter()
        .find(|r| r.kind == "proc-term")
        .unwrap_or_else(|| panic!("leader process got no TERM:\n{}", rec.dump()));
    let hook = records
        .iter()
        .find(|r| r.who() == "lps-l" && r.event() == "stopped_leading")
        .unwrap_or_else(|| panic!("no stopped_leading on shutdown:\n{}", rec.dump()));
    assert_eq!(term.pid, started.pid);
    assert!(
        term.seq < hook.seq,
        "stopped_leading ran before the process got TERM"
    );
    assert!(
        ["503", "nocurl"].contains(&term.get("extra")),
        "GET /leader answered {:?} when the leader process got TERM (want 503)",
        term.get("extra")
    );
    assert_eq!(hook.get("reason"), "shutdown");
    let seen: serde_json::Value = serde_json::from_str(hook.get("extra")).unwrap_or_default();
    assert_eq!(
        seen["holder"],
        "lps-l",
        "the lock was not held by lps-l while stopped_leading ran: {:?}",
        hook.get("extra")
    );
    assert!(!alive(started.pid), "leader process survived leaderd");
    // Released before the exit: gone, or already taken by the follower.
    if let Some(v) = &after_exit {
        let v: serde_json::Value = serde_json::from_str(v).unwrap_or_default();
        assert_eq!(v["holder"], "lps-f", "lock still {v} after lps-l exited");
    }
    wait_until(PATIENCE, "lps-f takes over", || f.is_leading());
}

// ---------------------------------------------------------------------------
// Config rules
// ---------------------------------------------------------------------------

fn write_cfg(dir: &Path, file: &str, yaml: &str) -> String {
    let p = dir.join(file);
    fs::write(&p, yaml).expect("write config");
    p.display().to_string()
}

#[test]
fn grace_period_must_fit_in_the_window_after_step_down() {
    // lease 1s, renew 600ms: another candidate may lead 400ms after our
    // step-down.
    let dir = tempfile::tempdir().expect("tempdir");
    let base = config("gracecheck", "redis://127.0.0.1:1");
    let hook = "[\"/bin/true\"]";
    let rejected = [
        (
            "too-long.yaml",
            "leader_process:\n  command: [\"/bin/sleep\", \"60\"]\n  grace_period: 400ms\n"
                .to_string(),
        ),
        (
            "with-hook.yaml",
            format!(
                "hooks:\n  stopped_leading: {hook}\n  timeout: 200ms\nleader_process:\n  command: [\"/bin/sleep\", \"60\"]\n  grace_period: 150ms\n"
            ),
        ),
    ];
    for (file, extra) in &rejected {
        let path = write_cfg(dir.path(), file, &format!("{base}{extra}"));
        let path = path.as_str();
        for args in [
            vec!["run", "--config", path],
            vec!["check", "--offline", "--config", path],
        ] {
            let out = run_leaderd(&args, Duration::from_secs(10));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(file) && stderr.contains("leader_process.grace_period"),
                "{args:?}: message must name the file and leader_process.grace_period: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
    let accepted = [
        ("fits.yaml", "leader_process:\n  command: [\"/bin/sleep\", \"60\"]\n  grace_period: 150ms\n  on_exit: restart\n".to_string()),
        (
            "fits-with-hook.yaml",
            format!("hooks:\n  stopped_leading: {hook}\n  timeout: 150ms\nleader_process:\n  command: [\"/bin/sleep\", \"60\"]\n  grace_period: 100ms\n"),
        ),
    ];
    for (file, extra) in &accepted {
        let path = write_cfg(dir.path(), file, &format!("{base}{extra}"));
        let out = run_leaderd(
            &["check", "--offline", "--config", &path],
            Duration::from_secs(10),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file} should be valid: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
