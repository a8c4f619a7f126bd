//! The Kubernetes Lease backend against a real kube-apiserver
//! (tests/support/kube_real.rs: v1.37.2 and etcd v3.6.16 started by
//! `scripts/kube-up`), one fresh namespace per test.
//!
//! Every candidate is the real `leaderd` binary, running as a ServiceAccount
//! with a Role (a TokenRequest token in the kubeconfig its `KUBECONFIG`
//! names), so the real authenticator, RBAC authorizer, validation and
//! compare-and-swap decide. Timing claims ("no takeover before the lease
//! expired by local observation") are checked against the API server's own
//! audit log, which records every write with the instant it finished, who
//! sent it and what was sent. Faults the server cannot produce on demand —
//! latency, a hung server, dropped connections — come from a TCP proxy in
//! front of it (tests/support/proxy.rs); a refused verb is a real RBAC 403.
//! Records a client-go candidate would write are written by the test as the
//! admin in client-go's exact format (tests/kube_interop.rs runs client-go
//! itself).

#[path = "support/kube_real.rs"]
mod kube_real;
#[path = "support/proxy.rs"]
mod proxy;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use kube_real::{
    LeaseWrite, Namespace, control_plane, event_rules, lease_rules, micro_time, parse_micro_time,
    rule,
};
use proxy::Proxy;
use serde_json::{Value, json};
use support::*;

/// The ServiceAccount leaderd runs as.
const SA: &str = "leaderd";

/// The election timing of one test. `lease` is whole seconds (the Lease's
/// `leaseDurationSeconds` is an integer).
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

/// A fresh namespace with ServiceAccount `leaderd` allowed what the Lease
/// backend uses (and to record Events); its kubeconfig.
fn setup(test: &str) -> (Arc<Namespace>, PathBuf) {
    let ns = control_plane().namespace(test);
    let mut rules = lease_rules();
    rules.extend(event_rules());
    let kubeconfig = ns.account(SA, rules);
    (Arc::new(ns), kubeconfig)
}

/// A kubernetes-backend config for election `name` (Lease `<ns>/name`).
fn kube_cfg(name: &str, ns: &Namespace, t: Timing, extra: &str) -> String {
    format!(
        "election:\n  name: {name}\n  lease_duration: {}s\n  renew_deadline: {}ms\n  retry_period: {}ms\nbackend:\n  kubernetes:\n    namespace: {}\n    lease_name: {name}\nhttp:\n  listen: \"127.0.0.1:0\"\n{extra}",
        t.lease.as_secs(),
        t.renew.as_millis(),
        t.retry.as_millis(),
        ns.name(),
    )
}

fn start(cfg: &str, identity: &str, ns: &Namespace, kubeconfig: &Path) -> Leaderd {
    Leaderd::builder(cfg)
        .identity(identity)
        .env("POD_NAMESPACE", ns.name())
        .env("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path"))
        .start()
}

fn refs(ds: &[Leaderd]) -> Vec<&Leaderd> {
    ds.iter().collect()
}

fn token_of(d: &Leaderd) -> u64 {
    let st = d.status();
    st["fencing_token"]
        .as_u64()
        .unwrap_or_else(|| panic!("{} has no fencing_token: {st}", d.identity()))
}

/// The spec of the last write leaderd (`identity`) sent, exactly as sent.
fn last_sent_spec(ns: &Namespace, lease: &str, identity: &str) -> Value {
    ns.lease_writes(lease)
        .iter()
        .rev()
        .filter(|w| !w.by_test)
        .filter_map(|w| w.sent.clone())
        .find(|spec| spec["holderIdentity"] == identity)
        .unwrap_or_else(|| panic!("no write by {identity}:\n{}", ns.dump_lease_writes(lease)))
}

fn wall_gap(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).unwrap_or_else(|e| e.duration())
}

/// A hook appending `LEADER TOKEN` lines to `file` on `new_leader`.
fn new_leader_hook(file: &Path) -> String {
    format!(
        "hooks:\n  new_leader: [\"sh\", \"-c\", \"echo \\\"$LEADERD_LEADER $LEADERD_FENCING_TOKEN\\\" >> '{}'\"]\n  timeout: 2s\n",
        file.display()
    )
}

