//! Global names: a federated service's name resolves in every member of its tenant to the
//! EIPs of the targets that serve it (issue 17, "global access").
//!
//! [`desired_global`] (pure) picks, from the federated objects' status, the EIPs of targets
//! whose `Ready` condition is True (applied at their Work's generation, member ready,
//! ready endpoints). The federation controller writes each member's names into the
//! ConfigMap [`CONFIGMAP`] of the member's own namespace ([`configmap_manifest`]): a
//! member reads nothing outside its namespace, so it never sees another tenant's objects,
//! and its token could not list them. The join agent ([`run`]) keeps, in its member, one selector-less
//! headless `v1 Service` `NAME-global` in the object's namespace with an EndpointSlice of
//! those addresses, which the member's cluster DNS (`ferry-dns`) already answers:
//! `NAME-global.NAMESPACE.svc.cluster.local` -> the ready EIPs, from the member's default
//! VPC and its nodes. Every member of the tenant gets it, placed or not (the name is
//! global; the mask governs the service, not its name), and no member of another tenant.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::cache::reflect;
use crate::types::{FederatedYusurService, LABEL_TENANT, LABEL_WORKSPACE};

/// The ConfigMap, in a member's namespace of the federation, holding its global names.
pub const CONFIGMAP: &str = "global-names";
/// Its data key: a JSON list of `{namespace, name, addresses}`.
pub const CONFIGMAP_KEY: &str = "names.json";

/// Marks the Services (and slices) this module owns in a member.
pub const LABEL_GLOBAL: &str = "federation.iaas.yusur.io/global";
/// Appended to the federated object's name.
pub const SUFFIX: &str = "-global";
const MANAGER: &str = "ferry-federation-global";
/// How long a change waits for more before a pass.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// `(namespace, service name)` -> the addresses it must answer, sorted.
pub type GlobalNames = BTreeMap<(String, String), BTreeSet<String>>;

/// The global names a member of `tenant`/`workspace` holds (absent labels included, as
/// for placement). Objects whose name with [`SUFFIX`] would not be a valid Service name
/// are left out.
pub fn desired_global<'a>(
    objects: impl IntoIterator<Item = &'a FederatedYusurService>,
    tenant: Option<&str>,
    workspace: Option<&str>,
) -> GlobalNames {
    let mut out = GlobalNames::new();
    for o in objects {
        let labels = o.labels();
        if labels.get(LABEL_TENANT).map(String::as_str) != tenant
            || labels.get(LABEL_WORKSPACE).map(String::as_str) != workspace
            || o.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let name = format!("{}{SUFFIX}", o.name_any());
        if name.len() > 63 {
            continue;
        }
        let eips: BTreeSet<String> = o
            .status
            .iter()
            .flat_map(|s| &s.targets)
            .filter(|t| {
                t.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
            .filter_map(|t| t.report.eip.clone())
            .filter(|e| e.parse::<std::net::Ipv4Addr>().is_ok())
            .collect();
        out.insert((o.namespace().unwrap_or_default(), name), eips);
    }
    out
}

/// The ConfigMap that hands `names` to the member whose namespace is `namespace`.
pub fn configmap_manifest(namespace: &str, names: &GlobalNames) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": namespace},
        "data": {CONFIGMAP_KEY: encode(names)},
    })
}

/// `names` as the ConfigMap holds them (sorted, so equal names give equal text).
pub fn encode(names: &GlobalNames) -> String {
    let list: Vec<Value> = names
        .iter()
        .map(|((ns, name), addrs)| json!({"namespace": ns, "name": name, "addresses": addrs}))
        .collect();
    Value::Array(list).to_string()
}

/// The names a ConfigMap's text holds; None when it is not what [`encode`] writes.
pub fn decode(text: &str) -> Option<GlobalNames> {
    #[derive(serde::Deserialize)]
    struct Entry {
        namespace: String,
        name: String,
        addresses: BTreeSet<String>,
    }
    let list: Vec<Entry> = serde_json::from_str(text).ok()?;
    Some(
        list.into_iter()
            .map(|e| ((e.namespace, e.name), e.addresses))
            .collect(),
    )
}

/// The headless Service of one global name.
pub fn service_manifest(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL_GLOBAL: "true"}},
        "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    })
}

