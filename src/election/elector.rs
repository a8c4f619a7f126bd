//! The election state machine: the whole timing policy in one place.
//!
//! A candidate alternates between two loops:
//!
//! - **follow**: try to acquire; if someone holds the lease, sleep until the
//!   lease's observed expiry (at most `retry_period`), or until the backend
//!   announces a change of holder. A crashed leader is therefore replaced
//!   right after its lease expires, and a released lease is taken at once.
//! - **lead**: renew every `retry_period`. Leadership lasts until
//!   *safe-until* = send time of the last successful acquire/renew +
//!   `renew_deadline`, measured on the monotonic clock. Every call's deadline
//!   is capped at safe-until, so a hung store cannot keep us leading past it;
//!   the server-side TTL is `lease_duration`, which is longer, so we always
//!   stop before anyone else can take over.
//!
//! The elector owns the only `watch::Sender` of the election state and never
//! waits on a consumer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::handover::{self, Decision, Outranked, Preemption, Target};
use super::state::{ActionsProgress, ElectionState, LeaderTerm, Reason};
use crate::backend::{
    Acquire, Backend, BackendError, Handoff, Holder, Notices, Observed, Presence, Renew,
    SwitchoverRequest, Term,
};
use crate::metrics::Metrics;

/// The client-go timing triple, already validated
/// (`lease_duration > renew_deadline > 1.2 × retry_period > 0`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Server-side TTL of the lease: how long others wait after the last renewal.
    pub lease_duration: Duration,
    /// How long after a successful renewal was sent the leader may still act.
    pub renew_deadline: Duration,
    /// How often the leader renews, and the longest a follower sleeps.
    pub retry_period: Duration,
}

impl Timing {
    /// First delay after a failed call; doubled up to `retry_period`.
    fn first_backoff(&self) -> Duration {
        (self.retry_period / 8).max(Duration::from_millis(10))
    }

    /// How long a shutdown waits for the release before giving up (the
    /// lease then expires on its own).
    pub fn release_timeout(&self) -> Duration {
        self.renew_deadline.min(Duration::from_secs(5))
    }
}

/// How this candidate takes part, beyond the timing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conduct {
    /// Never compete: only watch the lease (`election.mode: observe`).
    pub observer: bool,
    /// When a leader hands over to a preferred candidate.
    pub preemption: Preemption,
    /// After handing over for health, how long to stand aside even if the
    /// probe passes again (so that two flapping nodes cannot ping-pong).
    pub unhealthy_backoff: Duration,
}

/// How a term ended, seen from the caller of [`Elector::run`].
#[derive(Debug)]
pub enum Outcome {
    /// Shutdown was requested while following.
    Stopped,
    /// Shutdown (or a [`Resign`] with `then_exit`) while leading: we already
    /// stepped down locally (the state says so); the caller releases the
    /// term once its leader-only work has stopped
    /// ([`Elector::wait_for_actions`]).
    StoppedLeading(Term),
}

/// A request to give leadership back, from the parts that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resign {
    pub reason: Reason,
    /// Stop competing and return from [`Elector::run`] afterwards.
    pub then_exit: bool,
}

/// Sends [`Resign`] requests to the elector; ignored while not leading.
#[derive(Debug, Clone)]
pub struct Resigner(mpsc::UnboundedSender<Resign>);

impl Resigner {
    pub fn resign(&self, request: Resign) {
        // The elector is gone only during shutdown, when it no longer matters.
        let _ = self.0.send(request);
    }
}

pub struct Elector<B: Backend> {
    backend: Arc<B>,
    identity: String,
    timing: Timing,
    conduct: Conduct,
    /// What we announce about ourselves (the health probe updates it).
    presence: watch::Receiver<Presence>,
    /// Stand aside (do not compete) until then: after handing over for
    /// health.
    stand_aside_until: Option<Instant>,
    state: watch::Sender<ElectionState>,
    metrics: Arc<Metrics>,
    /// Our latest term's id, kept after stepping down so that our own stale
    /// record is not mistaken for another candidate's.
    own_term_id: Option<String>,
    /// A lease held under our identity by a term that is not ours.
    own_identity: Option<OwnIdentityLease>,
    /// Said once per episode: the store is in its data-loss quarantine.
    told_quarantine: bool,
    /// Said once per episode: the store is full.
    told_full: bool,
    /// The foreign lock description already warned about.
    warned_foreign: Option<String>,
    resign_tx: mpsc::UnboundedSender<Resign>,
    resign_rx: mpsc::UnboundedReceiver<Resign>,
    /// Progress of the consumers that act on leadership; a term is released
    /// only after they stopped its leader-only work.
    actions: Option<watch::Receiver<ActionsProgress>>,
}

