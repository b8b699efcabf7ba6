//! NodePorts on the node's own join-subnet address, as kube-proxy serves them on a node: a
//! packet for `NODE_IP:nodePort` (from another node, or from the node itself) is DNATed
//! in the node's namespace to the Service's cluster IP, and masqueraded when it came from
//! elsewhere so the reply returns through this node; OVN's load balancer then picks the
//! backend. (An OVN switch load balancer cannot serve a VIP that is a port's own address on
//! the same switch: the request keeps that port's MAC and is delivered to it.) From outside,
//! node ports answer on the nodes' external addresses in OVN itself.
//!
//! The rules are one nftables table, `ip ferry-nodeports`, replaced whole (`nft -f`), so
//! what is applied is exactly what [`ruleset`] returns.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Service;

/// The table Ferry owns in the node's namespace.
pub const TABLE: &str = "ferry-nodeports";

/// One node port: `protocol` `node_port` -> `cluster_ip:port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodePort {
    pub protocol: &'static str,
    pub node_port: u16,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
}

/// The node ports of `services` (NodePort and LoadBalancer Services with a cluster IP).
pub fn node_ports<'a>(services: impl IntoIterator<Item = &'a Service>) -> BTreeSet<NodePort> {
    let mut out = BTreeSet::new();
    for s in services {
        let Some(spec) = &s.spec else { continue };
        if !matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
            continue;
        }
        let Some(ip) = spec.cluster_ip.as_deref().and_then(|i| i.parse().ok()) else {
            continue;
        };
        for p in spec.ports.iter().flatten() {
            let (Some(np), Ok(port)) = (p.node_port, u16::try_from(p.port)) else {
                continue;
            };
            // SCTP node ports are left to OVN: a kernel without SCTP NAT (this lab's)
            // would refuse the whole table.
            let protocol = match p.protocol.as_deref() {
                Some("UDP") => "udp",
                Some("SCTP") => continue,
                _ => "tcp",
            };
            if let Ok(node_port) = u16::try_from(np) {
                out.insert(NodePort {
                    protocol,
                    node_port,
                    cluster_ip: ip,
                    port,
                });
            }
        }
    }
    out
}

/// The nftables script that makes the table exactly `ports` on `node_ip`.
pub fn ruleset(node_ip: Ipv4Addr, ports: &BTreeSet<NodePort>) -> String {
    let mut dnat = String::new();
    for p in ports {
        dnat.push_str(&format!(
            "    ip daddr {node_ip} {} dport {} dnat to {}:{}\n",
            p.protocol, p.node_port, p.cluster_ip, p.port
        ));
    }
    format!(
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\
         chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{dnat}}}\n\
         chain output {{\n    type nat hook output priority -100; policy accept;\n{dnat}}}\n\
         chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   ct status dnat ip saddr != {node_ip} masquerade\n}}\n}}\n"
    )
}

/// Applies `script` in the namespace `netns` (`None`: the agent's own).
pub fn apply(netns: Option<&str>, script: &str) -> Result<(), String> {
    let mut cmd = match netns {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n, "nft", "-f", "-"]);
            c
        }
        None => {
            let mut c = Command::new("nft");
            c.args(["-f", "-"]);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Enables forwarding in the namespace (a node forwards what it DNATs).
pub fn enable_forwarding(netns: Option<&str>) -> Result<(), String> {
    let args: Vec<&str> = match netns {
        Some(n) => vec!["netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        None => return Ok(()),
    };
    let out = Command::new("ip")
        .args(&args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "s", "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn node_ports_of_nodeport_and_loadbalancer_services_only() {
        let services = [
            svc(json!({"type": "NodePort", "clusterIP": "10.96.0.5",
                "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP", "nodePort": 30053},
                          {"port": 9, "protocol": "SCTP", "nodePort": 30009}]})),
            svc(
                json!({"type": "LoadBalancer", "clusterIP": "10.96.0.6", "ports": [{"port": 443, "nodePort": 30443}]}),
            ),
            svc(
                json!({"type": "ClusterIP", "clusterIP": "10.96.0.7", "ports": [{"port": 80, "nodePort": 30081}]}),
            ),
            svc(
                json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80, "nodePort": 30082}]}),
            ),
        ];
        let got: Vec<String> = node_ports(&services)
            .iter()
            .map(|p| {
                format!(
                    "{} {}->{}:{}",
                    p.protocol, p.node_port, p.cluster_ip, p.port
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "tcp 30080->10.96.0.5:80",
                "tcp 30443->10.96.0.6:443",
                "udp 30053->10.96.0.5:53"
            ]
        );
    }

    #[test]
    fn the_ruleset_replaces_the_table_and_masquerades_only_what_came_from_elsewhere() {
        let ports = BTreeSet::from([NodePort {
            protocol: "tcp",
            node_port: 30080,
            cluster_ip: "10.96.0.5".parse().unwrap(),
            port: 80,
        }]);
        let r = ruleset("100.64.0.3".parse().unwrap(), &ports);
        assert!(r.starts_with("table ip ferry-nodeports\ndelete table ip ferry-nodeports\n"));
        assert_eq!(
            r.matches("ip daddr 100.64.0.3 tcp dport 30080 dnat to 10.96.0.5:80")
                .count(),
            2
        );
        assert!(r.contains("ct status dnat ip saddr != 100.64.0.3 masquerade"));
    }
}
