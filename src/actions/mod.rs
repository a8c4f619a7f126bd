//! Acting on leadership: hooks, the leader process and the pod label.
//!
//! One task consumes the election state and runs everything in event order,
//! one thing at a time:
//!
//! - gain: pod label → `started_leading` hook → leader process;
//! - loss: pod label (waited for at most 100 ms) → SIGTERM the leader
//!   process (SIGKILL after its grace period) → `stopped_leading` hook;
//! - any change of holder: `new_leader` hook.
//!
//! A loss preempts whatever runs for the term (a hook is killed), so the
//! leader process is stopped at the step-down instant; this task also
//! watches the term's safe-until deadline itself, so it does not even
//! depend on the elector noticing in time. It reports its progress back
//! ([`ActionsProgress`]) so that a lease is released only after the
//! leader-only work stopped.
//!
//! And in case leaderd itself stops working (frozen, killed), every process
//! it starts is registered with the [`guard`], a separate process that
//! kills a term's processes by the term's deadline.

pub(crate) mod command;
mod events;
pub mod guard;
mod hooks;
mod leader_process;
pub mod pod_label;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::config::{HooksConfig, LABEL_WAIT_ON_LOSS, LeaderProcessConfig, OnExit};
use crate::election::{ActionsProgress, ElectionState, Reason, Resign, Resigner};
use crate::metrics::Metrics;
use command::Guarded;
pub use command::exit_killing_every_group;
pub use events::{Event, EventKind};
use guard::{GuardHandle, Message};
pub use hooks::HookContext;
use leader_process::LeaderProcess;
use pod_label::{PodLabeler, Role};

/// How long a gain waits for the leader label before the hook and the
/// leader process start anyway (the label keeps being retried).
const LABEL_WAIT_ON_GAIN: Duration = Duration::from_secs(1);

/// What the guard allows a graceful stop beyond the label wait and the
/// grace period: signalling and reaping take a moment.
const STOP_SLACK: Duration = Duration::from_millis(50);

/// Everything the actions need to know from the configuration.
pub struct ActionsSettings {
    pub context: HookContext,
    pub hooks: HooksConfig,
    pub leader_process: Option<LeaderProcessConfig>,
    pub labeler: Option<PodLabeler>,
    /// The guard every started process registers with.
    pub guard: Option<GuardHandle>,
}

/// The running actions task.
pub struct Actions {
    task: JoinHandle<()>,
    stop: CancellationToken,
    progress: watch::Receiver<ActionsProgress>,
    exit_code: Arc<AtomicI32>,
}

/// No exit code was requested (`on_exit: exit` sets one).
const NO_EXIT_CODE: i32 = -1;

impl Actions {
    pub fn spawn(
        settings: ActionsSettings,
        state: watch::Receiver<ElectionState>,
        metrics: Arc<Metrics>,
        resigner: Resigner,
    ) -> Actions {
        let (progress_tx, progress) = watch::channel(ActionsProgress::default());
        let exit_code = Arc::new(AtomicI32::new(NO_EXIT_CODE));
        let stop = CancellationToken::new();
        let runner = Runner {
            context: settings.context,
            hooks: settings.hooks,
            process: settings
                .leader_process
                .map(|config| LeaderProcess::new(config, metrics.clone())),
            labeler: settings.labeler,
            guard: settings.guard,
            metrics,
            state,
            resigner,
            progress: progress_tx,
            exit_code: exit_code.clone(),
            busy_term: None,
            term_event: None,
        };
        let task = tokio::spawn(runner.run(stop.clone()));
        Actions {
            task,
            stop,
            progress,
            exit_code,
        }
    }

    pub fn progress(&self) -> watch::Receiver<ActionsProgress> {
        self.progress.clone()
    }

    /// The exit code the leader process asked leaderd to exit with.
    pub fn exit_code(&self) -> Option<i32> {
        let code = self.exit_code.load(Ordering::SeqCst);
        (code != NO_EXIT_CODE).then_some(code)
    }

    /// Stops the task: a hook still running is killed, a leader process
    /// still running is stopped (grace period as configured).
    pub async fn shutdown(self, bound: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(bound, self.task).await.is_err() {
            tracing::warn!("actions did not stop in time");
        }
    }
}

