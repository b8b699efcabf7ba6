//! The `ferry` command line: one binary for every role (API server, controllers, agent, lab,
//! benchmarks). Each subcommand is a thin shell over the crate that owns the role.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

mod up_roles;

/// mimalloc, not glibc's malloc: profiles of the API server and the leader at 10,000
/// services x 20 backends on 10,000 nodes spent ~40% of their CPU in glibc's allocator
/// (`_int_malloc`, `free`, `unlink_chunk`, `malloc_consolidate`); docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Apiserver(ApiserverArgs),
    /// The controllers alone, against any Kubernetes API server (run several for HA).
    Controller(ControllerArgs),
    /// The node agent: probes, node interface, and (with --lab) the lab node runtime.
    Agent(AgentArgs),
    /// A node's share of the cluster DNS as a process of its own (so a restarting agent
    /// does not take it down): answers in every VPC on the node's probe port there (the
    /// agent runs with --external-dns then).
    Dns(DnsNodeArgs),
    /// The one-machine lab: real OVN, real packets, the four scenarios.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Benchmarks that print figures (a table and JSON).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The CNI plugin (CNI 1.0 ADD/DEL/CHECK/VERSION): reads CNI_* and the network config
    /// on stdin; install as /opt/cni/bin/ferry (a symlink to this binary with `cni` as its
    /// first argument, or a wrapper script).
    Cni,
    /// Install the CNI plugin on this node (the agent DaemonSet's init container): the
    /// binary, `10-ferry.conflist` and `ferry-kubeconfig` (the agent's own credentials);
    /// `--uninstall` removes them, `--watch` keeps the kubeconfig's token current and
    /// uninstalls on SIGTERM.
    CniInstall(CniInstallArgs),
    /// The federation: its control plane and a member's join agent.
    #[command(subcommand)]
    Federation(FederationCommand),
    /// Write the CRD manifests of every Ferry resource into a directory.
    Crds {
        /// Directory to write `<plural>.<group>.yaml` files into.
        #[arg(long, default_value = "deploy/crds")]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
struct CniInstallArgs {
    /// The runtime's CNI bin dir as this process sees it.
    #[arg(long, env = "FERRY_CNI_BIN_DIR", default_value = "/host/opt/cni/bin")]
    bin_dir: PathBuf,
    /// The runtime's CNI config dir as this process sees it.
    #[arg(
        long,
        env = "FERRY_CNI_CONF_DIR",
        default_value = "/host/etc/cni/net.d"
    )]
    conf_dir: PathBuf,
    /// The same config dir as the host sees it (where the plugin finds its kubeconfig).
    #[arg(
        long,
        env = "FERRY_CNI_HOST_CONF_DIR",
        default_value = "/etc/cni/net.d"
    )]
    host_conf_dir: PathBuf,
    /// Copy this kubeconfig for the plugin instead of building one from the Pod's
    /// ServiceAccount (in-cluster) credentials.
    #[arg(long, env = "FERRY_CNI_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Remove what an install wrote, then exit.
    #[arg(long, conflicts_with = "watch")]
    uninstall: bool,
    /// Stay running: refresh the kubeconfig when the projected token rotates, and
    /// uninstall on SIGTERM (the DaemonSet being deleted).
    #[arg(long)]
    watch: bool,
    /// With --watch: seconds between checks of the token.
    #[arg(long, env = "FERRY_CNI_REFRESH_S", default_value = "30")]
    refresh_s: u64,
    /// The ServiceAccount credentials (`token`, `ca.crt`) of in-cluster mode.
    #[arg(long, env = "FERRY_SERVICEACCOUNT_DIR",
        default_value = ferry_agent::cni_install::IN_CLUSTER_DIR)]
    serviceaccount_dir: PathBuf,
    #[command(flatten)]
    options: AgentOptions,
    #[command(flatten)]
    dns: DnsArgs,
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Where the store, PKI, tokens and kubeconfigs live; kept across restarts.
    #[arg(long, env = "FERRY_DATA_DIR")]
    data_dir: PathBuf,
    /// Address the HTTPS API listens on.
    #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Node ports of NodePort and LoadBalancer Services are allocated from this range.
    #[arg(long, env = "FERRY_SERVICE_NODE_PORT_RANGE", default_value = "30000-32767",
        value_parser = parse_port_range)]
    service_node_port_range: (u16, u16),
    /// Where objects are kept: `embedded` (DATA_DIR/store.redb) or
    /// `etcd://host:port[,host:port...][/prefix]` (several API servers may share it); TLS:
    /// `etcds://...?cacert=CA.pem[&cert=CLIENT.pem&key=CLIENT.key]`.
    #[arg(long, env = "FERRY_STORE", default_value = "embedded")]
    store: String,
}

#[derive(Args, Debug)]
struct ApiserverArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Services get their cluster IPs from this CIDR.
    #[arg(long, env = "FERRY_SERVICE_CIDR", default_value = "10.96.0.0/16")]
    service_cidr: String,
    /// (`ferry up --role-processes`) install Ferry's CRDs and the VirtualMachineInstance
    /// CRD at start, as `ferry up` does.
    #[arg(long, hide = true)]
    install_crds: bool,
    /// (`ferry up --role-processes`) write `DATA/kubeconfig-node-NODE` for these nodes at
    /// start (each node's own identity; the same token every time).
    #[arg(long, hide = true, value_delimiter = ',')]
    node_identities: Vec<String>,
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a port range such as 30000-32767");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (
        a.trim().parse::<u16>().map_err(|_| bad())?,
        b.trim().parse::<u16>().map_err(|_| bad())?,
    );
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b))
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
    /// Seconds between full controller passes (a safety net: passes follow watch events;
    /// a full pass over 10,000 services x 20 backends takes tens of seconds).
    #[arg(long, env = "FERRY_RESYNC_S", default_value = "3600")]
    resync_s: u64,
    /// Private key (PEM) for `ssl:` OVN NB remotes (OVN's PKI, e.g. from `ovs-pki`).
    #[arg(long, env = "FERRY_OVN_SSL_KEY", requires_all = ["ovn_ssl_cert", "ovn_ssl_ca"])]
    ovn_ssl_key: Option<PathBuf>,
    /// Certificate (PEM) for `ssl:` OVN NB remotes.
    #[arg(long, env = "FERRY_OVN_SSL_CERT", requires = "ovn_ssl_key")]
    ovn_ssl_cert: Option<PathBuf>,
    /// CA certificate (PEM) the OVN NB server's certificate must be signed by.
    #[arg(long, env = "FERRY_OVN_SSL_CA", requires = "ovn_ssl_key")]
    ovn_ssl_ca: Option<PathBuf>,
    #[command(flatten)]
    dns: DnsArgs,
}

/// The cluster DNS: one address in every VPC, answered by the node agents.
#[derive(Args, Debug, Clone)]
struct DnsArgs {
    /// The cluster DNS address (inside --service-cidr), the same in every VPC; pods get
    /// it in their resolv.conf. Empty: no cluster DNS.
    #[arg(long, env = "FERRY_CLUSTER_DNS", default_value = "10.96.0.10")]
    cluster_dns: String,
    /// The cluster domain.
    #[arg(long, env = "FERRY_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Where names outside the cluster domain go (IP or IP:PORT; repeatable). None: such
    /// queries are refused.
    #[arg(
        long = "dns-upstream",
        env = "FERRY_DNS_UPSTREAM",
        value_delimiter = ','
    )]
    dns_upstreams: Vec<String>,
}

impl DnsArgs {
    fn address(&self) -> anyhow::Result<Option<std::net::Ipv4Addr>> {
        if self.cluster_dns.trim().is_empty() {
            return Ok(None);
        }
        self.cluster_dns.trim().parse().map(Some).map_err(|_| {
            anyhow::anyhow!(
                "--cluster-dns {:?} is not an IPv4 address",
                self.cluster_dns
            )
        })
    }

    fn agent(&self) -> anyhow::Result<Option<ferry_agent::dns::DnsConfig>> {
        Ok(self
            .address()?
            .map(|cluster_ip| ferry_agent::dns::DnsConfig {
                cluster_ip,
                domain: self.cluster_domain.clone(),
                upstreams: self.dns_upstreams.clone(),
                in_agent: true,
            }))
    }
}

#[derive(Args, Debug)]
struct DnsNodeArgs {
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// Kubeconfig of the API server (in-cluster config when absent).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    dns: DnsArgs,
}

async fn dns_node(args: DnsNodeArgs) -> anyhow::Result<()> {
    let Some(cfg) = args.dns.agent()? else {
        anyhow::bail!("--cluster-dns is empty: there is no cluster DNS to serve");
    };
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let node = args.node.clone();
    let task =
        tokio::spawn(
            async move { ferry_agent::dns::run_standalone(client, &node, &cfg, rx).await },
        );
    shutdown_signal().await;
    let _ = tx.send(true);
    task.await.context("dns task")??;
    Ok(())
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
    /// Serve Prometheus metrics (`/metrics`) and the web page (`/ui/`, signed in with a
    /// user's own API token) on this address.
    #[arg(long, env = "FERRY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The leader Lease's duration in seconds: a standby takes over a crashed leader
    /// within about this long.
    #[arg(long, env = "FERRY_LEASE_DURATION_S", default_value_t = 5)]
    lease_duration_s: u64,
    #[command(flatten)]
    network: NetworkArgs,
}

