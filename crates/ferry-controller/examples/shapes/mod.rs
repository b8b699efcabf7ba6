//! Objects shaped as `ferry bench control-plane` leaves them at its end (every backend a
//! pod with its addresses written, every probe Healthy, every service addressed), as a
//! LIST or a watch event carries them: for the memory examples. Service `s{i}` selects
//! pods `b-{i*BACKENDS}`.. on hollow node `hollow-{b % NODES}`, in subnet `bench-{b % 4}`.
#![allow(dead_code)]

use ferry_api::{BackendKind, NetworkProbe, ProbePhase, YusurService};
use ferry_controller::service::{self, Backend, ServiceObjects};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

pub const BACKENDS: usize = 20;
pub const SUBNETS: usize = 4;

fn uid(tag: u32, i: usize) -> String {
    format!("{tag:08x}-{i:04x}-4a5b-8c7d-0123456789ab")
}

pub fn node_name(b: usize, nodes: usize) -> String {
    format!("hollow-{:05}", b % nodes)
}

/// Backend `b`'s address in its subnet.
pub fn ip(b: usize) -> std::net::Ipv4Addr {
    ip_text(b).parse().unwrap()
}

fn ip_text(b: usize) -> String {
    let (s, h) = (b % SUBNETS, b / SUBNETS + 2);
    format!("10.{}.{}.{}", 100 + s, (h >> 8) & 0xff, h & 0xff)
}

pub fn service(i: usize) -> YusurService {
    serde_json::from_value(json!({
        "apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
        "metadata": {"name": format!("s{i}"), "namespace": "default", "uid": uid(0x5f1c_2d3e, i),
            "resourceVersion": "1", "generation": 1},
        "spec": {"vpc": "vpc1", "ports": [{"port": 80, "targetPort": 8080}], "selector": {"svc": format!("s{i}")}},
        "status": {"clusterIP": format!("10.96.{}.{}", (i + 2) >> 8, (i + 2) & 0xff), "vpcs": "vpc1",
            "readyEndpoints": BACKENDS, "totalEndpoints": BACKENDS, "observedGeneration": 1}
    }))
    .unwrap()
}

/// Pod `b`, its addresses already written.
pub fn pod(b: usize, nodes: usize) -> Pod {
    let s = b % SUBNETS;
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("b-{b}"), "namespace": "default", "uid": uid(0x7f1c_2d3e, b),
            "resourceVersion": format!("{}", 2_000_000 + b), "creationTimestamp": "2026-11-29T10:00:00Z",
            "labels": {"svc": format!("s{}", b / BACKENDS)},
            "annotations": {"iaas.yusur.io/subnet": format!("bench-{s}"), "iaas.yusur.io/ip_address": ip_text(b),
                "iaas.yusur.io/mac_address": "0a:00:0a:64:00:02", "iaas.yusur.io/gateway": format!("10.{}.0.1", 100 + s),
                "iaas.yusur.io/cidr": format!("10.{}.0.0/16", 100 + s)}},
        "spec": {"nodeName": node_name(b, nodes), "containers": [{"name": "c", "image": "none"}]},
        "status": {"phase": "Pending"}
    }))
    .unwrap()
}

/// The probe of pod `b`, Healthy.
pub fn probe(b: usize, nodes: usize) -> NetworkProbe {
    let svc = format!("s{}", b / BACKENDS);
    serde_json::from_value(json!({
        "apiVersion": "iaas.yusur.io/v1", "kind": "NetworkProbe",
        "metadata": {"name": format!("{svc}-pod-b-{b}"), "namespace": "default", "uid": uid(0x6f1c_2d3e, b),
            "resourceVersion": format!("{}", 1_000_000 + b), "generation": 1, "creationTimestamp": "2026-11-29T10:00:00Z",
            "labels": {"iaas.yusur.io/service": svc},
            "ownerReferences": [{"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService", "name": svc,
                "uid": "0a1b2c3d-0000-4000-8000-00000000abcd", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"target": {"kind": "Pod", "name": format!("b-{b}"), "namespace": "default", "vpc": "vpc1",
                "subnet": format!("bench-{}", b % SUBNETS), "ip": ip_text(b)},
            "type": "TCP", "port": 8080, "nodeName": node_name(b, nodes),
            "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
        "status": {"phase": "Healthy", "lastTransitionTime": "2026-11-29T10:00:01Z",
            "message": "hollow node: connected", "latencyMs": 0.25, "prober": node_name(b, nodes)}
    }))
    .unwrap()
}

/// Hollow node `i`, Ready, with a probe port in `vpc1`.
pub fn node(i: usize, nodes: usize) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": node_name(i, nodes), "annotations": {ferry_api::ANNOTATION_PROBE_PORTS:
            format!(r#"{{"vpc1":{{"ip":"10.{}.255.{}","mac":"0a:58:0a:00:00:01"}}}}"#, 100 + i % SUBNETS, i % 250 + 1)}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": format!("172.20.{}.{}", i >> 8, i & 0xff)}]}
    }))
    .unwrap()
}

/// What the controller generates for service `s{i}`, every backend ready, with the
/// resourceVersion and uid the API server gives its Endpoints and EndpointSlice.
pub fn generated(i: usize, nodes: usize) -> ServiceObjects {
    let backends: Vec<Backend> = (i * BACKENDS..(i + 1) * BACKENDS)
        .map(|b| Backend {
            kind: BackendKind::Pod,
            namespace: "default".into(),
            name: format!("b-{b}"),
            uid: uid(0x7f1c_2d3e, b),
            ip: ip(b),
            vpc: "vpc1".into(),
            subnet: format!("bench-{}", b % SUBNETS),
            node: Some(node_name(b, nodes)),
            labels: [("svc", format!("s{i}"))].into_iter().collect(),
        })
        .collect();
    let phases = backends
        .iter()
        .map(|b| {
            (
                service::probe_name(&format!("s{i}"), b),
                ProbePhase::Healthy,
            )
        })
        .collect();
    let mut o = service::build(&service(i), &backends, &phases, None, None);
    for m in [&mut o.endpoints.metadata, &mut o.slice.metadata] {
        m.resource_version = Some(format!("{}", 3_000_000 + i));
        m.uid = Some(uid(0x8f1c_2d3e, i));
    }
    o
}
