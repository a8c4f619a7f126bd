//! Quorum-mode test support: several Redis servers behind fault proxies,
//! leadership intervals read back from the candidates' logs, and a checker
//! of the safety (and liveness) properties of a run — of the terms leaderd
//! logged, and of the leader-only processes as they really ran.
//!
//! Declared from a test file with `#[path = "support/quorum.rs"] mod quorum;`
//! next to `mod support;` and `#[path = "support/proxy.rs"] mod proxy;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use crate::proxy::Proxy;
use crate::support::{Leaderd, RedisServer};

// ---------------------------------------------------------------------------
// Servers behind proxies
// ---------------------------------------------------------------------------

/// `n` independent `redis-server`s, each behind its own [`Proxy`].
/// Candidates are given the proxies' URLs, never the servers'.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
    pub proxies: Vec<Proxy>,
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        let nodes: Vec<RedisServer> = (0..n).map(|_| RedisServer::start()).collect();
        let proxies = nodes.iter().map(|node| Proxy::start(node.port())).collect();
        Cluster { nodes, proxies }
    }

    /// Kills node `i` and makes its proxy refuse connections until the node
    /// is restarted: a test running in parallel may start its own Redis on
    /// the freed port, and the proxy must not forward to a stranger.
    pub fn kill(&mut self, i: usize) {
        self.proxies[i].refuse();
        self.nodes[i].kill();
    }

    /// Restarts node `i` on its port with no data and lets traffic through.
    pub fn restart_empty(&mut self, i: usize) {
        self.nodes[i].restart_empty();
        self.proxies[i].heal();
    }

    /// The URLs candidates use (through the proxies).
    pub fn urls(&self) -> Vec<String> {
        self.proxies.iter().map(Proxy::url).collect()
    }

    /// A quorum config with the default test timings of `support`.
    pub fn config(&self, name: &str) -> String {
        quorum_config(
            name,
            &self.urls(),
            crate::support::LEASE,
            crate::support::RENEW_DEADLINE,
            crate::support::RETRY,
        )
    }

    /// The lock value (raw JSON) on node `i`, read directly (not through
    /// the proxy); `None` if the key is missing or the node is unreachable.
    pub fn lock_on(&self, i: usize, name: &str) -> Option<String> {
        match self.nodes[i].try_cmd(&["GET", &crate::support::lock_key(name)]) {
            Ok(redis::Value::BulkString(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
            _ => None,
        }
    }

    /// The fencing counter on node `i`, read directly; `None` if missing or
    /// unreachable.
    pub fn fence_on(&self, i: usize, name: &str) -> Option<u64> {
        match self.nodes[i].try_cmd(&["GET", &crate::support::fence_key(name)]) {
            Ok(redis::Value::BulkString(v)) => String::from_utf8_lossy(&v).parse().ok(),
            _ => None,
        }
    }
}

/// YAML config for quorum mode (`urls` lists every server).
pub fn quorum_config(
    name: &str,
    urls: &[String],
    lease: Duration,
    renew_deadline: Duration,
    retry: Duration,
) -> String {
    let urls = urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "election:\n  name: {name}\n  lease_duration: {}ms\n  renew_deadline: {}ms\n  retry_period: {}ms\nbackend:\n  redis:\n    urls: [{urls}]\n    key_prefix: leaderd\nhttp:\n  listen: \"127.0.0.1:0\"\n",
        lease.as_millis(),
        renew_deadline.as_millis(),
        retry.as_millis(),
    )
}

// ---------------------------------------------------------------------------
// Leadership intervals from the logs
// ---------------------------------------------------------------------------

/// One term as one candidate lived it: from its `became leader` line to the
/// `led_until` of its `stepped down` line (or the instant it was SIGKILLed).
#[derive(Debug, Clone)]
pub struct Interval {
    /// Identity and incarnation, e.g. `cand-1#2`.
    pub who: String,
    pub token: u64,
    pub start: SystemTime,
    pub end: SystemTime,
    /// The step-down reason, `killed` (SIGKILL by the harness) or
    /// `still-leading` (the run ended while it led).
    pub end_reason: String,
}

impl Interval {
    /// A term that ended (at safe-until) before it was even logged: it was
    /// never acted on, e.g. a candidate paused between the acquire and the
    /// `became leader` line.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn describe(&self) -> String {
        format!(
            "{} token={} [{} .. {}] ({})",
            self.who,
            self.token,
            rfc3339(self.start),
            rfc3339(self.end),
            self.end_reason
        )
    }
}

