//! Pure parsing of `ip -j` and `ovs-vsctl` output into the facts [`super::check`]
//! compares.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::mac_addr::MacAddr;

/// One link from `ip -j -d link show dev NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub name: String,
    pub mac: Option<MacAddr>,
    /// Administratively up (`UP` among the flags).
    pub admin_up: bool,
    /// `linkinfo.info_kind`, e.g. `veth`.
    pub kind: Option<String>,
}

#[derive(Deserialize)]
struct RawLink {
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    linkinfo: Option<RawLinkInfo>,
    #[serde(default)]
    addr_info: Vec<RawAddr>,
}

#[derive(Deserialize)]
struct RawLinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
}

#[derive(Deserialize)]
struct RawAddr {
    #[serde(default)]
    local: Option<IpAddr>,
    #[serde(default)]
    prefixlen: Option<u8>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    dev: Option<String>,
}

/// Parses `ip -j -d link show dev NAME`; `None` if the list is empty.
pub fn parse_link(json: &str) -> Result<Option<LinkState>, String> {
    let links: Vec<RawLink> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(links.into_iter().next().map(|l| LinkState {
        admin_up: l.flags.iter().any(|f| f == "UP"),
        mac: l.address.and_then(|a| a.parse().ok()),
        kind: l.linkinfo.and_then(|i| i.info_kind),
        name: l.ifname,
    }))
}

/// Parses `ip -j addr show dev NAME` into the addresses with their prefix lengths.
pub fn parse_addrs(json: &str) -> Result<Vec<IpNet>, String> {
    let links: Vec<RawLink> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(links
        .into_iter()
        .flat_map(|l| l.addr_info)
        .filter_map(|a| IpNet::new(a.local?, a.prefixlen?).ok())
        .collect())
}

/// A default route: its gateway and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub gateway: Option<IpAddr>,
    pub dev: Option<String>,
}

/// Parses `ip -j route show default` (or `ip -6 ...`).
pub fn parse_default_routes(json: &str) -> Result<Vec<DefaultRoute>, String> {
    let routes: Vec<RawRoute> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(routes
        .into_iter()
        .filter(|r| r.dst == "default")
        .map(|r| DefaultRoute {
            gateway: r.gateway,
            dev: r.dev,
        })
        .collect())
}

/// One route of `ip -j route show`: destination (`None` for `default`), gateway, device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    pub dst: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    pub dev: Option<String>,
}

/// Parses `ip -j route show` (a host route's `dst` has no prefix length: /32 or /128).
/// Routes whose destination is neither `default` nor an address are skipped.
pub fn parse_routes(json: &str) -> Result<Vec<RouteState>, String> {
    let routes: Vec<RawRoute> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(routes
        .into_iter()
        .filter_map(|r| {
            let dst = match r.dst.as_str() {
                "default" => None,
                d => Some(
                    d.parse::<IpNet>()
                        .ok()
                        .or_else(|| d.parse::<IpAddr>().ok().map(IpNet::from))?,
                ),
            };
            Some(RouteState {
                dst,
                gateway: r.gateway,
                dev: r.dev,
            })
        })
        .collect())
}

/// An `ovs-vsctl get` string value without OVSDB quoting (`"a b"` -> `a b`).
pub fn ovs_string(out: &str) -> String {
    let t = out.trim();
    t.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map(|s| s.replace("\\\"", "\"").replace("\\\\", "\\"))
        .unwrap_or_else(|| t.to_string())
}

/// True when `ethtool -k DEV` output says transmit checksumming is off.
pub fn tx_checksum_off(ethtool_k: &str) -> bool {
    ethtool_k
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tx-checksumming:"))
        .any(|v| v.trim().starts_with("off"))
}

