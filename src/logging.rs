//! Log setup: human-readable text by default, JSON lines for machines; the
//! level comes from `LEADERD_LOG` (EnvFilter syntax, default `info`).
//!
//! A filter that cannot be what the operator meant is refused at start: a
//! typo must not silence the daemon (`verbose` would be read as "everything
//! from a module called verbose", that is, nothing at all).

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The variable that sets the log filter.
pub const LOG_VARIABLE: &str = "LEADERD_LOG";

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Log lines held while stderr does not take them (a stalled log
/// collector, a full pipe); beyond it lines are dropped, never waited for.
/// About 1 MiB of typical lines.
const BUFFERED_LINES: usize = 8192;

/// The log writer thread's handle: dropping it flushes what is buffered.
static WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Counts the lines dropped while stderr did not take them.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// The filter `LEADERD_LOG` asks for; the error is a sentence naming the
/// variable (the caller exits 2). Checked before anything starts, installed
/// later by [`install`].
pub fn filter() -> Result<EnvFilter, String> {
    match std::env::var(LOG_VARIABLE) {
        Ok(value) if !value.trim().is_empty() => parse_filter(&value),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(EnvFilter::new("info")),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{LOG_VARIABLE} is not valid UTF-8")),
    }
}

/// Installs the global subscriber. Lines go to stderr from a thread of
/// their own: a log collector that stops reading (Docker's blocking log
/// mode, a full pipe, a stalled disk) must not freeze the election: the
/// leader would stop renewing while it still counts as leader. Starts a
/// thread: call it after any `fork` (see [`crate::pid1`]). Keep what it
/// returns until the end of `main`: it flushes the log when dropped.
#[must_use = "dropping it flushes the log: keep it until the end of main"]
pub fn install(format: LogFormat, filter: EnvFilter) -> FlushOnDrop {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("leaderd-log")
        .finish(std::io::stderr());
    *WRITER.lock().unwrap_or_else(PoisonError::into_inner) = Some(guard);
    let _ = DROPPED.set(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    FlushOnDrop(())
}

/// Log lines dropped so far because stderr did not take them.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// The longest an exit waits for buffered lines to be written.
const FLUSH_WAIT: Duration = Duration::from_millis(1500);

/// Writes out what is buffered, waiting [`FLUSH_WAIT`] at most. Call before
/// the process exits: `exit` does not run destructors. A second caller
/// waits for the first one's flush rather than exit in the middle of it.
pub fn flush() {
    let mut writer = WRITER.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(guard) = writer.take() else {
        return;
    };
    // Dropped on a thread of its own: when stderr is stalled, the drop
    // gives up after a while but then prints to stdout, which may be the
    // same stalled pipe. The wait here is bounded either way.
    let (done, finished) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("leaderd-log-flush".to_string())
        .spawn(move || {
            drop(guard);
            let _ = done.send(());
        });
    if spawned.is_ok() {
        let _ = finished.recv_timeout(FLUSH_WAIT);
    }
    drop(writer);
}

/// Flushes the log when dropped: `main` holds one (from [`install`]), so
/// that a return or a panic that unwinds out of it does not lose the lines
/// written just before.
pub struct FlushOnDrop(());

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        flush();
    }
}

/// Parses an EnvFilter, refusing a bare word that is not a level: in
/// EnvFilter syntax it would select a module of that name and silence the
/// rest. A module is selected with `module=level` instead.
fn parse_filter(value: &str) -> Result<EnvFilter, String> {
    let hint = "use a level (off, error, warn, info, debug, trace), or module=level \
                pairs after it, e.g. info,leaderd=debug";
    // EnvFilter refuses spaces around directives; "info, kube=debug" is
    // clear enough to accept.
    let directives: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    for directive in &directives {
        let bare = !directive.contains(['=', '[', '{']);
        if bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{LOG_VARIABLE}: {} is not a log level; {hint}",
                crate::config::quoted(directive)
            ));
        }
    }
    EnvFilter::try_new(directives.join(",")).map_err(|err| {
        format!(
            "{LOG_VARIABLE}: {} is not a valid log filter ({err}); {hint}",
            crate::config::quoted(value)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_module_filters_are_accepted() {
        for good in [
            "info",
            "DEBUG",
            "warn,leaderd=debug",
            "info, kube=trace",
            "off",
        ] {
            assert!(parse_filter(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn typos_are_refused_naming_the_variable() {
        for bad in ["verbose", "info,verbose", "bogus[", "leaderd=loud"] {
            let err = parse_filter(bad).expect_err(bad);
            assert!(err.starts_with("LEADERD_LOG: "), "{bad}: {err}");
        }
    }
}
