//! Workload addresses: which pod, VMI, BareMetal host, VNicIP, node interface and node
//! probe port gets which address, decided purely from what is held and what is asked
//! ([`plan`]); then written to the API by [`write`], one object at a time.
//!
//! An address handed out is remembered in [`Pending`] until the caches show it, so a lagging
//! cache never leads to it being handed out twice; a write that fails forgets it again, and
//! the caller retries that holder with backoff (see `retry`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ferry_api::{ProbePort, WorkloadAddress};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::ipam::{self, IpamError, Pool};
use crate::world::SubnetInfo;

/// What holds or wants an address; also the key under which a pending address is kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Holder {
    Pod {
        namespace: String,
        name: String,
    },
    Vmi {
        namespace: String,
        name: String,
    },
    BareMetal {
        namespace: String,
        name: String,
    },
    VNicIP {
        namespace: String,
        name: String,
    },
    /// A node's interface on the join subnet.
    Node(String),
    /// A node's probe port in a VPC.
    ProbePort {
        node: String,
        vpc: String,
    },
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Pod { namespace, name } => write!(f, "pod {namespace}/{name}"),
            Holder::Vmi { namespace, name } => write!(f, "vmi {namespace}/{name}"),
            Holder::BareMetal { namespace, name } => write!(f, "baremetal {namespace}/{name}"),
            Holder::VNicIP { namespace, name } => write!(f, "vnicip {namespace}/{name}"),
            Holder::Node(n) => write!(f, "node {n}"),
            Holder::ProbePort { node, vpc } => write!(f, "probe port of node {node} in {vpc}"),
        }
    }
}

/// An address in use, as the caches show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub subnet: String,
    pub ip: Ipv4Addr,
    pub holder: Holder,
}

/// Something that lacks an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub holder: Holder,
    pub subnet: String,
    /// An address the user chose (a pod's annotation, a host's spec).
    pub preset_ip: Option<Ipv4Addr>,
    pub preset_mac: Option<String>,
}

/// An address decided for a holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub holder: Holder,
    pub subnet: SubnetInfo,
    pub ip: Ipv4Addr,
    pub mac: String,
}

impl Assignment {
    /// The address as the workload's annotations carry it.
    pub fn address(&self) -> WorkloadAddress {
        let cidr = self
            .subnet
            .cidr
            .parse()
            .unwrap_or_else(|_| ipnet::Ipv4Net::new(self.ip, 32).unwrap_or_default());
        let with_subnet = !matches!(self.holder, Holder::Node(_));
        WorkloadAddress {
            ip: self.ip,
            mac: self.mac.clone(),
            subnet: with_subnet.then(|| self.subnet.name.clone()),
            vpc: with_subnet.then(|| self.subnet.vpc.clone()),
            gateway: self.subnet.gateway_or_default(),
            cidr,
        }
    }
}

/// Why a holder got no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("subnet {0} does not exist")]
    UnknownSubnet(String),
    #[error("{ip} is outside subnet {subnet} ({cidr})")]
    OutsideSubnet {
        ip: Ipv4Addr,
        subnet: String,
        cidr: String,
    },
    #[error("{ip} in subnet {subnet} is already used by {by}")]
    InUse {
        ip: Ipv4Addr,
        subnet: String,
        by: Holder,
    },
    #[error("subnet {subnet}: {source}")]
    Pool { subnet: String, source: IpamError },
}

/// Addresses handed out but not yet seen in the caches, by subnet.
#[derive(Debug, Default)]
pub struct Pending {
    by_subnet: HashMap<String, HashMap<Holder, Ipv4Addr>>,
}

impl Pending {
    /// Forgets what the caches now show (`held`).
    pub fn forget_seen(&mut self, held: &[Held]) {
        let seen: BTreeSet<&Holder> = held.iter().map(|h| &h.holder).collect();
        for map in self.by_subnet.values_mut() {
            map.retain(|h, _| !seen.contains(h));
        }
    }