#[derive(Subcommand, Debug)]
enum FederationCommand {
    /// The federation control plane: an API server holding only federation objects, and
    /// the federation controller.
    Up {
        #[arg(long, env = "FERRY_FEDERATION_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:6450")]
        listen: SocketAddr,
        /// `embedded` (default) or `etcd://host:port[,host:port...][/prefix]`: on etcd,
        /// more `federation up`s (other data dirs and ports) serve the same federation.
        /// TLS: `etcds://...?cacert=CA.pem[&cert=CLIENT.pem&key=CLIENT.key]`.
        #[arg(long, env = "FERRY_FEDERATION_STORE")]
        store: Option<String>,
        /// Controller replicas in this process (they share a Lease).
        #[arg(long, default_value = "1")]
        controllers: usize,
    },
    /// One more federation controller replica against a federation API server.
    Controller {
        #[arg(long)]
        kubeconfig: PathBuf,
        #[arg(long)]
        identity: Option<String>,
    },
    /// Join this cluster to a federation: dials out, holds what is placed on it.
    Join {
        /// This member's kubeconfig for the federation, as `ferry federation member add`
        /// wrote it (its own token; the admin's also works).
        #[arg(long)]
        federation_kubeconfig: PathBuf,
        /// This member's API server.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
        /// This member's MemberCluster name.
        #[arg(long)]
        name: String,
        /// The tenant this member expects (the admin's `member add` sets it; a mismatch
        /// is logged, the federation's record kept).
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        workspace: Option<String>,
        /// A cell of this member as NAME=NAMESPACE (repeatable; as `--tenant`).
        #[arg(long = "cell", value_parser = ferry_federation::join::parse_cell)]
        cells: Vec<ferry_federation::types::Cell>,
        #[arg(long, default_value = "5")]
        heartbeat_s: u64,
    },
    /// The federation lab (issue 17): member labs in their own namespaces, joined to a
    /// federation, with a FederatedYusurService checked by real traffic.
    #[command(subcommand)]
    Lab(FederationLabCommand),
    /// Register members and issue their own credentials (the federation's admin).
    #[command(subcommand)]
    Member(FederationMemberCommand),
}

