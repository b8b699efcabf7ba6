//! The network controller's NB applier (`ferry-nb`'s [`Applier`], the code
//! `ferry-controller` runs) against the real thing: NB and SB `ovsdb-server` and
//! `ovn-northd` started in a temp dir (the test kit's central OVN stack), the NB read
//! through `ferry-ovsdb`'s monitor mirror. Unlike `tests/ovn.rs` (which applies a
//! precomputed `diff` with `ovsdb-client`), every plan here is computed from what the
//! mirror holds, so a column the mirror does not carry or a value it normalises
//! differently would show up as a plan that never empties.
//!
//! - [`converge_through_the_mirror_is_idempotent_and_writes_every_row`]: the lab topology
//!   with one service per scenario, converged in bounded transactions; a fresh connection's
//!   snapshot plans nothing; the rows are where `ovn-nbctl` looks for them.
//! - [`the_four_scenarios_traced_by_ovn_trace`]: after northd, `ovn-trace` follows packets
//!   of each scenario to the backends, and a vpc2 packet to a vpc1-only address nowhere.
//! - [`socket_lb_members_skip_conntrack_between_each_other_only`]: the socket-LB port
//!   group and its stateless ACLs, traced: member to member without conntrack, everything
//!   else (the VIP, non-members) with it; members leave, the group goes.
//! - [`nb_killed_mid_converge_heals_without_duplicates`]: SIGKILL of the NB server with one
//!   of the bounded transactions of a large state in flight, restarted on the same file and
//!   socket by the stack's supervisor; the client reconnects by itself and the applier, called again
//!   after each failure as the controller's next pass would, finishes with one row per
//!   key and an empty plan.
//!
//! Needs the OVN binaries: `cargo test -p ferry-net -- --include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use ferry_nb::{Applier, current_rows};
use ferry_net::*;
use ferry_ovn_stack::Daemon;
use ferry_ovsdb::{Client, nb};
use ferry_testkit::eventually;
use ferry_testkit::ovn::TestOvn;
use serde_json::Value;

const CHASSIS: &str = "ferry-ch1";

/// NB, SB and `ovn-northd`: the test kit's central OVN stack, stopped and its directory
/// removed when dropped (also when a test panics). Its supervisor restarts a killed NB
/// only after [`NB_DOWN`], so a test sees the NB down at least that long.
struct Ovn {
    stack: TestOvn,
}

/// How long a killed NB stays down before the stack's supervisor restarts it.
const NB_DOWN: Duration = Duration::from_secs(2);

impl Ovn {
    fn start() -> Ovn {
        let opts = ferry_ovn_stack::OvnOptions {
            min_backoff: NB_DOWN,
            max_backoff: NB_DOWN,
            ..ferry_ovn_stack::OvnOptions::central()
        };
        Ovn {
            stack: TestOvn::start(opts).expect("NB, SB and ovn-northd"),
        }
    }

    fn sock(&self, db: &str) -> PathBuf {
        let p = self.stack.paths();
        if db == "nb" {
            p.nb_sock.clone()
        } else {
            p.sb_sock.clone()
        }
    }

    /// `unix:` remote of the NB, for the client.
    fn nb_remote(&self) -> String {
        self.stack.nb_remote()
    }

    /// The NB server's PID, as the stack recorded it.
    fn nb_pid(&self) -> i32 {
        self.stack.pid(Daemon::NbDb).expect("NB running")
    }

    /// Waits until the supervisor has restarted the NB (same database file and socket
    /// path) and it answers.
    fn restart_nb(&mut self, killed: i32) {
        let sock = self.sock("nb");
        eventually("the NB restarted", Duration::from_secs(30), || {
            let restarted = self.stack.pid(Daemon::NbDb).is_some_and(|p| p != killed);
            (restarted && UnixStream::connect(&sock).is_ok()).then_some(())
        })
        .unwrap();
    }

