//! The workload controllers' I/O: caches of Deployments, ReplicaSets, DaemonSets, Nodes and
//! Pods; each pass plans every ReplicaSet ([`crate::workloads::replicaset::plan`]), every
//! Deployment ([`crate::workloads::deployment::plan`]) and every DaemonSet
//! ([`crate::workloads::daemonset::plan`]) and writes the difference. Pods a ReplicaSet
//! just created or deleted are remembered until the cache shows it (kube's
//! "expectations"), so a cache that lags never makes it create or delete twice.
//!
//! Writes: Pods (create from the template with `generateName`, delete), ReplicaSets
//! (create, replace for replicas and revision annotations, delete beyond the history
//! limit), `replicasets/status`, `deployments/status`, the Deployment's revision annotation,
//! `daemonsets/status`.
//! Deleting a Deployment or ReplicaSet takes its dependents with it through the API
//! server's garbage collector (owner references with `blockOwnerDeletion`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::EmbeddedError;
use crate::cache::reflect;
use crate::workloads::{MANAGER, REVISION, controller_of, daemonset, deployment, replicaset};

/// Every object is planned at least this often.
const RESYNC: Duration = Duration::from_secs(30);
/// Bursts of events become one pass.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// How long a create or delete is expected to show in the cache before it is forgotten.
const EXPECT: Duration = Duration::from_secs(30);
/// Pod creations in flight at once.
const PARALLEL: usize = 16;

struct Ctx {
    client: Client,
    deployments: Store<Deployment>,
    replicasets: Store<ReplicaSet>,
    daemonsets: Store<DaemonSet>,
    nodes: Store<Node>,
    pods: Store<Pod>,
    /// ReplicaSet (or DaemonSet) uid -> Pods it created that the cache may not show yet.
    created: HashMap<String, Vec<(Pod, Instant)>>,
    /// ReplicaSet (or DaemonSet) uid -> names of Pods it deleted that the cache may still show.
    deleted: HashMap<String, HashMap<String, Instant>>,
}

fn pp() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    }
}

