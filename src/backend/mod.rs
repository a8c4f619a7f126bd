//! The store that holds the leadership lease, behind one small trait.
//!
//! A backend knows how to talk to one kind of store and nothing about timing
//! policy: the elector decides *when* to acquire, renew or release, and gives
//! every call a deadline; the backend makes each operation atomic on the
//! server. Nothing outside this folder knows which store is in use.

pub mod kubernetes;
pub mod redis;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

/// One term of leadership as this candidate holds it: the random term id that
/// makes our lock value unique, and the fencing token minted for the term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// Random per-term id, compared on every renew and release, so that two
    /// daemons misconfigured with one identity never renew each other's lock.
    pub id: String,
    pub fencing_token: u64,
    /// Backend-specific proof of ownership (the exact lock value in Redis).
    pub(crate) claim: String,
}

/// Who holds the lease, as a backend last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub identity: String,
    pub fencing_token: Option<u64>,
    pub term_id: Option<String>,
}

/// The answer to an acquire attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lease is ours for a new term.
    Acquired(Term),
    /// Someone else holds it for at most `remaining` more (server time).
    HeldBy { holder: Holder, remaining: Duration },
    /// The lease key holds something leaderd did not write. It is never
    /// deleted or overwritten; the description says what was found.
    Foreign { description: String },
    /// Nobody holds the lease, but it is not free either (quorum mode: a
    /// split vote whose partial grants are being undone). Try again after
    /// `retry_in`.
    Contested { retry_in: Duration },
    /// The lease of `live_holder` disappeared without being released: the
    /// store lost it, and that holder may still believe it leads until its
    /// own safe-until. Nothing was written.
    Vanished,
    /// Nobody holds the lease, but the store had no fencing counter: it is
    /// new, or it lost its data while a leader it forgot may still act. No
    /// grant for `remaining` (one lease from when the store noticed).
    Quarantined { remaining: Duration },
    /// Nobody holds the lease; a switchover reserved it for `to` for
    /// `remaining` more.
    Reserved { to: String, remaining: Duration },
    /// Nobody holds the lease; it is kept for `to`, a present and healthy
    /// candidate with a higher priority, for `remaining` more.
    Deferred { to: String, remaining: Duration },
}

/// What a look at the lease (without competing) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    HeldBy { holder: Holder, remaining: Duration },
    Free,
    Reserved { to: String, remaining: Duration },
    Foreign { description: String },
}

/// What a candidate announces about itself while it stands: kept next to
/// the lease, listed in `/status`, and used to choose a switchover's target
/// and the preferred leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub identity: String,
    /// Its HTTP address, when known.
    #[serde(default)]
    pub url: Option<String>,
    pub version: String,
    #[serde(default)]
    pub priority: i64,
    /// Eligible to lead: the health probe passes (or there is none) and it
    /// is not standing aside after a health hand-over.
    pub healthy: bool,
    /// RFC 3339.
    pub started_at: String,
    /// Standing aside for `health.unhealthy_backoff` after handing over for
    /// health (reported as not healthy meanwhile).
    #[serde(default)]
    pub standing_aside: bool,
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

/// A candidate as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub presence: Presence,
    /// How long ago the store last heard of it.
    pub last_seen: Duration,
}

/// A planned handover, recorded in the store until the leader carries it
/// out or someone cancels it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switchover {
    /// Random, to tell two requests apart.
    pub id: String,
    /// The candidate to hand over to; `None`: the best other one.
    pub candidate: Option<String>,
    /// When to hand over (RFC 3339); `None`: at once.
    #[serde(default)]
    pub scheduled_at: Option<String>,
    /// When it was requested (RFC 3339).
    pub requested_at: String,
    /// The candidate whose daemon took the request.
    pub requested_via: String,
    /// The leader when it was requested.
    pub leader: String,
    /// That leader's fencing token: the request belongs to that term (the
    /// same identity re-elected after a crash is another term).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_token: Option<u64>,
}

/// What a release leaves behind on a switchover: until it expires (one
/// lease), only `to` may take the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub to: String,
    pub from: String,
    pub token: u64,
    /// Why (`switchover`, `unhealthy`, `preempted`).
    pub reason: String,
    /// The id of the switchover this hand-over carries out: its release
    /// removes that record (and no other, asked for since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<String>,
}

/// What to do with the pending switchover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchoverRequest {
    /// Record it, unless one is pending.
    Record(Switchover),
    /// Remove the pending one: the one with this id (one the leader acted
    /// on), or whichever is pending (`None`: an operator's cancel).
    Cancel(Option<String>),
    Get,
}

/// The store's answer about the pending switchover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchoverAnswer {
    /// Recorded, or (cancel) the pending one is gone.
    Done,
    /// One is pending (request: so nothing changed).
    Pending(Switchover),
    /// None was pending.
    None,
}

/// Counters of what the store announced, so that each waiter can wait for
/// the news it cares about: followers for releases (and, while a vacancy is
/// reserved, for the acquisition that ends it), the leader for switchover
/// requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notices {
    pub released: u64,
    pub acquired: u64,
    pub requests: u64,
}

