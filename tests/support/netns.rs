//! Network namespaces for partition tests: two namespaces the test creates,
//! joined by a veth pair (`10.0.0.1` in the first, `10.0.0.2` in the
//! second), and a partition that takes the link down.
//!
//! Nothing touches the machine's own network: the veth is created directly
//! inside the two namespaces, every name is unique to the test process and
//! the test (so tests run in parallel), and dropping a [`NetnsPair`] deletes
//! both namespaces (which deletes the veth). Processes run in a namespace
//! with `ip netns exec`; the test itself talks to them from a short-lived
//! thread that joins the namespace (`setns` changes the network namespace
//! of the calling thread only).
//!
//! Taking the link down on the first side makes the second side's addresses
//! unreachable from the first at once (its route goes), while packets from
//! the second side are silently dropped (connects hang): both kinds of
//! partition a client meets.
//!
//! Declared from a test file with `#[path = "support/netns.rs"] mod netns;`.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// Address of the first namespace on the link.
pub const ADDR_A: &str = "10.0.0.1";
/// Address of the second namespace on the link.
pub const ADDR_B: &str = "10.0.0.2";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip ARGS`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One network namespace, deleted on drop (shared with the processes that
/// run in it, so it outlives them).
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `ldt-<pid>-<n>-<tag>` with its loopback up.
    fn create(tag: &str, n: usize) -> Netns {
        let name = format!("ldt-{}-{n}-{tag}", std::process::id());
        // A namespace left behind by a killed earlier run of the same pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`: the program runs inside the namespace
    /// (with the pid of the returned command's child: `ip` execs it).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a thread that joined this namespace: sockets it opens
    /// live there (e.g. to reach a server bound to the namespace's
    /// 127.0.0.1).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: setns on a valid namespace fd; it only changes the
                // network namespace of this (scoped, short-lived) thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {path}: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Two namespaces joined by a veth pair: `a` has [`ADDR_A`], `b` has
/// [`ADDR_B`].
pub struct NetnsPair {
    pub a: Arc<Netns>,
    pub b: Arc<Netns>,
}

impl NetnsPair {
    pub fn create() -> NetnsPair {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let a = Netns::create("a", n);
        let b = Netns::create("b", n);
        // Created inside the namespaces: no interface ever appears in the
        // machine's own namespace, so fixed names cannot clash.
        ip(&[
            "link", "add", "veth-a", "netns", &a.name, "type", "veth", "peer", "name", "veth-b",
            "netns", &b.name,
        ]);
        ip(&["-n", &a.name, "addr", "add", "10.0.0.1/24", "dev", "veth-a"]);
        ip(&["-n", &b.name, "addr", "add", "10.0.0.2/24", "dev", "veth-b"]);
        let pair = NetnsPair {
            a: Arc::new(a),
            b: Arc::new(b),
        };
        pair.heal();
        pair
    }

    /// Takes the link down: nothing passes between the namespaces.
    pub fn partition(&self) {
        ip(&["-n", &self.a.name, "link", "set", "veth-a", "down"]);
    }

    /// Brings the link (back) up.
    pub fn heal(&self) {
        ip(&["-n", &self.a.name, "link", "set", "veth-a", "up"]);
        ip(&["-n", &self.b.name, "link", "set", "veth-b", "up"]);
    }
}
