//! Watching leader-only processes themselves, not what leaderd says about
//! them: a leader process started through [`recording_command`] appends its
//! pid (and a background child's) to a file; a [`ProcessWatcher`] thread
//! polls that file and `/proc` every millisecond or two, and keeps, for each
//! pid, the interval during which it was seen running, on this machine's
//! monotonic clock. Two intervals of different terms that intersect are two
//! leader-only workloads running at once.
//!
//! Declared from a test file with `#[path = "support/procs.rs"] mod procs;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the watcher looks.
const EVERY: Duration = Duration::from_millis(1);

/// YAML flow sequence of a leader process that records itself in `file`
/// and runs until killed: a shell that writes `<pid> <token> <identity>`
/// and starts a background `sleep` in its process group (recorded too, as
/// `<pid> <token> <identity> child`), then `exec`s a long `sleep`.
pub fn recording_command(file: &Path) -> String {
    let file = file.display();
    format!(
        "[\"sh\", \"-c\", \"echo \\\"$$ $LEADERD_FENCING_TOKEN $LEADERD_IDENTITY\\\" >> {file}; sleep 600 & echo \\\"$! $LEADERD_FENCING_TOKEN $LEADERD_IDENTITY child\\\" >> {file}; exec sleep 600\"]"
    )
}

/// One recorded process and when it was seen running.
#[derive(Debug, Clone)]
pub struct Life {
    pub pid: u32,
    pub token: u64,
    pub identity: String,
    /// First seen in the file (it is running from then on).
    pub first_seen: Instant,
    /// Last seen running.
    pub last_alive: Instant,
    /// Last seen running, once it was seen gone; `None` while it runs. The
    /// last sighting, not the first miss, so that a watcher delayed by a
    /// busy machine never reports an overlap that did not happen.
    pub ended: Option<Instant>,
}

impl Life {
    fn overlaps(&self, other: &Life, now: Instant) -> bool {
        let end_a = self.ended.unwrap_or(now);
        let end_b = other.ended.unwrap_or(now);
        self.first_seen < end_b && other.first_seen < end_a
    }
}

/// A thread that follows every process recorded in one file.
pub struct ProcessWatcher {
    file: PathBuf,
    lives: Arc<Mutex<BTreeMap<u32, Life>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProcessWatcher {
    pub fn start(file: &Path) -> ProcessWatcher {
        let _ = fs::write(file, "");
        let lives = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (file, lives, stop) = (file.to_path_buf(), lives.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    look(&file, &lives);
                    thread::sleep(EVERY);
                }
            })
        };
        ProcessWatcher {
            file: file.to_path_buf(),
            lives,
            stop,
            thread: Some(thread),
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Everything seen so far.
    pub fn lives(&self) -> Vec<Life> {
        look(&self.file, &self.lives);
        self.lives
            .lock()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Processes still running.
    pub fn running(&self) -> Vec<Life> {
        self.lives()
            .into_iter()
            .filter(|l| l.ended.is_none())
            .collect()
    }

    /// Processes of `identity` still running.
    pub fn running_of(&self, identity: &str) -> Vec<Life> {
        self.running()
            .into_iter()
            .filter(|l| l.identity == identity)
            .collect()
    }

    /// Pairs of processes of different terms that ran at the same time.
    pub fn overlaps(&self) -> Vec<(Life, Life)> {
        let now = Instant::now();
        let lives = self.lives();
        let mut found = Vec::new();
        for (i, a) in lives.iter().enumerate() {
            for b in &lives[i + 1..] {
                if a.token != b.token && a.overlaps(b, now) {
                    found.push((a.clone(), b.clone()));
                }
            }
        }
        found
    }

    /// Panics naming the pairs if two terms' processes ever ran at once.
    pub fn assert_no_overlap(&self) {
        let overlaps = self.overlaps();
        assert!(
            overlaps.is_empty(),
            "leader-only processes of different terms ran at the same time: {}",
            overlaps
                .iter()
                .map(|(a, b)| {
                    let (first, second) = if a.first_seen <= b.first_seen {
                        (a, b)
                    } else {
                        (b, a)
                    };
                    let overlap = first
                        .ended
                        .unwrap_or_else(Instant::now)
                        .saturating_duration_since(second.first_seen);
                    format!(
                        "{} (pid {}, token {}) and {} (pid {}, token {}) for {overlap:?}",
                        first.identity,
                        first.pid,
                        first.token,
                        second.identity,
                        second.pid,
                        second.token
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
}

impl Drop for ProcessWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Nothing recorded may outlive the test.
        if let Ok(lives) = self.lives.lock() {
            for life in lives.values().filter(|l| l.ended.is_none()) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(life.pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn look(file: &Path, lives: &Mutex<BTreeMap<u32, Life>>) {
    let now = Instant::now();
    let text = fs::read_to_string(file).unwrap_or_default();
    let Ok(mut lives) = lives.lock() else {
        return;
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(pid), Some(token), Some(identity)) = (
            words.next().and_then(|w| w.parse::<u32>().ok()),
            words.next().and_then(|w| w.parse::<u64>().ok()),
            words.next(),
        ) else {
            continue;
        };
        lives.entry(pid).or_insert_with(|| Life {
            pid,
            token,
            identity: identity.to_string(),
            first_seen: now,
            last_alive: now,
            ended: None,
        });
    }
    for life in lives.values_mut().filter(|l| l.ended.is_none()) {
        if running(life.pid) {
            life.last_alive = now;
        } else {
            life.ended = Some(life.last_alive);
        }
    }
}
