//! A fake Kubernetes API server (core/v1 Pods and coordination.k8s.io/v1
//! Leases) for leaderd's tests.
//!
//! It runs an axum server on 127.0.0.1:0 on its own thread with its own tokio
//! runtime, so synchronous tests can use it. Objects are kept as
//! `serde_json::Value` and the rules of the real API that leaderd relies on
//! are enforced:
//!
//! - `GET /api/v1/namespaces/{ns}/pods/{name}`: the Pod, or 404 with a `Status`.
//! - `PATCH` on the same path: only `application/merge-patch+json` (RFC 7386:
//!   `null` deletes a key); other patch types get 415. A patch carrying a
//!   `metadata.resourceVersion` other than the current one gets 409 Conflict.
//!   Label and annotation values must be strings, label values valid label
//!   values. Every write bumps `metadata.resourceVersion`; the updated object
//!   is returned.
//! - `GET /api/v1/namespaces/{ns}/pods?labelSelector=...`: a `PodList`
//!   (selectors `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a)`,
//!   comma-separated conjunctions).
//! - Leases, under `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases`:
//!   - `GET .../leases/{name}`: the Lease, or 404 with a `Status`.
//!   - `POST .../leases`: create (201); 409 `AlreadyExists` if the name is
//!     taken; 500 if the body carries a `metadata.resourceVersion` (as etcd
//!     storage answers); 422 without a name.
//!   - `PUT .../leases/{name}`: replace, a compare-and-swap on
//!     `metadata.resourceVersion`: 409 `Conflict` if it is missing (Leases do
//!     not allow unconditional updates) or not the current one; 404 if the
//!     Lease does not exist (no create on update).
//!   - `DELETE .../leases/{name}` (no `DeleteOptions`): a `Status` Success.
//!   - `GET .../leases?fieldSelector=metadata.name%3DX`: a `LeaseList`
//!     (field selectors on `metadata.name` / `metadata.namespace` with `=`,
//!     `==`, `!=`; other fields 400 like the real server; label selectors as
//!     for Pods); with `watch=true`, a chunked stream of newline-delimited
//!     `WatchEvent`s `{"type":"ADDED|MODIFIED|DELETED","object":{...}}`:
//!     the current objects as `ADDED` first when `resourceVersion` is `0` or
//!     omitted, else every change after that version; the stream ends after
//!     `timeoutSeconds` (or [`FakeKube::end_watches`]).
//!   - Bodies are decoded as the API server decodes them: `spec` integers
//!     must be JSON integers (int32), `acquireTime` / `renewTime` MicroTimes
//!     in Go's `RFC3339Micro` (exactly six fractional digits, `Z` or an
//!     offset; stored in UTC), unknown `spec` fields dropped (400 on a type
//!     error); then validated (422: `leaseDurationSeconds` > 0,
//!     `leaseTransitions` >= 0).
//!   - Every write bumps `metadata.resourceVersion` (one counter shared with
//!     Pods, like etcd's revision) and is kept in [`FakeKube::lease_writes`].
//!   - A test writes a Lease as another client would (a client-go candidate)
//!     with [`FakeKube::put_lease`] / [`FakeKube::edit_lease`]; watchers see
//!     it like any other write.
//! - 403 Forbidden, worded like the real API server, for a verb the test
//!   switches off with [`FakeKube::forbid`] (Pods) or
//!   [`FakeKube::forbid_lease`] (Leases: `get`, `list`, `watch`, `create`,
//!   `update`, `delete`).
//! - Latency injected before any request is handled: [`FakeKube::set_latency`]
//!   (every request) or [`FakeKube::set_latency_for`] (one verb).
//! - Any other path: logged and answered 404 with a `Status`, so an
//!   unexpected request is visible in [`FakeKube::requests`].
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

/// One request as seen by the fake, with the status it answered.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// Path and query, e.g. `/api/v1/namespaces/ns/pods?labelSelector=app%3Dx`.
    pub path: String,
    pub content_type: Option<String>,
    pub body: String,
    pub status: u16,
}

/// One successful write: the labels of the pod right after it.
#[derive(Debug, Clone)]
pub struct Write {
    pub at: Instant,
    /// Wall-clock time, to compare with timestamps written by hook scripts.
    pub wall: SystemTime,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// One successful write of a Lease, by a client or by the test.
#[derive(Debug, Clone)]
pub struct LeaseWrite {
    pub at: Instant,
    /// Wall-clock time of the write.
    pub wall: SystemTime,
    pub namespace: String,
    pub name: String,
    /// `create`, `update` or `delete` (an API request), or `test` (written
    /// by the test with [`FakeKube::put_lease`] / [`FakeKube::edit_lease`]).
    pub verb: &'static str,
    pub resource_version: String,
    /// The Lease's `spec` right after the write (`null` after a delete).
    pub spec: Value,
}

impl LeaseWrite {
    pub fn by_test(&self) -> bool {
        self.verb == "test"
    }

    /// `spec.holderIdentity` ("" when unset).
    pub fn holder(&self) -> &str {
        self.spec["holderIdentity"].as_str().unwrap_or_default()
    }

    pub fn transitions(&self) -> Option<i64> {
        self.spec["leaseTransitions"].as_i64()
    }

