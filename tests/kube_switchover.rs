//! Steering leadership on the Kubernetes Lease backend, against a real
//! kube-apiserver (tests/support/kube_real.rs), one fresh namespace per
//! test: candidates listed from their presence Leases, switchovers (named,
//! scheduled, cancelled, every answer code) sent to any candidate's daemon,
//! observers, the priority hold-back on a free Lease, the wait before a
//! Lease found deleted is taken again, and what a candidate at rest costs the API server
//! (counted in its audit log).

#[path = "support/kube_real.rs"]
mod kube_real;
#[path = "support/proxy.rs"]
mod proxy;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube_real::{Namespace, control_plane, event_rules, lease_rules, micro_time};
use proxy::Proxy;
use serde_json::{Value, json};
use support::*;

/// The ServiceAccount leaderd runs as.
const SA: &str = "leaderd";
/// The admin token every daemon here accepts.
const TOKEN: &str = "s3cret-token";
/// The label selecting an election's presence Leases.
const CANDIDATE_OF: &str = "leaderd.io/candidate-of";

#[derive(Clone, Copy)]
struct Timing {
    lease: Duration,
    renew: Duration,
    retry: Duration,
}

/// 1 s lease, retry about 1/6 of it.
const T1: Timing = Timing {
    lease: Duration::from_secs(1),
    renew: Duration::from_millis(600),
    retry: Duration::from_millis(150),
};

/// 2 s lease, retry about 1/6 of it.
const T2: Timing = Timing {
    lease: Duration::from_secs(2),
    renew: Duration::from_millis(1200),
    retry: Duration::from_millis(333),
};

/// One election in a fresh namespace: its config and what the daemons need.
struct Election {
    ns: Namespace,
    kubeconfig: PathBuf,
    name: String,
    config: String,
    _dir: tempfile::TempDir,
}

impl Election {
    fn new(test: &str, t: Timing, extra: &str) -> Election {
        let ns = control_plane().namespace(test);
        let kubeconfig = ns.account(SA, rules());
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("admin-token");
        fs::write(&token, format!("{TOKEN}\n")).expect("write token");
        let name = test.to_string();
        let config = format!(
            "election:\n  name: {name}\n  lease_duration: {}s\n  renew_deadline: {}ms\n  retry_period: {}ms\nbackend:\n  kubernetes:\n    namespace: {}\n    lease_name: {name}\nhttp:\n  listen: \"127.0.0.1:0\"\n  admin_token_file: {}\n{extra}",
            t.lease.as_secs(),
            t.renew.as_millis(),
            t.retry.as_millis(),
            ns.name(),
            token.display(),
        );
        Election {
            ns,
            kubeconfig,
            name,
            config,
            _dir: dir,
        }
    }

    fn start(&self, identity: &str) -> Leaderd {
        self.start_with(identity, &self.config, &self.kubeconfig, &[])
    }

    fn start_with(
        &self,
        identity: &str,
        config: &str,
        kubeconfig: &Path,
        args: &[&str],
    ) -> Leaderd {
        let mut builder = Leaderd::builder(config)
            .identity(identity)
            .env("POD_NAMESPACE", self.ns.name())
            .env("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path"));
        for arg in args {
            builder = builder.arg(arg);
        }
        builder.start()
    }

    /// Three candidates a, b, c; returns once one leads and every one is
    /// listed.
    fn start_three(&self) -> Vec<Leaderd> {
        let group: Vec<Leaderd> = ["a", "b", "c"].iter().map(|id| self.start(id)).collect();
        wait_for_leader(&group.iter().collect::<Vec<_>>(), PATIENCE);
        // Listed, and each sees the leader: a candidate that lost the race
        // for the placeholder learns the winner only after its own CAS
        // (preceded by a list of the presence Leases for the token floor)
        // fails.
        wait_until(
            PATIENCE,
            "every candidate is listed and sees the leader",
            || {
                group.iter().all(|d| {
                    d.try_status().is_some_and(|s| {
                        s["candidates"].as_array().is_some_and(|c| c.len() == 3)
                            && s["leader"].is_string()
                    })
                })
            },
        );
        group
    }

    fn presence_leases(&self) -> Vec<Value> {
        self.ns.leases(&format!("{CANDIDATE_OF}={}", self.name))
    }

    fn annotation(&self, key: &str) -> Option<String> {
        self.ns.lease_annotation(&self.name, key)
    }
}

