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
    /// The external network EIPs are reached from, e.g. `198.18.0.0/24`.
    #[arg(long, env = "FERRY_EXTERNAL_CIDR")]
    external_cidr: Option<ipnet::Ipv4Net>,
    /// The gateway (`eip-gateway`'s address) on the external network, e.g. `198.18.0.1`.
    #[arg(long, env = "FERRY_EXTERNAL_GATEWAY")]
    external_gateway: Option<std::net::Ipv4Addr>,
    /// The OVS chassis (`system-id`) that hosts gateway routers and gateway ports.
    #[arg(long, env = "FERRY_GATEWAY_CHASSIS", default_value = "ferry-ch1")]
    gateway_chassis: String,
}

#[derive(Args, Debug)]
struct ControllerArgs {
    /// Kubeconfig of the API server to control (in-cluster config when absent).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// OVN Northbound remotes to program (comma separated; several for a RAFT cluster).
    /// Without it only the service controller runs.
    #[arg(long, env = "FERRY_OVN_NB")]
    ovn_nb: Option<String>,
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

fn controller_config(network: &NetworkArgs, identity: Option<String>, ovn_nb: Option<Vec<String>>) -> anyhow::Result<ferry_controller::ControllerConfig> {
    let external = match (network.external_cidr, network.external_gateway) {
        (Some(cidr), Some(gateway)) => Some(ferry_controller::network::ExternalConfig { cidr, gateway }),
        (None, None) => None,
        _ => anyhow::bail!("--external-cidr and --external-gateway go together"),
    };
    let mut config = ferry_controller::ControllerConfig {
        service_cidr: network.service_cidr.clone(),
        eip_pool: network.eip_pool.clone(),
        network: ovn_nb.map(|remotes| ferry_controller::network::NetworkConfig {
            remotes,
            gateway_chassis: network.gateway_chassis.clone(),
            external,
            max_lb_per_txn: 500,
        }),
        ..Default::default()
    };
    if let Some(id) = identity {
        config.identity = id;
    }
    Ok(config)
}

fn remotes(s: &str) -> Vec<String> {
    s.split(',').map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect()
}

async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let config = controller_config(&args.network, args.identity, args.ovn_nb.as_deref().map(remotes))?;
    let task = tokio::spawn(ferry_controller::run(client, config, rx));
    shutdown_signal().await;
    let _ = tx.send(true);
    task.await.context("controller task")??;
    Ok(())
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    // OVN: the NB named by --ovn-nb, or a private OVN/OVS stack under DIR/ovn.
    let mut stack = None;
    let ovn_nb = match (&args.ovn_nb, args.no_dataplane) {
        (_, true) => None,
        (Some(nb), false) => Some(remotes(nb)),
        (None, false) => {
            let opts = ferry_lab::OvnOptions::new(args.network.gateway_chassis.clone());
            let dir = args.server.data_dir.join("ovn");
            let s = tokio::task::spawn_blocking(move || ferry_lab::OvnStack::start(&dir, opts))
                .await?
                .context("starting OVN (use --ovn-nb to program an existing NB, or --no-dataplane)")?;
            let nb = s.nb_remote();
            eprintln!("ferry: OVN started (NB {nb})");
            stack = Some(s);
            Some(vec![nb])
        }
    };
    if !args.no_agent {
        tracing::warn!("the node agent is not built yet: probes are not run");
    }
    let server = start_apiserver(&args.server, true).await?;
    let client = kube_client(Some(&args.server.data_dir.join("kubeconfig-controller"))).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let config = controller_config(&args.network, Some("ferry-up".into()), ovn_nb)?;
    let task = tokio::spawn(ferry_controller::run(client, config, rx));
    shutdown_signal().await;
    eprintln!("ferry: shutting down");
    let _ = tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    server.shutdown().await;
    if let Some(s) = stack {
        tokio::task::spawn_blocking(move || s.stop()).await?.context("stopping OVN")?;
    }
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
