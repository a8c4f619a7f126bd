//! What the Kubernetes parts share: building a client from the
//! `kubernetes` section, explaining API errors (a 403 names the missing
//! RBAC rule), and recording Events as client-go's event recorder does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};

use crate::config::KubernetesConfig;

/// Builds a Kubernetes client: `kubernetes.api_url` if set, else the
/// in-cluster configuration, else KUBECONFIG.
pub async fn client(config: &KubernetesConfig) -> Result<kube::Client, String> {
    let config = if config.api_url.trim().is_empty() {
        kube::Config::infer().await.map_err(|err| {
            format!(
                "cannot configure the Kubernetes client ({err}); set kubernetes.api_url or run in a cluster"
            )
        })?
    } else {
        let url = config
            .api_url
            .trim()
            .parse()
            .map_err(|err| format!("kubernetes.api_url: {err}"))?;
        kube::Config::new(url)
    };
    kube::Client::try_from(config)
        .map_err(|err| format!("cannot build the Kubernetes client: {err}"))
}

/// The namespace this process runs in: `POD_NAMESPACE`, else the in-cluster
/// service account's namespace, else `default`.
pub fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|ns| !ns.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|ns| ns.trim().to_string())
                .filter(|ns| !ns.is_empty())
        })
        .unwrap_or_else(|| "default".to_string())
}

/// The HTTP status of an API error, if the server answered.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A sentence for the operator; a 403 says which rule the ServiceAccount
/// lacks.
pub fn explain(
    err: &kube::Error,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
) -> String {
    match err {
        kube::Error::Api(status) if status.code == 403 => {
            let group = if group.is_empty() { "\"\"" } else { group };
            format!(
                "forbidden: the ServiceAccount may not {verb} {resource} in namespace {namespace:?}; \
                 grant it a Role rule {{apiGroups: [{group}], resources: [{resource}], verbs: [{verb}]}} ({})",
                status.message
            )
        }
        _ => format!("{verb} {resource} in namespace {namespace:?}: {err}"),
    }
}

/// Records core/v1 Events about our objects (the Lease, our Pod), shaped as
/// client-go's event recorder writes them, so that `kubectl describe`
/// shows leaderd's history next to client-go controllers'.
///
/// Recording never delays the caller: each Event is created by a task of
/// its own, bounded in time. An Event is information, so a failure is only
/// logged (once per distinct problem: a missing `create events` permission
/// would otherwise be logged at every change).
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    /// `source.component` / `reportingController`.
    component: &'static str,
    last_problem: Arc<Mutex<String>>,
}

/// What an Event is about: an object of kind `kind` (`Lease`, `Pod`).
#[derive(Debug, Clone)]
pub struct Involved {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl Involved {
    /// The object `metadata` describes.
    pub fn of(kind: &'static str, api_version: &'static str, metadata: &ObjectMeta) -> Involved {
        Involved {
            kind,
            api_version,
            namespace: metadata.namespace.clone().unwrap_or_default(),
            name: metadata.name.clone().unwrap_or_default(),
            uid: metadata.uid.clone(),
            resource_version: metadata.resource_version.clone(),
        }
    }
}

/// The longest an Event's creation may take.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

impl EventRecorder {
    pub fn new(client: kube::Client) -> EventRecorder {
        EventRecorder {
            client,
            component: "leaderd",
            last_problem: Arc::new(Mutex::new(String::new())),
        }
    }

    /// Records, in the background, a `Normal` Event about `object` reported
    /// by `instance` (`source.host`, `reportingInstance`: who we are).
    pub fn normal(&self, instance: &str, object: Involved, reason: &'static str, message: String) {
        let recorder = self.clone();
        let event = self.event(instance, object, reason, message);
        tokio::spawn(async move {
            let namespace = event.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Event> = Api::namespaced(recorder.client.clone(), &namespace);
            let problem = match tokio::time::timeout(
                EVENT_TIMEOUT,
                api.create(&PostParams::default(), &event),
            )
            .await
            {
                Ok(Ok(_)) => return,
                Ok(Err(err)) => explain(&err, "create", "", "events", &namespace),
                Err(_) => format!(
                    "create events in namespace {namespace:?}: no answer within {}",
                    crate::config::show(EVENT_TIMEOUT)
                ),
            };
            let mut last = crate::backend::lock(&recorder.last_problem);
            if *last != problem {
                tracing::warn!("cannot record a Kubernetes Event ({reason}): {problem}");
                *last = problem;
            }
        });
    }

    fn event(&self, instance: &str, object: Involved, reason: &str, message: String) -> Event {
        let now = k8s_openapi::jiff::Timestamp::now();
        Event {
            metadata: ObjectMeta {
                // client-go's name: the object's name and the time in hex
                // nanoseconds, unique enough without a server round trip.
                name: Some(format!("{}.{:x}", object.name, now.as_nanosecond())),
                namespace: Some(object.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(object.api_version.to_string()),
                kind: Some(object.kind.to_string()),
                namespace: Some(object.namespace),
                name: Some(object.name),
                uid: object.uid,
                resource_version: object.resource_version,
                ..ObjectReference::default()
            },
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some("Normal".to_string()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource {
                component: Some(self.component.to_string()),
                host: Some(instance.to_string()),
            }),
            reporting_component: Some(self.component.to_string()),
            reporting_instance: Some(instance.to_string()),
            ..Event::default()
        }
    }
}
