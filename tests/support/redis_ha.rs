//! Support for the Redis high-availability tests (`tests/redis_ha.rs`):
//! redis-server processes with arbitrary options (replicas, TLS, ACL users,
//! cluster nodes), Sentinels, a Redis Cluster (with or without replicas), a
//! test CA made with rcgen, servers and leaderd in network namespaces,
//! and a monitor that checks "never two leaders" in the background.
//!
//! Everything runs on 127.0.0.1 (or in namespaces the test creates), in
//! tempdirs, and every process is killed
//! and reaped on drop. Every wait is bounded.
//!
//! The Sentinel partition runs in two network namespaces the test creates
//! (see `netns.rs`): the minority side's leader, master and Sentinel apart
//! from the majority side's.
//!
//! Included with `#[path = "support/redis_ha.rs"] mod redis_ha;` next to
//! `mod support;` and `#[path = "support/netns.rs"] mod netns;` (it uses
//! `crate::support` and `crate::netns`).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::netns::{ADDR_A, ADDR_B, Netns, NetnsPair};
use crate::support::{PROBE_TIMEOUT, free_port, http_get, render_raw, wait_until};

/// Timeout of one helper command to a Redis server or a Sentinel.
const CMD_TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Commands to a server
// ---------------------------------------------------------------------------

/// Runs one command on a fresh connection to `127.0.0.1:port`, logged in as
/// `auth` (user, password) when given. `Err` on a transport failure; an
/// error reply is `Ok(Value::ServerError(..))`.
pub fn query(
    port: u16,
    auth: Option<(&str, &str)>,
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    query_at("127.0.0.1", port, auth, args)
}

/// [`query`] to `host:port` (a server in a network namespace, from a
/// thread that joined it).
pub fn query_at(
    host: &str,
    port: u16,
    auth: Option<(&str, &str)>,
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    use redis::{ConnectionLike, IntoConnectionInfo};
    let mut settings = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some((user, password)) = auth {
        settings = settings.set_username(user).set_password(password);
    }
    let info = (host, port)
        .into_connection_info()?
        .set_redis_settings(settings);
    let mut con = redis::Client::open(info)?.get_connection_with_timeout(CMD_TIMEOUT)?;
    con.set_read_timeout(Some(CMD_TIMEOUT))?;
    con.set_write_timeout(Some(CMD_TIMEOUT))?;
    let mut cmd = redis::Cmd::new();
    for arg in args {
        cmd.arg(*arg);
    }
    con.req_command(&cmd)
}

/// [`query`] rendered like `redis-cli --raw`; transport errors as `ERR(...)`.
pub fn query_text(port: u16, auth: Option<(&str, &str)>, args: &[&str]) -> String {
    match query(port, auth, args) {
        Ok(reply) => render_raw(&reply),
        Err(e) => format!("ERR(transport: {e})"),
    }
}

