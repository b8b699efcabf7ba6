//! kube-proxy's iptables mode, as `iptables-restore --noflush` input: the same chains and
//! rules kube-proxy writes for ClusterIP services (`KUBE-SERVICES` with one rule per
//! service port, walked linearly by every new connection; a `KUBE-SVC-*` chain per service
//! port choosing an endpoint with `statistic --mode random`; a `KUBE-SEP-*` chain per
//! endpoint doing the DNAT; masquerade marking for traffic from outside the cluster CIDR;
//! the `KUBE-FORWARD` filter rules every forwarded packet passes).

use std::fmt::Write as _;

use super::services::{Catalogue, chain_hash};

/// The `iptables-restore` input for a catalogue. `cluster_cidr` is the pod range whose
/// traffic needs no masquerade (kube-proxy's `--cluster-cidr`).
pub fn restore_input(c: &Catalogue, cluster_cidr: &str) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    let mut services = String::new();
    for svc in &c.services {
        for port in &svc.ports {
            let sp = format!("{}:{}", svc.key, port.name);
            let svc_chain = format!("KUBE-SVC-{}", chain_hash(&sp, 16));
            let _ = writeln!(chains, ":{svc_chain} - [0:0]");
            let _ = writeln!(
                services,
                "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"{sp} cluster IP\" -m tcp --dport {p} -j {svc_chain}",
                ip = svc.cluster_ip,
                p = port.port
            );
            let _ = writeln!(
                rules,
                "-A {svc_chain} ! -s {cluster_cidr} -d {ip}/32 -p tcp -m comment --comment \"{sp} cluster IP\" -m tcp --dport {p} -j KUBE-MARK-MASQ",
                ip = svc.cluster_ip,
                p = port.port
            );
            let n = svc.endpoints.len();
            for (i, ep) in svc.endpoints.iter().enumerate() {
                let dest = format!("{ep}:{}", port.target_port);
                let sep = format!("KUBE-SEP-{}", chain_hash(&format!("{sp}/{dest}"), 16));
                let _ = writeln!(chains, ":{sep} - [0:0]");
                let choose = if i + 1 < n {
                    format!(
                        " -m statistic --mode random --probability {:.10}",
                        1.0 / (n - i) as f64
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    rules,
                    "-A {svc_chain} -m comment --comment \"{sp} -> {dest}\"{choose} -j {sep}"
                );
                let _ = writeln!(
                    rules,
                    "-A {sep} -s {ep}/32 -m comment --comment \"{sp}\" -j KUBE-MARK-MASQ"
                );
                let _ = writeln!(
                    rules,
                    "-A {sep} -p tcp -m comment --comment \"{sp}\" -m tcp -j DNAT --to-destination {dest}"
                );
            }
        }
    }
    let mut out = String::with_capacity(chains.len() + rules.len() + services.len() + 2048);
    out.push_str(concat!(
        "*filter\n",
        ":KUBE-FORWARD - [0:0]\n",
        ":KUBE-SERVICES - [0:0]\n",
        "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n",
        "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n",
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n",
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
        "COMMIT\n",
        "*nat\n",
        ":KUBE-SERVICES - [0:0]\n",
        ":KUBE-POSTROUTING - [0:0]\n",
        ":KUBE-MARK-MASQ - [0:0]\n",
    ));
    out.push_str(&chains);
    out.push_str(concat!(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n",
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
    ));
    out.push_str(&services);
    out.push_str(&rules);
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::dataplane::services::catalogue;

    #[test]
    fn one_service_gives_kube_proxys_chains_and_rules() {
        let c = catalogue(
            1,
            Ipv4Addr::new(10, 240, 2, 2),
            Ipv4Addr::new(10, 240, 3, 0),
            2,
        );
        let text = restore_input(&c, "10.240.0.0/12");
        let iperf = chain_hash("bench/svc-00000:iperf", 16);
        let sep = chain_hash("bench/svc-00000:iperf/10.240.2.2:5201", 16);
        let want_lines = [
            "*filter".to_string(),
            format!(":KUBE-SVC-{iperf} - [0:0]"),
            format!(":KUBE-SEP-{sep} - [0:0]"),
            format!(
                "-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"bench/svc-00000:iperf cluster IP\" -m tcp --dport 5201 -j KUBE-SVC-{iperf}"
            ),
            format!(
                "-A KUBE-SVC-{iperf} ! -s 10.240.0.0/12 -d 10.96.0.10/32 -p tcp -m comment --comment \"bench/svc-00000:iperf cluster IP\" -m tcp --dport 5201 -j KUBE-MARK-MASQ"
            ),
            format!(
                "-A KUBE-SVC-{iperf} -m comment --comment \"bench/svc-00000:iperf -> 10.240.2.2:5201\" -j KUBE-SEP-{sep}"
            ),
            format!(
                "-A KUBE-SEP-{sep} -p tcp -m comment --comment \"bench/svc-00000:iperf\" -m tcp -j DNAT --to-destination 10.240.2.2:5201"
            ),
        ];
        for line in &want_lines {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // Two tables, each committed; every chain declared before use.
        assert_eq!(text.matches("COMMIT\n").count(), 2);
        assert_eq!(text.matches(":KUBE-SVC-").count(), 3);
        assert_eq!(text.matches(":KUBE-SEP-").count(), 3);
        assert!(
            !text.contains("statistic"),
            "one endpoint needs no random choice"
        );
    }

    #[test]
    fn fillers_choose_among_their_endpoints_with_kube_proxys_probabilities() {
        let c = catalogue(
            3,
            Ipv4Addr::new(10, 240, 2, 2),
            Ipv4Addr::new(10, 240, 3, 0),
            3,
        );
        let text = restore_input(&c, "10.240.0.0/12");
        let svc0 = format!("KUBE-SVC-{}", chain_hash("bench/svc-00000:http", 16));
        let jumps: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {svc0} ")) && l.contains("KUBE-SEP-"))
            .collect();
        assert_eq!(jumps.len(), 3);
        assert!(jumps[0].contains("--probability 0.3333333333"));
        assert!(jumps[1].contains("--probability 0.5000000000"));
        assert!(!jumps[2].contains("--probability"));
        assert!(jumps.iter().all(|j| j.contains(":8080\"")));
    }

    #[test]
    fn the_measured_service_sits_in_the_middle_of_kube_services() {
        let c = catalogue(
            101,
            Ipv4Addr::new(10, 240, 2, 2),
            Ipv4Addr::new(10, 240, 3, 0),
            2,
        );
        let text = restore_input(&c, "10.240.0.0/12");
        let portals: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES -d "))
            .collect();
        assert_eq!(portals.len(), 100 + 3);
        let first_measured = portals
            .iter()
            .position(|l| l.contains("--dport 5201"))
            .unwrap();
        assert_eq!(first_measured, 50);
    }
}