    /// Forgets `holder`'s address (its write failed: it is asked again).
    pub fn forget(&mut self, holder: &Holder) {
        for map in self.by_subnet.values_mut() {
            map.remove(holder);
        }
    }

    fn contains(&self, holder: &Holder) -> bool {
        self.by_subnet.values().any(|m| m.contains_key(holder))
    }

    /// Every pending address as held (what [`plan`] must not hand out again).
    fn held(&self) -> impl Iterator<Item = Held> + '_ {
        self.by_subnet.iter().flat_map(|(subnet, m)| {
            m.iter().map(|(holder, ip)| Held {
                subnet: subnet.clone(),
                ip: *ip,
                holder: holder.clone(),
            })
        })
    }
}

/// Decides an address for every request, never one that is held, pending or given in this
/// plan to another holder; remembers each in `pending`. Requests already pending are
/// skipped (their write is under way).
pub fn plan(
    subnets: &BTreeMap<String, SubnetInfo>,
    held: &[Held],
    requests: &[Request],
    pending: &mut Pending,
) -> Vec<(Holder, Result<Assignment, AllocError>)> {
    pending.forget_seen(held);
    let mut used: HashMap<String, BTreeMap<Ipv4Addr, Holder>> = HashMap::new();
    for h in held.iter().cloned().chain(pending.held()) {
        used.entry(h.subnet)
            .or_default()
            .entry(h.ip)
            .or_insert(h.holder);
    }
    let mut out = Vec::new();
    for r in requests {
        if pending.contains(&r.holder) {
            continue;
        }
        let decided = decide(subnets, &mut used, r);
        if let Ok(a) = &decided {
            pending
                .by_subnet
                .entry(a.subnet.name.clone())
                .or_default()
                .insert(a.holder.clone(), a.ip);
        }
        out.push((r.holder.clone(), decided));
    }
    out
}

fn decide(
    subnets: &BTreeMap<String, SubnetInfo>,
    used: &mut HashMap<String, BTreeMap<Ipv4Addr, Holder>>,
    r: &Request,
) -> Result<Assignment, AllocError> {
    let subnet = subnets
        .get(&r.subnet)
        .ok_or_else(|| AllocError::UnknownSubnet(r.subnet.clone()))?;
    let pool = Pool::subnet(&subnet.cidr, subnet.gateway, &subnet.exclude).map_err(|source| {
        AllocError::Pool {
            subnet: subnet.name.clone(),
            source,
        }
    })?;
    let set = used.entry(subnet.name.clone()).or_default();
    let ip = match r.preset_ip {
        Some(ip) if !pool.contains(ip) => {
            return Err(AllocError::OutsideSubnet {
                ip,
                subnet: subnet.name.clone(),
                cidr: subnet.cidr.clone(),
            });
        }
        Some(ip) => match set.get(&ip) {
            Some(by) if *by != r.holder => {
                return Err(AllocError::InUse {
                    ip,
                    subnet: subnet.name.clone(),
                    by: by.clone(),
                });
            }
            _ => ip,
        },
        None => pool
            .allocate_where(|ip| set.contains_key(ip))
            .map_err(|source| AllocError::Pool {
                subnet: subnet.name.clone(),
                source,
            })?,
    };
    set.insert(ip, r.holder.clone());
    Ok(Assignment {
        holder: r.holder.clone(),
        subnet: subnet.clone(),
        ip,
        mac: r
            .preset_mac
            .clone()
            .unwrap_or_else(|| ipam::mac_for(&subnet.name, ip)),
    })
}

