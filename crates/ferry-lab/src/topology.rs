//! The lab's topology as Ferry objects (pure): VPCs with overlapping CIDRs, subnets, backends
//! of every kind, clients, the outside client, one service per scenario plus the seed
//! manifest, and the scenario table `lab status` and `lab check` work from.

use serde_json::{Value, json};

/// The seed manifest, applied verbatim.
pub const SEED: &str = include_str!("../../../examples/ysvc1.yaml");

pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const EIP_POOL: &str = "198.18.0.100-198.18.0.199";
pub const EXTERNAL_CIDR: &str = "198.18.0.0/24";
pub const EXTERNAL_GATEWAY: &str = "198.18.0.1";
pub const NODES: [&str; 2] = ["node1", "node2"];

/// A host of the lab: something with a network namespace.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabHost {
    pub name: String,
    pub kind: String,
    pub netns: String,
    pub vpc: String,
}

/// One access scenario: who connects where, and who may answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scenario {
    pub id: u32,
    pub name: String,
    pub service: String,
    pub client: String,
    pub port: u16,
    pub use_eip: bool,
    pub backends: Vec<String>,
}

/// Every backend answers `GET /` with its name on the first line, and runs iperf3 on 5001.
pub fn backend_command(name: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "mkdir -p www && printf '{name}\\n' > www/index.html && iperf3 -s -p 5001 >/dev/null 2>&1 & exec python3 -m http.server 8080 -d www"
        ),
    ]
}

fn pod(
    name: &str,
    subnet: &str,
    node: &str,
    labels: Value,
    command: Vec<String>,
    static_ip: Option<&str>,
) -> Value {
    let mut annotations = json!({"iaas.yusur.io/subnet": subnet});
    if let Some(ip) = static_ip {
        annotations["iaas.yusur.io/ip_address"] = json!(ip);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels, "annotations": annotations},
        "spec": {"nodeName": node, "restartPolicy": "Always", "containers": [{"name": "main", "image": "lab", "command": command}]}})
}

fn sleeper() -> Vec<String> {
    vec!["sleep".into(), "infinity".into()]
}

/// Networks first, then workloads, then services.
pub fn objects() -> Vec<Value> {
    let mut out = Vec::new();
    // vpc2 admits only the lab's namespace (tenancy admission refuses others); the
    // others admit every namespace.
    for (v, spec) in [
        (ferry_api::DEFAULT_VPC, json!({})),
        ("vpc1", json!({})),
        ("vpc2", json!({"namespaces": ["default"]})),
    ] {
        out.push(json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Vpc", "metadata": {"name": v}, "spec": spec}));
    }
    for (name, vpc, cidr, default) in [
        ("subnet0", ferry_api::DEFAULT_VPC, "100.64.0.0/16", false),
        ("ovn-default", ferry_api::DEFAULT_VPC, "10.16.0.0/16", true),
        ("vpc1-subnet1", "vpc1", "10.0.1.0/24", false),
        ("vpc1-subnet2", "vpc1", "10.0.2.0/24", false),
        ("vpc1-subnet3", "vpc1", "10.0.3.0/24", false),
        ("vpc2-subnet1", "vpc2", "10.0.1.0/24", false),
    ] {
        let mut spec = json!({"vpc": vpc, "cidrBlock": cidr});
        if default {
            spec["default"] = json!(true);
        }
        out.push(json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": name}, "spec": spec}));
    }
    out.push(pod(
        "svc1-ep-1",
        "vpc1-subnet1",
        "node1",
        json!({"svc": "svc1-ep", "tier": "multi"}),
        backend_command("svc1-ep-1"),
        None,
    ));
    out.push(pod(
        "svc1-ep-2",
        "vpc1-subnet2",
        "node2",
        json!({"svc": "svc1-ep"}),
        backend_command("svc1-ep-2"),
        None,
    ));
    // vpc2 reuses 10.0.1.0/24; a fixed address keeps it distinct from vpc1's backend so the
    // multi-VPC service can route to both (ovn.md: same-IP backends are a conflict).
    out.push(pod(
        "vpc2-ep-1",
        "vpc2-subnet1",
        "node2",
        json!({"tier": "multi"}),
        backend_command("vpc2-ep-1"),
        Some("10.0.1.20"),
    ));
    out.push(pod(
        "default-ep-1",
        "ovn-default",
        "node2",
        json!({"app": "default-web"}),
        backend_command("default-ep-1"),
        None,
    ));
    out.push(pod(
        "client-vpc1",
        "vpc1-subnet3",
        "node1",
        json!({"role": "client"}),
        sleeper(),
        Some("10.0.3.10"),
    ));
    out.push(pod(
        "client-vpc2",
        "vpc2-subnet1",
        "node1",
        json!({"role": "client"}),
        sleeper(),
        Some("10.0.1.30"),
    ));
    let cmd = |name: &str| serde_json::to_string(&backend_command(name)).unwrap_or_default();
    out.push(json!({"apiVersion": "iaas.yusur.io/v1", "kind": "BareMetal", "metadata": {"name": "bm-1", "namespace": "default",
        "labels": {"svc": "svc1-ep"}, "annotations": {"lab.ferry.io/command": cmd("bm-1")}}, "spec": {"subnet": "vpc1-subnet2", "nodeName": "node2"}}));
    out.push(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "vm-1", "namespace": "default",
        "labels": {"svc": "svc1-ep"}, "annotations": {"iaas.yusur.io/subnet": "vpc1-subnet2", "lab.ferry.io/command": cmd("vm-1")}},
        "spec": {"domain": {"devices": {}}}, "status": {"nodeName": "node1"}}));
    out.push(json!({"apiVersion": "iaas.yusur.io/v1", "kind": "VNicIP", "metadata": {"name": "vnic-1", "namespace": "default",
        "labels": {"svc": "svc1-ep"}, "annotations": {"lab.ferry.io/command": cmd("vnic-1")}}, "spec": {"subnet": "vpc1-subnet1", "nodeName": "node1"}}));
    // The outside client sits on node2: node1's chassis is the preferred gateway, so with
    // a chassis per node its requests cross the external network (localnet) to reach it,
    // and it survives the loss of node1's chassis (`ferry lab gateway-failover`).
    out.push(json!({"apiVersion": "iaas.yusur.io/v1", "kind": "VNicIP", "metadata": {"name": "ext-client", "namespace": "default",
        "annotations": {"iaas.yusur.io/cidr": EXTERNAL_CIDR, "iaas.yusur.io/gateway": EXTERNAL_GATEWAY, "lab.ferry.io/command": "[\"sleep\",\"infinity\"]"}},
        "spec": {"subnet": "external", "ipAddress": "198.18.0.250", "macAddress": "0a:00:00:ee:00:fa", "nodeName": "node2"}}));
    let http = json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]);
    let svc = |name: &str, spec: Value| json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService", "metadata": {"name": name, "namespace": "default"}, "spec": spec});
    out.push(svc("web-vpc1", json!({"type": "ClusterIP", "scope": "vpc", "vpc": "vpc1", "clusterIP": "10.96.0.10", "ports": http, "selector": {"svc": "svc1-ep"}})));
    out.push(svc("web-default", json!({"type": "ClusterIP", "scope": "vpc", "clusterIP": "10.96.0.20", "ports": http, "selector": {"app": "default-web"}})));
    out.push(svc("web-eip", json!({"type": "LoadBalancer", "scope": "vpc", "vpc": "vpc1", "clusterIP": "10.96.0.30", "eip": "198.18.0.100", "ports": http, "selector": {"svc": "svc1-ep"}})));
    out.push(svc("web-multi", json!({"type": "LoadBalancer", "scope": "multi-vpc", "vpcs": ["vpc1", "vpc2"], "eip": "198.18.0.101", "ports": http, "selector": {"tier": "multi"}})));
    out
}

