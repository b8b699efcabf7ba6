//! What the probe, pod, Endpoints and EndpointSlice stores keep: [`CachedProbe`],
//! [`CachedPod`], [`CachedEndpoints`] and [`CachedSlice`], projections that are their own
//! `kube::Resource` (the original's group, version and kind), deserialized through the
//! full object, which is dropped at once; the reflectors store only them.
//!
//! Why: every replica caches one probe per backend and every pod (200,000 of each at 10k
//! services x 20). A full `NetworkProbe` in a reflector store costs ~2.3 KB (672 bytes
//! inline, a labels map, the owner reference, the spec's strings, the agent's message and
//! timestamps; the `probe_cache_mem` example measures it), of which the controller reads
//! its name, its service, its phase, whether its spec is the one it would write, and the
//! resourceVersion and uid a replace needs. A `Pod` is 2,176 bytes inline even with its
//! spec and status emptied (`PodSpec` alone is 1,416), of which the controller reads the
//! metadata, `spec.nodeName`, `spec.hostNetwork`, `status.phase` and `status.podIP`. Of
//! the Endpoints and EndpointSlice Ferry generates (10,000 each, of 20 addresses, ~11 KB
//! apiece as typed objects) the writer reads only whether their content is what it would
//! write: a digest.

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;

use ferry_api::{CompactMap, NetworkProbe, NetworkProbeSpec, ProbePhase, SERVICE_LABEL};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Deserialize;

/// A NetworkProbe as the controller caches it (deserialized from the full object, which is
/// dropped at once).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "NetworkProbe")]
pub struct CachedProbe {
    /// Name, namespace, resourceVersion, uid and deletion time only.
    pub metadata: ObjectMeta,
    /// Its service's name (the `SERVICE_LABEL` label).
    pub service: Option<String>,
    /// [`spec_digest`] of its spec.
    pub spec_digest: u64,
    /// `status.phase` (Unknown without a status).
    pub phase: ProbePhase,
}

impl From<NetworkProbe> for CachedProbe {
    fn from(p: NetworkProbe) -> Self {
        let m = p.metadata;
        CachedProbe {
            service: m.labels.and_then(|mut l| l.remove(SERVICE_LABEL)),
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                resource_version: m.resource_version,
                uid: m.uid,
                deletion_timestamp: m.deletion_timestamp,
                ..Default::default()
            },
            spec_digest: spec_digest(&p.spec),
            phase: p.status.map(|s| s.phase).unwrap_or_default(),
        }
    }
}

/// A digest of a probe spec: equal specs have equal digests within this process, so the
/// writer can tell whether a cached probe needs replacing without the cache keeping the
/// spec (a 64-bit collision would only skip one replace until the spec changes again).
pub fn spec_digest(spec: &NetworkProbeSpec) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(&serde_json::to_vec(spec).unwrap_or_default());
    h.finish()
}

/// `kube::Resource` for a projection `$cached` of `$of`: the original's group, version,
/// kind and plural, so a reflector of `$cached` watches `$of`.
macro_rules! projection_of {
    ($cached:ty, $of:ty) => {
        impl Resource for $cached {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(dt: &()) -> Cow<'_, str> {
                <$of>::kind(dt)
            }
            fn group(dt: &()) -> Cow<'_, str> {
                <$of>::group(dt)
            }
            fn version(dt: &()) -> Cow<'_, str> {
                <$of>::version(dt)
            }
            fn plural(dt: &()) -> Cow<'_, str> {
                <$of>::plural(dt)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

projection_of!(CachedProbe, NetworkProbe);
projection_of!(CachedPod, Pod);
projection_of!(CachedEndpoints, Endpoints);
projection_of!(CachedSlice, EndpointSlice);

/// Name, namespace, resourceVersion, uid, deletion time and labels: what the writer's
/// replace and the change feed read.
fn slim(m: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        uid: m.uid,
        deletion_timestamp: m.deletion_timestamp,
        labels: m.labels,
        ..Default::default()
    }
}

/// A generated Endpoints as the controller caches it (the watch sees only those, by the
/// service label): its metadata and the digest of its content
/// (`converge::endpoints_digest`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "Endpoints")]
pub struct CachedEndpoints {
    pub metadata: ObjectMeta,
    pub digest: u64,
}

