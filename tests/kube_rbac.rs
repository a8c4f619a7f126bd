//! The chart's RBAC is exactly enough, under the real RBAC authorizer
//! (tests/support/kube_real.rs).
//!
//! For each deployment shape (standalone and sidecar, on a Kubernetes Lease
//! and on Redis) the chart is rendered as `scripts/check-packaging` renders
//! it (tests/support/render_chart.py, helm-python-sdk); its ServiceAccount,
//! Roles and RoleBindings are applied to the API server, and leaderd runs
//! with the configuration the chart generated, authenticated as that
//! ServiceAccount (a TokenRequest token). With the Role as rendered it
//! works; with each verb of each rule taken away in turn, leaderd reports
//! the documented 403 — naming the verb, the resource and the namespace —
//! and keeps running. A verb whose removal goes unnoticed is one the chart
//! grants for nothing, and fails the test.

#[path = "support/kube_real.rs"]
mod kube_real;
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::PolicyRule;
use kube_real::{Namespace, control_plane, repo_root};
use serde_json::Value;
use support::*;

/// What the chart rendered that matters here.
struct Rendered {
    service_account: String,
    /// Role name and its rules (all in the release namespace here).
    roles: Vec<(String, Vec<PolicyRule>)>,
    /// RoleBinding: (name, role, service account).
    bindings: Vec<(String, String, String)>,
    /// The leaderd.yaml the chart generated.
    config: Value,
}

