//! `leaderd status`: fetch a running daemon's `/status` and print it for a
//! person (or as JSON for a script).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::http::Status;

/// Fetches `<base>/status`; the error is a sentence for the operator.
pub async fn fetch(base: &str, timeout: Duration) -> Result<(String, Status), String> {
    let url = format!("{}/status", base.trim_end_matches('/'));
    let uri: hyper::Uri = url
        .parse()
        .map_err(|err| format!("bad URL {url:?}: {err}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = tokio::time::timeout(timeout, client.get(uri))
        .await
        .map_err(|_| format!("{url}: no answer within {}", crate::config::show(timeout)))?
        .map_err(|err| format!("{url}: {err}"))?;
    let code = response.status();
    let body = tokio::time::timeout(timeout, response.into_body().collect())
        .await
        .map_err(|_| format!("{url}: body not received in time"))?
        .map_err(|err| format!("{url}: {err}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !code.is_success() {
        return Err(format!("{url}: HTTP {code}"));
    }
    let status =
        serde_json::from_str(&text).map_err(|err| format!("{url}: not a leaderd status: {err}"))?;
    Ok((text, status))
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
    line("version", &status.version);
    out
}
