//! The API side of a pass: each service's status (and an Event per changed condition),
//! then its generated objects (Service, Endpoints, EndpointSlice, NetworkProbes), written by
//! a task of their own off the planning loop, so the next change reaches the NB without
//! waiting for the API writes of the previous one. The newest decision per service wins: a
//! burst of passes over one service is written once. A failed write is retried with
//! backoff (see `retry`): the service is planned again. How one object is created or
//! replaced, and why the writer remembers its own writes: [`crate::converge`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_api::{NetworkProbe, ProbePhase, YusurService, YusurServiceStatus};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Endpoints, Event, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, mpsc, watch};
use tracing::Instrument;

use crate::cached::{CachedProbe, spec_digest};
use crate::caches::{Caches, cached};
use crate::converge::{Current, Memo, converge, endpoints_digest, service_digest, slice_digest};
use crate::leader::{Leadership, Term};
use crate::plan::ServiceOutcome;
use crate::retry::Retries;
use crate::service;
use crate::status;

/// A service's decision waiting to be written: its outcome and status.
type Queued = (Arc<ServiceOutcome>, YusurServiceStatus);

/// Decisions waiting to be written, and the services whose writes failed.
#[derive(Clone)]
pub struct Writes {
    queue: Arc<Mutex<BTreeMap<String, Queued>>>,
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
    pub fn push(&self, outcome: Arc<ServiceOutcome>, status: YusurServiceStatus) {
        if let Ok(mut q) = self.queue.lock() {
            q.insert(outcome.key.clone(), (outcome, status));
        }
        self.notify.notify_one();
    }