/// Writes the assignments: a workload's annotations, a host's status, a node's
/// interface annotations and its probe ports (merged with those it has, `probe_ports`).
/// Returns the holders whose write failed; their addresses are forgotten in `pending`.
///
/// The writes go [`WRITES`] at a time: one after the other, 10,000 nodes joining took
/// minutes of round trips (~20 writes/s under load) while the pass, and every change
/// behind it, waited.
pub async fn write(
    client: &Client,
    assignments: Vec<Assignment>,
    probe_ports: &BTreeMap<String, BTreeMap<String, ProbePort>>,
    pending: &mut Pending,
) -> Vec<Holder> {
    let mut ports_by_node: BTreeMap<String, Vec<Assignment>> = BTreeMap::new();
    let mut writes: Vec<futures::future::BoxFuture<'static, (Vec<Holder>, kube::Result<()>)>> =
        Vec::new();
    for a in assignments {
        if let Holder::ProbePort { node, .. } = &a.holder {
            ports_by_node.entry(node.clone()).or_default().push(a);
            continue;
        }
        let client = client.clone();
        writes.push(Box::pin(async move {
            let pp = PatchParams::default();
            let annotations = json!({"metadata": {"annotations": a.address().to_annotations()}});
            let host_status =
                json!({"status": {"ipAddress": a.ip.to_string(), "macAddress": a.mac}});
            let written = match &a.holder {
                Holder::Pod { namespace, name } => Api::<Pod>::namespaced(client, namespace)
                    .patch(name, &pp, &Patch::Merge(&annotations))
                    .await
                    .map(drop),
                Holder::Vmi { namespace, name } => {
                    Api::<ferry_api::VirtualMachineInstance>::namespaced(client, namespace)
                        .patch(name, &pp, &Patch::Merge(&annotations))
                        .await
                        .map(drop)
                }
                Holder::BareMetal { namespace, name } => {
                    Api::<ferry_api::BareMetal>::namespaced(client, namespace)
                        .patch_status(name, &pp, &Patch::Merge(&host_status))
                        .await
                        .map(drop)
                }
                Holder::VNicIP { namespace, name } => {
                    Api::<ferry_api::VNicIP>::namespaced(client, namespace)
                        .patch_status(name, &pp, &Patch::Merge(&host_status))
                        .await
                        .map(drop)
                }
                Holder::Node(name) => Api::<Node>::all(client)
                    .patch(name, &pp, &Patch::Merge(&annotations))
                    .await
                    .map(drop),
                Holder::ProbePort { .. } => Ok(()),
            };
            if let Err(e) = &written {
                tracing::warn!(holder = %a.holder, error = %e, "writing an address failed; will retry");
            }
            (vec![a.holder], written)
        }));
    }
    for (node, new) in ports_by_node {
        let mut ports = probe_ports.get(&node).cloned().unwrap_or_default();
        for a in &new {
            if let Holder::ProbePort { vpc, .. } = &a.holder {
                let addr = a.address();
                ports.insert(
                    vpc.clone(),
                    ProbePort {
                        subnet: a.subnet.name.clone(),
                        ip: a.ip.to_string(),
                        mac: a.mac.clone(),
                        gateway: addr.gateway.to_string(),
                        cidr: a.subnet.cidr.clone(),
                    },
                );
            }
        }
        let patch = json!({"metadata": {"annotations": {
            ferry_api::ANNOTATION_PROBE_PORTS: ferry_api::probe_ports_annotation(&ports)}}});
        let client = client.clone();
        let holders: Vec<Holder> = new.into_iter().map(|a| a.holder).collect();
        writes.push(Box::pin(async move {
            let written = Api::<Node>::all(client)
                .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop);
            if let Err(e) = &written {
                tracing::warn!(node = %node, error = %e, "writing probe ports failed; will retry");
            }
            (holders, written)
        }));
    }
    let results: Vec<(Vec<Holder>, kube::Result<()>)> = futures::stream::iter(writes)
        .buffer_unordered(WRITES)
        .collect()
        .await;
    let mut failed = Vec::new();
    for (holders, written) in results {
        if written.is_err() {
            for h in holders {
                pending.forget(&h);
                failed.push(h);
            }
        }
    }
    failed
}

/// Address writes in flight at once.
pub const WRITES: usize = 32;

#[cfg(test)]
mod tests;
