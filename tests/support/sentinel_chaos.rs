//! The Sentinel setup of the fault-injection suite (`tests/chaos.rs`): the
//! partition setup of `redis_ha.rs` — namespace `a` holds the first master
//! M1, its replica R1 and Sentinel s1; namespace `b` two more replicas and
//! Sentinels s2 and s3 — with one candidate on each side (and a fresh one
//! after a data loss), every candidate running a leader process watched in
//! `/proc`.
//!
//! Faults, one at a time, drawn from the seed (the first is always the
//! partition of issue 10: the master and the leader on `a`):
//!
//! - cut the link between the namespaces: `b` holds the Sentinel majority;
//!   when the master is on `a` it promotes a replica on `b`, and the
//!   leader on `a` must have stepped down before `b`'s candidate leads;
//! - a forced failover (`SENTINEL FAILOVER`): the master moves;
//! - one Sentinel hung (SIGSTOP): the election goes on;
//! - the leading leaderd frozen (SIGSTOP) past its safe-until, or killed;
//! - `FLUSHALL` on the master (replicated: the whole store loses its data)
//!   with a fresh candidate joining at once.
//!
//! After each fault the run waits (bounded) until the three Sentinels name
//! one master again and every other server replicates from it, so faults
//! stay within the documented assumptions: a clean (transitive) partition,
//! and a promoted replica that had the leader's renewals up to the cut
//! (README, "Sentinel"). Liveness is reported, not judged — how long a
//! failover takes is Sentinel's business — except a hang: no leader for
//! [`HANG`] in a quiet window fails the run.
//!
//! Included from `tests/chaos.rs` (it uses the crate root's `Outcome`,
//! `Table` and helpers, and the `netns`, `procs`, `quorum`, `redis_ha` and
//! `support` modules).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

use crate::netns::{ADDR_A, Netns};
use crate::procs::ProcessWatcher;
use crate::quorum::*;
use crate::redis_ha::{
    MASTER_NAME, NsServer, SLOW, SentinelPartition, ha_config, info_field, yaml_list,
};
use crate::support::{PROBE_TIMEOUT, http_get, leaderd_bin, send_signal};
use crate::{
    Outcome, Table, at, guard_kills, keep_logs, leader_process_config, leftover_processes,
    log_excerpt, proc_lives,
};

/// The election's timing (the Sentinel tests'): lease 3 s, renew 2 s,
/// retry 300 ms.
const LEASE: Duration = SLOW.lease;
const RETRY: Duration = SLOW.retry;
/// No leader for this long in a quiet window is a hang.
const HANG: Duration = Duration::from_secs(15);
/// How long the Sentinels may take to agree again after a fault.
const CONVERGE: Duration = Duration::from_secs(60);
/// The first HTTP port inside the namespaces (each candidate process gets
/// the next one, so a restarted candidate never waits for its old port).
static NEXT_PORT: AtomicU16 = AtomicU16::new(9100);

#[derive(Debug, Clone)]
pub struct SentinelSettings {
    pub seed: u64,
    /// Faults start until this much time has passed.
    pub run_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Partition,
    Failover,
    SentinelStop,
    LeaderStop,
    LeaderKill,
    MasterFlush,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Partition,
        Kind::Failover,
        Kind::SentinelStop,
        Kind::LeaderStop,
        Kind::LeaderKill,
        Kind::MasterFlush,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Partition => "partition {M,R,s1} | {R,R,s2,s3}",
            Kind::Failover => "forced failover (SENTINEL FAILOVER)",
            Kind::SentinelStop => "SIGSTOP a Sentinel",
            Kind::LeaderStop => "SIGSTOP the leader past its safe-until",
            Kind::LeaderKill => "SIGKILL the leader, restart it",
            Kind::MasterFlush => "FLUSHALL the master, fresh candidate",
        }
    }
}

/// `leaderd run` in a network namespace (`ip netns exec` execs it, so the
/// child's pid is leaderd's): signals, its log, and /leader from inside.
struct Daemon {
    ns: Arc<Netns>,
    port: u16,
    child: Child,
    log_path: PathBuf,
    _dir: TempDir,
}

