//! Starting a command in its own process group, logging its output, and
//! stopping the whole group.
//!
//! A process group lets leaderd stop everything a hook or the leader process
//! started (a shell and its children), not only the direct child. Every
//! group is also registered with the guard process (from the child itself,
//! before `exec`), and listed here, so that a second signal can kill them
//! all before leaderd exits.

use std::collections::HashSet;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::guard::{GuardHandle, Message, Registration};

/// Every process group leaderd started and has not seen end.
static GROUPS: LazyLock<Mutex<HashSet<i32>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// Groups of dropped commands (a term hook cut short by the term's end)
/// still in their SIGTERM grace: the term is not over until they are gone.
static STOPPING: LazyLock<Mutex<Vec<tokio::task::JoinHandle<()>>>> =
    LazyLock::new(|| Mutex::new(Vec::new()));

/// Waits until every dropped command's group has been SIGKILLed (at most
/// [`crate::config::HOOK_KILL_GRACE`] after it was dropped). Until then the
/// guard still knows those groups, and kills them should leaderd die.
pub async fn stopped() {
    let stopping = std::mem::take(&mut *crate::backend::lock(&STOPPING));
    for handle in stopping {
        let _ = handle.await;
    }
}

/// Set, under the [`GROUPS`] lock, once leaderd exits at once: from then on
/// nothing more is started.
static EXITING: AtomicBool = AtomicBool::new(false);

/// Exits with `code` at once (a second signal, a lost guard), leaving
/// nothing leader-only behind: every process group leaderd started is
/// SIGKILLed and no new command starts, then the log is flushed (a bounded
/// wait) and the process exits.
pub fn exit_killing_every_group(code: i32) -> ! {
    {
        let groups = crate::backend::lock(&GROUPS);
        EXITING.store(true, Ordering::SeqCst);
        for group in groups.iter() {
            // SAFETY: kill(2) on a process group id; no memory involved.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
    }
    crate::logging::flush();
    std::process::exit(code);
}

/// The guard to register a command with, and its term.
#[derive(Clone)]
pub struct Guarded {
    pub guard: GuardHandle,
    pub registration: Registration,
}

/// A running command, leader of its own process group. Dropping it while
/// the command runs stops the group (SIGTERM, then SIGKILL shortly after).
pub struct Spawned {
    name: String,
    child: Child,
    /// Process group id (= the child's pid) while the child is not reaped.
    group: Option<i32>,
    /// Told when the group is gone.
    guard: Option<GuardHandle>,
}

/// Starts `argv` with `env` added to leaderd's environment; its stdout and
/// stderr lines go to the log as `<name>: <line>`. With `guarded`, the
/// child registers its group with the guard before it runs anything.
pub fn spawn(
    name: &str,
    argv: &[String],
    env: &[(String, String)],
    guarded: Option<Guarded>,
) -> io::Result<Spawned> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let guard = guarded.as_ref().map(|g| g.guard.clone());
    if let Some(guarded) = guarded {
        let registration = guarded.registration;
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes async-signal-safe calls (getpid, getppid, prctl,
        // write) on data it owns, without allocating.
        unsafe {
            command.pre_exec(move || register_in_child(&registration));
        }
    }
    // Listed before anyone can ask for the list (a second signal).
    let mut groups = crate::backend::lock(&GROUPS);
    if EXITING.load(Ordering::SeqCst) {
        return Err(io::Error::other("leaderd is exiting"));
    }
    let mut child = command.spawn()?;
    let group = child.id().and_then(|pid| i32::try_from(pid).ok());
    if let Some(group) = group {
        groups.insert(group);
    }
    drop(groups);
    if let Some(stdout) = child.stdout.take() {
        forward(name.to_string(), stdout);
    }
    if let Some(stderr) = child.stderr.take() {
        forward(name.to_string(), stderr);
    }
    Ok(Spawned {
        name: name.to_string(),
        child,
        group,
        guard,
    })
}

/// In the child, before `exec`: die with leaderd's thread (a second line of
/// defence: it covers the direct child only), then register the group.
fn register_in_child(registration: &Registration) -> io::Result<()> {
    // SAFETY: prctl and getppid are async-signal-safe.
    unsafe {
        let parent = libc::getppid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // leaderd died between fork and prctl: the signal will never come.
        if libc::getppid() != parent {
            return Err(io::Error::other("leaderd exited while starting a command"));
        }
    }
    registration.write_from_child()
}

/// The longest line (in characters) of a command's output that goes to the
/// log whole; a longer one is cut (the log buffers up to 8,192 lines while
/// stderr is stalled, and a chatty command must not fill memory through it).
const MAX_LOGGED_LINE: usize = 2048;

fn forward(name: String, stream: impl AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!("{name}: {}", crate::config::clip(&line, MAX_LOGGED_LINE));
        }
    });
}

impl Spawned {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the command to exit.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await;
        if status.is_ok() {
            // Anything it left behind in its group is leader-only work too.
            self.signal_group(libc::SIGKILL);
            self.forget_group();
        }
        status
    }

    /// SIGTERM to the group; SIGKILL to the group after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.signal_group(libc::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            self.signal_group(libc::SIGKILL);
            self.forget_group();
            return status;
        }
        tracing::warn!(command = %self.name, grace = %crate::config::show(grace), "did not exit after SIGTERM; sending SIGKILL");
        self.signal_group(libc::SIGKILL);
        let status = self.child.wait().await;
        self.forget_group();
        status
    }

    /// The group's leader was reaped and the group killed: forget it.
    fn forget_group(&mut self) {
        if let Some(group) = self.group.take() {
            crate::backend::lock(&GROUPS).remove(&group);
            if let Some(guard) = &self.guard {
                guard.send(Message::Gone { group });
            }
        }
    }

    fn signal_group(&self, signal: i32) {
        if let Some(group) = self.group {
            // SAFETY: kill(2) with a negative pid signals a process group;
            // it has no memory-safety preconditions. The group is ours: its
            // leader is our child and has not been reaped yet.
            let rc = unsafe { libc::kill(-group, signal) };
            if rc != 0 {
                // ESRCH: the group is already gone; nothing to do.
                tracing::trace!(group, signal, "kill: {}", io::Error::last_os_error());
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.group.is_none() || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.signal_group(libc::SIGTERM);
        let group = self.group.take();
        let guard = self.guard.take();
        let kill = tokio::spawn(async move {
            tokio::time::sleep(crate::config::HOOK_KILL_GRACE).await;
            if let Some(group) = group {
                // SAFETY: as in `signal_group`; by now the group may be gone,
                // which kill(2) reports as ESRCH.
                unsafe { libc::kill(-group, libc::SIGKILL) };
                crate::backend::lock(&GROUPS).remove(&group);
                if let Some(guard) = guard {
                    guard.send(Message::Gone { group });
                }
            }
        });
        crate::backend::lock(&STOPPING).push(kill);
    }
}

/// The exit code a shell would report: the code, or 128 + the signal.
pub fn exit_code(status: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}
