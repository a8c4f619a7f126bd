//! State-machine tests against an in-memory store, on tokio's paused clock:
//! time only moves when every task waits, so the instants asserted here are
//! exact, and a test of a 15 s lease takes microseconds.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, advance, sleep};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::backend::{
    Acquire, Backend, BackendError, Handoff, Holder, Notices, Observed, Presence, Renew, Standing,
    Switchover, SwitchoverAnswer, SwitchoverRequest, Term,
};
use crate::metrics::Metrics;

const TIMING: Timing = Timing {
    lease_duration: Duration::from_millis(1500),
    renew_deadline: Duration::from_millis(1000),
    retry_period: Duration::from_millis(250),
};

/// A lease in memory, shared by the candidates of one test.
#[derive(Default)]
struct Store {
    holder: Option<(Holder, String, Instant)>,
    counter: u64,
    /// Token of the last term released on purpose.
    released: Option<u64>,
    /// Presence and when it was last refreshed.
    members: std::collections::BTreeMap<String, (Presence, Instant)>,
    switchover: Option<Switchover>,
    /// Only `to` may acquire until the instant.
    handoff: Option<(String, Instant)>,
}

impl Store {
    fn heard_of(&mut self, me: &Presence) {
        self.members
            .insert(me.identity.clone(), (me.clone(), Instant::now()));
    }

    fn standing(&self) -> Standing {
        let now = Instant::now();
        let healthy: Vec<&Presence> = self
            .members
            .values()
            .filter(|(p, seen)| p.healthy && now - *seen < TIMING.lease_duration)
            .map(|(p, _)| p)
            .collect();
        Standing {
            preferred: healthy
                .iter()
                .max_by_key(|p| p.priority)
                .map(|p| (p.identity.clone(), p.priority)),
            healthy: healthy.len() as u64,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    Up,
    /// Calls fail at once (connection refused).
    Down,
    /// Calls never answer (frozen server): only deadlines end them.
    Hung,
    /// Calls answer at this instant (a slow network), or at once after it.
    AnswerAt(Instant),
}

/// One candidate's view of the store, with its own network link.
struct FakeBackend {
    store: Arc<Mutex<Store>>,
    link: Mutex<Link>,
    ticks: Arc<watch::Sender<Notices>>,
    calls: AtomicU32,
}

impl FakeBackend {
    fn new(store: &Arc<Mutex<Store>>, ticks: &Arc<watch::Sender<Notices>>) -> Arc<FakeBackend> {
        Arc::new(FakeBackend {
            store: store.clone(),
            link: Mutex::new(Link::Up),
            ticks: ticks.clone(),
            calls: AtomicU32::new(0),
        })
    }

    fn set_link(&self, link: Link) {
        *self.link.lock().expect("link") = link;
    }

    async fn reach(&self) -> Result<(), BackendError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let link = *self.link.lock().expect("link");
        match link {
            Link::Up => Ok(()),
            Link::Down => Err(BackendError::new("connection refused")),
            Link::Hung => std::future::pending().await,
            Link::AnswerAt(at) => {
                tokio::time::sleep_until(at).await;
                Ok(())
            }
        }
    }
}

impl Backend for FakeBackend {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn acquire(
        &self,
        me: &Presence,
        lease: Duration,
        live_holder: Option<&Holder>,
        _: Duration,
        _: Instant,
    ) -> Result<Acquire, BackendError> {
        self.reach().await?;
        let identity = me.identity.as_str();
        let now = Instant::now();
        let mut store = self.store.lock().expect("store");
        store.heard_of(me);
        if let Some((holder, _, expires)) = &store.holder
            && now < *expires
        {
            return Ok(Acquire::HeldBy {
                holder: holder.clone(),
                remaining: *expires - now,
            });
        }
        if let Some(live) = live_holder
            && live.fencing_token != store.released
        {
            return Ok(Acquire::Vanished);
        }
        if let Some((to, until)) = &store.handoff
            && now < *until
            && to != identity
        {
            return Ok(Acquire::Reserved {
                to: to.clone(),
                remaining: *until - now,
            });
        }
        store.handoff = None;
        store.counter += 1;
        let term = Term {
            id: format!("term-{}", store.counter),
            fencing_token: store.counter,
            claim: format!("{identity}/{}", store.counter),
        };
        let holder = Holder {
            identity: identity.to_string(),
            fencing_token: Some(term.fencing_token),
            term_id: Some(term.id.clone()),
        };
        store.holder = Some((holder, term.claim.clone(), now + lease));
        Ok(Acquire::Acquired(term))
    }

