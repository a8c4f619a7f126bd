//! The `backend.redis` section: one server, a quorum of independent masters,
//! a master behind Sentinel, or a Redis Cluster; credentials and TLS.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{ElectionConfig, redact_url, show};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// One URL: a single server. An odd number >= 3: independent masters
    /// (quorum mode). With `cluster: true`: seed nodes of a Redis Cluster.
    /// Empty with `sentinel`.
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Find the master through Sentinel and follow failovers.
    pub sentinel: Option<SentinelConfig>,
    /// `urls` are seed nodes of a Redis Cluster.
    #[serde(default)]
    pub cluster: bool,
    /// ACL user (overrides a user in the URLs).
    #[serde(default)]
    pub username: String,
    /// File holding the password (overrides a password in the URLs), so
    /// that the secret stays out of this file.
    #[serde(default)]
    pub password_file: String,
    /// PEM file of the CA that signed the servers' certificates (rediss://);
    /// default: the system's trusted roots.
    #[serde(default)]
    pub tls_ca_file: String,
    /// After acquire and renew, `WAIT` for this many replicas to have the
    /// write; fewer counts as a failed acquire or renewal.
    #[serde(default)]
    pub min_replica_acks: u32,
}

fn default_key_prefix() -> String {
    "leaderd".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    pub master_name: String,
    /// The Sentinels: redis://host:26379 (credentials for the Sentinels
    /// themselves go in these URLs or in `password_file`).
    pub urls: Vec<String>,
    #[serde(default)]
    pub password_file: String,
    /// The master speaks TLS (rediss://).
    #[serde(default)]
    pub master_tls: bool,
}

/// `backend.redis` after validation, with the secret files read.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub config: RedisConfig,
    pub password: Option<Secret>,
    pub sentinel_password: Option<Secret>,
    pub tls_ca_pem: Option<Vec<u8>>,
}

/// A secret read from a file; never printed.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

type Problem = (String, String);

fn problem(field: &str, reason: String) -> Problem {
    (field.to_string(), reason)
}

pub fn validate(redis: &RedisConfig, election: &ElectionConfig) -> Result<RedisSettings, Problem> {
    let n = redis.urls.len();
    match (&redis.sentinel, redis.cluster) {
        (Some(_), true) => {
            return Err(problem(
                "backend.redis.cluster",
                "cannot be combined with backend.redis.sentinel".into(),
            ));
        }
        (Some(sentinel), false) => {
            if n > 0 {
                return Err(problem(
                    "backend.redis.urls",
                    "must be empty with backend.redis.sentinel (the Sentinels name the master)"
                        .into(),
                ));
            }
            if sentinel.master_name.trim().is_empty() {
                return Err(problem(
                    "backend.redis.sentinel.master_name",
                    "must not be empty".into(),
                ));
            }
            if sentinel.urls.is_empty() {
                return Err(problem(
                    "backend.redis.sentinel.urls",
                    "must list at least one Sentinel, e.g. redis://127.0.0.1:26379".into(),
                ));
            }
            for (i, url) in sentinel.urls.iter().enumerate() {
                check_url(url).map_err(|reason| {
                    problem(&format!("backend.redis.sentinel.urls[{i}]"), reason)
                })?;
            }
        }
        (None, true) => {
            if n == 0 {
                return Err(problem(
                    "backend.redis.urls",
                    "must list at least one seed node of the cluster".into(),
                ));
            }
        }
        (None, false) => {
            if n == 0 {
                return Err(problem(
                    "backend.redis.urls",
                    "must list one Redis URL (or an odd number >= 3 for quorum mode)".into(),
                ));
            }
            if n.is_multiple_of(2) {
                return Err(problem(
                    "backend.redis.urls",
                    format!(
                        "lists {n} URLs: give 1 (a single Redis) or an odd number of at least 3 \
                         independent masters (quorum mode). With an even count the servers can \
                         split in halves where neither side has a majority, and {n} servers \
                         tolerate no more failures than {}",
                        n - 1
                    ),
                ));
            }
            if n >= 3 {
                // Redlock's clock drift allowance: 1% of the lease + 2 ms
                // must fit in the margin between step-down and expiry.
                let drift = election.lease_duration / 100 + Duration::from_millis(2);
                let margin = election
                    .lease_duration
                    .saturating_sub(election.renew_deadline);
                if margin <= drift {
                    return Err(problem(
                        "election.renew_deadline",
                        format!(
                            "leaves {} before the lease expires; quorum mode needs more than \
                             the clock drift allowance of {} (1% of lease_duration + 2ms)",
                            show(margin),
                            show(drift)
                        ),
                    ));
                }
            }
        }
    }
    for (i, url) in redis.urls.iter().enumerate() {
        check_url(url).map_err(|reason| problem(&format!("backend.redis.urls[{i}]"), reason))?;
    }
    if redis.key_prefix.is_empty()
        || redis.key_prefix.contains(['{', '}'])
        || redis
            .key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(problem(
            "backend.redis.key_prefix",
            format!(
                "{:?} must be non-empty, without spaces or braces (braces are the hash tag)",
                redis.key_prefix
            ),
        ));
    }
    if redis.min_replica_acks > 0 && n >= 3 && !redis.cluster {
        return Err(problem(
            "backend.redis.min_replica_acks",
            "applies to a single master or Sentinel; quorum mode uses independent masters without replicas".into(),
        ));
    }
    let password = read_secret(&redis.password_file, "backend.redis.password_file")?;
    let sentinel_password = match &redis.sentinel {
        Some(sentinel) => read_secret(
            &sentinel.password_file,
            "backend.redis.sentinel.password_file",
        )?,
        None => None,
    };
    let tls_ca_pem = if redis.tls_ca_file.is_empty() {
        None
    } else {
        let pem = std::fs::read(&redis.tls_ca_file).map_err(|err| {
            problem(
                "backend.redis.tls_ca_file",
                format!("cannot read {:?}: {err}", redis.tls_ca_file),
            )
        })?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(problem(
                "backend.redis.tls_ca_file",
                format!("{:?} holds no PEM certificate", redis.tls_ca_file),
            ));
        }
        Some(pem)
    };
    Ok(RedisSettings {
        config: redis.clone(),
        password,
        sentinel_password,
        tls_ca_pem,
    })
}

/// Reads a password file (trailing newline dropped); empty path = none.
fn read_secret(path: &str, field: &str) -> Result<Option<Secret>, Problem> {
    if path.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(Path::new(path))
        .map_err(|err| problem(field, format!("cannot read {path:?}: {err}")))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(problem(field, format!("{path:?} is empty")));
    }
    Ok(Some(Secret(secret)))
}

fn check_url(url: &str) -> Result<(), String> {
    let scheme = url.split("://").next().unwrap_or_default();
    if !url.contains("://") || !matches!(scheme, "redis" | "rediss") {
        return Err(format!(
            "{:?} must start with redis:// or rediss://",
            redact_url(url)
        ));
    }
    redis::parse_redis_url(url)
        .ok_or_else(|| format!("{:?} is not a valid Redis URL", redact_url(url)))?;
    Ok(())
}