/// `leaderd check` with `KUBECONFIG`: exit code, stdout, stderr.
fn check(config: &Path, kubeconfig: &Path) -> (Option<i32>, String, String) {
    let out = leaderd_command()
        .env("KUBECONFIG", kubeconfig)
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run leaderd check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Keeps a client-go style record renewed (as its holder would) until
/// dropped: every 500 ms, renewTime advances from `renew0` by the time
/// elapsed; everything else stays.
struct Renewer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Renewer {
    fn start(ns: Arc<Namespace>, name: &str, spec: Value, renew0: SystemTime) -> Renewer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = name.to_string();
        let thread = thread::spawn(move || {
            let began = Instant::now();
            // Bounded even if the test forgets to stop it.
            while !flag.load(Ordering::SeqCst) && began.elapsed() < Duration::from_secs(60) {
                thread::sleep(Duration::from_millis(500));
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let mut next = spec.clone();
                next["renewTime"] = json!(micro_time(renew0 + began.elapsed()));
                ns.put_lease(&name, next);
            }
        });
        Renewer {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("renewer thread");
        }
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// client-go's record format
// ---------------------------------------------------------------------------

/// A Lease spec exactly as client-go's `LeaseLock` writes it
/// (`LeaderElectionRecordToLeaseSpec`).
fn client_go_spec(
    holder: &str,
    seconds: i64,
    acquire: SystemTime,
    renew: SystemTime,
    transitions: i64,
) -> Value {
    let raw = format!(
        r#"{{"holderIdentity":"{holder}","leaseDurationSeconds":{seconds},"acquireTime":"{}","renewTime":"{}","leaseTransitions":{transitions}}}"#,
        micro_time(acquire),
        micro_time(renew),
    );
    serde_json::from_str(&raw).expect("client-go spec is JSON")
}

/// What client-go's `LeaseSpecToLeaderElectionRecord` reads from a spec,
/// with the types its decoder demands.
#[derive(Debug)]
struct ClientGoRecord {
    holder: String,
    lease_seconds: i64,
    acquire: SystemTime,
    renew: SystemTime,
    transitions: i64,
}

/// Decodes a Lease spec as client-go would, refusing what Go's decoder
/// refuses: non-integer seconds or transitions, MicroTimes not in
/// `RFC3339Micro`.
fn client_go_record(spec: &Value) -> Result<ClientGoRecord, String> {
    let int = |k: &str| -> Result<i64, String> {
        let v = &spec[k];
        match v.as_i64() {
            Some(n) if !v.is_f64() && i32::try_from(n).is_ok() => Ok(n),
            _ => Err(format!("{k}: {v} is not an int32")),
        }
    };
    let time = |k: &str| -> Result<SystemTime, String> {
        let v = spec[k]
            .as_str()
            .ok_or_else(|| format!("{k}: {} is not a string", spec[k]))?;
        parse_micro_time(v).map_err(|e| format!("{k}: {e}"))
    };
    Ok(ClientGoRecord {
        holder: spec["holderIdentity"]
            .as_str()
            .ok_or_else(|| format!("holderIdentity: {} is not a string", spec["holderIdentity"]))?
            .to_string(),
        lease_seconds: int("leaseDurationSeconds")?,
        acquire: time("acquireTime")?,
        renew: time("renewTime")?,
        transitions: int("leaseTransitions")?,
    })
}

// ---------------------------------------------------------------------------
// Elections
// ---------------------------------------------------------------------------

#[test]
fn three_candidates_elect_exactly_one_leader_and_agree() {
    let (ns, kubeconfig) = setup("kl-three");
    // Namespace and Lease name left to their defaults: POD_NAMESPACE and
    // election.name.
    let cfg = "election:\n  name: kl-three\n  lease_duration: 1s\n  renew_deadline: 600ms\n  retry_period: 150ms\nbackend:\n  kubernetes:\n    namespace: \"\"\n    lease_name: \"\"\nhttp:\n  listen: \"127.0.0.1:0\"\n";
    let ds: Vec<Leaderd> = ["three-a", "three-b", "three-c"]
        .iter()
        .map(|id| start(cfg, id, &ns, &kubeconfig))
        .collect();
    let all = refs(&ds);
    let li = wait_for_leader(&all, PATIENCE);
    let leader = ds[li].identity().to_string();
    let token = token_of(&ds[li]);

    // Everyone agrees on the holder and its token, and so does the Lease.
    wait_until(PATIENCE, "all candidates report the same leader", || {
        ds.iter().all(|d| {
            d.try_status()
                .is_some_and(|st| st["leader"] == leader.as_str() && st["fencing_token"] == token)
        })
    });
    for d in &ds {
        let st = d.status();
        assert_eq!(st["backend"], "kubernetes", "{st}");
        assert_eq!(st["ready"], true, "{st}");
    }
    let lease = ns
        .lease("kl-three")
        .unwrap_or_else(|| panic!("no lease {}/kl-three:\n{}", ns.name(), ns.dump()));
    let spec = lease["spec"].clone();
    let record = client_go_record(&spec).unwrap_or_else(|e| panic!("{e}: {spec}"));
    assert_eq!(record.holder, leader);
    assert_eq!(record.lease_seconds, 1);
    assert_eq!(record.transitions as u64, token);

    // Stable: one leader in every round, always the same one, and it keeps
    // renewing (renewTime moves on).
    let renew0 = spec["renewTime"].clone();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let Some(i) = sole_leader(&all) {
            assert_eq!(ds[i].identity(), leader, "leadership moved without cause");
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(ds[li].is_leading());
    let later = ns.lease_spec("kl-three").expect("lease");
    assert_ne!(later["renewTime"], renew0, "no renewal in 1.5 s");
    assert_eq!(
        later["acquireTime"], spec["acquireTime"],
        "acquireTime must stay for the whole term"
    );

    // Exactly one create (the placeholder) succeeded; the API was used as
    // leaderd promises: every update carried a resourceVersion, nothing was
    // refused other than a lost race to create the placeholder or to take
    // it (409), or the first read (404).
    let writes = ns.lease_writes("kl-three");
    let creates = writes.iter().filter(|w| w.verb == "create").count();
    assert_eq!(creates, 1, "{}", ns.dump_lease_writes("kl-three"));
    let user = ns.user(SA);
    for r in ns.requests().iter().filter(|r| r.user == user) {
        assert!(
            r.resource == "leases" || (r.resource == "events" && r.verb == "create"),
            "unexpected request {r:?}"
        );
        let allowed = r.code < 400
            || (r.code == 404 && r.verb == "get")
            || (r.code == 409 && (r.verb == "create" || r.verb == "update"));
        assert!(allowed, "refused request {r:?}\n{}", ns.dump());
        if r.verb == "update" {
            let sent = r.request.as_ref().expect("an update's body is audited");
            assert!(
                sent["metadata"]["resourceVersion"].is_string(),
                "an update without resourceVersion: {sent}"
            );
        }
    }
    assert!(
        ns.open_watches("leases") >= 3,
        "every candidate watches the lease:\n{}",
        ns.dump()
    );

    // client-go's Event on the Lease: "<identity> became leader".
    let event = wait_for(PATIENCE, "an Event on the Lease", || {
        ns.events_for("Lease", "kl-three", "LeaderElection")
            .into_iter()
            .next()
    });
    assert_eq!(
        event["message"],
        format!("{leader} became leader"),
        "{event}"
    );
    assert_eq!(event["type"], "Normal", "{event}");
    assert_eq!(
        event["involvedObject"]["apiVersion"], "coordination.k8s.io/v1",
        "{event}"
    );
    assert_eq!(
        event["involvedObject"]["uid"], lease["metadata"]["uid"],
        "{event}"
    );
    assert_eq!(event["source"]["component"], "leaderd", "{event}");
    assert_eq!(event["reportingInstance"], leader.as_str(), "{event}");
    assert_eq!(
        ns.events_for("Lease", "kl-three", "LeaderElection").len(),
        1,
        "one Event per term"
    );
}

/// Graceful handover: the leader writes what client-go's ReleaseOnCancel
/// writes and a follower takes over through the watch.
///
/// The retry period is long here (1 s) on purpose: SIGTERM comes 100 ms
/// after a renewal, which every follower has just read, so without the
/// watch no follower would look again for ~900 ms. A takeover within
/// 400 ms of the release can only come from the watch. In the second round
/// every connection to the API server is cut first (the candidates reach it
/// through a proxy): the candidates must watch again.
#[test]
fn graceful_handover_is_seen_through_the_watch() {
    let (ns, _) = setup("kl-handover");
    let proxy = Proxy::start(control_plane().port);
    let kubeconfig = ns.kubeconfig(SA, Some(proxy.port()));
    let t = Timing {
        lease: Duration::from_secs(2),
        renew: Duration::from_millis(1500),
        retry: Duration::from_millis(1000),
    };
    let cfg = kube_cfg("kl-handover", &ns, t, "");
    let mut ds: Vec<Leaderd> = ["ho-a", "ho-b", "ho-c"]
        .iter()
        .map(|id| start(&cfg, id, &ns, &kubeconfig))
        .collect();

    for round in 0..2 {
        let li = wait_for_leader(&refs(&ds), PATIENCE);
        let old = ds.remove(li);
        let old_token = token_of(&old);
        if round == 1 {
            // Every connection drops (an API server restart, a load
            // balancer): the candidates must watch again.
            let before = ns.watches_started("leases");
            proxy.refuse();
            thread::sleep(Duration::from_millis(50));
            proxy.heal();
            wait_until(PATIENCE, "every candidate watches again", || {
                ns.watches_started("leases") > before + ds.len()
            });
        }
        wait_until(PATIENCE, "every candidate watches the lease", || {
            ns.open_watches("leases") > ds.len()
        });
        // Wait for a fresh renewal (its watch event makes every follower
        // read the lease), then stop the leader shortly after it.
        let since = Instant::now();
        wait_until(PATIENCE, "a renewal by the leader", || {
            ns.client_writes_since("kl-handover", since)
                .iter()
                .any(|w| w.verb == "update" && w.holder() == old.identity())
        });
        thread::sleep(Duration::from_millis(100));
        let sig = Instant::now();
        old.signal("TERM");

        let ni = wait_for_leader(&refs(&ds), PATIENCE);
        assert_eq!(
            old.wait_exit(Duration::from_secs(5)),
            Some(0),
            "round {round}: exit code"
        );
        let writes = ns.client_writes_since("kl-handover", sig);
        let release = writes.first().unwrap_or_else(|| {
            panic!(
                "round {round}: no write after SIGTERM:\n{}",
                ns.dump_lease_writes("kl-handover")
            )
        });
        // ReleaseOnCancel: empty holder, 1 s, same transitions.
        let rel = client_go_record(&release.spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rel.holder, "", "round {round}: release {:?}", release.spec);
        assert_eq!(
            rel.lease_seconds, 1,
            "round {round}: release {:?}",
            release.spec
        );
        assert_eq!(rel.transitions as u64, old_token, "round {round}");
        let takeover = writes
            .iter()
            .find(|w| !w.holder().is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "round {round}: no takeover:\n{}",
                    ns.dump_lease_writes("kl-handover")
                )
            });
        assert_eq!(takeover.holder(), ds[ni].identity());
        let gap = takeover.at.duration_since(release.at);
        eprintln!("round {round}: takeover {gap:?} after the release");
        assert!(
            gap < Duration::from_millis(400),
            "round {round}: takeover {gap:?} after the release: not woken by the watch\n{}",
            ns.dump_lease_writes("kl-handover")
        );
        let new_token = token_of(&ds[ni]);
        assert!(
            new_token > old_token,
            "round {round}: token {new_token} after {old_token}"
        );
        assert_eq!(takeover.transitions(), Some(new_token as i64));
        assert!(
            sig.elapsed() < t.lease,
            "round {round}: handover took {:?}",
            sig.elapsed()
        );
    }
}

/// After a SIGKILL nobody takes over before the lease expired by local
/// observation (the last renewTime change + leaseDurationSeconds), and
/// someone does soon after.
#[test]
fn crash_takeover_only_after_the_lease_expired() {
    let (ns, kubeconfig) = setup("kl-crash");
    let cfg = kube_cfg("kl-crash", &ns, T2, "");
    let mut ds: Vec<Leaderd> = ["cr-a", "cr-b", "cr-c"]
        .iter()
        .map(|id| start(&cfg, id, &ns, &kubeconfig))
        .collect();
    let li = wait_for_leader(&refs(&ds), PATIENCE);
    let old = ds.remove(li);
    let old_token = token_of(&old);
    thread::sleep(Duration::from_millis(800));
    let killed = Instant::now();
    old.kill();

    // Watch the survivors: never two leaders; note the first one seen.
    let survivors = refs(&ds);
    let (ni, seen) = wait_for(PATIENCE, "a new leader after the crash", || {
        sole_leader(&survivors).map(|i| (i, Instant::now()))
    });
    let writes = ns.lease_writes("kl-crash");
    let last_renew = writes
        .iter()
        .rev()
        .find(|w| w.holder() == old.identity())
        .expect("the old leader wrote the lease");
    let takeover = writes
        .iter()
        .find(|w| w.resource_version > last_renew.resource_version && !w.holder().is_empty())
        .unwrap_or_else(|| panic!("no takeover write:\n{}", ns.dump_lease_writes("kl-crash")));
    assert!(last_renew.at <= killed + Duration::from_millis(100));
    let after = takeover.at.duration_since(last_renew.at);
    eprintln!(
        "taken over {after:?} after the last renewal (lease {:?})",
        T2.lease
    );
    assert!(
        after >= T2.lease,
        "taken over {after:?} after the last renewal, before leaseDurationSeconds ({:?})\n{}",
        T2.lease,
        ns.dump_lease_writes("kl-crash")
    );
    assert!(
        after < T2.lease + Duration::from_millis(1500),
        "taken over only {after:?} after the last renewal\n{}",
        ns.dump_lease_writes("kl-crash")
    );
    assert!(seen.duration_since(last_renew.at) >= T2.lease);
    assert_eq!(takeover.holder(), ds[ni].identity());
    let new_token = token_of(&ds[ni]);
    assert!(new_token > old_token, "token {new_token} after {old_token}");
    assert_eq!(takeover.transitions(), Some(new_token as i64));
}

/// A leader frozen (SIGSTOP) past its lease is replaced only after the
/// lease expired, and when it runs again it answers "not leader" at once
/// and never writes over its successor.
#[test]
fn frozen_leader_is_replaced_and_never_overwrites_its_successor() {
    let (ns, kubeconfig) = setup("kl-frozen");
    let cfg = kube_cfg("kl-frozen", &ns, T2, "");
    let ds: Vec<Leaderd> = ["fz-a", "fz-b"]
        .iter()
        .map(|id| start(&cfg, id, &ns, &kubeconfig))
        .collect();
    let li = wait_for_leader(&refs(&ds), PATIENCE);
    let (old, other) = (&ds[li], &ds[1 - li]);
    thread::sleep(Duration::from_millis(500));
    old.signal("STOP");
    wait_until(PATIENCE, "the other candidate takes over", || {
        other.is_leading()
    });
    let writes = ns.lease_writes("kl-frozen");
    let last = writes
        .iter()
        .rev()
        .find(|w| w.holder() == old.identity())
        .expect("the frozen leader's writes");
    let takeover = writes
        .iter()
        .find(|w| w.resource_version > last.resource_version && w.holder() == other.identity())
        .expect("the takeover");
    assert!(
        takeover.at.duration_since(last.at) >= T2.lease,
        "taken over {:?} after the frozen leader's last renewal",
        takeover.at.duration_since(last.at)
    );

    old.signal("CONT");
    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_millis(1500) {
        assert_ne!(
            old.leader_code(),
            Some(200),
            "the resumed ex-leader claims leadership"
        );
        assert!(other.is_leading(), "the new leader lost its lease");
        thread::sleep(Duration::from_millis(20));
    }
    let overwrites: Vec<LeaseWrite> = ns
        .lease_writes("kl-frozen")
        .into_iter()
        .filter(|w| w.resource_version > takeover.resource_version && w.holder() == old.identity())
        .collect();
    assert!(
        overwrites.is_empty(),
        "the ex-leader wrote over its successor: {overwrites:?}"
    );
    assert_eq!(old.status()["reason"], "renew_failed");
    assert_eq!(old.status()["leader"], other.identity());
}

// ---------------------------------------------------------------------------
// Sharing a Lease with client-go; clock skew
// ---------------------------------------------------------------------------

/// A record written by a client-go candidate whose timestamps are an hour
/// behind ours (as if our clock ran an hour ahead). As long as it is
/// renewed it is held; once renewals stop, leaderd takes over after about
/// leaseDurationSeconds, and what it sends passes client-go's decoding.
#[test]
fn client_go_record_with_skewed_clock_is_honoured_then_taken_over() {
    let (ns, kubeconfig) = setup("kl-skew");
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks_file = dir.path().join("new_leader.log");
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    let spec = client_go_spec(
        "client-go-pod",
        2,
        now - hour - Duration::from_secs(600),
        now - hour,
        3,
    );
    // The exact shape client-go writes.
    assert!(
        spec["renewTime"]
            .as_str()
            .is_some_and(|t| t.len() == 27 && t.ends_with('Z') && t.as_bytes()[19] == b'.'),
        "{spec}"
    );
    ns.put_lease("kl-skew", spec.clone());
    let mut renewer = Renewer::start(ns.clone(), "kl-skew", spec, now - hour);

    let cfg = kube_cfg("kl-skew", &ns, T2, &new_leader_hook(&hooks_file));
    let d = start(&cfg, "skewed", &ns, &kubeconfig);
    wait_until(PATIENCE, "leaderd reports client-go-pod as leader", || {
        d.try_status()
            .is_some_and(|st| st["leader"] == "client-go-pod" && st["fencing_token"] == 3)
    });
    // Held for more than two lease durations while renewed.
    let watch_from = Instant::now();
    while watch_from.elapsed() < T2.lease * 2 + Duration::from_millis(500) {
        assert!(
            !d.is_leading(),
            "took over a record that is being renewed:\n{}",
            ns.dump_lease_writes("kl-skew")
        );
        let st = d.status();
        assert_eq!(st["leader"], "client-go-pod", "{st}");
        assert_eq!(st["is_leader"], false, "{st}");
        thread::sleep(Duration::from_millis(100));
    }
    let stray = ns.client_writes_since("kl-skew", t0);
    assert!(stray.is_empty(), "leaderd wrote a held lease: {stray:?}");
    wait_until(
        Duration::from_secs(5),
        "new_leader hook for client-go-pod",
        || {
            fs::read_to_string(&hooks_file)
                .unwrap_or_default()
                .lines()
                .any(|l| l == "client-go-pod 3")
        },
    );
    // Once: its renewals are not new leaders.
    let hooks = fs::read_to_string(&hooks_file).unwrap_or_default();
    assert_eq!(hooks.lines().count(), 1, "new_leader ran: {hooks:?}");
    let metrics = d.metrics();
    assert_eq!(metric_sum(&metrics, "leaderd_fencing_token", &[]), 3.0);
    assert_eq!(metric_sum(&metrics, "leaderd_is_leader", &[]), 0.0);

    renewer.stop();
    let last = ns
        .lease_writes("kl-skew")
        .into_iter()
        .rev()
        .find(|w| w.by_test)
        .expect("test renewals");
    wait_until(PATIENCE, "leaderd takes over", || d.is_leading());
    let takeover = ns
        .client_writes_since("kl-skew", last.at)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no takeover write:\n{}", ns.dump_lease_writes("kl-skew")));
    let after = takeover.at.duration_since(last.at);
    assert!(
        after >= Duration::from_secs(2),
        "taken over {after:?} after the last renewal (leaseDurationSeconds 2)"
    );
    assert!(
        after < Duration::from_millis(3500),
        "taken over only after {after:?}"
    );

    // What leaderd sent satisfies client-go's decoding and rules.
    let sent = last_sent_spec(&ns, "kl-skew", "skewed");
    let rec =
        client_go_record(&sent).unwrap_or_else(|e| panic!("client-go would refuse {sent}: {e}"));
    assert_eq!(rec.holder, "skewed");
    assert_eq!(rec.lease_seconds, 2);
    assert!(
        rec.transitions >= 4,
        "leaseTransitions {} after 3",
        rec.transitions
    );
    assert!(rec.renew >= rec.acquire, "{sent}");
    assert!(
        wall_gap(rec.renew, takeover.wall) < Duration::from_secs(5),
        "renewTime is not leaderd's own clock: {sent}"
    );
    assert_eq!(token_of(&d) as i64, rec.transitions);
    wait_until(
        Duration::from_secs(5),
        "new_leader hook for leaderd itself",
        || {
            fs::read_to_string(&hooks_file)
                .unwrap_or_default()
                .lines()
                .any(|l| l == format!("skewed {}", rec.transitions))
        },
    );
}

/// A holder that gives the Lease back the way client-go's ReleaseOnCancel
/// does (empty holderIdentity, leaseDurationSeconds 1) is replaced at once:
/// well within the 1 s a candidate would wait if it honoured the released
/// record as held. (tests/kube_interop.rs does this with client-go itself.)
#[test]
fn client_go_release_is_taken_at_once() {
    let (ns, kubeconfig) = setup("kl-cg-release");
    let now = SystemTime::now();
    let held = client_go_spec("client-go-pod", 2, now, now, 5);
    ns.put_lease("kl-cg-release", held.clone());
    let mut renewer = Renewer::start(ns.clone(), "kl-cg-release", held, now);
    let d = start(
        &kube_cfg("kl-cg-release", &ns, T2, ""),
        "cg-follower",
        &ns,
        &kubeconfig,
    );
    wait_until(PATIENCE, "leaderd follows client-go-pod", || {
        d.try_status()
            .is_some_and(|st| st["leader"] == "client-go-pod")
    });
    wait_until(PATIENCE, "leaderd watches", || {
        ns.open_watches("leases") >= 1
    });
    renewer.stop();
    let t = SystemTime::now();
    let released = ns.put_lease("kl-cg-release", client_go_spec("", 1, t, t, 5));
    let released_rv: u64 = released["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .expect("resourceVersion");
    wait_until(PATIENCE, "leaderd takes the released lease", || {
        d.is_leading()
    });
    let writes = ns.lease_writes("kl-cg-release");
    let release = writes
        .iter()
        .find(|w| w.resource_version == released_rv)
        .expect("the release in the audit log");
    let takeover = writes
        .iter()
        .find(|w| w.resource_version > released_rv)
        .expect("takeover write");
    let gap = takeover.at.duration_since(release.at);
    eprintln!("took the released lease {gap:?} after the release");
    assert!(
        gap < Duration::from_millis(700),
        "took the released lease only after {gap:?}"
    );
    assert_eq!(takeover.holder(), "cg-follower");
    // Above 5 (the token floor is at least the Unix time).
    assert!(takeover.transitions().is_some_and(|t| t > 5));
}

/// A record whose renewTime is an hour in the future (its writer's clock
/// runs ahead) and that nobody renews expires after leaseDurationSeconds of
/// our observation, not in an hour.
#[test]
fn future_renew_time_is_taken_over_after_lease_duration() {
    let (ns, kubeconfig) = setup("kl-future");
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    ns.put_lease(
        "kl-future",
        client_go_spec("client-go-pod", 2, now + hour, now + hour, 7),
    );
    let started = Instant::now();
    let d = start(
        &kube_cfg("kl-future", &ns, T2, ""),
        "future",
        &ns,
        &kubeconfig,
    );
    wait_until(PATIENCE, "leaderd sees client-go-pod", || {
        d.is_leading()
            || d.try_status()
                .is_some_and(|st| st["leader"] == "client-go-pod")
    });
    wait_until(Duration::from_secs(10), "leaderd takes over", || {
        d.is_leading()
    });
    let takeover = ns
        .client_writes_since("kl-future", started)
        .into_iter()
        .next()
        .expect("takeover write");
    let after = takeover.at.duration_since(started);
    assert!(
        after >= Duration::from_secs(2),
        "taken over {after:?} after leaderd started: before the record could have expired by its observation"
    );
    assert_eq!(takeover.holder(), "future");
    // Above 7 (the token floor is at least the Unix time).
    assert!(takeover.transitions().is_some_and(|t| t > 7));
    assert_eq!(takeover.transitions(), Some(token_of(&d) as i64));
    let rec =
        client_go_record(&last_sent_spec(&ns, "kl-future", "future")).expect("client-go readable");
    assert!(
        wall_gap(rec.renew, SystemTime::now()) < Duration::from_secs(10),
        "renewTime {:?} is not near our clock",
        rec.renew
    );
}

// ---------------------------------------------------------------------------
// Compare-and-swap, slow and forbidding API servers
// ---------------------------------------------------------------------------

/// A resourceVersion bumped behind the leader's back (an annotation)
/// costs one 409 and a re-read; the leader keeps leading and keeps the
/// annotation. A write by another holder makes it step down (lock_lost)
/// without overwriting that holder's record.
#[test]
fn conflicts_are_reread_and_another_holder_means_lock_lost() {
    let (ns, kubeconfig) = setup("kl-cas");
    let d = start(&kube_cfg("kl-cas", &ns, T2, ""), "cas", &ns, &kubeconfig);
    wait_until(PATIENCE, "cas leads", || d.is_leading());
    let token = token_of(&d);

    for poke in 0..3 {
        let poked = Instant::now();
        ns.edit_lease("kl-cas", |lease| {
            lease["metadata"]["annotations"] = json!({"example.com/poke": poke.to_string()});
        });
        wait_for(PATIENCE, "a renewal after the annotation change", || {
            let ok = ns
                .client_writes_since("kl-cas", poked)
                .into_iter()
                .any(|w| w.verb == "update" && w.holder() == "cas");
            assert!(
                d.is_leading(),
                "stopped leading after a metadata-only change"
            );
            ok.then_some(())
        });
        let lease = ns.lease("kl-cas").expect("lease");
        assert_eq!(
            lease["metadata"]["annotations"]["example.com/poke"],
            poke.to_string(),
            "the leader overwrote another client's change: {lease}"
        );
    }
    let user = ns.user(SA);
    assert!(
        ns.requests()
            .iter()
            .any(|r| r.user == user && r.verb == "update" && r.code == 409),
        "no stale update was refused:\n{}",
        ns.dump()
    );
    assert_eq!(token_of(&d), token, "the term changed");
    assert!(!d.log().contains("stepped down"), "{}", d.log());

    // Another holder's write (a client-go candidate's CAS succeeded).
    let now = SystemTime::now();
    let written = Instant::now();
    ns.put_lease(
        "kl-cas",
        client_go_spec("intruder", 2, now, now, token as i64 + 1),
    );
    wait_until(PATIENCE, "cas steps down", || !d.is_leading());
    let down = written.elapsed();
    assert!(
        down < T2.renew,
        "stepped down {down:?} after losing the lease"
    );
    wait_until(PATIENCE, "cas reports intruder", || {
        d.try_status().is_some_and(|st| {
            st["leader"] == "intruder" && st["reason"] == "lock_lost" && st["is_leader"] == false
        })
    });
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("stepped down") && l.contains("lock_lost")),
        "{}",
        d.log()
    );
    // The intruder's record is never overwritten while it may be valid; then
    // (nobody renews it) leaderd takes over with a new term.
    wait_until(PATIENCE, "cas leads again", || d.is_leading());
    let back = ns
        .client_writes_since("kl-cas", written)
        .into_iter()
        .next()
        .expect("a takeover write");
    assert!(
        back.at.duration_since(written) >= T2.lease,
        "overwrote the intruder's live record:\n{}",
        ns.dump_lease_writes("kl-cas")
    );
    // Above the intruder's (the token floor is at least the Unix time).
    assert!(back.transitions().is_some_and(|t| t > token as i64 + 1));
}

