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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
/// 200 ms intervals, 5 missed = down, so a dead gateway chassis is noticed in ~1 s (OVN's
/// defaults, 1 s x 5, take 5 s), with some margin for a loaded 2-core machine.
pub const BFD_OPTIONS: [&str; 3] = [
    "options:bfd-min-rx=200",
    "options:bfd-min-tx=200",
    "options:bfd-mult=5",
];

/// The third gateway chassis of a lab with a chassis per node: it runs no workloads and
/// has the lowest priority. OVN 23.03's `ovn-controller` takes over a gateway only while
/// it still has a BFD session up to some other chassis (with none up it assumes it is the
/// one cut off); with two chassis, the survivor of a dead gateway chassis has none left,
/// so it would never take over. The witness keeps one up.
pub const WITNESS: &str = "witness";

/// The chassis of a lab with one chassis per node: the nodes, then [`WITNESS`].
pub fn chassis_nodes(nodes: &[&str]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| (*n).to_owned())
        .chain([WITNESS.to_owned()])
        .collect()
}

/// The chassis name (`system-id`) of a lab node's own chassis.
pub fn node_chassis_name(node: &str) -> String {
    format!("ferry-{node}")
}

/// A lab node's own chassis (or the [`WITNESS`]).
#[derive(Debug)]
pub struct NodeChassis {
    pub node: String,
    pub stack: crate::OvnStack,
    /// Stops its [`keep_underlay_route`] thread.
    keeper: Arc<AtomicBool>,
}

/// The directory of a lab node's chassis stack under the central stack's directory.
pub fn node_chassis_dir(central_dir: &std::path::Path, node: &str) -> std::path::PathBuf {
    central_dir.join(format!("chassis-{node}"))
}

/// Starts one chassis-only stack per node and the [`WITNESS`] (under `DIR/chassis-NODE`,
/// registered in `central`'s SB, tunnel source [`underlay_ip`]), wires them into the
/// fabric, sets [`BFD_OPTIONS`] and starts each one's [`keep_underlay_route`]. On failure
/// what was started is stopped again.
pub fn start_node_chassis(central: &crate::OvnStack, nodes: &[&str]) -> Result<Vec<NodeChassis>> {
    start_node_chassis_with(central, nodes, &[])
}

/// [`start_node_chassis`] with `other_config` keys added to each node's `Open_vSwitch`
/// row before its `ovs-vswitchd` starts (the [`WITNESS`] gets none): the DPU lab's
/// `hw-offload=true`, which vswitchd reads only when it starts.
pub fn start_node_chassis_with(
    central: &crate::OvnStack,
    nodes: &[&str],
    node_other_config: &[(String, String)],
) -> Result<Vec<NodeChassis>> {
    let mut out: Vec<NodeChassis> = Vec::new();
    let result = (|| {
        // Every member of a RAFT SB (ovn-controller follows the leader); with TLS the
        // chassis use the SB's unix socket, which it serves as well.
        let sb = match central.tls() {
            Some(_) => crate::unix_remote(&central.paths().sb_sock),
            None => central.sb_remote(),
        };
        for (i, node) in chassis_nodes(nodes).iter().enumerate() {
            let mut opts =
                crate::OvnOptions::chassis_only(node_chassis_name(node), &sb, underlay_ip(i + 1));
            if node != WITNESS {
                opts.ovs_other_config
                    .extend(node_other_config.iter().cloned());
            }
            let dir = node_chassis_dir(&central.paths().dir, node);
            let stack = crate::OvnStack::start(&dir, opts)?;
            out.push(NodeChassis {
                node: node.clone(),
                stack,
                keeper: Arc::new(AtomicBool::new(false)),
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
        for (i, c) in out.iter().enumerate() {
            let (paths, ns, stop) = (
                c.stack.paths().clone(),
                c.stack.bridge().netns.unwrap_or_default(),
                Arc::clone(&c.keeper),
            );
            std::thread::Builder::new()
                .name(format!("ferry-underlay-{}", c.node))
                .spawn(move || keep_underlay_route(&paths, &ns, i + 1, &stop))
                .map_err(|e| Error::io("spawn underlay thread for", &c.stack.paths().dir, e))?;
        }
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
        c.keeper.store(true, Ordering::SeqCst);
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

/// Keeps the underlay route in `ovs-vswitchd`'s own routing table across restarts (until
/// `stop`): a restarted `ovs-vswitchd` reads the kernel's routes while its `br-phy` tap has
/// no reader yet (the route is `linkdown`), skips it, and is not told when the link comes
/// back, so its tunnels have no route and the chassis stays cut off. Whenever the
/// daemon's PID changes, this adds the route with `ovs-appctl ovs/route/add` once the
/// daemon answers (retrying every 200 ms).
fn keep_underlay_route(paths: &crate::LabPaths, netns: &str, index: usize, stop: &AtomicBool) {
    let pidfile = paths.pidfile(crate::Daemon::Vswitchd);
    let ctl = paths.ctl(crate::Daemon::Vswitchd);
    let prefix = format!(
        "{}/24",
        underlay_ip(index)
            .rsplit_once('.')
            .map_or(String::new(), |(net, _)| format!("{net}.0"))
    );
    let mut done_for = None;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let pid = std::fs::read_to_string(&pidfile).ok();
        if pid.is_none() || pid == done_for {
            continue;
        }
        let has_route = process::run_ok(
            Command::new("ovs-appctl")
                .args(["--timeout=2", "-t"])
                .arg(&ctl)
                .args(["ovs/route/show"]),
        )
        .is_ok_and(|routes| routes.contains(&prefix));
        let added = has_route
            || process::run_ok(
                Command::new("ovs-appctl")
                    .args(["--timeout=2", "-t"])
                    .arg(&ctl)
                    .args(["ovs/route/add", &prefix, UNDERLAY_BRIDGE]),
            )
            .is_ok();
        if added {
            tracing::debug!(netns, prefix, "underlay route in ovs-vswitchd");
            done_for = pid;
        }
    }
}
