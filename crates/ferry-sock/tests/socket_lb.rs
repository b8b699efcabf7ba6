//! The socket LB against the real kernel: a cgroup v2 child, network namespaces standing
//! for VPCs with overlapping addresses, TCP and UDP servers on backend addresses inside
//! them, and a Python client (plain sockets) placed in the cgroup and a namespace.
//!
//! Each test creates its own cgroup and namespaces with unique names and removes them.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;

use anyhow::{Context, Result, bail, ensure};
use ferry_sock::{
    Algorithm, Backend, Desired, MapSizes, Protocol, RejectReason, ServiceKey, ServiceSpec,
    SocketLb, cgroup2_mount, netns_cookie_of_path,
};
use serde_json::Value;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/client.py");
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;

fn be(last: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, last), BACKEND_PORT)
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    ensure!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// One network namespace (a pod of some VPC) with backend addresses on its loopback.
struct Netns {
    name: String,
    path: PathBuf,
    cookie: u64,
}

/// The cgroup and namespaces of one test; removed on drop.
struct Lab {
    cgroup: PathBuf,
    tag: String,
    netns: Vec<String>,
}

impl Lab {
    fn new(test: &str) -> Result<Lab> {
        let root = cgroup2_mount().context("no cgroup2 mount in /proc/self/mountinfo")?;
        let tag = format!(
            "fsk{}{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let cgroup = root.join(format!("ferry-sock-{test}-{tag}"));
        fs::create_dir(&cgroup).with_context(|| format!("mkdir {}", cgroup.display()))?;
        Ok(Lab {
            cgroup,
            tag,
            netns: Vec::new(),
        })
    }

    /// A namespace with `lo` up and `addrs` on it.
    fn netns(&mut self, short: &str, addrs: &[Ipv4Addr]) -> Result<Netns> {
        let name = format!("{}{short}", self.tag);
        run("ip", &["netns", "add", &name])?;
        self.netns.push(name.clone());
        run("ip", &["-n", &name, "link", "set", "lo", "up"])?;
        for a in addrs {
            run(
                "ip",
                &["-n", &name, "addr", "add", &format!("{a}/32"), "dev", "lo"],
            )?;
        }
        let path = PathBuf::from("/run/netns").join(&name);
        let cookie = netns_cookie_of_path(&path)?;
        Ok(Netns { name, path, cookie })
    }

    /// Starts the client in the test's cgroup and in `ns`.
    fn spawn_client(&self, ns: &Netns, args: &[&str]) -> Result<Child> {
        let procs = self.cgroup.join("cgroup.procs");
        let script = format!(
            "echo $$ > '{}' && exec ip netns exec '{}' python3 '{}' \"$@\"",
            procs.display(),
            ns.name,
            CLIENT
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("client")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn client")
    }

    /// Runs the client to the end and returns its JSON lines.
    fn client(&self, ns: &Netns, args: &[&str]) -> Result<Vec<Value>> {
        let out = self.spawn_client(ns, args)?.wait_with_output()?;
        ensure!(
            out.status.success(),
            "client {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)?
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("client line {l}")))
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in &self.netns {
            let _ = run("ip", &["netns", "del", name]);
        }
        // The clients have exited; their cgroup is empty.
        if let Err(e) = fs::remove_dir(&self.cgroup) {
            eprintln!("remove {}: {e}", self.cgroup.display());
        }
    }
}

/// TCP and UDP servers on `addr` inside `ns` that answer with `label addr`. The TCP
/// server keeps each connection open and echoes `echo LABEL` per line received.
fn serve(ns: &Netns, label: &str, addr: SocketAddrV4) -> Result<()> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
    let path = ns.path.clone();
    let label = format!("{label} {addr}");
    std::thread::spawn(move || {
        let bound = (|| -> Result<(TcpListener, UdpSocket)> {
            let f = File::open(&path)?;
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok((TcpListener::bind(addr)?, UdpSocket::bind(addr)?))
        })();
        let (tcp, udp) = match bound {
            Ok(b) => b,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let _ = ready_tx.send(Ok(()));
        let udp_label = label.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(format!("{udp_label}\n").as_bytes(), from);
            }
        });
        for conn in tcp.incoming() {
            let Ok(mut conn) = conn else { continue };
            let label = label.clone();
            std::thread::spawn(move || {
                let _ = conn.write_all(format!("{label}\n").as_bytes());
                let mut reader = BufReader::new(conn.try_clone().expect("clone tcp stream"));
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let _ = conn.write_all(format!("echo {label}\n").as_bytes());
                    line.clear();
                }
            });
        }
    });
    ready_rx.recv()?
}

