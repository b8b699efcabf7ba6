//! Leases: what kube-apiserver's API Priority and Fairness gives leader election and node
//! heartbeats (its `leader-election` and `node-high` priority levels), in the small.
//!
//! A Lease renewal is a small write whose lateness costs a leadership (a controller that
//! cannot renew within its renew deadline stops writing and hands over) or a node (an agent
//! Lease that lapses marks the node's probes Unknown). So:
//! - a request for one Lease (create, get, update, patch, delete of
//!   `coordination.k8s.io/leases/NAME`; not lists or watches, which are bulk reads) is not
//!   counted against its identity's in-flight cap: no 429 because the same identity's bulk
//!   writes fill it;
//! - a leader-election Lease (outside `kube-node-lease`, where the agents' and kubelets'
//!   heartbeats live) is answered once its write is durable, without waiting for the watch
//!   cache, and read from the store ([`leader_election_lease`]).
//!
//! A runtime of its own for leader-election handlers and a priority queue in the store
//! writer (67f1d60) were measured twice with `apiserver_bench --lease-under-load` and made
//! no difference beyond this machine's noise (the renewal's time goes to CPU scheduling on
//! shared cores and to the fsync it shares with its batch), so they were removed.

use axum::http::Method;

/// Which path a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestLane {
    /// One leader-election Lease, read or written.
    LeaderElection,
    /// One node Lease (`kube-node-lease`): not counted against the in-flight cap.
    NodeLease,
    /// Everything else.
    Bulk,
}

impl RequestLane {
    /// Whether the identity's in-flight cap applies.
    pub fn counted(self) -> bool {
        self == RequestLane::Bulk
    }
}

const LEASE_GROUP: &str = "coordination.k8s.io";
const LEASES: &str = "leases";
/// Where node heartbeats live (kubelets' and Ferry's agents').
const NODE_LEASES: &str = "kube-node-lease";

/// The lane of a request, from its method, path and query (pure).
pub fn request_lane(method: &Method, path: &str, query: Option<&str>) -> RequestLane {
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    if watch {
        return RequestLane::Bulk;
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let namespace = match segs.as_slice() {
        // One Lease (any verb on a name) or a Lease's creation (POST to the collection).
        ["apis", LEASE_GROUP, _, "namespaces", ns, LEASES, _] => ns,
        ["apis", LEASE_GROUP, _, "namespaces", ns, LEASES] if method == Method::POST => ns,
        _ => return RequestLane::Bulk,
    };
    if *namespace == NODE_LEASES {
        RequestLane::NodeLease
    } else {
        RequestLane::LeaderElection
    }
}

/// Whether `group`/`plural` in `namespace` is a leader-election Lease (a Lease outside
/// `kube-node-lease`), whose writes are answered once durable and whose reads without a
/// resourceVersion come from the store, as kube-apiserver answers from etcd: a renewal
/// that waited for the watch cache waited for every change committed before it to be
/// applied on the busy main runtime, and missed its renew deadline at 1,000 nodes.
pub fn leader_election_lease(group: &str, plural: &str, namespace: Option<&str>) -> bool {
    group == LEASE_GROUP && plural == LEASES && namespace != Some(NODE_LEASES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_for_one_lease_take_a_lease_lane() {
        use RequestLane::*;
        let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/ferry-controller";
        let node = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/ferry-agent-n1";
        let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        let cases = [
            (Method::GET, lease, None, LeaderElection),
            (Method::PUT, lease, None, LeaderElection),
            (
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/ferry-system/leases",
                None,
                LeaderElection,
            ),
            (Method::PATCH, node, Some("fieldManager=x"), NodeLease),
            (Method::DELETE, node, None, NodeLease),
            (Method::POST, leases, None, NodeLease),
            // Lists and watches of Leases are bulk reads.
            (Method::GET, leases, None, Bulk),
            (
                Method::GET,
                leases,
                Some("watch=true&resourceVersion=5"),
                Bulk,
            ),
            (Method::GET, node, Some("watch=1"), Bulk),
            (
                Method::GET,
                "/apis/coordination.k8s.io/v1/leases",
                None,
                Bulk,
            ),
            // Other kinds, and a look-alike in another group.
            (
                Method::PUT,
                "/api/v1/namespaces/kube-system/configmaps/x",
                None,
                Bulk,
            ),
            (
                Method::PUT,
                "/apis/example.com/v1/namespaces/kube-system/leases/x",
                None,
                Bulk,
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x/status",
                None,
                Bulk,
            ),
        ];
        let got: Vec<_> = cases
            .iter()
            .map(|(m, p, q, _)| (m.clone(), *p, *q, request_lane(m, p, *q)))
            .collect();
        let want: Vec<_> = cases
            .iter()
            .map(|(m, p, q, l)| (m.clone(), *p, *q, *l))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn only_leases_outside_kube_node_lease_are_leader_election_leases() {
        assert_eq!(
            [
                leader_election_lease("coordination.k8s.io", "leases", Some("kube-system")),
                leader_election_lease("coordination.k8s.io", "leases", Some("kube-node-lease")),
                leader_election_lease("", "configmaps", Some("kube-system")),
                leader_election_lease("ferry.yusur.io", "networkprobes", Some("default")),
                leader_election_lease("coordination.k8s.io", "other", Some("kube-system")),
            ],
            [true, false, false, false, false]
        );
    }
}
