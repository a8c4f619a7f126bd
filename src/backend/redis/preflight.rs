//! `leaderd check` for Redis: can this server hold a lease safely?
//!
//! Refuses servers that lack what the scripts need and warns about settings
//! that can silently break the lock (an eviction policy that may delete the
//! lease or the fencing counter). With Sentinel, shows what every Sentinel
//! names and warns about what weakens the majority rule or lets a failover
//! lose a term.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use tokio::time::Instant;

use super::{Connection, Keys, LockValue, connections};
use crate::config::RedisSettings;

use crate::backend::Preflight;

/// What `check` learned about one Redis server.
#[derive(Debug, Default)]
struct Report {
    url: String,
    version: String,
    current_holder: Option<String>,
    facts: Vec<String>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

/// Checks every server of the backend for the election's `keys`.
pub async fn preflight(settings: &RedisSettings, keys: &Keys, timeout: Duration) -> Preflight {
    let mut result = Preflight::default();
    let connections = match connections(settings) {
        Ok(connections) => connections,
        Err(err) => {
            result.errors.push(err.message);
            return result;
        }
    };
    let quorum = connections.len() > 1;
    if quorum {
        result.facts.push(format!(
            "quorum mode: {} independent masters, a majority of {} needed",
            connections.len(),
            connections.len() / 2 + 1
        ));
    }
    let sentinel = settings.config.sentinel.is_some();
    for connection in &connections {
        if sentinel {
            sentinel_report(
                connection,
                settings.config.min_replica_acks(),
                timeout,
                &mut result,
            )
            .await;
        }
        let report = check(connection, keys, quorum, sentinel, timeout).await;
        result.facts.push(if report.version.is_empty() {
            format!("redis {}", report.url)
        } else {
            format!("redis {} — Redis {}", report.url, report.version)
        });
        match &report.current_holder {
            Some(holder) => result
                .facts
                .push(format!("lease {} held by {holder}", keys.lock)),
            None if report.errors.is_empty() => {
                result.facts.push(format!("lease {} is free", keys.lock))
            }
            None => {}
        }
        let url = &report.url;
        result
            .facts
            .extend(report.facts.iter().map(|f| format!("{url}: {f}")));
        result
            .warnings
            .extend(report.warnings.iter().map(|w| format!("{url}: {w}")));
        result
            .errors
            .extend(report.errors.iter().map(|e| format!("{url}: {e}")));
    }
    result
}

/// What each Sentinel names, and what weakens the majority rule or lets a
/// failover lose a term. Whether a majority agrees shows as the master's
/// own check failing or not.
async fn sentinel_report(
    connection: &Connection,
    min_replica_acks: u32,
    timeout: Duration,
    result: &mut Preflight,
) {
    let Some((views, majority)) = connection.sentinel_views(Instant::now() + timeout).await else {
        return;
    };
    let total = views.len();
    result.facts.push(format!(
        "Sentinel: {total} configured; a master counts when {majority} of them name it"
    ));
    let mut named: HashMap<&str, usize> = HashMap::new();
    for view in &views {
        match &view.answer {
            Ok(Some(master)) => {
                *named.entry(master.as_str()).or_default() += 1;
                result
                    .facts
                    .push(format!("sentinel {} names master {master}", view.sentinel));
            }
            Ok(None) => result.warnings.push(format!(
                "sentinel {} does not know the master's name",
                view.sentinel
            )),
            Err(err) => result
                .warnings
                .push(format!("sentinel {}: {err}", view.sentinel)),
        }
    }
    if named.len() > 1 {
        result.warnings.push(format!(
            "the Sentinels name different masters ({}); only one named by {majority} counts",
            named
                .iter()
                .map(|(master, n)| format!("{master} by {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if total == 1 {
        result.warnings.push(
            "only one Sentinel: if it fails or is cut off, nobody can lead; list three or more"
                .into(),
        );
    } else if total.is_multiple_of(2) {
        result.warnings.push(format!(
            "{total} Sentinels: {majority} must agree, so an even count tolerates no more \
             failures than {}; list an odd number",
            total - 1
        ));
    }
    if min_replica_acks == 0 {
        result.warnings.push(
            "backend.redis.min_replica_acks is 0: a failover can promote a replica that never \
             received the current term, and a new leader can start while the old one still \
             leads; leave it at 1 (the default with Sentinel)"
                .into(),
        );
    }
}

/// The oldest Redis whose scripts may read `TIME` and then write (3.2,
/// with `redis.replicate_commands()`).
const MINIMUM_VERSION: (u64, u64, u64) = (3, 2, 0);

async fn check(
    connection: &Connection,
    keys: &Keys,
    quorum: bool,
    sentinel: bool,
    timeout: Duration,
) -> Report {
    let mut report = Report {
        url: connection.shown_url().to_string(),
        ..Report::default()
    };
    let deadline = Instant::now() + timeout;

    let info: String = match connection
        .run(deadline, |mut conn| async move {
            redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await
        })
        .await
    {
        Ok(info) => info,
        Err(err) => {
            // The error names the server already, and so does the prefix
            // `preflight` puts on every line of the report: say it once.
            let prefix = format!("{}: ", report.url);
            let why = err.message.strip_prefix(&prefix).unwrap_or(&err.message);
            report.errors.push(format!("cannot reach Redis: {why}"));
            return report;
        }
    };
    report.version = info_field(&info, "redis_version")
        .unwrap_or("unknown")
        .to_string();
    match parse_version(&report.version) {
        Some(v) if v < MINIMUM_VERSION => report.errors.push(format!(
            "Redis {} is too old: leaderd needs 3.2 or newer (its scripts read TIME)",
            report.version
        )),
        Some(_) => {}
        None => report.warnings.push(format!(
            "cannot read the Redis version from INFO ({:?})",
            report.version
        )),
    }

    let policy: Result<Vec<String>, _> = connection
        .run(deadline, |mut conn| async move {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async(&mut conn)
                .await
        })
        .await;
    match policy.as_deref() {
        Ok([_, policy]) if policy == "noeviction" => {}
        Ok([_, policy]) if policy.starts_with("allkeys-") => report.warnings.push(format!(
            "maxmemory-policy is {policy}: under memory pressure Redis may evict the lease \
             (two leaders) or the fencing counter; use noeviction"
        )),
        Ok([_, policy]) if policy.starts_with("volatile-") => report.warnings.push(format!(
            "maxmemory-policy is {policy}: under memory pressure Redis may evict the lease, \
             which has a TTL (two leaders); use noeviction"
        )),
        Ok(other) => report
            .warnings
            .push(format!("unexpected maxmemory-policy reply {other:?}")),
        Err(err) => report.warnings.push(format!(
            "cannot read maxmemory-policy (CONFIG may be disabled): {err}; make sure it is noeviction"
        )),
    }

    if quorum {
        persistence_warnings(connection, deadline, &mut report).await;
    }
    if sentinel {
        isolation_warning(connection, deadline, &mut report).await;
    }

    let holder: Result<Option<String>, _> = connection
        .run(deadline, |mut conn| {
            let key = keys.lock.clone();
            async move { conn.get(key).await }
        })
        .await;
    match holder {
        Ok(Some(value)) => match LockValue::parse(&value) {
            Some(lock) => {
                report.current_holder =
                    Some(format!("{} (fencing token {})", lock.holder, lock.token))
            }
            None => report.warnings.push(format!(
                "{} holds a value leaderd did not write; no candidate can lead until it is removed",
                keys.lock
            )),
        },
        Ok(None) => {}
        Err(err) => report
            .warnings
            .push(format!("cannot read {}: {err}", keys.lock)),
    }

    // A store without a fencing counter may have lost its data: the first
    // grant waits one lease (acquire.lua).
    let counter: Result<bool, _> = connection
        .run(deadline, |mut conn| {
            let key = keys.fence.clone();
            async move { conn.exists(key).await }
        })
        .await;
    if let Ok(false) = counter {
        report.facts.push(format!(
            "{} does not exist (a new store, or one that lost its data): the first candidate waits one lease_duration before anyone is granted the lease",
            keys.fence
        ));
    }
    report
}

/// Quorum mode counts on a majority remembering the lease: a master that
/// restarts empty must either persist every write or stay out for a lease.
async fn persistence_warnings(connection: &Connection, deadline: Instant, report: &mut Report) {
    let config: Result<Vec<String>, _> = connection
        .run(deadline, |mut conn| async move {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("append*")
                .query_async(&mut conn)
                .await
        })
        .await;
    let Ok(pairs) = config else {
        report.warnings.push(
            "cannot read appendonly/appendfsync (CONFIG disabled?): make sure this master persists every write or is restarted only after lease_duration".into(),
        );
        return;
    };
    let value = |name: &str| {
        pairs
            .chunks(2)
            .find(|pair| pair.first().map(String::as_str) == Some(name))
            .and_then(|pair| pair.get(1).cloned())
            .unwrap_or_default()
    };
    if value("appendonly") != "yes" || value("appendfsync") != "always" {
        report.warnings.push(format!(
            "appendonly {} / appendfsync {}: if this master restarts it forgets the lease, so \
             restart it only after lease_duration has passed (delayed restart) or set \
             appendonly yes and appendfsync always",
            value("appendonly"),
            value("appendfsync")
        ));
    }
}

/// Sentinel: a master cut off from its replicas should stop taking writes.
async fn isolation_warning(connection: &Connection, deadline: Instant, report: &mut Report) {
    let setting: Result<Vec<String>, _> = connection
        .run(deadline, |mut conn| async move {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("min-replicas-to-write")
                .query_async(&mut conn)
                .await
        })
        .await;
    match setting.as_deref() {
        Ok([_, value]) if value == "0" => report.warnings.push(
            "min-replicas-to-write is 0: a master cut off from its replicas (the minority side \
             of a partition) keeps taking writes; set min-replicas-to-write 1 and \
             min-replicas-max-lag on every server of the group"
                .into(),
        ),
        Ok(_) => {}
        Err(err) => report.warnings.push(format!(
            "cannot read min-replicas-to-write (CONFIG may be disabled): {err}; make sure it is at least 1"
        )),
    }
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.split('.').map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("3.0.7").expect("v") < MINIMUM_VERSION);
        assert!(parse_version("3.2.0").expect("v") >= MINIMUM_VERSION);
        assert!(parse_version("7.0.15").expect("v") > MINIMUM_VERSION);
        assert_eq!(
            info_field("# Server\r\nredis_version:7.0.15\r\n", "redis_version"),
            Some("7.0.15")
        );
    }
}