/// An API server slower than renew_deadline (a proxy delays every byte):
/// the leader steps down by safe-until (renew_failed), before
/// lease_duration has passed since the slowdown began, and leads again
/// once the server is fast.
#[test]
fn slow_api_server_makes_the_leader_step_down_in_time() {
    let (ns, _) = setup("kl-slow");
    let proxy = Proxy::start(control_plane().port);
    let kubeconfig = ns.kubeconfig(SA, Some(proxy.port()));
    let d = start(&kube_cfg("kl-slow", &ns, T2, ""), "slow", &ns, &kubeconfig);
    wait_until(PATIENCE, "slow leads", || d.is_leading());
    let token = token_of(&d);
    thread::sleep(Duration::from_millis(700));

    let slowed = Instant::now();
    proxy.delay(Duration::from_millis(2500));
    wait_until(PATIENCE, "the leader steps down", || !d.is_leading());
    let down = slowed.elapsed();
    assert!(
        down < T2.lease,
        "/leader answered 200 for {down:?} after the API server slowed down (lease {:?})",
        T2.lease
    );
    // And never leads again while the server is slow.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(!d.is_leading(), "led again with a slow API server");
        thread::sleep(Duration::from_millis(50));
    }
    let st = d.status();
    assert_eq!(st["reason"], "renew_failed", "{st}");
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("stepped down") && l.contains("renew_failed")),
        "{}",
        d.log()
    );

    proxy.heal();
    wait_until(PATIENCE, "slow leads again", || d.is_leading());
    assert!(token_of(&d) > token);

    // SIGTERM while the API server hangs: /leader 503 at once, and the
    // release gives up after min(renew_deadline, 5s); exit 0.
    proxy.blackhole();
    let sig = Instant::now();
    d.signal("TERM");
    wait_until(Duration::from_secs(5), "/leader 503 after SIGTERM", || {
        !d.is_leading()
    });
    assert!(
        sig.elapsed() < T2.renew,
        "led {:?} after SIGTERM",
        sig.elapsed()
    );
    assert_eq!(d.wait_exit(Duration::from_secs(5)), Some(0), "{}", d.log());
    assert!(
        sig.elapsed() < T2.renew + Duration::from_secs(2),
        "shutdown took {:?} with a hung API server",
        sig.elapsed()
    );
}

