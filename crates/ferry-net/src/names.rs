//! Deterministic names and addresses, shared with the agent that plumbs the ports.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// What a logical switch port is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Pod,
    BareMetal,
    VNicIP,
    Vmi,
    Node,
    External,
    /// A node's probe port in a VPC: `namespace` is the VPC, `name` the node.
    Probe,
}

/// The logical switch port (and OVS `iface-id`) of a workload: the agent plumbs exactly this.
pub fn port_name(kind: PortKind, namespace: &str, name: &str) -> String {
    match kind {
        PortKind::Pod => format!("{namespace}_{name}"),
        PortKind::BareMetal => format!("bm_{namespace}_{name}"),
        PortKind::VNicIP => format!("vnic_{namespace}_{name}"),
        PortKind::Vmi => format!("vmi_{namespace}_{name}"),
        PortKind::Node => format!("node_{name}"),
        PortKind::External => format!("ext_{name}"),
        PortKind::Probe => format!("probe_{name}_{namespace}"),
    }
}

/// A locally administered MAC derived from a name (router ports).
pub fn mac_from(name: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    let b = h.to_be_bytes();
    format!(
        "0e:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

/// The /30 at `slot` of the transit range: (network, first host, second host).
pub fn link(range: Ipv4Net, slot: u32) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let base = u32::from(range.network()).checked_add(slot.checked_mul(4)?)?;
    let net = Ipv4Net::new(Ipv4Addr::from(base), 30).ok()?;
    range
        .contains(&net)
        .then(|| (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2)))
}

/// A stable slot in `1..slots` for a name: hashed, then probed past slots already taken
/// (slot 0 is the service-gateway's uplink); `None` when every slot is taken.
pub fn slot_for(
    name: &str,
    taken: &mut std::collections::BTreeSet<u32>,
    slots: u32,
) -> Option<u32> {
    if slots < 2 {
        return None;
    }
    let mut h: u32 = 0x811c9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x01000193);
    }
    let mut s = 1 + h % (slots - 1);
    for _ in 0..slots {
        if taken.insert(s) {
            return Some(s);
        }
        s = 1 + s % (slots - 1);
    }
    None
}
