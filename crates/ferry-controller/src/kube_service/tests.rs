use super::*;
use serde_json::json;

fn svc(spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": spec}))
    .unwrap()
}

fn slice(ports: serde_json::Value, endpoints: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": "web-abc", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": ports, "endpoints": endpoints}))
    .unwrap()
}

fn ep(ip: &str, ready: Option<bool>, node: &str, pod: &str) -> serde_json::Value {
    let mut e = json!({"addresses": [ip], "nodeName": node,
        "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}});
    if let Some(r) = ready {
        e["conditions"] = json!({"ready": r});
    }
    e
}

fn vpc_of(_ns: &str, name: &str) -> Option<String> {
    Some(
        if name == "in-vpc1" {
            "vpc1"
        } else {
            "ovn-cluster"
        }
        .to_string(),
    )
}

/// (vip ports as port->target/proto/nodePort, backends, eip, externalIPs, local, affinity)
fn brief(s: &ServiceState) -> String {
    let ports: Vec<String> = s
        .ports
        .iter()
        .map(|p| {
            format!(
                "{}->{}/{}{}",
                p.port,
                p.target_port,
                p.protocol.as_str(),
                p.node_port.map(|n| format!(" np{n}")).unwrap_or_default()
            )
        })
        .collect();
    let backends: Vec<String> = s
        .backends
        .iter()
        .map(|b| format!("{}@{}", b.ip, b.node.as_deref().unwrap_or("-")))
        .collect();
    format!(
        "{} ports[{}] backends[{}] eip={:?} ext={:?} local={} affinity={:?}",
        s.cluster_ip.map(|i| i.to_string()).unwrap_or_default(),
        ports.join(","),
        backends.join(","),
        s.eip,
        s.external_ips,
        s.node_local,
        s.affinity_timeout
    )
}

/// (name, Service, its slices, LoadBalancer address, the brief of the NB state).
type Case = (
    &'static str,
    Service,
    Vec<EndpointSlice>,
    Option<&'static str>,
    Option<&'static str>,
);

#[test]
fn table() {
    let http = json!([{"name": "http", "port": 8080, "protocol": "TCP"}]);
    let two = json!([
        ep("10.16.0.10", Some(true), "node1", "a"),
        ep("10.16.0.11", None, "node2", "b")
    ]);
    let cases: Vec<Case> = vec![
        (
            "ClusterIP: ready and unset-ready endpoints, the slice's port for a named targetPort",
            svc(
                json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}),
            ),
            vec![slice(http.clone(), two.clone())],
            None,
            Some(
                "10.96.0.20 ports[80->8080/tcp] backends[10.16.0.10@node1,10.16.0.11@node2] eip=None ext=[] local=false affinity=None",
            ),
        ),
        (
            "a not-ready endpoint and one in another VPC are left out",
            svc(
                json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
            ),
            vec![slice(
                http.clone(),
                json!([
                    ep("10.16.0.10", Some(false), "node1", "a"),
                    ep("10.0.1.5", Some(true), "node1", "in-vpc1"),
                    ep("10.16.0.12", Some(true), "node2", "c")
                ]),
            )],
            None,
            Some(
                "10.96.0.20 ports[80->8080/tcp] backends[10.16.0.12@node2] eip=None ext=[] local=false affinity=None",
            ),
        ),
        (
            "NodePort, Local, ClientIP affinity with its timeout, UDP",
            svc(
                json!({"type": "NodePort", "clusterIP": "10.96.0.21", "externalTrafficPolicy": "Local",
                       "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                       "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353, "nodePort": 30053}]}),
            ),
            vec![],
            None,
            Some(
                "10.96.0.21 ports[53->5353/udp np30053] backends[] eip=None ext=[] local=true affinity=Some(60)",
            ),
        ),
        (
            "LoadBalancer with its address and externalIPs",
            svc(
                json!({"type": "LoadBalancer", "clusterIP": "10.96.0.22", "externalIPs": ["198.18.0.77"],
                       "ports": [{"port": 80, "nodePort": 30080}]}),
            ),
            vec![],
            Some("198.18.0.120"),
            Some(
                "10.96.0.22 ports[80->80/tcp np30080] backends[] eip=Some(198.18.0.120) ext=[198.18.0.77] local=false affinity=None",
            ),
        ),
        (
            "a ClusterIP Service's nodePort field is ignored",
            svc(json!({"clusterIP": "10.96.0.23", "ports": [{"port": 80, "nodePort": 30081}]})),
            vec![],
            None,
            Some(
                "10.96.0.23 ports[80->80/tcp] backends[] eip=None ext=[] local=false affinity=None",
            ),
        ),
        (
            "headless: DNS only",
            svc(json!({"clusterIP": "None", "ports": [{"port": 80}]})),
            vec![],
            None,
            None,
        ),
        (
            "ExternalName: DNS only",
            svc(json!({"type": "ExternalName", "externalName": "example.org"})),
            vec![],
            None,
            None,
        ),
        (
            "no cluster IP yet",
            svc(json!({"ports": [{"port": 80}]})),
            vec![],
            None,
            None,
        ),
    ];
    for (name, s, slices, lb, want) in cases {
        let refs: Vec<&EndpointSlice> = slices.iter().collect();
        let got = service_state(&s, &refs, lb.map(|i| i.parse().unwrap()), vpc_of);
        assert_eq!(got.as_ref().map(brief).as_deref(), want, "{name}");
        if let Some(g) = got {
            assert_eq!(
                (g.key.as_str(), g.kind),
                ("svc/default/web", ServiceKind::Service),
                "{name}"
            );
        }
    }
}

