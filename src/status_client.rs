//! `leaderd status`: fetch a running daemon's `/status` and print it for a
//! person (or as JSON for a script). Every failure is a sentence that says
//! what to check next.

use std::error::Error as _;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{quoted, show};
use crate::http::Status;

/// Fetches `<base>/status`; the error is a sentence for the operator.
pub async fn fetch(given: &str, timeout: Duration) -> Result<(String, Status), String> {
    let base = base_url(given)?;
    let url = format!("{base}/status");
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| format!("{} is not a URL like http://127.0.0.1:9090", quoted(given)))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = tokio::time::timeout(timeout, client.get(uri))
        .await
        .map_err(|_| {
            format!(
                "no answer from {base} within {}: is that leaderd's http.listen?",
                show(timeout)
            )
        })?
        .map_err(|err| request_failed(&base, &err))?;
    let code = response.status();
    let body = tokio::time::timeout(timeout, response.into_body().collect())
        .await
        .map_err(|_| format!("{url}: body not received in time"))?
        .map_err(|err| format!("{url}: {err}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !code.is_success() {
        return Err(format!(
            "{url} answered HTTP {code}: is that leaderd's http.listen?"
        ));
    }
    let status = serde_json::from_str(&text)
        .map_err(|err| format!("{url} did not answer with a leaderd status ({err})"))?;
    Ok((text, status))
}

/// The daemon's base URL from what the operator typed: `host:port` gets
/// `http://`, a trailing `/` or `/status` is dropped, and `https://` is
/// refused (leaderd serves plain HTTP only).
pub(crate) fn base_url(given: &str) -> Result<String, String> {
    let trimmed = given.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/status").unwrap_or(trimmed);
    match trimmed.split_once("://") {
        None => Ok(format!("http://{trimmed}")),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => Ok(format!("http://{rest}")),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => Err(format!(
            "{}: leaderd serves plain HTTP, not https; use http://{rest} (put a TLS proxy in front \
             of it if the network needs one)",
            quoted(given)
        )),
        Some(_) => Err(format!(
            "{}: leaderd serves plain HTTP only; use http://HOST:PORT",
            quoted(given)
        )),
    }
}

/// Says what a failed request most likely means.
pub(crate) fn request_failed(base: &str, err: &hyper_util::client::legacy::Error) -> String {
    let causes = causes(err);
    let io = causes
        .iter()
        .find_map(|cause| cause.downcast_ref::<std::io::Error>());
    match io {
        Some(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "nothing answers at {base}: is leaderd running, and is that its http.listen? \
             (connection refused)"
        ),
        Some(io) if err.is_connect() => format!("cannot connect to {base}: {io}"),
        Some(io) => format!("{base}: {io}"),
        None => {
            let innermost = causes
                .last()
                .map_or_else(|| err.to_string(), |cause| cause.to_string());
            format!("{base}: {innermost}")
        }
    }
}

/// The chain of errors under `err`, outermost first.
fn causes(err: &hyper_util::client::legacy::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut chain = Vec::new();
    let mut next = err.source();
    while let Some(cause) = next {
        chain.push(cause);
        next = cause.source();
    }
    chain
}

/// The human form.
pub fn render(status: &Status) -> String {
    let role = if status.is_leader {
        match status.fencing_token {
            Some(token) => format!("LEADER (fencing token {token})"),
            None => "LEADER".to_string(),
        }
    } else {
        "follower".to_string()
    };
    let leader = match (&status.leader, status.fencing_token) {
        (Some(leader), Some(token)) => format!("{leader} (fencing token {token})"),
        (Some(leader), None) => leader.clone(),
        (None, _) => "none".to_string(),
    };
    let mut out = String::new();
    let mut line = |key: &str, value: &str| out.push_str(&format!("{key:<16}{value}\n"));
    line("election", &status.election);
    line("identity", &status.identity);
    line("role", &role);
    line("leader", &leader);
    if let Some(ms) = status.lease_remaining_ms {
        let what = if status.is_leader {
            "steps down in"
        } else {
            "leader's lease"
        };
        line("lease", &format!("{what} {ms} ms unless renewed"));
    }
    if let Some(started) = &status.term_started_at {
        line("term started", started);
    }
    line("ready", if status.ready { "yes" } else { "no" });
    line("backend", &status.backend);
    if let Some(err) = &status.backend_error {
        line("backend error", err);
    }
    if let Some(reason) = &status.reason {
        line("last change", reason);
    }
    if let Some(to) = &status.handover_to {
        line("handover", &format!("to {to}, in progress"));
    }
    if !status.healthy {
        line("health", "UNHEALTHY (the health probe fails)");
    }
    if status.priority != 0 {
        line("priority", &status.priority.to_string());
    }
    if status.leading_unhealthy {
        line(
            "health",
            "LEADING WHILE UNHEALTHY: no healthy candidate to hand over to",
        );
    }
    if status.observer {
        line("mode", "observer (never competes)");
    }
    line("version", &status.version);
    if !status.candidates.is_empty() {
        out.push_str(&candidates_table(status));
    } else if let Some(err) = &status.candidates_error {
        out.push_str(&format!("{:<16}{err}\n", "candidates"));
    }
    out
}

/// Every candidate, one line each.
fn candidates_table(status: &Status) -> String {
    let rows: Vec<[String; 7]> = status
        .candidates
        .iter()
        .map(|c| {
            [
                c.identity.clone(),
                if c.is_leader { "leader" } else { "" }.to_string(),
                match (c.healthy, c.standing_aside) {
                    (true, _) => "healthy",
                    (false, true) => "backoff",
                    (false, false) => "UNHEALTHY",
                }
                .to_string(),
                c.priority.to_string(),
                format!("{} ms", c.last_seen_ms),
                c.version.clone(),
                c.url.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "CANDIDATE",
        "ROLE",
        "HEALTH",
        "PRIORITY",
        "LAST SEEN",
        "VERSION",
        "URL",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.truncate(text.trim_end().len());
        text + "\n"
    };
    let mut out = String::from("\n");
    out.push_str(&line(header.to_vec()));
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_forgiving_but_not_https() {
        for (given, base) in [
            ("127.0.0.1:9090", "http://127.0.0.1:9090"),
            ("http://h:1/", "http://h:1"),
            ("HTTP://h:1/status", "http://h:1"),
            ("http://h:1/status/", "http://h:1"),
        ] {
            assert_eq!(base_url(given).as_deref(), Ok(base), "{given}");
        }
        let https = base_url("https://h:1").expect_err("https");
        assert!(
            https.contains("not https") && https.contains("http://h:1"),
            "{https}"
        );
        assert!(base_url("ftp://h").is_err());
    }
}
