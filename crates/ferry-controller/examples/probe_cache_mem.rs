//! What one cached NetworkProbe or Pod costs the controller: N objects shaped as the API
//! server sends them (probes: metadata with owner reference, labels, uid, resourceVersion,
//! the spec the controller writes, the status a node agent writes; pods: as `ferry bench
//! control-plane` creates them) stored in a kube reflector store as the watches store
//! them, before (`probe`: full objects less managedFields; `pod`: the Pod type with its
//! spec and status emptied) and after (`probe-cached`, `pod-cached`: `ferry_controller::
//! cached`). Prints the RSS growth per object (one store per run).
//!
//! `cargo run -p ferry-controller --example probe_cache_mem -- 200000 probe|probe-cached|pod|pod-cached`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use ferry_api::NetworkProbe;
use ferry_controller::cached::{CachedPod, CachedProbe};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::json;

fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Probe `i` of service `s{i/20}`, as a LIST or watch event carries it.
fn probe(i: usize) -> NetworkProbe {
    let svc = format!("s{}", i / 20);
    serde_json::from_value(json!({
        "apiVersion": "iaas.yusur.io/v1", "kind": "NetworkProbe",
        "metadata": {"name": format!("{svc}-pod-b-{i}"), "namespace": "default",
            "uid": format!("6f1c2d3e-{i:04x}-4a5b-8c7d-0123456789ab"), "resourceVersion": format!("{}", 1_000_000 + i),
            "generation": 1, "creationTimestamp": "2026-11-29T10:00:00Z",
            "labels": {"iaas.yusur.io/service": svc},
            "ownerReferences": [{"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService", "name": svc,
                "uid": "0a1b2c3d-0000-4000-8000-00000000abcd", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"target": {"kind": "Pod", "name": format!("b-{i}"), "namespace": "default", "vpc": "vpc1",
                "subnet": format!("bench-{}", i % 4), "ip": format!("10.{}.{}.{}", 100 + i % 4, (i / 4) >> 8, (i / 4) & 0xff)},
            "type": "TCP", "port": 8080, "nodeName": format!("hollow-{:05}", i % 1000),
            "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
        "status": {"phase": "Healthy", "lastTransitionTime": "2026-11-29T10:00:01Z",
            "message": "hollow node: connected", "latencyMs": 0.25, "prober": format!("hollow-{:05}", i % 1000)}
    }))
    .unwrap()
}

/// Pod `i` as the bench creates it (addresses already written), as a watch carries it.
fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("b-{i}"), "namespace": "default",
            "uid": format!("7f1c2d3e-{i:04x}-4a5b-8c7d-0123456789ab"), "resourceVersion": format!("{}", 2_000_000 + i),
            "creationTimestamp": "2026-11-29T10:00:00Z", "labels": {"svc": format!("s{}", i / 20)},
            "annotations": {"iaas.yusur.io/subnet": format!("bench-{}", i % 4), "iaas.yusur.io/ip_address": format!("10.100.{}.{}", (i >> 8) & 0xff, i & 0xff),
                "iaas.yusur.io/mac_address": "0a:00:0a:64:00:02", "iaas.yusur.io/gateway": "10.100.0.1", "iaas.yusur.io/cidr": "10.100.0.0/16"}},
        "spec": {"nodeName": format!("hollow-{:05}", i % 1000), "containers": [{"name": "c", "image": "none"}]},
        "status": {"phase": "Pending"}
    }))
    .unwrap()
}

/// What the controller stored of a Pod before `cached::CachedPod` (7af1f6a's
/// `world::project_pod`): the Pod type, its spec and status emptied but for four fields.
fn projected_pod(mut p: Pod) -> Pod {
    p.metadata.managed_fields = None;
    p.spec = p.spec.map(|s| PodSpec {
        node_name: s.node_name,
        host_network: s.host_network,
        ..Default::default()
    });
    p.status = p.status.map(|s| PodStatus {
        phase: s.phase,
        pod_ip: s.pod_ip,
        ..Default::default()
    });
    p
}

/// RSS growth (bytes) from storing `n` objects made by `make` as `K`.
fn stored<T, K>(n: usize, make: fn(usize) -> T, convert: fn(T) -> K, first: &str) -> i64
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let before = rss_kib();
    let (reader, mut writer) = reflector::store::<K>();
    for i in 0..n {
        writer.apply_watcher_event(&Event::Apply(convert(make(i))));
    }
    let after = rss_kib();
    assert!(
        reader
            .get(&reflector::ObjectRef::new(first).within("default"))
            .is_some()
    );
    std::mem::forget((reader, writer));
    (after - before) * 1024
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    // One store per process: memory freed by one would be reused by the next.
    let mode = std::env::args().nth(2).unwrap_or_else(|| "probe".into());
    let (what, bytes) = match mode.as_str() {
        "probe" => (
            "NetworkProbes, full objects (managedFields dropped)",
            stored(
                n,
                probe,
                |mut p| {
                    p.metadata.managed_fields = None;
                    p
                },
                "s0-pod-b-0",
            ),
        ),
        "probe-cached" => (
            "NetworkProbes as cached::CachedProbe",
            stored(n, probe, CachedProbe::from, "s0-pod-b-0"),
        ),
        "pod" => (
            "Pods, projected within the Pod type (before)",
            stored(n, pod, projected_pod, "b-0"),
        ),
        "pod-cached" => (
            "Pods as cached::CachedPod",
            stored(n, pod, CachedPod::from, "b-0"),
        ),
        other => panic!("unknown mode {other}: probe, probe-cached, pod, pod-cached"),
    };
    println!(
        "{n} {what} in a reflector store: {} bytes of RSS each, {:.0} MiB at 200,000",
        bytes / n as i64,
        bytes as f64 / n as f64 * 200_000.0 / 1_048_576.0
    );
}
