//! The socket-LB port group of each VPC: its pods whose node runs the socket LB
//! ([`NetworkState::socket_lb_ports`]) and two `allow-stateless` ACLs, so packets between
//! two of them skip conntrack on switches that carry a load balancer group.
//!
//! Why: a switch with a load balancer group sends *every* IP packet through `ct_lb_mark`
//! (`ls_in_pre_lb`/`ls_out_pre_lb`, priority 100), in the zone of the logical port on each
//! side, unless an `allow-stateless` ACL matched (`reg0[16]`, priority 110). A socket-LB
//! pod's service connection carries no VIP (the socket LB rewrote it at `connect()`), so
//! those passes do nothing for it but cost a conntrack miss per packet on the userspace
//! datapath, and they hit OVS 3.1.0's userspace conntrack assertion (`docs/benchmarks.md`,
//! issue 18: new connections/s 0.47 -> 1.03 of `ovn-direct` with the group).
//!
//! Why it is safe (each packet crosses four ACL checks: from-lport at the sender's switch,
//! to-lport at the receiver's, and the same for the reply; all four skip conntrack only
//! when both ends are members, and any other pair keeps every check stateful):
//! - Clients that are not socket-LB pods (VMs, bare metal, VNicIPs, nodes, probe ports,
//!   EIP and external clients, pods on nodes without the socket LB) are not members and
//!   their address is not in `$GROUP_ip4`: their connections to a member keep conntrack in
//!   both directions, so OVN's DNAT and its un-DNAT of replies work as before.
//! - A member's packet to a VIP the socket LB did not translate (another VPC's VIP, so
//!   isolation is unchanged) does not match (the VIP is not a member's address).
//! - The ACLs have the lowest priority, so any other ACL (a drop of a network policy)
//!   still decides first in the ACL stage; Ferry itself writes no other ACL.
//! - What it assumes: a member's connections to a VIP of its own VPC are translated by the
//!   socket LB. One that is not (the VIP is in OVN before it reaches the node's maps, or
//!   the socket LB detached while the pod is still a member) is DNATed by OVN, and its
//!   reply from a member backend skips the un-DNAT: the client sees the backend's address
//!   and resets. So membership follows a live agent with the socket LB attached (the
//!   controller's job), and a service with no ready backend is left out of both the maps
//!   and OVN's backends alike (OVN's reject comes from the VIP, not a member).
//!
//! Names: the group is [`socket_lb_group`] (port group names are identifiers in ACL
//! matches: letters, digits, `_` and `.`); ACL keys are `GROUP/from-lport` and
//! `GROUP/to-lport`. A VPC without members gets no group.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::model::*;
use crate::topology::{Builder, INFRA_OWNER, key, reference, set};

/// The priority of the two ACLs: the lowest, so any other ACL matches first.
pub const SOCKET_LB_ACL_PRIORITY: u16 = 1;

/// The socket-LB port group of a VPC: `ferry_socklb_` and the VPC name with `-` as `_`
/// (VPC names are DNS-1123 names, which have no `_`, so two VPCs never share a group).
/// OVN derives the address set `$NAME_ip4` from its ports.
pub fn socket_lb_group(vpc: &str) -> String {
    format!("ferry_socklb_{}", vpc.replace('-', "_"))
}

/// The two ACLs' (direction, match) of group `g`: traffic from a member to a member's
/// address, seen when it leaves the sender and when it reaches the receiver.
pub fn socket_lb_acl_matches(g: &str) -> [(&'static str, String); 2] {
    [
        (
            "from-lport",
            format!("inport == @{g} && ip4.dst == ${g}_ip4"),
        ),
        (
            "to-lport",
            format!("outport == @{g} && ip4.src == ${g}_ip4"),
        ),
    ]
}

/// Adds one port group per VPC with members, and its ACLs. `vpc_of_subnet` names the VPC
/// of every subnet that was built; ports not built (an error) or on the external network
/// are left out.
pub(crate) fn build(b: &mut Builder, state: &NetworkState, vpc_of_subnet: &BTreeMap<&str, &str>) {
    let mut members: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for p in &state.ports {
        if !state.socket_lb_ports.contains(&p.name) {
            continue;
        }
        let Some(vpc) = vpc_of_subnet.get(p.subnet.as_str()) else {
            continue;
        };
        let lsp = key("Logical_Switch_Port", &p.name);
        if b.rows.contains_key(&("Logical_Switch_Port", lsp.clone())) {
            members.entry(vpc).or_default().insert(lsp);
        }
    }
    for (vpc, ports) in members {
        let g = socket_lb_group(vpc);
        let mut acls = Vec::new();
        for (direction, m) in socket_lb_acl_matches(&g) {
            let k = b.add(
                "ACL",
                &format!("{g}/{direction}"),
                INFRA_OWNER,
                BTreeMap::from([
                    ("direction".to_string(), json!(direction)),
                    ("priority".to_string(), json!(SOCKET_LB_ACL_PRIORITY)),
                    ("match".to_string(), json!(m)),
                    ("action".to_string(), json!("allow-stateless")),
                ]),
            );
            acls.push(reference("ACL", &k));
        }
        b.add(
            "Port_Group",
            &g,
            INFRA_OWNER,
            BTreeMap::from([
                ("name".to_string(), json!(g)),
                (
                    "ports".to_string(),
                    set(ports
                        .iter()
                        .map(|k| reference("Logical_Switch_Port", k))
                        .collect()),
                ),
                ("acls".to_string(), set(acls)),
            ]),
        );
    }
}
