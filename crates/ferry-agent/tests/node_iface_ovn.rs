//! The node interface of a real node (scenario 2), for real: a namespace made by the test
//! plays the host (it has its own default route, through a veth to an "upstream"
//! namespace); the agent's node-interface plumbing runs inside it as it would in the
//! host's namespace. The default VPC (`subnet0`, `ovn-default`, a ClusterIP service) is
//! built by `ferry-net` exactly as the network controller writes it, into a real OVN with a
//! userspace-datapath OVS. Checked: the host's default route is untouched, the service CIDR
//! and the pod subnet go via the join gateway on `ferry0`, TCP from the host reaches the
//! pod directly and through the ClusterIP, an agent restart keeps the interface, a broken
//! route is repaired, and removal (or the record's cleanup) leaves nothing behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use ferry_agent::netns_admin::{self, Record};
use ferry_agent::node_iface::{self, Ensured, Target};
use ferry_agent::plumb::{self, PlumbRequest, host_ifname};
use ferry_agent::runtime::RuntimeConfig;
use ferry_net::{
    Backend, NetworkState, PortKind, PortState, Protocol, ServicePort, ServiceScope, ServiceState,
    SubnetState, build_desired, port_name,
};
use ferry_ovn_stack::{Daemon, OvnOptions};
use ferry_testkit::netns::{LinkGuard, Netns, run_inside, unique};
use ferry_testkit::ovn::{TestOvn, chassis_options};
use ferry_testkit::tool;

const JOIN_GW: &str = "100.64.0.1";
const NODE_IP: &str = "100.64.0.2";
const NODE_MAC: &str = "0a:00:00:64:00:02";
const POD_IP: &str = "10.16.0.10";
const POD_MAC: &str = "0a:00:00:10:00:0a";
const CLUSTER_IP: &str = "10.96.0.20";

/// The default VPC as the network controller would describe it.
fn default_vpc(chassis: &str, node_port: &str, pod_port: &str) -> Result<NetworkState> {
    Ok(NetworkState {
        nodes: vec![],
        socket_lb_ports: Default::default(),
        gateway_chassis: chassis.into(),
        transit_cidr: None,
        vpcs: vec![ferry_api::DEFAULT_VPC.into()],
        subnets: vec![
            SubnetState {
                name: "subnet0".into(),
                vpc: ferry_api::DEFAULT_VPC.into(),
                cidr: "100.64.0.0/16".parse()?,
                gateway: JOIN_GW.parse()?,
            },
            SubnetState {
                name: "ovn-default".into(),
                vpc: ferry_api::DEFAULT_VPC.into(),
                cidr: "10.16.0.0/16".parse()?,
                gateway: "10.16.0.1".parse()?,
            },
        ],
        ports: vec![
            PortState {
                name: node_port.into(),
                subnet: "subnet0".into(),
                mac: NODE_MAC.into(),
                ip: NODE_IP.parse()?,
            },
            PortState {
                name: pod_port.into(),
                subnet: "ovn-default".into(),
                mac: POD_MAC.into(),
                ip: POD_IP.parse()?,
            },
        ],
        external: None,
        services: vec![ServiceState {
            external_ips: vec![],
            kind: Default::default(),
            node_local: false,
            key: "default/web-default".into(),
            uid: "uid-web-default".into(),
            scope: ServiceScope::Vpc(ferry_api::DEFAULT_VPC.into()),
            cluster_ip: Some(CLUSTER_IP.parse()?),
            eip: None,
            ports: vec![ServicePort {
                node_port: None,
                port: 80,
                target_port: 8080,
                protocol: Protocol::Tcp,
            }],
            affinity_timeout: None,
            backends: vec![Backend {
                node: None,
                ip: POD_IP.parse()?,
                vpc: ferry_api::DEFAULT_VPC.into(),
            }],
        }],
    })
}

/// Writes the model's rows into the stack's NB with the network controller's own applier
/// (`ferry-nb`).
fn program_nb(stack: &TestOvn, state: &NetworkState) -> Result<()> {
    let desired = build_desired(state);
    ensure!(desired.errors.is_empty(), "model: {:?}", desired.errors);
    let remote = stack.nb_remote();
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = ferry_ovsdb::Client::connect(ferry_ovsdb::nb::config([remote])).await?;
        let applied = ferry_nb::Applier::new(client.clone(), 500)
            .ensure(std::sync::Arc::new(desired))
            .await;
        client.shutdown();
        ensure!(applied?.converged, "the NB did not converge");
        Ok(())
    })
}

/// `ip -j route show ...` inside a namespace, as JSON.
fn routes(ns: &Netns, args: &[&str]) -> Result<Vec<Value>> {
    let out = ns.ip(&[&["-4", "-j", "route", "show"], args].concat())?;
    Ok(serde_json::from_str(&out)?)
}

fn ifindex(ns: &Netns, dev: &str) -> Result<i64> {
    let links: Vec<Value> = serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", dev])?)?;
    links
        .first()
        .and_then(|l| l["ifindex"].as_i64())
        .context("no ifindex")
}

