//! Faults around the Kubernetes Lease backend, against a real
//! kube-apiserver (tests/support/kube_real.rs): the election's Lease
//! deleted, deleted again at once, or replaced by an empty one under a
//! leader that may still act (never two leaders, never a reused fencing
//! token; the placeholder that replaces a missing Lease settles without
//! the watch, and waits at least the deleted holder's lease); edits on the
//! same object under a live holder (its holder emptied, its
//! `leaseDurationSeconds` removed) that are neither a release nor an
//! expiry; a Lease re-created by someone else that does not restart the
//! tokens; a token at the int32 limit never handed out twice; the presence
//! Leases' edge cases (a candidate restarted under its identity, one dated
//! in the future, a name that collides with another election's Lease),
//! and an expired handoff that must not give the Lease back to an
//! unhealthy leader. Each was found by a hostile review and failed before
//! its fix.

#[path = "support/kube_real.rs"]
mod kube_real;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, WatchEvent, WatchParams};
use kube_real::{Namespace, control_plane, event_rules, lease_rules, rule};
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

/// The presence Lease name leaderd uses (`<election>-<48 bits of FNV-1a>`),
/// recomputed here.
fn presence_name(election: &str, identity: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in identity.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{election}-{:012x}", hash >> 16)
}

/// A candidate of election `x` must never write a Lease that is not its
/// presence Lease: here a second election, named `x-<hash of a>` (the name
/// a's presence Lease would have), held by `q`. Its holder and its fencing
/// token must survive a's start and a's shutdown.
#[test]
fn a_presence_lease_never_overwrites_another_elections_lease() {
    let ns = control_plane().namespace("kr-collide");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let x = "kr-x".to_string();
    let other = presence_name(&x, "a");
    // The other election, led by q for a while (a token above 6: the
    // floor of every take is at least the Unix time).
    ns.put_lease(
        &other,
        json!({"holderIdentity": "q", "leaseDurationSeconds": 1, "leaseTransitions": 6}),
    );
    let q = start(&ns, &config(&ns, &other, 1, 600, 150), &kubeconfig, "q");
    wait_until(PATIENCE, "q leads the other election", || q.is_leading());
    let token = q.status()["fencing_token"].as_u64().expect("q's token");
    assert!(token > 6, "q's token {token}");

    let a = start(&ns, &config(&ns, &x, 1, 600, 150), &kubeconfig, "a");
    wait_until(PATIENCE, "a leads x", || a.is_leading());
    std::thread::sleep(Duration::from_secs(2));
    let spec = ns.lease_spec(&other).expect("the other election's Lease");
    assert_eq!(
        spec["holderIdentity"],
        "q",
        "a candidate of {x} overwrote election {other}'s Lease: {spec}\nq: {}",
        q.status()
    );
    assert!(
        spec["leaseTransitions"].as_i64().unwrap_or(0) >= 7,
        "the other election's fencing token went down: {spec}"
    );
    a.signal("TERM");
    a.wait_exit(PATIENCE).expect("a exits");
    assert!(
        ns.lease(&other).is_some(),
        "a candidate of {x} deleted election {other}'s Lease when it left"
    );
}

/// A missing Lease must eventually be taken (its placeholder settled) even
/// when the candidates may not watch it: many hand-written Roles (client-go's
/// leader election needs only get/create/update) grant no `watch`, and the
/// README says the election works without the watch, only slower.
#[test]
fn a_missing_lease_is_created_although_the_watch_is_forbidden() {
    let ns = control_plane().namespace("kr-nowatch");
    let mut rules = vec![rule(
        "coordination.k8s.io",
        "leases",
        &["get", "list", "create", "update", "delete"],
        &[],
    )];
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let name = "kr-nowatch";
    // A 6 s lease: longer than the watcher's 5 s maximum backoff.
    let a = start(&ns, &config(&ns, name, 6, 4000, 1000), &kubeconfig, "a");
    wait_until(
        Duration::from_secs(45),
        "a leads once its placeholder has settled for 6 s",
        || a.is_leading(),
    );
    assert_eq!(ns.lease_holder(name).as_deref(), Some("a"));
}

