//! The API server alone, with Ferry's CRDs installed: what `ferry apiserver` runs, without
//! the rest of the `ferry` CLI. Integration tests (which may only name binaries of their own
//! package) and benchmarks spawn it as a real process, to `kill -9` it.
//!
//! Usage: `ferry-apiserver --data-dir DIR [--listen 127.0.0.1:6443] [--service-cidr CIDR]`. Prints one line,
//! `serving https://ADDR`, once the kubeconfig is written and requests are served; stops on
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut data_dir = None;
    let mut listen = "127.0.0.1:6443".to_string();
    let mut services = ferry_apiserver::ServiceNetwork::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data-dir" => data_dir = args.next().map(PathBuf::from),
            "--listen" => listen = args.next().context("--listen needs an address")?,
            "--service-cidr" => {
                let c = args.next().context("--service-cidr needs a CIDR")?;
                services.cidr = c
                    .parse()
                    .with_context(|| format!("--service-cidr {c:?} is not an IPv4 CIDR"))?;
            }
            "-h" | "--help" => {
                println!(
                    "usage: ferry-apiserver --data-dir DIR [--listen ADDR] [--service-cidr CIDR]"
                );
                return Ok(());
            }
            other => bail!(
                "unknown argument {other:?}; usage: ferry-apiserver --data-dir DIR [--listen ADDR] [--service-cidr CIDR]"
            ),
        }
    }
    let data_dir = data_dir.context("--data-dir DIR is required")?;
    let listen = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not an address"))?;
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async move {
        let server = ferry_apiserver::ApiServer::start(ferry_apiserver::Config {
            data_dir,
            listen,
            limits: Default::default(),
            services,
        })
        .await
        .context("starting the API server")?;
        let crds: Vec<serde_json::Value> = ferry_api::all_crds()
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?;
        server
            .install_crds(&crds)
            .await
            .context("installing Ferry's CRDs")?;
        println!("serving https://{}", server.addr);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        server.shutdown().await;
        anyhow::Ok(())
    })
}
