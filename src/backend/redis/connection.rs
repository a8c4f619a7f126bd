//! One logical Redis server: a direct address, a master found through
//! Sentinel, or a Redis Cluster.
//!
//! Connecting does not count against any operation's budget. A connect
//! (TCP, TLS, AUTH/HELLO, loading the scripts; with Sentinel also asking the
//! Sentinels and checking `ROLE`) is a task of its own, bounded by
//! [`CONNECT_TIMEOUT`], started ahead of need: when the backend starts and
//! again as soon as a connection is lost. An operation waits for it until
//! its own deadline at most; a connect it stopped waiting for carries on in
//! the background and serves the next operation.
//!
//! Connections are kept warm. An operation that runs out of time leaves its
//! connection alone (a slow answer is not a broken connection: over a long
//! link, dropping it would make every operation pay for a new connect and
//! none would finish); a background `PING` tells a stalled connection from a
//! slow one and replaces only the stalled. An error of the connection itself
//! (I/O, closed, a master demoted under us) replaces it at once.
//!
//! With Sentinel, a master counts only when a majority of the configured
//! Sentinels name the same address and the server answers `ROLE` as master.
//! Every Sentinel has a warm connection of its own; all are asked in
//! parallel, each with its own timeout, and the answer is final as soon as a
//! majority agrees, so a hung Sentinel delays nobody. A candidate cut off
//! from the Sentinel majority gets no master at all, which makes a leader on
//! the minority side of a partition fail its renewals and step down.
//!
//! The redis crate's own timeouts are switched off: the elector's deadline
//! is the only clock an operation obeys, and it already accounts for
//! safe-until.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue,
    IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Script, ServerErrorKind,
    TlsCertificates, Value,
};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::{Instant, timeout, timeout_at};

use crate::backend::{BackendError, lock};
use crate::config::{redact_url, show};

