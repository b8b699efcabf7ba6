//! The federation lab's shared external network: one network outside every member that
//! carries each member's EIP range, and the one outside client that reaches them all.
//!
//! ```text
//!  ferry-fedx-client  eth0 198.19.0.100/24 (routes: member N's EIP range via 198.19.0.N)
//!        |
//!  ferry-fedx         br-fedx (Linux bridge; the shared external network, 198.19.0.0/24)
//!        |  fx-c1            |  fx-c2            |  fx-c3
//!  member c1's edge   member c2's edge   member c3's edge   (netns ferry-fed-edge in each
//!  fed0 198.19.0.1    fed0 198.19.0.2    fed0 198.19.0.3     member: a VNicIP on the
//!  eth0 198.18.0.249  eth0 198.18.0.249  eth0 198.18.0.249   member's external switch)
//! ```
//!
//! Each member's edge is its border router: a host on the member's own external network
//! (an OVN port, [`edge_object`], plumbed by the member's agent like `ext-client`) with a
//! second interface on the shared network. The shared network routes member N's EIP range
//! ([`eip_range`], a /29, disjoint across members) to member N's edge, which forwards it onto
//! the member's external switch where `eip-gateway` answers for the EIP. Members' external
//! networks are all `198.18.0.0/24` inside (like their VPCs, they overlap on purpose); only
//! each member's own range is routed to it, so the overlap never reaches the shared network.
//! The edge masquerades what it forwards from the shared network: `eip-gateway` has no
//! route back to 198.19.0.0/24 (its only routes are the member's external network and VPCs).
//!
//! TCP is relayed rather than routed: a single-chassis member's userspace datapath runs with
//! `userspace-tso-enable`, and hands the edge its replies (un-DNATed from a backend to the
//! EIP by OVS) marked checksum-valid without a valid TCP checksum. The edge's own sockets
//! accept them (the kernel trusts the mark), but a router forwards them as they are and the
//! client drops them; this kernel has no `act_csum` to refill them on the way. So the edge
//! redirects TCP from the shared network to a transparent relay ([`relay`], run by the lab's
//! supervisor with its sockets in the edge's namespace) that opens the same connection to
//! the original destination (the EIP) from the edge and copies both ways: the client still
//! connects to the member's EIP over the shared network, and the edge's own packets carry
//! good checksums.
//!
//! Veths to the shared network have TX checksum offload off: their frames reach the
//! members' userspace datapath, which would otherwise see unfinished checksums.
//!
//! [`commands`] is the whole plan as argv lists (pure, table-tested); [`create`] runs it.
//! Everything lives in the two namespaces named here (created in the mount namespace the lab
//! runs in) and in the members' edge namespaces; [`delete`] removes the two (and with them
//! every veth), a member's edge goes with its lab.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::{LabError, fail};

/// The namespace holding the shared network's bridge.
pub const NETNS: &str = "ferry-fedx";
/// The one outside client's namespace.
pub const CLIENT_NETNS: &str = "ferry-fedx-client";
/// The shared network's bridge (in [`NETNS`]).
pub const BRIDGE: &str = "br-fedx";
/// The shared network.
pub const CIDR: &str = "198.19.0.0/24";
/// The outside client's address.
pub const CLIENT_IP: &str = "198.19.0.100";
/// The edge host each member gets on its own external network (a VNicIP).
pub const EDGE: &str = "fed-edge";
/// Its namespace inside the member (the agent's `ferry-NAME`).
pub const EDGE_NETNS: &str = "ferry-fed-edge";
/// The edge's address on its member's external network (`ext-client` is .250).
pub const EDGE_IP: &str = "198.18.0.249";
const EDGE_MAC: &str = "0a:00:00:ee:00:f9";
/// The edge's interface on the shared network.
const EDGE_SHARED_IF: &str = "fed0";
/// Where the edge's TCP relay listens (TCP from the shared network is redirected here).
pub const RELAY_PORT: u16 = 15001;

/// Member `n`'s edge address on the shared network.
pub fn edge_shared_ip(n: usize) -> String {
    format!("198.19.0.{n}")
}

