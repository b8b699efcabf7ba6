//! `cargo run -p ferry-federation --example bench_federation -- CLUSTERS SERVICES`: the
//! federation bench without building the whole `ferry` binary.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let opts = ferry_federation::bench::BenchOptions {
        clusters: args.first().copied().unwrap_or(3),
        services: args.get(1).copied().unwrap_or(100),
        concurrency: 32,
        samples: args.get(2).copied().unwrap_or(20),
        out: None,
        timeout: std::time::Duration::from_secs(600),
    };
    let r = ferry_federation::bench::run(&opts).await?;
    ferry_federation::bench::print(&r);
    Ok(())
}