/// Someone (an operator's script, a GitOps tool pruning "unknown" Leases)
/// deletes the Lease as soon as it appears. A create must never start a
/// term (only a placeholder): two creates of terms by different candidates
/// less than renew_deadline apart would be two leaders at once.
#[test]
fn a_lease_deleted_right_after_its_creation_never_gives_two_leaders() {
    let ns = control_plane().namespace("kr-deleter");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let name = "kr-deleter";
    let renew = Duration::from_millis(600);
    let config = config(&ns, name, 1, 600, 150);
    let group: Vec<Leaderd> = ["a", "b", "c"]
        .iter()
        .map(|id| start(&ns, &config, &kubeconfig, id))
        .collect();
    let stop = AtomicBool::new(false);
    let plane = ns.plane;
    let namespace = ns.name().to_string();
    let overlap = std::thread::scope(|scope| {
        let deleter = scope.spawn(|| {
            let api: Api<Lease> = Api::namespaced(plane.admin(), &namespace);
            let params = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(10);
            let mut deleted = 0u32;
            while !stop.load(Ordering::SeqCst) {
                plane.block_on(async {
                    let Ok(stream) = api.watch(&params, "0").await else {
                        return;
                    };
                    let mut stream = std::pin::pin!(stream);
                    loop {
                        let next =
                            tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        match next {
                            Ok(Some(Ok(WatchEvent::Added(_)))) => {
                                if api.delete(name, &DeleteParams::default()).await.is_ok() {
                                    deleted += 1;
                                }
                            }
                            Ok(Some(Ok(_))) | Err(_) => {}
                            Ok(None) | Ok(Some(Err(_))) => return,
                        }
                    }
                });
            }
            deleted
        });
        let started = Instant::now();
        let mut found = None;
        while started.elapsed() < Duration::from_secs(20) && found.is_none() {
            std::thread::sleep(Duration::from_secs(2));
            let creates: Vec<_> = ns
                .lease_writes(name)
                .into_iter()
                .filter(|w| w.verb == "create" && !w.by_test)
                .collect();
            // A create is never a term: only a placeholder, taken (by an
            // update) once it has been seen unchanged for a lease.
            found = creates
                .iter()
                .find(|w| w.holder() != "leaderd.io/vacant")
                .map(|w| {
                    format!(
                        "{} created the Lease for itself (token {:?})",
                        w.holder(),
                        w.transitions()
                    )
                })
                .or_else(|| {
                    creates
                        .windows(2)
                        .find(|pair| {
                            pair[0].holder() != pair[1].holder()
                                && pair[1].at.saturating_duration_since(pair[0].at) < renew
                        })
                        .map(|pair| {
                            format!(
                                "{} created the Lease (token {:?}) {:?} after {} did (token {:?}), whose term may act for {renew:?}",
                                pair[1].holder(),
                                pair[1].transitions(),
                                pair[1].at.saturating_duration_since(pair[0].at),
                                pair[0].holder(),
                                pair[0].transitions(),
                            )
                        })
                });
        }
        stop.store(true, Ordering::SeqCst);
        let deleted = deleter.join().expect("deleter");
        eprintln!("the deleter deleted the Lease {deleted} times");
        found
    });
    if let Some(overlap) = overlap {
        let logs: Vec<String> = group
            .iter()
            .map(|d| {
                format!(
                    "--- {}:\n{}",
                    d.identity(),
                    d.log()
                        .lines()
                        .filter(|l| l.contains("became leader") || l.contains("stepped down"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })
            .collect();
        panic!("two leaders: {overlap}\n{}", logs.join("\n"));
    }
}

/// A candidate killed without leaving (SIGKILL, OOM, a lost node) and
/// started again under the same identity (a StatefulSet pod) finds its
/// presence Lease still there: it must stand again within a few leases,
/// not only once the leader removed the old Lease as garbage (10 leases).
/// (An update without resourceVersion, which write_own relies on for this,
/// is refused by the API server: Leases allow no unconditional update.)
#[test]
fn a_candidate_restarted_under_its_identity_is_listed_again_soon() {
    let ns = control_plane().namespace("kr-restart");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let name = "kr-restart";
    let config = config(&ns, name, 1, 600, 150);
    let a = start(&ns, &config, &kubeconfig, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let b = start(&ns, &config, &kubeconfig, "b");
    let listed = |d: &Leaderd| {
        d.try_status().is_some_and(|s| {
            s["candidates"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["identity"] == "b"))
        })
    };
    wait_until(PATIENCE, "b is listed", || listed(&a));
    b.kill();
    drop(b);
    let b = start(&ns, &config, &kubeconfig, "b");
    wait_until(PATIENCE, "b follows", || {
        b.try_status().is_some_and(|s| s["leader"] == "a")
    });
    std::thread::sleep(Duration::from_secs(2));
    let announced = !b.log().contains("cannot announce this candidate");
    assert!(
        announced,
        "b cannot write its presence Lease after a restart:\n{}",
        b.log()
            .lines()
            .filter(|l| l.contains("cannot announce"))
            .take(1)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Listed again within 3 leases of its restart (its old presence Lease
    // had gone stale meanwhile).
    wait_until(Duration::from_secs(3), "b is listed again", || listed(&a));
}

/// A presence Lease whose `renewTime` lies in the future (written by a
/// node whose clock is an hour ahead, which then died; or by anyone with
/// the chart's `update` on Leases) must not count as a live candidate for
/// that hour: with `preempt`, the leader would hand the Lease to it over
/// and over, leaving the election leaderless for a lease each time.
#[test]
fn a_presence_lease_dated_in_the_future_does_not_keep_a_dead_candidate_present() {
    let ns = control_plane().namespace("kr-future");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let name = "kr-future";
    let in_an_hour =
        kube_real::micro_time(std::time::SystemTime::now() + Duration::from_secs(3600));
    ns.edit_lease(&presence_name(name, "ghost"), |lease| {
        lease["metadata"]["labels"] = json!({"leaderd.io/candidate-of": name});
        lease["metadata"]["annotations"] = json!({"leaderd.io/presence": "{\"identity\":\"ghost\",\"version\":\"0\",\"priority\":10,\"healthy\":true,\"started_at\":\"2026-01-01T00:00:00Z\"}"});
        lease["spec"] = json!({"holderIdentity": "ghost", "leaseDurationSeconds": 1, "renewTime": in_an_hour});
    });
    let extra = "  priority: 1\n  preempt: true\n  preempt_delay: 1s\n";
    let config = config(&ns, name, 1, 600, 150).replace(
        "  retry_period: 150ms\n",
        &format!("  retry_period: 150ms\n{extra}"),
    );
    let a = start(&ns, &config, &kubeconfig, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    std::thread::sleep(Duration::from_secs(5));
    let handovers: Vec<String> = a
        .log()
        .lines()
        .filter(|l| l.contains("handing over"))
        .map(str::to_string)
        .collect();
    assert!(
        handovers.is_empty(),
        "a handed over to a candidate that never refreshed its presence ({} times):\n{}",
        handovers.len(),
        handovers.join("\n")
    );
}

/// A probe that fails while `flag` exists.
fn probe_failing_while(flag: &std::path::Path) -> String {
    format!(
        "health:\n  exec: [\"sh\", \"-c\", \"test ! -e {}\"]\n  period: 100ms\n  timeout: 100ms\n  failure_threshold: 2\n  success_threshold: 1\n",
        flag.display()
    )
}

/// An unhealthy leader a hands over to b, which is frozen and never takes
/// the Lease; once the handoff expires, the healthy c must take it, not a
/// (still unhealthy and standing aside): a's own reservation window starts
/// at its release write, before any follower saw the release, so without a
/// hold-back a wins that race and leads while unhealthy.
#[test]
fn after_a_handoff_expires_the_unhealthy_leader_does_not_take_the_lease_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = control_plane().namespace("kr-sickback");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let name = "kr-sickback";
    let flags = ["a", "b", "c"].map(|n| dir.path().join(format!("{n}-sick")));
    let run = |i: usize, id: &str| {
        let config = format!(
            "{}{}",
            config(&ns, name, 1, 600, 150),
            probe_failing_while(&flags[i])
        );
        start(&ns, &config, &kubeconfig, id)
    };
    let a = run(0, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let listed = |who: &str| {
        a.try_status().is_some_and(|s| {
            s["candidates"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|c| c["identity"] == who && c["healthy"] == true)
            })
        })
    };
    let b = run(1, "b");
    wait_until(PATIENCE, "b is listed healthy", || listed("b"));
    std::thread::sleep(Duration::from_millis(50));
    let c = run(2, "c");
    wait_until(PATIENCE, "c is listed healthy", || listed("c"));
    let token = a.status()["fencing_token"].as_u64().expect("a's token");
    b.signal("STOP");
    std::fs::write(&flags[0], "").expect("make a sick");
    wait_until(PATIENCE, "a hands over to b", || {
        a.log().contains("handing over to=b")
    });
    wait_until(PATIENCE, "c leads", || c.is_leading());
    let a_terms = a
        .log()
        .lines()
        .filter(|l| l.contains("became leader"))
        .count();
    b.signal("CONT");
    assert_eq!(
        a_terms,
        1,
        "a, unhealthy, took the Lease back after the handoff to b expired:\n{}",
        a.log()
            .lines()
            .filter(|l| l.contains("became leader") || l.contains("handing over"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A greater token (the floor of every take is at least the Unix time,
    // so not necessarily token + 1).
    assert!(
        c.status()["fencing_token"]
            .as_u64()
            .is_some_and(|t| t > token),
        "a new term, by c"
    );
}

/// A Lease deleted and at once created again empty (`spec: {}`), as
/// `kubectl replace --force`, `helm upgrade --force` or a GitOps
/// `Replace=true` sync do to a Lease pre-created in a chart (a common way
/// to grant update by resourceName only): the leader may act until its
/// safe-until, so no candidate may take the new Lease before then. Only a
/// candidate that happened to look while the Lease was missing waits; one
/// that did not sees a free Lease and takes it at once.
#[test]
fn a_lease_replaced_by_an_empty_one_is_not_taken_under_a_leader_that_may_still_act() {
    let ns = control_plane().namespace("kr-replaced");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let name = "kr-replaced";
    let renew = Duration::from_millis(1200);
    let config = config(&ns, name, 2, 1200, 333);
    let h = start(&ns, &config, &kubeconfig, "h");
    wait_until(PATIENCE, "h leads", || h.is_leading());
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
    // Replaced: deleted and created again from a manifest with an empty spec.
    assert!(ns.delete_lease(name));
    ns.put_lease(name, json!({}));
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
        "f took the replaced Lease {:?} after h's last renewal, while h may lead for {renew:?} (token {:?} after h's {:?}):\n{}",
        taken.at.duration_since(renewed.at),
        taken.transitions(),
        renewed.transitions(),
        ns.dump_lease_writes(name)
    );
}

/// b found the Lease missing and was frozen; a took it, led and had it
/// deleted; b, thawed, finds it missing and takes it (through a
/// placeholder). Its term must have a greater fencing token than a's: a's
/// delayed writes carry a's token, and a fenced store accepts a token
/// equal to the highest it saw. (The watch's Deleted event carries a's
/// last Lease, with its token.)
#[test]
fn a_lease_created_after_a_deletion_never_reuses_a_fencing_token() {
    let ns = control_plane().namespace("kr-reuse");
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    let name = "kr-reuse";
    let config = config(&ns, name, 1, 600, 150);
    let b = start(&ns, &config, &kubeconfig, "b");
    wait_until(PATIENCE, "b finds the lease missing", || {
        b.log().contains("the lease does not exist")
    });
    let a = start(&ns, &config, &kubeconfig, "a");
    // b never reads a's Lease; thawed, its watch delivers a's term (Added,
    // Deleted with the last state), but nothing records the token.
    b.signal("STOP");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let a_token = a.status()["fencing_token"].as_u64().expect("a's token");
    a.signal("STOP");
    assert!(ns.delete_lease(name));
    b.signal("CONT");
    wait_until(PATIENCE, "b leads", || b.is_leading());
    let b_token = b.status()["fencing_token"].as_u64().expect("b's token");
    a.signal("CONT");
    assert!(
        b_token > a_token,
        "b's term has token {b_token}, a's had {a_token}"
    );
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
