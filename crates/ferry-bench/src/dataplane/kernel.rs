//! The kernel paths: a client namespace and a backend namespace joined through a router
//! namespace (the "node") by two veth pairs, default offloads. `direct` has nothing else;
//! `iptables` and `nftables` get kube-proxy's rules for the catalogue in the router, where
//! kube-proxy would put them (PREROUTING of the node that forwards pod traffic).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::services::Catalogue;
use super::tools::{Backend, in_netns, ip, run_ok};
use super::{iptables, nftables};
use crate::error::{Error, Result};

/// The pod range of the kernel paths (no masquerade from inside it).
pub const CLUSTER_CIDR: &str = "10.240.0.0/12";

/// Which rules the router holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    None,
    Iptables,
    Nftables,
}

/// Namespaces we created; deleted (with the veths inside them) on drop.
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates a namespace (failing if it exists: we never adopt one) and records it.
    pub fn add(&mut self, name: &str) -> Result<()> {
        if Path::new("/run/netns").join(name).exists() {
            return Err(Error::Invalid {
                option: "namespace prefix",
                reason: format!("namespace {name} already exists"),
            });
        }
        ip(&["netns", "add", name])?;
        self.names.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Deletes every recorded namespace; names those that could not be deleted.
    pub fn delete_all(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        for n in std::mem::take(&mut self.names).into_iter().rev() {
            if Path::new("/run/netns").join(&n).exists()
                && let Err(e) = ip(&["netns", "del", &n])
            {
                left.push(format!("namespace {n}: {e}"));
            }
        }
        left
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for e in self.delete_all() {
            tracing::error!(error = e, "cleanup");
        }
    }
}

/// Sysctls for the client and backend namespaces of every path (kernel and OVN alike):
/// room for many short connections.
pub fn tune_endpoint(ns: &str) -> Result<()> {
    run_ok(&mut in_netns(
        ns,
        &[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_local_port_range=1024 65000",
            "net.ipv4.tcp_tw_reuse=1",
            "net.core.somaxconn=4096",
            "net.ipv4.tcp_max_syn_backlog=4096",
        ],
    ))?;
    Ok(())
}

/// One kernel path, up and serving.
#[derive(Debug)]
pub struct KernelPath {
    pub client_ns: String,
    /// Where the client sends traffic: the backend, or the measured service's cluster IP.
    pub target: Ipv4Addr,
    /// Seconds to install the rules (`None` for `direct`).
    pub program_s: Option<f64>,
    /// What was installed, for the report.
    pub detail: String,
    pub backend: Option<Backend>,
}

/// Addresses of path number `index` (0, 1, 2): `10.(240+index).{1,2}.0/24`.
pub fn subnets(index: u8) -> (Ipv4Addr, Ipv4Addr, Ipv4Addr, Ipv4Addr) {
    let b = 240 + index;
    (
        Ipv4Addr::new(10, b, 1, 2), // client
        Ipv4Addr::new(10, b, 1, 1), // router, client side
        Ipv4Addr::new(10, b, 2, 1), // router, backend side
        Ipv4Addr::new(10, b, 2, 2), // backend
    )
}

impl KernelPath {
    /// Builds the namespaces `PREFIX-{c,r,b}` (recorded in `nss`), starts the servers with
    /// their files under `dir`, and installs `rules` for `catalogue` (timed).
    pub fn create(
        nss: &mut Namespaces,
        prefix: &str,
        index: u8,
        rules: Rules,
        catalogue: &Catalogue,
        iptables_restore: &str,
        dir: &Path,
    ) -> Result<KernelPath> {
        let (client_ip, rc_ip, rb_ip, backend_ip) = subnets(index);
        let (c, r, b) = (
            format!("{prefix}c"),
            format!("{prefix}r"),
            format!("{prefix}b"),
        );
        for n in [&c, &r, &b] {
            nss.add(n)?;
        }
        ip(&[
            "-n", &r, "link", "add", "to-c", "type", "veth", "peer", "name", "eth0", "netns", &c,
        ])?;
        ip(&[
            "-n", &r, "link", "add", "to-b", "type", "veth", "peer", "name", "eth0", "netns", &b,
        ])?;
        ip(&[
            "-n",
            &r,
            "addr",
            "add",
            &format!("{rc_ip}/24"),
            "dev",
            "to-c",
        ])?;
        ip(&[
            "-n",
            &r,
            "addr",
            "add",
            &format!("{rb_ip}/24"),
            "dev",
            "to-b",
        ])?;
        ip(&[
            "-n",
            &c,
            "addr",
            "add",
            &format!("{client_ip}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            &b,
            "addr",
            "add",
            &format!("{backend_ip}/24"),
            "dev",
            "eth0",
        ])?;
        for (ns, dev) in [(&r, "to-c"), (&r, "to-b"), (&c, "eth0"), (&b, "eth0")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        ip(&[
            "-n",
            &c,
            "route",
            "add",
            "default",
            "via",
            &rc_ip.to_string(),
        ])?;
        ip(&[
            "-n",
            &b,
            "route",
            "add",
            "default",
            "via",
            &rb_ip.to_string(),
        ])?;
        run_ok(&mut in_netns(
            &r,
            &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        ))?;
        tune_endpoint(&c)?;
        tune_endpoint(&b)?;
        let backend = Backend::start(&b, &dir.join(format!("{prefix}b")))?;

        let measured = catalogue.measured().cluster_ip;
        let (target, program_s, detail) =
            match rules {
                Rules::None => (
                    backend_ip,
                    None,
                    "kernel routing through a router namespace".to_owned(),
                ),
                Rules::Iptables => {
                    let text = iptables::restore_input(catalogue, CLUSTER_CIDR);
                    let file = dir.join(format!("{prefix}iptables.rules"));
                    std::fs::write(&file, &text).map_err(|e| Error::io("write", &file, e))?;
                    let t0 = Instant::now();
                    run_ok(in_netns(&r, &[iptables_restore, "--noflush"]).stdin(
                        std::fs::File::open(&file).map_err(|e| Error::io("open", &file, e))?,
                    ))?;
                    let s = t0.elapsed().as_secs_f64();
                    let rules = text.lines().filter(|l| l.starts_with("-A ")).count();
                    (
                        measured,
                        Some(s),
                        format!(
                            "{iptables_restore} ({}): {} service ports, {rules} rules",
                            iptables_flavour(iptables_restore),
                            catalogue.service_ports()
                        ),
                    )
                }
                Rules::Nftables => {
                    let text = nftables::script(catalogue, CLUSTER_CIDR);
                    let file = dir.join(format!("{prefix}kube-proxy.nft"));
                    std::fs::write(&file, &text).map_err(|e| Error::io("write", &file, e))?;
                    let t0 = Instant::now();
                    run_ok(&mut in_netns(
                        &r,
                        &["nft", "-f", &file.display().to_string()],
                    ))?;
                    let s = t0.elapsed().as_secs_f64();
                    (
                        measured,
                        Some(s),
                        format!(
                            "nft -f: {} service ports in one verdict map",
                            catalogue.service_ports()
                        ),
                    )
                }
            };
        Ok(KernelPath {
            client_ns: c,
            target,
            program_s,
            detail,
            backend: Some(backend),
        })
    }
}

/// `nf_tables` or `legacy`, from `iptables-restore --version`.
fn iptables_flavour(bin: &str) -> String {
    run_ok(Command::new(bin).arg("--version"))
        .ok()
        .and_then(|v| {
            let (_, rest) = v.split_once('(')?;
            Some(rest.split(')').next()?.to_owned())
        })
        .unwrap_or_else(|| "legacy".into())
}
