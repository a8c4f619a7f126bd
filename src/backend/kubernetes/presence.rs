//! The candidates' presence on Kubernetes: one small Lease per candidate,
//! `<lease>-<hash of identity>`, next to the election's Lease, labelled
//! `leaderd.io/candidate-of: <lease>`, its `holderIdentity` the candidate,
//! its presence JSON in the annotation `leaderd.io/presence`, and its
//! `renewTime` refreshed while the candidate stands.
//!
//! Cost is what matters here: a candidate at rest may spend at most one more
//! request per `retry_period` on presence. So a follower refreshes its
//! presence Lease at most once per call and only every `lease_duration / 3`
//! (or at once when what it announces changed), in the background, never
//! delaying the election; the leader does not refresh it at all while it
//! leads (its renewals of the election's Lease show that it is there) and
//! instead lists the candidates at that cadence, for
//! [`Standing`](crate::backend::Standing), and removes presence Leases
//! dead for [`GARBAGE_AFTER`] leases, so that pod churn leaves no garbage.
//!
//! Presence is soft state, and the one place where this backend compares a
//! remote timestamp (`renewTime`, the writer's clock) with the local clock:
//! a candidate counts as present while its presence Lease was refreshed
//! within `lease_duration`. Clock skew between nodes can only make a
//! candidate look absent or present a little too long — it changes whom a
//! switchover may name and whom a vacancy is kept for, never who may hold
//! the election's Lease. A `renewTime` more than a lease in the future is
//! not believed: such a Lease counts only while we see it change (its
//! resourceVersion) between our own listings, so a dead candidate dated
//! ahead is not present for ever.
//!
//! A presence Lease also announces the highest fencing token its candidate
//! saw (annotation [`HIGHEST_TOKEN`]), so that a placeholder created after
//! the election's Lease was deleted counts on from there.
//!
//! Only Leases carrying our label are ever written or deleted, and a
//! deletion names the uid and resourceVersion of our own copy: a name that
//! collides with another Lease (another election's) leaves it alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use tokio::time::Instant;

use super::{now_micro, whole_seconds};
use crate::backend::{BackendError, Candidate, Presence, Standing, lock};

/// The label that selects an election's presence Leases.
pub const CANDIDATE_OF: &str = "leaderd.io/candidate-of";
/// The annotation holding a candidate's presence JSON.
pub const PRESENCE: &str = "leaderd.io/presence";
/// The annotation holding the highest fencing token the candidate saw.
pub const HIGHEST_TOKEN: &str = "leaderd.io/highest-token";

/// A presence Lease not refreshed for this many lease durations belongs to
/// a candidate that is gone for good (a deleted pod): the leader removes it.
const GARBAGE_AFTER: u32 = 10;
/// At most this many removals per listing, so that a backlog of garbage
/// never makes one pass long.
const GARBAGE_PER_PASS: usize = 16;

/// The holder of the election's Lease as this candidate last saw it, and
/// how long ago it last saw it renewed (local observation): the leader
/// does not refresh its presence Lease while it leads.
pub struct SeenHolder {
    pub identity: String,
    pub renewed_ago: Duration,
}

/// One presence Lease as listed.
struct Listed {
    name: String,
    uid: Option<String>,
    resource_version: Option<String>,
    presence: Option<Presence>,
    /// How long ago its writer refreshed it, by its clock and ours.
    age: Duration,
    /// The highest fencing token its candidate announces.
    highest_token: u64,
}

/// A presence Lease's resourceVersion as last listed, and when (our clock)
/// a listing first found it changed (`None`: not seen changing yet).
type Version = (Option<String>, Option<Instant>);

/// What stands under our presence Lease's name.
enum Found {
    Ours(Box<Lease>),
    Missing,
    /// A Lease without our label (another election's, say): never written.
    Foreign,
}

/// Our own presence Lease: the copy last written (its resourceVersion
/// makes the next write a compare-and-swap), guarded by an async mutex so
/// that a refresh in flight and `leave` never overtake each other.
#[derive(Default)]
struct Own {
    cached: Option<Lease>,
}

/// When our presence was last written, and whether a write is under way.
#[derive(Default)]
struct Schedule {
    /// The JSON written and when (our clock).
    written: Option<(String, Instant)>,
    in_flight: bool,
    /// We left the election: write nothing any more.
    left: bool,
}

