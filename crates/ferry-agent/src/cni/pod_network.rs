//! From a CNI invocation plus the pod's network assignment (the IP and MAC the network
//! controller wrote on the pod) to the plumbing requests. Pure.

use std::net::IpAddr;

use ipnet::IpNet;

use super::config::NetConf;
use super::env::CniEnv;
use super::error::{CniError, ErrorCode};
use crate::mac_addr::MacAddr;
use crate::plumb::{PlumbRequest, UnplumbRequest, host_ifname};

/// What the network controller assigned to one pod interface
/// (`iaas.yusur.io/ip_address`, `iaas.yusur.io/mac_address`, the subnet's gateway, and the
/// name of the pod's OVN logical switch port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// Address with the subnet's prefix length, e.g. `10.0.1.10/24`.
    pub ip: IpNet,
    pub mac: MacAddr,
    pub gateway: IpAddr,
    /// The logical switch port name, set as `external_ids:iface-id` on the OVS port.
    pub iface_id: String,
}

/// The request that plumbs `pod` for an ADD (or describes what CHECK verifies).
pub fn plumb_request(
    env: &CniEnv,
    conf: &NetConf,
    pod: &PodNetwork,
) -> Result<PlumbRequest, CniError> {
    let Some(netns) = env.netns.clone() else {
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_NETNS is not set",
            "ADD and CHECK need the container's network namespace path",
        ));
    };
    let bad = |msg: String| CniError::new(ErrorCode::NoAssignment, msg, pod_ref(env));
    if !pod.mac.is_unicast() {
        return Err(bad(format!(
            "assigned MAC {} is not a unicast address",
            pod.mac
        )));
    }
    if pod.ip.addr().is_ipv4() != pod.gateway.is_ipv4() {
        return Err(bad(format!(
            "gateway {} and address {} are of different IP families",
            pod.gateway, pod.ip
        )));
    }
    if !pod.ip.contains(&pod.gateway) {
        return Err(bad(format!(
            "gateway {} is outside the pod's subnet {}",
            pod.gateway,
            pod.ip.trunc()
        )));
    }
    if pod.ip.addr() == pod.gateway {
        return Err(bad(format!("address {} is the gateway itself", pod.ip)));
    }
    if pod.iface_id.is_empty() {
        return Err(bad(
            "the logical switch port name (iface-id) is empty".into()
        ));
    }
    Ok(PlumbRequest {
        netns_path: netns,
        ifname: env.ifname.clone(),
        host_ifname: host_ifname(&env.container_id, &env.ifname),
        mac: pod.mac,
        ip_cidr: pod.ip,
        gateway: pod.gateway,
        default_route: true,
        routes: vec![],
        iface_id: pod.iface_id.clone(),
        bridge: conf.ovs_bridge().to_string(),
        ovs_db: conf.ovs_db_sock.clone(),
        ovs_netns: conf.ovs_netns.clone(),
        port_type: conf.ovs_port_type.clone(),
    })
}

/// The request that removes what ADD created (no assignment needed).
pub fn unplumb_request(env: &CniEnv, conf: &NetConf) -> UnplumbRequest {
    UnplumbRequest {
        netns_path: env.netns.clone(),
        ifname: env.ifname.clone(),
        host_ifname: host_ifname(&env.container_id, &env.ifname),
        bridge: conf.ovs_bridge().to_string(),
        ovs_db: conf.ovs_db_sock.clone(),
        ovs_netns: conf.ovs_netns.clone(),
    }
}

/// `pod NAMESPACE/NAME (container ID)` for error details.
pub fn pod_ref(env: &CniEnv) -> String {
    match (&env.args.k8s_pod_namespace, &env.args.k8s_pod_name) {
        (Some(ns), Some(name)) => format!("pod {ns}/{name} (container {})", env.container_id),
        _ => format!("container {}", env.container_id),
    }
}