/// The longest one connect may take, independent of any operation.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that leaves a `PING` unanswered this long is replaced.
const STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest one Sentinel may take to name the master (its connect
/// included). Never delays an answer: a majority is enough.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);

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

impl AnyConnection {
    /// Runs `cmd` on the node `route` names (a cluster), or where the
    /// connection goes (a single server).
    async fn query_routed<T: FromRedisValue>(
        &mut self,
        cmd: Cmd,
        route: Option<&RoutingInfo>,
    ) -> redis::RedisResult<T> {
        match (self, route) {
            (AnyConnection::Cluster(c), Some(route)) => {
                let value = c.route_command(cmd, route.clone()).await?;
                Ok(T::from_redis_value(value)?)
            }
            (conn, _) => cmd.query_async(conn).await,
        }
    }
}

// ---------------------------------------------------------------------------
// A connection slot
// ---------------------------------------------------------------------------

/// A connection and the address it goes to; `id` tells one connection of a
/// slot from the next.
#[derive(Clone)]
struct Live<C> {
    conn: C,
    address: String,
    id: u64,
}

type Outcome<C> = Option<Result<Live<C>, BackendError>>;

/// A connect in flight.
struct Pending<C> {
    id: u64,
    /// The address it was asked to reach (Sentinel), `None`: wherever the
    /// endpoint leads.
    target: Option<String>,
    done: watch::Receiver<Outcome<C>>,
    task: AbortHandle,
}

struct SlotState<C> {
    live: Option<Live<C>>,
    pending: Option<Pending<C>>,
    next_id: u64,
    /// The connection a stall probe is running on.
    probing: Option<u64>,
}

/// One connection kept warm: the live one, or the connect in flight that
/// will provide it. Connects are tasks of their own (see the module
/// documentation); the slot only remembers their outcome.
struct Slot<C> {
    state: Mutex<SlotState<C>>,
}

/// What [`Slot::obtain`] found: a connection, or a connect to wait for.
enum Obtained<C> {
    Live(Live<C>),
    Pending(watch::Receiver<Outcome<C>>),
}

impl<C: Clone + Send + Sync + 'static> Slot<C> {
    fn new() -> Arc<Slot<C>> {
        Arc::new(Slot {
            state: Mutex::new(SlotState {
                live: None,
                pending: None,
                next_id: 0,
                probing: None,
            }),
        })
    }

    /// The live connection to `target` (to anywhere if `None`), else the
    /// connect in flight to it, else a connect started now with `open`.
    /// A live connection or a connect to another target is dropped.
    fn obtain<F, Fut>(self: &Arc<Self>, target: Option<&str>, open: F) -> Obtained<C>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(C, String), BackendError>> + Send + 'static,
    {
        let mut state = lock(&self.state);
        if let Some(live) = &state.live {
            if target.is_none_or(|t| t == live.address) {
                return Obtained::Live(live.clone());
            }
            state.live = None;
        }
        if let Some(pending) = &state.pending {
            if target.is_none() || pending.target.as_deref() == target {
                return Obtained::Pending(pending.done.clone());
            }
            pending.task.abort();
            state.pending = None;
        }
        state.next_id += 1;
        let id = state.next_id;
        let (done_tx, done) = watch::channel(None);
        let slot: Weak<Slot<C>> = Arc::downgrade(self);
        let connect = open();
        let task = tokio::spawn(async move {
            let outcome = match timeout(CONNECT_TIMEOUT, connect).await {
                Ok(Ok((conn, address))) => Ok(Live { conn, address, id }),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(BackendError::new(format!(
                    "connect timed out after {}",
                    show(CONNECT_TIMEOUT)
                ))),
            };
            if let Some(slot) = slot.upgrade() {
                let mut state = lock(&slot.state);
                if state.pending.as_ref().is_some_and(|p| p.id == id) {
                    state.pending = None;
                    if let Ok(live) = &outcome {
                        state.live = Some(live.clone());
                    }
                }
            }
            let _ = done_tx.send(Some(outcome));
        });
        state.pending = Some(Pending {
            id,
            target: target.map(str::to_string),
            done: done.clone(),
            task: task.abort_handle(),
        });
        Obtained::Pending(done)
    }

    /// Drops connection `id` if it is still the live one; whether it was.
    fn forget(&self, id: u64) -> bool {
        let mut state = lock(&self.state);
        if state.live.as_ref().is_some_and(|live| live.id == id) {
            state.live = None;
            return true;
        }
        false
    }

    /// Marks connection `id` as being probed; `false` if it already is.
    fn start_probe(&self, id: u64) -> bool {
        let mut state = lock(&self.state);
        if state.probing == Some(id) {
            return false;
        }
        state.probing = Some(id);
        true
    }

    fn end_probe(&self, id: u64) {
        let mut state = lock(&self.state);
        if state.probing == Some(id) {
            state.probing = None;
        }
    }

    fn abort(&self) {
        if let Some(pending) = lock(&self.state).pending.take() {
            pending.task.abort();
        }
    }
}

impl<C: Clone> Obtained<C> {
    /// The connection, waiting for a connect until `deadline` at most (the
    /// connect itself goes on after that).
    async fn wait(self, deadline: Instant) -> Result<Live<C>, BackendError> {
        match self {
            Obtained::Live(live) => Ok(live),
            Obtained::Pending(mut done) => {
                match timeout_at(deadline, done.wait_for(Option::is_some)).await {
                    Ok(Ok(outcome)) => outcome
                        .clone()
                        .unwrap_or_else(|| Err(BackendError::new("connect lost"))),
                    Ok(Err(_)) => Err(BackendError::new("connect abandoned")),
                    Err(_) => Err(BackendError::new(
                        "still connecting (the connect goes on in the background)",
                    )),
                }
            }
        }
    }
}

/// Whether an error means the connection itself is unusable (rather than
/// the server refusing one command).
fn breaks_connection(err: &RedisError) -> bool {
    match err.kind() {
        // A master demoted under us: find the master again.
        ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown) => true,
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType => false,
        _ => true,
    }
}

// ---------------------------------------------------------------------------
// Sentinels
// ---------------------------------------------------------------------------

/// One Sentinel with its warm connection.
struct SentinelLink {
    client: Client,
    shown: String,
    slot: Arc<Slot<MultiplexedConnection>>,
}

