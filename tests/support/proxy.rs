//! A TCP fault proxy for tests: it listens on a loopback port, forwards every
//! connection to one upstream port (a `redis-server`), and can be told at
//! runtime to misbehave, without touching the machine's network:
//!
//! - [`Fault::Pass`]: forward at once (also "heal");
//! - [`Fault::Delay`]: forward every chunk that much later, in each direction
//!   (latency, not bandwidth: chunks keep their order);
//! - [`Fault::Refuse`]: close every connection and refuse new ones (they are
//!   accepted and closed at once, so a client sees a reset, not a hang);
//! - [`Fault::Blackhole`]: a partition. Connections are accepted and kept
//!   open, nothing is forwarded either way. As TCP would after a short
//!   partition, the bytes are held and delivered in order when the fault is
//!   healed, even for connections the client closed meanwhile: a request a
//!   client gave up on may still run on the server late.
//!
//! Plain std threads: one accept thread, two pump threads per connection.
//! Everything is bounded (connections, held bytes, every blocking call has a
//! timeout) and dropping the proxy closes every socket and joins every thread.
//!
//! Declared from a test file with `#[path = "support/proxy.rs"] mod proxy;`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the proxy does with traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Delay(Duration),
    Refuse,
    Blackhole,
}

/// Connections open at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 128;
/// Bytes held per direction of a connection (delayed or blackholed) before
/// the proxy gives up on it and closes it.
const MAX_HELD_BYTES: usize = 1 << 20;
/// The longest a pump blocks in one read before it looks at the mode again.
const SLICE: Duration = Duration::from_millis(10);
/// How long the accept loop sleeps when no connection is pending.
const ACCEPT_IDLE: Duration = Duration::from_millis(2);
/// Upstream connect timeout (loopback: a refusal is immediate).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A write that blocks this long (peer not reading) closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A running proxy; see the module documentation.
pub struct Proxy {
    port: u16,
    upstream: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    fault: Mutex<Fault>,
    stop: AtomicBool,
    connections: Mutex<Vec<Arc<Conn>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    accepted: AtomicU64,
    forwarded_bytes: AtomicU64,
}

/// Both sockets of one proxied connection, to close them from outside.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    closed: AtomicBool,
    pumps_left: AtomicU64,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Proxy {
    /// Starts a proxy on a free loopback port in front of
    /// `127.0.0.1:upstream_port`, in [`Fault::Pass`] mode. The upstream does
    /// not need to be up (connections to a dead upstream are closed at once).
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            fault: Mutex::new(Fault::Pass),
            stop: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            forwarded_bytes: AtomicU64::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name(format!("proxy-{port}-accept"))
            .spawn(move || accept_loop(&listener, &accept_shared))
            .expect("spawn the proxy accept thread");
        Proxy {
            port,
            upstream: upstream_port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the server behind the proxy.
    pub fn upstream_port(&self) -> u16 {
        self.upstream
    }

    /// `redis://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The current mode.
    pub fn fault(&self) -> Fault {
        *lock(&self.shared.fault)
    }

    /// Switches mode. [`Fault::Refuse`] closes every open connection at once.
    pub fn set(&self, fault: Fault) {
        *lock(&self.shared.fault) = fault;
        if fault == Fault::Refuse {
            for conn in lock(&self.shared.connections).iter() {
                conn.close();
            }
        }
    }

    /// Back to [`Fault::Pass`]; held bytes are delivered.
    pub fn heal(&self) {
        self.set(Fault::Pass);
    }

    /// Every chunk `by` later, each direction.
    pub fn delay(&self, by: Duration) {
        self.set(Fault::Delay(by));
    }

    /// Close all connections and refuse new ones.
    pub fn refuse(&self) {
        self.set(Fault::Refuse);
    }

    /// Forward nothing, keep connections open.
    pub fn blackhole(&self) {
        self.set(Fault::Blackhole);
    }

    /// Connections currently open through the proxy.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.connections).len()
    }

    /// Connections accepted so far (including refused ones).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Bytes forwarded so far, both directions.
    pub fn forwarded_bytes(&self) -> u64 {
        self.shared.forwarded_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for conn in lock(&self.shared.connections).drain(..) {
            conn.close();
        }
        let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                serve(client, shared);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(ACCEPT_IDLE),
            Err(_) => thread::sleep(ACCEPT_IDLE),
        }
        reap_finished(shared);
    }
}

/// Joins the pump threads that ended and forgets closed connections.
fn reap_finished(shared: &Shared) {
    let mut threads = lock(&shared.threads);
    let mut i = 0;
    while i < threads.len() {
        if threads[i].is_finished() {
            let _ = threads.swap_remove(i).join();
        } else {
            i += 1;
        }
    }
    drop(threads);
    lock(&shared.connections).retain(|c| c.pumps_left.load(Ordering::SeqCst) > 0);
}

