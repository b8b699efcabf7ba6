//! The RBAC objects the server keeps in place at every start, as kube-apiserver keeps its
//! bootstrap roles: `cluster-admin`, discovery and self-review for every authenticated
//! caller, and Ferry's `deploy/rbac.yaml` verbatim (so the controller and agents get here
//! exactly what a real cluster grants them; a rule missing there fails here first). Two
//! bindings exist only in the embedded server: node agents (`system:nodes`) get the
//! `ferry-agent` ClusterRole (on a real cluster the agent runs as that ServiceAccount), and
//! the embedded controllers get what kube-controller-manager and kube-scheduler would do.
//!
//! An object annotated `rbac.authorization.kubernetes.io/autoupdate: "false"` is left as
//! the user changed it.

use serde_json::{Value, json};

/// Ferry's least-privilege manifest for a real cluster.
const DEPLOY_RBAC: &str = include_str!("../../../deploy/rbac.yaml");

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// Why the bootstrap objects could not be read.
#[derive(Debug, thiserror::Error)]
#[error("deploy/rbac.yaml: {0}")]
pub struct BootstrapError(String);

fn meta(name: &str) -> Value {
    json!({"name": name, "annotations": {AUTOUPDATE: "true"},
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}})
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": meta(name), "rules": rules})
}

fn binding(name: &str, role: &str, subject: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": meta(name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [subject]})
}

fn group(name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name})
}

/// Every object to keep in place, in creation order (namespaces and ServiceAccounts first).
pub fn objects() -> Result<Vec<Value>, BootstrapError> {
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": crate::auth::SYSTEM_NAMESPACE}}),
        cluster_role(
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        binding(
            "cluster-admin",
            "cluster-admin",
            group(crate::rbac::MASTERS),
        ),
        cluster_role(
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                "/readyz", "/version", "/version/", "/openapi", "/openapi/*"], "verbs": ["get"]}]),
        ),
        binding(
            "system:discovery",
            "system:discovery",
            group(crate::rbac::AUTHENTICATED),
        ),
        cluster_role(
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                   {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            group(crate::rbac::AUTHENTICATED),
        ),
        binding(
            "system:ferry:nodes",
            "ferry-agent",
            group(crate::rbac::NODES),
        ),
        cluster_role(
            "system:ferry:embedded-controllers",
            json!([
                {"apiGroups": ["", "apps", "batch", "discovery.k8s.io", "coordination.k8s.io",
                    "events.k8s.io", "policy"], "resources": ["*"], "verbs": ["*"]},
                {"apiGroups": ["iaas.yusur.io", "kubevirt.io"], "resources": ["*"],
                    "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["iaas.yusur.io", "kubevirt.io"], "resources": ["*/status"],
                    "verbs": ["get", "patch", "update"]},
            ]),
        ),
        binding(
            "system:ferry:embedded-controllers",
            "system:ferry:embedded-controllers",
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": crate::auth::EMBEDDED_USER}),
        ),
    ];
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(DEPLOY_RBAC).map_err(|e| BootstrapError(e.to_string()))?;
    for mut d in docs.into_iter().filter(|d| d.is_object()) {
        d["metadata"]["annotations"][AUTOUPDATE] = json!("true");
        out.push(d);
    }
    Ok(out)
}

/// The parts of a bootstrap object that are kept as bootstrapped (rules, roleRef,
/// subjects, aggregationRule); `None` if the object has none (namespaces, ServiceAccounts
/// are only created).
pub fn managed_fields(obj: &Value) -> Option<Value> {
    match obj["kind"].as_str()? {
        "ClusterRole" | "Role" => {
            Some(json!({"rules": obj["rules"], "aggregationRule": obj["aggregationRule"]}))
        }
        "ClusterRoleBinding" | "RoleBinding" => {
            Some(json!({"roleRef": obj["roleRef"], "subjects": obj["subjects"]}))
        }
        _ => None,
    }
}

