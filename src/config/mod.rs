//! The configuration file: its shape, its defaults, and the rules a file must
//! satisfy before leaderd acts on it.
//!
//! Loading is strict on purpose: unknown keys are rejected, and every error
//! names the file, the field path and the reason, so an operator never has to
//! guess which line of a YAML file leaderd disliked.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod actions;
mod display;
mod health;
mod redis;
mod source;

pub use actions::{
    HOOK_KILL_GRACE, HooksConfig, KubernetesConfig, LABEL_WAIT_ON_LOSS, LeaderProcessConfig,
    OnExit, PodIdentity, PodLabelConfig,
};
use display::{ECHO_LIMIT, clip, clip_quoted};
pub use display::{quoted, show};
pub use health::{HealthConfig, HealthSettings, Probe};
pub use redis::{RedisConfig, RedisSettings, Secret, SentinelConfig};
pub use source::MAX_CONFIG_BYTES;

/// Where the HTTP server listens when neither the file, `LEADERD_LISTEN` nor
/// `--listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9090";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub election: ElectionConfig,
    pub backend: BackendConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub hooks: HooksConfig,
    pub leader_process: Option<LeaderProcessConfig>,
    pub pod_label: Option<PodLabelConfig>,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    /// A health probe: an unhealthy candidate does not take the lease and
    /// an unhealthy leader hands over to a healthy candidate.
    pub health: Option<HealthConfig>,
}

/// What is elected and how fast: the client-go timing triple.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElectionConfig {
    pub name: String,
    #[serde(default)]
    pub identity: String,
    #[serde(default = "defaults::lease_duration", deserialize_with = "duration")]
    pub lease_duration: Duration,
    #[serde(default = "defaults::renew_deadline", deserialize_with = "duration")]
    pub renew_deadline: Duration,
    #[serde(default = "defaults::retry_period", deserialize_with = "duration")]
    pub retry_period: Duration,
    /// `candidate` (default) or `observe`: never compete, only watch.
    #[serde(default)]
    pub mode: Mode,
    /// Higher is preferred when the lease is free (and, with `preempt`,
    /// over a leader with a lower priority).
    #[serde(default)]
    pub priority: i64,
    /// Hand over to a present, healthy candidate with a higher priority.
    #[serde(default)]
    pub preempt: bool,
    /// How long that candidate must have been present (default 2 ×
    /// lease_duration).
    #[serde(default, deserialize_with = "optional_duration")]
    pub preempt_delay: Option<Duration>,
}

/// How a daemon takes part in the election.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Candidate,
    /// Never competes and never writes the lease: reports the leader and
    /// the candidates, runs `new_leader` hooks.
    Observe,
}

/// Which store holds the lease. Exactly one backend section is expected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub redis: Option<RedisConfig>,
    pub kubernetes: Option<KubernetesLeaseConfig>,
}

/// A `coordination.k8s.io/v1` Lease, shareable with client-go candidates.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesLeaseConfig {
    /// Default: `POD_NAMESPACE`, else the in-cluster namespace, else `default`.
    #[serde(default)]
    pub namespace: String,
    /// Default: `election.name`.
    #[serde(default)]
    pub lease_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// How other candidates and operators reach this daemon (shown in the
    /// candidates list); default: the listen address when it is a specific
    /// one, else `http://$POD_IP:port` when POD_IP is set.
    #[serde(default)]
    pub advertise_url: String,
    /// A file holding the bearer token that `POST`/`DELETE /switchover`
    /// require on the main listener.
    #[serde(default)]
    pub admin_token_file: String,
    /// A second listener (e.g. `127.0.0.1:9091`) that serves the
    /// state-changing endpoints without a token.
    #[serde(default)]
    pub admin_listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: defaults::listen(),
            advertise_url: String::new(),
            admin_token_file: String::new(),
            admin_listen: String::new(),
        }
    }
}

mod defaults {
    use std::time::Duration;