struct Runner {
    context: HookContext,
    hooks: HooksConfig,
    process: Option<LeaderProcess>,
    labeler: Option<PodLabeler>,
    guard: Option<GuardHandle>,
    metrics: Arc<Metrics>,
    state: watch::Receiver<ElectionState>,
    resigner: Resigner,
    progress: watch::Sender<ActionsProgress>,
    exit_code: Arc<AtomicI32>,
    /// The term whose leader-only work was started and not yet stopped.
    busy_term: Option<u64>,
    /// The started_leading event of that term, for the leader process env.
    term_event: Option<Event>,
}

impl Runner {
    async fn run(mut self, stop: CancellationToken) {
        if let Some(labeler) = &self.labeler {
            labeler.set(Role::Follower);
        }
        let mut tracker = events::Tracker::default();
        let mut queue = VecDeque::new();
        loop {
            let version = {
                let state = self.state.borrow_and_update();
                queue.extend(tracker.diff(&state, Instant::now()));
                state.version
            };
            if let Some(event) = queue.pop_front() {
                tokio::select! {
                    () = self.execute(event) => {}
                    () = stop.cancelled() => break,
                }
                continue;
            }
            self.progress.send_replace(ActionsProgress {
                seen_version: version,
                busy_term: self.busy_term,
            });

            let deadline = self.leading_deadline();
            let process = self.process.as_mut();
            tokio::select! {
                changed = self.state.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                // Our own check of safe-until: the diff at the top of the
                // loop sees the term end even before the elector says so.
                () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {}
                status = exited(process) => self.on_process_exit(status).await,
                () = stop.cancelled() => break,
            }
        }
        // Shutdown: nothing leader-only may outlive leaderd.
        if let Some(process) = self.process.as_mut() {
            process.stop().await;
        }
    }

    /// The safe-until of the term we act for, while we act for one.
    fn leading_deadline(&self) -> Option<Instant> {
        self.busy_term?;
        self.state
            .borrow()
            .term
            .as_ref()
            .map(|term| term.safe_until)
    }

    async fn execute(&mut self, event: Event) {
        match event.kind {
            EventKind::StartedLeading => self.started_leading(event).await,
            EventKind::StoppedLeading => self.stopped_leading(event).await,
            EventKind::NewLeader => {
                if self.hooks.new_leader.is_empty() {
                    return;
                }
                let argv = self.hooks.new_leader.clone();
                match (event.is_leader, event.fencing_token) {
                    (true, Some(token)) => {
                        let loss = lost(self.state.clone(), token);
                        // Loss first: no hook is started for a term already over.
                        tokio::select! {
                            biased;
                            () = loss => {}
                            _ = self.run_hook(&argv, &event, Some(token)) => {}
                        }
                    }
                    _ => {
                        self.run_hook(&argv, &event, None).await;
                    }
                }
            }
        }
    }

    async fn started_leading(&mut self, event: Event) {
        let Some(token) = event.fencing_token else {
            return;
        };
        self.busy_term = Some(token);
        self.term_event = Some(event.clone());
        if let Some(process) = self.process.as_mut() {
            process.reset_backoff();
        }
        let loss = lost(self.state.clone(), token);
        tokio::pin!(loss);

        if let Some(labeler) = &self.labeler {
            let generation = labeler.set(Role::Leader {
                fencing_token: token,
            });
            tokio::select! {
                _ = labeler.wait_applied(generation, LABEL_WAIT_ON_GAIN) => {}
                () = &mut loss => return,
            }
        }
        if !self.hooks.started_leading.is_empty() {
            let argv = self.hooks.started_leading.clone();
            let result = tokio::select! {
                biased;
                () = &mut loss => return,
                result = self.run_hook(&argv, &event, Some(token)) => result,
            };
            if result != hooks::HookResult::Ok && self.hooks.step_down_on_failure {
                tracing::warn!(
                    "started_leading hook failed; stepping down (hooks.step_down_on_failure)"
                );
                self.resigner.resign(Resign {
                    reason: Reason::StepDown,
                    then_exit: false,
                });
                return;
            }
        }
        self.start_process();
    }

    /// Runs a hook; `term`: the term it runs for (killed with the term's
    /// processes), `None` for hooks that are not leader-only work.
    async fn run_hook(
        &self,
        argv: &[String],
        event: &Event,
        term: Option<u64>,
    ) -> hooks::HookResult {
        hooks::run(
            argv,
            event,
            &self.context,
            self.hooks.timeout,
            &self.metrics,
            self.guarded(term),
        )
        .await
    }

