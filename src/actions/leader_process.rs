//! The leader process: a command that runs only while this instance leads.

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::command::{self, Guarded, Spawned};
use crate::config::LeaderProcessConfig;
use crate::metrics::Metrics;

pub struct LeaderProcess {
    config: LeaderProcessConfig,
    metrics: Arc<Metrics>,
    running: Option<(Spawned, Instant)>,
    /// Delay before the next restart (`on_exit: restart`).
    backoff: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl LeaderProcess {
    pub fn new(config: LeaderProcessConfig, metrics: Arc<Metrics>) -> LeaderProcess {
        LeaderProcess {
            config,
            metrics,
            running: None,
            backoff: FIRST_BACKOFF,
        }
    }

    pub fn config(&self) -> &LeaderProcessConfig {
        &self.config
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts the command; a failure to start is logged and counted as an
    /// immediate exit.
    pub fn start(&mut self, env: &[(String, String)], guarded: Option<Guarded>) -> bool {
        match command::spawn("leader_process", &self.config.command, env, guarded) {
            Ok(child) => {
                tracing::info!(pid = child.pid().unwrap_or(0), "leader process started");
                self.metrics.leader_process_started();
                self.running = Some((child, Instant::now()));
                true
            }
            Err(err) => {
                tracing::error!(program = %self.config.command[0], %err, "cannot start the leader process");
                false
            }
        }
    }

    /// Resolves when the running command exits (never when none runs).
    pub async fn exited(&mut self) -> ExitStatus {
        let Some((child, started)) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let status = match child.wait().await {
            Ok(status) => status,
            Err(err) => {
                tracing::error!(%err, "cannot wait for the leader process");
                std::future::pending().await
            }
        };
        // A process that ran for a while earns a fresh backoff.
        if started.elapsed() > MAX_BACKOFF {
            self.backoff = FIRST_BACKOFF;
        }
        self.running = None;
        status
    }

    /// The delay before a restart, doubling up to 10 s.
    pub fn next_backoff(&mut self) -> Duration {
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        delay
    }

    pub fn reset_backoff(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }

    /// SIGTERM, then SIGKILL after `grace_period`, to its process group.
    pub async fn stop(&mut self) {
        if let Some((mut child, _)) = self.running.take() {
            tracing::info!("stopping the leader process");
            match child.stop(self.config.grace_period).await {
                Ok(status) => {
                    tracing::info!(code = command::exit_code(&status), "leader process stopped")
                }
                Err(err) => tracing::error!(%err, "cannot wait for the leader process"),
            }
        }
    }
}
