//! The federation controller: a plain kube-rs client of the federation API server. It
//! never dials a member: it writes each target's [`Work`] into the member's namespace
//! `ferry-member-<cluster>` and reads back the status the member's join agent writes
//! there. Replicas share a Lease; only the holder writes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Mutex, mpsc, watch};
use tracing::Instrument;

use crate::cache::{Dirty, InFlight, reflect};
use crate::lease::{self, LeaseConfig};
use crate::plan::{self, ExistingWork, FINALIZER, LABEL_OWNER_UID, Member, PlanInput, WorkAction};
use crate::types::{
    FederatedTypeConfig, FederatedYusurService, FederatedYusurServiceStatus, MemberCluster, Work,
    WorkSpec,
};

/// Name of the FederatedTypeConfig of YusurServices.
pub const YSVC_TYPE_CONFIG: &str = "yusurservices.iaas.yusur.io";

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub identity: String,
    /// A member whose last heartbeat is older than this is not ready.
    pub member_grace: Duration,
    /// Writes in flight at once.
    pub concurrency: usize,
    /// Every object is replanned this often even without events (a safety net).
    pub resync: Duration,
    pub lease: LeaseConfig,
}

impl ControllerConfig {
    pub fn new(identity: impl Into<String>) -> Self {
        let identity = identity.into();
        ControllerConfig {
            lease: LeaseConfig::new(identity.clone()),
            identity,
            member_grace: Duration::from_secs(15),
            concurrency: 32,
            resync: Duration::from_secs(60),
        }
    }
}

/// The caches of the federation API server the controller plans from.
struct Caches {
    objects: Store<FederatedYusurService>,
    members: Store<MemberCluster>,
    works: Store<Work>,
    types: Store<FederatedTypeConfig>,
}

/// Writes whose effect the caches may not show yet.
#[derive(Default)]
struct Sent {
    works: InFlight<(String, String), Option<WorkSpec>>,
    status: InFlight<(String, String), FederatedYusurServiceStatus>,
    namespaces: BTreeSet<String>,
    /// Objects whose writes failed, replanned at the next tick.
    retry: BTreeSet<(String, String)>,
    /// Member -> the global names last written into its namespace, and when.
    globals: BTreeMap<String, (String, Instant)>,
}

/// A member's global names are rewritten at most this often; a change within it waits for
/// the next tick (a bulk create turns many targets ready one after the other).
const GLOBALS_EVERY: Duration = Duration::from_secs(1);

