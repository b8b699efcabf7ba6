//! What RBAC enforcement costs, printed (no assertions on time):
//!
//! 1. the decision alone: [`ferry_apiserver::rbac::is_allowed`] (what the server asks for
//!    every request) over an index of ~100
//!    bindings (plus the bootstrap roles and `deploy/rbac.yaml`), ns per decision, for a
//!    request allowed by the last binding of the caller's group and for one denied;
//! 2. whole requests: sequential GETs of one ConfigMap over HTTPS by a ServiceAccount that
//!    ~100 bindings later may read it, with enforcement on and off (interleaved rounds),
//!    p50/p99 latency.
//!
//! `cargo run -p ferry-apiserver --example rbac_bench [-- --requests N]`

use std::time::{Duration, Instant};

use ferry_apiserver::rbac::{Attributes, Index, UserInfo, authorize, is_allowed};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const BINDINGS: usize = 100;

fn cluster_role(name: &str, resource: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"apiGroups": ["", "apps", "iaas.yusur.io"], "resources": [resource, format!("{resource}/status")],
            "verbs": ["get", "list", "watch", "update"]},
            {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": ["a", "b"], "verbs": ["get"]}]})
}

/// `BINDINGS` bindings: half ClusterRoleBindings, half RoleBindings in ten namespaces, to
/// users, groups and ServiceAccounts; the last grants `configmaps` to the agent's SA group.
fn objects() -> (Vec<Value>, Vec<Value>) {
    let mut roles = Vec::new();
    let mut bindings = Vec::new();
    for i in 0..BINDINGS {
        let last = i == BINDINGS - 1;
        let resource = if last {
            "configmaps".to_string()
        } else {
            format!("things{i}")
        };
        let role = format!("bench-role-{i}");
        roles.push(cluster_role(&role, &resource));
        let subjects = if last {
            json!([{"kind": "Group", "name": "system:serviceaccounts:ferry-system"}])
        } else {
            json!([{"kind": "User", "name": format!("user{i}")},
                   {"kind": "Group", "name": "system:serviceaccounts"},
                   {"kind": "ServiceAccount", "name": format!("sa{i}"), "namespace": "ferry-system"}])
        };
        let role_ref =
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role});
        bindings.push(if i % 2 == 0 || last {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": format!("bench-{i}")}, "roleRef": role_ref, "subjects": subjects})
        } else {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": format!("bench-{i}"), "namespace": format!("ns{}", i % 10)},
                "roleRef": role_ref, "subjects": subjects})
        });
    }
    (roles, bindings)
}

fn decision_cost() {
    let (roles, bindings) = objects();
    let of = |k: &str| -> Vec<Value> {
        bindings
            .iter()
            .filter(|b| b["kind"] == k)
            .cloned()
            .collect()
    };
    let started = Instant::now();
    let index = Index::build(&roles, &[], &of("ClusterRoleBinding"), &of("RoleBinding"));
    let build = started.elapsed();
    let user = UserInfo::service_account("ferry-system", "ferry-agent", "");
    let allowed = Attributes::resource("get", "", "configmaps", "", Some("default"), Some("x"));
    let denied = Attributes::resource("get", "", "secrets", "", Some("ns3"), Some("x"));
    assert!(authorize(&index, &user, &allowed).allowed);
    assert!(!authorize(&index, &user, &denied).allowed);
    let n = 200_000;
    for (what, attrs) in [("allowed (last binding)", &allowed), ("denied", &denied)] {
        let t = Instant::now();
        let mut yes = 0usize;
        for _ in 0..n {
            yes += usize::from(std::hint::black_box(is_allowed(&index, &user, attrs)));
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "decision {what:<24} {ns:>8.0} ns/request ({} bindings, {yes} allowed)",
            index.bindings
        );
    }
    println!(
        "index build              {:>8.0} us ({} bindings)",
        build.as_secs_f64() * 1e6,
        index.bindings
    );
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

async fn request_cost(requests: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ferry_apiserver::ApiServer::start(ferry_apiserver::Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        limits: Default::default(),
        services: Default::default(),
    })
    .await?;
    let admin = client(&server.kubeconfig).await?;
    for i in 0..10 {
        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(json!({"metadata": {"name": format!("ns{i}")}}))?;
        Api::all(admin.clone())
            .create(&PostParams::default(), &ns)
            .await?;
    }
    let (roles, bindings) = objects();
    for o in roles.iter().chain(&bindings) {
        ferry_testkit::api::apply(&admin, o).await?;
    }
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "bench"}, "data": {"a": "b"}}))?;
    Api::<ConfigMap>::namespaced(admin, "default")
        .create(&PostParams::default(), &cm)
        .await?;
    let agent = client(&dir.path().join("kubeconfig-agent")).await?;
    let cms: Api<ConfigMap> = Api::namespaced(agent, "default");
    cms.get("bench").await?;
    let mut on = Vec::new();
    let mut off = Vec::new();
    for round in 0..6 {
        let enforced = round % 2 == 0;
        server.set_rbac_enforced(enforced);
        let out = if enforced { &mut on } else { &mut off };
        for _ in 0..requests / 3 {
            let t = Instant::now();
            cms.get("bench").await?;
            out.push(t.elapsed());
        }
    }
    for (what, mut v) in [("RBAC enforced", on), ("RBAC off", off)] {
        v.sort();
        println!(
            "GET configmap {what:<14} p50 {:>7.0} us  p99 {:>7.0} us  ({} requests)",
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            v.len()
        );
    }
    server.shutdown().await;
    Ok(())
}

async fn client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let requests = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(3000usize);
    decision_cost();
    tokio::runtime::Runtime::new()?.block_on(request_cost(requests))
}
