//! The service controller's decisions, pure: which backends a YusurService selects, and the
//! headless Service, Endpoints, EndpointSlice, NetworkProbes and status that follow.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ferry_api::{
    BackendKind, HealthCheck, NetworkProbe, NetworkProbeSpec, ProbePhase, ProbeTarget, Scope,
    YusurService,
};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

/// Label that keeps kube-proxy away from Ferry's Services.
pub const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label on everything the service controller writes, naming the YusurService.
pub const SERVICE_LABEL: &str = "iaas.yusur.io/service";
/// Annotation on the headless Service carrying Ferry's VIP.
/// The `endpointslice.kubernetes.io/managed-by` of the EndpointSlices Ferry generates.
pub const SLICE_MANAGED_BY: (&str, &str) = (
    "endpointslice.kubernetes.io/managed-by",
    "ferry.iaas.yusur.io",
);
pub const VIP_ANNOTATION: &str = "iaas.yusur.io/vip";
/// Annotation carrying the EIP of a LoadBalancer service.
pub const EIP_ANNOTATION: &str = "iaas.yusur.io/eip";

/// Anything a selector may pick, already resolved to an address and a VPC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub kind: BackendKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    pub vpc: String,
    pub subnet: String,
    /// The node whose agent probes it.
    pub node: Option<String>,
    /// Compact: the index holds a backend per workload (200,000 at 10k x 20).
    pub labels: ferry_api::CompactMap,
}

/// The VPCs a service lives in.
pub fn service_vpcs(svc: &YusurService) -> Vec<String> {
    match svc.spec.scope {
        Scope::Vpc => vec![
            svc.spec
                .vpc
                .clone()
                .unwrap_or_else(|| ferry_api::DEFAULT_VPC.to_string()),
        ],
        Scope::MultiVpc => svc.spec.vpcs.clone().unwrap_or_default(),
    }
}

/// The backends of `svc` among `candidates`: same namespace, every selector label matches,
/// an allowed kind, inside one of its VPCs. An empty selector selects nothing.
pub fn select_backends(svc: &YusurService, candidates: &[&Backend]) -> Vec<Backend> {
    if svc.spec.selector.is_empty() {
        return Vec::new();
    }
    let (ns, vpcs) = (svc.namespace().unwrap_or_default(), service_vpcs(svc));
    // Only the selected are cloned: a full pass asks for 200,000 candidates at 10k x 20.
    let mut out: Vec<Backend> = candidates
        .iter()
        .filter(|b| picks(svc, &ns, &vpcs, b))
        .map(|b| (*b).clone())
        .collect();
    out.sort();
    out
}

/// Whether `svc` (in `ns`, living in `vpcs`) selects `b`.
fn picks(svc: &YusurService, ns: &str, vpcs: &[String], b: &Backend) -> bool {
    b.namespace == ns
        && svc
            .spec
            .selector
            .iter()
            .all(|(k, v)| b.labels.get(k) == Some(v.as_str()))
        && svc
            .spec
            .backend_kinds
            .as_ref()
            .is_none_or(|kinds| kinds.contains(&b.kind))
        && vpcs.contains(&b.vpc)
}

/// Whether `svc` selects `b` (see [`select_backends`]).
pub fn selects(svc: &YusurService, b: &Backend) -> bool {
    !svc.spec.selector.is_empty()
        && picks(
            svc,
            &svc.namespace().unwrap_or_default(),
            &service_vpcs(svc),
            b,
        )
}

fn kind_short(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Pod => "pod",
        BackendKind::VirtualMachineInstance => "vmi",
        BackendKind::BareMetal => "bm",
        BackendKind::VNicIP => "vnic",
    }
}

/// The NetworkProbe name of one backend of one service (deterministic).
pub fn probe_name(service: &str, b: &Backend) -> String {
    let mut n = format!("{service}-{}-{}", kind_short(b.kind), b.name);
    n.truncate(253);
    n.trim_end_matches(['-', '.']).to_string()
}

