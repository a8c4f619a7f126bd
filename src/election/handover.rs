//! When a leader hands over, and to whom — decided after every renewal from
//! what it brought back: a switchover an operator asked for, our own
//! health, and the best candidate standing (for preemption). Pure functions
//! of their inputs, so that each rule can be tested without a store.
//!
//! Handing over never weakens safety: it is the graceful step-down every
//! loss already uses (503, pod label, leader process stopped,
//! `stopped_leading`, release), with a release that reserves the lease for
//! the chosen candidate for one lease.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::state::Reason;
pub use crate::backend::best_other;
use crate::backend::{Presence, Standing, Switchover};

/// The leader's side of priorities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preemption {
    /// Hand over to a present, healthy candidate with a higher priority
    /// once it has been present this long; `None`: never (priority then
    /// only decides who takes a free lease).
    pub after: Option<Duration>,
}

/// Whom to hand over to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Named(String),
    /// The best healthy candidate other than us.
    BestOther,
}

/// What the leader does after a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Keep leading; look at a scheduled switchover again at `recheck`.
    Stay { recheck: Option<SystemTime> },
    /// Keep leading although unhealthy: no healthy candidate stands.
    StayUnhealthy,
    HandOver {
        to: Target,
        reason: Reason,
        /// The id of the switchover carried out, if it is one.
        switchover: Option<String>,
    },
    /// The pending switchover (this id) has nothing left to do: its
    /// candidate leads already, or it was asked of another leader's term.
    Drop { why: String, id: String },
}

/// The higher-priority candidate we saw, and since when (our clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outranked {
    pub by: String,
    pub since: Instant,
}

/// Decides after a renewal. `outranked` is the caller's memory of the
/// candidate outranking us (updated here).
// Every input spelled out, so that each rule is tested without a store.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    me: &Presence,
    term_token: u64,
    switchover: Option<&Switchover>,
    standing: &Standing,
    preemption: Preemption,
    outranked: &mut Option<Outranked>,
    now: Instant,
    wall: SystemTime,
) -> Decision {
    let mut recheck = None;
    if let Some(request) = switchover {
        match scheduled(request) {
            Some(at) if at > wall => recheck = Some(at),
            _ => {
                let id = request.id.clone();
                return match &request.candidate {
                    Some(name) if *name == me.identity => Decision::Drop {
                        why: format!("{name} leads already"),
                        id,
                    },
                    // A switchover is asked of the leader of the moment: if
                    // that term ended (it crashed, or was switched over
                    // already), the request ended with it — carrying it out
                    // would move leadership a second time for one request.
                    _ if request.leader != me.identity
                        || request
                            .leader_token
                            .is_some_and(|token| token != term_token) =>
                    {
                        Decision::Drop {
                            why: format!(
                                "it was asked of {}'s term (token {}), which is over",
                                request.leader,
                                request
                                    .leader_token
                                    .map_or_else(|| "?".to_string(), |t| t.to_string())
                            ),
                            id,
                        }
                    }
                    Some(name) => Decision::HandOver {
                        to: Target::Named(name.clone()),
                        reason: Reason::Switchover,
                        switchover: Some(id),
                    },
                    None => Decision::HandOver {
                        to: Target::BestOther,
                        reason: Reason::Switchover,
                        switchover: Some(id),
                    },
                };
            }
        }
    }
    if !me.healthy {
        // We are not among the healthy, so any healthy candidate is another.
        return match &standing.preferred {
            Some((best, _)) if standing.healthy > 0 => Decision::HandOver {
                to: Target::Named(best.clone()),
                reason: Reason::Unhealthy,
                switchover: None,
            },
            _ => Decision::StayUnhealthy,
        };
    }
    match (&preemption.after, &standing.preferred) {
        (Some(after), Some((best, priority)))
            if *best != me.identity && *priority > me.priority =>
        {
            let since = match outranked {
                Some(seen) if seen.by == *best => seen.since,
                _ => {
                    *outranked = Some(Outranked {
                        by: best.clone(),
                        since: now,
                    });
                    now
                }
            };
            if now.saturating_duration_since(since) >= *after {
                *outranked = None;
                return Decision::HandOver {
                    to: Target::Named(best.clone()),
                    reason: Reason::Preempted,
                    switchover: None,
                };
            }
        }
        _ => *outranked = None,
    }
    Decision::Stay { recheck }
}

