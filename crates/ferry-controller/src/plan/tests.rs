use super::*;
use ferry_api::{BackendKind, NetworkProbeStatus};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use crate::ipam::Pool;

fn svc(name: &str, spec: serde_json::Value, created: i64) -> Arc<YusurService> {
    let mut s: YusurService = serde_json::from_value(json!({
        "apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
        "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
        "spec": spec}))
    .unwrap();
    s.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
    Arc::new(s)
}

fn backend(name: &str, ip: &str, vpc: &str) -> Backend {
    Backend {
        kind: BackendKind::Pod,
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        ip: ip.parse().unwrap(),
        vpc: vpc.into(),
        subnet: format!("{vpc}-subnet1"),
        node: Some("node1".into()),
        labels: [("app", "web")].into_iter().collect(),
    }
}

fn probe(name: &str, phase: ProbePhase) -> ((String, String), Arc<NetworkProbe>) {
    let mut p: NetworkProbe = serde_json::from_value(json!({
        "apiVersion": "iaas.yusur.io/v1", "kind": "NetworkProbe",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"target": {"kind": "Pod", "name": "x", "vpc": "vpc1", "ip": "10.0.0.1"},
                 "type": "TCP", "port": 80, "periodSeconds": 1, "timeoutSeconds": 1,
                 "successThreshold": 1, "failureThreshold": 3}}))
    .unwrap();
    p.status = Some(NetworkProbeStatus {
        phase,
        ..Default::default()
    });
    (("default".into(), name.into()), Arc::new(p))
}

fn pools() -> ServicePools {
    ServicePools {
        cluster_ips: Pool::subnet("10.96.0.0/24", None, &[]).unwrap(),
        eips: Some(Pool::parse_range("198.18.0.100-198.18.0.101").unwrap()),
    }
}

/// (key, clusterIP, eip, ready backends, total, problem reason)
type Brief = (
    String,
    Option<String>,
    Option<String>,
    Vec<String>,
    usize,
    Option<&'static str>,
);

fn brief(o: &ServiceOutcome) -> Brief {
    (
        o.key.clone(),
        o.cluster_ip.map(|i| i.to_string()),
        o.eip.map(|i| i.to_string()),
        o.ready.iter().map(|b| b.name.clone()).collect(),
        o.total(),
        o.problem.as_ref().map(Problem::reason),
    )
}

fn run(
    services: Vec<Arc<YusurService>>,
    backends: Vec<Backend>,
    probes: BTreeMap<(String, String), Arc<NetworkProbe>>,
) -> Vec<Brief> {
    let input = PlanInput {
        services,
        full: true,
        eips: BTreeMap::from([("eip-a".to_string(), "198.18.0.100".parse().unwrap())]),
        vpcs: ["ovn-cluster", "vpc1", "vpc2"]
            .into_iter()
            .map(String::from)
            .collect(),
        probes: &probes,
    };
    plan_services(
        &input,
        &pools(),
        &mut Pending::default(),
        &mut Claims::default(),
        &Index::from_backends(backends),
    )
    .iter()
    .map(brief)
    .collect()
}

fn want(
    key: &str,
    vip: Option<&str>,
    eip: Option<&str>,
    ready: &[&str],
    total: usize,
    problem: Option<&'static str>,
) -> Brief {
    (
        key.into(),
        vip.map(String::from),
        eip.map(String::from),
        ready.iter().map(|s| s.to_string()).collect(),
        total,
        problem,
    )
}

/// The service CIDR's first address (10.96.0.1) is reserved, as kube-apiserver keeps it
/// for `kubernetes.default`: services start at .2.
type Case = (
    &'static str,
    Vec<Arc<YusurService>>,
    Vec<Backend>,
    Vec<((String, String), Arc<NetworkProbe>)>,
    Vec<Brief>,
);

#[test]
fn table() {
    let vpc1 = json!({"vpc": "vpc1", "selector": {"app": "web"}, "ports": [{"port": 80}]});
    let cases: Vec<Case> = vec![
        (
            "only Healthy probes make a backend ready",
            vec![svc("s", vpc1.clone(), 1)],
            vec![
                backend("a", "10.0.1.2", "vpc1"),
                backend("b", "10.0.1.3", "vpc1"),
                backend("c", "10.0.1.4", "vpc1"),
            ],
            vec![
                probe("s-pod-a", ProbePhase::Healthy),
                probe("s-pod-b", ProbePhase::Unhealthy),
            ],
            vec![want("default/s", Some("10.96.0.2"), None, &["a"], 3, None)],
        ),
        (
            "backends of another VPC are not selected",
            vec![svc("s", vpc1.clone(), 1)],
            vec![backend("a", "10.0.1.2", "vpc2")],
            vec![],
            vec![want(
                "default/s",
                Some("10.96.0.2"),
                None,
                &[],
                0,
                Some("NoBackends"),
            )],
        ),
        (
            "a missing VPC is the problem, though the address is kept",
            vec![svc(
                "s",
                json!({"vpc": "vpc9", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
                1,
            )],
            vec![],
            vec![],
            vec![want(
                "default/s",
                Some("10.96.0.2"),
                None,
                &[],
                0,
                Some("VpcNotFound"),
            )],
        ),
        (
            "the older service keeps a contested clusterIP",
            vec![
                svc(
                    "new",
                    json!({"clusterIP": "10.96.0.9", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
                    2,
                ),
                svc(
                    "old",
                    json!({"clusterIP": "10.96.0.9", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
                    1,
                ),
            ],
            vec![],
            vec![],
            vec![
                want("default/new", None, None, &[], 0, Some("ClusterIPConflict")),
                want(
                    "default/old",
                    Some("10.96.0.9"),
                    None,
                    &[],
                    0,
                    Some("NoBackends"),
                ),
            ],
        ),
        (
            "LoadBalancer: an Eip by name, then the pool runs dry",
            vec![
                svc(
                    "a",
                    json!({"type": "LoadBalancer", "eip": "eip-a", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
                    1,
                ),
                svc(
                    "b",
                    json!({"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
                    2,
                ),
                svc(
                    "c",
                    json!({"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
                    3,
                ),
                svc(
                    "d",
                    json!({"type": "LoadBalancer", "eip": "nope", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
                    4,
                ),
            ],
            vec![],
            vec![],
            vec![
                want(
                    "default/a",
                    Some("10.96.0.2"),
                    Some("198.18.0.100"),
                    &[],
                    0,
                    Some("NoBackends"),
                ),
                want(
                    "default/b",
                    Some("10.96.0.3"),
                    Some("198.18.0.101"),
                    &[],
                    0,
                    Some("NoBackends"),
                ),
                want("default/c", None, None, &[], 0, Some("EipExhausted")),
                want("default/d", None, None, &[], 0, Some("EipNotFound")),
            ],
        ),
    ];
    for (name, services, backends, probes, want) in cases {
        let got = run(services, backends, probes.into_iter().collect());
        assert_eq!(got, want, "{name}");
    }
}
