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
}

/// The answer to a renew attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renew {
    Renewed,
    /// The lease is not ours any more (expired, taken, or the store lost it).
    Lost {
        holder: Option<Holder>,
    },
    /// Still ours, but the store asks us to hand it over to candidate `to`
    /// (a Kubernetes Lease's `preferredHolder`): step down and release.
    HandOver {
        to: String,
    },
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
}

impl BackendError {
    pub fn new(message: impl Into<String>) -> Self {
        BackendError {
            message: message.into(),
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
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and `/status` (`redis`).
    fn kind(&self) -> &'static str;

    /// Atomically takes the lease for `lease` if it is free, minting a new
    /// fencing token, or reports who holds it.
    ///
    /// `live_holder` is the holder this candidate last saw and whose lease
    /// has not run out by its own clock. If the lease is free but was not
    /// released by that holder, the backend must answer
    /// [`Acquire::Vanished`] instead of taking it.
    fn acquire(
        &self,
        identity: &str,
        lease: Duration,
        live_holder: Option<&Holder>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Acquire, BackendError>> + Send;

    /// Atomically extends our lease to `lease` from now, only if `term` still
    /// owns it.
    fn renew(
        &self,
        term: &Term,
        lease: Duration,
        deadline: Instant,
    ) -> impl Future<Output = Result<Renew, BackendError>> + Send;

    /// Atomically frees the lease if `term` still owns it and tells waiting
    /// candidates. Returns whether it was ours.
    fn release(
        &self,
        term: &Term,
        deadline: Instant,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Ticks whenever the store announces a change of holder (a release or a
    /// new term), so followers wake at once instead of polling.
    fn changes(&self) -> watch::Receiver<u64>;
}

/// Locks a mutex that only guards plain assignments: a panic elsewhere
/// cannot leave such data half-written, so a poisoned lock is still usable.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