fn render(set: &str, ns: &Namespace) -> Rendered {
    let out = Command::new("python3")
        .arg(repo_root().join("tests/support/render_chart.py"))
        .args([set, ns.name()])
        .current_dir(repo_root())
        .output()
        .expect("run python3 tests/support/render_chart.py");
    assert!(
        out.status.success(),
        "rendering the chart ({set}) failed; it needs `pip install helm-python-sdk==0.2.2 pyyaml` (scripts/test installs them):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("rendered JSON");
    let of = |kind: &'static str| docs.iter().filter(move |d| d["kind"] == kind);
    let name = |d: &Value| d["metadata"]["name"].as_str().expect("name").to_string();
    let service_account = of("ServiceAccount")
        .map(name)
        .next()
        .expect("a ServiceAccount");
    let roles = of("Role")
        .map(|d| {
            assert_eq!(d["metadata"]["namespace"], ns.name(), "{d}");
            (
                name(d),
                serde_json::from_value(d["rules"].clone()).expect("Role rules"),
            )
        })
        .collect();
    let bindings = of("RoleBinding")
        .map(|d| {
            (
                name(d),
                d["roleRef"]["name"].as_str().expect("roleRef").to_string(),
                d["subjects"][0]["name"]
                    .as_str()
                    .expect("subject")
                    .to_string(),
            )
        })
        .collect();
    let config_text = of("ConfigMap")
        .find_map(|d| d["data"]["leaderd.yaml"].as_str().map(str::to_string))
        .expect("a ConfigMap with leaderd.yaml");
    let config = serde_yaml::from_str(&config_text).expect("leaderd.yaml is YAML");
    Rendered {
        service_account,
        roles,
        bindings,
        config,
    }
}

/// One shape of the chart, applied to a fresh namespace.
struct Deployment {
    ns: Namespace,
    rendered: Rendered,
    kubeconfig: PathBuf,
    config: String,
    pod: String,
    lease: Option<String>,
    _redis: Option<RedisServer>,
}

impl Deployment {
    fn new(set: &str) -> Deployment {
        let ns = control_plane().namespace(set);
        let rendered = render(set, &ns);
        ns.service_account(&rendered.service_account);
        for (role, rules) in &rendered.roles {
            ns.set_role(role, rules.clone());
        }
        for (_, role, sa) in &rendered.bindings {
            assert_eq!(*sa, rendered.service_account);
            ns.bind(role, sa);
        }
        let kubeconfig = ns.kubeconfig(&rendered.service_account, None);

        // The generated configuration, with test timings; hooks and the
        // leader process (the workload's own programs) left out; Redis is a
        // private redis-server.
        let mut config = rendered.config.clone();
        let object = config.as_object_mut().expect("a mapping");
        object.remove("hooks");
        object.remove("leader_process");
        object.remove("http");
        object.insert(
            "election".into(),
            serde_json::json!({
                "name": rendered.config["election"]["name"],
                "lease_duration": "2s",
                "renew_deadline": "1200ms",
                "retry_period": "333ms",
            }),
        );
        let mut redis = None;
        if config["backend"].get("redis").is_some() {
            let server = RedisServer::start();
            config["backend"] = serde_json::json!({"redis": {"urls": [server.url()]}});
            redis = Some(server);
        }
        let lease = config["backend"]["kubernetes"]["lease_name"]
            .as_str()
            .map(str::to_string);
        // Our pod, with the labels the pod_label selector looks for.
        let selector = config["pod_label"]["selector"]
            .as_str()
            .expect("pod_label.selector")
            .to_string();
        let labels: Vec<(&str, &str)> = selector
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let pod = "demo-pod-0".to_string();
        ns.create_pod(&pod, &labels);
        Deployment {
            config: serde_yaml::to_string(&config).expect("YAML"),
            ns,
            rendered,
            kubeconfig,
            pod,
            lease,
            _redis: redis,
        }
    }

    fn start(&self) -> Leaderd {
        Leaderd::builder(&self.config)
            .identity(&self.pod)
            .env("POD_NAME", &self.pod)
            .env("POD_NAMESPACE", self.ns.name())
            .env("KUBECONFIG", self.kubeconfig.to_str().expect("utf-8 path"))
            .start()
    }

    /// With the Role as rendered: leads, labels its pod, records its
    /// Events, and nothing it asks is refused.
    fn works(&self) {
        let since = Instant::now();
        let d = self.start();
        wait_until(PATIENCE, "leaderd leads", || d.is_leading());
        wait_until(PATIENCE, "its pod is labelled leader", || {
            self.ns.label(&self.pod, "leaderd.io/role").as_deref() == Some("leader")
        });
        if let Some(lease) = &self.lease {
            wait_until(PATIENCE, "the Lease names it", || {
                self.ns.lease_holder(lease).as_deref() == Some(self.pod.as_str())
            });
            wait_until(PATIENCE, "an Event on the Lease", || {
                !self
                    .ns
                    .events_for("Lease", lease, "LeaderElection")
                    .is_empty()
            });
        }
        wait_until(PATIENCE, "an Event on the pod", || {
            !self
                .ns
                .events_for("Pod", &self.pod, "LeaderLabel")
                .is_empty()
        });
        let user = self.ns.user(&self.rendered.service_account);
        for r in self
            .ns
            .requests()
            .iter()
            .filter(|r| r.user == user && r.at >= since)
        {
            assert!(
                r.code != 403,
                "refused with the chart's Role: {r:?}\n{}",
                self.ns.dump()
            );
        }
        assert!(!d.log().to_lowercase().contains("forbidden"), "{}", d.log());
        d.signal("TERM");
        assert_eq!(d.wait_exit(PATIENCE), Some(0), "{}", d.log());
    }

    /// Takes each verb of each rule away in turn: leaderd must report the
    /// 403 and keep running.
    fn every_verb_is_needed(&self) {
        for (role, rules) in &self.rendered.roles {
            for (index, rule) in rules.iter().enumerate() {
                for verb in &rule.verbs {
                    self.without(role, rules, index, verb);
                }
            }
        }
    }

    fn without(&self, role: &str, rules: &[PolicyRule], index: usize, verb: &str) {
        let rule = &rules[index];
        let group = rule
            .api_groups
            .as_ref()
            .and_then(|g| g.first())
            .cloned()
            .unwrap_or_default();
        let resource = rule
            .resources
            .as_ref()
            .and_then(|r| r.first())
            .cloned()
            .expect("resource");
        let what = format!("{verb} {resource} (role {role}, rule {index})");
        let mut fewer = rules.to_vec();
        fewer[index].verbs.retain(|v| v != verb);
        if fewer[index].verbs.is_empty() {
            fewer.remove(index);
        }
        self.ns.set_role(role, fewer);
        let sa = &self.rendered.service_account;
        let name = rule
            .resource_names
            .as_ref()
            .and_then(|n| n.first())
            .cloned();
        self.ns
            .wait_authorized_for(sa, verb, &group, &resource, name.as_deref(), false);
        // Every run starts from no Lease, so that `create` is needed too.
        if let Some(lease) = &self.lease {
            self.ns.delete_lease(lease);
        }

        let d = self.start();
        let reported = format!(
            "may not {verb} {resource} in namespace \"{}\"",
            self.ns.name()
        );
        let seen = wait_for(PATIENCE, &format!("a 403 for {what} in the log"), || {
            assert!(
                d.wait_exit(Duration::ZERO).is_none(),
                "leaderd exited without {what}:\n{}",
                d.log()
            );
            d.log()
                .lines()
                .find(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && l.contains(&reported))
                .map(str::to_string)
        });
        eprintln!("without {what}: {seen}");
        assert!(seen.contains("forbidden"), "{seen}");
        assert_eq!(d.get("/healthz").0, 200, "{}", d.log());
        assert!(!d.log().contains("panicked"), "{}", d.log());
        d.signal("TERM");
        assert_eq!(d.wait_exit(PATIENCE), Some(0), "{}", d.log());

        self.ns.set_role(role, rules.to_vec());
        self.ns
            .wait_authorized_for(sa, verb, &group, &resource, name.as_deref(), true);
    }
}

fn chart_rbac_is_exactly_enough(set: &str) {
    let deployment = Deployment::new(set);
    deployment.works();
    deployment.every_verb_is_needed();
    // And works again with everything back.
    deployment.works();
}

#[test]
fn standalone_on_a_kubernetes_lease() {
    chart_rbac_is_exactly_enough("standalone-kubernetes");
}

#[test]
fn sidecar_on_a_kubernetes_lease() {
    chart_rbac_is_exactly_enough("sidecar-kubernetes");
}

#[test]
fn standalone_on_redis() {
    chart_rbac_is_exactly_enough("standalone-redis");
}

#[test]
fn sidecar_on_redis() {
    chart_rbac_is_exactly_enough("sidecar-redis");
}