    /// The status queued for `key`, not yet written.
    #[cfg(test)]
    pub(crate) fn queued(&self, key: &str) -> Option<YusurServiceStatus> {
        let q = self.queue.lock().ok()?;
        q.get(key).map(|(_, s)| s.clone())
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

    /// Takes the next queued decision of a service with no write in flight (two writes of
    /// one service never race; the newer waits in the queue and replaces older ones) and
    /// not settling ([`SETTLE`]); else when the next settling one may go.
    fn take_one(
        &self,
        busy: &HashSet<String>,
        settling: &HashMap<String, Instant>,
        now: Instant,
    ) -> Result<Queued, Option<Instant>> {
        let mut q = self.queue.lock().map_err(|_| None)?;
        match pick(q.keys(), busy, settling, now) {
            Pick::Take(key) => q.remove(&key).ok_or(None),
            Pick::WaitUntil(at) => Err(Some(at)),
            Pick::Nothing => Err(None),
        }
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

    /// Writes queued decisions until the task is dropped, up to [`SERVICE_WRITES`]
    /// services at once, each as soon as a slot frees (no batch waits for its slowest
    /// service): per service the status first (Programmed follows the NB commit that
    /// already happened), then the generated objects.
    ///
    /// Writes only while `leading` publishes `term`. The moment it does not, the writes in
    /// flight are dropped (their services are planned again, see `record`) and the writer
    /// waits with its queue and its memory of its own writes kept: if the same term comes
    /// back nobody else wrote meanwhile (`crate::leadership`); if another comes, the pass
    /// driver drops this task.
    pub async fn run(
        self,
        client: Client,
        c: Caches,
        mut leading: watch::Receiver<Leadership>,
        term: Term,
    ) {
        // The last status written per service (uid, status): the cache may not show it yet.
        let mut written: HashMap<String, (String, YusurServiceStatus)> = HashMap::new();
        let memo = Memo::default();
        let mut busy: HashSet<String> = HashSet::new();
        let mut settling: HashMap<String, Instant> = HashMap::new();
        let mut inflight = FuturesUnordered::new();
        loop {
            if leading.borrow_and_update().as_ref() != Some(&term) {
                inflight = FuturesUnordered::new();
                for key in busy.drain() {
                    self.record(&key, false);
                }
                if leading
                    .wait_for(|l| l.as_ref() == Some(&term))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            let mut wait = None;
            while inflight.len() < SERVICE_WRITES {
                let (o, st) = match self.take_one(&busy, &settling, Instant::now()) {
                    Ok(next) => next,
                    Err(at) => {
                        wait = at;
                        break;
                    }
                };
                let uid = o.service.metadata.uid.clone().unwrap_or_default();
                let before = written
                    .get(&o.key)
                    .filter(|(u, _)| *u == uid)
                    .map(|(_, w)| w.clone())
                    .unwrap_or_else(|| o.service.status.clone().unwrap_or_default());
                busy.insert(o.key.clone());
                let span = tracing::info_span!("write service", service = %o.key);
                inflight.push(
                    write_service(client.clone(), c.clone(), memo.clone(), o, st, before, uid)
                        .instrument(span),
                );
            }
            // Far enough never to fire when nothing settles.
            let settled = tokio::time::Instant::from_std(
                wait.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            if inflight.is_empty() {
                tokio::select! {
                    _ = self.notify.notified() => {}
                    _ = tokio::time::sleep_until(settled) => {}
                    _ = leading.changed() => {}
                }
                continue;
            }
            tokio::select! {
                Some(done) = inflight.next() => {
                    let ServiceWritten { key, status, objects_ok } = done;
                    busy.remove(&key);
                    self.record(&key, status.is_some() && objects_ok);
                    let now = Instant::now();
                    if settling.len() > 4096 {
                        settling.retain(|_, until| *until > now);
                    }
                    settling.insert(key.clone(), now + SETTLE);
                    match status {
                        Some(st) => written.insert(key, st),
                        None => written.remove(&key),
                    };
                }
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep_until(settled) => {}
                _ = leading.changed() => {}
            }
        }
    }
}

/// How long after a service's write its next one waits, so that the decisions of a burst
/// (probes of one service turning Healthy one after the other as their agents report)
/// are written once: the queue keeps only the newest decision per service. The load
/// balancers do not wait for it (the NB is written by the pass, before the writer), only
/// Endpoints, the EndpointSlice and the status; kube's EndpointSlice controller has the
/// same knob (`--endpointslice-updates-batch-period`). Measured: see docs/benchmarks.md.
pub const SETTLE: Duration = Duration::from_millis(200);

/// What the writer does next.
#[derive(Debug, PartialEq, Eq)]
enum Pick {
    /// Write this service's queued decision.
    Take(String),
    /// Every queued service not being written is settling; the first may go then.
    WaitUntil(Instant),
    Nothing,
}

/// The first queued service that is neither being written nor settling.
fn pick<'a>(
    queued: impl Iterator<Item = &'a String>,
    busy: &HashSet<String>,
    settling: &HashMap<String, Instant>,
    now: Instant,
) -> Pick {
    let mut first: Option<Instant> = None;
    for k in queued.filter(|k| !busy.contains(*k)) {
        match settling.get(k).filter(|until| **until > now) {
            Some(until) => first = Some(first.map_or(*until, |f| f.min(*until))),
            None => return Pick::Take(k.clone()),
        }
    }
    first.map_or(Pick::Nothing, Pick::WaitUntil)
}

/// Services written at once. Each is, side by side, its status (then its Events), its
/// Service, Endpoints and EndpointSlice one after the other, and its probes
/// [`PROBE_WRITES`] at a time: at most 10 requests per service, 320 in all, under the API
/// server's in-flight cap per identity (400). (With 16 services per batch, a batch
/// waiting for its slowest, and every write of a service in sequence, ~7 round trips, the
/// 10k-node bench created ~30 probes/s at ~300 ms per write.)
const SERVICE_WRITES: usize = 32;

/// What one service's write left: its status as now written (`None`: the write failed)
/// and whether its generated objects were written.
struct ServiceWritten {
    key: String,
    status: Option<(String, YusurServiceStatus)>,
    objects_ok: bool,
}

async fn write_service(
    client: Client,
    c: Caches,
    memo: Memo,
    o: Arc<ServiceOutcome>,
    st: YusurServiceStatus,
    before: YusurServiceStatus,
    uid: String,
) -> ServiceWritten {
    // The status (and its Events) beside the objects: nothing in one waits for the other,
    // and one after the other a new service took ~8 round trips (measured in
    // docs/benchmarks.md); side by side it takes as long as its probes' 3 rounds.
    let ns = o.service.namespace().unwrap_or_default();
    let objects = o.objects();
    let (status, r) = tokio::join!(
        write_status(&client, &o.service, st, &before),
        write_objects(&client, &c, &memo, &ns, &objects, &o.existing_probes)
    );
    let status = status.map(|s| (uid, s));
    if let Err(e) = &r {
        tracing::warn!(error = %e, "writing generated objects failed; will retry");
    }
    ServiceWritten {
        key: o.key.clone(),
        status,
        objects_ok: r.is_ok(),
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
        // Each backend's probe runs on its node (`service::probe_spec`).
        let (ns, svc) = (
            o.service.namespace().unwrap_or_default(),
            o.service.name_any(),
        );
        for b in &o.selected {
            let Some(node) = b.node.as_ref().filter(|n| lapsed.contains(*n)) else {
                continue;
            };
            let name = service::probe_name(&svc, b);
            let Some(cur) = cached(&c.probes, &ns, &name) else {
                continue;
            };
            if cur.phase == ProbePhase::Unknown {
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

async fn write_objects(
    client: &Client,
    c: &Caches,
    memo: &Memo,
    ns: &str,
    objs: &service::ServiceObjects,
    existing_probes: &[Arc<CachedProbe>],
) -> kube::Result<()> {
    let name = objs.service.metadata.name.clone().unwrap_or_default();
    // The Service, Endpoints and EndpointSlice in order, beside the probes.
    let generated = async {
        converge(
            Api::<Service>::namespaced(client.clone(), ns),
            memo,
            cached(&c.k8s_services, ns, &name)
                .map(|cur| Current::of(cur.as_ref(), service_digest(&cur))),
            objs.service.clone(),
            service_digest(&objs.service),
        )
        .await?;
        converge(
            Api::<Endpoints>::namespaced(client.clone(), ns),
            memo,
            cached(&c.endpoints, ns, &name).map(|cur| Current::of(cur.as_ref(), cur.digest)),
            objs.endpoints.clone(),
            endpoints_digest(&objs.endpoints),
        )
        .await?;
        let slice_name = objs.slice.metadata.name.clone().unwrap_or_default();
        converge(
            Api::<EndpointSlice>::namespaced(client.clone(), ns),
            memo,
            cached(&c.slices, ns, &slice_name).map(|cur| Current::of(cur.as_ref(), cur.digest)),
            objs.slice.clone(),
            slice_digest(&objs.slice),
        )
        .await?;
        Ok::<(), kube::Error>(())
    };

    let probes: Api<NetworkProbe> = Api::namespaced(client.clone(), ns);
    let want: BTreeSet<String> = objs
        .probes
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    // A service's probes are written side by side (a new service of 20 backends is 20
    // creates): one after the other, they capped probe creation near 400/s. Each is
    // compared with the cache as it is now (fresher than when the service was planned).
    let writes: Vec<_> = objs
        .probes
        .iter()
        .map(|p| {
            let cur = p
                .metadata
                .name
                .as_deref()
                .and_then(|n| cached(&c.probes, ns, n))
                .map(|e| Current::of(e.as_ref(), e.spec_digest));
            converge(probes.clone(), memo, cur, p.clone(), spec_digest(&p.spec))
        })
        .collect();
    let probe_writes = futures::stream::iter(writes)
        .buffer_unordered(PROBE_WRITES)
        .try_collect::<Vec<()>>();
    tokio::try_join!(generated, probe_writes)?;
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

/// What the writer compares of a generated Service (the API server fills in the rest).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_service_neither_written_nor_settling_goes_next() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<String>>();
        let busy: HashSet<String> = ["a".to_string()].into();
        let settling: HashMap<String, Instant> = [
            ("b".to_string(), ms(150)),
            ("c".to_string(), ms(90)),
            ("d".to_string(), ms(10)),
        ]
        .into();
        let cases = [
            // a is being written, b settles: c, settled at 90 ms... not yet at 50 ms.
            (keys(&["a", "b", "c"]), ms(50), Pick::WaitUntil(ms(90))),
            (keys(&["a", "b", "c"]), ms(100), Pick::Take("c".into())),
            // d's settling is over; e never wrote.
            (keys(&["b", "d"]), ms(50), Pick::Take("d".into())),
            (keys(&["b", "e"]), ms(50), Pick::Take("e".into())),
            (keys(&["a"]), ms(50), Pick::Nothing),
            (keys(&[]), ms(50), Pick::Nothing),
        ];
        for (queued, now, want) in cases {
            assert_eq!(
                pick(queued.iter(), &busy, &settling, now),
                want,
                "{queued:?}"
            );
        }
    }
}
