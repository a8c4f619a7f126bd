//! A fake Kubernetes API server (core/v1 Pods only) for leaderd's tests.
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
//! - 403 Forbidden, worded like the real API server, for a verb the test
//!   switches off with [`FakeKube::forbid`].
//! - Any other path: logged and answered 404 with a `Status`, so an
//!   unexpected request is visible in [`FakeKube::requests`].
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

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

#[derive(Default)]
struct Inner {
    pods: BTreeMap<(String, String), Value>,
    resource_version: u64,
    forbidden: HashSet<String>,
    user: Option<String>,
    requests: Vec<Logged>,
    writes: Vec<Write>,
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
        let user = self
            .user
            .clone()
            .unwrap_or_else(|| format!("system:serviceaccount:{ns}:leaderd"));
        let subject = name.map_or("pods".to_string(), |n| format!("pods \"{n}\""));
        let msg = format!(
            "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"pods\" in API group \"\" in the namespace \"{ns}\""
        );
        Some(status(StatusCode::FORBIDDEN, "Forbidden", &msg, name))
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

/// A `Status` response like the real API server's.
fn status(code: StatusCode, reason: &str, message: &str, name: Option<&str>) -> Response {
    let mut details = json!({"kind": "pods"});
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