impl Daemon {
    fn start(ns: &Arc<Netns>, config: &str, identity: &str) -> Daemon {
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::tempdir().expect("tempdir for leaderd");
        let config_path = dir.path().join("leaderd.yaml");
        fs::write(&config_path, config).expect("write leaderd config");
        let log_path = dir.path().join("leaderd.log");
        let log = fs::File::create(&log_path).expect("create leaderd log");
        let mut cmd = ns.command(leaderd_bin());
        for var in [
            "LEADERD_CONFIG",
            "LEADERD_IDENTITY",
            "LEADERD_LISTEN",
            "POD_NAME",
        ] {
            cmd.env_remove(var);
        }
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--identity")
            .arg(identity)
            .env("LEADERD_LOG", "info,leaderd=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("spawn leaderd in a namespace");
        let mut d = Daemon {
            ns: ns.clone(),
            port,
            child,
            log_path,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("leaderd {identity} exited ({status}):\n{}", d.log());
            }
            if d.get("/healthz").map(|(code, _)| code) == Some(200) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "leaderd {identity} not healthy in 10s:\n{}",
                d.log()
            );
            thread::sleep(Duration::from_millis(15));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr = format!("127.0.0.1:{}", self.port);
        self.ns.run(|| http_get(&addr, path, PROBE_TIMEOUT))
    }

    fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig);
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; the exit code once it exited within `timeout`.
    fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.signal("TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(15));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Candidate {
    id: String,
    /// 0: namespace `a`, 1: namespace `b`.
    side: usize,
    incarnation: usize,
    current: Option<Daemon>,
    stopped: bool,
    fresh: bool,
}

impl Candidate {
    fn who(&self) -> String {
        format!("{}#{}", self.id, self.incarnation)
    }
}

struct SentinelChaos {
    settings: SentinelSettings,
    rng: SplitMix64,
    // Candidates first: dropped (killed) before the servers and namespaces.
    candidates: Vec<Candidate>,
    p: SentinelPartition,
    /// The config of a candidate on side `a` and on side `b` (they list the
    /// Sentinels in different orders).
    configs: [String; 2],
    watcher: ProcessWatcher,
    _dir: TempDir,
    joined: usize,
    records: Vec<Record>,
    fault_windows: Vec<Window>,
    counts: BTreeMap<Kind, usize>,
    timeline: Vec<(SystemTime, String)>,
    anomalies: Vec<String>,
    /// Faults that moved the master.
    failovers: usize,
    /// SIGSTOPs that hit the leader (its guard must act).
    frozen_leaders: usize,
    started: SystemTime,
    started_at: Instant,
}

impl SentinelChaos {
    fn new(settings: SentinelSettings) -> SentinelChaos {
        let p = SentinelPartition::start();
        let dir = tempfile::tempdir().expect("tempdir for the leader processes' pids");
        let watcher = ProcessWatcher::start(&dir.path().join("pids"));
        let urls: Vec<String> = p.sentinels.iter().map(NsServer::url).collect();
        let config = |order: [usize; 3]| {
            let listed: Vec<String> = order.iter().map(|&i| urls[i].clone()).collect();
            format!(
                "{}{}",
                ha_config(
                    "chaos-sentinel",
                    SLOW,
                    &format!(
                        "    sentinel:\n      master_name: {MASTER_NAME}\n      urls: {}\n",
                        yaml_list(&listed)
                    ),
                ),
                leader_process_config(watcher.file())
            )
        };
        let configs = [config([0, 1, 2]), config([1, 2, 0])];
        SentinelChaos {
            rng: SplitMix64::new(settings.seed ^ 0x05e4_71e1),
            settings,
            candidates: Vec::new(),
            p,
            configs,
            watcher,
            _dir: dir,
            joined: 0,
            records: Vec::new(),
            fault_windows: Vec::new(),
            counts: BTreeMap::new(),
            timeline: Vec::new(),
            anomalies: Vec::new(),
            failovers: 0,
            frozen_leaders: 0,
            started: SystemTime::now(),
            started_at: Instant::now(),
        }
    }

