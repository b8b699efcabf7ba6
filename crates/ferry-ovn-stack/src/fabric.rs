//! The physical networks between the chassis of a lab with one chassis per node
//! (`ferry up --chassis-per-node`): a namespace holding two Linux bridges, the underlay
//! ([`FABRIC_UNDERLAY`]: Geneve between the chassis) and the external network
//! ([`FABRIC_EXTERNAL`]: what OVN's localnet port on the external switch reaches), and per
//! chassis two veth pairs into the chassis' `ovs-vswitchd` namespace:
//!
//! ```text
//!  chassis netns (ovs-vswitchd)                  fabric netns
//!  br-phy [172.31.254.N/24] -- ul0  <veth>  ul-N  -- br-underlay (Linux)
//!  br-ex  (ovn-bridge-mappings external:br-ex)
//!                           -- ex0  <veth>  ex-N  -- br-external (Linux, no learning)
//! ```
//!
//! The userspace datapath encapsulates by itself (`tnl_push` in `dpctl/dump-flows`): the
//! tunnel source address must sit on an OVS bridge's internal port (`br-phy`), whose
//! route and neighbours `ovs-vswitchd` learns in its namespace; no Geneve netdev is needed
//! (this kernel has none). The underlay runs at MTU 9000 so a 1,500-byte frame still fits
//! after Geneve's 58 bytes. The external bridge does not learn MAC addresses (ageing 0,
//! it floods like a hub): after a gateway fails over, frames for the gateway's MAC must
//! reach the chassis that now holds it at once, without waiting for a stale entry to age.
//!
//! Everything is recorded in the registry before it is created; deleting the fabric
//! namespace (by [`crate::stop_from_dir`]) removes the bridges and every veth pair.

use std::process::Command;

use crate::error::{Error, Result};
use crate::layout::OvsBridge;
use crate::netns::{netns_exists, vsctl};
use crate::process;
use crate::registry::Registry;

/// The Linux bridge of the underlay in the fabric namespace.
pub const FABRIC_UNDERLAY: &str = "br-underlay";
/// The Linux bridge of the external network in the fabric namespace.
pub const FABRIC_EXTERNAL: &str = "br-external";
/// The OVS bridge in each chassis holding its tunnel source address.
pub const UNDERLAY_BRIDGE: &str = "br-phy";
/// The OVS bridge in each chassis that OVN's localnet port patches into.
pub const EXTERNAL_BRIDGE: &str = "br-ex";
/// The physical network name of the external network (`options:network_name` of the
/// external switch's localnet port, `ovn-bridge-mappings` of every chassis).
pub const EXTERNAL_PHYSNET: &str = "external";
/// Underlay MTU: room for Geneve's 58 bytes around a 1,500-byte frame.
pub const UNDERLAY_MTU: u32 = 9000;

/// The underlay (tunnel source) address of the chassis numbered `index` (from 1).
pub fn underlay_ip(index: usize) -> String {
    format!("172.31.254.{index}")
}

/// One chassis to wire into the fabric.
#[derive(Debug, Clone)]
pub struct FabricChassis {
    /// From 1; names its veth ends (`ul-N`, `ex-N`) and its underlay address.
    pub index: usize,
    /// The chassis' OVS database and the namespace its `ovs-vswitchd` runs in.
    pub bridge: OvsBridge,
}

fn ip(args: &[&str]) -> Result<String> {
    process::run_ok(Command::new("ip").args(args))
}

fn tx_off(netns: &str, dev: &str) -> Result<()> {
    process::run_ok(
        Command::new("ip").args(["netns", "exec", netns, "ethtool", "-K", dev, "tx", "off"]),
    )
    .map(drop)
}

/// Creates the fabric namespace `fabric_ns` with its two bridges (recorded in
/// `registry`), then wires each chassis: the veth pairs, `br-phy` holding the underlay
/// address and `br-ex`, and the chassis' `ovn-bridge-mappings`.
pub fn attach(registry: &Registry, fabric_ns: &str, chassis: &[FabricChassis]) -> Result<()> {
    let state = registry.load()?;
    if netns_exists(fabric_ns) && !state.netns.iter().any(|n| n == fabric_ns) {
        return Err(Error::AlreadyExists {
            what: "network namespace",
            name: fabric_ns.to_owned(),
        });
    }
    registry.add_netns(fabric_ns)?;
    if !netns_exists(fabric_ns) {
        ip(&["netns", "add", fabric_ns])?;
    }
    ip(&["-n", fabric_ns, "link", "set", "lo", "up"])?;
    let mtu = UNDERLAY_MTU.to_string();
    ip(&[
        "-n",
        fabric_ns,
        "link",
        "add",
        FABRIC_UNDERLAY,
        "mtu",
        &mtu,
        "type",
        "bridge",
    ])?;
    ip(&[
        "-n",
        fabric_ns,
        "link",
        "add",
        FABRIC_EXTERNAL,
        "type",
        "bridge",
        "ageing_time",
        "0",
    ])?;
    for br in [FABRIC_UNDERLAY, FABRIC_EXTERNAL] {
        ip(&["-n", fabric_ns, "link", "set", br, "up"])?;
    }
    for c in chassis {
        wire(fabric_ns, c)?;
    }
    Ok(())
}