/// What the Lease backend needs, and Events.
fn rules() -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    let mut rules = lease_rules();
    rules.extend(event_rules());
    rules
}

/// A request to /switchover with the token; (code, JSON body).
fn request(d: &Leaderd, method: &str, body: &str) -> (u16, Value) {
    let (code, text) = http_request_with(
        d.addr(),
        method,
        "/switchover",
        body,
        Some(&format!("Bearer {TOKEN}")),
        PATIENCE,
    )
    .unwrap_or_else(|e| panic!("{method} /switchover on {}: {e}", d.identity()));
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn switchover(d: &Leaderd, body: &str) -> (u16, Value) {
    request(d, "POST", body)
}

fn leader_of(d: &Leaderd) -> Option<String> {
    d.try_status()
        .and_then(|s| s["leader"].as_str().map(str::to_string))
}

fn by_name<'a>(group: &'a [Leaderd], name: &str) -> &'a Leaderd {
    group
        .iter()
        .find(|d| d.identity() == name)
        .unwrap_or_else(|| panic!("no candidate {name}"))
}

fn others(leader: &str) -> Vec<&'static str> {
    ["a", "b", "c"]
        .into_iter()
        .filter(|n| *n != leader)
        .collect()
}

fn token_of(d: &Leaderd) -> u64 {
    d.status()["fencing_token"]
        .as_u64()
        .unwrap_or_else(|| panic!("{} has no fencing token", d.identity()))
}

#[test]
fn candidates_are_listed_from_their_presence_leases_which_go_with_them() {
    let e = Election::new("ks-roster", T1, "");
    // A presence Lease of a candidate gone for an hour (a deleted pod):
    // the leader removes it.
    let hour_ago = micro_time(std::time::SystemTime::now() - Duration::from_secs(3600));
    e.ns.edit_lease("ks-roster-gone", |lease| {
        lease["metadata"]["labels"] = json!({CANDIDATE_OF: "ks-roster"});
        lease["metadata"]["annotations"] = json!({"leaderd.io/presence": "{\"identity\":\"gone\",\"version\":\"0\",\"healthy\":true,\"started_at\":\"2026-01-01T00:00:00Z\"}"});
        lease["spec"] = json!({"holderIdentity": "gone", "leaseDurationSeconds": 1, "renewTime": hour_ago});
    });
    let group = e.start_three();
    let follower = group.iter().find(|d| !d.is_leading()).expect("a follower");
    let status = follower.status();
    let leader = status["leader"].as_str().expect("a leader").to_string();
    let candidates = status["candidates"].as_array().expect("candidates");
    for c in candidates {
        assert_eq!(c["is_leader"], c["identity"] == leader.as_str(), "{c}");
        assert_eq!(c["healthy"], true, "{c}");
        assert_eq!(c["priority"], 0, "{c}");
        assert!(
            c["last_seen_ms"].as_u64().is_some_and(|ms| ms < 1000),
            "{c}"
        );
        assert!(
            c["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
            "{c}"
        );
    }
    assert_eq!(
        metric_sum(&group[2].metrics(), "leaderd_candidates", &[]),
        3.0
    );
    let shown = run_leaderd(&["status", "--url", group[0].addr()], PATIENCE);
    let text = String::from_utf8_lossy(&shown.stdout);
    for name in ["a", "b", "c"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{text}"
        );
    }

    // One presence Lease per candidate, as documented.
    wait_until(
        PATIENCE,
        "the dead candidate's presence lease is removed",
        || e.ns.lease("ks-roster-gone").is_none(),
    );
    let leases = e.presence_leases();
    assert_eq!(leases.len(), 3, "{leases:#?}");
    for lease in &leases {
        let holder = lease["spec"]["holderIdentity"].as_str().expect("holder");
        let name = lease["metadata"]["name"].as_str().expect("name");
        assert!(
            name.starts_with("ks-roster-") && name.len() == "ks-roster-".len() + 12,
            "{name}"
        );
        let presence: Value = serde_json::from_str(
            lease["metadata"]["annotations"]["leaderd.io/presence"]
                .as_str()
                .expect("presence annotation"),
        )
        .expect("presence JSON");
        assert_eq!(presence["identity"], holder, "{lease}");
        assert_eq!(presence["healthy"], true, "{lease}");
    }

    // A follower that stops takes its presence Lease with it, at once.
    let gone = group
        .iter()
        .find(|d| d.identity() != leader)
        .expect("a follower");
    gone.signal("TERM");
    assert_eq!(gone.wait_exit(PATIENCE), Some(0), "{}", gone.log());
    assert!(
        e.presence_leases()
            .iter()
            .all(|l| l["spec"]["holderIdentity"] != gone.identity()),
        "{} left its presence lease behind",
        gone.identity()
    );
    let still = by_name(&group, &leader);
    wait_until(PATIENCE, "the stopped candidate is not listed", || {
        still.try_status().is_some_and(|s| {
            s["candidates"]
                .as_array()
                .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["identity"] != gone.identity()))
        })
    });
    // And so does the leader.
    still.signal("TERM");
    assert_eq!(still.wait_exit(PATIENCE), Some(0), "{}", still.log());
    let left: Vec<Value> = e.presence_leases();
    assert_eq!(left.len(), 1, "{left:#?}");
}

