//! Fault injection against quorum mode: three `redis-server`s, each behind a
//! fault proxy, and three candidates, with a seeded random schedule of
//! faults. Every candidate's leadership intervals are read back from its log
//! (`became leader` .. `stepped down led_until=`, or the instant the harness
//! SIGKILLed it) and checked:
//!
//! - no two intervals overlap (safety);
//! - fencing tokens strictly increase in interval order (safety);
//! - while a majority of servers is reachable and no fault is active, there
//!   is a leader within `lease_duration + retry_period` (liveness).
//!
//! `chaos_short_schedule` runs in `cargo test` (about 45 s). The long run is
//! ignored by default: `scripts/chaos --minutes N [--seed S]`, or
//! `CHAOS_MINUTES=N CHAOS_SEED=S cargo test --release --test chaos --
//! --ignored --nocapture`. Both print a summary table; any overlap or token
//! regression fails the test with its seed and the log lines around it.
//!
//! Faults: delay, refuse (drop) or blackhole one server's proxy; SIGKILL a
//! server (restarted empty after a while), restart a server at once with
//! its data lost, SIGSTOP a server; SIGKILL, SIGSTOP+SIGCONT, or SIGTERM a
//! candidate (killed and terminated candidates restart as fresh
//! processes). By default at most two faults are active at once and at most
//! one of them on a server, and a server fault starts only `renew_deadline`
//! after the previous one was healed (so a majority of servers holds the
//! leader's key whenever one loses it, as the quorum's safety argument
//! assumes); `CHAOS_NODE_FAULTS=2` lifts both rules, for exploration: two
//! servers losing their data at once is outside what a quorum can survive
//! (README, "Masters that restart empty").

#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/quorum.rs"]
mod quorum;
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proxy::Proxy;
use quorum::*;
use support::*;

/// The bound on the time without a leader in a quiet window.
const LIVENESS_BOUND: Duration =
    Duration::from_millis((support::LEASE.as_millis() + support::RETRY.as_millis()) as u64);
/// Scheduling noise allowed on top of [`LIVENESS_BOUND`] before a slow
/// election fails the short test (the run is on a shared CI machine with
/// debug builds; every slow gap is reported either way).
const LIVENESS_SLACK: Duration = Duration::from_millis(250);
/// With one server fault at a time, the next one starts at least this long
/// after the last was healed: by then the leader has restored its key on
/// the healed server, or has not renewed for so long that it stepped down.
const NODE_SETTLE: Duration = support::RENEW_DEADLINE;
/// Seed of the short schedule run by `cargo test` (override: CHAOS_SEED).
const SHORT_SEED: u64 = 20_261_126;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ProxyDelay,
    ProxyRefuse,
    ProxyBlackhole,
    NodeKill,
    NodeRestartEmpty,
    NodeStop,
    CandidateKill,
    CandidateStop,
    CandidateTerm,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::ProxyDelay,
        Kind::ProxyRefuse,
        Kind::ProxyBlackhole,
        Kind::NodeKill,
        Kind::NodeRestartEmpty,
        Kind::NodeStop,
        Kind::CandidateKill,
        Kind::CandidateStop,
        Kind::CandidateTerm,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::ProxyDelay => "delay node (proxy)",
            Kind::ProxyRefuse => "drop node (proxy refuses)",
            Kind::ProxyBlackhole => "blackhole node (proxy)",
            Kind::NodeKill => "SIGKILL node, restart empty later",
            Kind::NodeRestartEmpty => "restart node at once, data lost",
            Kind::NodeStop => "SIGSTOP+SIGCONT node",
            Kind::CandidateKill => "SIGKILL candidate, restart",
            Kind::CandidateStop => "SIGSTOP+SIGCONT candidate",
            Kind::CandidateTerm => "SIGTERM candidate, restart",
        }
    }

    fn on_node(self) -> bool {
        !matches!(
            self,
            Kind::CandidateKill | Kind::CandidateStop | Kind::CandidateTerm
        )
    }
}

#[derive(Debug, Clone)]
struct Settings {
    seed: u64,
    run_for: Duration,
    /// Faults active at once.
    max_faults: usize,
    /// Of those, on servers.
    max_node_faults: usize,
}