impl From<Endpoints> for CachedEndpoints {
    fn from(e: Endpoints) -> Self {
        CachedEndpoints {
            digest: crate::converge::endpoints_digest(&e),
            metadata: slim(e.metadata),
        }
    }
}

/// An EndpointSlice as the controller caches it: one Ferry generated keeps its metadata
/// and the digest of its content (`converge::slice_digest`); any other (an ordinary
/// Service's, whose endpoints are programmed) is kept whole as well.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "EndpointSlice")]
pub struct CachedSlice {
    pub metadata: ObjectMeta,
    pub digest: u64,
    /// The whole slice, unless Ferry generated it.
    pub full: Option<Arc<EndpointSlice>>,
}

impl From<EndpointSlice> for CachedSlice {
    fn from(s: EndpointSlice) -> Self {
        let digest = crate::converge::slice_digest(&s);
        let (key, value) = crate::service::SLICE_MANAGED_BY;
        let generated = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .is_some_and(|v| v == value);
        match generated {
            true => CachedSlice {
                digest,
                metadata: slim(s.metadata),
                full: None,
            },
            false => CachedSlice {
                digest,
                metadata: slim(s.metadata.clone()),
                full: Some(Arc::new(s)),
            },
        }
    }
}

/// The annotation `kubectl apply` leaves: a copy of the whole object, read by nothing here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Pod as the controller caches it: the metadata (less managedFields), its labels and
/// annotations as compact maps (less `kubectl apply`'s copy of the object), and the four
/// fields it reads, under the Pod's own field names (see `world::pod_backend`,
/// `world::pod_subnet`, `net_model::pod_port`, `caches::address_book`,
/// `caches::net_objects`).
///
/// The labels and annotations live in [`CachedPod::labels`] and [`CachedPod::annotations`],
/// not in `metadata` (where `ResourceExt::labels()` would look, and find nothing): two
/// `BTreeMap`s cost ~1 KB per pod, 200 MB per replica at 200,000 pods.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "Pod")]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    pub labels: CompactMap,
    pub annotations: CompactMap,
    pub spec: Option<CachedPodSpec>,
    pub status: Option<CachedPodStatus>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachedPodSpec {
    pub node_name: Option<String>,
    pub host_network: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachedPodStatus {
    pub phase: Option<String>,
    pub pod_ip: Option<String>,
}

impl CachedPod {
    /// A pod with only this metadata (its labels and annotations moved to the compact maps).
    pub fn from_metadata(mut metadata: ObjectMeta) -> CachedPod {
        metadata.managed_fields = None;
        let labels = metadata.labels.take().map(CompactMap::from);
        let annotations = metadata.annotations.take().map(|mut a| {
            a.remove(LAST_APPLIED);
            CompactMap::from(a)
        });
        CachedPod {
            metadata,
            labels: labels.unwrap_or_default(),
            annotations: annotations.unwrap_or_default(),
            spec: None,
            status: None,
        }
    }
}

impl From<Pod> for CachedPod {
    fn from(p: Pod) -> Self {
        CachedPod {
            spec: p.spec.map(|s| CachedPodSpec {
                node_name: s.node_name,
                host_network: s.host_network,
            }),
            status: p.status.map(|s| CachedPodStatus {
                phase: s.phase,
                pod_ip: s.pod_ip,
            }),
            ..CachedPod::from_metadata(p.metadata)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(port: i32, status: serde_json::Value) -> NetworkProbe {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "iaas.yusur.io/v1", "kind": "NetworkProbe",
            "metadata": {"name": "s1-pod-b", "namespace": "default", "uid": "u1",
                "resourceVersion": "42", "generation": 1, "creationTimestamp": "2026-11-29T10:00:00Z",
                "labels": {"iaas.yusur.io/service": "s1", "other": "x"},
                "ownerReferences": [{"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
                    "name": "s1", "uid": "u0"}]},
            "spec": {"target": {"kind": "Pod", "name": "b", "vpc": "vpc1", "ip": "10.0.0.2"},
                "port": port, "nodeName": "n1", "periodSeconds": 10, "timeoutSeconds": 1,
                "successThreshold": 1, "failureThreshold": 3},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_cached_probe_keeps_what_the_controller_reads() {
        let full = probe(
            8080,
            serde_json::json!({"phase": "Healthy", "message": "ok", "prober": "n1",
                "lastTransitionTime": "2026-11-29T10:00:01Z"}),
        );
        // As the watch deserializes it, and as converted from the full object.
        let read: CachedProbe =
            serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        let want = CachedProbe {
            metadata: ObjectMeta {
                name: Some("s1-pod-b".into()),
                namespace: Some("default".into()),
                resource_version: Some("42".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            service: Some("s1".into()),
            spec_digest: spec_digest(&full.spec),
            phase: ProbePhase::Healthy,
        };
        assert_eq!((read, CachedProbe::from(full)), (want.clone(), want));
    }

    #[test]
    fn the_digest_follows_the_spec_and_no_status_is_unknown() {
        let (a, b) = (
            probe(8080, serde_json::Value::Null),
            probe(8081, serde_json::Value::Null),
        );
        assert_eq!(spec_digest(&a.spec), spec_digest(&a.clone().spec));
        assert_ne!(spec_digest(&a.spec), spec_digest(&b.spec));
        assert_eq!(CachedProbe::from(a).phase, ProbePhase::Unknown);
    }

    #[test]
    fn a_cached_pod_keeps_its_metadata_node_network_phase_and_address() {
        let full: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "a"},
                "annotations": {"iaas.yusur.io/subnet": "s1", LAST_APPLIED: "{}"},
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"nodeName": "n1", "hostNetwork": false,
                "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}],
                "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Running", "podIP": "10.1.0.5",
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let read: CachedPod = serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        let want = CachedPod {
            metadata: serde_json::from_value(serde_json::json!({"name": "p", "namespace": "ns",
                "uid": "u1"}))
            .unwrap(),
            labels: [("app", "a")].into_iter().collect(),
            annotations: [("iaas.yusur.io/subnet", "s1")].into_iter().collect(),
            spec: Some(CachedPodSpec {
                node_name: Some("n1".into()),
                host_network: Some(false),
            }),
            status: Some(CachedPodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.1.0.5".into()),
            }),
        };
        assert_eq!((read, CachedPod::from(full)), (want.clone(), want));
    }

    #[test]
    fn generated_endpoints_and_slices_are_cached_as_a_digest_others_whole() {
        let endpoints: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s1", "namespace": "default", "resourceVersion": "7", "uid": "u",
                "labels": {"iaas.yusur.io/service": "s1"}, "annotations": {"a": "b"}},
            "subsets": [{"addresses": [{"ip": "10.0.0.2", "nodeName": "n1"}],
                "ports": [{"port": 8080, "protocol": "TCP"}]}]
        }))
        .unwrap();
        let slice = |managed_by: &str| -> EndpointSlice {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "s1-x", "namespace": "default", "resourceVersion": "8",
                    "labels": {"kubernetes.io/service-name": "s1",
                        "endpointslice.kubernetes.io/managed-by": managed_by}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.2"], "conditions": {"ready": true}}],
                "ports": [{"port": 8080}]
            }))
            .unwrap()
        };
        // As the watch deserializes them.
        let read = |v: serde_json::Value| serde_json::from_value::<CachedSlice>(v).unwrap();
        let e: CachedEndpoints =
            serde_json::from_value(serde_json::to_value(&endpoints).unwrap()).unwrap();
        assert_eq!(e.digest, crate::converge::endpoints_digest(&endpoints));
        assert_eq!(e.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(e.metadata.annotations, None);
        assert_eq!(
            e.metadata.labels.as_ref().map(|l| l.len()),
            Some(1),
            "the service label is what the change feed reads"
        );
        let ours = slice(crate::service::SLICE_MANAGED_BY.1);
        let theirs = slice("endpointslice-controller.k8s.io");
        let (a, b) = (
            read(serde_json::to_value(&ours).unwrap()),
            read(serde_json::to_value(&theirs).unwrap()),
        );
        assert_eq!(a.digest, crate::converge::slice_digest(&ours));
        assert_eq!((a.full, b.full.as_deref()), (None, Some(&theirs)));
        assert_eq!(
            (
                CachedSlice::kind(&()),
                CachedSlice::group(&()),
                CachedSlice::plural(&())
            ),
            (
                "EndpointSlice".into(),
                "discovery.k8s.io".into(),
                "endpointslices".into()
            )
        );
    }
}
