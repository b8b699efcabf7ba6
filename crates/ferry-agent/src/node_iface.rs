//! The node's own interface on the join subnet `subnet0` on a real node (scenario 2).
//!
//! The network controller gives every Node a port on `subnet0` and writes it on the Node
//! (`iaas.yusur.io/ip_address`, `mac_address`, `gateway`, `cidr`). The agent plumbs that
//! port, with the same veth plumbing as a pod's ([`crate::plumb`]), into the namespace it
//! runs in, the host's, as `ferry0`: the join subnet's on-link route, plus routes to the
//! service CIDR and to the default VPC's pod subnets via the join subnet's gateway, and
//! **no default route**, so the host keeps its own. (In lab mode the node is a namespace
//! of its own instead; see [`crate::node`].)
//!
//! [`request`] and [`routed_cidrs`] are pure. [`ensure`] keeps an interface that already
//! matches (an agent restart does not disturb the host's traffic) and re-plumbs one that
//! does not; [`remove`] takes it away. Both keep the agent's [`Record`], so the port of a
//! crashed agent is found and removed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ferry_api::Subnet;
use ipnet::IpNet;

use crate::mac_addr::MacAddr;
use crate::netns_admin::{CreatedPort, Record};
use crate::plumb::{self, PlumbError, PlumbRequest};
use crate::runtime::RuntimeConfig;

/// The node interface's default name.
pub const DEFAULT_IFNAME: &str = "ferry0";

/// The namespace of the process that runs a tool: every `ip` or `nsenter` the agent starts
/// opens its own `/proc/self`, which is in the agent's namespace (the host's).
pub const OWN_NETNS: &str = "/proc/self/ns/net";

/// The join subnet, whose pods are nodes: never routed through itself.
use ferry_api::JOIN_SUBNET;
/// Annotations the network controller writes on a Node for its port on the join subnet.
use ferry_api::{ANNOTATION_CIDR as CIDR_ANNOTATION, ANNOTATION_GATEWAY as GATEWAY_ANNOTATION};

/// Where the node interface goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The interface's name in the host namespace, e.g. [`DEFAULT_IFNAME`].
    pub ifname: String,
    /// The host namespace: [`OWN_NETNS`] on a real node; tests name another one.
    pub netns: PathBuf,
}

/// A Node annotation that is present but unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node}: annotation {annotation}={value:?} is not valid: {reason}")]
pub struct AnnotationError {
    pub node: String,
    pub annotation: &'static str,
    pub value: String,
    pub reason: String,
}

/// The destinations routed through the node interface: the service CIDR, then the pod
/// subnets of the default VPC (a Subnet with `spec.vpc` empty or
/// [`ferry_api::DEFAULT_VPC`], `ovn-default` in the lab), the join subnet excepted. Sorted
/// and without duplicates, so the same cluster always gives the same request.
pub fn routed_cidrs<'a>(
    service_cidr: IpNet,
    subnets: impl IntoIterator<Item = &'a Subnet>,
) -> Vec<IpNet> {
    let mut pods: Vec<IpNet> = subnets
        .into_iter()
        .filter(|s| s.spec.vpc.is_empty() || s.spec.vpc == ferry_api::DEFAULT_VPC)
        .filter(|s| s.metadata.name.as_deref() != Some(JOIN_SUBNET))
        .filter_map(|s| s.spec.cidr_block.parse::<IpNet>().ok())
        .map(|n| n.trunc())
        .filter(|n| *n != service_cidr.trunc())
        .collect();
    pods.sort();
    pods.dedup();
    std::iter::once(service_cidr.trunc()).chain(pods).collect()
}

