//! [`add`] and [`del`]: the veth pair, the container end's configuration, the OVS port.

use std::path::Path;

use super::link_state::{parse_link, tx_checksum_wanted};
use super::{PlumbError, PlumbRequest, UnplumbRequest, peer_tmp_ifname};
use crate::command::{CommandError, run, run_in_netns};

/// Runs a command where the host end lives: the OVS namespace, or the caller's.
fn on_host(ovs_netns: Option<&Path>, program: &str, args: &[&str]) -> Result<String, CommandError> {
    match ovs_netns {
        Some(ns) => run_in_netns(ns, program, args),
        None => run(program, args),
    }
}
use crate::mac_addr::MacAddr;

/// What [`add`] learned while plumbing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddOutcome {
    /// The kernel-chosen MAC of the host end (reported in the CNI result).
    pub host_mac: Option<MacAddr>,
}

/// stderr of `ip` when a link is not there.
const NO_DEVICE: &[&str] = &["Cannot find device", "does not exist"];

/// Plumbs one pod interface. A leftover host end from an earlier, failed attempt is
/// removed first; if any step fails, what this call created is removed again, so a failed
/// ADD leaves nothing behind.
pub fn add(req: &PlumbRequest) -> Result<AddOutcome, PlumbError> {
    if !req.netns_path.exists() {
        return Err(PlumbError::NetnsMissing {
            path: req.netns_path.clone(),
        });
    }
    delete_link(
        req.ovs_netns.as_deref(),
        &req.host_ifname,
        "remove a stale host end",
    )?;
    // The temporary name is derived from the host name's hash, so a crashed attempt's
    // peer is removed with the host end above (deleting one end deletes both).
    let tmp = peer_tmp_ifname_for(req);
    step(
        "create the veth pair",
        run(
            "ip",
            &[
                "link",
                "add",
                &req.host_ifname,
                "type",
                "veth",
                "peer",
                "name",
                &tmp,
            ],
        ),
    )?;
    match configure(req, &tmp) {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            tracing::warn!(host_ifname = %req.host_ifname, error = %e, "add failed; rolling back");
            // Best effort: the original error is what the caller must see.
            if !req.bridge.is_empty() {
                let _ = ovs_del_port(&req.ovs_db, &req.bridge, &req.host_ifname);
            }
            let _ = delete_link(
                req.ovs_netns.as_deref(),
                &req.host_ifname,
                "roll back the host end",
            );
            let _ = delete_link(None, &req.host_ifname, "roll back the host end");
            Err(e)
        }
    }
}

/// What [`ensure`] did.
#[derive(Debug)]
pub enum Ensured {
    /// The interface already matched the request and was left alone.
    Kept,
    /// It was (re)made.
    Plumbed(AddOutcome),
}

/// Makes the pod interface match `req`: left as it is when [`super::check`] finds nothing
/// to fix (an agent restarted while its pods run adopts their interfaces, and their
/// traffic never stops), else removed, OVS port included, and added again.
///
/// Removing the OVS port matters with the userspace datapath: [`add`] alone replaces a
/// stale veth but keeps the port's row (`--may-exist add-port`), and `ovs-vswitchd` kept
/// reading the deleted device, so the new veth under the same name carried nothing (issue
/// 15: after the lab agent's `kill -9` every pod and probe port of its node was cut off
/// until `ovs-vswitchd` restarted).
pub fn ensure(req: &PlumbRequest) -> Result<Ensured, PlumbError> {
    match super::check(req) {
        Ok(()) => Ok(Ensured::Kept),
        Err(reason) => {
            tracing::debug!(host_ifname = %req.host_ifname, %reason, "plumbing");
            del(&req.unplumb())?;
            add(req).map(Ensured::Plumbed)
        }
    }
}

fn peer_tmp_ifname_for(req: &PlumbRequest) -> String {
    // host_ifname is "fy" + hash; the peer is "fz" + the same hash.
    match req.host_ifname.strip_prefix("fy") {
        Some(hash) => format!("fz{hash}"),
        None => peer_tmp_ifname(&req.host_ifname, &req.ifname),
    }
}

