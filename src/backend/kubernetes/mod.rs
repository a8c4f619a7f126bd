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
//! - A term is never won by `create`. A Lease found missing may have been
//!   deleted under a holder that still acts until its safe-until, so a
//!   candidate creates a *placeholder* ([`VACANT`] as holder, the token
//!   floor as `leaseTransitions`), which anyone takes only the ordinary
//!   way: by a CAS after seeing that same object (same `uid`) unchanged
//!   for one lease by its own clock (at least the longest
//!   `leaseDurationSeconds` seen, which it also carries). An object seen
//!   for the first time empty (replaced by an empty one, say) waits the
//!   same lease; only a release seen happening on the object, in a
//!   release's shape, is free at once (an edit emptying the holder is
//!   not the holder's word, nor one removing its lease duration).
//! - Tokens only grow, across deletions and re-creations too: every new
//!   term and placeholder takes at least the highest token seen (reads,
//!   watch events including a deletion's last state, the candidates'
//!   presence Leases) + 1, and at least the Unix time in seconds; a token
//!   that does not fit the int32 is refused, never clamped.
//! - Steering (see [`presence`] for the candidates): a pending switchover
//!   is the annotation [`SWITCHOVER`] on the Lease, written with CAS and
//!   read by the leader from the Lease its renewal writes; a switchover's
//!   release leaves the annotation [`HANDOFF`], which keeps the released
//!   Lease for the candidate it names for one lease by our observation
//!   (leaderd candidates only: client-go does not know it). When the Lease
//!   is free, a present, healthy candidate with a higher priority is given
//!   `holdback` to take it first.

mod presence;
mod watcher;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::{
    Acquire, Backend, BackendError, Candidate, Handoff, Holder, Notices, Observed, Presence, Renew,
    Switchover, SwitchoverAnswer, SwitchoverRequest, Term, lock,
};
use crate::kubernetes::{EventRecorder, Involved};
use presence::{PresenceLeases, SeenHolder};
use watcher::LeaseWatcher;

/// The annotation on the election's Lease holding the pending switchover
/// (JSON of [`Switchover`]).
pub const SWITCHOVER: &str = "leaderd.io/switchover";
/// The `holderIdentity` of a placeholder Lease, created where the Lease
/// was missing: no candidate uses it, so client-go candidates too see the
/// placeholder as held (until it expires by their observation).
pub const VACANT: &str = "leaderd.io/vacant";
/// The annotation a switchover's release leaves on the Lease (JSON of
/// [`Handoff`]): only the candidate it names may take the Lease while it
/// is valid.
pub const HANDOFF: &str = "leaderd.io/handoff";

/// The highest fencing token and the longest `leaseDurationSeconds` seen
/// in any read, write or watch event (a deletion's last state included):
/// a placeholder carries a token above the one and waits at least the
/// other, since the holder of a deleted Lease acts by the lease it wrote
/// (which, during a rolling change of `lease_duration`, may be longer than
/// ours).
#[derive(Default)]
pub struct HighestSeen {
    token: AtomicU64,
    lease_seconds: AtomicU64,
}

impl HighestSeen {
    pub fn record(&self, spec: &LeaseSpec) {
        self.token.fetch_max(token_of(spec), Ordering::Relaxed);
        self.lease_seconds
            .fetch_max(seconds(spec), Ordering::Relaxed);
    }

    fn token(&self) -> u64 {
        self.token.load(Ordering::Relaxed)
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds.load(Ordering::Relaxed))
    }
}

/// The Lease as last seen: client-go's observedRecord and observedTime,
/// for one object.
struct Observation {
    uid: Option<String>,
    spec: LeaseSpec,
    /// When (our clock) we first saw it in this form.
    since: Instant,
    /// Whether a vacancy in this form is a release we saw happen.
    release_seen: bool,
    /// The longest `leaseDurationSeconds` seen on this object for this
    /// holder and token: an edit may shorten or remove it, the holder
    /// still acts by the duration it wrote.
    longest_seconds: u64,
}