/// The `field:value` lines of an `INFO` (or `CLUSTER INFO`) reply.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{field}:")))
        .map(str::to_string)
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// A child process, killed (after SIGCONT, in case it is stopped) and
/// reaped on drop.
pub struct Proc {
    child: Option<Child>,
    log_path: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log_path: &Path) -> Result<Proc, String> {
        let log = fs::File::create(log_path).map_err(|e| format!("create {log_path:?}: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        Ok(Proc {
            child: Some(child),
            log_path: log_path.to_path_buf(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the process has exited (or was killed by us).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut() {
            None => Some("killed".into()),
            Some(child) => child.try_wait().ok().flatten().map(|s| s.to_string()),
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL and reap. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// redis-server with any options
// ---------------------------------------------------------------------------

/// How to tell that a freshly started server is ready.
#[derive(Clone, Copy, Debug)]
pub enum Ready {
    /// Any reply to PING on the plain port (an error reply such as NOAUTH
    /// counts: the server is up).
    Ping,
    /// TLS only: the log says so and the port accepts TCP connections.
    Log,
}

/// A `redis-server` child on 127.0.0.1 with extra options, restartable with
/// the same options (and port) while its tempdir lives.
pub struct Node {
    pub port: u16,
    /// Extra options after the common ones.
    args: Vec<String>,
    ready: Ready,
    dir: PathBuf,
    proc: Option<Proc>,
    restarts: usize,
    _own_dir: Option<TempDir>,
}

impl Node {
    /// Starts a plain server with `args` on a free port (retrying a few
    /// ports). `args` get `{port}` replaced by the port.
    pub fn start(args: &[&str], ready: Ready) -> Node {
        let dir = tempfile::tempdir().expect("tempdir for redis");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut node = Node {
                port,
                args: args
                    .iter()
                    .map(|a| a.replace("{port}", &port.to_string()))
                    .collect(),
                ready,
                dir: dir.path().to_path_buf(),
                proc: None,
                restarts: 0,
                _own_dir: None,
            };
            match node.spawn() {
                Ok(()) => {
                    node._own_dir = Some(dir);
                    return node;
                }
                Err(e) => last = e,
            }
        }
        panic!("could not start redis-server {args:?}: {last}");
    }

    /// Plain server: `--port P`.
    pub fn plain(extra: &[&str]) -> Node {
        let mut args = vec!["--port", "{port}"];
        args.extend_from_slice(extra);
        Node::start(&args, Ready::Ping)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self
            .dir
            .join(format!("redis-{}-{}.log", self.port, self.restarts));
        self.restarts += 1;
        let mut cmd = Command::new("/usr/bin/redis-server");
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args);
        let mut proc = Proc::spawn(cmd, &log_path)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = proc.exited() {
                return Err(format!(
                    "redis-server on port {} exited ({status}):\n{}",
                    self.port,
                    proc.log()
                ));
            }
            let ready = match self.ready {
                Ready::Ping => query(self.port, None, &["PING"]).is_ok(),
                Ready::Log => {
                    proc.log().contains("Ready to accept connections")
                        && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                }
            };
            if ready {
                self.proc = Some(proc);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "redis-server on port {} not ready in 10s:\n{}",
                    self.port,
                    proc.log()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// Starts the server again with the same options on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..10 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!(
            "could not restart redis-server on port {}: {last}",
            self.port
        );
    }

    pub fn pid(&self) -> u32 {
        self.proc
            .as_ref()
            .and_then(Proc::pid)
            .expect("redis-server is running")
    }

    /// One command without authentication (see [`query_text`]).
    pub fn cmd(&self, args: &[&str]) -> String {
        query_text(self.port, None, args)
    }

    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }
}

/// A master (`redis://`) plus one replica, both fully synced.
pub struct Replicated {
    pub master: Node,
    pub replica: Node,
}

impl Replicated {
    pub fn start() -> Replicated {
        let master = Node::plain(&[]);
        let replica = Node::plain(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
        let r = Replicated { master, replica };
        r.wait_synced(Duration::from_secs(15));
        r
    }

    /// Waits until the replica's link to the master is up.
    pub fn wait_synced(&self, timeout: Duration) {
        wait_replica_synced(&self.replica, timeout);
    }
}

/// Waits until `replica` reports `master_link_status:up`.
pub fn wait_replica_synced(replica: &Node, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let info = replica.cmd(&["INFO", "replication"]);
        if info_field(&info, "master_link_status").as_deref() == Some("up") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica on port {} not synced within {timeout:?}:\n{info}\n{}",
            replica.port,
            replica.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------

pub const MASTER_NAME: &str = "mymaster";

/// A master, two replicas and three Sentinels (quorum 2,
/// down-after-milliseconds 1000), all discovered by each other. Only
/// `replica` can be promoted; `spare` (replica-priority 0) follows whichever
/// server is master, so that a new master has a replica to acknowledge
/// writes (`min_replica_acks` is 1 by default with Sentinel).
pub struct SentinelSetup {
    // Sentinels first: dropped (killed) before the servers they watch.
    pub sentinels: Vec<SentinelProc>,
    pub master: Node,
    pub replica: Node,
    pub spare: Node,
}

pub struct SentinelProc {
    pub port: u16,
    proc: Proc,
    _dir: TempDir,
}

impl SentinelProc {
    fn start(master_port: u16) -> SentinelProc {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir for sentinel");
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            let text = format!(
                "port {port}\n\
                 bind 127.0.0.1\n\
                 daemonize no\n\
                 protected-mode no\n\
                 dir {}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 3000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir.path().display()
            );
            fs::write(&conf, text).expect("write sentinel.conf");
            let mut cmd = Command::new("/usr/bin/redis-server");
            cmd.arg(&conf).arg("--sentinel");
            let log_path = dir.path().join("sentinel.log");
            let mut proc = match Proc::spawn(cmd, &log_path) {
                Ok(p) => p,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = proc.exited() {
                    last = format!("sentinel exited ({status}):\n{}", proc.log());
                    break;
                }
                if query(port, None, &["PING"]).is_ok() {
                    return SentinelProc {
                        port,
                        proc,
                        _dir: dir,
                    };
                }
                if Instant::now() >= deadline {
                    last = format!("sentinel not ready in 10s:\n{}", proc.log());
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("could not start a Sentinel: {last}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid().expect("the Sentinel is running")
    }

    pub fn cmd(&self, args: &[&str]) -> String {
        query_text(self.port, None, args)
    }

    /// `SENTINEL MASTER mymaster` as field → value.
    pub fn master_fields(&self) -> Vec<(String, String)> {
        let text = self.cmd(&["SENTINEL", "MASTER", MASTER_NAME]);
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .filter(|pair| pair.len() == 2)
            .map(|pair| (pair[0].to_string(), pair[1].to_string()))
            .collect()
    }

    /// The master's `host:port` as this Sentinel names it.
    pub fn master_addr(&self) -> Option<String> {
        match query(
            self.port,
            None,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
        ) {
            Ok(redis::Value::Array(items)) if items.len() == 2 => Some(format!(
                "{}:{}",
                render_raw(&items[0]),
                render_raw(&items[1])
            )),
            _ => None,
        }
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

impl SentinelSetup {
    /// Starts everything and waits until every Sentinel knows the replica
    /// and the two other Sentinels (discovery takes a few seconds: the
    /// Sentinels' hello messages go out every 2 s).
    pub fn start() -> SentinelSetup {
        let master = Node::plain(&[]);
        let port = master.port.to_string();
        let replica = Node::plain(&["--replicaof", "127.0.0.1", &port]);
        let spare = Node::plain(&["--replicaof", "127.0.0.1", &port, "--replica-priority", "0"]);
        wait_replica_synced(&replica, Duration::from_secs(15));
        wait_replica_synced(&spare, Duration::from_secs(15));
        let sentinels = (0..3).map(|_| SentinelProc::start(master.port)).collect();
        let setup = SentinelSetup {
            sentinels,
            master,
            replica,
            spare,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = setup.sentinels.iter().all(|s| {
                let fields = s.master_fields();
                let get = |k: &str| {
                    fields
                        .iter()
                        .find(|(f, _)| f == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                get("num-slaves") == "2" && get("num-other-sentinels") == "2"
            });
            if ready {
                return setup;
            }
            assert!(
                Instant::now() < deadline,
                "Sentinels did not discover each other and the replica in 20s:\n{}",
                setup.describe()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(SentinelProc::url).collect()
    }

    /// The master's address if every Sentinel names the same one.
    pub fn agreed_master(&self) -> Option<String> {
        let addrs: Vec<Option<String>> = self
            .sentinels
            .iter()
            .map(SentinelProc::master_addr)
            .collect();
        let first = addrs.first()?.clone()?;
        addrs
            .iter()
            .all(|a| a.as_deref() == Some(first.as_str()))
            .then_some(first)
    }

    /// The server at `addr` (`127.0.0.1:port`).
    pub fn node_at(&self, addr: &str) -> &Node {
        [&self.master, &self.replica, &self.spare]
            .into_iter()
            .find(|n| n.addr() == addr)
            .unwrap_or_else(|| panic!("{addr} is not a server of the setup"))
    }

    /// Sentinels' view and logs, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "master {} replica {} spare {}\n",
            self.master.addr(),
            self.replica.addr(),
            self.spare.addr()
        );
        for s in &self.sentinels {
            out.push_str(&format!(
                "--- sentinel {}: {:?}\n{}\n",
                s.port,
                s.master_fields(),
                s.log()
            ));
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------

/// Three cluster masters, slots assigned, `cluster_state:ok`; with
/// [`Cluster::with_replicas`] one replica each as well.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Three masters, no replicas.
    pub fn start() -> Cluster {
        Cluster::start_with(0)
    }

    /// Three masters with one replica each, every replica synced.
    pub fn with_replicas() -> Cluster {
        let cluster = Cluster::start_with(1);
        for node in &cluster.nodes {
            if node.cmd(&["ROLE"]).starts_with("slave") {
                wait_replica_synced(node, Duration::from_secs(20));
            }
        }
        cluster
    }

    fn start_with(replicas: usize) -> Cluster {
        let nodes: Vec<Node> = (0..3 * (1 + replicas))
            .map(|_| {
                let bus = free_port().to_string();
                Node::plain(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes-{port}.conf",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let mut cmd = Command::new("/usr/bin/redis-cli");
        cmd.args(["--cluster", "create"]);
        for node in &nodes {
            cmd.arg(node.addr());
        }
        cmd.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let out = run_bounded(cmd, Duration::from_secs(30));
        assert!(out.0, "redis-cli --cluster create failed:\n{}", out.1);
        let cluster = Cluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = cluster.nodes.iter().all(|n| {
                info_field(&n.cmd(&["CLUSTER", "INFO"]), "cluster_state").as_deref() == Some("ok")
            });
            if ok {
                return cluster;
            }
            assert!(
                Instant::now() < deadline,
                "cluster_state not ok within 20s: {:?}",
                cluster
                    .nodes
                    .iter()
                    .map(|n| n.cmd(&["CLUSTER", "INFO"]))
                    .collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The master that owns the slot of `key`.
    pub fn owner_of(&self, key: &str) -> &Node {
        let slot: u16 = self.nodes[0]
            .cmd(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("CLUSTER KEYSLOT is a number");
        self.nodes
            .iter()
            .find(|n| n.cmd(&["ROLE"]).starts_with("master") && self.serves(n, slot))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// Whether master `node` serves `slot` (its own line of CLUSTER NODES).
    fn serves(&self, node: &Node, slot: u16) -> bool {
        let nodes = node.cmd(&["CLUSTER", "NODES"]);
        let Some(line) = nodes.lines().find(|l| l.contains("myself")) else {
            return false;
        };
        line.split_whitespace().skip(8).any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            match (lo.parse::<u16>(), hi.parse::<u16>()) {
                (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                _ => false,
            }
        })
    }

    /// The index in `nodes` of the replica of `master`.
    pub fn replica_of(&self, master: &Node) -> usize {
        self.nodes
            .iter()
            .position(|n| {
                let role = n.cmd(&["ROLE"]);
                let lines: Vec<&str> = role.lines().collect();
                lines.first() == Some(&"slave")
                    && lines.get(2) == Some(&master.port.to_string().as_str())
            })
            .unwrap_or_else(|| panic!("master {} has no replica", master.addr()))
    }
}

/// Runs a command to completion within `timeout` (killed otherwise);
/// returns (success, stdout + stderr).
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir for command output");
    let log_path = dir.path().join("out.log");
    cmd.stdin(Stdio::null());
    let mut proc = Proc::spawn(cmd, &log_path).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(child) = proc.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            proc.child = None;
            return (
                status.success(),
                fs::read_to_string(&log_path).unwrap_or_default(),
            );
        }
        if Instant::now() >= deadline {
            proc.kill();
            panic!(
                "command did not finish within {timeout:?}:\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM files.
pub struct TestCa {
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    _dir: TempDir,
}

impl TestCa {
    pub fn generate() -> TestCa {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().expect("tempdir for certificates");

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "leaderd test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &issuer)
            .expect("sign the server cert");

        let ca_pem = dir.path().join("ca.pem");
        let cert_pem = dir.path().join("server.pem");
        let key_pem = dir.path().join("server.key");
        fs::write(&ca_pem, ca_cert.pem()).expect("write ca.pem");
        fs::write(&cert_pem, cert.pem()).expect("write server.pem");
        fs::write(&key_pem, key.serialize_pem()).expect("write server.key");
        TestCa {
            ca_pem,
            cert_pem,
            key_pem,
            _dir: dir,
        }
    }

    /// A redis-server that speaks TLS only (`--port 0`), no client certs.
    pub fn tls_server(&self) -> Node {
        let path = |p: &Path| p.display().to_string();
        Node::start(
            &[
                "--port",
                "0",
                "--tls-port",
                "{port}",
                "--tls-cert-file",
                &path(&self.cert_pem),
                "--tls-key-file",
                &path(&self.key_pem),
                "--tls-ca-cert-file",
                &path(&self.ca_pem),
                "--tls-auth-clients",
                "no",
            ],
            Ready::Log,
        )
    }
}

// ---------------------------------------------------------------------------
// leaderd configuration
// ---------------------------------------------------------------------------

/// Election timings.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lease: Duration,
    pub renew_deadline: Duration,
    pub retry: Duration,
}

/// lease 3s / renew_deadline 2s / retry 300ms (the Sentinel tests').
pub const SLOW: Timing = Timing {
    lease: Duration::from_secs(3),
    renew_deadline: Duration::from_secs(2),
    retry: Duration::from_millis(300),
};

/// lease 1s / renew_deadline 600ms / retry 150ms.
pub const FAST: Timing = Timing {
    lease: Duration::from_millis(1000),
    renew_deadline: Duration::from_millis(600),
    retry: Duration::from_millis(150),
};

/// A whole config file; `redis` is the body of `backend.redis` (lines
/// indented by four spaces).
pub fn ha_config(name: &str, t: Timing, redis: &str) -> String {
    format!(
        "election:\n  name: {name}\n  lease_duration: {}ms\n  renew_deadline: {}ms\n  retry_period: {}ms\nbackend:\n  redis:\n{redis}http:\n  listen: \"127.0.0.1:0\"\n",
        t.lease.as_millis(),
        t.renew_deadline.as_millis(),
        t.retry.as_millis(),
    )
}

/// A YAML flow list of quoted strings.
pub fn yaml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

// ---------------------------------------------------------------------------
// "Never two leaders" in the background
// ---------------------------------------------------------------------------

/// Polls GET /leader of every candidate concurrently, round after round,
/// until stopped; remembers every round in which two or more answered 200.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<MonitorState>>,
    thread: Option<thread::JoinHandle<()>>,
}

#[derive(Default, Debug, Clone)]
pub struct MonitorState {
    pub rounds: usize,
    /// Rounds with more than one 200: (ms since start, addresses).
    pub overlaps: Vec<(u128, Vec<String>)>,
    /// Rounds with exactly one 200.
    pub led_rounds: usize,
}

/// One candidate as the [`Monitor`] sees it: a name and a way to get the
/// status code of its GET /leader (`None`: no timely answer).
pub type Probe = (String, Arc<dyn Fn() -> Option<u16> + Send + Sync>);

impl Monitor {
    /// Probes candidates on 127.0.0.1, named by their addresses.
    pub fn start(addrs: Vec<String>) -> Monitor {
        Monitor::with_probes(
            addrs
                .into_iter()
                .map(|addr| {
                    let probe_addr = addr.clone();
                    let probe: Probe = (
                        addr,
                        Arc::new(move || {
                            http_get(&probe_addr, "/leader", PROBE_TIMEOUT).map(|r| r.0)
                        }),
                    );
                    probe
                })
                .collect(),
        )
    }

    pub fn with_probes(probes: Vec<Probe>) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let (stop2, state2) = (stop.clone(), state.clone());
        let thread = thread::spawn(move || {
            let began = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                let codes: Vec<Option<u16>> = thread::scope(|s| {
                    let running: Vec<_> = probes
                        .iter()
                        .map(|(_, probe)| s.spawn(move || probe()))
                        .collect();
                    running
                        .into_iter()
                        .map(|p| p.join().unwrap_or(None))
                        .collect()
                });
                let leaders: Vec<String> = probes
                    .iter()
                    .zip(&codes)
                    .filter(|(_, c)| **c == Some(200))
                    .map(|((name, _), _)| name.clone())
                    .collect();
                let mut st = state2.lock().expect("monitor state");
                st.rounds += 1;
                if leaders.len() > 1 {
                    st.overlaps.push((began.elapsed().as_millis(), leaders));
                } else if leaders.len() == 1 {
                    st.led_rounds += 1;
                }
                drop(st);
                thread::sleep(Duration::from_millis(10));
            }
        });
        Monitor {
            stop,
            state,
            thread: Some(thread),
        }
    }

    pub fn snapshot(&self) -> MonitorState {
        self.state.lock().expect("monitor state").clone()
    }

    /// Stops polling; the final state.
    pub fn finish(mut self) -> MonitorState {
        self.halt();
        self.snapshot()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.halt();
    }
}

// ---------------------------------------------------------------------------
// Sentinel across a network partition (network namespaces)
// ---------------------------------------------------------------------------

/// A redis-server or a Sentinel in a network namespace, bound to
/// `host:port` there (fresh namespaces: fixed ports cannot clash).
pub struct NsServer {
    pub host: &'static str,
    pub port: u16,
    ns: Arc<Netns>,
    proc: Proc,
    _dir: TempDir,
}

impl NsServer {
    /// A redis-server with `extra` options.
    pub fn redis(ns: &Arc<Netns>, host: &'static str, port: u16, extra: &[&str]) -> NsServer {
        let dir = tempfile::tempdir().expect("tempdir for redis");
        let mut cmd = ns.command("/usr/bin/redis-server");
        cmd.args(["--bind", host])
            .args(["--port", &port.to_string()])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra);
        NsServer::spawn(ns, host, port, cmd, dir)
    }

    /// A Sentinel watching the master at `master` (quorum 2, a master is
    /// down after 1 s without an answer). After a failover it points every
    /// replica at the new master at once, so that an unreachable one does
    /// not hold up the others.
    pub fn sentinel(
        ns: &Arc<Netns>,
        host: &'static str,
        port: u16,
        master: (&str, u16),
    ) -> NsServer {
        let dir = tempfile::tempdir().expect("tempdir for sentinel");
        let conf = dir.path().join("sentinel.conf");
        let text = format!(
            "port {port}\n\
             bind {host}\n\
             daemonize no\n\
             protected-mode no\n\
             dir {}\n\
             sentinel monitor {MASTER_NAME} {} {} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 3000\n\
             sentinel parallel-syncs {MASTER_NAME} 3\n",
            dir.path().display(),
            master.0,
            master.1,
        );
        fs::write(&conf, text).expect("write sentinel.conf");
        let mut cmd = ns.command("/usr/bin/redis-server");
        cmd.arg(&conf).arg("--sentinel");
        NsServer::spawn(ns, host, port, cmd, dir)
    }

    fn spawn(ns: &Arc<Netns>, host: &'static str, port: u16, cmd: Command, dir: TempDir) -> Self {
        let log_path = dir.path().join("server.log");
        let mut proc = Proc::spawn(cmd, &log_path).unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = proc.exited() {
                panic!("{host}:{port} exited ({status}):\n{}", proc.log());
            }
            if ns.run(|| query_at(host, port, None, &["PING"]).is_ok()) {
                return NsServer {
                    host,
                    port,
                    ns: ns.clone(),
                    proc,
                    _dir: dir,
                };
            }
            assert!(
                Instant::now() < deadline,
                "{host}:{port} not ready in 10s:\n{}",
                proc.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.host, self.port)
    }

    /// One command from inside the namespace (see [`query_text`]).
    pub fn cmd(&self, args: &[&str]) -> String {
        self.ns
            .run(|| match query_at(self.host, self.port, None, args) {
                Ok(reply) => render_raw(&reply),
                Err(e) => format!("ERR(transport: {e})"),
            })
    }

    /// The master's `host:port` as this Sentinel names it.
    pub fn master_addr(&self) -> Option<String> {
        let text = self.cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
        let mut lines = text.lines();
        match (lines.next(), lines.next(), lines.next()) {
            (Some(host), Some(port), None) if !host.starts_with("ERR") => {
                Some(format!("{host}:{port}"))
            }
            _ => None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid().expect("the server is running")
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// The partition of the issue: namespace `a` holds the master M1, its
/// replica R1 and Sentinel s1; namespace `b` holds two more replicas of M1
/// and Sentinels s2 and s3. Cutting the link leaves `b` with the Sentinel
/// majority (it promotes one of its replicas) and `a` with a master that
/// still takes writes, acknowledged by a replica.
pub struct SentinelPartition {
    // Processes first: dropped (killed) before the namespaces go.
    /// s1 (in `a`), s2 and s3 (in `b`).
    pub sentinels: Vec<NsServer>,
    /// M1 and R1 (in `a`), B1 and B2 (in `b`).
    pub servers: Vec<NsServer>,
    pub net: NetnsPair,
}

impl SentinelPartition {
    pub fn start() -> SentinelPartition {
        let net = NetnsPair::create();
        let (a, b) = (net.a.clone(), net.b.clone());
        let m1 = NsServer::redis(&a, ADDR_A, 6379, &[]);
        let replica = ["--replicaof", ADDR_A, "6379"];
        let servers = vec![
            m1,
            NsServer::redis(&a, ADDR_A, 6380, &replica),
            NsServer::redis(&b, ADDR_B, 6379, &replica),
            NsServer::redis(&b, ADDR_B, 6380, &replica),
        ];
        for r in &servers[1..] {
            wait_until(Duration::from_secs(15), "a replica is synced", || {
                info_field(&r.cmd(&["INFO", "replication"]), "master_link_status").as_deref()
                    == Some("up")
            });
        }
        let master = (ADDR_A, 6379);
        let sentinels = vec![
            NsServer::sentinel(&a, ADDR_A, 26379, master),
            NsServer::sentinel(&b, ADDR_B, 26379, master),
            NsServer::sentinel(&b, ADDR_B, 26380, master),
        ];
        let setup = SentinelPartition {
            sentinels,
            servers,
            net,
        };
        wait_until(
            Duration::from_secs(30),
            "the Sentinels know each other and the three replicas",
            || {
                setup.sentinels.iter().all(|s| {
                    let text = s.cmd(&["SENTINEL", "MASTER", MASTER_NAME]);
                    let lines: Vec<&str> = text.lines().collect();
                    let get = |k: &str| {
                        lines
                            .chunks(2)
                            .find(|pair| pair[0] == k)
                            .and_then(|pair| pair.get(1).copied())
                    };
                    get("num-slaves") == Some("3") && get("num-other-sentinels") == Some("2")
                })
            },
        );
        setup
    }

    /// The server at `addr`.
    pub fn server_at(&self, addr: &str) -> &NsServer {
        self.servers
            .iter()
            .find(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("no server at {addr}"))
    }

    /// The master's address if every Sentinel in `which` names the same.
    pub fn agreed_master(&self, which: &[usize]) -> Option<String> {
        let addrs: Vec<Option<String>> = which
            .iter()
            .map(|&i| self.sentinels[i].master_addr())
            .collect();
        let first = addrs.first()?.clone()?;
        addrs
            .iter()
            .all(|a| a.as_deref() == Some(first.as_str()))
            .then_some(first)
    }

    /// Sentinels' views and logs, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for s in &self.sentinels {
            out.push_str(&format!(
                "--- sentinel {} names {:?}\n{}\n",
                s.addr(),
                s.master_addr(),
                s.log()
            ));
        }
        out
    }
}

/// `leaderd run` inside a network namespace, its HTTP API on the
/// namespace's 127.0.0.1:`port`. Killed and reaped on drop.
pub struct NsLeaderd {
    identity: String,
    port: u16,
    ns: Arc<Netns>,
    child: Mutex<Child>,
    log_path: PathBuf,
    _dir: TempDir,
}

impl NsLeaderd {
    pub fn start(ns: &Arc<Netns>, config_yaml: &str, identity: &str, port: u16) -> NsLeaderd {
        let dir = tempfile::tempdir().expect("tempdir for leaderd");
        let config_path = dir.path().join("leaderd.yaml");
        fs::write(&config_path, config_yaml).expect("write leaderd config");
        let log_path = dir.path().join("leaderd.log");
        let log = fs::File::create(&log_path).expect("create leaderd log");
        let mut cmd = ns.command(crate::support::leaderd_bin());
        for var in [
            "LEADERD_CONFIG",
            "LEADERD_IDENTITY",
            "LEADERD_LISTEN",
            "POD_NAME",
        ] {
            cmd.env_remove(var);
        }
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--identity")
            .arg(identity)
            .env("LEADERD_LOG", "info,leaderd=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("spawn leaderd in a namespace");
        let d = NsLeaderd {
            identity: identity.to_string(),
            port,
            ns: ns.clone(),
            child: Mutex::new(child),
            log_path,
            _dir: dir,
        };
        wait_until(Duration::from_secs(10), "leaderd answers /healthz", || {
            let exited = d
                .child
                .lock()
                .expect("child lock")
                .try_wait()
                .ok()
                .flatten();
            assert!(exited.is_none(), "leaderd exited:\n{}", d.log());
            d.get("/healthz").map(|(code, _)| code) == Some(200)
        });
        d
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// GET from inside the namespace; `None` without a timely answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr = format!("127.0.0.1:{}", self.port);
        self.ns
            .run(|| http_get(&addr, path, Duration::from_secs(1)))
    }

    pub fn leader_code(&self) -> Option<u16> {
        let addr = format!("127.0.0.1:{}", self.port);
        self.ns
            .run(|| http_get(&addr, "/leader", PROBE_TIMEOUT).map(|r| r.0))
    }

    pub fn is_leading(&self) -> bool {
        self.leader_code() == Some(200)
    }

    /// GET /status as JSON (`Null` without an answer).
    pub fn status(&self) -> serde_json::Value {
        self.get("/status")
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// What the [`Monitor`] polls.
    pub fn probe(&self) -> Probe {
        let ns = self.ns.clone();
        let addr = format!("127.0.0.1:{}", self.port);
        (
            self.identity.clone(),
            Arc::new(move || ns.run(|| http_get(&addr, "/leader", PROBE_TIMEOUT).map(|r| r.0))),
        )
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for NsLeaderd {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        if thread::panicking() {
            eprintln!(
                "--- leaderd {} log ---\n{}\n--- end of log ---",
                self.identity,
                self.log()
            );
        }
    }
}
