//! The API side of a pass: each service's status (and an Event per changed condition),
//! then its generated objects (Service, Endpoints, EndpointSlice, NetworkProbes), written by
//! a task of their own off the planning loop, so the next change reaches the NB without
//! waiting for the API writes of the previous one. The newest decision per service wins: a
//! burst of passes over one service is written once. A failed write is retried with
//! backoff (see `retry`): the service is planned again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_api::{NetworkProbe, ProbePhase, YusurService, YusurServiceStatus};
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Endpoints, Event, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use crate::caches::{Caches, cached};
use crate::plan::ServiceOutcome;
use crate::retry::Retries;
use crate::service;
use crate::status;

/// Decisions waiting to be written, and the services whose writes failed.
#[derive(Clone)]
pub struct Writes {
    queue: Arc<Mutex<BTreeMap<String, (ServiceOutcome, YusurServiceStatus)>>>,
    notify: Arc<Notify>,
    /// Services to plan again, with backoff.
    pub retries: Arc<Mutex<Retries<String>>>,
    /// Wakes the pass driver when a retry is scheduled.
    wake: mpsc::Sender<()>,
}

impl Writes {
    pub fn new(wake: mpsc::Sender<()>) -> Writes {
        Writes {
            queue: Default::default(),
            notify: Default::default(),
            retries: Default::default(),
            wake,
        }
    }

    /// Queues a service's decision, replacing an older one not yet written.
    pub fn push(&self, outcome: ServiceOutcome, status: YusurServiceStatus) {
        if let Ok(mut q) = self.queue.lock() {
            q.insert(outcome.key.clone(), (outcome, status));
        }
        self.notify.notify_one();
    }

    /// Drops what is not written yet (leadership lost).
    pub fn clear(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.clear();
        }
        if let Ok(mut r) = self.retries.lock() {
            r.clear();
        }
    }

    fn take(&self) -> Vec<(ServiceOutcome, YusurServiceStatus)> {
        self.queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q).into_values().collect())
            .unwrap_or_default()
    }

    fn record(&self, key: &str, ok: bool) {
        let Ok(mut r) = self.retries.lock() else {
            return;
        };
        if ok {
            r.succeeded(&key.to_string());
        } else {
            r.failed(key.to_string(), Instant::now());
            let _ = self.wake.try_send(());
        }
    }

    /// Writes queued decisions until the task is dropped: statuses first (Programmed
    /// follows the NB commit that already happened), then the generated objects.
    pub async fn run(self, client: Client, c: Caches) {
        // The last status written per service (uid, status): the cache may not show it yet.
        let mut written: HashMap<String, (String, YusurServiceStatus)> = HashMap::new();
        loop {
            let batch = self.take();
            if batch.is_empty() {
                self.notify.notified().await;
                continue;
            }
            let writes: Vec<_> = batch
                .iter()
                .map(|(o, st)| {
                    let uid = o.service.metadata.uid.clone().unwrap_or_default();
                    let before = written
                        .get(&o.key)
                        .filter(|(u, _)| *u == uid)
                        .map(|(_, w)| w.clone())
                        .unwrap_or_else(|| o.service.status.clone().unwrap_or_default());
                    let client = client.clone();
                    let span = tracing::info_span!("write status", service = %o.key);
                    async move {
                        let now = write_status(&client, &o.service, st.clone(), &before).await;
                        (o.key.clone(), now.map(|s| (uid, s)))
                    }
                    .instrument(span)
                })
                .collect();
            let results: Vec<(String, Option<(String, YusurServiceStatus)>)> =
                futures::stream::iter(writes)
                    .buffer_unordered(16)
                    .collect()
                    .await;
            let mut status_ok = BTreeSet::new();
            for (k, st) in results {
                match st {
                    Some(st) => {
                        status_ok.insert(k.clone());
                        written.insert(k, st)
                    }
                    None => written.remove(&k),
                };
            }
            let outcomes: Vec<ServiceOutcome> = batch.into_iter().map(|(o, _)| o).collect();
            let this = &self;
            let (client, c, status_ok) = (&client, &c, &status_ok);
            futures::stream::iter(&outcomes)
                .for_each_concurrent(16, |o| {
                    let span = tracing::info_span!("write objects", service = %o.key);
                    async move {
                        let ns = o.service.namespace().unwrap_or_default();
                        let r = write_objects(client, c, &ns, &o.objects, &o.existing_probes).await;
                        if let Err(e) = &r {
                            tracing::warn!(error = %e, "writing generated objects failed; will retry");
                        }
                        this.record(&o.key, r.is_ok() && status_ok.contains(&o.key));
                    }
                    .instrument(span)
                })
                .await;
        }
    }
}

