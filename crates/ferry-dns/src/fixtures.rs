//! Sample objects for this crate's tests, examples and benchmark: short constructors for the
//! Services, EndpointSlices and YusurServices a zone is built from, and the lab-like
//! [`sample`] snapshot the tables use. Not part of the resolver.

use std::collections::BTreeMap;

use ferry_api::{Scope, ServiceType, YusurService, YusurServiceSpec, YusurServiceStatus};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::zones::{SERVICE_LABEL, SLICE_SERVICE_LABEL, Snapshot};

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// `(name, port, protocol)` to Service ports.
fn ports(list: &[(&str, i32, &str)]) -> Option<Vec<ServicePort>> {
    Some(
        list.iter()
            .map(|(n, p, proto)| ServicePort {
                name: (!n.is_empty()).then(|| n.to_string()),
                port: *p,
                protocol: Some(proto.to_string()),
                ..Default::default()
            })
            .collect(),
    )
}

/// A Service of `type_` (ClusterIP, NodePort, LoadBalancer) with `cluster_ip`.
pub fn service(
    ns: &str,
    name: &str,
    type_: &str,
    cluster_ip: &str,
    port_list: &[(&str, i32, &str)],
) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: Some(cluster_ip.into()),
            cluster_ips: Some(vec![cluster_ip.into()]),
            ports: ports(port_list),
            ..Default::default()
        }),
        status: None,
    }
}

/// A headless (`clusterIP: None`) Service.
pub fn headless(ns: &str, name: &str, port_list: &[(&str, i32, &str)]) -> Service {
    let mut s = service(ns, name, "ClusterIP", "None", port_list);
    if let Some(spec) = s.spec.as_mut() {
        spec.cluster_ips = Some(vec!["None".into()]);
    }
    s
}

/// An ExternalName Service.
pub fn external_name(ns: &str, name: &str, target: &str) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some(target.into()),
            ..Default::default()
        }),
        status: None,
    }
}

/// The headless Service the controller generates for YusurService `name`.
pub fn generated(ns: &str, name: &str, port_list: &[(&str, i32, &str)]) -> Service {
    let mut s = headless(ns, name, port_list);
    s.metadata.labels = Some(BTreeMap::from([(SERVICE_LABEL.into(), name.into())]));
    s.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "iaas.yusur.io/v1".into(),
        kind: "YusurService".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        ..Default::default()
    }]);
    s
}

/// An EndpointSlice of Service `service`: `(address, hostname, ready)` endpoints and
/// `(name, port, protocol)` ports.
pub fn slice(
    ns: &str,
    service: &str,
    endpoints: &[(&str, Option<&str>, Option<bool>)],
    port_list: &[(&str, i32, &str)],
) -> EndpointSlice {
    let mut m = meta(ns, &format!("{service}-abcde"));
    m.labels = Some(BTreeMap::from([(
        SLICE_SERVICE_LABEL.into(),
        service.into(),
    )]));
    EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: endpoints
            .iter()
            .map(|(ip, host, ready)| Endpoint {
                addresses: vec![ip.to_string()],
                hostname: host.map(str::to_string),
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            port_list
                .iter()
                .map(|(n, p, proto)| EndpointPort {
                    name: (!n.is_empty()).then(|| n.to_string()),
                    port: Some(*p),
                    protocol: Some(proto.to_string()),
                    app_protocol: None,
                })
                .collect(),
        ),
    }
}

/// A YusurService in `vpcs` (one: `scope: vpc`; several: `multi-vpc`; none: `spec.vpc`
/// omitted, the default VPC) with `status.clusterIP` set when `cluster_ip` is.
pub fn ysvc(
    ns: &str,
    name: &str,
    vpcs: &[&str],
    cluster_ip: Option<&str>,
    port_list: &[(&str, i32)],
) -> YusurService {
    let (scope, vpc, many) = match vpcs {
        [] => (Scope::Vpc, None, None),
        [one] => (Scope::Vpc, Some(one.to_string()), None),
        more => (
            Scope::MultiVpc,
            None,
            Some(more.iter().map(|v| v.to_string()).collect()),
        ),
    };
    let mut y = YusurService::new(
        name,
        YusurServiceSpec {
            type_: ServiceType::ClusterIP,
            scope,
            vpc,
            vpcs: many,
            cluster_ip: None,
            eip: None,
            ports: port_list
                .iter()
                .map(|(n, p)| ferry_api::ServicePort {
                    name: (!n.is_empty()).then(|| n.to_string()),
                    port: *p,
                    protocol: ferry_api::Protocol::TCP,
                    target_port: None,
                })
                .collect(),
            selector: BTreeMap::from([("app".into(), name.into())]),
            backend_kinds: None,
            session_affinity: None,
            session_affinity_timeout_seconds: None,
            health_check: None,
        },
    );
    y.metadata.namespace = Some(ns.into());
    y.status = Some(YusurServiceStatus {
        cluster_ip: cluster_ip.map(str::to_string),
        ..Default::default()
    });
    y
}

/// A lab-like cluster: one Service of each kind in the default VPC, the seed's `ysvc1` in
/// vpc1 (with its generated headless Service and slice), a multi-VPC service, and two
/// name clashes between a YusurService and a user Service.
pub fn sample() -> Snapshot {
    Snapshot {
        services: vec![
            service(
                "default",
                "web",
                "ClusterIP",
                "10.96.0.20",
                &[("http", 80, "TCP"), ("dns", 53, "UDP"), ("", 8080, "TCP")],
            ),
            service(
                "default",
                "np",
                "NodePort",
                "10.96.0.30",
                &[("http", 80, "TCP")],
            ),
            service(
                "default",
                "lb",
                "LoadBalancer",
                "10.96.0.40",
                &[("", 80, "TCP")],
            ),
            headless("default", "db", &[("pg", 5432, "TCP")]),
            external_name("default", "ext", "db.example.org."),
            external_name("default", "alias", "web.default.svc.cluster.local"),
            generated("default", "ysvc1", &[("http", 80, "TCP")]),
            // clashes: a user Service named like a YusurService
            service("default", "dup", "ClusterIP", "10.96.0.50", &[]),
            service("default", "both", "ClusterIP", "10.96.0.60", &[]),
        ],
        slices: vec![
            slice(
                "default",
                "db",
                &[
                    ("10.16.0.5", Some("db-0"), Some(true)),
                    ("10.16.0.6", None, None),
                    ("10.16.0.7", Some("db-2"), Some(false)),
                ],
                &[("pg", 5432, "TCP")],
            ),
            // the generated slice of ysvc1: backends in vpc1
            {
                let mut s = slice(
                    "default",
                    "ysvc1",
                    &[("192.168.1.10", None, Some(true))],
                    &[("http", 8080, "TCP")],
                );
                if let Some(l) = s.metadata.labels.as_mut() {
                    l.insert(SERVICE_LABEL.into(), "ysvc1".into());
                }
                s
            },
        ],
        ysvcs: vec![
            ysvc(
                "default",
                "ysvc1",
                &["vpc1"],
                Some("10.96.0.100"),
                &[("http", 80)],
            ),
            ysvc(
                "default",
                "shared",
                &["vpc1", "vpc2"],
                Some("10.96.0.101"),
                &[("", 80)],
            ),
            ysvc("default", "pending", &["vpc2"], None, &[("", 80)]),
            ysvc(
                "default",
                "dup",
                &["vpc1"],
                Some("10.96.0.102"),
                &[("", 80)],
            ),
            ysvc("default", "both", &[], Some("10.96.0.103"), &[("", 80)]),
        ],
    }
}