impl Observation {
    /// What we know after seeing the object `uid` with `spec` at `now`,
    /// having known `previous`.
    fn next(
        previous: Option<Observation>,
        uid: Option<String>,
        spec: LeaseSpec,
        now: Instant,
    ) -> Observation {
        match previous {
            Some(seen) if seen.uid == uid && seen.spec == spec => seen,
            seen => {
                let same = seen.as_ref().filter(|seen| seen.uid == uid);
                // A vacancy right after a holder, on the same object, in
                // the shape a release has (not an edit emptying the holder).
                let release_seen = same.is_some_and(|seen| is_release_of(&seen.spec, &spec));
                let written = seconds(&spec);
                let longest_seconds = match same {
                    Some(seen)
                        if seen.spec.holder_identity == spec.holder_identity
                            && token_of(&seen.spec) == token_of(&spec) =>
                    {
                        seen.longest_seconds.max(written)
                    }
                    _ => written,
                };
                Observation {
                    release_seen,
                    longest_seconds,
                    uid,
                    spec,
                    since: now,
                }
            }
        }
    }

    /// How long the lease in this form runs from [`Observation::since`]:
    /// its `leaseDurationSeconds`, unless that is missing or shorter than
    /// the holder wrote earlier in this term (an edit, not the holder's
    /// word); then the longest seen, and never less than our own `lease`.
    fn duration(&self, lease: Duration) -> Duration {
        lease_runs(
            self.spec.lease_duration_seconds,
            self.longest_seconds,
            lease,
        )
    }
}

/// See [`Observation::duration`].
fn lease_runs(written: Option<i32>, longest_seconds: u64, lease: Duration) -> Duration {
    match written.and_then(|s| u64::try_from(s).ok()) {
        Some(s) if s > 0 && s >= longest_seconds => Duration::from_secs(s),
        _ => Duration::from_secs(longest_seconds).max(lease),
    }
}

/// Whether `now` is what a release of the term `held` writes, by leaderd
/// or client-go's `ReleaseOnCancel`: an empty holder, a one-second lease,
/// the same `leaseTransitions`, and a `renewTime` later than the held
/// form's. An edit that only empties the holder (`kubectl edit`, a merge
/// patch) is not one: the holder was not asked and still acts.
fn is_release_of(held: &LeaseSpec, now: &LeaseSpec) -> bool {
    let renewed_later = match (&held.renew_time, &now.renew_time) {
        (Some(before), Some(after)) => after.0 > before.0,
        (None, Some(_)) => true,
        _ => false,
    };
    holder_of(held).is_some()
        && now.holder_identity.as_deref().unwrap_or("").is_empty()
        && now.lease_duration_seconds == Some(1)
        && now.lease_transitions == held.lease_transitions
        && renewed_later
}

/// When the Lease took its current form, by our clock.
struct Sighting {
    since: Instant,
    /// We saw this object held (by a candidate) just before this form: a
    /// vacancy now is a release. Otherwise we did not see how it came to be
    /// (an empty spec may be a Lease just replaced, or a placeholder
    /// emptied).
    release_seen: bool,
    /// How long the lease in this form runs from `since`, with our own
    /// lease: see [`Observation::duration`].
    written_seconds: Option<i32>,
    longest_seconds: u64,
}

impl Sighting {
    fn duration(&self, lease: Duration) -> Duration {
        lease_runs(self.written_seconds, self.longest_seconds, lease)
    }
}

pub struct KubernetesBackend {
    leases: Api<Lease>,
    name: String,
    namespace: String,
    /// The Lease as last read or written: its resourceVersion makes our
    /// next write a compare-and-swap (client-go's "fast path").
    cached: Mutex<Option<Lease>>,
    /// The record last seen and the instant (our clock) it was first seen
    /// in that form: client-go's observedRecord / observedTime, kept per
    /// object (uid).
    observed: Mutex<Option<Observation>>,
    /// The highest token and longest lease seen in any read, write or
    /// watch event.
    highest: Arc<HighestSeen>,
    /// The uid of the last placeholder we said we wait for (said once).
    told_placeholder: Mutex<Option<String>>,
    /// The last token we said does not fit `leaseTransitions` (said once).
    told_token_limit: Mutex<Option<u64>>,
    presence: Arc<PresenceLeases>,
    notices: watch::Receiver<Notices>,
    events: EventRecorder,
    _watcher: LeaseWatcher,
}

