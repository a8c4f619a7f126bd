//! The Redis backend: one lease key with a TTL, written only by three Lua
//! scripts, so that acquire, renew and release are each one atomic step on
//! the server (never check-then-act).
//!
//! - acquire: `SET NX PX` of a JSON lock value plus `INCR` of a fencing
//!   counter, in one script;
//! - renew: compare the whole lock value, then `PEXPIRE`;
//! - release: compare the whole lock value, then `DEL` and `PUBLISH`.
//!
//! The lock value contains a random per-term id, so comparing it whole means
//! "this very term", not merely "this identity".

mod connection;
mod keys;
mod notices;
pub mod preflight;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rand::Rng;
use redis::{Script, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::{Acquire, Backend, BackendError, Holder, Renew, Term};
pub use connection::Connection;
pub use keys::{Keys, LockValue};
use notices::NoticeListener;

pub struct RedisBackend {
    connection: Connection,
    keys: Keys,
    scripts: Scripts,
    /// The highest fencing token this candidate has seen in the store. If
    /// Redis loses its data, the next acquire continues above it.
    highest_token_seen: AtomicU64,
    changes: watch::Receiver<u64>,
    _notices: NoticeListener,
}

struct Scripts {
    acquire: Script,
    renew: Script,
    release: Script,
}

impl RedisBackend {
    /// Prepares the backend; connecting happens lazily, on the first call,
    /// so that a Redis that is down at start only delays the election.
    pub fn new(url: &str, key_prefix: &str, election: &str) -> Result<RedisBackend, BackendError> {
        let connection = Connection::new(url)?;
        let keys = Keys::new(key_prefix, election);
        let (ticks, changes) = watch::channel(0);
        let notices =
            NoticeListener::spawn(connection.client().clone(), keys.channel.clone(), ticks);
        Ok(RedisBackend {
            connection,
            keys,
            scripts: Scripts {
                acquire: Script::new(include_str!("acquire.lua")),
                renew: Script::new(include_str!("renew.lua")),
                release: Script::new(include_str!("release.lua")),
            },
            highest_token_seen: AtomicU64::new(0),
            changes,
            _notices: notices,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn saw_token(&self, token: u64) {
        self.highest_token_seen.fetch_max(token, Ordering::Relaxed);
    }
}

impl Backend for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn acquire(
        &self,
        identity: &str,
        lease: Duration,
        live_holder: Option<&Holder>,
        deadline: Instant,
    ) -> Result<Acquire, BackendError> {
        let guard = live_holder.and_then(|h| h.fencing_token).unwrap_or(0);
        let term_id = random_term_id();
        let floor = self
            .highest_token_seen
            .load(Ordering::Relaxed)
            .saturating_add(1);
        let acquired_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let reply: Value = self
            .connection
            .run(deadline, |mut conn| {
                let term_id = &term_id;
                let acquired_at = &acquired_at;
                async move {
                    self.scripts
                        .acquire
                        .key(&self.keys.lock)
                        .key(&self.keys.fence)
                        .key(&self.keys.released)
                        .arg(identity)
                        .arg(term_id)
                        .arg(millis(lease))
                        .arg(floor)
                        .arg(acquired_at)
                        .arg(&self.keys.channel)
                        .arg(guard)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;

        let unexpected = || BackendError::new(format!("unexpected reply to acquire: {reply:?}"));
        let Value::Array(items) = &reply else {
            return Err(unexpected());
        };
        match items.as_slice() {
            [Value::Int(1), Value::Int(token), value] => {
                let token = u64::try_from(*token).map_err(|_| unexpected())?;
                self.saw_token(token);
                Ok(Acquire::Acquired(Term {
                    id: term_id,
                    fencing_token: token,
                    claim: text(value).ok_or_else(unexpected)?,
                }))
            }
            [Value::Int(0), value, Value::Int(pttl)] => {
                let value = text(value).ok_or_else(unexpected)?;
                let Some(lock) = LockValue::parse(&value) else {
                    return Ok(Acquire::Foreign {
                        description: format!(
                            "{} holds a value leaderd did not write: {:?}",
                            self.keys.lock,
                            truncate(&value, 80)
                        ),
                    });
                };
                if *pttl < 0 {
                    return Ok(Acquire::Foreign {
                        description: format!(
                            "{} has no expiry; leaderd never writes it so",
                            self.keys.lock
                        ),
                    });
                }
                self.saw_token(lock.token);
                Ok(Acquire::HeldBy {
                    holder: lock.holder(),
                    remaining: Duration::from_millis(u64::try_from(*pttl).unwrap_or(0)),
                })
            }
            [Value::Int(2), description] => Ok(Acquire::Foreign {
                description: text(description).ok_or_else(unexpected)?,
            }),
            [Value::Int(3)] => Ok(Acquire::Vanished),
            _ => Err(unexpected()),
        }
    }

    async fn renew(
        &self,
        term: &Term,
        lease: Duration,
        deadline: Instant,
    ) -> Result<Renew, BackendError> {
        let reply: Value = self
            .connection
            .run(deadline, |mut conn| async move {
                self.scripts
                    .renew
                    .key(&self.keys.lock)
                    .arg(&term.claim)
                    .arg(millis(lease))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let Value::Array(items) = &reply else {
            return Err(BackendError::new(format!(
                "unexpected reply to renew: {reply:?}"
            )));
        };
        match items.as_slice() {
            [Value::Int(1)] => Ok(Renew::Renewed),
            [Value::Int(0), rest @ ..] => {
                let holder = rest
                    .first()
                    .and_then(text)
                    .and_then(|value| LockValue::parse(&value))
                    .map(|lock| {
                        self.saw_token(lock.token);
                        lock.holder()
                    });
                Ok(Renew::Lost { holder })
            }
            _ => Err(BackendError::new(format!(
                "unexpected reply to renew: {reply:?}"
            ))),
        }
    }

    async fn release(&self, term: &Term, deadline: Instant) -> Result<bool, BackendError> {
        let notice = format!("released {}", term.fencing_token);
        let released: i64 = self
            .connection
            .run(deadline, |mut conn| async move {
                self.scripts
                    .release
                    .key(&self.keys.lock)
                    .key(&self.keys.released)
                    .arg(&term.claim)
                    .arg(&self.keys.channel)
                    .arg(&notice)
                    .arg(term.fencing_token)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(released == 1)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

/// 128 random bits as hex: unique per term with overwhelming probability.
fn random_term_id() -> String {
    let bits: u128 = rand::rng().random();
    format!("{bits:032x}")
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

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.connection.shown_url())
            .field("keys", &self.keys)
            .finish()
    }
}