    // client-go's RecommendedDefaultLeaderElectionConfiguration: 15s / 10s / 2s.
    pub fn lease_duration() -> Duration {
        Duration::from_secs(15)
    }
    pub fn renew_deadline() -> Duration {
        Duration::from_secs(10)
    }
    pub fn retry_period() -> Duration {
        Duration::from_secs(2)
    }
    pub fn listen() -> String {
        super::DEFAULT_LISTEN.to_string()
    }
}

/// Like [`duration`], for a field that may be left out.
pub(crate) fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

/// Parses `15s`, `500ms`, `1m30s` (humantime syntax) into a `Duration`.
pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(text.trim()).map_err(|err| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({err}); write it like 15s or 500ms"
        ))
    })
}

/// A configuration problem, always tied to where the value came from and,
/// when it can be, a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: Origin,
    /// Dotted path of the offending field (`election.renew_deadline`), empty
    /// when the problem is the file as a whole.
    pub field: String,
    pub reason: String,
}

/// Where a configuration value came from, so that an error blames the right
/// place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file.
    File(PathBuf),
    /// A flag (`--listen`) or environment variable (`LEADERD_LISTEN`) that
    /// overrides a key of the file.
    Override(&'static str),
}

impl ConfigError {
    fn in_file(path: &Path, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: Origin::File(path.to_path_buf()),
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are echoed in quotes; a hostile or broken file must not
        // turn one error into megabytes on stderr.
        let reason = clip_quoted(&self.reason);
        let field = clip(&self.field, ECHO_LIMIT);
        match &self.origin {
            Origin::Override(name) => write!(f, "{name}: {reason}"),
            Origin::File(file) if field.is_empty() => write!(f, "{}: {reason}", file.display()),
            Origin::File(file) => write!(f, "{}: {field}: {reason}", file.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Values that may come from the command line or the environment and win
/// over the file (flags over env, env over file: clap merges the first two).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub identity: Option<Override>,
    pub listen: Option<Override>,
    /// `--observe`.
    pub observe: bool,
}

/// One overriding value and the flag or environment variable that gave it,
/// named in the error when the value is bad.
#[derive(Debug, Clone)]
pub struct Override {
    pub value: String,
    /// `--listen`, `LEADERD_LISTEN`, …
    pub from: &'static str,
}

/// A configuration that passed validation, with defaults filled in and the
/// listen address parsed. Only this type reaches the daemon.
#[derive(Debug, Clone)]
pub struct Settings {
    pub source: PathBuf,
    pub election: ElectionConfig,
    pub backend: BackendSettings,
    pub listen: SocketAddr,
    pub hooks: HooksConfig,
    pub leader_process: Option<LeaderProcessConfig>,
    /// The label settings and the pod they apply to.
    pub pod_label: Option<(PodLabelConfig, PodIdentity)>,
    pub kubernetes: KubernetesConfig,
    /// The state-changing endpoints (switchover) and who may use them.
    pub admin: AdminSettings,
    /// How others reach this daemon, when known.
    pub advertise_url: Option<String>,
    pub health: Option<HealthSettings>,
}

/// Who may change the election's state over HTTP.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Bearer token for the main listener (`http.admin_token_file`).
    pub token: Option<Secret>,
    /// A listener that needs no token (`http.admin_listen`).
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub enum BackendSettings {
    Redis(Box<RedisSettings>),
    /// The Lease's namespace and name, defaults filled in.
    Kubernetes {
        namespace: String,
        lease_name: String,
    },
}

impl Config {
    /// Reads and parses `path` without applying overrides or validating.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text =
            source::read_text(path).map_err(|reason| ConfigError::in_file(path, "", reason))?;
        Config::parse(path, &text)
    }

    /// Parses YAML text; `path` is only used to name the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            if let Some(reason) = source::not_a_document(text) {
                return ConfigError::in_file(path, "", reason);
            }
            let field = err.path().to_string();
            let field = if field == "." { String::new() } else { field };
            // serde_yaml prefixes its message with its own idea of the path;
            // ours (from serde_path_to_error) is more precise, so drop theirs.
            let message = err.into_inner().to_string();
            let reason = match message.split_once(": ") {
                Some((head, tail)) if !head.contains(' ') => tail.to_string(),
                _ => message,
            };
            // A missing key is reported at its parent; name the key itself.
            let field = match reason
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
            {
                Some((key, _)) if field.is_empty() => key.to_string(),
                Some((key, _)) => format!("{field}.{key}"),
                None => field,
            };
            ConfigError::in_file(path, &field, reason)
        })
    }
}

