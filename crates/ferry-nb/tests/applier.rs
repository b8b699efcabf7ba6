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