#[derive(Subcommand, Debug)]
enum FederationMemberCommand {
    /// Register member NAME (its MemberCluster, Work namespace and RBAC) and write its own
    /// kubeconfig for `ferry federation join --federation-kubeconfig`: a token only it
    /// holds, which reads only what is placed on it and writes only its status. The
    /// federation keeps the token's SHA-256 only; the file (mode 0600) is its one copy.
    /// Again for the same NAME: a new token, the old one revoked.
    Add {
        name: String,
        /// The federation admin's kubeconfig.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        workspace: Option<String>,
        /// A cell of this member as NAME=NAMESPACE (repeatable).
        #[arg(long = "cell", value_parser = ferry_federation::join::parse_cell)]
        cells: Vec<ferry_federation::types::Cell>,
        /// Where to write the member's kubeconfig [default: NAME.kubeconfig].
        #[arg(long)]
        out: Option<PathBuf>,
        /// The federation API server's URL as the member dials it [default: the admin
        /// kubeconfig's].
        #[arg(long)]
        server: Option<String>,
    },
    /// Revoke every token of member NAME (its MemberCluster and Works stay).
    Revoke {
        name: String,
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum FederationLabCommand {
    /// Start N member labs (each `ferry lab up` in private namespaces), the federation
    /// control plane and one join agent per member, and place `fed-web` on c1 and c2.
    Up {
        #[arg(long, default_value = "/tmp/ferry-federation-lab")]
        dir: PathBuf,
        #[arg(long, default_value = "3")]
        clusters: usize,
        /// The federation API server's address (host loopback).
        #[arg(long, default_value = FEDERATION_LAB_LISTEN)]
        listen: SocketAddr,
        /// Each member lab with a chassis per node (`ferry lab up --chassis-per-node`);
        /// without it each member runs one chassis (`--single-chassis`).
        #[arg(long)]
        chassis_per_node: bool,
    },
    /// The federation rows with real traffic from each member's outside client.
    Check {
        #[arg(long, default_value = "/tmp/ferry-federation-lab")]
        dir: PathBuf,
    },
    /// Stop the federation and take every member lab down.
    Down {
        #[arg(long, default_value = "/tmp/ferry-federation-lab")]
        dir: PathBuf,
    },
    /// (Internal) the background supervisor `lab up` starts.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// `kill -9` of a real API server under concurrent writers, again and again: counts
    /// acknowledged writes missing after each restart and resourceVersions that went back.
    Durability {
        #[arg(long, default_value = "100")]
        cycles: usize,
        #[arg(long, default_value = "16")]
        writers: usize,
        /// Seed of the kill times and the writers' choices (default: the clock).
        #[arg(long)]
        seed: Option<u64>,
        /// Write the JSON here too.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A federation with N in-process members: federated change -> applied in every
    /// member, and member status -> federated status (p50/p99).
    Federation {
        #[arg(long, default_value = "3")]
        clusters: usize,
        #[arg(long, default_value = "100")]
        services: usize,
        #[arg(long, default_value = "32")]
        concurrency: usize,
        /// Single changes timed one at a time on the loaded federation.
        #[arg(long, default_value = "20")]
        samples: usize,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Data-plane paths side by side: direct, ovn-direct, ferry-ovn, ferry-sock, iptables, nftables.
    Dataplane {
        /// Services installed on the iptables, nftables, ferry-ovn and ferry-sock paths;
        /// several counts (`1000,10000`) run one after the other and print side by side.
        #[arg(long, default_value = "1000")]
        services: String,
        /// OVS/veth configurations to compare, each a sub-run with its own direct row:
        /// `all`, or names (veth, veth+csum, veth+tso, veth+tso+csum,
        /// veth+tso+csum+threads2, afxdp-nonpmd, afxdp, default).
        #[arg(long)]
        matrix: Option<String>,
        /// Write the JSON rows here too.
        #[arg(long)]
        out: Option<PathBuf>,
        /// OVS interface type of the OVN rows' ports: system (veth), afxdp, afxdp-nonpmd.
        #[arg(long, default_value = "system")]
        ovs_port_type: String,
        /// Seconds per measurement.
        #[arg(long, default_value = "4")]
        duration_s: u64,
        /// Rounds; each figure is the median.
        #[arg(long, default_value = "3")]
        rounds: usize,
        /// Only these paths (comma separated).
        #[arg(long)]
        paths: Option<String>,
    },
    /// A real API server and controller against a real NB and ovn-northd, N services x M backends.
    ControlPlane {
        #[arg(long, default_value = "100")]
        services: usize,
        #[arg(long, default_value = "10")]
        backends: usize,
        /// Hollow nodes (kubemark-style: Node, agent Lease, probe reports) for the backends.
        #[arg(long, default_value = "1")]
        nodes: usize,
        /// Single-service changes and probe flips to time.
        #[arg(long, default_value = "20")]
        samples: usize,
        /// Write the JSON result here too.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// What metrics cost: the control-plane bench with FERRY_METRICS=off and on,
    /// interleaved; pass times, API GET latency and the rest side by side.
    MetricsCost {
        #[arg(long, default_value = "100")]
        services: usize,
        #[arg(long, default_value = "10")]
        backends: usize,
        #[arg(long, default_value = "1")]
        nodes: usize,
        #[arg(long, default_value = "20")]
        samples: usize,
        /// Rounds of one run off and one on (the order flips each round); 0 runs only
        /// the two API servers side by side.
        #[arg(long, default_value = "2")]
        rounds: usize,
        /// Write the JSON (every run and the comparison) here too.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// Start OVN/OVS, Ferry and the lab topology; returns when every scenario is ready.
    Up {
        #[arg(long, default_value = ".ferry-lab")]
        dir: PathBuf,
        /// Where the lab's API server listens.
        #[arg(long, default_value = "127.0.0.1:6444")]
        listen: SocketAddr,
        /// OVS interface type of lab workload ports: "" for veth ports (default; with the
        /// stack's userspace TSO and checksum offload about 3x afxdp-nonpmd's throughput, see
        /// docs/benchmarks.md), afxdp-nonpmd, afxdp (busy-polls a core).
        #[arg(long, default_value = "")]
        ovs_port_type: String,
        /// How long to wait for pods and backends.
        #[arg(long, default_value = "180")]
        timeout_s: u64,
        /// OVN's NB and SB on mutual TLS (`ferry up --ovn-tls`).
        #[arg(long)]
        ovn_tls: bool,
        /// Pods use the agents' socket-level load balancer (the default; it passes every
        /// lab check); `--socket-lb=false`: OVN's load balancers only.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
            num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        socket_lb: bool,
        /// OVN's NB and SB each as a RAFT cluster of this many `ovsdb-server`s (`ferry up
        /// --ovn-raft`); 1 = standalone.
        #[arg(long, default_value_t = 1)]
        ovn_raft: usize,
        /// Each node runs its own chassis (ovs-vswitchd + ovn-controller), Geneve between
        /// them over a lab underlay, and the gateways are HA over them and a witness
        /// chassis (`ferry up --chassis-per-node`, docs/chassis.md). The default of one
        /// lab; with --clusters N the members get it only when this is given.
        #[arg(long)]
        chassis_per_node: bool,
        /// Both nodes share one chassis: no tunnel, userspace TSO on (benches; what the
        /// members of a federation lab get).
        #[arg(long, conflicts_with = "chassis_per_node")]
        single_chassis: bool,
        /// DPU split mode (`ferry up --dpu`, implies --chassis-per-node): a simulated DPU
        /// per node (its own namespace and cgroup holding ovs-vswitchd, ovn-controller and
        /// the `dpu` agent, veth pairs as VF/representor pairs), `dpu-host` agents on the
        /// hosts; `lab check` adds the DPU rows (docs/dpu.md).
        #[arg(long, conflicts_with = "single_chassis")]
        dpu: bool,
        /// More than 1: a federation of this many member labs, each a whole lab in its
        /// own namespaces, joined to a federation control plane (`ferry federation lab
        /// up`); `lab check` and `lab down` on the same DIR then act on the federation.
        #[arg(long, default_value_t = 1)]
        clusters: usize,
    },
    /// The lab's hosts and scenarios.
    Status {
        #[arg(long, default_value = ".ferry-lab")]
        dir: PathBuf,
        /// `json` for machine-readable output.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Scenarios, isolation and failover with real traffic; non-zero exit on any failure.
    Check {
        #[arg(long, default_value = ".ferry-lab")]
        dir: PathBuf,
        /// Requests per scenario.
        #[arg(long, default_value = "20")]
        requests: usize,
    },
    /// Kill the active gateway chassis' ovs-vswitchd and ovn-controller (kept down for the
    /// measurement) while requesting the EIP from outside; print how long the EIP took
    /// to move to the other chassis, then let them restart (not with --single-chassis).
    GatewayFailover {
        #[arg(long, default_value = ".ferry-lab")]
        dir: PathBuf,
        /// The lab host that sends the requests.
        #[arg(long, default_value = "ext-client")]
        client: String,
        /// The address requested (scenario 3's EIP).
        #[arg(long, default_value = "198.18.0.100:80")]
        target: String,
        /// `json` for machine-readable output.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// The seed's CPU-saving figure: each side's cgroup CPU time (host, host switching,
    /// DPUs) during iperf3 between two pods, in the lab's mode (full or `--dpu`).
    DpuCpu {
        #[arg(long, default_value = ".ferry-lab")]
        dir: PathBuf,
        /// The pod that runs iperf3's client.
        #[arg(long, default_value = "client-vpc1")]
        client: String,
        /// The pod whose iperf3 server (port 5001) is measured against.
        #[arg(long, default_value = "svc1-ep-2")]
        server: String,
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// `json` for machine-readable output.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Kill the lab's parts one at a time (kill -9: each chassis' ovs-vswitchd and
    /// ovn-controller, ovn-northd, the NB and SB leaders, the controller leader, an agent,
    /// the API server; a partition of node2 from the API server; the gateway chassis)
    /// while scenario 1, scenario 3 and DNS traffic runs; a row per fault with failed
    /// requests, the longest gap, recovery, the next change and a state audit, held to
    /// issue 15's targets. Needs `FERRY_ROLE_PROCESSES=true ferry lab up --chassis-per-node
    /// --ovn-raft 3` (docs/chassis.md).
    Faults {
        #[arg(long, default_value = ".ferry-lab")]
        dir: PathBuf,
        /// Seconds node2 stays cut off the API server.
        #[arg(long, default_value_t = 30)]
        partition_s: u64,
        /// One chassis per data-plane daemon (node2's vswitchd, node1's ovn-controller).
        #[arg(long)]
        quick: bool,
        /// Only these faults (vswitchd, ovn-controller, northd, nb, sb, controller, agent,
        /// apiserver, partition, gateway; comma separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Write the JSON here too.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a command in a lab host's network namespace.
    Exec {
        #[arg(long, default_value = ".ferry-lab")]
        dir: PathBuf,
        name: String,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Stop everything the lab started and remove what it created.
    Down {
        #[arg(long, default_value = ".ferry-lab")]
        dir: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
struct AgentOptions {
    /// The OVS database socket of this node.
    #[arg(
        long,
        env = "FERRY_OVS_DB",
        default_value = "/var/run/openvswitch/db.sock"
    )]
    ovs_db: PathBuf,
    /// The namespace ovs-vswitchd runs in, if not the host's.
    #[arg(long, env = "FERRY_OVS_NETNS")]
    ovs_netns: Option<String>,
    /// OVS interface type of workload ports: "" (veth, default), afxdp, afxdp-nonpmd.
    #[arg(long, env = "FERRY_OVS_PORT_TYPE", default_value = "")]
    ovs_port_type: String,
    /// Set other_config:hw-offload=true on this node's OVS (DPU/SmartNIC nodes).
    #[arg(long)]
    hw_offload: bool,
    /// full (everything on this node), dpu-host (the host of a DPU: CNI only, no OVS) or
    /// dpu (the DPU of host --node: binds representors, probes, node interface). See docs/dpu.md.
    #[arg(long, env = "FERRY_AGENT_MODE", default_value = "full")]
    mode: ferry_agent::dpu::AgentMode,
}

#[derive(Args, Debug)]
struct AgentArgs {
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// Kubeconfig of the API server (in-cluster config when absent).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Run Pods bound to this node as namespaces and processes (the one-machine lab).
    #[arg(long)]
    lab: bool,
    /// Where the agent records what it created.
    #[arg(long, default_value = "/var/lib/ferry")]
    state_dir: PathBuf,
    /// The service CIDR, routed through the node interface.
    #[arg(long, env = "FERRY_SERVICE_CIDR", default_value = "10.96.0.0/16")]
    service_cidr: String,
    /// Plumb this node's port on the join subnet `subnet0` (address and MAC from the Node's
    /// iaas.yusur.io/ annotations) into the agent's own network namespace, the host's, as
    /// --node-ifname: routes to --service-cidr and to the default VPC's pod subnets via
    /// the join subnet's gateway, and no default route (the host keeps its own). Removed
    /// when the agent stops. `--node-interface=false` plumbs none. Ignored with --lab,
    /// where the node is the namespace ferry-NODE.
    #[arg(
        long,
        env = "FERRY_NODE_INTERFACE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    node_interface: bool,
    /// Name of the node interface in the host's namespace.
    #[arg(long, env = "FERRY_NODE_IFNAME", default_value = ferry_agent::node_iface::DEFAULT_IFNAME,
        value_parser = parse_ifname)]
    node_ifname: String,
    /// This node's address on the external network (its ExternalIP), where NodePorts answer
    /// from outside.
    #[arg(long, env = "FERRY_EXTERNAL_IP")]
    external_ip: Option<std::net::Ipv4Addr>,
    /// Serve Prometheus metrics (`/metrics`) on this address.
    #[arg(long, env = "FERRY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Seconds the agent's Lease (`kube-node-lease/ferry-agent-NODE`) lasts: the
    /// controller counts this node's agent gone (its probes Unknown) that long after the
    /// last renewal. The kubelet's node Lease's by default; `ferry up`'s agents use 10.
    #[arg(long, env = "FERRY_AGENT_LEASE_DURATION_S",
        default_value_t = ferry_api::AgentLeaseTiming::KUBELET.duration.as_secs())]
    lease_duration_s: u64,
    /// Seconds between two renewals of the agent's Lease (the kubelet: a quarter of it).
    #[arg(long, env = "FERRY_AGENT_LEASE_RENEW_S",
        default_value_t = ferry_api::AgentLeaseTiming::KUBELET.renew_every.as_secs())]
    lease_renew_s: u64,
    #[command(flatten)]
    dns: DnsArgs,
    /// The node's cluster DNS is served by `ferry dns` (a process or container of its
    /// own, which survives the agent's restarts); the agent only writes resolv.conf.
    #[arg(long, env = "FERRY_EXTERNAL_DNS")]
    external_dns: bool,
    #[command(flatten)]
    options: AgentOptions,
    /// VPC-aware socket-level load balancing for this node's pods: eBPF programs at the
    /// cgroup v2 root translate a service VIP to a healthy backend at connect()/sendmsg()
    /// (pods registered by `ferry cni`); every other client keeps OVN's load balancers.
    #[arg(long, env = "FERRY_SOCKET_LB")]
    socket_lb: bool,
    /// Where `ferry cni` records pod sandboxes for the socket LB (the network config's
    /// `sandboxDir`).
    #[arg(long, env = "FERRY_SOCKET_LB_SANDBOX_DIR",
        default_value = ferry_agent::socket_lb::sandbox_record::DEFAULT_SANDBOX_DIR)]
    socket_lb_sandbox_dir: PathBuf,
    /// The cgroup v2 directory the socket LB attaches to (default: the cgroup2 mount this
    /// process sees). In a container, mount the host's cgroup2 root and name it here, so
    /// every pod of the node is covered.
    #[arg(long, env = "FERRY_SOCKET_LB_CGROUP")]
    socket_lb_cgroup: Option<PathBuf>,
    /// With --lab: an OCI image layout (`scripts/image.sh` writes `target/image/oci`). A
    /// Pod container whose image is one of it (`[REGISTRY/]ferry:TAG`) runs chrooted into
    /// that image, unpacked once under STATE_DIR/images, with its hostPath volumes, its
    /// ConfigMap/Secret environment and a token of its ServiceAccount; other images run
    /// on the host's file system as before.
    #[arg(long, env = "FERRY_LAB_IMAGES")]
    lab_images: Option<PathBuf>,
    /// With --lab: where the API server reaches this agent for `kubectl logs` and `exec`
    /// (published on the Node; requests must carry this agent's own API token).
    #[arg(long, env = "FERRY_STREAMING_LISTEN", default_value = "127.0.0.1:0")]
    streaming_listen: std::net::SocketAddr,
}

/// The lab agent's logs/exec endpoint on `listen`, authenticated by the agent's own API
/// token (from its kubeconfig): the API server, which issued it, presents it.
async fn streaming_config(
    kubeconfig: Option<&Path>,
    listen: std::net::SocketAddr,
) -> anyhow::Result<ferry_agent::streaming::StreamingConfig> {
    let auth = kube_config(kubeconfig).await?.auth_info;
    let token = match (auth.token, auth.token_file) {
        (Some(t), _) => secrecy::ExposeSecret::expose_secret(&t).to_string(),
        (None, Some(file)) => std::fs::read_to_string(&file)
            .with_context(|| format!("reading the agent's token file {file}"))?
            .trim()
            .to_string(),
        (None, None) => {
            anyhow::bail!("the agent's kubeconfig has no bearer token for the logs/exec endpoint")
        }
    };
    Ok(ferry_agent::streaming::StreamingConfig { listen, token })
}

fn parse_ifname(s: &str) -> Result<String, String> {
    ferry_agent::cni::validate_ifname(s)
        .map(|()| s.to_string())
        .map_err(|_| {
            format!(
                "{s:?} is not an interface name (1-15 characters without '/', ':' or whitespace)"
            )
        })
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
    /// The OVN started here (without --ovn-nb) serves NB and SB over mutual TLS
    /// (`pssl:`, a PKI made by `ovs-pki` under DIR/ovn/pki) and everything connects over it.
    #[arg(long)]
    ovn_tls: bool,
    /// The OVN started here runs NB and SB each as a RAFT cluster of this many
    /// `ovsdb-server`s (3 or 5; 1 = standalone); ovn-northd, ovn-controller and the
    /// controller are given every member and follow the leader.
    #[arg(long, env = "FERRY_OVN_RAFT", default_value_t = 1)]
    ovn_raft: usize,
    /// With --ovn-raft: the clusters' RAFT election timer in ms, set on each leader after
    /// start (OVSDB's default 1,000 when not given; docs/resilience.md).
    #[arg(long, env = "FERRY_OVN_ELECTION_TIMER_MS")]
    ovn_election_timer_ms: Option<u64>,
    #[command(flatten)]
    network: NetworkArgs,
    /// Nodes whose agent runs inside `ferry up` in lab mode (comma separated).
    #[arg(long, default_value = "node1")]
    nodes: String,
    /// Serve the controller's and agents' metrics (`/metrics`, bearer: the admin token)
    /// and the web page (`/ui/`) on this address.
    #[arg(long, env = "FERRY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The lab agents' pods use the socket-level load balancer (see `ferry agent --socket-lb`).
    #[arg(long, env = "FERRY_SOCKET_LB")]
    socket_lb: bool,
    /// Each node of --nodes gets its own chassis (ovs-vswitchd + ovn-controller in its own
    /// namespace, system-id `ferry-NODE`), Geneve between them over a lab underlay, and the
    /// gateways on all of them and a witness chassis (HA with BFD, the first node
    /// preferred; docs/chassis.md); without it every node shares one chassis.
    #[arg(long)]
    chassis_per_node: bool,
    /// DPU split mode (docs/dpu.md; implies --chassis-per-node): each node's chassis
    /// stands for its DPU (`hw-offload=true` before its ovs-vswitchd starts) with a
    /// `ferry agent --mode dpu` process beside it; the node agents here are the hosts'
    /// `dpu-host` agents (pods only, never OVS); every process in a cgroup of its side.
    #[arg(long)]
    dpu: bool,
    /// External addresses of the lab nodes, where NodePorts answer from outside, e.g.
    /// `node1=198.18.0.11,node2=198.18.0.12`.
    #[arg(long, value_delimiter = ',', value_parser = parse_node_ip)]
    node_external_ips: Vec<(String, std::net::Ipv4Addr)>,
    /// Run the API server, two controller replicas (one leads, one stands by) and each
    /// node's agent as child processes restarted 100 ms after they die, instead of inside
    /// this process, so that one can be killed alone (`ferry lab faults`).
    #[arg(long, env = "FERRY_ROLE_PROCESSES")]
    role_processes: bool,
    /// The lab agents' OCI image layout (`ferry agent --lab-images`): Pod containers of its
    /// images (e.g. `localhost/ferry:dev` from `scripts/image.sh`) run chrooted into them.
    #[arg(long, env = "FERRY_LAB_IMAGES")]
    lab_images: Option<PathBuf>,
}

fn parse_node_ip(s: &str) -> Result<(String, std::net::Ipv4Addr), String> {
    let (node, ip) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NODE=IP"))?;
    let ip = ip
        .parse()
        .map_err(|_| format!("{ip:?} (for node {node}) is not an IPv4 address"))?;
    Ok((node.to_string(), ip))
}

fn main() -> anyhow::Result<()> {
    // Run by a container runtime as /opt/cni/bin/ferry (a copy of this binary): no
    // arguments, CNI_COMMAND set.
    if std::env::args_os().len() == 1 && std::env::var_os("CNI_COMMAND").is_some() {
        cni_plugin();
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Crds { out } => write_crds(&out),
        Command::Federation(cmd) => runtime()?.block_on(federation(cmd)),
        Command::Bench(BenchCommand::Federation {
            clusters,
            services,
            concurrency,
            samples,
            out,
        }) => {
            let opts = ferry_federation::bench::BenchOptions {
                clusters,
                services,
                concurrency,
                samples,
                out,
                timeout: std::time::Duration::from_secs(600),
            };
            let r = runtime()?.block_on(ferry_federation::bench::run(&opts))?;
            ferry_federation::bench::print(&r);
            Ok(())
        }
        Command::Apiserver(args) => runtime()?.block_on(apiserver(args, false)),
        Command::Up(args) => runtime()?.block_on(up(args)),
        Command::Controller(args) => runtime()?.block_on(controller(args)),
        Command::Agent(args) => runtime()?.block_on(agent(args)),
        Command::Dns(args) => runtime()?.block_on(dns_node(args)),
        Command::Lab(cmd) => lab(cmd),
        Command::Bench(BenchCommand::Dataplane {
            services,
            matrix,
            out,
            ovs_port_type,
            duration_s,
            rounds,
            paths,
        }) => {
            let sizes = services
                .split(',')
                .map(|s| s.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .context("--services: numbers separated by commas")?;
            let mut opts = ferry_bench::dataplane::DataplaneOptions {
                services: sizes.first().copied().unwrap_or(1000),
                out,
                duration_s,
                rounds,
                ..Default::default()
            };
            opts.ovs_port_type = ferry_bench::dataplane::parse_port_type(&ovs_port_type)?;
            if let Some(p) = paths {
                opts.paths = p
                    .split(',')
                    .map(|x| ferry_bench::dataplane::BenchPath::parse(x.trim()))
                    .collect::<Result<_, _>>()?;
            }
            if matrix.is_some() || sizes.len() > 1 {
                let configs =
                    ferry_bench::dataplane::parse_matrix(matrix.as_deref().unwrap_or("none"))?;
                ferry_bench::dataplane::run_matrix(&opts, &configs, &sizes)?;
            } else {
                ferry_bench::dataplane::run(&opts)?;
            }
            Ok(())
        }
        Command::Bench(BenchCommand::ControlPlane {
            services,
            backends,
            nodes,
            samples,
            out,
        }) => {
            let opts = ferry_bench::control_plane::ControlPlaneOptions {
                services,
                backends,
                nodes,
                ferry: std::env::current_exe()?,
                out,
                samples,
                metrics: true,
                failover: true,
            };
            // On SIGTERM/SIGINT the run is dropped, and with it the API server, controllers
            // and OVN daemons it started (they would outlive a bench killed mid-run).
            let r = runtime()?
                .block_on(async {
                    tokio::select! {
                        r = ferry_bench::control_plane::control_plane(&opts) => r,
                        _ = shutdown_signal() => Err("interrupted".to_string()),
                    }
                })
                .map_err(anyhow::Error::msg)?;
            ferry_bench::control_plane::print_control_plane(&r);
            Ok(())
        }
        Command::Bench(BenchCommand::MetricsCost {
            services,
            backends,
            nodes,
            samples,
            rounds,
            out,
        }) => {
            let opts = ferry_bench::control_plane::ControlPlaneOptions {
                services,
                backends,
                nodes,
                ferry: std::env::current_exe()?,
                out,
                samples,
                metrics: true,
                failover: false,
            };
            let r = runtime()?
                .block_on(ferry_bench::metrics_cost::metrics_cost(&opts, rounds))
                .map_err(anyhow::Error::msg)?;
            ferry_bench::metrics_cost::print_metrics_cost(&r);
            Ok(())
        }
        Command::Bench(BenchCommand::Durability {
            cycles,
            writers,
            seed,
            out,
        }) => {
            let mut opts = ferry_bench::durability::DurabilityOptions::new(
                cycles,
                writers,
                std::env::current_exe()?,
            );
            opts.seed = seed;
            opts.out = out;
            let r = runtime()?
                .block_on(ferry_bench::durability::run(&opts))
                .map_err(anyhow::Error::msg)?;
            ferry_bench::durability::print(&r);
            Ok(())
        }
        Command::Cni => cni_plugin(),
        Command::CniInstall(args) => cni_install(args),
    }
}

fn cni_plugin() -> ! {
    let mut plugin = ferry_agent::cni_plugin::FerryCni {
        assignments: ferry_agent::cni_kube::KubeAssignments {
            wait: std::time::Duration::from_secs(30),
        },
    };
    std::process::exit(ferry_agent::cni_plugin::run_stdio(&mut plugin));
}

fn cni_install(args: CniInstallArgs) -> anyhow::Result<()> {
    use ferry_agent::cni_install as ci;
    let credentials = match &args.kubeconfig {
        Some(path) => ci::Credentials::Kubeconfig(path.clone()),
        None => ci::Credentials::in_cluster(args.serviceaccount_dir.clone())?,
    };
    let dns = args.dns.address()?.map(|ip| {
        let domain = &args.dns.cluster_domain;
        (
            ip.to_string(),
            vec![format!("svc.{domain}"), domain.clone()],
        )
    });
    let install = ci::Install {
        binary: std::env::current_exe().context("locating this binary")?,
        bin_dir: args.bin_dir,
        conf_dir: args.conf_dir,
        host_conf_dir: Some(args.host_conf_dir),
        net: ci::NetSettings {
            ovs_db_sock: args.options.ovs_db.clone(),
            ovs_netns: args
                .options
                .ovs_netns
                .as_ref()
                .map(|n| PathBuf::from("/var/run/netns").join(n)),
            ovs_port_type: args.options.ovs_port_type.clone(),
            dns,
            mode: args.options.mode,
        },
        credentials,
    };
    if args.uninstall {
        for p in ci::uninstall(&install)? {
            println!("removed {}", p.display());
        }
        return Ok(());
    }
    let paths = ci::install(&install)?;
    println!(
        "installed {}, {} and {}",
        paths.plugin.display(),
        paths.conflist.display(),
        paths.kubeconfig.display()
    );
    if !args.watch {
        return Ok(());
    }
    runtime()?.block_on(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(args.refresh_s.max(1)));
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => match ci::refresh_kubeconfig(&install) {
                    Ok(true) => tracing::info!(path = %paths.kubeconfig.display(), "CNI kubeconfig refreshed"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "refreshing the CNI kubeconfig failed"),
                },
                _ = &mut stop => break,
            }
        }
        anyhow::Ok(())
    })?;
    for p in ci::uninstall(&install)? {
        println!("removed {}", p.display());
    }
    Ok(())
}