/// The plumbing request for `node`'s port from its annotations; `None` while the
/// controller has not written them all yet.
pub fn request(
    node: &str,
    annotations: &BTreeMap<String, String>,
    routed: &[IpNet],
    target: &Target,
    runtime: &RuntimeConfig,
) -> Result<Option<PlumbRequest>, AnnotationError> {
    let (Some(ip), Some(mac), Some(gw), Some(cidr)) = (
        annotations.get(ferry_api::ANNOTATION_IP),
        annotations.get(ferry_api::ANNOTATION_MAC),
        annotations.get(GATEWAY_ANNOTATION),
        annotations.get(CIDR_ANNOTATION),
    ) else {
        return Ok(None);
    };
    let bad = |annotation: &'static str, value: &str, reason: String| AnnotationError {
        node: node.to_string(),
        annotation,
        value: value.to_string(),
        reason,
    };
    let net: IpNet = cidr
        .parse()
        .map_err(|e| bad(CIDR_ANNOTATION, cidr, format!("{e}")))?;
    let addr: IpAddr = ip
        .parse()
        .map_err(|e| bad(ferry_api::ANNOTATION_IP, ip, format!("{e}")))?;
    let gateway: IpAddr = gw
        .parse()
        .map_err(|e| bad(GATEWAY_ANNOTATION, gw, format!("{e}")))?;
    let mac: MacAddr = mac
        .parse()
        .map_err(|e| bad(ferry_api::ANNOTATION_MAC, mac, format!("{e}")))?;
    let ip_cidr = IpNet::new(addr, net.prefix_len())
        .map_err(|e| bad(CIDR_ANNOTATION, cidr, format!("{e}")))?;
    if !net.contains(&addr) || !net.contains(&gateway) || addr == gateway {
        return Err(bad(
            ferry_api::ANNOTATION_IP,
            ip,
            format!("address and gateway {gateway} must be distinct addresses in {net}"),
        ));
    }
    if !mac.is_unicast() {
        return Err(bad(
            ferry_api::ANNOTATION_MAC,
            &mac.to_string(),
            "not a unicast address".into(),
        ));
    }
    let key = format!("node/{node}");
    Ok(Some(PlumbRequest {
        netns_path: target.netns.clone(),
        ifname: target.ifname.clone(),
        host_ifname: plumb::host_ifname(&key, &target.ifname),
        mac,
        ip_cidr,
        gateway,
        default_route: false,
        routes: routed
            .iter()
            .filter(|dst| !dst.contains(&addr))
            .map(|dst| (*dst, gateway))
            .collect(),
        iface_id: ferry_net::port_name(ferry_net::PortKind::Node, "", node),
        bridge: runtime.bridge.clone(),
        ovs_db: runtime.ovs_db.clone(),
        port_type: runtime.port_type.clone(),
        ovs_netns: runtime.ovs_netns.clone(),
    }))
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The interface already matched the request and was left alone.
    Kept,
    /// It was (re)created.
    Plumbed,
}

fn created(req: &PlumbRequest) -> CreatedPort {
    CreatedPort {
        host_ifname: req.host_ifname.clone(),
        ovs_netns: req.ovs_netns.clone(),
        bridge: req.bridge.clone(),
        ovs_db: req.ovs_db.clone(),
    }
}

/// Makes the node interface match `req`: kept when [`plumb::check`] finds nothing to fix,
/// else removed and plumbed again. Other ports in the record (an earlier interface name)
/// are removed first. The port is recorded before it is created.
pub fn ensure(req: &PlumbRequest, record: &Record) -> Result<Ensured, PlumbError> {
    let mine = created(req);
    for stale in record.snapshot().ports.into_iter().filter(|p| *p != mine) {
        plumb::del(&stale.unplumb())?;
        record.remove_port(&stale);
    }
    match plumb::check(req) {
        Ok(()) => {
            record.add_port(&mine);
            Ok(Ensured::Kept)
        }
        Err(reason) => {
            tracing::info!(ifname = %req.ifname, %reason, "plumbing the node interface");
            record.add_port(&mine);
            plumb::del(&req.unplumb())?;
            plumb::add(req)?;
            Ok(Ensured::Plumbed)
        }
    }
}

/// Removes the node interface (OVS port, veth and with it its routes) and its record.
pub fn remove(req: &PlumbRequest, record: &Record) -> Result<(), PlumbError> {
    plumb::del(&req.unplumb())?;
    record.remove_port(&created(req));
    Ok(())
}

