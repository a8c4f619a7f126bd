//! One Redis server of the backend: runs the Lua scripts on it and turns
//! its replies into typed answers. Combining several servers (quorum mode)
//! is the job of the backend, not of this type.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Script, Value};
use tokio::time::Instant;

use super::connection::Connection;
use super::keys::{Keys, LockValue};
use crate::backend::{BackendError, Standing, lock};

/// The scripts, loaded once and shared by every node (EVALSHA, with a
/// reload on NOSCRIPT after a server restart).
pub struct Scripts {
    acquire: Script,
    renew: Script,
    release: Script,
    seal: Script,
    observe: Script,
    members: Script,
    switchover: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            acquire: Script::new(include_str!("acquire.lua")),
            renew: Script::new(include_str!("renew.lua")),
            release: Script::new(include_str!("release.lua")),
            seal: Script::new(include_str!("seal.lua")),
            observe: Script::new(include_str!("observe.lua")),
            members: Script::new(include_str!("members.lua")),
            switchover: Script::new(include_str!("switchover.lua")),
        }
    }

    /// Every script, for loading them when a connection opens.
    pub fn all(&self) -> Vec<Script> {
        vec![
            self.acquire.clone(),
            self.renew.clone(),
            self.release.clone(),
            self.seal.clone(),
            self.observe.clone(),
            self.members.clone(),
            self.switchover.clone(),
        ]
    }
}

/// What one server answered to an acquire.
#[derive(Debug, Clone)]
pub enum Granted {
    /// This server granted the lease with its own `token`; `value` is what
    /// it stored.
    Yes { token: u64, value: String },
    /// Held (by someone, possibly a partial grant) for `remaining`.
    Held {
        lock: LockValue,
        remaining: Duration,
    },
    /// Something leaderd did not write.
    Foreign(String),
    /// The lease the caller saw vanished here without a release.
    Vanished,
    /// The server had no fencing counter (new, or it lost its data): it
    /// grants nothing for this long.
    Quarantined(Duration),
    /// Free, but reserved for `to` by a switchover, for `remaining`.
    Reserved { to: String, remaining: Duration },
    /// Free, but kept for `to`, present, healthy and preferred, for
    /// `remaining`.
    Deferred { to: String, remaining: Duration },
}

/// The arguments of one acquire attempt, the same for every server.
pub struct AcquireArgs<'a> {
    pub identity: &'a str,
    pub term_id: &'a str,
    pub lease: Duration,
    pub floor: u64,
    pub acquired_at: &'a str,
    pub guard: u64,
    /// Announce the term from the acquire script (single-server mode).
    pub announce: bool,
    /// The caller's presence record (JSON).
    pub presence: &'a str,
    pub priority: i64,
    /// How long a vacancy is kept for a preferred candidate.
    pub holdback: Duration,
}

/// What one server answered to a renew.
#[derive(Debug, Clone)]
pub enum Renewal {
    /// Renewed; the pending switchover request, if any (JSON), and who
    /// else stands.
    Renewed {
        switchover: Option<String>,
        standing: Standing,
    },
    /// Not ours any more; what the key holds instead, if it is ours to read.
    NotOurs(Option<LockValue>),
    /// Restoring the key would touch something leaderd did not write.
    Foreign(String),
    /// The renewal reached the server after the call's deadline: a term
    /// that may be over by now is not extended.
    Late,
}

/// The arguments of one renewal.
pub struct RenewArgs<'a> {
    pub claim: &'a str,
    pub token: u64,
    pub lease: Duration,
    /// Restore the key if it is missing (quorum mode).
    pub restore: bool,
    pub identity: &'a str,
    pub presence: &'a str,
    pub priority: i64,
}

/// What one server answered to a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    Yes,
    NotOurs,
    /// Released, but the released-token key holds something leaderd did
    /// not write (left alone).
    YesForeignMarker(String),
}

/// The arguments of one release.
pub struct ReleaseArgs<'a> {
    pub claim: &'a str,
    /// Another value that is also ours (the sealed form of a grant).
    pub also: Option<&'a str>,
    pub token: u64,
    /// The notice to publish; empty: free the key silently (an undo).
    pub notice: &'a str,
    /// The switchover's handoff record (JSON).
    pub handoff: Option<&'a str>,
    pub lease: Duration,
}

