//! [`check`]: is the pod interface still what [`super::add`] made?

use std::path::PathBuf;

use ipnet::IpNet;

use super::PlumbRequest;
use super::link_state::{
    ovs_string, parse_addrs, parse_default_routes, parse_link, parse_routes, tx_checksum_off,
};
use super::veth::{ovs_db_arg, tx_checksum_wanted_for};
use crate::command::{CommandError, run, run_in_netns};
use crate::mac_addr::MacAddr;

/// The first way the pod's network differs from the request (or why it could not be
/// inspected).
#[derive(Debug, thiserror::Error)]
pub enum Discrepancy {
    #[error("network namespace {path} does not exist")]
    NetnsMissing { path: PathBuf },
    #[error("host end {name} does not exist")]
    HostLinkMissing { name: String },
    #[error("host end {name} is a {kind:?} link, not a veth")]
    HostLinkNotVeth { name: String, kind: Option<String> },
    #[error("host end {name} is down")]
    HostLinkDown { name: String },
    #[error("interface {ifname} does not exist in {netns}")]
    ContainerLinkMissing { ifname: String, netns: PathBuf },
    #[error("interface {ifname} in the pod is down")]
    ContainerLinkDown { ifname: String },
    #[error("interface {ifname} in the pod has MAC {got:?}, want {want}")]
    MacMismatch {
        ifname: String,
        want: MacAddr,
        got: Option<MacAddr>,
    },
    #[error("interface {ifname} in the pod lacks address {want} (has {have:?})")]
    AddressMissing {
        ifname: String,
        want: IpNet,
        have: Vec<IpNet>,
    },
    #[error("the pod has no default route via {gateway} dev {ifname}")]
    DefaultRouteMissing {
        gateway: std::net::IpAddr,
        ifname: String,
    },
    #[error("no route to {dst} via {via} dev {ifname} in {netns}")]
    RouteMissing {
        dst: IpNet,
        via: std::net::IpAddr,
        ifname: String,
        netns: PathBuf,
    },
    #[error(
        "tx checksum offload is {} for {ifname} ({place}); the bridge's datapath wants it {}",
        if *on { "on" } else { "off" },
        if *on { "off (TCP through the userspace datapath without TSO fails)" } else { "on" }
    )]
    TxOffload {
        ifname: String,
        place: &'static str,
        /// What the interface has.
        on: bool,
    },
    #[error("OVS port {port} is not on bridge {bridge} (found on {found:?})")]
    OvsPortMissing {
        port: String,
        bridge: String,
        found: Option<String>,
    },
    #[error("OVS interface {port} has iface-id {got:?}, want {want:?}")]
    IfaceIdMismatch {
        port: String,
        want: String,
        got: String,
    },
    #[error("could not inspect: {0}")]
    Inspect(#[from] CommandError),
    #[error("unexpected output of `{command}`: {detail}")]
    Output { command: String, detail: String },
}

const NO_DEVICE: &[&str] = &["Cannot find device", "does not exist"];