/// The leader's view of who else stands, refreshed at the presence cadence.
#[derive(Default)]
struct Listing {
    /// Present candidates other than us, at the last listing.
    others: Vec<Presence>,
    at: Option<Instant>,
    in_flight: bool,
}

pub struct PresenceLeases {
    leases: Api<Lease>,
    namespace: String,
    /// The election's Lease.
    election: String,
    /// The value of [`CANDIDATE_OF`] on our presence Leases.
    label: String,
    own: tokio::sync::Mutex<Own>,
    schedule: Mutex<Schedule>,
    listing: Mutex<Listing>,
    /// The last problem logged, so that a lasting one is said once.
    last_problem: Mutex<String>,
    /// Per presence Lease listed: its resourceVersion and when (our clock)
    /// we saw it change, to judge those dated in the future.
    versions: Mutex<HashMap<String, Version>>,
}

impl PresenceLeases {
    pub fn new(leases: Api<Lease>, namespace: &str, election: &str) -> PresenceLeases {
        PresenceLeases {
            leases,
            namespace: namespace.to_string(),
            election: election.to_string(),
            label: label_value(election),
            own: tokio::sync::Mutex::new(Own::default()),
            schedule: Mutex::new(Schedule::default()),
            listing: Mutex::new(Listing::default()),
            last_problem: Mutex::new(String::new()),
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// The name of `identity`'s presence Lease.
    pub fn name_of(&self, identity: &str) -> String {
        presence_lease_name(&self.election, identity)
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

    /// Logs a failure of the presence machinery once per distinct problem:
    /// it never stops the election, but a missing permission must be seen.
    fn report(&self, what: &str, err: &BackendError) {
        let problem = format!("{what}: {err}");
        let mut last = lock(&self.last_problem);
        if *last != problem {
            tracing::warn!("{problem}");
            *last = problem;
        }
    }

    fn problem_gone(&self) {
        lock(&self.last_problem).clear();
    }

    /// Refreshes our presence Lease in the background if it is due: never
    /// written yet, changed, or (unless `leading`) last written
    /// `lease / 3` ago. At most one write at a time. `token` (the highest
    /// fencing token seen) goes with each write, never forcing one.
    pub fn refresh(self: &Arc<Self>, me: &Presence, lease: Duration, leading: bool, token: u64) {
        let json = serde_json::to_string(me).unwrap_or_default();
        {
            let mut schedule = lock(&self.schedule);
            if schedule.left || schedule.in_flight {
                return;
            }
            let due = match &schedule.written {
                None => true,
                Some((written, at)) => {
                    *written != json || (!leading && at.elapsed() >= cadence(lease))
                }
            };
            if !due {
                return;
            }
            schedule.in_flight = true;
        }
        let this = self.clone();
        let me = me.clone();
        tokio::spawn(async move {
            // Bounded: a hung API server must not leave a write in flight
            // for ever (that would stop every later refresh).
            let written =
                tokio::time::timeout(lease, this.write_own(&me, lease, &json, token)).await;
            let ok = matches!(written, Ok(Ok(())));
            {
                let mut schedule = lock(&this.schedule);
                schedule.in_flight = false;
                if ok {
                    schedule.written = Some((json, Instant::now()));
                }
            }
            match written {
                Ok(Ok(())) => {}
                Ok(Err(err)) => this.report("cannot announce this candidate", &err),
                Err(_) => this.report(
                    "cannot announce this candidate",
                    &BackendError::new("the API server did not answer in time"),
                ),
            }
        });
    }

    /// Creates or updates our presence Lease, always with a CAS. A
    /// conflict (our previous run created it, or a write of ours raced) is
    /// settled by reading it back through a list by name (no `get` is
    /// needed, so the RBAC rule for presence Leases stays `create, update,
    /// list, delete`) and updating that version if it carries our label.
    async fn write_own(
        &self,
        me: &Presence,
        lease: Duration,
        json: &str,
        token: u64,
    ) -> Result<(), BackendError> {
        let mut own = self.own.lock().await;
        if lock(&self.schedule).left {
            return Ok(());
        }
        let name = self.name_of(&me.identity);
        let fresh = || Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        let mut object = own.cached.clone().unwrap_or_else(fresh);
        // Create when we never wrote it (or it was removed), else update.
        let mut create = object.metadata.resource_version.is_none();
        for _ in 0..3 {
            self.fill(&mut object, me, lease, json, token);
            let result = if create {
                self.leases.create(&PostParams::default(), &object).await
            } else {
                self.leases
                    .replace(&name, &PostParams::default(), &object)
                    .await
            };
            let err = match result {
                Ok(written) => {
                    own.cached = Some(written);
                    return Ok(());
                }
                Err(err) => err,
            };
            own.cached = None;
            match crate::kubernetes::status_code(&err) {
                // Exists already, or changed since our last write: read it
                // back, and update it if it is ours.
                Some(409) | Some(404) => match self.find(&name, &me.identity).await? {
                    Found::Ours(found) => {
                        object = *found;
                        create = false;
                    }
                    Found::Missing => {
                        object = fresh();
                        create = true;
                    }
                    Found::Foreign => {
                        return Err(BackendError::new(format!(
                            "presence lease {}/{name} is taken by a Lease that is not this candidate's (no label {CANDIDATE_OF}: {}); it is left alone, and this candidate is not listed",
                            self.namespace, self.label
                        )));
                    }
                },
                _ => {
                    return Err(self.error(if create { "create" } else { "update" }, &err));
                }
            }
        }
        Err(BackendError::new(format!(
            "presence lease {}/{name} kept conflicting with other writers",
            self.namespace
        )))
    }

    /// The Lease named `name`, read through a list by name, and whether
    /// it is `identity`'s presence Lease in this election.
    async fn find(&self, name: &str, identity: &str) -> Result<Found, BackendError> {
        let params = ListParams::default().fields(&format!("metadata.name={name}"));
        let listed = self
            .leases
            .list(&params)
            .await
            .map_err(|err| self.error("list", &err))?;
        let Some(lease) = listed.items.into_iter().next() else {
            return Ok(Found::Missing);
        };
        let labelled = lease
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CANDIDATE_OF))
            .is_some_and(|v| *v == self.label);
        let held = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(identity);
        Ok(if labelled && held {
            Found::Ours(Box::new(lease))
        } else {
            Found::Foreign
        })
    }

    fn fill(&self, object: &mut Lease, me: &Presence, lease: Duration, json: &str, token: u64) {
        object
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(CANDIDATE_OF.to_string(), self.label.clone());
        let annotations = object
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        annotations.insert(PRESENCE.to_string(), json.to_string());
        annotations.insert(HIGHEST_TOKEN.to_string(), token.to_string());
        let now = now_micro();
        let spec = object.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(me.identity.clone());
        spec.lease_duration_seconds = Some(whole_seconds(lease));
        if spec.acquire_time.is_none() {
            spec.acquire_time = Some(now.clone());
        }
        spec.renew_time = Some(now);
    }

    /// Removes our presence Lease for good (shutdown). Waits for a refresh
    /// in flight, so that it cannot recreate the Lease afterwards. Deletes
    /// only our own object: the uid and resourceVersion of our copy (or of
    /// the Lease by that name, if it carries our label) are preconditions.
    pub async fn leave(&self, identity: &str) -> Result<(), BackendError> {
        lock(&self.schedule).left = true;
        let mut own = self.own.lock().await;
        let name = self.name_of(identity);
        let mut copy = own.cached.take();
        for _ in 0..3 {
            let target = match copy.take() {
                Some(lease) => lease,
                None => match self.find(&name, identity).await {
                    Ok(Found::Ours(lease)) => *lease,
                    Ok(Found::Missing | Found::Foreign) => return Ok(()),
                    Err(err) => return Err(self.cannot_leave(&name, err)),
                },
            };
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: target.metadata.uid.clone(),
                    resource_version: target.metadata.resource_version.clone(),
                }),
                ..DeleteParams::default()
            };
            match self.leases.delete(&name, &params).await {
                Ok(_) => return Ok(()),
                Err(err) => match crate::kubernetes::status_code(&err) {
                    Some(404) => return Ok(()),
                    // Not the object we wrote: look at what is there.
                    Some(409) => {}
                    _ => return Err(self.cannot_leave(&name, self.error("delete", &err))),
                },
            }
        }
        Ok(())
    }

    /// Said here, at warning level: the elector treats a failed leave as
    /// routine (the presence expires on its own), but a missing permission
    /// must be visible.
    fn cannot_leave(&self, name: &str, err: BackendError) -> BackendError {
        tracing::warn!("cannot remove this candidate's presence lease {name}: {err}");
        err
    }

    async fn list(&self) -> Result<Vec<Listed>, BackendError> {
        let params = ListParams::default().labels(&format!("{CANDIDATE_OF}={}", self.label));
        let listed = self
            .leases
            .list(&params)
            .await
            .map_err(|err| self.error("list", &err))?;
        let now = SystemTime::now();
        let seen_at = Instant::now();
        let mut versions = lock(&self.versions);
        let previous = std::mem::take(&mut *versions);
        Ok(listed
            .items
            .into_iter()
            .filter_map(|lease| {
                let name = lease.metadata.name.clone()?;
                let version = lease.metadata.resource_version.clone();
                // When we saw it change: unknown at its first listing.
                let changed = match previous.get(&name) {
                    Some((before, at)) if *before == version => *at,
                    Some(_) => Some(seen_at),
                    None => None,
                };
                versions.insert(name.clone(), (version, changed));
                let presence = lease
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(PRESENCE))
                    .and_then(|json| serde_json::from_str::<Presence>(json).ok());
                let renewed = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.renew_time.as_ref())
                    .map(|t| SystemTime::from(t.0));
                let age = age_of(
                    renewed,
                    now,
                    lease_of(&lease),
                    changed.map(|at| at.elapsed()),
                );
                let highest_token = announced_token(&name, &lease);
                Some(Listed {
                    name,
                    uid: lease.metadata.uid,
                    resource_version: lease.metadata.resource_version,
                    presence,
                    age,
                    highest_token,
                })
            })
            .collect())
    }

    /// The highest fencing token any candidate announces (0 when none can
    /// be listed).
    pub async fn highest_token_announced(&self) -> u64 {
        match self.list().await {
            Ok(listed) => listed.iter().map(|l| l.highest_token).max().unwrap_or(0),
            Err(err) => {
                self.report("cannot list the candidates for their tokens", &err);
                0
            }
        }
    }

    /// The candidates present: refreshed within `lease`, or the holder of
    /// the election's Lease while we see it renewed.
    pub async fn candidates(
        &self,
        lease: Duration,
        holder: Option<SeenHolder>,
    ) -> Result<Vec<Candidate>, BackendError> {
        let listed = self.list().await?;
        Ok(present(listed, lease, holder.as_ref()))
    }

    /// For the leader, after each renewal: who else stands, as last listed;
    /// lists again in the background when the last listing is
    /// `lease / 3` old, and removes dead presence Leases then.
    pub fn standing(self: &Arc<Self>, me: &Presence, lease: Duration) -> Standing {
        let others = {
            let mut listing = lock(&self.listing);
            let due = listing.at.is_none_or(|at| at.elapsed() >= cadence(lease));
            if due && !listing.in_flight {
                listing.in_flight = true;
                let this = self.clone();
                let identity = me.identity.clone();
                tokio::spawn(async move {
                    let listed =
                        tokio::time::timeout(lease, this.list_as_leader(&identity, lease)).await;
                    let mut listing = lock(&this.listing);
                    listing.in_flight = false;
                    match listed {
                        Ok(Ok(others)) => {
                            listing.others = others;
                            listing.at = Some(Instant::now());
                            drop(listing);
                            this.problem_gone();
                        }
                        Ok(Err(err)) => {
                            // Try again at the next renewal, not sooner.
                            listing.at = Some(Instant::now());
                            drop(listing);
                            this.report("cannot list the candidates", &err);
                        }
                        Err(_) => {
                            listing.at = Some(Instant::now());
                            drop(listing);
                            this.report(
                                "cannot list the candidates",
                                &BackendError::new("the API server did not answer in time"),
                            );
                        }
                    }
                });
            }
            // A listing from long ago (an earlier term of ours) is not
            // who stands now.
            if listing.at.is_some_and(|at| at.elapsed() < lease) {
                listing.others.clone()
            } else {
                Vec::new()
            }
        };
        standing_of(me, &others)
    }

    /// Lists the candidates (us, the leader, excluded) and removes presence
    /// Leases dead for long.
    async fn list_as_leader(
        &self,
        me: &str,
        lease: Duration,
    ) -> Result<Vec<Presence>, BackendError> {
        let listed = self.list().await?;
        let dead_after = lease * GARBAGE_AFTER;
        let own_name = self.name_of(me);
        let garbage: Vec<(String, Option<String>, Option<String>)> = listed
            .iter()
            .filter(|l| l.age > dead_after && l.name != own_name)
            .take(GARBAGE_PER_PASS)
            .map(|l| (l.name.clone(), l.uid.clone(), l.resource_version.clone()))
            .collect();
        for (name, uid, version) in garbage {
            // Only the object and version listed: a candidate that came
            // back meanwhile keeps its refreshed Lease (a 409).
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: version,
                    uid,
                }),
                ..DeleteParams::default()
            };
            match self.leases.delete(&name, &params).await {
                Ok(_) => {
                    tracing::info!(lease = %name, "removed the presence lease of a candidate gone for long")
                }
                Err(err) if matches!(crate::kubernetes::status_code(&err), Some(404 | 409)) => {}
                Err(err) => self.report(
                    "cannot remove a dead candidate's presence lease",
                    &self.error("delete", &err),
                ),
            }
        }
        Ok(present(listed, lease, None)
            .into_iter()
            .map(|c| c.presence)
            .filter(|p| p.identity != me)
            .collect())
    }

    /// At a vacancy: the present, healthy candidate a vacancy is kept for,
    /// if one outranks `me` (a higher priority; any healthy one if `me` is
    /// unhealthy). A listing that fails keeps nothing back: a preference
    /// must never leave the election leaderless.
    pub async fn outranking(&self, me: &Presence, lease: Duration) -> Option<String> {
        let listed = match self.list().await {
            Ok(listed) => listed,
            Err(err) => {
                self.report("cannot list the candidates for a vacancy", &err);
                return None;
            }
        };
        let candidates = present(listed, lease, None);
        let top = crate::backend::best_other(&me.identity, candidates.iter().map(|c| &c.presence))?;
        (!me.healthy || top.priority > me.priority).then(|| top.identity.clone())
    }
}