impl SentinelLink {
    /// The master's address as this Sentinel names it (`None`: it does not
    /// know the name). Bounded by [`SENTINEL_TIMEOUT`], not by any caller,
    /// so that a slow answer still warms the connection for the next ask.
    async fn ask(&self, master_name: &str) -> Result<Option<String>, String> {
        let deadline = Instant::now() + SENTINEL_TIMEOUT;
        let client = self.client.clone();
        let shown = self.shown.clone();
        let live = self
            .slot
            .obtain(None, move || async move {
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config())
                    .await
                    .map_err(|err| BackendError::new(err.to_string()))?;
                Ok((conn, shown))
            })
            .wait(deadline)
            .await
            .map_err(|err| {
                if Instant::now() >= deadline {
                    format!("no answer within {}: {err}", show(SENTINEL_TIMEOUT))
                } else {
                    err.message
                }
            })?;
        let mut conn = live.conn.clone();
        let asked = timeout_at(
            deadline,
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(master_name)
                .query_async::<Option<(String, u16)>>(&mut conn),
        )
        .await;
        match asked {
            Ok(Ok(address)) => Ok(address.map(|(host, port)| format!("{host}:{port}"))),
            Ok(Err(err)) => {
                if breaks_connection(&err) {
                    self.slot.forget(live.id);
                }
                Err(err.to_string())
            }
            Err(_) => {
                // Hung: a new connection next time rather than queueing
                // behind a question it never answers.
                self.slot.forget(live.id);
                Err(format!("no answer within {}", show(SENTINEL_TIMEOUT)))
            }
        }
    }
}

/// What one Sentinel said, for `leaderd check`.
pub struct SentinelView {
    pub sentinel: String,
    pub answer: Result<Option<String>, String>,
}

/// Counts the Sentinels' answers until one address is named by a majority
/// of the configured Sentinels (answering or not), or none can be any more.
struct Tally {
    total: usize,
    needed: usize,
    heard: usize,
    votes: HashMap<String, usize>,
}

/// Where a [`Tally`] stands.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A majority names this master.
    Master(String),
    /// Not yet: the answers still missing can make a majority.
    Open,
    /// No address can reach a majority with the answers still missing.
    Impossible,
}

impl Tally {
    fn new(total: usize) -> Tally {
        Tally {
            total,
            needed: total / 2 + 1,
            heard: 0,
            votes: HashMap::new(),
        }
    }

    /// Counts one Sentinel's answer: the master it names, or `None` (no
    /// vote: it does not know the name, failed, or did not answer).
    fn count(&mut self, named: Option<String>) -> Verdict {
        self.heard += 1;
        if let Some(address) = named {
            let votes = self.votes.entry(address.clone()).or_default();
            *votes += 1;
            if *votes >= self.needed {
                return Verdict::Master(address);
            }
        }
        let best = self.votes.values().copied().max().unwrap_or(0);
        if best + self.total.saturating_sub(self.heard) < self.needed {
            Verdict::Impossible
        } else {
            Verdict::Open
        }
    }
}

struct Sentinels {
    links: Vec<Arc<SentinelLink>>,
    master_name: String,
    /// The master's connection settings (scheme, db, credentials) with a
    /// placeholder address.
    template: ConnectionInfo,
    security: Security,
}

impl Sentinels {
    /// How many Sentinels must name the same master: a majority of those
    /// configured, answering or not.
    fn majority(&self) -> usize {
        Tally::new(self.links.len()).needed
    }

    /// Asks every Sentinel in parallel. Each answer arrives on the returned
    /// channel as it comes; the questions run as tasks of their own and
    /// finish (bounded) even when the caller stops listening.
    fn ask_all(&self) -> mpsc::UnboundedReceiver<(usize, Result<Option<String>, String>)> {
        let (answers, received) = mpsc::unbounded_channel();
        for (i, link) in self.links.iter().enumerate() {
            let link = link.clone();
            let answers = answers.clone();
            let master_name = self.master_name.clone();
            tokio::spawn(async move {
                let answer = link.ask(&master_name).await;
                let _ = answers.send((i, answer));
            });
        }
        received
    }