    async fn renew(
        &self,
        term: &Term,
        me: &Presence,
        lease: Duration,
        _: Instant,
    ) -> Result<Renew, BackendError> {
        self.reach().await?;
        let now = Instant::now();
        let mut store = self.store.lock().expect("store");
        let standing = store.standing();
        let switchover = store.switchover.clone();
        let renewed = match store.holder.as_mut() {
            Some((_, claim, expires)) if *claim == term.claim && now < *expires => {
                *expires = now + lease;
                true
            }
            _ => false,
        };
        if renewed {
            store.heard_of(me);
            return Ok(Renew::Renewed {
                switchover,
                standing,
            });
        }
        Ok(Renew::Lost {
            holder: store.holder.as_ref().map(|(holder, _, _)| holder.clone()),
        })
    }

    async fn release(
        &self,
        term: &Term,
        handoff: Option<&Handoff>,
        lease: Duration,
        _: Instant,
    ) -> Result<bool, BackendError> {
        self.reach().await?;
        let mut store = self.store.lock().expect("store");
        let ours = store
            .holder
            .as_ref()
            .is_some_and(|(_, claim, _)| *claim == term.claim);
        if ours {
            store.holder = None;
            store.released = Some(term.fencing_token);
            if let Some(handoff) = handoff {
                store.handoff = Some((handoff.to.clone(), Instant::now() + lease));
                if handoff.reason == "switchover" {
                    store.switchover = None;
                }
            }
            self.ticks.send_modify(|n| n.released += 1);
        }
        Ok(ours)
    }

    async fn observe(
        &self,
        me: Option<&Presence>,
        _: Duration,
        _: Instant,
    ) -> Result<Observed, BackendError> {
        self.reach().await?;
        let now = Instant::now();
        let mut store = self.store.lock().expect("store");
        if let Some(me) = me {
            store.heard_of(me);
        }
        Ok(match &store.holder {
            Some((holder, _, expires)) if now < *expires => Observed::HeldBy {
                holder: holder.clone(),
                remaining: *expires - now,
            },
            _ => Observed::Free,
        })
    }

    async fn candidates(
        &self,
        lease: Duration,
        _: Instant,
    ) -> Result<Vec<crate::backend::Candidate>, BackendError> {
        self.reach().await?;
        let now = Instant::now();
        let store = self.store.lock().expect("store");
        Ok(store
            .members
            .values()
            .filter(|(_, seen)| now - *seen < lease)
            .map(|(presence, seen)| crate::backend::Candidate {
                presence: presence.clone(),
                last_seen: now - *seen,
            })
            .collect())
    }

    async fn leave(&self, identity: &str, _: Instant) -> Result<(), BackendError> {
        self.reach().await?;
        self.store.lock().expect("store").members.remove(identity);
        Ok(())
    }

    async fn switchover(
        &self,
        request: SwitchoverRequest,
        _: Instant,
    ) -> Result<SwitchoverAnswer, BackendError> {
        self.reach().await?;
        let mut store = self.store.lock().expect("store");
        let answer = match request {
            SwitchoverRequest::Record(record) => match &store.switchover {
                Some(pending) => SwitchoverAnswer::Pending(pending.clone()),
                None => {
                    store.switchover = Some(record);
                    SwitchoverAnswer::Done
                }
            },
            SwitchoverRequest::Cancel => match store.switchover.take() {
                Some(_) => SwitchoverAnswer::Done,
                None => SwitchoverAnswer::None,
            },
            SwitchoverRequest::Get => match &store.switchover {
                Some(pending) => SwitchoverAnswer::Pending(pending.clone()),
                None => SwitchoverAnswer::None,
            },
        };
        if matches!(answer, SwitchoverAnswer::Done) {
            self.ticks.send_modify(|n| n.requests += 1);
        }
        Ok(answer)
    }