fn lab(cmd: LabCommand) -> anyhow::Result<()> {
    use ferry_lab::lab::{self, LabDir};
    match cmd {
        LabCommand::Up {
            dir,
            listen,
            ovs_port_type,
            timeout_s,
            ovn_tls,
            socket_lb,
            chassis_per_node,
            single_chassis,
            dpu,
            ovn_raft,
            clusters,
        } => {
            if clusters > 1 {
                return runtime()?.block_on(federation_lab(FederationLabCommand::Up {
                    dir,
                    clusters,
                    listen: FEDERATION_LAB_LISTEN.parse()?,
                    chassis_per_node: ferry_lab::chassis::per_node(
                        clusters,
                        chassis_per_node,
                        single_chassis,
                    ),
                }));
            }
            let chassis_per_node =
                ferry_lab::chassis::per_node(clusters, chassis_per_node, single_chassis);
            let d = LabDir::new(&dir);
            let opts = lab::UpOptions {
                listen,
                ferry: std::env::current_exe()?,
                ovs_port_type,
                timeout: std::time::Duration::from_secs(timeout_s),
                ovn_tls,
                socket_lb,
                chassis_per_node,
                ovn_raft,
                dpu,
            };
            runtime()?.block_on(async {
                // `lab up` starts `ferry up` in its own process group: on SIGTERM or SIGINT
                // before the lab is up, take down what was started (`lab down`), instead
                // of leaving `ferry up` and its OVN running.
                let mut term = Termination::install()?;
                tokio::select! {
                    r = lab::up(&d, &opts) => r.map_err(anyhow::Error::from),
                    () = term.wait() => {
                        eprintln!("ferry lab up: interrupted; taking down what was started");
                        let lab = d.clone();
                        for line in tokio::task::spawn_blocking(move || lab::down(&lab)).await?? {
                            eprintln!("  {line}");
                        }
                        anyhow::bail!("interrupted during lab up")
                    }
                }
            })?;
            println!(
                "The lab is up ({}).\nNext:\n  ferry lab check --dir {0}\n  ferry lab status --dir {0}\n  export KUBECONFIG={}; kubectl get ysvc,np,pods -o wide\n  ferry lab exec --dir {0} client-vpc1 -- curl -s http://10.96.0.10/\n  ferry lab exec --dir {0} ext-client -- curl -s http://198.18.0.100/\n  ferry lab down --dir {0}",
                d.dir.display(),
                d.kubeconfig().display()
            );
            Ok(())
        }
        LabCommand::Status { dir, output } => {
            let d = LabDir::new(&dir);
            let st = runtime()?.block_on(lab::status(&d))?;
            if output.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&st)?);
                return Ok(());
            }
            println!(
                "lab {} (kubeconfig {})",
                st["dir"].as_str().unwrap_or_default(),
                st["kubeconfig"].as_str().unwrap_or_default()
            );
            println!(
                "{:<14} {:<10} {:<20} {:<12} IP",
                "HOST", "KIND", "NETNS", "VPC"
            );
            for h in st["hosts"].as_array().into_iter().flatten() {
                println!(
                    "{:<14} {:<10} {:<20} {:<12} {}",
                    h["name"].as_str().unwrap_or_default(),
                    h["kind"].as_str().unwrap_or_default(),
                    h["netns"].as_str().unwrap_or_default(),
                    h["vpc"].as_str().unwrap_or_default(),
                    h["ip"].as_str().unwrap_or("-")
                );
            }
            println!();
            println!(
                "{:<3} {:<20} {:<20} {:<12} {:<18} BACKENDS",
                "ID", "SCENARIO", "SERVICE", "CLIENT", "TARGET"
            );
            for s in st["scenarios"].as_array().into_iter().flatten() {
                let backends: Vec<&str> = s["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b.as_str())
                    .collect();
                println!(
                    "{:<3} {:<20} {:<20} {:<12} {:<18} {}",
                    s["id"],
                    s["name"].as_str().unwrap_or_default(),
                    s["service"].as_str().unwrap_or_default(),
                    s["client"].as_str().unwrap_or_default(),
                    s["target"].as_str().unwrap_or("-"),
                    backends.join(",")
                );
            }
            Ok(())
        }
        LabCommand::GatewayFailover {
            dir,
            client,
            target,
            output,
        } => {
            let d = LabDir::new(&dir);
            let f = ferry_lab::chassis::gateway_failover(&d.data().join("ovn"), &client, &target)
                .map_err(|e| anyhow::anyhow!("gateway failover: {e}"))?;
            if output.as_deref() == Some("json") {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                let s = |x: Option<f64>| x.map_or("never".to_string(), |v| format!("{v:.2} s"));
                println!(
                    "gateway {} -> {}: SB moved after {}, first EIP answer after {}, every answer after {}, longest gap {:.2} s, {}/{} requests failed; back on {} after {}",
                    f.from,
                    f.to,
                    s(f.sb_moved_s),
                    s(f.first_answer_s),
                    s(f.steady_s),
                    f.longest_gap_s,
                    f.failed,
                    f.requests,
                    f.from,
                    s(f.failback_s)
                );
            }
            if f.to == f.from || f.first_answer_s.is_none() {
                anyhow::bail!("the EIP's traffic did not move to another chassis");
            }
            Ok(())
        }
        LabCommand::Check { dir, requests } if is_federation_lab(&dir) => {
            let _ = requests;
            runtime()?.block_on(federation_lab(FederationLabCommand::Check { dir }))
        }
        LabCommand::Down { dir } if is_federation_lab(&dir) => {
            runtime()?.block_on(federation_lab(FederationLabCommand::Down { dir }))
        }
        LabCommand::Check { dir, requests } => {
            let d = LabDir::new(&dir);
            let (rows, ok) = runtime()?.block_on(lab::check(&d, requests))?;
            lab::print_check(&rows);
            if !ok {
                anyhow::bail!("some checks failed");
            }
            println!("all checks passed");
            Ok(())
        }
        LabCommand::DpuCpu {
            dir,
            client,
            server,
            seconds,
            output,
        } => {
            let d = LabDir::new(&dir);
            let f = runtime()?.block_on(async {
                let c = lab::client(&d).await?;
                ferry_lab::dpu::measure_cpu(&d, &c, &client, &server, seconds)
                    .await
                    .map_err(anyhow::Error::msg)
            })?;
            match output.as_deref() {
                Some("json") => println!("{}", serde_json::to_string_pretty(&f)?),
                _ => println!("{}", f.render()),
            }
            Ok(())
        }
        LabCommand::Faults {
            dir,
            partition_s,
            quick,
            only,
            out,
        } => {
            let opts = ferry_lab::faults::FaultsOptions {
                partition_s,
                quick,
                only,
                out,
            };
            let r = runtime()?
                .block_on(ferry_lab::faults::run(&LabDir::new(&dir), &opts))
                .map_err(|e| anyhow::anyhow!("lab faults: {e}"))?;
            ferry_lab::faults::print(&r);
            if !r.pass {
                anyhow::bail!("some faults missed their targets");
            }
            println!("every fault met its targets");
            Ok(())
        }
        LabCommand::Exec { dir, name, command } => {
            let code = lab::exec(&LabDir::new(&dir), &name, &command)?;
            std::process::exit(code);
        }
        LabCommand::Down { dir } => {
            for line in lab::down(&LabDir::new(&dir))? {
                println!("{line}");
            }
            println!("lab down");
            Ok(())
        }
    }
}