/// A lease under our own identity that is not our term: a previous run of
/// this candidate (restarted after a crash) if it runs out unrenewed, a
/// duplicate identity if it is renewed.
struct OwnIdentityLease {
    term_id: Option<String>,
    /// When it runs out, as last seen (our clock).
    until: Instant,
    warned: bool,
}

/// A holder seen by a follower, and the instant (our clock) until which
/// it may still be acting as leader.
struct Sighting {
    holder: Holder,
    until: Instant,
    /// Its lease disappeared from the store without a release.
    vanished: bool,
}

enum FollowEnd {
    Acquired { term: Term, sent: Instant },
    Shutdown,
}

enum LeadEnd {
    SteppedDown(Reason),
    /// The store says the lease is someone else's (or nobody's) now.
    LostTo(Option<Holder>),
    Resigned(Resign),
    /// Hand the lease to this candidate (a switchover, our health, a
    /// preferred candidate).
    HandOver {
        to: String,
        reason: Reason,
        /// The id of the switchover carried out, if it is one.
        switchover: Option<String>,
    },
    Shutdown,
}

impl<B: Backend> Elector<B> {
    pub fn new(
        backend: Arc<B>,
        election: &str,
        presence: watch::Receiver<Presence>,
        timing: Timing,
        conduct: Conduct,
        metrics: Arc<Metrics>,
    ) -> Elector<B> {
        let identity = presence.borrow().identity.clone();
        let mut state = ElectionState::new(election, &identity, backend.kind());
        state.observer = conduct.observer;
        let (resign_tx, resign_rx) = mpsc::unbounded_channel();
        Elector {
            backend,
            identity,
            timing,
            conduct,
            presence,
            stand_aside_until: None,
            state: watch::Sender::new(state),
            metrics,
            own_term_id: None,
            own_identity: None,
            told_quarantine: false,
            told_full: false,
            warned_foreign: None,
            resign_tx,
            resign_rx,
            actions: None,
        }
    }

    /// A handle to ask the elector to give leadership back.
    pub fn resigner(&self) -> Resigner {
        Resigner(self.resign_tx.clone())
    }

    /// Makes every release wait for the consumers' progress (see
    /// [`Elector::wait_for_actions`]).
    pub fn set_actions_progress(&mut self, progress: watch::Receiver<ActionsProgress>) {
        self.actions = Some(progress);
    }

    /// Waits until the consumers acted on our step-down from `term` and its
    /// leader-only work stopped; at most `lease_duration − renew_deadline`,
    /// after which the lease may be taken by others anyway.
    pub async fn wait_for_actions(&self, term: &Term) {
        let Some(progress) = &self.actions else {
            return;
        };
        let mut progress = progress.clone();
        let version = self.state.borrow().version;
        let bound = self
            .timing
            .lease_duration
            .saturating_sub(self.timing.renew_deadline);
        let done = progress
            .wait_for(|p| p.seen_version >= version && p.busy_term != Some(term.fencing_token));
        if tokio::time::timeout(bound, done).await.is_err() {
            tracing::warn!(
                token = term.fencing_token,
                "leader-only work still running after the step-down window; releasing anyway"
            );
        }
    }

    /// A receiver of the election state; as many as needed.
    pub fn subscribe(&self) -> watch::Receiver<ElectionState> {
        self.state.subscribe()
    }

