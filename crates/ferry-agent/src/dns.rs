//! The node's share of the cluster DNS: `ferry-dns` answering in every VPC the node has a
//! probe port in, on that port's address (port 53), so a query's VPC is the namespace it
//! arrived in. The controller puts the cluster DNS address (e.g. 10.96.0.10) in every VPC
//! as a load balancer whose backends are these addresses. In the lab the agent also writes
//! each workload's `resolv.conf` (`/etc/netns/NETNS/resolv.conf`, which `ip netns exec`
//! mounts), as the kubelet writes a pod's.
//!
//! Where it runs: inside the agent (`ferry agent`, [`DnsConfig::in_agent`]), or as a
//! process of its own, `ferry dns --node NODE` ([`run_standalone`]), so a restarting agent
//! (a crash, `kill -9`) does not take the node's DNS down with it: the lab's role
//! supervisor runs it as the role `dns-NODE`, the DaemonSet as the container `dns`. It
//! needs only the Node's probe-port annotations and the probe namespaces the agent
//! plumbed (`fp-NODE-VPC`, which a restarted agent keeps), and binds again when a
//! namespace is made anew.

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
    /// The agent answers queries itself; false: `ferry dns` does (another process or
    /// container), and the agent only writes workloads' `resolv.conf`.
    pub in_agent: bool,
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

/// The network namespace of a node's probe port in `vpc` (made by the agent).
pub fn probe_netns(node: &str, vpc: &str) -> String {
    format!("fp-{node}-{vpc}")
}

/// Where a VPC's server listens: the probe port's address in its namespace, which is
/// known by its inode (a namespace made anew under the same name needs a new socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedAt {
    pub ip: Ipv4Addr,
    pub netns_ino: u64,
}

/// Which VPCs to (re)start and which to stop, from what is served and what should be.
pub fn plan_servers(
    served: &BTreeMap<String, ServedAt>,
    want: &BTreeMap<String, ServedAt>,
) -> (Vec<String>, Vec<String>) {
    let start = want
        .iter()
        .filter(|(vpc, at)| served.get(*vpc) != Some(at))
        .map(|(vpc, _)| vpc.clone())
        .collect();
    let stop = served
        .keys()
        .filter(|vpc| !want.contains_key(*vpc))
        .cloned()
        .collect();
    (start, stop)
}

/// How long `ferry dns` waits for a probe port to be plumbed before binding failures are
/// warnings.
const STANDALONE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// How often `ferry dns` looks at the Node's probe ports and namespaces.
const STANDALONE_TICK: std::time::Duration = std::time::Duration::from_millis(500);

/// `ferry dns --node NODE`: serves the node's share of the cluster DNS until `shutdown`,
/// in every VPC whose probe port the Node's annotations list and whose probe namespace
/// exists.
pub async fn run_standalone(
    client: Client,
    node: &str,
    cfg: &DnsConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DnsError> {
    use futures::StreamExt;
    use kube::ResourceExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let mut dns = NodeDns::start(client.clone(), cfg)?;
    let (nodes, writer) = reflector::store::<k8s_openapi::api::core::v1::Node>();
    let stream = reflector::reflector(
        writer,
        crate::watch_restart::restartable(
            kube::Api::all(client),
            watcher::Config::default().fields(&format!("metadata.name={node}")),
        ),
    )
    .backoff(ferry_api::WatchBackoff::default());
    let feed = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    let mut served: BTreeMap<String, ServedAt> = BTreeMap::new();
    // Binding fails until the agent has plumbed the probe port (no address yet): only a
    // failure that lasts is worth a warning.
    let mut failing: BTreeMap<String, std::time::Instant> = BTreeMap::new();
    let mut tick = tokio::time::interval(STANDALONE_TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        let Some(me) = nodes.get(&reflector::ObjectRef::new(node)) else {
            continue;
        };
        let want: BTreeMap<String, ServedAt> = ferry_api::probe_ports(me.annotations())
            .iter()
            .filter_map(|(vpc, p)| {
                let ip = p.address(vpc)?.ip;
                let path = crate::netns_admin::netns_path(&probe_netns(node, vpc));
                let netns_ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).ok()?);
                Some((vpc.clone(), ServedAt { ip, netns_ino }))
            })
            .collect();
        let (start, stop) = plan_servers(&served, &want);
        for vpc in stop {
            dns.stop_vpc(&vpc);
            served.remove(&vpc);
            tracing::info!(vpc, "no longer serving the cluster DNS (probe port gone)");
        }
        for vpc in start {
            let Some(at) = want.get(&vpc).copied() else {
                continue;
            };
            let path = crate::netns_admin::netns_path(&probe_netns(node, &vpc));
            match dns.serve_vpc(&vpc, &path, at.ip).await {
                Ok(()) => {
                    failing.remove(&vpc);
                    served.insert(vpc, at);
                }
                Err(e) => {
                    let since = *failing
                        .entry(vpc.clone())
                        .or_insert_with(std::time::Instant::now);
                    if since.elapsed() > STANDALONE_PATIENCE {
                        tracing::warn!(vpc, error = %e, "serving the cluster DNS failed; will retry")
                    } else {
                        tracing::debug!(vpc, error = %e, "the probe port is not ready; will retry")
                    }
                }
            }
        }
    }
    feed.abort();
    dns.stop();
    Ok(())
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
            in_agent: true,
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

    #[test]
    fn servers_follow_the_probe_ports_and_their_namespaces() {
        let at = |last: u8, ino: u64| ServedAt {
            ip: Ipv4Addr::new(10, 0, 0, last),
            netns_ino: ino,
        };
        let m = |v: &[(&str, ServedAt)]| -> BTreeMap<String, ServedAt> {
            v.iter().map(|(k, a)| (k.to_string(), *a)).collect()
        };
        let s = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };
        let cases = [
            (
                "nothing yet",
                m(&[]),
                m(&[("a", at(1, 5))]),
                (s(&["a"]), s(&[])),
            ),
            (
                "unchanged",
                m(&[("a", at(1, 5))]),
                m(&[("a", at(1, 5))]),
                (s(&[]), s(&[])),
            ),
            (
                "namespace made anew: bind again",
                m(&[("a", at(1, 5))]),
                m(&[("a", at(1, 6))]),
                (s(&["a"]), s(&[])),
            ),
            (
                "address moved: bind again",
                m(&[("a", at(1, 5))]),
                m(&[("a", at(2, 5))]),
                (s(&["a"]), s(&[])),
            ),
            (
                "probe port gone: stop",
                m(&[("a", at(1, 5)), ("b", at(3, 7))]),
                m(&[("b", at(3, 7))]),
                (s(&[]), s(&["a"])),
            ),
        ];
        for (name, served, want, expect) in cases {
            assert_eq!(plan_servers(&served, &want), expect, "{name}");
        }
        assert_eq!(probe_netns("node1", "vpc1"), "fp-node1-vpc1");
    }
}
