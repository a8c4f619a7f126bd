//! leaderd and client-go's own `tools/leaderelection` on one Lease, against
//! a real kube-apiserver (tests/support/kube_real.rs).
//!
//! The client-go side is tests/interop/clientgo: client-go v0.37.2, a
//! `LeaseLock` with `ReleaseOnCancel: true`, as a controller runs it. It
//! records its leadership intervals on CLOCK_MONOTONIC; leaderd's come from
//! its log (`became leader` … `stepped down led_until=…`), mapped from the
//! wall clock onto CLOCK_MONOTONIC with the offset between the two clocks
//! measured here (and checked not to drift), so both sides are compared on
//! one clock. The Lease's history comes from the API server's audit log.

#[path = "support/kube_real.rs"]
mod kube_real;
mod support;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use kube_real::{
    ClientGo, ClientGoTiming, LeaseWrite, Namespace, control_plane, event_rules, lease_rules,
    monotonic_ns, parse_time, rule, wall_minus_monotonic_ns,
};
use support::*;

const LEASE: &str = "mixed";

/// leaderd: a long retry period, so that a takeover within a few hundred
/// milliseconds of a release can only come from its watch.
const LD_LEASE: Duration = Duration::from_secs(2);
const LD_RENEW: Duration = Duration::from_millis(1500);
const LD_RETRY: Duration = Duration::from_millis(1000);

/// client-go: same lease, its usual proportions.
const CG: ClientGoTiming = ClientGoTiming {
    lease: Duration::from_secs(2),
    renew: Duration::from_millis(1200),
    retry: Duration::from_millis(300),
};
/// client-go waits RetryPeriod × (1 + JitterFactor) at most between tries
/// (`wait.JitterUntil`, JitterFactor 1.2).
const CG_JITTER: f64 = 1.2;

/// One candidate of the mixed group, and what the test did to it.
enum Candidate {
    Leaderd {
        d: Leaderd,
        /// CLOCK_MONOTONIC when the test SIGKILLed it.
        killed_at: Option<i128>,
    },
    ClientGo(ClientGo),
}

impl Candidate {
    fn identity(&self) -> &str {
        match self {
            Candidate::Leaderd { d, .. } => d.identity(),
            Candidate::ClientGo(c) => &c.identity,
        }
    }

    fn running(&mut self) -> bool {
        match self {
            Candidate::Leaderd { d, .. } => d.wait_exit(Duration::ZERO).is_none(),
            Candidate::ClientGo(c) => c.exit_code().is_none(),
        }
    }

    /// SIGTERM and wait for a clean exit (0).
    fn terminate(&mut self) {
        let who = self.identity().to_string();
        let code = match self {
            Candidate::Leaderd { d, .. } => {
                d.signal("TERM");
                d.wait_exit(PATIENCE)
            }
            Candidate::ClientGo(c) => {
                c.signal("TERM");
                c.wait_exit(PATIENCE)
            }
        };
        assert_eq!(code, Some(0), "{who} did not exit cleanly after SIGTERM");
    }

    fn kill(&mut self) {
        match self {
            Candidate::Leaderd { d, killed_at } => {
                d.kill();
                *killed_at = Some(monotonic_ns());
            }
            Candidate::ClientGo(c) => c.kill(),
        }
    }

    /// Leadership intervals on CLOCK_MONOTONIC (ns).
    fn intervals(&self, wall_offset: i128) -> Vec<(i128, i128)> {
        match self {
            Candidate::ClientGo(c) => c.intervals(),
            Candidate::Leaderd { d, killed_at } => {
                leaderd_intervals(&d.log(), wall_offset, *killed_at)
            }
        }
    }
}