impl KubernetesBackend {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> KubernetesBackend {
        let events = EventRecorder::new(client.clone());
        let leases: Api<Lease> = Api::namespaced(client, namespace);
        let (ticks, notices) = watch::channel(Notices::default());
        let highest = Arc::new(HighestSeen::default());
        let watcher = LeaseWatcher::spawn(leases.clone(), name.to_string(), ticks, highest.clone());
        KubernetesBackend {
            leases: leases.clone(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            cached: Mutex::new(None),
            observed: Mutex::new(None),
            highest,
            told_placeholder: Mutex::new(None),
            told_token_limit: Mutex::new(None),
            presence: Arc::new(PresenceLeases::new(leases.clone(), namespace, name)),
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
            self.highest.record(spec);
        }
        *lock(&self.cached) = lease;
    }

    /// The holder as we last saw it and how long ago we saw it renewed,
    /// while its lease runs by our observation.
    fn seen_holder(&self, lease: Duration) -> Option<SeenHolder> {
        let observed = lock(&self.observed);
        let seen = observed.as_ref()?;
        let holder = holder_of(&seen.spec)?;
        let ago = seen.since.elapsed();
        (ago < seen.duration(lease)).then_some(SeenHolder {
            identity: holder.identity,
            renewed_ago: ago,
        })
    }

    /// Keeps a vacancy (since `vacant_since`, our clock) for a present,
    /// healthy candidate that outranks `me`, for `holdback` from then.
    async fn held_back(
        &self,
        me: &Presence,
        lease: Duration,
        vacant_since: Instant,
        holdback: Duration,
    ) -> Option<Acquire> {
        if Instant::now().saturating_duration_since(vacant_since) >= holdback {
            return None;
        }
        let to = self.presence.outranking(me, lease).await?;
        let remaining =
            holdback.checked_sub(Instant::now().saturating_duration_since(vacant_since))?;
        Some(Acquire::Deferred { to, remaining })
    }

    /// When the record took its current form, by our clock, and whether
    /// we saw the same object (uid) held just before.
    fn observed_since(&self, lease: &Lease, now: Instant) -> Sighting {
        let spec = lease.spec.clone().unwrap_or_default();
        let uid = lease.metadata.uid.clone();
        let mut observed = lock(&self.observed);
        let next = Observation::next(observed.take(), uid, spec, now);
        let sighting = Sighting {
            since: next.since,
            release_seen: next.release_seen,
            written_seconds: next.spec.lease_duration_seconds,
            longest_seconds: next.longest_seconds,
        };
        *observed = Some(next);
        sighting
    }

