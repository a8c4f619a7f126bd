//! One Redis server of the backend: runs the Lua scripts on it and turns
//! its replies into typed answers. Combining several servers (quorum mode)
//! is the job of the backend, not of this type.

use std::sync::Arc;
use std::time::Duration;

use redis::{Script, Value};
use tokio::time::Instant;

use super::connection::Connection;
use super::keys::{Keys, LockValue};
use crate::backend::BackendError;

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
}

pub struct Node {
    connection: Arc<Connection>,
    keys: Keys,
    scripts: Arc<Scripts>,
}

impl Node {
    pub fn new(connection: Connection, keys: Keys, scripts: Arc<Scripts>) -> Node {
        // Connects now, in the background, loading the scripts.
        connection.prepare(scripts.all(), &keys.lock);
        Node {
            connection: Arc::new(connection),
            keys,
            scripts,
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
            [Value::Int(1), Value::Int(token), value] => Ok(Granted::Yes {
                token: u64::try_from(*token).map_err(|_| unexpected())?,
                value: text(value).ok_or_else(unexpected)?,
            }),
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
            _ => Err(unexpected()),
        }
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

    pub async fn renew(
        &self,
        claim: &str,
        token: u64,
        lease: Duration,
        restore_missing: bool,
        deadline: Instant,
    ) -> Result<Renewal, BackendError> {
        let reply: Value = self
            .connection
            .run(deadline, |mut conn| async move {
                self.scripts
                    .renew
                    .key(&self.keys.lock)
                    .key(&self.keys.fence)
                    .arg(claim)
                    .arg(millis(lease))
                    .arg(if restore_missing { "1" } else { "0" })
                    .arg(token)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let Value::Array(items) = &reply else {
            return Err(self.unexpected("renew", &reply));
        };
        match items.as_slice() {
            [Value::Int(1)] => Ok(Renewal::Renewed),
            [Value::Int(0), rest @ ..] => Ok(Renewal::NotOurs(
                rest.first()
                    .and_then(text)
                    .and_then(|value| LockValue::parse(&value)),
            )),
            _ => Err(self.unexpected("renew", &reply)),
        }
    }

    /// Frees the lease if it holds `claim`; `notice` empty = silently.
    pub async fn release(
        &self,
        claim: &str,
        token: u64,
        notice: &str,
        deadline: Instant,
    ) -> Result<bool, BackendError> {
        let released: i64 = self
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
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(released == 1)
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
