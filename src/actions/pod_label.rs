//! The pod label that lets a Kubernetes Service route to the leader only.
//!
//! A background task owns all API calls and retries them with backoff, so a
//! slow or unreachable API server never delays the election or the leader
//! process; the actions runner states what it wants ([`PodLabeler::set`])
//! and waits for it only as long as it can afford. Every change of role it
//! makes, and every stale leader label it demotes, is also recorded as an
//! Event on that Pod (`reason: LeaderLabel`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{PodIdentity, PodLabelConfig};
use crate::kubernetes::{EventRecorder, Involved};
use crate::metrics::Metrics;

/// The `reason` of the Events on Pods.
const EVENT_REASON: &str = "LeaderLabel";

/// The role our pod's label should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader { fencing_token: u64 },
    Follower,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wanted {
    role: Role,
    generation: u64,
}

pub struct PodLabeler {
    wanted: watch::Sender<Wanted>,
    applied: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Drop for PodLabeler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodLabeler {
    pub fn spawn(
        client: kube::Client,
        label: PodLabelConfig,
        pod: PodIdentity,
        metrics: Arc<Metrics>,
    ) -> PodLabeler {
        let (wanted, wanted_rx) = watch::channel(Wanted {
            role: Role::Follower,
            generation: 1,
        });
        let (applied_tx, applied) = watch::channel(0);
        let worker = Worker {
            events: EventRecorder::new(client.clone()),
            pods: Api::namespaced(client, &pod.namespace),
            label,
            pod,
            metrics,
        };
        let task = tokio::spawn(worker.run(wanted_rx, applied_tx));
        PodLabeler {
            wanted,
            applied,
            task,
        }
    }

    /// Asks for `role`; returns a generation to wait for.
    pub fn set(&self, role: Role) -> u64 {
        let mut generation = 0;
        self.wanted.send_modify(|wanted| {
            wanted.generation += 1;
            wanted.role = role;
            generation = wanted.generation;
        });
        generation
    }

    /// Waits until `generation` (or a later one) is applied, at most `bound`.
    pub async fn wait_applied(&self, generation: u64, bound: Duration) -> bool {
        let mut applied = self.applied.clone();
        tokio::time::timeout(bound, applied.wait_for(|done| *done >= generation))
            .await
            .is_ok_and(|result| result.is_ok())
    }
}

struct Worker {
    events: EventRecorder,
    pods: Api<Pod>,
    label: PodLabelConfig,
    pod: PodIdentity,
    metrics: Arc<Metrics>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Bound of one API call, so that a hung API server cannot stall retries.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Worker {
    async fn run(self, mut wanted: watch::Receiver<Wanted>, applied: watch::Sender<u64>) {
        // The role last written to our pod; None until the first write, the
        // follower label at start, which is not worth an Event.
        let mut shown: Option<Role> = None;
        'wanted: loop {
            let want = *wanted.borrow_and_update();
            let mut backoff = FIRST_BACKOFF;
            let mut last_error = String::new();
            loop {
                let failure = match self.apply(want.role).await {
                    Ok(pod) => {
                        if shown.is_some_and(|role| role != want.role)
                            || (shown.is_none() && want.role != Role::Follower)
                        {
                            self.record(&pod, want.role);
                        }
                        shown = Some(want.role);
                        break;
                    }
                    Err(failure) => failure,
                };
                self.metrics.pod_label_update(failure.result);
                if failure.message != last_error {
                    tracing::error!(pod = %self.pod.name, "pod label: {}", failure.message);
                    last_error = failure.message;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    changed = wanted.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        // A newer wish replaces this one: apply that instead.
                        continue 'wanted;
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            self.metrics.pod_label_update("ok");
            applied.send_replace(want.generation);
            if wanted.changed().await.is_err() {
                return;
            }
        }
    }

    /// Labels our pod for `role` (and, as leader, demotes stale leader
    /// labels); returns our pod as written.
    async fn apply(&self, role: Role) -> Result<Pod, Failure> {
        let mut patch = json!({ "metadata": { "labels": { &self.label.key: self.value(role) } } });
        if let (Role::Leader { fencing_token }, false) = (role, self.label.annotation.is_empty()) {
            patch["metadata"]["annotations"] =
                json!({ &self.label.annotation: fencing_token.to_string() });
        }
        let pod = self.patch(&self.pod.name, &patch).await?;
        if matches!(role, Role::Leader { .. }) {
            self.demote_stale_leaders().await?;
        }
        Ok(pod)
    }

    /// An Event on our pod for its new role.
    fn record(&self, pod: &Pod, role: Role) {
        let label = match self.value(role) {
            Value::String(value) => format!("labelled {}={value}", self.label.key),
            _ => format!("removed the label {}", self.label.key),
        };
        let message = match role {
            Role::Leader { fencing_token } => format!("{label} (fencing token {fencing_token})"),
            Role::Follower => label,
        };
        self.events.normal(
            &self.pod.name,
            Involved::of("Pod", "v1", &pod.metadata),
            EVENT_REASON,
            message,
        );
    }

    /// Another pod still labelled leader (a crashed leader cannot unlabel
    /// itself) is demoted, with a compare-and-swap on its resourceVersion so
    /// that a pod whose own leaderd just changed it is re-examined instead.
    async fn demote_stale_leaders(&self) -> Result<(), Failure> {
        let leader_label = format!("{}={}", self.label.key, self.label.leader_value);
        let selector = if self.label.selector.trim().is_empty() {
            leader_label
        } else {
            format!("{},{leader_label}", self.label.selector.trim())
        };
        let params = ListParams::default().labels(&selector);
        let pods = tokio::time::timeout(CALL_TIMEOUT, self.pods.list(&params))
            .await
            .map_err(|_| Failure::timeout("list"))?
            .map_err(|err| self.failure("list", err))?;
        for pod in pods.items {
            let Some(name) = pod.metadata.name.as_deref() else {
                continue;
            };
            if name == self.pod.name {
                continue;
            }
            tracing::info!(pod = name, "demoting a stale leader label");
            let patch = json!({ "metadata": {
                "resourceVersion": pod.metadata.resource_version,
                "labels": { &self.label.key: self.value(Role::Follower) },
            } });
            let demoted = self.patch(name, &patch).await?;
            self.events.normal(
                &self.pod.name,
                Involved::of("Pod", "v1", &demoted.metadata),
                EVENT_REASON,
                format!(
                    "demoted a stale leader label ({} is the leader now)",
                    self.pod.name
                ),
            );
        }
        Ok(())
    }

    async fn patch(&self, name: &str, patch: &Value) -> Result<Pod, Failure> {
        tokio::time::timeout(
            CALL_TIMEOUT,
            self.pods
                .patch(name, &PatchParams::default(), &Patch::Merge(patch)),
        )
        .await
        .map_err(|_| Failure::timeout("patch"))?
        .map_err(|err| self.failure("patch", err))
    }

    /// The label value for `role`; `null` removes the label.
    fn value(&self, role: Role) -> Value {
        match role {
            Role::Leader { .. } => Value::String(self.label.leader_value.clone()),
            Role::Follower if self.label.follower_value.is_empty() => Value::Null,
            Role::Follower => Value::String(self.label.follower_value.clone()),
        }
    }

    fn failure(&self, verb: &str, err: kube::Error) -> Failure {
        let result = match crate::kubernetes::status_code(&err) {
            Some(403) => "forbidden",
            _ => "error",
        };
        Failure {
            result,
            message: crate::kubernetes::explain(&err, verb, "", "pods", &self.pod.namespace),
        }
    }
}

struct Failure {
    result: &'static str,
    message: String,
}

impl Failure {
    fn timeout(verb: &str) -> Failure {
        Failure {
            result: "error",
            message: format!(
                "{verb} pods: no answer within {}",
                crate::config::show(CALL_TIMEOUT)
            ),
        }
    }
}
