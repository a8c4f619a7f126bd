//! `leaderd run`: wires the parts together in the one direction the data
//! flows — backend → elector → watch channel → HTTP and metrics — and owns
//! the shutdown sequence.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::backend::redis::RedisBackend;
use crate::config::{BackendSettings, Settings};
use crate::election::{Elector, Outcome, Timing};
use crate::http::Server;
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

pub async fn run(settings: Settings) -> Result<(), RunError> {
    match &settings.backend {
        BackendSettings::Redis(redis) => {
            let url = redis
                .urls
                .first()
                .ok_or_else(|| RunError::Setup("no Redis URL".into()))?;
            let backend = RedisBackend::new(url, &redis.key_prefix, &settings.election.name)
                .map_err(|err| RunError::Setup(err.to_string()))?;
            tracing::debug!(?backend, "backend ready");
            run_with(Arc::new(backend), &settings).await
        }
    }
}

async fn run_with<B: Backend>(backend: Arc<B>, settings: &Settings) -> Result<(), RunError> {
    let election = &settings.election;
    let timing = Timing {
        lease_duration: election.lease_duration,
        renew_deadline: election.renew_deadline,
        retry_period: election.retry_period,
    };
    let metrics = Arc::new(
        Metrics::new(&election.name).map_err(|err| RunError::Setup(format!("metrics: {err}")))?,
    );
    let mut elector = Elector::new(
        backend,
        &election.name,
        &election.identity,
        timing,
        metrics.clone(),
    );

    // Bind before electing: a taken port must fail the start, not a term.
    let server = Server::bind(
        settings.listen,
        elector.subscribe(),
        metrics,
        timing.lease_duration,
    )
    .await
    .map_err(|source| RunError::Listen {
        addr: settings.listen,
        source,
    })?;
    let listen = server.local_addr().unwrap_or(settings.listen);

    let shutdown = CancellationToken::new();
    signals::spawn(shutdown.clone()).map_err(|err| RunError::Setup(format!("signals: {err}")))?;
    let stop_http = CancellationToken::new();
    let http = tokio::spawn(server.serve(stop_http.clone()));

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
            // Already not leader (/leader answers 503); give the lease back
            // so that a follower takes over now rather than after the TTL.
            let _ = elector.release(&term).await;
        }
    }

    stop_http.cancel();
    // Idle keep-alive clients must not delay the exit.
    http.abort();
    tracing::info!("leaderd stopped");
    Ok(())
}