#[test]
fn a_switchover_sent_to_a_follower_hands_over_to_the_named_candidate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reasons = dir.path().join("reasons");
    let e = Election::new(
        "ks-named",
        T1,
        &format!(
            "hooks:\n  stopped_leading: [\"sh\", \"-c\", \"echo $LEADERD_IDENTITY $LEADERD_REASON >> {}\"]\n  timeout: 1s\n",
            reasons.display()
        ),
    );
    let group = e.start_three();
    let old = leader_of(&group[0]).expect("a leader");
    let old_token = token_of(by_name(&group, &old));
    let (target, via) = {
        let rest = others(&old);
        (rest[0], by_name(&group, rest[1]))
    };

    let (code, body) = switchover(via, &format!("{{\"candidate\": \"{target}\"}}"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["leader"], target, "{body}");
    let new = by_name(&group, target);
    wait_until(PATIENCE, "the named candidate leads", || new.is_leading());
    assert!(token_of(new) > old_token);
    wait_until(
        PATIENCE,
        "stopped_leading ran with reason switchover",
        || fs::read_to_string(&reasons).is_ok_and(|r| r.contains(&format!("{old} switchover"))),
    );
    assert_eq!(
        metric_sum(
            &by_name(&group, &old).metrics(),
            "leaderd_leadership_lost_total",
            &[("reason", "switchover")]
        ),
        1.0
    );
    // The release carried the handoff and removed the switchover record in
    // one write; the named candidate cleared the handoff.
    let user = e.ns.user(SA);
    let release =
        e.ns.requests()
            .into_iter()
            .filter(|r| {
                r.user == user
                    && r.verb == "update"
                    && r.name == e.name
                    && r.stage == "ResponseComplete"
                    && r.code == 200
            })
            .filter_map(|r| r.request)
            .find(|sent| sent["metadata"]["annotations"]["leaderd.io/handoff"].is_string())
            .unwrap_or_else(|| {
                panic!(
                    "no release with a handoff:\n{}",
                    e.ns.dump_lease_writes(&e.name)
                )
            });
    let handoff: Value = serde_json::from_str(
        release["metadata"]["annotations"]["leaderd.io/handoff"]
            .as_str()
            .expect("text"),
    )
    .expect("handoff JSON");
    assert_eq!(
        (&handoff["to"], &handoff["from"], &handoff["reason"]),
        (&json!(target), &json!(old), &json!("switchover")),
        "{handoff}"
    );
    assert_eq!(handoff["token"], old_token, "{handoff}");
    assert_eq!(release["spec"]["holderIdentity"], "", "{release}");
    assert!(
        release["metadata"]["annotations"]["leaderd.io/switchover"].is_null(),
        "{release}"
    );
    assert_eq!(e.annotation("leaderd.io/handoff"), None);
    assert_eq!(e.annotation("leaderd.io/switchover"), None);
    let (code, body) = request(via, "GET", "");
    assert_eq!((code, &body["pending"]), (200, &Value::Null), "{body}");

    // How long a switchover takes here: from the request to the named
    // candidate leading, as the daemon that took the request saw it.
    let mut took = Vec::new();
    for _ in 0..8 {
        let leader = wait_for(PATIENCE, "a leader", || leader_of(&group[0]));
        let rest = others(&leader);
        let (target, via) = (rest[0], by_name(&group, rest[1]));
        let t0 = Instant::now();
        let (code, body) = switchover(via, &format!("{{\"candidate\": \"{target}\"}}"));
        took.push(t0.elapsed());
        assert_eq!((code, &body["leader"]), (200, &json!(target)), "{body}");
    }
    took.sort();
    eprintln!(
        "switchover, request to the named candidate leading: p50 {:?}, max {:?} ({} rounds)",
        took[took.len() / 2],
        took[took.len() - 1],
        took.len()
    );
}

