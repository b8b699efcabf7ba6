//! The `ferry` command line: one binary for every role (API server, controllers, agent, lab, benchmarks).

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "ferry", version, about = "VPC-aware Kubernetes Services on OVN")]
enum Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