/// [`OWN_NETNS`] as a path.
pub fn own_netns() -> &'static Path {
    Path::new(OWN_NETNS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(name: &str, vpc: &str, cidr: &str) -> Subnet {
        Subnet {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: ferry_api::SubnetSpec {
                vpc: vpc.into(),
                cidr_block: cidr.into(),
                ..Default::default()
            },
            status: None,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("cidr")
    }

    fn runtime() -> RuntimeConfig {
        RuntimeConfig {
            ovs_db: "/run/openvswitch/db.sock".into(),
            bridge: "br-int".into(),
            ovs_netns: None,
            port_type: String::new(),
            log_dir: "/var/lib/ferry/logs".into(),
        }
    }

    fn target() -> Target {
        Target {
            ifname: DEFAULT_IFNAME.into(),
            netns: own_netns().to_path_buf(),
        }
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const NODE1: [(&str, &str); 4] = [
        ("iaas.yusur.io/ip_address", "100.64.0.2"),
        ("iaas.yusur.io/mac_address", "0a:00:00:64:00:02"),
        ("iaas.yusur.io/gateway", "100.64.0.1"),
        ("iaas.yusur.io/cidr", "100.64.0.0/16"),
    ];

    #[test]
    fn routed_cidrs_are_the_service_cidr_and_the_default_vpc_pod_subnets() {
        let cases = [
            (
                "only the service CIDR without subnets",
                vec![],
                vec!["10.96.0.0/16"],
            ),
            (
                "the lab: subnet0 and other VPCs are not routed",
                vec![
                    subnet("subnet0", "ovn-cluster", "100.64.0.0/16"),
                    subnet("ovn-default", "ovn-cluster", "10.16.0.0/16"),
                    subnet("vpc1-subnet1", "vpc1", "10.0.1.0/24"),
                ],
                vec!["10.96.0.0/16", "10.16.0.0/16"],
            ),
            (
                "an empty spec.vpc is the default VPC; sorted, host bits cleared, deduplicated",
                vec![
                    subnet("b", "", "10.20.0.0/16"),
                    subnet("a", "ovn-cluster", "10.16.0.1/16"),
                    subnet("c", "ovn-cluster", "10.16.0.0/16"),
                    subnet("bad", "ovn-cluster", "not a cidr"),
                ],
                vec!["10.96.0.0/16", "10.16.0.0/16", "10.20.0.0/16"],
            ),
        ];
        for (name, subnets, want) in cases {
            let want: Vec<IpNet> = want.into_iter().map(net).collect();
            assert_eq!(routed_cidrs(net("10.96.0.0/16"), &subnets), want, "{name}");
        }
    }

    #[test]
    fn request_has_no_default_route_and_routes_via_the_join_gateway() {
        let routed = [net("10.96.0.0/16"), net("10.16.0.0/16")];
        let got = request(
            "node1",
            &annotations(&NODE1),
            &routed,
            &target(),
            &runtime(),
        );
        let gw: IpAddr = "100.64.0.1".parse().expect("ip");
        let want = PlumbRequest {
            netns_path: OWN_NETNS.into(),
            ifname: "ferry0".into(),
            host_ifname: plumb::host_ifname("node/node1", "ferry0"),
            mac: "0a:00:00:64:00:02".parse().expect("mac"),
            ip_cidr: net("100.64.0.2/16"),
            gateway: gw,
            default_route: false,
            routes: vec![(net("10.96.0.0/16"), gw), (net("10.16.0.0/16"), gw)],
            iface_id: "node_node1".into(),
            bridge: "br-int".into(),
            ovs_db: "/run/openvswitch/db.sock".into(),
            port_type: String::new(),
            ovs_netns: None,
        };
        assert_eq!(got, Ok(Some(want)));
    }

    #[test]
    fn request_waits_for_every_annotation_and_names_a_bad_one() {
        let routed = [net("10.96.0.0/16")];
        for missing in NODE1.map(|(k, _)| k) {
            let partial: Vec<(&str, &str)> = NODE1
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            assert_eq!(
                request("n", &annotations(&partial), &routed, &target(), &runtime()),
                Ok(None),
                "without {missing}"
            );
        }
        let cases = [
            (
                "iaas.yusur.io/ip_address",
                "100.64.0.x",
                "iaas.yusur.io/ip_address",
            ),
            (
                "iaas.yusur.io/mac_address",
                "zz",
                "iaas.yusur.io/mac_address",
            ),
            (
                "iaas.yusur.io/mac_address",
                "01:00:5e:00:00:01",
                "iaas.yusur.io/mac_address",
            ),
            ("iaas.yusur.io/gateway", "gw", "iaas.yusur.io/gateway"),
            ("iaas.yusur.io/cidr", "100.64.0.0/99", "iaas.yusur.io/cidr"),
            (
                "iaas.yusur.io/ip_address",
                "10.1.1.1",
                "iaas.yusur.io/ip_address",
            ),
            (
                "iaas.yusur.io/ip_address",
                "100.64.0.1",
                "iaas.yusur.io/ip_address",
            ),
        ];
        for (key, value, named) in cases {
            let mut a = annotations(&NODE1);
            a.insert(key.into(), value.into());
            let err = request("n", &a, &routed, &target(), &runtime())
                .expect_err(&format!("{key}={value} accepted"));
            assert_eq!(err.annotation, named, "{key}={value}: {err}");
            assert!(err.to_string().starts_with("node n: annotation "), "{err}");
        }
    }
}
