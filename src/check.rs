//! `leaderd check`: validate a configuration and, unless `--offline`, ask
//! the backend whether it can hold a lease safely.

use crate::config::{BackendSettings, Checked, redact_url, show};

/// Prints what it finds; returns whether the setup is usable.
pub async fn check(checked: &Checked, offline: bool) -> bool {
    let settings = &checked.settings;
    let e = &settings.election;
    println!(
        "{}: OK — election {:?}, identity {:?}, lease {} / renew deadline {} / retry {}, http {}",
        settings.source.display(),
        e.name,
        e.identity,
        show(e.lease_duration),
        show(e.renew_deadline),
        show(e.retry_period),
        settings.listen
    );
    if let Some((label, pod)) = &settings.pod_label {
        println!(
            "pod_label: {}={} on pod {}/{}",
            label.key, label.leader_value, pod.namespace, pod.name
        );
    }
    for note in &checked.notes {
        println!("  note: {note}");
    }
    if offline {
        match &settings.backend {
            BackendSettings::Redis(redis) => {
                if let Some(sentinel) = &redis.config.sentinel {
                    println!(
                        "backend: redis master {:?} via Sentinel {} (not contacted: --offline)",
                        sentinel.master_name,
                        sentinel
                            .urls
                            .iter()
                            .map(|u| redact_url(u))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                for url in &redis.config.urls {
                    println!(
                        "backend: redis {} (not contacted: --offline)",
                        redact_url(url)
                    );
                }
            }
            BackendSettings::Kubernetes {
                namespace,
                lease_name,
            } => println!(
                "backend: kubernetes lease {namespace}/{lease_name} (not contacted: --offline)"
            ),
        }
        return true;
    }
    let report = crate::backend::preflight(&settings.backend, &e.name, &settings.kubernetes).await;
    for fact in &report.facts {
        println!("backend: {fact}");
    }
    for warning in &report.warnings {
        println!("  warning: {warning}");
    }
    for error in &report.errors {
        println!("  error: {error}");
    }
    let usable = report.errors.is_empty();
    println!("{}", if usable { "usable" } else { "NOT usable" });
    usable
}
