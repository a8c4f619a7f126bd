//! A real Kubernetes API server for the tests: etcd and kube-apiserver
//! started by `scripts/kube-up` (the pinned versions `scripts/kube-build`
//! builds once per machine), one per test binary, shared by its tests.
//!
//! - The control plane starts lazily on first use and lives as long as the
//!   test process: `scripts/kube-up` stops it when its stdin (a pipe from
//!   this process) reaches EOF, which happens however the process ends.
//! - Every test gets a fresh namespace ([`ControlPlane::namespace`]):
//!   without kube-controller-manager, deleted namespaces never finish
//!   terminating, so nothing is ever deleted or reused.
//! - leaderd runs as a ServiceAccount with a Role, through a kubeconfig with
//!   a TokenRequest token (`KUBECONFIG` in its environment): the real
//!   authenticator and RBAC authorizer decide, and a 403 is a real 403.
//! - What the API server did is read back from its audit log (JSON lines,
//!   Leases, LeaseCandidates, Pods and Events outside kube-system, request
//!   and response bodies): every write with the instant the server finished
//!   it, who sent it and what it sent ([`Namespace::lease_writes`],
//!   [`Namespace::requests`]).
//! - The test itself writes as the admin (`system:masters`), e.g. a record
//!   as another candidate would write it.
//!
//! Declared from a test file with `#[path = "support/kube_real.rs"] mod kube_real;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace as NamespaceObject, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

/// How long the first start may take: if the binaries are not built yet,
/// `scripts/kube-up` builds them (about 30 min on 2 cores).
const START_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Which control plane a test binary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Plain,
    /// `--feature-gates=CoordinatedLeaderElection=true` and the
    /// `coordination.k8s.io/v1beta1` API (LeaseCandidate).
    Coordinated,
}

/// A running etcd + kube-apiserver; see the module documentation.
pub struct ControlPlane {
    pub flavor: Flavor,
    /// The admin's kubeconfig (system:masters).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub server: String,
    pub port: u16,
    ca_data: String,
    admin_token: String,
    audit: Audit,
    rt: tokio::runtime::Runtime,
    admin: kube::Client,
    namespaces: AtomicUsize,
    _process: Mutex<(Child, ChildStdin)>,
}

static PLAIN: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
static COORDINATED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The control plane of this test binary, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    shared(&PLAIN, Flavor::Plain)
}

/// The Coordinated Leader Election control plane of this test binary.
pub fn coordinated_control_plane() -> &'static ControlPlane {
    shared(&COORDINATED, Flavor::Coordinated)
}

fn shared(
    cell: &'static OnceLock<Result<ControlPlane, String>>,
    flavor: Flavor,
) -> &'static ControlPlane {
    match cell.get_or_init(|| ControlPlane::start(flavor)) {
        Ok(plane) => plane,
        Err(why) => panic!("no Kubernetes control plane: {why}"),
    }
}

/// The repository root (where `scripts/` is).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

