//! The federation end to end over real API servers: a federation API server with two
//! controller replicas, three member `ferry apiserver`s (no data plane: a member's
//! YusurService is only stored, and the test writes its status as the member's controller
//! would), and three join agents, members c1 and c2 in tenant t1 and c3 in tenant t2.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_api::YusurService;
use ferry_apiserver::{ApiServer, Config};
use ferry_federation::controller::{self, ControllerConfig};
use ferry_federation::join::{self, JoinConfig};
use ferry_federation::server::{client_for, start_server};
use ferry_federation::types::{
    Cell, FederatedYusurService, LABEL_TENANT, LABEL_WORKSPACE, MemberCluster,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it returns Some, or fails after [`WAIT`] naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Member {
    server: ApiServer,
    client: Client,
    _dir: tempfile::TempDir,
    join: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    config: JoinConfig,
    /// The member's own federation client, once registered ([`Member::register`]).
    own: Option<Client>,
}

impl Member {
    async fn start(name: &'static str, tenant: &str, cells: &[(&str, &str)]) -> Member {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = ApiServer::start(Config {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().expect("address"),
            limits: Default::default(),
            services: Default::default(),
        })
        .await
        .expect("member API server");
        let crds: Vec<serde_json::Value> = ferry_api::all_crds()
            .iter()
            .map(|c| serde_json::to_value(c).expect("CRD"))
            .collect();
        server.install_crds(&crds).await.expect("Ferry CRDs");
        let client = client_for(&server.kubeconfig).await.expect("member client");
        let mut config = JoinConfig::new(name);
        config.tenant = Some(tenant.into());
        config.workspace = Some("w1".into());
        config.cells = cells
            .iter()
            .map(|(n, ns)| Cell {
                name: n.to_string(),
                namespace: ns.to_string(),
            })
            .collect();
        config.heartbeat = Duration::from_millis(300);
        Member {
            server,
            client,
            _dir: dir,
            join: None,
            config,
            own: None,
        }
    }

    /// Registers the member as the admin does (`ferry federation member add`): its
    /// MemberCluster, RBAC and its own token, which its join agent then uses.
    async fn register(&mut self, admin: &Client, admin_kubeconfig: &std::path::Path) {
        use ferry_federation::credential;
        let spec = credential::MemberSpec {
            name: self.config.name.clone(),
            tenant: self.config.tenant.clone(),
            workspace: self.config.workspace.clone(),
            cells: self.config.cells.clone(),
        };
        let token = credential::add_member(admin, &spec)
            .await
            .expect("member add");
        let endpoint = credential::endpoint_of(admin_kubeconfig).expect("endpoint");
        let path = self._dir.path().join("federation.kubeconfig");
        credential::write_member_kubeconfig(
            &path,
            &credential::member_kubeconfig(&endpoint, &spec.name, &token),
        )
        .expect("member kubeconfig");
        self.own = Some(client_for(&path).await.expect("member's federation client"));
    }

    /// Runs the join agent with the member's own client (the given one until registered).
    fn join(&mut self, federation: &Client) {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn({
            let f = self.own.clone().unwrap_or_else(|| federation.clone());
            let (m, c) = (self.client.clone(), self.config.clone());
            async move {
                join::run(f, m, c, rx).await.expect("join agent");
            }
        });
        self.join = Some((tx, task));
    }

    async fn leave(&mut self) {
        if let Some((tx, task)) = self.join.take() {
            let _ = tx.send(true);
            let _ = task.await;
        }
    }

    fn ysvcs(&self, ns: &str) -> Api<YusurService> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// The member's YusurServices as `ns/name:port`.
    async fn holds(&self) -> Vec<String> {
        let all: Api<YusurService> = Api::all(self.client.clone());
        let mut v: Vec<String> = all
            .list(&Default::default())
            .await
            .expect("listing member ysvcs")
            .items
            .iter()
            .map(|o| {
                format!(
                    "{}/{}:{}",
                    o.namespace().unwrap_or_default(),
                    o.name_any(),
                    o.spec.ports[0].port
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Writes the status the member's controller would write.
    async fn report(&self, ns: &str, name: &str, eip: &str, ready: i32) {
        let patch = json!({"status": {"clusterIP": "10.96.0.10", "eip": eip,
            "readyEndpoints": ready, "totalEndpoints": 2, "ready": format!("{ready}/2")}});
        self.ysvcs(ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("member status");
    }
}

fn fysvc(name: &str, tenant: &str, placement: serde_json::Value) -> FederatedYusurService {
    serde_json::from_value(json!({
        "apiVersion": "federation.iaas.yusur.io/v1",
        "kind": "FederatedYusurService",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {LABEL_TENANT: tenant, LABEL_WORKSPACE: "w1"}},
        "spec": {
            "template": {
                "metadata": {"annotations": {"lb.example/protocol": "tcp"}},
                "spec": {"type": "LoadBalancer", "vpc": "vpc1", "ports": [{"port": 80, "targetPort": 8080}],
                         "selector": {"app": name}},
            },
            "placement": placement,
        },
    }))
    .expect("a FederatedYusurService")
}

/// `(target, desiredGeneration, observedGeneration)` of every target.
fn generations(o: &FederatedYusurService) -> Vec<(String, Option<i64>, Option<i64>)> {
    o.status
        .iter()
        .flat_map(|s| s.targets.iter())
        .map(|t| (t.name.clone(), t.desired_generation, t.observed_generation))
        .collect()
}

fn condition(o: &FederatedYusurService, ty: &str) -> Option<(String, String)> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == ty)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn target_ready_reason(o: &FederatedYusurService, target: &str) -> Option<String> {
    o.status
        .as_ref()?
        .targets
        .iter()
        .find(|t| t.name == target)?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
}

async fn patch_spec(api: &Api<FederatedYusurService>, name: &str, spec: serde_json::Value) -> i64 {
    let o = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": spec})),
        )
        .await
        .expect("patching the federated object");
    o.metadata.generation.expect("generation")
}

fn port(spec_port: i32) -> serde_json::Value {
    json!({"metadata": {"annotations": {"lb.example/protocol": "tcp"}},
           "spec": {"type": "LoadBalancer", "vpc": "vpc1", "ports": [{"port": spec_port, "targetPort": 8080}],
                    "selector": {"app": "web"}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn federation_places_isolates_gray_releases_survives_a_down_member_and_feeds_status_back() {
    let fdir = tempfile::tempdir().expect("temp dir");
    let fserver = start_server(fdir.path(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("federation API server");
    let fed = client_for(&fserver.kubeconfig)
        .await
        .expect("federation client");

    // Two controller replicas: one leads through the Lease.
    let mut controllers = Vec::new();
    for id in ["fed-a", "fed-b"] {
        let (tx, rx) = watch::channel(false);
        let mut cfg = ControllerConfig::new(id);
        cfg.member_grace = Duration::from_secs(2);
        cfg.lease.duration = Duration::from_secs(3);
        let task = tokio::spawn(controller::run(fed.clone(), cfg, rx));
        controllers.push((tx, task));
    }

    let mut c1 = Member::start("c1", "t1", &[("cell-a", "ns-a")]).await;
    let mut c2 = Member::start("c2", "t1", &[]).await;
    let mut c3 = Member::start("c3", "t2", &[]).await;
    for m in [&mut c1, &mut c2, &mut c3] {
        m.register(&fed, &fserver.kubeconfig).await;
        m.join(&fed);
    }
    let mcs: Api<MemberCluster> = Api::all(fed.clone());
    eventually("three ready members with their tenants", || {
        let mcs = mcs.clone();
        async move {
            let list = mcs.list(&Default::default()).await.ok()?;
            let got: BTreeMap<String, (String, bool)> = list
                .items
                .iter()
                .map(|m| {
                    let ready = m.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    });
                    (
                        m.name_any(),
                        (
                            m.labels().get(LABEL_TENANT).cloned().unwrap_or_default(),
                            ready,
                        ),
                    )
                })
                .collect();
            let want = BTreeMap::from([
                ("c1".to_string(), ("t1".to_string(), true)),
                ("c2".to_string(), ("t1".to_string(), true)),
                ("c3".to_string(), ("t2".to_string(), true)),
            ]);
            (got == want).then_some(())
        }
    })
    .await;

    // Placement names c1, c2 and c3; c3 is tenant t2's: a condition, nothing written there.
    let api: Api<FederatedYusurService> = Api::namespaced(fed.clone(), "default");
    api.create(
        &PostParams::default(),
        &fysvc(
            "web",
            "t1",
            json!({"topologyType": "cluster", "clusters": ["c1", "c2", "c3"]}),
        ),
    )
    .await
    .expect("creating web");
    // Tenant t2 places its own object on c3 and (wrongly) on c1.
    api.create(
        &PostParams::default(),
        &fysvc(
            "other",
            "t2",
            json!({"topologyType": "cluster", "clusters": ["c3", "c1"]}),
        ),
    )
    .await
    .expect("creating other");
    eventually("web in c1 and c2, other in c3 only", || async {
        let got = (c1.holds().await, c2.holds().await, c3.holds().await);
        let want = (
            vec!["default/web:80".to_string()],
            vec!["default/web:80".to_string()],
            vec!["default/other:80".to_string()],
        );
        (got == want).then_some(())
    })
    .await;
    let placement = eventually("web's Placement condition", || async {
        let o = api.get("web").await.ok()?;
        condition(&o, "Placement").filter(|(s, _)| s == "False")
    })
    .await;
    assert_eq!(placement.1, "NotInTenant");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(fed.clone(), "default");
    let warned = eventually("a NotInTenant Warning Event on web", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("NotInTenant")
                && e.involved_object.name.as_deref() == Some("web")
        })
    })
    .await;
    assert_eq!(
        warned.message.as_deref(),
        Some("c3 is not a member cluster of tenant t1, workspace w1; nothing is written there")
    );
    // The spec annotation reached the member object; the federation's bookkeeping too.
    let held = c1.ysvcs("default").get("web").await.expect("web in c1");
    assert_eq!(
        held.annotations()
            .get("lb.example/protocol")
            .map(String::as_str),
        Some("tcp")
    );

    // Status feedback: each member's controller reports; the federated object shows it.
    c1.report("default", "web", "198.18.1.100", 2).await;
    c2.report("default", "web", "198.18.2.100", 1).await;
    let o = eventually("web Ready with both members' figures", || async {
        let o = api.get("web").await.ok()?;
        (condition(&o, "Ready") == Some(("True".into(), "AllTargetsReady".into()))).then_some(o)
    })
    .await;
    type Figures = (String, Option<String>, Option<String>, i32, i32);
    let figures: Vec<Figures> = o
        .status
        .as_ref()
        .expect("status")
        .targets
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.report.cluster_ip.clone(),
                t.report.eip.clone(),
                t.report.ready_endpoints,
                t.report.total_endpoints,
            )
        })
        .collect();
    assert_eq!(
        figures,
        vec![
            (
                "c1".into(),
                Some("10.96.0.10".into()),
                Some("198.18.1.100".into()),
                2,
                2
            ),
            (
                "c2".into(),
                Some("10.96.0.10".into()),
                Some("198.18.2.100".into()),
                1,
                2
            ),
        ]
    );
    assert_eq!(
        o.status.as_ref().and_then(|s| s.ready_targets.clone()),
        Some("2/2".into())
    );

    // A status annotation the member writes is kept there and fed back.
    let mut held = c1.ysvcs("default").get("web").await.expect("web in c1");
    held.metadata
        .annotations
        .get_or_insert_default()
        .insert("status.lb.example/phase".into(), "provisioned".into());
    c1.ysvcs("default")
        .replace("web", &PostParams::default(), &held)
        .await
        .expect("member writes a status annotation");

    // Gray release: port 8080 with mask [c1] changes c1 only.
    let g2 = patch_spec(
        &api,
        "web",
        json!({"template": port(8080), "placementMask": ["c1"],
               "placement": {"topologyType": "cluster", "clusters": ["c1", "c2"]}}),
    )
    .await;
    eventually("c1 at 8080, c2 still at 80", || async {
        let got = (c1.holds().await, c2.holds().await);
        (got == (
            vec!["default/web:8080".to_string()],
            vec!["default/web:80".to_string()],
        ))
            .then_some(())
    })
    .await;
    let o = eventually("per-target generations after the masked update", || async {
        let o = api.get("web").await.ok()?;
        (generations(&o)
            == vec![
                ("c1".to_string(), Some(g2), Some(g2)),
                ("c2".to_string(), Some(1), Some(1)),
            ])
        .then_some(o)
    })
    .await;
    assert_eq!(
        condition(&o, "UpToDate"),
        Some(("False".into(), "Masked".into()))
    );
    let held = c1.ysvcs("default").get("web").await.expect("web in c1");
    assert_eq!(
        held.annotations()
            .get("status.lb.example/phase")
            .map(String::as_str),
        Some("provisioned"),
        "a status annotation survives the federation's update"
    );
    let fed_annotations = o.status.as_ref().expect("status").targets[0]
        .report
        .status_annotations
        .clone();
    assert_eq!(
        fed_annotations
            .get("status.lb.example/phase")
            .map(String::as_str),
        Some("provisioned")
    );

    // c2's join agent stops: an update masked to c1 goes on; c2 turns not ready.
    c2.leave().await;
    let g3 = patch_spec(
        &api,
        "web",
        json!({"template": port(9090), "placementMask": ["c1"]}),
    )
    .await;
    eventually("c1 at 9090 while c2 is down", || async {
        (c1.holds().await == vec!["default/web:9090".to_string()]).then_some(())
    })
    .await;
    eventually("c2 reported not ready", || async {
        let o = api.get("web").await.ok()?;
        (target_ready_reason(&o, "c2").as_deref() == Some("MemberNotReady")).then_some(())
    })
    .await;
    // c2 comes back: outside the mask, it keeps what it had.
    c2.join(&fed);
    eventually("c2 ready again", || async {
        let o = api.get("web").await.ok()?;
        (target_ready_reason(&o, "c2").as_deref() == Some("Ready")).then_some(())
    })
    .await;
    assert_eq!(c2.holds().await, vec!["default/web:80".to_string()]);
    let o = api.get("web").await.expect("web");
    assert_eq!(
        generations(&o),
        vec![
            ("c1".to_string(), Some(g3), Some(g3)),
            ("c2".to_string(), Some(1), Some(1)),
        ]
    );

    // Down again, this time inside the mask: it gets the change when it returns.
    c2.leave().await;
    let g4 = patch_spec(
        &api,
        "web",
        json!({"template": port(7070), "placementMask": ["c1", "c2"]}),
    )
    .await;
    eventually("c1 at 7070", || async {
        (c1.holds().await == vec!["default/web:7070".to_string()]).then_some(())
    })
    .await;
    assert_eq!(
        c2.holds().await,
        vec!["default/web:80".to_string()],
        "c2 is down"
    );
    c2.join(&fed);
    eventually("c2 at 7070 after it returns", || async {
        (c2.holds().await == vec!["default/web:7070".to_string()]).then_some(())
    })
    .await;
    eventually("both targets at the new generation", || async {
        let o = api.get("web").await.ok()?;
        (generations(&o)
            == vec![
                ("c1".to_string(), Some(g4), Some(g4)),
                ("c2".to_string(), Some(g4), Some(g4)),
            ])
        .then_some(())
    })
    .await;

    // Removing c2 from placement deletes web there (the mask does not hold deletions).
    patch_spec(
        &api,
        "web",
        json!({"placement": {"topologyType": "cluster", "clusters": ["c1"]}, "placementMask": null}),
    )
    .await;
    eventually("web gone from c2, still in c1", || async {
        let got = (c1.holds().await, c2.holds().await);
        (got == (vec!["default/web:7070".to_string()], vec![])).then_some(())
    })
    .await;

    // Placement by cell lands in the cell's namespace.
    let mut by_cell = fysvc(
        "cellular",
        "t1",
        json!({"topologyType": "cell", "cells": ["cell-a"]}),
    );
    by_cell.spec.template.spec.selector = BTreeMap::from([("app".into(), "cellular".into())]);
    api.create(&PostParams::default(), &by_cell)
        .await
        .expect("creating cellular");
    eventually("cellular in c1's ns-a", || async {
        (c1.holds().await
            == vec![
                "default/web:7070".to_string(),
                "ns-a/cellular:80".to_string(),
            ])
        .then_some(())
    })
    .await;

    // Deleting the federated object while c1 is down: the object goes away in the
    // federation at once (its Works are the federation's), and c1 deletes its copy when
    // it comes back.
    c1.leave().await;
    api.delete("web", &DeleteParams::default())
        .await
        .expect("deleting web");
    eventually("web gone from the federation", || async {
        api.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(
        c1.holds().await,
        vec![
            "default/web:7070".to_string(),
            "ns-a/cellular:80".to_string()
        ],
        "c1 is down"
    );
    c1.join(&fed);
    eventually("web gone from c1 after it returns", || async {
        (c1.holds().await == vec!["ns-a/cellular:80".to_string()]).then_some(())
    })
    .await;
    assert_eq!(c3.holds().await, vec!["default/other:80".to_string()]);

    for m in [&mut c1, &mut c2, &mut c3] {
        m.leave().await;
    }
    for (tx, task) in controllers {
        let _ = tx.send(true);
        let _ = task.await;
    }
    for m in [c1, c2, c3] {
        m.server.shutdown().await;
    }
    fserver.shutdown().await;
}

/// A Table as `kubectl get` asks for it: the column names and each row's cells as text.
async fn table(client: &Client, path: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let req = http::Request::get(path)
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(req).await.expect("table");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let cols = v["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect();
    let rows = v["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r["cells"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| match c {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    (cols, rows)
}

fn lease_holder(l: &k8s_openapi::api::coordination::v1::Lease) -> String {
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

/// A crashed leader's replica takes over after the Lease expires; a Work whose object was
/// force-deleted (finalizer removed by hand) is removed by the next leader's first pass;
/// `kubectl get mc` and `kubectl get fysvc` show tenant, cells, readiness, placement, mask
/// and ready targets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_replica_takes_over_and_removes_orphaned_works() {
    use k8s_openapi::api::coordination::v1::Lease;
    let fdir = tempfile::tempdir().expect("temp dir");
    let fserver = start_server(fdir.path(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("federation API server");
    let fed = client_for(&fserver.kubeconfig)
        .await
        .expect("federation client");
    // A member registered by the admin, heartbeating by hand.
    let mcs: Api<MemberCluster> = Api::all(fed.clone());
    let mut mc = MemberCluster::new(
        "m1",
        ferry_federation::types::MemberClusterSpec {
            cells: vec![Cell {
                name: "cell-a".into(),
                namespace: "ns-a".into(),
            }],
        },
    );
    mc.metadata.labels = Some(BTreeMap::from([
        (LABEL_TENANT.to_string(), "t1".to_string()),
        (LABEL_WORKSPACE.to_string(), "w1".to_string()),
    ]));
    mcs.create(&PostParams::default(), &mc).await.expect("mc");
    let beat = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Heartbeat",
        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "lastHeartbeatTime": jiff::Timestamp::now().to_string(), "version": "test"}});
    mcs.patch_status("m1", &PatchParams::default(), &Patch::Merge(&beat))
        .await
        .expect("heartbeat");

    let start = |id: &str| {
        let (tx, rx) = watch::channel(false);
        let mut cfg = ControllerConfig::new(id);
        cfg.lease.duration = Duration::from_secs(2);
        cfg.member_grace = Duration::from_secs(3600);
        (tx, tokio::spawn(controller::run(fed.clone(), cfg, rx)))
    };
    let leases: Api<Lease> = Api::namespaced(fed.clone(), "kube-system");
    let a = start("replica-a");
    eventually("replica-a leads", || async {
        let l = leases.get_opt("ferry-federation-controller").await.ok()??;
        (lease_holder(&l) == "replica-a").then_some(())
    })
    .await;
    let b = start("replica-b");

    let api: Api<FederatedYusurService> = Api::namespaced(fed.clone(), "default");
    let works: Api<ferry_federation::types::Work> = Api::namespaced(fed.clone(), "ferry-member-m1");
    let has_work = |name: &'static str| {
        let works = works.clone();
        async move { works.get_opt(name).await.ok().flatten() }
    };
    let mut x = fysvc(
        "x",
        "t1",
        json!({"topologyType": "cluster", "clusters": ["m1"]}),
    );
    x.spec.placement_mask = Some(vec!["m1".into()]);
    api.create(&PostParams::default(), &x).await.expect("x");
    eventually("x's Work", || has_work("default.default.x")).await;

    // replica-a crashes (no release): replica-b leads once the Lease expires.
    a.1.abort();
    let _ = a.1.await;
    drop(a.0);
    api.create(
        &PostParams::default(),
        &fysvc(
            "y",
            "t1",
            json!({"topologyType": "cell", "cells": ["cell-a"]}),
        ),
    )
    .await
    .expect("y");
    eventually("y's Work written by replica-b", || {
        has_work("default.ns-a.y")
    })
    .await;
    let l = leases
        .get("ferry-federation-controller")
        .await
        .expect("lease");
    assert_eq!(lease_holder(&l), "replica-b");

    // Tables, as kubectl shows them.
    let (cols, rows) = table(&fed, "/apis/federation.iaas.yusur.io/v1/memberclusters").await;
    assert_eq!(
        (cols[..5].to_vec(), rows[0][..5].to_vec()),
        (
            ["Name", "Tenant", "Workspace", "Cells", "Ready"]
                .map(String::from)
                .to_vec(),
            ["m1", "t1", "w1", "cell-a", "True"]
                .map(String::from)
                .to_vec()
        )
    );
    let (cols, rows) = table(
        &fed,
        "/apis/federation.iaas.yusur.io/v1/namespaces/default/federatedyusurservices",
    )
    .await;
    assert_eq!(
        cols[..6].to_vec(),
        ["Name", "Topology", "Clusters", "Cells", "Mask", "Updated"]
            .map(String::from)
            .to_vec()
    );
    let x_row = rows.iter().find(|r| r[0] == "x").expect("x row");
    assert_eq!(
        x_row[..5].to_vec(),
        ["x", "cluster", "m1", "null", "m1"]
            .map(String::from)
            .to_vec()
    );

    // replica-b stops; x is force-deleted (finalizer dropped by hand): its Work is orphaned
    // until a new leader's first full pass removes it. y's Work stays.
    let _ = b.0.send(true);
    let _ = b.1.await;
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("dropping the finalizer");
    api.delete("x", &DeleteParams::default())
        .await
        .expect("delete x");
    eventually("x gone", || async {
        api.get_opt("x").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        has_work("default.default.x").await.is_some(),
        "orphaned until a leader runs"
    );
    let c = start("replica-c");
    eventually("x's orphaned Work removed", || async {
        has_work("default.default.x").await.is_none().then_some(())
    })
    .await;
    assert!(has_work("default.ns-a.y").await.is_some());
    let _ = c.0.send(true);
    let _ = c.1.await;
    fserver.shutdown().await;
}

/// Each member's own token (issued by `member add`, stored only as its SHA-256) reads only
/// what is placed on it and writes only its statuses: every probe of
/// `ferry_federation::access::probe` against the other member is a 403, every own one
/// allowed. Re-registering issues a new token and the old one is refused (401). The global
/// names of a member's tenant reach it in its own namespace, and no other tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_tokens_read_only_what_is_placed_and_write_only_status() {
    use ferry_federation::access;
    let fdir = tempfile::tempdir().expect("temp dir");
    let fserver = start_server(fdir.path(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("federation API server");
    let fed = client_for(&fserver.kubeconfig)
        .await
        .expect("federation client");
    let (tx, rx) = watch::channel(false);
    let mut cfg = ControllerConfig::new("fed-a");
    cfg.member_grace = Duration::from_secs(3);
    let ctl = tokio::spawn(controller::run(fed.clone(), cfg, rx));
    let mut c1 = Member::start("c1", "t1", &[]).await;
    let mut c2 = Member::start("c2", "t2", &[]).await;
    for m in [&mut c1, &mut c2] {
        m.register(&fed, &fserver.kubeconfig).await;
        m.join(&fed);
    }
    let api: Api<FederatedYusurService> = Api::namespaced(fed.clone(), "default");
    for (name, tenant, cluster) in [("web", "t1", "c1"), ("db", "t2", "c2")] {
        api.create(
            &PostParams::default(),
            &fysvc(
                name,
                tenant,
                json!({"topologyType": "cluster", "clusters": [cluster]}),
            ),
        )
        .await
        .expect("creating a fysvc");
    }
    eventually("web in c1, db in c2", || async {
        (c1.holds().await == ["default/web:80"] && c2.holds().await == ["default/db:80"])
            .then_some(())
    })
    .await;
    c1.report("default", "web", "198.18.1.10", 2).await;
    // The global names reach c1 through its own namespace: web's EIP, nothing of t2's.
    let svcs: Api<k8s_openapi::api::core::v1::Service> = Api::all(c1.client.clone());
    let names = eventually("web-global in c1", || async {
        let mut names: Vec<String> = svcs
            .list(&Default::default())
            .await
            .ok()?
            .items
            .iter()
            .map(|s| s.name_any())
            .filter(|n| n.ends_with("-global"))
            .collect();
        names.sort();
        (!names.is_empty()).then_some(names)
    })
    .await;
    assert_eq!(names, ["web-global"]);

    for (m, other) in [(&c1, "c2"), (&c2, "c1")] {
        let me = m.config.name.clone();
        let own = m.own.clone().expect("registered");
        let probes = access::probe(&own, &me, other).await;
        let broken: Vec<&access::Probe> = probes.iter().filter(|p| !p.holds()).collect();
        assert!(broken.is_empty(), "{me}: {broken:#?}");
        let allowed: Vec<&str> = probes
            .iter()
            .filter(|p| p.allowed)
            .map(|p| p.what.as_str())
            .collect();
        assert_eq!(
            allowed,
            [
                format!("get memberclusters/{me}"),
                format!("patch memberclusters/{me}/status"),
                format!("list works -n ferry-member-{me}"),
                format!(
                    "patch works/default.default.{}/status -n ferry-member-{me}",
                    if me == "c1" { "web" } else { "db" }
                ),
            ],
            "{probes:#?}"
        );
        assert_eq!(
            probes.iter().filter(|p| !p.allowed).count(),
            12,
            "{probes:#?}"
        );
    }

    // The store holds the hashes, never a token.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(fed.clone(), "ferry-system");
    let held = serde_json::to_string(
        &secrets
            .list(&Default::default())
            .await
            .expect("secrets")
            .items,
    )
    .expect("json");
    for m in [&c1, &c2] {
        let text = std::fs::read_to_string(m._dir.path().join("federation.kubeconfig"))
            .expect("kubeconfig");
        let token = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("a token");
        assert!(!held.contains(token), "plain token in the store");
        assert!(held.contains(&ferry_apiserver::member_token::hash_token(token)[..40]));
    }

    // Re-registering c1: the new token works, the old one is refused.
    let old = c1.own.clone().expect("registered");
    c1.register(&fed, &fserver.kubeconfig).await;
    let mcs_old: Api<MemberCluster> = Api::all(old);
    match mcs_old.get("c1").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 401),
        other => panic!("the revoked token still answers: {other:?}"),
    }
    let mcs_new: Api<MemberCluster> = Api::all(c1.own.clone().expect("registered"));
    mcs_new.get("c1").await.expect("the new token");

    for m in [&mut c1, &mut c2] {
        m.leave().await;
    }
    let _ = tx.send(true);
    let _ = ctl.await;
    c1.server.shutdown().await;
    c2.server.shutdown().await;
    fserver.shutdown().await;
}