/// Loads, overrides and validates in one step: what `run` uses. Values the
/// configuration takes from the environment (`POD_NAME` and
/// `POD_NAMESPACE` for `pod_label`) must be there.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Settings, ConfigError> {
    let mut config = Config::read(path)?;
    apply(&mut config, overrides)?;
    validate(path, config, Environment::Required).map(|checked| checked.settings)
}

/// A file checked on its own, for `leaderd check`: what it configures, and
/// notes on what `leaderd run` will additionally need from its environment.
#[derive(Debug, Clone)]
pub struct Checked {
    pub settings: Settings,
    pub notes: Vec<String>,
}

/// Loads and validates the file without requiring the environment `run`
/// needs (a laptop or CI has no downward API): what `check` uses.
pub fn check_file(path: &Path) -> Result<Checked, ConfigError> {
    let mut config = Config::read(path)?;
    apply(&mut config, &Overrides::default())?;
    validate(path, config, Environment::Optional)
}

/// Whether values read from the environment must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Environment {
    Required,
    Optional,
}

/// Applies flag and environment overrides; a bad one is blamed on the flag
/// or variable that gave it, not on the file.
fn apply(config: &mut Config, overrides: &Overrides) -> Result<(), ConfigError> {
    let blame = |given: &Override, reason: String| ConfigError {
        origin: Origin::Override(given.from),
        field: String::new(),
        reason,
    };
    if let Some(identity) = &overrides.identity {
        check_identity(&identity.value).map_err(|reason| {
            blame(
                identity,
                format!("{reason} (it overrides election.identity)"),
            )
        })?;
        config.election.identity = identity.value.clone();
    }
    if let Some(listen) = &overrides.listen {
        parse_listen(&listen.value)
            .map_err(|reason| blame(listen, format!("{reason} (it overrides http.listen)")))?;
        config.http.listen = listen.value.clone();
    }
    if overrides.observe {
        config.election.mode = Mode::Observe;
    }
    if config.election.identity.is_empty() {
        config.election.identity = default_identity();
    }
    Ok(())
}

fn check_identity(identity: &str) -> Result<(), String> {
    if identity.len() > 253 || identity.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{identity:?} must be at most 253 printable characters"
        ));
    }
    Ok(())
}

fn parse_listen(listen: &str) -> Result<SocketAddr, String> {
    listen
        .parse::<SocketAddr>()
        .map_err(|_| format!("{listen:?} is not an address like 0.0.0.0:9090 or 127.0.0.1:9090"))
}

/// `$POD_NAME` inside Kubernetes (the downward API), else `<hostname>-<pid>`
/// so that two processes on one host never share an identity by accident.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}-{}", std::process::id())
}