fn svc(vpc: u32, vip: Ipv4Addr, protocol: Protocol) -> ServiceKey {
    ServiceKey {
        vpc,
        vip,
        port: PORT,
        protocol,
    }
}

fn spec(backends: &[SocketAddrV4], algorithm: Algorithm, affinity_timeout_s: u32) -> ServiceSpec {
    ServiceSpec {
        backends: backends.iter().map(|&a| Backend::new(a)).collect(),
        algorithm,
        affinity_timeout_s,
    }
}

/// Both protocols of one VIP with the same backends.
fn tcp_udp(desired: &mut Desired, vpc: u32, vip: Ipv4Addr, s: ServiceSpec) {
    desired
        .services
        .insert(svc(vpc, vip, Protocol::Tcp), s.clone());
    desired.services.insert(svc(vpc, vip, Protocol::Udp), s);
}

fn backends_of(results: &[Value]) -> Result<BTreeSet<String>> {
    results
        .iter()
        .map(|r| {
            r["backend"]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("no backend answered: {r}"))
        })
        .collect()
}

fn vip_port(vip: Ipv4Addr) -> String {
    format!("{vip}:{PORT}")
}

fn load(lab: &Lab) -> Result<SocketLb> {
    Ok(SocketLb::load(&lab.cgroup, MapSizes::default())?)
}

#[test]
#[ignore = "needs root and cgroup v2"]
fn tcp_and_udp_to_the_vip_reach_a_backend_and_the_app_sees_the_vip() -> Result<()> {
    let mut lab = Lab::new("basic")?;
    let vpc1 = lab.netns("a", &[be(11).ip().to_owned()])?;
    serve(&vpc1, "vpc1", be(11))?;
    let mut lb = load(&lab)?;
    lb.set_netns_vpc(vpc1.cookie, 1)?;
    let mut d = Desired::default();
    tcp_udp(&mut d, 1, VIP, spec(&[be(11)], Algorithm::Random, 0));
    let report = lb.apply(&d)?;
    assert!(report.rejected.is_empty());

    let vip = VIP.to_string();
    let tcp = lab.client(&vpc1, &["tcp", &vip, "80", "3"])?;
    for r in &tcp {
        assert_eq!(r["backend"], "vpc1 10.1.0.11:8080", "{r}");
        assert_eq!(r["peer"], vip_port(VIP), "getpeername shows the VIP: {r}");
    }
    let udp = lab.client(&vpc1, &["udp", &vip, "80", "3"])?;
    for r in &udp {
        assert_eq!(r["backend"], "vpc1 10.1.0.11:8080", "{r}");
        assert_eq!(
            r["from"],
            vip_port(VIP),
            "the reply comes from the VIP: {r}"
        );
    }
    // The backend address itself is not translated back (not a service connection).
    let direct = lab.client(&vpc1, &["tcp", "10.1.0.11", "8080", "1"])?;
    assert_eq!(direct[0]["peer"], "10.1.0.11:8080");
    Ok(())
}