fn configure(req: &PlumbRequest, tmp: &str) -> Result<AddOutcome, PlumbError> {
    let ns = req.netns_path.as_path();
    let netns = ns.display().to_string();
    let mac = req.mac.to_string();
    let cidr = req.ip_cidr.to_string();
    let gw = req.gateway.to_string();
    let ifname = req.ifname.as_str();
    step(
        "move the container end into the namespace",
        run("ip", &["link", "set", tmp, "netns", &netns]),
    )?;
    let in_ns = |what: &'static str, args: &[&str]| step(what, run_in_netns(ns, "ip", args));
    in_ns(
        "rename the container end",
        &["link", "set", tmp, "name", ifname],
    )?;
    in_ns(
        "set the container MAC",
        &["link", "set", ifname, "address", &mac],
    )?;
    in_ns(
        "add the container address",
        &["addr", "replace", &cidr, "dev", ifname],
    )?;
    in_ns("bring the container end up", &["link", "set", ifname, "up"])?;
    in_ns("bring lo up", &["link", "set", "lo", "up"])?;
    if req.default_route {
        in_ns(
            "add the default route",
            &["route", "replace", "default", "via", &gw, "dev", ifname],
        )?;
    }
    for (dst, via) in &req.routes {
        in_ns(
            "add a route through the interface",
            &[
                "route",
                "replace",
                &dst.to_string(),
                "via",
                &via.to_string(),
                "dev",
                ifname,
            ],
        )?;
    }
    // The userspace datapath without TSO does not fill in checksums the kernel left to
    // the NIC, so TCP only works with transmit checksum offload off on both ends (ovn.md);
    // with userspace TSO (or the kernel datapath) offload stays on, as the veth comes.
    let tx = if tx_checksum_wanted_for(req) {
        "on"
    } else {
        "off"
    };
    step(
        "set tx checksum offload in the container",
        run_in_netns(ns, "ethtool", &["-K", ifname, "tx", tx]),
    )?;
    let host_ns = req.ovs_netns.as_deref();
    if let Some(ovs_ns) = host_ns {
        let ovs_ns = ovs_ns.display().to_string();
        step(
            "move the host end into the OVS namespace",
            run("ip", &["link", "set", &req.host_ifname, "netns", &ovs_ns]),
        )?;
    }
    step(
        "bring the host end up",
        on_host(host_ns, "ip", &["link", "set", &req.host_ifname, "up"]),
    )?;
    step(
        "set tx checksum offload on the host end",
        on_host(host_ns, "ethtool", &["-K", &req.host_ifname, "tx", tx]),
    )?;
    let host_mac = link_mac(host_ns, &req.host_ifname)?;
    // An empty bridge: the `dpu-host` mode, whose DPU binds the other end (crate::dpu).
    if !req.bridge.is_empty() {
        ovs_add_port(req)?;
    }
    Ok(AddOutcome { host_mac })
}

/// Removes what [`add`] created. Already-missing pieces (namespace, link, OVS port) are
/// success, so DEL can be repeated.
pub fn del(req: &UnplumbRequest) -> Result<(), PlumbError> {
    if !req.bridge.is_empty() {
        step(
            "remove the OVS port",
            ovs_del_port(&req.ovs_db, &req.bridge, &req.host_ifname),
        )?;
    }
    delete_link(
        req.ovs_netns.as_deref(),
        &req.host_ifname,
        "remove the host end",
    )?;
    // Deleting the host end removed the container end too. If only the container end
    // survived (host end deleted by hand), remove it, but only if it is a veth: the
    // name alone could belong to someone else.
    if let Some(ns) = req.netns_path.as_deref().filter(|p| p.exists()) {
        let shown = run_in_netns(ns, "ip", &["-j", "-d", "link", "show", "dev", &req.ifname]);
        if let Ok(out) = shown
            && let Ok(Some(link)) = parse_link(&out)
            && link.kind.as_deref() == Some("veth")
        {
            let r = run_in_netns(ns, "ip", &["link", "del", &req.ifname]);
            ignore_missing("remove the container end", r)?;
        }
    }
    Ok(())
}

