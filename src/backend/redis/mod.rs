//! The Redis backend: one lease key with a TTL, written only by Lua
//! scripts, so that acquire, renew and release are each one atomic step on
//! a server (never check-then-act).
//!
//! - acquire: `SET NX PX` of a JSON lock value plus `INCR` of a fencing
//!   counter, in one script;
//! - renew: compare the whole lock value, then `PEXPIRE`;
//! - release: compare the whole lock value, then `DEL` and `PUBLISH`.
//!
//! The lock value contains a random per-term id, so comparing it whole means
//! "this very term", not merely "this identity".
//!
//! With three or more independent servers (quorum mode, Redlock done right)
//! every operation runs on all of them in parallel, each with a short
//! timeout, and counts only when a majority agrees; an acquire is sealed
//! with one fencing token on the granting majority (see `seal.lua`).

mod connection;
mod keys;
mod node;
mod notices;
pub mod preflight;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::{
    Acquire, Backend, BackendError, Candidate, Handoff, Holder, Notices, Observed, Presence, Renew,
    Standing, Switchover, SwitchoverAnswer, SwitchoverRequest, Term, lock,
};
use crate::config::RedisSettings;
pub use connection::{Connection, Security};
pub use keys::{Keys, LockValue};
use node::{
    AcquireArgs, Granted, Looked, Node, ReleaseArgs, Released, RenewArgs, Renewal, Scripts,
    SwitchoverReply,
};
use notices::NoticeListener;

pub struct RedisBackend {
    nodes: Vec<Node>,
    keys: Keys,
    /// The longest one server may take to answer in quorum mode; a slow or
    /// partitioned server must not eat the time the others leave us.
    node_timeout: Duration,
    /// `WAIT` for this many replicas after acquire and renew.
    min_replica_acks: u32,
    /// Sentinel: the master may change under us.
    follows_failover: bool,
    /// Sentinel: (term id, master address) where our term was granted. A
    /// failover can lose the key (asynchronous replication), so a term
    /// granted by another master is a term we may have lost.
    term_master: std::sync::Mutex<Option<(String, String)>>,
    /// The highest fencing token this candidate has seen in the store. If
    /// Redis loses its data, the next acquire continues above it.
    highest_token_seen: AtomicU64,
    notices: watch::Receiver<Notices>,
    _notices: Vec<NoticeListener>,
}

impl RedisBackend {
    /// Prepares the backend; connecting happens lazily, on the first call,
    /// so that a Redis that is down at start only delays the election.
    pub fn new(
        settings: &RedisSettings,
        election: &str,
        lease_duration: Duration,
    ) -> Result<RedisBackend, BackendError> {
        let keys = Keys::new(&settings.config.key_prefix, election);
        let scripts = Arc::new(Scripts::new());
        let nodes: Vec<Node> = connections(settings)?
            .into_iter()
            .map(|connection| Node::new(connection, keys.clone(), scripts.clone()))
            .collect();
        let (ticks, notices) = watch::channel(Notices::default());
        let ticks = Arc::new(ticks);
        let listeners = nodes
            .iter()
            .map(|node| {
                NoticeListener::spawn(
                    node.connection().clone(),
                    keys.channel.clone(),
                    ticks.clone(),
                )
            })
            .collect();
        Ok(RedisBackend {
            nodes,
            keys,
            node_timeout: (lease_duration / 20)
                .clamp(Duration::from_millis(50), Duration::from_secs(1)),
            min_replica_acks: settings.config.min_replica_acks(),
            follows_failover: settings.config.sentinel.is_some(),
            term_master: std::sync::Mutex::new(None),
            highest_token_seen: AtomicU64::new(0),
            notices,
            _notices: listeners,
        })
    }

    fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    fn quorum_mode(&self) -> bool {
        self.nodes.len() > 1
    }

    /// A server's deadline: the call's, or sooner in quorum mode.
    fn node_deadline(&self, deadline: Instant) -> Instant {
        if self.quorum_mode() {
            deadline.min(Instant::now() + self.node_timeout)
        } else {
            deadline
        }
    }

    fn saw_token(&self, token: u64) {
        self.highest_token_seen.fetch_max(token, Ordering::Relaxed);
    }