fn validate(path: &Path, config: Config, environment: Environment) -> Result<Checked, ConfigError> {
    let fail = |field: &str, reason: String| ConfigError::in_file(path, field, reason);
    let e = &config.election;

    if e.name.is_empty() {
        return Err(fail("election.name", "must not be empty".into()));
    }
    if e.name.len() > 63 {
        return Err(fail(
            "election.name",
            format!("{:?} is too long: at most 63 characters", e.name),
        ));
    }
    if let Some(bad) = e
        .name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(*c)))
    {
        return Err(fail(
            "election.name",
            format!(
                "{:?} contains {bad:?}; use only a-z, 0-9, '.', '_' and '-'",
                e.name
            ),
        ));
    }
    check_identity(&e.identity).map_err(|reason| fail("election.identity", reason))?;

    for (field, value) in [
        ("election.lease_duration", e.lease_duration),
        ("election.renew_deadline", e.renew_deadline),
        ("election.retry_period", e.retry_period),
    ] {
        if value.is_zero() {
            return Err(fail(field, "must be greater than zero".into()));
        }
        if value < Duration::from_millis(10) {
            return Err(fail(
                field,
                format!(
                    "{} is below the 10ms resolution leaderd works at",
                    show(value)
                ),
            ));
        }
    }
    // The same rule as client-go's NewLeaderElector: the leader must give up
    // (renew_deadline) before anyone else may take over (lease_duration), and
    // must get more than one retry in before giving up.
    if e.renew_deadline >= e.lease_duration {
        return Err(fail(
            "election.renew_deadline",
            format!(
                "{} must be shorter than election.lease_duration ({})",
                show(e.renew_deadline),
                show(e.lease_duration)
            ),
        ));
    }
    if e.renew_deadline.as_secs_f64() <= 1.2 * e.retry_period.as_secs_f64() {
        return Err(fail(
            "election.renew_deadline",
            format!(
                "{} must be longer than 1.2 × election.retry_period ({})",
                show(e.renew_deadline),
                show(e.retry_period)
            ),
        ));
    }

    let backend = match (&config.backend.redis, &config.backend.kubernetes) {
        (Some(_), Some(_)) => {
            return Err(fail(
                "backend",
                "configures both redis and kubernetes; choose exactly one".into(),
            ));
        }
        (None, Some(lease)) => {
            kubernetes_backend(lease, e).map_err(|(field, reason)| fail(&field, reason))?
        }
        (Some(redis), None) => BackendSettings::Redis(Box::new(
            redis::validate(redis, e).map_err(|(field, reason)| fail(&field, reason))?,
        )),
        (None, None) => {
            return Err(fail(
                "backend",
                "no backend configured; add a backend.redis or a backend.kubernetes section".into(),
            ));
        }
    };

    let listen = parse_listen(&config.http.listen).map_err(|reason| fail("http.listen", reason))?;

    // The token is a secret of the machine `run` runs on: `check` notes a
    // file it cannot read instead of refusing the configuration.
    let mut secret_notes = Vec::new();
    let token = match (admin_token(&config.http.admin_token_file), environment) {
        (Ok(token), _) => token,
        (Err((field, reason)), Environment::Required) => return Err(fail(&field, reason)),
        (Err((field, reason)), Environment::Optional) => {
            secret_notes.push(format!(
                "{field}: `leaderd run` needs it readable: {reason}"
            ));
            None
        }
    };
    let admin = AdminSettings {
        token,
        listen: match config.http.admin_listen.trim() {
            "" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                fail(
                    "http.admin_listen",
                    format!("{text:?} is not an address like 127.0.0.1:9091"),
                )
            })?),
        },
    };
    if let Some(address) = admin.listen
        && !address.ip().is_loopback()
    {
        return Err(fail(
            "http.admin_listen",
            format!(
                "{address} is not a loopback address: this listener changes the election without a token, so it must be reachable only from this machine (127.0.0.1 or ::1); from elsewhere use http.admin_token_file"
            ),
        ));
    }
    if admin.listen == Some(listen) && listen.port() != 0 {
        return Err(fail(
            "http.admin_listen",
            "must differ from http.listen: it serves the endpoints that change the election".into(),
        ));
    }
    let advertise_url = advertised(&config.http.advertise_url, listen)
        .map_err(|reason| fail("http.advertise_url", reason))?;
    if let Some(delay) = e.preempt_delay
        && delay.is_zero()
    {
        return Err(fail(
            "election.preempt_delay",
            "must be greater than zero".into(),
        ));
    }
    if e.preempt_delay.is_some() && !e.preempt {
        return Err(fail(
            "election.preempt_delay",
            "has no effect without election.preempt: true; set both or remove it".into(),
        ));
    }
    if e.mode == Mode::Observe && (e.priority != 0 || e.preempt) {
        return Err(fail(
            if e.preempt {
                "election.preempt"
            } else {
                "election.priority"
            },
            "an observer never competes, so priority and preemption decide nothing; remove them or use election.mode: candidate".into(),
        ));
    }
    if e.mode == Mode::Observe && config.leader_process.is_some() {
        return Err(fail(
            "leader_process",
            "an observer never leads, so it cannot run a leader process; remove it or use election.mode: candidate".into(),
        ));
    }

    let health = match &config.health {
        Some(section) => Some(
            health::validate(section, e.lease_duration)
                .map_err(|(field, reason)| fail(&field, reason))?,
        ),
        None => None,
    };
    if health.is_some() && e.mode == Mode::Observe {
        return Err(fail(
            "health",
            "an observer never leads, so its health decides nothing; remove the section or use election.mode: candidate".into(),
        ));
    }

    actions::validate(
        &config.hooks,
        config.leader_process.as_ref(),
        config.pod_label.as_ref(),
        &config.kubernetes,
        config.election.lease_duration,
        config.election.renew_deadline,
    )
    .map_err(|(field, reason)| fail(&field, reason))?;
    let mut notes = secret_notes;
    let pod_label = match config.pod_label {
        Some(label) => match (actions::pod_identity(), environment) {
            (Ok(pod), _) => Some((label, pod)),
            (Err(reason), Environment::Required) => return Err(fail("pod_label", reason)),
            (Err(reason), Environment::Optional) => {
                notes.push(format!("pod_label: `leaderd run` {reason}"));
                None
            }
        },
        None => None,
    };

    let settings = Settings {
        source: path.to_path_buf(),
        election: config.election,
        backend,
        listen,
        hooks: config.hooks,
        leader_process: config.leader_process,
        pod_label,
        kubernetes: config.kubernetes,
        admin,
        advertise_url,
        health,
    };
    Ok(Checked { settings, notes })
}

