//! `v1 Service` on the embedded server as kube-apiserver serves it: defaults, cluster IPs
//! and node ports (unique under concurrent creates, sticky across updates, freed on delete,
//! kept across a restart), 422s naming the field, YusurServices' cluster IPs never handed
//! to a Service, and what `kubectl create service` / `expose` / `get svc` show.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use ferry_apiserver::{ApiServer, Config, ServiceNetwork};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

async fn start(dir: &Path) -> ApiServer {
    ferry_testkit::api::start_with_crds(Config {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("address"),
        limits: Default::default(),
        services: ServiceNetwork::default(),
    })
    .await
}

fn svc(name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name}, "spec": spec}))
    .expect("a Service")
}

fn spec(s: &Service) -> Value {
    serde_json::to_value(s.spec.as_ref().expect("spec")).expect("JSON")
}

/// The 422's causes as `field: message`.
fn causes(e: kube::Error) -> Vec<String> {
    match e {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422, "{s:?}");
            let v = serde_json::to_value(&s).expect("status");
            v["details"]["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{}: {}",
                        c["field"].as_str().unwrap_or_default(),
                        c["message"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        }
        other => panic!("expected a 422, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_defaults_addresses_and_node_ports_like_on_kube_apiserver() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path()).await;
    let client = common::client_for(&server.kubeconfig).await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    let web = api
        .create(
            &pp,
            &svc(
                "web",
                json!({"type": "NodePort", "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": 8080}]}),
            ),
        )
        .await
        .expect("create");
    let s = spec(&web);
    let ip: std::net::Ipv4Addr = s["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .parse()
        .expect("IPv4");
    assert!(
        "10.96.0.0/16"
            .parse::<ipnet::Ipv4Net>()
            .expect("cidr")
            .contains(&ip),
        "{ip}"
    );
    assert_eq!(s["clusterIPs"], json!([ip.to_string()]));
    let np = s["ports"][0]["nodePort"].as_i64().expect("nodePort");
    assert!((30000..=32767).contains(&np), "{np}");
    assert_eq!(
        (
            &s["ports"][0]["protocol"],
            &s["sessionAffinity"],
            &s["externalTrafficPolicy"],
            &s["internalTrafficPolicy"],
            &s["ipFamilies"],
            &s["ipFamilyPolicy"]
        ),
        (
            &json!("TCP"),
            &json!("None"),
            &json!("Cluster"),
            &json!("Cluster"),
            &json!(["IPv4"]),
            &json!("SingleStack")
        )
    );

    // Sticky: a replace without clusterIP or nodePort, and a merge patch, keep both.
    let mut again = svc(
        "web",
        json!({"type": "NodePort", "selector": {"app": "web"},
        "ports": [{"port": 80, "targetPort": 8080}]}),
    );
    again.metadata.resource_version = web.metadata.resource_version.clone();
    let replaced = api.replace("web", &pp, &again).await.expect("replace");
    assert_eq!(spec(&replaced)["clusterIP"], s["clusterIP"]);
    assert_eq!(spec(&replaced)["ports"][0]["nodePort"], json!(np));
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"app": "web2"}}})),
        )
        .await
        .expect("patch");
    assert_eq!(spec(&patched)["clusterIP"], s["clusterIP"]);
    // The primary address never changes.
    let err = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"clusterIP": "10.96.0.77", "clusterIPs": ["10.96.0.77"]}}),
            ),
        )
        .await
        .expect_err("moving the cluster IP");
    assert_eq!(
        causes(err),
        vec!["spec.clusterIPs[0]: Invalid value: \"10.96.0.77\": may not change once set"]
    );

    // Conflicts and bad input: 422 naming the field, nothing stored.
    let cases = [
        ("taken-ip", json!({"clusterIP": ip.to_string(), "ports": [{"port": 80}]}),
            format!("spec.clusterIPs: Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated")),
        ("taken-port", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": np}]}),
            format!("spec.ports[0].nodePort: Invalid value: {np}: provided port is already allocated")),
        ("port-80", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
            "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767".to_string()),
        ("outside", json!({"clusterIP": "192.168.0.1", "ports": [{"port": 80}]}),
            "spec.clusterIPs: Invalid value: [\"192.168.0.1\"]: failed to allocate IP 192.168.0.1: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16".to_string()),
        ("dup", json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}),
            "spec.ports[1]: Duplicate value: {\"port\": 80, \"protocol\": \"TCP\"}".to_string()),
        ("noports", json!({"selector": {"a": "b"}}), "spec.ports: Required value".to_string()),
    ];
    for (name, s, want) in cases {
        let err = api.create(&pp, &svc(name, s)).await.expect_err(name);
        assert_eq!(causes(err), vec![want], "{name}");
        assert!(
            api.get_opt(name).await.expect("get").is_none(),
            "{name} was stored"
        );
    }

    // A requested address is honoured; headless and ExternalName get none.
    let fixed = api
        .create(
            &pp,
            &svc(
                "fixed",
                json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}),
            ),
        )
        .await
        .expect("fixed");
    assert_eq!(spec(&fixed)["clusterIP"], "10.96.0.10");
    let headless = api
        .create(
            &pp,
            &svc(
                "db",
                json!({"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}),
            ),
        )
        .await
        .expect("headless");
    assert_eq!(spec(&headless)["clusterIPs"], json!(["None"]));
    let ext = api
        .create(
            &pp,
            &svc(
                "ext",
                json!({"type": "ExternalName", "externalName": "example.com"}),
            ),
        )
        .await
        .expect("ExternalName");
    assert_eq!(spec(&ext).get("clusterIP"), None);

    // Server-side apply creates, and a re-apply of the same manifest keeps the allocations.
    let manifest = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "applied"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "a"},
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}});
    let ssa = PatchParams::apply("test").force();
    let first = api
        .patch("applied", &ssa, &Patch::Apply(manifest.clone()))
        .await
        .expect("apply");
    let f = spec(&first);
    assert_eq!(
        f["ports"][0]["nodePort"], f["ports"][1]["nodePort"],
        "one node port for UDP and TCP 53"
    );
    assert!(
        f["healthCheckNodePort"]
            .as_i64()
            .is_some_and(|h| h != f["ports"][0]["nodePort"].as_i64().unwrap_or(0)),
        "{f}"
    );
    let again = api
        .patch("applied", &ssa, &Patch::Apply(manifest))
        .await
        .expect("re-apply");
    assert_eq!(spec(&again), f);

    // Freed on delete: the address and the node port can be asked for again.
    api.delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    let reuse = api
        .create(
            &pp,
            &svc(
                "reuse",
                json!({"type": "NodePort", "clusterIP": ip.to_string(),
            "ports": [{"port": 80, "nodePort": np}]}),
            ),
        )
        .await
        .expect("the freed address and node port");
    assert_eq!(spec(&reuse)["clusterIP"], json!(ip.to_string()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_never_share_an_address_and_a_restart_keeps_the_ledger() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = common::spawn_server(dir.path());
    let client = common::client_for(&dir.path().join("kubeconfig")).await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let creates = (0..60).map(|i| {
        let api = api.clone();
        async move {
            api.create(
                &PostParams::default(),
                &svc(
                    &format!("s{i}"),
                    json!({"type": "NodePort",
                "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}),
                ),
            )
            .await
            .expect("create")
        }
    });
    let made = futures::future::join_all(creates).await;
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for s in &made {
        let s = spec(s);
        assert!(
            ips.insert(s["clusterIP"].as_str().expect("ip").to_string()),
            "{s}"
        );
        for p in s["ports"].as_array().expect("ports") {
            assert!(
                ports.insert(p["nodePort"].as_i64().expect("nodePort")),
                "{s}"
            );
        }
    }
    assert_eq!((ips.len(), ports.len()), (60, 120));
    let first = spec(&made[0]);
    drop(server);

    // After a restart (SIGKILL, same data dir) the ledger comes back from the store.
    let server = common::spawn_server(dir.path());
    let client = common::client_for(&dir.path().join("kubeconfig")).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let err = api
        .create(
            &PostParams::default(),
            &svc(
                "late",
                json!({"type": "NodePort",
            "clusterIP": first["clusterIP"], "ports": [{"port": 80}]}),
            ),
        )
        .await
        .expect_err("an address held before the restart");
    assert_eq!(causes(err).len(), 1);
    let late = api
        .create(
            &PostParams::default(),
            &svc("late", json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .await
        .expect("create after restart");
    let l = spec(&late);
    assert!(!ips.contains(l["clusterIP"].as_str().expect("ip")), "{l}");
    assert!(
        !ports.contains(&l["ports"][0]["nodePort"].as_i64().expect("np")),
        "{l}"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yusur_service_cluster_ips_and_service_cluster_ips_never_meet() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path()).await;
    let client = common::client_for(&server.kubeconfig).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let ysvcs: Api<ferry_api::YusurService> = Api::namespaced(client.clone(), "default");
    let mut y: ferry_api::YusurService = serde_saphyr_free_seed();
    y.metadata.name = Some("ysvc1".into());
    ysvcs
        .create(&PostParams::default(), &y)
        .await
        .expect("YusurService");
    // Ferry's controller gives it 10.96.0.20 (status).
    ysvcs
        .patch_status(
            "ysvc1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"clusterIP": "10.96.0.20"}})),
        )
        .await
        .expect("status");
    // A Service may not ask for it ...
    let err = svcs
        .create(
            &PostParams::default(),
            &svc(
                "web",
                json!({"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}),
            ),
        )
        .await
        .expect_err("a YusurService's address");
    assert_eq!(
        causes(err),
        vec![
            "spec.clusterIPs: Invalid value: [\"10.96.0.20\"]: failed to allocate IP 10.96.0.20: provided IP is already allocated"
        ]
    );
    // ... but the Service Ferry's controller generates for it (same name) may carry it.
    let generated = svcs
        .create(
            &PostParams::default(),
            &svc(
                "ysvc1",
                json!({"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}),
            ),
        )
        .await
        .expect("the generated Service");
    assert_eq!(spec(&generated)["clusterIP"], "10.96.0.20");
    // A YusurService status naming a Service's address is refused, naming the field.
    let taken = svcs
        .create(
            &PostParams::default(),
            &svc(
                "other",
                json!({"clusterIP": "10.96.0.30", "ports": [{"port": 80}]}),
            ),
        )
        .await
        .expect("other");
    assert_eq!(spec(&taken)["clusterIP"], "10.96.0.30");
    let mut y2 = y.clone();
    y2.metadata.name = Some("ysvc2".into());
    ysvcs
        .create(&PostParams::default(), &y2)
        .await
        .expect("ysvc2");
    let err = ysvcs
        .patch_status(
            "ysvc2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"clusterIP": "10.96.0.30"}})),
        )
        .await
        .expect_err("a Service's address");
    assert_eq!(
        causes(err),
        vec![
            "status.clusterIP: Invalid value: \"10.96.0.30\": provided IP is already allocated to Service default/other"
        ]
    );
    server.shutdown().await;
}

/// The seed YusurService of the README, without its status.
fn serde_saphyr_free_seed() -> ferry_api::YusurService {
    serde_json::from_value(
        json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .expect("a YusurService")
}

fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(common::kubectl_for("1.27"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("running kubectl 1.27");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_service_expose_and_get_svc_show_addresses_and_node_ports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(&dir.path().join("api")).await;
    let kc = server.kubeconfig.clone();
    let cache = dir.path().join("kcache");
    let run = |args: &[&str]| kubectl(&kc, &cache, args);
    let (ok, _, err) = run(&["create", "service", "nodeport", "x", "--tcp=80:8080"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["run", "p", "--image=x", "--labels=app=p", "--port=8080"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["expose", "pod", "p", "--port=80", "--target-port=8080"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name=example.com",
    ]);
    assert!(ok, "{err}");
    let (ok, table, err) = run(&["get", "svc"]);
    assert!(ok, "{err}");
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in\n{table}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let x = row("x");
    assert_eq!(x[1], "NodePort", "{table}");
    assert!(x[2].starts_with("10.96."), "{table}");
    assert_eq!(x[3], "<none>", "{table}");
    let (port, rest) = x[4].split_once(':').unwrap_or_else(|| panic!("{table}"));
    assert_eq!(port, "80");
    let np: u16 = rest
        .trim_end_matches("/TCP")
        .parse()
        .unwrap_or_else(|_| panic!("{table}"));
    assert!((30000..=32767).contains(&np), "{table}");
    let p = row("p");
    assert_eq!(
        (p[1].as_str(), p[4].as_str()),
        ("ClusterIP", "80/TCP"),
        "{table}"
    );
    assert!(p[2].starts_with("10.96.") && p[2] != x[2], "{table}");
    let ext = row("ext");
    assert_eq!(
        &ext[1..5],
        ["ExternalName", "<none>", "example.com", "<none>"],
        "{table}"
    );
    // Bad input through kubectl: the 422 names the field.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 80}]\n",
    )
    .expect("manifest");
    let (ok, _, err) = run(&["apply", "-f", bad.to_str().expect("path")]);
    assert!(!ok);
    assert!(
        err.contains("The Service \"bad\" is invalid: spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"),
        "{err}"
    );
    server.shutdown().await;
}