/// Verifies the veth, MAC, address, default route (when asked for), further routes,
/// offload setting and OVS port, in that order, and returns the first discrepancy.
pub fn check(req: &PlumbRequest) -> Result<(), Discrepancy> {
    let ns = req.netns_path.as_path();
    if !ns.exists() {
        return Err(Discrepancy::NetnsMissing {
            path: req.netns_path.clone(),
        });
    }
    // Host end.
    let on_host = |program: &str, args: &[&str]| match req.ovs_netns.as_deref() {
        Some(ns) => crate::command::run_in_netns(ns, program, args),
        None => run(program, args),
    };
    let host = match on_host("ip", &["-j", "-d", "link", "show", "dev", &req.host_ifname]) {
        Ok(out) => parse(&out, "ip -j -d link show", parse_link)?,
        Err(e) if e.stderr_says(NO_DEVICE) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(host) = host else {
        return Err(Discrepancy::HostLinkMissing {
            name: req.host_ifname.clone(),
        });
    };
    if host.kind.as_deref() != Some("veth") {
        return Err(Discrepancy::HostLinkNotVeth {
            name: host.name,
            kind: host.kind,
        });
    }
    if !host.admin_up {
        return Err(Discrepancy::HostLinkDown { name: host.name });
    }
    // Container end.
    let ifname = req.ifname.as_str();
    let link = match run_in_netns(ns, "ip", &["-j", "-d", "link", "show", "dev", ifname]) {
        Ok(out) => parse(&out, "ip -j -d link show", parse_link)?,
        Err(e) if e.stderr_says(NO_DEVICE) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(link) = link else {
        return Err(Discrepancy::ContainerLinkMissing {
            ifname: ifname.to_string(),
            netns: req.netns_path.clone(),
        });
    };
    if link.mac != Some(req.mac) {
        return Err(Discrepancy::MacMismatch {
            ifname: ifname.to_string(),
            want: req.mac,
            got: link.mac,
        });
    }
    if !link.admin_up {
        return Err(Discrepancy::ContainerLinkDown {
            ifname: ifname.to_string(),
        });
    }
    let out = run_in_netns(ns, "ip", &["-j", "addr", "show", "dev", ifname])?;
    let have = parse(&out, "ip -j addr show", parse_addrs)?;
    if !have.contains(&req.ip_cidr) {
        return Err(Discrepancy::AddressMissing {
            ifname: ifname.to_string(),
            want: req.ip_cidr,
            have,
        });
    }
    let family = if req.gateway.is_ipv4() { "-4" } else { "-6" };
    if req.default_route {
        let out = run_in_netns(ns, "ip", &[family, "-j", "route", "show", "default"])?;
        let routes = parse(&out, "ip -j route show default", parse_default_routes)?;
        let ok = routes
            .iter()
            .any(|r| r.gateway == Some(req.gateway) && r.dev.as_deref() == Some(ifname));
        if !ok {
            return Err(Discrepancy::DefaultRouteMissing {
                gateway: req.gateway,
                ifname: ifname.to_string(),
            });
        }
    }
    if !req.routes.is_empty() {
        let out = run_in_netns(ns, "ip", &[family, "-j", "route", "show", "dev", ifname])?;
        let have = parse(&out, "ip -j route show dev", parse_routes)?;
        for (dst, via) in &req.routes {
            // `ip route show dev X` leaves `dev` out of each entry.
            let ok = have.iter().any(|r| {
                r.dst == Some(dst.trunc())
                    && r.gateway == Some(*via)
                    && r.dev.as_deref().is_none_or(|d| d == ifname)
            });
            if !ok {
                return Err(Discrepancy::RouteMissing {
                    dst: *dst,
                    via: *via,
                    ifname: ifname.to_string(),
                    netns: req.netns_path.clone(),
                });
            }
        }
    }
    let want_on = tx_checksum_wanted_for(req);
    let pod_on = !tx_checksum_off(&run_in_netns(ns, "ethtool", &["-k", ifname])?);
    if pod_on != want_on {
        return Err(Discrepancy::TxOffload {
            ifname: ifname.to_string(),
            place: "pod",
            on: pod_on,
        });
    }
    let host_on = !tx_checksum_off(&on_host("ethtool", &["-k", &req.host_ifname])?);
    if host_on != want_on {
        return Err(Discrepancy::TxOffload {
            ifname: req.host_ifname.clone(),
            place: "host",
            on: host_on,
        });
    }
    // OVS port (none in the `dpu-host` mode: the DPU's agent binds the other end).
    if req.bridge.is_empty() {
        return Ok(());
    }
    let db = ovs_db_arg(&req.ovs_db);
    let found = match run("ovs-vsctl", &[&db, "port-to-br", &req.host_ifname]) {
        Ok(out) => Some(out.trim().to_string()),
        Err(e) if e.stderr_says(&["no port named"]) => None,
        Err(e) => return Err(e.into()),
    };
    if found.as_deref() != Some(req.bridge.as_str()) {
        return Err(Discrepancy::OvsPortMissing {
            port: req.host_ifname.clone(),
            bridge: req.bridge.clone(),
            found,
        });
    }
    let got = ovs_string(&run(
        "ovs-vsctl",
        &[
            &db,
            "--if-exists",
            "get",
            "Interface",
            &req.host_ifname,
            "external_ids:iface-id",
        ],
    )?);
    if got != req.iface_id {
        return Err(Discrepancy::IfaceIdMismatch {
            port: req.host_ifname.clone(),
            want: req.iface_id.clone(),
            got,
        });
    }
    Ok(())
}

fn parse<T>(
    out: &str,
    command: &str,
    f: impl Fn(&str) -> Result<T, String>,
) -> Result<T, Discrepancy> {
    f(out).map_err(|detail| Discrepancy::Output {
        command: command.to_string(),
        detail,
    })
}
