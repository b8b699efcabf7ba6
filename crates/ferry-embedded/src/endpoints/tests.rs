use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{Value, json};

use super::*;

fn service(v: Value) -> Service {
    let mut v = v;
    v["metadata"]["namespace"] = json!("default");
    v["metadata"]["uid"] = json!("svc-uid");
    serde_json::from_value(v).unwrap()
}

fn web() -> Service {
    service(
        json!({"metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                      {"name": "metrics", "port": 9100, "protocol": "TCP", "targetPort": 9100}]}}),
    )
}

/// A Pod of `default` with labels, a podIP (or none), Ready or not, and a named port.
fn pod(name: &str, app: &str, ip: Option<&str>, ready: bool, http: Option<i32>) -> Pod {
    let mut v = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "labels": {"app": app}},
        "spec": {"nodeName": "node1", "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    if let Some(ip) = ip {
        v["status"]["podIP"] = json!(ip);
    }
    if let Some(p) = http {
        v["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": p}]);
    }
    serde_json::from_value(v).unwrap()
}

fn owner() -> Value {
    json!([{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "svc-uid", "controller": true, "blockOwnerDeletion": true}])
}

fn addr(name: &str, ip: &str) -> Value {
    json!({"ip": ip, "nodeName": "node1", "targetRef": {"kind": "Pod", "namespace": "default", "name": name, "uid": format!("uid-{name}")}})
}

fn slice_ep(name: &str, ip: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "nodeName": "node1", "targetRef": {"kind": "Pod", "namespace": "default", "name": name, "uid": format!("uid-{name}")}})
}

fn ports(http: i32) -> Value {
    json!([{"name": "http", "port": http, "protocol": "TCP"}, {"name": "metrics", "port": 9100, "protocol": "TCP"}])
}

fn slice_name(http: i32) -> String {
    let p = |name: &str, port| Resolved {
        name: name.into(),
        port,
        protocol: "TCP".into(),
        app_protocol: None,
    };
    format!("web-{}", ports_hash(&[p("http", http), p("metrics", 9100)]))
}

fn as_json(d: &Desired) -> Value {
    json!({"endpoints": d.endpoints, "slices": d.slices})
}

#[test]
fn pods_become_endpoints_and_slices_like_kube_controller_manager_writes_them() {
    let ep_labels = json!({"app": "web", "endpoints.kubernetes.io/managed-by": "ferry-embedded", "kubernetes.io/service-name": "web"});
    let slice_labels = json!({"app": "web", "endpointslice.kubernetes.io/managed-by": "ferry-embedded", "kubernetes.io/service-name": "web"});
    let mut two_slices = vec![
        (
            slice_name(8080),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": slice_name(8080), "namespace": "default", "labels": slice_labels, "ownerReferences": owner()},
            "addressType": "IPv4", "endpoints": [slice_ep("a", "10.0.0.1", true, true, false), slice_ep("b", "10.0.0.2", false, false, false)], "ports": ports(8080)}),
        ),
        (
            slice_name(8081),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": slice_name(8081), "namespace": "default", "labels": slice_labels, "ownerReferences": owner()},
            "addressType": "IPv4", "endpoints": [slice_ep("c", "10.0.0.3", true, true, false)], "ports": ports(8081)}),
        ),
    ];
    two_slices.sort_by(|a, b| a.0.cmp(&b.0));
    let two_slices: Vec<Value> = two_slices.into_iter().map(|(_, v)| v).collect();
    let placeholder = format!("web-{}", ports_hash(&[]));
    let cases: Vec<(&str, Vec<Pod>, Value)> = vec![
        (
            "ready and not-ready pods, named port resolved per pod, other labels ignored",
            vec![
                pod("a", "web", Some("10.0.0.1"), true, Some(8080)),
                pod("b", "web", Some("10.0.0.2"), false, Some(8080)),
                pod("c", "web", Some("10.0.0.3"), true, Some(8081)),
                pod("d", "db", Some("10.0.0.4"), true, Some(8080)),
            ],
            json!({
                "endpoints": {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": "default", "labels": ep_labels, "ownerReferences": owner()},
                    "subsets": [
                        {"addresses": [addr("a", "10.0.0.1")], "notReadyAddresses": [addr("b", "10.0.0.2")], "ports": ports(8080)},
                        {"addresses": [addr("c", "10.0.0.3")], "ports": ports(8081)},
                    ]},
                "slices": two_slices,
            }),
        ),
        (
            "no pods: empty Endpoints and one placeholder slice",
            vec![pod("d", "db", Some("10.0.0.4"), true, Some(8080))],
            json!({
                "endpoints": {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": "default", "labels": ep_labels, "ownerReferences": owner()}},
                "slices": [{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": placeholder, "namespace": "default", "labels": slice_labels, "ownerReferences": owner()},
                    "addressType": "IPv4", "endpoints": [], "ports": []}],
            }),
        ),
    ];
    for (name, pods, want) in cases {
        let refs: Vec<&Pod> = pods.iter().collect();
        let got = plan(&web(), &refs).expect("managed");
        assert_eq!(as_json(&got), want, "{name}");
    }
}

