//! `cargo run -p ferry-federation --example bench_federation -- CLUSTERS SERVICES [SAMPLES
//! [etcd]]`: the federation bench without building the whole `ferry` binary; with `etcd`,
//! the federation API server runs on a real 3-member etcd cluster started for the run
//! (Debian's `etcd-server`).

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
    let etcd = std::env::args()
        .any(|a| a == "etcd")
        .then(|| ferry_testkit::etcd::EtcdCluster::start(3));
    let store: ferry_apiserver::StoreBackend = match &etcd {
        Some(cluster) => cluster.url("/bench").parse()?,
        None => ferry_apiserver::StoreBackend::Embedded,
    };
    let r = ferry_federation::bench::run_on(&opts, &store).await?;
    ferry_federation::bench::print(&r);
    Ok(())
}
