//! Operators steer the election: the candidates standing, and switchovers
//! (now or at a set time, to a named candidate or to the best other one,
//! cancelled) — the rules behind `/switchover`, kept apart from HTTP and
//! from any particular store.
//!
//! A request is checked against who stands now, then recorded in the store
//! (one at a time), which announces it to the leader wherever the request
//! was made. The leader carries it out ([`super::handover`]); the daemon
//! that took the request waits until it sees the new leader.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

use super::handover;
use super::state::ElectionState;
use crate::backend::{Backend, BackendError, Switchover, SwitchoverAnswer, SwitchoverRequest};

/// What an operator asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchoverAsk {
    /// `None`: any other healthy candidate (the best one).
    pub candidate: Option<String>,
    /// RFC 3339 with an offset; `None`: now.
    pub scheduled_at: Option<String>,
}

/// How a switchover request ended, for the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchoverOutcome {
    /// Carried out: `leader` leads now.
    Done { leader: String },
    /// Recorded for later.
    Scheduled(Switchover),
    /// The bad part of the request.
    Invalid(String),
    /// No candidate of that name stands.
    UnknownCandidate(String),
    /// Another switchover is pending.
    Conflict(Switchover),
    /// The named candidate leads already, is not healthy, or nobody else
    /// stands.
    Refused(String),
    /// Nobody leads: there is nothing to switch over from.
    NoLeader,
    /// Not carried out within the time waited; it stays pending.
    TimedOut {
        leader: Option<String>,
        pending: Switchover,
    },
    /// The store could not be asked.
    Unavailable(String),
}

impl SwitchoverOutcome {
    /// The label of `leaderd_switchovers_total{result}`.
    pub fn result(&self) -> &'static str {
        match self {
            SwitchoverOutcome::Done { .. } => "done",
            SwitchoverOutcome::Scheduled(_) => "scheduled",
            SwitchoverOutcome::Invalid(_) => "invalid",
            SwitchoverOutcome::UnknownCandidate(_) => "unknown_candidate",
            SwitchoverOutcome::Conflict(_) => "conflict",
            SwitchoverOutcome::Refused(_) => "refused",
            SwitchoverOutcome::NoLeader => "no_leader",
            SwitchoverOutcome::TimedOut { .. } => "timeout",
            SwitchoverOutcome::Unavailable(_) => "unavailable",
        }
    }
}

/// What the HTTP layer may ask of the election (type-erased over the
/// backend, so that nothing outside `backend/` knows which store it is).
pub trait Steer: Send + Sync {
    fn switchover(&self, ask: SwitchoverAsk) -> BoxFuture<'_, SwitchoverOutcome>;
    fn pending(&self) -> BoxFuture<'_, Result<Option<Switchover>, BackendError>>;
    /// Whether one was pending.
    fn cancel(&self) -> BoxFuture<'_, Result<bool, BackendError>>;
}

/// [`Steer`] for one backend.
pub struct Steering<B: Backend> {
    backend: Arc<B>,
    state: watch::Receiver<ElectionState>,
    lease_duration: Duration,
    retry_period: Duration,
}

impl<B: Backend> Steering<B> {
    pub fn new(
        backend: Arc<B>,
        state: watch::Receiver<ElectionState>,
        lease_duration: Duration,
        retry_period: Duration,
    ) -> Steering<B> {
        Steering {
            backend,
            state,
            lease_duration,
            retry_period,
        }
    }

    fn deadline(&self) -> Instant {
        // A store that is slow to answer an operator is not worth waiting
        // for longer than a couple of retries.
        Instant::now() + self.retry_period * 2
    }

