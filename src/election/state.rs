//! The election state that the elector publishes on a `watch` channel, and
//! the questions every consumer asks of it.
//!
//! Leadership is a *deadline*, not a flag: [`ElectionState::is_leader_at`]
//! compares the monotonic clock with the term's safe-until instant, so a
//! process that was paused past its deadline answers "not leader" the moment
//! it runs again, before the elector loop has even noticed.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::backend::Holder;

/// Why leadership began or ended (also passed to hooks as `LEADERD_REASON`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// This candidate took the free lease.
    Acquired,
    /// leaderd was asked to stop (SIGTERM/SIGINT).
    Shutdown,
    /// Renewals did not succeed before safe-until.
    RenewFailed,
    /// The store answered that the lease is no longer ours.
    LockLost,
    /// Leadership was given back on request (e.g. a failed
    /// `started_leading` hook with `step_down_on_failure`).
    StepDown,
    /// The leader process exited on its own.
    LeaderProcessExited,
    /// The store asked for a handover to another candidate (a Kubernetes
    /// Lease's `preferredHolder`, Coordinated Leader Election).
    HandOver,
    /// Another candidate's term was observed (for `new_leader`).
    Observed,
    /// Handed over on an operator's request (`POST /switchover`).
    Switchover,
    /// Handed over to a healthy candidate because our health probe failed.
    Unhealthy,
    /// Handed over to a present, healthy candidate with a higher priority
    /// (`election.preempt`).
    Preempted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Acquired => "acquired",
            Reason::Shutdown => "shutdown",
            Reason::RenewFailed => "renew_failed",
            Reason::LockLost => "lock_lost",
            Reason::StepDown => "step_down",
            Reason::LeaderProcessExited => "leader_process_exited",
            Reason::HandOver => "hand_over",
            Reason::Observed => "observed",
            Reason::Switchover => "switchover",
            Reason::Unhealthy => "unhealthy",
            Reason::Preempted => "preempted",
        }
    }
}

/// Our own term while we lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderTerm {
    pub fencing_token: u64,
    pub started_at: SystemTime,
    /// The instant at which we stop being leader unless a renewal that was
    /// sent later succeeds: send time of the last successful acquire or
    /// renew + renew_deadline. Always earlier than the server-side expiry.
    pub safe_until: Instant,
}

/// Everything a consumer (HTTP, metrics, hooks, …) may want to know.
#[derive(Debug, Clone)]
pub struct ElectionState {
    pub election: String,
    pub identity: String,
    pub backend_kind: &'static str,
    /// Some while we hold a term; check [`Self::is_leader_at`] for "now".
    pub term: Option<LeaderTerm>,
    /// The holder of the lease as last observed (ourselves included).
    pub leader: Option<Holder>,
    /// When the observed holder's lease runs out if it is not renewed.
    pub leader_lease_until: Option<Instant>,
    /// The backend has answered at least once since start.
    pub observed: bool,
    /// The last backend call failed; the message says why.
    pub backend_error: Option<String>,
    /// The reason of the last transition of our own role.
    pub last_reason: Option<Reason>,
    /// Last time the election loop completed an iteration (for `/healthz`).
    pub heartbeat: Instant,
    /// This instance only observes (`election.mode: observe`).
    pub observer: bool,
    /// Nobody holds the lease: it is reserved for this candidate (a
    /// switchover or a health or priority handover in progress).
    pub reserved_for: Option<String>,
    /// We lead although our health probe fails, because no healthy
    /// candidate stands.
    pub leading_unhealthy: bool,
    /// Increases with every change consumers are woken for, so that a
    /// consumer can say which state it has acted on.
    pub version: u64,
}

/// What the consumers that act on leadership (hooks, leader process, pod
/// label) report back, so that a leader releases its lease only once its
/// leader-only work has stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionsProgress {
    /// The last [`ElectionState::version`] fully acted on.
    pub seen_version: u64,
    /// The fencing token of the term whose leader-only work is running.
    pub busy_term: Option<u64>,
}

impl ElectionState {
    pub fn new(election: &str, identity: &str, backend_kind: &'static str) -> ElectionState {
        ElectionState {
            election: election.to_string(),
            identity: identity.to_string(),
            backend_kind,
            term: None,
            leader: None,
            leader_lease_until: None,
            observed: false,
            backend_error: None,
            last_reason: None,
            heartbeat: Instant::now(),
            observer: false,
            reserved_for: None,
            leading_unhealthy: false,
            version: 0,
        }
    }

    /// Whether we may act as leader at `now`.
    pub fn is_leader_at(&self, now: Instant) -> bool {
        self.term.as_ref().is_some_and(|term| now < term.safe_until)
    }

    /// For a leader: time left before it steps down. For a follower: time
    /// left on the observed holder's lease. `None` when nobody holds it.
    pub fn lease_remaining_at(&self, now: Instant) -> Option<Duration> {
        match &self.term {
            Some(term) => Some(term.safe_until.saturating_duration_since(now)),
            None => self
                .leader_lease_until
                .map(|until| until.saturating_duration_since(now)),
        }
    }

    /// The leader as seen at `now`: ourselves only inside our safe window.
    pub fn leader_at(&self, now: Instant) -> Option<&Holder> {
        let holder = self.leader.as_ref()?;
        if holder.identity == self.identity && self.term.is_some() && !self.is_leader_at(now) {
            // Our own term ran out locally; we do not claim it any more.
            return None;
        }
        Some(holder)
    }

    /// Ready once the backend answered and while it keeps answering.
    pub fn ready(&self) -> bool {
        self.observed && self.backend_error.is_none()
    }

    /// Whether the election loop is stuck (client-go HealthzAdaptor rule).
    pub fn stuck_at(&self, now: Instant, lease_duration: Duration) -> bool {
        now.saturating_duration_since(self.heartbeat) > lease_duration
    }
}