fn serve(client: TcpStream, shared: &Arc<Shared>) {
    let refuse = |client: TcpStream| {
        let _ = client.shutdown(Shutdown::Both);
    };
    if *lock(&shared.fault) == Fault::Refuse || lock(&shared.connections).len() >= MAX_CONNECTIONS {
        return refuse(client);
    }
    let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT) else {
        return refuse(client);
    };
    let setup = || -> std::io::Result<Arc<Conn>> {
        client.set_nonblocking(false)?;
        for s in [&client, &upstream] {
            s.set_nodelay(true)?;
            s.set_write_timeout(Some(WRITE_TIMEOUT))?;
        }
        Ok(Arc::new(Conn {
            client: client.try_clone()?,
            upstream: upstream.try_clone()?,
            closed: AtomicBool::new(false),
            pumps_left: AtomicU64::new(2),
        }))
    };
    let Ok(conn) = setup() else {
        let _ = upstream.shutdown(Shutdown::Both);
        return refuse(client);
    };
    lock(&shared.connections).push(Arc::clone(&conn));
    let (Ok(client_reader), Ok(upstream_reader)) = (client.try_clone(), upstream.try_clone())
    else {
        conn.close();
        conn.pumps_left.store(0, Ordering::SeqCst);
        return;
    };
    let mut threads = lock(&shared.threads);
    for (name, src, dst) in [
        ("up", client_reader, upstream),
        ("down", upstream_reader, client),
    ] {
        let shared = Arc::clone(shared);
        let pump_conn = Arc::clone(&conn);
        let spawned = thread::Builder::new()
            .name(format!("proxy-pump-{name}"))
            .spawn(move || {
                pump(src, dst, &shared, &pump_conn);
                pump_conn.pumps_left.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(_) => {
                conn.close();
                conn.pumps_left.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Copies `src` to `dst` under the proxy's current mode until `src` ends
/// (then half-closes `dst` once everything held was delivered), the
/// connection is closed, or the proxy stops.
fn pump(mut src: TcpStream, mut dst: TcpStream, shared: &Shared, conn: &Conn) {
    let mut held: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut held_bytes = 0usize;
    let mut src_done = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if shared.stop.load(Ordering::SeqCst) || conn.is_closed() {
            return;
        }
        let fault = *lock(&shared.fault);
        // Deliver what is due (nothing while blackholed).
        if fault != Fault::Blackhole {
            let now = Instant::now();
            while held.front().is_some_and(|(due, _)| *due <= now) {
                let (_, bytes) = held.pop_front().expect("front exists");
                held_bytes -= bytes.len();
                if dst.write_all(&bytes).is_err() {
                    conn.close();
                    return;
                }
                shared
                    .forwarded_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
        }
        if src_done {
            if held.is_empty() {
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            thread::sleep(next_wait(&held, fault));
            continue;
        }
        if src.set_read_timeout(Some(next_wait(&held, fault))).is_err() {
            conn.close();
            return;
        }
        match src.read(&mut buf) {
            Ok(0) => src_done = true,
            Ok(n) => {
                let fault = *lock(&shared.fault);
                let now = Instant::now();
                let due = match fault {
                    Fault::Delay(by) => now + by,
                    _ => now,
                };
                // Keep the order: never due before what is already held.
                let due = held.back().map_or(due, |(last, _)| due.max(*last));
                if fault == Fault::Pass && held.is_empty() {
                    if dst.write_all(&buf[..n]).is_err() {
                        conn.close();
                        return;
                    }
                    shared
                        .forwarded_bytes
                        .fetch_add(n as u64, Ordering::Relaxed);
                } else if fault == Fault::Refuse {
                    conn.close();
                    return;
                } else {
                    held.push_back((due, buf[..n].to_vec()));
                    held_bytes += n;
                    if held_bytes > MAX_HELD_BYTES {
                        conn.close();
                        return;
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                // Reset by the peer: nothing more will come, and what is held
                // can no longer be answered; end the whole connection.
                conn.close();
                return;
            }
        }
    }
}

/// How long to block before something held may become due (at most one
/// slice, at least a millisecond).
fn next_wait(held: &VecDeque<(Instant, Vec<u8>)>, fault: Fault) -> Duration {
    if fault == Fault::Blackhole {
        return SLICE;
    }
    held.front()
        .map_or(SLICE, |(due, _)| {
            due.saturating_duration_since(Instant::now())
        })
        .clamp(Duration::from_millis(1), SLICE)
}
