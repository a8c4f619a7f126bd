//! The guard process itself (`leaderd guard`, started by the daemon, never
//! by hand): a single-threaded loop that reads the daemon's messages from
//! stdin and kills process groups when their term's deadline passes or the
//! daemon dies. Deliberately small and synchronous: it must keep working
//! when everything else has stopped.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use super::{Message, monotonic_ns};

/// Deadlines of one term, CLOCK_MONOTONIC ns.
#[derive(Debug, Default, Clone, Copy)]
struct TermDeadline {
    safe_until: u64,
    /// Set once leaderd said it stops the term's processes itself.
    kill_by: Option<u64>,
}

/// What the guard knows, and the rule that turns it into kills.
#[derive(Debug)]
pub struct Guard {
    /// After safe-until, how long a healthy leaderd has to say it is
    /// stopping the term itself.
    slack: u64,
    /// The latest any term process may live after its safe-until: shorter
    /// than `lease_duration − renew_deadline`, after which another
    /// candidate may lead.
    cap: u64,
    terms: HashMap<u64, TermDeadline>,
    /// Process group → term (0: no term).
    groups: HashMap<i32, u64>,
}

/// A process group to kill, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Kill {
    pub group: i32,
    pub token: u64,
    pub why: &'static str,
}

impl Guard {
    /// `window` = lease_duration − renew_deadline.
    pub fn new(window: Duration) -> Guard {
        let window = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let slack = (window / 4).min(20_000_000);
        let margin = (window / 4).min(50_000_000);
        Guard {
            slack,
            cap: window - margin,
            terms: HashMap::new(),
            groups: HashMap::new(),
        }
    }

    /// Takes one message; deadlines are judged by [`Guard::due`]. Only
    /// `KillAll` returns groups to kill at once.
    pub fn receive(&mut self, message: Message) -> Vec<Kill> {
        match message {
            Message::Term { token, safe_until } => self.extend(token, safe_until),
            Message::Group {
                group,
                token,
                safe_until,
            } => {
                self.groups.insert(group, token);
                if token != 0 {
                    self.extend(token, safe_until);
                }
            }
            Message::Stopping { token, kill_by } => {
                let term = self.terms.entry(token).or_default();
                term.kill_by = Some(kill_by);
            }
            Message::Ended { token } => {
                self.terms.remove(&token);
                self.groups.retain(|_, term| *term != token);
            }
            Message::Gone { group } => {
                self.groups.remove(&group);
            }
            Message::KillAll => return self.kill_all("leaderd was told to exit at once"),
        }
        Vec::new()
    }

    /// Takes every complete line in `pending` (a partial last line stays
    /// for the next read), then judges deadlines at `now`: the groups to
    /// kill. Judging once, after every line read so far, matters: after a
    /// wait that ran long (a busy machine), the extension that saves a
    /// healthy term may sit behind other lines.
    pub fn take_lines(&mut self, pending: &mut Vec<u8>, now: u64) -> Vec<Kill> {
        let mut kills = Vec::new();
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            match Message::decode(&text) {
                Some(message) => kills.extend(self.receive(message)),
                None => tracing::warn!(line = %text.trim(), "guard: unknown message"),
            }
        }
        kills.extend(self.due(now));
        kills
    }

    /// The daemon is gone: nothing it started may run on.
    pub fn kill_all(&mut self, why: &'static str) -> Vec<Kill> {
        let kills = self
            .groups
            .drain()
            .map(|(group, token)| Kill { group, token, why })
            .collect();
        self.terms.clear();
        kills
    }

    /// Groups whose term's deadline has passed at `now`; forgets them.
    pub fn due(&mut self, now: u64) -> Vec<Kill> {
        let expired: Vec<(u64, &'static str)> = self
            .terms
            .iter()
            .filter_map(|(token, term)| {
                let (deadline, why) = self.deadline(term);
                (now >= deadline).then_some((*token, why))
            })
            .collect();
        let mut kills = Vec::new();
        for (token, why) in expired {
            self.terms.remove(&token);
            self.groups.retain(|group, term| {
                if *term == token {
                    kills.push(Kill {
                        group: *group,
                        token,
                        why,
                    });
                    false
                } else {
                    true
                }
            });
        }
        kills
    }

    /// The next instant at which something may be due.
    pub fn next_deadline(&self) -> Option<u64> {
        self.terms.values().map(|term| self.deadline(term).0).min()
    }

    fn extend(&mut self, token: u64, safe_until: u64) {
        let term = self.terms.entry(token).or_default();
        // Safe-until only grows within a term; an older value is stale.
        term.safe_until = term.safe_until.max(safe_until);
    }

    fn deadline(&self, term: &TermDeadline) -> (u64, &'static str) {
        let latest = term.safe_until.saturating_add(self.cap);
        match term.kill_by {
            Some(kill_by) if kill_by < latest => {
                (kill_by, "leaderd's graceful stop ran out of time")
            }
            Some(_) => (
                latest,
                "the term's processes would outlive the window after safe-until",
            ),
            None => (
                term.safe_until.saturating_add(self.slack),
                "safe-until passed without a renewal from leaderd (frozen or starved?)",
            ),
        }
    }
}