/// A leaderd's terms from its log: `became leader` (the log line's time)
/// until `led_until` of the next `stepped down`; a term still open ends
/// when the test killed it (or now).
fn leaderd_intervals(log: &str, wall_offset: i128, killed_at: Option<i128>) -> Vec<(i128, i128)> {
    let mono = |text: &str| -> Option<i128> {
        let wall = parse_time(text)?;
        let ns = wall.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos() as i128;
        Some(ns - wall_offset)
    };
    let mut out = Vec::new();
    let mut open: Option<i128> = None;
    for line in log.lines() {
        let stamp = line.split_whitespace().next().unwrap_or("");
        if line.contains("became leader") {
            open = mono(stamp);
        } else if line.contains("stepped down")
            && let Some(start) = open.take()
        {
            let until = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("led_until="))
                .and_then(mono)
                .unwrap_or_else(|| panic!("no led_until in {line:?}"));
            out.push((start, until));
        }
    }
    if let Some(start) = open {
        out.push((start, killed_at.unwrap_or_else(monotonic_ns)));
    }
    out
}

struct Group {
    ns: Namespace,
    ld_kubeconfig: PathBuf,
    cg_kubeconfig: PathBuf,
    config: String,
    /// Every candidate ever started (stopped ones too: their intervals count).
    all: Vec<Candidate>,
}

impl Group {
    fn new() -> Group {
        let ns = control_plane().namespace("interop");
        let mut ld_rules = lease_rules();
        ld_rules.extend(event_rules());
        let ld_kubeconfig = ns.account("leaderd", ld_rules);
        // What a client-go controller's leader election needs.
        let cg_kubeconfig = ns.account(
            "clientgo",
            vec![
                rule(
                    "coordination.k8s.io",
                    "leases",
                    &["get", "create", "update"],
                    &[],
                ),
                rule("", "events", &["create", "patch"], &[]),
            ],
        );
        let config = format!(
            "election:\n  name: {LEASE}\n  lease_duration: {}s\n  renew_deadline: {}ms\n  retry_period: {}ms\nbackend:\n  kubernetes:\n    namespace: {}\n    lease_name: {LEASE}\nhttp:\n  listen: \"127.0.0.1:0\"\n",
            LD_LEASE.as_secs(),
            LD_RENEW.as_millis(),
            LD_RETRY.as_millis(),
            ns.name()
        );
        Group {
            ns,
            ld_kubeconfig,
            cg_kubeconfig,
            config,
            all: Vec::new(),
        }
    }

    fn start_leaderd(&mut self, identity: &str) {
        let d = Leaderd::builder(&self.config)
            .identity(identity)
            .env("POD_NAMESPACE", self.ns.name())
            .env(
                "KUBECONFIG",
                self.ld_kubeconfig.to_str().expect("utf-8 path"),
            )
            .start();
        self.all.push(Candidate::Leaderd { d, killed_at: None });
    }

    fn start_clientgo(&mut self, identity: &str) {
        let c = ClientGo::start(
            &self.cg_kubeconfig,
            self.ns.name(),
            LEASE,
            identity,
            CG,
            &[],
        );
        self.all.push(Candidate::ClientGo(c));
    }

    /// The running candidate with this identity.
    fn get(&mut self, identity: &str) -> &mut Candidate {
        self.all
            .iter_mut()
            .rev()
            .find(|c| c.identity() == identity)
            .filter(|c| {
                !matches!(
                    c,
                    Candidate::Leaderd {
                        killed_at: Some(_),
                        ..
                    }
                )
            })
            .unwrap_or_else(|| panic!("no candidate {identity}"))
    }

    fn running(&mut self) -> Vec<String> {
        self.all
            .iter_mut()
            .filter_map(|c| c.running().then(|| c.identity().to_string()))
            .collect()
    }

