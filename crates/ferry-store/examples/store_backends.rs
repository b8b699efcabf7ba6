//! The embedded store beside an etcd cluster, as the API server uses them: one writer's
//! create latency, write -> watch latency seen through a second handle (what a second API
//! server sees), and acknowledged writes per second with 64 writers. Figures, not assertions.
//!
//! `cargo run -p ferry-store --example store_backends [-- MEMBERS WRITES]`: starts a real etcd
//! cluster of MEMBERS (default 3) with Debian's `etcd-server` in a temp dir, and the embedded
//! store in a temp dir under the current one (the same disk as the workspace).

#![allow(clippy::unwrap_used)] // a bench: a panic is the report

use std::time::{Duration, Instant};

use ferry_store::{Backend, Store, StoreOptions};
use ferry_testkit::etcd::EtcdCluster;

const VALUE_BYTES: usize = 2048;
const RUN: Duration = Duration::from_secs(3);

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn measure(name: &str, a: Store, b: Store, writes: usize) {
    let value = vec![b'x'; VALUE_BYTES];
    // Create latency, one writer.
    let mut create = Vec::new();
    for i in 0..writes {
        let t = Instant::now();
        a.create(format!("/registry/lat/{i}"), value.clone())
            .await
            .unwrap();
        create.push(t.elapsed());
    }
    // Write through A -> event in B's watch.
    let mut w = b
        .watch("/registry/seen/", a.current_revision())
        .await
        .unwrap();
    let mut seen = Vec::new();
    for i in 0..writes {
        let t = Instant::now();
        a.create(format!("/registry/seen/{i}"), value.clone())
            .await
            .unwrap();
        w.recv().await.unwrap().unwrap();
        seen.push(t.elapsed());
    }
    // Throughput, 64 writers.
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|k| {
            let a = a.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < RUN {
                    a.create(format!("/registry/tp/{k}/{n}"), value.clone())
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    let (mut listed, t) = (0, Instant::now());
    if let Ok((kvs, _)) = b.list("/registry/").await {
        listed = kvs.len();
    }
    let list_ms = t.elapsed().as_secs_f64() * 1000.0;
    create.sort();
    seen.sort();
    println!(
        "| {name} | {:.2} / {:.2} | {:.2} / {:.2} | {rate:.0} | {listed} keys in {list_ms:.0} ms |",
        pct(&create, 0.5),
        pct(&create, 0.99),
        pct(&seen, 0.5),
        pct(&seen, 0.99),
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let members: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let writes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    println!(
        "| store | create p50 / p99 ms | write -> other handle's watch p50 / p99 ms | creates/s, 64 writers | list all |"
    );
    println!("|---|---|---|---|---|");
    let dir = tempfile::tempdir_in(".").unwrap();
    let embedded = Store::open(dir.path().join("bench.redb"), StoreOptions::default()).unwrap();
    measure("embedded (redb)", embedded.clone(), embedded, writes).await;

    let cluster = EtcdCluster::start(members);
    let Backend::Etcd(config) = cluster.url("/bench").parse::<Backend>().unwrap() else {
        unreachable!()
    };
    let a = Store::connect_etcd(config.clone(), StoreOptions::default())
        .await
        .unwrap();
    let b = Store::connect_etcd(config, StoreOptions::default())
        .await
        .unwrap();
    measure(&format!("etcd 3.4, {members} members"), a, b, writes).await;
}
