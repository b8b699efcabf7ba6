//! Runs the data-plane benchmark without the `ferry` CLI (which wires the same options):
//!
//! ```text
//! cargo run --release -p ferry-bench --example dataplane -- [--services N] [--out FILE]
//!     [--ovs-port-type system|afxdp|afxdp-nonpmd] [--duration S] [--rounds R]
//!     [--paths direct,iptables,nftables,ovn-direct,ferry-ovn] [--filler-backends K]
//!     [--iptables-restore iptables-legacy-restore]
//! ```

use anyhow::{Context, bail};
use ferry_bench::dataplane::{BenchPath, DataplaneOptions, parse_port_type, run};

fn main() -> anyhow::Result<()> {
    tracing_subscriber_init();
    let mut opts = DataplaneOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--services" => opts.services = value()?.parse()?,
            "--out" => opts.out = Some(value()?.into()),
            "--ovs-port-type" => opts.ovs_port_type = parse_port_type(&value()?)?,
            "--duration" => opts.duration_s = value()?.parse()?,
            "--rounds" => opts.rounds = value()?.parse()?,
            "--filler-backends" => opts.filler_backends = value()?.parse()?,
            "--iptables-restore" => opts.iptables_restore = value()?,
            "--paths" => {
                opts.paths = value()?
                    .split(',')
                    .map(BenchPath::parse)
                    .collect::<Result<_, _>>()?
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let rows = run(&opts)?;
    if opts.out.is_none() {
        println!("{}", ferry_bench::dataplane::to_json(&rows));
    }
    Ok(())
}

/// Progress on stderr (`RUST_LOG` overrides the `info` default).
fn tracing_subscriber_init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
