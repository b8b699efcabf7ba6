//! Programs N ClusterIP services x M backends (one VPC, backends spread over its subnets)
//! into a fresh, real NB through the network controller's own applier (`ferry-nb`'s
//! `Applier`: `build_desired`, one `diff` from `ferry-ovsdb`'s mirror, its bounded
//! transactions in order, a diff again until empty). Then one service loses a backend,
//! programmed by a full convergence and then (another backend) by the service fast path
//! the controller takes for a ClusterIP change, each timed. Prints a table and one JSON
//! object.
//!
//! ```text
//! cargo run --release -p ferry-net --example nb_scale -- --services 10000 --backends 20
//!     [--subnets 4] [--max-ops 500] [--remote unix:/path/nb.sock]
//! ```
//!
//! Without `--remote` it starts its own `ovsdb-server` (OVN NB schema, the test kit's
//! `NbServer`) in a temp dir and kills it (by pid) at the end. `--max-ops` bounds the
//! operations per transaction: a new ClusterIP service is one `Load_Balancer` insert, so
//! it is also the LBs per transaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_nb::{Applier, Sent};
use ferry_net::scenario::service_owner;
use ferry_net::{
    Backend, NetworkState, Protocol, ServicePort, ServiceScope, ServiceState, SubnetState,
    build_desired, diff,
};
use ferry_ovsdb::{Client, nb};
use ferry_testkit::ovsdb::NbServer;
use serde_json::{Value, json};

struct Args {
    services: usize,
    backends: usize,
    subnets: usize,
    max_ops: usize,
    remote: Option<String>,
}

const USAGE: &str =
    "nb_scale [--services N] [--backends M] [--subnets S] [--max-ops K] [--remote REMOTE]
  --services N   ClusterIP services (default 10000)
  --backends M   backends per service (default 20)
  --subnets S    subnets of the VPC the backends spread over, 1-200 (default 4)
  --max-ops K    operations per NB transaction at most (default 500)
  --remote R     an empty NB to use (unix:/path or tcp:host:port); default: start one";

fn args() -> Args {
    let mut a = Args {
        services: 10_000,
        backends: 20,
        subnets: 4,
        max_ops: 500,
        remote: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--services" => a.services = val().parse().expect("--services N"),
            "--backends" => a.backends = val().parse().expect("--backends M"),
            "--subnets" => a.subnets = val().parse().expect("--subnets S"),
            "--max-ops" => a.max_ops = val().parse().expect("--max-ops K"),
            "--remote" => a.remote = Some(val()),
            other => panic!("unknown argument {other}\n{USAGE}"),
        }
    }
    assert!((1..=200).contains(&a.subnets), "--subnets 1..=200");
    a
}

fn add(base: Ipv4Addr, n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + u32::try_from(n).unwrap())
}

/// One VPC `vpc1` with `subnets` /16s (10.64.0.0/16, 10.65.0.0/16, ...), `services`
/// ClusterIP services from 10.96.0.1 up, backend `j` of service `i` in subnet `j % subnets`.
fn state(a: &Args) -> NetworkState {
    let subnets: Vec<SubnetState> = (0..a.subnets)
        .map(|k| {
            let net = Ipv4Addr::new(10, 64 + u8::try_from(k).unwrap(), 0, 0);
            SubnetState {
                name: format!("vpc1-s{k}"),
                vpc: "vpc1".into(),
                cidr: format!("{net}/16").parse().unwrap(),
                gateway: add(net, 1),
            }
        })
        .collect();
    let per_subnet = a.backends.div_ceil(a.subnets);
    assert!(
        a.services * per_subnet + 2 < 65_534,
        "too many backends per subnet for a /16: use more --subnets"
    );
    let services = (0..a.services).map(|i| service(a, i, per_subnet)).collect();
    NetworkState {
        gateway_chassis: "ch1".into(),
        vpcs: vec!["vpc1".into()],
        subnets,
        services,
        ..Default::default()
    }
}

fn service(a: &Args, i: usize, per_subnet: usize) -> ServiceState {
    ServiceState {
        external_ips: vec![],
        kind: Default::default(),
        node_local: false,
        key: format!("bench/svc-{i}"),
        uid: format!("uid-{i}"),
        scope: ServiceScope::Vpc("vpc1".into()),
        cluster_ip: Some(add(Ipv4Addr::new(10, 96, 0, 1), i)),
        eip: None,
        ports: vec![ServicePort {
            node_port: None,
            port: 80,
            target_port: 8080,
            protocol: Protocol::Tcp,
        }],
        affinity_timeout: None,
        backends: (0..a.backends)
            .map(|j| {
                let k = j % a.subnets;
                let net = Ipv4Addr::new(10, 64 + u8::try_from(k).unwrap(), 0, 0);
                Backend {
                    node: None,
                    ip: add(net, 2 + i * per_subnet + j / a.subnets),
                    vpc: "vpc1".into(),
                }
            })
            .collect(),
    }
}