/// Member `n`'s EIP range on the shared network: the /29 at `198.18.0.(144 + 8n)`
/// (c1 .152-.159, c2 .160-.167, c3 .168-.175), inside the lab's EIP pool and disjoint
/// across members (up to 6 members).
pub fn eip_range(n: usize) -> String {
    format!("198.18.0.{}/29", 144 + 8 * n)
}

/// The first address of member `n`'s range: where the lab puts its federated service.
pub fn first_eip(n: usize) -> String {
    format!("198.18.0.{}", 144 + 8 * n)
}

/// The edge host as a VNicIP of the member: on the external switch, its command a sleep
/// (it only forwards).
pub fn edge_object() -> Value {
    json!({"apiVersion": "iaas.yusur.io/v1", "kind": "VNicIP",
        "metadata": {"name": EDGE, "namespace": "default",
            "annotations": {"iaas.yusur.io/cidr": "198.18.0.0/24", "iaas.yusur.io/gateway": "198.18.0.1",
                            "lab.ferry.io/command": "[\"sleep\",\"infinity\"]"}},
        "spec": {"subnet": "external", "ipAddress": EDGE_IP, "macAddress": EDGE_MAC, "nodeName": "node2"}})
}

/// A member's edge namespace as the lab's mount namespace sees it: the member's `/run/netns`
/// through its `ferry up` process' root.
pub fn edge_netns_path(member_pid: i32) -> String {
    format!("/proc/{member_pid}/root/run/netns/{EDGE_NETNS}")
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// Every command that builds the shared network for `members` (`(n, edge namespace path)`),
/// in order: the two namespaces, the bridge, the client and its routes, then per member a
/// veth from its edge into the bridge, the edge's address, forwarding and masquerade.
pub fn commands(members: &[(usize, String)]) -> Vec<Vec<String>> {
    let mut out = vec![
        argv(&["ip", "netns", "add", NETNS]),
        argv(&["ip", "netns", "add", CLIENT_NETNS]),
        argv(&["ip", "-n", NETNS, "link", "set", "lo", "up"]),
        argv(&["ip", "-n", CLIENT_NETNS, "link", "set", "lo", "up"]),
        argv(&["ip", "-n", NETNS, "link", "add", BRIDGE, "type", "bridge"]),
        argv(&["ip", "-n", NETNS, "link", "set", BRIDGE, "up"]),
        argv(&[
            "ip",
            "-n",
            NETNS,
            "link",
            "add",
            "fx-client",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            CLIENT_NETNS,
        ]),
        argv(&[
            "ip",
            "-n",
            NETNS,
            "link",
            "set",
            "fx-client",
            "master",
            BRIDGE,
            "up",
        ]),
        argv(&[
            "ip",
            "-n",
            CLIENT_NETNS,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            "eth0",
        ]),
        argv(&["ip", "-n", CLIENT_NETNS, "link", "set", "eth0", "up"]),
        argv(&[
            "ip",
            "netns",
            "exec",
            NETNS,
            "ethtool",
            "-K",
            "fx-client",
            "tx",
            "off",
        ]),
        argv(&[
            "ip",
            "netns",
            "exec",
            CLIENT_NETNS,
            "ethtool",
            "-K",
            "eth0",
            "tx",
            "off",
        ]),
    ];
    for (n, _) in members {
        out.push(argv(&[
            "ip",
            "-n",
            CLIENT_NETNS,
            "route",
            "add",
            &eip_range(*n),
            "via",
            &edge_shared_ip(*n),
        ]));
    }
    for (n, edge) in members {
        let outer = format!("fx-c{n}");
        let in_edge = |words: &[&str]| {
            let mut v = argv(&["nsenter", &format!("--net={edge}")]);
            v.extend(argv(words));
            v
        };
        out.push(in_edge(&[
            "ip",
            "link",
            "add",
            EDGE_SHARED_IF,
            "type",
            "veth",
            "peer",
            "name",
            &outer,
            "netns",
            NETNS,
        ]));
        out.push(argv(&[
            "ip", "-n", NETNS, "link", "set", &outer, "master", BRIDGE, "up",
        ]));
        out.push(argv(&[
            "ip", "netns", "exec", NETNS, "ethtool", "-K", &outer, "tx", "off",
        ]));
        out.push(in_edge(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", edge_shared_ip(*n)),
            "dev",
            EDGE_SHARED_IF,
        ]));
        out.push(in_edge(&["ip", "link", "set", EDGE_SHARED_IF, "up"]));
        out.push(in_edge(&["ethtool", "-K", EDGE_SHARED_IF, "tx", "off"]));
        out.push(in_edge(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
        out.push(in_edge(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-i",
            EDGE_SHARED_IF,
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            &RELAY_PORT.to_string(),
        ]));
        out.push(in_edge(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            CIDR,
            "!",
            "-o",
            EDGE_SHARED_IF,
            "-j",
            "MASQUERADE",
        ]));
    }
    out
}

