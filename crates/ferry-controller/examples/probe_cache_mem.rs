//! What one cached NetworkProbe, Pod, Endpoints or EndpointSlice costs the controller: N
//! objects shaped as the API server sends them (probes: metadata with owner reference,
//! labels, uid, resourceVersion, the spec the controller writes, the status a node agent
//! writes; pods: as `ferry bench control-plane` creates them; Endpoints and EndpointSlices:
//! as the controller generates them for a service of 20 ready backends) stored in a kube
//! reflector store as the watches store them, before (`probe`: full objects less
//! managedFields; `pod`: the Pod type with its spec and status emptied; `endpoints`,
//! `slice`: full objects) and after (`probe-cached`, `pod-cached`, `endpoints-cached`,
//! `slice-cached`: `ferry_controller::cached`). Prints the RSS growth per object (one store
//! per run).
//!
//! `cargo run -p ferry-controller --example probe_cache_mem -- 200000 probe|probe-cached|pod|pod-cached`
//! `cargo run -p ferry-controller --example probe_cache_mem -- 10000 endpoints|endpoints-cached|slice|slice-cached`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use ferry_controller::cached::{CachedEndpoints, CachedPod, CachedProbe, CachedSlice};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kube::runtime::reflector;
use kube::runtime::watcher::Event;

mod shapes;

fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// As the bench's 1,000-node runs spread them.
const NODES: usize = 1000;

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
                |i| shapes::probe(i, NODES),
                |mut p| {
                    p.metadata.managed_fields = None;
                    p
                },
                "s0-pod-b-0",
            ),
        ),
        "probe-cached" => (
            "NetworkProbes as cached::CachedProbe",
            stored(
                n,
                |i| shapes::probe(i, NODES),
                CachedProbe::from,
                "s0-pod-b-0",
            ),
        ),
        "pod" => (
            "Pods, projected within the Pod type (before)",
            stored(n, |i| shapes::pod(i, NODES), projected_pod, "b-0"),
        ),
        "pod-cached" => (
            "Pods as cached::CachedPod",
            stored(n, |i| shapes::pod(i, NODES), CachedPod::from, "b-0"),
        ),
        "endpoints" => (
            "generated Endpoints (20 addresses), full objects",
            stored(n, |i| shapes::generated(i, NODES).endpoints, |e| e, "s0"),
        ),
        "endpoints-cached" => (
            "generated Endpoints as cached::CachedEndpoints",
            stored(
                n,
                |i| shapes::generated(i, NODES).endpoints,
                CachedEndpoints::from,
                "s0",
            ),
        ),
        "slice" => (
            "generated EndpointSlices (20 endpoints), full objects",
            stored(n, |i| shapes::generated(i, NODES).slice, |e| e, "s0-ferry"),
        ),
        "slice-cached" => (
            "generated EndpointSlices as cached::CachedSlice",
            stored(
                n,
                |i| shapes::generated(i, NODES).slice,
                CachedSlice::from,
                "s0-ferry",
            ),
        ),
        other => panic!(
            "unknown mode {other}: probe, probe-cached, pod, pod-cached, endpoints, endpoints-cached, slice, slice-cached"
        ),
    };
    println!(
        "{n} {what} in a reflector store: {} bytes of RSS each, {:.0} MiB in all",
        bytes / n as i64,
        bytes as f64 / 1_048_576.0
    );
}