/// Runs the Deployment and ReplicaSet controllers until `shutdown` turns true.
pub async fn run(client: Client, mut shutdown: watch::Receiver<bool>) -> Result<(), EmbeddedError> {
    let wake = Arc::new(Notify::new());
    let mut ctx = Ctx {
        deployments: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            wake.clone(),
        ),
        replicasets: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            wake.clone(),
        ),
        daemonsets: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            wake.clone(),
        ),
        nodes: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            wake.clone(),
        ),
        pods: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            wake.clone(),
        ),
        client,
        created: HashMap::new(),
        deleted: HashMap::new(),
    };
    let ready = async {
        let _ = ctx.deployments.wait_until_ready().await;
        let _ = ctx.replicasets.wait_until_ready().await;
        let _ = ctx.pods.wait_until_ready().await;
        let _ = ctx.daemonsets.wait_until_ready().await;
        let _ = ctx.nodes.wait_until_ready().await;
    };
    tokio::select! {
        _ = ready => {}
        _ = shutdown.wait_for(|s| *s) => return Ok(()),
    }
    tracing::info!("workload controllers: caches warm");
    loop {
        ctx.pass().await;
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

fn key<K: ResourceExt>(o: &K) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

impl Ctx {
    async fn pass(&mut self) {
        let now = jiff::Timestamp::now();
        let pods = self.pods.state();
        let mut by_owner: HashMap<&str, Vec<&Pod>> = HashMap::new();
        for p in &pods {
            if let Some(o) = controller_of(&p.metadata) {
                by_owner.entry(o.uid.as_str()).or_default().push(p.as_ref());
            }
        }
        for rs in self.replicasets.state() {
            let uid = rs.uid().unwrap_or_default();
            let cached = by_owner.get(uid.as_str()).cloned().unwrap_or_default();
            if let Err(e) = self.replicaset(&rs, &cached, now).await {
                tracing::warn!(replicaset = %key(rs.as_ref()), error = %e, "syncing a ReplicaSet failed; retrying");
            }
        }
        let rss = self.replicasets.state();
        let mut rs_by_owner: HashMap<&str, Vec<&ReplicaSet>> = HashMap::new();
        for r in &rss {
            if let Some(o) = controller_of(&r.metadata) {
                rs_by_owner
                    .entry(o.uid.as_str())
                    .or_default()
                    .push(r.as_ref());
            }
        }
        for d in self.deployments.state() {
            let uid = d.uid().unwrap_or_default();
            let owned = rs_by_owner.get(uid.as_str()).cloned().unwrap_or_default();
            if let Err(e) = self.deployment(&d, &owned, now).await {
                tracing::warn!(deployment = %key(d.as_ref()), error = %e, "syncing a Deployment failed; retrying");
            }
        }
        let nodes = self.nodes.state();
        let nodes: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
        for d in self.daemonsets.state() {
            let uid = d.uid().unwrap_or_default();
            let cached = by_owner.get(uid.as_str()).cloned().unwrap_or_default();
            if let Err(e) = self.daemonset(&d, &nodes, &cached, now).await {
                tracing::warn!(daemonset = %key(d.as_ref()), error = %e, "syncing a DaemonSet failed; retrying");
            }
        }
    }

    /// The Pods `uid` owns as far as this controller knows: the cache's, without those it
    /// deleted, with those it created that the cache does not show yet (expectations).
    fn expected<'a>(&'a mut self, uid: &str, cached: &[&'a Pod]) -> Vec<&'a Pod> {
        let names: BTreeMap<String, &Pod> = cached.iter().map(|p| (p.name_any(), *p)).collect();
        let created = self.created.entry(uid.to_string()).or_default();
        created.retain(|(p, at)| !names.contains_key(&p.name_any()) && at.elapsed() < EXPECT);
        let deleted = self.deleted.entry(uid.to_string()).or_default();
        deleted.retain(|n, at| names.contains_key(n) && at.elapsed() < EXPECT);
        let deleted = &self.deleted[uid];
        let mut owned: Vec<&Pod> = cached
            .iter()
            .copied()
            .filter(|p| !deleted.contains_key(&p.name_any()))
            .collect();
        owned.extend(self.created[uid].iter().map(|(p, _)| p));
        owned
    }

    /// Creates and deletes Pods for `uid` (remembering both), returning the first error.
    async fn write_pods(
        &mut self,
        uid: &str,
        ns: &str,
        create: Vec<Pod>,
        delete: Vec<String>,
    ) -> Option<kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let made: Vec<Result<Pod, kube::Error>> = futures::stream::iter(create)
            .map(|p| {
                let api = api.clone();
                async move { api.create(&pp(), &p).await }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let mut first_err = None;
        for m in made {
            match m {
                Ok(p) => self
                    .created
                    .entry(uid.to_string())
                    .or_default()
                    .push((p, Instant::now())),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for name in delete {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                    continue;
                }
            }
            self.deleted
                .entry(uid.to_string())
                .or_default()
                .insert(name, Instant::now());
        }
        first_err
    }

    async fn daemonset(
        &mut self,
        ds: &DaemonSet,
        nodes: &[&Node],
        cached: &[&Pod],
        now: jiff::Timestamp,
    ) -> Result<(), kube::Error> {
        let uid = ds.uid().unwrap_or_default();
        let ns = ds.namespace().unwrap_or_default();
        let plan = {
            let owned = self.expected(&uid, cached);
            daemonset::plan(ds, nodes, &owned, now)
        };
        let first_err = self.write_pods(&uid, &ns, plan.create, plan.delete).await;
        let want = serde_json::to_value(&plan.status).map_err(kube::Error::SerdeError)?;
        let have = serde_json::to_value(ds.status.clone().unwrap_or_default())
            .map_err(kube::Error::SerdeError)?;
        if want != have {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &ns);
            api.patch_status(
                &ds.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": want})),
            )
            .await?;
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn replicaset(
        &mut self,
        rs: &ReplicaSet,
        cached: &[&Pod],
        now: jiff::Timestamp,
    ) -> Result<(), kube::Error> {
        let uid = rs.uid().unwrap_or_default();
        let ns = rs.namespace().unwrap_or_default();
        let plan = {
            let owned = self.expected(&uid, cached);
            replicaset::plan(rs, &owned, now)
        };
        let first_err = self.write_pods(&uid, &ns, plan.create, plan.delete).await;
        let want = serde_json::to_value(&plan.status).map_err(kube::Error::SerdeError)?;
        let have = serde_json::to_value(rs.status.clone().unwrap_or_default())
            .map_err(kube::Error::SerdeError)?;
        if want != have {
            let rsapi: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
            rsapi
                .patch_status(
                    &rs.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": want})),
                )
                .await?;
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn deployment(
        &mut self,
        d: &Deployment,
        owned: &[&ReplicaSet],
        now: jiff::Timestamp,
    ) -> Result<(), kube::Error> {
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let ns = d.namespace().unwrap_or_default();
        let plan = deployment::plan(d, owned, now);
        let rsapi: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        if let Some(rs) = &plan.create {
            match rsapi.create(&pp(), rs).await {
                Ok(_) => {}
                // Created in an earlier pass the cache has not shown yet.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        // A patch, not a replace: this pass may just have written the ReplicaSet's status,
        // which a replace from the cache would conflict with.
        for rs in &plan.update {
            let body = json!({"metadata": {"annotations": rs.metadata.annotations},
                "spec": {"replicas": rs.spec.as_ref().and_then(|s| s.replicas)}});
            rsapi
                .patch(
                    &rs.name_any(),
                    &PatchParams {
                        field_manager: Some(MANAGER.into()),
                        ..Default::default()
                    },
                    &Patch::Merge(body),
                )
                .await?;
        }
        for name in &plan.delete {
            match rsapi.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let dapi: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        if !plan.revision.is_empty() && d.annotations().get(REVISION) != Some(&plan.revision) {
            dapi.patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {REVISION: plan.revision}}})),
            )
            .await?;
        }
        let want = serde_json::to_value(&plan.status).map_err(kube::Error::SerdeError)?;
        let have = serde_json::to_value(d.status.clone().unwrap_or_default())
            .map_err(kube::Error::SerdeError)?;
        if want != have {
            dapi.patch_status(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": want})),
            )
            .await?;
        }
        Ok(())
    }
}