impl ControlPlane {
    fn start(flavor: Flavor) -> Result<ControlPlane, String> {
        let script = repo_root().join("scripts/kube-up");
        let mut cmd = Command::new(&script);
        if flavor == Flavor::Coordinated {
            cmd.arg("--coordinated");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("ready ") {
                    let _ = tx.send(line);
                    break;
                }
            }
        });
        let ready = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(format!(
                    "scripts/kube-up{} did not print its ready line ({status}); its stderr above says why",
                    if flavor == Flavor::Coordinated {
                        " --coordinated"
                    } else {
                        ""
                    }
                ));
            }
        };
        let fields: BTreeMap<&str, &str> = ready
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let field = |k: &str| {
            fields
                .get(k)
                .map(|v| v.to_string())
                .ok_or(format!("no {k}= in {ready:?}"))
        };
        let kubeconfig = PathBuf::from(field("kubeconfig")?);
        let server = field("server")?;
        let audit_log = PathBuf::from(field("audit_log")?);
        let port = server
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or(format!("no port in {server}"))?;
        let config: Value = serde_yaml::from_str(
            &fs::read_to_string(&kubeconfig).map_err(|e| format!("kubeconfig: {e}"))?,
        )
        .map_err(|e| format!("kubeconfig: {e}"))?;
        let ca_data = config["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .ok_or("kubeconfig without certificate-authority-data")?
            .to_string();
        let admin_token = config["users"][0]["user"]["token"]
            .as_str()
            .ok_or("kubeconfig without a token")?
            .to_string();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let admin = rt.block_on(client_from(&kubeconfig))?;
        Ok(ControlPlane {
            flavor,
            kubeconfig,
            server,
            port,
            ca_data,
            admin_token,
            audit: Audit::new(audit_log),
            rt,
            admin,
            namespaces: AtomicUsize::new(0),
            _process: Mutex::new((child, stdin)),
        })
    }

    /// Runs a future on this control plane's runtime (from a sync test).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A client authenticated as the admin (system:masters).
    pub fn admin(&self) -> kube::Client {
        self.admin.clone()
    }

    /// A fresh namespace named `<prefix>-<n>` for one test.
    pub fn namespace(&'static self, prefix: &str) -> Namespace {
        let n = self.namespaces.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}-{n}", dns_label(prefix, 50));
        let ns = NamespaceObject {
            metadata: meta(&name),
            ..NamespaceObject::default()
        };
        let api: Api<NamespaceObject> = Api::all(self.admin());
        self.block_on(api.create(&PostParams::default(), &ns))
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        Namespace {
            plane: self,
            name,
            dir: tempfile::tempdir().expect("tempdir for kubeconfigs"),
        }
    }

    /// A kubeconfig for `token`, reaching the API server directly or on
    /// `port` (a fault proxy in front of it: TLS passes through, and the
    /// certificate names 127.0.0.1 whatever the port).
    pub fn kubeconfig_text(&self, token: &str, namespace: &str, port: Option<u16>) -> String {
        let server = format!("https://127.0.0.1:{}", port.unwrap_or(self.port));
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: kube-up\n    cluster:\n      server: {server}\n      certificate-authority-data: {}\nusers:\n  - name: u\n    user:\n      token: {token}\ncontexts:\n  - name: c\n    context:\n      cluster: kube-up\n      user: u\n      namespace: {namespace}\ncurrent-context: c\n",
            self.ca_data
        )
    }
}

async fn client_from(path: &Path) -> Result<kube::Client, String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// `text` as a DNS label (lower case, digits, '-'), at most `max` long.
pub fn dns_label(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(max);
    out.trim_matches('-').to_string()
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        ..ObjectMeta::default()
    }
}

