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
    Stay {
        recheck: Option<SystemTime>,
    },
    /// Keep leading although unhealthy: no healthy candidate stands.
    StayUnhealthy,
    HandOver {
        to: Target,
        reason: Reason,
    },
    /// The pending switchover has nothing left to do (its candidate leads
    /// already): remove it.
    Drop {
        why: String,
    },
}

/// The higher-priority candidate we saw, and since when (our clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outranked {
    pub by: String,
    pub since: Instant,
}

/// Decides after a renewal. `outranked` is the caller's memory of the
/// candidate outranking us (updated here).
pub fn decide(
    me: &Presence,
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
                return match &request.candidate {
                    Some(name) if *name == me.identity => Decision::Drop {
                        why: format!("{name} leads already"),
                    },
                    Some(name) => Decision::HandOver {
                        to: Target::Named(name.clone()),
                        reason: Reason::Switchover,
                    },
                    None => Decision::HandOver {
                        to: Target::BestOther,
                        reason: Reason::Switchover,
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

/// The best healthy candidate other than `me`: highest priority, then the
/// longest standing (earliest start), then by name.
pub fn best_other<'a>(
    me: &str,
    candidates: impl IntoIterator<Item = &'a Presence>,
) -> Option<&'a Presence> {
    candidates
        .into_iter()
        .filter(|c| c.identity != me && c.healthy)
        .max_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then_with(|| b.started_at.cmp(&a.started_at))
                .then_with(|| b.identity.cmp(&a.identity))
        })
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
                Some(&named),
                &standing(None, 2),
                Preemption::default(),
                &mut outranked,
                now,
                wall
            ),
            Decision::HandOver {
                to: Target::Named("b".into()),
                reason: Reason::Switchover
            }
        );
        let anyone = request(None, None);
        assert_eq!(
            decide(
                &me,
                Some(&anyone),
                &standing(None, 2),
                Preemption::default(),
                &mut outranked,
                now,
                wall
            ),
            Decision::HandOver {
                to: Target::BestOther,
                reason: Reason::Switchover
            }
        );
        let ourselves = request(Some("a"), None);
        assert!(matches!(
            decide(
                &me,
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
    fn a_scheduled_switchover_waits_for_its_time() {
        let me = presence("a", 0, true);
        let mut outranked = None;
        let later = request(Some("b"), Some("2999-01-01T02:00:00+02:00"));
        let decision = decide(
            &me,
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
                None,
                &standing(Some(("b", 0)), 1),
                Preemption::default(),
                &mut outranked,
                now,
                SystemTime::now()
            ),
            Decision::HandOver {
                to: Target::Named("b".into()),
                reason: Reason::Unhealthy
            }
        );
        assert_eq!(
            decide(
                &me,
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
            decide(&me, None, &better, preempt, &mut outranked, start, wall),
            Decision::Stay { recheck: None }
        );
        assert_eq!(
            decide(
                &me,
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
                None,
                &better,
                preempt,
                &mut outranked,
                start + Duration::from_secs(4),
                wall
            ),
            Decision::HandOver {
                to: Target::Named("b".into()),
                reason: Reason::Preempted
            }
        );
        // Without preempt, or when we are the best, nothing happens.
        assert_eq!(
            decide(
                &me,
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
