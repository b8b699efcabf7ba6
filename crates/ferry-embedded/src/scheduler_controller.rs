//! The scheduler's I/O: caches of Pods, Nodes and the agents' Leases; each pass places
//! every Pod that wants a node with [`crate::scheduler::schedule`] and binds it through
//! `pods/binding` (as kube-scheduler does), or writes why it cannot: `status.phase:
//! Pending`, a `PodScheduled=False` condition with reason `Unschedulable`, and a
//! `FailedScheduling` Event when the reason changes. Unschedulable Pods are retried on any
//! change and every [`RETRY`] (a Lease going stale changes nothing in the caches).
//!
//! Writes: `pods/binding` (the API server sets `spec.nodeName` and `PodScheduled=True`),
//! `pods/status` (phase and the `PodScheduled` condition of unschedulable Pods), Events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::EmbeddedError;
use crate::cache::{reflect, rfc3339};
use crate::scheduler::{Candidate, DEFAULT_SCHEDULER, Unschedulable, schedule, wants_scheduling};

/// How often Pods that fit nowhere are tried again without any change.
const RETRY: Duration = Duration::from_secs(2);
/// Bursts of events become one pass.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// Bindings in flight at once.
const PARALLEL_BINDS: usize = 16;

/// Whether a node's agent Lease is missing or lapsed (`renewTime + leaseDurationSeconds`
/// in the past), as Ferry's controller reads it.
pub fn lease_fresh(lease: Option<&Lease>, now: jiff::Timestamp) -> bool {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return false;
    };
    match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(r), Some(secs)) => r.0 + jiff::SignedDuration::from_secs(i64::from(secs)) >= now,
        _ => false,
    }
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    leases: Store<Lease>,
    /// Pods bound by this scheduler that the cache still shows unbound: uid -> the Pod as bound.
    assumed: HashMap<String, Pod>,
    /// The last unschedulable message written per Pod uid (Events only when it changes).
    told: HashMap<String, String>,
}