#[test]
#[ignore = "needs root and cgroup v2"]
fn dual_stack_sockets_to_the_ipv4_mapped_vip_are_translated_too() -> Result<()> {
    let mut lab = Lab::new("mapped")?;
    let vpc1 = lab.netns("a", &[be(11).ip().to_owned()])?;
    let vpc2 = lab.netns("b", &[be(11).ip().to_owned()])?;
    serve(&vpc1, "vpc1", be(11))?;
    serve(&vpc2, "vpc2", be(11))?;
    let mut lb = load(&lab)?;
    lb.set_netns_vpc(vpc1.cookie, 1)?;
    lb.set_netns_vpc(vpc2.cookie, 2)?;
    let mut d = Desired::default();
    tcp_udp(&mut d, 1, VIP, spec(&[be(11)], Algorithm::Random, 0));
    lb.apply(&d)?;

    let vip = VIP.to_string();
    let mapped = format!("::ffff:{VIP}:{PORT}");
    let tcp = lab.client(&vpc1, &["tcp6", &vip, "80", "2"])?;
    for r in &tcp {
        assert_eq!(r["backend"], "vpc1 10.1.0.11:8080", "{r}");
        assert_eq!(r["peer"], mapped.as_str(), "{r}");
    }
    let udp = lab.client(&vpc1, &["udp6", &vip, "80", "2"])?;
    for r in &udp {
        assert_eq!(r["backend"], "vpc1 10.1.0.11:8080", "{r}");
        assert_eq!(r["from"], mapped.as_str(), "{r}");
    }
    // Isolation holds on this path too.
    let r = lab.client(&vpc2, &["tcp6", &vip, "80", "1"])?;
    assert!(r[0]["backend"].is_null(), "vpc2 reached {r:?}");
    Ok(())
}

#[test]
#[ignore = "needs root and cgroup v2"]
fn a_pod_of_vpc2_gets_no_translation_to_vpc1s_vip() -> Result<()> {
    let mut lab = Lab::new("isolation")?;
    // Overlapping addresses: both VPCs have a backend at 10.1.0.11.
    let vpc1 = lab.netns("a", &[be(11).ip().to_owned()])?;
    let vpc2 = lab.netns("b", &[be(11).ip().to_owned()])?;
    let stranger = lab.netns("c", &[be(11).ip().to_owned()])?;
    serve(&vpc1, "vpc1", be(11))?;
    serve(&vpc2, "vpc2", be(11))?;
    serve(&stranger, "stranger", be(11))?;
    let mut lb = load(&lab)?;
    lb.set_netns_vpc(vpc1.cookie, 1)?;
    lb.set_netns_vpc(vpc2.cookie, 2)?;
    let mut d = Desired::default();
    tcp_udp(&mut d, 1, VIP, spec(&[be(11)], Algorithm::Random, 0));
    tcp_udp(&mut d, 2, VIP2, spec(&[be(11)], Algorithm::Random, 0));
    lb.apply(&d)?;

    let (vip1, vip2) = (VIP.to_string(), VIP2.to_string());
    // vpc2 -> vpc1's VIP: not translated. Had it been, it would have reached vpc2's own
    // server at the overlapping backend address; instead the VIP is unroutable.
    for mode in ["tcp", "udp"] {
        let r = lab.client(&vpc2, &[mode, &vip1, "80", "1"])?;
        assert!(r[0]["backend"].is_null(), "{mode}: vpc2 reached {r:?}");
        assert!(r[0]["error"].is_string(), "{mode}: {r:?}");
    }
    // vpc2's own VIP goes to vpc2's backend, vpc1's to vpc1's: same backend address.
    let r = lab.client(&vpc2, &["tcp", &vip2, "80", "1"])?;
    assert_eq!(r[0]["backend"], "vpc2 10.1.0.11:8080");
    let r = lab.client(&vpc1, &["tcp", &vip1, "80", "1"])?;
    assert_eq!(r[0]["backend"], "vpc1 10.1.0.11:8080");
    // vpc1 cannot use vpc2's VIP either.
    let r = lab.client(&vpc1, &["tcp", &vip2, "80", "1"])?;
    assert!(r[0]["backend"].is_null(), "vpc1 reached {r:?}");
    // A namespace the LB was never told about is left alone.
    let r = lab.client(&stranger, &["tcp", &vip1, "80", "1"])?;
    assert!(r[0]["backend"].is_null(), "unknown netns reached {r:?}");
    // After CNI DEL the namespace is no longer translated.
    lb.remove_netns(vpc1.cookie)?;
    let r = lab.client(&vpc1, &["tcp", &vip1, "80", "1"])?;
    assert!(r[0]["backend"].is_null(), "removed netns reached {r:?}");
    Ok(())
}

