//! `leaderd run`: wires the parts together in the one direction the data
//! flows — backend → elector → watch channel → HTTP, metrics and actions —
//! and owns the shutdown sequence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::actions::guard::GuardLink;
use crate::actions::pod_label::PodLabeler;
use crate::actions::{Actions, ActionsSettings, HookContext};
use crate::backend::kubernetes::KubernetesBackend;
use crate::backend::redis::RedisBackend;
use crate::backend::{Backend, Presence};
use crate::config::{BackendSettings, Mode, Settings};
use crate::election::handover::Preemption;
use crate::election::roster::Roster;
use crate::election::steering::Steering;
use crate::election::{Conduct, Elector, Outcome, Timing};
use crate::health::HealthChecker;
use crate::http::{Api, Server};
use crate::metrics::Metrics;
use crate::signals;

/// Why the daemon could not run; each maps to exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// Runs until shutdown; returns the exit code (0, or the leader process's
/// code with `leader_process.on_exit: exit`).
pub async fn run(settings: Settings) -> Result<i32, RunError> {
    match &settings.backend {
        BackendSettings::Redis(redis) => {
            let backend = RedisBackend::new(
                redis,
                &settings.election.name,
                settings.election.lease_duration,
            )
            .map_err(|err| RunError::Setup(err.to_string()))?;
            tracing::debug!(?backend, "backend ready");
            run_with(Arc::new(backend), &settings).await
        }
        BackendSettings::Kubernetes {
            namespace,
            lease_name,
        } => {
            let client = crate::kubernetes::client(&settings.kubernetes)
                .await
                .map_err(RunError::Setup)?;
            let backend = KubernetesBackend::new(client, namespace, lease_name);
            tracing::debug!(lease = %backend.describe(), "backend ready");
            run_with(Arc::new(backend), &settings).await
        }
    }
}

