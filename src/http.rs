//! The HTTP API: `/status`, `/leader`, `/healthz`, `/readyz`, `/metrics`,
//! and `/switchover` (see [`switchover`]).
//!
//! Handlers read the latest election state and the clock at request time;
//! nothing here caches "is leader". They never block the elector: a slow
//! client only holds its own connection.

mod switchover;

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

use crate::backend::Presence;
use crate::config::Secret;
use crate::election::ElectionState;
use crate::election::roster::{Roster, RosterView};
use crate::election::steering::Steer;
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
    /// This daemon only observes (`election.mode: observe`).
    #[serde(default)]
    pub observer: bool,
    /// Nobody holds the lease: it is reserved for this candidate (a
    /// switchover or another hand-over in progress).
    #[serde(default)]
    pub handover_to: Option<String>,
    /// We lead although our health probe fails (no healthy candidate stands).
    #[serde(default)]
    pub leading_unhealthy: bool,
    /// Our health probe's verdict (true without a probe).
    #[serde(default = "yes")]
    pub healthy: bool,
    /// Our priority (`election.priority`).
    #[serde(default)]
    pub priority: i64,
    /// Every candidate standing, as last listed (at most `retry_period` old).
    #[serde(default)]
    pub candidates: Vec<CandidateStatus>,
    /// Why the candidates could not be listed, if they could not.
    #[serde(default)]
    pub candidates_error: Option<String>,
}

/// One candidate in `/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CandidateStatus {
    pub identity: String,
    pub is_leader: bool,
    /// How long ago the store last heard of it.
    pub last_seen_ms: u64,
    pub url: Option<String>,
    pub version: String,
    pub priority: i64,
    pub healthy: bool,
    /// Standing aside after a health hand-over (not eligible meanwhile).
    #[serde(default)]
    pub standing_aside: bool,
    pub started_at: String,
}

fn yes() -> bool {
    true
}

impl Status {
    pub fn of(state: &ElectionState, me: &Presence, roster: &RosterView, now: Instant) -> Status {
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
            observer: state.observer,
            handover_to: state.reserved_for.clone(),
            leading_unhealthy: state.leading_unhealthy && is_leader,
            healthy: me.healthy,
            priority: me.priority,
            candidates: roster
                .candidates
                .iter()
                .map(|c| {
                    let age = roster
                        .fetched
                        .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
                    CandidateStatus {
                        identity: c.presence.identity.clone(),
                        is_leader: leader.is_some_and(|h| h.identity == c.presence.identity),
                        last_seen_ms: u64::try_from((c.last_seen + age).as_millis())
                            .unwrap_or(u64::MAX),
                        url: c.presence.url.clone(),
                        version: c.presence.version.clone(),
                        priority: c.presence.priority,
                        healthy: c.presence.healthy,
                        standing_aside: c.presence.standing_aside,
                        started_at: c.presence.started_at.clone(),
                    }
                })
                .collect(),
            candidates_error: roster.error.clone(),
        }
    }
}

/// Everything the HTTP API serves from.
#[derive(Clone)]
pub struct Api {
    pub state: watch::Receiver<ElectionState>,
    /// What this candidate announces (its health, its priority).
    pub presence: watch::Receiver<Presence>,
    pub metrics: Arc<Metrics>,
    pub lease_duration: Duration,
    pub retry_period: Duration,
    pub roster: Arc<Roster>,
    pub steer: Arc<dyn Steer>,
    /// The bearer token of the state-changing endpoints, if configured.
    pub admin_token: Option<Secret>,
}

#[derive(Clone)]
struct Shared {
    api: Api,
    /// This listener is `http.admin_listen`: no token needed.
    admin: bool,
}

/// A bound listener, so that "port taken" is reported before the election
/// starts.
pub struct Server {
    listener: TcpListener,
    router: Router,
}

impl Server {
    /// `admin`: this is the `http.admin_listen` listener, on which the
    /// state-changing endpoints need no token.
    pub async fn bind(addr: SocketAddr, api: Api, admin: bool) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let shared = Shared { api, admin };
        let router = Router::new()
            .route("/status", get(status))
            .route("/leader", get(leader))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .route(
                "/switchover",
                get(switchover::pending)
                    .post(switchover::request)
                    .delete(switchover::cancel),
            )
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
    let api = &shared.api;
    // A list at most one retry_period old; a client waits for at most one
    // refresh, bounded.
    let roster = api
        .roster
        .fresh(api.retry_period.min(Duration::from_secs(1)))
        .await;
    let status = Status::of(
        &api.state.borrow(),
        &api.presence.borrow(),
        &roster,
        Instant::now(),
    );
    axum::Json(status).into_response()
}

/// 200 only while leading: for load balancers and Services (Patroni's `/leader`).
async fn leader(State(shared): State<Shared>) -> Response {
    let api = &shared.api;
    let status = Status::of(
        &api.state.borrow(),
        &api.presence.borrow(),
        // A load balancer polls this: it must not keep the candidates
        // being listed (a store request per retry_period) on its own.
        &api.roster.peek(),
        Instant::now(),
    );
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
        .api
        .state
        .borrow()
        .stuck_at(Instant::now(), shared.api.lease_duration)
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
    let state = shared.api.state.borrow();
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
    let api = &shared.api;
    // As `/status`: the first scrape after a quiet minute waits for one
    // listing (bounded), so that `leaderd_candidates` is never missing.
    let roster = api
        .roster
        .fresh(api.retry_period.min(Duration::from_secs(1)))
        .await;
    let candidates = roster.fetched.map(|_| roster.candidates.as_slice());
    let body = api
        .metrics
        .render(&api.state.borrow(), candidates, Instant::now());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
