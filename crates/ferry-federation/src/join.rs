//! The member's join agent (`ferry federation join`): it runs next to a member's API server
//! and dials OUT to the federation API server, so no connection into a member is ever
//! needed. It registers and heartbeats its MemberCluster, pulls the Works in
//! `ferry-member-<name>`, holds their objects in the member API server, and writes status
//! back on the Works. It never reads or writes another member's namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ferry_api::YusurService;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Mutex, mpsc, watch};

use crate::cache::{Dirty, InFlight, reflect};
use crate::member::{ANNOTATION_WORK, MemberAction, plan_member};
use crate::plan::member_namespace;
use crate::types::{
    Cell, LABEL_TENANT, LABEL_WORKSPACE, MemberCluster, MemberClusterSpec, MemberClusterStatus,
    Work, WorkStatus,
};

/// Who this member is and how it reports.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    pub name: String,
    pub tenant: Option<String>,
    pub workspace: Option<String>,
    pub cells: Vec<Cell>,
    pub heartbeat: Duration,
    /// Full resync of Works against member objects (a safety net: passes follow events).
    pub resync: Duration,
    pub concurrency: usize,
}

impl JoinConfig {
    pub fn new(name: impl Into<String>) -> Self {
        JoinConfig {
            name: name.into(),
            tenant: None,
            workspace: None,
            cells: Vec::new(),
            heartbeat: Duration::from_secs(5),
            resync: Duration::from_secs(60),
            concurrency: 32,
        }
    }
}

/// Errors that stop the join agent.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("registering MemberCluster {name} in the federation: {source}")]
    Register { name: String, source: kube::Error },
    #[error(
        "MemberCluster {name} is not registered in the federation: its admin registers it and issues this member's credential with `ferry federation member add {name}`"
    )]
    NotRegistered { name: String },
}

/// Parses `NAME=NAMESPACE` (or `NAME`, the namespace of the same name).
pub fn parse_cell(s: &str) -> Result<Cell, String> {
    let (name, namespace) = s.split_once('=').unwrap_or((s, s));
    if name.is_empty() || namespace.is_empty() {
        return Err(format!("{s:?}: expected NAME=NAMESPACE"));
    }
    Ok(Cell {
        name: name.into(),
        namespace: namespace.into(),
    })
}

/// Writes whose effect the caches may not show yet.
#[derive(Default)]
struct Sent {
    objects: InFlight<(String, String), Option<YusurService>>,
    status: InFlight<String, WorkStatus>,
    namespaces: BTreeSet<String>,
    failures: BTreeMap<String, String>,
}