async fn federation(cmd: FederationCommand) -> anyhow::Result<()> {
    use ferry_federation::cli;
    match cmd {
        FederationCommand::Up {
            data_dir,
            listen,
            store,
            controllers,
        } => {
            cli::up(
                &data_dir,
                listen,
                store.as_deref(),
                controllers,
                shutdown_signal(),
            )
            .await?
        }
        FederationCommand::Controller {
            kubeconfig,
            identity,
        } => cli::controller(&kubeconfig, identity, shutdown_signal()).await?,
        FederationCommand::Lab(cmd) => federation_lab(cmd).await?,
        FederationCommand::Member(FederationMemberCommand::Add {
            name,
            kubeconfig,
            tenant,
            workspace,
            cells,
            out,
            server,
        }) => {
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{name}.kubeconfig")));
            let spec = ferry_federation::credential::MemberSpec {
                name: name.clone(),
                tenant,
                workspace,
                cells,
            };
            cli::member_add(&kubeconfig, &spec, &out, server.as_deref()).await?;
            println!(
                "member {name} registered; its kubeconfig (its own token, shown nowhere else): {}\n  on the member: ferry federation join --name {name} --federation-kubeconfig {} --kubeconfig MEMBER_KUBECONFIG",
                out.display(),
                out.display()
            );
        }
        FederationCommand::Member(FederationMemberCommand::Revoke { name, kubeconfig }) => {
            let n = cli::member_revoke(&kubeconfig, &name).await?;
            println!("member {name}: {n} token(s) revoked");
        }
        FederationCommand::Join {
            federation_kubeconfig,
            kubeconfig,
            name,
            tenant,
            workspace,
            cells,
            heartbeat_s,
        } => {
            let mut config = ferry_federation::join::JoinConfig::new(name);
            config.tenant = tenant;
            config.workspace = workspace;
            config.cells = cells;
            config.heartbeat = std::time::Duration::from_secs(heartbeat_s.max(1));
            cli::join(
                &federation_kubeconfig,
                &kubeconfig,
                config,
                shutdown_signal(),
            )
            .await?
        }
    }
    Ok(())
}

