//! The applier against a real NB `ovsdb-server` (the test kit's [`NbServer`]): a full
//! convergence in bounded transactions is idempotent, and each fast path (services,
//! workload ports) leaves the NB exactly where a full convergence of the same state would
//! (a full apply afterwards sends nothing), or declines without sending anything.
//! `ferry-net`'s `tests/real_nb.rs` drives the same applier through the scenarios and a
//! killed NB.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_nb::Applier;
use ferry_net::scenario::service_owner;
use ferry_net::{
    Backend, NetworkState, PortState, Protocol, ServicePort, ServiceScope, ServiceState,
    SubnetState, build_desired,
};
use ferry_ovsdb::{Client, nb};
use ferry_testkit::ovsdb::NbServer;

fn subnet(name: &str, third: u8) -> SubnetState {
    SubnetState {
        name: name.into(),
        vpc: "vpc1".into(),
        cidr: format!("10.0.{third}.0/24").parse().unwrap(),
        gateway: Ipv4Addr::new(10, 0, third, 1),
    }
}

fn service(i: u8, backends: &[&str]) -> ServiceState {
    ServiceState {
        key: format!("default/s{i}"),
        uid: format!("uid-{i}"),
        scope: ServiceScope::Vpc("vpc1".into()),
        cluster_ip: Some(Ipv4Addr::new(10, 96, 0, i)),
        eip: None,
        ports: vec![ServicePort {
            port: 80,
            target_port: 8080,
            protocol: Protocol::Tcp,
            node_port: None,
        }],
        affinity_timeout: None,
        backends: backends
            .iter()
            .map(|ip| Backend {
                ip: ip.parse().unwrap(),
                vpc: "vpc1".into(),
                node: None,
            })
            .collect(),
        kind: Default::default(),
        external_ips: vec![],
        node_local: false,
    }
}

fn port(name: &str, subnet: &str, ip: &str) -> PortState {
    PortState {
        name: name.into(),
        subnet: subnet.into(),
        mac: "0a:00:00:00:01:0a".into(),
        ip: ip.parse().unwrap(),
    }
}

/// vpc1 with two subnets, one workload port and five ClusterIP services.
fn state() -> NetworkState {
    NetworkState {
        gateway_chassis: "ch1".into(),
        vpcs: vec!["vpc1".into()],
        subnets: vec![subnet("s1", 1), subnet("s2", 2)],
        ports: vec![port("default_a", "s1", "10.0.1.10")],
        services: (1..=5)
            .map(|i| service(i, &["10.0.1.10", "10.0.2.10"]))
            .collect(),
        ..Default::default()
    }
}

async fn connected(server: &NbServer, max_ops: usize) -> Applier {
    let client = Client::connect(nb::config([server.unix_remote()]))
        .await
        .expect("connect to the NB");
    Applier::new(client, max_ops)
}