/// Runs until `shutdown` turns true.
pub async fn run(
    federation: Client,
    member: Client,
    config: JoinConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), JoinError> {
    register(&federation, &config).await?;
    let heartbeat = tokio::spawn(heartbeats(
        federation.clone(),
        member.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    let ns = member_namespace(&config.name);
    // Global names (`NAME-global`), as the controller hands them to this member.
    let globals = tokio::spawn(crate::global::run(
        federation.clone(),
        member.clone(),
        ns.clone(),
        config.resync,
        shutdown.clone(),
    ));
    let (wake_tx, mut wake) = mpsc::channel(1);
    let dirty: Arc<Dirty<String>> = Arc::new(Dirty::new(wake_tx));
    let works = reflect(
        Api::<Work>::namespaced(federation.clone(), &ns),
        watcher::Config::default(),
        {
            let d = dirty.clone();
            move |w: Option<&Work>| match w {
                Some(w) => d.mark(w.name_any()),
                None => d.mark_all(),
            }
        },
    );
    let objects = reflect(
        Api::<YusurService>::all(member.clone()),
        watcher::Config::default(),
        {
            // A member object matters through the Work it belongs to.
            let d = dirty.clone();
            move |o: Option<&YusurService>| match o {
                Some(o) => match o.annotations().get(ANNOTATION_WORK) {
                    Some(w) => d.mark(w.clone()),
                    None => d.poke(),
                },
                None => d.mark_all(),
            }
        },
    );
    let ready = async {
        let _ = works.wait_until_ready().await;
        let _ = objects.wait_until_ready().await;
    };
    tokio::select! {
        _ = ready => {}
        _ = stopped(&mut shutdown) => { heartbeat.abort(); globals.abort(); return Ok(()) }
    }
    tracing::info!(member = %config.name, "joined the federation");
    let sent = Mutex::new(Sent::default());
    let mut resynced = std::time::Instant::now();
    dirty.mark_all();
    loop {
        if resynced.elapsed() >= config.resync {
            dirty.mark_all();
            resynced = std::time::Instant::now();
        }
        let (all, keys) = dirty.take();
        let every = works.state();
        let known: BTreeSet<String> = every.iter().map(|w| w.name_any()).collect();
        let ws: Vec<Work> = every
            .iter()
            .filter(|w| all || keys.contains(&w.name_any()))
            .map(|w| (**w).clone())
            .collect();
        let os = objects.state();
        let failures = sent.lock().await.failures.clone();
        let actions = plan_member(&ws, &os, &known, &failures, Timestamp::now());
        let by_key: BTreeMap<(String, String), &YusurService> = os
            .iter()
            .map(|o| ((o.namespace().unwrap_or_default(), o.name_any()), &**o))
            .collect();
        let work_rv: BTreeMap<String, Option<String>> = ws
            .iter()
            .map(|w| (w.name_any(), w.resource_version()))
            .collect();
        futures::stream::iter(actions)
            .for_each_concurrent(config.concurrency, |a| {
                let (federation, member, sent, by_key, work_rv, ns) =
                    (&federation, &member, &sent, &by_key, &work_rv, &ns);
                async move {
                    apply(federation, member, ns, a, by_key, work_rv, sent).await;
                }
            })
            .await;
        tokio::select! {
            _ = wake.recv() => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                while wake.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(config.heartbeat) => {
                // Works whose apply failed are retried at this pace, not in a hot loop.
                for w in sent.lock().await.failures.keys() {
                    dirty.mark(w.clone());
                }
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
    heartbeat.abort();
    globals.abort();
    Ok(())
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Checks the MemberCluster the admin registered (`ferry federation member add`): its tenant
/// and cells are the admin's to set, never the member's. A member's own token cannot
/// create it; with an admin credential (tests, the bench) it is created when missing.
async fn register(federation: &Client, config: &JoinConfig) -> Result<(), JoinError> {
    let api: Api<MemberCluster> = Api::all(federation.clone());
    let err = |source| JoinError::Register {
        name: config.name.clone(),
        source,
    };
    match api.get_opt(&config.name).await.map_err(err)? {
        Some(existing) => {
            let mut labels = BTreeMap::new();
            for (k, v) in [
                (LABEL_TENANT, &config.tenant),
                (LABEL_WORKSPACE, &config.workspace),
            ] {
                if let Some(v) = v {
                    labels.insert(k.to_string(), v.clone());
                }
            }
            let have: BTreeMap<String, String> = existing
                .labels()
                .iter()
                .filter(|(k, _)| *k == LABEL_TENANT || *k == LABEL_WORKSPACE)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if have != labels || existing.spec.cells != config.cells {
                tracing::warn!(member = %config.name, ?have, "MemberCluster exists with other tenancy or cells; the federation's record is kept");
            }
            Ok(())
        }
        None => {
            let mut mc = MemberCluster::new(
                &config.name,
                MemberClusterSpec {
                    cells: config.cells.clone(),
                },
            );
            let mut labels = BTreeMap::new();
            if let Some(t) = &config.tenant {
                labels.insert(LABEL_TENANT.to_string(), t.clone());
            }
            if let Some(w) = &config.workspace {
                labels.insert(LABEL_WORKSPACE.to_string(), w.clone());
            }
            mc.metadata.labels = Some(labels);
            match api.create(&PostParams::default(), &mc).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 403 => Err(JoinError::NotRegistered {
                    name: config.name.clone(),
                }),
                Err(e) => Err(err(e)),
            }
        }
    }
}

/// Reports the member alive every `heartbeat`: Ready when its own API server answers.
async fn heartbeats(
    federation: Client,
    member: Client,
    config: JoinConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<MemberCluster> = Api::all(federation);
    let mut since: Option<(String, Time)> = None;
    loop {
        // Ready means this member can hold what is placed on it: its API server answers
        // and serves YusurServices.
        let served = Api::<YusurService>::all(member.clone())
            .list_metadata(&kube::api::ListParams::default().limit(1))
            .await;
        let (status, reason, message) = match (member.apiserver_version().await, served) {
            (Ok(_), Ok(_)) => ("True", "Heartbeat", String::new()),
            (Ok(_), Err(e)) => (
                "False",
                "YusurServicesNotServed",
                format!(
                    "the member API server does not serve iaas.yusur.io/v1 YusurServices (install Ferry's CRDs): {e}"
                ),
            ),
            (Err(e), _) => (
                "False",
                "MemberAPIUnreachable",
                format!("the member API server does not answer: {e}"),
            ),
        };
        let now = Time(Timestamp::now());
        let transition = match &since {
            Some((s, t)) if s == status => t.clone(),
            _ => now.clone(),
        };
        let st = MemberClusterStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: reason.into(),
                message,
                last_transition_time: transition.clone(),
                observed_generation: None,
            }],
            last_heartbeat_time: Some(now),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        };
        match api
            .patch_status(
                &config.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": st })),
            )
            .await
        {
            Ok(_) => since = Some((status.to_string(), transition)),
            Err(e) => {
                tracing::warn!(member = %config.name, error = %e, "heartbeat to the federation failed")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.heartbeat) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn apply(
    federation: &Client,
    member: &Client,
    work_ns: &str,
    action: MemberAction,
    by_key: &BTreeMap<(String, String), &YusurService>,
    work_rv: &BTreeMap<String, Option<String>>,
    sent: &Mutex<Sent>,
) {
    match action {
        MemberAction::Create(obj) | MemberAction::Replace(obj) => {
            let ns = obj.namespace().unwrap_or_default();
            let name = obj.name_any();
            let key = (ns.clone(), name.clone());
            let rv = by_key.get(&key).and_then(|o| o.resource_version());
            let value = Some((*obj).clone());
            if sent
                .lock()
                .await
                .objects
                .repeats(&key, &value, rv.as_deref())
            {
                return;
            }
            let work = obj
                .annotations()
                .get(crate::member::ANNOTATION_WORK)
                .cloned()
                .unwrap_or_default();
            let api: Api<YusurService> = Api::namespaced(member.clone(), &ns);
            let result = if rv.is_none() {
                ensure_namespace(member, &ns, sent).await;
                api.create(&PostParams::default(), &obj).await
            } else {
                api.replace(&name, &PostParams::default(), &obj).await
            };
            let mut s = sent.lock().await;
            match result {
                Ok(_) => {
                    s.objects.record(key, value, rv);
                    s.failures.remove(&work);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    tracing::warn!(object = %format!("{ns}/{name}"), error = %e, "applying in the member");
                    s.failures.insert(work, e.to_string());
                }
            }
        }
        MemberAction::Delete { namespace, name } => {
            let key = (namespace.clone(), name.clone());
            let rv = by_key.get(&key).and_then(|o| o.resource_version());
            if sent
                .lock()
                .await
                .objects
                .repeats(&key, &None, rv.as_deref())
            {
                return;
            }
            let api: Api<YusurService> = Api::namespaced(member.clone(), &namespace);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => sent.lock().await.objects.record(key, None, rv),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => tracing::warn!(error = %e, "deleting in the member"),
            }
        }
        MemberAction::WorkStatus { work, status } => {
            let rv = work_rv.get(&work).cloned().flatten();
            if sent
                .lock()
                .await
                .status
                .repeats(&work, &status, rv.as_deref())
            {
                return;
            }
            let api: Api<Work> = Api::namespaced(federation.clone(), work_ns);
            let patch: json_patch::Patch = match serde_json::from_value(
                json!([{"op": "add", "path": "/status", "value": status}]),
            ) {
                Ok(p) => p,
                Err(_) => return,
            };
            match api
                .patch_status(&work, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await
            {
                Ok(_) => sent.lock().await.status.record(work, *status, rv),
                Err(e) => tracing::debug!(error = %e, "writing Work status; next pass retries"),
            }
        }
    }
}

/// Creates a member namespace once (a cell's should exist; a cluster target's may not).
async fn ensure_namespace(member: &Client, ns: &str, sent: &Mutex<Sent>) {
    if sent.lock().await.namespaces.contains(ns) {
        return;
    }
    if crate::server::create_namespace(member, ns, Default::default()).await {
        sent.lock().await.namespaces.insert(ns.into());
    }
}