/// How long ago a presence Lease was refreshed: by its `renewTime` (the
/// writer's clock) against ours, zero if it is a little ahead (skew within
/// its `lease`); a `renewTime` further ahead is not believed, and counts
/// only from when we last saw the Lease change (`changed_ago`).
/// The token a presence Lease announces, if it could be a token: one
/// above the int32 `leaseTransitions` was not written by a candidate and
/// would stop every election, so it is ignored (and said).
fn announced_token(name: &str, lease: &Lease) -> u64 {
    let Some(text) = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HIGHEST_TOKEN))
    else {
        return 0;
    };
    match text.parse::<u64>() {
        Ok(token) if token <= i32::MAX as u64 => token,
        Ok(_) | Err(_) => {
            tracing::warn!(
                presence = name,
                annotation = HIGHEST_TOKEN,
                value = %text,
                "a presence Lease announces a token that is not an int32 leaseTransitions (at most 2147483647); ignored"
            );
            0
        }
    }
}

fn age_of(
    renewed: Option<SystemTime>,
    now: SystemTime,
    lease: Duration,
    changed_ago: Option<Duration>,
) -> Duration {
    match renewed.map(|at| now.duration_since(at)) {
        None => Duration::MAX,
        Some(Ok(age)) => age,
        Some(Err(ahead)) if ahead.duration() <= lease => Duration::ZERO,
        Some(Err(_)) => changed_ago.unwrap_or(Duration::MAX),
    }
}

