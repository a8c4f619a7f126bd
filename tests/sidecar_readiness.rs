//! A store outage must not take the workload down: in a sidecar
//! configuration (Redis backend, pod label through a real kube-apiserver,
//! as the Helm chart renders it in sidecar mode), the endpoint the chart uses
//! as the readinessProbe, `/healthz`, stays 200 while Redis is frozen and
//! then killed, although `/readyz` answers 503 and nobody leads.

#[path = "support/kube_real.rs"]
mod kube_real;
mod support;

use std::time::{Duration, Instant};

use kube_real::{control_plane, event_rules, pod_rules};
use support::*;

/// The chart's sidecar-mode leaderd.yaml, with test timings.
fn sidecar_config(redis_url: &str) -> String {
    format!(
        "{}hooks:\n  started_leading: []\n  timeout: 2s\npod_label:\n  key: leaderd.io/role\n  leader_value: leader\n  follower_value: follower\n  selector: \"app=shop\"\n",
        config("shop-jobs", redis_url)
    )
}

/// Looks at every candidate's `/healthz` at least once and then for
/// `window`: it must answer 200 every time. Returns how many looks there
/// were.
fn healthz_stays_200(candidates: &[Leaderd], window: Duration, what: &str) -> usize {
    let end = Instant::now() + window;
    let mut looks = 0;
    loop {
        for d in candidates {
            let answer = d.try_get("/healthz", Duration::from_secs(2));
            assert!(
                matches!(answer, Some((200, _))),
                "{} /healthz answered {answer:?} {what}\n--- log ---\n{}",
                d.identity(),
                d.log()
            );
        }
        looks += 1;
        if Instant::now() >= end {
            return looks;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn healthz_stays_200_while_readyz_fails_during_a_redis_outage() {
    let mut redis = RedisServer::start();
    let ns = control_plane().namespace("sidecar");
    let mut rules = pod_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account("leaderd", rules);
    let cfg = sidecar_config(&redis.url());
    let pods = ["shop-0", "shop-1"];
    let candidates: Vec<Leaderd> = pods
        .iter()
        .map(|pod| {
            ns.create_pod(pod, &[("app", "shop")]);
            Leaderd::builder(&cfg)
                .identity(pod)
                .env("POD_NAME", pod)
                .env("POD_NAMESPACE", ns.name())
                .env("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path"))
                .start()
        })
        .collect();
    let all: Vec<&Leaderd> = candidates.iter().collect();
    let leader = wait_for_leader(&all, PATIENCE);
    wait_until(
        PATIENCE,
        "both are ready and the leader is labelled",
        || {
            candidates.iter().all(|d| d.get("/readyz").0 == 200)
                && ns.label(pods[leader], "leaderd.io/role").as_deref() == Some("leader")
        },
    );

    // Frozen: connections hang, every call runs into its deadline.
    redis.freeze();
    let mut looks = 0;
    wait_until(
        PATIENCE,
        "/readyz answers 503 on both (Redis frozen)",
        || {
            looks += healthz_stays_200(&candidates, Duration::ZERO, "while Redis is frozen");
            candidates.iter().all(|d| d.get("/readyz").0 == 503)
        },
    );
    looks += healthz_stays_200(&candidates, 3 * LEASE, "while Redis is frozen");
    assert!(
        candidates.iter().all(|d| !d.is_leading()),
        "nobody leads without Redis"
    );
    wait_until(
        PATIENCE,
        "the former leader's pod label is follower",
        || ns.label(pods[leader], "leaderd.io/role").as_deref() == Some("follower"),
    );

    // Gone: connections are refused at once.
    redis.thaw();
    redis.kill();
    looks += healthz_stays_200(&candidates, 3 * LEASE, "while Redis is down");
    for d in &candidates {
        let (code, body) = d.get("/readyz");
        assert_eq!(code, 503, "{}: /readyz {body}", d.identity());
        assert!(body.contains("backend unreachable"), "{body}");
    }
    assert!(looks > 10, "only {looks} looks at /healthz");
}
