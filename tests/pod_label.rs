//! The Kubernetes pod label that follows leadership, against a real
//! kube-apiserver (tests/support/kube_real.rs) and real Pods (no kubelet:
//! they stay Pending, which is all a label needs). The election itself uses
//! a private `redis-server`. Each candidate runs as ServiceAccount `leaderd`
//! with a Role and gets POD_NAME / POD_NAMESPACE like the downward API
//! would; what it wrote, and when, is read from the API server's audit log.

#[path = "support/kube_real.rs"]
mod kube_real;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube_real::{Namespace, PodWrite, control_plane, event_rules, pod_rules, rule};
use support::*;

const KEY: &str = "leaderd.io/role";
const ANNOTATION: &str = "leaderd.io/fencing-token";
const SA: &str = "leaderd";

/// A fresh namespace where ServiceAccount `leaderd` may do what the pod
/// label does (and record Events); its kubeconfig.
fn setup(test: &str) -> (Namespace, PathBuf) {
    let ns = control_plane().namespace(test);
    let mut rules = pod_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    (ns, kubeconfig)
}

/// Election config plus `pod_label` (selector `app=demo`).
fn label_cfg(name: &str, redis_url: &str, follower: &str, extra: &str) -> String {
    format!(
        "{}pod_label:\n  key: {KEY}\n  leader_value: leader\n  follower_value: \"{follower}\"\n  selector: \"app=demo\"\n  annotation: \"{ANNOTATION}\"\n{extra}",
        config(name, redis_url)
    )
}

/// A candidate running in pod `pod` (identity = pod name).
fn start_in_pod(cfg: &str, pod: &str, ns: &Namespace, kubeconfig: &Path) -> Leaderd {
    Leaderd::builder(cfg)
        .identity(pod)
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", ns.name())
        .env("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path"))
        .start()
}

fn demo_pods(ns: &Namespace, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("pod-{i}");
            ns.create_pod(&name, &[("app", "demo")]);
            name
        })
        .collect()
}

/// Candidate pods (app=demo) currently labelled leader: what a Service
/// with selector `app=demo, leaderd.io/role=leader` selects.
fn leader_pods(ns: &Namespace) -> Vec<String> {
    ns.select_pods(&format!("app=demo,{KEY}=leader"))
}

fn token_of(d: &Leaderd) -> u64 {
    let st = d.status();
    st["fencing_token"]
        .as_u64()
        .unwrap_or_else(|| panic!("{} has no fencing_token: {st}", d.identity()))
}

fn label_updates(d: &Leaderd, result: &str) -> f64 {
    metric_sum(
        &d.metrics(),
        "leaderd_pod_label_updates_total",
        &[("result", result)],
    )
}

fn ns_since_epoch(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .expect("after epoch")
        .as_nanos()
}

/// Nothing leaderd sent was refused (4xx). A 5xx can only be the server's
/// record of a request whose client went away (an Event sent as leaderd
/// exits: the server answers 504 "context canceled" to nobody).
fn assert_clean_requests(ns: &Namespace) {
    let user = ns.user(SA);
    for r in ns.requests().iter().filter(|r| r.user == user) {
        assert!(
            !(400..500).contains(&r.code),
            "request refused: {r:?}\n{}",
            ns.dump()
        );
    }
}

/// A hook script appending `EVENT IDENTITY NANOS` to `file`; YAML argv.
fn stamp_hook(dir: &Path, file: &Path) -> String {
    let script = dir.join("stamp.sh");
    fs::write(
        &script,
        format!(
            "echo \"$LEADERD_EVENT $LEADERD_IDENTITY $(date +%s%N)\" >> '{}'\n",
            file.display()
        ),
    )
    .expect("write hook");
    format!("[\"sh\", \"{}\"]", script.display())
}