/// A presence Lease's own `leaseDurationSeconds` (at least a second).
fn lease_of(lease: &Lease) -> Duration {
    let seconds = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(1);
    Duration::from_secs(seconds.max(1))
}

/// How often a candidate refreshes its presence and the leader lists the
/// candidates: three times per lease, so that a presence stays fresh
/// however the calls fall.
fn cadence(lease: Duration) -> Duration {
    lease / 3
}

/// The present candidates among `listed`, by identity.
fn present(listed: Vec<Listed>, lease: Duration, holder: Option<&SeenHolder>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = listed
        .into_iter()
        .filter_map(|l| {
            let presence = l.presence?;
            let leading = holder
                .filter(|h| h.identity == presence.identity && h.renewed_ago < lease)
                .map(|h| h.renewed_ago);
            let last_seen = match leading {
                Some(ago) => ago.min(l.age),
                None if l.age < lease => l.age,
                None => return None,
            };
            Some(Candidate {
                presence,
                last_seen,
            })
        })
        .collect();
    out.sort_by(|a, b| a.presence.identity.cmp(&b.presence.identity));
    out.dedup_by(|a, b| a.presence.identity == b.presence.identity);
    out
}

/// The best healthy candidate (us included) and how many are healthy.
fn standing_of(me: &Presence, others: &[Presence]) -> Standing {
    let everyone: Vec<&Presence> = others
        .iter()
        .filter(|p| p.identity != me.identity)
        .chain(std::iter::once(me))
        .collect();
    let healthy = everyone.iter().filter(|p| p.healthy).count() as u64;
    let preferred = crate::backend::best_other("", everyone.iter().copied())
        .map(|p| (p.identity.clone(), p.priority));
    Standing { preferred, healthy }
}

