//! Controllers only the embedded mode runs: the jobs of kube-controller-manager,
//! kube-scheduler and the kubelet that a real cluster already has, so that `ferry up`
//! behaves like a cluster for the kubectl user. Each is a plain kube-rs client of the API
//! server (no dependency on the embedded server), and none of it may run against a real
//! cluster, where the real components do these jobs: `ferry up` starts it, `ferry
//! controller` never does.
//!
//! | module | job | pure |
//! |---|---|---|
//! | [`endpoints`] | Endpoints and EndpointSlices of selector `v1 Service`s (kube-controller-manager's endpoints and endpointslice controllers) | yes |
//! | `endpoints_controller`, [`run`] | their watches and writes | - |
//! | [`scheduler`] | where a Pod runs (kube-scheduler's filters for nodeSelector, required node affinity, taints, Ready nodes; spreading) | yes |
//! | `scheduler_controller` | binds through `pods/binding`, or writes `Pending`/`PodScheduled=False` and an Event | - |
//! | [`workloads`] | Deployments -> ReplicaSets -> Pods, rolling updates, revisions, statuses; DaemonSets -> one Pod per eligible node, rolled within maxUnavailable (kube-controller-manager's deployment, replicaset and daemonset controllers) | yes |
//! | `workloads_controller` | their watches and writes | - |
//! | [`serviceaccounts_controller`] | a `default` ServiceAccount in every namespace (kube-controller-manager's serviceaccounts controller) | the choice |

mod cache;
pub mod endpoints;
mod endpoints_controller;
pub mod scheduler;
mod scheduler_controller;
pub mod serviceaccounts_controller;
pub mod workloads;
mod workloads_controller;

use kube::Client;
use tokio::sync::watch;

/// Why a controller could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("writing {kind} {namespace}/{name}: {source}")]
    Write {
        kind: String,
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// Runs every embedded-mode controller until `shutdown` turns true.
pub async fn run(client: Client, shutdown: watch::Receiver<bool>) -> Result<(), EmbeddedError> {
    let (a, b, c, d) = tokio::join!(
        endpoints_controller::run(client.clone(), shutdown.clone()),
        scheduler_controller::run(client.clone(), shutdown.clone()),
        workloads_controller::run(client.clone(), shutdown.clone()),
        serviceaccounts_controller::run(client, shutdown),
    );
    a.and(b).and(c).and(d)
}
