//! The Kubernetes backend: a `coordination.k8s.io/v1` Lease, read and
//! written the way client-go's `leaderelection` does, so that leaderd and
//! client-go candidates can share one Lease.
//!
//! - Every write is a compare-and-swap: an update carrying the
//!   `resourceVersion` last read; a 409 means someone else wrote, so we
//!   re-read and never overwrite.
//! - Expiry is judged as client-go judges it: from the local (monotonic)
//!   instant at which this candidate last saw the record change, plus its
//!   `leaseDurationSeconds`. Remote timestamps are written for client-go's
//!   benefit but never compared with our clock, so clock skew is harmless.
//! - The fencing token is `leaseTransitions`, incremented on every new term
//!   (client-go increments it only when the holder changes; it never reads
//!   it back, so both rules coexist). It only grows under CAS.
//! - A release writes what client-go's `ReleaseOnCancel` writes: an empty
//!   `holderIdentity` and `leaseDurationSeconds: 1`.
//! - Coordinated Leader Election: a `preferredHolder` naming another
//!   identity ends our term as it ends a client-go coordinated candidate's
//!   ("end of term"), except that we release at once instead of letting the
//!   Lease expire ([`Renew::HandOver`]); a released Lease reserved that way
//!   is left to its preferred holder until it expires by our observation.
//! - On becoming leader, an Event on the Lease as client-go records it
//!   (`reason: LeaderElection`, `<identity> became leader`).

mod watcher;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::{
    Acquire, Backend, BackendError, Candidate, Handoff, Holder, Notices, Observed, Presence, Renew,
    SwitchoverAnswer, SwitchoverRequest, Term, lock,
};
use crate::kubernetes::{EventRecorder, Involved};
use watcher::LeaseWatcher;

pub struct KubernetesBackend {
    leases: Api<Lease>,
    name: String,
    namespace: String,
    /// The Lease as last read or written: its resourceVersion makes our
    /// next write a compare-and-swap (client-go's "fast path").
    cached: Mutex<Option<Lease>>,
    /// The record last seen and the instant (our clock) it was first seen
    /// in that form: client-go's observedRecord / observedTime.
    observed: Mutex<Option<(LeaseSpec, Instant)>>,
    highest_token_seen: AtomicU64,
    notices: watch::Receiver<Notices>,
    events: EventRecorder,
    _watcher: LeaseWatcher,
}

impl KubernetesBackend {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> KubernetesBackend {
        let events = EventRecorder::new(client.clone());
        let leases: Api<Lease> = Api::namespaced(client, namespace);
        let (ticks, notices) = watch::channel(Notices::default());
        let watcher = LeaseWatcher::spawn(leases.clone(), name.to_string(), ticks);
        KubernetesBackend {
            leases,
            name: name.to_string(),
            namespace: namespace.to_string(),
            cached: Mutex::new(None),
            observed: Mutex::new(None),
            highest_token_seen: AtomicU64::new(0),
            notices,
            events,
            _watcher: watcher,
        }
    }

    /// A new term of ours: say so on the Lease, as client-go does.
    fn became_leader(&self, lease: &Lease, identity: &str) -> Term {
        self.events.normal(
            identity,
            Involved::of("Lease", "coordination.k8s.io/v1", &lease.metadata),
            "LeaderElection",
            format!("{identity} became leader"),
        );
        term_of(lease, identity)
    }

    pub fn describe(&self) -> String {
        format!("lease {}/{}", self.namespace, self.name)
    }

    fn error(&self, verb: &str, err: &kube::Error) -> BackendError {
        BackendError::new(crate::kubernetes::explain(
            err,
            verb,
            "coordination.k8s.io",
            "leases",
            &self.namespace,
        ))
    }

    async fn read(&self) -> Result<Option<Lease>, BackendError> {
        let lease = self
            .leases
            .get_opt(&self.name)
            .await
            .map_err(|err| self.error("get", &err))?;
        self.remember(lease.clone());
        Ok(lease)
    }