    /// Runs the election until `shutdown` is cancelled.
    pub async fn run(&mut self, shutdown: CancellationToken) -> Outcome {
        loop {
            let (term, sent) = match self.follow(&shutdown).await {
                FollowEnd::Acquired { term, sent } => (term, sent),
                FollowEnd::Shutdown => return Outcome::Stopped,
            };
            // Requests sent while we were not leading are stale; drain them
            // before consumers hear of the new term and may send fresh ones.
            while self.resign_rx.try_recv().is_ok() {}
            self.became_leader(&term, sent);
            match self.lead(&term, sent, &shutdown).await {
                LeadEnd::SteppedDown(reason) => self.stepped_down(reason),
                LeadEnd::LostTo(holder) => {
                    // Step down first: consumers must never see another
                    // holder while our term still stands.
                    self.stepped_down(Reason::LockLost);
                    self.observe(holder, None);
                }
                LeadEnd::Shutdown => {
                    self.stepped_down(Reason::Shutdown);
                    return Outcome::StoppedLeading(term);
                }
                LeadEnd::HandOver {
                    to,
                    reason,
                    switchover,
                } => {
                    tracing::info!(to = %to, reason = reason.as_str(), "handing over");
                    self.stepped_down(reason);
                    self.wait_for_actions(&term).await;
                    let handoff = Handoff {
                        to,
                        from: self.identity.clone(),
                        token: term.fencing_token,
                        reason: reason.as_str().to_string(),
                        switchover,
                    };
                    let _ = self.release_with(&term, Some(&handoff)).await;
                    if reason == Reason::Unhealthy {
                        self.stand_aside_until =
                            Some(Instant::now() + self.conduct.unhealthy_backoff);
                    }
                    // The handoff keeps everyone else (us included) from the
                    // lease until its candidate took it or it expired.
                }
                LeadEnd::Resigned(request) => {
                    self.stepped_down(request.reason);
                    if request.then_exit {
                        return Outcome::StoppedLeading(term);
                    }
                    self.wait_for_actions(&term).await;
                    let _ = self.release(&term).await;
                    // The release notice woke the others; stay out of the
                    // race for a moment so that one of them takes over.
                    tokio::select! {
                        () = sleep(self.timing.retry_period) => {}
                        () = shutdown.cancelled() => return Outcome::Stopped,
                    }
                }
            }
        }
    }

    /// Gives a term back after shutdown so that a follower takes over at
    /// once instead of after the TTL. Bounded: if the store does not answer,
    /// the lease simply expires.
    pub async fn release(&self, term: &Term) -> Result<bool, BackendError> {
        self.release_with(term, None).await
    }

    async fn release_with(
        &self,
        term: &Term,
        handoff: Option<&Handoff>,
    ) -> Result<bool, BackendError> {
        let deadline = Instant::now() + self.timing.release_timeout();
        let result = bounded(
            deadline,
            self.backend
                .release(term, handoff, self.timing.lease_duration, deadline),
        )
        .await;
        match &result {
            Ok(true) => tracing::info!(token = term.fencing_token, "released the lease"),
            Ok(false) => tracing::info!(
                token = term.fencing_token,
                "lease was no longer ours; nothing to release"
            ),
            Err(err) => {
                self.metrics.backend_error("release");
                tracing::warn!(%err, "could not release the lease; it will expire on its own")
            }
        }
        result
    }

    /// Leaves the election for good (shutdown): our presence goes at once
    /// instead of when it would expire. Best effort, bounded.
    pub async fn leave(&self) {
        if self.conduct.observer {
            return;
        }
        let deadline = Instant::now() + self.timing.release_timeout();
        if let Err(err) = bounded(deadline, self.backend.leave(&self.identity, deadline)).await {
            tracing::debug!(%err, "could not remove our presence; it expires on its own");
        }
    }

    /// One look at the lease: an acquire attempt, or, for observers and
    /// candidates standing aside, a look without competing.
    async fn ask(
        &self,
        live_holder: Option<&Holder>,
        deadline: Instant,
    ) -> Result<Acquire, BackendError> {
        let lease = self.timing.lease_duration;
        let mut me = self.presence.borrow().clone();
        let standing_aside = self
            .stand_aside_until
            .is_some_and(|until| Instant::now() < until);
        if standing_aside {
            // Not eligible meanwhile: a leader must not hand back to us.
            me.healthy = false;
            me.standing_aside = true;
        }
        let looked = if self.conduct.observer {
            self.backend.observe(None, lease, deadline).await?
        } else {
            // A vacancy waits one retry_period for a preferred candidate;
            // standing aside we rank below every healthy one, but still
            // take a vacancy nobody else takes (better than no leader,
            // should the one we handed over to crash).
            return self
                .backend
                .acquire(&me, lease, live_holder, self.timing.retry_period, deadline)
                .await;
        };
        Ok(match looked {
            Observed::HeldBy { holder, remaining } => Acquire::HeldBy { holder, remaining },
            Observed::Reserved { to, remaining } => Acquire::Reserved { to, remaining },
            Observed::Foreign { description } => Acquire::Foreign { description },
            Observed::Free => Acquire::Contested {
                retry_in: self.timing.retry_period,
            },
        })
    }