/// How an active fault ends.
#[derive(Debug, Clone, Copy)]
enum Heal {
    ProxyPass(usize),
    NodeRestart(usize),
    NodeCont(usize),
    CandidateStart(usize),
    CandidateCont(usize),
}

struct Active {
    what: String,
    injected: SystemTime,
    heal_at: Instant,
    heal: Heal,
    node: Option<usize>,
    candidate: Option<usize>,
}

struct Node {
    redis: RedisServer,
    proxy: Proxy,
}

struct Candidate {
    id: String,
    incarnation: usize,
    current: Option<Leaderd>,
    stopped: bool,
}

impl Candidate {
    fn who(&self) -> String {
        format!("{}#{}", self.id, self.incarnation)
    }
}

struct Chaos {
    settings: Settings,
    rng: SplitMix64,
    config: String,
    nodes: Vec<Node>,
    candidates: Vec<Candidate>,
    records: Vec<Record>,
    active: Vec<Active>,
    fault_windows: Vec<Window>,
    counts: BTreeMap<Kind, usize>,
    /// Human-readable timeline: (instant, event).
    timeline: Vec<(SystemTime, String)>,
    /// Things that are not safety violations but should not happen.
    anomalies: Vec<String>,
    /// Two /leader 200 answers in one probe round (a second, independent
    /// detector of overlaps).
    double_leaders: Vec<String>,
    /// Observed holders that never led (see `find_phantom_observations`).
    phantoms: Vec<String>,
    started: SystemTime,
    last_node_heal: Option<Instant>,
}

struct Outcome {
    summary: String,
    verdict: Verdict,
    failure: Option<String>,
}

impl Chaos {
    fn new(settings: Settings) -> Chaos {
        let name = "chaos";
        let nodes: Vec<Node> = (0..3)
            .map(|_| {
                let redis = RedisServer::start();
                let proxy = Proxy::start(redis.port());
                Node { redis, proxy }
            })
            .collect();
        let urls: Vec<String> = nodes.iter().map(|n| n.proxy.url()).collect();
        let config = quorum_config(name, &urls, LEASE, RENEW_DEADLINE, RETRY);
        let candidates = (0..3)
            .map(|i| {
                let id = format!("cand-{i}");
                Candidate {
                    current: Some(Leaderd::start(&config, &id)),
                    id,
                    incarnation: 0,
                    stopped: false,
                }
            })
            .collect();
        Chaos {
            rng: SplitMix64::new(settings.seed),
            settings,
            config,
            nodes,
            candidates,
            records: Vec::new(),
            active: Vec::new(),
            fault_windows: Vec::new(),
            counts: BTreeMap::new(),
            timeline: Vec::new(),
            anomalies: Vec::new(),
            double_leaders: Vec::new(),
            phantoms: Vec::new(),
            started: SystemTime::now(),
            last_node_heal: None,
        }
    }

    fn note(&mut self, event: String) {
        self.timeline.push((SystemTime::now(), event));
    }

    fn node_busy(&self, i: usize) -> bool {
        self.active.iter().any(|a| a.node == Some(i))
    }

    fn candidate_busy(&self, i: usize) -> bool {
        self.active.iter().any(|a| a.candidate == Some(i))
    }