/// Where `ferry lab up --clusters N` runs the federation API server.
const FEDERATION_LAB_LISTEN: &str = "127.0.0.1:6450";

/// Whether DIR holds a federation lab (`lab up --clusters N`): it has the federation's
/// own data dir.
fn is_federation_lab(dir: &std::path::Path) -> bool {
    ferry_federation::lab::FedLab::new(dir).fed().is_dir()
}

async fn federation_lab(cmd: FederationLabCommand) -> anyhow::Result<()> {
    use ferry_federation::lab::{self, FedLab};
    let ferry = std::env::current_exe().context("the ferry binary's path")?;
    match cmd {
        FederationLabCommand::Up {
            dir,
            clusters,
            listen,
            chassis_per_node,
        } => {
            lab::up(
                &FedLab::new(&dir),
                clusters,
                listen,
                &ferry,
                chassis_per_node,
            )
            .await?
        }
        FederationLabCommand::Check { dir } => {
            let (rows, pass) = lab::check(&FedLab::new(&dir)).await?;
            lab::print_rows(&rows);
            if !pass {
                anyhow::bail!("some federation lab checks failed");
            }
        }
        FederationLabCommand::Down { dir } => {
            for line in lab::down(&FedLab::new(&dir), &ferry)? {
                println!("{line}");
            }
        }
        FederationLabCommand::Serve { dir, listen } => {
            lab::serve(&FedLab::new(&dir), listen, shutdown_signal()).await?
        }
    }
    Ok(())
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
    service_cidr: &str,
) -> anyhow::Result<ferry_apiserver::ApiServer> {
    let config = ferry_apiserver::Config {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        limits: Default::default(),
        services: ferry_apiserver::ServiceNetwork {
            cidr: service_cidr
                .parse()
                .with_context(|| format!("--service-cidr {service_cidr:?} is not an IPv4 CIDR"))?,
            node_ports: args.service_node_port_range,
        },
    };
    let backend: ferry_apiserver::StoreBackend = args.store.parse().context("--store")?;
    let server = ferry_apiserver::ApiServer::start_on(config, &backend)
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

async fn apiserver(args: ApiserverArgs, install_crds: bool) -> anyhow::Result<()> {
    let install_crds = install_crds || args.install_crds;
    let server = start_apiserver(&args.server, install_crds, &args.service_cidr).await?;
    if install_crds {
        server
            .install_crds(&[serde_json::to_value(ferry_api::vmi_crd())?])
            .await
            .context("installing the VirtualMachineInstance CRD")?;
    }
    for node in &args.node_identities {
        server
            .node_kubeconfig(node)
            .with_context(|| format!("minting node {node}'s identity"))?;
    }
    shutdown_signal().await;
    eprintln!("ferry: shutting down");
    server.shutdown().await;
    Ok(())
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = kube_config(kubeconfig).await?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

async fn kube_config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    Ok(match kubeconfig {
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
    })
}

/// Serves the metrics of `components` on `listen` (behind `token` when given), and the
/// web page when `ui` holds the API server's client configuration.
async fn serve_metrics(
    listen: Option<SocketAddr>,
    components: Vec<ferry_metrics::Component>,
    token: Option<String>,
    ui: Option<kube::Config>,
) -> anyhow::Result<Option<ferry_metrics::http::Served>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let page = match ui {
        Some(config) => Some(ferry_ui::router(ferry_ui::Upstream::new(config)?)),
        None => None,
    };
    let has_page = page.is_some();
    let served = ferry_metrics::http::serve(
        listen,
        ferry_metrics::http::Exposition { components, token },
        page,
    )
    .await?;
    eprintln!("ferry: metrics on http://{}/metrics", served.addr);
    if has_page {
        eprintln!("ferry: web page on http://{}/ui/", served.addr);
    }
    Ok(Some(served))
}