    async fn follow(&mut self, shutdown: &CancellationToken) -> FollowEnd {
        let mut notices = self.backend.notices();
        let mut backoff = self.timing.first_backoff();
        // The holder we last saw and until when its lease runs by our clock.
        let mut sighting: Option<Sighting> = None;
        loop {
            // Mark notices seen *before* asking, so a release announced while
            // the request is in flight still wakes us below.
            let seen = *notices.borrow_and_update();
            self.beat();
            let sent = Instant::now();
            if sighting.as_ref().is_some_and(|seen| sent >= seen.until) {
                sighting = None;
            }
            let live_holder = sighting.as_ref().map(|seen| seen.holder.clone());
            let deadline = sent + self.timing.retry_period;
            let attempt = self.ask(live_holder.as_ref(), deadline);
            let result = tokio::select! {
                result = bounded(deadline, attempt) => result,
                () = shutdown.cancelled() => return FollowEnd::Shutdown,
            };
            let now = Instant::now();
            let reserved_for = match &result {
                Ok(Acquire::Reserved { to, .. } | Acquire::Deferred { to, .. }) => Some(to.clone()),
                _ => None,
            };
            // Observers, and candidates waiting for a reserved vacancy to be
            // taken, also wake when a term begins (to learn the new holder).
            let wake_on_acquired = self.conduct.observer || reserved_for.is_some();
            if self.state.borrow().reserved_for != reserved_for {
                self.publish(|state| {
                    state.reserved_for = reserved_for;
                    true
                });
            }
            let wake_at = match result {
                // The same rule as a late renewal in `lead`: a grant read
                // after its safe window (we were frozen: SIGSTOP, a VM
                // stall) is a term over before it began, and the lease may
                // be another's by now. Never publish it; give it back if it
                // is still ours, and ask again at once.
                Ok(Acquire::Acquired(term)) if now >= sent + self.timing.renew_deadline => {
                    tracing::warn!(
                        token = term.fencing_token,
                        "the grant was read too late to lead (this process was stalled); giving it back"
                    );
                    let _ = self.release(&term).await;
                    Instant::now()
                }
                Ok(Acquire::Acquired(term)) => return FollowEnd::Acquired { term, sent },
                Ok(Acquire::HeldBy { holder, remaining }) => {
                    // A foreign writer may have set any TTL; a year is
                    // already "not in our lifetime" and cannot overflow.
                    let remaining = remaining.min(Duration::from_secs(365 * 24 * 3600));
                    backoff = self.timing.first_backoff();
                    self.backend_answered();
                    self.check_own_identity(&holder, now + remaining);
                    self.told_quarantine = false;
                    sighting = Some(Sighting {
                        holder: holder.clone(),
                        until: now + remaining,
                        vanished: false,
                    });
                    self.observe(Some(holder), Some(now + remaining));
                    // +1 ms: Redis expires with millisecond precision.
                    now + (remaining + Duration::from_millis(1)).min(self.timing.retry_period)
                }
                Ok(Acquire::Quarantined { remaining }) => {
                    backoff = self.timing.first_backoff();
                    self.backend_answered();
                    self.observe(None, None);
                    if !self.told_quarantine {
                        tracing::warn!(
                            wait = %crate::config::show(remaining),
                            "the store has no fencing counter (it is new, or it lost its data): nobody is granted the lease for one lease_duration, so that a leader it forgot has stopped acting"
                        );
                        self.told_quarantine = true;
                    }
                    now + (remaining + Duration::from_millis(1)).min(self.timing.retry_period)
                }
                Ok(Acquire::Contested { retry_in }) => {
                    backoff = self.timing.first_backoff();
                    self.backend_answered();
                    self.observe(None, None);
                    now + retry_in.min(self.timing.retry_period)
                }
                Ok(Acquire::Reserved { remaining, .. } | Acquire::Deferred { remaining, .. }) => {
                    // Kept for another candidate: wake when it took the
                    // lease (an "acquired" notice), or when the reservation
                    // runs out.
                    backoff = self.timing.first_backoff();
                    self.backend_answered();
                    self.observe(None, None);
                    now + (remaining + Duration::from_millis(1)).min(self.timing.retry_period)
                }
                Ok(Acquire::Vanished) => {
                    backoff = self.timing.first_backoff();
                    self.backend_answered();
                    self.observe(None, None);
                    match sighting.as_mut() {
                        Some(seen) => {
                            if !seen.vanished {
                                // Its holder's last renewal reached the store
                                // before the loss, so it steps down within
                                // renew_deadline from now; waiting a whole
                                // lease_duration leaves it the same margin
                                // as an ordinary expiry does.
                                seen.vanished = true;
                                seen.until = now + self.timing.lease_duration;
                                tracing::warn!(
                                    holder = %seen.holder.identity,
                                    token = seen.holder.fencing_token.unwrap_or(0),
                                    wait = %crate::config::show(self.timing.lease_duration),
                                    "the lease vanished from the store without a release (data lost?); waiting until its holder has surely stepped down"
                                );
                            }
                            seen.until.min(now + self.timing.retry_period)
                        }
                        // Only sent with a sighting; retry at once without it.
                        None => now,
                    }
                }
                Ok(Acquire::Foreign { description }) => {
                    backoff = self.timing.first_backoff();
                    self.backend_answered();
                    self.metrics.foreign_value();
                    if self.warned_foreign.as_ref() != Some(&description) {
                        tracing::error!(%description, "the lease key holds something leaderd did not write; it is left alone and nobody can lead until an operator removes it");
                        self.warned_foreign = Some(description);
                    }
                    self.observe(None, None);
                    now + self.timing.retry_period
                }
                Err(err) => {
                    self.backend_failed("acquire", &err);
                    let wake = now + backoff;
                    backoff = (backoff * 2).min(self.timing.retry_period);
                    wake
                }
            };
            self.beat();
            let news = |now: &Notices| {
                now.released != seen.released || (wake_on_acquired && now.acquired != seen.acquired)
            };
            tokio::select! {
                () = sleep_until(wake_at) => {}
                () = notice(&mut notices, news) => {}
                () = shutdown.cancelled() => return FollowEnd::Shutdown,
            }
        }
    }

