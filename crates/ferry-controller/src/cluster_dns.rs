//! The cluster DNS address in every VPC, pure: one load balancer per VPC on the same VIP
//! (port 53, UDP and TCP) whose backends are the live nodes' probe ports in that VPC, where
//! each node's agent answers that VPC's names. VPCs are isolated, so one address serves all;
//! the VPC of a query is the VPC it arrives in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ferry_api::ProbePort;
use ferry_net::{Backend, Protocol, ServiceKind, ServicePort, ServiceScope, ServiceState};

/// Annotation on the `kube-system/kube-dns` Service that reserves the address: the
/// controller programs it per VPC itself, not as an ordinary Service.
pub const CLUSTER_DNS_ANNOTATION: &str = "iaas.yusur.io/cluster-dns";

/// The NB states of the cluster DNS, by key (`dns/VPC`).
pub fn states(
    ip: Ipv4Addr,
    vpcs: &BTreeSet<String>,
    probe_ports: &BTreeMap<String, BTreeMap<String, ProbePort>>,
    ready_nodes: &BTreeSet<String>,
) -> BTreeMap<String, ServiceState> {
    vpcs.iter()
        .map(|vpc| {
            let mut backends: Vec<Backend> = probe_ports
                .iter()
                .filter(|(node, _)| ready_nodes.contains(*node))
                .filter_map(|(node, ports)| {
                    Some(Backend {
                        ip: ports.get(vpc)?.ip.parse().ok()?,
                        vpc: vpc.clone(),
                        node: Some(node.clone()),
                    })
                })
                .collect();
            backends.sort_by_key(|b| b.ip);
            let port = |protocol| ServicePort {
                port: 53,
                target_port: 53,
                protocol,
                node_port: None,
            };
            let key = format!("dns/{vpc}");
            (
                key.clone(),
                ServiceState {
                    key,
                    uid: String::new(),
                    scope: ServiceScope::Vpc(vpc.clone()),
                    cluster_ip: Some(ip),
                    eip: None,
                    ports: vec![port(Protocol::Udp), port(Protocol::Tcp)],
                    affinity_timeout: None,
                    backends,
                    kind: ServiceKind::Service,
                    external_ips: vec![],
                    node_local: false,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ip: &str) -> ProbePort {
        ProbePort {
            subnet: "s".into(),
            ip: ip.into(),
            mac: "0a:00:00:00:00:01".into(),
            gateway: "10.0.0.1".into(),
            cidr: "10.0.0.0/24".into(),
        }
    }

    #[test]
    fn every_vpc_gets_the_vip_backed_by_live_nodes_probe_ports_there() {
        let vpcs: BTreeSet<String> = ["ovn-cluster", "vpc1", "vpc2"].map(String::from).into();
        let ports = BTreeMap::from([
            (
                "node1".to_string(),
                BTreeMap::from([
                    ("vpc1".to_string(), port("10.0.1.250")),
                    ("ovn-cluster".to_string(), port("10.16.0.250")),
                ]),
            ),
            (
                "node2".to_string(),
                BTreeMap::from([("vpc1".to_string(), port("10.0.1.251"))]),
            ),
            (
                "node3".to_string(),
                BTreeMap::from([("vpc1".to_string(), port("10.0.1.252"))]),
            ),
        ]);
        let ready: BTreeSet<String> = ["node1", "node2"].map(String::from).into();
        let got = states("10.96.0.10".parse().unwrap(), &vpcs, &ports, &ready);
        let brief: Vec<(String, Vec<String>)> = got
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    s.backends.iter().map(|b| b.ip.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            brief,
            vec![
                (
                    "dns/ovn-cluster".to_string(),
                    vec!["10.16.0.250".to_string()]
                ),
                (
                    "dns/vpc1".to_string(),
                    vec!["10.0.1.250".to_string(), "10.0.1.251".to_string()]
                ),
                ("dns/vpc2".to_string(), vec![]),
            ],
            "node3's Lease lapsed: it is not a backend"
        );
        let s = &got["dns/vpc1"];
        assert_eq!(s.cluster_ip, Some("10.96.0.10".parse().unwrap()));
        assert_eq!(s.ports.len(), 2);
        assert_eq!(s.scope, ServiceScope::Vpc("vpc1".into()));
    }
}
