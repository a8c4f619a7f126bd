//! Prometheus metrics.
//!
//! Events (a renewal, a lost term, a backend error) are counted by the
//! elector as they happen; gauges that describe the present (am I leader,
//! how much lease is left) are sampled from the election state and the clock
//! at scrape time, so a scrape never reports a leadership that already ran
//! out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::time::Instant;

use crate::backend::Candidate;
use crate::election::{ElectionState, Reason};

/// Every metric leaderd exports, registered once per process.
pub struct Metrics {
    registry: Registry,
    /// The names of every registered family.
    names: Vec<String>,
    is_leader: IntGauge,
    master_status: IntGauge,
    fencing_token: IntGauge,
    lease_remaining: Gauge,
    acquired: IntCounter,
    lost: IntCounterVec,
    renewals: IntCounterVec,
    renew_duration: Histogram,
    backend_errors: IntCounterVec,
    leader_changes: IntCounter,
    foreign_values: IntCounter,
    store_full: IntCounter,
    hook_runs: IntCounterVec,
    hook_duration: HistogramVec,
    pod_label_updates: IntCounterVec,
    leader_process_starts: IntCounter,
    log_lines_dropped: IntCounter,
    /// The logger's dropped-lines count already added to `log_lines_dropped`.
    log_lines_counted: AtomicU64,
    candidates: IntGauge,
    switchovers: IntCounterVec,
    healthy: IntGauge,
    health_checks: IntCounterVec,
    candidate_priority: IntGaugeVec,
    candidate_healthy: IntGaugeVec,
}