/// A Role rule: `rule("coordination.k8s.io", "leases", &["get"], &[])`.
pub fn rule(group: &str, resource: &str, verbs: &[&str], names: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(vec![resource.to_string()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        resource_names: (!names.is_empty()).then(|| names.iter().map(|n| n.to_string()).collect()),
        ..PolicyRule::default()
    }
}

/// Everything leaderd's Lease backend uses, on every Lease of the namespace.
pub fn lease_rules() -> Vec<PolicyRule> {
    vec![rule(
        "coordination.k8s.io",
        "leases",
        &["get", "watch", "create", "update"],
        &[],
    )]
}

/// What the pod label uses.
pub fn pod_rules() -> Vec<PolicyRule> {
    vec![rule("", "pods", &["list", "patch"], &[])]
}

/// Creating Events (on the Lease and the Pod).
pub fn event_rules() -> Vec<PolicyRule> {
    vec![rule("", "events", &["create"], &[])]
}

/// One test's namespace on the shared control plane.
pub struct Namespace {
    pub plane: &'static ControlPlane,
    pub name: String,
    dir: tempfile::TempDir,
}

impl Namespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.plane.admin(), &self.name)
    }

    // --- identities and permissions ------------------------------------------

    /// `system:serviceaccount:<ns>:<sa>`
    pub fn user(&self, sa: &str) -> String {
        format!("system:serviceaccount:{}:{sa}", self.name)
    }

    /// Creates ServiceAccount `sa` (if needed) and a Role `sa` with `rules`
    /// bound to it, and returns a kubeconfig for it (a TokenRequest token).
    pub fn account(&self, sa: &str, rules: Vec<PolicyRule>) -> PathBuf {
        self.service_account(sa);
        self.set_role(sa, rules.clone());
        self.bind(sa, sa);
        // RBAC reaches the authorizer through a watch: wait until it has.
        for rule in &rules {
            let group = rule.api_groups.as_ref().and_then(|g| g.first()).cloned();
            let resource = rule.resources.as_ref().and_then(|r| r.first()).cloned();
            if let (Some(group), Some(resource), Some(verb)) = (group, resource, rule.verbs.first())
            {
                self.wait_authorized(sa, verb, &group, &resource, true);
            }
        }
        self.kubeconfig(sa, None)
    }

    pub fn service_account(&self, sa: &str) {
        let api: Api<ServiceAccount> = self.api();
        let object = ServiceAccount {
            metadata: meta(sa),
            ..ServiceAccount::default()
        };
        match self
            .plane
            .block_on(api.create(&PostParams::default(), &object))
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create ServiceAccount {sa}: {e}"),
        }
    }

    /// A token for `sa` (TokenRequest, valid for an hour).
    pub fn token(&self, sa: &str) -> String {
        let api: Api<ServiceAccount> = self.api();
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let answer = self
            .plane
            .block_on(api.create_token_request(sa, &PostParams::default(), &request))
            .unwrap_or_else(|e| panic!("TokenRequest for {sa}: {e}"));
        answer
            .status
            .and_then(|s| s.token)
            .unwrap_or_else(|| panic!("TokenRequest for {sa} without a token"))
    }

    /// Writes a kubeconfig for `sa` (direct, or through a proxy on `port`).
    pub fn kubeconfig(&self, sa: &str, port: Option<u16>) -> PathBuf {
        let token = self.token(sa);
        let path = self
            .dir
            .path()
            .join(format!("{sa}-{}.kubeconfig", port.unwrap_or(0)));
        fs::write(&path, self.plane.kubeconfig_text(&token, &self.name, port))
            .expect("write kubeconfig");
        path
    }

    /// Creates or replaces Role `role`.
    pub fn set_role(&self, role: &str, rules: Vec<PolicyRule>) {
        let api: Api<Role> = self.api();
        let mut object = Role {
            metadata: meta(role),
            rules: Some(rules),
        };
        match self.plane.block_on(api.get_opt(role)) {
            Ok(Some(existing)) => {
                object.metadata.resource_version = existing.metadata.resource_version;
                self.plane
                    .block_on(api.replace(role, &PostParams::default(), &object))
                    .unwrap_or_else(|e| panic!("replace Role {role}: {e}"));
            }
            Ok(None) => {
                self.plane
                    .block_on(api.create(&PostParams::default(), &object))
                    .unwrap_or_else(|e| panic!("create Role {role}: {e}"));
            }
            Err(e) => panic!("get Role {role}: {e}"),
        }
    }

    /// Binds Role `role` to ServiceAccount `sa`.
    pub fn bind(&self, role: &str, sa: &str) {
        let api: Api<RoleBinding> = self.api();
        let name = format!("{role}-{sa}");
        let object = RoleBinding {
            metadata: meta(&name),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: role.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: sa.into(),
                namespace: Some(self.name.clone()),
                ..Subject::default()
            }]),
        };
        match self
            .plane
            .block_on(api.create(&PostParams::default(), &object))
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create RoleBinding {name}: {e}"),
        }
    }

    /// Waits until the authorizer has applied a Role change: `sa` may (or
    /// may not) `verb` `resource`, as SelfSubjectAccessReview would answer.
    pub fn wait_authorized(
        &self,
        sa: &str,
        verb: &str,
        group: &str,
        resource: &str,
        allowed: bool,
    ) {
        self.wait_authorized_for(sa, verb, group, resource, None, allowed);
    }

    /// [`Namespace::wait_authorized`] for the object named `name`.
    pub fn wait_authorized_for(
        &self,
        sa: &str,
        verb: &str,
        group: &str,
        resource: &str,
        name: Option<&str>,
        allowed: bool,
    ) {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        let api: Api<SubjectAccessReview> = Api::all(self.plane.admin());
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(self.user(sa)),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{}", self.name),
                    "system:authenticated".into(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(self.name.clone()),
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    name: name.map(str::to_string),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let answer = self
                .plane
                .block_on(api.create(&PostParams::default(), &review))
                .expect("SubjectAccessReview");
            if answer.status.is_some_and(|s| s.allowed == allowed) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "RBAC never {} {verb} {resource} for {sa}",
                if allowed { "allowed" } else { "refused" }
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    // --- Leases (written as the admin) ----------------------------------------

    pub fn lease(&self, name: &str) -> Option<Value> {
        let api: Api<Lease> = self.api();
        self.plane
            .block_on(api.get_opt(name))
            .unwrap_or_else(|e| panic!("get lease {name}: {e}"))
            .map(|l| serde_json::to_value(l).expect("lease as JSON"))
    }

    pub fn lease_spec(&self, name: &str) -> Option<Value> {
        self.lease(name).map(|l| l["spec"].clone())
    }

    /// The holder identity, `Some("")` for a released Lease.
    pub fn lease_holder(&self, name: &str) -> Option<String> {
        self.lease_spec(name)
            .map(|s| s["holderIdentity"].as_str().unwrap_or("").to_string())
    }

    /// Writes `spec` as the Lease's whole spec (created if missing), as
    /// another candidate's successful compare-and-swap would.
    pub fn put_lease(&self, name: &str, spec: Value) -> Value {
        self.edit_lease(name, |lease| lease["spec"] = spec.clone())
    }

    /// Read-modify-write of the Lease (created from `{}` if missing),
    /// retried on conflict.
    pub fn edit_lease(&self, name: &str, mut f: impl FnMut(&mut Value)) -> Value {
        let api: Api<Lease> = self.api();
        for _ in 0..20 {
            let current = self.lease(name);
            let mut object = current
                .clone()
                .unwrap_or_else(|| json!({"metadata": {"name": name}, "spec": {}}));
            f(&mut object);
            let lease: Lease = serde_json::from_value(object).expect("a Lease");
            let result = if current.is_some() {
                self.plane
                    .block_on(api.replace(name, &PostParams::default(), &lease))
            } else {
                self.plane
                    .block_on(api.create(&PostParams::default(), &lease))
            };
            match result {
                Ok(written) => return serde_json::to_value(written).expect("JSON"),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => panic!("write lease {name}: {e}"),
            }
        }
        panic!("lease {name} kept conflicting");
    }

    pub fn delete_lease(&self, name: &str) -> bool {
        let api: Api<Lease> = self.api();
        match self
            .plane
            .block_on(api.delete(name, &DeleteParams::default()))
        {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.code == 404 => false,
            Err(e) => panic!("delete lease {name}: {e}"),
        }
    }

    // --- Pods (no kubelet: they stay Pending) -------------------------------------

    pub fn create_pod(&self, name: &str, labels: &[(&str, &str)]) -> Value {
        let api: Api<Pod> = self.api();
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
        }))
        .expect("a Pod");
        let created = self
            .plane
            .block_on(api.create(&PostParams::default(), &pod))
            .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
        serde_json::to_value(created).expect("JSON")
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        let api: Api<Pod> = self.api();
        self.plane
            .block_on(api.get_opt(name))
            .unwrap_or_else(|e| panic!("get pod {name}: {e}"))
            .map(|p| serde_json::to_value(p).expect("JSON"))
    }

    pub fn labels(&self, pod: &str) -> BTreeMap<String, String> {
        self.pod(pod)
            .and_then(|p| serde_json::from_value(p["metadata"]["labels"].clone()).ok())
            .unwrap_or_default()
    }

    pub fn label(&self, pod: &str, key: &str) -> Option<String> {
        self.labels(pod).remove(key)
    }

    pub fn annotation(&self, pod: &str, key: &str) -> Option<String> {
        self.pod(pod).and_then(|p| {
            p["metadata"]["annotations"][key]
                .as_str()
                .map(str::to_string)
        })
    }

    /// Names of the Pods a label selector selects (as a Service would).
    pub fn select_pods(&self, selector: &str) -> Vec<String> {
        let api: Api<Pod> = self.api();
        let mut names: Vec<String> = self
            .plane
            .block_on(api.list(&ListParams::default().labels(selector)))
            .unwrap_or_else(|e| panic!("list pods {selector}: {e}"))
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        names
    }

    /// Merge-patches a Pod's labels as the admin (`None` removes one).
    pub fn set_labels(&self, pod: &str, labels: &[(&str, Option<&str>)]) {
        let api: Api<Pod> = self.api();
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.map_or(Value::Null, |v| json!(v))))
            .collect();
        self.plane
            .block_on(api.patch(
                pod,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"labels": labels}})),
            ))
            .unwrap_or_else(|e| panic!("patch pod {pod}: {e}"));
    }

    /// A merge patch of Pod `pod` as the admin: the Pod, or the HTTP status.
    pub fn try_merge_patch_pod(&self, pod: &str, patch: Value) -> Result<Value, u16> {
        let api: Api<Pod> = self.api();
        match self.plane.block_on(api.patch(
            pod,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )) {
            Ok(pod) => Ok(serde_json::to_value(pod).expect("JSON")),
            Err(kube::Error::Api(s)) => Err(s.code),
            Err(e) => panic!("patch pod {pod}: {e}"),
        }
    }

    // --- Events --------------------------------------------------------------------

    /// The namespace's core/v1 Events, oldest first.
    pub fn events(&self) -> Vec<Value> {
        let api: Api<Event> = self.api();
        let mut events: Vec<Value> = self
            .plane
            .block_on(api.list(&ListParams::default()))
            .unwrap_or_else(|e| panic!("list events: {e}"))
            .items
            .into_iter()
            .map(|e| serde_json::to_value(e).expect("JSON"))
            .collect();
        events.sort_by_key(|e| {
            e["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse::<u64>().ok())
                .unwrap_or(0)
        });
        events
    }

    /// Events about object `kind`/`name` with `reason`.
    pub fn events_for(&self, kind: &str, name: &str, reason: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| {
                e["involvedObject"]["kind"] == kind
                    && e["involvedObject"]["name"] == name
                    && e["reason"] == reason
            })
            .collect()
    }

    // --- what the API server did (its audit log) ---------------------------------------

    /// Every audited request in this namespace, in the order the server
    /// finished them (watches: when they started).
    pub fn requests(&self) -> Vec<AuditEvent> {
        self.plane.audit.events(&self.name)
    }

    /// Successful writes of Lease `name` (create, update, patch, delete),
    /// in resourceVersion order, with who wrote them.
    pub fn lease_writes(&self, name: &str) -> Vec<LeaseWrite> {
        let admin = "kube-up-admin";
        let mut writes: Vec<LeaseWrite> = self
            .requests()
            .into_iter()
            .filter(|e| {
                e.resource == "leases"
                    && e.name == name
                    && e.stage == "ResponseComplete"
                    && e.code < 300
                    && matches!(e.verb.as_str(), "create" | "update" | "patch" | "delete")
            })
            .map(|e| {
                let object = if e.verb == "delete" {
                    Value::Null
                } else {
                    e.response.clone().unwrap_or(Value::Null)
                };
                LeaseWrite {
                    at: e.at,
                    wall: e.wall,
                    verb: e.verb.clone(),
                    by_test: e.user == admin,
                    user: e.user.clone(),
                    resource_version: object["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|rv| rv.parse().ok())
                        .unwrap_or(u64::MAX),
                    spec: object["spec"].clone(),
                    sent: e.request.as_ref().map(|r| r["spec"].clone()),
                }
            })
            .collect();
        writes.sort_by_key(|w| (w.resource_version, w.wall));
        writes
    }

    /// Successful writes of Pods (create, patch, update), in
    /// resourceVersion order, with the labels they left.
    pub fn pod_writes(&self) -> Vec<PodWrite> {
        let admin = "kube-up-admin";
        let mut writes: Vec<PodWrite> = self
            .requests()
            .into_iter()
            .filter(|e| {
                e.resource == "pods"
                    && e.subresource.is_empty()
                    && e.stage == "ResponseComplete"
                    && e.code < 300
                    && matches!(e.verb.as_str(), "create" | "update" | "patch")
            })
            .map(|e| {
                let object = e.response.clone().unwrap_or(Value::Null);
                PodWrite {
                    name: e.name.clone(),
                    at: e.at,
                    wall: e.wall,
                    verb: e.verb.clone(),
                    by_test: e.user == admin,
                    user: e.user.clone(),
                    resource_version: object["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|rv| rv.parse().ok())
                        .unwrap_or(u64::MAX),
                    labels: serde_json::from_value(object["metadata"]["labels"].clone())
                        .unwrap_or_default(),
                    sent: e.request.clone(),
                }
            })
            .collect();
        writes.sort_by_key(|w| (w.resource_version, w.wall));
        writes
    }

    /// Lease writes of every client but the test, after `since`.
    pub fn client_writes_since(&self, name: &str, since: Instant) -> Vec<LeaseWrite> {
        self.lease_writes(name)
            .into_iter()
            .filter(|w| !w.by_test && w.at >= since)
            .collect()
    }

    /// Watches of `resource` in this namespace that started and have not
    /// ended yet.
    pub fn open_watches(&self, resource: &str) -> usize {
        let requests = self.requests();
        let watches = requests
            .iter()
            .filter(|e| e.resource == resource && e.verb == "watch");
        let mut open = std::collections::HashSet::new();
        for e in watches {
            match e.stage.as_str() {
                "ResponseStarted" => {
                    open.insert(e.audit_id.clone());
                }
                "ResponseComplete" | "Panic" => {
                    open.remove(&e.audit_id);
                }
                _ => {}
            }
        }
        open.len()
    }

    /// Watches of `resource` started so far.
    pub fn watches_started(&self, resource: &str) -> usize {
        self.requests()
            .iter()
            .filter(|e| e.resource == resource && e.verb == "watch" && e.stage == "ResponseStarted")
            .count()
    }

    /// A readable dump of the Lease writes, for failure messages.
    pub fn dump_lease_writes(&self, name: &str) -> String {
        let t0 = self.lease_writes(name).first().map(|w| w.at);
        self.lease_writes(name)
            .iter()
            .map(|w| {
                format!(
                    "+{:>6}ms rv {} {} by {}: {}",
                    t0.map_or(0, |t0| w.at.saturating_duration_since(t0).as_millis()),
                    w.resource_version,
                    w.verb,
                    w.user,
                    w.spec
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A readable dump of every audited request of this namespace.
    pub fn dump(&self) -> String {
        self.requests()
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {}/{} {} by {} ({})",
                    humantime_like(e.wall),
                    e.stage,
                    e.verb,
                    e.resource,
                    e.name,
                    e.code,
                    e.user,
                    e.uri
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn humantime_like(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:06}", d.as_secs() % 100_000, d.subsec_micros())
}

/// One successful write of a Lease, as the API server audited it.
#[derive(Debug, Clone)]
pub struct LeaseWrite {
    /// When the server finished it (its audit `stageTimestamp`), mapped to
    /// this process's monotonic clock.
    pub at: Instant,
    pub wall: SystemTime,
    /// `create`, `update`, `patch` or `delete`.
    pub verb: String,
    /// Written by the test (as the admin), not by a candidate.
    pub by_test: bool,
    pub user: String,
    pub resource_version: u64,
    /// The spec as stored (null for a delete).
    pub spec: Value,
    /// The spec exactly as the client sent it.
    pub sent: Option<Value>,
}

impl LeaseWrite {
    pub fn holder(&self) -> &str {
        self.spec["holderIdentity"].as_str().unwrap_or("")
    }

    pub fn transitions(&self) -> Option<i64> {
        self.spec["leaseTransitions"].as_i64()
    }

    pub fn duration_seconds(&self) -> Option<i64> {
        self.spec["leaseDurationSeconds"].as_i64()
    }
}

/// One successful write of a Pod, as the API server audited it.
#[derive(Debug, Clone)]
pub struct PodWrite {
    pub name: String,
    /// When the server finished it, on this process's monotonic clock.
    pub at: Instant,
    pub wall: SystemTime,
    pub verb: String,
    pub by_test: bool,
    pub user: String,
    pub resource_version: u64,
    /// The Pod's labels after the write.
    pub labels: BTreeMap<String, String>,
    /// What the client sent (for a patch: the patch document).
    pub sent: Option<Value>,
}

impl PodWrite {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

// --- the audit log ---------------------------------------------------------------

/// One audit event (stages ResponseStarted, ResponseComplete, Panic).
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub audit_id: String,
    pub stage: String,
    pub verb: String,
    pub uri: String,
    pub user: String,
    pub user_agent: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub code: u16,
    /// The stage's timestamp, and the same on this process's monotonic clock.
    pub wall: SystemTime,
    pub at: Instant,
    pub request: Option<Value>,
    pub response: Option<Value>,
}

impl AuditEvent {
    /// The 403 message, if the server refused.
    pub fn message(&self) -> String {
        self.response
            .as_ref()
            .and_then(|r| r["message"].as_str())
            .unwrap_or("")
            .to_string()
    }
}

/// Reads the audit log incrementally: each call parses only what was
/// appended since the last one.
struct Audit {
    path: PathBuf,
    state: Mutex<AuditState>,
}

#[derive(Default)]
struct AuditState {
    offset: u64,
    partial: String,
    /// By namespace: tests poll their own often, and the log holds every
    /// test's requests.
    events: std::collections::HashMap<String, Vec<AuditEvent>>,
}

impl Audit {
    fn new(path: PathBuf) -> Audit {
        Audit {
            path,
            state: Mutex::new(AuditState::default()),
        }
    }

    /// The events of `namespace` so far.
    fn events(&self, namespace: &str) -> Vec<AuditEvent> {
        let mut state = self.state.lock().expect("audit lock");
        if let Ok(mut file) = fs::File::open(&self.path) {
            let mut fresh = String::new();
            if file.seek(SeekFrom::Start(state.offset)).is_ok()
                && file.read_to_string(&mut fresh).is_ok()
            {
                state.offset += fresh.len() as u64;
                let mut text = std::mem::take(&mut state.partial);
                text.push_str(&fresh);
                let complete = text.ends_with('\n');
                let mut lines: Vec<&str> = text.lines().collect();
                if !complete {
                    state.partial = lines.pop().unwrap_or("").to_string();
                }
                for event in lines.into_iter().filter_map(parse_audit) {
                    state
                        .events
                        .entry(event.namespace.clone())
                        .or_default()
                        .push(event);
                }
            }
        }
        state.events.get(namespace).cloned().unwrap_or_default()
    }
}

fn parse_audit(line: &str) -> Option<AuditEvent> {
    let v: Value = serde_json::from_str(line).ok()?;
    let s = |x: &Value| x.as_str().unwrap_or("").to_string();
    let wall = parse_time(v["stageTimestamp"].as_str()?)?;
    Some(AuditEvent {
        audit_id: s(&v["auditID"]),
        stage: s(&v["stage"]),
        verb: s(&v["verb"]),
        uri: s(&v["requestURI"]),
        user: s(&v["user"]["username"]),
        user_agent: s(&v["userAgent"]),
        namespace: s(&v["objectRef"]["namespace"]),
        resource: s(&v["objectRef"]["resource"]),
        subresource: s(&v["objectRef"]["subresource"]),
        name: s(&v["objectRef"]["name"]),
        code: v["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
        at: to_instant(wall),
        wall,
        request: v.get("requestObject").cloned(),
        response: v.get("responseObject").cloned(),
    })
}

/// Parses an RFC 3339 timestamp (the API server's MicroTime).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let ts: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(ts))
}

/// A wall-clock instant on this process's monotonic clock.
pub fn to_instant(wall: SystemTime) -> Instant {
    let (now_wall, now) = (SystemTime::now(), Instant::now());
    match now_wall.duration_since(wall) {
        Ok(ago) => now.checked_sub(ago).unwrap_or(now),
        Err(ahead) => now + ahead.duration(),
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock leaderd measures its
/// terms with, and the client-go candidate records its intervals on).
pub fn monotonic_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC now, in nanoseconds: maps a wall-clock
/// instant of a log line onto CLOCK_MONOTONIC.
pub fn wall_minus_monotonic_ns() -> i128 {
    let before = monotonic_ns();
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i128;
    let after = monotonic_ns();
    wall - (before + after) / 2
}

// --- the client-go candidate ------------------------------------------------------

/// Path of the client-go candidate (tests/interop/clientgo), built once per
/// machine by `scripts/kube-build clientgo-candidate`.
pub fn clientgo_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BINARY.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/kube-build"))
            .arg("clientgo-candidate")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("scripts/kube-build: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/kube-build clientgo-candidate: {}",
                out.status
            ));
        }
        Ok(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    });
    match built {
        Ok(path) => path,
        Err(why) => panic!("no client-go candidate: {why}"),
    }
}

/// client-go's timing for a candidate.
#[derive(Debug, Clone, Copy)]
pub struct ClientGoTiming {
    pub lease: Duration,
    pub renew: Duration,
    pub retry: Duration,
}

/// A running client-go candidate (`tools/leaderelection`, LeaseLock,
/// ReleaseOnCancel), killed and reaped on drop.
pub struct ClientGo {
    pub identity: String,
    pub timing: ClientGoTiming,
    child: Mutex<Child>,
    exit: Mutex<Option<i32>>,
    intervals: PathBuf,
    log: PathBuf,
    /// When the test killed it (CLOCK_MONOTONIC), to close an open interval.
    killed_at: Mutex<Option<i128>>,
    _dir: tempfile::TempDir,
}

impl ClientGo {
    pub fn start(
        kubeconfig: &Path,
        namespace: &str,
        lease: &str,
        identity: &str,
        timing: ClientGoTiming,
        extra: &[&str],
    ) -> ClientGo {
        let dir = tempfile::tempdir().expect("tempdir for client-go");
        let intervals = dir.path().join("intervals");
        let log = dir.path().join("log");
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let child = Command::new(clientgo_binary())
            .arg(format!("-kubeconfig={}", kubeconfig.display()))
            .arg(format!("-namespace={namespace}"))
            .arg(format!("-lease={lease}"))
            .arg(format!("-identity={identity}"))
            .arg(format!("-lease-duration={}", ms(timing.lease)))
            .arg(format!("-renew-deadline={}", ms(timing.renew)))
            .arg(format!("-retry-period={}", ms(timing.retry)))
            .arg(format!("-intervals={}", intervals.display()))
            .arg("-v=2")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).expect("log file"))
            .stderr(
                fs::OpenOptions::new()
                    .append(true)
                    .open(&log)
                    .expect("log file"),
            )
            .spawn()
            .expect("spawn the client-go candidate");
        ClientGo {
            identity: identity.to_string(),
            timing,
            child: Mutex::new(child),
            exit: Mutex::new(None),
            intervals,
            log,
            killed_at: Mutex::new(None),
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().expect("child").id()
    }

    /// Currently leading by its own record (an open interval).
    pub fn is_leading(&self) -> bool {
        self.raw_intervals()
            .last()
            .is_some_and(|(_, stop)| stop.is_none())
            && self.exit_code().is_none()
    }

    fn raw_intervals(&self) -> Vec<(i128, Option<i128>)> {
        let text = fs::read_to_string(&self.intervals).unwrap_or_default();
        let mut out: Vec<(i128, Option<i128>)> = Vec::new();
        for line in text.lines() {
            let Some((what, ns)) = line.split_once(' ') else {
                continue;
            };
            let Ok(ns) = ns.trim().parse::<i128>() else {
                continue;
            };
            match what {
                "leading" => out.push((ns, None)),
                "stopped" => {
                    if let Some(last) = out.last_mut() {
                        last.1 = Some(ns);
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Its leadership intervals on CLOCK_MONOTONIC; an interval left open
    /// by a SIGKILL ends when the test killed it.
    pub fn intervals(&self) -> Vec<(i128, i128)> {
        let killed = *self.killed_at.lock().expect("killed_at");
        self.raw_intervals()
            .into_iter()
            .map(|(start, stop)| (start, stop.or(killed).unwrap_or_else(monotonic_ns)))
            .collect()
    }

    pub fn signal(&self, sig: &str) {
        crate::support::send_signal(self.pid(), sig);
    }

    /// SIGKILL and reap, noting the instant.
    pub fn kill(&self) {
        if self.exit_code().is_some() {
            return;
        }
        let mut child = self.child.lock().expect("child");
        let _ = child.kill();
        let status = child.wait();
        *self.killed_at.lock().expect("killed_at") = Some(monotonic_ns());
        if let Ok(status) = status {
            use std::os::unix::process::ExitStatusExt;
            *self.exit.lock().expect("exit") = Some(
                status
                    .code()
                    .unwrap_or_else(|| -status.signal().unwrap_or(0)),
            );
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        let mut exit = self.exit.lock().expect("exit");
        if exit.is_none()
            && let Ok(Some(status)) = self.child.lock().expect("child").try_wait()
        {
            use std::os::unix::process::ExitStatusExt;
            *exit = Some(
                status
                    .code()
                    .unwrap_or_else(|| -status.signal().unwrap_or(0)),
            );
        }
        *exit
    }

    pub fn wait_exit(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.exit_code() {
                return Some(code);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(15));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ClientGo {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "--- client-go {} log ---\n{}\n--- end of log ---",
                self.identity,
                self.log()
            );
        }
    }
}

// --- MicroTime, as client-go writes and parses it ----------------------------------

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