/// Who else stands, as a renewal sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// The healthy candidate with the highest priority, and its priority.
    pub preferred: Option<(String, i64)>,
    /// How many healthy candidates are present (us included, if healthy).
    pub healthy: u64,
}

/// The answer to a renew attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renew {
    /// Renewed; the pending switchover request, if there is one; who else
    /// stands.
    Renewed {
        switchover: Option<Switchover>,
        standing: Standing,
    },
    /// The lease is not ours any more (expired, taken, or the store lost it).
    Lost { holder: Option<Holder> },
    /// Still ours, but the store asks us to hand it over to candidate `to`
    /// (a Kubernetes Lease's `preferredHolder`): step down and release.
    HandOver { to: String },
}

/// What `leaderd check` learned about the store.
#[derive(Debug, Default)]
pub struct Preflight {
    /// What was found (version, current holder), one line each.
    pub facts: Vec<String>,
    /// Settings that weaken the safety guarantees.
    pub warnings: Vec<String>,
    /// Problems that make the store unusable.
    pub errors: Vec<String>,
}

/// Asks the configured store whether it can hold the election's lease.
pub async fn preflight(
    settings: &crate::config::BackendSettings,
    election: &str,
    kubernetes: &crate::config::KubernetesConfig,
) -> Preflight {
    use crate::config::BackendSettings;
    let timeout = Duration::from_secs(5);
    match settings {
        BackendSettings::Redis(redis) => {
            let keys = redis::Keys::new(&redis.config.key_prefix, election);
            redis::preflight::preflight(redis, &keys, timeout).await
        }
        BackendSettings::Kubernetes {
            namespace,
            lease_name,
        } => kubernetes::preflight(kubernetes, namespace, lease_name, timeout).await,
    }
}

/// A failure to get an answer from the store: the outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    pub message: String,
    /// The store answered that it is full (e.g. Redis at `maxmemory`).
    pub store_full: bool,
}

impl BackendError {
    pub fn new(message: impl Into<String>) -> Self {
        BackendError {
            message: message.into(),
            store_full: false,
        }
    }

    pub fn store_full(message: impl Into<String>) -> Self {
        BackendError {
            message: message.into(),
            store_full: true,
        }
    }

    pub fn timeout() -> Self {
        BackendError::new("timed out")
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {}

/// The operations the elector needs. Every call gets a `deadline`; a backend
/// must return (with an error if need be) by then, so a hung store can never
/// keep a leader past its safe-until instant.
///
/// Three groups: the lease (acquire, renew, release, observe), the
/// candidates' presence and the switchover record (kept next to the lease,
/// in the same store), and the store's notices.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and `/status` (`redis`).
    fn kind(&self) -> &'static str;

    /// Atomically takes the lease for `lease` if it is free, minting a new
    /// fencing token, or reports who holds it; refreshes `me`'s presence in
    /// the same step.
    ///
    /// `live_holder` is the holder this candidate last saw and whose lease
    /// has not run out by its own clock. If the lease is free but was not
    /// released by that holder, the backend must answer
    /// [`Acquire::Vanished`] instead of taking it, or never take it before
    /// one lease has passed since the loss by its own clock (the Kubernetes
    /// backend's placeholder). A vacancy is kept for a
    /// present, healthy candidate with a higher priority for `holdback`.
    fn acquire(
        &self,
        me: &Presence,
        lease: Duration,
        live_holder: Option<&Holder>,
        holdback: Duration,
        deadline: Instant,
    ) -> impl Future<Output = Result<Acquire, BackendError>> + Send;

    /// Atomically extends our lease to `lease` from now, only if `term` still
    /// owns it; refreshes `me`'s presence and reads the pending switchover.
    fn renew(
        &self,
        term: &Term,
        me: &Presence,
        lease: Duration,
        deadline: Instant,
    ) -> impl Future<Output = Result<Renew, BackendError>> + Send;

    /// Atomically frees the lease if `term` still owns it and tells waiting
    /// candidates; with `handoff`, only the candidate it names may take the
    /// lease for one lease (a switchover). Returns whether it was ours.
    fn release(
        &self,
        term: &Term,
        handoff: Option<&Handoff>,
        lease: Duration,
        deadline: Instant,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Looks at the lease without competing for it (observers; candidates
    /// standing aside, whose presence `me` it refreshes).
    fn observe(
        &self,
        me: Option<&Presence>,
        lease: Duration,
        deadline: Instant,
    ) -> impl Future<Output = Result<Observed, BackendError>> + Send;

    /// The candidates heard of within `lease`.
    fn candidates(
        &self,
        lease: Duration,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Candidate>, BackendError>> + Send;

    /// `identity` leaves the election for good (shutdown): its presence goes.
    fn leave(
        &self,
        identity: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Records, cancels or reads the pending switchover; a recorded or
    /// cancelled one is announced to the leader.
    fn switchover(
        &self,
        request: SwitchoverRequest,
        deadline: Instant,
    ) -> impl Future<Output = Result<SwitchoverAnswer, BackendError>> + Send;

    /// What the store announced so far; waiters wake on the counters they
    /// care about instead of polling.
    fn notices(&self) -> watch::Receiver<Notices>;
}

/// Locks a mutex that only guards plain assignments: a panic elsewhere
/// cannot leave such data half-written, so a poisoned lock is still usable.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
