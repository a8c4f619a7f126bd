//! One logical Redis server: a direct address, a master found through
//! Sentinel, or a Redis Cluster. The connection is (re)opened on demand and
//! every use is bounded by a deadline.
//!
//! The redis crate's own timeouts are switched off: the elector's deadline is
//! the only clock that matters, and it already accounts for safe-until.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    Pipeline, RedisFuture, TlsCertificates, Value,
};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

use crate::backend::BackendError;
use crate::config::redact_url;

/// Credentials and trust that apply to every server of the backend.
#[derive(Clone, Default)]
pub struct Security {
    /// ACL user, overriding one in the URL.
    pub username: Option<String>,
    /// From `password_file`, overriding one in the URL. Never logged.
    pub password: Option<String>,
    /// PEM CA bundle for `rediss://` instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

impl Security {
    fn apply(&self, info: ConnectionInfo) -> ConnectionInfo {
        let mut redis = info.redis_settings().clone();
        if let Some(user) = &self.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        info.set_redis_settings(redis)
    }

    fn client(&self, info: ConnectionInfo) -> redis::RedisResult<Client> {
        let info = self.apply(info);
        match (&self.ca_pem, info.addr()) {
            (Some(ca), ConnectionAddr::TcpTls { .. }) => Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
            _ => Client::open(info),
        }
    }
}

/// Either kind of live connection; both speak the same commands.
#[derive(Clone)]
pub enum AnyConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for AnyConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            AnyConnection::Single(c) => c.req_packed_command(cmd),
            AnyConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            AnyConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            AnyConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AnyConnection::Single(c) => c.get_db(),
            AnyConnection::Cluster(c) => c.get_db(),
        }
    }
}

enum Endpoint {
    Direct(Client),
    Cluster {
        client: Box<redis::cluster::ClusterClient>,
        /// PUBLISH reaches every node of a cluster: any one can notify.
        seed: Client,
    },
    Sentinel {
        sentinels: Vec<Client>,
        master_name: String,
        /// The master's connection settings (scheme, db, credentials)
        /// with a placeholder address.
        template: ConnectionInfo,
        security: Security,
    },
}

pub struct Connection {
    endpoint: Endpoint,
    /// What to show in logs and errors: URLs with passwords hidden.
    shown: String,
    /// The live connection and the address it goes to.
    current: Mutex<Option<(AnyConnection, String)>>,
}

fn config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None)
}

fn error(shown: &str, err: impl std::fmt::Display) -> BackendError {
    BackendError::new(format!("{shown}: {err}"))
}

impl Connection {
    /// One server at `url`.
    pub fn direct(url: &str, security: &Security) -> Result<Connection, BackendError> {
        let shown = redact_url(url);
        let info = url
            .into_connection_info()
            .map_err(|err| error(&shown, err))?;
        let client = security.client(info).map_err(|err| error(&shown, err))?;
        Ok(Connection {
            endpoint: Endpoint::Direct(client),
            shown,
            current: Mutex::new(None),
        })
    }

    /// A Redis Cluster reached through its seed nodes `urls`.
    pub fn cluster(urls: &[String], security: &Security) -> Result<Connection, BackendError> {
        let shown = format!(
            "cluster {}",
            urls.iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut builder = ClusterClientBuilder::new(urls.iter().map(String::as_str))
            .connection_timeout(std::time::Duration::from_secs(5))
            .response_timeout(std::time::Duration::from_secs(5));
        if let Some(user) = &security.username {
            builder = builder.username(user);
        }
        if let Some(password) = &security.password {
            builder = builder.password(password);
        }
        if let Some(ca) = &security.ca_pem {
            builder = builder.certs(TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            });
        }
        let client = builder.build().map_err(|err| error(&shown, err))?;
        let first = urls
            .first()
            .ok_or_else(|| error(&shown, "no seed node"))?
            .as_str()
            .into_connection_info()
            .map_err(|err| error(&shown, err))?;
        let seed = security.client(first).map_err(|err| error(&shown, err))?;
        Ok(Connection {
            endpoint: Endpoint::Cluster {
                client: Box::new(client),
                seed,
            },
            shown,
            current: Mutex::new(None),
        })
    }

    /// The master `master_name`, as the Sentinels at `sentinel_urls` say.
    /// `master_scheme` is `redis` or `rediss` for the master itself.
    pub fn sentinel(
        sentinel_urls: &[String],
        master_name: &str,
        master_tls: bool,
        sentinel_security: &Security,
        security: &Security,
    ) -> Result<Connection, BackendError> {
        let shown = format!(
            "sentinel master {master_name} via {}",
            sentinel_urls
                .iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(",")
        );
        let sentinels = sentinel_urls
            .iter()
            .map(|url| {
                let info = url.as_str().into_connection_info()?;
                sentinel_security.client(info)
            })
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(|err| error(&shown, err))?;
        let scheme = if master_tls { "rediss" } else { "redis" };
        let template = format!("{scheme}://placeholder:6379")
            .as_str()
            .into_connection_info()
            .map_err(|err| error(&shown, err))?;
        Ok(Connection {
            endpoint: Endpoint::Sentinel {
                sentinels,
                master_name: master_name.to_string(),
                template,
                security: security.clone(),
            },
            shown,
            current: Mutex::new(None),
        })
    }

    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// Runs `op` on the connection, opening one first if needed. Any failure
    /// drops the connection so the next call starts clean rather than
    /// queueing behind a request a frozen server never answers.
    pub async fn run<T, F, Fut>(&self, deadline: Instant, op: F) -> Result<T, BackendError>
    where
        F: FnOnce(AnyConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (connection, _) = self.get(deadline).await?;
        match timeout_at(deadline, op(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                // Whatever went wrong, a fresh connection is cheap and rules
                // out a half-broken one (or a demoted Sentinel master); this
                // only happens after a failure.
                self.forget().await;
                Err(error(&self.shown, err))
            }
            Err(_) => {
                self.forget().await;
                Err(error(&self.shown, "timed out"))
            }
        }
    }