    /// The address a majority of the Sentinels name, as soon as they do.
    async fn resolve(&self, deadline: Instant) -> Result<String, String> {
        let mut tally = Tally::new(self.links.len());
        let mut received = self.ask_all();
        let mut notes = Vec::new();
        while let Ok(Some((i, answer))) = timeout_at(deadline, received.recv()).await {
            let shown = &self.links[i].shown;
            let named = match answer {
                Ok(Some(address)) => {
                    notes.push(format!("{shown} names {address}"));
                    Some(address)
                }
                Ok(None) => {
                    notes.push(format!(
                        "{shown} does not know master {:?}",
                        self.master_name
                    ));
                    None
                }
                Err(err) => {
                    notes.push(format!("{shown}: {err}"));
                    None
                }
            };
            match tally.count(named) {
                Verdict::Master(address) => return Ok(address),
                Verdict::Open => {}
                Verdict::Impossible => break,
            }
        }
        let silent = tally.total - tally.heard;
        if silent > 0 {
            notes.push(format!("{silent} did not answer in time"));
        }
        Err(format!(
            "no master named by a majority ({} of {}) of the Sentinels: {}",
            tally.needed,
            tally.total,
            notes.join("; ")
        ))
    }

    /// Every Sentinel's answer (for `leaderd check`), waiting until
    /// `deadline` at most.
    async fn views(&self, deadline: Instant) -> Vec<SentinelView> {
        let mut answers: Vec<Option<Result<Option<String>, String>>> =
            self.links.iter().map(|_| None).collect();
        let mut received = self.ask_all();
        while let Ok(Some((i, answer))) = timeout_at(deadline, received.recv()).await {
            answers[i] = Some(answer);
        }
        self.links
            .iter()
            .zip(answers)
            .map(|(link, answer)| SentinelView {
                sentinel: link.shown.clone(),
                answer: answer.unwrap_or_else(|| Err("no answer in time".to_string())),
            })
            .collect()
    }

    fn abort(&self) {
        for link in &self.links {
            link.slot.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// The logical server
// ---------------------------------------------------------------------------

enum Endpoint {
    Direct(Client),
    Cluster {
        client: Box<redis::cluster::ClusterClient>,
        /// PUBLISH reaches every node of a cluster: any one can notify.
        seed: Client,
    },
    Sentinel(Sentinels),
}

/// What every connect prepares, set once by [`Connection::prepare`].
struct Prepared {
    /// Loaded with every connect, so that no operation pays for
    /// `NOSCRIPT` and `SCRIPT LOAD`.
    scripts: Vec<Script>,
    /// Cluster: the master that owns the election's slot, where `WAIT` and
    /// the script loads go.
    route: RoutingInfo,
}

struct Inner {
    endpoint: Endpoint,
    /// What to show in logs and errors: URLs with passwords hidden.
    shown: String,
    slot: Arc<Slot<AnyConnection>>,
    prepared: OnceLock<Prepared>,
}

pub struct Connection {
    inner: Arc<Inner>,
}

fn config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None)
}

fn error(shown: &str, err: impl std::fmt::Display) -> BackendError {
    BackendError::new(format!("{shown}: {err}"))
}

/// A connect's error, which `Inner::get` prefixes with the server (once).
fn unprefixed(err: impl std::fmt::Display) -> BackendError {
    BackendError::new(err.to_string())
}

impl Connection {
    fn from_endpoint(endpoint: Endpoint, shown: String) -> Connection {
        Connection {
            inner: Arc::new(Inner {
                endpoint,
                shown,
                slot: Slot::new(),
                prepared: OnceLock::new(),
            }),
        }
    }

    /// One server at `url`.
    pub fn direct(url: &str, security: &Security) -> Result<Connection, BackendError> {
        let shown = redact_url(url);
        let info = url
            .into_connection_info()
            .map_err(|err| error(&shown, err))?;
        let client = security.client(info).map_err(|err| error(&shown, err))?;
        Ok(Connection::from_endpoint(Endpoint::Direct(client), shown))
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
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(CONNECT_TIMEOUT);
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
        Ok(Connection::from_endpoint(
            Endpoint::Cluster {
                client: Box::new(client),
                seed,
            },
            shown,
        ))
    }

