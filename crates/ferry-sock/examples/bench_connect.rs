//! What the socket LB costs a connecting application: `connect()` latency and rate, and
//! UDP request/response, to a VIP (translated by the hooks) against the same backend
//! addressed directly, with 10,000 services in the maps.
//!
//!     cargo run -p ferry-sock --example bench_connect -- [COUNT] [SERVICES]
//!
//! Needs root and cgroup v2. Creates a network namespace with backends on its loopback and
//! a child cgroup (both removed at the end); the client is this binary re-executed inside
//! both. Rows:
//! * `direct, no hooks`: the client outside the cgroup (no BPF program runs);
//! * `direct, hooks`: in the cgroup, to the backend address (hooks run, find no service);
//! * `vip`: in the cgroup, to the VIP (hooks translate).
//!
//! Prints a table and one JSON line. Loopback only: absolute figures are the kernel's
//! socket path on this machine, the differences are the hooks.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_sock::{
    Algorithm, Backend, Desired, MapSizes, Protocol, ServiceKey, ServiceSpec, SocketLb,
    cgroup2_mount, netns_cookie_of_path,
};
use socket2::{Domain, Socket, Type};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 1, 0, 11), 8080);

/// The client half: `bench_connect client tcp|udp ADDR COUNT` prints
/// `{"rate": per second, "p50_us": .., "p99_us": ..}`.
fn client(mode: &str, addr: SocketAddrV4, count: usize) -> Result<()> {
    let mut lat = Vec::with_capacity(count);
    let start = Instant::now();
    match mode {
        "tcp" => {
            for _ in 0..count {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
                // RST on close: no TIME_WAIT, so the ephemeral ports last.
                s.set_linger(Some(Duration::ZERO))?;
                let t = Instant::now();
                s.connect(&SocketAddr::V4(addr).into())?;
                lat.push(t.elapsed());
            }
        }
        "udp" => {
            let mut buf = [0u8; 64];
            for _ in 0..count {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                let t = Instant::now();
                s.send_to(b"x", addr)?;
                s.recv_from(&mut buf)?;
                lat.push(t.elapsed());
            }
        }
        other => bail!("unknown mode {other}"),
    }
    let total = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    println!(
        "{}",
        serde_json::json!({"rate": count as f64 / total, "p50_us": pct(0.5), "p99_us": pct(0.99)})
    );
    Ok(())
}

struct Cleanup {
    cgroup: PathBuf,
    netns: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let st = Command::new("ip").args(args).status()?;
    ensure!(st.success(), "ip {args:?} failed");
    Ok(())
}

/// Backend servers inside the namespace: a TCP acceptor and a UDP echo.
fn serve(netns: &Path) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let bound = (|| -> Result<(TcpListener, UdpSocket)> {
            let f = std::fs::File::open(&netns)?;
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.bind(&SocketAddr::V4(BACKEND).into())?;
            s.listen(4096)?;
            Ok((s.into(), UdpSocket::bind(BACKEND)?))
        })();
        let (tcp, udp) = match bound {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let _ = tx.send(Ok(()));
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        });
        // Accept and drop: the client resets its end on close.
        for conn in tcp.incoming().flatten() {
            drop(conn);
        }
    });
    rx.recv()?
}

fn run_client(
    cleanup: &Cleanup,
    in_cgroup: bool,
    mode: &str,
    addr: SocketAddrV4,
    count: usize,
) -> Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let join = if in_cgroup {
        format!(
            "echo $$ > '{}' && ",
            cleanup.cgroup.join("cgroup.procs").display()
        )
    } else {
        String::new()
    };
    let script = format!(
        "{join}exec ip netns exec '{}' '{}' client {mode} {addr} {count}",
        cleanup.netns,
        exe.display()
    );
    let out = Command::new("sh").arg("-c").arg(script).output()?;
    ensure!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("client") {
        let addr: SocketAddrV4 = args.get(2).context("addr")?.parse()?;
        let count: usize = args.get(3).context("count")?.parse()?;
        return client(&args[1], addr, count);
    }
    let count: usize = args
        .first()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let services: u32 = args
        .get(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);

    let root = cgroup2_mount().context("no cgroup2 mount")?;
    let pid = std::process::id();
    let cleanup = Cleanup {
        cgroup: root.join(format!("ferry-sock-connect-{pid}")),
        netns: format!("fskconn{pid}"),
    };
    std::fs::create_dir(&cleanup.cgroup)?;
    ip(&["netns", "add", &cleanup.netns])?;
    ip(&["-n", &cleanup.netns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        &cleanup.netns,
        "addr",
        "add",
        "10.1.0.11/32",
        "dev",
        "lo",
    ])?;
    let netns_path = PathBuf::from("/run/netns").join(&cleanup.netns);
    serve(&netns_path)?;

    let mut lb = SocketLb::load(&cleanup.cgroup, MapSizes::default())?;
    lb.set_netns_vpc(netns_cookie_of_path(&netns_path)?, 1)?;
    let mut desired = Desired::default();
    for i in 0..services {
        let [_, a, b, c] = (i + 1000).to_be_bytes();
        let vip = if i == 0 {
            VIP
        } else {
            Ipv4Addr::new(10, 97 + a, b, c)
        };
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            desired.services.insert(
                ServiceKey {
                    vpc: 1,
                    vip,
                    port: 80,
                    protocol,
                },
                ServiceSpec {
                    // Only the first service has the real backend; the rest fill the maps.
                    backends: if i == 0 {
                        vec![Backend::new(BACKEND)]
                    } else {
                        (0..10)
                            .map(|j| {
                                Backend::new(SocketAddrV4::new(Ipv4Addr::new(10, 2, a, j), 80))
                            })
                            .collect()
                    },
                    algorithm: Algorithm::Random,
                    affinity_timeout_s: 0,
                },
            );
        }
    }
    let report = lb.apply(&desired)?;
    ensure!(report.rejected.is_empty(), "rejected {:?}", report.rejected);

    let vip = SocketAddrV4::new(VIP, 80);
    let rows = [
        ("tcp connect", "direct, no hooks", false, "tcp", BACKEND),
        ("tcp connect", "direct, hooks", true, "tcp", BACKEND),
        ("tcp connect", "vip", true, "tcp", vip),
        ("udp req/resp", "direct, no hooks", false, "udp", BACKEND),
        ("udp req/resp", "direct, hooks", true, "udp", BACKEND),
        ("udp req/resp", "vip", true, "udp", vip),
    ];
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(vec!["test", "path", "per s", "p50 µs", "p99 µs"]);
    let mut json = Vec::new();
    for (test, path, in_cgroup, mode, addr) in rows {
        let r = run_client(&cleanup, in_cgroup, mode, addr, count)?;
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        table.add_row(vec![
            test.to_string(),
            path.to_string(),
            format!("{:.0}", f("rate")),
            format!("{:.1}", f("p50_us")),
            format!("{:.1}", f("p99_us")),
        ]);
        json.push(serde_json::json!({"test": test, "path": path, "rate": f("rate"), "p50_us": f("p50_us"), "p99_us": f("p99_us")}));
    }
    drop(lb);
    println!("{table}");
    println!(
        "{}",
        serde_json::json!({"services": services, "count": count, "rows": json})
    );
    Ok(())
}