fn owner(svc: &YusurService) -> OwnerReference {
    OwnerReference {
        api_version: "iaas.yusur.io/v1".into(),
        kind: "YusurService".into(),
        name: svc.name_any(),
        uid: svc.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn meta(svc: &YusurService, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: svc.namespace(),
        labels: Some(BTreeMap::from([(
            SERVICE_LABEL.to_string(),
            svc.name_any(),
        )])),
        owner_references: Some(vec![owner(svc)]),
        ..Default::default()
    }
}

fn target_port(p: &ferry_api::ServicePort) -> i32 {
    p.target_port.unwrap_or(p.port)
}

fn protocol(p: &ferry_api::ServicePort) -> String {
    format!("{:?}", p.protocol)
}

/// The probe spec of one backend.
pub fn probe_spec(svc: &YusurService, b: &Backend) -> NetworkProbeSpec {
    let hc = svc.spec.health_check.clone().unwrap_or_default();
    let default_port = svc.spec.ports.first().map(target_port).unwrap_or(0);
    let port = hc.port.unwrap_or(default_port);
    // The protocol of the probed port: the service port that targets it, else the first.
    let protocol = svc
        .spec
        .ports
        .iter()
        .find(|p| target_port(p) == port)
        .or(svc.spec.ports.first())
        .map(|p| p.protocol)
        .unwrap_or_default();
    let type_ = hc.probe_type(protocol);
    NetworkProbeSpec {
        target: ProbeTarget {
            kind: b.kind,
            name: b.name.clone(),
            namespace: Some(b.namespace.clone()),
            vpc: b.vpc.clone(),
            subnet: Some(b.subnet.clone()),
            ip: b.ip.to_string(),
        },
        type_,
        port,
        path: hc
            .path
            .clone()
            .or_else(|| (type_ == ferry_api::HealthCheckType::HTTP).then(|| "/".to_string())),
        node_name: b.node.clone(),
        period_seconds: hc.period_seconds,
        timeout_seconds: hc.timeout_seconds,
        success_threshold: hc.success_threshold,
        failure_threshold: hc.failure_threshold,
        udp_silence: hc.udp_silence,
    }
}

/// Whether `HealthCheck` is the default (no health check written).
pub fn default_health_check() -> HealthCheck {
    HealthCheck::default()
}

/// Everything the service controller writes for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceObjects {
    pub service: Service,
    pub endpoints: Endpoints,
    pub slice: EndpointSlice,
    pub probes: Vec<NetworkProbe>,
}

/// The backends of service `name` whose probes are Healthy.
pub fn ready(
    name: &str,
    backends: &[Backend],
    phases: &BTreeMap<String, ProbePhase>,
) -> Vec<Backend> {
    backends
        .iter()
        .filter(|b| phases.get(&probe_name(name, b)) == Some(&ProbePhase::Healthy))
        .cloned()
        .collect()
}

