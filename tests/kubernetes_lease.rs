//! The Kubernetes Lease backend against the fake API server
//! (tests/support/fake_kube.rs), reached through `kubernetes.api_url`.
//!
//! Every candidate is the real `leaderd` binary. The fake records every
//! Lease write with the instant it happened, so timing claims ("no takeover
//! before the lease expired by local observation") are checked against the
//! server's own history. Records a client-go candidate would write are
//! written through the fake in client-go's exact JSON format, and what
//! leaderd writes is checked against the rules client-go reads it with.

#[path = "support/fake_kube.rs"]
mod fake_kube;
mod support;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use fake_kube::{FakeKube, LeaseWrite, micro_time, parse_micro_time};
use serde_json::{Value, json};
use support::*;

const NS: &str = "elections";

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

/// A kubernetes-backend config for election `name` (Lease `NS/name`).
fn kube_cfg(name: &str, kube: &FakeKube, t: Timing, extra: &str) -> String {
    format!(
        "election:\n  name: {name}\n  lease_duration: {}s\n  renew_deadline: {}ms\n  retry_period: {}ms\nbackend:\n  kubernetes:\n    namespace: {NS}\n    lease_name: {name}\nkubernetes:\n  api_url: \"{}\"\nhttp:\n  listen: \"127.0.0.1:0\"\n{extra}",
        t.lease.as_secs(),
        t.renew.as_millis(),
        t.retry.as_millis(),
        kube.url(),
    )
}

