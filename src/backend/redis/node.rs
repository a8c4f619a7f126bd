//! One Redis server of the backend: runs the Lua scripts on it and turns
//! its replies into typed answers. Combining several servers (quorum mode)
//! is the job of the backend, not of this type.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Script, Value};
use tokio::time::Instant;

use super::connection::Connection;
use super::keys::{Keys, LockValue};
use crate::backend::{BackendError, lock};

/// The scripts, loaded once and shared by every node (EVALSHA, with a
/// reload on NOSCRIPT after a server restart).
pub struct Scripts {
    acquire: Script,
    renew: Script,
    release: Script,
    seal: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            acquire: Script::new(include_str!("acquire.lua")),
            renew: Script::new(include_str!("renew.lua")),
            release: Script::new(include_str!("release.lua")),
            seal: Script::new(include_str!("seal.lua")),
        }
    }

    /// Every script, for loading them when a connection opens.
    pub fn all(&self) -> Vec<Script> {
        vec![
            self.acquire.clone(),
            self.renew.clone(),
            self.release.clone(),
            self.seal.clone(),
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
}

/// What one server answered to a renew.
#[derive(Debug, Clone)]
pub enum Renewal {
    Renewed,
    /// Not ours any more; what the key holds instead, if it is ours to read.
    NotOurs(Option<LockValue>),
    /// Restoring the key would touch something leaderd did not write.
    Foreign(String),
    /// The renewal reached the server after the call's deadline: a term
    /// that may be over by now is not extended.
    Late,
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
        let reply: Value = self
            .connection
            .run(deadline, |mut conn| async move {
                self.scripts
                    .acquire
                    .key(&self.keys.lock)
                    .key(&self.keys.fence)
                    .key(&self.keys.released)
                    .key(&self.keys.quarantine)
                    .arg(args.identity)
                    .arg(args.term_id)
                    .arg(millis(args.lease))
                    .arg(args.floor)
                    .arg(args.acquired_at)
                    .arg(&self.keys.channel)
                    .arg(args.guard)
                    .arg(if args.announce { "1" } else { "0" })
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let unexpected = || self.unexpected("acquire", &reply);
        let Value::Array(items) = &reply else {
            return Err(unexpected());
        };
        match items.as_slice() {
            [Value::Int(1), Value::Int(token), value, Value::Int(now_us)] => {
                self.saw_clock(*now_us);
                Ok(Granted::Yes {
                    token: u64::try_from(*token).map_err(|_| unexpected())?,
                    value: text(value).ok_or_else(unexpected)?,
                })
            }
            [Value::Int(0), value, Value::Int(pttl)] => {
                let value = text(value).ok_or_else(unexpected)?;
                let Some(lock) = LockValue::parse(&value) else {
                    return Ok(Granted::Foreign(format!(
                        "{} holds a value leaderd did not write: {:?}",
                        self.keys.lock,
                        truncate(&value, 80)
                    )));
                };
                if *pttl < 0 {
                    return Ok(Granted::Foreign(format!(
                        "{} has no expiry; leaderd never writes it so",
                        self.keys.lock
                    )));
                }
                Ok(Granted::Held {
                    lock,
                    remaining: Duration::from_millis(u64::try_from(*pttl).unwrap_or(0)),
                })
            }
            [Value::Int(2), description] => {
                Ok(Granted::Foreign(text(description).ok_or_else(unexpected)?))
            }
            [Value::Int(3)] => Ok(Granted::Vanished),
            [Value::Int(4), Value::Int(wait_ms)] => Ok(Granted::Quarantined(
                Duration::from_millis(u64::try_from(*wait_ms).unwrap_or(0)),
            )),
            [Value::Int(5), error] => Err(self.full(error)),
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
        claim: &str,
        token: u64,
        lease: Duration,
        restore_missing: bool,
        deadline: Instant,
    ) -> Result<Renewal, BackendError> {
        let server_deadline = self.server_deadline(deadline);
        let reply: Value = self
            .connection
            .run(deadline, |mut conn| async move {
                self.scripts
                    .renew
                    .key(&self.keys.lock)
                    .key(&self.keys.fence)
                    .key(&self.keys.released)
                    .arg(claim)
                    .arg(millis(lease))
                    .arg(if restore_missing { "1" } else { "0" })
                    .arg(token)
                    .arg(server_deadline)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let Value::Array(items) = &reply else {
            return Err(self.unexpected("renew", &reply));
        };
        match items.as_slice() {
            [Value::Int(1), Value::Int(now_us)] => {
                self.saw_clock(*now_us);
                Ok(Renewal::Renewed)
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
            _ => Err(self.unexpected("renew", &reply)),
        }
    }

    /// Frees the lease if it holds `claim` (or `also`, another value of
    /// ours); `notice` empty = silently, without recording the release.
    pub async fn release(
        &self,
        claim: &str,
        also: Option<&str>,
        token: u64,
        notice: &str,
        deadline: Instant,
    ) -> Result<Released, BackendError> {
        let reply: Value = self
            .connection
            .run(deadline, |mut conn| async move {
                self.scripts
                    .release
                    .key(&self.keys.lock)
                    .key(&self.keys.released)
                    .arg(claim)
                    .arg(&self.keys.channel)
                    .arg(notice)
                    .arg(token)
                    .arg(also.unwrap_or(""))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let Value::Array(items) = &reply else {
            return Err(self.unexpected("release", &reply));
        };
        match items.as_slice() {
            [Value::Int(1)] => Ok(Released::Yes),
            [Value::Int(0), ..] => Ok(Released::NotOurs),
            [Value::Int(2), description] => Ok(Released::YesForeignMarker(
                text(description).unwrap_or_default(),
            )),
            _ => Err(self.unexpected("release", &reply)),
        }
    }

    fn unexpected(&self, operation: &str, reply: &Value) -> BackendError {
        BackendError::new(format!(
            "{}: unexpected reply to {operation}: {reply:?}",
            self.connection.shown_url()
        ))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