    pub fn duration_seconds(&self) -> Option<i64> {
        self.spec["leaseDurationSeconds"].as_i64()
    }

    pub fn renew_time(&self) -> Option<&str> {
        self.spec["renewTime"].as_str()
    }
}

/// One change of a Lease, as a watch reports it.
#[derive(Debug, Clone)]
struct LeaseEvent {
    rv: u64,
    kind: &'static str,
    namespace: String,
    name: String,
    object: Value,
}

#[derive(Default)]
struct Inner {
    pods: BTreeMap<(String, String), Value>,
    resource_version: u64,
    forbidden: HashSet<String>,
    user: Option<String>,
    requests: Vec<Logged>,
    writes: Vec<Write>,
    leases: BTreeMap<(String, String), Value>,
    lease_forbidden: HashSet<String>,
    lease_writes: Vec<LeaseWrite>,
    lease_events: Vec<LeaseEvent>,
    /// Woken on every Lease change and by [`FakeKube::end_watches`].
    lease_changed: Arc<Notify>,
    /// Bumped by [`FakeKube::end_watches`]: older watch streams end.
    watch_epoch: u64,
    open_watches: usize,
    latency: Duration,
    verb_latency: HashMap<String, Duration>,
}

type Shared = Arc<Mutex<Inner>>;

/// The running fake; stopped on drop.
pub struct FakeKube {
    addr: SocketAddr,
    inner: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeKube {
    pub fn start() -> FakeKube {
        let inner: Shared = Arc::default();
        let app = Router::new()
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                get(get_pod).patch(patch_pod).fallback(method_not_allowed),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                get(list_or_watch_leases)
                    .post(create_lease)
                    .fallback(lease_method_not_allowed),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(get_lease)
                    .put(update_lease)
                    .delete(delete_lease)
                    .fallback(lease_method_not_allowed),
            )
            .fallback(unknown_path)
            .layer(middleware::from_fn_with_state(inner.clone(), log_request))
            .with_state(inner.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake kube");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("fake kube addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fake kube runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::spawn(async move { axum::serve(listener, app).await });
                let _ = stopped.await;
            });
            // Dropping the runtime cancels the server and its connections.
        });
        FakeKube {
            addr,
            inner,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for `kubernetes.api_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) a running pod with these labels.
    pub fn add_pod(&self, ns: &str, name: &str, labels: &[(&str, &str)]) {
        let labels: Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let mut s = self.lock();
        let rv = s.bump();
        let pod = json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"),
                "resourceVersion": rv, "creationTimestamp": "2024-01-01T00:00:00Z",
                "labels": labels, "annotations": {},
            },
            "spec": {"containers": [{"name": "app", "image": "demo:latest"}]},
            "status": {"phase": "Running"},
        });
        s.record_write(ns, name, &pod);
        s.pods.insert((ns.into(), name.into()), pod);
    }

    /// The pod object, if it exists.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.lock().pods.get(&(ns.into(), name.into())).cloned()
    }

    /// The pod's labels (empty if the pod or its labels are missing).
    pub fn labels(&self, ns: &str, name: &str) -> BTreeMap<String, String> {
        self.pod(ns, name)
            .map(|p| string_map(&p["metadata"]["labels"]))
            .unwrap_or_default()
    }

    pub fn label(&self, ns: &str, name: &str, key: &str) -> Option<String> {
        self.labels(ns, name).remove(key)
    }

    pub fn annotations(&self, ns: &str, name: &str) -> BTreeMap<String, String> {
        self.pod(ns, name)
            .map(|p| string_map(&p["metadata"]["annotations"]))
            .unwrap_or_default()
    }

    pub fn annotation(&self, ns: &str, name: &str, key: &str) -> Option<String> {
        self.annotations(ns, name).remove(key)
    }

    /// Names of the pods in `ns` whose label `key` is `value`.
    pub fn pods_with(&self, ns: &str, key: &str, value: &str) -> Vec<String> {
        let s = self.lock();
        s.pods
            .iter()
            .filter(|((n, _), p)| n == ns && p["metadata"]["labels"][key] == value)
            .map(|((_, name), _)| name.clone())
            .collect()
    }

    /// Makes `verb` (`get`, `list`, `patch`) answer 403 (`true`) or work again.
    pub fn forbid(&self, verb: &str, on: bool) {
        let mut s = self.lock();
        if on {
            s.forbidden.insert(verb.to_string());
        } else {
            s.forbidden.remove(verb);
        }
    }

    /// The user named in 403 messages (default
    /// `system:serviceaccount:<ns>:leaderd`).
    pub fn set_user(&self, user: &str) {
        self.lock().user = Some(user.to_string());
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Logged> {
        self.lock().requests.clone()
    }

    /// Every successful write so far (including [`FakeKube::add_pod`]).
    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    /// The request log, one line per request, for failure messages.
    pub fn dump(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                let ct = r.content_type.as_deref().unwrap_or("-");
                format!("{} {} {} [{ct}] {}\n", r.status, r.method, r.path, r.body)
            })
            .collect()
    }
}

impl FakeKube {
    // -----------------------------------------------------------------
    // Leases
    // -----------------------------------------------------------------

    /// The Lease object, if it exists.
    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.lock().leases.get(&(ns.into(), name.into())).cloned()
    }

    /// The Lease's `spec`, if the Lease exists.
    pub fn lease_spec(&self, ns: &str, name: &str) -> Option<Value> {
        self.lease(ns, name).map(|l| l["spec"].clone())
    }

    /// `spec.holderIdentity` of the Lease (`None` if absent, unset or "").
    pub fn lease_holder(&self, ns: &str, name: &str) -> Option<String> {
        self.lease_spec(ns, name)
            .and_then(|s| s["holderIdentity"].as_str().map(str::to_string))
            .filter(|h| !h.is_empty())
    }

    /// Writes the Lease's `spec` as another client would (a client-go
    /// candidate doing a successful update, or a create if it is absent):
    /// the spec is decoded and validated like a request body (a spec the
    /// API server would refuse panics), the resourceVersion is bumped and
    /// watchers are told. Returns the new resourceVersion.
    pub fn put_lease(&self, ns: &str, name: &str, spec: Value) -> String {
        let spec = decode_lease_spec(&spec)
            .and_then(|spec| validate_lease_spec(&spec).map(|()| spec))
            .unwrap_or_else(|e| panic!("put_lease {ns}/{name}: invalid spec: {e}"));
        let mut s = self.lock();
        let object = match s.leases.get(&(ns.into(), name.into())) {
            Some(current) => {
                let mut next = current.clone();
                next["spec"] = spec;
                next
            }
            None => new_lease(ns, name, Map::new(), spec),
        };
        s.commit_lease(ns, name, object, "test")["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Changes an existing Lease in place (e.g. an annotation, so that its
    /// resourceVersion moves behind its holder's back), as another client's
    /// successful update would. Returns the new resourceVersion.
    pub fn edit_lease(&self, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> String {
        let mut s = self.lock();
        let mut object = s
            .leases
            .get(&(ns.into(), name.into()))
            .cloned()
            .unwrap_or_else(|| panic!("edit_lease: no lease {ns}/{name}"));
        f(&mut object);
        s.commit_lease(ns, name, object, "test")["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Deletes the Lease as another client would; whether it existed.
    pub fn remove_lease(&self, ns: &str, name: &str) -> bool {
        self.lock().delete_lease(ns, name, "test").is_some()
    }

    /// Every successful Lease write so far, in order (clients' and the
    /// test's).
    pub fn lease_writes(&self) -> Vec<LeaseWrite> {
        self.lock().lease_writes.clone()
    }

    /// Makes a Lease `verb` (`get`, `list`, `watch`, `create`, `update`,
    /// `delete`) answer 403 (`true`) or work again.
    pub fn forbid_lease(&self, verb: &str, on: bool) {
        let mut s = self.lock();
        if on {
            s.lease_forbidden.insert(verb.to_string());
        } else {
            s.lease_forbidden.remove(verb);
        }
    }

    /// Delays every request (Pods and Leases, watches included) by `delay`
    /// before it is handled; `Duration::ZERO` switches it off. Requests
    /// already waiting keep their delay.
    pub fn set_latency(&self, delay: Duration) {
        self.lock().latency = delay;
    }

    /// Delays the requests of one verb (`get`, `list`, `watch`, `create`,
    /// `update`, `patch`, `delete`); overrides [`FakeKube::set_latency`]
    /// for that verb. `Duration::ZERO` removes the override.
    pub fn set_latency_for(&self, verb: &str, delay: Duration) {
        let mut s = self.lock();
        if delay.is_zero() {
            s.verb_latency.remove(verb);
        } else {
            s.verb_latency.insert(verb.to_string(), delay);
        }
    }

    /// Ends every open watch stream (as an API server restart or a watch
    /// timeout would); clients must watch again.
    pub fn end_watches(&self) {
        let mut s = self.lock();
        s.watch_epoch += 1;
        s.lease_changed.notify_waiters();
    }

    /// Watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.lock().open_watches
    }

    /// The Lease write log, one line per write, for failure messages.
    pub fn dump_lease_writes(&self) -> String {
        let start = self.lock().lease_writes.first().map(|w| w.at);
        self.lease_writes()
            .iter()
            .map(|w| {
                let t = start.map_or(0, |s| w.at.duration_since(s).as_millis());
                format!(
                    "+{t}ms {} {}/{} rv={} {}\n",
                    w.verb, w.namespace, w.name, w.resource_version, w.spec
                )
            })
            .collect()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Inner {
    fn bump(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn record_write(&mut self, ns: &str, name: &str, pod: &Value) {
        self.writes.push(Write {
            at: Instant::now(),
            wall: SystemTime::now(),
            namespace: ns.into(),
            name: name.into(),
            labels: string_map(&pod["metadata"]["labels"]),
        });
    }

    /// The 403 to answer if `verb` is switched off, worded like the real
    /// API server.
    fn refusal(&self, verb: &str, ns: &str, name: Option<&str>) -> Option<Response> {
        if !self.forbidden.contains(verb) {
            return None;
        }
        Some(self.forbidden_status(&PODS, verb, ns, name))
    }

    /// The same for a Lease verb switched off with [`FakeKube::forbid_lease`].
    fn lease_refusal(&self, verb: &str, ns: &str, name: Option<&str>) -> Option<Response> {
        if !self.lease_forbidden.contains(verb) {
            return None;
        }
        Some(self.forbidden_status(&LEASES, verb, ns, name))
    }

    fn forbidden_status(
        &self,
        res: &Resource,
        verb: &str,
        ns: &str,
        name: Option<&str>,
    ) -> Response {
        let user = self
            .user
            .clone()
            .unwrap_or_else(|| format!("system:serviceaccount:{ns}:leaderd"));
        let qualified = res.qualified();
        let subject = name.map_or(qualified.clone(), |n| format!("{qualified} \"{n}\""));
        let msg = format!(
            "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{}\" in API group \"{}\" in the namespace \"{ns}\"",
            res.plural, res.group
        );
        res.status(StatusCode::FORBIDDEN, "Forbidden", &msg, name)
    }

    fn latency_for(&self, verb: &str) -> Duration {
        self.verb_latency.get(verb).copied().unwrap_or(self.latency)
    }

    /// Stores `object` as the Lease `ns/name` with a new resourceVersion,
    /// records the write and tells the watchers. Returns the stored object.
    fn commit_lease(
        &mut self,
        ns: &str,
        name: &str,
        mut object: Value,
        verb: &'static str,
    ) -> Value {
        let rv = self.bump();
        object["metadata"]["resourceVersion"] = json!(rv);
        let key = (ns.to_string(), name.to_string());
        let kind = if self.leases.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.leases.insert(key, object.clone());
        self.record_lease_change(ns, name, verb, kind, &object);
        object
    }

    /// Removes the Lease `ns/name`; the deleted object, with the
    /// resourceVersion of the deletion, if it existed.
    fn delete_lease(&mut self, ns: &str, name: &str, verb: &'static str) -> Option<Value> {
        let mut object = self.leases.remove(&(ns.to_string(), name.to_string()))?;
        let rv = self.bump();
        object["metadata"]["resourceVersion"] = json!(rv);
        self.record_lease_change(ns, name, verb, "DELETED", &object);
        Some(object)
    }

    fn record_lease_change(
        &mut self,
        ns: &str,
        name: &str,
        verb: &'static str,
        kind: &'static str,
        object: &Value,
    ) {
        let rv = self.resource_version;
        self.lease_writes.push(LeaseWrite {
            at: Instant::now(),
            wall: SystemTime::now(),
            namespace: ns.into(),
            name: name.into(),
            verb,
            resource_version: rv.to_string(),
            spec: if kind == "DELETED" {
                Value::Null
            } else {
                object["spec"].clone()
            },
        });
        self.lease_events.push(LeaseEvent {
            rv,
            kind,
            namespace: ns.into(),
            name: name.into(),
            object: object.clone(),
        });
        self.lease_changed.notify_waiters();
    }
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// An API resource, for wording `Status` answers like the real server.
struct Resource {
    group: &'static str,
    plural: &'static str,
}

const PODS: Resource = Resource {
    group: "",
    plural: "pods",
};

const LEASES: Resource = Resource {
    group: "coordination.k8s.io",
    plural: "leases",
};

impl Resource {
    /// `pods`, `leases.coordination.k8s.io`: how messages name the resource.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// A failure `Status` response about this resource.
    fn status(
        &self,
        code: StatusCode,
        reason: &str,
        message: &str,
        name: Option<&str>,
    ) -> Response {
        let mut details = json!({"kind": self.plural});
        if !self.group.is_empty() {
            details["group"] = json!(self.group);
        }
        if let Some(n) = name {
            details["name"] = json!(n);
        }
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason,
            "details": details, "code": code.as_u16(),
        });
        (code, axum::Json(body)).into_response()
    }
}

/// A `Status` response like the real API server's (about pods).
fn status(code: StatusCode, reason: &str, message: &str, name: Option<&str>) -> Response {
    PODS.status(code, reason, message, name)
}

fn not_found(name: &str) -> Response {
    let msg = format!("pods \"{name}\" not found");
    status(StatusCode::NOT_FOUND, "NotFound", &msg, Some(name))
}

async fn log_request(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut entry = Logged {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or(String::new(), |p| p.to_string()),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        status: 0,
    };
    let delay = s
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .latency_for(verb_of(&parts.method, &parts.uri));
    if !delay.is_zero() {
        // A client that gives up meanwhile drops this future: logged as 499.
        let mut gave_up = GaveUp {
            shared: s.clone(),
            entry: Some(entry.clone()),
        };
        tokio::time::sleep(delay).await;
        gave_up.entry = None;
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    entry.status = resp.status().as_u16();
    s.lock()
        .unwrap_or_else(|e| e.into_inner())
        .requests
        .push(entry);
    resp
}

/// Logs a delayed request with status 499 if its client went away.
struct GaveUp {
    shared: Shared,
    entry: Option<Logged>,
}

impl Drop for GaveUp {
    fn drop(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            entry.status = 499;
            self.shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .requests
                .push(entry);
        }
    }
}

/// The RBAC verb of a request, as the API server's authorizer names it.
fn verb_of(method: &Method, uri: &Uri) -> &'static str {
    let watch = uri
        .query()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let path = uri.path();
    let collection = path.ends_with("/pods") || path.ends_with("/leases");
    match *method {
        Method::GET if watch => "watch",
        Method::GET if collection => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

async fn unknown_path(method: Method, uri: Uri) -> Response {
    eprintln!("fake kube: unexpected request {method} {uri}");
    let msg = format!("the server could not find the requested resource ({method} {uri})");
    status(StatusCode::NOT_FOUND, "NotFound", &msg, None)
}

async fn method_not_allowed(method: Method) -> Response {
    let msg = format!("{method} is not supported by this fake (only GET and PATCH)");
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &msg,
        None,
    )
}

async fn get_pod(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    let s = s.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = s.refusal("get", &ns, Some(&name)) {
        return r;
    }
    match s.pods.get(&(ns, name.clone())) {
        Some(pod) => axum::Json(pod.clone()).into_response(),
        None => not_found(&name),
    }
}

async fn list_pods(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = s.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = s.refusal("list", &ns, None) {
        return r;
    }
    let selector = match parse_selector(q.get("labelSelector").map_or("", String::as_str)) {
        Ok(sel) => sel,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e, None),
    };
    let items: Vec<Value> = s
        .pods
        .iter()
        .filter(|((n, _), pod)| *n == ns && selector.iter().all(|t| t.matches(pod)))
        .map(|(_, pod)| pod.clone())
        .collect();
    axum::Json(json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": s.resource_version.to_string()},
        "items": items,
    }))
    .into_response()
}

async fn patch_pod(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
    let bad = |msg: &str| status(StatusCode::BAD_REQUEST, "BadRequest", msg, Some(&name));
    if let Some(r) = s.refusal("patch", &ns, Some(&name)) {
        return r;
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.split(';').next().unwrap_or("").trim() != "application/merge-patch+json" {
        let msg = format!(
            "the body of the request was in an unknown format ({ct:?}) - this fake accepts only application/merge-patch+json"
        );
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &msg,
            None,
        );
    }
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad("merge patch must be a JSON object"),
        Err(e) => return bad(&format!("invalid JSON in merge patch: {e}")),
    };
    let key = (ns.clone(), name.clone());
    let Some(current) = s.pods.get(&key) else {
        return not_found(&name);
    };
    let current_rv = current["metadata"]["resourceVersion"].clone();
    if let Some(rv) = patch["metadata"].get("resourceVersion")
        && !rv.is_null()
        && *rv != current_rv
    {
        let msg = format!(
            "Operation cannot be fulfilled on pods \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        );
        return status(StatusCode::CONFLICT, "Conflict", &msg, Some(&name));
    }
    let mut pod = current.clone();
    merge_patch(&mut pod, &patch);
    let meta = &pod["metadata"];
    if meta["name"] != name.as_str() || meta["namespace"] != ns.as_str() {
        return bad(&format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta["name"]
        ));
    }
    for field in ["labels", "annotations"] {
        let Some(map) = meta.get(field).and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in map {
            let Some(v) = v.as_str() else {
                return bad(&format!(
                    "json: cannot unmarshal {v} into Go struct field ObjectMeta.metadata.{field} of type string (key {k:?})"
                ));
            };
            if field == "labels" && !valid_label_value(v) {
                let msg = format!(
                    "Pod \"{name}\" is invalid: metadata.labels: Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                );
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    &msg,
                    Some(&name),
                );
            }
        }
    }
    pod["metadata"]["resourceVersion"] = json!(s.bump());
    s.record_write(&ns, &name, &pod);
    s.pods.insert(key, pod.clone());
    axum::Json(pod).into_response()
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn valid_label_value(v: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(ok)
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// One requirement of a label selector.
enum Term {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Term {
    fn matches(&self, pod: &Value) -> bool {
        let labels = &pod["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Term::Eq(k, v) => get(k) == Some(v.as_str()),
            Term::Ne(k, v) => get(k) != Some(v.as_str()),
            Term::Exists(k) => get(k).is_some(),
            Term::Absent(k) => get(k).is_none(),
            Term::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Term::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        }
    }
}

/// Parses a label selector; commas inside `( )` belong to a set.
fn parse_selector(sel: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    let mut parts = Vec::new();
    for (i, c) in sel.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&sel[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&sel[start..]);
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let rest = rest.trim();
            let inner = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')'));
            let inner = inner.ok_or_else(|| format!("unable to parse requirement: {part:?}"))?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        let term = if let Some((k, v)) = part.split_once("!=") {
            Term::Ne(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Term::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            Term::NotIn(k.trim().into(), set(rest)?)
        } else if let Some((k, rest)) = part.split_once(" in ") {
            Term::In(k.trim().into(), set(rest)?)
        } else if let Some(k) = part.strip_prefix('!') {
            Term::Absent(k.trim().into())
        } else if part.contains(|c: char| c.is_whitespace() || "()<>".contains(c)) {
            return Err(format!("unable to parse requirement: {part:?}"));
        } else {
            Term::Exists(part.into())
        };
        terms.push(term);
    }
    Ok(terms)
}

// ---------------------------------------------------------------------------
// Leases (coordination.k8s.io/v1)
// ---------------------------------------------------------------------------

/// A new Lease object with server-set metadata (no resourceVersion yet).
fn new_lease(ns: &str, name: &str, client_meta: Map<String, Value>, spec: Value) -> Value {
    let mut meta = client_meta;
    for server_set in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
        "selfLink",
        "generation",
    ] {
        meta.remove(server_set);
    }
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(ns));
    meta.insert("uid".into(), json!(format!("uid-lease-{ns}-{name}")));
    meta.insert(
        "creationTimestamp".into(),
        json!(humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
    );
    json!({
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": meta,
        "spec": spec,
    })
}

/// Formats a time as a Kubernetes MicroTime (Go's `RFC3339Micro` in UTC,
/// as client-go writes `acquireTime` / `renewTime`):
/// `2026-11-26T15:04:05.123456Z`.
pub fn micro_time(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// Parses a MicroTime as the API server and client-go do (Go's
/// `time.Parse("2006-01-02T15:04:05.000000Z07:00", s)`): exactly six
/// fractional digits, then `Z` or `±hh:mm`.
pub fn parse_micro_time(s: &str) -> Result<SystemTime, String> {
    let err =
        || format!("parsing time {s:?} as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse");
    let b = s.as_bytes();
    if b.len() < 27 || !b.is_ascii() {
        return Err(err());
    }
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let shape = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26);
    if !shape {
        return Err(err());
    }
    let zone = &s[26..];
    let offset_secs: i64 = if zone == "Z" {
        0
    } else {
        let z = zone.as_bytes();
        if z.len() != 6 || !(z[0] == b'+' || z[0] == b'-') || z[3] != b':' {
            return Err(err());
        }
        let hh: i64 = zone[1..3].parse().map_err(|_| err())?;
        let mm: i64 = zone[4..6].parse().map_err(|_| err())?;
        if hh > 24 || mm > 59 {
            return Err(err());
        }
        let sign = if z[0] == b'-' { -1 } else { 1 };
        sign * (hh * 3600 + mm * 60)
    };
    let local = humantime::parse_rfc3339(&format!("{}Z", &s[..26])).map_err(|_| err())?;
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    let utc = if offset_secs >= 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    };
    utc.ok_or_else(err)
}

/// Decodes a Lease `spec` as the API server's JSON decoder does: known
/// fields only (unknown ones dropped), `null` as unset, int32 integers,
/// strings, MicroTimes normalised to UTC. `Err` is a 400 message.
fn decode_lease_spec(raw: &Value) -> Result<Value, String> {
    let field = |f: &str, go_type: &str, v: &Value| {
        format!(
            "json: cannot unmarshal {v} into Go struct field LeaseSpec.spec.{f} of type {go_type}"
        )
    };
    let raw = match raw {
        Value::Null => return Ok(json!({})),
        Value::Object(m) => m,
        other => {
            return Err(format!(
                "json: cannot unmarshal {other} into Go struct field Lease.spec of type v1.LeaseSpec"
            ));
        }
    };
    let mut spec = Map::new();
    for (k, v) in raw {
        if v.is_null() {
            continue;
        }
        let decoded = match k.as_str() {
            "holderIdentity" | "preferredHolder" | "strategy" => {
                if !v.is_string() {
                    return Err(field(k, "string", v));
                }
                v.clone()
            }
            "leaseDurationSeconds" | "leaseTransitions" => {
                // An integer literal within int32 (2.0 or 1.5 are refused).
                match v.as_i64().filter(|_| !v.is_f64()).map(i32::try_from) {
                    Some(Ok(n)) => json!(n),
                    _ => return Err(field(k, "int32", v)),
                }
            }
            "acquireTime" | "renewTime" => {
                let text = v.as_str().ok_or_else(|| field(k, "v1.MicroTime", v))?;
                json!(micro_time(parse_micro_time(text)?))
            }
            _ => continue,
        };
        spec.insert(k.clone(), decoded);
    }
    Ok(Value::Object(spec))
}

/// The API server's validation of a decoded spec; `Err` is the field error
/// of a 422.
fn validate_lease_spec(spec: &Value) -> Result<(), String> {
    if let Some(n) = spec["leaseDurationSeconds"].as_i64()
        && n <= 0
    {
        return Err(format!(
            "spec.leaseDurationSeconds: Invalid value: {n}: must be greater than 0"
        ));
    }
    if let Some(n) = spec["leaseTransitions"].as_i64()
        && n < 0
    {
        return Err(format!(
            "spec.leaseTransitions: Invalid value: {n}: must be greater than or equal to 0"
        ));
    }
    Ok(())
}

/// A Lease request body, decoded: its metadata map and decoded spec, or the
/// message of the 400 to answer.
fn decode_lease(body: &Bytes, ns: &str) -> Result<(Map<String, Value>, Value), String> {
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => o,
        Ok(other) => {
            return Err(format!(
                "json: cannot unmarshal {other} into Go value of type v1.Lease"
            ));
        }
        Err(e) => return Err(format!("invalid JSON in request body: {e}")),
    };
    if let Some(v) = object.get("apiVersion").and_then(Value::as_str)
        && v != "coordination.k8s.io/v1"
    {
        return Err(format!(
            "the API version in the data ({v}) does not match the expected API version (coordination.k8s.io/v1)"
        ));
    }
    if let Some(k) = object.get("kind").and_then(Value::as_str)
        && k != "Lease"
    {
        return Err(format!(
            "the kind in the data ({k}) does not match the expected kind (Lease)"
        ));
    }
    let meta = match object.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(format!(
                "json: cannot unmarshal {other} into Go struct field Lease.metadata of type v1.ObjectMeta"
            ));
        }
    };
    if let Some(obj_ns) = meta.get("namespace").and_then(Value::as_str)
        && !obj_ns.is_empty()
        && obj_ns != ns
    {
        return Err(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        );
    }
    let spec = decode_lease_spec(object.get("spec").unwrap_or(&Value::Null))?;
    Ok((meta, spec))
}

fn lease_not_found(name: &str) -> Response {
    let msg = format!("leases.coordination.k8s.io \"{name}\" not found");
    LEASES.status(StatusCode::NOT_FOUND, "NotFound", &msg, Some(name))
}

fn lease_invalid(name: &str, field_error: &str) -> Response {
    let msg = format!("Lease.coordination.k8s.io \"{name}\" is invalid: {field_error}");
    LEASES.status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &msg,
        Some(name),
    )
}

fn lease_conflict(name: &str, why: &str) -> Response {
    let msg =
        format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": {why}");
    LEASES.status(StatusCode::CONFLICT, "Conflict", &msg, Some(name))
}

async fn lease_method_not_allowed(method: Method) -> Response {
    let msg = format!("{method} is not supported by this fake (leases: GET, POST, PUT, DELETE)");
    LEASES.status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &msg,
        None,
    )
}

async fn get_lease(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    let s = s.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = s.lease_refusal("get", &ns, Some(&name)) {
        return r;
    }
    match s.leases.get(&(ns, name.clone())) {
        Some(lease) => axum::Json(lease.clone()).into_response(),
        None => lease_not_found(&name),
    }
}

async fn create_lease(State(s): State<Shared>, Path(ns): Path<String>, body: Bytes) -> Response {
    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = s.lease_refusal("create", &ns, None) {
        return r;
    }
    let (meta, spec) = match decode_lease(&body, &ns) {
        Ok(decoded) => decoded,
        Err(e) => return LEASES.status(StatusCode::BAD_REQUEST, "BadRequest", &e, None),
    };
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return LEASES.status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "Lease.coordination.k8s.io \"\" is invalid: metadata.name: Required value: name or generateName is required",
            None,
        );
    }
    if let Err(e) = validate_lease_spec(&spec) {
        return lease_invalid(&name, &e);
    }
    if meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|rv| !rv.is_empty())
    {
        return LEASES.status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "Internal error occurred: resourceVersion should not be set on objects to be created",
            Some(&name),
        );
    }
    if s.leases.contains_key(&(ns.clone(), name.clone())) {
        let msg = format!("leases.coordination.k8s.io \"{name}\" already exists");
        return LEASES.status(StatusCode::CONFLICT, "AlreadyExists", &msg, Some(&name));
    }
    let object = new_lease(&ns, &name, meta, spec);
    let stored = s.commit_lease(&ns, &name, object, "create");
    (StatusCode::CREATED, axum::Json(stored)).into_response()
}

async fn update_lease(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = s.lease_refusal("update", &ns, Some(&name)) {
        return r;
    }
    let (mut meta, spec) = match decode_lease(&body, &ns) {
        Ok(decoded) => decoded,
        Err(e) => return LEASES.status(StatusCode::BAD_REQUEST, "BadRequest", &e, Some(&name)),
    };
    let obj_name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    if obj_name != name {
        let msg = format!(
            "the name of the object ({obj_name}) does not match the name on the URL ({name})"
        );
        return LEASES.status(StatusCode::BAD_REQUEST, "BadRequest", &msg, Some(&name));
    }
    let Some(current) = s.leases.get(&(ns.clone(), name.clone())) else {
        return lease_not_found(&name);
    };
    let sent_rv = meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if sent_rv.is_empty() {
        return lease_conflict(
            &name,
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
        );
    }
    if current["metadata"]["resourceVersion"] != sent_rv {
        return lease_conflict(
            &name,
            "the object has been modified; please apply your changes to the latest version and try again",
        );
    }
    if let Err(e) = validate_lease_spec(&spec) {
        return lease_invalid(&name, &e);
    }
    // System fields stay the server's.
    for kept in ["uid", "creationTimestamp", "namespace"] {
        meta.insert(kept.into(), current["metadata"][kept].clone());
    }
    meta.remove("managedFields");
    let mut object = current.clone();
    object["metadata"] = Value::Object(meta);
    object["spec"] = spec;
    let stored = s.commit_lease(&ns, &name, object, "update");
    axum::Json(stored).into_response()
}

async fn delete_lease(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = s.lease_refusal("delete", &ns, Some(&name)) {
        return r;
    }
    match s.delete_lease(&ns, &name, "delete") {
        Some(deleted) => axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Success",
            "details": {
                "name": name, "group": "coordination.k8s.io", "kind": "leases",
                "uid": deleted["metadata"]["uid"],
            },
        }))
        .into_response(),
        None => lease_not_found(&name),
    }
}

/// A `fieldSelector` requirement on a Lease (`metadata.name` or
/// `metadata.namespace`; `=`, `==`, `!=`).
struct FieldTerm {
    field: &'static str,
    equal: bool,
    value: String,
}

fn parse_field_selector(sel: &str) -> Result<Vec<FieldTerm>, String> {
    let mut terms = Vec::new();
    for part in sel.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, equal, value) = if let Some((k, v)) = part.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            (k, true, v)
        } else {
            return Err(format!(
                "invalid selector: '{sel}'; can't understand '{part}'"
            ));
        };
        let field = match key.trim() {
            "metadata.name" => "name",
            "metadata.namespace" => "namespace",
            other => return Err(format!("field label not supported: {other}")),
        };
        terms.push(FieldTerm {
            field,
            equal,
            value: value.trim().to_string(),
        });
    }
    Ok(terms)
}

/// Which Leases a list or watch asks for.
struct LeaseFilter {
    namespace: String,
    fields: Vec<FieldTerm>,
    labels: Vec<Term>,
}

impl LeaseFilter {
    fn matches(&self, ns: &str, object: &Value) -> bool {
        ns == self.namespace
            && self
                .fields
                .iter()
                .all(|t| (object["metadata"][t.field] == t.value.as_str()) == t.equal)
            && self.labels.iter().all(|t| t.matches(object))
    }
}

async fn list_or_watch_leases(
    State(shared): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    let s = shared.lock().unwrap_or_else(|e| e.into_inner());
    let bad = |msg: &str| LEASES.status(StatusCode::BAD_REQUEST, "BadRequest", msg, None);
    if let Some(r) = s.lease_refusal(if watch { "watch" } else { "list" }, &ns, None) {
        return r;
    }
    let fields = match parse_field_selector(q.get("fieldSelector").map_or("", String::as_str)) {
        Ok(f) => f,
        Err(e) => return bad(&e),
    };
    let labels = match parse_selector(q.get("labelSelector").map_or("", String::as_str)) {
        Ok(l) => l,
        Err(e) => return bad(&e),
    };
    let filter = LeaseFilter {
        namespace: ns,
        fields,
        labels,
    };
    let current: Vec<Value> = s
        .leases
        .iter()
        .filter(|((n, _), lease)| filter.matches(n, lease))
        .map(|(_, lease)| lease.clone())
        .collect();
    if !watch {
        return axum::Json(json!({
            "kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
            "metadata": {"resourceVersion": s.resource_version.to_string()},
            "items": current,
        }))
        .into_response();
    }

    // Real servers pick 30-60 min without timeoutSeconds.
    let timeout = match q.get("timeoutSeconds").map(|t| t.parse::<u64>()) {
        None => Duration::from_secs(1800),
        Some(Ok(secs)) => Duration::from_secs(secs),
        Some(Err(_)) => return bad("timeoutSeconds must be a non-negative integer"),
    };
    let (pending, after) = match q.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => (
            current
                .into_iter()
                .map(|object| event_line("ADDED", &object))
                .collect(),
            s.resource_version,
        ),
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => (VecDeque::new(), rv),
            Err(_) => return bad(&format!("invalid resourceVersion {rv:?}")),
        },
    };
    let stream = WatchStream {
        shared: shared.clone(),
        filter,
        after,
        deadline: tokio::time::Instant::now() + timeout,
        epoch: s.watch_epoch,
        pending,
        changed: s.lease_changed.clone(),
        _open: OpenWatch::new(shared.clone(), s),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures::stream::unfold(
            stream,
            next_watch_chunk,
        )))
        .unwrap_or_else(|e| {
            LEASES.status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
                None,
            )
        })
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object}))
        .expect("a JSON value serialises");
    line.push(b'\n');
    Bytes::from(line)
}

/// Counts an open watch stream while it lives.
struct OpenWatch(Shared);

impl OpenWatch {
    fn new(shared: Shared, mut guard: MutexGuard<'_, Inner>) -> OpenWatch {
        guard.open_watches += 1;
        OpenWatch(shared)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.open_watches = s.open_watches.saturating_sub(1);
    }
}

/// One watch: events after `after` that pass `filter`, until `deadline`.
struct WatchStream {
    shared: Shared,
    filter: LeaseFilter,
    after: u64,
    deadline: tokio::time::Instant,
    epoch: u64,
    pending: VecDeque<Bytes>,
    changed: Arc<Notify>,
    _open: OpenWatch,
}

async fn next_watch_chunk(mut w: WatchStream) -> Option<(Result<Bytes, Infallible>, WatchStream)> {
    loop {
        if tokio::time::Instant::now() >= w.deadline {
            return None;
        }
        if let Some(chunk) = w.pending.pop_front() {
            return Some((Ok(chunk), w));
        }
        let changed = w.changed.clone();
        // Created before looking, so a change made meanwhile still wakes us.
        let notified = changed.notified();
        {
            let s = w.shared.lock().unwrap_or_else(|e| e.into_inner());
            if s.watch_epoch != w.epoch {
                return None;
            }
            for ev in s.lease_events.iter().filter(|ev| ev.rv > w.after) {
                if w.filter.matches(&ev.namespace, &ev.object) {
                    w.pending.push_back(event_line(ev.kind, &ev.object));
                }
            }
            w.after = w.after.max(s.resource_version);
        }
        if !w.pending.is_empty() {
            continue;
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(w.deadline) => return None,
        }
    }
}
