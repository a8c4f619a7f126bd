//! The guard: a small process, forked from the leaderd binary, that kills a
//! term's processes when leaderd can no longer be trusted to.
//!
//! leaderd stops the leader process and hooks itself at the step-down
//! instant. But a leaderd that is frozen (SIGSTOP, a debugger, a starved
//! runtime) or dead (SIGKILL, a panic, the OOM killer) stops nothing, and
//! its leader process would run on next to the next leader's. The guard is
//! not frozen or killed with it:
//!
//! - leaderd tells it, over a pipe, each term's safe-until (on every
//!   renewal) and every process group it starts;
//! - when a term's safe-until passes without an extension, the guard
//!   SIGKILLs the term's groups (a few ms of slack let a healthy leaderd say
//!   first that it is stopping them gracefully, with a deadline that the
//!   guard caps before anyone else can lead);
//! - when the pipe closes (leaderd died), it SIGKILLs every group at once.
//!
//! A child registers itself between `fork` and `exec` (see
//! [`Registration`]), so no process can escape the guard even if leaderd
//! dies in the middle of starting it.
//!
//! The same link keeps the *term file* up to date: `<token> <safe-until>`
//! on the monotonic clock, so that a workload can check cheaply, without
//! HTTP, that its term is still valid before an external side effect.

mod link;
mod term_file;
pub mod watchdog;

use std::time::Duration;

use tokio::time::Instant;

pub use link::{GuardHandle, GuardLink};

/// One line leaderd sends to the guard. Every line is far shorter than
/// `PIPE_BUF`, so writes from leaderd and from its children never interleave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// Term `token` may act until `safe_until` (CLOCK_MONOTONIC, ns).
    Term { token: u64, safe_until: u64 },
    /// Process group `group` belongs to term `token` (0: to no term: it is
    /// killed only when leaderd dies), whose safe-until is `safe_until`.
    Group {
        group: i32,
        token: u64,
        safe_until: u64,
    },
    /// leaderd is stopping term `token`'s processes itself and needs until
    /// `kill_by` (capped by the guard).
    Stopping { token: u64, kill_by: u64 },
    /// Every process of term `token` is gone.
    Ended { token: u64 },
    /// Process group `group` is gone.
    Gone { group: i32 },
    /// Kill every group now (a second signal).
    KillAll,
}

impl Message {
    pub fn encode(&self) -> String {
        match self {
            Message::Term { token, safe_until } => format!("term {token} {safe_until}\n"),
            Message::Group {
                group,
                token,
                safe_until,
            } => format!("group {group} {token} {safe_until}\n"),
            Message::Stopping { token, kill_by } => format!("stopping {token} {kill_by}\n"),
            Message::Ended { token } => format!("ended {token}\n"),
            Message::Gone { group } => format!("gone {group}\n"),
            Message::KillAll => "kill\n".to_string(),
        }
    }

    pub fn decode(line: &str) -> Option<Message> {
        let mut words = line.split_whitespace();
        let verb = words.next()?;
        let mut number = || words.next()?.parse::<u64>().ok();
        let message = match verb {
            "term" => Message::Term {
                token: number()?,
                safe_until: number()?,
            },
            "group" => Message::Group {
                group: i32::try_from(number()?).ok()?,
                token: number()?,
                safe_until: number()?,
            },
            "stopping" => Message::Stopping {
                token: number()?,
                kill_by: number()?,
            },
            "ended" => Message::Ended { token: number()? },
            "gone" => Message::Gone {
                group: i32::try_from(number()?).ok()?,
            },
            "kill" => Message::KillAll,
            _ => return None,
        };
        Some(message)
    }
}

/// CLOCK_MONOTONIC now, in ns: the clock every deadline is written on. It
/// is the clock behind `std::time::Instant` on Linux, and the one a
/// workload reads with `time.monotonic_ns()` or `clock_gettime`.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the timespec we own; with a
    // valid clock id it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// `instant` as CLOCK_MONOTONIC ns. The two clocks are read a moment apart,
/// CLOCK_MONOTONIC first: if the thread is preempted in between, the result
/// comes out early, never late (a deadline handed on must never be later
/// than the real one).
pub fn ns_at(instant: Instant) -> u64 {
    let now_ns = monotonic_ns();
    let now = Instant::now();
    if instant >= now {
        now_ns.saturating_add(nanos(instant - now))
    } else {
        now_ns.saturating_sub(nanos(now - instant))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a child writes to the guard between `fork` and `exec`: its group
/// and its term. Plain data, so that the child never allocates.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// The write end of the guard's pipe (close-on-exec).
    pub fd: i32,
    pub token: u64,
    pub safe_until: u64,
}

impl Registration {
    /// Runs in the child after `fork`: only async-signal-safe calls, no
    /// allocation. Writes `group <pid> <token> <safe_until>` in one write.
    pub fn write_from_child(&self) -> std::io::Result<()> {
        let mut line = [0u8; 96];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            for byte in bytes {
                if len < line.len() {
                    line[len] = *byte;
                    len += 1;
                }
            }
        };
        // SAFETY: getpid is async-signal-safe and cannot fail.
        let pid = unsafe { libc::getpid() };
        put(b"group ");
        put(digits(u64::try_from(pid).unwrap_or(0), &mut [0u8; 20]));
        put(b" ");
        put(digits(self.token, &mut [0u8; 20]));
        put(b" ");
        put(digits(self.safe_until, &mut [0u8; 20]));
        put(b"\n");
        // SAFETY: write(2) from a buffer we own, to an fd we inherited.
        let written = unsafe { libc::write(self.fd, line.as_ptr().cast(), len) };
        if usize::try_from(written).ok() == Some(len) {
            Ok(())
        } else {
            Err(std::io::Error::other(
                "cannot register with the guard process",
            ))
        }
    }
}

/// The decimal digits of `n`, written into `buffer`, without allocating.
fn digits(mut n: u64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buffer[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for message in [
            Message::Term {
                token: 7,
                safe_until: 123_456_789,
            },
            Message::Group {
                group: 4242,
                token: 0,
                safe_until: 0,
            },
            Message::Stopping {
                token: 9,
                kill_by: u64::MAX,
            },
            Message::Ended { token: 1 },
            Message::Gone { group: 1 },
            Message::KillAll,
        ] {
            let line = message.encode();
            assert!(line.len() < 96, "{line}");
            assert_eq!(Message::decode(&line), Some(message));
        }
        assert_eq!(Message::decode("nonsense 1"), None);
        assert_eq!(Message::decode("term x 1"), None);
    }

    #[test]
    fn digits_without_allocation() {
        assert_eq!(digits(0, &mut [0; 20]), b"0");
        assert_eq!(digits(1234, &mut [0; 20]), b"1234");
        assert_eq!(digits(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }

    #[test]
    fn instants_convert_to_the_monotonic_clock() {
        let now = Instant::now();
        let later = ns_at(now + Duration::from_secs(1));
        let earlier = ns_at(now);
        let diff = later - earlier;
        assert!(
            diff > 999_000_000 && diff < 1_001_000_000,
            "1 s became {diff} ns"
        );
    }
}