/// The objects for `svc` with `backends` selected, ready per their probes' phases.
pub fn build(
    svc: &YusurService,
    backends: &[Backend],
    phases: &BTreeMap<String, ProbePhase>,
    cluster_ip: Option<Ipv4Addr>,
    eip: Option<Ipv4Addr>,
) -> ServiceObjects {
    let name = svc.name_any();
    let ready = ready(&name, backends, phases);
    let mut service_meta = meta(svc, name.clone());
    if let Some(l) = service_meta.labels.as_mut() {
        l.insert(PROXY_NAME_LABEL.into(), "ferry".into());
    }
    let mut annotations = BTreeMap::new();
    if let Some(ip) = cluster_ip {
        annotations.insert(VIP_ANNOTATION.to_string(), ip.to_string());
    }
    if let Some(ip) = eip {
        annotations.insert(EIP_ANNOTATION.to_string(), ip.to_string());
    }
    service_meta.annotations = Some(annotations);
    let service = Service {
        metadata: service_meta,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            type_: Some("ClusterIP".into()),
            ports: Some(
                svc.spec
                    .ports
                    .iter()
                    .map(|p| ServicePort {
                        name: p.name.clone(),
                        port: p.port,
                        protocol: Some(protocol(p)),
                        target_port: Some(IntOrString::Int(target_port(p))),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    };
    let target_ref = |b: &Backend| ObjectReference {
        kind: Some(format!("{:?}", b.kind)),
        name: Some(b.name.clone()),
        namespace: Some(b.namespace.clone()),
        uid: Some(b.uid.clone()).filter(|u| !u.is_empty()),
        ..Default::default()
    };
    let ep_ports: Vec<EndpointPort> = svc
        .spec
        .ports
        .iter()
        .map(|p| EndpointPort {
            name: p.name.clone(),
            port: target_port(p),
            protocol: Some(protocol(p)),
            ..Default::default()
        })
        .collect();
    let endpoints = Endpoints {
        metadata: meta(svc, name.clone()),
        subsets: (!ready.is_empty()).then(|| {
            vec![EndpointSubset {
                addresses: Some(
                    ready
                        .iter()
                        .map(|b| EndpointAddress {
                            ip: b.ip.to_string(),
                            target_ref: Some(target_ref(b)),
                            node_name: b.node.clone(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ports: Some(ep_ports.clone()),
                ..Default::default()
            }]
        }),
    };
    let mut slice_meta = meta(svc, format!("{name}-ferry"));
    if let Some(l) = slice_meta.labels.as_mut() {
        l.insert("kubernetes.io/service-name".into(), name.clone());
        l.insert(SLICE_MANAGED_BY.0.into(), SLICE_MANAGED_BY.1.into());
    }
    let slice = EndpointSlice {
        metadata: slice_meta,
        address_type: "IPv4".into(),
        endpoints: ready
            .iter()
            .map(|b| Endpoint {
                addresses: vec![b.ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                target_ref: Some(target_ref(b)),
                node_name: b.node.clone(),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            svc.spec
                .ports
                .iter()
                .map(|p| SlicePort {
                    name: p.name.clone(),
                    port: Some(target_port(p)),
                    protocol: Some(protocol(p)),
                    app_protocol: None,
                })
                .collect(),
        ),
    };
    let probes = backends
        .iter()
        .map(|b| {
            let mut p = NetworkProbe::new(&probe_name(&name, b), probe_spec(svc, b));
            p.metadata = meta(svc, probe_name(&name, b));
            p
        })
        .collect();
    ServiceObjects {
        service,
        endpoints,
        slice,
        probes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> YusurService {
        let text = include_str!("../../../examples/ysvc1.yaml");
        let mut s: YusurService = serde_saphyr::from_str(text).unwrap();
        s.metadata.namespace = Some("default".into());
        s.metadata.uid = Some("u-1".into());
        s
    }

    fn backend(
        kind: BackendKind,
        name: &str,
        ip: &str,
        vpc: &str,
        labels: &[(&str, &str)],
    ) -> Backend {
        Backend {
            kind,
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            ip: ip.parse().unwrap(),
            vpc: vpc.into(),
            subnet: format!("{vpc}-subnet1"),
            node: Some("node1".into()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A UDP port is probed over UDP unless the health check names a type: a TCP probe
    /// of a UDP echo never succeeded, and the service stayed 0/N ready.
    #[test]
    fn the_probe_type_follows_the_probed_ports_protocol_unless_written() {
        use ferry_api::{HealthCheck, HealthCheckType as T, Protocol as P};
        let port = |port: i32, protocol: P| ferry_api::ServicePort {
            name: Some(format!("p{port}")),
            port,
            protocol,
            target_port: None,
        };
        let b = backend(BackendKind::Pod, "a", "10.0.1.10", "vpc1", &[]);
        let cases = [
            (vec![port(80, P::TCP)], None, None, (T::TCP, 80)),
            (vec![port(53, P::UDP)], None, None, (T::UDP, 53)),
            (vec![port(9999, P::SCTP)], None, None, (T::TCP, 9999)),
            // The second port is probed: its protocol decides.
            (
                vec![port(80, P::TCP), port(53, P::UDP)],
                None,
                Some(53),
                (T::UDP, 53),
            ),
            // A type written wins.
            (vec![port(53, P::UDP)], Some(T::ICMP), None, (T::ICMP, 53)),
            (vec![port(53, P::UDP)], Some(T::TCP), None, (T::TCP, 53)),
        ];
        for (ports, type_, probed, want) in cases {
            let mut svc = seed();
            svc.spec.ports = ports;
            svc.spec.health_check = (type_.is_some() || probed.is_some()).then(|| HealthCheck {
                type_,
                port: probed,
                ..HealthCheck::default()
            });
            let p = probe_spec(&svc, &b);
            assert_eq!((p.type_, p.port), want, "{:?}", svc.spec.ports);
        }
    }

    #[test]
    fn seed_selects_only_vpc1_backends_with_the_label() {
        let svc = seed();
        let candidates = [
            backend(
                BackendKind::Pod,
                "a",
                "10.0.1.10",
                "vpc1",
                &[("svc", "svc1-ep")],
            ),
            backend(
                BackendKind::BareMetal,
                "bm",
                "10.0.2.10",
                "vpc1",
                &[("svc", "svc1-ep")],
            ),
            backend(
                BackendKind::Pod,
                "same-label-vpc2",
                "10.0.1.10",
                "vpc2",
                &[("svc", "svc1-ep")],
            ),
            backend(
                BackendKind::Pod,
                "other",
                "10.0.1.11",
                "vpc1",
                &[("svc", "x")],
            ),
        ];
        let candidates: Vec<&Backend> = candidates.iter().collect();
        let names: Vec<String> = select_backends(&svc, &candidates)
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(names, ["a", "bm"]);
    }

    #[test]
    fn only_healthy_backends_reach_endpoints_and_every_backend_gets_a_probe() {
        let svc = seed();
        let backends = vec![
            backend(BackendKind::Pod, "a", "10.0.1.10", "vpc1", &[]),
            backend(BackendKind::Pod, "b", "10.0.1.11", "vpc1", &[]),
            backend(BackendKind::Pod, "c", "10.0.1.12", "vpc1", &[]),
        ];
        let phases = BTreeMap::from([
            ("ysvc1-pod-a".to_string(), ProbePhase::Healthy),
            ("ysvc1-pod-b".to_string(), ProbePhase::Unhealthy),
        ]);
        let out = build(
            &svc,
            &backends,
            &phases,
            Some("10.96.0.10".parse().unwrap()),
            None,
        );
        let ips: Vec<String> = out.endpoints.subsets.unwrap()[0]
            .addresses
            .clone()
            .unwrap()
            .into_iter()
            .map(|a| a.ip)
            .collect();
        assert_eq!(ips, ["10.0.1.10"]);
        assert_eq!(out.slice.endpoints.len(), 1);
        assert_eq!(out.probes.len(), 3, "one probe per backend, healthy or not");
        assert_eq!(out.probes[2].spec.port, 5001);
        assert_eq!(
            out.service.spec.unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        assert_eq!(
            out.service.metadata.labels.unwrap()[PROXY_NAME_LABEL],
            "ferry"
        );
        assert_eq!(
            out.service.metadata.annotations.unwrap()[VIP_ANNOTATION],
            "10.96.0.10"
        );
        assert_eq!(
            out.probes[0].metadata.owner_references.as_ref().unwrap()[0].uid,
            "u-1"
        );
    }

    #[test]
    fn no_ready_backend_means_no_subsets() {
        let svc = seed();
        let out = build(
            &svc,
            &[backend(BackendKind::Pod, "a", "10.0.1.10", "vpc1", &[])],
            &BTreeMap::new(),
            None,
            None,
        );
        assert!(out.endpoints.subsets.is_none());
    }
}