/// A real 403 on update (the Role loses `update`) names the verb, `leases`
/// and the namespace in the log and in /status backend_error.
#[test]
fn forbidden_update_is_named_in_the_log_and_status() {
    let (ns, kubeconfig) = setup("kl-rbac");
    let d = start(&kube_cfg("kl-rbac", &ns, T1, ""), "rbac", &ns, &kubeconfig);
    wait_until(PATIENCE, "rbac leads", || d.is_leading());

    ns.set_role(
        SA,
        vec![rule(
            "coordination.k8s.io",
            "leases",
            &["get", "watch", "create"],
            &[],
        )],
    );
    wait_until(PATIENCE, "rbac steps down", || !d.is_leading());
    let name = ns.name().to_string();
    let names_it =
        |text: &str| text.contains("update") && text.contains("leases") && text.contains(&name);
    let err = wait_for(PATIENCE, "backend_error naming the refused verb", || {
        let st = d.try_status()?;
        st["backend_error"]
            .as_str()
            .filter(|e| names_it(e))
            .map(str::to_string)
    });
    assert!(err.to_lowercase().contains("forbidden"), "{err}");
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| names_it(l) && l.to_lowercase().contains("forbidden")),
        "the log does not name the refused verb:\n{log}"
    );
    let user = ns.user(SA);
    assert!(
        ns.requests()
            .iter()
            .any(|r| r.user == user && r.verb == "update" && r.code == 403)
    );

    let mut rules = lease_rules();
    rules.extend(event_rules());
    ns.set_role(SA, rules);
    wait_until(PATIENCE, "rbac leads again", || d.is_leading());
    wait_until(PATIENCE, "backend_error cleared", || {
        d.try_status()
            .is_some_and(|st| st["backend_error"].is_null())
    });
}

