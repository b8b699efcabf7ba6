//! Programs N ClusterIP services x M backends (one VPC, backends spread over its subnets)
//! into a fresh, real NB through the controller's path: `build_desired`, then `plan` from
//! `ferry-ovsdb`'s mirror and `transact`, until the plan is empty. Then one service loses
//! a backend and that change is timed the same way. Prints a table and one JSON object.
//!
//! ```text
//! cargo run --release -p ferry-net --example nb_scale -- --services 10000 --backends 20
//!     [--subnets 4] [--max-ops 500] [--remote unix:/path/nb.sock] [--whole-plan]
//! ```
//!
//! By default every transaction is planned afresh from the mirror, as the controller's loop
//! does (`plan` returns the first transaction of a full `diff`). With `--whole-plan` the
//! initial programming computes `diff` once and sends its transactions in order (their
//! inserts carry deterministic uuids, so later ones can reference earlier ones' rows).
//!
//! Without `--remote` it starts its own `ovsdb-server` (OVN NB schema) in a temp dir and
//! kills it (by pid) at the end. `--max-ops` bounds the operations per transaction: a new
//! ClusterIP service is one `Load_Balancer` insert, so it is also the LBs per transaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_net::{
    Backend, CurrentRow, Desired, NetworkState, Protocol, ServicePort, ServiceScope, ServiceState,
    SubnetState, build_desired, plan,
};
use ferry_ovsdb::{Client, nb};
use serde_json::{Value, json};

struct Args {
    services: usize,
    backends: usize,
    subnets: usize,
    max_ops: usize,
    remote: Option<String>,
    whole_plan: bool,
}

fn args() -> Args {
    let mut a = Args {
        services: 10_000,
        backends: 20,
        subnets: 4,
        max_ops: 500,
        remote: None,
        whole_plan: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--whole-plan" {
            a.whole_plan = true;
            continue;
        }
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--services" => a.services = val().parse().expect("--services N"),
            "--backends" => a.backends = val().parse().expect("--backends M"),
            "--subnets" => a.subnets = val().parse().expect("--subnets S"),
            "--max-ops" => a.max_ops = val().parse().expect("--max-ops K"),
            "--remote" => a.remote = Some(val()),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!((1..=200).contains(&a.subnets), "--subnets 1..=200");
    a
}

