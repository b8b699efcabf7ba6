//! The probe engine for real: probes run inside network namespaces this test creates,
//! against servers it starts and stops there.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use socket2::{Domain, Protocol, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use ferry_agent::netns::{NetnsSocketFactory, SocketSource};
use ferry_agent::probe::{
    Phase, ProbeEvent, ProbeKind, ProbeRunner, ProbeSpec, ProbeTarget, Thresholds, execute,
};
use ferry_testkit::netns::{Netns, unique};

/// A TCP listener created inside the namespace of `f`.
async fn listen(f: &NetnsSocketFactory, addr: SocketAddr) -> Result<TcpListener> {
    let s = f
        .socket(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .await?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())
        .with_context(|| format!("bind {addr}"))?;
    s.listen(1024)?;
    let std_listener: std::net::TcpListener = s.into();
    Ok(TcpListener::from_std(std_listener)?)
}

/// Accepts and closes connections until aborted.
fn serve_tcp(l: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            drop(c);
        }
    })
}

/// Answers every HTTP request with `status` (e.g. `500 Internal Server Error`).
fn serve_http(l: TcpListener, status: &'static str) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = c.write_all(resp.as_bytes()).await;
            });
        }
    })
}

/// Echoes UDP datagrams until aborted.
async fn serve_udp_echo(f: &NetnsSocketFactory, addr: SocketAddr) -> Result<JoinHandle<()>> {
    let s = f
        .socket(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .await?;
    s.bind(&addr.into())?;
    let std_sock: std::net::UdpSocket = s.into();
    let u = UdpSocket::from_std(std_sock)?;
    Ok(tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = u.recv_from(&mut buf).await {
            let _ = u.send_to(&buf[..n], from).await;
        }
    }))
}

async fn stop(task: JoinHandle<()>) {
    task.abort();
    let _ = task.await;
}

fn spec(id: &str, ns: &Netns, kind: ProbeKind, ip: &str, port: u16, period_ms: u64) -> ProbeSpec {
    ProbeSpec {
        id: id.to_string(),
        netns: Some(ns.path()),
        target: ProbeTarget {
            kind,
            ip: ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            port,
        },
        period: Duration::from_millis(period_ms),
        timeout: Duration::from_millis(period_ms / 2),
        thresholds: Thresholds {
            success: 1,
            failure: 3,
        },
    }
}

/// Waits for the next transition of `id` (other probes' events are skipped).
async fn next_for(
    rx: &mut mpsc::Receiver<ProbeEvent>,
    id: &str,
    within: Duration,
) -> Result<ProbeEvent> {
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if ev.id == id => return Ok(ev),
            Ok(Some(_)) => continue,
            Ok(None) => bail!("runner closed its channel"),
            Err(_) => bail!("no transition of {id} within {within:?}"),
        }
    }
}

/// A probe namespace and a server namespace joined by a veth: probe side 10.253.0.1/24,
/// server side 10.253.0.2/24, the same in every pair.
struct Pair {
    probe: Netns,
    server: Netns,
}

fn pair(tag: &str) -> Result<Pair> {
    let probe = Netns::add(&unique(&format!("p{tag}")))?;
    let server = Netns::add(&unique(&format!("s{tag}")))?;
    probe.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &server.name,
    ])?;
    probe.ip(&["addr", "add", "10.253.0.1/24", "dev", "eth0"])?;
    server.ip(&["addr", "add", "10.253.0.2/24", "dev", "eth0"])?;
    probe.ip(&["link", "set", "eth0", "up"])?;
    server.ip(&["link", "set", "eth0", "up"])?;
    Ok(Pair { probe, server })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and netns"]
