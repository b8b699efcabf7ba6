//! The contract between the controller and the node agents, typed once: the annotations the
//! controller writes on workloads and nodes (a workload's address, a node's probe ports),
//! the names every component agrees on (the default VPC, the join subnet) and the labels on
//! generated objects. Both sides read and write these through this module only, so a
//! renamed key cannot leave one side behind.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The default VPC: backends of a `scope: vpc` service without `vpc` live here, and so do
/// ordinary Kubernetes Services.
pub const DEFAULT_VPC: &str = "ovn-cluster";
/// The join subnet of the default VPC: every node's interface has an address here.
pub const JOIN_SUBNET: &str = "subnet0";
/// The default VPC's pod subnet when no subnet is marked `default`.
pub const DEFAULT_POD_SUBNET: &str = "ovn-default";

/// Annotation naming the subnet of a pod (on the pod or its namespace).
pub const ANNOTATION_SUBNET: &str = "iaas.yusur.io/subnet";
/// Annotation carrying the address allocated to a workload (or preset by the user).
pub const ANNOTATION_IP: &str = "iaas.yusur.io/ip_address";
/// Annotation carrying the MAC allocated to a workload.
pub const ANNOTATION_MAC: &str = "iaas.yusur.io/mac_address";
/// Annotation naming the VPC of a workload's subnet.
pub const ANNOTATION_VPC: &str = "iaas.yusur.io/vpc";
/// Annotation carrying the gateway of a workload's subnet.
pub const ANNOTATION_GATEWAY: &str = "iaas.yusur.io/gateway";
/// Annotation carrying the CIDR of a workload's subnet (its prefix length is the
/// interface's).
pub const ANNOTATION_CIDR: &str = "iaas.yusur.io/cidr";
/// Annotation on a Node: VPC -> the probe port of that node in that VPC (JSON).
pub const ANNOTATION_PROBE_PORTS: &str = "iaas.yusur.io/probe-ports";

/// Annotation on a Node, written by its agent: `"true"` while the agent's socket-level
/// load balancer (`ferry agent --socket-lb`) is attached and programmed; absent (or
/// anything else) otherwise. The controller puts the pods of such a node (while its agent
/// Lease is live) in their VPC's socket-LB port group, whose traffic between members skips
/// conntrack; so the agent sets it only after its first full programming and removes it
/// before detaching.
pub const ANNOTATION_SOCKET_LB: &str = "iaas.yusur.io/socket-lb";

/// Label on everything the service controller writes, naming the YusurService.
pub const SERVICE_LABEL: &str = "iaas.yusur.io/service";

/// Where a workload (pod, VMI, node interface) sits on a Ferry network, as the controller
/// writes it in annotations and the agent and CNI plugin read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadAddress {
    pub ip: Ipv4Addr,
    pub mac: String,
    /// The subnet's name (absent on a node's join-subnet interface, whose subnet is known).
    pub subnet: Option<String>,
    pub vpc: Option<String>,
    pub gateway: Ipv4Addr,
    pub cidr: Ipv4Net,
}

impl WorkloadAddress {
    /// The annotations that carry this address.
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            (ANNOTATION_IP.to_string(), self.ip.to_string()),
            (ANNOTATION_MAC.to_string(), self.mac.clone()),
            (ANNOTATION_GATEWAY.to_string(), self.gateway.to_string()),
            (ANNOTATION_CIDR.to_string(), self.cidr.to_string()),
        ]);
        if let Some(s) = &self.subnet {
            a.insert(ANNOTATION_SUBNET.to_string(), s.clone());
        }
        if let Some(v) = &self.vpc {
            a.insert(ANNOTATION_VPC.to_string(), v.clone());
        }
        a
    }

    /// The address in `annotations`, once the controller has written all of it.
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Option<WorkloadAddress> {
        Some(WorkloadAddress {
            ip: a.get(ANNOTATION_IP)?.parse().ok()?,
            mac: a.get(ANNOTATION_MAC)?.clone(),
            subnet: a.get(ANNOTATION_SUBNET).cloned(),
            vpc: a.get(ANNOTATION_VPC).cloned(),
            gateway: a.get(ANNOTATION_GATEWAY)?.parse().ok()?,
            cidr: a.get(ANNOTATION_CIDR)?.parse().ok()?,
        })
    }

    /// `ip/prefix`, as an interface is configured.
    pub fn ip_cidr(&self) -> String {
        format!("{}/{}", self.ip, self.cidr.prefix_len())
    }
}

