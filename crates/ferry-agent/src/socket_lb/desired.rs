//! Pure: what the socket load balancer should hold for one service, from what the service
//! side publishes. A `YusurService` gives its `status.clusterIP`, `spec.ports`, session
//! affinity and VPC(s); a `v1 Service` its cluster IP and ports in the default VPC; both
//! take their backends from their EndpointSlices, which hold only healthy backends (the
//! controller writes them from the probes; kube-controller-manager or `ferry-embedded` for
//! ordinary Services). The result is keyed by VPC *name*; [`VpcIds`] turns names into the
//! numbers the BPF maps use.
//!
//! The rule everywhere: when the socket LB cannot be sure it would do what OVN's load
//! balancer does, it programs nothing for that service, so the socket keeps the VIP and
//! OVN answers (both paths must agree).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use ferry_api::{Scope, SessionAffinity, YusurService};
use ferry_sock::{Algorithm, Backend, Protocol, ServiceKey, ServiceSpec, VpcId};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10800;

/// The cluster DNS Service (`kube-system/kube-dns` with this annotation) is programmed by
/// the controller to each node's probe port in every VPC; the socket LB leaves it to OVN.
/// Same string as `ferry_controller::cluster_dns::CLUSTER_DNS_ANNOTATION`.
pub const CLUSTER_DNS_ANNOTATION: &str = "iaas.yusur.io/cluster-dns";

/// Label on an EndpointSlice naming its Service (or YusurService).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A service port as seen from inside one VPC, by VPC name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedKey {
    pub vpc: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

/// What one service wants programmed, by VPC name.
pub type Entries = BTreeMap<NamedKey, ServiceSpec>;

/// Why a service is left to OVN's load balancer entirely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftToOvn {
    /// A multi-VPC service has a backend whose address lies in subnets of more than one of
    /// its VPCs (overlapping CIDRs) or of none: the socket LB cannot tell which VPC's
    /// clients may reach it.
    BackendVpcUnknown { ip: Ipv4Addr },
    /// A Pod endpoint of an ordinary Service lies in both a default-VPC subnet and another
    /// VPC's: the controller leaves Pods of other VPCs out, and the address cannot say.
    PodVpcAmbiguous { ip: Ipv4Addr },
}

impl fmt::Display for LeftToOvn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeftToOvn::BackendVpcUnknown { ip } => write!(
                f,
                "backend {ip} is in the subnets of none or several of the service's VPCs"
            ),
            LeftToOvn::PodVpcAmbiguous { ip } => write!(
                f,
                "pod endpoint {ip} is in subnets of the default VPC and of another VPC"
            ),
        }
    }
}

/// Subnet CIDR -> VPC name, from the `Subnet` objects: which VPC(s) an address can be in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VpcSubnets {
    subnets: Vec<(Ipv4Net, String)>,
}

impl VpcSubnets {
    pub fn new(subnets: impl IntoIterator<Item = (Ipv4Net, String)>) -> VpcSubnets {
        let mut subnets: Vec<_> = subnets.into_iter().collect();
        subnets.sort();
        VpcSubnets { subnets }
    }

    /// The VPCs with a subnet containing `ip`.
    pub fn vpcs_of(&self, ip: Ipv4Addr) -> BTreeSet<&str> {
        self.subnets
            .iter()
            .filter(|(net, _)| net.contains(&ip))
            .map(|(_, vpc)| vpc.as_str())
            .collect()
    }
}

/// A backend address of an endpoint, with the kind of object it came from.
struct SliceEndpoint {
    ip: Ipv4Addr,
    pod: bool,
}

/// The ready IPv4 endpoints of `slices` (a missing `ready` counts as ready, as in
/// Kubernetes), each address once.
fn endpoints(slices: &[&EndpointSlice]) -> Vec<SliceEndpoint> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for sl in slices.iter().filter(|s| s.address_type == "IPv4") {
        for ep in &sl.endpoints {
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let pod = ep
                .target_ref
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("Pod"));
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<Ipv4Addr>()
                    && seen.insert(ip)
                {
                    out.push(SliceEndpoint { ip, pod });
                }
            }
        }
    }
    out
}

/// The target port of the service port named `name` as the slices resolve it.
fn slice_port(slices: &[&EndpointSlice], name: &str) -> Option<u16> {
    slices
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| p.name.as_deref().unwrap_or_default() == name)
        .and_then(|p| p.port)
        .and_then(|n| u16::try_from(n).ok())
}