/// Runs the scheduler until `shutdown` turns true.
pub async fn run(client: Client, mut shutdown: watch::Receiver<bool>) -> Result<(), EmbeddedError> {
    let wake = Arc::new(Notify::new());
    let mut ctx = Ctx {
        pods: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            wake.clone(),
        ),
        nodes: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            wake.clone(),
        ),
        leases: reflect(
            Api::namespaced(client.clone(), ferry_api::AGENT_LEASE_NAMESPACE),
            watcher::Config::default(),
            wake.clone(),
        ),
        client,
        assumed: HashMap::new(),
        told: HashMap::new(),
    };
    let ready = async {
        let _ = ctx.pods.wait_until_ready().await;
        let _ = ctx.nodes.wait_until_ready().await;
        let _ = ctx.leases.wait_until_ready().await;
    };
    tokio::select! {
        _ = ready => {}
        _ = shutdown.wait_for(|s| *s) => return Ok(()),
    }
    tracing::info!("scheduler: caches warm");
    loop {
        ctx.pass().await;
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(RETRY) => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

impl Ctx {
    async fn pass(&mut self) {
        let now = jiff::Timestamp::now();
        let nodes = self.nodes.state();
        let ready: Vec<bool> = nodes
            .iter()
            .map(|n| {
                let lease = self.leases.get(
                    &ObjectRef::new(&ferry_api::agent_lease_name(&n.name_any()))
                        .within(ferry_api::AGENT_LEASE_NAMESPACE),
                );
                lease_fresh(lease.as_deref(), now)
            })
            .collect();
        let candidates: Vec<Candidate> = nodes
            .iter()
            .zip(&ready)
            .map(|(n, r)| Candidate {
                node: n.as_ref(),
                ready: *r,
            })
            .collect();
        let all = self.pods.state();
        // Forget assumptions the cache has caught up with (bound or gone).
        let live: HashMap<String, &Pod> = all
            .iter()
            .filter_map(|p| Some((p.uid()?, p.as_ref())))
            .collect();
        self.assumed
            .retain(|uid, _| live.get(uid).is_some_and(|p| wants_scheduling(p)));
        self.told.retain(|uid, _| live.contains_key(uid));
        let mut placed: Vec<Pod> = all
            .iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| !n.is_empty())
            })
            .map(|p| p.as_ref().clone())
            .collect();
        placed.extend(self.assumed.values().cloned());
        let mut pending: Vec<&Pod> = all
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| wants_scheduling(p))
            .filter(|p| p.uid().is_some_and(|u| !self.assumed.contains_key(&u)))
            .collect();
        pending.sort_by_key(|p| {
            (
                p.metadata.creation_timestamp.clone().map(|t| t.0),
                p.namespace(),
                p.name_any(),
            )
        });
        let mut binds: Vec<(Pod, String)> = Vec::new();
        let mut refused: Vec<(Pod, Unschedulable)> = Vec::new();
        for pod in pending {
            let refs: Vec<&Pod> = placed.iter().collect();
            match schedule(pod, &candidates, &refs) {
                Ok(node) => {
                    let mut bound = pod.clone();
                    if let Some(s) = bound.spec.as_mut() {
                        s.node_name = Some(node.clone());
                    }
                    placed.push(bound.clone());
                    if let Some(uid) = pod.uid() {
                        self.assumed.insert(uid, bound);
                    }
                    binds.push((pod.clone(), node));
                }
                Err(u) => refused.push((pod.clone(), u)),
            }
        }
        let client = self.client.clone();
        let failed: Vec<String> = futures::stream::iter(binds)
            .map(|(pod, node)| {
                let client = client.clone();
                async move {
                    match bind(&client, &pod, &node).await {
                        Ok(()) => None,
                        Err(e) => {
                            tracing::warn!(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
                                node = %node, error = %e, "binding failed");
                            pod.uid()
                        }
                    }
                }
            })
            .buffer_unordered(PARALLEL_BINDS)
            .filter_map(|f| async move { f })
            .collect()
            .await;
        for uid in failed {
            self.assumed.remove(&uid);
        }
        for (pod, why) in refused {
            let message = why.to_string();
            if let Err(e) = self.tell(&pod, &message).await {
                tracing::warn!(error = %e, "writing why a pod is unschedulable failed");
            }
        }
    }

    /// Writes `Pending` + `PodScheduled=False` (if not already so) and an Event when the
    /// message is new.
    async fn tell(&mut self, pod: &Pod, message: &str) -> Result<(), kube::Error> {
        let uid = pod.uid().unwrap_or_default();
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let status = pod.status.clone().unwrap_or_default();
        let current = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled");
        let written = status.phase.as_deref() == Some("Pending")
            && current.is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message.as_deref() == Some(message)
            });
        let now = rfc3339(jiff::Timestamp::now());
        if !written {
            let since = current
                .filter(|c| c.status == "False")
                .and_then(|c| c.last_transition_time.clone())
                .map(|t| rfc3339(t.0))
                .unwrap_or_else(|| now.clone());
            let mut conditions: Vec<serde_json::Value> = status
                .conditions
                .iter()
                .flatten()
                .filter(|c| c.type_ != "PodScheduled")
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect();
            conditions.push(
                json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": message, "lastProbeTime": null, "lastTransitionTime": since}),
            );
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Pending", "conditions": conditions}})),
            )
            .await?;
        }
        if self.told.get(&uid).map(String::as_str) != Some(message) {
            let nanos = jiff::Timestamp::now().as_nanosecond();
            let ev: Event = serde_json::from_value(json!({
                "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name,
                    "uid": uid, "resourceVersion": pod.resource_version()},
                "reason": "FailedScheduling", "message": message, "type": "Warning",
                "source": {"component": DEFAULT_SCHEDULER}, "reportingComponent": DEFAULT_SCHEDULER,
                "reportingInstance": "ferry-embedded", "action": "Scheduling",
                "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            }))
            .map_err(kube::Error::SerdeError)?;
            let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
            api.create(&PostParams::default(), &ev).await?;
            self.told.insert(uid, message.to_string());
        }
        Ok(())
    }
}

/// POST `pods/NAME/binding`; a 409 (bound meanwhile) is not an error.
async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