/// A 403 on `watch` must be visible: the log names the verb, `leases` and
/// the namespace at warning level or above (the election still works by
/// polling, but handovers lose their speed).
#[test]
fn forbidden_watch_is_reported() {
    let (ns, kubeconfig) = setup("kl-nowatch");
    ns.set_role(
        SA,
        vec![rule(
            "coordination.k8s.io",
            "leases",
            &["get", "create", "update"],
            &[],
        )],
    );
    ns.wait_authorized(SA, "watch", "coordination.k8s.io", "leases", false);
    let cfg = kube_cfg("kl-nowatch", &ns, T2, "");
    let mut ds: Vec<Leaderd> = ["nw-a", "nw-b"]
        .iter()
        .map(|id| start(&cfg, id, &ns, &kubeconfig))
        .collect();
    let li = wait_for_leader(&refs(&ds), PATIENCE);
    let old = ds.remove(li);
    // Without the watch a follower still takes a released lease, at its
    // next poll (retry_period).
    let sig = Instant::now();
    old.signal("TERM");
    assert_eq!(old.wait_exit(Duration::from_secs(5)), Some(0));
    wait_for_leader(&refs(&ds), PATIENCE);
    assert!(
        sig.elapsed() < T2.lease,
        "handover took {:?}",
        sig.elapsed()
    );

    let name = ns.name().to_string();
    let visible = |log: &str| {
        log.lines().any(|l| {
            (l.contains(" WARN ") || l.contains(" ERROR "))
                && l.contains("watch")
                && l.contains("leases")
                && l.contains(&name)
        })
    };
    for d in ds.iter().chain([&old]) {
        assert!(
            visible(&d.log()),
            "{}: the refused watch is not reported at warning level:\n{}",
            d.identity(),
            d.log()
        );
    }
}