/// An NB ovsdb-server of our own, killed by pid when dropped.
struct OwnServer {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> (OwnServer, String) {
    let dir = tempfile::Builder::new()
        .prefix("ferry-nb-scale")
        .tempdir()
        .unwrap();
    let db = dir.path().join("nb.db");
    let ok = Command::new("ovsdb-tool")
        .arg("create")
        .arg(&db)
        .arg("/usr/share/ovn/ovn-nb.ovsschema")
        .status()
        .expect("ovsdb-tool (install openvswitch-common)")
        .success();
    assert!(ok, "ovsdb-tool create failed");
    let sock = dir.path().join("nb.sock");
    let child = Command::new("ovsdb-server")
        .arg(&db)
        .arg(format!("--remote=punix:{}", sock.display()))
        .arg(format!("--unixctl={}", dir.path().join("nb.ctl").display()))
        .arg(format!(
            "--log-file={}",
            dir.path().join("nb.log").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ovsdb-server (install openvswitch-switch)");
    let server = OwnServer { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "ovsdb-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, format!("unix:{}", sock.display()))
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
        nodes: vec![],
        gateway_chassis: "ch1".into(),
        transit_cidr: None,
        vpcs: vec!["vpc1".into()],
        subnets,
        ports: Vec::new(),
        external: None,
        services,
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

/// The mirror as `CurrentRow`s, as `ferry-controller`'s `network.rs` builds them.
fn current(client: &Client) -> Vec<CurrentRow> {
    client.with_mirror(|m| {
        let mut rows = Vec::new();
        for t in nb::TABLES {
            for (uuid, cols) in m.table(t.name).into_iter().flatten() {
                rows.push(CurrentRow {
                    table: t.name.to_string(),
                    uuid: uuid.clone(),
                    columns: cols.clone(),
                });
            }
        }
        rows
    })
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

#[derive(Default)]
struct Txn {
    ops: usize,
    bytes: usize,
    read_ms: f64,
    plan_ms: f64,
    transact_ms: f64,
}

/// One pass of the controller's loop: copy the mirror, plan, send; `None` when converged.
async fn step(client: &Client, d: &Desired, max_ops: usize) -> Option<Txn> {
    let t = Instant::now();
    let cur = current(client);
    let read = t.elapsed();
    let t = Instant::now();
    let ops = plan(d, &cur, max_ops);
    let planned = t.elapsed();
    drop(cur);
    if ops.is_empty() {
        return None;
    }
    let (n, bytes) = (ops.len(), request_bytes(&ops));
    let t = Instant::now();
    client
        .transact(nb::DATABASE, ops)
        .await
        .expect("transaction refused");
    Some(Txn {
        ops: n,
        bytes,
        read_ms: ms(read),
        plan_ms: ms(planned),
        transact_ms: ms(t.elapsed()),
    })
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
    let (server, remote) = match &a.remote {
        Some(r) => (None, r.clone()),
        None => {
            let (s, r) = start_server();
            (Some(s), r)
        }
    };
    let client = Client::connect(nb::config([remote.clone()]))
        .await
        .expect("connect to the NB");
    assert!(
        client.with_mirror(|m| m.is_empty()),
        "the NB at {remote} is not empty"
    );

    // From empty.
    let mut s = state(&a);
    let t = Instant::now();
    let d = build_desired(&s);
    let build_ms = ms(t.elapsed());
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let start = Instant::now();
    let mut txns = Vec::new();
    if a.whole_plan {
        let t = Instant::now();
        let cur = current(&client);
        let read = t.elapsed();
        let t = Instant::now();
        let whole = ferry_net::diff(&d, &cur, a.max_ops);
        let planned = t.elapsed();
        drop(cur);
        for (i, ops) in whole.transactions.into_iter().enumerate() {
            let (n, bytes) = (ops.len(), request_bytes(&ops));
            let t = Instant::now();
            client
                .transact(nb::DATABASE, ops)
                .await
                .expect("transaction refused");
            txns.push(Txn {
                ops: n,
                bytes,
                read_ms: if i == 0 { ms(read) } else { 0.0 },
                plan_ms: if i == 0 { ms(planned) } else { 0.0 },
                transact_ms: ms(t.elapsed()),
            });
        }
    }
    while let Some(t) = step(&client, &d, a.max_ops).await {
        assert!(!a.whole_plan, "the whole plan left something to do");
        txns.push(t);
    }
    let total = start.elapsed();
    let nb_rows = client.with_mirror(|m| m.len());
    let lbs = client.with_mirror(|m| m.table("Load_Balancer").map_or(0, |t| t.len()));
    assert_eq!(lbs, a.services, "load balancers in the NB");

    // Steady state: nothing to do, as every reconcile pass without a change sees it.
    let t = Instant::now();
    let cur = current(&client);
    let noop_read = t.elapsed();
    let t = Instant::now();
    let noop = plan(&d, &cur, a.max_ops);
    let noop_plan = t.elapsed();
    assert!(noop.is_empty(), "second plan not empty: {} ops", noop.len());
    drop(cur);

    // One service loses one backend, with all N present.
    let victim = a.services / 2;
    s.services[victim].backends.pop();
    let change_start = Instant::now();
    let t = Instant::now();
    let d2 = build_desired(&s);
    let change_build = t.elapsed();
    let change = step(&client, &d2, a.max_ops)
        .await
        .expect("the change plans something");
    let change_total = change_start.elapsed();
    assert_eq!(change.ops, 1, "one backend removed is one update");
    assert!(step(&client, &d2, a.max_ops).await.is_none(), "converged");
    // Plan only, timed again now that the mirror holds the change (nothing to do).
    let cur = current(&client);
    let t = Instant::now();
    let _ = plan(&d2, &cur, a.max_ops);
    let plan_only_noop = t.elapsed();
    drop(cur);

    let mirror_bytes = client.with_mirror(|m| m.estimated_bytes());
    let me = std::process::id();
    let rss = rss_kib(me, "VmRSS:").unwrap_or(0);
    let hwm = rss_kib(me, "VmHWM:").unwrap_or(0);
    let server_rss = server
        .as_ref()
        .and_then(|s| rss_kib(s.child.id(), "VmRSS:"));

    let mut sizes: Vec<usize> = txns.iter().map(|t| t.bytes).collect();
    sizes.sort_unstable();
    let ops: Vec<usize> = txns.iter().map(|t| t.ops).collect();
    let sum = |f: fn(&Txn) -> f64| txns.iter().map(f).sum::<f64>();
    let report = json!({
        "services": a.services,
        "backends": a.backends,
        "subnets": a.subnets,
        "max_ops_per_txn": a.max_ops,
        "whole_plan": a.whole_plan,
        "desired_rows": d.rows.len(),
        "nb_rows": nb_rows,
        "from_empty": {
            "total_ms": ms(total),
            "build_desired_ms": build_ms,
            "mirror_read_ms": sum(|t| t.read_ms),
            "plan_ms": sum(|t| t.plan_ms),
            "transact_ms": sum(|t| t.transact_ms),
            "first_plan_ms": txns.first().map_or(0.0, |t| t.plan_ms),
            "last_plan_ms": txns.last().map_or(0.0, |t| t.plan_ms),
            "transactions": txns.len(),
            "ops": ops,
            "bytes_total": sizes.iter().sum::<usize>(),
            "bytes_min": sizes.first().copied().unwrap_or(0),
            "bytes_median": percentile(&sizes, 0.5),
            "bytes_max": sizes.last().copied().unwrap_or(0),
            "per_txn": txns.iter().map(|t| json!({
                "ops": t.ops, "bytes": t.bytes, "read_ms": t.read_ms,
                "plan_ms": t.plan_ms, "transact_ms": t.transact_ms,
            })).collect::<Vec<_>>(),
        },
        "noop": { "mirror_read_ms": ms(noop_read), "plan_ms": ms(noop_plan) },
        "one_service_change": {
            "total_ms": ms(change_total),
            "build_desired_ms": ms(change_build),
            "mirror_read_ms": change.read_ms,
            "plan_ms": change.plan_ms,
            "transact_ms": change.transact_ms,
            "ops": change.ops,
            "bytes": change.bytes,
            "plan_only_noop_ms": ms(plan_only_noop),
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
        "nb_scale: {} services x {} backends in {} subnets of one VPC, at most {} ops per transaction, {}",
        a.services,
        a.backends,
        a.subnets,
        a.max_ops,
        if a.whole_plan {
            "one whole plan sent in order"
        } else {
            "re-planned from the mirror before every transaction"
        }
    );
    println!("{:<44} {:>14}", "figure", "value");
    let row = |k: &str, v: String| println!("{k:<44} {v:>14}");
    row("desired rows", d.rows.len().to_string());
    row("rows in the NB (mirrored tables)", nb_rows.to_string());
    row("from empty: total", format!("{:.2} s", total.as_secs_f64()));
    row("  build_desired", format!("{build_ms:.1} ms"));
    row(
        "  mirror -> CurrentRow copies (sum)",
        format!("{:.1} ms", sum(|t| t.read_ms)),
    );
    row("  plan (sum)", format!("{:.1} ms", sum(|t| t.plan_ms)));
    row(
        "  transact (sum)",
        format!("{:.1} ms", sum(|t| t.transact_ms)),
    );
    row("  transactions", txns.len().to_string());
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
        "one service change: total",
        format!("{:.1} ms", ms(change_total)),
    );
    row("  build_desired", format!("{:.1} ms", ms(change_build)));
    row("  mirror copy", format!("{:.1} ms", change.read_ms));
    row("  plan", format!("{:.1} ms", change.plan_ms));
    row("  transact", format!("{:.1} ms", change.transact_ms));
    row(
        "  ops / request bytes",
        format!("{} / {}", change.ops, change.bytes),
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