    async fn request(&self, ask: SwitchoverAsk) -> SwitchoverOutcome {
        let scheduled_at = match &ask.scheduled_at {
            None => None,
            Some(text) => match text.parse::<jiff::Timestamp>() {
                Ok(at) => Some(at),
                Err(err) => {
                    return SwitchoverOutcome::Invalid(format!(
                        "scheduled_at {text:?} is not an RFC 3339 time with an offset, like 2026-12-03T02:00:00+01:00 ({err})"
                    ));
                }
            },
        };
        let (leader, us) = {
            let state = self.state.borrow();
            (
                state
                    .leader_at(Instant::now())
                    .map(|holder| holder.identity.clone()),
                state.identity.clone(),
            )
        };
        let Some(leader) = leader else {
            return SwitchoverOutcome::NoLeader;
        };
        let deadline = self.deadline();
        let candidates = match bounded(
            deadline,
            self.backend.candidates(self.lease_duration, deadline),
        )
        .await
        {
            Ok(candidates) => candidates,
            Err(err) => return SwitchoverOutcome::Unavailable(err.to_string()),
        };
        match &ask.candidate {
            Some(name) => {
                let Some(named) = candidates.iter().find(|c| c.presence.identity == *name) else {
                    return SwitchoverOutcome::UnknownCandidate(name.clone());
                };
                if *name == leader {
                    return SwitchoverOutcome::Refused(format!("{name} leads already"));
                }
                if !named.presence.healthy {
                    return SwitchoverOutcome::Refused(format!("{name} is not healthy"));
                }
            }
            None => {
                if handover::best_other(&leader, candidates.iter().map(|c| &c.presence)).is_none() {
                    return SwitchoverOutcome::Refused(
                        "no other healthy candidate stands".to_string(),
                    );
                }
            }
        }
        let id: u64 = rand::rng().random();
        let record = Switchover {
            id: format!("{id:016x}"),
            candidate: ask.candidate.clone(),
            scheduled_at: scheduled_at.map(|at| at.to_string()),
            requested_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            requested_via: us,
            leader: leader.clone(),
        };
        let deadline = self.deadline();
        match bounded(
            deadline,
            self.backend
                .switchover(SwitchoverRequest::Record(record.clone()), deadline),
        )
        .await
        {
            Ok(SwitchoverAnswer::Done) => {}
            Ok(SwitchoverAnswer::Pending(existing)) => {
                return SwitchoverOutcome::Conflict(existing);
            }
            Ok(SwitchoverAnswer::None) => {
                return SwitchoverOutcome::Unavailable(
                    "the store did not record the switchover".to_string(),
                );
            }
            Err(err) => return SwitchoverOutcome::Unavailable(err.to_string()),
        }
        tracing::info!(
            candidate = record.candidate.as_deref().unwrap_or("(the best other)"),
            scheduled_at = record.scheduled_at.as_deref().unwrap_or("now"),
            %leader,
            "switchover requested"
        );
        if handover::scheduled(&record).is_some_and(|at| at > SystemTime::now()) {
            return SwitchoverOutcome::Scheduled(record);
        }
        // Carried out when a new leader is seen here.
        let mut state = self.state.clone();
        let handed_over = state.wait_for(|s| {
            s.leader_at(Instant::now())
                .is_some_and(|holder| holder.identity != leader)
        });
        match timeout(self.lease_duration, handed_over).await {
            Ok(Ok(state)) => SwitchoverOutcome::Done {
                leader: state
                    .leader_at(Instant::now())
                    .map(|holder| holder.identity.clone())
                    .unwrap_or_default(),
            },
            _ => SwitchoverOutcome::TimedOut {
                leader: self
                    .state
                    .borrow()
                    .leader_at(Instant::now())
                    .map(|holder| holder.identity.clone()),
                pending: record,
            },
        }
    }
}

impl<B: Backend> Steer for Steering<B> {
    fn switchover(&self, ask: SwitchoverAsk) -> BoxFuture<'_, SwitchoverOutcome> {
        Box::pin(self.request(ask))
    }

    fn pending(&self) -> BoxFuture<'_, Result<Option<Switchover>, BackendError>> {
        Box::pin(async move {
            let deadline = self.deadline();
            match bounded(
                deadline,
                self.backend.switchover(SwitchoverRequest::Get, deadline),
            )
            .await?
            {
                SwitchoverAnswer::Pending(record) => Ok(Some(record)),
                _ => Ok(None),
            }
        })
    }

    fn cancel(&self) -> BoxFuture<'_, Result<bool, BackendError>> {
        Box::pin(async move {
            let deadline = self.deadline();
            let answer = bounded(
                deadline,
                self.backend.switchover(SwitchoverRequest::Cancel, deadline),
            )
            .await?;
            if answer == SwitchoverAnswer::Done {
                tracing::info!("switchover cancelled");
            }
            Ok(answer == SwitchoverAnswer::Done)
        })
    }
}

async fn bounded<T>(
    deadline: Instant,
    call: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or_else(|_| Err(BackendError::timeout()))
}