fn run(cmd: &[String]) -> Result<(), String> {
    let (program, args) = cmd.split_first().ok_or("empty command")?;
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", cmd.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Builds the shared network for `members` (`(n, member pid)`), whose edges must exist.
/// A shared network left from an earlier run is removed first.
pub fn create(members: &[(usize, i32)]) -> Result<(), LabError> {
    delete();
    let plan: Vec<(usize, String)> = members
        .iter()
        .map(|(n, pid)| (*n, edge_netns_path(*pid)))
        .collect();
    for cmd in commands(&plan) {
        run(&cmd).map_err(|e| fail("shared external network", e, None))?;
    }
    Ok(())
}

/// Removes the two namespaces (the bridge and every veth go with them); silent when they
/// are not there.
pub fn delete() {
    for ns in [CLIENT_NETNS, NETNS] {
        if Path::new("/run/netns").join(ns).exists() {
            let _ = run(&argv(&["ip", "netns", "del", ns]));
        }
    }
}

/// Whether the shared network exists (for `check` on a lab started before it existed).
pub fn exists() -> bool {
    Path::new("/run/netns").join(CLIENT_NETNS).exists()
}

/// One HTTP GET from the shared network's client: the body, or why there was none.
pub fn get(url: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", CLIENT_NETNS, "curl", "-s", "-m", "2", url])
        .output()
        .map_err(|e| e.to_string())?;
    let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !body.is_empty() {
        Ok(body)
    } else {
        Err(format!("no answer (curl {})", out.status))
    }
}

// === the edge's TCP relay ===

/// Runs member `member_pid`'s edge relay until `shutdown` turns true: waits for the edge's
/// namespace, listens there on [`RELAY_PORT`], and for each connection redirected to it
/// opens one to its original destination from the edge and copies both ways.
pub async fn relay(member_pid: i32, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let path = edge_netns_path(member_pid);
    let (dialer, listener) = loop {
        if *shutdown.borrow() {
            return;
        }
        if Path::new(&path).exists() {
            let opened = match std::fs::File::open(&path) {
                Ok(ns) => super::dialer_in(ns, "edge-relay".into(), Some(RELAY_PORT)).await,
                Err(e) => Err(e),
            };
            match opened {
                Ok((dialer, Some(listener))) => break (dialer, listener),
                Ok((_, None)) => return,
                Err(e) => tracing::warn!(netns = path, error = %e, "edge relay"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = shutdown.changed() => {}
        }
    };
    tracing::info!(netns = path, port = RELAY_PORT, "edge relay listening");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((inbound, _)) = accepted else {
            continue;
        };
        // Where the client meant to go: the EIP, before the redirect to this port.
        let Ok(dst) =
            nix::sys::socket::getsockopt(&inbound, nix::sys::socket::sockopt::OriginalDst)
        else {
            continue;
        };
        let target = std::net::SocketAddr::from((
            std::net::Ipv4Addr::from(u32::from_be(dst.sin_addr.s_addr)),
            u16::from_be(dst.sin_port),
        ));
        tokio::spawn(super::splice(inbound, target, dialer.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(first, last)` address of a `a.b.c.d/29` as integers.
    fn span(cidr: &str) -> (u32, u32) {
        let (ip, len) = cidr.split_once('/').expect("cidr");
        let ip: std::net::Ipv4Addr = ip.parse().expect("ip");
        let size = 1u32 << (32 - len.parse::<u32>().expect("prefix"));
        let first = u32::from(ip);
        assert_eq!(first % size, 0, "{cidr} is a network address");
        (first, first + size - 1)
    }

    #[test]
    fn eip_ranges_are_disjoint_and_inside_the_pool() {
        let ranges: Vec<(u32, u32)> = (1..=6).map(|n| span(&eip_range(n))).collect();
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                assert!(a.1 < b.0 || b.1 < a.0, "{a:?} {b:?}");
            }
        }
        let pool = (
            u32::from(std::net::Ipv4Addr::new(198, 18, 0, 100)),
            u32::from(std::net::Ipv4Addr::new(198, 18, 0, 199)),
        );
        for (n, (lo, hi)) in ranges.iter().enumerate() {
            assert!(*lo >= pool.0 && *hi <= pool.1, "c{}", n + 1);
            let first: std::net::Ipv4Addr = first_eip(n + 1).parse().expect("ip");
            assert_eq!(u32::from(first), *lo, "c{}", n + 1);
        }
        let edge: std::net::Ipv4Addr = EDGE_IP.parse().expect("ip");
        assert!(u32::from(edge) > pool.1, "the edge is outside the pool");
    }

    #[test]
    fn the_plan_routes_each_range_to_its_members_edge() {
        let plan = commands(&[(1, "/proc/11/root/run/netns/ferry-fed-edge".into())]);
        let lines: Vec<String> = plan.iter().map(|c| c.join(" ")).collect();
        let want = [
            "ip netns add ferry-fedx",
            "ip netns add ferry-fedx-client",
            "ip -n ferry-fedx link set lo up",
            "ip -n ferry-fedx-client link set lo up",
            "ip -n ferry-fedx link add br-fedx type bridge",
            "ip -n ferry-fedx link set br-fedx up",
            "ip -n ferry-fedx link add fx-client type veth peer name eth0 netns ferry-fedx-client",
            "ip -n ferry-fedx link set fx-client master br-fedx up",
            "ip -n ferry-fedx-client addr add 198.19.0.100/24 dev eth0",
            "ip -n ferry-fedx-client link set eth0 up",
            "ip netns exec ferry-fedx ethtool -K fx-client tx off",
            "ip netns exec ferry-fedx-client ethtool -K eth0 tx off",
            "ip -n ferry-fedx-client route add 198.18.0.152/29 via 198.19.0.1",
            "nsenter --net=/proc/11/root/run/netns/ferry-fed-edge ip link add fed0 type veth peer name fx-c1 netns ferry-fedx",
            "ip -n ferry-fedx link set fx-c1 master br-fedx up",
            "ip netns exec ferry-fedx ethtool -K fx-c1 tx off",
            "nsenter --net=/proc/11/root/run/netns/ferry-fed-edge ip addr add 198.19.0.1/24 dev fed0",
            "nsenter --net=/proc/11/root/run/netns/ferry-fed-edge ip link set fed0 up",
            "nsenter --net=/proc/11/root/run/netns/ferry-fed-edge ethtool -K fed0 tx off",
            "nsenter --net=/proc/11/root/run/netns/ferry-fed-edge sysctl -qw net.ipv4.ip_forward=1",
            "nsenter --net=/proc/11/root/run/netns/ferry-fed-edge iptables -t nat -A PREROUTING -i fed0 -p tcp -j REDIRECT --to-ports 15001",
            "nsenter --net=/proc/11/root/run/netns/ferry-fed-edge iptables -t nat -A POSTROUTING -s 198.19.0.0/24 ! -o fed0 -j MASQUERADE",
        ];
        assert_eq!(lines, want);
    }
}