/// What a look at the lease found.
#[derive(Debug, Clone)]
pub enum Looked {
    Held {
        lock: LockValue,
        remaining: Duration,
    },
    Free,
    Reserved {
        to: String,
        remaining: Duration,
    },
    Foreign(String),
}

/// One candidate as the store lists it: identity, presence JSON, and how
/// long ago it was last heard of.
pub type Listed = (String, String, Duration);

/// What one server answered about the pending switchover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchoverReply {
    /// Request: recorded. Cancel: one was pending and is gone.
    Done,
    /// Request: another is pending (JSON). Get: this one is pending.
    Pending(String),
    /// Get / cancel: none was pending.
    None,
}

pub struct Node {
    connection: Arc<Connection>,
    keys: Keys,
    scripts: Arc<Scripts>,
    /// This server's clock (`TIME`, µs) as last read by a script, and the
    /// instant its answer arrived here: enough to tell the server, on the
    /// next renewal, until when (on its clock) that renewal may still act.
    clock: Mutex<Option<(Instant, u64)>>,
}

impl Node {
    pub fn new(connection: Connection, keys: Keys, scripts: Arc<Scripts>) -> Node {
        // Connects now, in the background, loading the scripts.
        connection.prepare(scripts.all(), &keys.lock);
        Node {
            connection: Arc::new(connection),
            keys,
            scripts,
            clock: Mutex::new(None),
        }
    }

    fn saw_clock(&self, server_us: i64) {
        if let Ok(server_us) = u64::try_from(server_us) {
            *lock(&self.clock) = Some((Instant::now(), server_us));
        }
    }

    /// `deadline` on this server's clock, in µs; 0 when it is not known.
    /// Measured from the instant the server's reading *arrived* here, which
    /// is later than the reading itself: the estimate is early, never late,
    /// so the server may refuse a renewal a little early, never apply one
    /// after the caller gave up on it.
    fn server_deadline(&self, deadline: Instant) -> u64 {
        match *lock(&self.clock) {
            Some((seen_at, server_us)) => {
                let ahead = deadline.saturating_duration_since(seen_at);
                server_us.saturating_add(u64::try_from(ahead.as_micros()).unwrap_or(u64::MAX))
            }
            None => 0,
        }
    }

    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

    /// Tells waiting candidates that a term began (when the acquire script
    /// could not, because replicas had to confirm it first). Best effort.
    pub async fn announce(&self, token: u64, deadline: Instant) {
        let published: Result<i64, _> = self
            .connection
            .run(deadline, |mut conn| async move {
                redis::cmd("PUBLISH")
                    .arg(&self.keys.channel)
                    .arg(format!("acquired {token}"))
                    .query_async(&mut conn)
                    .await
            })
            .await;
        if let Err(err) = published {
            tracing::debug!(%err, "could not announce the new term");
        }
    }

    /// `WAIT`s until `replicas` replicas have our writes so far; fewer by
    /// the deadline is an error (the write could be lost in a failover).
    pub async fn replicated(&self, replicas: u32, deadline: Instant) -> Result<(), BackendError> {
        if replicas == 0 {
            return Ok(());
        }
        // Leave time to read the answer before the deadline, so a short
        // count is reported as such rather than as a timeout.
        let wait_ms = (deadline.saturating_duration_since(Instant::now()) * 3 / 4)
            .as_millis()
            .max(1);
        let wait_ms = u64::try_from(wait_ms).unwrap_or(u64::MAX);
        let acked = self
            .connection
            .wait_for_replicas(replicas, wait_ms, deadline)
            .await?;
        if acked < i64::from(replicas) {
            return Err(BackendError::new(format!(
                "{}: only {acked} of {replicas} replicas acknowledged (backend.redis.min_replica_acks)",
                self.connection.shown_url()
            )));
        }
        Ok(())
    }

