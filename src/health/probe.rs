//! Running one probe, bounded by its timeout: a command (exit 0), an HTTP
//! GET (2xx), or a file's age.

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::process::Command;

use crate::config::{Probe, show};

/// How one probe run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// It answered "unhealthy": why.
    Failed(String),
    Timeout,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        *self == Outcome::Ok
    }

    /// The label of `leaderd_health_checks_total{result}`.
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(_) => "failed",
            Outcome::Timeout => "timeout",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Failed(why) => why.clone(),
            Outcome::Timeout => "timed out".into(),
        }
    }
}

pub async fn run(probe: &Probe, timeout: Duration) -> Outcome {
    match probe {
        Probe::Exec(argv) => exec(argv, timeout).await,
        Probe::Http(url) => http(url, timeout).await,
        Probe::File { path, max_age } => match std::fs::metadata(path).and_then(|m| m.modified()) {
            Err(err) => Outcome::Failed(format!("{}: {err}", path.display())),
            Ok(modified) => {
                let age = SystemTime::now()
                    .duration_since(modified)
                    .unwrap_or(Duration::ZERO);
                if age <= *max_age {
                    Outcome::Ok
                } else {
                    Outcome::Failed(format!(
                        "{} was last modified {} ago (max_age {})",
                        path.display(),
                        show(age),
                        show(*max_age)
                    ))
                }
            }
        },
    }
}

/// The command in its own process group, killed with it at the timeout.
async fn exec(argv: &[String], timeout: Duration) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::Failed("empty command".into());
    };
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => return Outcome::Failed(format!("cannot start {program}: {err}")),
    };
    let group = child.id().and_then(|pid| i32::try_from(pid).ok());
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Outcome::Ok,
        Ok(Ok(status)) => Outcome::Failed(format!("{program} exited with {status}")),
        Ok(Err(err)) => Outcome::Failed(format!("cannot wait for {program}: {err}")),
        Err(_) => {
            if let Some(group) = group {
                // SAFETY: kill(2) on the process group of our own child.
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
            let _ = child.wait().await;
            Outcome::Timeout
        }
    }
}

async fn http(url: &str, timeout: Duration) -> Outcome {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return Outcome::Failed(format!("{url} is not a URL"));
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    match tokio::time::timeout(timeout, client.get(uri)).await {
        Err(_) => Outcome::Timeout,
        Ok(Err(err)) => Outcome::Failed(format!("{url}: {err}")),
        Ok(Ok(response)) if response.status().is_success() => Outcome::Ok,
        Ok(Ok(response)) => Outcome::Failed(format!("{url} answered {}", response.status())),
    }
}