    /// What a process of `term` registers with the guard: the term's token
    /// and its safe-until as published now.
    fn guarded(&self, term: Option<u64>) -> Option<Guarded> {
        let guard = self.guard.as_ref()?;
        let term = term.map(|token| {
            let state = self.state.borrow();
            let our = state.term.as_ref().filter(|t| t.fencing_token == token);
            // A term already over: a safe-until in the past makes the guard
            // kill the process at once, should it still start.
            (token, our.map_or_else(Instant::now, |t| t.safe_until))
        });
        Some(Guarded {
            guard: guard.clone(),
            registration: guard.registration(term),
        })
    }

    fn start_process(&mut self) {
        let guarded = self.guarded(self.busy_term);
        let (Some(process), Some(event)) = (self.process.as_mut(), self.term_event.as_ref()) else {
            return;
        };
        let still_leading = {
            let state = self.state.borrow();
            state.is_leader_at(Instant::now())
                && state.term.as_ref().map(|t| t.fencing_token) == event.fencing_token
        };
        if still_leading
            && !process.is_running()
            && !process.start(&self.context.env(event), guarded)
        {
            // Could not even start: treat it like an exit (policy decides).
            self.resigner.resign(Resign {
                reason: Reason::LeaderProcessExited,
                then_exit: false,
            });
        }
    }

    async fn stopped_leading(&mut self, event: Event) {
        let Some(token) = self
            .busy_term
            .filter(|busy| Some(*busy) == event.fencing_token)
        else {
            // Nothing was started for this term, so there is nothing to stop.
            return;
        };
        if let Some(guard) = &self.guard {
            // We stop the term's processes ourselves; the guard waits for
            // us (never past the window after safe-until).
            let grace = self
                .process
                .as_ref()
                .map_or(Duration::ZERO, |p| p.config().grace_period);
            guard.stopping(
                token,
                Instant::now() + LABEL_WAIT_ON_LOSS + grace + STOP_SLACK,
            );
        }
        if let Some(labeler) = &self.labeler {
            // First, so that traffic stops reaching us; but never let the
            // API server delay stopping the leader process by much.
            let generation = labeler.set(Role::Follower);
            labeler.wait_applied(generation, LABEL_WAIT_ON_LOSS).await;
        }
        if let Some(process) = self.process.as_mut() {
            process.stop().await;
        }
        // A term hook cut short by the loss is still in its SIGTERM grace:
        // the term ends (for the guard, and for the release) when it is gone.
        command::stopped().await;
        if let Some(guard) = &self.guard {
            guard.send(Message::Ended { token });
        }
        if !self.hooks.stopped_leading.is_empty() {
            // Demotion, not leader-only work: the term is over.
            let argv = self.hooks.stopped_leading.clone();
            self.run_hook(&argv, &event, None).await;
        }
        self.busy_term = None;
        self.term_event = None;
    }

    async fn on_process_exit(&mut self, status: std::process::ExitStatus) {
        let code = command::exit_code(&status);
        let Some(process) = self.process.as_mut() else {
            return;
        };
        let policy = process.config().on_exit;
        tracing::warn!(code, on_exit = ?policy, "leader process exited on its own");
        match policy {
            OnExit::Restart => {
                let Some(token) = self.busy_term else {
                    return;
                };
                let delay = process.next_backoff();
                tokio::select! {
                    () = tokio::time::sleep(delay) => self.start_process(),
                    () = lost(self.state.clone(), token) => {}
                }
            }
            OnExit::Release => self.resigner.resign(Resign {
                reason: Reason::LeaderProcessExited,
                then_exit: false,
            }),
            OnExit::Exit => {
                self.exit_code.store(code, Ordering::SeqCst);
                self.resigner.resign(Resign {
                    reason: Reason::LeaderProcessExited,
                    then_exit: true,
                });
            }
        }
    }
}

/// Resolves when we no longer lead in term `token`: the elector said so, or
/// the term's safe-until passed.
async fn lost(mut state: watch::Receiver<ElectionState>, token: u64) {
    loop {
        let deadline = {
            let state = state.borrow_and_update();
            match &state.term {
                Some(term) if term.fencing_token == token && state.is_leader_at(Instant::now()) => {
                    term.safe_until
                }
                _ => return,
            }
        };
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = sleep_until(deadline) => {}
        }
    }
}

async fn exited(process: Option<&mut LeaderProcess>) -> std::process::ExitStatus {
    match process {
        Some(process) => process.exited().await,
        None => std::future::pending().await,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}
