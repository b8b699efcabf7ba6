//! Ordinary Kubernetes Services, pure: what the NB holds for a `v1 Service` of the default
//! VPC, from the Service and its EndpointSlices (so it works unchanged on a real cluster,
//! where kube-controller-manager writes the slices), and which LoadBalancer address each
//! LoadBalancer Service holds.
//!
//! | Service | in OVN |
//! |---|---|
//! | ClusterIP | the cluster IP in the default VPC's load balancer group (every default-VPC switch and the join switch) |
//! | NodePort | also `NODE:nodePort` on every node's external address (the default VPC's router, routed by `eip-gateway`); on its join address the node's agent DNATs to the cluster IP (`ferry_agent::node_ports`) |
//! | LoadBalancer | also its address from the EIP pool on the router, written to `status.loadBalancer.ingress` |
//! | `externalIPs` | more router VIPs, like EIPs |
//! | `externalTrafficPolicy: Local` | each node's NodePort VIPs lead only to that node's endpoints; the client's address is kept (no SNAT on these paths) |
//! | headless, ExternalName, no cluster IP yet | nothing (DNS only) |
//!
//! Not expressible with switch-wide load balancers: `internalTrafficPolicy: Local` (every
//! node's pods share a switch's load balancer); such Services are served as `Cluster`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ferry_net::{Backend, Protocol, ServiceKind, ServicePort, ServiceScope, ServiceState};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::ipam::Pool;
use crate::problem::Problem;
use crate::service_ips::Claims;

/// Label on an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The key of a Service in the NB model and in passes: `svc/namespace/name` (apart from
/// the YusurServices' `namespace/name`, whose generated Services share their names).
pub fn key(s: &Service) -> String {
    format!(
        "svc/{}/{}",
        s.metadata.namespace.as_deref().unwrap_or_default(),
        s.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether Ferry's service controller wrote it for a YusurService (it has its own rows).
pub fn generated(s: &Service) -> bool {
    s.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(ferry_api::SERVICE_LABEL))
}

fn spec_type(s: &Service) -> &str {
    s.spec
        .as_ref()
        .and_then(|sp| sp.type_.as_deref())
        .unwrap_or("ClusterIP")
}

/// Whether the Service asks for a LoadBalancer address.
pub fn wants_lb_ip(s: &Service) -> bool {
    !generated(s) && spec_type(s) == "LoadBalancer"
}

/// The LoadBalancer address its status shows.
pub fn lb_ip_in_status(s: &Service) -> Option<Ipv4Addr> {
    s.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .iter()
        .find_map(|i| i.ip.as_deref()?.parse().ok())
}

fn protocol(p: Option<&str>) -> Protocol {
    match p {
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

/// The NB state of `svc` given its `slices`, its LoadBalancer address and the VPC of each
/// Pod endpoint (`pod_vpc(namespace, name)`; endpoints in another VPC are left out, they
/// are unreachable from the default VPC). `None`: nothing to program.
pub fn service_state(
    svc: &Service,
    slices: &[&EndpointSlice],
    lb_ip: Option<Ipv4Addr>,
    pod_vpc: impl Fn(&str, &str) -> Option<String>,
) -> Option<ServiceState> {
    let cluster_dns = svc
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(crate::cluster_dns::CLUSTER_DNS_ANNOTATION));
    if generated(svc) || cluster_dns || svc.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    let type_ = spec_type(svc);
    if type_ == "ExternalName" {
        return None;
    }
    let cluster_ip: Ipv4Addr = spec.cluster_ip.as_deref()?.parse().ok()?;
    let with_node_ports = matches!(type_, "NodePort" | "LoadBalancer");
    // A slice port's number by its name: named targetPorts are resolved by the slices.
    let mut slice_ports: BTreeMap<String, u16> = BTreeMap::new();
    for sl in slices {
        for p in sl.ports.iter().flatten() {
            if let Some(n) = p.port.and_then(|n| u16::try_from(n).ok()) {
                slice_ports
                    .entry(p.name.clone().unwrap_or_default())
                    .or_insert(n);
            }
        }
    }
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let name = p.name.clone().unwrap_or_default();
            let target_port = slice_ports.get(&name).copied().or(match &p.target_port {
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                Some(IntOrString::String(_)) => None,
                None => Some(port),
            })?;
            Some(ServicePort {
                port,
                target_port,
                protocol: protocol(p.protocol.as_deref()),
                node_port: p
                    .node_port
                    .filter(|_| with_node_ports)
                    .and_then(|n| u16::try_from(n).ok()),
            })
        })
        .collect();
    let mut backends: Vec<Backend> = Vec::new();
    for sl in slices.iter().filter(|s| s.address_type == "IPv4") {
        for ep in &sl.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            if !ready {
                continue;
            }
            if let Some(r) = &ep.target_ref
                && r.kind.as_deref() == Some("Pod")
                && let Some(vpc) = pod_vpc(
                    r.namespace.as_deref().unwrap_or_default(),
                    r.name.as_deref().unwrap_or_default(),
                )
                && vpc != ferry_api::DEFAULT_VPC
            {
                continue;
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse() {
                    backends.push(Backend {
                        ip,
                        vpc: ferry_api::DEFAULT_VPC.into(),
                        node: ep.node_name.clone(),
                    });
                }
            }
        }
    }
    backends.sort_by_key(|b| b.ip);
    backends.dedup_by(|a, b| a.ip == b.ip);
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10800)
    });
    Some(ServiceState {
        key: key(svc),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        scope: ServiceScope::Vpc(ferry_api::DEFAULT_VPC.into()),
        cluster_ip: Some(cluster_ip),
        eip: lb_ip.filter(|_| type_ == "LoadBalancer"),
        ports,
        affinity_timeout,
        backends,
        kind: ServiceKind::Service,
        external_ips: spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|i| i.parse().ok())
            .collect(),
        node_local: with_node_ports && spec.external_traffic_policy.as_deref() == Some("Local"),
    })
}

/// The cluster IPs `svc` holds (none for headless or ExternalName Services).
pub fn cluster_ips(svc: &Service) -> Vec<Ipv4Addr> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    spec.cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// Which LoadBalancer address each of `services` holds: the one in its status while no
/// other holds it, else a new one from `pool`. `claims` holds every other service's EIPs
/// and then these too (keyed by [`key`]).
pub fn lb_ips(
    services: &[&Service],
    pool: Option<&Pool>,
    claims: &mut Claims,
) -> BTreeMap<String, Result<Ipv4Addr, Problem>> {
    let mut out = BTreeMap::new();
    let wanting: Vec<&&Service> = services.iter().filter(|s| wants_lb_ip(s)).collect();
    // Held addresses first, so a new allocation never takes one.
    for s in &wanting {
        if let Some(ip) = lb_ip_in_status(s)
            && pool.is_some_and(|p| p.contains(ip))
        {
            let k = key(s);
            match claims.claim_eip(ip, &k) {
                Ok(()) => {
                    out.insert(k, Ok(ip));
                }
                Err(holder) => {
                    out.insert(k, Err(Problem::EipConflict { ip, holder }));
                }
            }
        }
    }
    for s in wanting {
        let k = key(s);
        if out.contains_key(&k) {
            continue;
        }
        let r = match pool {
            None => Err(Problem::NoEipPool),
            Some(p) => claims
                .allocate_eip(p, &k)
                .map_err(|e| Problem::EipExhausted(e.to_string())),
        };
        out.insert(k, r);
    }
    out
}

#[cfg(test)]
mod tests;