    fn ctl(&self, tool: &str, db: &str, args: &[&str]) -> String {
        let mut a = vec![format!("--db=unix:{}", self.sock(db).display())];
        a.extend(args.iter().map(|s| s.to_string()));
        run(tool, &a.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn nbctl(&self, args: &[&str]) -> String {
        self.ctl("ovn-nbctl", "nb", args)
    }

    fn sbctl(&self, args: &[&str]) -> String {
        self.ctl("ovn-sbctl", "sb", args)
    }

    /// `ovn-trace --ct=new [--lb-dst=..] DATAPATH FLOW`.
    fn trace(&self, datapath: &str, flow: &str, lb_dst: Option<&str>) -> String {
        let mut a = vec!["--ct=new".to_string()];
        if let Some(d) = lb_dst {
            a.push(format!("--lb-dst={d}"));
        }
        a.push(datapath.to_string());
        a.push(flow.to_string());
        self.ctl(
            "ovn-trace",
            "sb",
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }
}

/// The mirror as `CurrentRow`s, as the applier reads it.
fn current(client: &Client) -> Vec<CurrentRow> {
    client.with_mirror(current_rows)
}

#[derive(Debug, Default, Clone, Copy)]
struct Converged {
    txns: usize,
    ops: usize,
    /// Applies that failed (the server went away); the loop called the applier again.
    failures: usize,
}

/// The controller's NB apply, called until it converges: a failed apply is retried (as
/// the next reconcile pass would), at most `max_failures` times. `sent` counts
/// transactions sent.
async fn converge(
    client: &Client,
    d: &Desired,
    max_ops: usize,
    max_failures: usize,
    before_send: Option<ferry_nb::BeforeSend>,
) -> Converged {
    let mut applier = Applier::new(client.clone(), max_ops);
    if let Some(f) = before_send {
        applier = applier.before_send(f);
    }
    let d = Arc::new(d.clone());
    let mut c = Converged::default();
    loop {
        match applier.ensure(d.clone()).await {
            Ok(a) => {
                c.txns += a.transactions();
                c.ops += a.ops();
                if a.converged {
                    return c;
                }
                assert!(
                    c.txns < 10_000,
                    "no convergence after {} transactions",
                    c.txns
                );
            }
            Err(ferry_nb::Error::Transact { sent, source }) => {
                c.txns += sent;
                c.failures += 1;
                assert!(
                    c.failures <= max_failures,
                    "transaction failed ({} failures): {source}",
                    c.failures
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("apply: {e}"),
        }
    }
}

/// How often each `ferry.io/key` (groups: each `ferry-` name) occurs, per table, in a mirror.
fn key_counts(rows: &[CurrentRow]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for r in rows {
        if let Some(k) = owned_key(&r.table, &r.columns) {
            *out.entry((r.table.clone(), k)).or_default() += 1;
        }
    }
    out
}

/// A fresh connection: its mirror is a snapshot of what the server holds now.
async fn fresh_rows(ovn: &Ovn) -> Vec<CurrentRow> {
    let c = Client::connect(nb::config([ovn.nb_remote()]))
        .await
        .expect("connect");
    let rows = current(&c);
    c.shutdown();
    rows
}

/// The lab of `common::lab` (vpc1 10.0.1.0/24, 10.0.2.0/24, 10.0.3.0/24; vpc2 10.0.1.0/24;
/// the default VPC with `subnet0` and `ovn-default`; the external network 198.18.0.0/24),
/// with one more client in vpc2 and in the default VPC, and one service per scenario.
fn scenario_state() -> NetworkState {
    let mut s = lab(scenario_services());
    s.gateway_chassis = CHASSIS.into();
    s.ports.push(port(
        "default_c21",
        "vpc2-subnet1",
        "0a:00:00:02:01:1e",
        "10.0.1.30",
    ));
    s.ports.push(port(
        "default_cd1",
        "ovn-default",
        "0a:00:00:10:00:1e",
        "10.16.0.30",
    ));
    s
}

/// Starts OVN and converges the scenario state into it through the mirror.
async fn programmed() -> (Ovn, Client, Desired, Converged) {
    let d = build_desired(&scenario_state());
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let ovn = Ovn::start();
    let client = Client::connect(nb::config([ovn.nb_remote()]))
        .await
        .expect("connect to NB");
    let c = converge(&client, &d, 12, 0, None).await;
    (ovn, client, d, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OVN binaries"]
async fn converge_through_the_mirror_is_idempotent_and_writes_every_row() {
    let (ovn, client, d, c) = programmed().await;
    assert!(c.txns > 3, "bounded transactions: {c:?}");

    // Idempotence against the real server: nothing more to do, neither from the mirror the
    // loop used nor from a fresh connection's snapshot; a second converge sends nothing.
    assert_eq!(plan(&d, &current(&client), 12), Vec::<Value>::new());
    let fresh = fresh_rows(&ovn).await;
    assert_eq!(plan(&d, &fresh, 12), Vec::<Value>::new());
    assert!(diff(&d, &fresh, 12).is_empty());
    assert_eq!(converge(&client, &d, 12, 0, None).await.txns, 0);

    // Every desired row is there exactly once.
    let counts = key_counts(&fresh);
    assert_eq!(counts.len(), d.rows.len(), "owned rows vs desired rows");
    for r in &d.rows {
        assert_eq!(
            counts.get(&(r.table.to_string(), r.key.clone())),
            Some(&1),
            "{} {}",
            r.table,
            r.key
        );
    }

    // And where ovn-nbctl looks for them.
    let show = ovn.nbctl(&["show"]);
    for name in [
        "vpc1",
        "vpc2",
        DEFAULT_VPC,
        EIP_GATEWAY,
        SERVICE_GATEWAY,
        "vpc1-subnet1",
        "vpc1-subnet2",
        "vpc1-subnet3",
        "vpc2-subnet1",
        JOIN_SUBNET,
        "ovn-default",
        EXTERNAL_SWITCH,
        "default_b11",
        "default_b12",
        "default_c13",
        "default_b21",
        "default_c21",
        "default_bd1",
        "default_cd1",
        "node_node1",
        "ext_client",
    ] {
        assert!(show.contains(name), "ovn-nbctl show lacks {name}:\n{show}");
    }
    let lbs = ovn.nbctl(&["lb-list"]);
    for (vip, backends) in [
        ("10.96.0.10:80", "10.0.1.10:8080,10.0.2.10:8080"),
        ("10.96.0.20:80", "10.16.0.10:8080"),
        ("10.96.0.30:80", "10.0.1.10:8080,10.0.2.10:8080"),
        ("198.18.0.100:80", "10.0.1.10:8080,10.0.2.10:8080"),
        ("198.18.0.101:80", "10.0.1.10:8080,10.0.1.20:8080"),
    ] {
        assert!(
            lbs.lines()
                .any(|l| l.contains(vip) && l.contains(backends) && l.contains("tcp")),
            "lb-list lacks {vip} -> {backends}:\n{lbs}"
        );
    }
    // Placement: the EIPs on routers, the ClusterIPs in the per-VPC groups on the switches.
    assert!(
        ovn.nbctl(&["lr-lb-list", "vpc1"])
            .contains("198.18.0.100:80")
    );
    assert!(
        ovn.nbctl(&["lr-lb-list", SERVICE_GATEWAY])
            .contains("198.18.0.101:80")
    );
    let group_of = |sw: &str| {
        let uuid = ovn.nbctl(&["--bare", "get", "Logical_Switch", sw, "load_balancer_group"]);
        let uuid = uuid.trim().trim_start_matches('[').trim_end_matches(']');
        if uuid.is_empty() {
            return String::new();
        }
        ovn.nbctl(&["--bare", "get", "Load_Balancer_Group", uuid, "name"])
            .trim()
            .to_string()
    };
    for sw in ["vpc1-subnet1", "vpc1-subnet2", "vpc1-subnet3"] {
        assert_eq!(group_of(sw), group_name("vpc1"), "{sw}");
    }
    for sw in [JOIN_SUBNET, "ovn-default"] {
        assert_eq!(group_of(sw), group_name(DEFAULT_VPC), "{sw}");
    }
    assert_ne!(group_of("vpc2-subnet1"), group_name("vpc1"));
    // Host routes to each multi-VPC backend through its VPC's link (ovn-nbctl prints a /32
    // without its length), the EIP routes on eip-gateway.
    let has_route = |router: &str, prefix: &str, via_lrp: &str| {
        let nexthop = col(&d, "Logical_Router_Port", via_lrp, "networks");
        let nexthop = nexthop.split('/').next().unwrap().to_string();
        let routes = ovn.nbctl(&["lr-route-list", router]);
        assert!(
            routes.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 2 && f[0] == prefix && f[1] == nexthop
            }),
            "{router} has no route {prefix} via {nexthop}:\n{routes}"
        );
    };
    has_route(SERVICE_GATEWAY, "10.0.1.10", "vpc1-service-gateway-vpc1");
    has_route(SERVICE_GATEWAY, "10.0.1.20", "vpc2-service-gateway-vpc2");
    has_route(EIP_GATEWAY, "198.18.0.100", "vpc1-transit-vpc1");
    has_route(
        EIP_GATEWAY,
        "198.18.0.101",
        "service-gateway-transit-service-gateway",
    );
    has_route("vpc1", "0.0.0.0/0", "eip-gateway-transit-vpc1");
    assert_eq!(
        ovn.nbctl(&[
            "get",
            "Logical_Router",
            SERVICE_GATEWAY,
            "options:lb_force_snat_ip"
        ])
        .trim(),
        "router_ip"
    );
    assert!(
        ovn.nbctl(&["lrp-get-gateway-chassis", "vpc1-transit-vpc1"])
            .contains(CHASSIS)
    );
    client.shutdown();
}

/// A TCP packet as `ovn-trace` wants it.
fn tcp(inport: &str, src_mac: &str, dst_mac: &str, src: &str, dst: &str, dport: u16) -> String {
    format!(
        "inport == \"{inport}\" && eth.src == {src_mac} && eth.dst == {dst_mac} && \
         ip4.src == {src} && ip4.dst == {dst} && ip.ttl == 64 && tcp && tcp.src == 33333 && \
         tcp.dst == {dport}"
    )
}

/// A column of the desired row `TABLE:NAME`, as a string (`mac`) or the first set element
/// (`networks`, `addresses`).
fn col(d: &Desired, table: &str, name: &str, column: &str) -> String {
    let key = format!("{table}:{name}");
    let r = d
        .rows
        .iter()
        .find(|r| r.table == table && r.key == key)
        .unwrap_or_else(|| panic!("no desired {key}"));
    let v = &r.columns[column];
    match v {
        Value::String(s) => s.clone(),
        _ => v[1][0].as_str().unwrap().to_string(),
    }
}

/// The MAC of router port `ROUTER-SWITCH`: where a host on SWITCH sends off-subnet packets.
fn router_mac(d: &Desired, router: &str, switch: &str) -> String {
    col(
        d,
        "Logical_Router_Port",
        &format!("{router}-{switch}"),
        "mac",
    )
}

/// A workload port's MAC and IP from its desired `addresses`.
fn host(d: &Desired, lsp: &str) -> (String, String) {
    let a = col(d, "Logical_Switch_Port", lsp, "addresses");
    let (mac, ip) = a.split_once(' ').unwrap();
    (mac.to_string(), ip.to_string())
}

fn delivered(trace: &str, port: &str) -> bool {
    trace.contains(&format!("output to \"{port}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OVN binaries"]
async fn the_four_scenarios_traced_by_ovn_trace() {
    let (ovn, client, d, _) = programmed().await;
    // Gateway routers and the gateway port are bound to this chassis; northd needs it.
    ovn.sbctl(&["chassis-add", CHASSIS, "geneve", "127.0.0.1"]);
    ovn.nbctl(&["--wait=sb", "--timeout=60", "sync"]);
    let pod = |ns: &str, n: &str| port_name(PortKind::Pod, ns, n);

    // Scenario 1: a client in vpc1's third subnet to the ClusterIP, load-balanced to each
    // backend (two other subnets).
    let c13 = pod("default", "c13");
    let (mac, ip) = host(&d, &c13);
    let gw = router_mac(&d, "vpc1", "vpc1-subnet3");
    for (be, port) in [
        ("10.0.1.10:8080", pod("default", "b11")),
        ("10.0.2.10:8080", pod("default", "b12")),
    ] {
        let t = ovn.trace(
            "vpc1-subnet3",
            &tcp(&c13, &mac, &gw, &ip, "10.96.0.10", 80),
            Some(be),
        );
        assert!(
            delivered(&t, &port) && t.contains("ct_lb"),
            "scenario 1 to {be}:\n{t}"
        );
    }
    // ...and the same ClusterIP means nothing in vpc2 (its switches carry no vpc1 group).
    let c21 = pod("default", "c21");
    let (mac21, ip21) = host(&d, &c21);
    let gw21 = router_mac(&d, "vpc2", "vpc2-subnet1");
    let t = ovn.trace(
        "vpc2-subnet1",
        &tcp(&c21, &mac21, &gw21, &ip21, "10.96.0.10", 80),
        Some("10.0.1.10:8080"),
    );
    assert!(
        !delivered(&t, &pod("default", "b11")) && !t.contains("ct_lb"),
        "vpc1's ClusterIP from vpc2:\n{t}"
    );

    // Scenario 2: the node's join port and a default-VPC pod to the default VPC's service.
    let node = port_name(PortKind::Node, "", "node1");
    let (mac, ip) = host(&d, &node);
    let gw = router_mac(&d, DEFAULT_VPC, JOIN_SUBNET);
    let t = ovn.trace(
        JOIN_SUBNET,
        &tcp(&node, &mac, &gw, &ip, "10.96.0.20", 80),
        Some("10.16.0.10:8080"),
    );
    assert!(
        delivered(&t, &pod("default", "bd1")) && t.contains("ct_lb"),
        "scenario 2 from the node:\n{t}"
    );
    let cd1 = pod("default", "cd1");
    let (mac, ip) = host(&d, &cd1);
    let gw = router_mac(&d, DEFAULT_VPC, "ovn-default");
    let t = ovn.trace(
        "ovn-default",
        &tcp(&cd1, &mac, &gw, &ip, "10.96.0.20", 80),
        Some("10.16.0.10:8080"),
    );
    assert!(
        delivered(&t, &pod("default", "bd1")),
        "scenario 2 from a pod:\n{t}"
    );

    // Scenario 3: the outside client to the EIP reaches either vpc1 backend, through
    // eip-gateway and vpc1's gateway port on its transit link.
    let ext = port_name(PortKind::External, "", "client");
    let (ext_mac, ext_ip) = host(&d, &ext);
    let ext_gw = router_mac(&d, EIP_GATEWAY, EXTERNAL_SWITCH);
    for (be, port) in [
        ("10.0.1.10:8080", pod("default", "b11")),
        ("10.0.2.10:8080", pod("default", "b12")),
    ] {
        let t = ovn.trace(
            EXTERNAL_SWITCH,
            &tcp(&ext, &ext_mac, &ext_gw, &ext_ip, "198.18.0.100", 80),
            Some(be),
        );
        assert!(delivered(&t, &port), "scenario 3 to {be}:\n{t}");
        assert!(
            t.contains("dp=\"transit-vpc1\"") || t.contains("datapath \"transit-vpc1\""),
            "scenario 3 not through vpc1's transit link:\n{t}"
        );
    }
    // The reply: vpc1 routes it back to eip-gateway (its default route) by the same
    // gateway port, redirected to the gateway chassis, where the un-DNAT stage for the
    // EIP's backends applies (ovn-trace assumes no conntrack entry there, so it shows the
    // stage but not the rewritten source), and it reaches the outside client.
    let (b11_mac, b11_ip) = host(&d, &pod("default", "b11"));
    let reply = format!(
        "inport == \"{}\" && eth.src == {b11_mac} && eth.dst == {} && ip4.src == {b11_ip} && \
         ip4.dst == {ext_ip} && ip.ttl == 64 && tcp && tcp.src == 8080 && tcp.dst == 33333",
        pod("default", "b11"),
        router_mac(&d, "vpc1", "vpc1-subnet1")
    );
    let t = ovn.ctl("ovn-trace", "sb", &["--ct=est,rpl", "vpc1-subnet1", &reply]);
    assert!(
        delivered(&t, &ext)
            && t.contains("outport = \"cr-vpc1-transit-vpc1\"")
            && t.lines().any(|l| l.contains("lr_out_undnat")
                && l.contains(&format!("ip4.src == {b11_ip} && tcp.src == 8080"))
                && l.contains("outport == \"vpc1-transit-vpc1\""))
            && t.contains("ct_dnat_in_czone"),
        "scenario 3 reply:\n{t}"
    );

    // Scenario 4: the multi-VPC EIP reaches a vpc1 and a vpc2 backend with the same CIDR,
    // leaving service-gateway by that VPC's link.
    for (be, port, vpc) in [
        ("10.0.1.10:8080", pod("default", "b11"), "vpc1"),
        ("10.0.1.20:8080", pod("default", "b21"), "vpc2"),
    ] {
        let t = ovn.trace(
            EXTERNAL_SWITCH,
            &tcp(&ext, &ext_mac, &ext_gw, &ext_ip, "198.18.0.101", 80),
            Some(be),
        );
        let link = format!("{SERVICE_GATEWAY}-{SERVICE_GATEWAY}-{vpc}");
        assert!(delivered(&t, &port), "scenario 4 to {be}:\n{t}");
        assert!(
            t.contains(&format!("outport = \"{link}\"")),
            "scenario 4 via {link}:\n{t}"
        );
        // The load balancer forces SNAT; the source becomes the link's address. ovn-trace
        // 23.03 shows the flag set at DNAT but loses it across its emulated ct_lb_mark (see
        // the report), so the SNAT flow of that link is checked in the logical flows.
        assert!(
            t.contains("flags.force_snat_for_lb = 1"),
            "scenario 4 DNAT does not force SNAT:\n{t}"
        );
        let snat = col(&d, "Logical_Router_Port", &link, "networks");
        let snat = snat.split('/').next().unwrap();
        let lflows = ovn.sbctl(&["lflow-list", SERVICE_GATEWAY]);
        assert!(
            lflows.lines().any(|l| l.contains("lr_out_snat")
                && l.contains("flags.force_snat_for_lb == 1")
                && l.contains(&format!("outport == \"{link}\""))
                && l.contains(&format!("ct_snat({snat})"))),
            "no SNAT to {snat} on {link}"
        );
    }

    // Isolation: vpc2 hosts cannot reach an address that exists only in vpc1.
    for (src, gw) in [
        (c21.clone(), gw21.clone()),
        (pod("default", "b21"), gw21.clone()),
    ] {
        let (mac, ip) = host(&d, &src);
        let t = ovn.trace(
            "vpc2-subnet1",
            &tcp(&src, &mac, &gw, &ip, "10.0.2.10", 8080),
            None,
        );
        assert!(
            !delivered(&t, &pod("default", "b12"))
                && !t.contains("dp=\"vpc1\"")
                && t.trim_end().ends_with("drop;"),
            "isolation from {src}:\n{t}"
        );
    }
    client.shutdown();
}

/// The socket-LB port group in a real NB and northd: converged through the mirror (and
/// idempotent), then `ovn-trace` shows that a packet between two members skips conntrack
/// on switches that carry vpc1's load balancer group, while a member's packet to the VIP
/// (not translated by a socket LB) is still load-balanced and a non-member's packets keep
/// conntrack both ways. A member that leaves is out of the group after the next converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OVN binaries"]
async fn socket_lb_members_skip_conntrack_between_each_other_only() {
    let pod = |n: &str| port_name(PortKind::Pod, "default", n);
    let mut state = scenario_state();
    state.socket_lb_ports = [pod("c13"), pod("b11")].into();
    let d = build_desired(&state);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let ovn = Ovn::start();
    let client = Client::connect(nb::config([ovn.nb_remote()]))
        .await
        .expect("connect to NB");
    converge(&client, &d, 12, 0, None).await;
    let fresh = fresh_rows(&ovn).await;
    assert!(
        diff(&d, &fresh, 12).is_empty(),
        "a fresh mirror plans nothing"
    );
    assert_eq!(converge(&client, &d, 12, 0, None).await.txns, 0);
    let g = socket_lb_group("vpc1");
    let members = ovn.nbctl(&["--bare", "--columns=ports", "list", "Port_Group", &g]);
    assert_eq!(members.split_whitespace().count(), 2, "{members}");
    let acls = ovn.nbctl(&["--type=port-group", "acl-list", &g]);
    assert!(
        acls.contains("allow-stateless") && acls.contains(&format!("${g}_ip4")),
        "{acls}"
    );

    ovn.sbctl(&["chassis-add", CHASSIS, "geneve", "127.0.0.1"]);
    ovn.nbctl(&["--wait=sb", "--timeout=60", "sync"]);
    let (c13, b11, b12) = (pod("c13"), pod("b11"), pod("b12"));
    let (mac13, ip13) = host(&d, &c13);
    let (mac12, ip12) = host(&d, &b12);
    let gw3 = router_mac(&d, "vpc1", "vpc1-subnet3");
    let gw2 = router_mac(&d, "vpc1", "vpc1-subnet2");
    // Member to member (what a socket LB sends after rewriting the VIP): no conntrack on
    // either switch.
    let t = ovn.trace(
        "vpc1-subnet3",
        &tcp(&c13, &mac13, &gw3, &ip13, "10.0.1.10", 8080),
        None,
    );
    assert!(
        delivered(&t, &b11) && !t.contains("ct_lb") && !t.contains("ct_next"),
        "member to member:
{t}"
    );
    // A member to the VIP itself: OVN's load balancer still answers it.
    let t = ovn.trace(
        "vpc1-subnet3",
        &tcp(&c13, &mac13, &gw3, &ip13, "10.96.0.10", 80),
        Some("10.0.1.10:8080"),
    );
    assert!(
        delivered(&t, &b11) && t.contains("ct_lb"),
        "member to the VIP:
{t}"
    );
    // A non-member to a member, and a member to a non-member: conntrack as before.
    let t = ovn.trace(
        "vpc1-subnet2",
        &tcp(&b12, &mac12, &gw2, &ip12, "10.0.1.10", 8080),
        None,
    );
    assert!(
        delivered(&t, &b11) && t.contains("ct_lb"),
        "non-member to member:
{t}"
    );
    let t = ovn.trace(
        "vpc1-subnet3",
        &tcp(&c13, &mac13, &gw3, &ip13, "10.0.2.10", 8080),
        None,
    );
    assert!(
        delivered(&t, &b12) && t.contains("ct_lb"),
        "member to non-member:
{t}"
    );

    // b11's node stops running the socket LB: b11 leaves, c13 stays.
    state.socket_lb_ports.remove(&b11);
    let d2 = build_desired(&state);
    converge(&client, &d2, 12, 0, None).await;
    let members = ovn.nbctl(&["--bare", "--columns=ports", "list", "Port_Group", &g]);
    assert_eq!(members.split_whitespace().count(), 1, "{members}");
    assert!(diff(&d2, &fresh_rows(&ovn).await, 12).is_empty());
    // Nobody left in vpc1: the group and its ACLs go.
    state.socket_lb_ports.clear();
    converge(&client, &build_desired(&state), 12, 0, None).await;
    assert_eq!(
        ovn.nbctl(&["--bare", "--columns=name", "list", "Port_Group"])
            .trim(),
        ""
    );
    assert_eq!(
        ovn.nbctl(&["--bare", "--columns=match", "list", "ACL"])
            .trim(),
        ""
    );
    client.shutdown();
}

/// The lab plus `n` services (ClusterIPs in vpc1 and vpc2, every fifth one with an EIP,
/// every seventh multi-VPC), enough rows for many bounded transactions.
fn big_state(n: usize) -> NetworkState {
    let mut s = scenario_state();
    s.external.as_mut().unwrap().pool = (ip("198.18.0.100"), ip("198.18.0.250"));
    let mut eips = 102..=249u32;
    for i in 0..n {
        let (v, be) = if i % 2 == 0 {
            ("vpc1", vec![("10.0.1.10", "vpc1"), ("10.0.2.10", "vpc1")])
        } else {
            ("vpc2", vec![("10.0.1.20", "vpc2")])
        };
        let cip = format!("10.97.{}.{}", i / 250, i % 250 + 1);
        let eip = (i % 5 == 0)
            .then(|| eips.next())
            .flatten()
            .map(|x| format!("198.18.0.{x}"));
        let svc_ = if i % 7 == 0 {
            svc(
                &format!("load/m{i}"),
                multi(&["vpc1", "vpc2"]),
                None,
                eip.as_deref(),
                &[("10.0.1.10", "vpc1"), ("10.0.1.20", "vpc2")],
            )
        } else {
            svc(
                &format!("load/s{i}"),
                vpc(v),
                Some(&cip),
                eip.as_deref(),
                &be,
            )
        };
        s.services.push(svc_);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OVN binaries"]
async fn nb_killed_mid_converge_heals_without_duplicates() {
    let d = build_desired(&big_state(600));
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let mut ovn = Ovn::start();
    let mut config = nb::config([ovn.nb_remote()]);
    config.backoff_min = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(500);
    let client = Client::connect(config).await.expect("connect");
    let max_ops = 20;
    let total = diff(&d, &current(&client), max_ops).transactions.len();
    assert!(total > 30, "want many transactions, the plan has {total}");

    // The loop runs on its own; the NB dies with its sixth transaction in flight. The NB
    // is stopped just before that transaction is sent and killed while it waits unanswered,
    // so the loop always has a transaction lost under it (a kill between two transactions
    // would only make the next one wait for the reconnect, and the test would prove less).
    let killed = ovn.nb_pid();
    let (killed_tx, killed_rx) = std::sync::mpsc::channel();
    let sent = Arc::new(AtomicUsize::new(0));
    let hook: ferry_nb::BeforeSend = {
        let sent = sent.clone();
        let killed_tx = std::sync::Mutex::new(Some(killed_tx));
        Arc::new(move |_| {
            if sent.fetch_add(1, Ordering::SeqCst) + 1 != 6 {
                return;
            }
            let pid = nix::unistd::Pid::from_raw(killed);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP the NB");
            let tx = killed_tx.lock().unwrap().take();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
                    .expect("SIGKILL the NB");
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
            });
        })
    };
    let task = {
        let (client, d) = (client.clone(), d.clone());
        tokio::spawn(async move { converge(&client, &d, max_ops, 1_000, Some(hook)).await })
    };
    tokio::task::spawn_blocking(move || killed_rx.recv_timeout(Duration::from_secs(60)))
        .await
        .expect("kill waiter")
        .expect("the loop did not send six transactions in 60 s");
    let at_kill = sent.load(Ordering::SeqCst);
    assert!(!task.is_finished(), "the loop finished before the kill");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!task.is_finished(), "the loop cannot finish without the NB");
    let partial = client.with_mirror(|m| m.table("Load_Balancer").map_or(0, |t| t.len()));
    ovn.restart_nb(killed);

    let c = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("converged in time")
        .expect("converge task");
    assert!(
        c.failures >= 1,
        "the transaction in flight did not fail: {c:?}"
    );
    assert!(client.status().connects >= 2, "{:?}", client.status());
    eprintln!(
        "killed after {at_kill} of {total} planned transactions ({partial} load balancers \
         in the mirror); converged with {c:?}"
    );

    // One row per key, in the reconnected mirror and in a fresh snapshot; nothing to do.
    for (what, rows) in [
        ("reconnected mirror", current(&client)),
        ("fresh snapshot", fresh_rows(&ovn).await),
    ] {
        let counts = key_counts(&rows);
        let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(dups.is_empty(), "{what}: duplicate rows {dups:?}");
        assert_eq!(counts.len(), d.rows.len(), "{what}: owned rows vs desired");
        assert!(
            diff(&d, &rows, max_ops).is_empty(),
            "{what}: plan not empty"
        );
    }
    // The server agrees row for row (no unowned leftovers from a half-applied transaction).
    let lb_rows = ovn.nbctl(&["--bare", "--columns=_uuid", "list", "Load_Balancer"]);
    let want_lbs = d.rows.iter().filter(|r| r.table == "Load_Balancer").count();
    assert_eq!(lb_rows.split_whitespace().count(), want_lbs);
    let lsp_rows = ovn.nbctl(&["--bare", "--columns=_uuid", "list", "Logical_Switch_Port"]);
    let want_lsps = d
        .rows
        .iter()
        .filter(|r| r.table == "Logical_Switch_Port")
        .count();
    assert_eq!(lsp_rows.split_whitespace().count(), want_lsps);
    client.shutdown();
}
