//! The node's share of the cluster DNS: `ferry-dns` answering in every VPC the node has a
//! probe port in, on that port's address (port 53), so a query's VPC is the namespace it
//! arrived in. The controller puts the cluster DNS address (e.g. 10.96.0.10) in every VPC
//! as a load balancer whose backends are these addresses. In the lab the agent also writes
//! each workload's `resolv.conf` (`/etc/netns/NETNS/resolv.conf`, which `ip netns exec`
//! mounts), as the kubelet writes a pod's.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_dns::{Upstreams, VpcListener, Zones};
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the node serves DNS.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The cluster DNS address clients are given (a VIP in every VPC).
    pub cluster_ip: Ipv4Addr,
    /// `cluster.local` unless told otherwise.
    pub domain: String,
    /// Where names outside the cluster domain go (`--dns-upstream`); none: REFUSED.
    pub upstreams: Vec<String>,
}

/// Errors starting the node's DNS.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("--dns-upstream: {0}")]
    Upstream(String),
    #[error("entering network namespace {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("listening on {addr} in {vpc}: {source}")]
    Bind {
        vpc: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The running resolver: the zones fed from the API, one server task per VPC.
pub struct NodeDns {
    zones: watch::Receiver<Arc<Zones>>,
    upstreams: Upstreams,
    feed: JoinHandle<()>,
    servers: BTreeMap<String, JoinHandle<()>>,
}

impl NodeDns {
    /// Starts the feed (Services, EndpointSlices, YusurServices from the API).
    pub fn start(client: Client, cfg: &DnsConfig) -> Result<NodeDns, DnsError> {
        let upstreams =
            Upstreams::from_flags(&cfg.upstreams).map_err(|e| DnsError::Upstream(e.to_string()))?;
        let (tx, zones) = watch::channel(Arc::new(Zones::empty(&cfg.domain)));
        let domain = cfg.domain.clone();
        let feed = tokio::spawn(async move {
            if let Err(e) = ferry_dns::run_feed(client, domain, tx).await {
                tracing::warn!(error = %e, "the DNS feed stopped");
            }
        });
        Ok(NodeDns {
            zones,
            upstreams,
            feed,
            servers: BTreeMap::new(),
        })
    }

    /// Whether `vpc` is served.
    pub fn serves(&self, vpc: &str) -> bool {
        self.servers.contains_key(vpc)
    }

    /// Answers `vpc`'s queries on `ip`:53 inside the namespace at `netns`.
    pub async fn serve_vpc(
        &mut self,
        vpc: &str,
        netns: &Path,
        ip: Ipv4Addr,
    ) -> Result<(), DnsError> {
        let (path, name, addr) = (
            netns.to_path_buf(),
            vpc.to_string(),
            SocketAddr::from((ip, 53)),
        );
        let listener = tokio::task::spawn_blocking(move || bind_in(&path, &name, addr))
            .await
            .map_err(|e| DnsError::Upstream(e.to_string()))??;
        let (zones, upstreams) = (self.zones.clone(), self.upstreams.clone());
        let v = vpc.to_string();
        let task = tokio::spawn(async move {
            if let Err(e) = ferry_dns::serve(vec![listener], zones, upstreams).await {
                tracing::warn!(vpc = %v, error = %e, "DNS server stopped");
            }
        });
        if let Some(old) = self.servers.insert(vpc.to_string(), task) {
            old.abort();
        }
        tracing::info!(vpc, %addr, "serving cluster DNS");
        Ok(())
    }

    /// Stops serving `vpc` (its probe port went away).
    pub fn stop_vpc(&mut self, vpc: &str) {
        if let Some(t) = self.servers.remove(vpc) {
            t.abort();
        }
    }

    /// Stops everything.
    pub fn stop(self) {
        self.feed.abort();
        for t in self.servers.into_values() {
            t.abort();
        }
    }
}

/// Binds the VPC's listener on a thread that entered `netns` (sockets stay in the
/// namespace they were made in).
fn bind_in(netns: &Path, vpc: &str, addr: SocketAddr) -> Result<VpcListener, DnsError> {
    let (netns, vpc_name) = (netns.to_path_buf(), vpc.to_string());
    std::thread::spawn(move || {
        let f = std::fs::File::open(&netns).map_err(|e| DnsError::Enter {
            path: netns.clone(),
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::ENOENT)),
        })?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
            DnsError::Enter {
                path: netns.clone(),
                source,
            }
        })?;
        let l = VpcListener::bind(&vpc_name, addr).map_err(|source| DnsError::Bind {
            vpc: vpc_name.clone(),
            addr,
            source,
        })?;
        // Tokio needs them non-blocking.
        l.udp.set_nonblocking(true).ok();
        l.tcp.set_nonblocking(true).ok();
        Ok(l)
    })
    .join()
    .unwrap_or_else(|_| {
        Err(DnsError::Upstream(format!(
            "the thread binding DNS in {vpc} panicked"
        )))
    })
}

/// The `resolv.conf` of a workload in `namespace` (none: a node or host), as the kubelet
/// writes a pod's with `dnsPolicy: ClusterFirst`.
pub fn resolv_conf(cfg: &DnsConfig, namespace: Option<&str>) -> String {
    let d = &cfg.domain;
    let search = match namespace {
        Some(ns) => format!("{ns}.svc.{d} svc.{d} {d}"),
        None => format!("svc.{d} {d}"),
    };
    format!(
        "# written by ferry agent: the cluster DNS\nnameserver {}\nsearch {search}\noptions ndots:5\n",
        cfg.cluster_ip
    )
}

/// Where `ip netns exec NETNS` finds the namespace's own `resolv.conf`.
pub fn resolv_conf_path(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns).join("resolv.conf")
}

/// Writes the namespace's `resolv.conf`.
pub fn write_resolv_conf(netns: &str, content: &str) -> std::io::Result<()> {
    let p = resolv_conf_path(netns);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(p, content)
}

/// Removes the namespace's `resolv.conf` (and its directory, when empty).
pub fn remove_resolv_conf(netns: &str) {
    let p = resolv_conf_path(netns);
    let _ = std::fs::remove_file(&p);
    if let Some(dir) = p.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_resolv_conf_searches_its_namespace_first() {
        let cfg = DnsConfig {
            cluster_ip: "10.96.0.10".parse().unwrap(),
            domain: "cluster.local".into(),
            upstreams: vec![],
        };
        assert_eq!(
            resolv_conf(&cfg, Some("t1")),
            "# written by ferry agent: the cluster DNS\nnameserver 10.96.0.10\n\
             search t1.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        assert!(resolv_conf(&cfg, None).contains("search svc.cluster.local cluster.local\n"));
        assert_eq!(
            resolv_conf_path("ferry-web"),
            Path::new("/etc/netns/ferry-web/resolv.conf")
        );
    }
}