/// GET `url` from inside `ns` until it answers (or 30 s).
fn get(ns: &Netns, url: &str, stack: &TestOvn) -> Result<String> {
    let started = Instant::now();
    loop {
        match ns.exec(&["curl", "-s", "-m", "2", url]) {
            Ok(body) if !body.is_empty() => {
                println!("GET {url} from {} after {:?}", ns.name, started.elapsed());
                return Ok(body);
            }
            _ if started.elapsed() > Duration::from_secs(30) => bail!(
                "GET {url} from {} failed for 30 s\novn-controller:\n{}",
                ns.name,
                stack.log_tail(Daemon::Controller)
            ),
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

#[test]
#[ignore = "needs root, netns and OVN/OVS"]
fn node_interface_in_the_host_namespace_reaches_pods_and_services_without_touching_the_default_route()
-> Result<()> {
    let pid = std::process::id();
    let bridge = format!("fan{pid}");
    // ovs-vswitchd in the test's namespace, where the node interface's host end goes.
    let stack = TestOvn::start(OvnOptions {
        bridge: bridge.clone(),
        ovs_netns: None,
        ..chassis_options("nch")
    })?;
    let node = format!("fat{pid}node");
    let node_port = port_name(PortKind::Node, "", &node);
    let pod_port = port_name(PortKind::Pod, "default", &format!("fat{pid}web"));
    program_nb(
        &stack,
        &default_vpc(&stack.options().system_id, &node_port, &pod_port)?,
    )?;

    // The "host": its own uplink and default route to an upstream namespace.
    let host = Netns::add(&unique("host"))?;
    let upstream = Netns::add(&unique("up"))?;
    host.ip(&[
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "down0",
        "netns",
        &upstream.name,
    ])?;
    host.ip(&["addr", "add", "198.51.100.2/24", "dev", "up0"])?;
    host.ip(&["link", "set", "up0", "up"])?;
    upstream.ip(&["addr", "add", "198.51.100.1/24", "dev", "down0"])?;
    upstream.ip(&["link", "set", "down0", "up"])?;
    host.ip(&[
        "route",
        "add",
        "default",
        "via",
        "198.51.100.1",
        "dev",
        "up0",
    ])?;
    let _upstream_server = upstream.spawn(
        &[
            "python3",
            "-m",
            "http.server",
            "8081",
            "--bind",
            "198.51.100.1",
        ],
        None,
    )?;
    let default_before = routes(&host, &["default"])?;
    assert_eq!(default_before.len(), 1, "{default_before:?}");

    // A pod in ovn-default serving HTTP on 8080, plumbed as the CNI plugin would.
    let pod = Netns::add(&unique("web"))?;
    let pod_req = PlumbRequest {
        netns_path: pod.path(),
        ifname: "eth0".into(),
        host_ifname: host_ifname(&format!("fat{pid}web"), "eth0"),
        mac: POD_MAC.parse()?,
        ip_cidr: format!("{POD_IP}/16").parse()?,
        gateway: "10.16.0.1".parse()?,
        default_route: true,
        routes: vec![],
        iface_id: pod_port.clone(),
        bridge: bridge.clone(),
        ovs_db: stack.paths().ovs_sock.clone(),
        port_type: String::new(),
        ovs_netns: None,
    };
    let _pod_link = LinkGuard(pod_req.host_ifname.clone());
    plumb::add(&pod_req)?;
    let _server = pod.spawn(
        &["python3", "-m", "http.server", "8080", "--bind", POD_IP],
        None,
    )?;

    // The node interface, as the agent computes it from its Node's annotations. The host
    // end goes where ovs-vswitchd runs: the test's own namespace.
    let annotations = [
        ("iaas.yusur.io/ip_address", NODE_IP),
        ("iaas.yusur.io/mac_address", NODE_MAC),
        ("iaas.yusur.io/gateway", JOIN_GW),
        ("iaas.yusur.io/cidr", "100.64.0.0/16"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let subnets: Vec<ferry_api::Subnet> = [
        ("subnet0", "100.64.0.0/16"),
        ("ovn-default", "10.16.0.0/16"),
    ]
    .into_iter()
    .map(|(name, cidr)| {
        ferry_api::Subnet::new(
            name,
            ferry_api::SubnetSpec {
                vpc: ferry_api::DEFAULT_VPC.into(),
                cidr_block: cidr.into(),
                ..Default::default()
            },
        )
    })
    .collect();
    let routed = node_iface::routed_cidrs("10.96.0.0/16".parse()?, &subnets);
    let runtime = RuntimeConfig {
        ovs_db: stack.paths().ovs_sock.clone(),
        bridge: bridge.clone(),
        ovs_netns: Some(PathBuf::from(format!("/proc/{pid}/ns/net"))),
        port_type: String::new(),
        log_dir: stack.paths().log_dir.clone(),
    };
    let target = Target {
        ifname: node_iface::DEFAULT_IFNAME.into(),
        netns: node_iface::own_netns().to_path_buf(),
    };
    let req = node_iface::request(&node, &annotations, &routed, &target, &runtime)?
        .context("all annotations are there")?;
    let _node_link = LinkGuard(req.host_ifname.clone());
    let state = tempfile::tempdir()?;
    let record_path = state.path().join(format!("agent-{node}.json"));
    let in_host = |req: &PlumbRequest| {
        let (req, path) = (req.clone(), record_path.clone());
        run_inside(&host.path(), move || {
            node_iface::ensure(&req, &Record::open(path))
        })
    };
    assert_eq!(in_host(&req)??, Ensured::Plumbed);

    // The host's default route is the one it had; ferry0 carries only its own routes.
    assert_eq!(routes(&host, &["default"])?, default_before);
    let on_ferry0 = routes(&host, &["dev", "ferry0"])?;
    let has = |dst: &str, gw: Option<&str>| {
        on_ferry0
            .iter()
            .any(|r| r["dst"] == dst && r.get("gateway").and_then(Value::as_str) == gw)
    };
    assert!(has("10.96.0.0/16", Some(JOIN_GW)), "{on_ferry0:?}");
    assert!(has("10.16.0.0/16", Some(JOIN_GW)), "{on_ferry0:?}");
    assert!(
        has("100.64.0.0/16", None),
        "on-link join subnet: {on_ferry0:?}"
    );
    assert_eq!(on_ferry0.len(), 3, "nothing else on ferry0: {on_ferry0:?}");
    let link = host.ip(&["addr", "show", "dev", "ferry0"])?;
    assert!(
        link.contains(NODE_MAC) && link.contains("100.64.0.2/16"),
        "{link}"
    );
    // The stack runs the userspace datapath with TSO (the default): offload stays on.
    let offload = host.exec(&["ethtool", "-k", "ferry0"])?;
    assert!(offload.contains("tx-checksumming: on"), "{offload}");
    let recorded = netns_admin::Record::open(record_path.clone())
        .snapshot()
        .ports;
    assert_eq!(
        recorded
            .iter()
            .map(|p| p.host_ifname.as_str())
            .collect::<Vec<_>>(),
        vec![req.host_ifname.as_str()]
    );

    stack.wait_bound(&node_port)?;
    stack.wait_bound(&pod_port)?;
    // Real TCP from the host: to the pod through the join router, and to the ClusterIP
    // through the load balancer on subnet0.
    let direct = get(&host, &format!("http://{POD_IP}:8080/"), &stack)?;
    assert!(direct.contains("Directory listing"), "{direct}");
    let via_service = get(&host, &format!("http://{CLUSTER_IP}/"), &stack)?;
    assert!(via_service.contains("Directory listing"), "{via_service}");
    // The uplink still works: the host's other traffic is untouched.
    let uplink = host
        .exec(&["curl", "-s", "-m", "5", "http://198.51.100.1:8081/"])
        .context("the host lost its uplink")?;
    assert!(uplink.contains("Directory listing"), "{uplink}");

    // An agent restart finds the interface as it left it and keeps it (same link).
    let index = ifindex(&host, "ferry0")?;
    assert_eq!(in_host(&req)??, Ensured::Kept);
    assert_eq!(
        ifindex(&host, "ferry0")?,
        index,
        "restart re-created ferry0"
    );

    // A lost route is noticed and repaired.
    host.ip(&["route", "del", "10.96.0.0/16"])?;
    assert_eq!(in_host(&req)??, Ensured::Plumbed);
    assert_eq!(routes(&host, &["default"])?, default_before);
    let again = get(&host, &format!("http://{CLUSTER_IP}/"), &stack)?;
    assert!(again.contains("Directory listing"), "{again}");

    // Removal (agent shutdown): interface, host end, OVS port and record entry are gone,
    // the default route is still the host's.
    {
        let (req, path) = (req.clone(), record_path.clone());
        run_inside(&host.path(), move || {
            node_iface::remove(&req, &Record::open(path))
        })??;
    }
    let gone = |req: &PlumbRequest| -> Result<()> {
        ensure!(
            host.ip(&["link", "show", "ferry0"]).is_err(),
            "ferry0 left in the host"
        );
        ensure!(
            tool("ip", &["link", "show", &req.host_ifname]).is_err(),
            "host end {} left",
            req.host_ifname
        );
        let ports = stack.vsctl(&["list-ports", &bridge])?;
        ensure!(!ports.contains(&req.host_ifname), "OVS port left: {ports}");
        ensure!(
            Record::open(record_path.clone())
                .snapshot()
                .ports
                .is_empty(),
            "record still lists the port"
        );
        ensure!(
            routes(&host, &["default"])? == default_before,
            "default route changed"
        );
        Ok(())
    };
    gone(&req)?;

    // A crashed agent's interface: `netns_admin::cleanup` of its record removes it.
    assert_eq!(in_host(&req)??, Ensured::Plumbed);
    assert!(host.ip(&["link", "show", "ferry0"]).is_ok());
    netns_admin::cleanup(&record_path);
    gone(&req)?;
    Ok(())
}
