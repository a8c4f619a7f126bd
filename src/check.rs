//! `leaderd check`: validate a configuration and, unless `--offline`, ask
//! the backend whether it can hold a lease safely.

use std::time::Duration;

use crate::backend::redis::{Keys, preflight};
use crate::config::{BackendSettings, Settings, redact_url, show};

/// Prints what it finds; returns whether the setup is usable.
pub async fn check(settings: &Settings, offline: bool) -> bool {
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
    let BackendSettings::Redis(redis) = &settings.backend;
    if offline {
        for url in &redis.urls {
            println!(
                "backend: redis {} (not contacted: --offline)",
                redact_url(url)
            );
        }
        return true;
    }
    let keys = Keys::new(&redis.key_prefix, &e.name);
    let mut usable = true;
    for url in &redis.urls {
        let report = preflight::check(url, &keys, Duration::from_secs(5)).await;
        if report.version.is_empty() {
            println!("backend: redis {}", report.url);
        } else {
            println!("backend: redis {} — Redis {}", report.url, report.version);
        }
        match &report.current_holder {
            Some(holder) => println!("  lease {} held by {holder}", keys.lock),
            None if report.errors.is_empty() => println!("  lease {} is free", keys.lock),
            None => {}
        }
        for warning in &report.warnings {
            println!("  warning: {warning}");
        }
        for error in &report.errors {
            println!("  error: {error}");
        }
        usable &= report.errors.is_empty();
    }
    println!("{}", if usable { "usable" } else { "NOT usable" });
    usable
}