    fn remember(&self, lease: Option<Lease>) {
        if let Some(spec) = lease.as_ref().and_then(|l| l.spec.as_ref()) {
            let token = token_of(spec);
            self.highest_token_seen.fetch_max(token, Ordering::Relaxed);
        }
        *lock(&self.cached) = lease;
    }

    /// When the record took its current form, by our clock.
    fn observed_since(&self, spec: &LeaseSpec, now: Instant) -> Instant {
        let mut observed = lock(&self.observed);
        match observed.as_ref() {
            Some((seen, since)) if seen == spec => *since,
            _ => {
                *observed = Some((spec.clone(), now));
                now
            }
        }
    }

    /// Writes `lease` with the resourceVersion it carries.
    async fn write(&self, lease: &Lease) -> Result<Result<Lease, u16>, BackendError> {
        match self
            .leases
            .replace(&self.name, &PostParams::default(), lease)
            .await
        {
            Ok(written) => {
                self.remember(Some(written.clone()));
                if let Some(spec) = &written.spec {
                    self.observed_since(spec, Instant::now());
                }
                Ok(Ok(written))
            }
            Err(err) => match crate::kubernetes::status_code(&err) {
                Some(code @ (404 | 409)) => {
                    *lock(&self.cached) = None;
                    Ok(Err(code))
                }
                _ => Err(self.error("update", &err)),
            },
        }
    }

    async fn create(&self, spec: LeaseSpec) -> Result<Option<Lease>, BackendError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        };
        match self.leases.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                self.remember(Some(created.clone()));
                Ok(Some(created))
            }
            // AlreadyExists: another candidate created it first.
            Err(err) if crate::kubernetes::status_code(&err) == Some(409) => Ok(None),
            Err(err) => Err(self.error("create", &err)),
        }
    }

    /// The Lease as cached if it is still ours for `term`, else re-read.
    async fn ours(&self, term: &Term) -> Result<Result<Lease, Option<Holder>>, BackendError> {
        let cached = lock(&self.cached).clone();
        let lease = match cached {
            Some(lease) if owns(&lease, term) => return Ok(Ok(lease)),
            _ => self.read().await?,
        };
        Ok(match lease {
            Some(lease) if owns(&lease, term) => Ok(lease),
            Some(lease) => Err(lease.spec.as_ref().and_then(holder_of)),
            None => Err(None),
        })
    }
}

impl Backend for KubernetesBackend {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn acquire(
        &self,
        me: &Presence,
        lease: Duration,
        live_holder: Option<&Holder>,
        _holdback: Duration,
        _deadline: Instant,
    ) -> Result<Acquire, BackendError> {
        let identity = me.identity.as_str();
        let floor = self
            .highest_token_seen
            .load(Ordering::Relaxed)
            .saturating_add(1);
        let Some(current) = self.read().await? else {
            if live_holder.is_some() {
                // Someone deleted the Lease its holder may still be using.
                return Ok(Acquire::Vanished);
            }
            let spec = new_term_spec(identity, lease, floor);
            return Ok(match self.create(spec).await? {
                Some(created) => Acquire::Acquired(self.became_leader(&created, identity)),
                None => self.held_or_retry().await?,
            });
        };

        let now = Instant::now();
        let spec = current.spec.clone().unwrap_or_default();
        let since = self.observed_since(&spec, now);
        let expires = since + Duration::from_secs(seconds(&spec));
        if let Some(holder) = holder_of(&spec)
            && now < expires
        {
            return Ok(Acquire::HeldBy {
                holder,
                remaining: expires - now,
            });
        }
        if now < expires && preferred_other(&spec, identity).is_some() {
            // Released for a handover (Coordinated Leader Election): the
            // preferred holder, or the controller on its behalf, takes it;
            // if neither does before it expires, anyone may.
            return Ok(Acquire::Contested {
                retry_in: expires - now,
            });
        }

        // Free (released) or expired by our own observation: take it over
        // with a CAS on the resourceVersion we just read.
        let token = (token_of(&spec) + 1).max(floor);
        let mut next = current;
        next.spec = Some(new_term_spec(identity, lease, token));
        match self.write(&next).await? {
            Ok(written) => Ok(Acquire::Acquired(self.became_leader(&written, identity))),
            Err(_) => self.held_or_retry().await,
        }
    }

