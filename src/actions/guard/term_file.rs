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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use rand::Rng;

pub struct TermFile {
    dir: PathBuf,
    path: PathBuf,
    /// To the writer thread: the latest `(token, safe_until)` wins.
    updates: mpsc::Sender<(u64, u64)>,
    /// Set by [`TermFile::remove`]: writes after it are expected to fail.
    removed: Arc<AtomicBool>,
}

impl TermFile {
    /// A private directory (0700) under the system's temporary directory,
    /// removed by [`TermFile::remove`], and the thread that writes the file.
    pub fn create() -> std::io::Result<TermFile> {
        let suffix: u64 = rand::rng().random();
        let dir =
            std::env::temp_dir().join(format!("leaderd-{}-{suffix:016x}", std::process::id()));
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("term");
        let (updates, pending) = mpsc::channel();
        let removed = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            next: dir.join("term.next"),
            path: path.clone(),
            removed: removed.clone(),
        };
        writer.write(0, 0);
        std::thread::Builder::new()
            .name("term-file".to_string())
            .spawn(move || writer.run(&pending))?;
        Ok(TermFile {
            dir,
            path,
            updates,
            removed,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a new content; never blocks.
    pub fn write(&self, token: u64, safe_until_ns: u64) {
        // The thread only ends after `remove`.
        let _ = self.updates.send((token, safe_until_ns));
    }

    pub fn remove(&self) {
        self.removed.store(true, Ordering::SeqCst);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The writer thread's side.
struct Writer {
    next: PathBuf,
    path: PathBuf,
    removed: Arc<AtomicBool>,
}

impl Writer {
    /// Writes the latest content until the [`TermFile`] is dropped.
    fn run(&self, pending: &mpsc::Receiver<(u64, u64)>) {
        while let Ok(mut latest) = pending.recv() {
            // Renewals queued behind a slow write are stale: skip to the
            // newest.
            while let Ok(newer) = pending.try_recv() {
                latest = newer;
            }
            self.write(latest.0, latest.1);
        }
    }

    /// Replaces the content in one step: a reader sees the old line or the
    /// new one, never half of each.
    fn write(&self, token: u64, safe_until_ns: u64) {
        let written = fs::write(&self.next, format!("{token} {safe_until_ns}\n"))
            .and_then(|()| fs::rename(&self.next, &self.path));
        if let Err(err) = written
            && !self.removed.load(Ordering::SeqCst)
        {
            tracing::warn!(path = %self.path.display(), %err, "cannot update the term file");
        }
    }
}
