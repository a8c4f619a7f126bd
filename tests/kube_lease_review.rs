//! Repros of the second hostile review of the Kubernetes Lease backend's
//! placeholder design (commit 500c684), against a real kube-apiserver
//! (tests/support/kube_real.rs). Each test fails on main at 037d086 and
//! names the rule it breaks: an edit on the same object (holder emptied,
//! `leaseDurationSeconds` removed) is trusted as a release or an expiry
//! while the holder still acts; a placeholder waits the new candidate's
//! lease, not the deleted holder's; a Lease that reappears by someone
//! else's create restarts the fencing tokens; a token at the int32 limit
//! is handed out twice.

#[path = "support/kube_real.rs"]
mod kube_real;
mod support;

use std::time::{Duration, Instant};

use kube_real::{Namespace, control_plane, event_rules, lease_rules};
use serde_json::json;
use support::*;

const SA: &str = "leaderd";

fn config(ns: &Namespace, name: &str, lease_s: u64, renew_ms: u64, retry_ms: u64) -> String {
    format!(
        "election:\n  name: {name}\n  lease_duration: {lease_s}s\n  renew_deadline: {renew_ms}ms\n  retry_period: {retry_ms}ms\nbackend:\n  kubernetes:\n    namespace: {}\n    lease_name: {name}\nhttp:\n  listen: \"127.0.0.1:0\"\n",
        ns.name(),
    )
}

fn start(ns: &Namespace, config: &str, kubeconfig: &std::path::Path, identity: &str) -> Leaderd {
    Leaderd::builder(config)
        .identity(identity)
        .env("POD_NAMESPACE", ns.name())
        .env("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path"))
        .start()
}

/// `kubectl edit` (or a merge patch) empties `holderIdentity` on the same
/// object while h leads, the "force a failover" trick known from client-go.
/// h was not asked and acts until its next renewal fails (up to its
/// safe-until if the API server is slow); the follower must not take this
/// vacancy at once as if h had released (the Redis backend makes
/// candidates wait when the key is deleted under its holder).
#[test]
fn an_edit_that_empties_the_holder_is_not_taken_as_a_release() {
    let ns = control_plane().namespace("kv-edit");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let name = "kv-edit";
    let renew = Duration::from_millis(1200);
    let config = config(&ns, name, 2, 1200, 333);
    let h = start(&ns, &config, &kubeconfig, "h");
    wait_until(Duration::from_secs(30), "h leads", || h.is_leading());
    let f = start(&ns, &config, &kubeconfig, "f");
    wait_until(PATIENCE, "f follows h", || {
        f.try_status().is_some_and(|s| s["leader"] == "h")
    });
    let since = Instant::now();
    wait_until(PATIENCE, "h renews", || {
        ns.client_writes_since(name, since)
            .iter()
            .any(|w| w.verb == "update" && w.holder() == "h")
    });
    // h is slow from here on (a GC pause, a partition): it still leads by
    // its own clock until its safe-until.
    h.signal("STOP");
    let renewed = ns
        .lease_writes(name)
        .into_iter()
        .rfind(|w| !w.by_test && w.holder() == "h")
        .expect("h's last write");
    ns.edit_lease(name, |lease| lease["spec"]["holderIdentity"] = json!(""));
    wait_until(PATIENCE, "f takes the Lease", || {
        ns.lease_holder(name).is_some_and(|holder| holder == "f")
    });
    let taken = ns
        .lease_writes(name)
        .into_iter()
        .find(|w| !w.by_test && w.holder() == "f")
        .expect("f's write");
    h.signal("CONT");
    assert!(
        taken.at >= renewed.at + renew,
        "f took the Lease {:?} after h's last renewal, while h may lead for {renew:?}: an edit emptying the holder counted as h's release\n{}",
        taken.at.duration_since(renewed.at),
        ns.dump_lease_writes(name)
    );
}

/// The Lease is re-applied from a manifest (`kubectl replace --force`, a
/// `helm upgrade --force` of a chart that pre-creates it) during a rolling
/// restart: the candidates that saw the old tokens are gone, the new ones
/// find an empty Lease they did not create. Their first term must still
/// have a greater token than the last term (the README: tokens grow
/// "across a deletion too", "at least the current Unix time"); the floor
/// is applied only to placeholders leaderd creates itself, so the new term
/// starts again at 1 and a fenced store refuses the new leader for good.
#[test]
fn a_lease_recreated_by_someone_else_does_not_restart_the_tokens() {
    let ns = control_plane().namespace("kv-restart");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let name = "kv-restart";
    let config = config(&ns, name, 1, 600, 150);
    let a = start(&ns, &config, &kubeconfig, "a");
    wait_until(Duration::from_secs(30), "a leads", || a.is_leading());
    let a_token = a.status()["fencing_token"].as_u64().expect("a's token");
    a.signal("TERM");
    a.wait_exit(PATIENCE).expect("a exits");
    assert!(ns.delete_lease(name));
    ns.put_lease(name, json!({}));
    let b = start(&ns, &config, &kubeconfig, "b");
    wait_until(Duration::from_secs(30), "b leads", || b.is_leading());
    let b_token = b.status()["fencing_token"].as_u64().expect("b's token");
    assert!(
        b_token > a_token,
        "the term after the Lease was re-created has token {b_token}, the one before had {a_token}\n{}",
        ns.dump_lease_writes(name)
    );
}

