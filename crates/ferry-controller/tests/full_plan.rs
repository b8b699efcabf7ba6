//! A warm leader plans its full passes off the pass loop (`full_plan`) and takes them in
//! when done. Services created while full passes run (each new VPC asks for one) all get
//! distinct ClusterIPs and EIPs, keep them once later full passes are taken in, and reach
//! the NB; the log shows the full passes were taken in. Against Ferry's API server and a
//! real OVN Northbound ovsdb-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferry_api::YusurService;
use ferry_testkit::api::apply;
use ferry_testkit::ovsdb::NbServer;
use kube::api::Api;
use serde_json::{Value, json};

mod common;

/// Every VIP (`ip:port`) of the NB's load balancers.
fn nb_vips(nb: &ferry_ovsdb::Client) -> BTreeSet<String> {
    nb.with_mirror(|m| {
        m.table("Load_Balancer")
            .into_iter()
            .flatten()
            .flat_map(|(_, r)| {
                r["vips"][1]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|kv| kv[0].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect()
    })
}

/// (ClusterIP, EIP) of every service named `svc-*`.
async fn addresses(api: &Api<YusurService>) -> BTreeMap<String, (Option<String>, Option<String>)> {
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| {
            let name = s.metadata.name.clone()?;
            let st = s.status.unwrap_or_default();
            name.starts_with("svc-")
                .then_some((name, (st.cluster_ip, st.eip)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OVN binaries"]
async fn services_created_while_full_passes_run_get_distinct_addresses_and_reach_the_nb() {
    let log = common::captured_log();
    let dir = tempfile::tempdir().unwrap();
    let nb_server = NbServer::standalone();
    let (server, admin, c) = common::api(dir.path()).await;
    let config = common::with_nb("full-plan-test", nb_server.unix_remote());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { ferry_controller::run(c, config, rx).await.unwrap() });
    let nb = ferry_ovsdb::Client::connect(ferry_ovsdb::nb::config(vec![nb_server.unix_remote()]))
        .await
        .unwrap();
    let service = |i: usize| -> Value {
        // Every third one asks for an EIP too.
        let kind = if i.is_multiple_of(3) {
            "LoadBalancer"
        } else {
            "ClusterIP"
        };
        json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
            "metadata": {"name": format!("svc-{i}"), "namespace": "default"},
            "spec": {"type": kind, "ports": [{"port": 80}]}})
    };
    let api: Api<YusurService> = Api::namespaced(admin.clone(), "default");
    // The first full pass runs in the loop (nothing is warm yet); once the first service
    // has its ClusterIP, the leader is warm.
    apply(&admin, &service(0)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while addresses(&api)
        .await
        .get("svc-0")
        .and_then(|a| a.0.clone())
        .is_none()
    {
        assert!(Instant::now() < deadline, "svc-0 got no ClusterIP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Services arrive while new VPCs keep asking for full passes.
    let n = 40;
    for i in 1..n {
        apply(&admin, &service(i)).await.unwrap();
        if i % 4 == 0 {
            let vpc = json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Vpc",
                "metadata": {"name": format!("extra-{i}")}, "spec": {}});
            apply(&admin, &vpc).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let complete = |a: &BTreeMap<String, (Option<String>, Option<String>)>| {
        a.len() == n
            && a.iter().all(|(name, (vip, eip))| {
                let i: usize = name["svc-".len()..].parse().unwrap();
                vip.is_some() && (eip.is_some() == (i.is_multiple_of(3)))
            })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = addresses(&api).await;
    while !complete(&got) {
        assert!(
            Instant::now() < deadline,
            "not every service got its addresses: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = addresses(&api).await;
    }
    let distinct = |which: usize| {
        let all: Vec<&String> = got
            .values()
            .filter_map(|a| {
                if which == 0 {
                    a.0.as_ref()
                } else {
                    a.1.as_ref()
                }
            })
            .collect();
        let set: BTreeSet<&&String> = all.iter().collect();
        assert_eq!(set.len(), all.len(), "an address was given twice: {got:?}");
    };
    distinct(0);
    distinct(1);
    // Every ClusterIP and EIP reaches the NB.
    let want: BTreeSet<String> = got
        .values()
        .flat_map(|(vip, eip)| [vip.clone(), eip.clone()])
        .flatten()
        .map(|ip| format!("{ip}:80"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<String> = want.difference(&nb_vips(&nb)).cloned().collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not in the NB: {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    assert!(
        text.contains("full pass planned off the loop taken in"),
        "no full pass was planned off the loop"
    );
    // One more full pass, taken in: nobody's address moves.
    let vpc = json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Vpc",
        "metadata": {"name": "extra-last"}, "spec": {}});
    let taken = text
        .matches("full pass planned off the loop taken in")
        .count();
    apply(&admin, &vpc).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
        if text
            .matches("full pass planned off the loop taken in")
            .count()
            > taken
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the last full pass was not taken in"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(addresses(&api).await, got, "an address moved");
    stop.send(true).unwrap();
    task.await.unwrap();
    drop(server);
}