    /// Index of the candidate that answers /leader 200, if one does, among
    /// the running, unstopped ones. Two at once is recorded.
    fn probe_leader(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.candidates.len())
            .filter(|&i| self.candidates[i].current.is_some() && !self.candidates[i].stopped)
            .collect();
        let daemons: Vec<&Leaderd> = live
            .iter()
            .map(|&i| self.candidates[i].current.as_ref().expect("running"))
            .collect();
        let round = leader_round(&daemons);
        let leaders: Vec<usize> = live
            .iter()
            .zip(&round)
            .filter(|(_, code)| **code == Some(200))
            .map(|(&i, _)| i)
            .collect();
        if leaders.len() > 1 {
            let names: Vec<String> = leaders.iter().map(|&i| self.candidates[i].who()).collect();
            let at = rfc3339(SystemTime::now());
            self.double_leaders.push(format!(
                "{at}: {} answered /leader 200 in one round",
                names.join(" and ")
            ));
        }
        leaders.first().copied()
    }

    fn inject(&mut self) {
        let node_faults = self.active.iter().filter(|a| a.node.is_some()).count();
        // "One server fault at a time" includes the repair after it
        // (see NODE_SETTLE).
        let settled = self
            .last_node_heal
            .is_none_or(|at| at.elapsed() >= NODE_SETTLE);
        let free_nodes: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.node_busy(i))
            .collect();
        let free_candidates: Vec<usize> = (0..self.candidates.len())
            .filter(|&i| !self.candidate_busy(i))
            .collect();
        let eligible: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| {
                if k.on_node() {
                    node_faults < self.settings.max_node_faults
                        && !free_nodes.is_empty()
                        && (settled || self.settings.max_node_faults > 1)
                } else {
                    !free_candidates.is_empty()
                }
            })
            .collect();
        if eligible.is_empty() {
            return;
        }
        let kind = eligible[self.rng.below(eligible.len())];
        // Draw everything up front so a seed always consumes the same numbers.
        let pick = self.rng.next_u64();
        let prefer_leader = self.rng.chance(60);
        let delay = self.rng.millis(5, 60);
        let lasting = match kind {
            Kind::ProxyDelay => self.rng.millis(500, 3000),
            Kind::ProxyRefuse | Kind::ProxyBlackhole => self.rng.millis(300, 3000),
            Kind::NodeKill => self.rng.millis(200, 3000),
            Kind::NodeRestartEmpty => self.rng.millis(0, 0),
            Kind::NodeStop | Kind::CandidateStop => self.rng.millis(200, 2500),
            Kind::CandidateKill => self.rng.millis(0, 1500),
            Kind::CandidateTerm => self.rng.millis(0, 1000),
        };
        *self.counts.entry(kind).or_default() += 1;
        let injected = SystemTime::now();

        if kind.on_node() {
            let n = free_nodes[(pick % free_nodes.len() as u64) as usize];
            let node = &mut self.nodes[n];
            let (what, heal) = match kind {
                Kind::ProxyDelay => {
                    node.proxy.delay(delay);
                    (
                        format!("delay node {n} by {delay:?} each way"),
                        Heal::ProxyPass(n),
                    )
                }
                Kind::ProxyRefuse => {
                    node.proxy.refuse();
                    (format!("drop node {n}"), Heal::ProxyPass(n))
                }
                Kind::ProxyBlackhole => {
                    node.proxy.blackhole();
                    (format!("blackhole node {n}"), Heal::ProxyPass(n))
                }
                Kind::NodeKill => {
                    // Refuse first: another test may take the freed port.
                    node.proxy.refuse();
                    node.redis.kill();
                    (format!("SIGKILL node {n}"), Heal::NodeRestart(n))
                }
                Kind::NodeRestartEmpty => {
                    node.redis.restart_empty();
                    (format!("restart node {n} empty"), Heal::ProxyPass(n))
                }
                Kind::NodeStop => {
                    node.redis.freeze();
                    (format!("SIGSTOP node {n}"), Heal::NodeCont(n))
                }
                _ => unreachable!("node faults only"),
            };
            self.note(format!("inject: {what} for {lasting:?}"));
            self.active.push(Active {
                what,
                injected,
                heal_at: Instant::now() + lasting,
                heal,
                node: Some(n),
                candidate: None,
            });
            return;
        }

        let leader = if prefer_leader {
            self.probe_leader()
        } else {
            None
        };
        let c = match leader {
            Some(l) if free_candidates.contains(&l) => l,
            _ => free_candidates[(pick % free_candidates.len() as u64) as usize],
        };
        let was_leader = leader == Some(c);
        let role = if was_leader { "leader" } else { "candidate" };
        let who = self.candidates[c].who();
        let (what, heal) = match kind {
            Kind::CandidateKill => {
                let d = self.candidates[c].current.take().expect("running");
                self.records.push(kill_and_record(d, &who));
                (format!("SIGKILL {role} {who}"), Heal::CandidateStart(c))
            }
            Kind::CandidateStop => {
                self.candidates[c]
                    .current
                    .as_ref()
                    .expect("running")
                    .signal("STOP");
                self.candidates[c].stopped = true;
                (format!("SIGSTOP {role} {who}"), Heal::CandidateCont(c))
            }
            Kind::CandidateTerm => {
                let d = self.candidates[c].current.take().expect("running");
                d.signal("TERM");
                let code = d.wait_exit(Duration::from_secs(5));
                if code == Some(0) {
                    self.records.push(record_exited(d, &who));
                } else {
                    self.anomalies.push(format!(
                        "{}: {who} exited with {code:?} after SIGTERM (expected 0)",
                        rfc3339(SystemTime::now())
                    ));
                    self.records.push(kill_and_record(d, &who));
                }
                (format!("SIGTERM {role} {who}"), Heal::CandidateStart(c))
            }
            _ => unreachable!("candidate faults only"),
        };
        self.note(format!("inject: {what} for {lasting:?}"));
        self.active.push(Active {
            what,
            injected,
            heal_at: Instant::now() + lasting,
            heal,
            node: None,
            candidate: Some(c),
        });
    }

    fn heal(&mut self, index: usize) {
        let a = self.active.remove(index);
        match a.heal {
            Heal::ProxyPass(n) => self.nodes[n].proxy.heal(),
            Heal::NodeRestart(n) => {
                self.nodes[n].redis.restart_empty();
                self.nodes[n].proxy.heal();
            }
            Heal::NodeCont(n) => self.nodes[n].redis.thaw(),
            Heal::CandidateCont(c) => {
                if let Some(d) = self.candidates[c].current.as_ref() {
                    d.signal("CONT");
                }
                self.candidates[c].stopped = false;
            }
            Heal::CandidateStart(c) => {
                let cand = &mut self.candidates[c];
                cand.incarnation += 1;
                cand.current = Some(Leaderd::start(&self.config, &cand.id));
            }
        }
        let healed = SystemTime::now();
        if a.node.is_some() {
            self.last_node_heal = Some(Instant::now());
        }
        self.fault_windows.push((a.injected, healed));
        self.note(format!("healed: {}", a.what));
    }

    fn run(mut self) -> Outcome {
        // Setup done: measure from the first leader on.
        let all: Vec<&Leaderd> = self
            .candidates
            .iter()
            .filter_map(|c| c.current.as_ref())
            .collect();
        wait_for_leader(&all, PATIENCE);
        let measured_from = SystemTime::now();
        self.started = measured_from;
        self.note("first leader elected; faults begin".into());

        let end = Instant::now() + self.settings.run_for;
        let mut next = Instant::now() + self.rng.millis(300, 1500);
        loop {
            let now = Instant::now();
            while let Some(i) = self.active.iter().position(|a| a.heal_at <= Instant::now()) {
                self.heal(i);
            }
            if now >= end {
                break;
            }
            if now >= next {
                if self.active.len() < self.settings.max_faults {
                    self.inject();
                }
                next = Instant::now() + self.rng.millis(200, 2000);
            }
            let wake = self
                .active
                .iter()
                .map(|a| a.heal_at)
                .chain([next, end])
                .min()
                .expect("non-empty");
            let nap = wake
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            std::thread::sleep(nap);
        }
        while !self.active.is_empty() {
            self.heal(0);
        }
        // A last quiet stretch, so that recovery after the last fault counts.
        self.note("all healed; final quiet period".into());
        std::thread::sleep(3 * LIVENESS_BOUND);
        let measured_to = SystemTime::now();

        // Graceful stop of everyone, so every term has its stepped-down line.
        for c in 0..self.candidates.len() {
            let who = self.candidates[c].who();
            if let Some(d) = self.candidates[c].current.take() {
                d.signal("TERM");
                let code = d.wait_exit(Duration::from_secs(5));
                if code == Some(0) {
                    self.records.push(record_exited(d, &who));
                } else {
                    self.anomalies.push(format!(
                        "{who} exited with {code:?} after the final SIGTERM"
                    ));
                    self.records.push(kill_and_record(d, &who));
                }
            }
        }
        for r in &self.records {
            if r.log.contains("panicked") {
                self.anomalies.push(format!("{} panicked", r.who));
            }
        }

        let intervals = all_intervals(&self.records, None);
        self.find_phantom_observations(&intervals);
        let quiet = quiet_windows(measured_from, measured_to, &self.fault_windows);
        let verdict = check(&intervals, &quiet, LIVENESS_BOUND);
        let summary = self.summary(&intervals, &verdict, measured_from, measured_to);
        let failure = (!verdict.safe() || !self.double_leaders.is_empty())
            .then(|| self.failure_report(&verdict));
        Outcome {
            summary,
            verdict,
            failure,
        }
    }

    /// `new leader observed` lines naming a holder and token that never
    /// was a term (e.g. another candidate's partial grant, not yet undone):
    /// not a safety matter, but `/status` and the `new_leader` hook then
    /// report a leader that never led.
    fn find_phantom_observations(&mut self, intervals: &[Interval]) {
        let terms: std::collections::HashSet<(String, u64)> = intervals
            .iter()
            .map(|i| {
                let id = i.who.split('#').next().unwrap_or(&i.who).to_string();
                (id, i.token)
            })
            .collect();
        for r in &self.records {
            for line in r
                .log
                .lines()
                .filter(|l| l.contains(" new leader observed "))
            {
                let leader = log_field(line, "leader").unwrap_or("?").to_string();
                let token = log_field(line, "token")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                if !terms.contains(&(leader, token)) {
                    self.phantoms.push(format!("{}: {line}", r.who));
                }
            }
        }
    }

    fn at(&self, t: SystemTime) -> String {
        match t.duration_since(self.started) {
            Ok(d) => format!("+{:.3}s", d.as_secs_f64()),
            Err(e) => format!("-{:.3}s", e.duration().as_secs_f64()),
        }
    }

    fn summary(
        &self,
        intervals: &[Interval],
        verdict: &Verdict,
        from: SystemTime,
        to: SystemTime,
    ) -> String {
        let mut s = String::new();
        let s_ = &mut s;
        let _ = writeln!(
            s_,
            "chaos summary: seed {} | {:.1}s of faults, {:.1}s measured | 3 redis nodes, 3 candidates | lease {:?}, renew_deadline {:?}, retry {:?} | at most {} faults at once, {} on nodes",
            self.settings.seed,
            self.settings.run_for.as_secs_f64(),
            to.duration_since(from).unwrap_or_default().as_secs_f64(),
            LEASE,
            RENEW_DEADLINE,
            RETRY,
            self.settings.max_faults,
            self.settings.max_node_faults,
        );
        let _ = writeln!(s_, "+-------------------------------------------+--------+");
        let _ = writeln!(s_, "| fault                                     | count  |");
        let _ = writeln!(s_, "+-------------------------------------------+--------+");
        let mut total = 0;
        for kind in Kind::ALL {
            let n = self.counts.get(&kind).copied().unwrap_or(0);
            total += n;
            let _ = writeln!(s_, "| {:<41} | {:>6} |", kind.name(), n);
        }
        let _ = writeln!(s_, "| {:<41} | {:>6} |", "all faults", total);
        let _ = writeln!(s_, "+-------------------------------------------+--------+");
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for i in intervals {
            *reasons.entry(i.end_reason.as_str()).or_default() += 1;
        }
        let reasons = reasons
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "| {k:<41} | {v:>6} |");
        };
        row(
            s_,
            "terms (leadership intervals)",
            verdict.terms.to_string(),
        );
        row(
            s_,
            "  of which never acted on (ended at once)",
            verdict.empty_terms.to_string(),
        );
        row(
            s_,
            "overlapping intervals",
            verdict.overlaps.len().to_string(),
        );
        row(
            s_,
            "token regressions",
            verdict.regressions.len().to_string(),
        );
        row(
            s_,
            "two /leader 200 in one probe round",
            self.double_leaders.len().to_string(),
        );
        let worst = verdict
            .worst_gap
            .map_or("-".to_string(), |g| format!("{}ms", g.length().as_millis()));
        row(s_, "worst time without a leader (quiet)", worst);
        row(
            s_,
            &format!("  gaps over the bound ({}ms)", LIVENESS_BOUND.as_millis()),
            verdict.slow.len().to_string(),
        );
        row(
            s_,
            "quiet time (no fault, majority up)",
            format!("{:.1}s", verdict.quiet.as_secs_f64()),
        );
        row(
            s_,
            "observed leaders that never led",
            self.phantoms.len().to_string(),
        );
        row(s_, "anomalies", self.anomalies.len().to_string());
        let _ = writeln!(s_, "+-------------------------------------------+--------+");
        let _ = writeln!(s_, "terms by end: {reasons}");
        if let Some(g) = verdict.worst_gap {
            let _ = writeln!(
                s_,
                "worst gap: {} .. {} ({}ms); last events before it:",
                self.at(g.from),
                self.at(g.to),
                g.length().as_millis()
            );
            for line in self.timeline_near(g.from, Duration::from_secs(3), Duration::ZERO) {
                let _ = writeln!(s_, "  {line}");
            }
        }
        for g in &verdict.slow {
            let _ = writeln!(
                s_,
                "slow: no leader {} .. {} ({}ms)",
                self.at(g.from),
                self.at(g.to),
                g.length().as_millis()
            );
        }
        for p in self.phantoms.iter().take(3) {
            let _ = writeln!(s_, "observed, never led: {p}");
        }
        for a in &self.anomalies {
            let _ = writeln!(s_, "anomaly: {a}");
        }
        s
    }

    fn timeline_near(&self, t: SystemTime, before: Duration, after: Duration) -> Vec<String> {
        self.timeline
            .iter()
            .filter(|(at, _)| *at + before >= t && *at <= t + after)
            .map(|(at, e)| format!("{} {e}", self.at(*at)))
            .collect()
    }

    /// Log lines of `who` between `from` and `to`.
    fn log_excerpt(&self, who: &str, from: SystemTime, to: SystemTime) -> String {
        let Some(r) = self.records.iter().find(|r| r.who == who) else {
            return String::new();
        };
        r.log
            .lines()
            .filter(|line| {
                line.split_whitespace()
                    .next()
                    .and_then(|ts| humantime::parse_rfc3339(ts).ok())
                    .is_some_and(|ts| ts >= from && ts <= to)
            })
            .map(|l| format!("    {l}\n"))
            .collect()
    }

    fn failure_report(&self, verdict: &Verdict) -> String {
        let mut s = format!(
            "SAFETY VIOLATION with seed {} (rerun: CHAOS_SEED={} cargo test --test chaos)\n",
            self.settings.seed, self.settings.seed
        );
        s.push_str(&verdict.safety_report());
        for d in &self.double_leaders {
            let _ = writeln!(s, "PROBE: {d}");
        }
        let mut pairs: Vec<(&Interval, &Interval)> = verdict
            .overlaps
            .iter()
            .map(|o| (&o.first, &o.second))
            .collect();
        pairs.extend(verdict.regressions.iter().map(|r| (&r.earlier, &r.later)));
        for (a, b) in pairs.into_iter().take(3) {
            let from = a.start.min(b.start) - Duration::from_secs(2);
            let to = a.end.max(b.end) + Duration::from_secs(1);
            let _ = writeln!(s, "--- faults around {} .. {}:", self.at(from), self.at(to));
            for line in self.timeline_near(
                from,
                Duration::ZERO,
                to.duration_since(from).unwrap_or_default(),
            ) {
                let _ = writeln!(s, "  {line}");
            }
            for who in [&a.who, &b.who] {
                let _ = writeln!(s, "--- log of {who}:");
                s.push_str(&self.log_excerpt(who, from, to));
            }
        }
        s
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    Some(
        raw.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={raw:?} is not a whole number")),
    )
}

