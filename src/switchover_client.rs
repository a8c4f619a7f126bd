//! `leaderd switchover` and `leaderd step-down`: ask a running daemon (any
//! candidate's) to hand leadership over, and say how it went.
//!
//! Exit codes: 0 done, scheduled or cancelled; 1 the daemon could not be
//! reached, or the switchover was not carried out in time (it stays
//! pending); 2 usage; 3 the daemon refused (the message says why: no such
//! candidate, another switchover pending, the candidate is unhealthy or
//! leads already, nobody leads, a missing or wrong token).

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::status_client::{base_url, request_failed};

/// What to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// `to`: a named candidate; `at`: a time (RFC 3339).
    Switchover {
        to: Option<String>,
        at: Option<String>,
    },
    Cancel,
}

/// Runs the request; returns the exit code and prints the outcome.
pub async fn run(ask: Ask, url: &str, token_file: Option<&Path>, patience: Duration) -> u8 {
    match send(ask, url, token_file, patience).await {
        Ok((code, message)) => {
            if code == 0 {
                println!("{message}");
            } else {
                eprintln!("leaderd: {message}");
            }
            code
        }
        Err(message) => {
            eprintln!("leaderd: {message}");
            1
        }
    }
}

async fn send(
    ask: Ask,
    url: &str,
    token_file: Option<&Path>,
    patience: Duration,
) -> Result<(u8, String), String> {
    let base = base_url(url)?;
    if let Ask::Switchover { at: Some(at), .. } = &ask
        && let Err(err) = at.parse::<jiff::Timestamp>()
    {
        // A usage error, told before anything is sent.
        return Ok((
            2,
            format!(
                "--at {at:?} is not an RFC 3339 time with an offset, like 2026-12-03T02:00:00+01:00 ({err})"
            ),
        ));
    }
    let token = token(token_file)?;
    let (method, body) = match &ask {
        Ask::Switchover { to, at } => (
            Method::POST,
            json!({ "candidate": to, "scheduled_at": at }).to_string(),
        ),
        Ask::Cancel => (Method::DELETE, String::new()),
    };
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{base}/switchover"))
        .header("content-type", "application/json");
    if let Some(token) = &token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|err| format!("{base}: {err}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = tokio::time::timeout(patience, client.request(request))
        .await
        .map_err(|_| format!("no answer from {base} in time"))?
        .map_err(|err| request_failed(&base, &err))?;
    let status = response.status();
    let body = tokio::time::timeout(patience, response.into_body().collect())
        .await
        .map_err(|_| format!("{base}: the answer did not arrive in time"))?
        .map_err(|err| format!("{base}: {err}"))?
        .to_bytes();
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let message = answer["message"].as_str().unwrap_or("").to_string();
    Ok(match (status, &ask) {
        (StatusCode::OK, Ask::Cancel) => (0, "the pending switchover was cancelled".to_string()),
        (StatusCode::OK, _) => (
            0,
            format!(
                "switched over: {} leads now",
                answer["leader"].as_str().unwrap_or("?")
            ),
        ),
        (StatusCode::ACCEPTED, _) => (
            0,
            format!(
                "switchover scheduled for {}",
                answer["pending"]["scheduled_at"]
                    .as_str()
                    .unwrap_or("later")
            ),
        ),
        (StatusCode::GATEWAY_TIMEOUT, _) => (1, message),
        (StatusCode::CONFLICT, _) if answer["result"] == "overtaken" => (1, message),
        (StatusCode::SERVICE_UNAVAILABLE, _) if answer["result"] == "unavailable" => (1, message),
        (code, _) if code.is_client_error() || code == StatusCode::SERVICE_UNAVAILABLE => {
            (3, format!("refused ({}): {message}", code.as_u16()))
        }
        (code, _) => (
            1,
            format!("{base} answered HTTP {}: {message}", code.as_u16()),
        ),
    })
}

/// The bearer token: from `--token-file`, else `LEADERD_ADMIN_TOKEN`.
fn token(file: Option<&Path>) -> Result<Option<String>, String> {
    if let Some(path) = file {
        // Read exactly as the daemon reads http.admin_token_file.
        return crate::config::admin_token(&path.to_string_lossy())
            .map(|secret| secret.map(|secret| secret.0))
            .map_err(|(_, reason)| format!("--token-file: {reason}"));
    }
    Ok(std::env::var("LEADERD_ADMIN_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}