    fn notices(&self) -> watch::Receiver<Notices> {
        self.ticks.subscribe()
    }
}

struct Candidate {
    backend: Arc<FakeBackend>,
    state: watch::Receiver<ElectionState>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Outcome>,
}

fn presence(name: &str) -> Presence {
    Presence {
        identity: name.to_string(),
        url: None,
        version: "test".into(),
        priority: 0,
        healthy: true,
        started_at: "2026-12-02T00:00:00Z".into(),
        standing_aside: false,
    }
}

fn start(name: &str, store: &Arc<Mutex<Store>>, ticks: &Arc<watch::Sender<Notices>>) -> Candidate {
    start_with(presence(name), Conduct::default(), store, ticks).0
}

fn start_with(
    me: Presence,
    conduct: Conduct,
    store: &Arc<Mutex<Store>>,
    ticks: &Arc<watch::Sender<Notices>>,
) -> (Candidate, watch::Sender<Presence>) {
    let backend = FakeBackend::new(store, ticks);
    let metrics = Arc::new(Metrics::new("test").expect("metrics"));
    let (presence_tx, presence_rx) = watch::channel(me);
    let mut elector = Elector::new(
        backend.clone(),
        "test",
        presence_rx,
        TIMING,
        conduct,
        metrics,
    );
    let state = elector.subscribe();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let outcome = elector.run(stop).await;
        if let Outcome::StoppedLeading(term) = &outcome {
            let _ = elector.release(term).await;
        }
        outcome
    });
    (
        Candidate {
            backend,
            state,
            shutdown,
            task,
        },
        presence_tx,
    )
}

fn world() -> (Arc<Mutex<Store>>, Arc<watch::Sender<Notices>>) {
    (
        Arc::new(Mutex::new(Store::default())),
        Arc::new(watch::Sender::new(Notices::default())),
    )
}

/// Waits (in paused time) until `f` holds for the candidate's state.
async fn until(c: &mut Candidate, f: impl Fn(&ElectionState) -> bool) -> Instant {
    let state = c.state.wait_for(|s| f(s)).await.expect("elector alive");
    drop(state);
    Instant::now()
}

fn leading(s: &ElectionState) -> bool {
    s.term.is_some()
}

fn store_expiry(store: &Arc<Mutex<Store>>) -> Option<Instant> {
    store
        .lock()
        .expect("store")
        .holder
        .as_ref()
        .map(|(_, _, e)| *e)
}

fn foreign_holder(store: &Arc<Mutex<Store>>, expires: Instant) {
    let mut s = store.lock().expect("store");
    s.counter += 1;
    let holder = Holder {
        identity: "other".into(),
        fencing_token: Some(s.counter),
        term_id: Some("other-term".into()),
    };
    s.holder = Some((holder, "other-claim".into(), expires));
}

#[tokio::test(start_paused = true)]
async fn a_lone_candidate_leads_and_keeps_renewing() {
    let (store, ticks) = world();
    let mut a = start("a", &store, &ticks);
    until(&mut a, leading).await;
    assert_eq!(
        a.state.borrow().term.as_ref().map(|t| t.fencing_token),
        Some(1)
    );

    sleep(TIMING.lease_duration * 10).await;
    let now = Instant::now();
    assert!(
        a.state.borrow().is_leader_at(now),
        "still leader after many renewals"
    );
    let expiry = store_expiry(&store).expect("held");
    assert!(expiry > now + TIMING.lease_duration - TIMING.retry_period - Duration::from_millis(1));
}