/// One probe port of a node in a VPC: the address the node's agent probes that VPC's
/// backends from (so overlapping CIDRs are probed in the right VPC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbePort {
    pub subnet: String,
    pub ip: String,
    pub mac: String,
    pub gateway: String,
    pub cidr: String,
}

impl ProbePort {
    /// The port's address in the form [`WorkloadAddress`] gives every plumbed interface.
    pub fn address(&self, vpc: &str) -> Option<WorkloadAddress> {
        Some(WorkloadAddress {
            ip: self.ip.parse().ok()?,
            mac: self.mac.clone(),
            subnet: Some(self.subnet.clone()),
            vpc: Some(vpc.to_string()),
            gateway: self.gateway.parse().ok()?,
            cidr: self.cidr.parse().ok()?,
        })
    }
}

/// A node's probe ports by VPC, from its annotations (none when absent or unreadable).
pub fn probe_ports(annotations: &BTreeMap<String, String>) -> BTreeMap<String, ProbePort> {
    annotations
        .get(ANNOTATION_PROBE_PORTS)
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default()
}

/// The annotation value carrying `ports`.
pub fn probe_ports_annotation(ports: &BTreeMap<String, ProbePort>) -> String {
    serde_json::to_string(ports).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_survives_its_annotations_and_a_partial_one_is_none() {
        let a = WorkloadAddress {
            ip: "10.0.1.10".parse().unwrap(),
            mac: "0a:00:00:00:01:0a".into(),
            subnet: Some("vpc1-subnet1".into()),
            vpc: Some("vpc1".into()),
            gateway: "10.0.1.1".parse().unwrap(),
            cidr: "10.0.1.0/24".parse().unwrap(),
        };
        let ann = a.to_annotations();
        assert_eq!(WorkloadAddress::from_annotations(&ann), Some(a.clone()));
        assert_eq!(a.ip_cidr(), "10.0.1.10/24");
        for missing in [
            ANNOTATION_IP,
            ANNOTATION_MAC,
            ANNOTATION_GATEWAY,
            ANNOTATION_CIDR,
        ] {
            let mut partial = ann.clone();
            partial.remove(missing);
            assert_eq!(
                WorkloadAddress::from_annotations(&partial),
                None,
                "{missing}"
            );
        }
    }

    #[test]
    fn probe_ports_round_trip_and_garbage_reads_as_none() {
        let ports = BTreeMap::from([(
            "vpc1".to_string(),
            ProbePort {
                subnet: "vpc1-subnet1".into(),
                ip: "10.0.1.250".into(),
                mac: "0a:00:00:00:01:fa".into(),
                gateway: "10.0.1.1".into(),
                cidr: "10.0.1.0/24".into(),
            },
        )]);
        let ann = BTreeMap::from([(
            ANNOTATION_PROBE_PORTS.to_string(),
            probe_ports_annotation(&ports),
        )]);
        assert_eq!(probe_ports(&ann), ports);
        assert_eq!(
            ports["vpc1"].address("vpc1").map(|a| a.ip_cidr()),
            Some("10.0.1.250/24".to_string())
        );
        let bad = BTreeMap::from([(ANNOTATION_PROBE_PORTS.to_string(), "{".to_string())]);
        assert!(probe_ports(&bad).is_empty());
    }
}