fn run_chaos(settings: Settings) {
    eprintln!(
        "chaos: seed {} for {:?} (rerun with CHAOS_SEED={})",
        settings.seed, settings.run_for, settings.seed
    );
    let outcome = Chaos::new(settings.clone()).run();
    println!("{}", outcome.summary);
    if let Ok(path) = std::env::var("CHAOS_REPORT") {
        let _ = std::fs::write(&path, &outcome.summary);
    }
    if let Some(failure) = outcome.failure {
        panic!("{failure}\n{}", outcome.summary);
    }
    assert!(outcome.verdict.safe());
    if let Some(g) = outcome
        .verdict
        .slow
        .iter()
        .find(|g| g.length() > LIVENESS_BOUND + LIVENESS_SLACK)
    {
        panic!(
            "seed {}: no leader for {}ms in a quiet window (bound {}ms + {}ms slack)\n{}",
            settings.seed,
            g.length().as_millis(),
            LIVENESS_BOUND.as_millis(),
            LIVENESS_SLACK.as_millis(),
            outcome.summary
        );
    }
}

fn settings(seed: u64, run_for: Duration) -> Settings {
    Settings {
        seed,
        run_for,
        max_faults: env_u64("CHAOS_FAULTS").unwrap_or(2) as usize,
        max_node_faults: env_u64("CHAOS_NODE_FAULTS").unwrap_or(1) as usize,
    }
}