#[test]
fn generated_services_are_left_to_their_yusurservice() {
    let mut s = svc(json!({"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}));
    s.metadata.labels = Some([(ferry_api::SERVICE_LABEL.to_string(), "web".to_string())].into());
    assert!(generated(&s));
    assert_eq!(service_state(&s, &[], None, vpc_of), None);
    s.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
    assert!(!wants_lb_ip(&s));
}

#[test]
fn lb_addresses_keep_what_status_holds_and_never_take_another_services() {
    let pool = Pool::parse_range("198.18.0.100-198.18.0.102").unwrap();
    let lb = |name: &str, held: Option<&str>| -> Service {
        let mut s = svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.30", "ports": [{"port": 80}]}),
        );
        s.metadata.name = Some(name.into());
        if let Some(ip) = held {
            s.status =
                serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": ip}]}})).unwrap();
        }
        s
    };
    let mut claims = Claims::default();
    // A YusurService holds .100 already.
    claims
        .claim_eip("198.18.0.100".parse().unwrap(), "default/ysvc")
        .unwrap();
    let (a, b, c, d) = (
        lb("a", None),
        lb("b", Some("198.18.0.102")),
        lb("c", Some("198.18.0.100")),
        lb("d", None),
    );
    let got = lb_ips(&[&a, &b, &c, &d], Some(&pool), &mut claims);
    let brief: BTreeMap<&str, String> = got
        .iter()
        .map(|(k, r)| {
            (
                k.as_str(),
                match r {
                    Ok(ip) => ip.to_string(),
                    Err(p) => p.reason().to_string(),
                },
            )
        })
        .collect();
    assert_eq!(
        brief,
        BTreeMap::from([
            ("svc/default/a", "198.18.0.101".to_string()),
            ("svc/default/b", "198.18.0.102".to_string()),
            ("svc/default/c", "EipConflict".to_string()),
            ("svc/default/d", "EipExhausted".to_string()),
        ])
    );
    assert_eq!(
        lb_ips(&[&a], None, &mut Claims::default())["svc/default/a"],
        Err(Problem::NoEipPool)
    );
}