    /// The master `master_name`, as a majority of the Sentinels at
    /// `sentinel_urls` say. `master_tls`: the master speaks `rediss`.
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
        let links = sentinel_urls
            .iter()
            .map(|url| {
                let info = url.as_str().into_connection_info()?;
                Ok(Arc::new(SentinelLink {
                    client: sentinel_security.client(info)?,
                    shown: redact_url(url),
                    slot: Slot::new(),
                }))
            })
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(|err| error(&shown, err))?;
        let scheme = if master_tls { "rediss" } else { "redis" };
        let template = format!("{scheme}://placeholder:6379")
            .as_str()
            .into_connection_info()
            .map_err(|err| error(&shown, err))?;
        Ok(Connection::from_endpoint(
            Endpoint::Sentinel(Sentinels {
                links,
                master_name: master_name.to_string(),
                template,
                security: security.clone(),
            }),
            shown,
        ))
    }

    pub fn shown_url(&self) -> &str {
        &self.inner.shown
    }

    /// Loads `scripts` with every connect and routes cluster commands
    /// without a key (`WAIT`) to the master of `route_key`'s slot; then
    /// connects at once, in the background. The first call counts.
    pub fn prepare(&self, scripts: Vec<Script>, route_key: &str) {
        let _ = self.inner.prepared.set(Prepared {
            scripts,
            route: RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                route_key,
                SlotAddr::Master,
            ))),
        });
        self.inner.connect_ahead();
    }

    /// Runs `op` on the connection, waiting for a connect if there is none
    /// (until `deadline` at most). An error of the connection itself
    /// replaces it; running out of time only has it checked (see the module
    /// documentation).
    pub async fn run<T, F, Fut>(&self, deadline: Instant, op: F) -> Result<T, BackendError>
    where
        F: FnOnce(AnyConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let live = self.inner.get(deadline).await?;
        let id = live.id;
        match timeout_at(deadline, op(live.conn.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                if breaks_connection(&err) {
                    self.inner.lost(id);
                }
                // Redis at maxmemory refuses writes: a full store, not a
                // broken one (counted and retried as such).
                if err.code() == Some("OOM") {
                    return Err(BackendError::store_full(format!(
                        "{}: Redis is full (maxmemory) and refused to write: {err}",
                        self.inner.shown
                    )));
                }
                Err(error(&self.inner.shown, err))
            }
            Err(_) => {
                self.inner.probe(live);
                Err(error(&self.inner.shown, "timed out"))
            }
        }
    }

    /// `WAIT replicas wait_ms` on the connection that made our writes (in a
    /// cluster: the master of the election's slot, not every master).
    /// Returns how many replicas acknowledged.
    pub async fn wait_for_replicas(
        &self,
        replicas: u32,
        wait_ms: u64,
        deadline: Instant,
    ) -> Result<i64, BackendError> {
        let route = self.inner.prepared.get().map(|p| &p.route);
        self.run(deadline, |mut conn| async move {
            let mut wait = redis::cmd("WAIT");
            wait.arg(replicas).arg(wait_ms);
            conn.query_routed(wait, route).await
        })
        .await
    }

    /// The address of the server we talk to (the current master with
    /// Sentinel), connecting if needed.
    pub async fn address(&self, deadline: Instant) -> Result<String, BackendError> {
        Ok(self.inner.get(deadline).await?.address)
    }

    /// With Sentinel: asks the Sentinels again which server is master (one
    /// round trip on warm connections); a change drops the connection and
    /// starts connecting to the new master. Returns the master's address.
    /// Other kinds: the address.
    pub async fn refresh(&self, deadline: Instant) -> Result<String, BackendError> {
        let Endpoint::Sentinel(sentinels) = &self.inner.endpoint else {
            return self.address(deadline).await;
        };
        let master = sentinels
            .resolve(deadline)
            .await
            .map_err(|err| error(&self.inner.shown, err))?;
        self.inner.obtain(Some(&master));
        Ok(master)
    }

    /// A client for pub/sub notices (the current master with Sentinel, a
    /// seed node of a cluster, where PUBLISH reaches every node).
    pub async fn pubsub_client(&self, deadline: Instant) -> Result<Client, BackendError> {
        match &self.inner.endpoint {
            Endpoint::Direct(client) => Ok(client.clone()),
            Endpoint::Cluster { seed, .. } => Ok(seed.clone()),
            Endpoint::Sentinel(sentinels) => {
                let master = sentinels
                    .resolve(deadline)
                    .await
                    .map_err(|err| error(&self.inner.shown, err))?;
                master_client(&sentinels.template, &sentinels.security, &master)
                    .map_err(|err| error(&self.inner.shown, err))
            }
        }
    }

    /// With Sentinel: what each Sentinel names, and how many must agree.
    pub async fn sentinel_views(&self, deadline: Instant) -> Option<(Vec<SentinelView>, usize)> {
        let Endpoint::Sentinel(sentinels) = &self.inner.endpoint else {
            return None;
        };
        Some((sentinels.views(deadline).await, sentinels.majority()))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.inner.slot.abort();
        if let Endpoint::Sentinel(sentinels) = &self.inner.endpoint {
            sentinels.abort();
        }
    }
}

