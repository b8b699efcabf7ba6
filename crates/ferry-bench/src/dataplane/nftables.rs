//! kube-proxy's nftables mode, as an `nft -f` script: one table `ip kube-proxy` whose
//! `services` chain looks the destination up in the verdict map `service-ips`
//! (`ip daddr . meta l4proto . th dport`), one `service-*` chain per service port choosing
//! an endpoint with `numgen random mod N vmap`, one `endpoint-*` chain per endpoint doing
//! the DNAT, plus the masquerade marking and the `ct state new` filter checks kube-proxy
//! installs. The cost of a new connection does not grow with the number of services.

use std::fmt::Write as _;

use super::services::{Catalogue, SERVICE_CIDR, chain_hash};

/// The table's name.
pub const TABLE: &str = "kube-proxy";

/// The `nft -f` script for a catalogue. `cluster_cidr` is the pod range whose traffic needs
/// no masquerade.
pub fn script(c: &Catalogue, cluster_cidr: &str) -> String {
    let t = TABLE;
    let mut out = String::with_capacity(512 * c.service_ports() + 4096);
    let _ = write!(
        out,
        "add table ip {t} {{ comment \"rules for kube-proxy\" ; }}\n\
         add set ip {t} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}\n\
         add map ip {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}\n\
         add map ip {t} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}\n\
         add chain ip {t} cluster-ips-check\n\
         add chain ip {t} filter-forward {{ type filter hook forward priority 0 ; }}\n\
         add chain ip {t} filter-output {{ type filter hook output priority 0 ; }}\n\
         add chain ip {t} mark-for-masquerade\n\
         add chain ip {t} masquerading\n\
         add chain ip {t} nat-output {{ type nat hook output priority -100 ; }}\n\
         add chain ip {t} nat-postrouting {{ type nat hook postrouting priority 100 ; }}\n\
         add chain ip {t} nat-prerouting {{ type nat hook prerouting priority -100 ; }}\n\
         add chain ip {t} services\n\
         add chain ip {t} service-endpoints-check\n\
         add rule ip {t} cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"\n\
         add rule ip {t} cluster-ips-check ip daddr {{ {SERVICE_CIDR} }} drop comment \"Drop traffic to unallocated ClusterIPs\"\n\
         add rule ip {t} filter-forward ct state new jump service-endpoints-check\n\
         add rule ip {t} filter-forward ct state new jump cluster-ips-check\n\
         add rule ip {t} filter-output ct state new jump service-endpoints-check\n\
         add rule ip {t} filter-output ct state new jump cluster-ips-check\n\
         add rule ip {t} mark-for-masquerade mark set mark or 0x4000\n\
         add rule ip {t} masquerading mark and 0x4000 == 0 return\n\
         add rule ip {t} masquerading mark set mark xor 0x4000\n\
         add rule ip {t} masquerading masquerade fully-random\n\
         add rule ip {t} nat-output jump services\n\
         add rule ip {t} nat-postrouting jump masquerading\n\
         add rule ip {t} nat-prerouting jump services\n\
         add rule ip {t} services ip daddr . meta l4proto . th dport vmap @service-ips\n\
         add rule ip {t} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services\n"
    );
    for svc in &c.services {
        for port in &svc.ports {
            let sp = format!("{}/tcp/{}", svc.key, port.name);
            let chain = format!("service-{}-{sp}", chain_hash(&sp, 8));
            let _ = writeln!(out, "add chain ip {t} {chain}");
            let _ = writeln!(
                out,
                "add rule ip {t} {chain} ip daddr {ip} ip saddr != {cluster_cidr} jump mark-for-masquerade",
                ip = svc.cluster_ip
            );
            let mut targets = Vec::with_capacity(svc.endpoints.len());
            for (i, ep) in svc.endpoints.iter().enumerate() {
                let dest = format!("{ep}/{}", port.target_port);
                let ep_chain = format!(
                    "endpoint-{}-{sp}__{dest}",
                    chain_hash(&format!("{sp}__{dest}"), 8)
                );
                let _ = writeln!(out, "add chain ip {t} {ep_chain}");
                let _ = writeln!(
                    out,
                    "add rule ip {t} {ep_chain} ip saddr {ep} jump mark-for-masquerade"
                );
                let _ = writeln!(
                    out,
                    "add rule ip {t} {ep_chain} meta l4proto tcp dnat to {ep}:{}",
                    port.target_port
                );
                targets.push(format!("{i} : goto {ep_chain}"));
            }
            let _ = writeln!(
                out,
                "add rule ip {t} {chain} numgen random mod {} vmap {{ {} }}",
                targets.len(),
                targets.join(" , ")
            );
            let _ = writeln!(
                out,
                "add element ip {t} service-ips {{ {ip} . tcp . {p} : goto {chain} }}",
                ip = svc.cluster_ip,
                p = port.port
            );
        }
        let _ = writeln!(
            out,
            "add element ip {t} cluster-ips {{ {} }}",
            svc.cluster_ip
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::dataplane::services::catalogue;

    #[test]
    fn the_measured_service_maps_each_port_to_a_chain_that_dnats_to_the_backend() {
        let c = catalogue(
            1,
            Ipv4Addr::new(10, 242, 2, 2),
            Ipv4Addr::new(10, 242, 3, 0),
            2,
        );
        let text = script(&c, "10.240.0.0/12");
        let sp = "bench/svc-00000/tcp/http";
        let chain = format!("service-{}-{sp}", chain_hash(sp, 8));
        let ep = format!(
            "endpoint-{}-{sp}__10.242.2.2/80",
            chain_hash(&format!("{sp}__10.242.2.2/80"), 8)
        );
        for line in [
            format!("add chain ip kube-proxy {chain}"),
            format!(
                "add rule ip kube-proxy {chain} ip daddr 10.96.0.10 ip saddr != 10.240.0.0/12 jump mark-for-masquerade"
            ),
            format!("add rule ip kube-proxy {chain} numgen random mod 1 vmap {{ 0 : goto {ep} }}"),
            format!("add rule ip kube-proxy {ep} meta l4proto tcp dnat to 10.242.2.2:80"),
            format!(
                "add element ip kube-proxy service-ips {{ 10.96.0.10 . tcp . 80 : goto {chain} }}"
            ),
            "add element ip kube-proxy cluster-ips { 10.96.0.10 }".to_string(),
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips"
                .to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert_eq!(
            text.matches("add element ip kube-proxy service-ips")
                .count(),
            3
        );
    }

    #[test]
    fn fillers_pick_among_all_endpoints() {
        let c = catalogue(
            2,
            Ipv4Addr::new(10, 242, 2, 2),
            Ipv4Addr::new(10, 242, 3, 0),
            3,
        );
        let text = script(&c, "10.240.0.0/12");
        let line = text
            .lines()
            .find(|l| l.contains("bench/svc-00000/tcp/http numgen"))
            .unwrap();
        assert!(
            line.contains("numgen random mod 3 vmap { 0 : goto endpoint-"),
            "{line}"
        );
        assert_eq!(line.matches(" : goto endpoint-").count(), 3);
        // Every chain that is jumped to is declared.
        for l in text.lines().filter(|l| l.contains("goto endpoint-")) {
            for target in l.split("goto ").skip(1) {
                let name = target.split([' ', '}']).next().unwrap();
                assert!(
                    text.contains(&format!("add chain ip kube-proxy {name}\n")),
                    "{name}"
                );
            }
        }
    }
}
