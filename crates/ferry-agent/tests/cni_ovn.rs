//! CNI ADD/CHECK/DEL for real: two pods plumbed by the plugin into an OVN VPC (a router
//! with two switches) on a userspace-datapath OVS, TCP between them through OVN, CHECK
//! catching a hand-deleted veth, DEL removing everything and succeeding twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use ferry_agent::cni::{CniEnv, CniError, ErrorCode, NetConf, PodNetwork, Reply, dispatch};
use ferry_agent::cni_plugin::{AssignmentSource, FerryCni};
use ferry_agent::plumb::host_ifname;
use ferry_ovn_stack::{Daemon, OvnOptions};
use ferry_testkit::netns::{LinkGuard, Netns, unique};
use ferry_testkit::ovn::{TestOvn, chassis_options};
use ferry_testkit::tool;

/// Assignments keyed by container id, as the network controller would have written them.
struct Table(HashMap<String, PodNetwork>);

impl AssignmentSource for Table {
    fn pod_network(&mut self, env: &CniEnv, _: &NetConf) -> Result<PodNetwork, CniError> {
        self.0.get(&env.container_id).cloned().ok_or_else(|| {
            CniError::new(ErrorCode::NoAssignment, "no assignment", &env.container_id)
        })
    }
}

fn invoke(
    plugin: &mut FerryCni<Table>,
    command: &str,
    container: &str,
    netns: Option<&Netns>,
    conf: &Value,
) -> Reply {
    let mut vars = vec![
        ("CNI_COMMAND".to_string(), command.to_string()),
        ("CNI_CONTAINERID".to_string(), container.to_string()),
        ("CNI_IFNAME".to_string(), "eth0".to_string()),
        (
            "CNI_ARGS".to_string(),
            format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={container}"),
        ),
        ("CNI_PATH".to_string(), "/opt/cni/bin".to_string()),
    ];
    if let Some(ns) = netns {
        vars.push(("CNI_NETNS".to_string(), ns.path().display().to_string()));
    }
    dispatch(vars, conf.to_string().as_bytes(), plugin)
}