/// `leaderd guard`: runs until stdin closes. Returns the exit code. Then
/// (after any kills) the term file's directory `term_dir` goes too: the
/// guard removes it whether leaderd exited or died, since a dead leaderd
/// cannot and an exiting one must not wait for a stalled disk.
pub fn run(window: Duration, term_dir: Option<&Path>) -> i32 {
    let code = watch(window);
    if let Some(dir) = term_dir.filter(|dir| is_term_dir(dir)) {
        remove_term_dir(dir);
    }
    code
}

/// Only the two names leaderd writes, then the directory if that left it
/// empty: never a recursive removal of a path from argv. An exiting
/// leaderd may still finish a write it had begun: a few tries.
fn remove_term_dir(dir: &Path) {
    for _ in 0..3 {
        for name in super::term_file::NAMES {
            let _ = std::fs::remove_file(dir.join(name));
        }
        match std::fs::remove_dir(dir) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {}
            _ => return,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `dir` looks like a directory leaderd made for its term file (a
/// real directory, not a symlink, named `leaderd-…`, ours and private):
/// the guard removes nothing else, whatever its command line says.
fn is_term_dir(dir: &Path) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let named = dir
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with("leaderd-"));
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    named
        && std::fs::symlink_metadata(dir).is_ok_and(|meta| {
            meta.is_dir() && meta.uid() == me && meta.permissions().mode() & 0o777 == 0o700
        })
}

fn watch(window: Duration) -> i32 {
    // A terminal's Ctrl-C, or a `pkill` aimed at the daemon, must not take
    // the guard down with it: it ends when leaderd's pipe closes.
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: setting a signal's disposition to SIG_IGN.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    name_process();
    let mut guard = Guard::new(window);
    // Unbuffered: std's stdin keeps what it read ahead in a buffer that
    // poll(2) cannot see, and a deadline extension could wait there while
    // the guard sleeps towards a kill.
    let mut input = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(err) => {
            tracing::error!(%err, "guard: cannot read from leaderd");
            return 1;
        }
    };
    let mut pending = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let now = monotonic_ns();
        let timeout_ms = match guard.next_deadline() {
            // Round up: waking a moment early would only loop again.
            Some(deadline) => {
                i32::try_from(deadline.saturating_sub(now).div_ceil(1_000_000)).unwrap_or(i32::MAX)
            }
            None => -1,
        };
        // Everything leaderd wrote is read before any deadline is judged.
        let mut wait_ms = timeout_ms;
        for _ in 0..MAX_READS_PER_ROUND {
            if !readable(wait_ms) {
                break;
            }
            wait_ms = 0;
            match input.read(&mut buffer) {
                Ok(0) => {
                    execute(guard.kill_all("leaderd exited or was killed"));
                    return 0;
                }
                Ok(n) => pending.extend_from_slice(&buffer[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    tracing::error!(%err, "guard: cannot read from leaderd; killing every process group");
                    execute(guard.kill_all("the guard lost its pipe to leaderd"));
                    return 1;
                }
            }
        }
        execute(guard.take_lines(&mut pending, monotonic_ns()));
    }
}

/// Reads per round before deadlines are judged anyway (64 × 4 KiB, far more
/// than leaderd writes between two rounds): the loop stays bounded even if
/// the pipe never runs dry.
const MAX_READS_PER_ROUND: usize = 64;

/// Whether leaderd's pipe (stdin) has something to read (or was closed)
/// within `timeout_ms` (-1: no timeout).
fn readable(timeout_ms: i32) -> bool {
    let mut poll = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd that we own.
    let ready = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
    ready > 0
}

