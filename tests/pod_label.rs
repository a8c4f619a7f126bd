//! The Kubernetes pod label that follows leadership, against a fake API
//! server (tests/support/fake_kube.rs) reached through `kubernetes.api_url`.
//! Each candidate gets POD_NAME / POD_NAMESPACE like the downward API would.

#[path = "support/fake_kube.rs"]
mod fake_kube;
mod support;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fake_kube::FakeKube;
use support::*;

const NS: &str = "demo";
const KEY: &str = "leaderd.io/role";
const ANNOTATION: &str = "leaderd.io/fencing-token";

/// Election config plus `pod_label` (selector `app=demo`) and `kubernetes`.
fn label_cfg(name: &str, redis_url: &str, api_url: &str, follower: &str, extra: &str) -> String {
    format!(
        "{}pod_label:\n  key: {KEY}\n  leader_value: leader\n  follower_value: \"{follower}\"\n  selector: \"app=demo\"\n  annotation: \"{ANNOTATION}\"\nkubernetes:\n  api_url: \"{api_url}\"\n{extra}",
        config(name, redis_url)
    )
}

/// A candidate running in pod `pod` of namespace `ns` (identity = pod name).
fn start_in_pod(cfg: &str, pod: &str, ns: &str) -> Leaderd {
    Leaderd::builder(cfg)
        .identity(pod)
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", ns)
        .start()
}

fn demo_pods(kube: &FakeKube, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("pod-{i}");
            kube.add_pod(NS, &name, &[("app", "demo")]);
            name
        })
        .collect()
}