#[test]
fn answer_codes_scheduled_and_cancelled_switchovers() {
    let e = Election::new("ks-codes", T1, "");
    let group = e.start_three();
    let leader = leader_of(&group[0]).expect("a leader");
    let d = &group[0];
    assert_eq!(switchover(d, "{\"candidate\": \"nobody\"}").0, 404);
    assert_eq!(
        switchover(d, &format!("{{\"candidate\": \"{leader}\"}}")).0,
        412
    );

    // Scheduled: 202, recorded on the Lease, visible through every daemon;
    // a second one conflicts; a cancel through another daemon removes it.
    let target = others(&leader)[0];
    let (code, body) = switchover(
        d,
        &format!(
            "{{\"candidate\": \"{target}\", \"scheduled_at\": \"2099-01-01T02:00:00+01:00\"}}"
        ),
    );
    assert_eq!(code, 202, "{body}");
    let recorded: Value =
        serde_json::from_str(&e.annotation("leaderd.io/switchover").expect("annotation"))
            .expect("switchover JSON");
    assert_eq!(recorded["candidate"], target, "{recorded}");
    assert_eq!(
        recorded["scheduled_at"], "2099-01-01T01:00:00Z",
        "{recorded}"
    );
    let (code, body) = request(&group[2], "GET", "");
    assert_eq!(code, 200);
    assert_eq!(body["pending"]["candidate"], target, "{body}");
    let (code, body) = switchover(&group[1], "{}");
    assert_eq!(code, 409, "{body}");
    assert_eq!(request(&group[2], "DELETE", "").0, 200);
    assert_eq!(e.annotation("leaderd.io/switchover"), None);
    assert_eq!(
        request(&group[2], "DELETE", "").0,
        404,
        "nothing left to cancel"
    );
    assert_eq!(leader_of(&group[1]).as_deref(), Some(leader.as_str()));

    // One due in a moment happens at its time.
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1500);
    let (code, body) = switchover(
        &group[1],
        &format!("{{\"candidate\": \"{target}\", \"scheduled_at\": \"{at}\"}}"),
    );
    assert_eq!(code, 202, "{body}");
    wait_until(PATIENCE, "the named candidate leads", || {
        by_name(&group, target).is_leading()
    });
    assert!(
        jiff::Timestamp::now() >= at,
        "handed over before the scheduled time"
    );
    wait_until(PATIENCE, "the switchover record is gone", || {
        e.annotation("leaderd.io/switchover").is_none()
    });
}

