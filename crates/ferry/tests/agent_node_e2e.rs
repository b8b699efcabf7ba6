//! `ferry agent` on a real node (not `--lab`), end to end: a namespace made by the test
//! plays the node's host namespace (its own uplink and default route to an "upstream"
//! namespace) and the built binary runs inside it against a private `ferry up` (reached at
//! the kubeconfig's 127.0.0.1 address through a relay). The agent
//! registers its Node, the controller gives it a port on the join subnet `subnet0`, and
//! the agent plumbs it as `ferry0` into the host namespace without touching the default
//! route. From the host: TCP to a pod in the default VPC and to a ClusterIP service (its
//! backend health-probed by this agent) through OVN. A SIGKILLed agent's interface is kept
//! by the next agent; SIGTERM removes the interface and the probe namespace.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use common::{FerryUp, Netns, annotation, cni, eventually, http_get};

/// `ferry agent` running inside a network namespace; stopped by PID on drop, then
/// whatever its record still lists is removed.
struct Agent {
    child: Option<Child>,
    record: std::path::PathBuf,
}

impl Agent {
    fn start(up: &FerryUp, host: &Netns, node: &str, state: &Path, log: &Path) -> Result<Agent> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        // nsenter, not `ip netns exec`: only the network namespace is the node's; mounts
        // (and so the probe namespaces the agent adds) are the machine's, as for an agent
        // with the host's /var/run/netns.
        let child = Command::new("nsenter")
            .arg(format!("--net={}", host.path().display()))
            .args(["--", common::ferry_bin(), "agent"])
            .args(["--node", node, "--kubeconfig"])
            .arg(up.agent_kubeconfig())
            .arg("--state-dir")
            .arg(state)
            .arg("--ovs-db")
            .arg(up.ovs_sock())
            .args(["--ovs-netns", &up.ovs_netns()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start ferry agent")?;
        Ok(Agent {
            child: Some(child),
            record: ferry_agent::node::record_path(state, node),
        })
    }

    /// Sends `signal` and waits for the agent to exit.
    fn stop(&mut self, signal: &str) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the agent did not exit within 30 s of {signal}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.stop("-TERM");
        ferry_agent::netns_admin::cleanup(&self.record);
    }
}

/// The log without terminal colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn routes(ns: &Netns, args: &[&str]) -> Result<Vec<Value>> {
    Ok(serde_json::from_str(
        &ns.ip(&[&["-4", "-j", "route", "show"], args].concat())?,
    )?)
}