    /// The holder of the Lease, once the Lease names a running candidate.
    fn holder(&mut self) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(h) = self.ns.lease_holder(LEASE)
                && !h.is_empty()
                && self.running().contains(&h)
            {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "no running candidate holds the lease:\n{}",
                self.ns.dump_lease_writes(LEASE)
            );
            thread::sleep(Duration::from_millis(15));
        }
    }

    /// Every running leaderd reports `holder` as the leader in /status.
    fn leaderds_report(&self, holder: &str) {
        wait_until(PATIENCE, &format!("every leaderd reports {holder}"), || {
            self.all.iter().all(|c| match c {
                Candidate::Leaderd { d, killed_at: None }
                    if d.wait_exit(Duration::ZERO).is_none() =>
                {
                    d.try_status().is_some_and(|st| st["leader"] == holder)
                }
                _ => true,
            })
        });
    }
}

fn is_leaderd(identity: &str) -> bool {
    identity.starts_with("ld-")
}

/// One handover: the Lease's writes from `since`: the first write after the
/// old holder's last one (its release, if any) and the new holder's first.
fn handover(
    ns: &Namespace,
    since: Instant,
    old: &str,
    new: &str,
) -> (Option<LeaseWrite>, LeaseWrite, LeaseWrite) {
    let writes = ns.lease_writes(LEASE);
    let last_by_old = writes
        .iter()
        .rev()
        .find(|w| w.holder() == old)
        .cloned()
        .expect("the old holder's writes");
    let release = writes
        .iter()
        .find(|w| w.at >= since && w.holder().is_empty())
        .cloned();
    let takeover = writes
        .iter()
        .find(|w| w.resource_version > last_by_old.resource_version && w.holder() == new)
        .cloned()
        .unwrap_or_else(|| panic!("no takeover by {new}:\n{}", ns.dump_lease_writes(LEASE)));
    (release, last_by_old, takeover)
}