    fn ns(&self, side: usize) -> Arc<Netns> {
        if side == 0 {
            self.p.net.a.clone()
        } else {
            self.p.net.b.clone()
        }
    }

    fn note(&mut self, event: String) {
        self.timeline.push((SystemTime::now(), event));
    }

    fn add_candidate(&mut self, id: String, side: usize, fresh: bool) -> usize {
        let d = Daemon::start(&self.ns(side), &self.configs[side], &id);
        self.candidates.push(Candidate {
            id,
            side,
            incarnation: 0,
            current: Some(d),
            stopped: false,
            fresh,
        });
        self.candidates.len() - 1
    }

    /// The candidates answering /leader 200 (running, unstopped ones).
    fn leaders(&self) -> Vec<usize> {
        let live: Vec<usize> = (0..self.candidates.len())
            .filter(|&i| self.candidates[i].current.is_some() && !self.candidates[i].stopped)
            .collect();
        let codes: Vec<Option<u16>> = thread::scope(|s| {
            let probes: Vec<_> = live
                .iter()
                .map(|&i| {
                    let d = self.candidates[i].current.as_ref().expect("running");
                    s.spawn(move || d.get("/leader").map(|(c, _)| c))
                })
                .collect();
            probes
                .into_iter()
                .map(|p| p.join().unwrap_or(None))
                .collect()
        });
        live.into_iter()
            .zip(codes)
            .filter(|(_, c)| *c == Some(200))
            .map(|(i, _)| i)
            .collect()
    }

    /// The master the three Sentinels agree on, once it answers as master
    /// and every other server replicates from it.
    fn converged(&self) -> Option<String> {
        let master = self.p.agreed_master(&[0, 1, 2])?;
        let m = self.p.servers.iter().find(|s| s.addr() == master)?;
        if !m.cmd(&["ROLE"]).starts_with("master") {
            return None;
        }
        let (host, port) = master.split_once(':')?;
        self.p
            .servers
            .iter()
            .filter(|s| s.addr() != master)
            .all(|s| {
                let info = s.cmd(&["INFO", "replication"]);
                info_field(&info, "role").as_deref() == Some("slave")
                    && info_field(&info, "master_host").as_deref() == Some(host)
                    && info_field(&info, "master_port").as_deref() == Some(port)
                    && info_field(&info, "master_link_status").as_deref() == Some("up")
            })
            .then_some(master)
    }