/// Writes `status` unless `before` (the newest status known: the last one this controller
/// wrote, else the cached one) already says it, and an Event for each condition that
/// changed. Returns what the service's status now is, `None` when the write failed.
async fn write_status(
    client: &Client,
    svc: &YusurService,
    mut status: YusurServiceStatus,
    before: &YusurServiceStatus,
) -> Option<YusurServiceStatus> {
    status::keep_transition_times(&mut status, before);
    if *before == status {
        return Some(status);
    }
    let ns = svc.namespace().unwrap_or_default();
    let api: Api<YusurService> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api
        .patch_status(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
    {
        tracing::warn!(error = %e, "writing status failed; will retry");
        return None;
    }
    for c in status::changed_conditions(before, &status) {
        let type_ = if c.status == "True" {
            "Normal"
        } else {
            "Warning"
        };
        event(client, svc, type_, &c.reason, &c.message).await;
    }
    Some(status)
}

/// Probes of backends on a node whose agent stopped renewing its Lease go Unknown (so
/// the backends leave the load balancers, as Kubernetes takes a lost node's endpoints out
/// of service); probes of backends naming no node have already moved to a live agent.
pub async fn mark_orphaned_probes(
    client: &Client,
    c: &Caches,
    outcomes: &[ServiceOutcome],
    lapsed: &BTreeSet<String>,
) {
    if lapsed.is_empty() {
        return;
    }
    let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    for o in outcomes {
        for p in &o.objects.probes {
            let Some(node) = p.spec.node_name.as_ref().filter(|n| lapsed.contains(*n)) else {
                continue;
            };
            let (ns, name) = (p.namespace().unwrap_or_default(), p.name_any());
            let Some(cur) = cached(&c.probes, &ns, &name) else {
                continue;
            };
            if cur
                .status
                .as_ref()
                .is_none_or(|s| s.phase == ProbePhase::Unknown)
            {
                continue;
            }
            let status = json!({"status": {"phase": "Unknown", "lastTransitionTime": now,
                "message": format!("the agent of node {node} stopped renewing its Lease")}});
            let api: Api<NetworkProbe> = Api::namespaced(client.clone(), &ns);
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                tracing::warn!(probe = %format!("{ns}/{name}"), error = %e, "marking a probe Unknown failed");
            }
        }
    }
}

/// Probe writes of one service in flight at once.
const PROBE_WRITES: usize = 8;

fn pp() -> PostParams {
    PostParams {
        field_manager: Some("ferry-controller".into()),
        ..Default::default()
    }
}

/// Creates `desired` or replaces the cached copy when `differs` says so.
async fn converge<K>(
    api: Api<K>,
    current: Option<Arc<K>>,
    mut desired: K,
    differs: impl Fn(&K, &K) -> bool,
) -> kube::Result<()>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    match current {
        None => match api.create(&pp(), &desired).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        },
        Some(cur) if differs(&cur, &desired) => {
            desired.meta_mut().resource_version = cur.meta().resource_version.clone();
            desired.meta_mut().uid = cur.meta().uid.clone();
            let name = desired.meta().name.clone().unwrap_or_default();
            match api.replace(&name, &pp(), &desired).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(_) => Ok(()),
    }
}

async fn write_objects(
    client: &Client,
    c: &Caches,
    ns: &str,
    objs: &service::ServiceObjects,
    existing_probes: &[Arc<NetworkProbe>],
) -> kube::Result<()> {
    let name = objs.service.metadata.name.clone().unwrap_or_default();
    converge(
        Api::<Service>::namespaced(client.clone(), ns),
        cached(&c.k8s_services, ns, &name),
        objs.service.clone(),
        service_differs,
    )
    .await?;
    converge(
        Api::<Endpoints>::namespaced(client.clone(), ns),
        cached(&c.endpoints, ns, &name),
        objs.endpoints.clone(),
        |a, b| a.subsets != b.subsets || a.metadata.labels != b.metadata.labels,
    )
    .await?;
    let slice_name = objs.slice.metadata.name.clone().unwrap_or_default();
    converge(
        Api::<EndpointSlice>::namespaced(client.clone(), ns),
        cached(&c.slices, ns, &slice_name),
        objs.slice.clone(),
        |a, b| a.endpoints != b.endpoints || a.ports != b.ports,
    )
    .await?;
    let probes: Api<NetworkProbe> = Api::namespaced(client.clone(), ns);
    let want: BTreeSet<String> = objs
        .probes
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    // A service's probes are written side by side (a new service of 20 backends is 20
    // creates): one after the other, they capped probe creation near 400/s.
    let existing: BTreeMap<&str, &Arc<NetworkProbe>> = existing_probes
        .iter()
        .filter_map(|e| Some((e.metadata.name.as_deref()?, e)))
        .collect();
    let writes: Vec<_> = objs
        .probes
        .iter()
        .map(|p| {
            let cur = p
                .metadata
                .name
                .as_deref()
                .and_then(|n| existing.get(n))
                .map(|e| Arc::clone(e));
            converge(probes.clone(), cur, p.clone(), probe_differs)
        })
        .collect();
    futures::stream::iter(writes)
        .buffer_unordered(PROBE_WRITES)
        .try_collect::<Vec<()>>()
        .await?;
    for stale in existing_probes
        .iter()
        .filter(|p| !want.contains(&p.name_any()))
    {
        match probes
            .delete(&stale.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn probe_differs(a: &NetworkProbe, b: &NetworkProbe) -> bool {
    a.spec != b.spec
}

fn service_differs(cur: &Service, want: &Service) -> bool {
    cur.spec.as_ref().map(|s| (&s.ports, &s.cluster_ip))
        != want.spec.as_ref().map(|s| (&s.ports, &s.cluster_ip))
        || cur.metadata.annotations != want.metadata.annotations
        || cur.metadata.labels != want.metadata.labels
}

async fn event(client: &Client, svc: &YusurService, type_: &str, reason: &str, message: &str) {
    let ns = svc.namespace().unwrap_or_default();
    let now = Time(Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", svc.name_any())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("iaas.yusur.io/v1".into()),
            kind: Some("YusurService".into()),
            name: Some(svc.name_any()),
            namespace: Some(ns.clone()),
            uid: svc.uid(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("ferry-controller".into()),
            host: None,
        }),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(error = %e, "recording an event failed");
    }
}