/// `<election>-<12 hex digits of FNV-1a of identity>`, within the 253
/// characters of an object name.
pub fn presence_lease_name(election: &str, identity: &str) -> String {
    let mut prefix = election.to_string();
    prefix.truncate(253 - 13);
    let prefix = prefix.trim_end_matches(['-', '.']);
    format!("{prefix}-{}", short_hash(identity))
}

/// The label value naming `election`: its name, or, past the 63 characters
/// a label value may have, a prefix and a hash of the whole name.
pub fn label_value(election: &str) -> String {
    if election.len() <= 63 {
        return election.to_string();
    }
    let mut prefix = election[..50].to_string();
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("{prefix}-{}", short_hash(election))
}

/// 48 bits of FNV-1a 64 as hex: stable across builds and versions (unlike
/// std's hasher), which the names of presence Leases must be.
fn short_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012x}", hash >> 16)
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

    fn listed(identity: &str, age_ms: u64) -> Listed {
        Listed {
            name: presence_lease_name("e", identity),
            uid: Some("u".into()),
            resource_version: Some("1".into()),
            presence: Some(presence(identity, 0, true)),
            age: Duration::from_millis(age_ms),
            highest_token: 0,
        }
    }

    #[test]
    fn an_announced_token_is_an_int32_or_ignored() {
        let announcing = |value: &str| Lease {
            metadata: ObjectMeta {
                annotations: Some([(HIGHEST_TOKEN.to_string(), value.to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        assert_eq!(announced_token("p", &announcing("2147483647")), 2147483647);
        assert_eq!(announced_token("p", &announcing("2147483648")), 0);
        assert_eq!(announced_token("p", &announcing("x")), 0);
        assert_eq!(announced_token("p", &Lease::default()), 0);
    }

    #[test]
    fn names_are_stable_valid_and_bounded() {
        assert_eq!(presence_lease_name("demo", "a"), "demo-af63dc4c8601");
        assert_ne!(
            presence_lease_name("demo", "a"),
            presence_lease_name("demo", "b")
        );
        let long = "x".repeat(253);
        assert_eq!(presence_lease_name(&long, "a").len(), 253);
        assert_eq!(label_value("demo"), "demo");
        let label = label_value(&"y".repeat(100));
        assert!(label.len() <= 63, "{label}");
        assert_ne!(label, label_value(&format!("{}z", "y".repeat(99))));
    }

    #[test]
    fn present_means_fresh_or_leading() {
        let lease = Duration::from_secs(2);
        let all = vec![listed("a", 100), listed("b", 2500), listed("c", 60_000)];
        let holder = SeenHolder {
            identity: "c".into(),
            renewed_ago: Duration::from_millis(300),
        };
        let found = present(all, lease, Some(&holder));
        let names: Vec<(&str, u128)> = found
            .iter()
            .map(|c| (c.presence.identity.as_str(), c.last_seen.as_millis()))
            .collect();
        assert_eq!(names, vec![("a", 100), ("c", 300)]);
    }

    #[test]
    fn a_renew_time_far_ahead_counts_only_from_a_change_we_saw() {
        let now = SystemTime::now();
        let lease = Duration::from_secs(1);
        let ms = Duration::from_millis;
        assert_eq!(age_of(Some(now - ms(300)), now, lease, None), ms(300));
        assert_eq!(age_of(Some(now + ms(300)), now, lease, None), ms(0));
        let in_an_hour = Some(now + Duration::from_secs(3600));
        assert_eq!(age_of(in_an_hour, now, lease, None), Duration::MAX);
        assert_eq!(age_of(in_an_hour, now, lease, Some(ms(200))), ms(200));
        assert_eq!(age_of(None, now, lease, Some(ms(1))), Duration::MAX);
    }

    #[test]
    fn standing_counts_us_with_our_current_presence() {
        let me = presence("a", 1, true);
        let others = vec![
            presence("a", 99, false),
            presence("b", 5, true),
            presence("c", 9, false),
        ];
        let standing = standing_of(&me, &others);
        assert_eq!(standing.preferred, Some(("b".into(), 5)));
        assert_eq!(standing.healthy, 2);
        let sick = presence("a", 1, false);
        assert_eq!(standing_of(&sick, &[]).healthy, 0);
    }
}