    /// Waits (bounded) for [`SentinelChaos::converged`]; panics with the
    /// Sentinels' logs if it never happens.
    fn converge(&mut self) -> String {
        let deadline = Instant::now() + CONVERGE;
        loop {
            if let Some(m) = self.converged() {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "the Sentinels did not agree on one master with every replica following within {CONVERGE:?}\n{}",
                self.p.describe()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// One fault from start to end, including the wait until the Sentinels
    /// agree again. Returns when the setup is quiet.
    fn fault(&mut self, kind: Kind) {
        // Draw everything up front so a seed always consumes the same numbers.
        let pick = self.rng.next_u64();
        let ms = |d: Duration| d.as_millis() as u64;
        let lasting = match kind {
            Kind::Partition => self.rng.millis(5000, 8000),
            Kind::Failover => Duration::ZERO,
            Kind::SentinelStop => self.rng.millis(2000, 5000),
            Kind::LeaderStop => self.rng.millis(ms(LEASE + 2 * RETRY), 6000),
            Kind::LeaderKill => self.rng.millis(0, 2000),
            Kind::MasterFlush => self.rng.millis(ms(LEASE + 2 * RETRY), 6000),
        };
        *self.counts.entry(kind).or_default() += 1;
        let injected = SystemTime::now();
        let master = self.converged().unwrap_or_default();
        let leaders = self.leaders();
        let runnable: Vec<usize> = (0..self.candidates.len())
            .filter(|&i| !self.candidates[i].fresh && self.candidates[i].current.is_some())
            .collect();
        let target = leaders
            .first()
            .copied()
            .filter(|l| runnable.contains(l))
            .unwrap_or(runnable[(pick % runnable.len() as u64) as usize]);
        let role = if leaders.contains(&target) {
            "leader"
        } else {
            "candidate"
        };
        match kind {
            Kind::Partition => {
                let side = if master.starts_with(ADDR_A) { "a" } else { "b" };
                self.note(format!(
                    "inject: partition for {lasting:?} (master {master} on side {side})"
                ));
                self.p.net.partition();
                thread::sleep(lasting);
                self.p.net.heal();
            }
            Kind::Failover => {
                self.note(format!("inject: SENTINEL FAILOVER (master {master})"));
                let s = pick as usize % self.p.sentinels.len();
                let answer = self.p.sentinels[s].cmd(&["SENTINEL", "FAILOVER", MASTER_NAME]);
                if answer != "OK" {
                    self.anomalies
                        .push(format!("SENTINEL FAILOVER answered {answer}"));
                }
                // Until the master changed (bounded); converging follows.
                let deadline = Instant::now() + CONVERGE;
                while self.p.agreed_master(&[0, 1, 2]).as_deref() == Some(master.as_str())
                    && Instant::now() < deadline
                {
                    thread::sleep(Duration::from_millis(50));
                }
            }
            Kind::SentinelStop => {
                let s = pick as usize % self.p.sentinels.len();
                let pid = self.p.sentinels[s].pid();
                self.note(format!(
                    "inject: SIGSTOP Sentinel {} for {lasting:?}",
                    self.p.sentinels[s].addr()
                ));
                send_signal(pid, "STOP");
                thread::sleep(lasting);
                send_signal(pid, "CONT");
            }
            Kind::LeaderStop => {
                let who = self.candidates[target].who();
                self.note(format!("inject: SIGSTOP {role} {who} for {lasting:?}"));
                self.candidates[target]
                    .current
                    .as_ref()
                    .expect("running")
                    .signal("STOP");
                self.candidates[target].stopped = true;
                if role == "leader" {
                    self.frozen_leaders += 1;
                }
                thread::sleep(lasting);
                if let Some(d) = self.candidates[target].current.as_ref() {
                    d.signal("CONT");
                }
                self.candidates[target].stopped = false;
            }
            Kind::LeaderKill => {
                let who = self.candidates[target].who();
                self.note(format!(
                    "inject: SIGKILL {role} {who}, restart after {lasting:?}"
                ));
                let mut d = self.candidates[target].current.take().expect("running");
                d.kill();
                self.records.push(Record {
                    who,
                    log: d.log(),
                    killed_at: Some(SystemTime::now()),
                });
                drop(d);
                thread::sleep(lasting);
                self.candidates[target].incarnation += 1;
                let (side, id) = (
                    self.candidates[target].side,
                    self.candidates[target].id.clone(),
                );
                let d = Daemon::start(&self.ns(side), &self.configs[side], &id);
                self.candidates[target].current = Some(d);
            }
            Kind::MasterFlush => {
                let side = (pick >> 8) as usize % 2;
                let id = format!("fresh-{}", self.joined);
                self.joined += 1;
                self.note(format!(
                    "inject: FLUSHALL master {master}; {id} joins on side {} for {lasting:?}",
                    ["a", "b"][side]
                ));
                if let Some(m) = self.p.servers.iter().find(|s| s.addr() == master) {
                    m.cmd(&["FLUSHALL"]);
                }
                let j = self.add_candidate(id, side, true);
                thread::sleep(lasting);
                self.terminate(j, "leaving");
            }
        }
        let now_master = self.converge();
        if now_master != master {
            self.failovers += 1;
            self.note(format!("master is now {now_master}"));
        }
        self.fault_windows.push((injected, SystemTime::now()));
        self.note(format!("healed: {}", kind.name()));
    }

    /// SIGTERM to candidate `c` and its record once it exited (SIGKILL after
    /// 5 s: an anomaly).
    fn terminate(&mut self, c: usize, when: &str) {
        let who = self.candidates[c].who();
        let Some(mut d) = self.candidates[c].current.take() else {
            return;
        };
        let code = d.terminate(Duration::from_secs(5));
        let mut killed_at = None;
        if code != Some(0) {
            self.anomalies.push(format!(
                "{}: {who} exited with {code:?} after {when} (expected 0)",
                rfc3339(SystemTime::now())
            ));
            d.kill();
            killed_at = Some(SystemTime::now());
        }
        self.records.push(Record {
            who,
            log: d.log(),
            killed_at,
        });
    }

    fn run(mut self) -> Outcome {
        // L on side a leads on M1 (side a) before N on side b joins: the
        // setup of issue 10's partition.
        let l = self.add_candidate("cand-a".into(), 0, false);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.leaders() != vec![l] {
            assert!(
                Instant::now() < deadline,
                "cand-a did not lead in 30 s:\n{}",
                self.candidates[l]
                    .current
                    .as_ref()
                    .map(Daemon::log)
                    .unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        }
        self.add_candidate("cand-b".into(), 1, false);
        self.converge();
        let measured_from = SystemTime::now();
        self.started = measured_from;
        self.started_at = Instant::now();
        self.note("cand-a leads; faults begin".into());

        let end = Instant::now() + self.settings.run_for;
        let mut first = true;
        while Instant::now() < end {
            let kind = if first {
                Kind::Partition
            } else {
                Kind::ALL[self.rng.below(Kind::ALL.len())]
            };
            first = false;
            self.fault(kind);
            let gap = self.rng.millis(500, 2500);
            thread::sleep(gap);
        }
        // The last quiet stretch: until someone leads (bounded by HANG),
        // then one lease more.
        self.note("all healed; final quiet period".into());
        let deadline = Instant::now() + HANG;
        while self.leaders().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(LEASE);
        let measured_to = SystemTime::now();

        for c in 0..self.candidates.len() {
            self.terminate(c, "the final SIGTERM");
        }
        let leftovers = leftover_processes(&self.watcher);
        for r in &self.records {
            if r.log.contains("panicked") {
                self.anomalies.push(format!("{} panicked", r.who));
            }
        }
        keep_logs("sentinel", &self.records);
        let intervals = all_intervals(&self.records, None);
        let quiet = quiet_windows(measured_from, measured_to, &self.fault_windows);
        let verdict = check(&intervals, &quiet, LEASE + RETRY);
        let procs = check_processes(&proc_lives(&self.watcher));
        let summary = self.summary(
            &intervals,
            &verdict,
            &procs,
            &leftovers,
            measured_from,
            measured_to,
        );
        let failure = if !verdict.safe() || !procs.safe() || !leftovers.is_empty() {
            Some(self.failure_report(&verdict, &procs, &leftovers))
        } else {
            verdict.slow.iter().find(|g| g.length() > HANG).map(|g| {
                format!(
                    "[sentinel] seed {}: no leader for {}ms in a quiet window (hang bound {HANG:?})",
                    self.settings.seed,
                    g.length().as_millis()
                )
            })
        };
        Outcome {
            setup: "sentinel",
            summary,
            failure,
        }
    }

    fn summary(
        &self,
        intervals: &[Interval],
        verdict: &Verdict,
        procs: &ProcVerdict,
        leftovers: &[String],
        from: SystemTime,
        to: SystemTime,
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "chaos summary [sentinel]: seed {} | {:.1}s of faults, {:.1}s measured | 1 master + 3 replicas, 3 Sentinels in two namespaces, 2 candidates + {} fresh | lease {:?}, renew_deadline {:?}, retry {:?}, min_replica_acks 1 | one fault at a time",
            self.settings.seed,
            self.settings.run_for.as_secs_f64(),
            to.duration_since(from).unwrap_or_default().as_secs_f64(),
            self.joined,
            LEASE,
            SLOW.renew_deadline,
            RETRY,
        );
        let mut t = Table::default();
        t.row("fault", "count");
        t.rule();
        let mut total = 0;
        for kind in Kind::ALL {
            let n = self.counts.get(&kind).copied().unwrap_or(0);
            total += n;
            t.row(kind.name(), n);
        }
        t.row("all faults", total);
        t.row("  of which moved the master", self.failovers);
        t.rule();
        t.row("terms (from the logs)", verdict.terms);
        t.row(
            "  of which never acted on (ended at once)",
            verdict.empty_terms,
        );
        t.row(
            "leaders frozen (SIGSTOP past safe-until)",
            self.frozen_leaders,
        );
        t.row(
            "  processes the guard killed at safe-until",
            guard_kills(&self.records),
        );
        t.row("overlapping terms", verdict.overlaps.len());
        t.row("token regressions", verdict.regressions.len());
        t.row("terms that ran a leader process (/proc)", procs.terms);
        t.row(
            "leader processes of two terms at once",
            procs.overlaps.len(),
        );
        t.row("leader-process token regressions", procs.regressions.len());
        t.row("leader processes left running at the end", leftovers.len());
        let worst = verdict
            .worst_gap
            .map_or("-".to_string(), |g| format!("{}ms", g.length().as_millis()));
        t.row("worst time without a leader (quiet)", worst);
        t.row(
            format!(
                "  gaps over lease + retry ({}ms)",
                (LEASE + RETRY).as_millis()
            ),
            verdict.slow.len(),
        );
        t.row(
            "quiet time (no fault, Sentinels agree)",
            format!("{:.1}s", verdict.quiet.as_secs_f64()),
        );
        t.row("anomalies", self.anomalies.len());
        s.push_str(&t.render());
        if let Some(g) = verdict.worst_gap {
            let _ = writeln!(
                s,
                "worst gap: {} .. {} ({}ms)",
                at(self.started, g.from),
                at(self.started, g.to),
                g.length().as_millis()
            );
        }
        // Few faults, each a story: the whole timeline, with the terms.
        let mut events: Vec<(SystemTime, String)> = self.timeline.clone();
        for i in intervals {
            events.push((i.start, format!("{} leads (token {})", i.who, i.token)));
            events.push((i.end, format!("{} stops leading ({})", i.who, i.end_reason)));
        }
        events.sort_by_key(|(t, _)| *t);
        let _ = writeln!(s, "timeline:");
        for (t, e) in &events {
            let _ = writeln!(s, "  {} {e}", at(self.started, *t));
        }
        for a in &self.anomalies {
            let _ = writeln!(s, "anomaly: {a}");
        }
        s
    }

    fn failure_report(
        &self,
        verdict: &Verdict,
        procs: &ProcVerdict,
        leftovers: &[String],
    ) -> String {
        let mut s = format!(
            "SAFETY VIOLATION in the sentinel setup with seed {} (rerun: CHAOS_SEED={} CHAOS_ONLY=sentinel cargo test --test chaos)\n",
            self.settings.seed, self.settings.seed
        );
        s.push_str(&verdict.safety_report());
        s.push_str(&procs.report(self.started_at));
        for l in leftovers {
            let _ = writeln!(s, "ORPHAN: {l}");
        }
        let _ = writeln!(s, "--- timeline:");
        for (t, e) in &self.timeline {
            let _ = writeln!(s, "  {} {e}", at(self.started, *t));
        }
        let (from, to) = (
            self.started - Duration::from_secs(5),
            SystemTime::now() + Duration::from_secs(1),
        );
        let shown: Vec<String> = verdict
            .overlaps
            .iter()
            .flat_map(|o| [o.first.who.clone(), o.second.who.clone()])
            .chain(
                verdict
                    .regressions
                    .iter()
                    .flat_map(|r| [r.earlier.who.clone(), r.later.who.clone()]),
            )
            .collect();
        let all: Vec<String> = self.records.iter().map(|r| r.who.clone()).collect();
        let whos = if shown.is_empty() { all } else { shown };
        for who in whos.iter().take(4) {
            let _ = writeln!(s, "--- log of {who}:");
            s.push_str(&log_excerpt(&self.records, who, from, to));
        }
        s.push_str(&self.p.describe());
        s
    }
}

/// Runs the Sentinel setup's schedule (see the module documentation).
pub fn run(settings: SentinelSettings) -> Outcome {
    SentinelChaos::new(settings).run()
}