#[test]
#[ignore = "needs root and cgroup v2"]
fn a_backend_removed_from_the_desired_set_gets_no_new_connections() -> Result<()> {
    let mut lab = Lab::new("remove")?;
    let vpc1 = lab.netns("a", &[be(11).ip().to_owned(), be(12).ip().to_owned()])?;
    serve(&vpc1, "vpc1", be(11))?;
    serve(&vpc1, "vpc1", be(12))?;
    let mut lb = load(&lab)?;
    lb.set_netns_vpc(vpc1.cookie, 1)?;
    let vip = VIP.to_string();

    let mut d = Desired::default();
    tcp_udp(
        &mut d,
        1,
        VIP,
        spec(&[be(11), be(12)], Algorithm::Random, 0),
    );
    lb.apply(&d)?;
    let both = backends_of(&lab.client(&vpc1, &["tcp", &vip, "80", "40"])?)?;
    assert_eq!(
        both,
        ["vpc1 10.1.0.11:8080", "vpc1 10.1.0.12:8080"]
            .map(String::from)
            .into()
    );

    let mut d = Desired::default();
    tcp_udp(&mut d, 1, VIP, spec(&[be(12)], Algorithm::Random, 0));
    let report = lb.apply(&d)?;
    assert!(report.ops > 0);
    let (value, slots) = lb
        .kernel_service(&svc(1, VIP, Protocol::Tcp))?
        .context("service gone from the map")?;
    assert_eq!((value.count, slots), (1, vec![be(12)]));
    for mode in ["tcp", "udp"] {
        let left = backends_of(&lab.client(&vpc1, &[mode, &vip, "80", "20"])?)?;
        assert_eq!(left, ["vpc1 10.1.0.12:8080".to_string()].into(), "{mode}");
    }

    // No healthy backend: the service leaves the maps and the socket keeps the VIP.
    lb.apply(&Desired::default())?;
    assert!(lb.kernel_service(&svc(1, VIP, Protocol::Tcp))?.is_none());
    let r = lab.client(&vpc1, &["tcp", &vip, "80", "1"])?;
    assert!(r[0]["backend"].is_null(), "{r:?}");
    Ok(())
}

#[test]
#[ignore = "needs root and cgroup v2"]
fn client_ip_affinity_keeps_one_client_on_one_backend() -> Result<()> {
    let mut lab = Lab::new("affinity")?;
    let addrs = [be(11), be(12), be(13)];
    let vpc1 = lab.netns("a", &addrs.map(|a| a.ip().to_owned()))?;
    for a in addrs {
        serve(&vpc1, "vpc1", a)?;
    }
    let mut lb = load(&lab)?;
    lb.set_netns_vpc(vpc1.cookie, 1)?;
    let vip = VIP.to_string();
    let key = svc(1, VIP, Protocol::Tcp);

    let mut d = Desired::default();
    d.services
        .insert(key, spec(&addrs, Algorithm::Random, 10800));
    lb.apply(&d)?;
    let seen = backends_of(&lab.client(&vpc1, &["tcp", &vip, "80", "30"])?)?;
    assert_eq!(seen.len(), 1, "30 connections went to {seen:?}");
    let pinned = lb
        .kernel_affinity(vpc1.cookie, &key)?
        .context("no affinity entry")?;
    assert_eq!(seen, [format!("vpc1 {pinned}")].into());

    // The pinned backend turns unhealthy: the client moves, and sticks to its new one.
    let rest: Vec<_> = addrs.iter().copied().filter(|&a| a != pinned).collect();
    d.services
        .insert(key, spec(&rest, Algorithm::Random, 10800));
    lb.apply(&d)?;
    let moved = backends_of(&lab.client(&vpc1, &["tcp", &vip, "80", "30"])?)?;
    assert_eq!(moved.len(), 1, "after the move: {moved:?}");
    assert!(!moved.contains(&format!("vpc1 {pinned}")));

    // Without affinity the same client spreads (the control for the test above).
    d.services.insert(key, spec(&addrs, Algorithm::Random, 0));
    lb.apply(&d)?;
    let spread = backends_of(&lab.client(&vpc1, &["tcp", &vip, "80", "30"])?)?;
    assert!(spread.len() > 1, "no affinity yet one backend: {spread:?}");
    Ok(())
}