/// Whether a stored object may be brought back to its bootstrap form.
pub fn autoupdate(stored: &Value) -> bool {
    stored["metadata"]["annotations"][AUTOUPDATE].as_str() != Some("false")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::{Attributes, Index, UserInfo, authorize};

    fn index() -> Index {
        let objs = objects().unwrap();
        let of =
            |k: &str| -> Vec<Value> { objs.iter().filter(|o| o["kind"] == k).cloned().collect() };
        Index::build(
            &of("ClusterRole"),
            &of("Role"),
            &of("ClusterRoleBinding"),
            &of("RoleBinding"),
        )
    }

    /// What each of Ferry's identities needs and must not have, decided against
    /// `deploy/rbac.yaml` plus the bootstrap roles.
    #[test]
    fn deploy_rbac_grants_each_component_what_it_needs() {
        let idx = index();
        let controller = UserInfo::service_account("ferry-system", "ferry-controller", "");
        let agent = UserInfo::service_account("ferry-system", "ferry-agent", "");
        let node = UserInfo::node("node1");
        let embedded = UserInfo {
            name: crate::auth::EMBEDDED_USER.into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let nobody = UserInfo::service_account("t1", "default", "");
        let r = |verb: &str, group: &str, resource: &str, ns: Option<&str>| {
            let (res, sub) = resource.split_once('/').unwrap_or((resource, ""));
            Attributes::resource(verb, group, res, sub, ns, Some("x"))
        };
        let cases = [
            (
                "controller writes probe status",
                &controller,
                r(
                    "patch",
                    "iaas.yusur.io",
                    "networkprobes/status",
                    Some("default"),
                ),
                true,
            ),
            (
                "controller writes yusurservice status",
                &controller,
                r(
                    "update",
                    "iaas.yusur.io",
                    "yusurservices/status",
                    Some("default"),
                ),
                true,
            ),
            (
                "controller reads no secrets",
                &controller,
                r("get", "", "secrets", Some("default")),
                false,
            ),
            (
                "controller takes its leader lease",
                &controller,
                r(
                    "update",
                    "coordination.k8s.io",
                    "leases",
                    Some("kube-system"),
                ),
                true,
            ),
            (
                "controller's leader lease only in kube-system",
                &controller,
                r("update", "coordination.k8s.io", "leases", Some("default")),
                false,
            ),
            (
                "agent SA writes probe status",
                &agent,
                r(
                    "patch",
                    "iaas.yusur.io",
                    "networkprobes/status",
                    Some("default"),
                ),
                true,
            ),
            (
                "agent SA does not write probes",
                &agent,
                r("patch", "iaas.yusur.io", "networkprobes", Some("default")),
                false,
            ),
            (
                "node writes probe status",
                &node,
                r(
                    "patch",
                    "iaas.yusur.io",
                    "networkprobes/status",
                    Some("default"),
                ),
                true,
            ),
            (
                "node writes pod status",
                &node,
                r("patch", "", "pods/status", Some("default")),
                true,
            ),
            (
                "node reads VMIs",
                &node,
                r("watch", "kubevirt.io", "virtualmachineinstances", None),
                true,
            ),
            (
                "node does not bind pods",
                &node,
                r("create", "", "pods/binding", Some("default")),
                false,
            ),
            (
                "embedded binds pods",
                &embedded,
                r("create", "", "pods/binding", Some("default")),
                true,
            ),
            (
                "embedded scales replicasets",
                &embedded,
                r("patch", "apps", "replicasets", Some("default")),
                true,
            ),
            (
                "embedded does not write RBAC",
                &embedded,
                r("create", "rbac.authorization.k8s.io", "clusterroles", None),
                false,
            ),
            (
                "anyone reviews itself",
                &nobody,
                r(
                    "create",
                    "authorization.k8s.io",
                    "selfsubjectaccessreviews",
                    None,
                ),
                true,
            ),
            (
                "a default SA creates no pods",
                &nobody,
                r("create", "", "pods", Some("t1")),
                false,
            ),
        ];
        let mut failed = Vec::new();
        for (name, user, attrs, want) in cases {
            if authorize(&idx, user, &attrs).allowed != want {
                failed.push(name);
            }
        }
        assert!(failed.is_empty(), "{failed:?}");
        assert!(
            authorize(
                &idx,
                &nobody,
                &Attributes::non_resource("get", "/apis/apps/v1")
            )
            .allowed
        );
        assert!(!authorize(&idx, &nobody, &Attributes::non_resource("get", "/metrics")).allowed);
    }
}