    pub async fn acquire(
        &self,
        args: &AcquireArgs<'_>,
        deadline: Instant,
    ) -> Result<Granted, BackendError> {
        let json = serde_json::json!({
            "identity": args.identity,
            "term": args.term_id,
            "lease_ms": millis(args.lease),
            "floor": args.floor,
            "acquired_at": args.acquired_at,
            "channel": self.keys.channel,
            "guard": args.guard,
            "announce": args.announce,
            "presence": args.presence,
            "member_ttl_ms": millis(args.lease),
            "priority": args.priority,
            "holdback_ms": millis(args.holdback),
        })
        .to_string();
        let keys = &self.keys;
        let items = self
            .eval(
                "acquire",
                &self.scripts.acquire,
                &[
                    &keys.lock,
                    &keys.fence,
                    &keys.released,
                    &keys.quarantine,
                    &keys.members,
                    &keys.seen,
                    &keys.preferred,
                    &keys.handoff,
                    &keys.vacant,
                    &keys.term,
                ],
                json,
                deadline,
            )
            .await?;
        let unexpected = || self.unexpected("acquire", &items);
        match items.as_slice() {
            [Value::Int(1), Value::Int(token), value, Value::Int(now_us)] => {
                self.saw_clock(*now_us);
                Ok(Granted::Yes {
                    token: u64::try_from(*token).map_err(|_| unexpected())?,
                    value: text(value).ok_or_else(unexpected)?,
                })
            }
            [Value::Int(0), value, Value::Int(pttl)] => match self.held(value, *pttl)? {
                Looked::Held { lock, remaining } => Ok(Granted::Held { lock, remaining }),
                Looked::Foreign(description) => Ok(Granted::Foreign(description)),
                _ => Err(unexpected()),
            },
            [Value::Int(2), description] => {
                Ok(Granted::Foreign(text(description).ok_or_else(unexpected)?))
            }
            [Value::Int(3)] => Ok(Granted::Vanished),
            [Value::Int(4), Value::Int(wait_ms)] => Ok(Granted::Quarantined(ms(*wait_ms))),
            [Value::Int(5), error] => Err(self.full(error)),
            [Value::Int(6), to, Value::Int(wait_ms)] => Ok(Granted::Reserved {
                to: text(to).ok_or_else(unexpected)?,
                remaining: ms(*wait_ms),
            }),
            [Value::Int(7), to, Value::Int(wait_ms)] => Ok(Granted::Deferred {
                to: text(to).ok_or_else(unexpected)?,
                remaining: ms(*wait_ms),
            }),
            _ => Err(unexpected()),
        }
    }

    /// A lock key's value and PTTL as a holder, or as something foreign.
    fn held(&self, value: &Value, pttl: i64) -> Result<Looked, BackendError> {
        let value = text(value).ok_or_else(|| self.unexpected("read the lease", value))?;
        let Some(lock) = LockValue::parse(&value) else {
            return Ok(Looked::Foreign(format!(
                "{} holds a value leaderd did not write: {:?}",
                self.keys.lock,
                truncate(&value, 80)
            )));
        };
        if pttl < 0 {
            return Ok(Looked::Foreign(format!(
                "{} has no expiry; leaderd never writes it so",
                self.keys.lock
            )));
        }
        Ok(Looked::Held {
            lock,
            remaining: ms(pttl),
        })
    }

    /// Looks at the lease without competing; refreshes `presence` (a
    /// candidate standing aside) if given.
    pub async fn observe(
        &self,
        identity: &str,
        presence: Option<&str>,
        priority: i64,
        lease: Duration,
        deadline: Instant,
    ) -> Result<Looked, BackendError> {
        let json = serde_json::json!({
            "identity": identity,
            "presence": presence,
            "priority": priority,
            "member_ttl_ms": millis(lease),
        })
        .to_string();
        let keys = &self.keys;
        let items = self
            .eval(
                "observe",
                &self.scripts.observe,
                &[
                    &keys.lock,
                    &keys.members,
                    &keys.seen,
                    &keys.preferred,
                    &keys.handoff,
                ],
                json,
                deadline,
            )
            .await?;
        let unexpected = || self.unexpected("observe", &items);
        match items.as_slice() {
            [Value::Int(0), value, Value::Int(pttl)] => self.held(value, *pttl),
            [Value::Int(8)] => Ok(Looked::Free),
            [Value::Int(6), to, Value::Int(wait_ms)] => Ok(Looked::Reserved {
                to: text(to).ok_or_else(unexpected)?,
                remaining: ms(*wait_ms),
            }),
            [Value::Int(2), description] => {
                Ok(Looked::Foreign(text(description).ok_or_else(unexpected)?))
            }
            _ => Err(unexpected()),
        }
    }

