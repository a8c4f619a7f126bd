//! Running one hook: the environment it gets, its timeout, and what is
//! recorded about it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::command::{self, Guarded};
use super::events::{Event, EventKind};
use crate::config::HOOK_KILL_GRACE;
use crate::metrics::Metrics;

/// How a hook ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookResult {
    Ok,
    Failed,
    Timeout,
    NotFound,
}

impl HookResult {
    fn as_str(self) -> &'static str {
        match self {
            HookResult::Ok => "ok",
            HookResult::Failed => "failed",
            HookResult::Timeout => "timeout",
            HookResult::NotFound => "not_found",
        }
    }
}

/// What every hook and the leader process are told, besides the event.
#[derive(Debug, Clone)]
pub struct HookContext {
    pub election: String,
    pub identity: String,
    pub status_url: String,
    /// The term file (`LEADERD_TERM_FILE`), when a guard runs.
    pub term_file: Option<String>,
}

impl HookContext {
    /// The `LEADERD_*` environment for `event`.
    pub fn env(&self, event: &Event) -> Vec<(String, String)> {
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        [
            ("LEADERD_EVENT", event.kind.as_str().to_string()),
            ("LEADERD_ELECTION", self.election.clone()),
            ("LEADERD_IDENTITY", self.identity.clone()),
            ("LEADERD_IS_LEADER", event.is_leader.to_string()),
            ("LEADERD_LEADER", text(&event.leader)),
            ("LEADERD_PREVIOUS_LEADER", text(&event.previous_leader)),
            (
                "LEADERD_FENCING_TOKEN",
                event
                    .fencing_token
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            ),
            ("LEADERD_REASON", event.reason.as_str().to_string()),
            ("LEADERD_STATUS_URL", self.status_url.clone()),
            (
                "LEADERD_TERM_FILE",
                self.term_file.clone().unwrap_or_default(),
            ),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
    }
}

/// Records a run in the metrics when it ends, also when the run is
/// abandoned (dropped) because leadership was lost meanwhile.
struct Record<'a> {
    metrics: &'a Metrics,
    hook: EventKind,
    started: Instant,
    result: Option<&'static str>,
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        let result = self.result.unwrap_or("preempted");
        self.metrics
            .hook_run(self.hook.as_str(), result, self.started.elapsed());
    }
}

/// Runs `argv` for `event`; SIGTERM to its process group at `timeout`,
/// SIGKILL [`HOOK_KILL_GRACE`] later. Never fails the election: problems are
/// logged and counted.
pub async fn run(
    argv: &[String],
    event: &Event,
    context: &HookContext,
    timeout: Duration,
    metrics: &Arc<Metrics>,
    guarded: Option<Guarded>,
) -> HookResult {
    let hook = event.kind;
    let name = format!("hook {}", hook.as_str());
    let mut record = Record {
        metrics,
        hook,
        started: Instant::now(),
        result: None,
    };
    let result = match command::spawn(&name, argv, &context.env(event), guarded) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            tracing::error!(hook = hook.as_str(), program = %argv[0], "hook program not found");
            HookResult::NotFound
        }
        Err(err) => {
            tracing::error!(hook = hook.as_str(), program = %argv[0], %err, "cannot start hook");
            HookResult::Failed
        }
        Ok(mut child) => match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => HookResult::Ok,
            Ok(Ok(status)) => {
                tracing::warn!(
                    hook = hook.as_str(),
                    code = command::exit_code(&status),
                    "hook failed"
                );
                HookResult::Failed
            }
            Ok(Err(err)) => {
                tracing::error!(hook = hook.as_str(), %err, "cannot wait for hook");
                HookResult::Failed
            }
            Err(_) => {
                tracing::warn!(
                    hook = hook.as_str(),
                    timeout = %crate::config::show(timeout),
                    "hook timed out; stopping its process group"
                );
                let _ = child.stop(HOOK_KILL_GRACE).await;
                HookResult::Timeout
            }
        },
    };
    record.result = Some(result.as_str());
    result
}
