//! What a node agent (`system:node:NAME`) may write, beyond what RBAC grants: only its own
//! Node, its own Lease, the status of the Pods bound to it, of the NetworkProbes assigned to
//! it (`spec.nodeName`) and of the VirtualMachineInstances running on it, plus Events. So a
//! compromised node cannot rewrite another node's probes or pods (kube-apiserver's
//! NodeRestriction admission plugin, narrowed to what Ferry's agent does).
//!
//! A plain function over the request and the object as it is now; the server calls it after
//! RBAC allowed the request.

use serde_json::Value;

use crate::rbac::{Attributes, Target};

/// Why a node's write was refused (the 403's message after `... is forbidden: `).
pub type Refusal = String;

/// Whether node `node` may do what `attrs` asks (for a create, `attrs` names the object
/// the body names). `current` is the stored object (None if it does not exist). Reads and
/// non-resource requests always pass here (RBAC decides them).
///
/// `body` is the request's body, parsed (a patch or the object): a node may patch one field
/// of its own pods besides their status, the DPU contract's annotation
/// ([`ferry_api::ANNOTATION_VF`]), and only with a patch that touches nothing else.
pub fn admit(
    node: &str,
    attrs: &Attributes,
    current: Option<&Value>,
    body: Option<&Value>,
) -> Result<(), Refusal> {
    let verb = attrs.verb.as_str();
    let Target::Resource {
        group,
        resource,
        subresource,
        namespace,
        name,
    } = &attrs.target
    else {
        return Ok(());
    };
    if matches!(verb, "get" | "list" | "watch") {
        return Ok(());
    }
    let (group, resource, subresource) = (group.as_str(), resource.as_str(), subresource.as_str());
    let namespace = namespace.as_deref();
    let name = name.as_deref().unwrap_or_default();
    let writes_status = matches!(verb, "update" | "patch") && subresource == "status";
    let bound_to = |path: &[&str]| -> Option<String> {
        let mut v = current?;
        for p in path {
            v = &v[*p];
        }
        v.as_str().map(String::from)
    };
    match (group, resource) {
        ("", "nodes") => {
            if name != node {
                return Err(format!(
                    "node {node:?} is not allowed to modify node {name:?}"
                ));
            }
            if verb == "delete" || verb == "deletecollection" {
                return Err(format!("node {node:?} is not allowed to delete nodes"));
            }
            Ok(())
        }
        ("coordination.k8s.io", "leases") => {
            let own = namespace == Some(ferry_api::AGENT_LEASE_NAMESPACE)
                && (name == node
                    || name == ferry_api::agent_lease_name(node)
                    || name == ferry_api::dpu_lease_name(node));
            if own && matches!(verb, "create" | "update" | "patch") && subresource.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "can only access node lease {ns}/{}, {ns}/{} or {ns}/{node}",
                    ferry_api::agent_lease_name(node),
                    ferry_api::dpu_lease_name(node),
                    ns = ferry_api::AGENT_LEASE_NAMESPACE,
                ))
            }
        }
        ("", "pods") => match bound_to(&["spec", "nodeName"]) {
            Some(n) if writes_status && n == node => Ok(()),
            Some(n)
                if n == node
                    && verb == "patch"
                    && subresource.is_empty()
                    && body.is_some_and(only_vf_annotation) =>
            {
                Ok(())
            }
            _ if writes_status => Err(format!(
                "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
            )),
            _ => Err(format!(
                "node {node:?} can only update the status of pods bound to it"
            )),
        },
        (ferry_api::GROUP, "networkprobes") => match bound_to(&["spec", "nodeName"]) {
            Some(n) if writes_status && n == node => Ok(()),
            _ => Err(format!(
                "node {node:?} can only update the status of networkprobes with spec.nodeName set to itself"
            )),
        },
        ("kubevirt.io", "virtualmachineinstances") => match bound_to(&["status", "nodeName"]) {
            Some(n) if writes_status && n == node => Ok(()),
            _ => Err(format!(
                "node {node:?} can only update the status of virtualmachineinstances running on it"
            )),
        },
        ("" | "events.k8s.io", "events") if matches!(verb, "create" | "patch") => Ok(()),
        _ => Err(format!(
            "node {node:?} is not allowed to {verb} {}",
            if subresource.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}/{subresource}")
            }
        )),
    }
}