    /// The least token a placeholder or a new term may carry: above every token this
    /// candidate saw or another candidate announces, and at least the Unix
    /// time in seconds (above any counter that grew by at most one per
    /// second, for tokens nobody alive saw).
    async fn token_floor(&self) -> u64 {
        let seen = self.highest.token();
        let announced = self.presence.highest_token_announced().await;
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        seen.saturating_add(1)
            .max(announced.saturating_add(1))
            .max(unix)
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
                self.observed_since(&written, Instant::now());
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
                self.observed_since(&created, Instant::now());
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
        _live_holder: Option<&Holder>,
        holdback: Duration,
        _deadline: Instant,
    ) -> Result<Acquire, BackendError> {
        self.presence
            .refresh(me, lease, false, self.highest_token());
        let identity = me.identity.as_str();
        let current = match self.read().await? {
            Some(current) => current,
            None => match self.create_placeholder(lease).await? {
                Some(created) => created,
                // Someone else created it first (or it keeps vanishing):
                // look again at the next try.
                None => match self.read().await? {
                    Some(current) => current,
                    None => {
                        return Ok(Acquire::Contested {
                            retry_in: lease / 10,
                        });
                    }
                },
            },
        };

        let now = Instant::now();
        let spec = current.spec.clone().unwrap_or_default();
        let seen = self.observed_since(&current, now);
        let since = seen.since;
        let expires = since + seen.duration(lease);
        if let Some(holder) = holder_of(&spec)
            && now < expires
        {
            return Ok(Acquire::HeldBy {
                holder,
                remaining: expires - now,
            });
        }
        // A placeholder, or a vacancy we did not see happen as a release on
        // this object (the Lease replaced by an empty one, a placeholder
        // emptied): the Lease it replaced may have been renewed just before
        // its deletion, by a holder that acts until its safe-until. Wait a
        // lease from our first sight of this form, which came after that
        // deletion.
        let unsettled = is_placeholder(&spec) || (!seen.release_seen && holder_of(&spec).is_none());
        // At least the longest lease seen: the deleted holder's may have
        // been longer than ours (a rolling change of lease_duration).
        let settles = since + lease.max(seen.duration(lease)).max(self.highest.lease());
        if unsettled && now < settles {
            self.say_placeholder(&current, settles - now);
            return Ok(Acquire::Contested {
                retry_in: settles - now,
            });
        }
        if !unsettled && now < expires && preferred_other(&spec, identity).is_some() {
            // Released for a handover (Coordinated Leader Election): the
            // preferred holder, or the controller on its behalf, takes it;
            // if neither does before it expires, anyone may.
            return Ok(Acquire::Contested {
                retry_in: expires - now,
            });
        }
        let vacant_since = match handoff_of(&current, &spec) {
            // Reserved by a switchover for one lease from when we saw it.
            Some(handoff) if now < since + lease => {
                if handoff.to != identity {
                    return Ok(Acquire::Reserved {
                        to: handoff.to,
                        remaining: since + lease - now,
                    });
                }
                None
            }
            // The reservation lapsed (its candidate did not come): vacant
            // from then, so that the hold-back applies as to any vacancy.
            Some(_) => Some(since + lease),
            // Settled only now; released: vacant since we saw the release;
            // expired: since it expired by our observation.
            None if unsettled => Some(settles),
            None if holder_of(&spec).is_none() => Some(since),
            None => Some(expires),
        };
        if let Some(vacant_since) = vacant_since
            && let Some(deferred) = self.held_back(me, lease, vacant_since, holdback).await
        {
            return Ok(deferred);
        }

        // Free (released) or expired by our own observation: take it over
        // with a CAS on the resourceVersion we just read.
        // The token floor on every take, not only on our placeholders: a
        // Lease re-created by someone else (`spec: {}`) restarts its
        // leaseTransitions at 0.
        let token = self
            .token_floor()
            .await
            .max(token_of(&spec).saturating_add(1));
        // Never clamped: a token handed out twice is accepted by a fenced
        // store as "not lower".
        let Ok(transitions) = i32::try_from(token) else {
            self.say_token_limit(token);
            return Ok(Acquire::Contested { retry_in: lease });
        };
        let mut next = current;
        next.spec = Some(new_term_spec(identity, lease, transitions));
        if let Some(annotations) = next.metadata.annotations.as_mut() {
            annotations.remove(HANDOFF);
        }
        match self.write(&next).await? {
            Ok(written) => Ok(Acquire::Acquired(self.became_leader(&written, identity))),
            Err(_) => self.held_or_retry(lease).await,
        }
    }

