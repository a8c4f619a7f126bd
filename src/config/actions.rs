//! The optional sections that make leaderd act on leadership: `hooks`,
//! `leader_process`, `pod_label` and `kubernetes`, and their rules.

use std::time::Duration;

use serde::Deserialize;

use super::{duration, show};

/// Commands run on leadership events, one at a time, in event order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    #[serde(default)]
    pub started_leading: Vec<String>,
    #[serde(default)]
    pub stopped_leading: Vec<String>,
    #[serde(default)]
    pub new_leader: Vec<String>,
    #[serde(default = "default_hook_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Give leadership back when `started_leading` fails.
    #[serde(default)]
    pub step_down_on_failure: bool,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(10)
}

impl HooksConfig {
    /// Whether any hook is configured.
    pub fn any(&self) -> bool {
        !(self.started_leading.is_empty()
            && self.stopped_leading.is_empty()
            && self.new_leader.is_empty())
    }
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            started_leading: Vec::new(),
            stopped_leading: Vec::new(),
            new_leader: Vec::new(),
            timeout: default_hook_timeout(),
            step_down_on_failure: false,
        }
    }
}

/// A command that runs only while this instance leads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderProcessConfig {
    pub command: Vec<String>,
    #[serde(default = "default_grace_period", deserialize_with = "duration")]
    pub grace_period: Duration,
    #[serde(default)]
    pub on_exit: OnExit,
}

fn default_grace_period() -> Duration {
    Duration::from_secs(3)
}

/// What to do when the leader process exits on its own while we lead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExit {
    /// Hand leadership over so that a healthy candidate takes it.
    #[default]
    Release,
    /// Start it again, with capped backoff, in the same term.
    Restart,
    /// Release and exit leaderd with the child's exit code.
    Exit,
}

/// The label that lets a Service route to the leader's pod only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodLabelConfig {
    pub key: String,
    #[serde(default = "default_leader_value")]
    pub leader_value: String,
    /// `""` removes the label from followers instead.
    #[serde(default = "default_follower_value")]
    pub follower_value: String,
    /// Label selector of the candidate pods, to demote stale leader labels.
    #[serde(default)]
    pub selector: String,
    /// Annotation key that receives the fencing token on gain (optional).
    #[serde(default)]
    pub annotation: String,
}

fn default_leader_value() -> String {
    "leader".to_string()
}

fn default_follower_value() -> String {
    "follower".to_string()
}

/// How to reach the Kubernetes API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// e.g. `http://127.0.0.1:8001` (kubectl proxy); empty: in-cluster
    /// configuration, then KUBECONFIG.
    #[serde(default)]
    pub api_url: String,
}

/// The pod this candidate runs in, from the downward API.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    pub name: String,
    pub namespace: String,
}

/// How long a loss waits for the pod label to reach follower before it
/// stops the leader process anyway (the label keeps being retried).
pub const LABEL_WAIT_ON_LOSS: Duration = Duration::from_millis(100);

/// How long a hook gets between SIGTERM (at its timeout) and SIGKILL.
pub const HOOK_KILL_GRACE: Duration = Duration::from_millis(100);