    /// The candidates this server has heard of within `lease`.
    pub async fn members(
        &self,
        lease: Duration,
        deadline: Instant,
    ) -> Result<Vec<Listed>, BackendError> {
        let json = serde_json::json!({"op": "list", "member_ttl_ms": millis(lease)}).to_string();
        let items = self.run_members("list members", json, deadline).await?;
        let unexpected = || self.unexpected("list members", &items);
        match items.as_slice() {
            [Value::Int(2), description] => {
                Err(BackendError::new(text(description).unwrap_or_default()))
            }
            [Value::Int(now_ms), rest @ ..] => rest
                .chunks(3)
                .map(|chunk| match chunk {
                    [identity, presence, Value::Int(seen_ms)] => Ok((
                        text(identity).ok_or_else(unexpected)?,
                        text(presence).ok_or_else(unexpected)?,
                        ms(now_ms.saturating_sub(*seen_ms)),
                    )),
                    _ => Err(unexpected()),
                })
                .collect(),
            _ => Err(unexpected()),
        }
    }

    /// Removes `identity` from the members (it leaves for good).
    pub async fn leave(&self, identity: &str, deadline: Instant) -> Result<(), BackendError> {
        let json = serde_json::json!({"op": "leave", "identity": identity}).to_string();
        self.run_members("leave", json, deadline).await.map(|_| ())
    }

    async fn run_members(
        &self,
        operation: &str,
        json: String,
        deadline: Instant,
    ) -> Result<Vec<Value>, BackendError> {
        let keys = &self.keys;
        self.eval(
            operation,
            &self.scripts.members,
            &[&keys.members, &keys.seen, &keys.preferred],
            json,
            deadline,
        )
        .await
    }

    /// `op`: `request` (with `record`), `cancel` or `get`.
    pub async fn switchover(
        &self,
        op: &str,
        record: &str,
        deadline: Instant,
    ) -> Result<SwitchoverReply, BackendError> {
        let json = serde_json::json!({"op": op, "record": record, "channel": self.keys.channel})
            .to_string();
        let keys = &self.keys;
        let items = self
            .eval(
                "switchover",
                &self.scripts.switchover,
                &[&keys.switchover],
                json,
                deadline,
            )
            .await?;
        let unexpected = || self.unexpected("switchover", &items);
        match (op, items.as_slice()) {
            ("request" | "cancel", [Value::Int(1)]) => Ok(SwitchoverReply::Done),
            ("request" | "get", [Value::Int(_), record]) => Ok(SwitchoverReply::Pending(
                text(record).ok_or_else(unexpected)?,
            )),
            (_, [Value::Int(0)]) => Ok(SwitchoverReply::None),
            (_, [Value::Int(2), description]) => {
                Err(BackendError::new(text(description).unwrap_or_default()))
            }
            _ => Err(unexpected()),
        }
    }

    /// Redis refused a write for lack of memory: not foreign data, not an
    /// unreachable server; retried like any failure.
    fn full(&self, error: &Value) -> BackendError {
        BackendError::store_full(format!(
            "{}: Redis is full (maxmemory) and refused to write the lease: {}",
            self.connection.shown_url(),
            text(error).unwrap_or_default()
        ))
    }