    async fn lead(
        &mut self,
        term: &Term,
        acquired: Instant,
        shutdown: &CancellationToken,
    ) -> LeadEnd {
        let mut safe_until = acquired + self.timing.renew_deadline;
        let mut next_renew = acquired + self.timing.retry_period;
        let mut backoff = self.timing.first_backoff();
        let mut notices = self.backend.notices();
        // Requests announced before this count were seen by a renewal.
        let mut requests = notices.borrow_and_update().requests;
        let mut outranked: Option<Outranked> = None;
        // A scheduled switchover: renew (and look at it again) at its time.
        let mut recheck: Option<Instant> = None;
        let mut presence = self.presence.clone();
        presence.borrow_and_update();
        loop {
            let wake = recheck.map_or(next_renew, |at| at.min(next_renew));
            tokio::select! {
                () = sleep_until(wake) => {}
                // A switchover was requested: the renewal reads it.
                () = notice(&mut notices, |now: &Notices| now.requests != requests) => {}
                // Our health changed: the renewal says so at once, and
                // brings back whom to hand over to.
                Ok(()) = presence.changed() => {}
                () = shutdown.cancelled() => return LeadEnd::Shutdown,
                Some(request) = self.resign_rx.recv() => return LeadEnd::Resigned(request),
            }
            requests = notices.borrow_and_update().requests;
            // After a pause (SIGSTOP, VM stall) we may wake past safe-until:
            // then the lease may already belong to someone else.
            if Instant::now() >= safe_until {
                return LeadEnd::SteppedDown(Reason::RenewFailed);
            }
            self.beat();
            let sent = Instant::now();
            let deadline = (sent + self.timing.retry_period).min(safe_until);
            let me = self.presence.borrow().clone();
            let attempt = self
                .backend
                .renew(term, &me, self.timing.lease_duration, deadline);
            let result = tokio::select! {
                result = bounded(deadline, attempt) => result,
                () = shutdown.cancelled() => return LeadEnd::Shutdown,
            };
            let took = sent.elapsed();
            match result {
                Ok(Renew::Renewed {
                    switchover,
                    standing,
                }) => {
                    let renewed_until = sent + self.timing.renew_deadline;
                    if !self.extend_term(renewed_until, sent + self.timing.lease_duration) {
                        // The answer came as the term ran out: consumers that
                        // judge by the clock have already ended the term (its
                        // stopped_leading may have run), so it must stay over.
                        self.metrics.renewal("late", took);
                        return LeadEnd::SteppedDown(Reason::RenewFailed);
                    }
                    self.metrics.renewal("success", took);
                    backoff = self.timing.first_backoff();
                    self.backend_answered();
                    safe_until = renewed_until;
                    next_renew = sent + self.timing.retry_period;
                    let decision = handover::decide(
                        &me,
                        term.fencing_token,
                        switchover.as_ref(),
                        &standing,
                        self.conduct.preemption,
                        &mut outranked,
                        Instant::now(),
                        SystemTime::now(),
                    );
                    recheck = None;
                    match decision {
                        Decision::Stay { recheck: at } => {
                            recheck = at.map(instant_of);
                            self.leading_unhealthy(false);
                        }
                        Decision::StayUnhealthy => self.leading_unhealthy(true),
                        Decision::Drop { why, id } => {
                            tracing::warn!(%why, "the pending switchover has nothing left to do; removing it");
                            self.end_switchover(&id, safe_until).await;
                        }
                        Decision::HandOver {
                            to,
                            reason,
                            switchover,
                        } => {
                            if let Some(to) = self
                                .target(to, reason, switchover.as_deref(), safe_until)
                                .await
                            {
                                return LeadEnd::HandOver {
                                    to,
                                    reason,
                                    switchover,
                                };
                            }
                        }
                    }
                }
                Ok(Renew::Lost { holder }) => {
                    self.metrics.renewal("lost", took);
                    self.backend_answered();
                    return LeadEnd::LostTo(holder);
                }
                Ok(Renew::HandOver { to }) => {
                    self.backend_answered();
                    tracing::info!(preferred = %to, "the store asks for a handover; stepping down");
                    // Exactly a resignation: step down, release once the
                    // leader-only work stopped, then sit out a retry period.
                    return LeadEnd::Resigned(Resign {
                        reason: Reason::HandOver,
                        then_exit: false,
                    });
                }
                Err(err) => {
                    self.metrics.renewal("error", took);
                    self.backend_failed("renew", &err);
                    next_renew = (Instant::now() + backoff).min(safe_until);
                    backoff = (backoff * 2).min(self.timing.retry_period);
                }
            }
            self.beat();
        }
    }

