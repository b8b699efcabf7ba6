//! Prints acknowledged (durable) writes per second with 1 and 64 concurrent writers.
//!
//! `cargo run -p ferry-store --release --example store_bench [-- <dir>]`. The database goes in
//! `<dir>` (default: a temporary directory under the current one, so it is on the same disk as
//! the workspace rather than a tmpfs that would make fsync free). Figures, not assertions.

use std::time::{Duration, Instant};

use ferry_store::{Store, StoreOptions};

const RUN: Duration = Duration::from_secs(3);
const VALUE_BYTES: usize = 512;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    for writers in [1usize, 64] {
        let dir = tempfile::tempdir_in(&base)?;
        let store = Store::open(dir.path().join("bench.redb"), StoreOptions::default())?;
        let start = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let value = vec![b'x'; VALUE_BYTES];
                    let mut latencies = Vec::new();
                    let mut i = 0u64;
                    while start.elapsed() < RUN {
                        let t = Instant::now();
                        store
                            .create(format!("/registry/bench/ns/w{w}-{i}"), value.clone())
                            .await?;
                        latencies.push(t.elapsed());
                        i += 1;
                    }
                    anyhow::Ok(latencies)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await??);
        }
        let elapsed = start.elapsed().as_secs_f64();
        latencies.sort();
        let pct = |p: f64| {
            let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
            latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let writes = latencies.len();
        let per_sec = writes as f64 / elapsed;
        println!(
            "{}",
            serde_json::json!({
                "bench": "store_ack_writes",
                "writers": writers,
                "value_bytes": VALUE_BYTES,
                "writes": writes,
                "seconds": elapsed,
                "writes_per_sec": per_sec.round(),
                "latency_ms_p50": pct(0.5),
                "latency_ms_p99": pct(0.99),
            })
        );
        println!(
            "{writers:>3} writer(s): {per_sec:>9.0} acknowledged writes/s ({writes} in {elapsed:.1}s), latency p50 {:.2} ms, p99 {:.2} ms",
            pct(0.5),
            pct(0.99)
        );
        store.close().await?;
    }
    Ok(())
}
