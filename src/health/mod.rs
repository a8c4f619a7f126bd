//! The health probe: a task, off the election's path, that runs the probe
//! every `period` and publishes whether this node is healthy into the
//! candidate's presence (a `watch` channel the elector reads). A probe that
//! hangs costs only its own timeout: renewals never wait for it.
//!
//! Results become a state with thresholds, as keepalived and Kubernetes
//! probes do: `failure_threshold` failures in a row make a healthy node
//! unhealthy, `success_threshold` successes in a row make it healthy again.
//! The first result decides the initial state, so a node whose workload is
//! down never takes the lease at start.

mod probe;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use crate::backend::Presence;
use crate::config::HealthSettings;
use crate::metrics::Metrics;
pub use probe::Outcome;

/// The running probe task.
pub struct HealthChecker {
    task: JoinHandle<()>,
}

impl HealthChecker {
    /// Starts probing; `presence` gets every change of health.
    pub fn spawn(
        settings: HealthSettings,
        presence: watch::Sender<Presence>,
        metrics: Arc<Metrics>,
    ) -> HealthChecker {
        tracing::info!(probe = %settings.probe.describe(), "health probe configured");
        HealthChecker {
            task: tokio::spawn(run(settings, presence, metrics)),
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Consecutive results in the current direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    healthy: Option<bool>,
    against: u32,
}

impl Streak {
    /// Takes one result; returns the new state if it changed (the first
    /// result always decides).
    pub fn record(&mut self, ok: bool, settings: &HealthSettings) -> Option<bool> {
        match self.healthy {
            None => {
                self.healthy = Some(ok);
                Some(ok)
            }
            Some(healthy) if healthy == ok => {
                self.against = 0;
                None
            }
            Some(healthy) => {
                self.against += 1;
                let needed = if healthy {
                    settings.failure_threshold
                } else {
                    settings.success_threshold
                };
                if self.against >= needed {
                    self.healthy = Some(ok);
                    self.against = 0;
                    Some(ok)
                } else {
                    None
                }
            }
        }
    }
}

async fn run(settings: HealthSettings, presence: watch::Sender<Presence>, metrics: Arc<Metrics>) {
    let mut streak = Streak::default();
    let mut next = Instant::now();
    loop {
        sleep_until(next).await;
        next += settings.period;
        let outcome = probe::run(&settings.probe, settings.timeout).await;
        metrics.health_check(outcome.result());
        if let Some(healthy) = streak.record(outcome.ok(), &settings) {
            metrics.healthy(healthy);
            if healthy {
                tracing::info!("health probe passes: this candidate is healthy");
            } else {
                tracing::warn!(why = %outcome.describe(), "health probe fails: this candidate is unhealthy");
            }
            presence.send_modify(|me| me.healthy = healthy);
        } else if !outcome.ok() {
            tracing::debug!(why = %outcome.describe(), "health probe failed");
        }
        // A probe that overran its period does not make the next ones pile up.
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Probe;

    fn settings(failures: u32, successes: u32) -> HealthSettings {
        HealthSettings {
            probe: Probe::Exec(vec!["true".into()]),
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failure_threshold: failures,
            success_threshold: successes,
            unhealthy_backoff: Duration::from_secs(30),
        }
    }

    #[test]
    fn thresholds_turn_results_into_a_state() {
        let s = settings(3, 2);
        let mut streak = Streak::default();
        assert_eq!(
            streak.record(true, &s),
            Some(true),
            "the first result decides"
        );
        assert_eq!(streak.record(false, &s), None);
        assert_eq!(streak.record(false, &s), None);
        assert_eq!(streak.record(true, &s), None, "a success breaks the streak");
        assert_eq!(streak.record(false, &s), None);
        assert_eq!(streak.record(false, &s), None);
        assert_eq!(streak.record(false, &s), Some(false));
        assert_eq!(streak.record(true, &s), None);
        assert_eq!(streak.record(true, &s), Some(true));
        let mut down = Streak::default();
        assert_eq!(down.record(false, &s), Some(false));
    }
}