fn controller_config(
    network: &NetworkArgs,
    identity: Option<String>,
    ovn_nb: Option<Vec<String>>,
) -> anyhow::Result<ferry_controller::ControllerConfig> {
    let external = match (network.external_cidr, network.external_gateway) {
        (Some(cidr), Some(gateway)) => {
            Some(ferry_controller::network::ExternalConfig { cidr, gateway })
        }
        (None, None) => None,
        _ => anyhow::bail!("--external-cidr and --external-gateway go together"),
    };
    let mut config = ferry_controller::ControllerConfig {
        service_cidr: network.service_cidr.clone(),
        eip_pool: network.eip_pool.clone(),
        network: ovn_nb.map(|remotes| ferry_controller::network::NetworkConfig {
            remotes,
            tls: match (
                &network.ovn_ssl_key,
                &network.ovn_ssl_cert,
                &network.ovn_ssl_ca,
            ) {
                (Some(key), Some(cert), Some(ca)) => Some(
                    ferry_controller::network::TlsConfig::from_files(key, cert, ca),
                ),
                _ => None,
            },
            gateway_chassis: network.gateway_chassis.clone(),
            external,
            max_lb_per_txn: 500,
        }),
        resync: std::time::Duration::from_secs(network.resync_s.max(1)),
        cluster_dns: network.dns.address()?,
        ..Default::default()
    };
    if let Some(id) = identity {
        config.identity = id;
    }
    Ok(config)
}

fn remotes(s: &str) -> Vec<String> {
    s.split(',')
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let _metrics = serve_metrics(
        args.metrics_listen,
        vec![ferry_metrics::Component::Controller],
        None,
        Some(kube_config(args.kubeconfig.as_deref()).await?),
    )
    .await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut config = controller_config(
        &args.network,
        args.identity,
        args.ovn_nb.as_deref().map(remotes),
    )?;
    config.lease_duration = Some(std::time::Duration::from_secs(args.lease_duration_s));
    // The Lease task renews over connections of its own.
    config.lease_client = Some(kube_config(args.kubeconfig.as_deref()).await?);
    let task = tokio::spawn(ferry_controller::run(client, config, rx));
    shutdown_signal().await;
    let _ = tx.send(true);
    task.await.context("controller task")??;
    Ok(())
}

fn agent_config(
    node: &str,
    options: &AgentOptions,
    lab: bool,
    state_dir: PathBuf,
    service_cidr: &str,
    node_interface: Option<String>,
) -> ferry_agent::node::AgentConfig {
    ferry_agent::node::AgentConfig {
        node: node.to_string(),
        runtime: ferry_agent::runtime::RuntimeConfig {
            ovs_db: options.ovs_db.clone(),
            // No bridge where OVS is not ours (`dpu-host`): the VF's host end, the
            // representor, goes to the OVS namespace for the DPU to bind.
            bridge: match ferry_agent::dpu::duties(options.mode).ovs_ports {
                true => "br-int".into(),
                false => String::new(),
            },
            ovs_netns: options
                .ovs_netns
                .as_ref()
                .map(|n| PathBuf::from("/var/run/netns").join(n)),
            port_type: options.ovs_port_type.clone(),
            log_dir: state_dir.join("logs"),
        },
        lab,
        state_dir,
        service_cidr: service_cidr.to_string(),
        node_interface,
        hw_offload: options.hw_offload,
        mode: options.mode,
        dns: None,
        external_ip: None,
        socket_lb: None,
        streaming: None,
        lease: ferry_api::AgentLeaseTiming::KUBELET,
    }
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    if args.socket_lb && !ferry_agent::dpu::duties(args.options.mode).socket_lb {
        anyhow::bail!(
            "--socket-lb (FERRY_SOCKET_LB) with --mode {}: the socket LB runs beside the pods, \
             in the host's agent (--mode full or dpu-host), not on the DPU",
            args.options.mode
        );
    }
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let _metrics = serve_metrics(
        args.metrics_listen,
        vec![ferry_metrics::Component::Agent],
        None,
        None,
    )
    .await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut config = agent_config(
        &args.node,
        &args.options,
        args.lab,
        args.state_dir.clone(),
        &args.service_cidr,
        args.node_interface.then(|| args.node_ifname.clone()),
    );
    config.dns = args.dns.agent()?.map(|d| ferry_agent::dns::DnsConfig {
        in_agent: !args.external_dns,
        ..d
    });
    config.external_ip = args.external_ip;
    if args.lease_renew_s == 0 || args.lease_renew_s >= args.lease_duration_s {
        anyhow::bail!(
            "--lease-renew-s {} must be at least 1 and shorter than --lease-duration-s {}",
            args.lease_renew_s,
            args.lease_duration_s
        );
    }
    config.lease = ferry_api::AgentLeaseTiming {
        duration: std::time::Duration::from_secs(args.lease_duration_s),
        renew_every: std::time::Duration::from_secs(args.lease_renew_s),
    };
    config.socket_lb = args.socket_lb.then(|| match args.lab {
        true => ferry_agent::socket_lb::SocketLbConfig::lab(),
        false => ferry_agent::socket_lb::SocketLbConfig {
            sandbox_dir: Some(args.socket_lb_sandbox_dir.clone()),
            cgroup: args.socket_lb_cgroup.clone(),
            ..ferry_agent::socket_lb::SocketLbConfig::node()
        },
    });
    if args.lab {
        // Without a token the agent still runs pods, only without logs and exec.
        config.streaming =
            match streaming_config(args.kubeconfig.as_deref(), args.streaming_listen).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "not serving logs and exec");
                    None
                }
            };
    }
    if let (true, Some(layout)) = (args.lab, &args.lab_images) {
        ferry_agent::lab_image::configure(ferry_agent::lab_image::LabImages::for_client(
            layout.clone(),
            args.state_dir.join("images"),
            &kube_config(args.kubeconfig.as_deref()).await?,
        ));
    }
    let task = tokio::spawn(ferry_agent::node::run(client, config, rx));
    shutdown_signal().await;
    let _ = tx.send(true);
    task.await.context("agent task")??;
    Ok(())
}

