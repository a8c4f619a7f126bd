//! `/switchover`: `GET` shows the pending one (open to all, like every read);
//! `POST` asks for one and `DELETE` cancels it — the first endpoints that
//! change the election, so they need an admin credential: the bearer token
//! of `http.admin_token_file` (compared in constant time, never logged), or
//! a request on `http.admin_listen`. Without either, they are refused.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::Shared;
use crate::election::steering::{SwitchoverAsk, SwitchoverOutcome};

/// The body of `POST /switchover` (all fields optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    candidate: Option<String>,
    scheduled_at: Option<String>,
}

pub async fn pending(State(shared): State<Shared>) -> Response {
    match shared.api.steer.pending().await {
        Ok(pending) => (StatusCode::OK, axum::Json(json!({ "pending": pending }))).into_response(),
        Err(err) => unavailable(format!("cannot read the pending switchover: {err}")),
    }
}

pub async fn request(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refusal) = authorize(&shared, &headers) {
        return *refusal;
    }
    let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(err) => {
                shared.api.metrics.switchover("invalid");
                return answer(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the body must be JSON like {{\"candidate\": \"node-2\", \"scheduled_at\": \"2026-12-03T02:00:00+01:00\"}} (both optional): {err}"
                    ),
                );
            }
        }
    };
    let outcome = if body
        .candidate
        .as_deref()
        .is_some_and(|c| c.trim().is_empty())
    {
        // Not "anyone": an empty name is a mistake (an unset variable), and
        // a step-down is asked for by leaving the field out.
        SwitchoverOutcome::Invalid(
            "candidate is empty; leave it out to hand over to the best other candidate".to_string(),
        )
    } else {
        shared
            .api
            .steer
            .switchover(SwitchoverAsk {
                candidate: body.candidate,
                scheduled_at: body.scheduled_at.filter(|t| !t.is_empty()),
            })
            .await
    };
    shared.api.metrics.switchover(outcome.result());
    let result = outcome.result();
    let (code, body) = match outcome {
        SwitchoverOutcome::Done { leader } => (
            StatusCode::OK,
            json!({ "result": result, "leader": leader }),
        ),
        SwitchoverOutcome::Overtaken { leader, wanted } => (
            StatusCode::CONFLICT,
            json!({ "result": result, "leader": leader, "message": format!("leadership moved to {leader}, not {wanted}: the switchover was cancelled or replaced meanwhile, or its leader lost the lease") }),
        ),
        SwitchoverOutcome::Scheduled(pending) => (
            StatusCode::ACCEPTED,
            json!({ "result": result, "pending": pending }),
        ),
        SwitchoverOutcome::Invalid(why) => (
            StatusCode::BAD_REQUEST,
            json!({ "result": result, "message": why }),
        ),
        SwitchoverOutcome::UnknownCandidate(name) => (
            StatusCode::NOT_FOUND,
            json!({ "result": result, "message": format!("no candidate {name:?} stands in this election (see GET /status)") }),
        ),
        SwitchoverOutcome::Conflict(pending) => (
            StatusCode::CONFLICT,
            json!({ "result": result, "message": "a switchover is pending already; DELETE /switchover cancels it", "pending": pending }),
        ),
        SwitchoverOutcome::Refused(why) => (
            StatusCode::PRECONDITION_FAILED,
            json!({ "result": result, "message": why }),
        ),
        SwitchoverOutcome::NoLeader => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "result": result, "message": "nobody leads: there is nothing to switch over from" }),
        ),
        SwitchoverOutcome::TimedOut { leader, pending } => (
            StatusCode::GATEWAY_TIMEOUT,
            json!({ "result": result, "message": "not carried out within lease_duration; it stays pending (DELETE /switchover cancels it)", "leader": leader, "pending": pending }),
        ),
        SwitchoverOutcome::Unavailable(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "result": result, "message": format!("the store could not be asked: {why}") }),
        ),
    };
    (code, axum::Json(body)).into_response()
}

pub async fn cancel(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(refusal) = authorize(&shared, &headers) {
        return *refusal;
    }
    match shared.api.steer.cancel().await {
        Ok(true) => {
            shared.api.metrics.switchover("cancelled");
            (StatusCode::OK, axum::Json(json!({ "result": "cancelled" }))).into_response()
        }
        Ok(false) => answer(
            StatusCode::NOT_FOUND,
            "no switchover is pending".to_string(),
        ),
        Err(err) => unavailable(format!("the store could not be asked: {err}")),
    }
}

/// 503 for a store that could not be asked, marked so that the CLI tells it
/// from a refusal (exit 1, not 3).
fn unavailable(message: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "result": "unavailable", "message": message })),
    )
        .into_response()
}

/// Admin listener: yes. Token configured: the right bearer token, else 401.
/// Neither: 403, saying how to enable it.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    if shared.admin {
        return Ok(());
    }
    let Some(token) = &shared.api.admin_token else {
        shared.api.metrics.switchover("disabled");
        return Err(Box::new(answer(
            StatusCode::FORBIDDEN,
            "switchover is disabled on this listener: set http.admin_token_file (then send Authorization: Bearer <token>) or http.admin_listen (a separate listener, e.g. 127.0.0.1:9091)".to_string(),
        )));
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            // The scheme is case-insensitive (RFC 9110 §11.1).
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim);
    let matches =
        offered.is_some_and(|offered| bool::from(offered.as_bytes().ct_eq(token.0.as_bytes())));
    if matches {
        return Ok(());
    }
    shared.api.metrics.switchover("unauthorized");
    let why = if offered.is_none() {
        "this endpoint needs Authorization: Bearer <the token of http.admin_token_file>"
    } else {
        "the bearer token does not match http.admin_token_file"
    };
    let mut response = answer(StatusCode::UNAUTHORIZED, why.to_string());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Err(Box::new(response))
}

fn answer(code: StatusCode, message: String) -> Response {
    (code, axum::Json(json!({ "message": message }))).into_response()
}
