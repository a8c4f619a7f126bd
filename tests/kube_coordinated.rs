//! Coordinated Leader Election (KEP-4355) against a real kube-apiserver
//! with `--feature-gates=CoordinatedLeaderElection=true` and
//! `coordination.k8s.io/v1beta1` (tests/support/kube_real.rs,
//! `scripts/kube-up --coordinated`): the coordinated-leader-election
//! controller runs inside kube-apiserver.
//!
//! A client-go candidate with `Coordinated: true` publishes a
//! LeaseCandidate for a Lease that leaderd holds. The controller picks it
//! and marks the end of leaderd's term with `spec.preferredHolder`; leaderd
//! must hand over as client-go's coordinated candidates do (stop renewing),
//! except that it releases at once, and a leaderd follower must leave the
//! released Lease to the controller.

#[path = "support/kube_real.rs"]
mod kube_real;
mod support;

use std::thread;
use std::time::{Duration, Instant};

use kube_real::{
    ClientGo, ClientGoTiming, coordinated_control_plane, event_rules, lease_rules, rule,
};
use support::*;

const LEASE: &str = "cle";

/// The controller sets its elected holder's lease to 5 s; the client-go
/// candidate renews it with these.
const CG: ClientGoTiming = ClientGoTiming {
    lease: Duration::from_secs(5),
    renew: Duration::from_secs(3),
    retry: Duration::from_millis(500),
};

#[test]
fn preferred_holder_makes_the_leaderd_leader_hand_over() {
    let ns = coordinated_control_plane().namespace("cle");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let ld_kubeconfig = ns.account("leaderd", rules);
    let cg_kubeconfig = ns.account(
        "clientgo",
        vec![
            rule(
                "coordination.k8s.io",
                "leases",
                &["get", "create", "update"],
                &[],
            ),
            rule(
                "coordination.k8s.io",
                "leasecandidates",
                &[
                    "get", "list", "watch", "create", "update", "patch", "delete",
                ],
                &[],
            ),
            rule("", "events", &["create", "patch"], &[]),
        ],
    );
    let config = format!(
        "election:\n  name: {LEASE}\n  lease_duration: 2s\n  renew_deadline: 1200ms\n  retry_period: 333ms\nbackend:\n  kubernetes:\n    namespace: {}\n    lease_name: {LEASE}\nhttp:\n  listen: \"127.0.0.1:0\"\n",
        ns.name()
    );
    let start = |identity: &str| {
        Leaderd::builder(&config)
            .identity(identity)
            .env("POD_NAMESPACE", ns.name())
            .env("KUBECONFIG", ld_kubeconfig.to_str().expect("utf-8 path"))
            .start()
    };
    let leader = start("ld-a");
    wait_until(PATIENCE, "ld-a leads", || leader.is_leading());
    let follower = start("ld-b");
    wait_until(PATIENCE, "ld-b follows ld-a", || {
        follower
            .try_status()
            .is_some_and(|st| st["leader"] == "ld-a")
    });

    // A coordinated client-go candidate appears: it never grabs the Lease,
    // it waits for the controller to give it.
    let joined = Instant::now();
    let cg = ClientGo::start(
        &cg_kubeconfig,
        ns.name(),
        LEASE,
        "cg-coord",
        CG,
        &["-coordinated"],
    );
    wait_until(
        Duration::from_secs(60),
        "the controller hands the Lease to cg-coord",
        || cg.is_leading(),
    );
    let took = joined.elapsed();

    let writes = ns.lease_writes(LEASE);
    let dump = ns.dump_lease_writes(LEASE);
    // 1. Someone other than the candidates (the controller, inside
    //    kube-apiserver) named cg-coord the preferred holder of ld-a's Lease.
    let marked = writes
        .iter()
        .find(|w| w.spec["preferredHolder"] == "cg-coord" && w.holder() == "ld-a")
        .unwrap_or_else(|| panic!("no preferredHolder on ld-a's lease:\n{dump}"));
    let ld_user = ns.user("leaderd");
    let cg_user = ns.user("clientgo");
    assert!(
        marked.user != ld_user && marked.user != cg_user && !marked.by_test,
        "preferredHolder written by {}",
        marked.user
    );
    assert_eq!(marked.spec["strategy"], "OldestEmulationVersion", "{dump}");
    // 2. ld-a released at its next renewal: holder empty, the preferred
    //    holder kept for the controller.
    let release = writes
        .iter()
        .find(|w| w.resource_version > marked.resource_version && w.user == ld_user)
        .unwrap_or_else(|| panic!("ld-a did not write after the mark:\n{dump}"));
    assert_eq!(
        release.holder(),
        "",
        "ld-a must release, not renew:\n{dump}"
    );
    assert_eq!(release.spec["preferredHolder"], "cg-coord", "{dump}");
    let handed = release.at.saturating_duration_since(marked.at);
    assert!(
        handed < Duration::from_millis(333) + Duration::from_millis(500),
        "released {handed:?} after the mark (retry period 333 ms)\n{dump}"
    );
    // 3. The controller gave the Lease to cg-coord; no leaderd took the
    //    released Lease meanwhile (it is reserved until it expires).
    let assigned = writes
        .iter()
        .find(|w| w.resource_version > release.resource_version && !w.holder().is_empty())
        .unwrap_or_else(|| panic!("nobody took the released lease:\n{dump}"));
    assert_eq!(assigned.holder(), "cg-coord", "{dump}");
    assert_ne!(assigned.user, ld_user, "{dump}");
    assert_ne!(
        assigned.user, cg_user,
        "the controller assigns, not the candidate\n{dump}"
    );
    eprintln!(
        "cg-coord leads {took:?} after joining; ld-a released {handed:?} after the preferredHolder mark; the controller assigned cg-coord {:?} after the release",
        assigned.at.saturating_duration_since(release.at)
    );

    // ld-a stepped down for the handover, and both leaderd now follow.
    let st = leader.status();
    assert_eq!(st["reason"], "hand_over", "{st}");
    assert!(
        leader
            .log()
            .lines()
            .any(|l| l.contains("stepped down") && l.contains("hand_over")),
        "{}",
        leader.log()
    );
    for d in [&leader, &follower] {
        wait_until(PATIENCE, "leaderd reports cg-coord", || {
            d.try_status()
                .is_some_and(|st| st["leader"] == "cg-coord" && st["is_leader"] == false)
        });
    }
    // And they leave cg-coord alone while it renews.
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(3) {
        assert!(!leader.is_leading() && !follower.is_leading());
        thread::sleep(Duration::from_millis(50));
    }
    assert!(cg.is_leading(), "{}", cg.log());
    assert!(
        ns.lease_writes(LEASE)
            .iter()
            .filter(|w| w.resource_version > assigned.resource_version)
            .all(|w| w.user != ld_user),
        "a leaderd wrote the Lease cg-coord holds:\n{}",
        ns.dump_lease_writes(LEASE)
    );
}