/// Runs until `shutdown` turns true: caches warm at once, writes only while holding the
/// Lease, the Lease released on the way out.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), kube::Error> {
    let (wake_tx, mut wake) = mpsc::channel(1);
    let dirty: Arc<Dirty<(String, String)>> = Arc::new(Dirty::new(wake_tx));
    let key = |ns: Option<String>, name: String| (ns.unwrap_or_default(), name);
    let c = Caches {
        objects: reflect(Api::all(client.clone()), watcher::Config::default(), {
            let d = dirty.clone();
            move |o: Option<&FederatedYusurService>| match o {
                Some(o) => d.mark(key(o.namespace(), o.name_any())),
                None => d.mark_all(),
            }
        }),
        members: reflect(Api::all(client.clone()), watcher::Config::default(), {
            // Member changes matter through their views, compared every pass.
            let d = dirty.clone();
            move |_: Option<&MemberCluster>| d.poke()
        }),
        works: reflect(
            Api::all(client.clone()),
            watcher::Config::default().labels(LABEL_OWNER_UID),
            {
                let d = dirty.clone();
                move |w: Option<&Work>| match w {
                    Some(w) => d.mark((w.spec.owner.namespace.clone(), w.spec.owner.name.clone())),
                    None => d.mark_all(),
                }
            },
        ),
        types: reflect(Api::all(client.clone()), watcher::Config::default(), {
            let d = dirty.clone();
            move |_: Option<&FederatedTypeConfig>| d.mark_all()
        }),
    };
    let ready = async {
        let _ = c.objects.wait_until_ready().await;
        let _ = c.members.wait_until_ready().await;
        let _ = c.works.wait_until_ready().await;
        let _ = c.types.wait_until_ready().await;
    };
    tokio::select! {
        _ = ready => {}
        _ = stopped(&mut shutdown) => return Ok(()),
    }
    tracing::info!(identity = %config.identity, "federation caches warm; waiting for the lease");
    let lease_cfg = config.lease.clone();
    let (leading_tx, mut leading) = watch::channel(false);
    let holder = tokio::spawn(hold_lease(
        client.clone(),
        lease_cfg.clone(),
        leading_tx,
        shutdown.clone(),
    ));
    let sent = Mutex::new(Sent::default());
    let tick = config.member_grace / 3;
    let mut views: Vec<Member> = Vec::new();
    let mut resynced = Instant::now();
    loop {
        if !*leading.borrow() {
            // Standing by: whatever we sent may be overwritten by the leader meanwhile.
            sent.lock().await.works.clear();
            sent.lock().await.globals.clear();
            views.clear();
            dirty.mark_all();
            tokio::select! {
                _ = leading.wait_for(|l| *l) => {}
                _ = stopped(&mut shutdown) => break,
            }
            tracing::info!(identity = %config.identity, "leading the federation");
        }
        if resynced.elapsed() >= config.resync {
            dirty.mark_all();
            resynced = Instant::now();
        }
        let (all, keys) = dirty.take();
        let retry = pass(&client, &c, &config, &sent, &mut views, all, keys).await;
        for k in retry {
            // Failed writes come back with the next tick, not at once.
            sent.lock().await.retry.insert(k);
        }
        tokio::select! {
            _ = wake.recv() => {
                // Coalesce a burst of events into one pass.
                tokio::time::sleep(Duration::from_millis(5)).await;
                while wake.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(tick) => {
                for k in std::mem::take(&mut sent.lock().await.retry) {
                    dirty.mark(k);
                }
            }
            _ = leading.changed() => {
                if !*leading.borrow() {
                    tracing::warn!(identity = %config.identity, "lost the federation lease; standing by");
                }
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
    holder.abort();
    let _ = holder.await;
    lease::release(&client, &lease_cfg).await;
    Ok(())
}

/// Takes and renews the Lease in its own task, so a long pass never lets it lapse
/// unnoticed; `leading` turns false when the Lease is lost or could not be renewed for
/// two thirds of its duration.
async fn hold_lease(
    client: Client,
    cfg: LeaseConfig,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_ok: Option<Instant> = None;
    loop {
        match lease::try_acquire(&client, &cfg).await {
            Ok(true) => last_ok = Some(Instant::now()),
            Ok(false) => last_ok = None,
            Err(e) => tracing::warn!(error = %e, "renewing the federation lease"),
        }
        let held = last_ok.is_some_and(|t| t.elapsed() < cfg.duration * 2 / 3);
        leading.send_if_modified(|l| std::mem::replace(l, held) != held);
        let pause = if held {
            cfg.duration / 3
        } else {
            cfg.duration / 5
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Resolves once shutdown is requested.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// One level-triggered pass over the objects that changed (all of them when a member's
/// view, the type's policy or the caches changed wholesale); returns the objects whose
/// writes failed.
async fn pass(
    client: &Client,
    c: &Caches,
    config: &ControllerConfig,
    sent: &Mutex<Sent>,
    views: &mut Vec<Member>,
    mut all: bool,
    keys: std::collections::HashSet<(String, String)>,
) -> Vec<(String, String)> {
    let now = Timestamp::now();
    let members_raw = c.members.state();
    let mut members: Vec<Member> = members_raw
        .iter()
        .map(|mc| Member::of(mc, now, config.member_grace))
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    if members != *views {
        // A member joined, left, changed tenancy or cells, or turned (not) ready.
        all = true;
        *views = members.clone();
    }
    let mc_api: Api<MemberCluster> = Api::all(client.clone());
    for mc in &members_raw {
        if let Some(st) = plan::stale_member_status(mc, now, config.member_grace) {
            let patch = json!({"status": st});
            if let Err(e) = mc_api
                .patch_status(
                    &mc.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::warn!(member = %mc.name_any(), error = %e, "marking a silent member Unknown");
            }
        }
    }
    let policy = c
        .types
        .get(&ObjectRef::new(YSVC_TYPE_CONFIG))
        .map(|t| t.spec.annotation_policy.clone())
        .unwrap_or_default();
    let objects: Vec<Arc<FederatedYusurService>> = if all {
        c.objects.state()
    } else {
        keys.iter()
            .filter_map(|(ns, name)| c.objects.get(&ObjectRef::new(name).within(ns)))
            .collect()
    };
    let uids: BTreeSet<String> = objects.iter().filter_map(|o| o.uid()).collect();
    let mut works_by_owner: BTreeMap<String, Vec<ExistingWork>> = BTreeMap::new();
    for w in c.works.state() {
        if let Some(uid) = w.labels().get(LABEL_OWNER_UID)
            && uids.contains(uid)
        {
            works_by_owner
                .entry(uid.clone())
                .or_default()
                .push(ExistingWork {
                    namespace: w.namespace().unwrap_or_default(),
                    name: w.name_any(),
                    work: (*w).clone(),
                });
        }
    }
    if all {
        // Works whose object is gone without its finalizer running (force-deleted): they
        // were written by this controller for that object's tenancy only, so removing
        // them touches no other tenant.
        let live: BTreeSet<String> = c.objects.state().iter().filter_map(|o| o.uid()).collect();
        let orphans: Vec<WorkAction> = c
            .works
            .state()
            .iter()
            .filter(|w| {
                w.labels()
                    .get(LABEL_OWNER_UID)
                    .is_some_and(|uid| !live.contains(uid))
            })
            .map(|w| WorkAction::Delete {
                namespace: w.namespace().unwrap_or_default(),
                name: w.name_any(),
            })
            .collect();
        for action in orphans {
            write_work(client, c, action, sent).await;
        }
    }
    let failed = std::sync::Mutex::new(Vec::new());
    futures::stream::iter(objects)
        .for_each_concurrent(config.concurrency, |obj| {
            let works = works_by_owner
                .get(&obj.uid().unwrap_or_default())
                .cloned()
                .unwrap_or_default();
            let members = &members;
            let policy = &policy;
            let failed = &failed;
            let span = tracing::info_span!(
                "reconcile",
                object = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
            );
            async move {
                if !reconcile(client, c, &obj, members, &works, policy, now, sent).await {
                    failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((obj.namespace().unwrap_or_default(), obj.name_any()));
                }
            }
            .instrument(span)
        })
        .await;
    write_globals(client, c, &members, sent).await;
    failed.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Hands each member the global names of its tenancy ([`crate::global`]) in the ConfigMap
/// of its namespace, the only place its token may read them.
async fn write_globals(client: &Client, c: &Caches, members: &[Member], sent: &Mutex<Sent>) {
    let objects = c.objects.state();
    for m in members {
        let names = crate::global::desired_global(
            objects.iter().map(|o| &**o),
            m.tenancy.tenant.as_deref(),
            m.tenancy.workspace.as_deref(),
        );
        let text = crate::global::encode(&names);
        match sent.lock().await.globals.get(&m.name) {
            Some((t, _)) if *t == text => continue,
            Some((_, at)) if at.elapsed() < GLOBALS_EVERY => continue,
            _ => {}
        }
        let ns = plan::member_namespace(&m.name);
        ensure_namespace(client, &ns, sent).await;
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let pp = PatchParams::apply("ferry-federation-controller").force();
        let manifest = crate::global::configmap_manifest(&ns, &names);
        match api
            .patch(crate::global::CONFIGMAP, &pp, &Patch::Apply(&manifest))
            .await
        {
            Ok(_) => {
                sent.lock()
                    .await
                    .globals
                    .insert(m.name.clone(), (text, Instant::now()));
            }
            Err(e) => {
                tracing::debug!(member = %m.name, error = %e, "writing global names; next pass retries")
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn reconcile(
    client: &Client,
    c: &Caches,
    obj: &Arc<FederatedYusurService>,
    members: &[Member],
    works: &[ExistingWork],
    policy: &crate::types::AnnotationPolicy,
    now: Timestamp,
    sent: &Mutex<Sent>,
) -> bool {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<FederatedYusurService> = Api::namespaced(client.clone(), &ns);
    let mut ok = true;
    let deleting = obj.metadata.deletion_timestamp.is_some();
    if !deleting && !obj.finalizers().iter().any(|f| f == FINALIZER) {
        let mut fins = obj.finalizers().to_vec();
        fins.push(FINALIZER.into());
        let patch =
            json!({"metadata": {"finalizers": fins, "resourceVersion": obj.resource_version()}});
        if let Err(e) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(error = %e, "adding the finalizer; next pass retries");
            ok = false;
        }
    }
    let p = plan::plan(&PlanInput {
        object: obj,
        members,
        works,
        policy,
        now,
    });
    let writes = p
        .works
        .into_iter()
        .map(|action| write_work(client, c, action, sent));
    ok &= futures::future::join_all(writes)
        .await
        .into_iter()
        .all(|w| w);
    let key = (ns.clone(), name.clone());
    let current = obj.status.clone().unwrap_or_default();
    if current != p.status {
        let rv = obj.resource_version();
        let repeat = sent
            .lock()
            .await
            .status
            .repeats(&key, &p.status, rv.as_deref());
        if !repeat {
            let patch = json!([{"op": "add", "path": "/status", "value": p.status}]);
            let patch: json_patch::Patch = match serde_json::from_value(patch) {
                Ok(p) => p,
                Err(_) => return false,
            };
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await
            {
                Ok(_) => sent.lock().await.status.record(key, p.status.clone(), rv),
                Err(e) => {
                    tracing::debug!(error = %e, "writing status; next pass retries");
                    ok = false;
                }
            }
        }
    }
    for (reason, message) in p.events {
        event(client, obj, &reason, &message).await;
    }
    if p.finalize && obj.finalizers().iter().any(|f| f == FINALIZER) {
        let fins: Vec<&String> = obj
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .collect();
        let patch =
            json!({"metadata": {"finalizers": fins, "resourceVersion": obj.resource_version()}});
        if let Err(e) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(error = %e, "removing the finalizer; next pass retries");
            ok = false;
        }
    }
    ok
}

/// One Work write; false when it failed (the object is replanned at the next tick).
async fn write_work(client: &Client, c: &Caches, action: WorkAction, sent: &Mutex<Sent>) -> bool {
    match action {
        WorkAction::Put(work) => {
            let ns = work.namespace().unwrap_or_default();
            let name = work.name_any();
            let key = (ns.clone(), name.clone());
            let cached = c.works.get(&ObjectRef::new(&name).within(&ns));
            let rv = cached.as_ref().and_then(|w| w.resource_version());
            if sent
                .lock()
                .await
                .works
                .repeats(&key, &Some(work.spec.clone()), rv.as_deref())
            {
                return true;
            }
            ensure_namespace(client, &ns, sent).await;
            let api: Api<Work> = Api::namespaced(client.clone(), &ns);
            let result = match &cached {
                None => api.create(&PostParams::default(), &work).await,
                Some(cur) => {
                    let mut next = (**cur).clone();
                    next.spec = work.spec.clone();
                    next.metadata.labels = work.metadata.labels.clone();
                    api.replace(&name, &PostParams::default(), &next).await
                }
            };
            match result {
                Ok(_) => {
                    sent.lock()
                        .await
                        .works
                        .record(key, Some(work.spec.clone()), rv);
                    true
                }
                Err(e) => {
                    tracing::debug!(work = %format!("{ns}/{name}"), error = %e, "writing a Work; next pass retries");
                    false
                }
            }
        }
        WorkAction::Delete { namespace, name } => {
            let key = (namespace.clone(), name.clone());
            let rv = c
                .works
                .get(&ObjectRef::new(&name).within(&namespace))
                .and_then(|w| w.resource_version());
            if sent.lock().await.works.repeats(&key, &None, rv.as_deref()) {
                return true;
            }
            let api: Api<Work> = Api::namespaced(client.clone(), &namespace);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    sent.lock().await.works.record(key, None, rv);
                    true
                }
                Err(kube::Error::Api(e)) if e.code == 404 => true,
                Err(e) => {
                    tracing::debug!(error = %e, "deleting a Work; next pass retries");
                    false
                }
            }
        }
    }
}

/// Creates the member's Work namespace once.
async fn ensure_namespace(client: &Client, ns: &str, sent: &Mutex<Sent>) {
    if sent.lock().await.namespaces.contains(ns) {
        return;
    }
    let labels = BTreeMap::from([(
        "federation.iaas.yusur.io/member".into(),
        ns.trim_start_matches("ferry-member-").into(),
    )]);
    if crate::server::create_namespace(client, ns, labels).await {
        sent.lock().await.namespaces.insert(ns.into());
    }
}

/// A Warning Event on the federated object.
async fn event(client: &Client, obj: &FederatedYusurService, reason: &str, message: &str) {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let now = Time(Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", obj.name_any())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("federation.iaas.yusur.io/v1".into()),
            kind: Some("FederatedYusurService".into()),
            name: Some(obj.name_any()),
            namespace: Some(ns),
            uid: obj.uid(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("ferry-federation".into()),
        ..Default::default()
    };
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(error = %e, "recording an Event");
    }
}