fn execute(kills: Vec<Kill>) {
    // Every kill first, the log after: a log write can block (a full pipe,
    // a stalled disk) and must not hold up the next group's kill.
    let killed: Vec<&Kill> = kills
        .iter()
        // SAFETY: kill(2) on a process group id; no memory involved. ESRCH
        // (already gone) is the common, harmless outcome.
        .filter(|kill| unsafe { libc::kill(-kill.group, libc::SIGKILL) } == 0)
        .collect();
    for kill in killed {
        tracing::warn!(
            group = kill.group,
            token = kill.token,
            "guard: killed process group: {}",
            kill.why
        );
    }
}

/// Shows as `leaderd-guard` in `ps` and `top`.
fn name_process() {
    let name = b"leaderd-guard\0";
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn guard() -> Guard {
        // window 400 ms: slack 20 ms, cap 350 ms.
        Guard::new(Duration::from_millis(400))
    }

    /// `group <group> <token> <safe_until>`.
    fn group(group: i32, token: u64, safe_until: u64) -> Message {
        Message::Group {
            group,
            token,
            safe_until,
        }
    }

    fn groups(kills: &[Kill]) -> Vec<i32> {
        let mut groups: Vec<i32> = kills.iter().map(|k| k.group).collect();
        groups.sort();
        groups
    }

    #[test]
    fn a_term_s_groups_die_shortly_after_safe_until_unless_renewed() {
        let mut g = guard();
        let s = 1_000 * MS;
        assert!(
            g.receive(Message::Term {
                token: 7,
                safe_until: s
            })
            .is_empty()
        );
        g.receive(group(100, 7, s));
        g.receive(group(200, 0, 0));
        assert_eq!(g.next_deadline(), Some(s + 20 * MS));
        assert!(g.due(s + 19 * MS).is_empty());
        // A renewal moves the deadline.
        g.receive(Message::Term {
            token: 7,
            safe_until: s + 500 * MS,
        });
        assert!(g.due(s + 100 * MS).is_empty());
        // A stale (smaller) safe-until never moves it back.
        g.receive(Message::Term {
            token: 7,
            safe_until: s,
        });
        assert!(g.due(s + 400 * MS).is_empty());
        let kills = g.due(s + 520 * MS);
        assert_eq!(groups(&kills), [100]);
        // The group of no term lives until leaderd dies.
        assert_eq!(groups(&g.kill_all("exit")), [200]);
    }

    #[test]
    fn a_graceful_stop_gets_its_time_but_never_past_the_cap() {
        let mut g = guard();
        let s = 1_000 * MS;
        g.receive(group(1, 3, s));
        g.receive(Message::Stopping {
            token: 3,
            kill_by: s + 200 * MS,
        });
        assert!(g.due(s + 199 * MS).is_empty());
        assert_eq!(groups(&g.due(s + 200 * MS)), [1]);

        g.receive(group(2, 4, s));
        g.receive(Message::Stopping {
            token: 4,
            kill_by: s + 10_000 * MS,
        });
        assert!(g.due(s + 349 * MS).is_empty());
        assert_eq!(groups(&g.due(s + 350 * MS)), [2]);
    }

    #[test]
    fn ended_terms_and_gone_groups_are_forgotten() {
        let mut g = guard();
        for id in [1, 2] {
            g.receive(group(id, 5, MS));
        }
        g.receive(Message::Gone { group: 1 });
        assert_eq!(groups(&g.due(100 * MS)), [2]);
        g.receive(group(3, 6, MS));
        g.receive(Message::Ended { token: 6 });
        assert!(g.due(100 * MS).is_empty());
        assert!(g.kill_all("exit").is_empty());
    }

    #[test]
    fn a_late_registration_for_an_expired_term_is_killed_at_once() {
        let mut g = guard();
        g.receive(group(9, 2, MS));
        assert_eq!(groups(&g.due(500 * MS)), [9]);
    }

    #[test]
    fn an_extension_read_behind_another_line_counts_before_deadlines_are_judged() {
        let mut g = guard();
        let s = 1_000 * MS;
        g.receive(group(4, 7, s));
        // Read late, in one chunk: another line, then the extension.
        let mut pending = format!("gone 99\nterm 7 {}\ngroup 5 7", s + 500 * MS).into_bytes();
        assert!(g.take_lines(&mut pending, s + 30 * MS).is_empty());
        // The partial line waits for the rest.
        assert_eq!(pending, b"group 5 7");
    }

    #[test]
    fn kill_all_takes_every_group() {
        let mut g = guard();
        g.receive(group(1, 2, u64::MAX / 2));
        g.receive(group(4, 0, 0));
        assert_eq!(groups(&g.receive(Message::KillAll)), [1, 4]);
    }
}