/// The index of `ferry0` in `host` once it has an address.
fn ferry0(host: &Netns) -> Option<i64> {
    let links: Vec<Value> =
        serde_json::from_str(&host.ip(&["-j", "addr", "show", "dev", "ferry0"]).ok()?).ok()?;
    let l = links.first()?;
    l["addr_info"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
        .then(|| l["ifindex"].as_i64())?
}

#[test]
#[ignore = "needs root, OVN/OVS and network namespaces"]
fn ferry_agent_on_a_real_node_plumbs_ferry0_into_the_host_namespace() -> Result<()> {
    let pid = std::process::id();
    let up = FerryUp::start("fan")?;
    up.default_vpc(true)?;
    let node = format!("fan{pid}node");

    // A pod of the default VPC on this node, plumbed by `ferry cni`, serving HTTP.
    up.pod("web", json!({"app": "web"}), Some(&node), true)?;
    let pod = up.annotated_pod("web")?;
    let pod_ip = annotation(&pod, "iaas.yusur.io/ip_address");
    let web = Netns::add(&format!("fan{pid}-web"))?;
    let cid = format!("fan{pid}web");
    let web_path = web.path().display().to_string();
    let add = cni(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", &cid),
            ("CNI_NETNS", &web_path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        &up.cni_conf(),
    )?;
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stdout)
    );
    let _server = web.spawn(
        &["python3", "-m", "http.server", "8080", "--bind", &pod_ip],
        None,
    )?;
    up.create(
        json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.77",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                 "selector": {"app": "web"}}}),
    )?;

    // The node's host namespace, with its own uplink and default route.
    let host = Netns::add(&format!("fan{pid}-host"))?;
    let upstream = Netns::add(&format!("fan{pid}-up"))?;
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
    let _uplink_server = upstream.spawn(
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

    let state = up.dir.path().join("agent-state");
    let log = up.dir.path().join("agent.log");
    let full_log = || strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default());
    let agent_log = || {
        let t = full_log();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    // The node reaches the API server at the kubeconfig's address.
    let _relay = up.api_relay_into(&host)?;
    let mut agent = Agent::start(&up, &host, &node, &state, &log)?;

    // The controller annotates the Node; the agent plumbs ferry0 with that address, then
    // adds its routes one by one: wait for the last.
    let index = eventually(
        "ferry0 in the host namespace, with its routes",
        Duration::from_secs(60),
        || {
            let index = ferry0(&host)?;
            let on_ferry0 = routes(&host, &["dev", "ferry0"]).ok()?;
            on_ferry0
                .iter()
                .any(|r| r["dst"] == "10.16.0.0/16")
                .then_some(index)
        },
    )
    .with_context(|| format!("{}\n--- agent ---\n{}", up.log_tail(), agent_log()))?;
    let n = up
        .get_node(&node)?
        .context("the agent registered its Node")?;
    let a = n.metadata.annotations.unwrap_or_default();
    let a = |k: &str| a.get(k).cloned().unwrap_or_default();
    let (node_ip, node_mac, gw) = (
        a("iaas.yusur.io/ip_address"),
        a("iaas.yusur.io/mac_address"),
        a("iaas.yusur.io/gateway"),
    );
    assert_eq!(gw, "100.64.0.1");
    let addr = host.ip(&["addr", "show", "dev", "ferry0"])?;
    assert!(
        addr.contains(&format!("{node_ip}/16")) && addr.contains(&node_mac),
        "{addr}"
    );
    assert_eq!(
        routes(&host, &["default"])?,
        default_before,
        "default route changed"
    );
    let on_ferry0 = routes(&host, &["dev", "ferry0"])?;
    for dst in ["10.96.0.0/16", "10.16.0.0/16"] {
        assert!(
            on_ferry0
                .iter()
                .any(|r| r["dst"] == dst && r["gateway"] == gw.as_str()),
            "no route to {dst} via {gw}: {on_ferry0:?}"
        );
    }
    assert!(
        !on_ferry0.iter().any(|r| r["dst"] == "default"),
        "{on_ferry0:?}"
    );

    // Scenario 2 from the host: the pod directly, then the ClusterIP once this agent's
    // probe has found the backend healthy.
    let body = http_get(&host, &format!("http://{pod_ip}:8080/"))
        .with_context(|| format!("{}\n--- agent ---\n{}", up.log_tail(), agent_log()))?;
    assert!(body.contains("Directory listing"), "{body}");
    let body = eventually(
        "GET http://10.96.0.77/ from the host",
        Duration::from_secs(60),
        || {
            host.exec(&["curl", "-s", "-m", "2", "http://10.96.0.77/"])
                .ok()
                .filter(|b| b.contains("Directory listing"))
        },
    )
    .with_context(|| format!("{}\n--- agent ---\n{}", up.log_tail(), agent_log()))?;
    assert!(body.contains("Directory listing"));
    let uplink = host.exec(&["curl", "-s", "-m", "5", "http://198.51.100.1:8081/"])?;
    assert!(
        uplink.contains("Directory listing"),
        "uplink lost: {uplink}"
    );

    // A crashed agent leaves ferry0; the next one keeps it as it is.
    agent.stop("-KILL")?;
    assert_eq!(
        ferry0(&host),
        Some(index),
        "ferry0 gone with a SIGKILLed agent"
    );
    let mut agent = Agent::start(&up, &host, &node, &state, &log)?;
    eventually(
        "the restarted agent's node interface",
        Duration::from_secs(60),
        || (full_log().matches("node interface ready").count() >= 2).then_some(()),
    )
    .with_context(agent_log)?;
    assert!(
        full_log()
            .lines()
            .filter(|l| l.contains("node interface ready"))
            .nth(1)
            .is_some_and(|l| l.contains("kept=true")),
        "the restarted agent did not keep ferry0:\n{}",
        agent_log()
    );
    assert_eq!(
        ferry0(&host),
        Some(index),
        "the restarted agent re-created ferry0"
    );
    let body = http_get(&host, "http://10.96.0.77/")?;
    assert!(body.contains("Directory listing"));

    // SIGTERM: ferry0, its routes and the probe namespace are removed; the host's default
    // route stays.
    agent.stop("-TERM")?;
    assert!(host.ip(&["link", "show", "ferry0"]).is_err(), "ferry0 left");
    assert_eq!(routes(&host, &["default"])?, default_before);
    let netns = common::tool("ip", &["netns", "list"])?;
    assert!(
        !netns.contains(&format!("fp-{node}-")),
        "probe namespace left: {netns}"
    );
    eprintln!("--- agent log ---\n{}", full_log());
    let record: Value = serde_json::from_slice(&std::fs::read(&agent.record)?)?;
    assert_eq!(record["ports"], json!([]), "{record}");
    assert_eq!(record["netns"], json!([]), "{record}");
    Ok(())
}