/// Whether a veth plugged into OVS keeps transmit checksum offload (and with it TSO),
/// from `ovs-vsctl get Bridge BR datapath_type` (`datapath_type`), `ovs-vsctl get
/// Open_vSwitch . other_config` (`other_config`, e.g. `{userspace-tso-enable="true"}`)
/// and the port's OVS interface type (`""` for a veth read over AF_PACKET).
///
/// The kernel datapath handles a veth's pending checksums itself. The userspace datapath
/// (`netdev`) only does with `userspace-tso-enable=true`: then it reads the kernel's
/// virtio-net header on AF_PACKET ports and fills in or passes on the checksums. Without
/// it, frames leave OVS with the checksum the sender left to the "hardware" and TCP never
/// connects, so offload must be off on both ends. AF_XDP ports carry no offload metadata
/// at all.
pub fn tx_checksum_wanted(datapath_type: &str, other_config: &str, port_type: &str) -> bool {
    if port_type.starts_with("afxdp") {
        return false;
    }
    if ovs_string(datapath_type) != "netdev" {
        return true;
    }
    other_config
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(", ")
        .filter_map(|kv| kv.split_once('='))
        .any(|(k, v)| ovs_string(k) == "userspace-tso-enable" && ovs_string(v) == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_checksum_is_kept_where_the_datapath_handles_it() {
        let tso = r#"{n-handler-threads="2", userspace-tso-enable="true"}"#;
        let cases = [
            ("kernel datapath", "system", "{}", "", true),
            ("kernel datapath, default type", "\"\"", "{}", "", true),
            ("userspace without TSO", "netdev", "{}", "", false),
            (
                "userspace, TSO off",
                "netdev",
                r#"{userspace-tso-enable="false"}"#,
                "",
                false,
            ),
            ("userspace with TSO", "netdev", tso, "", true),
            (
                "userspace with TSO, unquoted",
                "netdev",
                "{userspace-tso-enable=true}",
                "",
                true,
            ),
            ("AF_XDP port", "netdev", tso, "afxdp-nonpmd", false),
            ("AF_XDP PMD port", "netdev", tso, "afxdp", false),
        ];
        for (name, dp, oc, ty, want) in cases {
            assert_eq!(tx_checksum_wanted(dp, oc, ty), want, "{name}");
        }
    }

    #[test]
    fn link() {
        let json = r#"[{"ifindex":5,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],
            "address":"0a:00:00:01:01:0a","linkinfo":{"info_kind":"veth"}}]"#;
        assert_eq!(
            parse_link(json),
            Ok(Some(LinkState {
                name: "eth0".into(),
                mac: "0a:00:00:01:01:0a".parse().ok(),
                admin_up: true,
                kind: Some("veth".into()),
            }))
        );
        let down = r#"[{"ifname":"lo","flags":["LOOPBACK"],"address":"00:00:00:00:00:00"}]"#;
        let l = parse_link(down).expect("parse").expect("one link");
        assert!(!l.admin_up);
        assert_eq!(l.kind, None);
        assert_eq!(parse_link("[]"), Ok(None));
        assert!(parse_link("Cannot find device").is_err());
    }

    #[test]
    fn addrs() {
        let json = r#"[{"ifname":"eth0","addr_info":[
            {"family":"inet","local":"10.0.1.10","prefixlen":24},
            {"family":"inet6","local":"fe80::1","prefixlen":64}]}]"#;
        let want: Vec<IpNet> = vec![
            "10.0.1.10/24".parse().expect("net"),
            "fe80::1/64".parse().expect("net"),
        ];
        assert_eq!(parse_addrs(json), Ok(want));
        assert_eq!(parse_addrs("[]"), Ok(vec![]));
    }

    #[test]
    fn default_routes() {
        let json = r#"[{"dst":"default","gateway":"10.0.1.1","dev":"eth0","flags":[]},
            {"dst":"10.0.1.0/24","dev":"eth0","prefsrc":"10.0.1.10"}]"#;
        assert_eq!(
            parse_default_routes(json),
            Ok(vec![DefaultRoute {
                gateway: "10.0.1.1".parse().ok(),
                dev: Some("eth0".into())
            }])
        );
    }

    #[test]
    fn routes() {
        let json = r#"[{"dst":"default","gateway":"198.51.100.1","dev":"up0","flags":[]},
            {"dst":"10.96.0.0/16","gateway":"100.64.0.1","dev":"ferry0","flags":[]},
            {"dst":"100.64.0.0/16","dev":"ferry0","protocol":"kernel","scope":"link","prefsrc":"100.64.0.2"},
            {"dst":"10.1.2.3","gateway":"100.64.0.1","dev":"ferry0"},
            {"dst":"not an address","dev":"x"}]"#;
        let net = |s: &str| s.parse::<IpNet>().ok();
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(
            parse_routes(json),
            Ok(vec![
                RouteState {
                    dst: None,
                    gateway: ip("198.51.100.1"),
                    dev: Some("up0".into())
                },
                RouteState {
                    dst: net("10.96.0.0/16"),
                    gateway: ip("100.64.0.1"),
                    dev: Some("ferry0".into())
                },
                RouteState {
                    dst: net("100.64.0.0/16"),
                    gateway: None,
                    dev: Some("ferry0".into())
                },
                RouteState {
                    dst: net("10.1.2.3/32"),
                    gateway: ip("100.64.0.1"),
                    dev: Some("ferry0".into())
                },
            ])
        );
        assert_eq!(parse_routes("[]"), Ok(vec![]));
        assert!(parse_routes("RTNETLINK answers: error").is_err());
    }

    #[test]
    fn ovs_strings_and_ethtool() {
        let cases = [
            ("b11\n", "b11"),
            ("\"a b\"\n", "a b"),
            ("\"\"\n", ""),
            ("\n", ""),
            ("\"x\\\"y\"", "x\"y"),
        ];
        for (input, want) in cases {
            assert_eq!(ovs_string(input), want, "{input:?}");
        }
        assert!(tx_checksum_off(
            "Features for eth0:\nrx-checksumming: on\ntx-checksumming: off\n"
        ));
        assert!(!tx_checksum_off("tx-checksumming: on\n"));
        assert!(tx_checksum_off("tx-checksumming: off [fixed]\n"));
    }
}
