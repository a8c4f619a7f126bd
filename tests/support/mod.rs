//! Test support for leaderd integration tests.
//!
//! Everything here drives real processes: a real `redis-server` on a free
//! loopback port and the real `leaderd` binary. Every wait is a bounded poll,
//! every spawned process is killed and reaped on drop.
//!
//! Declared from each test file with `mod support;`, so not every helper is
//! used by every test crate.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Timings
// ---------------------------------------------------------------------------

/// Lease duration used by [`config`].
pub const LEASE: Duration = Duration::from_millis(1000);
/// Renew deadline used by [`config`].
pub const RENEW_DEADLINE: Duration = Duration::from_millis(600);
/// Retry period used by [`config`].
pub const RETRY: Duration = Duration::from_millis(150);
/// Generous bound for "this should happen soon": only catches hangs.
pub const PATIENCE: Duration = Duration::from_secs(15);
/// Timeout of a single probe of a candidate (a stopped process never answers).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

const POLL_EVERY: Duration = Duration::from_millis(15);

// ---------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------

/// Polls `cond` every ~15 ms until it returns true; panics naming `what` after
/// `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        thread::sleep(POLL_EVERY);
    }
}

/// Like [`wait_until`] but the closure yields a value once ready.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL_EVERY);
    }
}

// ---------------------------------------------------------------------------
// Ports and config
// ---------------------------------------------------------------------------

/// Makes a FIFO at `path`: a file that blocks whoever opens it until the
/// other end is opened too.
pub fn make_fifo(path: &std::path::Path) {
    let made = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
}

/// A loopback port that was free a moment ago (bind 127.0.0.1:0, then drop).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// YAML config with short test timings (lease 1s, renew 600ms, retry 150ms).
pub fn config(name: &str, redis_url: &str) -> String {
    config_with(name, redis_url, LEASE, RENEW_DEADLINE, RETRY)
}

/// YAML config with explicit timings.
pub fn config_with(
    name: &str,
    redis_url: &str,
    lease: Duration,
    renew_deadline: Duration,
    retry: Duration,
) -> String {
    format!(
        "election:\n  name: {name}\n  lease_duration: {}ms\n  renew_deadline: {}ms\n  retry_period: {}ms\nbackend:\n  redis:\n    urls: [\"{redis_url}\"]\n    key_prefix: leaderd\nhttp:\n  listen: \"127.0.0.1:0\"\n",
        lease.as_millis(),
        renew_deadline.as_millis(),
        retry.as_millis(),
    )
}

/// The Redis key of the lock of election `name` (prefix `leaderd`).
pub fn lock_key(name: &str) -> String {
    format!("leaderd:{{{name}}}:lock")
}

/// The Redis key of the fencing counter of election `name` (prefix `leaderd`).
pub fn fence_key(name: &str) -> String {
    format!("leaderd:{{{name}}}:fence")
}

/// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`, ...) with `kill(1)`.
pub fn send_signal(pid: u32, sig: &str) {
    let sig = sig.trim_start_matches("SIG");
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{sig} {pid} failed: {status}");
}