/// Whether a merge patch touches only the DPU contract's annotation.
fn only_vf_annotation(patch: &Value) -> bool {
    let single = |v: &Value, key: &str| {
        v.as_object()
            .is_some_and(|o| o.len() == 1 && o.contains_key(key))
    };
    single(patch, "metadata")
        && single(&patch["metadata"], "annotations")
        && single(&patch["metadata"]["annotations"], ferry_api::ANNOTATION_VF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_writes_only_what_is_its_own() {
        let probe_on = |n: &str| json!({"spec": {"nodeName": n}});
        let vmi_on = |n: &str| json!({"status": {"nodeName": n}});
        struct Case {
            name: &'static str,
            verb: &'static str,
            group: &'static str,
            resource: &'static str,
            sub: &'static str,
            namespace: Option<&'static str>,
            object: &'static str,
            current: Option<Value>,
            want: bool,
        }
        let c = |name, verb, group, resource, sub, namespace, object, current, want| Case {
            name,
            verb,
            group,
            resource,
            sub,
            namespace,
            object,
            current,
            want,
        };
        let lease_ns = Some("kube-node-lease");
        let cases = [
            c(
                "own probe status",
                "patch",
                "iaas.yusur.io",
                "networkprobes",
                "status",
                Some("default"),
                "p",
                Some(probe_on("node1")),
                true,
            ),
            c(
                "other node's probe status",
                "patch",
                "iaas.yusur.io",
                "networkprobes",
                "status",
                Some("default"),
                "p",
                Some(probe_on("node2")),
                false,
            ),
            c(
                "unassigned probe status",
                "update",
                "iaas.yusur.io",
                "networkprobes",
                "status",
                Some("default"),
                "p",
                Some(json!({"spec": {}})),
                false,
            ),
            c(
                "own probe spec",
                "patch",
                "iaas.yusur.io",
                "networkprobes",
                "",
                Some("default"),
                "p",
                Some(probe_on("node1")),
                false,
            ),
            c(
                "reading any probe",
                "get",
                "iaas.yusur.io",
                "networkprobes",
                "",
                Some("default"),
                "p",
                Some(probe_on("node2")),
                true,
            ),
            c(
                "own pod status",
                "patch",
                "",
                "pods",
                "status",
                Some("default"),
                "p",
                Some(probe_on("node1")),
                true,
            ),
            c(
                "other pod status",
                "patch",
                "",
                "pods",
                "status",
                Some("default"),
                "p",
                Some(probe_on("node2")),
                false,
            ),
            c(
                "unbound pod status",
                "patch",
                "",
                "pods",
                "status",
                Some("default"),
                "p",
                Some(json!({"spec": {}})),
                false,
            ),
            c(
                "deleting a pod",
                "delete",
                "",
                "pods",
                "",
                Some("default"),
                "p",
                Some(probe_on("node1")),
                false,
            ),
            c(
                "own node create",
                "create",
                "",
                "nodes",
                "",
                None,
                "node1",
                None,
                true,
            ),
            c(
                "own node status",
                "patch",
                "",
                "nodes",
                "status",
                None,
                "node1",
                None,
                true,
            ),
            c(
                "other node",
                "patch",
                "",
                "nodes",
                "status",
                None,
                "node2",
                None,
                false,
            ),
            c(
                "own node delete",
                "delete",
                "",
                "nodes",
                "",
                None,
                "node1",
                None,
                false,
            ),
            c(
                "own agent lease",
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                lease_ns,
                "ferry-agent-node1",
                None,
                true,
            ),
            c(
                "own kubelet-style lease",
                "create",
                "coordination.k8s.io",
                "leases",
                "",
                lease_ns,
                "node1",
                None,
                true,
            ),
            c(
                "other node's lease",
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                lease_ns,
                "ferry-agent-node2",
                None,
                false,
            ),
            c(
                "own name elsewhere",
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                Some("kube-system"),
                "node1",
                None,
                false,
            ),
            c(
                "own VMI status",
                "patch",
                "kubevirt.io",
                "virtualmachineinstances",
                "status",
                Some("default"),
                "v",
                Some(vmi_on("node1")),
                true,
            ),
            c(
                "other VMI status",
                "patch",
                "kubevirt.io",
                "virtualmachineinstances",
                "status",
                Some("default"),
                "v",
                Some(vmi_on("node2")),
                false,
            ),
            c(
                "events",
                "create",
                "",
                "events",
                "",
                Some("default"),
                "",
                None,
                true,
            ),
            c(
                "a service",
                "patch",
                "",
                "services",
                "",
                Some("default"),
                "s",
                None,
                false,
            ),
        ];
        for case in cases {
            let attrs = Attributes::resource(
                case.verb,
                case.group,
                case.resource,
                case.sub,
                case.namespace,
                Some(case.object),
            );
            let got = admit("node1", &attrs, case.current.as_ref(), None);
            assert_eq!(got.is_ok(), case.want, "{}: {got:?}", case.name);
        }
    }

    #[test]
    fn dpu_contract_writes_of_a_node() {
        let pod_on = |n: &str| json!({"spec": {"nodeName": n}});
        let vf = json!({"metadata": {"annotations": {ferry_api::ANNOTATION_VF: "rep0"}}});
        let vf_removed = json!({"metadata": {"annotations": {ferry_api::ANNOTATION_VF: null}}});
        let more =
            json!({"metadata": {"annotations": {ferry_api::ANNOTATION_VF: "rep0", "x": "y"}}});
        let labels = json!({"metadata": {"labels": {"a": "b"}}});
        let spec =
            json!({"metadata": {"annotations": {ferry_api::ANNOTATION_VF: "r"}}, "spec": {}});
        let pod = |current: Value, body: &Value| {
            let attrs = Attributes::resource("patch", "", "pods", "", Some("default"), Some("p"));
            admit("node1", &attrs, Some(&current), Some(body)).is_ok()
        };
        assert!(pod(pod_on("node1"), &vf), "own pod, the annotation");
        assert!(
            pod(pod_on("node1"), &vf_removed),
            "own pod, the annotation removed"
        );
        assert!(!pod(pod_on("node2"), &vf), "another node's pod");
        assert!(!pod(pod_on("node1"), &more), "another annotation too");
        assert!(!pod(pod_on("node1"), &labels), "labels");
        assert!(!pod(pod_on("node1"), &spec), "the spec too");
        let lease = |verb: &str, name: &str| {
            let attrs = Attributes::resource(
                verb,
                "coordination.k8s.io",
                "leases",
                "",
                Some("kube-node-lease"),
                Some(name),
            );
            admit("node1", &attrs, None, None).is_ok()
        };
        assert!(lease("update", "ferry-dpu-node1"), "its DPU's lease");
        assert!(!lease("update", "ferry-dpu-node2"), "another DPU's lease");
    }
}
