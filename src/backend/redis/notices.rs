//! Listens on the election's pub/sub channel and counts its notices
//! (releases, acquisitions, switchover requests) on a `watch` channel, so
//! that followers wake the moment a leader steps down, and the leader the
//! moment a switchover is requested, instead of at their next poll.
//!
//! Notices are an accelerator, not a source of truth: a follower still wakes
//! at the lease's observed expiry if a notice is lost. After every
//! (re)subscription the listener ticks once, because a release may have
//! happened while it was not listening.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use super::connection::Connection;
use crate::backend::Notices;

const MAX_BACKOFF: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The background task; aborted when dropped.
pub struct NoticeListener {
    task: JoinHandle<()>,
}

impl NoticeListener {
    pub fn spawn(
        connection: Arc<Connection>,
        channel: String,
        ticks: Arc<watch::Sender<Notices>>,
    ) -> NoticeListener {
        NoticeListener {
            task: tokio::spawn(listen(connection, channel, ticks)),
        }
    }
}

impl Drop for NoticeListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen(connection: Arc<Connection>, channel: String, ticks: Arc<watch::Sender<Notices>>) {
    let tick = |released: bool, acquired: bool, requests: bool| {
        ticks.send_modify(|n| {
            if released {
                n.released = n.released.wrapping_add(1);
            }
            if acquired {
                n.acquired = n.acquired.wrapping_add(1);
            }
            if requests {
                n.requests = n.requests.wrapping_add(1);
            }
        })
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        let subscribed = timeout(CONNECT_TIMEOUT, async {
            let client = connection
                .pubsub_client(Instant::now() + CONNECT_TIMEOUT)
                .await
                .map_err(|err| err.message)?;
            let mut pubsub = client
                .get_async_pubsub()
                .await
                .map_err(|err| err.to_string())?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|err| err.to_string())?;
            Ok::<_, String>(pubsub)
        })
        .await;
        match subscribed {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(50);
                // Anything may have happened while we were not listening.
                tick(true, true, true);
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let payload = message.get_payload_bytes();
                    tick(
                        payload.starts_with(b"released"),
                        payload.starts_with(b"acquired"),
                        payload.starts_with(b"switchover"),
                    );
                }
                tracing::debug!(%channel, "notice subscription ended; resubscribing");
            }
            Ok(Err(err)) => tracing::debug!(%channel, %err, "cannot subscribe to notices"),
            Err(_) => tracing::debug!(%channel, "subscribing to notices timed out"),
        }
        if ticks.is_closed() {
            return;
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