#[test]
fn addresses_come_from_pod_ip_else_ferrys_annotation_and_unaddressed_pods_are_skipped() {
    let mut annotated = pod("a", "web", None, true, Some(8080));
    annotated.metadata.annotations =
        Some([(IP_ANNOTATION.to_string(), "10.0.0.9".to_string())].into());
    let bare = pod("b", "web", None, true, Some(8080));
    let got = plan(&web(), &[&annotated, &bare]).expect("managed");
    let ips: Vec<String> = got
        .slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.clone()))
        .collect();
    assert_eq!(ips, vec!["10.0.0.9".to_string()]);
}

#[test]
fn terminating_and_finished_pods() {
    let mut leaving = pod("a", "web", Some("10.0.0.1"), true, Some(8080));
    leaving.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ));
    let mut done = pod("b", "web", Some("10.0.0.2"), false, Some(8080));
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let got = plan(&web(), &[&leaving, &done]).expect("managed");
    // Endpoints leave a terminating pod out; its slice keeps it, not ready but serving.
    assert_eq!(got.endpoints.subsets, None);
    assert_eq!(
        serde_json::to_value(&got.slices[0].endpoints).unwrap(),
        json!([slice_ep("a", "10.0.0.1", false, true, true)])
    );
    // publishNotReadyAddresses: every address is ready.
    let mut publish = web();
    publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let not_ready = pod("c", "web", Some("10.0.0.3"), false, Some(8080));
    let got = plan(&publish, &[&not_ready]).expect("managed");
    assert_eq!(
        serde_json::to_value(&got.endpoints.subsets).unwrap()[0]["addresses"],
        json!([addr("c", "10.0.0.3")])
    );
}

#[test]
fn services_this_controller_leaves_alone() {
    let cases = [
        (
            "no selector",
            json!({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}}),
        ),
        (
            "empty selector",
            json!({"metadata": {"name": "x"}, "spec": {"selector": {}, "ports": [{"port": 80}]}}),
        ),
        (
            "ExternalName",
            json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "a.b", "selector": {"app": "web"}}}),
        ),
        (
            "generated for a YusurService",
            json!({"metadata": {"name": "x", "labels": {"iaas.yusur.io/service": "x"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "None", "ports": [{"port": 80}]}}),
        ),
    ];
    let p = pod("a", "web", Some("10.0.0.1"), true, Some(8080));
    for (name, svc) in cases {
        assert_eq!(plan(&service(svc), &[&p]), None, "{name}");
    }
    assert!(hands_off(&service(
        json!({"metadata": {"name": "x", "labels": {"iaas.yusur.io/service": "x"}}})
    )));
}

#[test]
fn big_services_are_cut_into_slices_of_100_and_pods_of_other_namespaces_never_count() {
    let pods: Vec<Pod> = (0..250)
        .map(|i| {
            pod(
                &format!("p{i:03}"),
                "web",
                Some(&format!("10.0.{}.{}", i / 200, i % 200 + 1)),
                true,
                Some(8080),
            )
        })
        .collect();
    let mut other = pod("elsewhere", "web", Some("10.9.9.9"), true, Some(8080));
    other.metadata.namespace = Some("other".into());
    let mut refs: Vec<&Pod> = pods.iter().collect();
    refs.push(&other);
    let got = plan(&web(), &refs).expect("managed");
    let sizes: Vec<(String, usize)> = got
        .slices
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap(), s.endpoints.len()))
        .collect();
    let base = slice_name(8080);
    assert_eq!(
        sizes,
        vec![
            (base.clone(), 100),
            (format!("{base}-1"), 100),
            (format!("{base}-2"), 50)
        ]
    );
    let subset = &got.endpoints.subsets.as_ref().unwrap()[0];
    assert_eq!(subset.addresses.as_ref().unwrap().len(), 250);
}