    /// The candidate a hand-over goes to, checked against who stands now;
    /// `None` when there is nobody to hand over to (a switchover that cannot
    /// be carried out is then removed, and said so).
    async fn target(
        &mut self,
        to: Target,
        reason: Reason,
        switchover: Option<&str>,
        safe_until: Instant,
    ) -> Option<String> {
        if reason != Reason::Switchover {
            // From the renewal itself: present and healthy just now.
            return match to {
                Target::Named(name) => Some(name),
                Target::BestOther => None,
            };
        }
        let deadline = (Instant::now() + self.timing.retry_period).min(safe_until);
        let candidates = match bounded(
            deadline,
            self.backend
                .candidates(self.timing.lease_duration, deadline),
        )
        .await
        {
            Ok(candidates) => candidates,
            Err(err) => {
                // Try again at the next renewal.
                tracing::debug!(%err, "cannot list the candidates for a switchover");
                return None;
            }
        };
        let presences: Vec<&Presence> = candidates.iter().map(|c| &c.presence).collect();
        let chosen = match &to {
            Target::Named(name) => presences
                .iter()
                .find(|p| p.identity == *name && p.healthy)
                .map(|p| p.identity.clone()),
            Target::BestOther => handover::best_other(&self.identity, presences.iter().copied())
                .map(|p| p.identity.clone()),
        };
        if chosen.is_none() {
            let wanted = match &to {
                Target::Named(name) => format!("{name} is not a present, healthy candidate"),
                Target::BestOther => "no other healthy candidate stands".to_string(),
            };
            tracing::warn!(%wanted, "cannot carry out the switchover; removing it");
            if let Some(id) = switchover {
                self.end_switchover(id, safe_until).await;
            }
        }
        chosen
    }

    /// Removes the pending switchover with this id (done, or impossible),
    /// not one asked for since. Bounded.
    async fn end_switchover(&self, id: &str, safe_until: Instant) {
        let deadline = (Instant::now() + self.timing.retry_period).min(safe_until);
        let cancel = SwitchoverRequest::Cancel(Some(id.to_string()));
        if let Err(err) = bounded(deadline, self.backend.switchover(cancel, deadline)).await {
            tracing::warn!(%err, "could not remove the pending switchover");
        }
    }