/// Bytes of the `transact` request as sent.
fn request_bytes(ops: &[Value]) -> usize {
    let mut params = vec![json!(nb::DATABASE)];
    params.extend(ops.iter().cloned());
    serde_json::to_vec(&json!({"id": 1, "method": "transact", "params": params}))
        .unwrap()
        .len()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[usize], p: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let a = args();
    let server = a.remote.is_none().then(NbServer::standalone);
    let remote = match (&a.remote, &server) {
        (Some(r), _) => r.clone(),
        (None, Some(s)) => s.unix_remote(),
        (None, None) => unreachable!(),
    };
    let client = Client::connect(nb::config([remote.clone()]))
        .await
        .expect("connect to the NB");
    assert!(
        client.with_mirror(|m| m.is_empty()),
        "the NB at {remote} is not empty"
    );
    // Request bytes of every transaction the applier sends, in order.
    let bytes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let applier = Applier::new(client.clone(), a.max_ops).before_send({
        let bytes = bytes.clone();
        Arc::new(move |ops| bytes.lock().unwrap().push(request_bytes(ops)))
    });
    let take_bytes = || std::mem::take(&mut *bytes.lock().unwrap());

    // From empty.
    let mut s = state(&a);
    let t = Instant::now();
    let d = Arc::new(build_desired(&s));
    let build_ms = ms(t.elapsed());
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let start = Instant::now();
    let applied = applier.ensure(d.clone()).await.expect("from empty");
    let total = start.elapsed();
    assert!(applied.converged, "not converged: {applied:?}");
    let sizes_in_order = take_bytes();
    let nb_rows = client.with_mirror(|m| m.len());
    let lbs = client.with_mirror(|m| m.table("Load_Balancer").map_or(0, |t| t.len()));
    assert_eq!(lbs, a.services, "load balancers in the NB");

    // Steady state: nothing to do, as every reconcile pass without a change sees it.
    let t = Instant::now();
    let cur = applier.current();
    let noop_read = t.elapsed();
    let t = Instant::now();
    let noop = diff(&d, &cur, a.max_ops);
    let noop_plan = t.elapsed();
    assert!(
        noop.is_empty(),
        "second plan not empty: {} ops",
        noop.op_count()
    );
    drop(cur);

    // One service loses one backend, with all N present: a full convergence.
    let victim = a.services / 2;
    s.services[victim].backends.pop();
    let change_start = Instant::now();
    let t = Instant::now();
    let d2 = Arc::new(build_desired(&s));
    let change_build = t.elapsed();
    let change = applier.ensure(d2.clone()).await.expect("the change");
    let change_total = change_start.elapsed();
    let change_bytes = take_bytes();
    assert!(change.converged);
    assert_eq!(change.transactions(), 1, "{change:?}");
    assert_eq!(change.ops(), 1, "one backend removed is one update");

    // Another backend, through the fast path the controller takes for a ClusterIP change.
    s.services[victim].backends.pop();
    let owners = BTreeSet::from([service_owner(&s.services[victim])]);
    let t = Instant::now();
    let fast = applier
        .ensure_services(std::slice::from_ref(&s.services[victim]), &owners)
        .await
        .expect("the fast path")
        .expect("the fast path applies to a ClusterIP service");
    let fast_total = t.elapsed();
    take_bytes();
    assert_eq!(fast.ops(), 1, "one backend removed is one update: {fast:?}");
    let after = applier
        .ensure(Arc::new(build_desired(&s)))
        .await
        .expect("check");
    assert_eq!(
        after.transactions(),
        0,
        "the fast path left work: {after:?}"
    );

    let mirror_bytes = client.with_mirror(|m| m.estimated_bytes());
    let me = std::process::id();
    let rss = rss_kib(me, "VmRSS:").unwrap_or(0);
    let hwm = rss_kib(me, "VmHWM:").unwrap_or(0);
    let server_rss = server
        .as_ref()
        .and_then(NbServer::pid)
        .and_then(|p| rss_kib(p, "VmRSS:"));

    let txns: Vec<(&Sent, usize)> = applied.sent().zip(sizes_in_order.iter().copied()).collect();
    let mut sizes = sizes_in_order.clone();
    sizes.sort_unstable();
    let ops: Vec<usize> = txns.iter().map(|(t, _)| t.ops).collect();
    let read_ms: f64 = applied.rounds.iter().map(|r| ms(r.read)).sum();
    let plan_ms: f64 = applied.rounds.iter().map(|r| ms(r.plan)).sum();
    let transact_ms: f64 = txns.iter().map(|(t, _)| ms(t.elapsed)).sum();
    let report = json!({
        "services": a.services,
        "backends": a.backends,
        "subnets": a.subnets,
        "max_ops_per_txn": a.max_ops,
        "desired_rows": d.rows.len(),
        "nb_rows": nb_rows,
        "from_empty": {
            "total_ms": ms(total),
            "build_desired_ms": build_ms,
            "mirror_read_ms": read_ms,
            "plan_ms": plan_ms,
            "transact_ms": transact_ms,
            "rounds": applied.rounds.iter().map(|r| json!({
                "read_ms": ms(r.read), "plan_ms": ms(r.plan),
                "transactions": r.transactions.len(),
            })).collect::<Vec<_>>(),
            "transactions": txns.len(),
            "ops": ops,
            "bytes_total": sizes.iter().sum::<usize>(),
            "bytes_min": sizes.first().copied().unwrap_or(0),
            "bytes_median": percentile(&sizes, 0.5),
            "bytes_max": sizes.last().copied().unwrap_or(0),
            "per_txn": txns.iter().map(|(t, b)| json!({
                "ops": t.ops, "bytes": b, "transact_ms": ms(t.elapsed),
            })).collect::<Vec<_>>(),
        },
        "noop": { "mirror_read_ms": ms(noop_read), "plan_ms": ms(noop_plan) },
        "one_service_change": {
            "total_ms": ms(change_total),
            "build_desired_ms": ms(change_build),
            "mirror_read_ms": change.rounds.iter().map(|r| ms(r.read)).sum::<f64>(),
            "plan_ms": change.rounds.iter().map(|r| ms(r.plan)).sum::<f64>(),
            "transact_ms": change.sent().map(|t| ms(t.elapsed)).sum::<f64>(),
            "ops": change.ops(),
            "bytes": change_bytes.iter().sum::<usize>(),
        },
        "one_service_change_fast_path": {
            "total_ms": ms(fast_total),
            "mirror_read_ms": fast.rounds.iter().map(|r| ms(r.read)).sum::<f64>(),
            "plan_ms": fast.rounds.iter().map(|r| ms(r.plan)).sum::<f64>(),
            "transact_ms": fast.sent().map(|t| ms(t.elapsed)).sum::<f64>(),
            "ops": fast.ops(),
        },
        "memory": {
            "mirror_estimated_bytes": mirror_bytes,
            "process_rss_kib": rss,
            "process_peak_rss_kib": hwm,
            "ovsdb_server_rss_kib": server_rss,
        },
    });

    let mib = |b: f64| b / 1048576.0;
    println!(
        "nb_scale: {} services x {} backends in {} subnets of one VPC, at most {} ops per transaction (ferry-nb's applier)",
        a.services, a.backends, a.subnets, a.max_ops,
    );
    println!("{:<44} {:>14}", "figure", "value");
    let row = |k: &str, v: String| println!("{k:<44} {v:>14}");
    row("desired rows", d.rows.len().to_string());
    row("rows in the NB (mirrored tables)", nb_rows.to_string());
    row("from empty: total", format!("{:.2} s", total.as_secs_f64()));
    row("  build_desired", format!("{build_ms:.1} ms"));
    row(
        "  mirror -> CurrentRow copies (sum)",
        format!("{read_ms:.1} ms"),
    );
    row("  plan (sum)", format!("{plan_ms:.1} ms"));
    row("  transact (sum)", format!("{transact_ms:.1} ms"));
    row(
        "  diffs / transactions",
        format!("{} / {}", applied.rounds.len(), txns.len()),
    );
    row(
        "  ops per transaction (max)",
        ops.iter().max().copied().unwrap_or(0).to_string(),
    );
    row(
        "  request bytes total",
        format!("{:.1} MiB", mib(sizes.iter().sum::<usize>() as f64)),
    );
    row(
        "  request bytes min / median / max",
        format!(
            "{} / {} / {}",
            sizes.first().copied().unwrap_or(0),
            percentile(&sizes, 0.5),
            sizes.last().copied().unwrap_or(0)
        ),
    );
    row(
        "no-op pass: mirror copy + plan",
        format!("{:.1} + {:.1} ms", ms(noop_read), ms(noop_plan)),
    );
    row(
        "one service change (full): total",
        format!("{:.1} ms", ms(change_total)),
    );
    row("  build_desired", format!("{:.1} ms", ms(change_build)));
    row(
        "  mirror copies + plans (2 diffs)",
        format!(
            "{:.1} + {:.1} ms",
            change.rounds.iter().map(|r| ms(r.read)).sum::<f64>(),
            change.rounds.iter().map(|r| ms(r.plan)).sum::<f64>()
        ),
    );
    row(
        "  transact",
        format!(
            "{:.1} ms",
            change.sent().map(|t| ms(t.elapsed)).sum::<f64>()
        ),
    );
    row(
        "one service change (fast path): total",
        format!("{:.1} ms", ms(fast_total)),
    );
    row(
        "mirror estimated_bytes",
        format!("{:.1} MiB", mib(mirror_bytes as f64)),
    );
    row(
        "process RSS (peak)",
        format!(
            "{:.1} ({:.1}) MiB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
    );
    if let Some(r) = server_rss {
        row("ovsdb-server RSS", format!("{:.1} MiB", r as f64 / 1024.0));
    }
    println!("{}", serde_json::to_string(&report).unwrap());
    client.shutdown();
}