/// Two leaderd and two client-go candidates on one Lease. Handovers both
/// ways, by SIGTERM (release, then the watch or client-go's next try) and
/// by SIGKILL (expiry). Before each, the followers of the other kind leave,
/// so that the handover goes where the test wants; they come back after.
#[test]
fn mixed_group_hands_over_both_ways_and_never_has_two_leaders() {
    let offset_before = wall_minus_monotonic_ns();
    let mut g = Group::new();
    // client-go leads first; everyone else joins.
    g.start_clientgo("cg-1");
    wait_until(PATIENCE, "cg-1 leads", || {
        g.ns.lease_holder(LEASE).as_deref() == Some("cg-1")
    });
    g.start_leaderd("ld-1");
    g.start_leaderd("ld-2");
    g.start_clientgo("cg-2");
    // /status of every leaderd shows the client-go holder.
    g.leaderds_report("cg-1");
    wait_until(PATIENCE, "both leaderd watch the lease", || {
        g.ns.open_watches("leases") >= 2
    });

    let mut measured: Vec<String> = Vec::new();
    // (from leaderd?, to leaderd?, signal)
    let rounds = [
        (false, true, "TERM"),
        (true, false, "TERM"),
        (false, true, "KILL"),
        (true, false, "KILL"),
    ];
    for (from_ld, to_ld, sig) in rounds {
        let old = g.holder();
        assert_eq!(is_leaderd(&old), from_ld, "round from {old}");
        // The followers of the leader's own kind leave for this round.
        let leaving: Vec<String> = g
            .running()
            .into_iter()
            .filter(|id| *id != old && is_leaderd(id) == from_ld)
            .collect();
        for id in &leaving {
            g.get(id).terminate();
        }
        if to_ld {
            wait_until(PATIENCE, "the leaderd follower watches", || {
                g.ns.open_watches("leases") >= 1
            });
        }
        let since = Instant::now();
        match sig {
            "TERM" => g.get(&old).terminate(),
            _ => g.get(&old).kill(),
        }
        let new = g.holder();
        assert_ne!(new, old);
        assert_eq!(is_leaderd(&new), to_ld, "{old} -> {new} by SIG{sig}");
        let (release, last_by_old, takeover) = handover(&g.ns, since, &old, &new);
        let line = match (sig, &release) {
            ("TERM", Some(release)) => {
                assert_eq!(
                    release.duration_seconds(),
                    Some(1),
                    "ReleaseOnCancel record"
                );
                let gap = takeover.at.saturating_duration_since(release.at);
                if to_ld {
                    // The watch: far less than leaderd's 1 s retry period.
                    assert!(
                        gap < Duration::from_millis(400),
                        "leaderd took the client-go release only after {gap:?}\n{}",
                        g.ns.dump_lease_writes(LEASE)
                    );
                } else {
                    let bound = CG.retry.mul_f64(1.0 + CG_JITTER) + Duration::from_millis(200);
                    assert!(
                        gap < bound,
                        "client-go took the leaderd release only after {gap:?} (bound {bound:?})\n{}",
                        g.ns.dump_lease_writes(LEASE)
                    );
                }
                format!("{old} -> {new} by SIGTERM: taken {gap:?} after the release")
            }
            ("TERM", None) => panic!(
                "{old} did not release on SIGTERM:\n{}",
                g.ns.dump_lease_writes(LEASE)
            ),
            _ => {
                // Expiry: never before the lease ran out after the last
                // renewal.
                let after = takeover.at.saturating_duration_since(last_by_old.at);
                assert!(
                    after >= LD_LEASE,
                    "{new} took over {after:?} after {old}'s last renewal\n{}",
                    g.ns.dump_lease_writes(LEASE)
                );
                format!("{old} -> {new} by SIGKILL: taken {after:?} after the last renewal")
            }
        };
        eprintln!("{line}");
        measured.push(line);
        if !to_ld {
            g.leaderds_report(&new);
        }
        // Back to two of each.
        for id in leaving.iter().chain([&old]) {
            if is_leaderd(id) {
                g.start_leaderd(id);
            } else {
                g.start_clientgo(id);
            }
        }
        let holder = g.holder();
        g.leaderds_report(&holder);
    }

    // Everyone leaves, the leader last but one at a time.
    loop {
        let running = g.running();
        let Some(id) = running.first().cloned() else {
            break;
        };
        g.get(&id).terminate();
    }

    // Never two leaders: the intervals of all candidates, on one clock, are
    // pairwise disjoint.
    let offset_after = wall_minus_monotonic_ns();
    assert!(
        (offset_after - offset_before).abs() < 2_000_000,
        "the wall clock moved against CLOCK_MONOTONIC during the test ({} ns)",
        offset_after - offset_before
    );
    let mut intervals: Vec<(i128, i128, String)> = g
        .all
        .iter()
        .flat_map(|c| {
            let who = c.identity().to_string();
            c.intervals(offset_before)
                .into_iter()
                .map(move |(s, e)| (s, e, who.clone()))
        })
        .collect();
    intervals.sort();
    assert!(intervals.len() >= 5, "too few terms: {intervals:?}");
    let kinds: Vec<bool> = intervals
        .iter()
        .map(|(_, _, who)| is_leaderd(who))
        .collect();
    assert!(kinds.contains(&true) && kinds.contains(&false));
    for pair in intervals.windows(2) {
        let ((s1, e1, a), (s2, _, b)) = (&pair[0], &pair[1]);
        assert!(e1 > s1, "{a}: empty interval");
        assert!(
            e1 < s2,
            "two leaders: {a} led until {} ms, {b} from {} ms (CLOCK_MONOTONIC)\n{intervals:?}",
            e1 / 1_000_000,
            s2 / 1_000_000
        );
    }
    let gaps: Vec<String> = intervals
        .windows(2)
        .map(|p| {
            format!(
                "{} -> {}: {:.1} ms",
                p[0].2,
                p[1].2,
                (p[1].0 - p[0].1) as f64 / 1e6
            )
        })
        .collect();
    eprintln!(
        "leaderless gaps between terms (CLOCK_MONOTONIC):\n  {}",
        gaps.join("\n  ")
    );

    // leaseTransitions never goes down.
    let writes = g.ns.lease_writes(LEASE);
    let transitions: Vec<i64> = writes.iter().filter_map(LeaseWrite::transitions).collect();
    assert!(
        transitions.windows(2).all(|w| w[0] <= w[1]),
        "leaseTransitions went down: {transitions:?}\n{}",
        g.ns.dump_lease_writes(LEASE)
    );
    assert!(transitions.last() > transitions.first());

    // Both kinds recorded the same Event on the Lease for their terms.
    let events = g.ns.events_for("Lease", LEASE, "LeaderElection");
    let became: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.ends_with(" became leader"))
        .collect();
    for who in ["cg-1", "ld-"] {
        assert!(
            became.iter().any(|m| m.starts_with(who)),
            "no \"became leader\" Event from {who}: {became:?}"
        );
    }
    let shape = |e: &serde_json::Value| {
        (
            e["type"].clone(),
            e["involvedObject"]["kind"].clone(),
            e["involvedObject"]["apiVersion"].clone(),
            e["involvedObject"]["name"].clone(),
            e["involvedObject"]["uid"].clone(),
        )
    };
    let from_clientgo = events
        .iter()
        .find(|e| e["source"]["component"] == "clientgo-candidate")
        .expect("client-go's Event");
    let from_leaderd = events
        .iter()
        .find(|e| e["source"]["component"] == "leaderd")
        .expect("leaderd's Event");
    assert_eq!(shape(from_clientgo), shape(from_leaderd));
    eprintln!("{}", measured.join("\n"));
}