    /// Says (once per change) that we lead although unhealthy.
    fn leading_unhealthy(&mut self, unhealthy: bool) {
        if self.state.borrow().leading_unhealthy == unhealthy {
            return;
        }
        if unhealthy {
            tracing::warn!(
                "leading although the health probe fails: no healthy candidate stands to hand over to"
            );
        }
        self.publish(|state| {
            state.leading_unhealthy = unhealthy;
            true
        });
    }

    fn became_leader(&mut self, term: &Term, sent: Instant) {
        self.metrics.acquired();
        tracing::info!(token = term.fencing_token, "became leader");
        self.own_term_id = Some(term.id.clone());
        self.backend_answered();
        // A new term is always a change of holder (the term id is new).
        self.metrics.leader_changed();
        let holder = Holder {
            identity: self.identity.clone(),
            fencing_token: Some(term.fencing_token),
            term_id: Some(term.id.clone()),
        };
        // One publication: consumers must never see us as the holder
        // without the term (they would take it for someone else's).
        self.publish(|state| {
            state.term = Some(LeaderTerm {
                fencing_token: term.fencing_token,
                started_at: SystemTime::now(),
                safe_until: sent + self.timing.renew_deadline,
            });
            state.leader = Some(holder);
            state.leader_lease_until = Some(sent + self.timing.lease_duration);
            state.last_reason = Some(Reason::Acquired);
            state.heartbeat = Instant::now();
            true
        });
    }

    fn stepped_down(&mut self, reason: Reason) {
        self.metrics.lost(reason);
        // Leadership ended at safe-until if that passed before we noticed
        // (a pause, a hung store): say when, on the wall clock, so that
        // logs of several candidates can be laid side by side.
        let (token, ended) = {
            let state = self.state.borrow();
            let now = Instant::now();
            let ended = state
                .term
                .as_ref()
                .map_or(now, |term| term.safe_until.min(now));
            let ago = now.saturating_duration_since(ended);
            let token = state.term.as_ref().map_or(0, |term| term.fencing_token);
            (
                token,
                SystemTime::now()
                    .checked_sub(ago)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            )
        };
        let led_until = humantime::format_rfc3339_micros(ended);
        // A requested stop is routine; every other end of a term is news.
        if reason == Reason::Shutdown {
            tracing::info!(reason = reason.as_str(), token, %led_until, "stepped down");
        } else {
            tracing::warn!(reason = reason.as_str(), token, %led_until, "stepped down");
        }
        self.publish(|state| {
            let token = state.term.take().map(|term| term.fencing_token);
            // Our own record is stale now; keep another holder we observed.
            if state.leader.as_ref().and_then(|h| h.fencing_token) == token
                && state
                    .leader
                    .as_ref()
                    .is_some_and(|h| h.identity == self.identity)
            {
                state.leader = None;
                state.leader_lease_until = None;
            }
            state.last_reason = Some(reason);
            true
        });
    }

    /// Records who holds the lease; notifies consumers only on a change of
    /// holder, not when the same term is seen again.
    fn observe(&mut self, holder: Option<Holder>, lease_until: Option<Instant>) {
        let changed = self.state.borrow().leader != holder;
        if changed && let Some(new) = &holder {
            self.metrics.leader_changed();
            if new.term_id.is_none() || new.term_id != self.own_term_id {
                tracing::info!(leader = %new.identity, token = new.fencing_token.unwrap_or(0), "new leader observed");
            }
        }
        self.publish(|state| {
            state.leader = holder;
            state.leader_lease_until = lease_until;
            changed
        });
    }

    fn backend_answered(&mut self) {
        self.told_full = false;
        let was_down = self.state.borrow().backend_error.is_some();
        if was_down {
            tracing::info!(backend = self.backend.kind(), "backend reachable again");
        }
        self.publish(|state| {
            let news = !state.observed || state.backend_error.is_some();
            state.observed = true;
            state.backend_error = None;
            news
        });
    }

    fn backend_failed(&mut self, operation: &'static str, err: &BackendError) {
        self.metrics.backend_error(operation);
        let was_up = self.state.borrow().backend_error.is_none();
        if err.store_full {
            self.metrics.store_full();
            if !self.told_full {
                tracing::error!(backend = self.backend.kind(), operation, %err, "the store is full and refuses to write; retrying");
                self.told_full = true;
            }
        } else if was_up {
            tracing::warn!(backend = self.backend.kind(), operation, %err, "backend unreachable");
        } else {
            tracing::debug!(operation, %err, "backend still unreachable");
        }
        let message = err.to_string();
        self.publish(|state| {
            let news = state.backend_error.is_none();
            state.backend_error = Some(message);
            news
        });
    }

