//! The `health:` section: one probe that says whether this node can do the
//! leader's work (keepalived's `track_script`, Patroni's health), and the
//! thresholds that turn its results into "healthy" or not.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{duration, optional_duration, show};

/// As written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// A command: exit 0 = healthy.
    #[serde(default)]
    pub exec: Vec<String>,
    /// A URL: a 2xx answer = healthy.
    #[serde(default)]
    pub http: String,
    /// A file: healthy while it was modified within `max_age`.
    #[serde(default)]
    pub file: String,
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_age: Option<Duration>,
    #[serde(default = "defaults::period", deserialize_with = "duration")]
    pub period: Duration,
    #[serde(default = "defaults::timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Consecutive failures before a healthy node counts as unhealthy.
    #[serde(default = "defaults::failure_threshold")]
    pub failure_threshold: u32,
    /// Consecutive successes before an unhealthy node counts as healthy.
    #[serde(default = "defaults::success_threshold")]
    pub success_threshold: u32,
    /// After handing over for health, how long to stand aside even if the
    /// probe passes again (default: 2 × lease_duration).
    #[serde(default, deserialize_with = "optional_duration")]
    pub unhealthy_backoff: Option<Duration>,
}

mod defaults {
    use std::time::Duration;

    pub fn period() -> Duration {
        Duration::from_secs(2)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn failure_threshold() -> u32 {
        3
    }
    pub fn success_threshold() -> u32 {
        1
    }
}

/// What is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Exec(Vec<String>),
    Http(String),
    File { path: PathBuf, max_age: Duration },
}

impl Probe {
    /// For logs and `/status`.
    pub fn describe(&self) -> String {
        match self {
            Probe::Exec(argv) => format!("exec {}", argv.join(" ")),
            Probe::Http(url) => format!("http {url}"),
            Probe::File { path, max_age } => {
                format!("file {} (max age {})", path.display(), show(*max_age))
            }
        }
    }
}

/// A validated health section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    pub probe: Probe,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub unhealthy_backoff: Duration,
}

/// Checks the section; `(field, reason)` on the first problem.
pub fn validate(
    health: &HealthConfig,
    lease_duration: Duration,
) -> Result<HealthSettings, (String, String)> {
    let fail = |field: &str, reason: String| Err((format!("health.{field}"), reason));
    let given = [
        !health.exec.is_empty(),
        !health.http.trim().is_empty(),
        !health.file.trim().is_empty(),
    ];
    let probe = match given {
        [true, false, false] => {
            if health.exec[0].trim().is_empty() {
                return fail(
                    "exec",
                    "the program (first element) must not be empty".into(),
                );
            }
            Probe::Exec(health.exec.clone())
        }
        [false, true, false] => {
            let url = health.http.trim();
            if !url.starts_with("http://") {
                return fail(
                    "http",
                    format!(
                        "{url:?} must be a plain http:// URL, like http://127.0.0.1:8080/healthz"
                    ),
                );
            }
            if url.parse::<hyper::Uri>().is_err() {
                return fail("http", format!("{url:?} is not a URL"));
            }
            Probe::Http(url.to_string())
        }
        [false, false, true] => {
            let Some(max_age) = health.max_age else {
                return fail(
                    "max_age",
                    "a file probe needs max_age: how recently the file must have been modified, e.g. 10s".into(),
                );
            };
            if max_age.is_zero() {
                return fail("max_age", "must be greater than zero".into());
            }
            Probe::File {
                path: PathBuf::from(health.file.trim()),
                max_age,
            }
        }
        [false, false, false] => {
            return fail(
                "exec",
                "the section names no probe: give one of exec, http or file".into(),
            );
        }
        _ => {
            return fail("exec", "give exactly one of exec, http and file".into());
        }
    };
    if health.max_age.is_some() && !matches!(probe, Probe::File { .. }) {
        return fail("max_age", "applies to a file probe only".into());
    }
    for (field, value) in [("period", health.period), ("timeout", health.timeout)] {
        if value < Duration::from_millis(10) {
            return fail(
                field,
                format!(
                    "{} is below the 10ms resolution leaderd works at",
                    show(value)
                ),
            );
        }
    }
    if health.timeout > health.period {
        return fail(
            "timeout",
            format!(
                "{} must not be longer than health.period ({}): probes run one at a time",
                show(health.timeout),
                show(health.period)
            ),
        );
    }
    for (field, value) in [
        ("failure_threshold", health.failure_threshold),
        ("success_threshold", health.success_threshold),
    ] {
        if value == 0 {
            return fail(field, "must be at least 1".into());
        }
    }
    let unhealthy_backoff = health.unhealthy_backoff.unwrap_or(2 * lease_duration);
    Ok(HealthSettings {
        probe,
        period: health.period,
        timeout: health.timeout,
        failure_threshold: health.failure_threshold,
        success_threshold: health.success_threshold,
        unhealthy_backoff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> HealthConfig {
        serde_yaml::from_str(yaml).expect("parses")
    }

    fn problem(yaml: &str) -> (String, String) {
        validate(&parse(yaml), Duration::from_secs(15)).expect_err("invalid")
    }

    #[test]
    fn each_probe_kind_validates() {
        let exec = validate(&parse("exec: [\"true\"]\n"), Duration::from_secs(15)).expect("ok");
        assert_eq!(exec.probe, Probe::Exec(vec!["true".into()]));
        assert_eq!(exec.unhealthy_backoff, Duration::from_secs(30));
        assert_eq!((exec.failure_threshold, exec.success_threshold), (3, 1));
        let http = validate(
            &parse("http: http://127.0.0.1:1/h\n"),
            Duration::from_secs(15),
        )
        .expect("ok");
        assert_eq!(http.probe, Probe::Http("http://127.0.0.1:1/h".into()));
        let file = validate(
            &parse("file: /run/ok\nmax_age: 5s\n"),
            Duration::from_secs(15),
        )
        .expect("ok");
        assert!(matches!(file.probe, Probe::File { .. }));
    }

    #[test]
    fn mistakes_name_the_field() {
        assert_eq!(problem("period: 2s\n").0, "health.exec");
        assert_eq!(problem("exec: [x]\nhttp: http://h/\n").0, "health.exec");
        assert_eq!(problem("file: /x\n").0, "health.max_age");
        assert_eq!(problem("http: https://h/\n").0, "health.http");
        assert_eq!(
            problem("exec: [x]\ntimeout: 3s\nperiod: 1s\n").0,
            "health.timeout"
        );
        assert_eq!(
            problem("exec: [x]\nfailure_threshold: 0\n").0,
            "health.failure_threshold"
        );
        assert_eq!(problem("exec: [x]\nmax_age: 1s\n").0, "health.max_age");
    }
}