/// A full convergence of `s` that must find nothing to do.
async fn assert_converged(nb: &Applier, s: &NetworkState, after: &str) {
    let (desired, applied) = nb.ensure_state(s.clone()).await.expect("full apply");
    assert!(desired.errors.is_empty(), "{:?}", desired.errors);
    assert!(applied.converged, "{after}: {applied:?}");
    assert_eq!(applied.transactions(), 0, "{after} left work: {applied:?}");
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn a_full_apply_sends_bounded_transactions_once_then_nothing() {
    let server = NbServer::standalone();
    let sent = Arc::new(AtomicUsize::new(0));
    let max_ops = 3;
    let nb = connected(&server, max_ops).await.before_send({
        let sent = sent.clone();
        Arc::new(move |_| {
            sent.fetch_add(1, Ordering::SeqCst);
        })
    });
    let (desired, applied) = nb.ensure_state(state()).await.expect("apply");
    assert!(desired.errors.is_empty(), "{:?}", desired.errors);
    assert!(applied.converged);
    assert!(applied.transactions() > 1, "bounded: {applied:?}");
    assert_eq!(sent.load(Ordering::SeqCst), applied.transactions());
    // One plan was enough: the second diff (from the mirror) found nothing.
    assert_eq!(applied.rounds.len(), 2, "{applied:?}");
    let lbs = nb
        .client()
        .with_mirror(|m| m.table(nb::load_balancer::TABLE).map_or(0, |t| t.len()));
    assert_eq!(lbs, 5);
    assert_converged(&nb, &state(), "a second apply").await;
    // Every desired row is in the mirror the applier reads.
    assert_eq!(
        nb.current()
            .iter()
            .filter(|r| ferry_net::owned_key(&r.table, &r.columns).is_some())
            .count(),
        build_desired(&state()).rows.len()
    );
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn the_service_fast_path_lands_where_a_full_apply_would() {
    let server = NbServer::standalone();
    let nb = connected(&server, 500).await;
    let mut s = state();
    nb.ensure_state(s.clone()).await.expect("apply");

    // A backend leaves s2 (one update), s3 is deleted (its group mutate and delete, in a
    // transaction of their own after the changed services').
    s.services[1].backends.pop();
    let gone = s.services.remove(2);
    let owners = BTreeSet::from([service_owner(&s.services[1]), service_owner(&gone)]);
    let applied = nb
        .ensure_services(std::slice::from_ref(&s.services[1]), &owners)
        .await
        .expect("fast path")
        .expect("applies to ClusterIP services");
    let ops: Vec<usize> = applied.sent().map(|t| t.ops).collect();
    assert_eq!(ops, [1, 2], "{applied:?}");
    assert_converged(&nb, &s, "the service fast path").await;

    // A NodePort needs the nodes' rows: the fast path declines and sends nothing.
    let mut np = service(9, &["10.0.1.10"]);
    np.ports[0].node_port = Some(30080);
    let owners = BTreeSet::from([service_owner(&np)]);
    assert!(nb.ensure_services(&[np], &owners).await.unwrap().is_none());
    assert_converged(&nb, &s, "a declined fast path").await;
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn the_port_fast_path_adds_moves_and_removes_workload_ports() {
    let server = NbServer::standalone();
    let nb = connected(&server, 500).await;
    let mut s = state();
    nb.ensure_state(s.clone()).await.expect("apply");

    let b = port("default_b", "s1", "10.0.1.11");
    let moved = port("default_a", "s2", "10.0.2.12");
    let changes = vec![
        (None, Some(b.clone())),
        (Some(s.ports[0].clone()), Some(moved.clone())),
    ];
    let applied = nb
        .ensure_ports(&changes)
        .await
        .expect("fast path")
        .expect("applies to ports on known switches");
    assert_eq!(applied.transactions(), 1, "{applied:?}");
    s.ports = vec![moved.clone(), b.clone()];
    assert_converged(&nb, &s, "adding and moving ports").await;

    nb.ensure_ports(&[(Some(b), None)])
        .await
        .expect("fast path")
        .expect("removing a port");
    s.ports = vec![moved];
    assert_converged(&nb, &s, "removing a port").await;

    // A port on a switch the NB does not have: declined, nothing sent.
    let stray = port("default_c", "s9", "10.0.9.10");
    assert!(
        nb.ensure_ports(&[(None, Some(stray))])
            .await
            .unwrap()
            .is_none()
    );
    assert_converged(&nb, &s, "a declined port").await;
}

/// What the fast paths write in the fenced tests, after the snapshot: s2 loses a backend,
/// s3 goes, s6 is new, and port `default_b` joins; `snapshot` is what the convergence was
/// built from (s1 changed, a new subnet s3 with a port). Returns the network the NB must
/// end as: the snapshot's changes plus the fast paths'.
async fn fast_paths_after_the_snapshot(nb: &Applier, before: &NetworkState) -> NetworkState {
    let mut after = before.clone();
    after.services[1].backends.pop();
    let gone = after.services.remove(2);
    let new = service(6, &["10.0.1.10"]);
    after.services.push(new.clone());
    let changed = [after.services[1].clone(), new];
    let owners: BTreeSet<String> = changed.iter().chain([&gone]).map(service_owner).collect();
    nb.ensure_services(&changed, &owners)
        .await
        .expect("service fast path")
        .expect("applies");
    let b = port("default_b", "s1", "10.0.1.11");
    nb.ensure_ports(&[(None, Some(b.clone()))])
        .await
        .expect("port fast path")
        .expect("applies");
    after.ports.push(b);
    after
}

/// The snapshot a fenced convergence starts from: s1 with one backend only, and a new
/// subnet with a port.
fn snapshot(before: &NetworkState) -> NetworkState {
    let mut s = before.clone();
    s.services[0].backends.truncate(1);
    s.subnets.push(subnet("s3", 3));
    s.ports.push(port("default_c", "s3", "10.0.3.10"));
    s
}

/// The fast paths' rows, as `want` says, on top of the snapshot's.
fn merged(snapshot: &NetworkState, fast: &NetworkState) -> NetworkState {
    let mut m = fast.clone();
    m.services[0] = snapshot.services[0].clone();
    m.subnets = snapshot.subnets.clone();
    m.ports.push(snapshot.ports[1].clone());
    m
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn a_fenced_convergence_leaves_what_fast_paths_wrote_after_its_snapshot() {
    let server = NbServer::standalone();
    let nb = connected(&server, 2).await;
    let s0 = state();
    nb.ensure_state(s0.clone()).await.expect("apply");

    // The snapshot is taken, then fast paths run before the convergence does.
    let snap = snapshot(&s0);
    let run = nb.fence_from_now();
    let fast = fast_paths_after_the_snapshot(&nb, &s0).await;
    let applied = nb
        .ensure_fenced(Arc::new(build_desired(&snap)), run)
        .await
        .expect("fenced convergence");
    assert!(applied.converged, "{applied:?}");
    // Both the snapshot's changes and the fast paths' are in the NB, and nothing else:
    // an unfenced apply of the two together finds nothing to do.
    assert_converged(&nb, &merged(&snap, &fast), "the fenced convergence").await;

    // Without the fence the same convergence undoes them (what the fence is for).
    let run = nb.fence_from_now();
    drop(run);
    let snap2 = snapshot(&s0);
    let (_, undone) = nb.ensure_state(snap2.clone()).await.expect("unfenced");
    assert!(undone.transactions() > 0, "{undone:?}");
    assert_converged(&nb, &snap2, "the unfenced convergence").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OVN binaries"]
async fn a_fast_path_between_two_transactions_of_a_fenced_plan_is_never_undone() {
    let server = NbServer::standalone();
    // One operation per transaction: the plan's group update comes after its load
    // balancers', and the fast paths land in between.
    let nb = connected(&server, 1).await;
    let s0 = state();
    nb.ensure_state(s0.clone()).await.expect("apply");
    // The snapshot also adds s7: its plan rewrites the group's set of load balancers,
    // which the fast path then changes too (s6 joins, s3 leaves).
    let mut snap = snapshot(&s0);
    snap.services.push(service(7, &["10.0.2.10"]));
    let first_sent = Arc::new(tokio::sync::Notify::new());
    let background = nb.clone().before_send({
        let (first_sent, once) = (first_sent.clone(), std::sync::Once::new());
        Arc::new(move |_| {
            once.call_once(|| {
                first_sent.notify_one();
                // The fast paths (on the other worker) queue for the send lock meanwhile:
                // they get it before this plan's next transaction.
                std::thread::sleep(std::time::Duration::from_millis(300));
            })
        })
    });
    let run = nb.fence_from_now();
    let converge = {
        let d = Arc::new(build_desired(&snap));
        tokio::spawn(async move { background.ensure_fenced(d, run).await })
    };
    first_sent.notified().await;
    let fast = fast_paths_after_the_snapshot(&nb, &s0).await;
    let applied = converge.await.expect("task").expect("fenced convergence");
    assert!(applied.converged, "{applied:?}");
    // Its first plan was cut short, and a second one made with the fast paths fenced.
    assert!(applied.rounds.len() >= 3, "{applied:?}");
    let mut want = merged(&snap, &fast);
    want.services.push(snap.services[5].clone());
    assert_converged(&nb, &want, "fast paths inside the fenced plan").await;
}