    /// A lease under our identity that is not ours: expected once after a
    /// restart (our previous run's lease, which runs out unrenewed); a
    /// duplicate identity if it is renewed, or if a new one appears while we
    /// run.
    fn check_own_identity(&mut self, holder: &Holder, until: Instant) {
        if holder.identity != self.identity || holder.term_id == self.own_term_id {
            return;
        }
        let token = holder.fencing_token.unwrap_or(0);
        let renewed_by_someone =
            |seen: &OwnIdentityLease| until > seen.until + self.timing.retry_period / 4;
        match self.own_identity.as_mut() {
            Some(seen) if seen.term_id == holder.term_id => {
                if !seen.warned && renewed_by_someone(seen) {
                    warn_duplicate(&self.identity, token);
                    seen.warned = true;
                }
                seen.until = until;
            }
            previous => {
                // A term first seen now: before our first term, it is most
                // likely our own previous run's; later, it began while we
                // ran, so another process uses our identity.
                let first_sighting = previous.is_none() && self.own_term_id.is_none();
                if first_sighting {
                    tracing::info!(
                        identity = %self.identity,
                        token,
                        left = %crate::config::show(until.saturating_duration_since(Instant::now())),
                        "the lease is held under this candidate's identity, probably by its previous run; waiting for it to run out"
                    );
                } else {
                    warn_duplicate(&self.identity, token);
                }
                self.own_identity = Some(OwnIdentityLease {
                    term_id: holder.term_id.clone(),
                    until,
                    warned: !first_sighting,
                });
            }
        }
    }

    /// Changes the state and, when `f` says it is news, wakes the consumers
    /// and bumps the version they report progress against.
    fn publish(&self, f: impl FnOnce(&mut ElectionState) -> bool) {
        self.state.send_if_modified(|state| {
            let news = f(state);
            if news {
                state.version += 1;
            }
            news
        });
    }

    /// A renewal: moves our term's deadlines, unless the term has run out
    /// by now. The check is made under the channel's lock, at the instant
    /// of the change: a consumer in this process that judged the term over
    /// by the clock (its stopped_leading may have run) can never see it
    /// extended afterwards, however long this thread was preempted since
    /// the answer. (The guard and the term file hear of it a moment later;
    /// the extension is real, and the guard's slack covers the lag.)
    /// Not news (no version bump), but consumers that follow the term's
    /// deadline (the guard, the term file) are woken. Returns whether the
    /// term was extended.
    fn extend_term(&self, safe_until: Instant, lease_until: Instant) -> bool {
        self.state.send_if_modified(|state| {
            let Some(our) = state.term.as_mut() else {
                return false;
            };
            if Instant::now() >= our.safe_until {
                return false;
            }
            our.safe_until = safe_until;
            state.leader_lease_until = Some(lease_until);
            true
        })
    }

    /// Proof of progress for `/healthz`, without waking consumers. Beating
    /// before and after every call keeps the gap under `retry_period` (a
    /// sleep or a call, each bounded by it), well below the `lease_duration`
    /// after which the loop counts as stuck.
    fn beat(&self) {
        self.publish(|state| {
            state.heartbeat = Instant::now();
            false
        });
    }
}

fn warn_duplicate(identity: &str, token: u64) {
    tracing::warn!(
        %identity,
        token,
        "another candidate leads under this same identity; identities must be unique"
    );
}

/// Enforces a call's deadline here too, so that the elector's guarantee does
/// not depend on every backend honouring it.
async fn bounded<T>(
    deadline: Instant,
    call: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or_else(|_| Err(BackendError::timeout()))
}

/// Resolves on the next notice that `news` says matters; never, if the
/// notice source is gone (followers then rely on the lease expiry alone).
async fn notice(notices: &mut watch::Receiver<Notices>, news: impl Fn(&Notices) -> bool) {
    if notices.wait_for(|now| news(now)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A wall-clock instant as an instant of the monotonic clock (for timers).
fn instant_of(at: SystemTime) -> Instant {
    let now = Instant::now();
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) => now + ahead.min(Duration::from_secs(365 * 24 * 3600)),
        Err(_) => now,
    }
}