/// The short schedule (about 45 s) run by `cargo test`.
#[test]
fn chaos_short_schedule() {
    let seed = env_u64("CHAOS_SEED").unwrap_or(SHORT_SEED);
    run_chaos(settings(seed, Duration::from_secs(35)));
}

/// The long schedule: CHAOS_MINUTES (default 5), CHAOS_SEED (default: from
/// the clock, printed).
#[test]
#[ignore = "long; run with scripts/chaos --minutes N"]
fn chaos_long_schedule() {
    let minutes: f64 = std::env::var("CHAOS_MINUTES")
        .ok()
        .map(|m| {
            m.trim()
                .parse()
                .unwrap_or_else(|_| panic!("CHAOS_MINUTES={m:?} is not a number"))
        })
        .unwrap_or(5.0);
    assert!(
        minutes > 0.0 && minutes <= 24.0 * 60.0,
        "CHAOS_MINUTES={minutes}"
    );
    let seed = env_u64("CHAOS_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1)
    });
    run_chaos(settings(seed, Duration::from_secs_f64(minutes * 60.0)));
}

// ---------------------------------------------------------------------------
// The checker on synthetic runs
// ---------------------------------------------------------------------------

fn t(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(ms)
}

fn iv(who: &str, token: u64, start: u64, end: u64) -> Interval {
    Interval {
        who: who.into(),
        token,
        start: t(start),
        end: t(end),
        end_reason: "test".into(),
    }
}