pub fn hosts() -> Vec<LabHost> {
    let h = |name: &str, kind: &str, vpc: &str| LabHost {
        name: name.into(),
        kind: kind.into(),
        netns: format!("ferry-{name}"),
        vpc: vpc.into(),
    };
    vec![
        h("svc1-ep-1", "Pod", "vpc1"),
        h("svc1-ep-2", "Pod", "vpc1"),
        h("bm-1", "BareMetal", "vpc1"),
        h("vm-1", "VirtualMachineInstance", "vpc1"),
        h("vnic-1", "VNicIP", "vpc1"),
        h("vpc2-ep-1", "Pod", "vpc2"),
        h("default-ep-1", "Pod", ferry_api::DEFAULT_VPC),
        h("client-vpc1", "Pod", "vpc1"),
        h("client-vpc2", "Pod", "vpc2"),
        h("ext-client", "External", "external"),
        h("node1", "Node", ferry_api::DEFAULT_VPC),
        h("node2", "Node", ferry_api::DEFAULT_VPC),
    ]
    .into_iter()
    .chain(crate::services::hosts())
    .collect()
}

pub fn scenarios() -> Vec<Scenario> {
    let svc1 = vec![
        "svc1-ep-1".to_string(),
        "svc1-ep-2".into(),
        "bm-1".into(),
        "vm-1".into(),
        "vnic-1".into(),
    ];
    vec![
        Scenario {
            id: 1,
            name: "clusterip-in-vpc".into(),
            service: "default/web-vpc1".into(),
            client: "client-vpc1".into(),
            port: 80,
            use_eip: false,
            backends: svc1.clone(),
        },
        Scenario {
            id: 2,
            name: "node-to-default-vpc".into(),
            service: "default/web-default".into(),
            client: "node1".into(),
            port: 80,
            use_eip: false,
            backends: vec!["default-ep-1".into()],
        },
        Scenario {
            id: 3,
            name: "eip-to-vpc".into(),
            service: "default/web-eip".into(),
            client: "ext-client".into(),
            port: 80,
            use_eip: true,
            backends: svc1,
        },
        Scenario {
            id: 4,
            name: "eip-to-multi-vpc".into(),
            service: "default/web-multi".into(),
            client: "ext-client".into(),
            port: 80,
            use_eip: true,
            backends: vec!["svc1-ep-1".into(), "vpc2-ep-1".into()],
        },
    ]
}