    async fn renew(
        &self,
        term: &Term,
        me: &Presence,
        lease: Duration,
        _deadline: Instant,
    ) -> Result<Renew, BackendError> {
        self.presence.refresh(me, lease, true, self.highest_token());
        // Retries: a 409 may only mean a metadata change by someone else (a
        // switchover recorded on the Lease).
        for _ in 0..3 {
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
                Ok(written) => {
                    return Ok(Renew::Renewed {
                        switchover: switchover_of(&written),
                        standing: self.presence.standing(me, lease),
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
        handoff: Option<&Handoff>,
        _lease: Duration,
        _deadline: Instant,
    ) -> Result<bool, BackendError> {
        for _ in 0..3 {
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
            let pending_id = switchover_of(&current).map(|pending| pending.id);
            let annotations = current
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            match handoff {
                Some(handoff) => {
                    annotations.insert(
                        HANDOFF.to_string(),
                        serde_json::to_string(handoff).unwrap_or_default(),
                    );
                    // The switchover it carries out is done; not one asked
                    // for since.
                    if handoff.switchover.is_some() && handoff.switchover == pending_id {
                        annotations.remove(SWITCHOVER);
                    }
                }
                None => {
                    annotations.remove(HANDOFF);
                }
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
        me: Option<&Presence>,
        lease: Duration,
        _deadline: Instant,
    ) -> Result<Observed, BackendError> {
        if let Some(me) = me {
            self.presence
                .refresh(me, lease, false, self.highest_token());
        }
        let now = Instant::now();
        let Some(current) = self.read().await? else {
            return Ok(Observed::Free);
        };
        let spec = current.spec.clone().unwrap_or_default();
        let seen = self.observed_since(&current, now);
        let since = seen.since;
        let expires = since + seen.duration(lease);
        match holder_of(&spec) {
            Some(holder) if now < expires => Ok(Observed::HeldBy {
                holder,
                remaining: expires - now,
            }),
            _ => match handoff_of(&current, &spec) {
                Some(handoff) if now < since + lease => Ok(Observed::Reserved {
                    to: handoff.to,
                    remaining: since + lease - now,
                }),
                _ => Ok(Observed::Free),
            },
        }
    }

    async fn candidates(
        &self,
        lease: Duration,
        _deadline: Instant,
    ) -> Result<Vec<Candidate>, BackendError> {
        self.presence
            .candidates(lease, self.seen_holder(lease))
            .await
    }

    async fn leave(&self, identity: &str, _deadline: Instant) -> Result<(), BackendError> {
        self.presence.leave(identity).await
    }

    async fn switchover(
        &self,
        request: SwitchoverRequest,
        _deadline: Instant,
    ) -> Result<SwitchoverAnswer, BackendError> {
        // A CAS on the Lease: retried when a renewal (or anyone) wrote
        // between our read and our write.
        for _ in 0..5 {
            let Some(mut current) = self.read().await? else {
                return match request {
                    SwitchoverRequest::Record(_) => Err(BackendError::new(format!(
                        "{} does not exist: nobody leads",
                        self.describe()
                    ))),
                    _ => Ok(SwitchoverAnswer::None),
                };
            };
            let recorded = annotation(&current, SWITCHOVER).map(str::to_string);
            let pending = switchover_of(&current);
            let annotations = current
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            match &request {
                SwitchoverRequest::Get => {
                    return Ok(pending.map_or(SwitchoverAnswer::None, SwitchoverAnswer::Pending));
                }
                SwitchoverRequest::Record(record) => {
                    if let Some(pending) = pending {
                        return Ok(SwitchoverAnswer::Pending(pending));
                    }
                    annotations.insert(
                        SWITCHOVER.to_string(),
                        serde_json::to_string(record).unwrap_or_default(),
                    );
                }
                SwitchoverRequest::Cancel(id) => {
                    let another = id
                        .as_ref()
                        .is_some_and(|id| pending.as_ref().is_none_or(|pending| pending.id != *id));
                    if recorded.is_none() || another {
                        return Ok(SwitchoverAnswer::None);
                    }
                    annotations.remove(SWITCHOVER);
                }
            }
            match self.write(&current).await? {
                Ok(_) => return Ok(SwitchoverAnswer::Done),
                Err(_) => continue,
            }
        }
        Err(BackendError::new(format!(
            "{}: the switchover kept conflicting with other writers",
            self.describe()
        )))
    }

    fn notices(&self) -> watch::Receiver<Notices> {
        self.notices.clone()
    }
}

impl KubernetesBackend {
    fn highest_token(&self) -> u64 {
        self.highest.token()
    }

    /// The Lease is missing: creates a placeholder, which nobody may take
    /// before it has been seen unchanged for one lease. `None` when another
    /// candidate created the Lease first.
    async fn create_placeholder(&self, lease: Duration) -> Result<Option<Lease>, BackendError> {
        let floor = self.token_floor().await;
        let Ok(floor) = i32::try_from(floor) else {
            self.say_token_limit(floor);
            return Ok(None);
        };
        // Held by nobody for the longest lease seen: every candidate waits
        // that long on it, client-go's too.
        let spec = new_term_spec(VACANT, lease.max(self.highest.lease()), floor);
        self.create(spec).await
    }

    /// Says once per object that we wait for it to settle.
    fn say_placeholder(&self, lease: &Lease, wait: Duration) {
        let uid = lease.metadata.uid.clone().unwrap_or_default();
        let mut told = lock(&self.told_placeholder);
        if told.as_deref() != Some(uid.as_str()) {
            tracing::info!(
                lease = %format!("{}/{}", self.namespace, self.name),
                wait = %crate::config::show(wait),
                "the lease does not exist or was replaced (a new election, or it was deleted): its placeholder is taken once it has been seen unchanged for one lease_duration, so that a holder of a deleted lease has stopped acting"
            );
            *told = Some(uid);
        }
    }

    /// Says once per token that no term can start: the next token does not
    /// fit `leaseTransitions`.
    fn say_token_limit(&self, token: u64) {
        let mut told = lock(&self.told_token_limit);
        if *told != Some(token) {
            tracing::error!(
                lease = %format!("{}/{}", self.namespace, self.name),
                token,
                limit = i32::MAX,
                "no term can start: the next fencing token does not fit leaseTransitions, an int32 (at most 2^31 - 1 = 2147483647), and handing out the same token twice would defeat fencing; nobody leads until this is resolved: delete the Lease (it is recreated with a token floor from the clock, above every counter kept by one per second, which fits until 2038-01-19) or use the Redis backend (64-bit tokens)"
            );
            *told = Some(token);
        }
    }

    /// After losing a race (409): report the winner if it is visible yet.
    async fn held_or_retry(&self, lease: Duration) -> Result<Acquire, BackendError> {
        let now = Instant::now();
        match self.read().await? {
            Some(current) => {
                let spec = current.spec.clone().unwrap_or_default();
                let seen = self.observed_since(&current, now);
                match holder_of(&spec) {
                    Some(holder) => Ok(Acquire::HeldBy {
                        holder,
                        remaining: (seen.since + seen.duration(lease))
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
            .push("lease does not exist yet; the first candidate creates a placeholder, taken once it has been seen unchanged for one lease_duration (a lease found missing may have been deleted under a holder that still acts), so the first term of a new election starts one lease late".into()),
        Ok(Ok(Some(lease))) => match lease.spec.as_ref().and_then(holder_of) {
            Some(holder) => result.facts.push(format!(
                "lease held by {} (leaseTransitions {})",
                holder.identity,
                holder.fencing_token.unwrap_or(0)
            )),
            None if lease.spec.as_ref().is_some_and(is_placeholder) => result
                .facts
                .push("lease is a placeholder (it was missing): taken once it has been seen unchanged for one lease_duration".into()),
            None => result.facts.push("lease is free".into()),
        },
    }
    result
}

fn new_term_spec(identity: &str, lease: Duration, token: i32) -> LeaseSpec {
    let now = now_micro();
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(whole_seconds(lease)),
        acquire_time: Some(now.clone()),
        renew_time: Some(now),
        lease_transitions: Some(token),
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

/// Who holds the Lease: nobody when it is released or a placeholder.
fn holder_of(spec: &LeaseSpec) -> Option<Holder> {
    let identity = spec
        .holder_identity
        .as_deref()
        .filter(|h| !h.is_empty() && *h != VACANT)?;
    let token = token_of(spec);
    Some(Holder {
        identity: identity.to_string(),
        fencing_token: Some(token),
        term_id: Some(token.to_string()),
    })
}

fn is_placeholder(spec: &LeaseSpec) -> bool {
    spec.holder_identity.as_deref() == Some(VACANT)
}

/// The `preferredHolder` a Coordinated Leader Election controller set, if it
/// names someone other than `identity`.
fn preferred_other(spec: &LeaseSpec, identity: &str) -> Option<String> {
    spec.preferred_holder
        .as_deref()
        .filter(|preferred| !preferred.is_empty() && *preferred != identity)
        .map(str::to_string)
}

fn annotation<'a>(lease: &'a Lease, key: &str) -> Option<&'a str> {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The pending switchover recorded on the Lease, if leaderd can read it.
fn switchover_of(lease: &Lease) -> Option<Switchover> {
    let json = annotation(lease, SWITCHOVER)?;
    match serde_json::from_str(json) {
        Ok(record) => Some(record),
        Err(err) => {
            tracing::warn!(%err, annotation = SWITCHOVER, "a switchover record leaderd cannot read; ignored");
            None
        }
    }
}

/// The handoff left by the release the Lease records: only while nobody
/// holds it and the term it names is the one released (a client-go
/// candidate that took the Lease meanwhile kept the annotation, but counted
/// a transition).
fn handoff_of(lease: &Lease, spec: &LeaseSpec) -> Option<Handoff> {
    let handoff: Handoff = serde_json::from_str(annotation(lease, HANDOFF)?).ok()?;
    (holder_of(spec).is_none() && handoff.token == token_of(spec)).then_some(handoff)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(1),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn only_a_vacancy_seen_after_a_holder_on_the_same_object_is_a_release() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(100);
        let uid = |u: &str| Some(u.to_string());
        // Held, then released on the same object: free at once.
        let renewed = |spec: LeaseSpec, at: &str| LeaseSpec {
            renew_time: Some(MicroTime(at.parse().expect("a timestamp"))),
            ..spec
        };
        let held_spec = renewed(spec("h"), "2026-01-01T00:00:00Z");
        let release = renewed(spec(""), "2026-01-01T00:00:01Z");
        let held = Observation::next(None, uid("u1"), held_spec.clone(), t0);
        let released = Observation::next(Some(held), uid("u1"), release.clone(), t1);
        assert!(released.release_seen);
        assert_eq!(released.since, t1);
        // Unchanged: the same observation, since its first sight.
        let again = Observation::next(
            Some(released),
            uid("u1"),
            release.clone(),
            t1 + Duration::from_millis(500),
        );
        assert_eq!(again.since, t1);
        // Replaced by an empty object (new uid): not a release.
        let replaced = Observation::next(Some(again), uid("u2"), LeaseSpec::default(), t1);
        assert!(!replaced.release_seen);
        // A placeholder emptied by someone: not a release either.
        let placeholder = Observation::next(None, uid("u3"), spec(VACANT), t0);
        let emptied = Observation::next(Some(placeholder), uid("u3"), spec(""), t1);
        assert!(!emptied.release_seen);
        // First sight of an empty Lease: not a release.
        assert!(!Observation::next(None, uid("u4"), release.clone(), t0).release_seen);
        // An edit emptying the holder (its lease, token and renewTime
        // kept), or any vacancy not shaped as a release: not a release.
        let edits = [
            LeaseSpec {
                lease_duration_seconds: Some(2),
                ..release.clone()
            },
            LeaseSpec {
                lease_transitions: Some(7),
                ..release.clone()
            },
            LeaseSpec {
                renew_time: held_spec.renew_time.clone(),
                ..release.clone()
            },
            LeaseSpec {
                holder_identity: Some(String::new()),
                ..held_spec.clone()
            },
        ];
        for edit in edits {
            let held = Observation::next(None, uid("u5"), held_spec.clone(), t0);
            assert!(!Observation::next(Some(held), uid("u5"), edit, t1).release_seen);
        }
    }

    #[test]
    fn an_edit_never_shortens_the_lease_of_its_holder() {
        let t0 = Instant::now();
        let uid = |u: &str| Some(u.to_string());
        let own = Duration::from_secs(1);
        let held = LeaseSpec {
            lease_duration_seconds: Some(6),
            ..spec("h")
        };
        let seen = Observation::next(None, uid("u1"), held.clone(), t0);
        assert_eq!(seen.duration(own), Duration::from_secs(6));
        // leaseDurationSeconds removed or lowered under h: still 6 s.
        for edited in [None, Some(2)] {
            let seen = Observation::next(None, uid("u1"), held.clone(), t0);
            let edit = LeaseSpec {
                lease_duration_seconds: edited,
                ..held.clone()
            };
            let seen = Observation::next(Some(seen), uid("u1"), edit, t0);
            assert_eq!(seen.duration(own), Duration::from_secs(6));
        }
        // Missing at first sight: at least our own lease.
        let bare = LeaseSpec {
            lease_duration_seconds: None,
            ..spec("h")
        };
        let seen = Observation::next(None, uid("u2"), bare, t0);
        assert_eq!(
            seen.duration(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        // A new term (another token) may write a shorter lease.
        let next_term = LeaseSpec {
            lease_transitions: Some(1),
            lease_duration_seconds: Some(2),
            ..spec("h")
        };
        let seen = Observation::next(
            Some(Observation::next(None, uid("u1"), held, t0)),
            uid("u1"),
            next_term,
            t0,
        );
        assert_eq!(seen.duration(own), Duration::from_secs(2));
    }
}