    async fn renew(
        &self,
        term: &Term,
        _me: &Presence,
        lease: Duration,
        _deadline: Instant,
    ) -> Result<Renew, BackendError> {
        // One retry: a 409 may only mean a metadata change by someone else.
        for _ in 0..2 {
            let mut current = match self.ours(term).await? {
                Ok(current) => current,
                Err(holder) => return Ok(Renew::Lost { holder }),
            };
            if let Some(to) = current
                .spec
                .as_ref()
                .and_then(|spec| preferred_other(spec, &term.claim))
            {
                return Ok(Renew::HandOver { to });
            }
            if let Some(spec) = current.spec.as_mut() {
                spec.renew_time = Some(now_micro());
                spec.lease_duration_seconds = Some(whole_seconds(lease));
            }
            match self.write(&current).await? {
                Ok(_) => {
                    return Ok(Renew::Renewed {
                        switchover: None,
                        standing: Default::default(),
                    });
                }
                Err(404) => return Ok(Renew::Lost { holder: None }),
                Err(_) => continue,
            }
        }
        Err(BackendError::new(format!(
            "{}: kept conflicting with other writers",
            self.describe()
        )))
    }

    async fn release(
        &self,
        term: &Term,
        _handoff: Option<&Handoff>,
        _lease: Duration,
        _deadline: Instant,
    ) -> Result<bool, BackendError> {
        for _ in 0..2 {
            let mut current = match self.ours(term).await? {
                Ok(current) => current,
                Err(_) => return Ok(false),
            };
            if let Some(spec) = current.spec.as_mut() {
                // What client-go's ReleaseOnCancel writes.
                let now = now_micro();
                spec.holder_identity = Some(String::new());
                spec.lease_duration_seconds = Some(1);
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
            }
            match self.write(&current).await? {
                Ok(_) => return Ok(true),
                Err(404) => return Ok(false),
                Err(_) => continue,
            }
        }
        Err(BackendError::new(format!(
            "{}: release kept conflicting with other writers",
            self.describe()
        )))
    }

    async fn observe(
        &self,
        _me: Option<&Presence>,
        _lease: Duration,
        _deadline: Instant,
    ) -> Result<Observed, BackendError> {
        let now = Instant::now();
        let Some(current) = self.read().await? else {
            return Ok(Observed::Free);
        };
        let spec = current.spec.clone().unwrap_or_default();
        let since = self.observed_since(&spec, now);
        let expires = since + Duration::from_secs(seconds(&spec));
        match holder_of(&spec) {
            Some(holder) if now < expires => Ok(Observed::HeldBy {
                holder,
                remaining: expires - now,
            }),
            _ => Ok(Observed::Free),
        }
    }

    async fn candidates(
        &self,
        _lease: Duration,
        _deadline: Instant,
    ) -> Result<Vec<Candidate>, BackendError> {
        Ok(Vec::new())
    }

    async fn leave(&self, _identity: &str, _deadline: Instant) -> Result<(), BackendError> {
        Ok(())
    }

    async fn switchover(
        &self,
        _request: SwitchoverRequest,
        _deadline: Instant,
    ) -> Result<SwitchoverAnswer, BackendError> {
        Err(BackendError::new(
            "switchover is not available on the Kubernetes backend yet",
        ))
    }

    fn notices(&self) -> watch::Receiver<Notices> {
        self.notices.clone()
    }
}

