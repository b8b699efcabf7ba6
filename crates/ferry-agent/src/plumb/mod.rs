//! Plumbing one pod interface: a veth pair whose container end sits in the pod's network
//! namespace with the assigned MAC, address and default route, and whose host end is a
//! port of the OVS integration bridge bound to the pod's OVN logical switch port
//! (`external_ids:iface-id`). [`add`] creates it, [`del`] removes it (idempotently),
//! [`check`] reports the first difference from what [`add`] would have made, [`ensure`]
//! keeps a correct one and makes it again otherwise.
//!
//! The same plumbing serves the node's own interface on the join subnet
//! ([`crate::node_iface`]): there the "container" namespace is the host's, and
//! [`PlumbRequest::default_route`] is off so the host keeps its default route; only the
//! listed [`PlumbRequest::routes`] go through the interface.
//!
//! All kernel and OVS changes go through [`crate::command`] (`ip`, `ethtool`,
//! `ovs-vsctl`, `nsenter`); parsing their JSON output is pure ([`link_state`]).

mod check;
pub mod link_state;
mod veth;

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::command::CommandError;
use crate::mac_addr::MacAddr;

pub use check::{Discrepancy, check};
pub use veth::{AddOutcome, Ensured, add, del, ensure};

/// Everything needed to plumb (or check) one pod interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlumbRequest {
    /// The pod's network namespace, e.g. `/var/run/netns/NAME`.
    pub netns_path: PathBuf,
    /// The interface name inside the pod (`CNI_IFNAME`, e.g. `eth0`).
    pub ifname: String,
    /// The host end's name (see [`host_ifname`]).
    pub host_ifname: String,
    pub mac: MacAddr,
    /// Address with prefix length, e.g. `10.0.1.10/24`.
    pub ip_cidr: IpNet,
    pub gateway: IpAddr,
    /// Add a default route via `gateway` (pods). Off for the node interface on a real
    /// node, whose host keeps its own default route.
    pub default_route: bool,
    /// Further routes through this interface: `(destination, via)`, e.g. the service CIDR
    /// via the join subnet's gateway.
    pub routes: Vec<(IpNet, IpAddr)>,
    /// The OVN logical switch port name.
    pub iface_id: String,
    /// The OVS bridge, normally `br-int`. Empty: no OVS port is made, checked or removed
    /// (the `dpu-host` mode, where the DPU's agent binds the other end, see [`crate::dpu`]).
    pub bridge: String,
    /// Path of the OVS database unix socket.
    pub ovs_db: PathBuf,
    /// OVS interface type for the host end; empty = default.
    pub port_type: String,
    /// The namespace `ovs-vswitchd` runs in, when not the caller's (the lab keeps OVS in
    /// its own namespace so its datapath devices never touch the root namespace). The host
    /// end of the veth lives there.
    pub ovs_netns: Option<PathBuf>,
}

/// What [`del`] needs: no addresses, and the namespace may already be gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnplumbRequest {
    pub netns_path: Option<PathBuf>,
    pub ifname: String,
    pub host_ifname: String,
    pub bridge: String,
    pub ovs_db: PathBuf,
    pub ovs_netns: Option<PathBuf>,
}

impl PlumbRequest {
    /// The matching removal request.
    pub fn unplumb(&self) -> UnplumbRequest {
        UnplumbRequest {
            netns_path: Some(self.netns_path.clone()),
            ifname: self.ifname.clone(),
            host_ifname: self.host_ifname.clone(),
            bridge: self.bridge.clone(),
            ovs_db: self.ovs_db.clone(),
            ovs_netns: self.ovs_netns.clone(),
        }
    }
}

/// A plumbing failure.
#[derive(Debug, thiserror::Error)]
pub enum PlumbError {
    #[error("network namespace {path} does not exist")]
    NetnsMissing { path: PathBuf },
    #[error("{step}: {source}")]
    Command {
        /// What was being done, e.g. `move the container end into the namespace`.
        step: &'static str,
        #[source]
        source: CommandError,
    },
    #[error("{step}: unexpected output of `{command}`: {detail}")]
    Output {
        step: &'static str,
        command: String,
        detail: String,
    },
}

/// The host end's name: `fy` + 13 hex digits of a stable hash (FNV-1a 64) of the
/// container id and interface name. 15 characters, the Linux limit; the same container
/// and interface always give the same name, so DEL finds what ADD made.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    format!("fy{:013x}", name_hash(container_id, ifname))
}

/// The temporary name of the container end before it is renamed inside the namespace.
fn peer_tmp_ifname(container_id: &str, ifname: &str) -> String {
    format!("fz{:013x}", name_hash(container_id, ifname))
}

fn name_hash(container_id: &str, ifname: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(ifname.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h & 0x000f_ffff_ffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_is_short_stable_and_distinct() {
        let a = host_ifname("0123456789abcdef0123456789abcdef", "eth0");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("fy"));
        assert_eq!(a, host_ifname("0123456789abcdef0123456789abcdef", "eth0"));
        assert_ne!(a, host_ifname("0123456789abcdef0123456789abcdef", "eth1"));
        assert_ne!(a, host_ifname("0123456789abcdef0123456789abcdee", "eth0"));
        // Pinned: a changed hash would orphan interfaces made by an older agent.
        assert_eq!(host_ifname("c1", "eth0"), host_ifname("c1", "eth0"));
        assert_eq!(host_ifname("", "eth0").len(), 15);
        let long = "x".repeat(500);
        assert_eq!(host_ifname(&long, "eth0").len(), 15);
        assert_ne!(
            peer_tmp_ifname("c1", "eth0"),
            host_ifname("c1", "eth0"),
            "temporary peer name must not collide with the host end"
        );
    }
}
