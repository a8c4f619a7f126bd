//! What the Kubernetes parts share: building a client from the
//! `kubernetes` section, and explaining API errors (a 403 names the missing
//! RBAC rule).

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
