//! Starting a command in its own process group, logging its output, and
//! stopping the whole group.
//!
//! A process group lets leaderd stop everything a hook or the leader process
//! started (a shell and its children), not only the direct child.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// A running command, leader of its own process group. Dropping it while
/// the command runs stops the group (SIGTERM, then SIGKILL shortly after).
pub struct Spawned {
    name: String,
    child: Child,
    /// Process group id (= the child's pid) while the child is not reaped.
    group: Option<i32>,
}

/// Starts `argv` with `env` added to leaderd's environment; its stdout and
/// stderr lines go to the log as `<name>: <line>`.
pub fn spawn(name: &str, argv: &[String], env: &[(String, String)]) -> io::Result<Spawned> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    if let Some(stdout) = child.stdout.take() {
        forward(name.to_string(), stdout);
    }
    if let Some(stderr) = child.stderr.take() {
        forward(name.to_string(), stderr);
    }
    let group = child.id().and_then(|pid| i32::try_from(pid).ok());
    Ok(Spawned {
        name: name.to_string(),
        child,
        group,
    })
}

fn forward(name: String, stream: impl AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!("{name}: {line}");
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
            self.group = None;
        }
        status
    }

    /// SIGTERM to the group; SIGKILL to the group after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.signal_group(libc::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            self.signal_group(libc::SIGKILL);
            self.group = None;
            return status;
        }
        tracing::warn!(command = %self.name, grace = %crate::config::show(grace), "did not exit after SIGTERM; sending SIGKILL");
        self.signal_group(libc::SIGKILL);
        let status = self.child.wait().await;
        self.group = None;
        status
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
        let group = self.group;
        tokio::spawn(async move {
            tokio::time::sleep(crate::config::HOOK_KILL_GRACE).await;
            if let Some(group) = group {
                // SAFETY: as in `signal_group`; by now the group may be gone,
                // which kill(2) reports as ESRCH.
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
        });
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