async fn run_with<B: Backend>(backend: Arc<B>, settings: &Settings) -> Result<i32, RunError> {
    let election = &settings.election;
    let timing = Timing {
        lease_duration: election.lease_duration,
        renew_deadline: election.renew_deadline,
        retry_period: election.retry_period,
    };
    let metrics = Arc::new(
        Metrics::new(&election.name).map_err(|err| RunError::Setup(format!("metrics: {err}")))?,
    );
    // What this candidate announces about itself (the health probe, when
    // configured, keeps `healthy` up to date).
    let presence = Presence {
        identity: election.identity.clone(),
        url: settings.advertise_url.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        priority: election.priority,
        // With a probe, healthy only once it says so: a node whose workload
        // is down must not take the lease at start.
        healthy: settings.health.is_none(),
        started_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        standing_aside: false,
    };
    let (presence_tx, presence_rx) = tokio::sync::watch::channel(presence);
    let _health = settings
        .health
        .clone()
        .map(|health| HealthChecker::spawn(health, presence_tx, metrics.clone()));
    let conduct = Conduct {
        observer: election.mode == Mode::Observe,
        preemption: Preemption {
            after: election
                .preempt
                .then(|| election.preempt_delay.unwrap_or(2 * timing.lease_duration)),
        },
        unhealthy_backoff: settings
            .health
            .as_ref()
            .map_or(Duration::ZERO, |health| health.unhealthy_backoff),
    };
    let mut elector = Elector::new(
        backend.clone(),
        &election.name,
        presence_rx.clone(),
        timing,
        conduct,
        metrics.clone(),
    );
    let api = Api {
        state: elector.subscribe(),
        presence: presence_rx.clone(),
        metrics: metrics.clone(),
        lease_duration: timing.lease_duration,
        retry_period: timing.retry_period,
        roster: Arc::new(Roster::spawn(
            backend.clone(),
            timing.retry_period,
            timing.lease_duration,
        )),
        steer: Arc::new(Steering::new(
            backend,
            elector.subscribe(),
            timing.lease_duration,
            timing.retry_period,
        )),
        admin_token: settings.admin.token.clone(),
    };

    // Bind before electing: a taken port must fail the start, not a term.
    let server = Server::bind(settings.listen, api.clone(), false)
        .await
        .map_err(|source| RunError::Listen {
            addr: settings.listen,
            source,
        })?;
    let listen = server.local_addr().unwrap_or(settings.listen);
    let admin_server = match settings.admin.listen {
        Some(addr) => Some(
            Server::bind(addr, api, true)
                .await
                .map_err(|source| RunError::Listen { addr, source })?,
        ),
        None => None,
    };

    let labeler = match &settings.pod_label {
        Some((label, pod)) => {
            let client = crate::kubernetes::client(&settings.kubernetes)
                .await
                .map_err(RunError::Setup)?;
            Some(PodLabeler::spawn(
                client,
                label.clone(),
                pod.clone(),
                metrics.clone(),
            ))
        }
        None => None,
    };
    // Processes to start means processes to guard (see actions::guard).
    let guard = if settings.leader_process.is_some() || settings.hooks.any() {
        let window = timing.lease_duration.saturating_sub(timing.renew_deadline);
        Some(
            GuardLink::spawn(window, elector.subscribe())
                .map_err(|err| RunError::Setup(format!("cannot start the guard process: {err}")))?,
        )
    } else {
        None
    };
    let actions = Actions::spawn(
        ActionsSettings {
            context: HookContext {
                election: election.name.clone(),
                identity: election.identity.clone(),
                status_url: status_url(listen),
                term_file: guard
                    .as_ref()
                    .map(|link| link.term_file().display().to_string()),
            },
            hooks: settings.hooks.clone(),
            leader_process: settings.leader_process.clone(),
            labeler,
            guard: guard.as_ref().map(GuardLink::handle),
        },
        elector.subscribe(),
        metrics.clone(),
        elector.resigner(),
    );
    elector.set_actions_progress(actions.progress());

    let shutdown = CancellationToken::new();
    signals::spawn(shutdown.clone()).map_err(|err| RunError::Setup(format!("signals: {err}")))?;
    let stop_http = CancellationToken::new();
    let http = tokio::spawn(server.serve(stop_http.clone()));
    let admin_http = admin_server.map(|server| {
        if let Ok(addr) = server.local_addr() {
            tracing::info!(%addr, "admin endpoints listening");
        }
        tokio::spawn(server.serve(stop_http.clone()))
    });

    tracing::info!(
        election = %election.name,
        identity = %election.identity,
        %listen,
        lease_duration = %crate::config::show(timing.lease_duration),
        renew_deadline = %crate::config::show(timing.renew_deadline),
        retry_period = %crate::config::show(timing.retry_period),
        "leaderd started"
    );

    match elector.run(shutdown).await {
        Outcome::Stopped => {}
        Outcome::StoppedLeading(term) => {
            // Already not leader (/leader answers 503). Once the leader
            // process is stopped and stopped_leading ran, give the lease
            // back so that a follower takes over now, not after the TTL.
            elector.wait_for_actions(&term).await;
            let _ = elector.release(&term).await;
        }
    }
    // Gone from the candidates list at once, not when it would expire.
    elector.leave().await;
    let grace = settings
        .leader_process
        .as_ref()
        .map_or(Duration::ZERO, |process| process.grace_period);
    let exit_code = actions.exit_code().unwrap_or(0);
    actions
        .shutdown(grace + settings.hooks.timeout + Duration::from_secs(1))
        .await;

    if let Some(guard) = guard {
        guard.close();
    }
    stop_http.cancel();
    // Idle keep-alive clients must not delay the exit.
    http.abort();
    if let Some(admin_http) = admin_http {
        admin_http.abort();
    }
    tracing::info!(exit_code, "leaderd stopped");
    Ok(exit_code)
}

/// Where hooks can read our status: loopback when we listen on all
/// addresses.
fn status_url(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}/status", listen.port())
}