#[test]
fn an_observer_never_leads_and_sees_every_handover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook_log = dir.path().join("new-leader");
    let e = Election::new("ks-observe", T1, "");
    let observer_kubeconfig = e.ns.account("observer", rules());
    let observer_cfg = format!(
        "{}hooks:\n  new_leader: [\"sh\", \"-c\", \"echo $LEADERD_LEADER >> {}\"]\n",
        e.config,
        hook_log.display()
    );
    let o = e.start_with(
        "watcher",
        &observer_cfg,
        &observer_kubeconfig,
        &["--observe"],
    );
    // Nobody else stands: still it neither leads nor creates the Lease.
    std::thread::sleep(T1.lease * 2);
    let status = o.status();
    assert_eq!(status["is_leader"], false, "{status}");
    assert_eq!(status["observer"], true, "{status}");
    assert!(status["leader"].is_null(), "{status}");
    assert!(e.ns.lease(&e.name).is_none());
    assert_eq!(switchover(&o, "{}").0, 503, "nobody leads");

    let a = e.start("a");
    wait_until(PATIENCE, "the observer sees a lead", || {
        o.try_status().is_some_and(|s| s["leader"] == "a")
    });
    let b = e.start("b");
    wait_until(PATIENCE, "the observer lists a and b, not itself", || {
        o.try_status().is_some_and(|s| {
            s["candidates"].as_array().is_some_and(|c| {
                c.iter().map(|c| c["identity"].clone()).collect::<Vec<_>>()
                    == [json!("a"), json!("b")]
            })
        })
    });
    a.signal("TERM");
    assert_eq!(a.wait_exit(PATIENCE), Some(0));
    wait_until(PATIENCE, "the observer sees b lead", || {
        o.try_status().is_some_and(|s| s["leader"] == "b")
    });
    wait_until(
        PATIENCE,
        "new_leader ran for a and b on the observer",
        || fs::read_to_string(&hook_log).is_ok_and(|t| t.contains('a') && t.contains('b')),
    );
    assert_eq!(o.metric("leaderd_leadership_acquired_total"), 0.0);
    // It only ever read.
    let observer = e.ns.user("observer");
    let writes: Vec<String> =
        e.ns.requests()
            .into_iter()
            .filter(|r| r.user == observer && !matches!(r.verb.as_str(), "get" | "list" | "watch"))
            .map(|r| format!("{} {} {}", r.verb, r.resource, r.name))
            .collect();
    assert!(writes.is_empty(), "the observer wrote: {writes:?}");
    drop(b);
}

/// A free Lease is kept for a present, healthy candidate with a higher
/// priority. The preferred candidate reaches the API server 20 ms slower
/// than the other (a proxy), so without the hold-back the other would win
/// the race for the release.
#[test]
fn a_higher_priority_candidate_takes_the_free_lease() {
    let e = Election::new("ks-priority", T2, "");
    let proxy = Proxy::start(control_plane().port);
    let slow_kubeconfig = e.ns.kubeconfig(SA, Some(proxy.port()));
    let with_priority = |p: i64| {
        e.config.replace(
            "  retry_period:",
            &format!("  priority: {p}\n  retry_period:"),
        )
    };
    let a = e.start_with("a", &with_priority(0), &e.kubeconfig, &[]);
    wait_until(PATIENCE, "a leads", || a.is_leading());
    proxy.delay(Duration::from_millis(20));
    let b = e.start_with("b", &with_priority(0), &e.kubeconfig, &[]);
    let c = e.start_with("c", &with_priority(10), &slow_kubeconfig, &[]);
    wait_until(PATIENCE, "a lists b and c", || {
        a.try_status()
            .is_some_and(|s| s["candidates"].as_array().is_some_and(|c| c.len() == 3))
    });
    let listed = a.status()["candidates"].clone();
    assert!(
        listed.as_array().is_some_and(|l| l
            .iter()
            .any(|c| c["identity"] == "c" && c["priority"] == 10)),
        "{listed}"
    );
    let token = token_of(&a);
    a.signal("TERM");
    assert_eq!(a.wait_exit(PATIENCE), Some(0));
    let li = wait_for_leader(&[&b, &c], PATIENCE);
    assert_eq!(
        li,
        1,
        "b took the lease kept for c:\n{}",
        e.ns.dump_lease_writes(&e.name)
    );
    // A greater token (the floor of every take is at least the Unix
    // time, so not necessarily token + 1).
    assert!(token_of(&c) > token, "a new term, by c");
    assert!(!b.is_leading());
}