#[test]
fn checker_finds_overlaps_token_regressions_and_gaps() {
    let bound = Duration::from_millis(1150);
    // Clean handovers, with a 1 s gap.
    let clean = [
        iv("a", 1, 0, 1000),
        iv("b", 2, 1000, 3000),
        iv("c", 5, 4000, 5000),
    ];
    let v = check(&clean, &[(t(0), t(5000))], bound);
    assert!(v.safe(), "{}", v.safety_report());
    assert_eq!(
        v.worst_gap.map(|g| g.length()),
        Some(Duration::from_secs(1))
    );
    assert!(v.slow.is_empty());

    // Overlap by 1 ms, and a long interval overlapping two later ones.
    let v = check(
        &[
            iv("a", 1, 0, 5000),
            iv("b", 2, 1000, 2001),
            iv("c", 3, 2000, 3000),
        ],
        &[],
        bound,
    );
    assert_eq!(v.overlaps.len(), 3, "{}", v.safety_report());
    assert!(v.regressions.is_empty());
    let ab = &v.overlaps[0];
    assert_eq!((ab.first.who.as_str(), ab.second.who.as_str()), ("a", "b"));
    assert_eq!(ab.by, Duration::from_millis(1001));

    // Tokens must strictly increase in start order (equal is a regression).
    let v = check(
        &[iv("a", 3, 0, 10), iv("b", 3, 20, 30), iv("c", 2, 40, 50)],
        &[],
        bound,
    );
    assert_eq!(v.regressions.len(), 2);
    assert!(v.overlaps.is_empty());

    // An empty interval (ended before it was logged) never overlaps but
    // still has its place in the token order.
    let v = check(&[iv("a", 1, 0, 1000), iv("b", 2, 500, 400)], &[], bound);
    assert!(v.overlaps.is_empty());
    assert_eq!(v.empty_terms, 1);
    let v = check(&[iv("a", 2, 0, 1000), iv("b", 1, 500, 400)], &[], bound);
    assert_eq!(v.regressions.len(), 1);

    // Gaps only count inside quiet windows, from the window's start.
    let ivs = [iv("a", 1, 0, 1000), iv("b", 2, 4000, 6000)];
    let quiet = quiet_windows(t(0), t(6500), &[(t(900), t(3000))]);
    assert_eq!(quiet, vec![(t(0), t(900)), (t(3000), t(6500))]);
    let v = check(&ivs, &quiet, bound);
    assert_eq!(
        v.worst_gap.map(|g| g.length()),
        Some(Duration::from_secs(1))
    );
    assert_eq!(v.worst_gap.map(|g| g.from), Some(t(3000)));
    assert!(v.slow.is_empty());
    let v = check(&ivs, &quiet_windows(t(0), t(7000), &[]), bound);
    assert_eq!(v.slow.len(), 1);
    assert_eq!(v.slow[0].length(), Duration::from_secs(3));
    assert_eq!(v.quiet, Duration::from_secs(7));

    // Overlapping fault windows merge.
    assert_eq!(
        quiet_windows(
            t(0),
            t(100),
            &[(t(10), t(30)), (t(20), t(40)), (t(90), t(200))]
        ),
        vec![(t(0), t(10)), (t(40), t(90))]
    );
}