/// Wall-clock instant as RFC 3339 with microseconds (the logs' format).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// The value of `key=` in a tracing text line, quotes removed.
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!(" {key}=");
    let at = line.find(&needle)? + needle.len();
    let rest = &line[at..];
    let value = rest.split_whitespace().next().unwrap_or("");
    Some(value.trim_matches('"'))
}

/// The leading timestamp and the message of a tracing text line
/// (`<RFC3339>  LEVEL message fields...`).
fn split_line(line: &str) -> Option<(SystemTime, &str)> {
    let mut parts = line.splitn(2, char::is_whitespace);
    let ts = humantime::parse_rfc3339(parts.next()?).ok()?;
    let rest = parts.next()?.trim_start();
    let (_level, message) = rest.split_once(char::is_whitespace)?;
    Some((ts, message.trim_start()))
}

/// Reads the terms of one incarnation from its log. `who` names it;
/// `killed_at` is when the harness SIGKILLed it (ends an open term);
/// `ended_at` ends an open term of a process still running (end of run).
pub fn intervals_from_log(
    who: &str,
    log: &str,
    killed_at: Option<SystemTime>,
    ended_at: Option<SystemTime>,
) -> Result<Vec<Interval>, String> {
    let mut out = Vec::new();
    let mut open: Option<(u64, SystemTime)> = None;
    for line in log.lines() {
        let Some((ts, message)) = split_line(line) else {
            continue;
        };
        if message.starts_with("became leader") {
            let token = log_field(message, "token")
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("{who}: no token in {line:?}"))?;
            if let Some((prev, _)) = open {
                return Err(format!(
                    "{who}: became leader (token {token}) while term {prev} was open: {line:?}"
                ));
            }
            open = Some((token, ts));
        } else if message.starts_with("stepped down") {
            let token: u64 = log_field(message, "token")
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("{who}: no token in {line:?}"))?;
            let led_until = log_field(message, "led_until")
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .ok_or_else(|| format!("{who}: no led_until in {line:?}"))?;
            let reason = log_field(message, "reason").unwrap_or("?").to_string();
            let Some((open_token, start)) = open.take() else {
                return Err(format!("{who}: stepped down without a term: {line:?}"));
            };
            if open_token != token {
                return Err(format!(
                    "{who}: stepped down from token {token} but led {open_token}: {line:?}"
                ));
            }
            out.push(Interval {
                who: who.to_string(),
                token,
                start,
                end: led_until,
                end_reason: reason,
            });
        }
    }
    if let Some((token, start)) = open {
        let (end, reason) = match (killed_at, ended_at) {
            (Some(k), _) => (k, "killed"),
            (None, Some(e)) => (e, "still-leading"),
            (None, None) => {
                return Err(format!(
                    "{who}: term {token} has no end (no stepped-down line, not killed)"
                ));
            }
        };
        out.push(Interval {
            who: who.to_string(),
            token,
            start,
            end,
            end_reason: reason.to_string(),
        });
    }
    Ok(out)
}

/// What is left of one candidate process once it is gone: its identity
/// and incarnation, its log, and when the harness SIGKILLed it.
#[derive(Debug, Clone)]
pub struct Record {
    pub who: String,
    pub log: String,
    pub killed_at: Option<SystemTime>,
}

impl Record {
    pub fn intervals(&self, ended_at: Option<SystemTime>) -> Result<Vec<Interval>, String> {
        intervals_from_log(&self.who, &self.log, self.killed_at, ended_at)
    }
}

/// SIGKILLs `d` and records the instant after it was reaped (a conservative
/// end for a term it may have been leading).
pub fn kill_and_record(d: Leaderd, who: &str) -> Record {
    d.kill();
    let killed_at = SystemTime::now();
    Record {
        who: who.to_string(),
        log: d.log(),
        killed_at: Some(killed_at),
    }
}

/// Records a candidate that already exited on its own (e.g. after SIGTERM).
pub fn record_exited(d: Leaderd, who: &str) -> Record {
    Record {
        who: who.to_string(),
        log: d.log(),
        killed_at: None,
    }
}