async fn tcp_server_stopped_and_restarted_in_netns() -> Result<()> {
    let ns = Netns::add(&unique("t1"))?;
    ns.ip(&["addr", "add", "10.253.1.1/32", "dev", "lo"])?;
    let f = NetnsSocketFactory::open(&ns.path())?;
    let addr: SocketAddr = "10.253.1.1:8080".parse()?;
    let mut server = serve_tcp(listen(&f, addr).await?);

    let period = Duration::from_secs(1);
    let failure_threshold = 3u32;
    let (mut runner, mut rx) = ProbeRunner::new(16);
    runner.upsert(spec("t1", &ns, ProbeKind::Tcp, "10.253.1.1", 8080, 1000))?;
    assert_eq!(runner.namespaces(), 1);
    let ev = next_for(&mut rx, "t1", period * 2 + Duration::from_secs(1)).await?;
    assert_eq!(
        (ev.transition.from, ev.transition.to),
        (Phase::Unknown, Phase::Healthy)
    );
    assert_eq!(ev.transition.result.message, format!("connected to {addr}"));

    for round in 1..=2 {
        stop(server).await;
        let stopped = Instant::now();
        let bound = period * failure_threshold + Duration::from_secs(1);
        let ev = next_for(&mut rx, "t1", bound).await?;
        let down_after = stopped.elapsed();
        assert_eq!(
            (ev.transition.from, ev.transition.to),
            (Phase::Healthy, Phase::Unhealthy)
        );
        assert!(
            ev.transition.result.message.contains("Connection refused"),
            "{:?}",
            ev.transition.result
        );

        server = serve_tcp(listen(&f, addr).await?);
        let restarted = Instant::now();
        let ev = next_for(&mut rx, "t1", period + Duration::from_secs(1)).await?;
        let up_after = restarted.elapsed();
        assert_eq!(
            (ev.transition.from, ev.transition.to),
            (Phase::Unhealthy, Phase::Healthy)
        );
        println!(
            "round {round}: Unhealthy {down_after:?} after stop (bound {bound:?}), Healthy {up_after:?} after restart (bound {:?})",
            period + Duration::from_secs(1)
        );
    }
    // Removing the last probe of a namespace stops its socket thread.
    assert!(runner.remove("t1"));
    assert_eq!(runner.namespaces(), 0);
    stop(server).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and netns"]
async fn same_ip_in_two_namespaces_each_probe_sees_its_own() -> Result<()> {
    let a = pair("a2")?;
    let b = pair("b2")?;
    let fa = NetnsSocketFactory::open(&a.server.path())?;
    let fb = NetnsSocketFactory::open(&b.server.path())?;
    let addr: SocketAddr = "10.253.0.2:8080".parse()?;
    let server_a = serve_tcp(listen(&fa, addr).await?);

    let (mut runner, mut rx) = ProbeRunner::new(16);
    runner.upsert(spec("a", &a.probe, ProbeKind::Tcp, "10.253.0.2", 8080, 500))?;
    runner.upsert(spec("b", &b.probe, ProbeKind::Tcp, "10.253.0.2", 8080, 500))?;
    assert_eq!(runner.namespaces(), 2);
    let within = Duration::from_secs(4);
    let ea = next_for(&mut rx, "a", within).await?;
    assert_eq!(
        ea.transition.to,
        Phase::Healthy,
        "{:?}",
        ea.transition.result
    );

    // Swap which namespace serves: each probe follows its own namespace.
    let mut rx_b = rx;
    let eb = next_for(&mut rx_b, "b", within).await?;
    assert_eq!(
        eb.transition.to,
        Phase::Unhealthy,
        "{:?}",
        eb.transition.result
    );
    stop(server_a).await;
    let server_b = serve_tcp(listen(&fb, addr).await?);
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 2 {
        let ev = tokio::time::timeout(within, rx_b.recv())
            .await
            .context("no transition after swapping servers")?
            .context("channel closed")?;
        seen.insert(ev.id.clone(), ev.transition.to);
    }
    assert_eq!(seen.get("a"), Some(&Phase::Unhealthy));
    assert_eq!(seen.get("b"), Some(&Phase::Healthy));
    println!(
        "same IP 10.253.0.2 in two namespaces: a {:?}, b {:?} after the swap",
        seen["a"], seen["b"]
    );
    stop(server_b).await;
    drop(runner);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and netns"]
async fn executors_http_udp_icmp_tcp_in_netns() -> Result<()> {
    let p = pair("x3")?;
    let server = NetnsSocketFactory::open(&p.server.path())?;
    let probe = SocketSource::Netns(NetnsSocketFactory::open(&p.probe.path())?);
    let ip: IpAddr = "10.253.0.2".parse()?;
    let h500 = serve_http(
        listen(&server, SocketAddr::new(ip, 8081)).await?,
        "500 Internal Server Error",
    );
    let h200 = serve_http(listen(&server, SocketAddr::new(ip, 8082)).await?, "200 OK");
    let h302 = serve_http(
        listen(&server, SocketAddr::new(ip, 8083)).await?,
        "302 Found",
    );
    let echo = serve_udp_echo(&server, SocketAddr::new(ip, 9998)).await?;
    let timeout = Duration::from_millis(800);
    let t = |kind: ProbeKind, ip: &str, port: u16| ProbeTarget {
        kind,
        ip: ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        port,
    };
    let http = |path: &str| ProbeKind::Http {
        path: path.to_string(),
    };
    let cases: Vec<(&str, ProbeTarget, bool, &str)> = vec![
        (
            "HTTP 500 fails",
            t(http("/healthz"), "10.253.0.2", 8081),
            false,
            "GET http://10.253.0.2:8081/healthz: HTTP 500 Internal Server Error",
        ),
        (
            "HTTP 200 succeeds",
            t(http("/healthz"), "10.253.0.2", 8082),
            true,
            "GET http://10.253.0.2:8082/healthz: HTTP 200 OK",
        ),
        (
            "HTTP 302 succeeds",
            t(http("healthz"), "10.253.0.2", 8083),
            true,
            "GET http://10.253.0.2:8083/healthz: HTTP 302 Found",
        ),
        (
            "HTTP to a closed port fails",
            t(http("/"), "10.253.0.2", 8089),
            false,
            "connect to 10.253.0.2:8089: Connection refused (os error 111)",
        ),
        (
            "TCP to a closed port fails",
            t(ProbeKind::Tcp, "10.253.0.2", 8089),
            false,
            "connect to 10.253.0.2:8089: Connection refused (os error 111)",
        ),
        (
            "UDP to a closed port fails",
            t(
                ProbeKind::Udp {
                    silence: ferry_api::UdpSilence::Unknown,
                },
                "10.253.0.2",
                9999,
            ),
            false,
            "UDP 10.253.0.2:9999: port unreachable (ICMP)",
        ),
        (
            "UDP echo succeeds",
            t(
                ProbeKind::Udp {
                    silence: ferry_api::UdpSilence::Unknown,
                },
                "10.253.0.2",
                9998,
            ),
            true,
            "UDP reply from 10.253.0.2:9998 (12 bytes)",
        ),
        (
            "ICMP to a live address succeeds (raw socket: ping_group_range excludes root)",
            t(ProbeKind::Icmp, "10.253.0.2", 0),
            true,
            "ICMP echo reply from 10.253.0.2 (raw socket)",
        ),
        (
            "ICMP to an absent address times out",
            t(ProbeKind::Icmp, "10.253.0.3", 0),
            false,
            "timed out after 800ms",
        ),
        (
            "TCP to an absent address times out",
            t(ProbeKind::Tcp, "10.253.0.3", 80),
            false,
            "timed out after 800ms",
        ),
    ];
    for (name, target, want_ok, want_msg) in &cases {
        let r = execute(&probe, target, timeout).await;
        println!(
            "{name}: success={} latency={:?} {}",
            r.success, r.latency, r.message
        );
        assert_eq!(
            (r.success, r.message.as_str()),
            (*want_ok, *want_msg),
            "case {name}"
        );
        if r.message.starts_with("timed out") {
            assert!(
                r.latency >= timeout,
                "case {name}: gave up early: {:?}",
                r.latency
            );
            assert!(
                r.latency < timeout + Duration::from_millis(500),
                "case {name}: {:?}",
                r.latency
            );
        }
    }
    // With ping_group_range opened in the probe namespace, the unprivileged socket is used.
    p.probe.exec(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ping_group_range=0 2147483647",
    ])?;
    let r = execute(&probe, &t(ProbeKind::Icmp, "10.253.0.2", 0), timeout).await;
    assert_eq!(
        (r.success, r.message.as_str()),
        (true, "ICMP echo reply from 10.253.0.2 (dgram socket)")
    );
    for task in [h500, h200, h302, echo] {
        stop(task).await;
    }
    Ok(())
}