/// Renewal latency buckets: sub-millisecond on loopback up to the seconds a
/// struggling store may take.
/// Hook duration buckets: from a quick script to a timeout.
const HOOK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const RENEW_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new(election: &str) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("election", election);

        let is_leader = IntGauge::with_opts(opts(
            "leaderd_is_leader",
            "1 while this instance leads (inside its safe-until window), else 0.",
        ))?;
        // client-go's gauge, so that existing dashboards and alerts work.
        let master_status = IntGauge::with_opts(
            Opts::new(
                "leader_election_master_status",
                "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master.",
            )
            .const_label("name", election),
        )?;
        let fencing_token = IntGauge::with_opts(opts(
            "leaderd_fencing_token",
            "Fencing token of the current term as known here (ours while leading, else the observed leader's); 0 when unknown.",
        ))?;
        let lease_remaining = Gauge::with_opts(opts(
            "leaderd_lease_remaining_seconds",
            "Leader: seconds until it steps down unless renewed. Follower: seconds left on the observed leader's lease.",
        ))?;
        let acquired = IntCounter::with_opts(opts(
            "leaderd_leadership_acquired_total",
            "Terms this instance began.",
        ))?;
        let lost = IntCounterVec::new(
            opts(
                "leaderd_leadership_lost_total",
                "Terms this instance ended, by reason.",
            ),
            &["reason"],
        )?;
        let renewals = IntCounterVec::new(
            opts(
                "leaderd_renewals_total",
                "Renewal attempts by result (success, lost, error).",
            ),
            &["result"],
        )?;
        let renew_duration = Histogram::with_opts(
            HistogramOpts::new(
                "leaderd_renew_duration_seconds",
                "Round-trip time of renewal attempts.",
            )
            .const_label("election", election)
            .buckets(RENEW_BUCKETS.to_vec()),
        )?;
        let backend_errors = IntCounterVec::new(
            opts(
                "leaderd_backend_errors_total",
                "Backend calls that failed or timed out, by operation.",
            ),
            &["operation"],
        )?;
        let leader_changes = IntCounter::with_opts(opts(
            "leaderd_leader_changes_observed_total",
            "Changes of lease holder seen by this instance, the first one included.",
        ))?;
        let foreign_values = IntCounter::with_opts(opts(
            "leaderd_foreign_lock_value_total",
            "Times the lease key held something leaderd did not write (left untouched).",
        ))?;
        let candidates = IntGauge::with_opts(opts(
            "leaderd_candidates",
            "Candidates standing in the election, as last listed (listed while someone asks: /status, a scrape).",
        ))?;
        let switchovers = IntCounterVec::new(
            opts(
                "leaderd_switchovers_total",
                "Switchover requests this daemon took, by result (done, scheduled, cancelled, invalid, unknown_candidate, conflict, refused, no_leader, timeout, unavailable, unauthorized, disabled).",
            ),
            &["result"],
        )?;
        let healthy = IntGauge::with_opts(opts(
            "leaderd_healthy",
            "1 while this candidate's health probe counts it healthy (always 1 without a probe).",
        ))?;
        healthy.set(1);
        let health_checks = IntCounterVec::new(
            opts(
                "leaderd_health_checks_total",
                "Health probe runs by result (ok, failed, timeout).",
            ),
            &["result"],
        )?;
        let candidate_priority = IntGaugeVec::new(
            opts(
                "leaderd_candidate_priority",
                "Each candidate's priority, as last listed.",
            ),
            &["candidate"],
        )?;
        let candidate_healthy = IntGaugeVec::new(
            opts(
                "leaderd_candidate_healthy",
                "1 when the candidate reports itself healthy, as last listed.",
            ),
            &["candidate"],
        )?;
        let store_full = IntCounter::with_opts(opts(
            "leaderd_store_full_total",
            "Calls the store refused because it is full (Redis at maxmemory); retried.",
        ))?;
        let hook_runs = IntCounterVec::new(
            opts(
                "leaderd_hook_runs_total",
                "Hook runs by hook and result (ok, failed, timeout, not_found, preempted).",
            ),
            &["hook", "result"],
        )?;
        let hook_duration = HistogramVec::new(
            HistogramOpts::new("leaderd_hook_duration_seconds", "How long hooks ran.")
                .const_label("election", election)
                .buckets(HOOK_BUCKETS.to_vec()),
            &["hook"],
        )?;
        let pod_label_updates = IntCounterVec::new(
            opts(
                "leaderd_pod_label_updates_total",
                "Pod label updates by result (ok, error, forbidden).",
            ),
            &["result"],
        )?;
        let leader_process_starts = IntCounter::with_opts(opts(
            "leaderd_leader_process_starts_total",
            "Times the leader process was started.",
        ))?;
        let log_lines_dropped = IntCounter::with_opts(opts(
            "leaderd_log_lines_dropped_total",
            "Log lines dropped because stderr did not take them (a stalled log reader).",
        ))?;
        let build_info = IntGaugeVec::new(
            opts(
                "leaderd_build_info",
                "Always 1; labelled with the leaderd version.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        // Every family goes through `register`, which also keeps its name:
        // the README test compares them with the documented table.
        let mut names = Vec::new();
        let mut register = |collector: Box<dyn Collector>| {
            names.extend(collector.desc().iter().map(|desc| desc.fq_name.clone()));
            registry.register(collector)
        };
        register(Box::new(is_leader.clone()))?;
        register(Box::new(master_status.clone()))?;
        register(Box::new(fencing_token.clone()))?;
        register(Box::new(lease_remaining.clone()))?;
        register(Box::new(acquired.clone()))?;
        register(Box::new(lost.clone()))?;
        register(Box::new(renewals.clone()))?;
        register(Box::new(renew_duration.clone()))?;
        register(Box::new(backend_errors.clone()))?;
        register(Box::new(leader_changes.clone()))?;
        register(Box::new(foreign_values.clone()))?;
        register(Box::new(store_full.clone()))?;
        register(Box::new(candidates.clone()))?;
        register(Box::new(switchovers.clone()))?;
        register(Box::new(healthy.clone()))?;
        register(Box::new(health_checks.clone()))?;
        register(Box::new(candidate_priority.clone()))?;
        register(Box::new(candidate_healthy.clone()))?;
        register(Box::new(hook_runs.clone()))?;
        register(Box::new(hook_duration.clone()))?;
        register(Box::new(pod_label_updates.clone()))?;
        register(Box::new(leader_process_starts.clone()))?;
        register(Box::new(log_lines_dropped.clone()))?;
        register(Box::new(build_info))?;

        // Pre-create the labelled series so that they exist (at 0) from the
        // first scrape: `rate()` and alerts need a starting point.
        for reason in [
            Reason::Shutdown,
            Reason::RenewFailed,
            Reason::LockLost,
            Reason::StepDown,
            Reason::LeaderProcessExited,
            Reason::Switchover,
            Reason::Unhealthy,
            Reason::Preempted,
            Reason::HandOver,
        ] {
            lost.with_label_values(&[reason.as_str()]);
        }
        for result in ["success", "lost", "error", "late"] {
            renewals.with_label_values(&[result]);
        }
        for operation in ["acquire", "renew", "release"] {
            backend_errors.with_label_values(&[operation]);
        }

        Ok(Metrics {
            registry,
            names,
            is_leader,
            master_status,
            fencing_token,
            lease_remaining,
            acquired,
            lost,
            renewals,
            renew_duration,
            backend_errors,
            leader_changes,
            foreign_values,
            store_full,
            hook_runs,
            hook_duration,
            pod_label_updates,
            leader_process_starts,
            log_lines_dropped,
            log_lines_counted: AtomicU64::new(0),
            candidates,
            switchovers,
            healthy,
            health_checks,
            candidate_priority,
            candidate_healthy,
        })
    }

    /// The names of every family this registry exports (labelled families
    /// included before their first series exists).
    pub fn family_names(&self) -> &[String] {
        &self.names
    }

    pub fn acquired(&self) {
        self.acquired.inc();
    }

    pub fn lost(&self, reason: Reason) {
        self.lost.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn renewal(&self, result: &str, took: Duration) {
        self.renewals.with_label_values(&[result]).inc();
        self.renew_duration.observe(took.as_secs_f64());
    }

    pub fn backend_error(&self, operation: &str) {
        self.backend_errors.with_label_values(&[operation]).inc();
    }

    pub fn leader_changed(&self) {
        self.leader_changes.inc();
    }

    pub fn foreign_value(&self) {
        self.foreign_values.inc();
    }

    pub fn store_full(&self) {
        self.store_full.inc();
    }

    pub fn healthy(&self, healthy: bool) {
        self.healthy.set(i64::from(healthy));
    }

    pub fn health_check(&self, result: &str) {
        self.health_checks.with_label_values(&[result]).inc();
    }

    pub fn switchover(&self, result: &str) {
        self.switchovers.with_label_values(&[result]).inc();
    }

    pub fn hook_run(&self, hook: &str, result: &str, took: Duration) {
        self.hook_runs.with_label_values(&[hook, result]).inc();
        self.hook_duration
            .with_label_values(&[hook])
            .observe(took.as_secs_f64());
    }

    pub fn pod_label_update(&self, result: &str) {
        self.pod_label_updates.with_label_values(&[result]).inc();
    }

    pub fn leader_process_started(&self) {
        self.leader_process_starts.inc();
    }

    /// Samples the gauges from `state` at `now` and renders the text format.
    /// `candidates`: who stands, when known.
    pub fn render(
        &self,
        state: &ElectionState,
        candidates: Option<&[Candidate]>,
        now: Instant,
    ) -> String {
        if let Some(candidates) = candidates {
            self.candidates
                .set(i64::try_from(candidates.len()).unwrap_or(i64::MAX));
            // Only the candidates standing now: no series for the departed.
            self.candidate_priority.reset();
            self.candidate_healthy.reset();
            for c in candidates {
                let who = [c.presence.identity.as_str()];
                self.candidate_priority
                    .with_label_values(&who)
                    .set(c.presence.priority);
                self.candidate_healthy
                    .with_label_values(&who)
                    .set(i64::from(c.presence.healthy));
            }
        }
        let leading = i64::from(state.is_leader_at(now));
        self.is_leader.set(leading);
        self.master_status.set(leading);
        let token = match &state.term {
            Some(term) => Some(term.fencing_token),
            None => state.leader_at(now).and_then(|holder| holder.fencing_token),
        };
        self.fencing_token
            .set(token.map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)));
        self.lease_remaining.set(
            state
                .lease_remaining_at(now)
                .map_or(0.0, |left| left.as_secs_f64()),
        );

        // The logger counts on its own; the counter catches up. fetch_max
        // hands each new drop to exactly one of two concurrent scrapes.
        let dropped = crate::logging::dropped_lines();
        let counted = self.log_lines_counted.fetch_max(dropped, Ordering::Relaxed);
        if dropped > counted {
            self.log_lines_dropped.inc_by(dropped - counted);
        }

        let mut out = Vec::with_capacity(4096);
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%err, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The metric names in the README's "Metrics" table.
    fn documented() -> BTreeSet<String> {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Metrics\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_default();
        section
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|cell| cell.split(['`', '{']).next())
            .filter(|name| *name != "metric")
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_exported_metric_is_in_the_readme_table() {
        let metrics = Metrics::new("doc").expect("metrics registry");
        let exported: BTreeSet<String> = metrics.family_names().iter().cloned().collect();
        let documented = documented();
        assert!(
            documented.len() >= 10,
            "README table not found: {documented:?}"
        );
        let undocumented: Vec<_> = exported.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&exported).collect();
        assert!(
            undocumented.is_empty() && stale.is_empty(),
            "README.md's metrics table lacks {undocumented:?} and lists {stale:?}, which is not exported"
        );
        // And the names are what a scrape shows (once every family has a series).
        metrics.hook_run("new_leader", "ok", Duration::ZERO);
        metrics.pod_label_update("ok");
        metrics.switchover("done");
        metrics.health_check("ok");
        let standing = [Candidate {
            presence: crate::backend::Presence {
                identity: "me".into(),
                url: None,
                version: "0".into(),
                priority: 0,
                healthy: true,
                started_at: String::new(),
                standing_aside: false,
            },
            last_seen: Duration::ZERO,
        }];
        let text = metrics.render(
            &ElectionState::new("doc", "me", "redis"),
            Some(&standing),
            Instant::now(),
        );
        for name in &exported {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} not in:\n{text}"
            );
        }
    }
}
