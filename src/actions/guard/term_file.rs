//! The term file: one line, `<fencing token> <safe-until>`, safe-until in
//! nanoseconds of CLOCK_MONOTONIC, rewritten (atomically, by rename) at the
//! start of a term, on every renewal, and with safe-until `0` when the term
//! ends. Its path reaches hooks and the leader process as
//! `LEADERD_TERM_FILE`.
//!
//! A workload about to do something only the leader may do reads it and
//! compares safe-until with its own monotonic clock: a frozen or dead
//! leaderd stops renewing, so the deadline in the file runs out by itself.
//!
//! The file is written by a thread of its own (only the first, empty
//! content is written at start, so that the file exists before any hook
//! runs), never on the async runtime: a
//! stalled disk (a busy or network `/tmp`) would otherwise hold up the task
//! that hands the guard its deadlines, and the guard would kill a healthy
//! leader's processes. A stalled write only leaves the file behind, which
//! is safe: its deadline runs out and the workload stops acting.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use rand::Rng;

use crate::backend::lock;

/// The names leaderd writes in the file's directory.
pub const NAMES: [&str; 2] = ["term", "term.next"];

pub struct TermFile {
    dir: PathBuf,
    path: PathBuf,
    slot: Arc<Slot>,
}

/// Between [`TermFile::write`] and the writer thread: only the latest
/// content is kept, so a stalled disk costs one pending value, not a queue.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

#[derive(Default)]
struct SlotState {
    latest: Option<(u64, u64)>,
    /// Set by [`TermFile::close`]: the thread writes nothing more.
    closed: bool,
}

impl TermFile {
    /// A private directory (0700) under the system's temporary directory,
    /// removed by the guard (or [`TermFile::discard`]), and the thread that
    /// writes the file.
    pub fn create() -> std::io::Result<TermFile> {
        let suffix: u64 = rand::rng().random();
        let dir =
            std::env::temp_dir().join(format!("leaderd-{}-{suffix:016x}", std::process::id()));
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let [name, next] = NAMES;
        let path = dir.join(name);
        let writer = Writer {
            next: dir.join(next),
            path: path.clone(),
        };
        writer.write(0, 0);
        let slot = Arc::new(Slot::default());
        let shared = slot.clone();
        std::thread::Builder::new()
            .name("term-file".to_string())
            .spawn(move || writer.run(&shared))?;
        Ok(TermFile { dir, path, slot })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The private directory the file lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hands the thread a new content; never blocks on the disk.
    pub fn write(&self, token: u64, safe_until_ns: u64) {
        lock(&self.slot.state).latest = Some((token, safe_until_ns));
        self.slot.changed.notify_all();
    }

    /// Stops the thread; the file stays for the guard to remove (see
    /// `leaderd guard --term-dir`). Never touches the disk, so that a
    /// stalled one cannot hold up leaderd's exit.
    pub fn close(&self) {
        lock(&self.slot.state).closed = true;
        self.slot.changed.notify_all();
    }

    /// Stops the thread and removes the directory: for a start that failed
    /// before the guard, which would have removed it, was running.
    pub fn discard(&self) {
        self.close();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The writer thread's side.
struct Writer {
    next: PathBuf,
    path: PathBuf,
}

impl Writer {
    /// Writes the latest content until the [`TermFile`] is closed.
    fn run(&self, slot: &Slot) {
        let mut state = lock(&slot.state);
        loop {
            state = slot
                .changed
                .wait_while(state, |state| state.latest.is_none() && !state.closed)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.closed {
                return;
            }
            let Some((token, safe_until)) = state.latest.take() else {
                continue;
            };
            drop(state);
            self.write(token, safe_until);
            state = lock(&slot.state);
        }
    }

    /// Replaces the content in one step: a reader sees the old line or the
    /// new one, never half of each.
    fn write(&self, token: u64, safe_until_ns: u64) {
        let written = fs::write(&self.next, format!("{token} {safe_until_ns}\n"))
            .and_then(|()| fs::rename(&self.next, &self.path));
        if let Err(err) = written {
            tracing::warn!(path = %self.path.display(), %err, "cannot update the term file");
        }
    }
}