#[test]
#[ignore = "needs root and cgroup v2"]
fn random_and_maglev_spread_over_the_backends() -> Result<()> {
    let mut lab = Lab::new("spread")?;
    let addrs = [be(11), be(12), be(13)];
    let vpc1 = lab.netns("a", &addrs.map(|a| a.ip().to_owned()))?;
    for a in addrs {
        serve(&vpc1, "vpc1", a)?;
    }
    let mut lb = load(&lab)?;
    lb.set_netns_vpc(vpc1.cookie, 1)?;
    let vip = VIP.to_string();

    for algorithm in [Algorithm::Random, Algorithm::Maglev] {
        let mut d = Desired::default();
        tcp_udp(&mut d, 1, VIP, spec(&addrs, algorithm, 0));
        lb.apply(&d)?;
        // The kernel holds the planned slots (a Maglev table spans 16 map entries).
        let key = svc(1, VIP, Protocol::Tcp);
        let (value, slots) = lb.kernel_service(&key)?.context("service in map")?;
        assert_eq!(slots, lb.programmed().services()[&key].slots);
        assert_eq!(value.count as usize, slots.len());
        if algorithm == Algorithm::Maglev {
            assert_eq!(slots.len(), 251);
        }
        for mode in ["tcp", "udp"] {
            let seen = backends_of(&lab.client(&vpc1, &[mode, &vip, "80", "45"])?)?;
            assert!(
                seen.len() >= 2,
                "{algorithm:?} {mode}: 45 sockets all went to {seen:?}"
            );
        }
    }
    // Maglev hashes the socket: every datagram of one unconnected UDP socket reaches the
    // same backend (random would scatter them).
    let one = backends_of(&lab.client(&vpc1, &["udp1", &vip, "80", "20"])?)?;
    assert_eq!(one.len(), 1, "one socket's datagrams went to {one:?}");

    // Weights: a weight-0 backend gets nothing.
    let mut d = Desired::default();
    let mut s = spec(&addrs, Algorithm::Random, 0);
    s.backends[0].weight = 0;
    tcp_udp(&mut d, 1, VIP, s);
    lb.apply(&d)?;
    let seen = backends_of(&lab.client(&vpc1, &["tcp", &vip, "80", "30"])?)?;
    assert!(!seen.contains("vpc1 10.1.0.11:8080"), "{seen:?}");
    Ok(())
}