async fn up(mut args: UpArgs) -> anyhow::Result<()> {
    let node_names: Vec<String> = args
        .nodes
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    args.chassis_per_node |= args.dpu;
    if args.chassis_per_node {
        // Gateways on every node's chassis, in priority order (ferry-net takes a list).
        // The nodes first, then the witness (see ferry_ovn_stack::fabric::WITNESS).
        let nodes: Vec<&str> = node_names.iter().map(String::as_str).collect();
        args.network.gateway_chassis = ferry_ovn_stack::fabric::chassis_nodes(&nodes)
            .iter()
            .map(|n| ferry_ovn_stack::fabric::node_chassis_name(n))
            .collect::<Vec<_>>()
            .join(",");
    }
    // From here on a SIGTERM or SIGINT tears down whatever start-up has begun: OVN's
    // start is cancelled (it stops the daemons it had started), and a signal later in
    // start-up ends in the normal shutdown below as soon as start-up is through.
    let mut term = Termination::install()?;
    // OVN: the NB named by --ovn-nb, or a private OVN/OVS stack under DIR/ovn.
    let mut stack = None;
    let ovn_nb = match (&args.ovn_nb, args.no_dataplane) {
        (_, true) => None,
        (Some(nb), false) => Some(remotes(nb)),
        (None, false) => {
            let mut opts = ferry_ovn_stack::OvnOptions::new(args.network.gateway_chassis.clone());
            opts.tls = args.ovn_tls;
            opts.raft_members = args.ovn_raft;
            opts.election_timer_ms = args.ovn_election_timer_ms;
            if args.chassis_per_node {
                // The central part only here; each node's chassis follows.
                opts.chassis = false;
                opts.ovs_netns = None;
            }
            let dir = args.server.data_dir.join("ovn");
            let cancel = term.flag();
            let started = tokio::task::spawn_blocking(move || {
                ferry_ovn_stack::OvnStack::start_cancellable(&dir, opts, cancel)
            })
            .await?;
            let s = match started {
                Err(ferry_ovn_stack::Error::Cancelled) => {
                    eprintln!("ferry: interrupted while starting OVN; stopped what had started");
                    return Ok(());
                }
                r => r.context(
                    "starting OVN (use --ovn-nb to program an existing NB, or --no-dataplane)",
                )?,
            };
            let nb = s.nb_remote();
            eprintln!("ferry: OVN started (NB {nb})");
            stack = Some(s);
            Some(remotes(&nb))
        }
    };
    let mut node_chassis = Vec::new();
    if let (Some(s), true) = (&stack, args.chassis_per_node) {
        let nodes: Vec<&str> = node_names.iter().map(String::as_str).collect();
        let dpu_config = match args.dpu {
            true => ferry_lab::dpu::hw_offload_config(),
            false => Vec::new(),
        };
        node_chassis = ferry_ovn_stack::fabric::start_node_chassis_with(s, &nodes, &dpu_config)
            .context("starting a chassis per node")?;
        eprintln!(
            "ferry: {} chassis, Geneve over the lab underlay",
            node_chassis.len()
        );
    }
    if args.role_processes {
        up_roles::run(&args, stack.as_ref(), &node_chassis, ovn_nb, &mut term).await?;
        return stop_ovn(stack, node_chassis).await;
    }
    let server = start_apiserver(&args.server, true, &args.network.service_cidr).await?;
    if !args.no_agent && !args.no_dataplane {
        // Lab node agents run VM-like hosts as KubeVirt VMIs: serve that API.
        server
            .install_crds(&[serde_json::to_value(ferry_api::vmi_crd())?])
            .await
            .context("installing the VirtualMachineInstance CRD")?;
    }
    let client = kube_client(Some(&args.server.data_dir.join("kubeconfig-controller"))).await?;
    // The controller's and agents' metrics and the web page, behind the admin token.
    let _metrics = serve_metrics(
        args.metrics_listen,
        vec![
            ferry_metrics::Component::Controller,
            ferry_metrics::Component::Agent,
        ],
        Some(server.tokens.admin.clone()),
        Some(kube_config(Some(&server.kubeconfig)).await?),
    )
    .await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut config = controller_config(&args.network, Some("ferry-up".into()), ovn_nb)?;
    if let (Some(network), Some(tls)) = (
        config.network.as_mut(),
        stack.as_ref().and_then(|s| s.tls()),
    ) {
        network.tls = Some(ferry_controller::network::TlsConfig::from_files(
            &tls.client.private_key,
            &tls.client.certificate,
            &tls.pki.ca_cert,
        ));
    }
    if let Some(ip) = args.network.dns.address()? {
        reserve_cluster_dns(&args.server.data_dir, ip).await?;
    }
    // Embedded mode only: the jobs of kube-controller-manager (Endpoints, EndpointSlices).
    // With kube-scheduler's and kube-controller-manager's rights, not the controller's.
    let embedded_client = kube_client(Some(&server.embedded_kubeconfig())).await?;
    let embedded = tokio::spawn(ferry_embedded::run(embedded_client, rx.clone()));
    let task = tokio::spawn(ferry_controller::run(client, config, rx.clone()));
    // Agents in lab mode, one per node, on the stack's bridge (or the host's OVS with --ovn-nb).
    let mut agents = Vec::new();
    if !args.no_agent && !args.no_dataplane {
        let bridge = stack.as_ref().map(|s| s.bridge());
        let options = AgentOptions {
            ovs_db: bridge
                .as_ref()
                .map(|b| b.db_sock.clone())
                .unwrap_or_else(|| PathBuf::from("/var/run/openvswitch/db.sock")),
            ovs_netns: bridge.and_then(|b| b.netns),
            ovs_port_type: std::env::var("FERRY_OVS_PORT_TYPE").unwrap_or_default(),
            hw_offload: false,
            mode: match args.dpu {
                true => ferry_agent::dpu::AgentMode::DpuHost,
                false => ferry_agent::dpu::AgentMode::Full,
            },
        };
        for node in args
            .nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            // One identity per node (`system:node:NODE`): an agent may write only its own
            // Node, Lease, and the status of the pods and probes assigned to it.
            let agent_kubeconfig = server
                .node_kubeconfig(node)
                .with_context(|| format!("minting node {node}'s identity"))?;
            let client = kube_client(Some(&agent_kubeconfig)).await?;
            // (One image store for the process; the agents share the API server.)
            if let Some(layout) = &args.lab_images {
                ferry_agent::lab_image::configure(ferry_agent::lab_image::LabImages::for_client(
                    layout.clone(),
                    args.server.data_dir.join("agent/images"),
                    &kube_config(Some(&agent_kubeconfig)).await?,
                ));
            }
            // With --chassis-per-node each agent plumbs into its own node's chassis.
            let options = match node_chassis.iter().find(|c| c.node == node) {
                Some(c) => {
                    let b = c.stack.bridge();
                    AgentOptions {
                        ovs_db: b.db_sock,
                        ovs_netns: b.netns,
                        ..options.clone()
                    }
                }
                None => options.clone(),
            };
            let mut config = agent_config(
                node,
                &options,
                true,
                args.server.data_dir.join("agent"),
                &args.network.service_cidr,
                None,
            );
            config.dns = args.network.dns.agent()?;
            // The lab's agents lapse fast: its fault and partition tests wait for it.
            config.lease = ferry_api::AgentLeaseTiming::FAST;
            config.external_ip = args
                .node_external_ips
                .iter()
                .find(|(n, _)| n == node)
                .map(|(_, ip)| *ip);
            config.socket_lb = args
                .socket_lb
                .then(ferry_agent::socket_lb::SocketLbConfig::lab);
            config.streaming =
                Some(streaming_config(Some(&agent_kubeconfig), ([127, 0, 0, 1], 0).into()).await?);
            agents.push(tokio::spawn(ferry_agent::node::run(
                client,
                config,
                rx.clone(),
            )));
        }
    }
    // DPU mode: each node's `dpu` agent beside its chassis, in the DPU's cgroup.
    let mut dpu_side = None;
    if args.dpu && !args.no_agent && !args.no_dataplane {
        let mut nodes = Vec::new();
        for c in node_chassis.iter().filter(|c| node_names.contains(&c.node)) {
            let b = c.stack.bridge();
            nodes.push(ferry_lab::dpu::DpuNode {
                node: c.node.clone(),
                kubeconfig: server
                    .node_kubeconfig(&c.node)
                    .with_context(|| format!("minting node {}'s identity", c.node))?,
                ovs_db: b.db_sock,
                ovs_netns: b.netns.unwrap_or_default(),
                external_ip: args
                    .node_external_ips
                    .iter()
                    .find(|(n, _)| *n == c.node)
                    .map(|(_, ip)| *ip),
            });
        }
        let spec = ferry_lab::dpu::DpuSpec {
            ferry: std::env::current_exe()?,
            data_dir: std::path::absolute(&args.server.data_dir)?,
            service_cidr: args.network.service_cidr.clone(),
            cluster_dns: args.network.dns.cluster_dns.clone(),
            nodes,
        };
        let side = tokio::task::spawn_blocking(move || ferry_lab::dpu::DpuSide::start(&spec))
            .await?
            .map_err(anyhow::Error::msg)
            .context("starting the DPU agents")?;
        dpu_side = Some(side);
    }
    term.wait().await;
    eprintln!("ferry: shutting down");
    let _ = tx.send(true);
    for a in agents {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(20), a).await;
    }
    if let Some(side) = dpu_side {
        let _ = tokio::task::spawn_blocking(move || side.stop()).await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), embedded).await;
    server.shutdown().await;
    stop_ovn(stack, node_chassis).await
}

/// Stops the node chassis, then the OVN stack `ferry up` started.
async fn stop_ovn(
    stack: Option<ferry_ovn_stack::OvnStack>,
    node_chassis: Vec<ferry_ovn_stack::fabric::NodeChassis>,
) -> anyhow::Result<()> {
    if let Some(s) = &stack
        && !node_chassis.is_empty()
    {
        let registry = s.registry().clone();
        tokio::task::spawn_blocking(move || {
            ferry_ovn_stack::fabric::stop_node_chassis(&registry, node_chassis)
        })
        .await?;
    }
    if let Some(s) = stack {
        tokio::task::spawn_blocking(move || s.stop())
            .await?
            .context("stopping OVN")?;
    }
    Ok(())
}

/// Creates `kube-system/kube-dns` with the cluster DNS address, as a cluster's DNS add-on
/// does: it reserves the address in the service CIDR and names it for users; the controller
/// programs the address in every VPC itself (the annotation tells it so).
async fn reserve_cluster_dns(data_dir: &Path, ip: std::net::Ipv4Addr) -> anyhow::Result<()> {
    let client = kube_client(Some(&data_dir.join("kubeconfig"))).await?;
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns"},
            "annotations": {ferry_controller::cluster_dns::CLUSTER_DNS_ANNOTATION: "true"}},
        "spec": {"clusterIP": ip.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}))?;
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client, "kube-system");
    api.patch(
        "kube-dns",
        &kube::api::PatchParams::apply("ferry-up").force(),
        &kube::api::Patch::Apply(&svc),
    )
    .await
    .with_context(|| format!("reserving the cluster DNS address {ip} (kube-system/kube-dns)"))?;
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment [`Termination::install`] returns (the
/// handlers are registered before it does), so that a signal in the middle of start-up
/// is not the default action that kills the process and leaves its children running.
struct Termination {
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rx: tokio::sync::watch::Receiver<bool>,
}

impl Termination {
    fn install() -> anyhow::Result<Termination> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let set = flag.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            set.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = tx.send(true);
        });
        Ok(Termination { flag, rx })
    }

    /// Becomes true on the signal (for blocking work that polls it).
    fn flag(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.flag.clone()
    }

    /// Returns once the signal came (at once if it already has).
    async fn wait(&mut self) {
        let _ = self.rx.wait_for(|t| *t).await;
    }
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