    /// Undoes grants that did not add up to a majority (or a term), on
    /// every server that gave one, without announcing anything (they were
    /// never a term). `sealed`: the sealed value, which a server holds
    /// instead of its grant if the seal reached it.
    async fn undo(&self, grants: &[(usize, String, u64)], sealed: Option<&str>, deadline: Instant) {
        join_all(grants.iter().map(|(i, value, token)| {
            let args = ReleaseArgs {
                claim: value,
                also: sealed,
                token: *token,
                notice: "",
                handoff: None,
                lease: Duration::ZERO,
            };
            async move { self.nodes[*i].release(&args, deadline).await }
        }))
        .await;
    }
}

/// Summarises failures of individual servers for an error message.
fn summary(errors: &[BackendError]) -> String {
    errors
        .iter()
        .map(|err| err.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// One error for the failures of individual servers (`otherwise` when there
/// were none); full if any server said it is full.
fn failure(errors: &[BackendError], otherwise: String) -> BackendError {
    let message = if errors.is_empty() {
        otherwise
    } else {
        summary(errors)
    };
    if errors.iter().any(|err| err.store_full) {
        BackendError::store_full(message)
    } else {
        BackendError::new(message)
    }
}

impl Backend for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn acquire(
        &self,
        me: &Presence,
        lease: Duration,
        live_holder: Option<&Holder>,
        holdback: Duration,
        deadline: Instant,
    ) -> Result<Acquire, BackendError> {
        let identity = me.identity.as_str();
        let presence = serde_json::to_string(me).unwrap_or_default();
        // Keep a quarter of the time for undoing grants that do not make a
        // term: the caller cancels us at `deadline`, and an orphaned grant
        // would block every candidate for a whole lease.
        let now = Instant::now();
        let work_deadline = now + deadline.saturating_duration_since(now) * 3 / 4;
        if self.follows_failover {
            // A follower still connected to a demoted master must not take
            // the lease there: ask the Sentinels first.
            self.nodes[0].connection().refresh(work_deadline).await?;
        }
        let term_id = random_term_id();
        let acquired_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let args = AcquireArgs {
            identity,
            term_id: &term_id,
            lease,
            floor: self
                .highest_token_seen
                .load(Ordering::Relaxed)
                .saturating_add(1),
            acquired_at: &acquired_at,
            guard: live_holder.and_then(|h| h.fencing_token).unwrap_or(0),
            // With replicas to wait for, the term is announced only once
            // they have it.
            announce: !self.quorum_mode() && self.min_replica_acks == 0,
            presence: &presence,
            priority: me.priority,
            holdback,
        };
        let node_deadline = self.node_deadline(work_deadline);
        let answers = join_all(
            self.nodes
                .iter()
                .map(|node| node.acquire(&args, node_deadline)),
        )
        .await;

        let mut grants = Vec::new();
        let mut held = Vec::new();
        let mut foreign = Vec::new();
        let mut vanished = 0;
        let mut quarantined = Vec::new();
        let mut reserved = Vec::new();
        let mut deferred = Vec::new();
        let mut errors = Vec::new();
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(Granted::Yes { token, value }) => {
                    self.saw_token(token);
                    grants.push((i, value, token));
                }
                Ok(Granted::Held { lock, remaining }) => {
                    self.saw_token(lock.token);
                    held.push((lock, remaining));
                }
                Ok(Granted::Foreign(description)) => foreign.push(description),
                Ok(Granted::Vanished) => vanished += 1,
                Ok(Granted::Quarantined(remaining)) => quarantined.push(remaining),
                Ok(Granted::Reserved { to, remaining }) => reserved.push((to, remaining)),
                Ok(Granted::Deferred { to, remaining }) => deferred.push((to, remaining)),
                Err(err) => errors.push(err),
            }
        }

        if grants.len() >= self.majority() {
            if !self.quorum_mode() {
                let node = &self.nodes[0];
                let (_, value, token) = grants[0].clone();
                if let Err(err) = node.replicated(self.min_replica_acks, work_deadline).await {
                    self.undo(&grants, None, deadline).await;
                    return Err(err);
                }
                if self.min_replica_acks > 0 {
                    node.announce(token, work_deadline).await;
                }
                if self.follows_failover {
                    let master = node.connection().address(work_deadline).await?;
                    *lock(&self.term_master) = Some((term_id.clone(), master));
                }
                return Ok(Acquire::Acquired(Term {
                    id: term_id,
                    fencing_token: token,
                    claim: value,
                }));
            }
            let (term, sealed) = self
                .seal(identity, &term_id, &acquired_at, &grants, work_deadline)
                .await;
            if let Some(term) = term {
                return Ok(Acquire::Acquired(term));
            }
            // Some servers may hold the sealed value, others the grant.
            self.undo(&grants, sealed.as_deref(), deadline).await;
            return Err(BackendError::new(format!(
                "granted by {} of {} servers, but could not seal the term on a majority",
                grants.len(),
                self.nodes.len()
            )));
        }
        // Not a majority: what we got is not a term; give it back at once.
        let free = grants.len();
        if !grants.is_empty() {
            self.undo(&grants, None, deadline).await;
        }

        if vanished > 0 && vanished + free >= self.majority() {
            return Ok(Acquire::Vanished);
        }
        if !quarantined.is_empty() && quarantined.len() + vanished + free >= self.majority() {
            // Enough servers would grant once their quarantine is over.
            quarantined.sort();
            let needed = self.majority().saturating_sub(vanished + free).max(1);
            let remaining = quarantined
                .get(needed - 1)
                .or(quarantined.last())
                .copied()
                .unwrap_or_default();
            return Ok(Acquire::Quarantined { remaining });
        }
        // Kept free for another candidate, on enough servers to matter.
        if reserved.len() + vanished + free >= self.majority()
            && let Some((to, remaining)) = reserved.iter().min_by_key(|(_, left)| *left).cloned()
        {
            return Ok(Acquire::Reserved { to, remaining });
        }
        if deferred.len() + reserved.len() + vanished + free >= self.majority()
            && let Some((to, remaining)) = deferred.iter().min_by_key(|(_, left)| *left).cloned()
        {
            return Ok(Acquire::Deferred { to, remaining });
        }
        if let Some((holder, remaining)) = self.majority_holder(&held, free + vanished) {
            return Ok(Acquire::HeldBy { holder, remaining });
        }
        if let Some(description) = foreign.into_iter().next() {
            return Ok(Acquire::Foreign { description });
        }
        if !held.is_empty() && errors.is_empty() {
            // Every server answered, some hold grants, none a majority: a
            // split vote whose partial grants are being undone. Nobody
            // leads; try again after a random pause to break the tie.
            let pause = rand::rng().random_range(self.node_timeout..self.node_timeout * 3);
            return Ok(Acquire::Contested { retry_in: pause });
        }
        Err(failure(
            &errors,
            format!(
                "only {} of {} servers granted the lease",
                free,
                self.nodes.len()
            ),
        ))
    }

    async fn renew(
        &self,
        term: &Term,
        me: &Presence,
        lease: Duration,
        deadline: Instant,
    ) -> Result<Renew, BackendError> {
        if self.follows_failover && self.master_changed(term, deadline).await? {
            return Ok(Renew::Lost { holder: None });
        }
        let node_deadline = self.node_deadline(deadline);
        let presence = serde_json::to_string(me).unwrap_or_default();
        let args = RenewArgs {
            claim: &term.claim,
            token: term.fencing_token,
            lease,
            restore: self.quorum_mode(),
            identity: &me.identity,
            presence: &presence,
            priority: me.priority,
        };
        let answers = join_all(
            self.nodes
                .iter()
                .map(|node| node.renew(&args, node_deadline)),
        )
        .await;
        let mut renewed = 0;
        let mut switchover = None;
        let mut standing = Standing::default();
        let mut lost = Vec::new();
        let mut errors = Vec::new();
        for answer in answers {
            match answer {
                Ok(Renewal::Renewed {
                    switchover: pending,
                    standing: seen,
                }) => {
                    renewed += 1;
                    // The best view: the most healthy candidates seen.
                    if seen.healthy >= standing.healthy {
                        standing = seen;
                    }
                    if let Some(json) = pending {
                        match serde_json::from_str::<Switchover>(&json) {
                            Ok(record) => switchover = Some(record),
                            Err(err) => {
                                tracing::warn!(%err, "a switchover record leaderd cannot read; ignored")
                            }
                        }
                    }
                }
                Ok(Renewal::NotOurs(holder)) => {
                    if let Some(lock) = &holder {
                        self.saw_token(lock.token);
                    }
                    lost.push(holder);
                }
                Ok(Renewal::Foreign(description)) => {
                    tracing::error!(%description, "a renewal would have touched a key leaderd did not write");
                    errors.push(BackendError::new(description));
                }
                Ok(Renewal::Late) => errors.push(BackendError::new(
                    "the renewal reached the server after its deadline; not applied",
                )),
                Err(err) => errors.push(err),
            }
        }
        if renewed >= self.majority() {
            if !self.quorum_mode() {
                self.nodes[0]
                    .replicated(self.min_replica_acks, deadline)
                    .await?;
            }
            return Ok(Renew::Renewed {
                switchover,
                standing,
            });
        }
        // A majority can no longer be reached: the lease is gone.
        if lost.len() > self.nodes.len() - self.majority() {
            let holder = lost
                .into_iter()
                .flatten()
                .max_by_key(|lock| lock.token)
                .map(|lock| lock.holder());
            return Ok(Renew::Lost { holder });
        }
        if self.quorum_mode() {
            let mut err = failure(&errors, String::new());
            err.message = format!(
                "renewed on {renewed} of {} servers (need {}): {}",
                self.nodes.len(),
                self.majority(),
                err.message
            );
            return Err(err);
        }
        Err(failure(&errors, "no answer".to_string()))
    }

    async fn release(
        &self,
        term: &Term,
        handoff: Option<&Handoff>,
        lease: Duration,
        deadline: Instant,
    ) -> Result<bool, BackendError> {
        let notice = format!("released {}", term.fencing_token);
        let node_deadline = self.node_deadline(deadline);
        let handoff = handoff.map(|h| serde_json::to_string(h).unwrap_or_default());
        let args = ReleaseArgs {
            claim: &term.claim,
            also: None,
            token: term.fencing_token,
            notice: &notice,
            handoff: handoff.as_deref(),
            lease,
        };
        let answers = join_all(
            self.nodes
                .iter()
                .map(|node| node.release(&args, node_deadline)),
        )
        .await;
        for answer in &answers {
            if let Ok(Released::YesForeignMarker(description)) = answer {
                tracing::warn!(%description, "released the lease; a key leaderd did not write was left alone");
            }
        }
        let released = answers
            .iter()
            .filter(|a| matches!(a, Ok(Released::Yes | Released::YesForeignMarker(_))))
            .count();
        if released > 0 {
            return Ok(true);
        }
        let errors: Vec<BackendError> = answers.into_iter().filter_map(Result::err).collect();
        if errors.is_empty() {
            Ok(false)
        } else {
            Err(BackendError::new(summary(&errors)))
        }
    }

    async fn observe(
        &self,
        me: Option<&Presence>,
        lease: Duration,
        deadline: Instant,
    ) -> Result<Observed, BackendError> {
        let presence = me.map(|me| serde_json::to_string(me).unwrap_or_default());
        let identity = me.map_or("", |me| me.identity.as_str());
        let priority = me.map_or(0, |me| me.priority);
        let node_deadline = self.node_deadline(deadline);
        let answers = join_all(self.nodes.iter().map(|node| {
            node.observe(
                identity,
                presence.as_deref(),
                priority,
                lease,
                node_deadline,
            )
        }))
        .await;
        let mut held = Vec::new();
        let mut free = 0;
        let mut reserved = Vec::new();
        let mut foreign = Vec::new();
        let mut errors = Vec::new();
        for answer in answers {
            match answer {
                Ok(Looked::Held { lock, remaining }) => {
                    self.saw_token(lock.token);
                    held.push((lock, remaining));
                }
                Ok(Looked::Free) => free += 1,
                Ok(Looked::Reserved { to, remaining }) => reserved.push((to, remaining)),
                Ok(Looked::Foreign(description)) => foreign.push(description),
                Err(err) => errors.push(err),
            }
        }
        if let Some((holder, remaining)) = self.majority_holder(&held, free + reserved.len()) {
            return Ok(Observed::HeldBy { holder, remaining });
        }
        if reserved.len() + free >= self.majority()
            && let Some((to, remaining)) = reserved.into_iter().min_by_key(|(_, left)| *left)
        {
            return Ok(Observed::Reserved { to, remaining });
        }
        if let Some(description) = foreign.into_iter().next() {
            return Ok(Observed::Foreign { description });
        }
        if errors.len() < self.majority() {
            return Ok(Observed::Free);
        }
        Err(failure(&errors, "no answer".to_string()))
    }

    async fn candidates(
        &self,
        lease: Duration,
        deadline: Instant,
    ) -> Result<Vec<Candidate>, BackendError> {
        let node_deadline = self.node_deadline(deadline);
        let answers = join_all(
            self.nodes
                .iter()
                .map(|node| node.members(lease, node_deadline)),
        )
        .await;
        // Presence is written to every server a candidate reaches: merge.
        let mut merged: HashMap<String, Candidate> = HashMap::new();
        let mut errors = Vec::new();
        let mut answered = 0;
        for answer in answers {
            match answer {
                Ok(listed) => {
                    answered += 1;
                    for (identity, json, last_seen) in listed {
                        let Ok(presence) = serde_json::from_str::<Presence>(&json) else {
                            continue;
                        };
                        let fresher = merged
                            .get(&identity)
                            .is_none_or(|known| last_seen < known.last_seen);
                        if fresher {
                            merged.insert(
                                identity,
                                Candidate {
                                    presence,
                                    last_seen,
                                },
                            );
                        }
                    }
                }
                Err(err) => errors.push(err),
            }
        }
        if answered == 0 {
            return Err(failure(&errors, "no answer".to_string()));
        }
        let mut candidates: Vec<Candidate> = merged.into_values().collect();
        candidates.sort_by(|a, b| a.presence.identity.cmp(&b.presence.identity));
        Ok(candidates)
    }

    async fn leave(&self, identity: &str, deadline: Instant) -> Result<(), BackendError> {
        let node_deadline = self.node_deadline(deadline);
        let answers = join_all(
            self.nodes
                .iter()
                .map(|node| node.leave(identity, node_deadline)),
        )
        .await;
        if answers.iter().any(Result::is_ok) {
            return Ok(());
        }
        let errors: Vec<BackendError> = answers.into_iter().filter_map(Result::err).collect();
        Err(failure(&errors, "no answer".to_string()))
    }

    async fn switchover(
        &self,
        request: SwitchoverRequest,
        deadline: Instant,
    ) -> Result<SwitchoverAnswer, BackendError> {
        let (op, record) = match &request {
            SwitchoverRequest::Record(record) => {
                ("request", serde_json::to_string(record).unwrap_or_default())
            }
            SwitchoverRequest::Cancel(id) => ("cancel", id.clone().unwrap_or_default()),
            SwitchoverRequest::Get => ("get", String::new()),
        };
        let node_deadline = self.node_deadline(deadline);
        let answers = join_all(
            self.nodes
                .iter()
                .map(|node| node.switchover(op, &record, node_deadline)),
        )
        .await;
        let mut done = 0;
        let mut pending = None;
        let mut errors = Vec::new();
        for answer in answers {
            match answer {
                Ok(SwitchoverReply::Done) => done += 1,
                Ok(SwitchoverReply::Pending(json)) => {
                    if let Ok(record) = serde_json::from_str::<Switchover>(&json) {
                        pending = Some(record);
                    }
                }
                Ok(SwitchoverReply::None) => {}
                Err(err) => errors.push(err),
            }
        }
        if errors.len() >= self.majority() {
            return Err(failure(&errors, "no answer".to_string()));
        }
        Ok(match request {
            // Recorded where a majority (the leader's) will see it.
            SwitchoverRequest::Record(_) if done >= self.majority() => SwitchoverAnswer::Done,
            SwitchoverRequest::Cancel(_) if done > 0 => SwitchoverAnswer::Done,
            _ => match pending {
                Some(record) => SwitchoverAnswer::Pending(record),
                None if done > 0 => SwitchoverAnswer::Done,
                None => SwitchoverAnswer::None,
            },
        })
    }

    fn notices(&self) -> watch::Receiver<Notices> {
        self.notices.clone()
    }
}

