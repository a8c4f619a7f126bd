//! The daemon's side of the guard: starts the guard process, forwards every
//! term's safe-until to it (and to the term file), and hands the children
//! what they need to register themselves.
//!
//! If the guard dies while leaderd runs, the safety net is gone: leaderd
//! kills every process group it started and exits with an error, so that
//! its supervisor restarts both, rather than lead unguarded.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::term_file::TermFile;
use super::{Message, Registration, ns_at};
use crate::election::ElectionState;

/// Writes messages to the guard; cheap to clone.
#[derive(Clone)]
pub struct GuardHandle {
    inner: Arc<Pipe>,
}

struct Pipe {
    /// Non-blocking write end: a guard that stopped reading must not stop
    /// leaderd (a full pipe is treated like a dead guard).
    file: Mutex<File>,
    fd: i32,
    /// Set when leaderd closes the pipe on purpose (shutdown).
    closing: AtomicBool,
}

impl GuardHandle {
    pub fn send(&self, message: Message) {
        let line = message.encode();
        let written = {
            let mut file = crate::backend::lock(&self.inner.file);
            file.write_all(line.as_bytes())
        };
        if let Err(err) = written
            && !self.inner.closing.load(Ordering::SeqCst)
        {
            fatal(&format!("cannot talk to the guard process ({err})"));
        }
    }

    /// What a child needs to register itself with the guard before `exec`:
    /// its term (`None`: no term) and that term's safe-until.
    pub fn registration(&self, term: Option<(u64, Instant)>) -> Registration {
        let (token, safe_until) = term.map_or((0, 0), |(token, until)| (token, ns_at(until)));
        Registration {
            fd: self.inner.fd,
            token,
            safe_until,
        }
    }

    /// leaderd stops term `token`'s processes itself, by `kill_by`.
    pub fn stopping(&self, token: u64, kill_by: Instant) {
        self.send(Message::Stopping {
            token,
            kill_by: ns_at(kill_by),
        });
    }
}

/// The running guard and the task that feeds it.
pub struct GuardLink {
    handle: GuardHandle,
    forwarder: JoinHandle<()>,
    watcher: JoinHandle<()>,
    term_file: Arc<TermFile>,
}

impl GuardLink {
    /// Starts the guard (`leaderd guard`) and forwards the deadlines of
    /// `state`. `window` is lease_duration − renew_deadline.
    pub fn spawn(
        window: Duration,
        state: watch::Receiver<ElectionState>,
    ) -> std::io::Result<GuardLink> {
        let exe = std::env::current_exe()?;
        let term_file = Arc::new(TermFile::create()?);
        let mut child = Command::new(exe)
            .arg("guard")
            .arg("--window-ms")
            .arg(window.as_millis().to_string())
            .arg("--term-dir")
            .arg(term_file.dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Its log lines go where ours go.
            .stderr(Stdio::inherit())
            // Out of our process group: a terminal's Ctrl-C or a signal to
            // our group must not reach it.
            .process_group(0)
            .spawn()
            .inspect_err(|_| term_file.discard())?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no pipe to the guard"))?;
        let fd: OwnedFd = stdin.into_owned_fd()?;
        let raw = fd.as_raw_fd();
        set_nonblocking(raw)?;
        let handle = GuardHandle {
            inner: Arc::new(Pipe {
                file: Mutex::new(File::from(fd)),
                fd: raw,
                closing: AtomicBool::new(false),
            }),
        };
        let forwarder = tokio::spawn(forward(state, handle.clone(), term_file.clone()));
        let closing = handle.clone();
        let watcher = tokio::spawn(async move {
            let status = child.wait().await;
            if !closing.inner.closing.load(Ordering::SeqCst) {
                fatal(&format!("the guard process exited ({status:?})"));
            }
        });
        tracing::debug!(term_file = %term_file.path().display(), "guard started");
        Ok(GuardLink {
            handle,
            forwarder,
            watcher,
            term_file,
        })
    }

    pub fn handle(&self) -> GuardHandle {
        self.handle.clone()
    }

    /// The file a workload reads its term's deadline from.
    pub fn term_file(&self) -> PathBuf {
        self.term_file.path().to_path_buf()
    }

    /// Closes the pipe: the guard kills what is left (nothing, after a clean
    /// shutdown), removes the term file's directory and exits. leaderd
    /// leaves that removal to the guard, as after a crash: on a stalled disk
    /// it would hold up leaderd's exit.
    pub fn close(self) {
        self.handle.inner.closing.store(true, Ordering::SeqCst);
        self.forwarder.abort();
        self.watcher.abort();
        self.term_file.close();
        // Dropping the last handle closes the write end.
    }
}

/// Follows the published state: every new safe-until of our term goes to
/// the guard and to the term file. Renewals wake this task (they are not
/// news to other consumers, but deadlines are what this task is about).
async fn forward(
    mut state: watch::Receiver<ElectionState>,
    guard: GuardHandle,
    term_file: Arc<TermFile>,
) {
    let mut last: Option<(u64, Instant)> = None;
    loop {
        let term = state
            .borrow_and_update()
            .term
            .as_ref()
            .map(|term| (term.fencing_token, term.safe_until));
        if term != last {
            match term {
                Some((token, safe_until)) => {
                    let safe_until = ns_at(safe_until);
                    guard.send(Message::Term { token, safe_until });
                    term_file.write(token, safe_until);
                }
                None => {
                    if let Some((token, _)) = last {
                        term_file.write(token, 0);
                    }
                }
            }
            last = term;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

fn set_nonblocking(fd: i32) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd we own; F_GETFL/F_SETFL touch no memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The guard is gone: kill what it would have, and exit loudly.
fn fatal(why: &str) -> ! {
    tracing::error!(
        "{why}; killing every process group leaderd started and exiting, rather than lead without the guard"
    );
    crate::actions::exit_killing_every_group(1);
}