impl Inner {
    /// The live connection, else the connect in flight, else a new one
    /// (to `target`, with Sentinel, or to where the Sentinels point).
    fn obtain(self: &Arc<Self>, target: Option<&str>) -> Obtained<AnyConnection> {
        let inner = self.clone();
        let to = target.map(str::to_string);
        self.slot
            .obtain(target, move || async move { inner.open(to).await })
    }

    fn connect_ahead(self: &Arc<Self>) {
        let _ = self.obtain(None);
    }

    async fn get(self: &Arc<Self>, deadline: Instant) -> Result<Live<AnyConnection>, BackendError> {
        self.obtain(None)
            .wait(deadline)
            .await
            .map_err(|err| error(&self.shown, err))
    }

    /// Connection `id` failed: replace it now rather than at the next
    /// operation.
    fn lost(self: &Arc<Self>, id: u64) {
        if self.slot.forget(id) {
            self.connect_ahead();
        }
    }

    /// An operation on `live` ran out of time: a `PING` behind it tells
    /// whether the connection still answers at all. Only a connection that
    /// stays silent for [`STALL_TIMEOUT`] is replaced.
    fn probe(self: &Arc<Self>, live: Live<AnyConnection>) {
        if !self.slot.start_probe(live.id) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let route = inner.prepared.get().map(|p| &p.route);
            let mut conn = live.conn.clone();
            let answered = timeout(
                STALL_TIMEOUT,
                conn.query_routed::<Value>(redis::cmd("PING"), route),
            )
            .await;
            inner.slot.end_probe(live.id);
            if !matches!(answered, Ok(Ok(_))) {
                tracing::debug!(server = %inner.shown, "connection stalled; reconnecting");
                inner.lost(live.id);
            }
        });
    }

    /// Opens a connection and prepares it (scripts, and with Sentinel the
    /// master's `ROLE`). Runs as a connect task, never under an
    /// operation's deadline.
    async fn open(
        self: Arc<Self>,
        target: Option<String>,
    ) -> Result<(AnyConnection, String), BackendError> {
        match &self.endpoint {
            Endpoint::Direct(client) => {
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config())
                    .await
                    .map_err(unprefixed)?;
                let conn = AnyConnection::Single(conn);
                self.load_scripts(&conn).await;
                Ok((conn, self.shown.clone()))
            }
            Endpoint::Cluster { client, .. } => {
                let conn = client.get_async_connection().await.map_err(unprefixed)?;
                let conn = AnyConnection::Cluster(conn);
                self.load_scripts(&conn).await;
                Ok((conn, self.shown.clone()))
            }
            Endpoint::Sentinel(sentinels) => {
                let master = match target {
                    Some(master) => master,
                    None => sentinels
                        .resolve(Instant::now() + CONNECT_TIMEOUT)
                        .await
                        .map_err(unprefixed)?,
                };
                let client = master_client(&sentinels.template, &sentinels.security, &master)
                    .map_err(unprefixed)?;
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config())
                    .await
                    .map_err(|err| unprefixed(format!("master {master}: {err}")))?;
                let mut asked = conn.clone();
                let conn = AnyConnection::Single(conn);
                // Both in one round trip.
                let role_cmd = redis::cmd("ROLE");
                let (role, ()) = futures::join!(
                    role_cmd.query_async::<Vec<Value>>(&mut asked),
                    self.load_scripts(&conn)
                );
                let role = role.map_err(|err| unprefixed(format!("master {master}: {err}")))?;
                // A Sentinel majority can lag behind a failover: only a
                // server that says it is master may hold the lease.
                if !matches!(role.first(), Some(Value::BulkString(b)) if b == b"master") {
                    return Err(unprefixed(format!(
                        "{master} is not a master (failover in progress?)"
                    )));
                }
                Ok((conn, master))
            }
        }
    }

    /// `SCRIPT LOAD`s every prepared script at once (pipelined). Best
    /// effort: a script that did not load is loaded on first use.
    async fn load_scripts(&self, conn: &AnyConnection) {
        let Some(prepared) = self.prepared.get() else {
            return;
        };
        let loads = prepared.scripts.iter().map(|script| {
            let mut conn = conn.clone();
            async move { script.load_async(&mut conn).await }
        });
        for loaded in futures::future::join_all(loads).await {
            if let Err(err) = loaded {
                tracing::debug!(server = %self.shown, %err, "could not preload a script");
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn named(address: &str) -> Option<String> {
        Some(address.to_string())
    }

    #[test]
    fn a_majority_of_the_configured_sentinels_decides_at_once() {
        let mut tally = Tally::new(3);
        assert_eq!(tally.count(named("a:1")), Verdict::Open);
        // The third (hung) Sentinel is not waited for.
        assert_eq!(tally.count(named("a:1")), Verdict::Master("a:1".into()));
    }

    #[test]
    fn silence_and_errors_are_no_votes() {
        // One Sentinel reachable (the minority side of a partition).
        let mut tally = Tally::new(3);
        assert_eq!(tally.count(named("old:1")), Verdict::Open);
        assert_eq!(tally.count(None), Verdict::Open);
        assert_eq!(tally.count(None), Verdict::Impossible);
    }

    #[test]
    fn disagreement_without_a_majority_ends_early() {
        let mut tally = Tally::new(3);
        assert_eq!(tally.count(named("a:1")), Verdict::Open);
        assert_eq!(tally.count(named("b:1")), Verdict::Open);
        assert_eq!(tally.count(named("c:1")), Verdict::Impossible);
        let mut tally = Tally::new(5);
        for address in ["a:1", "b:1", "a:1", "b:1"] {
            assert_eq!(tally.count(named(address)), Verdict::Open);
        }
        assert_eq!(tally.count(None), Verdict::Impossible);
    }

    #[test]
    fn even_counts_need_more_than_half() {
        // Two Sentinels: both must agree.
        let mut tally = Tally::new(2);
        assert_eq!(tally.count(named("a:1")), Verdict::Open);
        assert_eq!(tally.count(None), Verdict::Impossible);
        // Four: three must; two against two is no master.
        let mut tally = Tally::new(4);
        assert_eq!(tally.count(named("a:1")), Verdict::Open);
        assert_eq!(tally.count(named("a:1")), Verdict::Open);
        assert_eq!(tally.count(named("b:1")), Verdict::Open);
        assert_eq!(tally.count(named("b:1")), Verdict::Impossible);
        let mut tally = Tally::new(4);
        for _ in 0..2 {
            assert_eq!(tally.count(named("a:1")), Verdict::Open);
        }
        assert_eq!(tally.count(named("a:1")), Verdict::Master("a:1".into()));
    }

    #[test]
    fn one_sentinel_is_its_own_majority() {
        let mut tally = Tally::new(1);
        assert_eq!(tally.count(named("a:1")), Verdict::Master("a:1".into()));
        let mut tally = Tally::new(1);
        assert_eq!(tally.count(None), Verdict::Impossible);
    }
}