#[test]
#[ignore = "needs root and cgroup v2"]
fn resizing_keeps_live_connections_and_full_maps_are_reported() -> Result<()> {
    let mut lab = Lab::new("resize")?;
    let vpc1 = lab.netns("a", &[be(11).ip().to_owned()])?;
    serve(&vpc1, "vpc1", be(11))?;
    let small = MapSizes {
        services: 1,
        ..MapSizes::default()
    };
    let mut lb = SocketLb::load(&lab.cgroup, small)?;
    lb.set_netns_vpc(vpc1.cookie, 1)?;
    let mut d = Desired::default();
    tcp_udp(&mut d, 1, VIP, spec(&[be(11)], Algorithm::Random, 0));
    let report = lb.apply(&d)?;
    // Only one of the two service ports fits.
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(
        report.rejected[0].reason,
        RejectReason::ServicesFull { max: 1 }
    );
    assert_eq!(
        report.rejected[0].reason.to_string(),
        "service map full (1 services); resize the maps"
    );

    // A live connection through the VIP, held open across the resize.
    let mut held = lab.spawn_client(&vpc1, &["hold", &VIP.to_string(), "80"])?;
    let mut out = BufReader::new(held.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let first: Value = serde_json::from_str(&line)?;
    assert_eq!(first["peer"], vip_port(VIP), "{first}");

    let grown = lb
        .sizes()
        .grown_for(&report.rejected)
        .context("a full map should grow")?;
    assert_eq!(grown.services, 2);
    lb.resize(grown)?;
    let report = lb.apply(&d)?;
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);

    held.stdin.take().context("stdin")?.write_all(b"go\n")?;
    line.clear();
    out.read_line(&mut line)?;
    let after: Value = serde_json::from_str(&line)?;
    assert_eq!(after["peer"], vip_port(VIP), "after the resize: {after}");
    assert_eq!(after["echo"], "echo vpc1 10.1.0.11:8080", "{after}");
    let status = held.wait()?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = held.stderr.take() {
            e.read_to_string(&mut err)?;
        }
        bail!("held client failed: {err}");
    }
    // New sockets of both protocols translate in the new maps.
    let udp = lab.client(&vpc1, &["udp", &VIP.to_string(), "80", "2"])?;
    assert_eq!(udp[0]["from"], vip_port(VIP));

    // Shrinking below what is programmed is refused.
    let err = lb
        .resize(MapSizes {
            services: 1,
            ..small
        })
        .expect_err("shrink below usage");
    assert!(err.to_string().contains("services"), "{err}");
    Ok(())
}

#[test]
#[ignore = "needs root and cgroup v2"]
fn the_netns_cookie_is_per_namespace() -> Result<()> {
    let mut lab = Lab::new("cookie")?;
    let a = lab.netns("a", &[])?;
    let b = lab.netns("b", &[])?;
    assert_ne!(a.cookie, b.cookie);
    assert_eq!(netns_cookie_of_path(Path::new(&a.path))?, a.cookie);
    assert_ne!(ferry_sock::current_netns_cookie()?, a.cookie);
    Ok(())
}

#[test]
#[ignore = "needs root and cgroup v2"]
fn connections_during_backend_changes_always_find_a_whole_backend_list() -> Result<()> {
    let mut lab = Lab::new("churn")?;
    let addrs = [be(11), be(12), be(13)];
    let vpc1 = lab.netns("a", &addrs.map(|a| a.ip().to_owned()))?;
    for a in addrs {
        serve(&vpc1, "vpc1", a)?;
    }
    let mut lb = load(&lab)?;
    lb.set_netns_vpc(vpc1.cookie, 1)?;
    let key = svc(1, VIP, Protocol::Tcp);
    let lists = [
        spec(&[be(11), be(12)], Algorithm::Random, 0),
        spec(&[be(12), be(13)], Algorithm::Maglev, 0),
        spec(&[be(13)], Algorithm::Random, 30),
    ];
    let mut d = Desired::default();
    d.services.insert(key, lists[0].clone());
    lb.apply(&d)?;

    // The client connects 300 times while the backend list keeps changing under it.
    let client = lab.spawn_client(&vpc1, &["tcp", &VIP.to_string(), "80", "300"])?;
    let mut flips = 0;
    let out = {
        let mut client = client;
        loop {
            d.services.insert(key, lists[flips % lists.len()].clone());
            lb.apply(&d)?;
            flips += 1;
            if client.try_wait()?.is_some() {
                break client.wait_with_output()?;
            }
        }
    };
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(results.len(), 300);
    // Every connect was translated (an untranslated one would fail: the VIP is not
    // routable), and only to backends of the service.
    let seen = backends_of(&results)?;
    let all: BTreeSet<String> = addrs.iter().map(|a| format!("vpc1 {a}")).collect();
    assert!(seen.is_subset(&all), "{seen:?}");
    eprintln!("{flips} backend-list changes during 300 connects");
    assert!(
        flips > 10,
        "only {flips} changes happened during the connects"
    );
    Ok(())
}

/// A private bpffs for one test (pins must live on one), unmounted on drop.
struct Bpffs {
    mount: PathBuf,
}