#[test]
fn intervals_come_from_log_lines() {
    let log = "\
2026-11-26T15:26:37.089796Z  INFO leaderd started election=x identity=a
2026-11-26T15:26:37.096801Z  INFO became leader token=7
2026-11-26T15:26:38.000000Z  WARN backend unreachable backend=\"redis\"
2026-11-26T15:26:39.100607Z  WARN stepped down reason=\"renew_failed\" token=7 led_until=2026-11-26T15:26:38.700000Z
2026-11-26T15:26:40.000000Z  INFO new leader observed leader=b token=8
2026-11-26T15:26:41.000001Z  INFO became leader token=9
";
    let start = humantime::parse_rfc3339("2026-11-26T15:26:37.096801Z").unwrap();
    let led_until = humantime::parse_rfc3339("2026-11-26T15:26:38.700000Z").unwrap();
    let killed = humantime::parse_rfc3339("2026-11-26T15:26:42Z").unwrap();
    let v = intervals_from_log("a#0", log, Some(killed), None).expect("parse");
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].token, v[0].start, v[0].end), (7, start, led_until));
    assert_eq!(v[0].end_reason, "renew_failed");
    assert_eq!((v[1].token, v[1].end), (9, killed));
    assert_eq!(v[1].end_reason, "killed");
    // Without a kill instant an open term is an error, not a silent gap.
    assert!(intervals_from_log("a#0", log, None, None).is_err());
    // A term that ends before the line that began it is empty.
    let paused = "\
2026-11-26T15:26:37.500000Z  INFO became leader token=3
2026-11-26T15:26:37.500100Z  WARN stepped down reason=renew_failed token=3 led_until=2026-11-26T15:26:37.400000Z
";
    let v = intervals_from_log("p#0", paused, None, None).expect("parse");
    assert!(v[0].is_empty());
    assert_eq!(v[0].end_reason, "renew_failed");
}

#[test]
fn seeded_generator_is_deterministic() {
    let mut a = SplitMix64::new(42);
    let mut b = SplitMix64::new(42);
    let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
    let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
    assert_eq!(xs, ys);
    // A known value: the schedule of a seed must not change silently.
    assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    let mut r = SplitMix64::new(7);
    for _ in 0..1000 {
        let x = r.range(3, 9);
        assert!((3..=9).contains(&x));
    }
}