impl KubernetesBackend {
    /// After losing a race (409): report the winner if it is visible yet.
    async fn held_or_retry(&self) -> Result<Acquire, BackendError> {
        let now = Instant::now();
        match self.read().await? {
            Some(current) => {
                let spec = current.spec.clone().unwrap_or_default();
                let since = self.observed_since(&spec, now);
                match holder_of(&spec) {
                    Some(holder) => Ok(Acquire::HeldBy {
                        holder,
                        remaining: (since + Duration::from_secs(seconds(&spec)))
                            .saturating_duration_since(now),
                    }),
                    None => Err(BackendError::new(format!(
                        "{}: lost a race; retrying",
                        self.describe()
                    ))),
                }
            }
            None => Err(BackendError::new(format!(
                "{}: lost a race; retrying",
                self.describe()
            ))),
        }
    }
}

/// `leaderd check`: can we read the Lease, and who holds it?
pub async fn preflight(
    config: &crate::config::KubernetesConfig,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> crate::backend::Preflight {
    let mut result = crate::backend::Preflight::default();
    let client = match crate::kubernetes::client(config).await {
        Ok(client) => client,
        Err(err) => {
            result.errors.push(err);
            return result;
        }
    };
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    result
        .facts
        .push(format!("kubernetes lease {namespace}/{name}"));
    match tokio::time::timeout(timeout, leases.get_opt(name)).await {
        Err(_) => result
            .errors
            .push("the API server did not answer in time".into()),
        Ok(Err(err)) => result.errors.push(crate::kubernetes::explain(
            &err,
            "get",
            "coordination.k8s.io",
            "leases",
            namespace,
        )),
        Ok(Ok(None)) => result
            .facts
            .push("lease does not exist yet; the first candidate creates it".into()),
        Ok(Ok(Some(lease))) => match lease.spec.as_ref().and_then(holder_of) {
            Some(holder) => result.facts.push(format!(
                "lease held by {} (leaseTransitions {})",
                holder.identity,
                holder.fencing_token.unwrap_or(0)
            )),
            None => result.facts.push("lease is free".into()),
        },
    }
    result
}

fn new_term_spec(identity: &str, lease: Duration, token: u64) -> LeaseSpec {
    let now = now_micro();
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(whole_seconds(lease)),
        acquire_time: Some(now.clone()),
        renew_time: Some(now),
        lease_transitions: Some(i32::try_from(token).unwrap_or(i32::MAX)),
        ..LeaseSpec::default()
    }
}

fn term_of(lease: &Lease, identity: &str) -> Term {
    let token = lease.spec.as_ref().map_or(0, token_of);
    Term {
        id: token.to_string(),
        fencing_token: token,
        claim: identity.to_string(),
    }
}

/// Whether `lease` still records `term` (holder and transition count).
fn owns(lease: &Lease, term: &Term) -> bool {
    lease.spec.as_ref().is_some_and(|spec| {
        spec.holder_identity.as_deref() == Some(term.claim.as_str())
            && token_of(spec) == term.fencing_token
    })
}

fn holder_of(spec: &LeaseSpec) -> Option<Holder> {
    let identity = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    let token = token_of(spec);
    Some(Holder {
        identity: identity.to_string(),
        fencing_token: Some(token),
        term_id: Some(token.to_string()),
    })
}

/// The `preferredHolder` a Coordinated Leader Election controller set, if it
/// names someone other than `identity`.
fn preferred_other(spec: &LeaseSpec, identity: &str) -> Option<String> {
    spec.preferred_holder
        .as_deref()
        .filter(|preferred| !preferred.is_empty() && *preferred != identity)
        .map(str::to_string)
}

fn token_of(spec: &LeaseSpec) -> u64 {
    spec.lease_transitions
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(0)
}

fn seconds(spec: &LeaseSpec) -> u64 {
    spec.lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(0)
}

fn whole_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}
