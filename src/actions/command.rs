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

/// The longest line (in bytes) of a command's output that goes to the log
/// whole; a longer one is cut. The log buffers up to 8,192 lines while
/// stderr is stalled, and a chatty command must not fill memory through it.
const MAX_LOGGED_LINE: usize = 2048;

fn forward(name: String, stream: impl AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        forward_lines(stream, |line| tracing::info!("{name}: {line}")).await;
    });
}

/// Hands every line of `stream` to `emit` until the stream ends: at most
/// [`MAX_LOGGED_LINE`] bytes of it are ever held (the rest is counted and
/// said), and bytes that are not UTF-8 are shown as U+FFFD. Reading never
/// stops early: a reader that gave up would close the pipe and kill the
/// command with SIGPIPE at its next write.
async fn forward_lines(stream: impl AsyncRead + Unpin, mut emit: impl FnMut(&str)) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    let mut length = 0;
    loop {
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        let newline = chunk.iter().position(|b| *b == b'\n');
        let taken = newline.map_or(chunk.len(), |at| at + 1);
        let room = MAX_LOGGED_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..taken.min(room)]);
        length += taken;
        reader.consume(taken);
        if newline.is_some() {
            // The line end is not part of the line's length.
            emit(&shown(&line, length - 1));
            line.clear();
            length = 0;
        }
    }
    if length > 0 {
        emit(&shown(&line, length));
    }
}

/// A line as the log shows it: without its line end, and when it was cut,
/// with its whole length.
fn shown(kept: &[u8], length: usize) -> String {
    let text = String::from_utf8_lossy(kept);
    let text = text.trim_end_matches(['\n', '\r']);
    if length > kept.len() {
        format!("{text}… ({length} bytes)")
    } else {
        text.to_string()
    }
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

#[cfg(test)]
mod tests {
    use super::{MAX_LOGGED_LINE, forward_lines};

    async fn lines_of(input: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        forward_lines(input, |line| lines.push(line.to_string())).await;
        lines
    }

    #[tokio::test]
    async fn output_that_is_not_utf8_does_not_stop_the_reading() {
        assert_eq!(
            lines_of(b"a\n\xff\xfe\r\nafter\nno newline").await,
            ["a", "\u{fffd}\u{fffd}", "after", "no newline"]
        );
    }

    #[tokio::test]
    async fn a_long_line_is_cut_and_only_its_start_is_kept() {
        let mut input = vec![b'x'; MAX_LOGGED_LINE * 100];
        input.extend_from_slice(b"\nnext\n");
        let lines = lines_of(&input).await;
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        let expected = format!(
            "{}… ({} bytes)",
            "x".repeat(MAX_LOGGED_LINE),
            MAX_LOGGED_LINE * 100
        );
        assert_eq!(lines[0], expected);
        assert_eq!(lines[1], "next");
    }
}