/// A client-go candidate with the kubeconfig of `sa` (helper for the
/// single-candidate test below).
fn clientgo(ns: &Namespace, kubeconfig: &Path, identity: &str) -> ClientGo {
    ClientGo::start(kubeconfig, ns.name(), LEASE, identity, CG, &[])
}

/// client-go follows a Lease that leaderd holds, reads leaderd's record
/// without complaint, and takes it over when leaderd is killed: client-go's
/// own decoder and rules accept what leaderd writes.
#[test]
fn client_go_follows_leaderd_and_takes_over_after_a_crash() {
    let g = Group::new();
    let d = Leaderd::builder(&g.config)
        .identity("ld-only")
        .env("POD_NAMESPACE", g.ns.name())
        .env("KUBECONFIG", g.ld_kubeconfig.to_str().expect("utf-8 path"))
        .start();
    wait_until(PATIENCE, "ld-only leads", || d.is_leading());
    let c = clientgo(&g.ns, &g.cg_kubeconfig, "cg-only");
    wait_until(PATIENCE, "client-go observes ld-only", || {
        c.log().contains("ld-only")
    });
    // Held: client-go never writes over leaderd's renewals.
    let t0 = Instant::now();
    while t0.elapsed() < LD_LEASE * 2 {
        assert!(!c.is_leading(), "client-go took a lease leaderd renews");
        thread::sleep(Duration::from_millis(50));
    }
    let clientgo_user = g.ns.user("clientgo");
    assert!(
        g.ns.lease_writes(LEASE)
            .iter()
            .all(|w| w.user != clientgo_user),
        "client-go wrote while leaderd held the lease:\n{}",
        g.ns.dump_lease_writes(LEASE)
    );
    assert!(
        !c.log().to_lowercase().contains("error"),
        "client-go logged an error about leaderd's record:\n{}",
        c.log()
    );
    d.kill();
    wait_until(PATIENCE, "client-go takes over", || c.is_leading());
    let writes = g.ns.lease_writes(LEASE);
    let takeover = writes
        .iter()
        .find(|w| w.user == clientgo_user)
        .expect("client-go's takeover");
    let last = writes
        .iter()
        .rev()
        .find(|w| w.holder() == "ld-only" && w.resource_version < takeover.resource_version)
        .expect("leaderd's last renewal");
    assert!(takeover.at.duration_since(last.at) >= CG.lease);
    assert_eq!(
        takeover.transitions(),
        last.transitions().map(|t| t + 1),
        "client-go counts the change of holder"
    );
}
