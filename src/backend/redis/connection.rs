//! One multiplexed Redis connection that is (re)opened on demand and whose
//! every use is bounded by a deadline.
//!
//! The redis crate's own timeouts are switched off: the elector's deadline is
//! the only clock that matters, and it already accounts for safe-until.

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

use crate::backend::BackendError;
use crate::config::redact_url;

pub struct Connection {
    client: Client,
    /// The URL with its password hidden, for error messages.
    shown_url: String,
    current: Mutex<Option<MultiplexedConnection>>,
}

impl Connection {
    pub fn new(url: &str) -> Result<Connection, BackendError> {
        let shown_url = redact_url(url);
        let client =
            Client::open(url).map_err(|err| BackendError::new(format!("{shown_url}: {err}")))?;
        Ok(Connection {
            client,
            shown_url,
            current: Mutex::new(None),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// Runs `op` on the connection, opening one first if needed. Any failure
    /// drops the connection so the next call starts clean rather than
    /// queueing behind a request a frozen server never answers.
    pub async fn run<T, F, Fut>(&self, deadline: Instant, op: F) -> Result<T, BackendError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.get(deadline).await?;
        match timeout_at(deadline, op(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                // Whatever went wrong, a fresh connection is cheap and rules
                // out a half-broken one; this only happens after a failure.
                self.forget().await;
                Err(BackendError::new(format!("{}: {err}", self.shown_url)))
            }
            Err(_) => {
                self.forget().await;
                Err(BackendError::new(format!("{}: timed out", self.shown_url)))
            }
        }
    }

    async fn get(&self, deadline: Instant) -> Result<MultiplexedConnection, BackendError> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.as_ref() {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let connection = timeout_at(
            deadline,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| BackendError::new(format!("{}: connect timed out", self.shown_url)))?
        .map_err(|err| BackendError::new(format!("{}: {err}", self.shown_url)))?;
        *current = Some(connection.clone());
        Ok(connection)
    }

    async fn forget(&self) {
        *self.current.lock().await = None;
    }
}