impl RedisBackend {
    /// Sentinel: whether the master is no longer the one that granted
    /// `term`. Asks the Sentinels on every renewal, so that a failover is
    /// noticed even while the old master still accepts writes.
    async fn master_changed(&self, term: &Term, deadline: Instant) -> Result<bool, BackendError> {
        let master = self.nodes[0].connection().refresh(deadline).await?;
        let granted_by = lock(&self.term_master).clone();
        match granted_by {
            Some((id, granted)) if id == term.id && granted != master => {
                tracing::warn!(%granted, %master, "the Redis master changed (Sentinel failover); the lease may not have survived it");
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Quorum mode: the term's token is the highest any granting server
    /// minted; write it back to them (and to the lock values) before the
    /// term counts. `None` when fewer than a majority could be sealed.
    async fn seal(
        &self,
        identity: &str,
        term_id: &str,
        acquired_at: &str,
        grants: &[(usize, String, u64)],
        deadline: Instant,
    ) -> (Option<Term>, Option<String>) {
        let Some(token) = grants.iter().map(|(_, _, token)| *token).max() else {
            return (None, None);
        };
        let sealed = LockValue {
            holder: identity.to_string(),
            token,
            term: term_id.to_string(),
            acquired_at: acquired_at.to_string(),
        }
        .to_json();
        let node_deadline = self.node_deadline(deadline);
        let answers = join_all(
            grants
                .iter()
                .map(|(i, value, _)| self.nodes[*i].seal(value, &sealed, token, node_deadline)),
        )
        .await;
        let sealed_on = answers.iter().filter(|a| matches!(a, Ok(true))).count();
        if sealed_on >= self.majority() {
            let term = Term {
                id: term_id.to_string(),
                fencing_token: token,
                claim: sealed.clone(),
            };
            (Some(term), Some(sealed))
        } else {
            (None, Some(sealed))
        }
    }

    /// The holder of a term that a majority of servers grant, and when
    /// enough of its keys will have expired for a majority to be free
    /// (`free` already are; other grants are undone by their owners).
    /// `None` when no term holds a majority: a key on a minority of servers
    /// is not a leader.
    fn majority_holder(
        &self,
        held: &[(LockValue, Duration)],
        free: usize,
    ) -> Option<(Holder, Duration)> {
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for (lock, _) in held {
            *votes.entry(lock.term.as_str()).or_default() += 1;
        }
        let (term, count) = votes.into_iter().max_by_key(|(_, count)| *count)?;
        if count < self.majority() {
            return None;
        }
        let holder = held.iter().find(|(lock, _)| lock.term == term)?.0.holder();
        let mut remaining: Vec<Duration> = held
            .iter()
            .filter(|(lock, _)| lock.term == term)
            .map(|(_, left)| *left)
            .collect();
        remaining.sort();
        let others = held.len() - count;
        let needed = self.majority().saturating_sub(free + others).max(1);
        let wait = remaining
            .get(needed - 1)
            .or(remaining.last())
            .copied()
            .unwrap_or_default();
        Some((holder, wait))
    }
}

/// One connection per logical server: the quorum's masters, a Sentinel
/// master, a cluster, or the single server.
pub fn connections(settings: &RedisSettings) -> Result<Vec<Connection>, BackendError> {
    let config = &settings.config;
    let security = Security {
        username: Some(config.username.clone()).filter(|u| !u.is_empty()),
        password: settings.password.as_ref().map(|secret| secret.0.clone()),
        ca_pem: settings.tls_ca_pem.clone(),
    };
    if let Some(sentinel) = &config.sentinel {
        let sentinel_security = Security {
            username: None,
            password: settings
                .sentinel_password
                .as_ref()
                .map(|secret| secret.0.clone()),
            ca_pem: settings.tls_ca_pem.clone(),
        };
        return Ok(vec![Connection::sentinel(
            &sentinel.urls,
            &sentinel.master_name,
            sentinel.master_tls,
            &sentinel_security,
            &security,
        )?]);
    }
    if config.cluster {
        return Ok(vec![Connection::cluster(&config.urls, &security)?]);
    }
    config
        .urls
        .iter()
        .map(|url| Connection::direct(url, &security))
        .collect()
}

/// 128 random bits as hex: unique per term with overwhelming probability.
fn random_term_id() -> String {
    let bits: u128 = rand::rng().random();
    format!("{bits:032x}")
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self
            .nodes
            .iter()
            .map(|node| node.connection().shown_url())
            .collect();
        f.debug_struct("RedisBackend")
            .field("urls", &urls)
            .field("keys", &self.keys)
            .finish()
    }
}
