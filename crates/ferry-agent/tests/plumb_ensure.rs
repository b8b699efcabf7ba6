//! `plumb::ensure` on a userspace-datapath OVS (issue 15): a restarted agent keeps a pod
//! interface that is still right (same veth, traffic never stops), and one whose veth is
//! gone is made again so that it carries traffic. Before, the agent replaced every veth
//! under the same name and kept the OVS port's row (`--may-exist add-port`); the userspace
//! `ovs-vswitchd` went on reading the deleted device and the pod was cut off (after the lab
//! agent's kill -9, every pod and probe port of its node).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use ferry_agent::plumb::{self, Ensured, PlumbRequest, host_ifname};
use ferry_ovn_stack::{Daemon, OvnOptions};
use ferry_testkit::netns::{LinkGuard, Netns, unique};
use ferry_testkit::ovn::{TestOvn, chassis_options};
use ferry_testkit::tool;

/// The host end's ifindex (`ip -o link show NAME`: "INDEX: NAME...").
fn ifindex(name: &str) -> Result<String> {
    let out = tool("ip", &["-o", "link", "show", name])?;
    Ok(out.split(':').next().unwrap_or_default().trim().to_string())
}

#[test]
#[ignore = "needs root, netns and OVN/OVS"]
fn ensure_keeps_a_right_interface_and_makes_a_lost_one_carry_again() -> Result<()> {
    let pid = std::process::id();
    let bridge = format!("fen{pid}");
    let stack = TestOvn::start(OvnOptions {
        bridge: bridge.clone(),
        ovs_netns: None,
        ..chassis_options("ch")
    })?;
    let subnets = [
        ("s1", "0a:00:00:fd:01:01", "10.253.1.1/24"),
        ("s2", "0a:00:00:fd:02:01", "10.253.2.1/24"),
    ];
    let pods = [
        (
            "s1",
            "pod-a.default",
            "0a:00:00:fd:01:0a",
            "10.253.1.10/24",
            "10.253.1.1",
        ),
        (
            "s2",
            "pod-b.default",
            "0a:00:00:fd:02:0a",
            "10.253.2.10/24",
            "10.253.2.1",
        ),
    ];
    ferry_testkit::ovn::vpc_with_ports(&stack, &subnets, &pods)?;
    let ns_a = Netns::add(&unique("ea"))?;
    let ns_b = Netns::add(&unique("eb"))?;
    let keys = [format!("fen{pid}a"), format!("fen{pid}b")];
    let _links = keys.each_ref().map(|k| LinkGuard(host_ifname(k, "eth0")));
    let reqs: Vec<PlumbRequest> = [(&keys[0], &ns_a, pods[0]), (&keys[1], &ns_b, pods[1])]
        .into_iter()
        .map(
            |(key, ns, (_, lsp, mac, cidr, gw))| -> Result<PlumbRequest> {
                Ok(PlumbRequest {
                    netns_path: ns.path(),
                    ifname: "eth0".into(),
                    host_ifname: host_ifname(key, "eth0"),
                    mac: mac.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?,
                    ip_cidr: cidr.parse()?,
                    gateway: gw.parse()?,
                    default_route: true,
                    routes: vec![],
                    iface_id: lsp.into(),
                    bridge: bridge.clone(),
                    ovs_db: stack.paths().ovs_sock.clone(),
                    port_type: String::new(),
                    ovs_netns: None,
                })
            },
        )
        .collect::<Result<_>>()?;
    for r in &reqs {
        assert!(
            matches!(plumb::ensure(r)?, Ensured::Plumbed(_)),
            "a new pod is plumbed"
        );
    }
    stack.wait_bound("pod-a.default")?;
    stack.wait_bound("pod-b.default")?;
    let _server = ns_b.spawn(
        &[
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "10.253.2.10",
        ],
        None,
    )?;
    let tcp = |what: &str| -> Result<Duration> {
        let started = Instant::now();
        loop {
            match ns_a.exec(&["curl", "-s", "-m", "2", "http://10.253.2.10:8080/"]) {
                Ok(body) if body.contains("Directory listing") => return Ok(started.elapsed()),
                _ if started.elapsed() > Duration::from_secs(30) => bail!(
                    "{what}: no TCP from pod a to pod b after 30 s\novs-vswitchd:\n{}",
                    stack.log_tail(Daemon::Vswitchd)
                ),
                _ => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    };
    println!("TCP after plumbing: {:?}", tcp("plumbed")?);

    // A restarted agent: both interfaces are right and are kept as they are.
    let host_a = &reqs[0].host_ifname;
    let before = ifindex(host_a)?;
    for r in &reqs {
        assert!(
            matches!(plumb::ensure(r)?, Ensured::Kept),
            "{}",
            r.host_ifname
        );
    }
    assert_eq!(ifindex(host_a)?, before, "the kept veth was replaced");
    println!("TCP after keeping: {:?}", tcp("kept")?);

    // Pod a's veth lost (deleted by hand): made again, and it carries traffic.
    tool("ip", &["link", "del", host_a])?;
    assert!(matches!(plumb::ensure(&reqs[0])?, Ensured::Plumbed(_)));
    assert_ne!(ifindex(host_a)?, before, "a new veth");
    println!("TCP after plumbing again: {:?}", tcp("plumbed again")?);
    for r in &reqs {
        plumb::del(&r.unplumb())?;
    }
    Ok(())
}