/// Its EndpointSlice: one ready endpoint per address (none: the name answers nothing).
pub fn slice_manifest(namespace: &str, name: &str, eips: &BTreeSet<String>) -> Value {
    let endpoints: Vec<Value> = eips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {LABEL_GLOBAL: "true", "kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    })
}

/// Keeps the member's global names in step with the ConfigMap [`CONFIGMAP`] of its
/// namespace `namespace` in the federation (a watch of it) until `shutdown`: a pass on each
/// change, and at least every `every`. Only what changed is written; what the agent owns
/// but no longer wants is deleted (on the first pass, whatever the member holds with
/// [`LABEL_GLOBAL`]). While the ConfigMap is missing (the controller has not written it
/// yet) the member's names are left as they are. Errors are logged and the next pass
/// retries.
pub async fn run(
    federation: Client,
    member: Client,
    namespace: String,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let (wake_tx, mut wake) = mpsc::channel(1);
    let maps = reflect(
        Api::<ConfigMap>::namespaced(federation, &namespace),
        watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP}")),
        move |_: Option<&ConfigMap>| {
            let _ = wake_tx.try_send(());
        },
    );
    tokio::select! {
        _ = maps.wait_until_ready() => {}
        _ = stopped(&mut shutdown) => return,
    }
    let mut applied: Option<GlobalNames> = None;
    loop {
        let desired = maps
            .state()
            .iter()
            .find(|m| m.name_any() == CONFIGMAP)
            .and_then(|m| decode(m.data.as_ref()?.get(CONFIGMAP_KEY)?));
        if let Some(desired) = desired
            && applied.as_ref() != Some(&desired)
        {
            match apply(&member, &desired, applied.as_ref()).await {
                Ok(()) => applied = Some(desired),
                // Unknown state after a failure: the next pass compares with the member again.
                Err(e) => {
                    tracing::warn!(error = %e, "global names");
                    applied = None;
                }
            }
        }
        tokio::select! {
            // A burst of changes becomes one pass: names need not follow each write
            // within milliseconds.
            _ = wake.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while wake.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(every) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Writes the names of `desired` that differ from `applied` and deletes those no longer
/// desired (`applied` None: compares with what the member holds).
async fn apply(
    member: &Client,
    desired: &GlobalNames,
    applied: Option<&GlobalNames>,
) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(MANAGER).force();
    for ((ns, name), eips) in desired {
        if applied.and_then(|a| a.get(&(ns.clone(), name.clone()))) == Some(eips) {
            continue;
        }
        let svcs: Api<Service> = Api::namespaced(member.clone(), ns);
        let slices: Api<EndpointSlice> = Api::namespaced(member.clone(), ns);
        svcs.patch(name, &pp, &Patch::Apply(service_manifest(ns, name)))
            .await?;
        slices
            .patch(name, &pp, &Patch::Apply(slice_manifest(ns, name, eips)))
            .await?;
    }
    let held: Vec<(String, String)> = match applied {
        Some(a) => a.keys().cloned().collect(),
        None => Api::<Service>::all(member.clone())
            .list(&ListParams::default().labels(&format!("{LABEL_GLOBAL}=true")))
            .await?
            .items
            .iter()
            .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
            .collect(),
    };
    for (ns, name) in held {
        if desired.contains_key(&(ns.clone(), name.clone())) {
            continue;
        }
        let dp = DeleteParams::default();
        let _ = Api::<EndpointSlice>::namespaced(member.clone(), &ns)
            .delete(&name, &dp)
            .await;
        match Api::<Service>::namespaced(member.clone(), &ns)
            .delete(&name, &dp)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    fn fysvc(
        name: &str,
        tenant: Option<&str>,
        targets: &[(&str, Option<&str>, bool)],
    ) -> FederatedYusurService {
        let mut labels = serde_json::Map::new();
        if let Some(t) = tenant {
            labels.insert(LABEL_TENANT.into(), json!(t));
        }
        labels.insert(LABEL_WORKSPACE.into(), json!("w1"));
        let targets: Vec<Value> = targets
            .iter()
            .map(|(n, eip, ready)| {
                json!({"name": n, "cluster": n, "namespace": "default", "eip": eip,
                       "readyEndpoints": 1, "totalEndpoints": 1,
                       "conditions": [{"type": "Ready", "status": if *ready {"True"} else {"False"},
                                       "reason": "R", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "federation.iaas.yusur.io/v1", "kind": "FederatedYusurService",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"template": {"spec": {"ports": [{"port": 80}]}},
                     "placement": {"topologyType": "cluster", "clusters": ["c1"]}},
            "status": {"targets": targets},
        }))
        .unwrap()
    }

    #[test]
    fn global_names_hold_the_ready_eips_of_the_members_tenant_only() {
        let objects = vec![
            fysvc(
                "web",
                Some("t1"),
                &[
                    ("c1", Some("198.18.0.151"), true),
                    ("c2", Some("198.18.0.152"), true),
                    ("c3", Some("198.18.0.153"), false),
                    ("c4", None, true),
                ],
            ),
            fysvc(
                "none-ready",
                Some("t1"),
                &[("c1", Some("198.18.0.1"), false)],
            ),
            fysvc("other", Some("t2"), &[("c1", Some("198.18.0.9"), true)]),
            fysvc("unlabelled", None, &[("c1", Some("198.18.0.8"), true)]),
            fysvc(
                &"x".repeat(60),
                Some("t1"),
                &[("c1", Some("198.18.0.7"), true)],
            ),
        ];
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let key = |n: &str| ("default".to_string(), n.to_string());
        let cases: Vec<(&str, Option<&str>, GlobalNames)> = vec![
            (
                "tenant t1",
                Some("t1"),
                BTreeMap::from([
                    (key("web-global"), set(&["198.18.0.151", "198.18.0.152"])),
                    (key("none-ready-global"), set(&[])),
                ]),
            ),
            (
                "tenant t2",
                Some("t2"),
                BTreeMap::from([(key("other-global"), set(&["198.18.0.9"]))]),
            ),
            (
                "no tenant",
                None,
                BTreeMap::from([(key("unlabelled-global"), set(&["198.18.0.8"]))]),
            ),
        ];
        for (name, tenant, want) in cases {
            let got = desired_global(&objects, tenant, Some("w1"));
            // What the controller writes for the member is what the member reads back.
            assert_eq!(
                decode(&encode(&got)),
                Some(got.clone()),
                "{name}: round trip"
            );
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(decode("{}"), None);
    }
}