/// A Lease deleted under the leader: it steps down (lock_lost), and the
/// next term's token is still greater than every token seen.
#[test]
fn deleted_lease_ends_the_term_and_tokens_keep_growing() {
    let (ns, kubeconfig) = setup("kl-delete");
    let ds: Vec<Leaderd> = ["del-a", "del-b"]
        .iter()
        .map(|id| start(&kube_cfg("kl-delete", &ns, T2, ""), id, &ns, &kubeconfig))
        .collect();
    let li = wait_for_leader(&refs(&ds), PATIENCE);
    let token = token_of(&ds[li]);
    assert!(ns.delete_lease("kl-delete"));
    // Recreated as a placeholder first, taken by a candidate a lease later.
    wait_until(PATIENCE, "a candidate takes the recreated lease", || {
        ns.lease_holder("kl-delete")
            .is_some_and(|h| h.starts_with("del-"))
    });
    let ni = wait_for_leader(&refs(&ds), PATIENCE);
    let new_token = token_of(&ds[ni]);
    assert!(
        new_token > token,
        "token {new_token} after {token} (lease deleted)"
    );
    assert!(
        ds[li]
            .log()
            .lines()
            .any(|l| l.contains("stepped down") && l.contains("lock_lost")),
        "{}",
        ds[li].log()
    );
}