/// All intervals of `records`; a term still open ends at `ended_at`.
pub fn all_intervals(records: &[Record], ended_at: Option<SystemTime>) -> Vec<Interval> {
    let mut out = Vec::new();
    for r in records {
        match r.intervals(ended_at) {
            Ok(mut v) => out.append(&mut v),
            Err(e) => panic!(
                "cannot read the terms of {}: {e}\n--- log ---\n{}",
                r.who, r.log
            ),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------

/// A stretch of time (wall clock).
pub type Window = (SystemTime, SystemTime);

/// Two terms that were both leading at some instant.
#[derive(Debug, Clone)]
pub struct Overlap {
    pub first: Interval,
    pub second: Interval,
    pub by: Duration,
}

/// Two terms, in start order, whose tokens do not increase.
#[derive(Debug, Clone)]
pub struct TokenRegression {
    pub earlier: Interval,
    pub later: Interval,
}

/// A time without a leader inside a window where one was due.
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    pub from: SystemTime,
    pub to: SystemTime,
}

impl Gap {
    pub fn length(&self) -> Duration {
        self.to.duration_since(self.from).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub terms: usize,
    pub empty_terms: usize,
    pub overlaps: Vec<Overlap>,
    pub regressions: Vec<TokenRegression>,
    /// The longest time without a leader inside the quiet windows.
    pub worst_gap: Option<Gap>,
    /// Gaps longer than the bound.
    pub slow: Vec<Gap>,
    /// Total length of the quiet windows.
    pub quiet: Duration,
}

impl Verdict {
    /// No overlap and no token regression.
    pub fn safe(&self) -> bool {
        self.overlaps.is_empty() && self.regressions.is_empty()
    }

    /// A readable account of every safety violation (empty when safe).
    pub fn safety_report(&self) -> String {
        let mut s = String::new();
        for o in &self.overlaps {
            let _ = writeln!(
                s,
                "OVERLAP by {:?}:\n  {}\n  {}",
                o.by,
                o.first.describe(),
                o.second.describe()
            );
        }
        for r in &self.regressions {
            let _ = writeln!(
                s,
                "TOKEN NOT INCREASING:\n  {}\n  {}",
                r.earlier.describe(),
                r.later.describe()
            );
        }
        s
    }
}

/// Checks a run:
///
/// - no two (non-empty) intervals overlap;
/// - tokens strictly increase in interval start order;
/// - inside every `quiet` window (a majority of servers reachable, no fault
///   active) the time without a leader, measured from the intervals, is at
///   most `bound` (reported in `slow`; the longest in `worst_gap`).
pub fn check(intervals: &[Interval], quiet: &[Window], bound: Duration) -> Verdict {
    let mut sorted: Vec<&Interval> = intervals.iter().collect();
    sorted.sort_by(|a, b| a.start.cmp(&b.start).then(a.token.cmp(&b.token)));

    let mut overlaps = Vec::new();
    let live: Vec<&Interval> = sorted.iter().copied().filter(|i| !i.is_empty()).collect();
    for (i, a) in live.iter().enumerate() {
        for b in &live[i + 1..] {
            if b.start >= a.end {
                // Sorted by start: every later one starts after `a` ended.
                break;
            }
            let end = a.end.min(b.end);
            overlaps.push(Overlap {
                first: (*a).clone(),
                second: (*b).clone(),
                by: end.duration_since(b.start).unwrap_or_default(),
            });
        }
    }

    let regressions = sorted
        .windows(2)
        .filter(|w| w[1].token <= w[0].token)
        .map(|w| TokenRegression {
            earlier: w[0].clone(),
            later: w[1].clone(),
        })
        .collect();

    // Leaderless stretches: the complement of the union of the intervals.
    let mut covered: Vec<Window> = Vec::new();
    for i in &live {
        match covered.last_mut() {
            Some(last) if i.start <= last.1 => last.1 = last.1.max(i.end),
            _ => covered.push((i.start, i.end)),
        }
    }
    let mut worst: Option<Gap> = None;
    let mut slow = Vec::new();
    let mut quiet_total = Duration::ZERO;
    for &(q0, q1) in quiet {
        if q1 <= q0 {
            continue;
        }
        quiet_total += q1.duration_since(q0).unwrap_or_default();
        let mut cursor = q0;
        let mut gaps = Vec::new();
        for &(c0, c1) in &covered {
            if c1 <= cursor {
                continue;
            }
            if c0 >= q1 {
                break;
            }
            if c0 > cursor {
                gaps.push(Gap {
                    from: cursor,
                    to: c0,
                });
            }
            cursor = cursor.max(c1);
            if cursor >= q1 {
                break;
            }
        }
        if cursor < q1 {
            gaps.push(Gap {
                from: cursor,
                to: q1,
            });
        }
        for g in gaps {
            if worst.is_none_or(|w| g.length() > w.length()) {
                worst = Some(g);
            }
            if g.length() > bound {
                slow.push(g);
            }
        }
    }

    Verdict {
        terms: intervals.len(),
        empty_terms: intervals.iter().filter(|i| i.is_empty()).count(),
        overlaps,
        regressions,
        worst_gap: worst,
        slow,
        quiet: quiet_total,
    }
}

// ---------------------------------------------------------------------------
// The checker of the leader-only processes themselves
// ---------------------------------------------------------------------------

/// One leader-only process of one term, as watched in `/proc` (see
/// `procs.rs`): when it was first and last seen running, on this machine's
/// monotonic clock. Independent of anything leaderd logs.
#[derive(Debug, Clone)]
pub struct ProcLife {
    /// The candidate's identity (`LEADERD_IDENTITY`).
    pub identity: String,
    pub pid: u32,
    /// The term's fencing token (`LEADERD_FENCING_TOKEN`).
    pub token: u64,
    pub start: Instant,
    pub end: Instant,
}

impl ProcLife {
    pub fn describe(&self, origin: Instant) -> String {
        let at = |t: Instant| t.saturating_duration_since(origin).as_secs_f64();
        format!(
            "{} pid {} token={} [+{:.3}s .. +{:.3}s]",
            self.identity,
            self.pid,
            self.token,
            at(self.start),
            at(self.end)
        )
    }
}

/// What the processes did: terms seen running, two terms' processes running
/// at once, and terms whose token is not above every earlier term's.
#[derive(Debug, Clone, Default)]
pub struct ProcVerdict {
    /// Distinct (identity, token) pairs that ran a process.
    pub terms: usize,
    /// Processes of two different terms alive at the same instant, and for
    /// how long.
    pub overlaps: Vec<(ProcLife, ProcLife, Duration)>,
    /// In the order the terms' first processes started: a term whose token
    /// is not greater than the one before it (or one token run by two
    /// identities).
    pub regressions: Vec<(ProcLife, ProcLife)>,
}

impl ProcVerdict {
    pub fn safe(&self) -> bool {
        self.overlaps.is_empty() && self.regressions.is_empty()
    }

    pub fn report(&self, origin: Instant) -> String {
        let mut s = String::new();
        for (a, b, by) in &self.overlaps {
            let _ = writeln!(
                s,
                "PROCESS OVERLAP by {by:?} (two terms' leader processes alive at once):\n  {}\n  {}",
                a.describe(origin),
                b.describe(origin)
            );
        }
        for (a, b) in &self.regressions {
            let _ = writeln!(
                s,
                "PROCESS TOKEN NOT INCREASING (in the order the terms' processes started):\n  {}\n  {}",
                a.describe(origin),
                b.describe(origin)
            );
        }
        s
    }
}

/// Checks the watched processes: no two processes of different terms (a
/// term is an identity and a token) alive at once, and each term's token
/// greater than that of every term whose processes started before it.
pub fn check_processes(lives: &[ProcLife]) -> ProcVerdict {
    let mut sorted: Vec<&ProcLife> = lives.iter().collect();
    sorted.sort_by_key(|l| (l.start, l.token));

    let mut overlaps = Vec::new();
    for (i, a) in sorted.iter().enumerate() {
        for b in &sorted[i + 1..] {
            if b.start >= a.end {
                break; // sorted by start: every later one starts after `a` ended
            }
            if a.token == b.token && a.identity == b.identity {
                continue; // one term: the shell and its child
            }
            let by = a.end.min(b.end).saturating_duration_since(b.start);
            overlaps.push(((*a).clone(), (*b).clone(), by));
        }
    }

    // Each term's first process, in start order.
    let mut first: BTreeMap<(String, u64), &ProcLife> = BTreeMap::new();
    for l in &sorted {
        first.entry((l.identity.clone(), l.token)).or_insert(l);
    }
    let mut terms: Vec<&ProcLife> = first.values().copied().collect();
    terms.sort_by_key(|l| (l.start, l.token));
    let regressions = terms
        .windows(2)
        .filter(|w| w[1].token <= w[0].token)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect();

    ProcVerdict {
        terms: terms.len(),
        overlaps,
        regressions,
    }
}

/// The windows of `[from, to]` not covered by any of `faults` (each the time
/// from a fault's injection until it was healed).
pub fn quiet_windows(from: SystemTime, to: SystemTime, faults: &[Window]) -> Vec<Window> {
    let mut faults: Vec<Window> = faults.to_vec();
    faults.sort();
    let mut out = Vec::new();
    let mut cursor = from;
    for (f0, f1) in faults {
        if f0 > cursor {
            out.push((cursor, f0.min(to)));
        }
        cursor = cursor.max(f1);
        if cursor >= to {
            break;
        }
    }
    if cursor < to {
        out.push((cursor, to));
    }
    out.retain(|(a, b)| a < b);
    out
}

// ---------------------------------------------------------------------------
// A small seeded random generator (SplitMix64): the same seed gives the same
// schedule on every machine and with every version of every crate.
// ---------------------------------------------------------------------------

pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A duration uniform in `lo..=hi` (millisecond steps).
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }

    /// `true` with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 99) < percent
    }

    /// An index below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
