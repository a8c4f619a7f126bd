//! Watches the Lease and ticks on every change of holder or term, so that
//! followers take a released Lease within milliseconds instead of at their
//! next poll, and on every change of the pending switchover (the
//! annotation [`super::SWITCHOVER`]), so that the leader carries it out at
//! once instead of at its next renewal.
//!
//! It also records the highest fencing token and the longest lease its
//! events carry, a deletion's last state included, so that a Lease created
//! again after a deletion counts on from there and waits out the deleted
//! holder's lease.
//!
//! As with Redis notices, this is an accelerator: followers still wake at
//! the observed expiry if a watch event is lost, and the watcher ticks after
//! every (re)connection because something may have changed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, WatchEvent, WatchParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::HighestSeen;
use crate::backend::Notices;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct LeaseWatcher {
    task: JoinHandle<()>,
}

impl LeaseWatcher {
    pub fn spawn(
        leases: Api<Lease>,
        name: String,
        ticks: watch::Sender<Notices>,
        highest: Arc<HighestSeen>,
    ) -> LeaseWatcher {
        LeaseWatcher {
            task: tokio::spawn(watch_lease(leases, name, ticks, highest)),
        }
    }
}

impl Drop for LeaseWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch_lease(
    leases: Api<Lease>,
    name: String,
    ticks: watch::Sender<Notices>,
    highest: Arc<HighestSeen>,
) {
    let record = |lease: &Lease| {
        if let Some(spec) = lease.spec.as_ref() {
            highest.record(spec);
        }
    };
    // A change of holder or term may be a release or an acquisition: wake
    // both kinds of waiter.
    let tick = || {
        ticks.send_modify(|n| {
            n.released = n.released.wrapping_add(1);
            n.acquired = n.acquired.wrapping_add(1);
        })
    };
    let request = || ticks.send_modify(|n| n.requests = n.requests.wrapping_add(1));
    let namespace = leases.namespace().unwrap_or("default").to_string();
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(290);
    let mut backoff = Duration::from_millis(100);
    // Said once, not on every retry: the election still works without the
    // watch (followers wake at the lease's expiry), only handovers slow down.
    let mut last_problem = String::new();
    let mut last_term: Option<(Option<String>, Option<i32>)> = None;
    let mut last_switchover: Option<String> = None;
    loop {
        let version = match leases.get_opt(&name).await {
            Ok(Some(lease)) => {
                record(&lease);
                lease
                    .metadata
                    .resource_version
                    .unwrap_or_else(|| "0".into())
            }
            Ok(None) => "0".to_string(),
            Err(err) => {
                report(&mut last_problem, "get", &err, &namespace);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        // Anything may have changed while we were not watching.
        tick();
        request();
        let opened = tokio::time::Instant::now();
        match leases.watch(&params, &version).await {
            Ok(stream) => {
                last_problem.clear();
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(WatchEvent::Added(lease) | WatchEvent::Modified(lease)) => {
                            record(&lease);
                            // A renewal is not news: followers only need to
                            // hear of a new holder, a new term or a release.
                            let term = term_of(&lease);
                            if last_term.as_ref() != Some(&term) {
                                last_term = Some(term);
                                tick();
                            }
                            let switchover = switchover_of(&lease);
                            if switchover != last_switchover {
                                last_switchover = switchover;
                                request();
                            }
                        }
                        Ok(WatchEvent::Deleted(lease)) => {
                            record(&lease);
                            last_term = None;
                            last_switchover = None;
                            tick();
                        }
                        Ok(WatchEvent::Bookmark(_)) => {}
                        Ok(WatchEvent::Error(err)) => {
                            tracing::debug!(?err, "lease watch ended");
                            break;
                        }
                        Err(err) => {
                            tracing::debug!(%err, "lease watch failed");
                            break;
                        }
                    }
                }
            }
            Err(err) => report(&mut last_problem, "watch", &err, &namespace),
        }
        // A watch that lasted is healthy: reconnect quickly. One that ends
        // at once (an error) must not make every follower wake in a loop.
        if opened.elapsed() > MAX_BACKOFF {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Warns about a failure to read or watch the Lease, unless it is the same
/// problem as last time.
fn report(last: &mut String, verb: &str, err: &kube::Error, namespace: &str) {
    let problem = crate::kubernetes::explain(err, verb, "coordination.k8s.io", "leases", namespace);
    if problem != *last {
        tracing::warn!("cannot watch the lease, so handovers wait for its expiry: {problem}");
        *last = problem;
    }
}

/// Who holds the Lease in which term: what followers must hear about.
fn term_of(lease: &Lease) -> (Option<String>, Option<i32>) {
    let spec = lease.spec.as_ref();
    (
        spec.and_then(|s| s.holder_identity.clone()),
        spec.and_then(|s| s.lease_transitions),
    )
}

/// The pending switchover's annotation, as text.
fn switchover_of(lease: &Lease) -> Option<String> {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(super::SWITCHOVER))
        .cloned()
}