impl Bpffs {
    fn new(tag: &str) -> Result<Bpffs> {
        let mount = std::env::temp_dir().join(format!("ferry-sock-bpffs-{tag}"));
        fs::create_dir_all(&mount)?;
        run("mount", &["-t", "bpf", "bpf", &mount.display().to_string()])?;
        Ok(Bpffs { mount })
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = run("umount", &[&self.mount.display().to_string()]);
        let _ = fs::remove_dir(&self.mount);
    }
}

/// Set for the child process of `a_pinned_socket_lb_outlives_its_owner`: the cgroup, the
/// pin dir, the netns cookie and the file to write its link ids to, separated by spaces.
const PIN_CHILD_ENV: &str = "FERRY_SOCK_PIN_CHILD";

fn pin_config(dir: &Path, ttl_s: u64) -> ferry_sock::PinConfig {
    ferry_sock::PinConfig {
        dir: dir.to_path_buf(),
        ttl: std::time::Duration::from_secs(ttl_s),
    }
}

fn one_backend() -> Desired {
    let mut d = Desired::default();
    tcp_udp(&mut d, 1, VIP, spec(&[be(11)], Algorithm::Random, 0));
    d
}

/// The owner that gets `kill -9`ed: the agent's code path (`load_pinned`, register the
/// pod's netns, apply), then it prints its link ids and waits to be killed. A no-op test
/// unless started by the test below.
#[test]
#[ignore = "needs root and cgroup v2 (the child of a_pinned_socket_lb_outlives_its_owner)"]
fn pinned_owner_child() -> Result<()> {
    let Ok(args) = std::env::var(PIN_CHILD_ENV) else {
        return Ok(());
    };
    let parts: Vec<&str> = args.split(' ').collect();
    ensure!(parts.len() == 4, "{PIN_CHILD_ENV}={args}");
    let (mut lb, adoption) = SocketLb::load_pinned(
        Path::new(parts[0]),
        MapSizes::default(),
        &pin_config(Path::new(parts[1]), 3600),
    )?;
    ensure!(!adoption.adopted, "a fresh pin dir: {adoption:?}");
    lb.set_netns_vpc(parts[2].parse()?, 1)?;
    lb.set_vpc_name(1, "vpc1")?;
    lb.apply(&one_backend())?;
    let ids: Vec<String> = lb.links().iter().map(|l| l.link_id.to_string()).collect();
    // Written whole, then renamed: the parent never reads half a file.
    let tmp = format!("{}.tmp", parts[3]);
    fs::write(&tmp, ids.join(","))?;
    fs::rename(&tmp, parts[3])?;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

#[test]
#[ignore = "needs root and cgroup v2"]
fn a_pinned_socket_lb_outlives_its_owner_and_is_adopted_then_unpinned() -> Result<()> {
    let mut lab = Lab::new("pinned")?;
    let vpc1 = lab.netns("a", &[be(11).ip().to_owned()])?;
    serve(&vpc1, "vpc1", be(11))?;
    let bpffs = Bpffs::new(&lab.tag)?;
    let dir = bpffs.mount.join("node-a");
    let vip = VIP.to_string();

    // The owner: another process, killed with SIGKILL once it has programmed the VIP.
    let ready = bpffs.mount.with_extension("ready");
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "pinned_owner_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            PIN_CHILD_ENV,
            format!(
                "{} {} {} {}",
                lab.cgroup.display(),
                dir.display(),
                vpc1.cookie,
                ready.display()
            ),
        )
        .spawn()?;
    // Waits for the owner's file (or its end: then it failed, see its output above).
    let child_links = loop {
        if let Ok(s) = fs::read_to_string(&ready) {
            break s;
        }
        if let Some(status) = child.try_wait()? {
            bail!("the owner ended before it was ready: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = fs::remove_file(&ready);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    child.wait()?;

    // Nothing owns the socket LB now: the VIP is still translated.
    for r in lab.client(&vpc1, &["tcp", &vip, "80", "3"])? {
        assert_eq!(r["backend"], "vpc1 10.1.0.11:8080", "owner dead: {r}");
        assert_eq!(r["peer"], vip_port(VIP), "{r}");
    }

    // A new owner adopts: the same links (ids), the same program, the netns registration
    // read back; it keeps translating before and after its first (full) apply.
    let (mut lb, adoption) =
        SocketLb::load_pinned(&lab.cgroup, MapSizes::default(), &pin_config(&dir, 3600))?;
    assert!(adoption.adopted && !adoption.expired, "{adoption:?}");
    assert_eq!(adoption.kept.len(), 8, "every link kept: {adoption:?}");
    assert!(adoption.replaced.is_empty() && adoption.attached.is_empty());
    assert_eq!(adoption.netns, 1);
    assert_eq!(lb.netns().get(&vpc1.cookie), Some(&1));
    assert_eq!(
        lb.vpc_names(),
        std::collections::BTreeMap::from([(1, "vpc1".to_string())]),
        "the VPC numbering is kept with the pins"
    );
    let ids: Vec<String> = lb.links().iter().map(|l| l.link_id.to_string()).collect();
    assert_eq!(ids.join(","), child_links, "the same links, never detached");
    for r in lab.client(&vpc1, &["tcp", &vip, "80", "2"])? {
        assert_eq!(r["backend"], "vpc1 10.1.0.11:8080", "adopted: {r}");
    }
    let report = lb.apply(&one_backend())?;
    assert!(
        report.rebuilt,
        "the adopted maps are replaced at the first apply"
    );
    // The owner used ids 1 and 2 (a TCP and a UDP service): the replacement's are above,
    // so no old service ever resolves to a new backend set while the maps are swapped.
    for (key, s) in lb.programmed().services() {
        assert!(s.id > 2 && s.set > 2, "{key}: id {} set {}", s.id, s.set);
        let (_, slots) = lb
            .kernel_service(key)?
            .context("programmed in the kernel")?;
        assert_eq!(slots, vec![be(11)], "{key}");
    }
    for r in lab.client(&vpc1, &["udp", &vip, "80", "2"])? {
        assert_eq!(
            r["backend"], "vpc1 10.1.0.11:8080",
            "after the rebuild: {r}"
        );
        assert_eq!(r["from"], vip_port(VIP), "{r}");
    }
    drop(lb);

    // The liveness guard: an owner whose deadline has passed (ttl 0) translates nothing
    // (the socket keeps the VIP, which nothing in this namespace routes).
    let (lb, _) = SocketLb::load_pinned(&lab.cgroup, MapSizes::default(), &pin_config(&dir, 0))?;
    for r in lab.client(&vpc1, &["tcp", &vip, "80", "1"])? {
        assert!(r.get("backend").is_none(), "past the deadline: {r}");
    }
    drop(lb);

    // Maps adopted past their deadline stay dormant until the new owner has replaced
    // them with its own state; then they translate again.
    let (mut lb, adoption) =
        SocketLb::load_pinned(&lab.cgroup, MapSizes::default(), &pin_config(&dir, 3600))?;
    assert!(adoption.adopted && adoption.kept.len() == 8, "{adoption:?}");
    assert!(adoption.expired, "the previous owner's deadline had passed");
    lb.keep_alive()?;
    for r in lab.client(&vpc1, &["tcp", &vip, "80", "1"])? {
        assert!(r.get("backend").is_none(), "dormant until replaced: {r}");
    }
    lb.apply(&one_backend())?;
    for r in lab.client(&vpc1, &["tcp", &vip, "80", "1"])? {
        assert_eq!(r["backend"], "vpc1 10.1.0.11:8080", "alive again: {r}");
    }

    // The clean stop removes every pin and detaches.
    lb.unpin()?;
    assert!(!dir.exists(), "no pin left in {}", dir.display());
    for r in lab.client(&vpc1, &["tcp", &vip, "80", "1"])? {
        assert!(r.get("backend").is_none(), "detached: {r}");
    }
    Ok(())
}