    /// The address of the server we talk to (the current master with
    /// Sentinel), connecting if needed.
    pub async fn address(&self, deadline: Instant) -> Result<String, BackendError> {
        Ok(self.get(deadline).await?.1)
    }

    /// With Sentinel: asks again which server is master; a change drops the
    /// connection. Returns the master's address. Other kinds: the address.
    pub async fn refresh(&self, deadline: Instant) -> Result<String, BackendError> {
        if let Endpoint::Sentinel { .. } = &self.endpoint {
            let master = self.resolve_master(deadline).await?;
            let mut current = self.current.lock().await;
            if current
                .as_ref()
                .is_some_and(|(_, address)| *address != master)
            {
                *current = None;
            }
            return Ok(master);
        }
        self.address(deadline).await
    }

    /// A client for pub/sub notices (the current master with Sentinel, a
    /// seed node of a cluster, where PUBLISH reaches every node).
    pub async fn pubsub_client(&self, deadline: Instant) -> Result<Client, BackendError> {
        match &self.endpoint {
            Endpoint::Direct(client) => Ok(client.clone()),
            Endpoint::Cluster { seed, .. } => Ok(seed.clone()),
            Endpoint::Sentinel {
                template, security, ..
            } => {
                let master = self.resolve_master(deadline).await?;
                master_client(template, security, &master).map_err(|err| error(&self.shown, err))
            }
        }
    }

    async fn get(&self, deadline: Instant) -> Result<(AnyConnection, String), BackendError> {
        let mut current = self.current.lock().await;
        if let Some(live) = current.as_ref() {
            return Ok(live.clone());
        }
        let opened = timeout_at(deadline, self.open(deadline))
            .await
            .map_err(|_| error(&self.shown, "connect timed out"))??;
        *current = Some(opened.clone());
        Ok(opened)
    }

    async fn open(&self, deadline: Instant) -> Result<(AnyConnection, String), BackendError> {
        match &self.endpoint {
            Endpoint::Direct(client) => {
                let connection = client
                    .get_multiplexed_async_connection_with_config(&config())
                    .await
                    .map_err(|err| error(&self.shown, err))?;
                Ok((AnyConnection::Single(connection), self.shown.clone()))
            }
            Endpoint::Cluster { client, .. } => {
                let connection = client
                    .get_async_connection()
                    .await
                    .map_err(|err| error(&self.shown, err))?;
                Ok((AnyConnection::Cluster(connection), self.shown.clone()))
            }
            Endpoint::Sentinel {
                template, security, ..
            } => {
                let master = self.resolve_master(deadline).await?;
                let client = master_client(template, security, &master)
                    .map_err(|err| error(&self.shown, err))?;
                let mut connection = client
                    .get_multiplexed_async_connection_with_config(&config())
                    .await
                    .map_err(|err| error(&self.shown, format!("master {master}: {err}")))?;
                // A Sentinel can be behind: only a server that says it is
                // master may hold the lease.
                let role: Vec<Value> = redis::cmd("ROLE")
                    .query_async(&mut connection)
                    .await
                    .map_err(|err| error(&self.shown, format!("master {master}: {err}")))?;
                let is_master =
                    matches!(role.first(), Some(Value::BulkString(b)) if b == b"master");
                if !is_master {
                    return Err(error(
                        &self.shown,
                        format!("{master} is not a master (failover in progress?)"),
                    ));
                }
                Ok((AnyConnection::Single(connection), master))
            }
        }
    }

    /// Asks the Sentinels, in order, for the master's address.
    async fn resolve_master(&self, deadline: Instant) -> Result<String, BackendError> {
        let Endpoint::Sentinel {
            sentinels,
            master_name,
            ..
        } = &self.endpoint
        else {
            return Err(BackendError::new("not a Sentinel endpoint"));
        };
        let mut failures = Vec::new();
        for sentinel in sentinels {
            let asked = timeout_at(deadline, async {
                let mut connection = sentinel
                    .get_multiplexed_async_connection_with_config(&config())
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master_name)
                    .query_async::<Option<(String, u16)>>(&mut connection)
                    .await
            })
            .await;
            match asked {
                Ok(Ok(Some((host, port)))) => return Ok(format!("{host}:{port}")),
                Ok(Ok(None)) => failures.push(format!("does not know master {master_name:?}")),
                Ok(Err(err)) => failures.push(err.to_string()),
                Err(_) => failures.push("timed out".to_string()),
            }
        }
        Err(error(
            &self.shown,
            format!("no Sentinel named the master: {}", failures.join("; ")),
        ))
    }

    async fn forget(&self) {
        *self.current.lock().await = None;
    }
}

fn master_client(
    template: &ConnectionInfo,
    security: &Security,
    master: &str,
) -> redis::RedisResult<Client> {
    let (host, port) = master
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "bad master address",
                master.to_string(),
            ))
        })?;
    let addr = match template.addr() {
        ConnectionAddr::TcpTls { .. } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    security.client(template.clone().set_addr(addr))
}