fn spec_of(ips: &[Ipv4Addr], target_port: u16, affinity_timeout_s: u32) -> ServiceSpec {
    ServiceSpec {
        backends: ips
            .iter()
            .map(|ip| Backend::new(SocketAddrV4::new(*ip, target_port)))
            .collect(),
        algorithm: Algorithm::Random,
        affinity_timeout_s,
    }
}

/// A YusurService's entries: for each of its VPCs and each TCP/UDP port, the ready
/// backends of that VPC (OVN's cluster-IP load balancer of a VPC also has only that VPC's
/// backends). No cluster IP yet, or no ready backend in a VPC: nothing for it there.
pub fn yusur_entries(
    svc: &YusurService,
    slices: &[&EndpointSlice],
    subnets: &VpcSubnets,
) -> Result<Entries, LeftToOvn> {
    let mut out = Entries::new();
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(out);
    }
    let Some(vip) = svc
        .status
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    else {
        return Ok(out);
    };
    let vpcs: Vec<String> = match svc.spec.scope {
        Scope::Vpc => vec![
            svc.spec
                .vpc
                .clone()
                .unwrap_or_else(|| ferry_api::DEFAULT_VPC.to_string()),
        ],
        Scope::MultiVpc => svc.spec.vpcs.clone().unwrap_or_default(),
    };
    // Backends by VPC: one VPC takes them all; several need each address's VPC.
    let mut by_vpc: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
    for ep in endpoints(slices) {
        let vpc = match vpcs.as_slice() {
            [only] => only.as_str(),
            _ => {
                let mut of = subnets
                    .vpcs_of(ep.ip)
                    .into_iter()
                    .filter(|v| vpcs.iter().any(|w| w == v));
                match (of.next(), of.next()) {
                    (Some(v), None) => vpcs.iter().find(|w| *w == v).map_or(v, |w| w.as_str()),
                    _ => return Err(LeftToOvn::BackendVpcUnknown { ip: ep.ip }),
                }
            }
        };
        by_vpc.entry(vpc).or_default().push(ep.ip);
    }
    let affinity = match svc.spec.session_affinity {
        Some(SessionAffinity::ClientIP) => svc
            .spec
            .session_affinity_timeout_seconds
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S),
        _ => 0,
    };
    for p in &svc.spec.ports {
        let protocol = match p.protocol {
            ferry_api::Protocol::TCP => Protocol::Tcp,
            ferry_api::Protocol::UDP => Protocol::Udp,
            ferry_api::Protocol::SCTP => continue,
        };
        let (Ok(port), Ok(target)) = (
            u16::try_from(p.port),
            u16::try_from(p.target_port.unwrap_or(p.port)),
        ) else {
            continue;
        };
        for (vpc, ips) in &by_vpc {
            let key = NamedKey {
                vpc: vpc.to_string(),
                vip,
                port,
                protocol,
            };
            out.insert(key, spec_of(ips, target, affinity));
        }
    }
    Ok(out)
}

/// An ordinary Service's entries, in the default VPC: its cluster IP and ports, target
/// ports as the slices resolve them (named ports) or from the spec, and its ready
/// endpoints except Pods of other VPCs (as the controller does). Headless, ExternalName,
/// generated (a YusurService's own Service) and the cluster DNS Service: nothing.
pub fn service_entries(
    svc: &Service,
    slices: &[&EndpointSlice],
    subnets: &VpcSubnets,
) -> Result<Entries, LeftToOvn> {
    let mut out = Entries::new();
    let labels = svc.metadata.labels.as_ref();
    let annotations = svc.metadata.annotations.as_ref();
    if svc.metadata.deletion_timestamp.is_some()
        || labels.is_some_and(|l| l.contains_key(ferry_api::SERVICE_LABEL))
        || annotations.is_some_and(|a| a.contains_key(CLUSTER_DNS_ANNOTATION))
    {
        return Ok(out);
    }
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(out);
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(out);
    }
    let Some(vip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    else {
        return Ok(out);
    };
    let mut ips = Vec::new();
    for ep in endpoints(slices) {
        if ep.pod {
            let vpcs = subnets.vpcs_of(ep.ip);
            let default = vpcs.contains(ferry_api::DEFAULT_VPC);
            let other = vpcs.iter().any(|v| *v != ferry_api::DEFAULT_VPC);
            match (default, other) {
                (true, true) => return Err(LeftToOvn::PodVpcAmbiguous { ip: ep.ip }),
                (false, true) => continue,
                _ => {}
            }
        }
        ips.push(ep.ip);
    }
    if ips.is_empty() {
        return Ok(out);
    }
    let affinity = if spec.session_affinity.as_deref() == Some("ClientIP") {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S)
    } else {
        0
    };
    for p in spec.ports.iter().flatten() {
        let protocol = match p.protocol.as_deref() {
            None | Some("TCP") => Protocol::Tcp,
            Some("UDP") => Protocol::Udp,
            _ => continue,
        };
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        let name = p.name.clone().unwrap_or_default();
        let target = slice_port(slices, &name).or(match &p.target_port {
            Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
            Some(IntOrString::String(_)) => None,
            None => Some(port),
        });
        let Some(target) = target else { continue };
        let key = NamedKey {
            vpc: ferry_api::DEFAULT_VPC.to_string(),
            vip,
            port,
            protocol,
        };
        out.insert(key, spec_of(&ips, target, affinity));
    }
    Ok(out)
}