/// When a switchover is due; `None`: at once (or unreadable, which was
/// refused when it was requested).
pub fn scheduled(request: &Switchover) -> Option<SystemTime> {
    let text = request.scheduled_at.as_deref()?;
    let at: jiff::Timestamp = text.parse().ok()?;
    let seconds = u64::try_from(at.as_second()).ok()?;
    let nanos = u32::try_from(at.subsec_nanosecond()).unwrap_or(0);
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(identity: &str, priority: i64, healthy: bool) -> Presence {
        Presence {
            identity: identity.into(),
            url: None,
            version: "0".into(),
            priority,
            healthy,
            started_at: "2026-12-02T00:00:00Z".into(),
            standing_aside: false,
        }
    }

    fn request(candidate: Option<&str>, scheduled_at: Option<&str>) -> Switchover {
        Switchover {
            id: "x".into(),
            candidate: candidate.map(Into::into),
            scheduled_at: scheduled_at.map(Into::into),
            requested_at: "2026-12-02T00:00:00Z".into(),
            requested_via: "b".into(),
            leader: "a".into(),
            leader_token: Some(1),
        }
    }

    fn standing(preferred: Option<(&str, i64)>, healthy: u64) -> Standing {
        Standing {
            preferred: preferred.map(|(id, p)| (id.to_string(), p)),
            healthy,
        }
    }

    #[test]
    fn a_due_switchover_hands_over_to_its_candidate() {
        let me = presence("a", 0, true);
        let mut outranked = None;
        let now = Instant::now();
        let wall = SystemTime::now();
        let named = request(Some("b"), None);
        assert_eq!(
            decide(
                &me,
                1,
                Some(&named),
                &standing(None, 2),
                Preemption::default(),
                &mut outranked,
                now,
                wall
            ),
            Decision::HandOver {
                to: Target::Named("b".into()),
                reason: Reason::Switchover,
                switchover: Some("x".into())
            }
        );
        let anyone = request(None, None);
        assert_eq!(
            decide(
                &me,
                1,
                Some(&anyone),
                &standing(None, 2),
                Preemption::default(),
                &mut outranked,
                now,
                wall
            ),
            Decision::HandOver {
                to: Target::BestOther,
                reason: Reason::Switchover,
                switchover: Some("x".into())
            }
        );
        let ourselves = request(Some("a"), None);
        assert!(matches!(
            decide(
                &me,
                1,
                Some(&ourselves),
                &standing(None, 2),
                Preemption::default(),
                &mut outranked,
                now,
                wall
            ),
            Decision::Drop { .. }
        ));
    }

    #[test]
    fn a_switchover_asked_of_an_earlier_term_of_the_same_leader_is_dropped() {
        // a crashed and was elected again: token 7, not the 1 it was asked of.
        let me = presence("a", 0, true);
        assert!(matches!(
            decide(
                &me,
                7,
                Some(&request(Some("b"), None)),
                &standing(None, 2),
                Preemption::default(),
                &mut None,
                Instant::now(),
                SystemTime::now()
            ),
            Decision::Drop { .. }
        ));
    }

    #[test]
    fn a_switchover_asked_of_an_ended_term_is_dropped_not_carried_out_again() {
        // Asked of a's term; b leads now (a crashed, or the switchover ran).
        let me = presence("b", 0, true);
        for candidate in [Some("c"), None] {
            let stale = request(candidate, None);
            assert!(matches!(
                decide(
                    &me, 1,
                    Some(&stale),
                    &standing(None, 2),
                    Preemption::default(),
                    &mut None,
                    Instant::now(),
                    SystemTime::now()
                ),
                Decision::Drop { id, .. } if id == "x"
            ));
        }
    }

    #[test]
    fn a_scheduled_switchover_waits_for_its_time() {
        let me = presence("a", 0, true);
        let mut outranked = None;
        let later = request(Some("b"), Some("2999-01-01T02:00:00+02:00"));
        let decision = decide(
            &me,
            1,
            Some(&later),
            &standing(None, 2),
            Preemption::default(),
            &mut outranked,
            Instant::now(),
            SystemTime::now(),
        );
        let Decision::Stay { recheck: Some(at) } = decision else {
            panic!("{decision:?}")
        };
        assert_eq!(at, scheduled(&later).expect("parses"));
        let past = request(Some("b"), Some("2000-01-01T00:00:00Z"));
        assert!(matches!(
            decide(
                &me,
                1,
                Some(&past),
                &standing(None, 2),
                Preemption::default(),
                &mut outranked,
                Instant::now(),
                SystemTime::now()
            ),
            Decision::HandOver { .. }
        ));
    }

    #[test]
    fn an_unhealthy_leader_hands_over_only_to_a_healthy_candidate() {
        let me = presence("a", 5, false);
        let mut outranked = None;
        let now = Instant::now();
        assert_eq!(
            decide(
                &me,
                1,
                None,
                &standing(Some(("b", 0)), 1),
                Preemption::default(),
                &mut outranked,
                now,
                SystemTime::now()
            ),
            Decision::HandOver {
                to: Target::Named("b".into()),
                reason: Reason::Unhealthy,
                switchover: None
            }
        );
        assert_eq!(
            decide(
                &me,
                1,
                None,
                &standing(None, 0),
                Preemption::default(),
                &mut outranked,
                now,
                SystemTime::now()
            ),
            Decision::StayUnhealthy
        );
    }

    #[test]
    fn preemption_waits_until_the_preferred_one_was_present_long_enough() {
        let me = presence("a", 1, true);
        let preempt = Preemption {
            after: Some(Duration::from_secs(4)),
        };
        let mut outranked = None;
        let start = Instant::now();
        let wall = SystemTime::now();
        let better = standing(Some(("b", 9)), 2);
        assert_eq!(
            decide(&me, 1, None, &better, preempt, &mut outranked, start, wall),
            Decision::Stay { recheck: None }
        );
        assert_eq!(
            decide(
                &me,
                1,
                None,
                &better,
                preempt,
                &mut outranked,
                start + Duration::from_secs(3),
                wall
            ),
            Decision::Stay { recheck: None }
        );
        assert_eq!(
            decide(
                &me,
                1,
                None,
                &better,
                preempt,
                &mut outranked,
                start + Duration::from_secs(4),
                wall
            ),
            Decision::HandOver {
                to: Target::Named("b".into()),
                reason: Reason::Preempted,
                switchover: None
            }
        );
        // Without preempt, or when we are the best, nothing happens.
        assert_eq!(
            decide(
                &me,
                1,
                None,
                &better,
                Preemption::default(),
                &mut None,
                start + Duration::from_secs(60),
                wall
            ),
            Decision::Stay { recheck: None }
        );
        assert_eq!(
            decide(
                &me,
                1,
                None,
                &standing(Some(("a", 1)), 2),
                preempt,
                &mut None,
                start,
                wall
            ),
            Decision::Stay { recheck: None }
        );
    }

    #[test]
    fn the_best_other_is_healthy_highest_priority_then_oldest() {
        let mut b = presence("b", 1, true);
        b.started_at = "2026-12-02T01:00:00Z".into();
        let c = presence("c", 1, true);
        let d = presence("d", 7, false);
        let a = presence("a", 9, true);
        let all = [a, b, c, d];
        assert_eq!(
            best_other("a", all.iter()).map(|p| p.identity.as_str()),
            Some("c")
        );
        assert_eq!(
            best_other("x", all.iter()).map(|p| p.identity.as_str()),
            Some("a")
        );
    }
}