/// `(event, identity, ns)` lines written by [`stamp_hook`].
fn stamps(file: &Path) -> Vec<(String, String, u128)> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split(' ');
            Some((
                it.next()?.to_string(),
                it.next()?.to_string(),
                it.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// The Events leaderd recorded on Pod `pod` (`reason: LeaderLabel`).
fn label_events(ns: &Namespace, pod: &str) -> Vec<String> {
    ns.events_for("Pod", pod, "LeaderLabel")
        .into_iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn pod_labels_follow_leadership_and_annotation_holds_the_token() {
    let (ns, kubeconfig) = setup("pl-follow");
    let pods = demo_pods(&ns, 3);
    ns.create_pod("other", &[("app", "other"), (KEY, "leader")]);
    let other_before = ns.pod("other").expect("other pod");
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let stamps_file = dir.path().join("stamps");
    let hook = stamp_hook(dir.path(), &stamps_file);
    let cfg = label_cfg(
        "podlabel",
        &redis.url(),
        "follower",
        &format!(
            "hooks:\n  started_leading: {hook}\n  stopped_leading: {hook}\n  timeout: 250ms\n"
        ),
    );
    let c: Vec<Leaderd> = pods
        .iter()
        .map(|p| start_in_pod(&cfg, p, &ns, &kubeconfig))
        .collect();
    let all: Vec<&Leaderd> = c.iter().collect();
    let l = wait_for_leader(&all, PATIENCE);
    let tl = token_of(&c[l]);

    let settled = |leader: usize, token: u64| {
        (0..pods.len()).all(|i| {
            let want = if i == leader { "leader" } else { "follower" };
            ns.label(&pods[i], KEY).as_deref() == Some(want)
        }) && ns.annotation(&pods[leader], ANNOTATION) == Some(token.to_string())
    };
    wait_until(
        PATIENCE,
        "labels: one leader, two followers, token annotation",
        || settled(l, tl),
    );
    // A Service selecting `app=demo, leaderd.io/role=leader` selects exactly
    // the leader's pod.
    assert_eq!(leader_pods(&ns), vec![pods[l].clone()]);

    // At start each candidate labelled its own pod follower, first.
    let writes: Vec<PodWrite> = ns.pod_writes().into_iter().filter(|w| !w.by_test).collect();
    for p in &pods {
        let first = writes
            .iter()
            .find(|w| w.name == *p)
            .unwrap_or_else(|| panic!("no write to {p}"));
        assert_eq!(
            first.label(KEY),
            Some("follower"),
            "first write to {p} (leader is {}): {first:?}",
            pods[l]
        );
    }
    // Gain: label before the started_leading hook.
    let promoted = writes
        .iter()
        .find(|w| w.name == pods[l] && w.label(KEY) == Some("leader"))
        .expect("promotion write");
    let started = wait_for(PATIENCE, "started_leading hook ran", || {
        stamps(&stamps_file)
            .into_iter()
            .find(|(e, who, _)| e == "started_leading" && *who == pods[l])
    });
    assert!(
        ns_since_epoch(promoted.wall) < started.2,
        "started_leading ran before the pod was labelled leader"
    );
    // An Event on the leader's pod says so (none at start for followers).
    let events = wait_for(PATIENCE, "an Event on the leader's pod", || {
        let events = label_events(&ns, &pods[l]);
        (!events.is_empty()).then_some(events)
    });
    assert_eq!(
        events,
        vec![format!("labelled {KEY}=leader (fencing token {tl})")]
    );
    for (i, p) in pods.iter().enumerate() {
        if i != l {
            assert!(label_events(&ns, p).is_empty(), "{p}: {:?}", ns.events());
        }
    }
    // Pods outside the selector are never touched.
    assert_eq!(ns.pod("other"), Some(other_before.clone()));
    assert_clean_requests(&ns);

    // Graceful handover.
    c[l].signal("TERM");
    let mut polls_with_two = 0;
    let deadline = Instant::now() + PATIENCE;
    let (n, tn) = loop {
        if leader_pods(&ns).len() > 1 {
            polls_with_two += 1;
        }
        let others: Vec<&Leaderd> = c
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != l)
            .map(|(_, d)| d)
            .collect();
        if let Some(j) = sole_leader(&others) {
            let n = c.iter().position(|d| d.identity() == others[j].identity());
            let n = n.expect("known candidate");
            if let Some(t) = c[n].try_status().and_then(|s| s["fencing_token"].as_u64())
                && settled(n, t)
            {
                break (n, t);
            }
        }
        assert!(
            Instant::now() < deadline,
            "labels did not settle after the handover: {:?}\n{}",
            pods.iter().map(|p| (p, ns.labels(p))).collect::<Vec<_>>(),
            ns.dump()
        );
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(c[l].wait_exit(PATIENCE), Some(0));
    eprintln!(
        "handover {} -> {}: {polls_with_two} poll(s) saw two leader labels",
        pods[l], pods[n]
    );
    assert!(tn > tl);
    assert_eq!(
        ns.label(&pods[l], KEY).as_deref(),
        Some("follower"),
        "old leader's pod"
    );
    for _ in 0..20 {
        assert_eq!(leader_pods(&ns), vec![pods[n].clone()]);
        thread::sleep(Duration::from_millis(25));
    }
    // Loss: the old leader's label went to follower before its
    // stopped_leading hook ran.
    let demoted = ns
        .pod_writes()
        .into_iter()
        .rfind(|w| w.name == pods[l] && w.label(KEY) == Some("follower"))
        .expect("demotion write");
    let stopped = stamps(&stamps_file)
        .into_iter()
        .find(|(e, who, _)| e == "stopped_leading" && *who == pods[l])
        .expect("stopped_leading ran on shutdown");
    assert!(
        ns_since_epoch(demoted.wall) < stopped.2,
        "stopped_leading ran before the pod label was demoted"
    );
    // The new leader's gain has its Event too. (The old leader's loss
    // Event is sent as it exits: best effort, not checked here; the loss
    // test below checks it.)
    wait_until(PATIENCE, "an Event for the gain", || {
        !label_events(&ns, &pods[n]).is_empty()
    });
    assert_eq!(
        label_events(&ns, &pods[n]),
        vec![format!("labelled {KEY}=leader (fencing token {tn})")]
    );
    let event = &ns.events_for("Pod", &pods[n], "LeaderLabel")[0];
    assert_eq!(event["source"]["component"], "leaderd", "{event}");
    assert_eq!(event["involvedObject"]["apiVersion"], "v1", "{event}");
    assert_eq!(
        event["involvedObject"]["uid"],
        ns.pod(&pods[n]).expect("pod")["metadata"]["uid"],
        "{event}"
    );
    assert_eq!(ns.pod("other"), Some(other_before));
    assert_clean_requests(&ns);
}

#[test]
fn loss_demotes_the_label_before_the_leader_process_is_stopped() {
    let (ns, kubeconfig) = setup("pl-loss");
    ns.create_pod("pod-0", &[("app", "demo")]);
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("stamps");
    let script = dir.path().join("proc.sh");
    // Stamps start and TERM; ends by itself once leaderd is gone.
    fs::write(
        &script,
        format!(
            "stamp() {{ echo \"$1 $LEADERD_IDENTITY $(date +%s%N)\" >> '{f}'; }}\ntrap 'stamp term; exit 0' TERM\nstamp start\nwhile kill -0 $PPID 2>/dev/null; do sleep 0.05; done\n",
            f = file.display()
        ),
    )
    .expect("write leader process");
    let cfg = label_cfg(
        "labelloss",
        &redis.url(),
        "follower",
        &format!(
            "leader_process:\n  command: [\"sh\", \"{}\"]\n  grace_period: 100ms\n",
            script.display()
        ),
    );
    let a = start_in_pod(&cfg, "pod-0", &ns, &kubeconfig);
    wait_until(PATIENCE, "pod-0 leads", || a.is_leading());
    let start = wait_for(PATIENCE, "the leader process started", || {
        stamps(&file).into_iter().find(|(e, _, _)| e == "start")
    });
    let promoted = ns
        .pod_writes()
        .into_iter()
        .find(|w| !w.by_test && w.label(KEY) == Some("leader"))
        .expect("pod-0 labelled leader");
    assert!(
        ns_since_epoch(promoted.wall) < start.2,
        "the leader process started before the pod was labelled leader"
    );
    let r0 = renewals_ok(&a.metrics());
    wait_until(PATIENCE, "a renewal", || renewals_ok(&a.metrics()) > r0);

    let frozen = SystemTime::now();
    redis.freeze();
    let term = wait_for(PATIENCE, "the leader process got TERM", || {
        stamps(&file).into_iter().find(|(e, _, _)| e == "term")
    });
    let demoted = wait_for(PATIENCE, "pod-0 labelled follower", || {
        ns.pod_writes().into_iter().rfind(|w| {
            w.label(KEY) == Some("follower") && w.resource_version > promoted.resource_version
        })
    });
    let ms = |ns: u128| (ns.saturating_sub(ns_since_epoch(frozen))) / 1_000_000;
    eprintln!(
        "after the freeze: label follower at {}ms, TERM at {}ms",
        ms(ns_since_epoch(demoted.wall)),
        ms(term.2)
    );
    assert!(
        ns_since_epoch(demoted.wall) < term.2,
        "the leader process got TERM before the pod label was demoted"
    );
    assert!(
        ms(ns_since_epoch(demoted.wall)) < LEASE.as_millis(),
        "label still leader when the lease may have expired"
    );
    let token = ns
        .annotation("pod-0", ANNOTATION)
        .expect("token annotation");
    wait_until(PATIENCE, "Events for the gain and the loss", || {
        label_events(&ns, "pod-0")
            == vec![
                format!("labelled {KEY}=leader (fencing token {token})"),
                format!("labelled {KEY}=follower"),
            ]
    });
}

/// A crashed leader's pod keeps its leader label (nobody is left to remove
/// it): the next leader demotes it, after labelling itself, with a patch
/// that carries the resourceVersion it listed (a compare-and-swap), and
/// says so in an Event on that pod.
#[test]
fn stale_leader_label_of_a_crashed_candidate_is_demoted_on_gain() {
    let (ns, kubeconfig) = setup("pl-stale");
    ns.create_pod("pod-0", &[("app", "demo"), (KEY, "leader")]);
    ns.create_pod("pod-1", &[("app", "demo")]);
    ns.create_pod("pod-2", &[("app", "demo")]);
    ns.create_pod("other", &[("app", "other"), (KEY, "leader")]);
    let redis = RedisServer::start();
    let cfg = label_cfg("stale", &redis.url(), "follower", "");
    let c = [
        start_in_pod(&cfg, "pod-1", &ns, &kubeconfig),
        start_in_pod(&cfg, "pod-2", &ns, &kubeconfig),
    ];
    let all: Vec<&Leaderd> = c.iter().collect();
    let l = wait_for_leader(&all, PATIENCE);
    let leader_pod = c[l].identity().to_string();
    wait_until(PATIENCE, "the stale label is demoted", || {
        ns.label("pod-0", KEY).as_deref() == Some("follower")
            && leader_pods(&ns) == vec![leader_pod.clone()]
    });
    assert_eq!(
        ns.label("other", KEY).as_deref(),
        Some("leader"),
        "a pod outside the selector was demoted"
    );
    let user = ns.user(SA);
    let listed = ns.requests().iter().any(|r| {
        r.user == user
            && r.verb == "list"
            && r.uri.contains("labelSelector=")
            && r.uri.contains("app")
    });
    assert!(listed, "no LIST with a label selector:\n{}", ns.dump());
    // Own label first, then the others (contract order on gain).
    let writes = ns.pod_writes();
    let promoted = writes
        .iter()
        .position(|w| w.name == leader_pod && w.label(KEY) == Some("leader"))
        .expect("promotion");
    let demoted = writes
        .iter()
        .position(|w| w.name == "pod-0" && w.label(KEY) == Some("follower"))
        .expect("demotion");
    assert!(
        demoted > promoted,
        "stale label demoted before own promotion"
    );
    // The demotion was conditional on the resourceVersion listed.
    let created_rv = writes
        .iter()
        .find(|w| w.name == "pod-0" && w.verb == "create")
        .expect("pod-0 created")
        .resource_version;
    let sent = writes[demoted].sent.clone().expect("patch body audited");
    assert_eq!(
        sent["metadata"]["resourceVersion"],
        created_rv.to_string(),
        "the demotion must carry the listed resourceVersion: {sent}"
    );
    wait_until(PATIENCE, "an Event on the demoted pod", || {
        label_events(&ns, "pod-0")
            == vec![format!(
                "demoted a stale leader label ({leader_pod} is the leader now)"
            )]
    });
    assert_clean_requests(&ns);
}

/// The demotion of a stale leader label is a compare-and-swap on the
/// resourceVersion the leader listed: the real API server refuses a merge
/// patch with a stale one (409), and a demotion that failed is retried
/// with a fresh LIST, so it never acts on what it saw before a change.
#[test]
fn stale_label_demotion_uses_the_resource_version_it_listed() {
    let (ns, kubeconfig) = setup("pl-cas");
    ns.create_pod("pod-0", &[("app", "demo")]);
    let created = ns.create_pod("stale", &[("app", "demo"), (KEY, "leader")]);
    // What makes the patch a compare-and-swap, on this API server.
    let listed_rv = created["metadata"]["resourceVersion"].clone();
    ns.set_labels("stale", &[("touched", Some("before"))]);
    let refused = ns.try_merge_patch_pod(
        "stale",
        serde_json::json!({"metadata": {"resourceVersion": listed_rv, "labels": {KEY: "follower"}}}),
    );
    assert_eq!(
        refused.err(),
        Some(409),
        "a stale resourceVersion must be refused"
    );
    let redis = RedisServer::start();
    let cfg = label_cfg("cas", &redis.url(), "follower", "");
    // Slow the leader down between its LIST and its PATCH: the Role lacks
    // `patch` for a moment, so the demotion fails and is retried; the test
    // relabels `stale` meanwhile (a new resourceVersion).
    ns.set_role(
        SA,
        vec![
            rule("", "pods", &["list"], &[]),
            rule("", "pods", &["patch"], &["pod-0"]),
            rule("", "events", &["create"], &[]),
        ],
    );
    ns.wait_authorized(SA, "patch", "", "pods", false);
    let a = start_in_pod(&cfg, "pod-0", &ns, &kubeconfig);
    wait_until(PATIENCE, "pod-0 leads and is labelled", || {
        a.is_leading() && ns.label("pod-0", KEY).as_deref() == Some("leader")
    });
    wait_until(PATIENCE, "the demotion of stale is refused (403)", || {
        label_updates(&a, "forbidden") >= 1.0
    });
    // Another writer changes `stale` (it stays labelled leader).
    ns.set_labels("stale", &[("touched", Some("yes"))]);
    let mut rules = pod_rules();
    rules.extend(event_rules());
    ns.set_role(SA, rules);
    wait_until(PATIENCE, "stale demoted after the retry", || {
        ns.label("stale", KEY).as_deref() == Some("follower")
    });
    assert_eq!(ns.label("stale", "touched").as_deref(), Some("yes"));
    // The retry listed again and sent the current resourceVersion.
    let writes = ns.pod_writes();
    let touched = writes
        .iter()
        .rfind(|w| w.name == "stale" && w.by_test)
        .expect("the test's write");
    let demotion = writes
        .iter()
        .rfind(|w| w.name == "stale" && !w.by_test)
        .expect("the demotion");
    assert_eq!(
        demotion.sent.as_ref().expect("sent")["metadata"]["resourceVersion"],
        touched.resource_version.to_string()
    );
}

#[test]
fn empty_follower_value_removes_the_label() {
    let (ns, kubeconfig) = setup("pl-nofollower");
    for p in ["pod-0", "pod-1"] {
        ns.create_pod(p, &[("app", "demo"), (KEY, "follower")]);
    }
    let redis = RedisServer::start();
    let cfg = label_cfg("nofollower", &redis.url(), "", "");
    let c = [
        start_in_pod(&cfg, "pod-0", &ns, &kubeconfig),
        start_in_pod(&cfg, "pod-1", &ns, &kubeconfig),
    ];
    let all: Vec<&Leaderd> = c.iter().collect();
    let l = wait_for_leader(&all, PATIENCE);
    let f = 1 - l;
    let (lp, fp) = (c[l].identity(), c[f].identity());
    wait_until(
        PATIENCE,
        "leader labelled, follower's label removed",
        || ns.label(lp, KEY).as_deref() == Some("leader") && !ns.labels(fp).contains_key(KEY),
    );
    assert_eq!(
        ns.label(fp, "app").as_deref(),
        Some("demo"),
        "other labels kept"
    );
    let user = ns.user(SA);
    assert!(
        ns.requests().iter().any(|r| r.user == user
            && r.verb == "patch"
            && r.request
                .as_ref()
                .is_some_and(|b| b["metadata"]["labels"][KEY].is_null())),
        "no merge patch deleting the label:\n{}",
        ns.dump()
    );

    c[l].signal("TERM");
    assert_eq!(c[l].wait_exit(PATIENCE), Some(0));
    wait_until(PATIENCE, "the other candidate leads", || c[f].is_leading());
    wait_until(PATIENCE, "labels after handover", || {
        ns.label(fp, KEY).as_deref() == Some("leader") && !ns.labels(lp).contains_key(KEY)
    });
    assert_clean_requests(&ns);
}

/// A real 403 (the Role lacks `patch`): counted, logged naming verb,
/// resource and namespace, and the election goes on.
#[test]
fn forbidden_patch_is_counted_and_logged_and_election_goes_on() {
    let (ns, kubeconfig) = setup("pl-forbidden");
    ns.create_pod("pod-0", &[("app", "demo")]);
    ns.set_role(
        SA,
        vec![
            rule("", "pods", &["list"], &[]),
            rule("", "events", &["create"], &[]),
        ],
    );
    ns.wait_authorized(SA, "patch", "", "pods", false);
    let redis = RedisServer::start();
    let cfg = label_cfg("forbidden", &redis.url(), "follower", "");
    let a = start_in_pod(&cfg, "pod-0", &ns, &kubeconfig);
    wait_until(PATIENCE, "pod-0 leads", || a.is_leading());
    wait_until(PATIENCE, "a 403 is counted as forbidden", || {
        label_updates(&a, "forbidden") >= 1.0
    });
    let log = a.log();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("patch")
            && l.contains("pods")
            && l.contains(ns.name())),
        "no error line naming verb (patch), resource (pods) and namespace ({}):\n{log}",
        ns.name()
    );
    // Two more leases of 403s, and the term goes on (counted, not probed:
    // a probe that times out on a busy machine says nothing about the term).
    std::thread::sleep(LEASE * 2);
    assert_eq!(
        a.metric("leaderd_leadership_lost_total"),
        0.0,
        "a forbidden label update cost the leadership"
    );
    assert!(a.is_leading() || a.leader_code().is_none());
    assert_eq!(ns.labels("pod-0").get(KEY), None);

    // Permission granted: the retries get through.
    let mut rules = pod_rules();
    rules.extend(event_rules());
    ns.set_role(SA, rules);
    let allowed = Instant::now();
    let deadline = allowed + PATIENCE;
    while ns.label("pod-0", KEY).as_deref() != Some("leader") {
        assert!(
            Instant::now() < deadline,
            "label not set {PATIENCE:?} after patch was allowed again; requests:\n{}",
            ns.dump()
        );
        thread::sleep(Duration::from_millis(15));
    }
    eprintln!("label set {:?} after patch was allowed", allowed.elapsed());
    wait_until(PATIENCE, "ok counted", || label_updates(&a, "ok") >= 1.0);
}

#[test]
fn loss_while_label_updates_are_being_retried_still_demotes_the_label() {
    // LIST is forbidden: on gain our own label is set, then demoting stale
    // labels fails and is retried with backoff. A loss during that backoff
    // must still bring our own label to follower.
    let (ns, kubeconfig) = setup("pl-retryloss");
    ns.create_pod("pod-0", &[("app", "demo")]);
    ns.set_role(
        SA,
        vec![
            rule("", "pods", &["patch"], &[]),
            rule("", "events", &["create"], &[]),
        ],
    );
    ns.wait_authorized(SA, "list", "", "pods", false);
    let redis = RedisServer::start();
    let cfg = label_cfg("retryloss", &redis.url(), "follower", "");
    let a = start_in_pod(&cfg, "pod-0", &ns, &kubeconfig);
    wait_until(PATIENCE, "pod-0 leads", || a.is_leading());
    wait_until(PATIENCE, "pod-0 labelled leader", || {
        ns.label("pod-0", KEY).as_deref() == Some("leader")
    });
    wait_until(PATIENCE, "the forbidden LIST is counted", || {
        label_updates(&a, "forbidden") >= 1.0
    });
    let r0 = renewals_ok(&a.metrics());
    wait_until(PATIENCE, "a renewal", || renewals_ok(&a.metrics()) > r0);

    let frozen = Instant::now();
    redis.freeze();
    wait_until(PATIENCE, "pod-0 steps down", || {
        a.leader_code() == Some(503)
    });
    let deadline = frozen + LEASE * 2;
    while ns.label("pod-0", KEY).as_deref() != Some("follower") {
        assert!(
            Instant::now() < deadline,
            "pod-0 stepped down (Redis frozen) but its label is still {:?} {:?} after the freeze; requests:\n{}",
            ns.label("pod-0", KEY),
            frozen.elapsed(),
            ns.dump()
        );
        thread::sleep(Duration::from_millis(15));
    }
    eprintln!("label follower {:?} after the freeze", frozen.elapsed());
    redis.thaw();
    wait_until(PATIENCE, "pod-0 leads again", || a.is_leading());
    wait_until(PATIENCE, "pod-0 labelled leader again", || {
        ns.label("pod-0", KEY).as_deref() == Some("leader")
    });
}

// ---------------------------------------------------------------------------
// Config errors
// ---------------------------------------------------------------------------

/// Runs `leaderd run` with `env` (POD_* removed first); exit code and stderr.
fn run_with_env(cfg: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("leaderd.yaml");
    fs::write(&path, cfg).expect("write config");
    let err_path = dir.path().join("stderr");
    let mut cmd = leaderd_command();
    cmd.env_remove("POD_NAME").env_remove("POD_NAMESPACE");
    cmd.envs(env.iter().copied())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).expect("stderr file"));
    let mut child = cmd.spawn().expect("spawn leaderd");
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    (code, fs::read_to_string(&err_path).unwrap_or_default())
}

#[test]
fn pod_label_needs_pod_name_and_pod_namespace() {
    let cfg = label_cfg("podenv", "redis://127.0.0.1:1", "follower", "")
        + "kubernetes:\n  api_url: \"http://127.0.0.1:1\"\n";
    for (env, missing) in [
        (vec![("POD_NAMESPACE", "demo")], "POD_NAME"),
        (vec![("POD_NAME", "pod-0")], "POD_NAMESPACE"),
        (vec![], "POD_NAME"),
    ] {
        let (code, stderr) = run_with_env(&cfg, &env);
        assert_eq!(code, Some(2), "env {env:?}: {stderr}");
        assert!(
            stderr.contains("pod_label") && stderr.contains(missing),
            "env {env:?}: the message must name pod_label and {missing}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