/// The number each VPC has in this agent's maps. Numbers are handed out in order of first
/// use and never reused while the maps live; two VPCs can never share one, which a hash of
/// the name could not promise. The maps outlive the agent when pinned: a restarted agent
/// finds the numbers of the namespaces still registered ([`VpcIds::adopt`] when a sandbox
/// of that VPC registers again) and never hands out one of them to another VPC
/// ([`VpcIds::reserve`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VpcIds {
    ids: BTreeMap<String, VpcId>,
    /// Numbers found in adopted maps, not (yet) claimed by a VPC.
    reserved: BTreeSet<VpcId>,
}

impl VpcIds {
    /// The number of `vpc`, given one if it has none: the smallest free one from 1.
    pub fn assign(&mut self, vpc: &str) -> VpcId {
        if let Some(id) = self.get(vpc) {
            return id;
        }
        let used: BTreeSet<VpcId> = self.ids.values().copied().collect();
        let next = (1..)
            .find(|i| !used.contains(i) && !self.reserved.contains(i))
            .unwrap_or(VpcId::MAX);
        self.ids.insert(vpc.to_string(), next);
        next
    }

    pub fn get(&self, vpc: &str) -> Option<VpcId> {
        self.ids.get(vpc).copied()
    }

    /// Keeps `ids` (numbers in adopted maps) from being handed out by [`VpcIds::assign`].
    pub fn reserve(&mut self, ids: impl IntoIterator<Item = VpcId>) {
        let used: BTreeSet<VpcId> = self.ids.values().copied().collect();
        self.reserved
            .extend(ids.into_iter().filter(|i| !used.contains(i)));
    }

    /// Gives `vpc` the number `id` an adopted namespace of it carries, when `vpc` has no
    /// number yet and no other VPC has `id`; returns the number `vpc` has afterwards.
    pub fn adopt(&mut self, vpc: &str, id: VpcId) -> VpcId {
        if let Some(have) = self.get(vpc) {
            return have;
        }
        if self.ids.values().any(|v| *v == id) {
            return self.assign(vpc);
        }
        self.reserved.remove(&id);
        self.ids.insert(vpc.to_string(), id);
        id
    }
}

/// `entries` for the VPCs that have a number (a pod of theirs runs or ran on this node);
/// others are not programmed here.
pub fn keyed(entries: &Entries, ids: &VpcIds) -> BTreeMap<ServiceKey, ServiceSpec> {
    entries
        .iter()
        .filter_map(|(k, spec)| {
            Some((
                ServiceKey {
                    vpc: ids.get(&k.vpc)?,
                    vip: k.vip,
                    port: k.port,
                    protocol: k.protocol,
                },
                spec.clone(),
            ))
        })
        .collect()
}

/// The map changes that take one service from what it programmed (`before`) to `after`:
/// every key of `after` with its spec, every key only in `before` removed.
pub fn changes(
    before: &BTreeSet<ServiceKey>,
    after: &BTreeMap<ServiceKey, ServiceSpec>,
) -> BTreeMap<ServiceKey, Option<ServiceSpec>> {
    let mut out: BTreeMap<ServiceKey, Option<ServiceSpec>> =
        after.iter().map(|(k, s)| (*k, Some(s.clone()))).collect();
    for k in before {
        out.entry(*k).or_insert(None);
    }
    out
}