/// The Lease deleted while its leader is frozen just after a renewal (so
/// that it may act until its safe-until), and a candidate started right
/// after the deletion: the candidate must not create the Lease before the
/// frozen leader's term has surely ended.
#[test]
fn a_deleted_lease_is_not_taken_again_under_a_leader_that_may_still_act() {
    let e = Election::new("ks-deleted", T2, "");
    let a = e.start("a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let since = Instant::now();
    wait_until(PATIENCE, "a renews", || {
        e.ns.client_writes_since(&e.name, since)
            .iter()
            .any(|w| w.verb == "update" && w.holder() == "a")
    });
    a.signal("STOP");
    let renewed =
        e.ns.lease_writes(&e.name)
            .into_iter()
            .rfind(|w| !w.by_test && w.holder() == "a")
            .expect("a's last write");
    assert!(e.ns.delete_lease(&e.name));
    let c = e.start("c");
    wait_until(PATIENCE, "c takes the lease", || {
        e.ns.lease_holder(&e.name).is_some_and(|h| h == "c")
    });
    let created =
        e.ns.lease_writes(&e.name)
            .into_iter()
            .find(|w| !w.by_test && w.holder() == "c")
            .expect("c's first write");
    // a may act until its last renewal was sent + renew_deadline, before
    // the server finished that renewal + renew_deadline.
    assert!(
        created.at >= renewed.at + T2.renew,
        "c took the lease {:?} after a's last renewal, while a may lead for {:?}:\n{}",
        created.at.duration_since(renewed.at),
        T2.renew,
        e.ns.dump_lease_writes(&e.name)
    );
    a.signal("CONT");
    wait_until(PATIENCE, "a steps down", || {
        a.log().lines().any(|l| l.contains("stepped down"))
    });
    assert!(c.is_leading());
}

/// The same for a follower that was starved (frozen here) past the end of
/// the lease it last saw: when it runs again and finds the Lease deleted,
/// it must still wait.
#[test]
fn a_starved_follower_does_not_take_a_deleted_lease_at_once() {
    let e = Election::new("ks-starved", T2, "");
    let a = e.start("a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let b = e.start("b");
    wait_until(PATIENCE, "b follows a", || {
        b.try_status().is_some_and(|s| s["leader"] == "a")
    });
    b.signal("STOP");
    std::thread::sleep(T2.lease + T2.retry);
    let since = Instant::now();
    wait_until(PATIENCE, "a renews", || {
        e.ns.client_writes_since(&e.name, since)
            .iter()
            .any(|w| w.verb == "update" && w.holder() == "a")
    });
    a.signal("STOP");
    let renewed =
        e.ns.lease_writes(&e.name)
            .into_iter()
            .rfind(|w| !w.by_test && w.holder() == "a")
            .expect("a's last write");
    let token = renewed.transitions().expect("transitions") as u64;
    assert!(e.ns.delete_lease(&e.name));
    b.signal("CONT");
    wait_until(PATIENCE, "b takes the lease", || {
        e.ns.lease_holder(&e.name).is_some_and(|h| h == "b")
    });
    let created =
        e.ns.lease_writes(&e.name)
            .into_iter()
            .find(|w| !w.by_test && w.holder() == "b")
            .expect("b's first write");
    assert!(
        created.at >= renewed.at + T2.renew,
        "b took the lease {:?} after a's last renewal, while a may lead for {:?}:\n{}",
        created.at.duration_since(renewed.at),
        T2.renew,
        e.ns.dump_lease_writes(&e.name)
    );
    // b saw a's token: it counts on from there.
    assert!(
        created.transitions().is_some_and(|t| t as u64 > token),
        "{:?} after {token}",
        created.transitions()
    );
    a.signal("CONT");
}

/// A follower that found the Lease missing (a new election) and was then
/// starved (frozen here) while another candidate created the Lease, led
/// and had it deleted under it: when it runs again it finds the Lease
/// missing as before, but that says nothing about the time in between, so
/// it must wait a full lease from then, not from its first look.
#[test]
fn a_follower_starved_since_it_found_the_lease_missing_waits_again() {
    let e = Election::new("ks-neverseen", T2, "");
    let b = e.start("b");
    wait_until(PATIENCE, "b finds the lease missing", || {
        b.log().contains("the lease does not exist")
    });
    b.signal("STOP");
    let a = e.start("a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let since = Instant::now();
    wait_until(PATIENCE, "a renews", || {
        e.ns.client_writes_since(&e.name, since)
            .iter()
            .any(|w| w.verb == "update" && w.holder() == "a")
    });
    a.signal("STOP");
    let renewed =
        e.ns.lease_writes(&e.name)
            .into_iter()
            .rfind(|w| !w.by_test && w.holder() == "a")
            .expect("a's last write");
    assert!(e.ns.delete_lease(&e.name));
    b.signal("CONT");
    wait_until(PATIENCE, "b takes the lease", || {
        e.ns.lease_holder(&e.name).is_some_and(|h| h == "b")
    });
    let created =
        e.ns.lease_writes(&e.name)
            .into_iter()
            .find(|w| !w.by_test && w.holder() == "b")
            .expect("b's first write");
    assert!(
        created.at >= renewed.at + T2.renew,
        "b took the lease {:?} after a's last renewal, while a may lead for {:?}:\n{}",
        created.at.duration_since(renewed.at),
        T2.renew,
        e.ns.dump_lease_writes(&e.name)
    );
    a.signal("CONT");
}

/// What one candidate at rest costs the API server, counted in the audit
/// log: each daemon runs as a ServiceAccount of its own, nothing asks for
/// the candidates meanwhile (no /status, no /metrics), and the window
/// starts once everything settled.
#[test]
fn a_candidate_at_rest_costs_at_most_two_requests_per_retry_period() {
    let e = Election::new("ks-cost", T2, "");
    let mut daemons = Vec::new();
    for (identity, args) in [
        ("lead", &[][..]),
        ("follow", &[][..]),
        ("look", &["--observe"][..]),
    ] {
        let kubeconfig = e.ns.account(identity, rules());
        if identity == "lead" {
            let d = e.start_with(identity, &e.config, &kubeconfig, args);
            wait_until(PATIENCE, "lead leads", || {
                e.ns.lease_holder(&e.name).is_some_and(|h| h == "lead")
            });
            daemons.push(d);
        } else {
            daemons.push(e.start_with(identity, &e.config, &kubeconfig, args));
        }
    }
    wait_until(PATIENCE, "both candidates announce themselves", || {
        e.presence_leases().len() == 2
    });
    std::thread::sleep(T2.lease);
    let from = Instant::now();
    let periods = 30;
    std::thread::sleep(T2.retry * periods);
    let to = Instant::now();
    let requests = e.ns.requests();
    for identity in ["lead", "follow", "look"] {
        let user = e.ns.user(identity);
        let mine: Vec<_> = requests
            .iter()
            .filter(|r| r.user == user && r.at >= from && r.at < to)
            .filter(|r| {
                // One line per request: its end, or a watch's start.
                (r.verb != "watch" && r.stage == "ResponseComplete")
                    || (r.verb == "watch" && r.stage == "ResponseStarted")
            })
            .collect();
        let per_period = mine.len() as f64 / f64::from(periods);
        let mut verbs = std::collections::BTreeMap::<String, usize>::new();
        for r in &mine {
            let object = if r.name == e.name {
                "lease"
            } else {
                "presence"
            };
            *verbs.entry(format!("{} {object}", r.verb)).or_default() += 1;
        }
        eprintln!(
            "{identity}: {per_period:.2} requests per retry_period ({verbs:?} in {periods} periods)"
        );
        // Per period: one look (or renewal), plus for a candidate one
        // presence refresh or listing at most; one more at each edge of the
        // window.
        let bound = if identity == "look" {
            periods + 1
        } else {
            2 * periods + 2
        };
        assert!(
            mine.len() <= bound as usize,
            "{identity}: {} requests in {periods} retry periods: {verbs:?}",
            mine.len()
        );
        assert!(!mine.is_empty(), "{identity} did nothing?");
    }
    assert_eq!(e.ns.lease_holder(&e.name).as_deref(), Some("lead"));
}

/// A switchover names a candidate that dies before it is due: the released
/// Lease is kept for it for one lease (the handoff annotation), then
/// anyone may take it.
#[test]
fn a_named_candidate_that_died_is_replaced_by_anyone_after_the_window() {
    let e = Election::new("ks-deadtarget", T2, "");
    let group = e.start_three();
    let leader = leader_of(&group[0]).expect("a leader");
    let rest = others(&leader);
    let (target, third) = (rest[0], rest[1]);
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(500);
    let (code, body) = switchover(
        by_name(&group, third),
        &format!("{{\"candidate\": \"{target}\", \"scheduled_at\": \"{at}\"}}"),
    );
    assert_eq!(code, 202, "{body}");
    // Killed, so its presence Lease stays and still counts as present
    // when the switchover is due.
    by_name(&group, target).kill();
    wait_until(PATIENCE, "the old leader handed over", || {
        by_name(&group, &leader)
            .log()
            .contains("reason=\"switchover\"")
    });
    wait_until(
        PATIENCE,
        "the release reserved the lease for the dead one",
        || {
            e.annotation("leaderd.io/handoff")
                .is_some_and(|h| h.contains(&format!("\"to\":\"{target}\"")))
        },
    );
    wait_until(PATIENCE, "another candidate leads", || {
        [leader.as_str(), third]
            .iter()
            .any(|n| by_name(&group, n).is_leading())
    });
    assert_eq!(
        e.annotation("leaderd.io/handoff"),
        None,
        "cleared by the taker"
    );
}

/// A probe that fails while `flag` exists.
fn probe_failing_while(flag: &Path) -> String {
    format!(
        "health:\n  exec: [\"sh\", \"-c\", \"test ! -e {}\"]\n  period: 100ms\n  timeout: 100ms\n  failure_threshold: 2\n  success_threshold: 1\n",
        flag.display()
    )
}

/// An unhealthy leader hands over to the healthy candidate its renewals
/// list; an unhealthy follower is listed so and is passed over.
#[test]
fn an_unhealthy_leader_hands_over_to_a_healthy_candidate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Election::new("ks-sick", T1, "");
    let flags = ["a", "b", "c"].map(|n| dir.path().join(format!("{n}-sick")));
    // c is unhealthy from the start: never the one handed over to.
    fs::write(&flags[2], "").expect("make c sick");
    let start = |i: usize, name: &str| {
        let config = format!("{}{}", e.config, probe_failing_while(&flags[i]));
        e.start_with(name, &config, &e.kubeconfig, &[])
    };
    let a = start(0, "a");
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let c = start(2, "c");
    let b = start(1, "b");
    wait_until(PATIENCE, "b is listed healthy and c unhealthy", || {
        a.try_status().is_some_and(|s| {
            s["candidates"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|c| c["identity"] == "b" && c["healthy"] == true)
                    && l.iter()
                        .any(|c| c["identity"] == "c" && c["healthy"] == false)
            })
        })
    });
    let token = token_of(&a);
    fs::write(&flags[0], "").expect("make a sick");
    wait_until(PATIENCE, "b leads", || b.is_leading());
    assert!(!a.is_leading());
    assert!(!c.is_leading());
    // A greater token (the floor of every take is at least the Unix
    // time, so not necessarily token + 1).
    assert!(token_of(&b) > token, "a new term, by b");
    assert_eq!(
        metric_sum(
            &a.metrics(),
            "leaderd_leadership_lost_total",
            &[("reason", "unhealthy")]
        ),
        1.0
    );
    // a is listed unhealthy (standing aside) by the new leader.
    wait_until(PATIENCE, "b lists a as not healthy", || {
        b.try_status().is_some_and(|s| {
            s["candidates"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|c| c["identity"] == "a" && c["healthy"] == false)
            })
        })
    });
}