    /// Gives a partial grant the term's token and announces the term.
    pub async fn seal(
        &self,
        granted: &str,
        sealed: &str,
        token: u64,
        deadline: Instant,
    ) -> Result<bool, BackendError> {
        let done: i64 = self
            .connection
            .run(deadline, |mut conn| async move {
                self.scripts
                    .seal
                    .key(&self.keys.lock)
                    .key(&self.keys.fence)
                    .key(&self.keys.term)
                    .arg(granted)
                    .arg(sealed)
                    .arg(token)
                    .arg(&self.keys.channel)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(done == 1)
    }

    /// `deadline`: the call's deadline; the server refuses the renewal if
    /// it only gets it later (delayed in the network).
    pub async fn renew(
        &self,
        args: &RenewArgs<'_>,
        deadline: Instant,
    ) -> Result<Renewal, BackendError> {
        let json = serde_json::json!({
            "value": args.claim,
            "lease_ms": millis(args.lease),
            "token": args.token,
            "restore": args.restore,
            "deadline_us": self.server_deadline(deadline),
            "identity": args.identity,
            "presence": args.presence,
            "priority": args.priority,
            "member_ttl_ms": millis(args.lease),
        })
        .to_string();
        let keys = &self.keys;
        let items = self
            .eval(
                "renew",
                &self.scripts.renew,
                &[
                    &keys.lock,
                    &keys.fence,
                    &keys.released,
                    &keys.members,
                    &keys.seen,
                    &keys.preferred,
                    &keys.switchover,
                    &keys.term,
                ],
                json,
                deadline,
            )
            .await?;
        match items.as_slice() {
            [
                Value::Int(1),
                Value::Int(now_us),
                switchover,
                preferred,
                Value::Int(priority),
                Value::Int(healthy),
            ] => {
                self.saw_clock(*now_us);
                Ok(Renewal::Renewed {
                    switchover: text(switchover),
                    standing: Standing {
                        preferred: text(preferred).map(|identity| (identity, *priority)),
                        healthy: u64::try_from(*healthy).unwrap_or(0),
                    },
                })
            }
            [Value::Int(0), rest @ ..] => Ok(Renewal::NotOurs(
                rest.first()
                    .and_then(text)
                    .and_then(|value| LockValue::parse(&value)),
            )),
            [Value::Int(2), description] => {
                Ok(Renewal::Foreign(text(description).unwrap_or_default()))
            }
            [Value::Int(3)] => {
                // Our idea of its clock may be off (a clock step): read it
                // afresh at the next grant or renewal.
                *lock(&self.clock) = None;
                Ok(Renewal::Late)
            }
            [Value::Int(5), error] => Err(self.full(error)),
            _ => Err(self.unexpected("renew", &items)),
        }
    }

    /// Frees the lease if it holds our claim (or the other form of it).
    pub async fn release(
        &self,
        args: &ReleaseArgs<'_>,
        deadline: Instant,
    ) -> Result<Released, BackendError> {
        let json = serde_json::json!({
            "value": args.claim,
            "also": args.also.unwrap_or(""),
            "token": args.token,
            "channel": self.keys.channel,
            "notice": args.notice,
            "handoff": args.handoff.unwrap_or(""),
            "lease_ms": millis(args.lease),
        })
        .to_string();
        let keys = &self.keys;
        let items = self
            .eval(
                "release",
                &self.scripts.release,
                &[
                    &keys.lock,
                    &keys.released,
                    &keys.handoff,
                    &keys.switchover,
                    &keys.vacant,
                    &keys.preferred,
                    &keys.term,
                ],
                json,
                deadline,
            )
            .await?;
        match items.as_slice() {
            [Value::Int(1)] => Ok(Released::Yes),
            [Value::Int(0), ..] => Ok(Released::NotOurs),
            [Value::Int(2), description] => Ok(Released::YesForeignMarker(
                text(description).unwrap_or_default(),
            )),
            _ => Err(self.unexpected("release", &items)),
        }
    }

    /// Runs one of leaderd's scripts with these keys and its one JSON
    /// argument, bounded by `deadline`; every script answers an array.
    async fn eval(
        &self,
        operation: &str,
        script: &Script,
        keys: &[&str],
        json: String,
        deadline: Instant,
    ) -> Result<Vec<Value>, BackendError> {
        let reply: Value = self
            .connection
            .run(deadline, |mut conn| async move {
                let mut invocation = script.prepare_invoke();
                for key in keys {
                    invocation.key(*key);
                }
                invocation.arg(json).invoke_async(&mut conn).await
            })
            .await?;
        match reply {
            Value::Array(items) => Ok(items),
            other => Err(self.unexpected(operation, &other)),
        }
    }

    fn unexpected(&self, operation: &str, reply: &impl std::fmt::Debug) -> BackendError {
        BackendError::new(format!(
            "{}: unexpected reply to {operation}: {reply:?}",
            self.connection.shown_url()
        ))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ms(n: i64) -> Duration {
    Duration::from_millis(u64::try_from(n).unwrap_or(0))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