// ---------------------------------------------------------------------------
// leaderd check, configuration errors
// ---------------------------------------------------------------------------

#[test]
fn check_reports_the_holder_of_the_lease() {
    let (ns, kubeconfig) = setup("kl-check");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kube.yaml");
    fs::write(&path, kube_cfg("kl-check", &ns, T2, "")).expect("write config");

    let (code, stdout, stderr) = check(&path, &kubeconfig);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("does not exist"), "{stdout}");
    assert!(
        stdout.contains(&format!("{}/kl-check", ns.name())),
        "{stdout}"
    );

    let now = SystemTime::now();
    ns.put_lease("kl-check", client_go_spec("client-go-pod", 2, now, now, 3));
    let (code, stdout, stderr) = check(&path, &kubeconfig);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("client-go-pod") && l.contains('3')),
        "{stdout}"
    );

    ns.set_role(
        SA,
        vec![rule(
            "coordination.k8s.io",
            "leases",
            &["watch", "create", "update"],
            &[],
        )],
    );
    ns.wait_authorized(SA, "get", "coordination.k8s.io", "leases", false);
    let (code, stdout, stderr) = check(&path, &kubeconfig);
    let all = format!("{stdout}{stderr}");
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("get") && all.contains("leases") && all.contains(ns.name()),
        "{all}"
    );
    assert!(!all.contains("panicked"), "{all}");
}