/// `leaseTransitions` is an int32: a Lease whose token is at its limit
/// (2^31 - 1; the Unix time reaches it in 2038, and any Lease writer can
/// set it) must not give the next term the same token again (it was
/// clamped to i32::MAX), which a fenced store accepts as "not lower". No
/// token above it fits, so nobody leads: the candidate says why and what
/// to do instead.
#[test]
fn a_token_at_the_int32_limit_is_never_handed_out_twice() {
    let ns = control_plane().namespace("kv-int32");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let name = "kv-int32";
    let limit = i64::from(i32::MAX);
    ns.put_lease(
        name,
        json!({"holderIdentity": "x", "leaseDurationSeconds": 1, "leaseTransitions": limit}),
    );
    let a = start(&ns, &config(&ns, name, 1, 600, 150), &kubeconfig, "a");
    wait_until(PATIENCE, "a says no term can start", || {
        a.log().contains("no term can start")
    });
    // Well past x's lease: a must still not lead.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert!(
            !a.is_leading(),
            "a leads although no token above {limit} fits leaseTransitions\n{}",
            ns.dump_lease_writes(name)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let twice: Vec<_> = ns
        .lease_writes(name)
        .into_iter()
        .filter(|w| !w.by_test && w.holder() != "x" && w.transitions() == Some(limit))
        .collect();
    assert!(
        twice.is_empty(),
        "token {limit} handed out again: {twice:?}"
    );
    let logs = a.log();
    for needed in [
        "leaseTransitions",
        "2147483647",
        "delete the Lease",
        "Redis",
    ] {
        assert!(logs.contains(needed), "the error names {needed:?}:\n{logs}");
    }
}

/// The same class as the emptied holder: an edit that leaves h as holder
/// but removes `leaseDurationSeconds` (0 is refused by validation) makes h's lease
/// expire at once by every follower's observation, while h acts until its
/// next renewal fails. The follower trusts a duration h never wrote.
#[test]
fn an_edit_that_shortens_the_lease_under_its_holder_is_not_an_expiry() {
    let ns = control_plane().namespace("kv-zero");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let name = "kv-zero";
    let renew = Duration::from_millis(1200);
    let config = config(&ns, name, 2, 1200, 333);
    let h = start(&ns, &config, &kubeconfig, "h");
    wait_until(Duration::from_secs(30), "h leads", || h.is_leading());
    let f = start(&ns, &config, &kubeconfig, "f");
    wait_until(PATIENCE, "f follows h", || {
        f.try_status().is_some_and(|s| s["leader"] == "h")
    });
    let since = Instant::now();
    wait_until(PATIENCE, "h renews", || {
        ns.client_writes_since(name, since)
            .iter()
            .any(|w| w.verb == "update" && w.holder() == "h")
    });
    h.signal("STOP");
    let renewed = ns
        .lease_writes(name)
        .into_iter()
        .rfind(|w| !w.by_test && w.holder() == "h")
        .expect("h's last write");
    ns.edit_lease(name, |lease| {
        // 0 or negative is refused by the API server; a missing one is not.
        if let Some(spec) = lease["spec"].as_object_mut() {
            spec.remove("leaseDurationSeconds");
        }
    });
    wait_until(PATIENCE, "f takes the Lease", || {
        ns.lease_holder(name).is_some_and(|holder| holder == "f")
    });
    let taken = ns
        .lease_writes(name)
        .into_iter()
        .find(|w| !w.by_test && w.holder() == "f")
        .expect("f's write");
    h.signal("CONT");
    assert!(
        taken.at >= renewed.at + renew,
        "f took the Lease {:?} after h's last renewal, while h may lead for {renew:?}: an edit removing leaseDurationSeconds counted as h's expiry\n{}",
        taken.at.duration_since(renewed.at),
        ns.dump_lease_writes(name)
    );
}

/// A rolling change of `lease_duration` (6 s to 1 s): h, still on the old
/// configuration, leads and may act for its renew_deadline (4 s) after its
/// last renewal; the Lease is deleted. f, on the new configuration, waits
/// only its own lease (1 s) on the placeholder, although it saw h's Lease
/// with `leaseDurationSeconds: 6` (and the watch's Deleted event carries
/// it too). An ordinary expiry would have waited h's 6 s.
#[test]
fn a_placeholder_waits_at_least_the_deleted_holders_lease() {
    let ns = control_plane().namespace("kv-mixed");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let name = "kv-mixed";
    let renew = Duration::from_millis(4000);
    let h = start(&ns, &config(&ns, name, 6, 4000, 500), &kubeconfig, "h");
    wait_until(Duration::from_secs(30), "h leads", || h.is_leading());
    let f = start(&ns, &config(&ns, name, 1, 600, 150), &kubeconfig, "f");
    wait_until(PATIENCE, "f follows h", || {
        f.try_status().is_some_and(|s| s["leader"] == "h")
    });
    let since = Instant::now();
    wait_until(PATIENCE, "h renews", || {
        ns.client_writes_since(name, since)
            .iter()
            .any(|w| w.verb == "update" && w.holder() == "h")
    });
    h.signal("STOP");
    let renewed = ns
        .lease_writes(name)
        .into_iter()
        .rfind(|w| !w.by_test && w.holder() == "h")
        .expect("h's last write");
    assert!(ns.delete_lease(name));
    wait_until(PATIENCE, "f takes the Lease", || {
        ns.lease_holder(name).is_some_and(|holder| holder == "f")
    });
    let taken = ns
        .lease_writes(name)
        .into_iter()
        .find(|w| !w.by_test && w.holder() == "f")
        .expect("f's write");
    h.signal("CONT");
    assert!(
        taken.at >= renewed.at + renew,
        "f took the placeholder {:?} after h's last renewal, while h (lease 6 s) may lead for {renew:?}\n{}",
        taken.at.duration_since(renewed.at),
        ns.dump_lease_writes(name)
    );
}