/// The URL others reach this daemon at: `http.advertise_url`, else the
/// listen address if it is a specific one, else `$POD_IP` with its port.
fn advertised(configured: &str, listen: SocketAddr) -> Result<Option<String>, String> {
    let configured = configured.trim();
    if !configured.is_empty() {
        if !(configured.starts_with("http://") || configured.starts_with("https://")) {
            return Err(format!(
                "{configured:?} must start with http:// or https://"
            ));
        }
        return Ok(Some(configured.trim_end_matches('/').to_string()));
    }
    if !listen.ip().is_unspecified() && listen.port() != 0 {
        return Ok(Some(format!("http://{listen}")));
    }
    Ok(std::env::var("POD_IP")
        .ok()
        .filter(|ip| !ip.is_empty())
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        .map(|ip| format!("http://{}", SocketAddr::new(ip, listen.port()))))
}

fn kubernetes_backend(
    lease: &KubernetesLeaseConfig,
    election: &ElectionConfig,
) -> Result<BackendSettings, (String, String)> {
    // leaseDurationSeconds is an integer: fractions would be rounded by
    // whoever reads the Lease, and client-go would disagree with us.
    if election.lease_duration.subsec_nanos() != 0 {
        return Err((
            "election.lease_duration".into(),
            format!(
                "{} must be a whole number of seconds with backend.kubernetes (leaseDurationSeconds is an integer)",
                show(election.lease_duration)
            ),
        ));
    }
    let namespace = if lease.namespace.is_empty() {
        crate::kubernetes::own_namespace()
    } else {
        lease.namespace.clone()
    };
    let lease_name = if lease.lease_name.is_empty() {
        election.name.clone()
    } else {
        lease.lease_name.clone()
    };
    for (field, value, max) in [
        ("backend.kubernetes.namespace", &namespace, 63),
        ("backend.kubernetes.lease_name", &lease_name, 253),
    ] {
        let valid = !value.is_empty()
            && value.len() <= max
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return Err((
                field.into(),
                format!(
                    "{value:?} is not a valid Kubernetes name (lowercase letters, digits, '-' and '.', at most {max})"
                ),
            ));
        }
    }
    Ok(BackendSettings::Kubernetes {
        namespace,
        lease_name,
    })
}