#[test]
fn kubernetes_config_errors_exit_2_naming_the_field() {
    let (ns, kubeconfig) = setup("kl-cfg");
    let dir = tempfile::tempdir().expect("tempdir");
    let good = kube_cfg("kl-cfg", &ns, T2, "");
    let cases = [
        (
            "both.yaml",
            good.replace(
                "backend:\n",
                "backend:\n  redis:\n    urls: [\"redis://127.0.0.1:1\"]\n",
            ),
            "backend",
        ),
        (
            "fraction.yaml",
            good.replace("lease_duration: 2s", "lease_duration: 1500ms")
                .replace("renew_deadline: 1200ms", "renew_deadline: 1000ms"),
            "election.lease_duration",
        ),
    ];
    for (file, yaml, field) in cases {
        let path = dir.path().join(file);
        fs::write(&path, &yaml).expect("write config");
        let out = leaderd_command()
            .env("KUBECONFIG", &kubeconfig)
            .args(["run", "--config", path.to_str().expect("utf-8 path")])
            .output()
            .expect("run leaderd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}\n{yaml}");
        assert!(stderr.contains(file), "{file}: {stderr}");
        assert!(stderr.contains(&format!("{field}:")), "{file}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(
        ns.requests().is_empty(),
        "a bad config contacted the API:\n{}",
        ns.dump()
    );
}