fn delete_link(host_ns: Option<&Path>, name: &str, what: &'static str) -> Result<(), PlumbError> {
    if host_ns.is_some_and(|ns| !ns.exists()) {
        return Ok(());
    }
    ignore_missing(what, on_host(host_ns, "ip", &["link", "del", name]))
}

fn ignore_missing(
    step_name: &'static str,
    r: Result<String, CommandError>,
) -> Result<(), PlumbError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.stderr_says(NO_DEVICE) => Ok(()),
        Err(source) => Err(PlumbError::Command {
            step: step_name,
            source,
        }),
    }
}

fn link_mac(host_ns: Option<&Path>, name: &str) -> Result<Option<MacAddr>, PlumbError> {
    let out = step(
        "read the host end",
        on_host(host_ns, "ip", &["-j", "-d", "link", "show", "dev", name]),
    )?;
    let link = parse_link(&out).map_err(|detail| PlumbError::Output {
        step: "read the host end",
        command: format!("ip -j -d link show dev {name}"),
        detail,
    })?;
    Ok(link.and_then(|l| l.mac))
}

/// Whether the veth keeps transmit checksum offload on the bridge `req` names
/// ([`tx_checksum_wanted`] over what OVS reports); off if OVS cannot be asked, and off
/// without asking when there is no bridge (`dpu-host`: OVS is on the DPU; the kernel
/// filling in checksums itself is right for every datapath).
pub(super) fn tx_checksum_wanted_for(req: &PlumbRequest) -> bool {
    if req.bridge.is_empty() {
        return false;
    }
    let db = ovs_db_arg(&req.ovs_db);
    let out = run(
        "ovs-vsctl",
        &[
            db.as_str(),
            "--timeout=30",
            "get",
            "Bridge",
            &req.bridge,
            "datapath_type",
            "--",
            "get",
            "Open_vSwitch",
            ".",
            "other_config",
        ],
    );
    match out {
        Ok(out) => {
            let mut lines = out.lines();
            let dp = lines.next().unwrap_or_default();
            let oc = lines.next().unwrap_or_default();
            tx_checksum_wanted(dp, oc, &req.port_type)
        }
        Err(e) => {
            tracing::warn!(bridge = %req.bridge, error = %e, "cannot read the OVS datapath; tx checksum offload off");
            false
        }
    }
}

pub(super) fn ovs_db_arg(db: &Path) -> String {
    format!("--db=unix:{}", db.display())
}

fn ovs_add_port(req: &PlumbRequest) -> Result<(), PlumbError> {
    let db = ovs_db_arg(&req.ovs_db);
    let iface_id = format!("external_ids:iface-id={}", quote_ovs(&req.iface_id));
    let attached_mac = format!("external_ids:attached-mac=\"{}\"", req.mac);
    let mut args = vec![
        db.as_str(),
        "--timeout=30",
        "--",
        "--may-exist",
        "add-port",
        &req.bridge,
        &req.host_ifname,
        "--",
        "set",
        "Interface",
        &req.host_ifname,
        &iface_id,
        &attached_mac,
    ];
    let port_type = format!("type={}", req.port_type);
    if !req.port_type.is_empty() {
        args.push(&port_type);
    }
    step(
        "add the host end to the OVS bridge",
        run("ovs-vsctl", &args),
    )
    .map(|_| ())
}

fn ovs_del_port(db: &Path, bridge: &str, port: &str) -> Result<String, CommandError> {
    run(
        "ovs-vsctl",
        &[
            &ovs_db_arg(db),
            "--timeout=30",
            "--if-exists",
            "del-port",
            bridge,
            port,
        ],
    )
}

/// An OVSDB string literal for `ovs-vsctl set` (always quoted, so names with `.` or `/`
/// survive).
fn quote_ovs(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn step(what: &'static str, r: Result<String, CommandError>) -> Result<String, PlumbError> {
    r.map_err(|source| PlumbError::Command { step: what, source })
}