fn start(cfg: &str, identity: &str) -> Leaderd {
    Leaderd::builder(cfg)
        .identity(identity)
        .env("POD_NAMESPACE", NS)
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

/// Writes by clients (not by the test) after `since`.
fn client_writes_since(kube: &FakeKube, since: Instant) -> Vec<LeaseWrite> {
    kube.lease_writes()
        .into_iter()
        .filter(|w| !w.by_test() && w.at >= since)
        .collect()
}

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

/// The spec of the last successful PUT/POST that leaderd (`identity`) sent,
/// exactly as it was on the wire (the fake stores a normalised copy).
fn last_sent_spec(kube: &FakeKube, identity: &str) -> Value {
    kube.requests()
        .iter()
        .rev()
        .filter(|r| (r.method == "PUT" || r.method == "POST") && r.status < 300)
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok())
        .map(|body| body["spec"].clone())
        .find(|spec| spec["holderIdentity"] == identity)
        .unwrap_or_else(|| panic!("no write by {identity} on the wire:\n{}", kube.dump()))
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

/// Keeps a client-go style record renewed (as its holder would) until
/// dropped: every 500 ms, renewTime advances from `renew0` by the time
/// elapsed; everything else stays.
struct Renewer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Renewer {
    fn start(kube: Arc<FakeKube>, name: &str, spec: Value, renew0: SystemTime) -> Renewer {
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
                kube.put_lease(NS, &name, next);
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
// Elections
// ---------------------------------------------------------------------------

#[test]
fn three_candidates_elect_exactly_one_leader_and_agree() {
    let kube = FakeKube::start();
    // Namespace and Lease name left to their defaults: POD_NAMESPACE and
    // election.name.
    let cfg = format!(
        "election:\n  name: kl-three\n  lease_duration: 1s\n  renew_deadline: 600ms\n  retry_period: 150ms\nbackend:\n  kubernetes:\n    namespace: \"\"\n    lease_name: \"\"\nkubernetes:\n  api_url: \"{}\"\nhttp:\n  listen: \"127.0.0.1:0\"\n",
        kube.url()
    );
    let ds: Vec<Leaderd> = ["three-a", "three-b", "three-c"]
        .iter()
        .map(|id| start(&cfg, id))
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
    let spec = kube
        .lease_spec(NS, "kl-three")
        .unwrap_or_else(|| panic!("no lease {NS}/kl-three:\n{}", kube.dump()));
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
    let later = kube.lease_spec(NS, "kl-three").expect("lease");
    assert_ne!(later["renewTime"], renew0, "no renewal in 1.5 s");
    assert_eq!(
        later["acquireTime"], spec["acquireTime"],
        "acquireTime must stay for the whole term"
    );

    // Exactly one create succeeded; the API was used as leaderd promises:
    // every update carried a resourceVersion, nothing was refused other
    // than a lost create race (409) or the first read (404).
    let creates = kube
        .lease_writes()
        .iter()
        .filter(|w| w.verb == "create")
        .count();
    assert_eq!(creates, 1, "{}", kube.dump_lease_writes());
    for r in kube.requests() {
        assert!(
            r.path.starts_with(&format!(
                "/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
            )),
            "unexpected request {r:?}"
        );
        let allowed = r.status < 400
            || (r.status == 404 && r.method == "GET")
            || (r.status == 409 && r.method == "POST");
        assert!(allowed, "refused request {r:?}\n{}", kube.dump());
        if r.method == "PUT" {
            let body: Value = serde_json::from_str(&r.body).expect("PUT body is JSON");
            assert!(
                body["metadata"]["resourceVersion"].is_string(),
                "an update without resourceVersion: {}",
                r.body
            );
        }
    }
    assert!(
        kube.open_watches() >= 3,
        "every candidate watches the lease"
    );
}

/// Graceful handover: the leader writes what client-go's ReleaseOnCancel
/// writes and a follower takes over through the watch.
///
/// The retry period is long here (1 s) on purpose: SIGTERM comes 100 ms
/// after a renewal, which every follower has just read, so without the
/// watch no follower would look again for ~900 ms. A takeover within
/// 400 ms of the release can only come from the watch.
#[test]
fn graceful_handover_is_seen_through_the_watch() {
    let kube = FakeKube::start();
    let t = Timing {
        lease: Duration::from_secs(2),
        renew: Duration::from_millis(1500),
        retry: Duration::from_millis(1000),
    };
    let cfg = kube_cfg("kl-handover", &kube, t, "");
    let mut ds: Vec<Leaderd> = ["ho-a", "ho-b", "ho-c"]
        .iter()
        .map(|id| start(&cfg, id))
        .collect();

    for round in 0..2 {
        let li = wait_for_leader(&refs(&ds), PATIENCE);
        let old = ds.remove(li);
        let old_token = token_of(&old);
        if round == 1 {
            // The API server ends every watch (as on its timeoutSeconds or
            // a restart): the candidates must watch again.
            let before = kube.requests().len();
            kube.end_watches();
            wait_until(PATIENCE, "every candidate watches again", || {
                kube.requests()[before..]
                    .iter()
                    .filter(|r| r.path.contains("watch=true") && r.status == 200)
                    .count()
                    > ds.len()
            });
        }
        wait_until(PATIENCE, "every candidate watches the lease", || {
            kube.open_watches() > ds.len()
        });
        // Wait for a fresh renewal (its watch event makes every follower
        // read the lease), then stop the leader shortly after it.
        let since = Instant::now();
        wait_until(PATIENCE, "a renewal by the leader", || {
            client_writes_since(&kube, since)
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
        let writes = client_writes_since(&kube, sig);
        let release = writes.first().unwrap_or_else(|| {
            panic!(
                "round {round}: no write after SIGTERM:\n{}",
                kube.dump_lease_writes()
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
            .unwrap_or_else(|| panic!("round {round}: no takeover:\n{}", kube.dump_lease_writes()));
        assert_eq!(takeover.holder(), ds[ni].identity());
        let gap = takeover.at.duration_since(release.at);
        assert!(
            gap < Duration::from_millis(400),
            "round {round}: takeover {gap:?} after the release: not woken by the watch\n{}",
            kube.dump_lease_writes()
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
    let kube = FakeKube::start();
    let cfg = kube_cfg("kl-crash", &kube, T2, "");
    let mut ds: Vec<Leaderd> = ["cr-a", "cr-b", "cr-c"]
        .iter()
        .map(|id| start(&cfg, id))
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
    let writes = kube.lease_writes();
    let last_renew = writes
        .iter()
        .rev()
        .find(|w| w.holder() == old.identity())
        .expect("the old leader wrote the lease");
    let takeover = writes
        .iter()
        .find(|w| w.at > last_renew.at && !w.holder().is_empty())
        .unwrap_or_else(|| panic!("no takeover write:\n{}", kube.dump_lease_writes()));
    assert!(last_renew.at <= killed + Duration::from_millis(100));
    let after = takeover.at.duration_since(last_renew.at);
    assert!(
        after >= T2.lease,
        "taken over {after:?} after the last renewal, before leaseDurationSeconds ({:?})\n{}",
        T2.lease,
        kube.dump_lease_writes()
    );
    assert!(
        after < T2.lease + Duration::from_millis(1500),
        "taken over only {after:?} after the last renewal\n{}",
        kube.dump_lease_writes()
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
    let kube = FakeKube::start();
    let cfg = kube_cfg("kl-frozen", &kube, T2, "");
    let ds: Vec<Leaderd> = ["fz-a", "fz-b"].iter().map(|id| start(&cfg, id)).collect();
    let li = wait_for_leader(&refs(&ds), PATIENCE);
    let (old, other) = (&ds[li], &ds[1 - li]);
    thread::sleep(Duration::from_millis(500));
    old.signal("STOP");
    wait_until(PATIENCE, "the other candidate takes over", || {
        other.is_leading()
    });
    let writes = kube.lease_writes();
    let last = writes
        .iter()
        .rev()
        .find(|w| w.holder() == old.identity())
        .expect("the frozen leader's writes");
    let takeover = writes
        .iter()
        .find(|w| w.at > last.at && w.holder() == other.identity())
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
    let overwrites: Vec<_> = kube
        .lease_writes()
        .into_iter()
        .filter(|w| w.at > takeover.at && w.holder() == old.identity())
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
/// leaseDurationSeconds, and what it writes passes client-go's decoding.
#[test]
fn client_go_record_with_skewed_clock_is_honoured_then_taken_over() {
    let kube = Arc::new(FakeKube::start());
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
    kube.put_lease(NS, "kl-skew", spec.clone());
    let mut renewer = Renewer::start(kube.clone(), "kl-skew", spec, now - hour);

    let cfg = kube_cfg("kl-skew", &kube, T2, &new_leader_hook(&hooks_file));
    let d = start(&cfg, "skewed");
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
            kube.dump_lease_writes()
        );
        let st = d.status();
        assert_eq!(st["leader"], "client-go-pod", "{st}");
        assert_eq!(st["is_leader"], false, "{st}");
        thread::sleep(Duration::from_millis(100));
    }
    let stray = client_writes_since(&kube, t0);
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
    let last = kube
        .lease_writes()
        .into_iter()
        .rev()
        .find(LeaseWrite::by_test)
        .expect("test renewals");
    wait_until(PATIENCE, "leaderd takes over", || d.is_leading());
    let takeover = client_writes_since(&kube, last.at)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no takeover write:\n{}", kube.dump_lease_writes()));
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
    let sent = last_sent_spec(&kube, "skewed");
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

/// A client-go holder that gives the Lease back (ReleaseOnCancel: empty
/// holderIdentity, leaseDurationSeconds 1) is replaced at once: well within
/// the 1 s a candidate would wait if it honoured the released record as
/// held (the handover test shows the watch makes it milliseconds).
#[test]
fn client_go_release_is_taken_at_once() {
    let kube = Arc::new(FakeKube::start());
    let now = SystemTime::now();
    let held = client_go_spec("client-go-pod", 2, now, now, 5);
    kube.put_lease(NS, "kl-cg-release", held.clone());
    let mut renewer = Renewer::start(kube.clone(), "kl-cg-release", held, now);
    let d = start(&kube_cfg("kl-cg-release", &kube, T2, ""), "cg-follower");
    wait_until(PATIENCE, "leaderd follows client-go-pod", || {
        d.try_status()
            .is_some_and(|st| st["leader"] == "client-go-pod")
    });
    wait_until(PATIENCE, "leaderd watches", || kube.open_watches() >= 1);
    renewer.stop();
    let t = SystemTime::now();
    let released = Instant::now();
    kube.put_lease(NS, "kl-cg-release", client_go_spec("", 1, t, t, 5));
    wait_until(PATIENCE, "leaderd takes the released lease", || {
        d.is_leading()
    });
    let takeover = client_writes_since(&kube, released)
        .into_iter()
        .next()
        .expect("takeover write");
    let gap = takeover.at.duration_since(released);
    assert!(
        gap < Duration::from_millis(700),
        "took the released lease only after {gap:?}"
    );
    assert_eq!(takeover.holder(), "cg-follower");
    assert_eq!(takeover.transitions(), Some(6));
}

/// A record whose renewTime is an hour in the future (its writer's clock
/// runs ahead) and that nobody renews expires after leaseDurationSeconds of
/// our observation, not in an hour.
#[test]
fn future_renew_time_is_taken_over_after_lease_duration() {
    let kube = FakeKube::start();
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    kube.put_lease(
        NS,
        "kl-future",
        client_go_spec("client-go-pod", 2, now + hour, now + hour, 7),
    );
    let started = Instant::now();
    let d = start(&kube_cfg("kl-future", &kube, T2, ""), "future");
    wait_until(PATIENCE, "leaderd sees client-go-pod", || {
        d.is_leading()
            || d.try_status()
                .is_some_and(|st| st["leader"] == "client-go-pod")
    });
    wait_until(Duration::from_secs(10), "leaderd takes over", || {
        d.is_leading()
    });
    let takeover = client_writes_since(&kube, started)
        .into_iter()
        .next()
        .expect("takeover write");
    let after = takeover.at.duration_since(started);
    assert!(
        after >= Duration::from_secs(2),
        "taken over {after:?} after leaderd started: before the record could have expired by its observation"
    );
    assert_eq!(takeover.holder(), "future");
    assert_eq!(takeover.transitions(), Some(8));
    assert_eq!(token_of(&d), 8);
    let rec = client_go_record(&last_sent_spec(&kube, "future")).expect("client-go readable");
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
    let kube = FakeKube::start();
    let d = start(&kube_cfg("kl-cas", &kube, T2, ""), "cas");
    wait_until(PATIENCE, "cas leads", || d.is_leading());
    let token = token_of(&d);

    for poke in 0..3 {
        let poked = Instant::now();
        kube.edit_lease(NS, "kl-cas", |lease| {
            lease["metadata"]["annotations"] = json!({"example.com/poke": poke.to_string()});
        });
        wait_for(PATIENCE, "a renewal after the annotation change", || {
            let ok = client_writes_since(&kube, poked)
                .into_iter()
                .any(|w| w.verb == "update" && w.holder() == "cas");
            assert!(
                d.is_leading(),
                "stopped leading after a metadata-only change"
            );
            ok.then_some(())
        });
        let lease = kube.lease(NS, "kl-cas").expect("lease");
        assert_eq!(
            lease["metadata"]["annotations"]["example.com/poke"],
            poke.to_string(),
            "the leader overwrote another client's change: {lease}"
        );
    }
    assert!(
        kube.requests()
            .iter()
            .any(|r| r.method == "PUT" && r.status == 409),
        "no stale update was refused:\n{}",
        kube.dump()
    );
    assert_eq!(token_of(&d), token, "the term changed");
    assert!(!d.log().contains("stepped down"), "{}", d.log());

    // Another holder's write (a client-go candidate's CAS succeeded).
    let now = SystemTime::now();
    let written = Instant::now();
    kube.put_lease(
        NS,
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
    let back = client_writes_since(&kube, written)
        .into_iter()
        .next()
        .expect("a takeover write");
    assert!(
        back.at.duration_since(written) >= T2.lease,
        "overwrote the intruder's live record:\n{}",
        kube.dump_lease_writes()
    );
    assert_eq!(back.transitions(), Some(token as i64 + 2));
}

/// An API server slower than renew_deadline: the leader steps down by
/// safe-until (renew_failed), before lease_duration has passed since the
/// slowdown began, and leads again once the server is fast.
#[test]
fn slow_api_server_makes_the_leader_step_down_in_time() {
    let kube = FakeKube::start();
    let d = start(&kube_cfg("kl-slow", &kube, T2, ""), "slow");
    wait_until(PATIENCE, "slow leads", || d.is_leading());
    let token = token_of(&d);
    thread::sleep(Duration::from_millis(700));

    let slowed = Instant::now();
    kube.set_latency(Duration::from_millis(2500));
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

    kube.set_latency(Duration::ZERO);
    wait_until(PATIENCE, "slow leads again", || d.is_leading());
    assert!(token_of(&d) > token);

    // SIGTERM while the API server hangs: /leader 503 at once, and the
    // release gives up after min(renew_deadline, 5s); exit 0.
    kube.set_latency(Duration::from_secs(30));
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

/// A 403 on update names the verb, `leases` and the namespace in the log
/// and in /status backend_error.
#[test]
fn forbidden_update_is_named_in_the_log_and_status() {
    let kube = FakeKube::start();
    kube.set_user("system:serviceaccount:elections:no-update");
    let d = start(&kube_cfg("kl-rbac", &kube, T1, ""), "rbac");
    wait_until(PATIENCE, "rbac leads", || d.is_leading());

    kube.forbid_lease("update", true);
    wait_until(PATIENCE, "rbac steps down", || !d.is_leading());
    let names_it =
        |text: &str| text.contains("update") && text.contains("leases") && text.contains(NS);
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
    assert!(
        kube.requests()
            .iter()
            .any(|r| r.method == "PUT" && r.status == 403)
    );

    kube.forbid_lease("update", false);
    wait_until(PATIENCE, "rbac leads again", || d.is_leading());
    wait_until(PATIENCE, "backend_error cleared", || {
        d.try_status()
            .is_some_and(|st| st["backend_error"].is_null())
    });
}

/// A 403 on `watch` must be visible: the log names the verb, `leases` and
/// the namespace at warning level or above (the election still works by
/// polling, but handovers lose their speed).
///
/// Ignored: the watcher (src/backend/kubernetes/watcher.rs) logs a failed
/// watch only with `tracing::debug!` ("cannot watch the lease"), invisible
/// at the default `info` level, and without `crate::kubernetes::explain`.
#[test]
fn forbidden_watch_is_reported() {
    let kube = FakeKube::start();
    kube.forbid_lease("watch", true);
    let cfg = kube_cfg("kl-nowatch", &kube, T2, "");
    let mut ds: Vec<Leaderd> = ["nw-a", "nw-b"].iter().map(|id| start(&cfg, id)).collect();
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

    let visible = |log: &str| {
        log.lines().any(|l| {
            (l.contains(" WARN ") || l.contains(" ERROR "))
                && l.contains("watch")
                && l.contains("leases")
                && l.contains(NS)
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
    let kube = FakeKube::start();
    let ds: Vec<Leaderd> = ["del-a", "del-b"]
        .iter()
        .map(|id| start(&kube_cfg("kl-delete", &kube, T2, ""), id))
        .collect();
    let li = wait_for_leader(&refs(&ds), PATIENCE);
    let token = token_of(&ds[li]);
    assert!(kube.remove_lease(NS, "kl-delete"));
    wait_until(PATIENCE, "the lease is recreated", || {
        kube.lease_holder(NS, "kl-delete").is_some()
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
    let kube = FakeKube::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kube.yaml");
    fs::write(&path, kube_cfg("kl-check", &kube, T2, "")).expect("write config");
    let p = path.to_str().expect("utf-8 path");
    let check = || {
        let out = run_leaderd(&["check", "--config", p], Duration::from_secs(20));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = check();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("does not exist"), "{stdout}");
    assert!(stdout.contains(&format!("{NS}/kl-check")), "{stdout}");

    let now = SystemTime::now();
    kube.put_lease(
        NS,
        "kl-check",
        client_go_spec("client-go-pod", 2, now, now, 3),
    );
    let (code, stdout, stderr) = check();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("client-go-pod") && l.contains('3')),
        "{stdout}"
    );

    kube.forbid_lease("get", true);
    let (code, stdout, stderr) = check();
    let all = format!("{stdout}{stderr}");
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("get") && all.contains("leases") && all.contains(NS),
        "{all}"
    );
    assert!(!all.contains("panicked"), "{all}");
}

#[test]
fn kubernetes_config_errors_exit_2_naming_the_field() {
    let kube = FakeKube::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let good = kube_cfg("kl-cfg", &kube, T2, "");
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
        let out = run_leaderd(
            &["run", "--config", path.to_str().expect("utf-8 path")],
            Duration::from_secs(10),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}\n{yaml}");
        assert!(stderr.contains(file), "{file}: {stderr}");
        assert!(stderr.contains(&format!("{field}:")), "{file}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(
        kube.requests().is_empty(),
        "a bad config contacted the API:\n{}",
        kube.dump()
    );
}

// ---------------------------------------------------------------------------
// The fake itself (so a failure above is about leaderd, not the fake)
// ---------------------------------------------------------------------------

fn call(method: &str, url: &str, body: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let resp = match method {
        "GET" => agent.get(url).call(),
        "DELETE" => agent.delete(url).call(),
        "POST" => agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body),
        "PUT" => agent
            .put(url)
            .header("Content-Type", "application/json")
            .send(body),
        other => panic!("method {other}"),
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let code = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Opens a watch and returns a reader of its newline-delimited events.
fn open_watch(url: &str) -> impl FnMut() -> Option<Value> + use<> {
    use std::io::BufRead;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let resp = agent.get(url).call().expect("watch");
    assert_eq!(resp.status().as_u16(), 200);
    let mut reader = std::io::BufReader::new(resp.into_body().into_reader());
    move || {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("a watch event is one JSON line")),
        }
    }
}

#[test]
fn fake_kube_enforces_the_lease_api_rules() {
    let kube = FakeKube::start();
    let leases = format!(
        "{}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases",
        kube.url()
    );
    let spec = r#"{"holderIdentity":"a","leaseDurationSeconds":2,"acquireTime":"2026-11-26T15:04:05.123456Z","renewTime":"2026-11-26T15:04:05.123456Z","leaseTransitions":0}"#;
    let lease = |rv: Option<&str>, spec: &str| {
        let rv = rv.map_or(String::new(), |rv| format!(r#","resourceVersion":"{rv}""#));
        format!(
            r#"{{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{{"name":"l1","namespace":"{NS}"{rv}}},"spec":{spec}}}"#
        )
    };

    let (code, body) = call("GET", &format!("{leases}/l1"), "");
    assert_eq!(
        (code, body["reason"].as_str()),
        (404, Some("NotFound")),
        "{body}"
    );
    assert_eq!(body["details"]["group"], "coordination.k8s.io");

    // Watch from "0" before anything exists: ADDED then MODIFIED.
    let mut events = open_watch(&format!(
        "{leases}?&watch=true&timeoutSeconds=3&fieldSelector=metadata.name%3Dl1&allowWatchBookmarks=true&resourceVersion=0"
    ));

    let (code, created) = call("POST", &leases, &lease(None, spec));
    assert_eq!(code, 201, "{created}");
    let rv1 = created["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let (code, body) = call("POST", &leases, &lease(None, spec));
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("AlreadyExists")),
        "{body}"
    );
    assert_eq!(call("POST", &leases, &lease(Some("5"), spec)).0, 500);

    // PUT: a compare-and-swap on resourceVersion.
    let (code, body) = call("PUT", &format!("{leases}/l1"), &lease(None, spec));
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("Conflict")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("must be specified"),
        "{body}"
    );
    let (code, body) = call("PUT", &format!("{leases}/l1"), &lease(Some("999"), spec));
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("Conflict")),
        "{body}"
    );
    let (code, updated) = call("PUT", &format!("{leases}/l1"), &lease(Some(&rv1), spec));
    assert_eq!(code, 200, "{updated}");
    let rv2 = updated["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    assert_ne!(rv1, rv2);
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        call("PUT", &format!("{leases}/l1"), &lease(Some(&rv1), spec)).0,
        409
    );
    let missing = lease(Some("1"), spec).replace("\"l1\"", "\"l2\"");
    assert_eq!(call("PUT", &format!("{leases}/l2"), &missing).0, 404);
    assert_eq!(
        call("PUT", &format!("{leases}/l2"), &lease(Some(&rv2), spec)).0,
        400
    );

    // Decoding and validation as the API server does them.
    for (bad, code) in [
        (spec.replace(".123456Z", ".123Z"), 400),
        (spec.replace(".123456Z", "Z"), 400),
        (
            spec.replace("\"leaseDurationSeconds\":2", "\"leaseDurationSeconds\":1.5"),
            400,
        ),
        (
            spec.replace(
                "\"leaseDurationSeconds\":2",
                "\"leaseDurationSeconds\":\"2\"",
            ),
            400,
        ),
        (
            spec.replace("\"leaseDurationSeconds\":2", "\"leaseDurationSeconds\":0"),
            422,
        ),
        (
            spec.replace("\"leaseTransitions\":0", "\"leaseTransitions\":-1"),
            422,
        ),
    ] {
        let (got, body) = call("PUT", &format!("{leases}/l1"), &lease(Some(&rv2), &bad));
        assert_eq!(got, code, "{bad}: {body}");
    }
    let offset = spec.replace("15:04:05.123456Z", "16:04:05.123456+01:00");
    let (code, body) = call("PUT", &format!("{leases}/l1"), &lease(Some(&rv2), &offset));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["spec"]["renewTime"], "2026-11-26T15:04:05.123456Z",
        "stored in UTC"
    );

    // The watch saw the create and both updates, in order.
    let kinds: Vec<(String, String)> = (0..3)
        .map(|_| {
            let ev = events().expect("an event");
            (
                ev["type"].as_str().expect("type").to_string(),
                ev["object"]["metadata"]["resourceVersion"]
                    .as_str()
                    .expect("rv")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(kinds[0], ("ADDED".to_string(), rv1.clone()));
    assert_eq!(kinds[1], ("MODIFIED".to_string(), rv2.clone()));
    assert_eq!(kinds[2].0, "MODIFIED");
    // A test write is seen like any other, then the stream ends on its
    // timeoutSeconds.
    kube.edit_lease(NS, "l1", |l| {
        l["metadata"]["annotations"] = json!({"k": "v"})
    });
    let ev = events().expect("event for the test's write");
    assert_eq!(ev["object"]["metadata"]["annotations"]["k"], "v");
    let waited = Instant::now();
    assert!(events().is_none(), "the stream ends");
    assert!(waited.elapsed() < Duration::from_secs(4));

    // A watch from a resourceVersion replays what came after it; from
    // "0" it starts with the current object.
    let mut from_rv1 = open_watch(&format!(
        "{leases}?watch=true&timeoutSeconds=1&fieldSelector=metadata.name%3Dl1&resourceVersion={rv1}"
    ));
    assert_eq!(
        from_rv1().expect("event")["object"]["metadata"]["resourceVersion"],
        rv2.as_str()
    );
    let mut from_zero = open_watch(&format!(
        "{leases}?watch=true&timeoutSeconds=1&resourceVersion=0"
    ));
    let first = from_zero().expect("event");
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["metadata"]["annotations"]["k"], "v");
    assert!(from_zero().is_none());
    // end_watches closes open streams.
    let now_rv = kube.lease(NS, "l1").expect("l1")["metadata"]["resourceVersion"].clone();
    let now_rv = now_rv.as_str().expect("rv");
    let mut ended = open_watch(&format!("{leases}?watch=true&resourceVersion={now_rv}"));
    wait_until(Duration::from_secs(5), "watch registered", || {
        kube.open_watches() >= 1
    });
    kube.end_watches();
    assert!(ended().is_none());

    // LIST with field selectors.
    kube.put_lease(NS, "l3", serde_json::from_str(spec).expect("spec"));
    let names = |query: &str| -> Vec<String> {
        let (code, list) = call("GET", &format!("{leases}?{query}"), "");
        assert_eq!(code, 200, "{query}: {list}");
        assert_eq!(list["kind"], "LeaseList");
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|l| l["metadata"]["name"].as_str().expect("name").to_string())
            .collect()
    };
    assert_eq!(names(""), ["l1", "l3"]);
    assert_eq!(names("fieldSelector=metadata.name%3Dl3"), ["l3"]);
    assert_eq!(names("fieldSelector=metadata.name!%3Dl3"), ["l1"]);
    let (code, body) = call(
        "GET",
        &format!("{leases}?fieldSelector=spec.holderIdentity%3Da"),
        "",
    );
    assert_eq!(code, 400, "{body}");

    // 403 per verb, worded like the API server.
    kube.forbid_lease("update", true);
    let (code, body) = call("PUT", &format!("{leases}/l1"), &lease(Some("1"), spec));
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        format!(
            "leases.coordination.k8s.io \"l1\" is forbidden: User \"system:serviceaccount:{NS}:leaderd\" cannot update resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"{NS}\""
        )
    );
    kube.forbid_lease("update", false);
    kube.forbid_lease("watch", true);
    assert_eq!(call("GET", &format!("{leases}?watch=true"), "").0, 403);
    assert_eq!(call("GET", &leases, "").0, 200);
    kube.forbid_lease("watch", false);

    // Latency, per verb.
    kube.set_latency_for("get", Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(call("GET", &format!("{leases}/l1"), "").0, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    kube.set_latency_for("get", Duration::ZERO);

    // DELETE; the record of writes.
    assert_eq!(call("DELETE", &format!("{leases}/l3"), "").0, 200);
    assert_eq!(call("DELETE", &format!("{leases}/l3"), "").0, 404);
    assert!(kube.lease(NS, "l3").is_none());
    let verbs: Vec<&str> = kube.lease_writes().iter().map(|w| w.verb).collect();
    assert_eq!(
        verbs,
        ["create", "update", "update", "test", "test", "delete"]
    );
    let rec = client_go_record(&kube.lease_spec(NS, "l1").expect("l1")).expect("readable");
    assert_eq!(rec.holder, "a");
}
