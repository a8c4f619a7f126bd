//! Turns successive election states into the events the actions react to.
//!
//! The `watch` channel only keeps the latest state, so events are derived by
//! comparing what the actions last acted on with the state now, not by
//! replaying history: a term that began and ended between two looks causes
//! no event at all (nothing was started for it, so nothing must be stopped).

use tokio::time::Instant;

use crate::election::{ElectionState, Reason};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    StartedLeading,
    StoppedLeading,
    NewLeader,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::StartedLeading => "started_leading",
            EventKind::StoppedLeading => "stopped_leading",
            EventKind::NewLeader => "new_leader",
        }
    }
}

/// One leadership event, with what hooks are told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub reason: Reason,
    /// Whether this instance leads, as of the event.
    pub is_leader: bool,
    pub leader: Option<String>,
    pub previous_leader: Option<String>,
    /// Our term's token for started/stopped; the new holder's for new_leader.
    pub fencing_token: Option<u64>,
}

/// What the actions have acted on so far.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Token of the term we are acting as leader for.
    leading: Option<u64>,
    /// Token of the last term we stopped acting for: a term that ended
    /// (by the clock, say) never starts again, whatever the state says.
    ended: Option<u64>,
    /// The holder last reported through `new_leader` (identity, token).
    leader: Option<(String, Option<u64>)>,
    /// The identity before it, for `LEADERD_PREVIOUS_LEADER`.
    previous: Option<String>,
}

impl Tracker {
    /// The events between what was acted on and `state` at `now`, in the
    /// order they must run: a loss first, then a gain, then a new holder.
    pub fn diff(&mut self, state: &ElectionState, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        let leading_now = state
            .term
            .as_ref()
            .filter(|_| state.is_leader_at(now))
            .map(|term| term.fencing_token);
        let leader_now = state
            .leader_at(now)
            .map(|holder| (holder.identity.clone(), holder.fencing_token));
        let leader_name = leader_now.as_ref().map(|(identity, _)| identity.clone());

        if let Some(token) = self.leading
            && leading_now != Some(token)
        {
            // The elector may not have published the step-down yet (its
            // renewal is still in flight): the deadline alone decides.
            let reason = match (&state.term, state.last_reason) {
                (None, Some(reason)) => reason,
                _ => Reason::RenewFailed,
            };
            events.push(Event {
                kind: EventKind::StoppedLeading,
                reason,
                is_leader: false,
                leader: leader_name.clone(),
                previous_leader: Some(state.identity.clone()),
                fencing_token: Some(token),
            });
            self.leading = None;
            self.ended = Some(token);
        }
        if let Some(token) = leading_now
            && self.leading.is_none()
            && self.ended != Some(token)
        {
            events.push(Event {
                kind: EventKind::StartedLeading,
                reason: Reason::Acquired,
                is_leader: true,
                leader: Some(state.identity.clone()),
                previous_leader: self.current_or_previous(),
                fencing_token: Some(token),
            });
            self.leading = Some(token);
        }
        if leader_now.is_some() && leader_now != self.leader {
            let previous = self.current_or_previous();
            events.push(Event {
                kind: EventKind::NewLeader,
                reason: if leading_now.is_some() {
                    Reason::Acquired
                } else {
                    Reason::Observed
                },
                is_leader: leading_now.is_some(),
                leader: leader_name,
                previous_leader: previous.clone(),
                fencing_token: leader_now.as_ref().and_then(|(_, token)| *token),
            });
            self.previous = previous;
            self.leader = leader_now;
        } else if leader_now.is_none() && self.leader.is_some() {
            self.previous = self.current_or_previous();
            self.leader = None;
        }
        events
    }

    fn current_or_previous(&self) -> Option<String> {
        self.leader
            .as_ref()
            .map(|(identity, _)| identity.clone())
            .or_else(|| self.previous.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::backend::Holder;
    use crate::election::LeaderTerm;

    fn holder(identity: &str, token: u64) -> Holder {
        Holder {
            identity: identity.into(),
            fencing_token: Some(token),
            term_id: Some(format!("t{token}")),
        }
    }

    fn kinds(events: &[Event]) -> Vec<EventKind> {
        events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn gain_loss_and_observed_holders_become_events_in_order() {
        let now = Instant::now();
        let mut state = ElectionState::new("e", "me", "fake");
        let mut tracker = Tracker::default();
        assert!(tracker.diff(&state, now).is_empty());

        state.leader = Some(holder("other", 1));
        let events = tracker.diff(&state, now);
        assert_eq!(kinds(&events), [EventKind::NewLeader]);
        assert_eq!(events[0].reason, Reason::Observed);
        assert!(tracker.diff(&state, now).is_empty(), "same holder: no news");

        state.leader = Some(holder("me", 2));
        state.term = Some(LeaderTerm {
            fencing_token: 2,
            started_at: SystemTime::now(),
            safe_until: now + Duration::from_secs(1),
        });
        let events = tracker.diff(&state, now);
        assert_eq!(
            kinds(&events),
            [EventKind::StartedLeading, EventKind::NewLeader]
        );
        assert_eq!(events[0].previous_leader.as_deref(), Some("other"));
        assert_eq!(events[0].fencing_token, Some(2));

        // The deadline passes before the elector says anything.
        let later = now + Duration::from_secs(2);
        let events = tracker.diff(&state, later);
        assert_eq!(kinds(&events), [EventKind::StoppedLeading]);
        assert_eq!(events[0].reason, Reason::RenewFailed);

        // Lost term 2 and won term 3 between two looks.
        state.term = Some(LeaderTerm {
            fencing_token: 3,
            started_at: SystemTime::now(),
            safe_until: later + Duration::from_secs(1),
        });
        state.leader = Some(holder("me", 3));
        let events = tracker.diff(&state, later);
        assert_eq!(
            kinds(&events),
            [EventKind::StartedLeading, EventKind::NewLeader]
        );
        state.term = None;
        state.last_reason = Some(Reason::Shutdown);
        let events = tracker.diff(&state, later);
        assert_eq!(kinds(&events), [EventKind::StoppedLeading]);
        assert_eq!(events[0].reason, Reason::Shutdown);
    }

    #[test]
    fn a_term_that_ended_never_starts_again() {
        let now = Instant::now();
        let mut state = ElectionState::new("e", "me", "fake");
        let mut tracker = Tracker::default();
        state.leader = Some(holder("me", 4));
        state.term = Some(LeaderTerm {
            fencing_token: 4,
            started_at: SystemTime::now(),
            safe_until: now + Duration::from_secs(1),
        });
        tracker.diff(&state, now);
        let later = now + Duration::from_secs(2);
        assert_eq!(
            kinds(&tracker.diff(&state, later)),
            [EventKind::StoppedLeading]
        );
        // A late answer moves safe-until again: still over.
        if let Some(term) = state.term.as_mut() {
            term.safe_until = later + Duration::from_secs(1);
        }
        assert!(
            !kinds(&tracker.diff(&state, later)).contains(&EventKind::StartedLeading),
            "the ended term started again"
        );
    }
}