/// Checks the action sections against each other and against the
/// election's timing. Returns `(field, reason)` on the first problem.
pub fn validate(
    hooks: &HooksConfig,
    leader_process: Option<&LeaderProcessConfig>,
    pod_label: Option<&PodLabelConfig>,
    kubernetes: &KubernetesConfig,
    lease_duration: Duration,
    renew_deadline: Duration,
) -> Result<(), (String, String)> {
    let fail = |field: &str, reason: String| Err((field.to_string(), reason));
    for (field, argv) in [
        ("hooks.started_leading", &hooks.started_leading),
        ("hooks.stopped_leading", &hooks.stopped_leading),
        ("hooks.new_leader", &hooks.new_leader),
    ] {
        if argv
            .first()
            .is_some_and(|program| program.trim().is_empty())
        {
            return fail(
                field,
                "the program (first element) must not be empty".into(),
            );
        }
    }
    if hooks.timeout.is_zero() {
        return fail("hooks.timeout", "must be greater than zero".into());
    }

    // After the local step-down, no one else can lead for
    // lease_duration − renew_deadline: everything leader-only must be over
    // by then.
    let window = lease_duration.saturating_sub(renew_deadline);
    if let Some(process) = leader_process {
        if process
            .command
            .first()
            .is_none_or(|program| program.trim().is_empty())
        {
            return fail(
                "leader_process.command",
                "must name a program, e.g. [\"/app/controller\", \"--active\"]".into(),
            );
        }
        let mut needed = process.grace_period;
        let mut parts = vec![format!(
            "leader_process.grace_period ({})",
            show(process.grace_period)
        )];
        if !hooks.stopped_leading.is_empty() {
            needed += hooks.timeout + HOOK_KILL_GRACE;
            parts.push(format!(
                "hooks.timeout ({}) + {} hook kill grace",
                show(hooks.timeout),
                show(HOOK_KILL_GRACE)
            ));
        }
        if pod_label.is_some() {
            needed += LABEL_WAIT_ON_LOSS;
            parts.push(format!("{} pod label wait", show(LABEL_WAIT_ON_LOSS)));
        }
        if needed >= window {
            return fail(
                "leader_process.grace_period",
                format!(
                    "{} must be shorter than election.lease_duration − election.renew_deadline ({}): \
                     the leader process must be stopped before another candidate can lead",
                    parts.join(" + "),
                    show(window)
                ),
            );
        }
    }

    if let Some(label) = pod_label {
        check_label_key(&label.key).map_err(|reason| ("pod_label.key".to_string(), reason))?;
        check_label_value(&label.leader_value)
            .map_err(|reason| ("pod_label.leader_value".to_string(), reason))?;
        if label.leader_value.is_empty() {
            return fail("pod_label.leader_value", "must not be empty".into());
        }
        check_label_value(&label.follower_value)
            .map_err(|reason| ("pod_label.follower_value".to_string(), reason))?;
        if label.follower_value == label.leader_value {
            return fail(
                "pod_label.follower_value",
                format!(
                    "must differ from pod_label.leader_value ({:?})",
                    label.leader_value
                ),
            );
        }
        if !label.annotation.is_empty() {
            check_label_key(&label.annotation)
                .map_err(|reason| ("pod_label.annotation".to_string(), reason))?;
        }
    }

    let url = kubernetes.api_url.trim();
    if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
        return fail(
            "kubernetes.api_url",
            format!("{url:?} must start with http:// or https://"),
        );
    }
    Ok(())
}

/// Reads `POD_NAME` and `POD_NAMESPACE` (the downward API); the error names
/// every one that is missing.
pub fn pod_identity() -> Result<PodIdentity, String> {
    let read = |var: &str| std::env::var(var).ok().filter(|value| !value.is_empty());
    match (read("POD_NAME"), read("POD_NAMESPACE")) {
        (Some(name), Some(namespace)) => Ok(PodIdentity { name, namespace }),
        (name, namespace) => {
            let missing: Vec<&str> = [
                name.is_none()
                    .then_some("POD_NAME (fieldRef metadata.name)"),
                namespace
                    .is_none()
                    .then_some("POD_NAMESPACE (fieldRef metadata.namespace)"),
            ]
            .into_iter()
            .flatten()
            .collect();
            Err(format!(
                "needs {} from the downward API in the environment",
                missing.join(" and ")
            ))
        }
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters of `[A-Za-z0-9._-]` starting and ending alphanumeric.
fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty()
            || prefix.len() > 253
            || !prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
    {
        return Err(format!(
            "{key:?}: the prefix must be a DNS subdomain like leaderd.io"
        ));
    }
    if name.is_empty() {
        return Err(format!("{key:?}: the name part must not be empty"));
    }
    check_label_value(name).map_err(|_| {
        format!("{key:?}: the name part must be at most 63 characters of A-Z a-z 0-9 . _ -, starting and ending alphanumeric")
    })
}

fn check_label_value(value: &str) -> Result<(), String> {
    let ok = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && value
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a valid label value (at most 63 characters of A-Z a-z 0-9 . _ -, starting and ending alphanumeric)"
        ))
    }
}
