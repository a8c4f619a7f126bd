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
    /// write; fewer counts as a failed acquire or renewal. Unset: see
    /// [`RedisConfig::min_replica_acks`].
    #[serde(default, rename = "min_replica_acks")]
    pub min_replica_acks_setting: Option<u32>,
}

impl RedisConfig {
    /// How many replicas must acknowledge each grant and renewal: as set,
    /// else 1 with Sentinel (a failover promotes a replica, which must hold
    /// the term) and 0 otherwise.
    pub fn min_replica_acks(&self) -> u32 {
        self.min_replica_acks_setting
            .unwrap_or(if self.sentinel.is_some() { 1 } else { 0 })
    }
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
                let field = format!("backend.redis.sentinel.urls[{i}]");
                check_url(url).map_err(|reason| problem(&field, reason))?;
                // A Sentinel listed twice would vote twice.
                if let Some(first) = sentinel.urls[..i]
                    .iter()
                    .position(|other| server_of(other) == server_of(url))
                {
                    return Err(problem(
                        &field,
                        format!(
                            "{:?} names the same Sentinel as urls[{first}]; each Sentinel counts once \
                             towards the majority that must name the master",
                            redact_url(url)
                        ),
                    ));
                }
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
    if redis.min_replica_acks() > 0 && n >= 3 && !redis.cluster {
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
        let pem = super::source::read_bounded(
            Path::new(&redis.tls_ca_file),
            super::MAX_CONFIG_BYTES,
            "certificates",
        )
        .map_err(|reason| {
            problem(
                "backend.redis.tls_ca_file",
                format!("{:?}: {reason}", redis.tls_ca_file),
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
pub(crate) fn read_secret(path: &str, field: &str) -> Result<Option<Secret>, Problem> {
    if path.is_empty() {
        return Ok(None);
    }
    let bytes = super::source::read_bounded(
        Path::new(path),
        super::source::MAX_SECRET_BYTES,
        "a password or token",
    )
    .map_err(|reason| problem(field, format!("{path:?}: {reason}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| problem(field, format!("{path:?} is not UTF-8 text")))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(problem(field, format!("{path:?} is empty")));
    }
    Ok(Some(Secret(secret)))
}

/// `host:port` of a valid Redis URL (6379 when the port is left out).
fn server_of(url: &str) -> Option<String> {
    let parsed = redis::parse_redis_url(url)?;
    Some(format!(
        "{}:{}",
        parsed.host_str().unwrap_or_default().to_ascii_lowercase(),
        parsed.port().unwrap_or(6379)
    ))
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    fn settings(redis_yaml: &str) -> Result<RedisSettings, Problem> {
        let yaml = format!("election:\n  name: demo\nbackend:\n  redis:\n{redis_yaml}");
        let config = Config::parse(Path::new("test.yaml"), &yaml).expect("parses");
        let redis = config.backend.redis.expect("a redis section");
        validate(&redis, &config.election)
    }

    const SENTINELS: &str = "    sentinel:\n      master_name: mymaster\n      urls: [\"redis://s1:26379\", \"redis://s2:26379\", \"redis://s3:26379\"]\n";

    #[test]
    fn sentinel_waits_for_one_replica_unless_told_otherwise() {
        let s = settings(SENTINELS).expect("valid");
        assert_eq!(s.config.min_replica_acks(), 1);
        let s = settings(&format!("{SENTINELS}    min_replica_acks: 0\n")).expect("valid");
        assert_eq!(s.config.min_replica_acks(), 0);
        let s = settings(&format!("{SENTINELS}    min_replica_acks: 2\n")).expect("valid");
        assert_eq!(s.config.min_replica_acks(), 2);
        let s = settings("    urls: [\"redis://a:6379\"]\n").expect("valid");
        assert_eq!(s.config.min_replica_acks(), 0);
    }

    #[test]
    fn a_sentinel_listed_twice_is_refused() {
        let twice = "    sentinel:\n      master_name: mymaster\n      urls: [\"redis://s1:26379\", \"redis://S1:26379/0\", \"redis://s3:26379\"]\n";
        let (field, reason) = settings(twice).expect_err("refused");
        assert_eq!(field, "backend.redis.sentinel.urls[1]");
        assert!(reason.contains("urls[0]"), "{reason}");
        // Another port is another Sentinel.
        let two_ports = "    sentinel:\n      master_name: mymaster\n      urls: [\"redis://s1:26379\", \"redis://s1:26380\", \"redis://s1:26381\"]\n";
        assert!(settings(two_ports).is_ok());
    }
}