#[tokio::test(start_paused = true)]
async fn a_hung_store_makes_the_leader_step_down_before_the_lease_expires() {
    let (store, ticks) = world();
    let mut a = start("a", &store, &ticks);
    until(&mut a, leading).await;
    sleep(TIMING.retry_period * 3).await;

    a.backend.set_link(Link::Hung);
    let server_expiry = store_expiry(&store).expect("held");
    let stepped_down = until(&mut a, |s| s.term.is_none()).await;

    assert_eq!(a.state.borrow().last_reason, Some(Reason::RenewFailed));
    // The whole window between renew_deadline and lease_duration is left
    // for stopping leader-only work before anyone else may lead.
    assert!(
        stepped_down + (TIMING.lease_duration - TIMING.renew_deadline) <= server_expiry,
        "stepped down {:?} before server expiry, need {:?}",
        server_expiry - stepped_down,
        TIMING.lease_duration - TIMING.renew_deadline
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusing_store_also_ends_the_term_at_safe_until() {
    let (store, ticks) = world();
    let mut a = start("a", &store, &ticks);
    until(&mut a, leading).await;
    a.backend.set_link(Link::Down);
    let server_expiry = store_expiry(&store).expect("held");
    let stepped_down = until(&mut a, |s| s.term.is_none()).await;
    assert_eq!(a.state.borrow().last_reason, Some(Reason::RenewFailed));
    assert!(stepped_down < server_expiry);
    assert!(a.state.borrow().backend_error.is_some());
    assert!(!a.state.borrow().ready());

    // When the store answers again the candidate competes again.
    a.backend.set_link(Link::Up);
    until(&mut a, leading).await;
    assert_eq!(
        a.state.borrow().term.as_ref().map(|t| t.fencing_token),
        Some(2)
    );
}

#[tokio::test(start_paused = true)]
async fn a_lease_taken_away_ends_the_term_as_lock_lost() {
    let (store, ticks) = world();
    let mut a = start("a", &store, &ticks);
    until(&mut a, leading).await;
    // The store lost our key and someone else took the lease.
    foreign_holder(&store, Instant::now() + Duration::from_secs(60));
    until(&mut a, |s| s.term.is_none()).await;
    let state = a.state.borrow();
    assert_eq!(state.last_reason, Some(Reason::LockLost));
    assert_eq!(
        state.leader.as_ref().map(|h| h.identity.as_str()),
        Some("other")
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_takes_over_right_after_a_crashed_leaders_lease_expires() {
    let (store, ticks) = world();
    let expiry = Instant::now() + Duration::from_millis(1234);
    foreign_holder(&store, expiry);
    let mut b = start("b", &store, &ticks);
    until(&mut b, |s| s.leader.is_some()).await;
    assert!(!b.state.borrow().is_leader_at(Instant::now()));

    let took_over = until(&mut b, leading).await;
    assert!(took_over >= expiry, "never before the lease expired");
    assert!(
        took_over - expiry <= Duration::from_millis(2),
        "late by {:?}",
        took_over - expiry
    );
}

#[tokio::test(start_paused = true)]
async fn a_release_wakes_the_follower_at_once() {
    let (store, ticks) = world();
    let mut a = start("a", &store, &ticks);
    until(&mut a, leading).await;
    let mut b = start("b", &store, &ticks);
    until(&mut b, |s| {
        s.leader.as_ref().is_some_and(|h| h.identity == "a")
    })
    .await;
    sleep(TIMING.retry_period / 2).await;

    let asked = Instant::now();
    a.shutdown.cancel();
    let took_over = until(&mut b, leading).await;
    assert_eq!(
        took_over, asked,
        "no time passes between release and takeover"
    );
    assert_eq!(
        b.state.borrow().term.as_ref().map(|t| t.fencing_token),
        Some(2)
    );
    assert!(matches!(a.task.await, Ok(Outcome::StoppedLeading(_))));
    assert_eq!(a.state.borrow().last_reason, Some(Reason::Shutdown));
}

#[tokio::test(start_paused = true)]
async fn a_paused_leader_is_not_leader_when_it_runs_again() {
    let (store, ticks) = world();
    let mut a = start("a", &store, &ticks);
    until(&mut a, leading).await;
    // Jump the clock as a SIGSTOP or VM stall would, without letting the
    // elector run: the state must already answer "not leader".
    advance(TIMING.renew_deadline + Duration::from_millis(1)).await;
    let state = a.state.borrow().clone();
    assert!(!state.is_leader_at(Instant::now()));
    assert!(state.leader_at(Instant::now()).is_none());
}

#[tokio::test(start_paused = true)]
async fn followers_cost_at_most_one_call_per_retry_period() {
    let (store, ticks) = world();
    foreign_holder(&store, Instant::now() + Duration::from_secs(3600));
    let mut b = start("b", &store, &ticks);
    until(&mut b, |s| s.leader.is_some()).await;
    let before = b.backend.calls.load(Ordering::Relaxed);
    sleep(TIMING.retry_period * 40).await;
    let calls = b.backend.calls.load(Ordering::Relaxed) - before;
    assert!(
        (39..=41).contains(&calls),
        "{calls} calls in 40 retry periods"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lease_lost_by_the_store_is_not_taken_while_its_holder_may_still_lead() {
    let (store, ticks) = world();
    let mut a = start("a", &store, &ticks);
    until(&mut a, leading).await;
    let mut b = start("b", &store, &ticks);
    until(&mut b, |s| s.leader.is_some()).await;

    // The store loses everything (Redis restarted without persistence),
    // while a's link is hung so that a cannot notice before its safe-until.
    a.backend.set_link(Link::Hung);
    let lost_at = Instant::now();
    store.lock().expect("store").holder = None;
    let a_safe_until = a
        .state
        .borrow()
        .term
        .as_ref()
        .map(|t| t.safe_until)
        .expect("leads");

    let b_leads = until(&mut b, leading).await;
    assert!(b_leads > a_safe_until, "b led before a's safe-until");
    assert!(b_leads - lost_at <= TIMING.lease_duration + TIMING.retry_period);
    assert_eq!(a.state.borrow().last_reason, Some(Reason::RenewFailed));
}

#[tokio::test(start_paused = true)]
async fn a_renewal_answered_just_as_safe_until_passes_does_not_revive_the_term() {
    let (store, ticks) = world();
    let mut a = start("a", &store, &ticks);
    until(&mut a, leading).await;
    let safe_until = a
        .state
        .borrow()
        .term
        .as_ref()
        .map(|t| t.safe_until)
        .expect("leads");
    // Every renewal is answered at safe-until: the last one in flight lands
    // exactly as the term runs out, when consumers have already ended it.
    a.backend.set_link(Link::AnswerAt(safe_until));
    let ended = tokio::time::timeout(Duration::from_secs(60), until(&mut a, |s| s.term.is_none()))
        .await
        .expect("the term ended");
    assert_eq!(ended, safe_until);
    assert_eq!(a.state.borrow().last_reason, Some(Reason::RenewFailed));
}

#[tokio::test(start_paused = true)]
async fn a_switchover_hands_the_lease_to_the_named_candidate_only() {
    let (store, ticks) = world();
    let mut a = start("a", &store, &ticks);
    until(&mut a, leading).await;
    let mut b = start("b", &store, &ticks);
    let mut c = start("c", &store, &ticks);
    until(&mut b, |s| s.leader.is_some()).await;
    until(&mut c, |s| s.leader.is_some()).await;

    let asked = Instant::now();
    let answer = b
        .backend
        .switchover(
            SwitchoverRequest::Record(Switchover {
                id: "1".into(),
                candidate: Some("c".into()),
                scheduled_at: None,
                requested_at: "2026-12-02T00:00:00Z".into(),
                requested_via: "b".into(),
                leader: "a".into(),
            }),
            Instant::now() + Duration::from_secs(1),
        )
        .await;
    assert_eq!(answer, Ok(SwitchoverAnswer::Done));
    let c_leads = until(&mut c, leading).await;
    // Announced to the leader, carried out at once: no time passes.
    assert_eq!(c_leads, asked);
    assert_eq!(a.state.borrow().last_reason, Some(Reason::Switchover));
    assert!(
        b.state.borrow().term.is_none(),
        "b took a lease reserved for c"
    );
    assert!(store.lock().expect("store").switchover.is_none());
}

#[tokio::test(start_paused = true)]
async fn an_observer_never_acquires() {
    let (store, ticks) = world();
    let (mut o, _presence) = start_with(
        presence("o"),
        Conduct {
            observer: true,
            ..Conduct::default()
        },
        &store,
        &ticks,
    );
    sleep(TIMING.lease_duration * 10).await;
    assert!(o.state.borrow().term.is_none());
    assert!(store.lock().expect("store").holder.is_none());
    let mut a = start("a", &store, &ticks);
    until(&mut a, leading).await;
    until(&mut o, |s| {
        s.leader.as_ref().is_some_and(|h| h.identity == "a")
    })
    .await;
    // An observer is not a candidate.
    assert!(!store.lock().expect("store").members.contains_key("o"));
}
