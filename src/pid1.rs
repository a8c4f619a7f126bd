//! leaderd as PID 1 (the container image, the chart's standalone mode):
//! PID 1 inherits every orphaned process in its PID namespace and must reap
//! it, or zombies pile up. leaderd's runtime reaps only the children it
//! started and waits for, so PID 1 forks: the parent stays a minimal init
//! (reap everything, forward signals, exit with the daemon's status), the
//! child is the daemon. This is what `tini` or `dumb-init` would do, without
//! asking users to add one.

use std::sync::atomic::{AtomicI32, Ordering};

/// The daemon's pid, for the signal forwarder.
static DAEMON: AtomicI32 = AtomicI32::new(0);

/// Signals an init passes on to the daemon.
const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Forks; returns in the child (the daemon). The parent never returns: it
/// reaps until the daemon exits, then exits with the daemon's status.
///
/// Must be called while the process has a single thread (before the async
/// runtime starts).
pub fn become_init() {
    // SAFETY: fork in a single-threaded process; the child continues with
    // a copy of this one, the parent only makes the calls below.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        // No init then, but still a daemon: orphans are not reaped. (Said
        // on stderr directly: logging starts after the fork.)
        eprintln!(
            "leaderd: running as PID 1 and cannot fork an init ({}); orphaned processes will not be reaped",
            std::io::Error::last_os_error()
        );
        return;
    }
    if pid == 0 {
        return;
    }
    DAEMON.store(pid, Ordering::SeqCst);
    for signal in FORWARDED {
        // SAFETY: installs a handler that only calls kill(2), which is
        // async-signal-safe, with a pid read from an atomic.
        unsafe { libc::signal(signal, forward as *const () as libc::sighandler_t) };
    }
    std::process::exit(reap_until_daemon_exits(pid));
}

extern "C" fn forward(signal: i32) {
    let daemon = DAEMON.load(Ordering::SeqCst);
    if daemon > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(daemon, signal) };
    }
}

/// Reaps every child (the daemon and every orphan) until the daemon exits;
/// returns the exit code a shell would report for it.
fn reap_until_daemon_exits(daemon: i32) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our integer.
        let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
        if reaped == daemon {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
            continue;
        }
        if reaped < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            // The daemon is gone without a status we saw: give up.
            return 1;
        }
    }
}
