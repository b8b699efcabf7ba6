use serde_json::{Value, json};

use super::*;

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Default::default()
    }
}

fn res(
    verb: &str,
    group: &str,
    resource: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> Attributes {
    let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
    Attributes::resource(verb, group, resource, sub, ns, name)
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"metadata": {"name": name}, "rules": rules})
}

fn crb(name: &str, role: &str, subjects: Value) -> Value {
    json!({"metadata": {"name": name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}, "subjects": subjects})
}

fn rb(ns: &str, name: &str, kind: &str, role: &str, subjects: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": ns}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}, "subjects": subjects})
}

/// The RBAC objects every case below is decided against.
fn index() -> Index {
    let cluster_roles = vec![
        cluster_role(
            "probe-status",
            json!([{"apiGroups": ["iaas.yusur.io"], "resources": ["networkprobes/status"], "verbs": ["patch", "update"]},
                   {"apiGroups": ["iaas.yusur.io"], "resources": ["networkprobes"], "verbs": ["get", "list", "watch"]}]),
        ),
        cluster_role(
            "pod-reader",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]),
        ),
        cluster_role(
            "one-configmap",
            json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cm1"], "verbs": ["get", "update"]}]),
        ),
        cluster_role(
            "any-status",
            json!([{"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]}]),
        ),
        cluster_role(
            "metrics",
            json!([{"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]),
        ),
        json!({"metadata": {"name": "aggregate"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"rbac.example/aggregate-to-view": "true"}}]}, "rules": []}),
        json!({"metadata": {"name": "view-leases", "labels": {"rbac.example/aggregate-to-view": "true"}},
            "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]}),
        cluster_role(
            "everything",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
        ),
    ];
    let roles = vec![
        json!({"metadata": {"name": "svc-writer", "namespace": "t1"},
        "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["create", "delete"]}]}),
    ];
    let crbs = vec![
        crb(
            "probes",
            "probe-status",
            json!([{"kind": "ServiceAccount", "name": "ferry-agent", "namespace": "ferry-system"}]),
        ),
        crb(
            "readers",
            "pod-reader",
            json!([{"kind": "Group", "name": "readers"}]),
        ),
        crb(
            "cm1",
            "one-configmap",
            json!([{"kind": "User", "name": "carol"}]),
        ),
        crb(
            "status",
            "any-status",
            json!([{"kind": "User", "name": "stat"}]),
        ),
        crb(
            "metrics",
            "metrics",
            json!([{"kind": "User", "name": "prom"}]),
        ),
        crb(
            "aggregate",
            "aggregate",
            json!([{"kind": "User", "name": "agg"}]),
        ),
        crb(
            "dangling",
            "no-such-role",
            json!([{"kind": "User", "name": "dan"}]),
        ),
    ];
    let rbs = vec![
        rb(
            "t1",
            "writers",
            "Role",
            "svc-writer",
            json!([{"kind": "ServiceAccount", "name": "deployer"}]),
        ),
        rb(
            "t1",
            "t1-pods",
            "ClusterRole",
            "pod-reader",
            json!([{"kind": "User", "name": "tina"}]),
        ),
        rb(
            "t1",
            "t1-all",
            "ClusterRole",
            "everything",
            json!([{"kind": "Group", "name": "system:serviceaccounts:t1-admins"}]),
        ),
    ];
    Index::build(&cluster_roles, &roles, &crbs, &rbs)
}

#[test]
fn decisions_follow_the_bindings() {
    let idx = index();
    let sa = |ns: &str, n: &str| UserInfo::service_account(ns, n, "");
    struct Case {
        name: &'static str,
        user: UserInfo,
        attrs: Attributes,
        want: bool,
    }
    let cases = vec![
        Case {
            name: "masters do anything",
            user: user("root", &["system:masters"]),
            attrs: res("delete", "", "secrets", Some("x"), Some("s")),
            want: true,
        },
        Case {
            name: "nobody else without a binding",
            user: user("eve", &["system:authenticated"]),
            attrs: res("get", "", "pods", Some("t1"), Some("p")),
            want: false,
        },
        Case {
            name: "SA subject matches the SA user",
            user: sa("ferry-system", "ferry-agent"),
            attrs: res(
                "patch",
                "iaas.yusur.io",
                "networkprobes/status",
                Some("default"),
                Some("p"),
            ),
            want: true,
        },
        Case {
            name: "status rule does not give the object",
            user: sa("ferry-system", "ferry-agent"),
            attrs: res(
                "patch",
                "iaas.yusur.io",
                "networkprobes",
                Some("default"),
                Some("p"),
            ),
            want: false,
        },
        Case {
            name: "object rule does not give the status",
            user: user("tina", &[]),
            attrs: res("get", "", "pods/status", Some("t1"), Some("p")),
            want: false,
        },
        Case {
            name: "same SA name in another namespace",
            user: sa("other", "ferry-agent"),
            attrs: res(
                "patch",
                "iaas.yusur.io",
                "networkprobes/status",
                Some("default"),
                Some("p"),
            ),
            want: false,
        },
        Case {
            name: "group subject",
            user: user("gina", &["readers"]),
            attrs: res("watch", "", "pods", None, None),
            want: true,
        },
        Case {
            name: "group subject, other verb",
            user: user("gina", &["readers"]),
            attrs: res("delete", "", "pods", Some("x"), Some("p")),
            want: false,
        },
        Case {
            name: "group subject, other group",
            user: user("gina", &["readers"]),
            attrs: res("get", "apps", "pods", Some("x"), Some("p")),
            want: false,
        },
        Case {
            name: "resourceNames: the named one",
            user: user("carol", &[]),
            attrs: res("get", "", "configmaps", Some("x"), Some("cm1")),
            want: true,
        },
        Case {
            name: "resourceNames: another one",
            user: user("carol", &[]),
            attrs: res("get", "", "configmaps", Some("x"), Some("cm2")),
            want: false,
        },
        Case {
            name: "resourceNames: a list has no name",
            user: user("carol", &[]),
            attrs: res("list", "", "configmaps", Some("x"), None),
            want: false,
        },
        Case {
            name: "*/status matches any status",
            user: user("stat", &[]),
            attrs: res("update", "apps", "deployments/status", Some("x"), Some("d")),
            want: true,
        },
        Case {
            name: "*/status is not the object",
            user: user("stat", &[]),
            attrs: res("update", "apps", "deployments", Some("x"), Some("d")),
            want: false,
        },
        Case {
            name: "*/status is not scale",
            user: user("stat", &[]),
            attrs: res("update", "apps", "deployments/scale", Some("x"), Some("d")),
            want: false,
        },
        Case {
            name: "nonResourceURL exact",
            user: user("prom", &[]),
            attrs: Attributes::non_resource("get", "/metrics"),
            want: true,
        },
        Case {
            name: "nonResourceURL prefix",
            user: user("prom", &[]),
            attrs: Attributes::non_resource("get", "/debug/pprof/heap"),
            want: true,
        },
        Case {
            name: "nonResourceURL other path",
            user: user("prom", &[]),
            attrs: Attributes::non_resource("get", "/api"),
            want: false,
        },
        Case {
            name: "nonResourceURL other verb",
            user: user("prom", &[]),
            attrs: Attributes::non_resource("post", "/metrics"),
            want: false,
        },
        Case {
            name: "nonResourceURL rules give no resources",
            user: user("prom", &[]),
            attrs: res("get", "", "pods", Some("x"), Some("metrics")),
            want: false,
        },
        Case {
            name: "aggregated rules",
            user: user("agg", &[]),
            attrs: res("get", "coordination.k8s.io", "leases", Some("x"), Some("l")),
            want: true,
        },
        Case {
            name: "aggregated rules only",
            user: user("agg", &[]),
            attrs: res(
                "update",
                "coordination.k8s.io",
                "leases",
                Some("x"),
                Some("l"),
            ),
            want: false,
        },
        Case {
            name: "dangling roleRef grants nothing",
            user: user("dan", &[]),
            attrs: res("get", "", "pods", Some("x"), Some("p")),
            want: false,
        },
        Case {
            name: "Role in its namespace",
            user: sa("t1", "deployer"),
            attrs: res("create", "", "services", Some("t1"), None),
            want: true,
        },
        Case {
            name: "Role not in another namespace",
            user: sa("t1", "deployer"),
            attrs: res("create", "", "services", Some("t2"), None),
            want: false,
        },
        Case {
            name: "Role not at the cluster scope",
            user: sa("t1", "deployer"),
            attrs: res("list", "", "services", None, None),
            want: false,
        },
        Case {
            name: "RoleBinding of a ClusterRole in its namespace",
            user: user("tina", &[]),
            attrs: res("list", "", "pods", Some("t1"), None),
            want: true,
        },
        Case {
            name: "RoleBinding of a ClusterRole elsewhere",
            user: user("tina", &[]),
            attrs: res("list", "", "pods", Some("t2"), None),
            want: false,
        },
        Case {
            name: "wildcard role via an SA namespace group",
            user: sa("t1-admins", "x"),
            attrs: res("create", "", "pods", Some("t1"), None),
            want: true,
        },
        Case {
            name: "SA namespace group",
            user: UserInfo {
                groups: vec!["system:serviceaccounts:t1-admins".into()],
                ..user("u", &[])
            },
            attrs: res("create", "batch", "jobs/status", Some("t1"), None),
            want: true,
        },
        Case {
            name: "default SA may not create pods",
            user: sa("t1", "default"),
            attrs: res("create", "", "pods", Some("t1"), None),
            want: false,
        },
    ];
    let mut failed = Vec::new();
    for c in cases {
        let got = authorize(&idx, &c.user, &c.attrs);
        if got.allowed != c.want || is_allowed(&idx, &c.user, &c.attrs) != c.want {
            failed.push(format!("{}: got {got:?}", c.name));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn allowed_says_which_binding() {
    let d = authorize(
        &index(),
        &UserInfo::service_account("t1", "deployer", ""),
        &res("create", "", "services", Some("t1"), None),
    );
    assert_eq!(
        d,
        Decision {
            allowed: true,
            reason: "RBAC: allowed by RoleBinding \"t1/writers\" of Role \"svc-writer\" to ServiceAccount \"t1:deployer\"".into()
        }
    );
}

#[test]
fn forbidden_reasons_read_like_kube_apiserver() {
    let cases = [
        (
            res("create", "", "pods", Some("t1"), None),
            "User \"system:serviceaccount:t1:default\" cannot create resource \"pods\" in API group \"\" in the namespace \"t1\"",
        ),
        (
            res(
                "patch",
                "iaas.yusur.io",
                "networkprobes/status",
                Some("default"),
                Some("p"),
            ),
            "User \"system:serviceaccount:t1:default\" cannot patch resource \"networkprobes/status\" in API group \"iaas.yusur.io\" in the namespace \"default\"",
        ),
        (
            res("list", "", "nodes", None, None),
            "User \"system:serviceaccount:t1:default\" cannot list resource \"nodes\" in API group \"\" at the cluster scope",
        ),
        (
            Attributes::non_resource("get", "/metrics"),
            "User \"system:serviceaccount:t1:default\" cannot get path \"/metrics\"",
        ),
    ];
    for (attrs, want) in cases {
        assert_eq!(
            forbidden_reason("system:serviceaccount:t1:default", &attrs),
            want
        );
    }
}

#[test]
fn identities_know_their_node_and_service_account() {
    assert_eq!(UserInfo::node("node1").node_name(), Some("node1"));
    // The name alone is not enough: the group says it is a node.
    assert_eq!(user("system:node:node1", &[]).node_name(), None);
    assert_eq!(
        UserInfo::service_account("t1", "default", "").service_account_of(),
        Some(("t1", "default"))
    );
    assert_eq!(
        user("system:serviceaccount:t1", &[]).service_account_of(),
        None
    );
}