/// Hides the password of a `redis://user:password@host` URL so that it can be
/// logged or shown in `/status`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// The admin token: the file's content without surrounding whitespace (the
/// CLI sends it trimmed, and a bearer token never holds spaces).
pub fn admin_token(path: &str) -> Result<Option<redis::Secret>, (String, String)> {
    let Some(secret) = redis::read_secret(path, "http.admin_token_file")? else {
        return Ok(None);
    };
    let trimmed = secret.0.trim();
    if trimmed.is_empty() {
        return Err((
            "http.admin_token_file".to_string(),
            format!("{path:?} holds only whitespace"),
        ));
    }
    Ok(Some(redis::Secret(trimmed.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Settings, ConfigError> {
        let path = Path::new("test.yaml");
        validate(path, Config::parse(path, yaml)?, Environment::Required)
            .map(|checked| checked.settings)
    }

    const GOOD: &str = "election:\n  name: demo\n  identity: a\nbackend:\n  redis:\n    urls: [\"redis://127.0.0.1:6379\"]\n";

    #[test]
    fn defaults_match_client_go() {
        let s = parse(GOOD).expect("valid");
        assert_eq!(s.election.lease_duration, Duration::from_secs(15));
        assert_eq!(s.election.renew_deadline, Duration::from_secs(10));
        assert_eq!(s.election.retry_period, Duration::from_secs(2));
        assert_eq!(s.listen, "0.0.0.0:9090".parse().expect("addr"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "election:\n  name: demo\n  lease_duration: 5s\n  renew_deadline: 6s\nbackend:\n  redis:\n    urls: [\"redis://x\"]\n",
                "election.renew_deadline",
                "must be shorter than election.lease_duration (5s)",
            ),
            (
                "election:\n  name: Demo\nbackend:\n  redis:\n    urls: [\"redis://x\"]\n",
                "election.name",
                "contains 'D'",
            ),
            (
                "election:\n  name: demo\n  retry_period: 9s\nbackend:\n  redis:\n    urls: [\"redis://x\"]\n",
                "election.renew_deadline",
                "1.2",
            ),
            (
                "election:\n  name: demo\n  nmae: x\nbackend:\n  redis:\n    urls: [\"redis://x\"]\n",
                "election.nmae",
                "unknown field `nmae`",
            ),
            (
                "election:\n  name: demo\n  lease_duration: 5 parsecs\nbackend:\n  redis:\n    urls: [\"redis://x\"]\n",
                "election.lease_duration",
                "invalid duration",
            ),
            (
                "election:\n  name: demo\nbackend:\n  redis:\n    urls: [\"http://x\"]\n",
                "backend.redis.urls[0]",
                "redis://",
            ),
            (
                "election:\n  name: demo\nbackend: {}\n",
                "backend",
                "no backend",
            ),
            (
                "election:\n  identity: x\nbackend: {}\n",
                "election.name",
                "missing field `name`",
            ),
        ];
        for (yaml, field, reason) in cases {
            let err = parse(yaml).expect_err(yaml);
            assert_eq!(err.field, field, "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:hunter2@h:6379/0"),
            "redis://:***@h:6379/0"
        );
        assert_eq!(redact_url("rediss://u:p@h"), "rediss://u:***@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }
}
