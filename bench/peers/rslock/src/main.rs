//! leaderd benchmark adapter for the `rslock` crate (Redlock for Rust).
//!
//! Acquires the lock with rslock's own retry loop (`acquire_no_guard`: 3 tries
//! with a random 0–200 ms delay between them, then again), renews the way
//! `LockManager::using` does (extend 500 ms before the validity runs out),
//! releases on SIGTERM, and prints one line per event on stdout:
//!
//!   READY ts=<unix seconds> key=<redis key>
//!   ACQUIRED ts=<unix seconds>
//!   LOST ts=<unix seconds>        (an extend failed: back to acquiring)
//!   RELEASED ts=<unix seconds>    (after SIGTERM while holding)
//!
//! Usage: bench-rslock-adapter --resource NAME --lease-ms MS --redis URL [--redis URL ...]

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rslock::{Lock, LockManager};
use tokio::signal::unix::{signal, SignalKind};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn say(event: &str, extra: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{event} ts={:.6}{extra}", now());
    let _ = out.flush();
}

struct Args {
    resource: String,
    lease: Duration,
    urls: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut resource = None;
    let mut lease = None;
    let mut urls = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--resource" => resource = Some(value),
            "--lease-ms" => {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| format!("bad --lease-ms {value}"))?;
                lease = Some(Duration::from_millis(ms));
            }
            "--redis" => urls.push(value),
            "--identity" => {} // accepted for a uniform command line; rslock has no notion of it
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if urls.is_empty() {
        return Err("at least one --redis URL is needed".into());
    }
    Ok(Args {
        resource: resource.ok_or("--resource is needed")?,
        lease: lease.ok_or("--lease-ms is needed")?,
        urls,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("bench-rslock-adapter: {err}");
            std::process::exit(2);
        }
    };
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let manager = LockManager::new(args.urls.clone());
    say("READY", &format!(" key={}", args.resource));
    let resource = args.resource.as_bytes();

    loop {
        // Follow: rslock's blocking acquire loop.
        let mut lock: Lock = tokio::select! {
            got = manager.acquire_no_guard(resource, args.lease) => match got {
                Ok(lock) => lock,
                Err(err) => {
                    eprintln!("bench-rslock-adapter: acquire failed: {err}");
                    std::process::exit(1);
                }
            },
            _ = term.recv() => return,
            _ = int.recv() => return,
        };
        say("ACQUIRED", "");
        // Lead: extend 500 ms before the validity runs out, as `using` does.
        loop {
            let wait =
                Duration::from_millis((lock.validity_time as u64).saturating_sub(500).max(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = term.recv() => { lock.release().await; say("RELEASED", ""); return; }
                _ = int.recv() => { lock.release().await; say("RELEASED", ""); return; }
            }
            match manager.extend(&lock, args.lease).await {
                Ok(extended) => lock = extended,
                Err(_) => {
                    say("LOST", "");
                    break;
                }
            }
        }
    }
}
