//! The HTTP API: `/status`, `/leader`, `/healthz`, `/readyz`, `/metrics`.
//!
//! Handlers read the latest election state and the clock at request time;
//! nothing here caches "is leader". They never block the elector: a slow
//! client only holds its own connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::election::ElectionState;
use crate::metrics::Metrics;

/// The `/status` document (also the body of `/leader`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub election: String,
    pub identity: String,
    pub is_leader: bool,
    pub leader: Option<String>,
    pub fencing_token: Option<u64>,
    pub lease_remaining_ms: Option<u64>,
    pub term_started_at: Option<String>,
    pub version: String,
    pub ready: bool,
    pub backend: String,
    pub reason: Option<String>,
    pub backend_error: Option<String>,
}

impl Status {
    pub fn of(state: &ElectionState, now: Instant) -> Status {
        let is_leader = state.is_leader_at(now);
        let leader = state.leader_at(now);
        let fencing_token = match (&state.term, is_leader) {
            (Some(term), true) => Some(term.fencing_token),
            _ => leader.and_then(|holder| holder.fencing_token),
        };
        Status {
            election: state.election.clone(),
            identity: state.identity.clone(),
            is_leader,
            leader: leader.map(|holder| holder.identity.clone()),
            fencing_token,
            lease_remaining_ms: state
                .lease_remaining_at(now)
                .map(|left| u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
            term_started_at: state
                .term
                .as_ref()
                .filter(|_| is_leader)
                .map(|term| humantime::format_rfc3339_millis(term.started_at).to_string()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: state.ready(),
            backend: state.backend_kind.to_string(),
            reason: state.last_reason.map(|reason| reason.as_str().to_string()),
            backend_error: state.backend_error.clone(),
        }
    }
}

#[derive(Clone)]
struct Shared {
    state: watch::Receiver<ElectionState>,
    metrics: Arc<Metrics>,
    lease_duration: Duration,
}

/// A bound listener, so that "port taken" is reported before the election
/// starts.
pub struct Server {
    listener: TcpListener,
    router: Router,
}

impl Server {
    pub async fn bind(
        addr: SocketAddr,
        state: watch::Receiver<ElectionState>,
        metrics: Arc<Metrics>,
        lease_duration: Duration,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let shared = Shared {
            state,
            metrics,
            lease_duration,
        };
        let router = Router::new()
            .route("/status", get(status))
            .route("/leader", get(leader))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
            .with_state(shared);
        Ok(Server { listener, router })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is cancelled.
    pub async fn serve(self, stop: CancellationToken) -> std::io::Result<()> {
        // Without TCP_NODELAY small responses can wait ~40 ms (Nagle and
        // delayed ACK), which would dwarf a millisecond handover.
        let listener = self.listener.tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, self.router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    }
}

async fn status(State(shared): State<Shared>) -> Response {
    let status = Status::of(&shared.state.borrow(), Instant::now());
    axum::Json(status).into_response()
}

/// 200 only while leading: for load balancers and Services (Patroni's `/leader`).
async fn leader(State(shared): State<Shared>) -> Response {
    let status = Status::of(&shared.state.borrow(), Instant::now());
    let code = if status.is_leader {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(status)).into_response()
}

/// Fails only when the election loop itself is stuck (client-go
/// HealthzAdaptor): an unreachable backend is not a reason to restart us.
async fn healthz(State(shared): State<Shared>) -> Response {
    if shared
        .state
        .borrow()
        .stuck_at(Instant::now(), shared.lease_duration)
    {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "election loop stuck for longer than lease_duration\n",
        )
            .into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn readyz(State(shared): State<Shared>) -> Response {
    let state = shared.state.borrow();
    if state.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if let Some(err) = &state.backend_error {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("backend unreachable: {err}\n"),
        )
            .into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the backend\n").into_response()
    }
}

async fn metrics_text(State(shared): State<Shared>) -> Response {
    let body = shared
        .metrics
        .render(&shared.state.borrow(), Instant::now());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
