//! Inserts N Load_Balancer rows (20 backends each) into a real, empty NB database in
//! bounded transactions, through a client that mirrors the NB tables Ferry uses, and prints
//! time, transaction sizes and the mirror's memory estimate.
//!
//! `cargo run --release -p ferry-ovsdb --example nb_bench -- [ROWS] [ROWS_PER_TXN] [REMOTE]`
//! Without REMOTE it starts its own ovsdb-server (`ferry_testkit::ovsdb::NbServer`; needs
//! OVN installed) in a temp dir.

use std::time::Instant;

use anyhow::bail;
use ferry_ovsdb::nb::{self, load_balancer as lb};
use ferry_ovsdb::{Client, wire};
use ferry_testkit::ovsdb::NbServer;
use serde_json::{Value, json};

const BACKENDS: usize = 20;

fn load_balancer(i: usize) -> Value {
    let vip = format!("10.96.{}.{}:80", i / 250, i % 250 + 1);
    let backends: Vec<String> = (0..BACKENDS)
        .map(|b| format!("10.{}.{}.{}:8080", 16 + i % 8, (i / 8) % 250, b + 1))
        .collect();
    wire::insert(
        lb::TABLE,
        wire::row([
            (lb::NAME, json!(format!("ferry-svc-{i}-tcp"))),
            (lb::PROTOCOL, json!("tcp")),
            (lb::VIPS, wire::map([(vip, backends.join(","))])),
            (lb::OPTIONS, wire::map([("reject", "true")])),
            (
                lb::EXTERNAL_IDS,
                wire::map([("ferry.io/owner", format!("YusurService/default/svc-{i}"))]),
            ),
        ]),
    )
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows: usize = args.first().map_or(Ok(10_000), |a| a.parse())?;
    let per_txn: usize = args.get(1).map_or(Ok(500), |a| a.parse())?;
    let (server, remote) = match args.get(2) {
        Some(r) => (None, r.clone()),
        None => {
            let s = NbServer::standalone();
            let r = s.unix_remote();
            (Some(s), r)
        }
    };

    let client = Client::connect(nb::config([remote.clone()])).await?;
    let before = client.with_mirror(|m| m.len());
    println!(
        "remote {remote}: {rows} Load_Balancer rows x {BACKENDS} backends, {per_txn} rows per transaction (mirror starts with {before} rows)"
    );

    let mut sizes = Vec::new();
    let mut latencies = Vec::new();
    let start = Instant::now();
    for chunk_start in (0..rows).step_by(per_txn) {
        let ops: Vec<Value> = (chunk_start..(chunk_start + per_txn).min(rows))
            .map(load_balancer)
            .collect();
        let mut params = vec![json!(nb::DATABASE)];
        params.extend(ops.iter().cloned());
        sizes.push(
            serde_json::to_vec(&json!({"id": 0, "method": "transact", "params": params}))?.len(),
        );
        let t = Instant::now();
        client.transact(nb::DATABASE, ops).await?;
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    let mirrored = client.with_mirror(|m| m.table(lb::TABLE).map_or(0, |t| t.len()));
    if mirrored < rows {
        bail!("mirror has {mirrored} Load_Balancer rows after the last transact, want {rows}");
    }
    let est = client.with_mirror(|m| m.estimated_bytes());

    let total: usize = sizes.iter().sum();
    let max_lat = latencies.iter().max().copied().unwrap_or_default();
    println!(
        "inserted {rows} rows in {:.2} s ({:.0} rows/s), {} transactions",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        sizes.len()
    );
    println!(
        "transaction size: avg {} bytes, max {} bytes, total {:.1} MiB; per-transaction latency avg {:.0} ms, max {:.0} ms",
        total / sizes.len().max(1),
        sizes.iter().max().copied().unwrap_or(0),
        total as f64 / 1048576.0,
        elapsed.as_secs_f64() * 1000.0 / sizes.len().max(1) as f64,
        max_lat.as_secs_f64() * 1000.0
    );
    println!(
        "mirror: {mirrored} Load_Balancer rows present when the last transact returned; estimated {:.1} MiB ({} bytes/row)",
        est as f64 / 1048576.0,
        est / mirrored.max(1)
    );
    if let Some(rss) = vm_rss_kib(std::process::id()) {
        println!("client process RSS: {:.1} MiB", rss as f64 / 1024.0);
    }
    if let Some(s) = &server
        && let Some(rss) = s.pid().and_then(vm_rss_kib)
    {
        println!("ovsdb-server RSS: {:.1} MiB", rss as f64 / 1024.0);
    }

    // A fresh client's initial snapshot of the same data.
    let t = Instant::now();
    let fresh = Client::connect(nb::config([remote])).await?;
    println!(
        "fresh client: initial monitor snapshot of {} rows in {:.2} s",
        fresh.with_mirror(|m| m.len()),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
