//! Log setup: human-readable text by default, JSON lines for machines; the
//! level comes from `LEADERD_LOG` (EnvFilter syntax, default `info`).
//!
//! A filter that cannot be what the operator meant is refused at start: a
//! typo must not silence the daemon (`verbose` would be read as "everything
//! from a module called verbose", that is, nothing at all).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The variable that sets the log filter.
pub const LOG_VARIABLE: &str = "LEADERD_LOG";

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Installs the global subscriber; the error is a sentence naming
/// `LEADERD_LOG` (the caller exits 2).
pub fn init(format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var(LOG_VARIABLE) {
        Ok(value) if !value.trim().is_empty() => parse_filter(&value)?,
        Ok(_) | Err(std::env::VarError::NotPresent) => EnvFilter::new("info"),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(format!("{LOG_VARIABLE} is not valid UTF-8"));
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
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