/// With `preempt`, a leader hands over to a healthy candidate with a
/// higher priority once it has seen it stand (in the presence Leases it
/// lists) for `preempt_delay`.
#[test]
fn with_preempt_the_preferred_candidate_takes_over_after_the_delay() {
    let e = Election::new("ks-preempt", T1, "");
    let low = e.config.replace(
        "  retry_period:",
        "  preempt: true\n  preempt_delay: 1s\n  retry_period:",
    );
    let high = low.replace("  preempt: true\n", "  preempt: true\n  priority: 5\n");
    let a = e.start_with("a", &low, &e.kubeconfig, &[]);
    wait_until(PATIENCE, "a leads", || a.is_leading());
    let token = token_of(&a);
    let b = e.start_with("b", &high, &e.kubeconfig, &[]);
    wait_until(PATIENCE, "b takes over", || b.is_leading());
    // A greater token (the floor of every take is at least the Unix
    // time, so not necessarily token + 1).
    assert!(token_of(&b) > token, "a new term, by b");
    assert_eq!(
        metric_sum(
            &a.metrics(),
            "leaderd_leadership_lost_total",
            &[("reason", "preempted")]
        ),
        1.0
    );
    // And it stays there.
    std::thread::sleep(T1.lease * 2);
    assert!(b.is_leading());
}