#[test]
#[ignore = "needs root, netns and OVN/OVS"]
fn add_check_del_through_ovn() -> Result<()> {
    let pid = std::process::id();
    let bridge = format!("fat{pid}");
    // ovs-vswitchd in the test's namespace, where the plugin puts the host ends.
    let stack = TestOvn::start(OvnOptions {
        bridge: bridge.clone(),
        ovs_netns: None,
        ..chassis_options("ch")
    })?;

    // A VPC router with two subnets and one logical port each.
    let subnets = [
        ("s1", "0a:00:00:fc:01:01", "10.252.1.1/24"),
        ("s2", "0a:00:00:fc:02:01", "10.252.2.1/24"),
    ];
    let pods = [
        (
            "s1",
            "pod-a.default",
            "0a:00:00:fc:01:0a",
            "10.252.1.10/24",
            "10.252.1.1",
        ),
        (
            "s2",
            "pod-b.default",
            "0a:00:00:fc:02:0a",
            "10.252.2.10/24",
            "10.252.2.1",
        ),
    ];
    ferry_testkit::ovn::vpc_with_ports(&stack, &subnets, &pods)?;

    let ns_a = Netns::add(&unique("a"))?;
    let ns_b = Netns::add(&unique("b"))?;
    let cid_a = format!("fat{pid}containera");
    let cid_b = format!("fat{pid}containerb");
    // If the test fails half-way, these remove the host ends (and so the pods' ends).
    let _links = [
        LinkGuard(host_ifname(&cid_a, "eth0")),
        LinkGuard(host_ifname(&cid_b, "eth0")),
    ];
    let mut table = HashMap::new();
    for (cid, (_, lsp, mac, cidr, gw)) in [(&cid_a, pods[0]), (&cid_b, pods[1])] {
        table.insert(
            cid.clone(),
            PodNetwork {
                ip: cidr.parse()?,
                mac: mac.parse()?,
                gateway: gw.parse()?,
                iface_id: lsp.to_string(),
            },
        );
    }
    let mut plugin = FerryCni {
        assignments: Table(table),
    };
    let conf = json!({
        "cniVersion": "1.0.0", "name": "ferry", "type": "ferry",
        "ovsDbSock": stack.paths().ovs_sock.display().to_string(), "bridge": bridge,
    });

    // ADD both pods.
    for (cid, ns, (_, _, mac, cidr, gw)) in [(&cid_a, &ns_a, pods[0]), (&cid_b, &ns_b, pods[1])] {
        let reply = invoke(&mut plugin, "ADD", cid, Some(ns), &conf);
        assert_eq!(reply.exit_code, 0, "ADD {cid}: {}", reply.stdout);
        let result: Value = serde_json::from_str(&reply.stdout)?;
        assert_eq!(result["cniVersion"], "1.0.0");
        assert_eq!(result["interfaces"][1]["name"], "eth0");
        assert_eq!(result["interfaces"][1]["mac"], mac);
        assert_eq!(
            result["interfaces"][1]["sandbox"],
            ns.path().display().to_string()
        );
        assert_eq!(result["interfaces"][0]["name"], host_ifname(cid, "eth0"));
        assert_eq!(
            result["ips"],
            json!([{"address": cidr, "gateway": gw, "interface": 1}])
        );
        assert_eq!(result["routes"], json!([{"dst": "0.0.0.0/0", "gw": gw}]));
    }
    stack.wait_bound("pod-a.default")?;
    stack.wait_bound("pod-b.default")?;

    // TCP from pod a (10.252.1.10) to pod b (10.252.2.10) through the OVN router.
    let _server = ns_b.spawn(
        &[
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "10.252.2.10",
        ],
        None,
    )?;
    let started = Instant::now();
    let body = loop {
        match ns_a.exec(&["curl", "-s", "-m", "2", "http://10.252.2.10:8080/"]) {
            Ok(body) if !body.is_empty() => break body,
            _ if started.elapsed() > Duration::from_secs(30) => bail!(
                "no TCP between the pods through OVN after 30 s\novn-controller:\n{}",
                stack.log_tail(Daemon::Controller)
            ),
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    };
    println!(
        "TCP through OVN after {:?}: {} bytes of directory listing",
        started.elapsed(),
        body.len()
    );
    assert!(body.contains("Directory listing"), "{body}");
    // And the path really is routed: the pod sees its gateway's router MAC for b.
    let neigh = ns_a.ip(&["neigh", "show", "10.252.1.1"])?;
    assert!(neigh.contains("0a:00:00:fc:01:01"), "gateway ARP: {neigh}");

    // CHECK passes on both.
    for (cid, ns) in [(&cid_a, &ns_a), (&cid_b, &ns_b)] {
        let reply = invoke(&mut plugin, "CHECK", cid, Some(ns), &conf);
        assert_eq!(
            reply,
            Reply {
                stdout: String::new(),
                exit_code: 0
            },
            "CHECK {cid}"
        );
    }

    // Remove pod a's veth by hand: CHECK names the missing host end.
    tool("ip", &["link", "del", &host_ifname(&cid_a, "eth0")])?;
    let reply = invoke(&mut plugin, "CHECK", &cid_a, Some(&ns_a), &conf);
    assert_eq!(reply.exit_code, 1);
    let err: Value = serde_json::from_str(&reply.stdout)?;
    assert_eq!(err["code"], 101, "{err}");
    assert_eq!(
        err["msg"],
        format!("host end {} does not exist", host_ifname(&cid_a, "eth0"))
    );
    println!("CHECK after deleting the veth: {}", reply.stdout);

    // Other discrepancies on pod b: a wrong address, then a missing route.
    ns_b.ip(&["addr", "del", "10.252.2.10/24", "dev", "eth0"])?;
    let reply = invoke(&mut plugin, "CHECK", &cid_b, Some(&ns_b), &conf);
    let err: Value = serde_json::from_str(&reply.stdout)?;
    assert_eq!(err["code"], 101, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap_or("")
            .contains("lacks address 10.252.2.10/24"),
        "{err}"
    );

    // DEL removes everything, a second DEL succeeds, DEL without a netns succeeds.
    for (cid, ns) in [(&cid_a, &ns_a), (&cid_b, &ns_b)] {
        for round in 0..2 {
            let reply = invoke(&mut plugin, "DEL", cid, Some(ns), &conf);
            assert_eq!(
                reply,
                Reply {
                    stdout: String::new(),
                    exit_code: 0
                },
                "DEL {cid} #{round}"
            );
        }
        let reply = invoke(&mut plugin, "DEL", cid, None, &conf);
        assert_eq!(reply.exit_code, 0, "DEL without netns: {}", reply.stdout);
        let host = host_ifname(cid, "eth0");
        assert!(
            tool("ip", &["link", "show", &host]).is_err(),
            "{host} still exists"
        );
        assert!(
            ns.ip(&["link", "show", "eth0"]).is_err(),
            "eth0 still in {}",
            ns.name
        );
        let ports = stack.vsctl(&["list-ports", &bridge])?;
        assert!(
            !ports.contains(&host),
            "OVS port {host} still on {bridge}: {ports}"
        );
    }
    // The logical ports are unbound again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let up = stack.nbctl(&["lsp-get-up", "pod-a.default"])?;
        if up.trim() == "down" {
            break;
        }
        if Instant::now() > deadline {
            bail!("pod-a.default still up after DEL");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[test]
#[ignore = "needs root and netns"]
fn add_into_missing_netns_is_unknown_container_and_leaves_nothing() -> Result<()> {
    let ns = Netns::add(&unique("gone"))?;
    let cid = format!("fat{}gone", std::process::id());
    let _link = LinkGuard(host_ifname(&cid, "eth0"));
    let mut table = HashMap::new();
    table.insert(
        cid.clone(),
        PodNetwork {
            ip: "10.252.9.10/24".parse()?,
            mac: "0a:00:00:fc:09:0a".parse()?,
            gateway: "10.252.9.1".parse()?,
            iface_id: "gone".into(),
        },
    );
    let mut plugin = FerryCni {
        assignments: Table(table),
    };
    let conf = json!({"cniVersion": "1.0.0", "name": "ferry", "type": "ferry",
        "ovsDbSock": "/nonexistent/db.sock", "bridge": "fat-none"});
    let path = ns.path();
    drop(ns);
    let vars = vec![
        ("CNI_COMMAND", "ADD".to_string()),
        ("CNI_CONTAINERID", cid.clone()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_NETNS", path.display().to_string()),
        ("CNI_PATH", "/opt/cni/bin".to_string()),
    ];
    let reply = dispatch(vars, conf.to_string().as_bytes(), &mut plugin);
    let err: Value = serde_json::from_str(&reply.stdout).context("error JSON")?;
    assert_eq!(reply.exit_code, 1);
    assert_eq!(err["code"], 3, "{err}");
    assert_eq!(
        err["msg"],
        format!("network namespace {} does not exist", path.display())
    );
    assert!(tool("ip", &["link", "show", &host_ifname(&cid, "eth0")]).is_err());
    Ok(())
}

#[test]
#[ignore = "needs root and netns"]
fn failed_ovs_step_rolls_back_the_veth() -> Result<()> {
    let ns = Netns::add(&unique("rb"))?;
    let cid = format!("fat{}rollback", std::process::id());
    let host = host_ifname(&cid, "eth0");
    let _link = LinkGuard(host.clone());
    let mut table = HashMap::new();
    table.insert(
        cid.clone(),
        PodNetwork {
            ip: "10.252.8.10/24".parse()?,
            mac: "0a:00:00:fc:08:0a".parse()?,
            gateway: "10.252.8.1".parse()?,
            iface_id: "rb".into(),
        },
    );
    let mut plugin = FerryCni {
        assignments: Table(table),
    };
    // No OVS database at this path: the last step fails.
    let conf = json!({"cniVersion": "1.0.0", "name": "ferry", "type": "ferry",
        "ovsDbSock": "/nonexistent/db.sock", "bridge": "fat-none"});
    let reply = invoke(&mut plugin, "ADD", &cid, Some(&ns), &conf);
    assert_eq!(reply.exit_code, 1);
    let err: Value = serde_json::from_str(&reply.stdout)?;
    assert_eq!(err["code"], 100, "{err}");
    let msg = err["msg"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(
            "add the host end to the OVS bridge: `ovs-vsctl --db=unix:/nonexistent/db.sock"
        ),
        "{msg}"
    );
    assert_eq!(
        err["details"],
        format!("pod default/{cid} (container {cid})")
    );
    assert!(
        tool("ip", &["link", "show", &host]).is_err(),
        "veth left behind"
    );
    assert!(
        ns.ip(&["link", "show", "eth0"]).is_err(),
        "pod end left behind"
    );
    Ok(())
}