/// Candidate pods (app=demo) currently labelled leader.
fn leader_pods(kube: &FakeKube) -> Vec<String> {
    kube.pods_with(NS, KEY, "leader")
        .into_iter()
        .filter(|p| kube.label(NS, p, "app").as_deref() == Some("demo"))
        .collect()
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

/// Every PATCH was a merge patch and nothing was refused or unknown.
fn assert_clean_requests(kube: &FakeKube) {
    for r in kube.requests() {
        if r.method == "PATCH" {
            assert_eq!(
                r.content_type.as_deref(),
                Some("application/merge-patch+json"),
                "{r:?}"
            );
        }
        assert!(r.status < 400, "request refused:\n{}", kube.dump());
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

#[test]
fn pod_labels_follow_leadership_and_annotation_holds_the_token() {
    let kube = FakeKube::start();
    let pods = demo_pods(&kube, 3);
    kube.add_pod(NS, "other", &[("app", "other"), (KEY, "leader")]);
    let other_before = kube.pod(NS, "other").expect("other pod");
    let initial_writes = kube.writes().len();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let stamps_file = dir.path().join("stamps");
    let hook = stamp_hook(dir.path(), &stamps_file);
    let cfg = label_cfg(
        "podlabel",
        &redis.url(),
        &kube.url(),
        "follower",
        &format!(
            "hooks:\n  started_leading: {hook}\n  stopped_leading: {hook}\n  timeout: 250ms\n"
        ),
    );
    let c: Vec<Leaderd> = pods.iter().map(|p| start_in_pod(&cfg, p, NS)).collect();
    let all: Vec<&Leaderd> = c.iter().collect();
    let l = wait_for_leader(&all, PATIENCE);
    let tl = token_of(&c[l]);

    let settled = |leader: usize, token: u64| {
        (0..pods.len()).all(|i| {
            let want = if i == leader { "leader" } else { "follower" };
            kube.label(NS, &pods[i], KEY).as_deref() == Some(want)
        }) && kube.annotation(NS, &pods[leader], ANNOTATION) == Some(token.to_string())
    };
    wait_until(
        PATIENCE,
        "labels: one leader, two followers, token annotation",
        || settled(l, tl),
    );

    // At start each candidate labelled its own pod follower, first.
    let writes = kube.writes();
    for p in &pods {
        let first = writes[initial_writes..]
            .iter()
            .find(|w| w.name == *p)
            .unwrap_or_else(|| panic!("no write to {p}"));
        assert_eq!(
            first.labels.get(KEY).map(String::as_str),
            Some("follower"),
            "first write to {p} (leader is {}): {first:?}",
            pods[l]
        );
    }
    // Gain: label before the started_leading hook.
    let promoted = writes
        .iter()
        .find(|w| w.name == pods[l] && w.labels.get(KEY).map(String::as_str) == Some("leader"))
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
    // Pods outside the selector are never touched.
    assert_eq!(kube.pod(NS, "other"), Some(other_before.clone()));
    assert_clean_requests(&kube);

    // Graceful handover.
    c[l].signal("TERM");
    let mut polls_with_two = 0;
    let deadline = Instant::now() + PATIENCE;
    let (n, tn) = loop {
        if leader_pods(&kube).len() > 1 {
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
            pods.iter()
                .map(|p| (p, kube.labels(NS, p)))
                .collect::<Vec<_>>(),
            kube.dump()
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
        kube.label(NS, &pods[l], KEY).as_deref(),
        Some("follower"),
        "old leader's pod"
    );
    for _ in 0..20 {
        assert_eq!(leader_pods(&kube), vec![pods[n].clone()]);
        thread::sleep(Duration::from_millis(25));
    }
    // Loss: the old leader's label went to follower before its
    // stopped_leading hook ran.
    let demoted = kube
        .writes()
        .into_iter()
        .rfind(|w| w.name == pods[l] && w.labels.get(KEY).map(String::as_str) == Some("follower"))
        .expect("demotion write");
    let stopped = stamps(&stamps_file)
        .into_iter()
        .find(|(e, who, _)| e == "stopped_leading" && *who == pods[l])
        .expect("stopped_leading ran on shutdown");
    assert!(
        ns_since_epoch(demoted.wall) < stopped.2,
        "stopped_leading ran before the pod label was demoted"
    );
    assert_eq!(kube.pod(NS, "other"), Some(other_before));
    assert_clean_requests(&kube);
}

#[test]
fn loss_demotes_the_label_before_the_leader_process_is_stopped() {
    let kube = FakeKube::start();
    kube.add_pod(NS, "pod-0", &[("app", "demo")]);
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
        &kube.url(),
        "follower",
        &format!(
            "leader_process:\n  command: [\"sh\", \"{}\"]\n  grace_period: 100ms\n",
            script.display()
        ),
    );
    let a = start_in_pod(&cfg, "pod-0", NS);
    wait_until(PATIENCE, "pod-0 leads", || a.is_leading());
    let start = wait_for(PATIENCE, "the leader process started", || {
        stamps(&file).into_iter().find(|(e, _, _)| e == "start")
    });
    let is = |w: &fake_kube::Write, v: &str| w.labels.get(KEY).map(String::as_str) == Some(v);
    let promoted = kube
        .writes()
        .into_iter()
        .find(|w| is(w, "leader"))
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
        let writes = kube.writes();
        writes
            .into_iter()
            .rfind(|w| is(w, "follower") && w.at > promoted.at)
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
}

#[test]
fn stale_leader_label_of_a_crashed_candidate_is_demoted_on_gain() {
    let kube = FakeKube::start();
    kube.add_pod(NS, "pod-0", &[("app", "demo"), (KEY, "leader")]);
    kube.add_pod(NS, "pod-1", &[("app", "demo")]);
    kube.add_pod(NS, "pod-2", &[("app", "demo")]);
    kube.add_pod(NS, "other", &[("app", "other"), (KEY, "leader")]);
    let redis = RedisServer::start();
    let cfg = label_cfg("stale", &redis.url(), &kube.url(), "follower", "");
    let c = [
        start_in_pod(&cfg, "pod-1", NS),
        start_in_pod(&cfg, "pod-2", NS),
    ];
    let all: Vec<&Leaderd> = c.iter().collect();
    let l = wait_for_leader(&all, PATIENCE);
    let leader_pod = c[l].identity().to_string();
    wait_until(PATIENCE, "the stale label is demoted", || {
        kube.label(NS, "pod-0", KEY).as_deref() == Some("follower")
            && leader_pods(&kube) == vec![leader_pod.clone()]
    });
    assert_eq!(
        kube.label(NS, "other", KEY).as_deref(),
        Some("leader"),
        "a pod outside the selector was demoted"
    );
    let listed = kube
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path.contains("labelSelector=") && r.path.contains("app"));
    assert!(listed, "no LIST with a label selector:\n{}", kube.dump());
    // Own label first, then the others (contract order on gain).
    let writes = kube.writes();
    let promoted = writes
        .iter()
        .position(|w| {
            w.name == leader_pod && w.labels.get(KEY).map(String::as_str) == Some("leader")
        })
        .expect("promotion");
    let demoted = writes
        .iter()
        .position(|w| {
            w.name == "pod-0" && w.labels.get(KEY).map(String::as_str) == Some("follower")
        })
        .expect("demotion");
    assert!(
        demoted > promoted,
        "stale label demoted before own promotion"
    );
    assert_clean_requests(&kube);
}

#[test]
fn empty_follower_value_removes_the_label() {
    let kube = FakeKube::start();
    for p in ["pod-0", "pod-1"] {
        kube.add_pod(NS, p, &[("app", "demo"), (KEY, "follower")]);
    }
    let redis = RedisServer::start();
    let cfg = label_cfg("nofollower", &redis.url(), &kube.url(), "", "");
    let c = [
        start_in_pod(&cfg, "pod-0", NS),
        start_in_pod(&cfg, "pod-1", NS),
    ];
    let all: Vec<&Leaderd> = c.iter().collect();
    let l = wait_for_leader(&all, PATIENCE);
    let f = 1 - l;
    let (lp, fp) = (c[l].identity(), c[f].identity());
    wait_until(
        PATIENCE,
        "leader labelled, follower's label removed",
        || {
            kube.label(NS, lp, KEY).as_deref() == Some("leader")
                && !kube.labels(NS, fp).contains_key(KEY)
        },
    );
    assert_eq!(
        kube.label(NS, fp, "app").as_deref(),
        Some("demo"),
        "other labels kept"
    );
    assert!(
        kube.requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.body.contains("null")),
        "no merge patch deleting the label:\n{}",
        kube.dump()
    );

    c[l].signal("TERM");
    assert_eq!(c[l].wait_exit(PATIENCE), Some(0));
    wait_until(PATIENCE, "the other candidate leads", || c[f].is_leading());
    wait_until(PATIENCE, "labels after handover", || {
        kube.label(NS, fp, KEY).as_deref() == Some("leader")
            && !kube.labels(NS, lp).contains_key(KEY)
    });
    assert_clean_requests(&kube);
}

#[test]
fn forbidden_patch_is_counted_and_logged_and_election_goes_on() {
    let ns = "team-x";
    let kube = FakeKube::start();
    kube.add_pod(ns, "pod-0", &[("app", "demo")]);
    kube.forbid("patch", true);
    let redis = RedisServer::start();
    let cfg = label_cfg("forbidden", &redis.url(), &kube.url(), "follower", "");
    let a = start_in_pod(&cfg, "pod-0", ns);
    wait_until(PATIENCE, "pod-0 leads", || a.is_leading());
    wait_until(PATIENCE, "a 403 is counted as forbidden", || {
        label_updates(&a, "forbidden") >= 1.0
    });
    let log = a.log();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("patch")
            && l.contains("pods")
            && l.contains(ns)),
        "no error line naming verb (patch), resource (pods) and namespace ({ns}):\n{log}"
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
    assert_eq!(kube.labels(ns, "pod-0").get(KEY), None);

    // Permission granted: the retries get through.
    kube.forbid("patch", false);
    let allowed = Instant::now();
    let deadline = allowed + PATIENCE;
    while kube.label(ns, "pod-0", KEY).as_deref() != Some("leader") {
        assert!(
            Instant::now() < deadline,
            "label not set {PATIENCE:?} after patch was allowed again; requests:\n{}",
            kube.dump()
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
    let kube = FakeKube::start();
    kube.add_pod(NS, "pod-0", &[("app", "demo")]);
    kube.forbid("list", true);
    let redis = RedisServer::start();
    let cfg = label_cfg("retryloss", &redis.url(), &kube.url(), "follower", "");
    let a = start_in_pod(&cfg, "pod-0", NS);
    wait_until(PATIENCE, "pod-0 leads", || a.is_leading());
    wait_until(PATIENCE, "pod-0 labelled leader", || {
        kube.label(NS, "pod-0", KEY).as_deref() == Some("leader")
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
    while kube.label(NS, "pod-0", KEY).as_deref() != Some("follower") {
        assert!(
            Instant::now() < deadline,
            "pod-0 stepped down (Redis frozen) but its label is still {:?} {:?} after the freeze; requests:\n{}",
            kube.label(NS, "pod-0", KEY),
            frozen.elapsed(),
            kube.dump()
        );
        thread::sleep(Duration::from_millis(15));
    }
    eprintln!("label follower {:?} after the freeze", frozen.elapsed());
    redis.thaw();
    wait_until(PATIENCE, "pod-0 leads again", || a.is_leading());
    wait_until(PATIENCE, "pod-0 labelled leader again", || {
        kube.label(NS, "pod-0", KEY).as_deref() == Some("leader")
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
    let cfg = label_cfg(
        "podenv",
        "redis://127.0.0.1:1",
        "http://127.0.0.1:1",
        "follower",
        "",
    );
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

// ---------------------------------------------------------------------------
// The fake itself (so a failure above is about leaderd, not the fake)
// ---------------------------------------------------------------------------

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn call(method: &str, url: &str, content_type: &str, body: &str) -> (u16, serde_json::Value) {
    let a = agent();
    let resp = match method {
        "GET" => a.get(url).call(),
        "PATCH" => a.patch(url).header("Content-Type", content_type).send(body),
        "DELETE" => a.delete(url).call(),
        other => panic!("method {other}"),
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let code = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[test]
fn fake_kube_enforces_the_api_rules_leaderd_relies_on() {
    let kube = FakeKube::start();
    kube.add_pod("ns", "p1", &[("app", "x"), ("role", "leader")]);
    kube.add_pod("ns", "p2", &[("app", "x")]);
    kube.add_pod("ns", "p3", &[("app", "y")]);
    kube.add_pod("elsewhere", "p4", &[("app", "x")]);
    let pods = format!("{}/api/v1/namespaces/ns/pods", kube.url());
    let merge = "application/merge-patch+json";

    let (code, body) = call("GET", &format!("{pods}/nope"), "", "");
    assert_eq!(code, 404);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["code"], 404);
    let (code, p1) = call("GET", &format!("{pods}/p1"), "", "");
    assert_eq!(code, 200);
    let rv0 = p1["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();

    // Merge patch: set, delete with null, other keys kept, rv bumped.
    let (code, p1) = call(
        "PATCH",
        &format!("{pods}/p1"),
        merge,
        r#"{"metadata":{"labels":{"role":null,"new":"v"},"annotations":{"t":"5"}}}"#,
    );
    assert_eq!(code, 200, "{p1}");
    assert_eq!(
        p1["metadata"]["labels"],
        serde_json::json!({"app": "x", "new": "v"})
    );
    assert_ne!(p1["metadata"]["resourceVersion"], rv0.as_str());
    assert_eq!(kube.annotation("ns", "p1", "t").as_deref(), Some("5"));
    // Stale resourceVersion -> 409; current one -> ok.
    let stale = format!(r#"{{"metadata":{{"resourceVersion":"{rv0}","labels":{{"a":"b"}}}}}}"#);
    let (code, body) = call("PATCH", &format!("{pods}/p1"), merge, &stale);
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("Conflict")),
        "{body}"
    );
    let rv1 = p1["metadata"]["resourceVersion"].as_str().expect("rv");
    let fresh = format!(r#"{{"metadata":{{"resourceVersion":"{rv1}","labels":{{"a":"b"}}}}}}"#);
    assert_eq!(call("PATCH", &format!("{pods}/p1"), merge, &fresh).0, 200);
    // Non-string or invalid label values are refused.
    let (code, _) = call(
        "PATCH",
        &format!("{pods}/p1"),
        merge,
        r#"{"metadata":{"labels":{"n":5}}}"#,
    );
    assert_eq!(code, 400);
    let (code, _) = call(
        "PATCH",
        &format!("{pods}/p1"),
        merge,
        r#"{"metadata":{"labels":{"n":"-x"}}}"#,
    );
    assert_eq!(code, 422);
    // Other patch types.
    for ct in [
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
        "application/json",
    ] {
        let (code, body) = call("PATCH", &format!("{pods}/p1"), ct, "{}");
        assert_eq!(code, 415, "{ct}: {body}");
    }
    assert_eq!(call("PATCH", &format!("{pods}/nope"), merge, "{}").0, 404);

    // Label selectors.
    let names = |sel: &str| -> Vec<String> {
        let (code, list) = call("GET", &format!("{pods}?labelSelector={sel}"), "", "");
        assert_eq!(code, 200, "{sel}: {list}");
        assert_eq!(list["kind"], "PodList");
        assert!(list["metadata"]["resourceVersion"].is_string());
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|p| p["metadata"]["name"].as_str().expect("name").to_string())
            .collect()
    };
    assert_eq!(names(""), ["p1", "p2", "p3"]);
    assert_eq!(names("app%3Dx"), ["p1", "p2"]);
    assert_eq!(names("app%3Dx%2Cnew%3Dv"), ["p1"]);
    assert_eq!(names("app!%3Dx"), ["p3"]);
    assert_eq!(names("new"), ["p1"]);
    assert_eq!(names("!new"), ["p2", "p3"]);
    assert_eq!(names("app%20in%20(x%2Cy)%2C!new"), ["p2", "p3"]);

    // 403 per verb, worded like the API server.
    kube.forbid("patch", true);
    let (code, body) = call("PATCH", &format!("{pods}/p2"), merge, "{}");
    assert_eq!(code, 403);
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(
        body["message"],
        "pods \"p2\" is forbidden: User \"system:serviceaccount:ns:leaderd\" cannot patch resource \"pods\" in API group \"\" in the namespace \"ns\""
    );
    assert_eq!(call("GET", &format!("{pods}/p2"), "", "").0, 200);
    kube.forbid("patch", false);
    kube.forbid("list", true);
    assert_eq!(call("GET", &pods, "", "").0, 403);
    kube.forbid("list", false);

    // Unknown paths and methods are answered and logged.
    assert_eq!(
        call("GET", &format!("{}/version", kube.url()), "", "").0,
        404
    );
    assert_eq!(call("DELETE", &format!("{pods}/p2"), "", "").0, 405);
    let log = kube.requests();
    assert!(log.iter().any(|r| r.path == "/version" && r.status == 404));
    let patch = log.iter().find(|r| r.method == "PATCH").expect("logged");
    assert_eq!(patch.content_type.as_deref(), Some(merge));
    assert!(patch.body.contains("null"));
    assert_eq!(
        kube.labels("elsewhere", "p4")
            .get("app")
            .map(String::as_str),
        Some("x")
    );
}