fn wire(fabric_ns: &str, c: &FabricChassis) -> Result<()> {
    let Some(ns) = c.bridge.netns.as_deref() else {
        return Err(Error::Invalid {
            what: "chassis",
            value: c.bridge.db_sock.display().to_string(),
            reason: "a fabric chassis runs ovs-vswitchd in a namespace of its own".into(),
        });
    };
    let mtu = UNDERLAY_MTU.to_string();
    let (ul, ex) = (format!("ul-{}", c.index), format!("ex-{}", c.index));
    for (outer, inner, bridge, link_mtu) in [
        (&ul, "ul0", FABRIC_UNDERLAY, Some(mtu.as_str())),
        (&ex, "ex0", FABRIC_EXTERNAL, None),
    ] {
        ip(&[
            "-n", fabric_ns, "link", "add", outer, "type", "veth", "peer", "name", inner, "netns",
            ns,
        ])?;
        if let Some(m) = link_mtu {
            ip(&["-n", fabric_ns, "link", "set", outer, "mtu", m])?;
            ip(&["-n", ns, "link", "set", inner, "mtu", m])?;
        }
        ip(&[
            "-n", fabric_ns, "link", "set", outer, "master", bridge, "up",
        ])?;
        ip(&["-n", ns, "link", "set", inner, "up"])?;
        tx_off(fabric_ns, outer)?;
        tx_off(ns, inner)?;
    }
    let db = &c.bridge.db_sock;
    vsctl(
        db,
        &[
            "--",
            "--may-exist",
            "add-br",
            UNDERLAY_BRIDGE,
            "--",
            "set",
            "Bridge",
            UNDERLAY_BRIDGE,
            "datapath_type=netdev",
            "--",
            "--may-exist",
            "add-port",
            UNDERLAY_BRIDGE,
            "ul0",
            "--",
            "set",
            "Interface",
            "ul0",
            &format!("mtu_request={mtu}"),
            "--",
            "set",
            "Interface",
            UNDERLAY_BRIDGE,
            &format!("mtu_request={mtu}"),
            "--",
            "--may-exist",
            "add-br",
            EXTERNAL_BRIDGE,
            "--",
            "set",
            "Bridge",
            EXTERNAL_BRIDGE,
            "datapath_type=netdev",
            "--",
            "--may-exist",
            "add-port",
            EXTERNAL_BRIDGE,
            "ex0",
            "--",
            "set",
            "Open_vSwitch",
            ".",
            &format!("external_ids:ovn-bridge-mappings={EXTERNAL_PHYSNET}:{EXTERNAL_BRIDGE}"),
        ],
    )?;
    let cidr = format!("{}/24", underlay_ip(c.index));
    ip(&["-n", ns, "addr", "replace", &cidr, "dev", UNDERLAY_BRIDGE])?;
    ip(&["-n", ns, "link", "set", UNDERLAY_BRIDGE, "up"])?;
    ip(&["-n", ns, "link", "set", EXTERNAL_BRIDGE, "up"])?;
    Ok(())
}

/// The fabric namespace of a lab with one chassis per node.
pub const FABRIC_NETNS: &str = "ferry-fabric";

/// BFD between gateway chassis (`NB_Global` options, copied to the SB by `ovn-northd`):
/// 100 ms intervals, 3 missed = down, so a dead gateway chassis is noticed in ~0.3 s
/// (OVN's defaults, 1 s x 5, take 5 s).
pub const BFD_OPTIONS: [&str; 3] = [
    "options:bfd-min-rx=100",
    "options:bfd-min-tx=100",
    "options:bfd-mult=3",
];

/// The chassis name (`system-id`) of a lab node's own chassis.
pub fn node_chassis_name(node: &str) -> String {
    format!("ferry-{node}")
}

/// A lab node's own chassis.
#[derive(Debug)]
pub struct NodeChassis {
    pub node: String,
    pub stack: crate::OvnStack,
}

/// The directory of a lab node's chassis stack under the central stack's directory.
pub fn node_chassis_dir(central_dir: &std::path::Path, node: &str) -> std::path::PathBuf {
    central_dir.join(format!("chassis-{node}"))
}

/// Starts one chassis-only stack per node (under `DIR/chassis-NODE`, registered in
/// `central`'s SB, tunnel source [`underlay_ip`]), wires them into the fabric and sets
/// [`BFD_OPTIONS`]. On failure what was started is stopped again.
pub fn start_node_chassis(central: &crate::OvnStack, nodes: &[&str]) -> Result<Vec<NodeChassis>> {
    let mut out: Vec<NodeChassis> = Vec::new();
    let result = (|| {
        let sb = crate::unix_remote(&central.paths().sb_sock);
        for (i, node) in nodes.iter().enumerate() {
            let opts =
                crate::OvnOptions::chassis_only(node_chassis_name(node), &sb, underlay_ip(i + 1));
            let dir = node_chassis_dir(&central.paths().dir, node);
            let stack = crate::OvnStack::start(&dir, opts)?;
            out.push(NodeChassis {
                node: (*node).to_owned(),
                stack,
            });
        }
        let wired: Vec<FabricChassis> = out
            .iter()
            .enumerate()
            .map(|(i, c)| FabricChassis {
                index: i + 1,
                bridge: c.stack.bridge(),
            })
            .collect();
        attach(central.registry(), FABRIC_NETNS, &wired)?;
        central.nbctl(&["--no-wait", "init"])?;
        let mut args = vec!["--no-wait", "set", "NB_Global", "."];
        args.extend(BFD_OPTIONS);
        central.nbctl(&args)?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(out),
        Err(e) => {
            stop_node_chassis(central.registry(), out);
            Err(e)
        }
    }
}

/// Stops the node chassis, then removes the fabric namespace (and with it every veth).
pub fn stop_node_chassis(registry: &Registry, chassis: Vec<NodeChassis>) {
    for c in chassis {
        if let Err(e) = c.stack.stop() {
            tracing::error!(node = c.node, error = %e, "stopping a node chassis");
        }
    }
    let removed =
        crate::netns::delete_netns(FABRIC_NETNS).and_then(|()| registry.remove_netns(FABRIC_NETNS));
    if let Err(e) = removed {
        tracing::error!(error = %e, "removing the fabric namespace");
    }
}
