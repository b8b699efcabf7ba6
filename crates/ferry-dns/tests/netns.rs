//! The deployment model with real network namespaces (root): two namespaces stand for two
//! VPCs, each holding the same DNS VIP 10.96.0.10 on its loopback. The resolver's sockets
//! are created inside each namespace on the *same* address and port, so overlapping
//! addresses cannot mix the VPCs up; `dig` and glibc (`getent`, through a
//! `/etc/netns/NAME/resolv.conf` with the cluster search path) in each namespace get that
//! VPC's names only.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;

use ferry_dns::{Upstreams, VpcListener, build_zones, fixtures, serve};
use tokio::sync::watch;

const VIP: &str = "10.96.0.10";

/// A namespace this test created, with `lo` up and the VIP on it; removed (with its
/// `/etc/netns` directory) on drop.
struct Netns {
    name: String,
}

fn run(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("command runs");
    assert!(st.success(), "{args:?}");
}

impl Netns {
    fn add(suffix: &str) -> Netns {
        let name = format!("fdns-{}-{suffix}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{VIP}/32"),
            "dev",
            "lo",
        ]);
        let etc = format!("/etc/netns/{}", ns.name);
        std::fs::create_dir_all(&etc).expect("/etc/netns dir");
        std::fs::write(
            format!("{etc}/resolv.conf"),
            format!(
                "nameserver {VIP}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
            ),
        )
        .expect("resolv.conf");
        ns
    }

    /// Sockets for `vpc` created inside this namespace (on a thread that enters it: a socket
    /// stays in the namespace it was made in).
    fn bind(&self, vpc: &str, addr: SocketAddr) -> VpcListener {
        let (path, vpc) = (format!("/var/run/netns/{}", self.name), vpc.to_string());
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("netns file");
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            VpcListener::bind(&vpc, addr).expect("bind in the namespace")
        })
        .join()
        .expect("bind thread")
    }

    async fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .await
            .expect("ip netns exec");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (network namespaces)"]
async fn same_vip_in_two_namespaces_answers_each_vpc_its_own_names() {
    let a = Netns::add("a");
    let b = Netns::add("b");
    let addr: SocketAddr = format!("{VIP}:53").parse().expect("address");
    let listeners = vec![a.bind("vpc1", addr), b.bind("vpc2", addr)];
    let (_tx, rx) = watch::channel(Arc::new(build_zones("cluster.local", &fixtures::sample())));
    let server = tokio::spawn(serve(listeners, rx, Upstreams::default()));

    let dig = |tcp: bool, name: &'static str| {
        let mut v = vec!["dig", "@10.96.0.10", "+short", "+tries=1", "+time=3", name];
        if tcp {
            v.push("+tcp");
        }
        v
    };
    for tcp in [false, true] {
        let y = "ysvc1.default.svc.cluster.local";
        assert_eq!(
            a.exec(&dig(tcp, y)).await,
            (true, "10.96.0.100".into()),
            "vpc1 tcp={tcp}"
        );
        assert_eq!(
            b.exec(&dig(tcp, y)).await,
            (true, String::new()),
            "vpc2 tcp={tcp}"
        );
        let s = "shared.default.svc.cluster.local";
        assert_eq!(a.exec(&dig(tcp, s)).await, (true, "10.96.0.101".into()));
        assert_eq!(b.exec(&dig(tcp, s)).await, (true, "10.96.0.101".into()));
    }
    let status = |out: &str| out.contains("status: NXDOMAIN");
    let (_, full) = b
        .exec(&[
            "dig",
            "@10.96.0.10",
            "+tries=1",
            "+time=3",
            "ysvc1.default.svc.cluster.local",
        ])
        .await;
    assert!(status(&full), "vpc2 sees NXDOMAIN:\n{full}");

    // glibc through /etc/netns/NAME/resolv.conf: the short name via the search path.
    let (ok, line) = a.exec(&["getent", "ahostsv4", "ysvc1"]).await;
    assert!(ok && line.starts_with("10.96.0.100"), "vpc1 getent: {line}");
    let (ok, line) = b.exec(&["getent", "ahostsv4", "ysvc1"]).await;
    assert!(!ok && line.is_empty(), "vpc2 getent must fail: {line}");
    let (ok, line) = b.exec(&["getent", "ahostsv4", "shared.default"]).await;
    assert!(ok && line.starts_with("10.96.0.101"), "vpc2 getent: {line}");

    server.abort();
}
