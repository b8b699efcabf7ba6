//! Answer latency and throughput of the resolver over UDP on loopback, like a `dnsperf`
//! loop from one pod: a zone of N Services (default 1,000) plus YusurServices in vpc1,
//! served by `ferry_dns::serve` on a one-worker runtime, queried by client threads with
//! blocking sockets (A queries for existing names, 1 in 10 for a missing name).
//!
//! ```text
//! cargo run --release -p ferry-dns --example dns_qps -- [--services N] [--queries Q]
//!     [--clients C] [--seconds S]
//! ```
//!
//! Prints one JSON line and a table: the sequential latency p50/p99/max of Q queries, the
//! QPS of C clients each asking one query at a time for S seconds, and the in-process cost
//! of `answer` + `encode` (no sockets) for comparison.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_dns::wire::{CLASS_IN, Header, Message, Question, TYPE_A};
use ferry_dns::{Name, Snapshot, Upstreams, VpcListener, answer, build_zones, fixtures, serve};
use tokio::sync::watch;

struct Args {
    services: usize,
    queries: usize,
    clients: usize,
    seconds: u64,
}

fn args() -> Result<Args> {
    let mut a = Args {
        services: 1000,
        queries: 20_000,
        clients: 4,
        seconds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--services" => a.services = val.parse()?,
            "--queries" => a.queries = val.parse()?,
            "--clients" => a.clients = val.parse()?,
            "--seconds" => a.seconds = val.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn snapshot(n: usize) -> Snapshot {
    let mut s = Snapshot::default();
    for i in 0..n {
        let ip = format!("10.96.{}.{}", 1 + i / 250, 1 + i % 250);
        s.services.push(fixtures::service(
            "default",
            &format!("svc-{i}"),
            "ClusterIP",
            &ip,
            &[("http", 80, "TCP")],
        ));
        let yip = format!("10.97.{}.{}", 1 + i / 250, 1 + i % 250);
        s.ysvcs.push(fixtures::ysvc(
            "default",
            &format!("ysvc-{i}"),
            &["vpc1"],
            Some(&yip),
            &[("http", 80)],
        ));
    }
    s
}

fn query_bytes(id: u16, i: usize, services: usize) -> Vec<u8> {
    let name = if i % 10 == 9 {
        format!("missing-{i}.default.svc.cluster.local")
    } else {
        format!("svc-{}.default.svc.cluster.local", i % services)
    };
    Message {
        header: Header {
            id,
            rd: true,
            ..Default::default()
        },
        questions: vec![Question {
            name: Name::parse(&name).unwrap_or_default(),
            qtype: TYPE_A,
            qclass: CLASS_IN,
        }],
        ..Default::default()
    }
    .encode(512)
}

fn ask(sock: &UdpSocket, q: &[u8], buf: &mut [u8]) -> Result<()> {
    sock.send(q)?;
    let n = sock.recv(buf)?;
    if n < 12 || buf[..2] != q[..2] {
        bail!("bad reply ({n} bytes)");
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() -> Result<()> {
    let a = args()?;
    let snap = snapshot(a.services);
    let t = Instant::now();
    let zones = Arc::new(build_zones("cluster.local", &snap));
    let build_ms = t.elapsed().as_secs_f64() * 1e3;

    // In-process: answer + encode, no sockets.
    let qs: Vec<Message> = (0..a.queries)
        .map(|i| Message::parse(&query_bytes(i as u16, i, a.services)))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    let mut bytes = 0usize;
    for q in &qs {
        if let ferry_dns::Decision::Reply(m) = answer(&zones, "ovn-cluster", q) {
            bytes += m.encode(512).len();
        }
    }
    let inproc_us = t.elapsed().as_secs_f64() * 1e6 / a.queries as f64;
    std::hint::black_box(bytes);

    // The server, on its own one-worker runtime.
    let listener = VpcListener::bind("ovn-cluster", "127.0.0.1:0".parse()?)?;
    let addr: SocketAddr = listener.local_addr()?;
    let (_tx, rx) = watch::channel(zones);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("server-rt")
        .enable_all()
        .build()?;
    rt.spawn(async move {
        if let Err(e) = serve(vec![listener], rx, Upstreams::default()).await {
            eprintln!("serve: {e}");
        }
    });

    // Sequential latency.
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 1500];
    for i in 0..200 {
        ask(&sock, &query_bytes(i as u16, i, a.services), &mut buf)?; // warm-up
    }
    let mut lat = Vec::with_capacity(a.queries);
    for i in 0..a.queries {
        let q = query_bytes(i as u16, i, a.services);
        let t = Instant::now();
        ask(&sock, &q, &mut buf)?;
        lat.push(t.elapsed());
    }
    lat.sort();

    // Throughput: C clients, one query in flight each.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let threads: Vec<_> = (0..a.clients)
        .map(|c| {
            let (stop, done, errors, services) =
                (stop.clone(), done.clone(), errors.clone(), a.services);
            std::thread::spawn(move || -> Result<()> {
                let sock = UdpSocket::bind("127.0.0.1:0")?;
                sock.connect(addr)?;
                sock.set_read_timeout(Some(Duration::from_secs(1)))?;
                let mut buf = [0u8; 1500];
                let mut i = c * 1_000_003;
                while !stop.load(Ordering::Relaxed) {
                    let q = query_bytes(i as u16, i, services);
                    match ask(&sock, &q, &mut buf) {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(a.seconds));
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    let elapsed = t.elapsed().as_secs_f64();
    let qps = done.load(Ordering::Relaxed) as f64 / elapsed;

    let (p50, p99, max) = (
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );
    println!(
        "{{\"services\":{},\"ysvcs_vpc1\":{},\"build_zones_ms\":{build_ms:.1},\"queries\":{},\"latency_us\":{{\"p50\":{p50:.1},\"p99\":{p99:.1},\"max\":{max:.1}}},\"clients\":{},\"seconds\":{},\"qps\":{qps:.0},\"errors\":{},\"in_process_us_per_query\":{inproc_us:.2},\"build\":\"{}\"}}",
        a.services,
        a.services,
        a.queries,
        a.clients,
        a.seconds,
        errors.load(Ordering::Relaxed),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    println!();
    println!("{:<34} {:>12}", "figure", "value");
    println!(
        "{:<34} {:>12}",
        "services (+ as many ysvcs in vpc1)", a.services
    );
    println!("{:<34} {:>12.1}", "build_zones (ms)", build_ms);
    println!("{:<34} {:>12.1}", "UDP latency p50 (us)", p50);
    println!("{:<34} {:>12.1}", "UDP latency p99 (us)", p99);
    println!("{:<34} {:>12.1}", "UDP latency max (us)", max);
    println!(
        "{:<34} {:>12.0}",
        format!("QPS ({} clients)", a.clients),
        qps
    );
    println!(
        "{:<34} {:>12}",
        "timeouts/errors",
        errors.load(Ordering::Relaxed)
    );
    println!(
        "{:<34} {:>12.2}",
        "answer+encode in process (us)", inproc_us
    );
    Ok(())
}