fn describe_exit(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => -sig,
        (None, None) => i32::MIN,
    }
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// Timeout of the helpers' Redis connects, and of each read and write.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// A real `redis-server` child process on a loopback port, in a tempdir.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a fresh server on a free port (retries a few ports).
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir for redis");
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn_redis(dir.path(), port) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        child: Some(child),
                        dir,
                    };
                }
                Err(e) => last_err = e,
            }
        }
        panic!("could not start redis-server: {last_err}");
    }

    /// Starts a server on a given port (e.g. one reserved for a test that
    /// starts Redis late). Retries a few times on the same port.
    pub fn start_on(port: u16) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir for redis");
        let child = spawn_redis_retrying(dir.path(), port);
        RedisServer {
            port,
            child: Some(child),
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis is running").id()
    }

    /// SIGKILL and reap. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing.
    pub fn freeze(&self) {
        send_signal(self.pid(), "STOP");
    }

    /// Alias of [`RedisServer::freeze`].
    pub fn stop(&self) {
        self.freeze();
    }

    /// SIGCONT after [`RedisServer::freeze`].
    pub fn thaw(&self) {
        send_signal(self.pid(), "CONT");
    }

    /// Kills the server and starts a new, empty one on the same port.
    pub fn restart_empty(&mut self) {
        self.kill();
        for entry in fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = fs::remove_file(entry.path());
        }
        self.child = Some(spawn_redis_retrying(self.dir.path(), self.port));
    }

    /// Runs one command on a fresh connection. `Err` on transport failure
    /// (refused, timeout); an error reply of the server is
    /// `Ok(Value::ServerError(..))`, like any other reply.
    pub fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        redis_command(self.port, args, REDIS_TIMEOUT)
    }

    /// Runs one command and renders the reply like `redis-cli --raw`.
    /// Panics if the server cannot be reached.
    pub fn cmd(&self, args: &[&str]) -> String {
        match self.try_cmd(args) {
            Ok(reply) => render_raw(&reply),
            Err(e) => panic!("redis command {args:?} on port {} failed: {e}", self.port),
        }
    }

    /// GET, distinguishing a missing key (`None`) from an empty value.
    pub fn get(&self, key: &str) -> Option<String> {
        match self.try_cmd(&["GET", key]) {
            Ok(redis::Value::Nil) => None,
            Ok(redis::Value::BulkString(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
            Ok(other) => panic!("GET {key}: unexpected reply {other:?}"),
            Err(e) => panic!("GET {key} on port {} failed: {e}", self.port),
        }
    }

    /// SUBSCRIBEs to `channel` on a connection of its own (confirmed before
    /// returning).
    pub fn subscribe(&self, channel: &str) -> Subscription {
        Subscription::start(self.port, channel)
            .unwrap_or_else(|e| panic!("SUBSCRIBE {channel} on port {} failed: {e}", self.port))
    }
}

/// A reply rendered like `redis-cli --raw` (nil is the empty string,
/// aggregates one element a line).
pub fn render_raw(reply: &redis::Value) -> String {
    use redis::Value;
    let lines = |items: &[Value]| items.iter().map(render_raw).collect::<Vec<_>>().join("\n");
    match reply {
        Value::Nil => String::new(),
        Value::Okay => "OK".into(),
        Value::Int(i) => i.to_string(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Array(items) | Value::Set(items) => lines(items),
        Value::ServerError(e) => match e.details() {
            Some(details) => format!("{} {details}", e.code()),
            None => e.code().to_string(),
        },
        other => format!("{other:?}"),
    }
}

/// A connection whose connect, reads and writes each give up after `timeout`,
/// so a frozen server yields an error instead of a hang. No `CLIENT SETINFO`
/// handshake: connecting takes no round trip, so a frozen server costs one
/// read timeout.
fn redis_connect(port: u16, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    use redis::IntoConnectionInfo;
    let info = ("127.0.0.1", port)
        .into_connection_info()?
        .set_redis_settings(redis::RedisConnectionInfo::default().set_skip_set_lib_name());
    let con = redis::Client::open(info)?.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

/// One command on a fresh connection (see [`RedisServer::try_cmd`]).
fn redis_command(port: u16, args: &[&str], timeout: Duration) -> redis::RedisResult<redis::Value> {
    use redis::ConnectionLike;
    let mut con = redis_connect(port, timeout)?;
    let mut cmd = redis::Cmd::new();
    for arg in args {
        cmd.arg(*arg);
    }
    // `req_command` rather than `query`: an error reply stays a value.
    con.req_command(&cmd)
}

/// A pub/sub subscription on its own connection.
///
/// `redis::PubSub` borrows its connection, so a reader thread owns both and
/// hands message payloads over a channel; dropping the subscription stops the
/// thread (within a read timeout) and unsubscribes.
pub struct Subscription {
    messages: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Subscription {
    /// How long the reader blocks in one read before it checks for a stop.
    const READ_SLICE: Duration = Duration::from_millis(100);

    fn start(port: u16, channel: &str) -> Result<Subscription, String> {
        let mut con = redis_connect(port, REDIS_TIMEOUT).map_err(|e| e.to_string())?;
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (tx, messages) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_reader = Arc::clone(&stop);
        let channel = channel.to_string();
        let reader = thread::spawn(move || {
            let mut pubsub = con.as_pubsub();
            let subscribed = pubsub
                .subscribe(&channel)
                .and_then(|()| pubsub.set_read_timeout(Some(Self::READ_SLICE)));
            let ok = subscribed.is_ok();
            let _ = ready_tx.send(subscribed.map_err(|e| e.to_string()));
            while ok && !stop_reader.load(Ordering::Relaxed) {
                match pubsub.get_message() {
                    Ok(msg) => {
                        let payload = String::from_utf8_lossy(msg.get_payload_bytes());
                        if tx.send(payload.into_owned()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(_) => break,
                }
            }
        });
        let sub = Subscription {
            messages,
            stop,
            reader: Some(reader),
        };
        match ready_rx.recv_timeout(REDIS_TIMEOUT * 2) {
            Ok(Ok(())) => Ok(sub),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("no SUBSCRIBE confirmation in time".into()),
        }
    }

    /// The payload of the next published message, `None` after `timeout`
    /// (or once the connection is gone).
    pub fn next_message(&mut self, timeout: Duration) -> Option<String> {
        self.messages.recv_timeout(timeout).ok()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The pub/sub channel of election `name` (prefix `leaderd`).
pub fn events_channel(name: &str) -> String {
    format!("leaderd:{{{name}}}:events")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // A stopped process dies of SIGKILL as well; CONT is harmless.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .stderr(Stdio::null())
                .status();
        }
        self.kill();
    }
}

fn spawn_redis_retrying(dir: &Path, port: u16) -> Child {
    let mut last_err = String::new();
    for _ in 0..10 {
        match spawn_redis(dir, port) {
            Ok(child) => return child,
            Err(e) => {
                last_err = e;
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    panic!("could not start redis-server on port {port}: {last_err}");
}

/// Spawns redis-server and waits (bounded) until it answers PING.
fn spawn_redis(dir: &Path, port: u16) -> Result<Child, String> {
    let log_path = dir.join(format!("redis-{port}.log"));
    let log = fs::File::create(&log_path).map_err(|e| format!("create redis log: {e}"))?;
    let mut child = Command::new("/usr/bin/redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(["--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn redis-server: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "redis-server exited ({status}) on port {port}:\n{log}"
            ));
        }
        let pong = redis_command(port, &["PING"], Duration::from_millis(500));
        if matches!(&pong, Ok(redis::Value::SimpleString(s)) if s == "PONG") {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "redis-server on port {port} not ready in 10s:\n{log}"
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// One HTTP/1.1 request to `http://{addr}{path}` with a total `timeout`
/// (connect, send, headers and body). Any status is an answer: non-2xx come
/// back as `(code, body)`; `Err` means no (complete, timely) answer.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), ureq::Error> {
    // An agent per request: no pooled connection outlives a daemon, and the
    // timeout is this request's own.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .proxy(None)
        .build()
        .into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(())?;
    let mut response = agent.run(request)?;
    let body = response.body_mut().read_to_vec()?;
    Ok((
        response.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// Any method with a body and an optional `Authorization` header; the
/// answer, whatever its status.
pub fn http_request_with(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    authorization: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .proxy(None)
        .allow_non_standard_methods(true)
        .build()
        .into();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let mut response = agent.run(request.body(body.as_bytes().to_vec())?)?;
    let body = response.body_mut().read_to_vec()?;
    Ok((
        response.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// GET with a total timeout; `None` on any error (refused, timeout, ...).
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Option<(u16, String)> {
    http_request(addr, "GET", path, timeout).ok()
}

// ---------------------------------------------------------------------------
// leaderd
// ---------------------------------------------------------------------------

/// Path of the leaderd binary built by cargo for these tests.
pub fn leaderd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_leaderd")
}

/// A `leaderd` command with a clean environment (no LEADERD_* / POD_NAME
/// leaking from the caller).
pub fn leaderd_command() -> Command {
    let mut cmd = Command::new(leaderd_bin());
    for var in [
        "LEADERD_CONFIG",
        "LEADERD_IDENTITY",
        "LEADERD_LISTEN",
        "LEADERD_LOG",
        "POD_NAME",
        "POD_NAMESPACE",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `leaderd ARGS...` to completion (bounded), returning its output.
pub fn run_leaderd(args: &[&str], timeout: Duration) -> Output {
    run_leaderd_with_env(args, &[], timeout)
}

/// [`run_leaderd`] with extra environment variables.
pub fn run_leaderd_with_env(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut child = leaderd_command()
        .envs(env.iter().copied())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn leaderd");
    // Drain the pipes in threads so a chatty child cannot block.
    let mut stdout = child.stdout.take().expect("stdout piped");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait leaderd") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_t.join().unwrap_or_default();
            panic!(
                "leaderd {args:?} did not exit within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        thread::sleep(POLL_EVERY);
    };
    Output {
        status,
        stdout: out_t.join().expect("stdout reader"),
        stderr: err_t.join().expect("stderr reader"),
    }
}

/// Builder for a running `leaderd run` daemon.
pub struct LeaderdBuilder {
    config: String,
    identity: Option<String>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    wait_healthy: bool,
    wrapper: Vec<String>,
}

impl LeaderdBuilder {
    pub fn identity(mut self, id: &str) -> Self {
        self.identity = Some(id.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Runs leaderd under this command (e.g. `unshare --pid --fork`): the
    /// wrapper's argv, then leaderd's.
    pub fn wrapped_in(mut self, argv: &[&str]) -> Self {
        self.wrapper = argv.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Do not wait for /healthz (the caller checks what happens instead).
    pub fn no_wait(mut self) -> Self {
        self.wait_healthy = false;
        self
    }

    pub fn start(self) -> Leaderd {
        let dir = tempfile::tempdir().expect("tempdir for leaderd");
        let config_path = dir.path().join("leaderd.yaml");
        fs::write(&config_path, &self.config).expect("write leaderd config");
        let mut last_log = String::new();
        for attempt in 0..3 {
            let port = free_port();
            let log_path = dir.path().join(format!("leaderd-{attempt}.log"));
            let log = fs::File::create(&log_path).expect("create leaderd log");
            let mut cmd = leaderd_command();
            if let Some((program, args)) = self.wrapper.split_first() {
                let mut wrapped = Command::new(program);
                wrapped.args(args).arg(leaderd_bin());
                for (key, value) in cmd.get_envs() {
                    match value {
                        Some(value) => wrapped.env(key, value),
                        None => wrapped.env_remove(key),
                    };
                }
                wrapped.stdin(Stdio::null());
                cmd = wrapped;
            }
            cmd.arg("run")
                .arg("--config")
                .arg(&config_path)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"));
            if let Some(id) = &self.identity {
                cmd.arg("--identity").arg(id);
            }
            cmd.args(&self.args)
                .env("LEADERD_LOG", "info,leaderd=debug")
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::null())
                .stderr(log);
            let child = cmd.spawn().expect("spawn leaderd");
            let mut d = Leaderd {
                addr: format!("127.0.0.1:{port}"),
                identity: self.identity.clone().unwrap_or_default(),
                child: Mutex::new(child),
                exit: Mutex::new(None),
                log_path,
                config_path: config_path.clone(),
                dir: None,
            };
            if !self.wait_healthy {
                d.dir = Some(dir);
                return d;
            }
            match d.wait_healthy(Duration::from_secs(10)) {
                Ok(()) => {
                    d.dir = Some(dir);
                    return d;
                }
                Err(why) => {
                    let log = d.log();
                    // Someone took the free port between our probe and the
                    // daemon's bind: the daemon exits 1 naming the address.
                    let port_clash = d.try_exit_code() == Some(1)
                        && (log.contains("in use") || log.contains(&d.addr));
                    drop(d);
                    if port_clash && attempt < 2 {
                        last_log = log;
                        continue;
                    }
                    panic!(
                        "leaderd ({:?}) did not become healthy: {why}\n--- config ---\n{}\n--- log ---\n{log}",
                        self.identity, self.config
                    );
                }
            }
        }
        panic!("leaderd could not bind an HTTP port:\n{last_log}");
    }
}

/// A running `leaderd run` child process with its HTTP address and log.
pub struct Leaderd {
    addr: String,
    identity: String,
    child: Mutex<Child>,
    exit: Mutex<Option<i32>>,
    log_path: PathBuf,
    config_path: PathBuf,
    dir: Option<TempDir>,
}

impl Leaderd {
    /// Starts `leaderd run` with this config and identity, waits for /healthz.
    pub fn start(config_yaml: &str, identity: &str) -> Leaderd {
        Leaderd::builder(config_yaml).identity(identity).start()
    }

    pub fn builder(config_yaml: &str) -> LeaderdBuilder {
        LeaderdBuilder {
            config: config_yaml.to_string(),
            identity: None,
            env: Vec::new(),
            args: Vec::new(),
            wait_healthy: true,
            wrapper: Vec::new(),
        }
    }

    fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.try_exit_code() {
                return Err(format!(
                    "leaderd exited with {code} before /healthz answered"
                ));
            }
            if let Some((200, _)) = http_get(&self.addr, "/healthz", Duration::from_millis(500)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("/healthz not 200 within {timeout:?}"));
            }
            thread::sleep(POLL_EVERY);
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// `127.0.0.1:PORT` of the HTTP server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().expect("child lock").id()
    }

    /// GET with a timeout; `None` on connection error or timeout.
    pub fn try_get(&self, path: &str, timeout: Duration) -> Option<(u16, String)> {
        http_get(&self.addr, path, timeout)
    }

    /// GET that must succeed (5 s timeout); panics with the log otherwise.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path)
    }

    /// Any method; must get an answer (5 s timeout).
    pub fn request(&self, method: &str, path: &str) -> (u16, String) {
        match http_request(&self.addr, method, path, Duration::from_secs(5)) {
            Ok(r) => r,
            Err(e) => panic!(
                "{method} {path} on {} ({}) failed: {e}\n--- log ---\n{}",
                self.identity,
                self.addr,
                self.log()
            ),
        }
    }

    /// GET /status parsed as JSON.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/status");
        assert_eq!(
            code, 200,
            "/status of {} answered {code}: {body}",
            self.identity
        );
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/status of {} is not JSON ({e}): {body}", self.identity))
    }

    /// GET /status parsed as JSON, `None` if there is no (timely) answer.
    pub fn try_status(&self) -> Option<serde_json::Value> {
        let (code, body) = self.try_get("/status", Duration::from_secs(1))?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Status code of GET /leader; `None` on connection error or timeout.
    pub fn leader_code(&self) -> Option<u16> {
        self.try_get("/leader", PROBE_TIMEOUT).map(|(c, _)| c)
    }

    /// `true` iff GET /leader answers 200 right now.
    pub fn is_leading(&self) -> bool {
        self.leader_code() == Some(200)
    }

    /// GET /metrics text.
    pub fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "/metrics of {} answered {code}", self.identity);
        body
    }

    /// Sum of all samples of a counter/gauge named `name` in /metrics.
    pub fn metric(&self, name: &str) -> f64 {
        metric_sum(&self.metrics(), name, &[])
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`, `INT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig);
    }

    fn try_exit_code(&self) -> Option<i32> {
        let mut exit = self.exit.lock().expect("exit lock");
        if exit.is_none() {
            let mut child = self.child.lock().expect("child lock");
            if let Ok(Some(status)) = child.try_wait() {
                *exit = Some(describe_exit(status));
            }
        }
        *exit
    }

    /// Waits (bounded) for the process to exit. Exit code, or minus the
    /// signal number if killed by a signal; `None` if still running.
    pub fn wait_exit(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.try_exit_code() {
                return Some(code);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&self) {
        if self.try_exit_code().is_some() {
            return;
        }
        let mut child = self.child.lock().expect("child lock");
        let _ = child.kill();
        if let Ok(status) = child.wait() {
            *self.exit.lock().expect("exit lock") = Some(describe_exit(status));
        }
    }

    /// The stderr log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Leaderd {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "--- leaderd {} ({}) log ---\n{}\n--- end of log ---",
                self.identity,
                self.addr,
                self.log()
            );
        }
    }
}

/// Starts `n` candidates `{prefix}-0 .. {prefix}-{n-1}` with the same config.
pub fn start_candidates(config_yaml: &str, prefix: &str, n: usize) -> Vec<Leaderd> {
    (0..n)
        .map(|i| Leaderd::start(config_yaml, &format!("{prefix}-{i}")))
        .collect()
}

/// Probes GET /leader of all candidates concurrently (one round); each entry
/// is the status code or `None` if there was no answer within the timeout.
pub fn leader_round(candidates: &[&Leaderd]) -> Vec<Option<u16>> {
    let addrs: Vec<&str> = candidates.iter().map(|c| c.addr()).collect();
    thread::scope(|s| {
        let handles: Vec<_> = addrs
            .iter()
            .map(|a| s.spawn(move || http_get(a, "/leader", PROBE_TIMEOUT).map(|(c, _)| c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    })
}

/// Index of the single candidate answering /leader 200, if exactly one does
/// in one concurrent round; panics if two or more do.
pub fn sole_leader(candidates: &[&Leaderd]) -> Option<usize> {
    let round = leader_round(candidates);
    let leaders: Vec<usize> = round
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == Some(200))
        .map(|(i, _)| i)
        .collect();
    assert!(
        leaders.len() <= 1,
        "two candidates answered /leader 200 in the same round: {:?} (round {round:?})",
        leaders
            .iter()
            .map(|i| candidates[*i].identity())
            .collect::<Vec<_>>()
    );
    leaders.first().copied()
}

/// Waits until exactly one candidate leads; returns its index.
pub fn wait_for_leader(candidates: &[&Leaderd], timeout: Duration) -> usize {
    wait_for(timeout, "one candidate answers /leader 200", || {
        sole_leader(candidates)
    })
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// Parses Prometheus text with `prometheus-parse`.
pub fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("parse /metrics")
}

/// Sum of samples named `name` whose labels include all `labels`
/// (counters, gauges, untyped). 0 if there is none.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// JSON value of the lock key as an object, if it is set and is JSON.
pub fn lock_value(redis: &RedisServer, name: &str) -> Option<serde_json::Value> {
    let raw = redis.get(&lock_key(name))?;
    Some(
        serde_json::from_str(&raw)
            .unwrap_or_else(|e| panic!("lock value is not JSON ({e}): {raw:?}")),
    )
}

/// Successful renewals counted in /metrics (`leaderd_renewals_total` with
/// result `success`; `ok` accepted as a synonym).
pub fn renewals_ok(text: &str) -> f64 {
    ["success", "ok"]
        .iter()
        .map(|r| metric_sum(text, "leaderd_renewals_total", &[("result", r)]))
        .sum()
}
