//! The term file: one line, `<fencing token> <safe-until>`, safe-until in
//! nanoseconds of CLOCK_MONOTONIC, rewritten (atomically, by rename) at the
//! start of a term, on every renewal, and with safe-until `0` when the term
//! ends. Its path reaches hooks and the leader process as
//! `LEADERD_TERM_FILE`.
//!
//! A workload about to do something only the leader may do reads it and
//! compares safe-until with its own monotonic clock: a frozen or dead
//! leaderd stops renewing, so the deadline in the file runs out by itself.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rand::Rng;

pub struct TermFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TermFile {
    /// A private directory (0700) under the system's temporary directory,
    /// removed by [`TermFile::remove`].
    pub fn create() -> std::io::Result<TermFile> {
        let suffix: u64 = rand::rng().random();
        let dir =
            std::env::temp_dir().join(format!("leaderd-{}-{suffix:016x}", std::process::id()));
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("term");
        let file = TermFile { dir, path };
        file.write(0, 0);
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the content in one step: a reader sees the old line or the
    /// new one, never half of each.
    pub fn write(&self, token: u64, safe_until_ns: u64) {
        let next = self.dir.join("term.next");
        let written = fs::write(&next, format!("{token} {safe_until_ns}\n"))
            .and_then(|()| fs::rename(&next, &self.path));
        if let Err(err) = written {
            tracing::warn!(path = %self.path.display(), %err, "cannot update the term file");
        }
    }

    pub fn remove(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
