//! The `ferry` command line: one binary for every role (API server, controllers, agent, lab,
//! benchmarks). Each subcommand is a thin shell over the crate that owns the role.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ferry",
    version,
    about = "VPC-aware Kubernetes Services on OVN"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Single-machine control plane in the foreground: API server, controllers, node agent.
    Up(UpArgs),
    /// The API server alone.
    Apiserver(ServerArgs),
    /// The controllers alone, against any Kubernetes API server (run several for HA).
    Controller(ControllerArgs),
    /// Write the CRD manifests of every Ferry resource into a directory.
    Crds {
        /// Directory to write `<plural>.<group>.yaml` files into.
        #[arg(long, default_value = "deploy/crds")]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Where the store, PKI, tokens and kubeconfigs live; kept across restarts.
    #[arg(long, env = "FERRY_DATA_DIR")]
    data_dir: PathBuf,
    /// Address the HTTPS API listens on.
    #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
}

#[derive(Args, Debug, Clone)]
struct NetworkArgs {
    /// ClusterIPs are allocated from this CIDR.
    #[arg(long, env = "FERRY_SERVICE_CIDR", default_value = "10.96.0.0/16")]
    service_cidr: String,
    /// EIPs for LoadBalancer services, e.g. `198.18.0.100-198.18.0.199`.
    #[arg(long, env = "FERRY_EIP_POOL")]
    eip_pool: Option<String>,
}

#[derive(Args, Debug)]
struct ControllerArgs {
    /// Kubeconfig of the API server to control (in-cluster config when absent).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Name of this replica in the leader Lease (default: controller-<pid>).
    #[arg(long, env = "FERRY_IDENTITY")]
    identity: Option<String>,
    #[command(flatten)]
    network: NetworkArgs,
}

#[derive(Args, Debug)]
struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Program this existing OVN Northbound database (e.g. `unix:/path/nb.sock`).
    #[arg(long, env = "FERRY_OVN_NB")]
    ovn_nb: Option<String>,
    /// Run no network controller (nothing is programmed into OVN).
    #[arg(long)]
    no_dataplane: bool,
    /// Run no node agent (probes are left to agents elsewhere).
    #[arg(long)]
    no_agent: bool,
    #[command(flatten)]
    network: NetworkArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Crds { out } => write_crds(&out),
        Command::Apiserver(args) => runtime()?.block_on(apiserver(args, false)),
        Command::Up(args) => runtime()?.block_on(up(args)),
        Command::Controller(args) => runtime()?.block_on(controller(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn write_crds(out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (file, text) in ferry_api::crd_manifests() {
        let path = out.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

async fn start_apiserver(
    args: &ServerArgs,
    install_crds: bool,
) -> anyhow::Result<ferry_apiserver::ApiServer> {
    let config = ferry_apiserver::Config {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        limits: Default::default(),
    };
    let server = ferry_apiserver::ApiServer::start(config)
        .await
        .context("starting the API server")?;
    if install_crds {
        let crds: Vec<serde_json::Value> = ferry_api::all_crds()
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?;
        server
            .install_crds(&crds)
            .await
            .context("installing Ferry's CRDs")?;
    }
    eprintln!(
        "ferry: API server on https://{}  (kubeconfig: {})",
        server.addr,
        server.kubeconfig.display()
    );
    Ok(server)
}

async fn apiserver(args: ServerArgs, install_crds: bool) -> anyhow::Result<()> {
    let server = start_apiserver(&args, install_crds).await?;
    shutdown_signal().await;
    eprintln!("ferry: shutting down");
    server.shutdown().await;
    Ok(())
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig given and no in-cluster configuration found")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

fn controller_config(
    network: &NetworkArgs,
    identity: Option<String>,
) -> ferry_controller::ControllerConfig {
    let mut config = ferry_controller::ControllerConfig {
        service_cidr: network.service_cidr.clone(),
        eip_pool: network.eip_pool.clone(),
        ..Default::default()
    };
    if let Some(id) = identity {
        config.identity = id;
    }
    config
}

async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(ferry_controller::run(
        client,
        controller_config(&args.network, args.identity),
        rx,
    ));
    shutdown_signal().await;
    let _ = tx.send(true);
    task.await.context("controller task")??;
    Ok(())
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    if !args.no_dataplane && args.ovn_nb.is_some() {
        tracing::warn!(
            "the network controller is not built yet: --ovn-nb is accepted but nothing is programmed"
        );
    }
    if !args.no_agent {
        tracing::warn!("the node agent is not built yet: probes are not run");
    }
    let server = start_apiserver(&args.server, true).await?;
    let client = kube_client(Some(&args.server.data_dir.join("kubeconfig-controller"))).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(ferry_controller::run(
        client,
        controller_config(&args.network, Some("ferry-up".into())),
        rx,
    ));
    shutdown_signal().await;
    eprintln!("ferry: shutting down");
    let _ = tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
