//! The node agent's Kubernetes side: registers its Node and keeps its Lease, runs the
//! NetworkProbes assigned to it from probe namespaces plumbed into each VPC, writes probe
//! status on transitions and again whenever the watched status disagrees
//! ([`crate::probe::report`]), plumbs the node's interface on the join subnet (on a real
//! node into the host's namespace, see [`crate::node_iface`]; in the lab into a namespace
//! `ferry-NODE` standing for the node), and in lab mode plays the node's container runtime
//! (see [`crate::runtime`]).
//!
//! Over 600 lines: it is the agent's one event loop (watches, sandboxes, probes, node
//! interface, DNS and node-port hooks); the next split is the lab sandbox reconciliation
//! into its own module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::{HealthCheckType, NetworkProbe, Subnet};
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::netns_admin::{self, Record};
use crate::node_iface;
use crate::probe::report::Reports;
use crate::probe::{ProbeKind, ProbeRunner, ProbeSpec, ProbeTarget, Thresholds, Transition};
use crate::runtime::{self, RestartPolicy, RuntimeConfig, Sandbox, Workload};

/// How the agent runs on its node.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: String,
    pub runtime: RuntimeConfig,
    /// Play the container runtime for Pods (and hosts) bound to this node.
    pub lab: bool,
    /// Where the record of what the agent created lives.
    pub state_dir: PathBuf,
    /// Routed through the node interface (scenario 2).
    pub service_cidr: String,
    /// On a real node (not `lab`): the name of the node interface plumbed into the agent's
    /// own namespace ([`crate::node_iface`]); `None` plumbs none.
    pub node_interface: Option<String>,
    /// Set `other_config:hw-offload=true` on OVS (DPU/SmartNIC nodes; not in `dpu-host`
    /// mode, which has no OVS).
    pub hw_offload: bool,
    /// `--mode`: the whole agent (`full`), or the host or DPU half of a DPU node (see
    /// [`crate::dpu`]).
    pub mode: crate::dpu::AgentMode,
    /// Serve the cluster DNS in every VPC from this node's probe ports (and, in the lab,
    /// give workloads a `resolv.conf` pointing at it).
    pub dns: Option<crate::dns::DnsConfig>,
    /// This node's address on the external network (`status.addresses` ExternalIP), where
    /// NodePorts answer from outside.
    pub external_ip: Option<std::net::Ipv4Addr>,
    /// Socket-level load balancing for this node's pods (`--socket-lb`, see
    /// [`crate::socket_lb`]); `None`: OVN's load balancers only.
    pub socket_lb: Option<crate::socket_lb::SocketLbConfig>,
    /// Lab mode: the logs/exec endpoint the API server proxies `pods/log` and `pods/exec`
    /// to ([`crate::streaming`]); `None` serves none.
    pub streaming: Option<crate::streaming::StreamingConfig>,
    /// The agent Lease's duration and renewal period (`--lease-duration-s`,
    /// `--lease-renew-s`; the kubelet's by default, the lab's shorter).
    pub lease: ferry_api::AgentLeaseTiming,
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("registering node {node}: {source}")]
    Register { node: String, source: kube::Error },
    #[error("enabling OVS hardware offload: {0}")]
    HwOffload(crate::dpu::HwOffloadError),
    #[error("service CIDR {cidr:?} is not a CIDR: {source}")]
    ServiceCidr {
        cidr: String,
        source: ipnet::AddrParseError,
    },
}

/// How often a plumbed node interface is verified (and repaired) on a real node.
const NODE_IFACE_RECHECK: Duration = Duration::from_secs(30);
/// Sandboxes started at once (lab runtime).
const PARALLEL_STARTS: usize = 8;
/// What starting a sandbox on the blocking pool gives.
type StartResult = Result<Result<Sandbox, String>, tokio::task::JoinError>;
/// How long after a failed attempt the node interface is tried again.
const NODE_IFACE_RETRY: Duration = Duration::from_secs(5);

/// The record file of a node's agent under a state dir.
pub fn record_path(state_dir: &std::path::Path, node: &str) -> PathBuf {
    state_dir.join(format!("agent-{node}.json"))
}

fn reflect<K>(api: Api<K>, config: watcher::Config, wake: mpsc::Sender<()>) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, crate::watch_restart::restartable(api, config))
        .backoff(ferry_api::WatchBackoff::default());
    tokio::spawn(async move {
        stream
            .for_each(|_| {
                let _ = wake.try_send(());
                futures::future::ready(())
            })
            .await;
    });
    reader
}

/// The condition type the agent reports its own readiness with. On a real node the
/// kubelet owns `Ready` (and the other kubelet conditions); the agent adds this one beside
/// them and never replaces theirs.
pub const AGENT_CONDITION: &str = "FerryAgentReady";

/// The Node status patch (strategic merge: `conditions` merge by `type`) the agent sends at
/// start. In the lab the agent is the node's only "kubelet" and also reports `Ready`; on a
/// real node only [`AGENT_CONDITION`].
pub fn readiness_patch(
    lab: bool,
    node: &str,
    external_ip: Option<std::net::Ipv4Addr>,
    now: &str,
) -> serde_json::Value {
    let condition = |type_: &str| {
        json!({"type": type_, "status": "True", "reason": "FerryAgentReady",
            "message": "the Ferry agent runs on this node", "lastHeartbeatTime": now,
            "lastTransitionTime": now})
    };
    let mut conditions = vec![condition(AGENT_CONDITION)];
    if lab {
        conditions.insert(0, condition("Ready"));
    }
    let mut status = json!({"status": {"conditions": conditions}});
    if let Some(ip) = external_ip {
        status["status"]["addresses"] = json!([{"type": "ExternalIP", "address": ip.to_string()},
            {"type": "Hostname", "address": node}]);
    }
    status
}

async fn register(
    client: &Client,
    node: &str,
    lab: bool,
    external_ip: Option<std::net::Ipv4Addr>,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    if api.get_opt(node).await?.is_none() {
        let n = Node {
            metadata: ObjectMeta {
                name: Some(node.into()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/hostname".to_string(),
                    node.to_string(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &n).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let status = readiness_patch(lab, node, external_ip, &now);
    api.patch_status(node, &PatchParams::default(), &Patch::Strategic(&status))
        .await?;
    Ok(())
}

/// How long one of the agent's own requests (Lease renewal, probe status) may take. The
/// client has no read timeout (kube's default, for watches and exec streams), so a
/// request on a connection a partition left without answers waited for TCP's
/// retransmissions, which back off to tens of seconds; given up, the connection is
/// dropped and the next attempt opens a new one.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A request that failed or took longer than [`REQUEST_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// `request`, given up after `limit`.
pub(crate) async fn bounded<T>(
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, RequestError> {
    match tokio::time::timeout(limit, request).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(RequestError::TimedOut(limit)),
    }
}

/// Renews `kube-node-lease/ferry-agent-<node>`: agent liveness is a Lease, not a status heartbeat.
async fn renew_lease(
    client: &Client,
    node: &str,
    timing: ferry_api::AgentLeaseTiming,
) -> Result<(), RequestError> {
    bounded(
        REQUEST_TIMEOUT,
        renew_named_lease(
            client,
            &ferry_api::agent_lease_name(node),
            node,
            timing.duration_seconds(),
        ),
    )
    .await
}

/// Renews the agent's Lease every `timing.renew_every` until shutdown, on a task of its
/// own: a renewal that hangs must not stop the event loop (probe results, pods), nor the
/// loop's work delay a renewal.
async fn keep_lease(
    client: Client,
    node: String,
    timing: ferry_api::AgentLeaseTiming,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(timing.renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
        match renew_lease(&client, &node, timing).await {
            // Cut off and back: the watches' connections may be waiting on TCP's
            // retransmissions (crate::watch_restart).
            Ok(()) if failing => {
                failing = false;
                tracing::info!(node = %node, "the API server answers again; starting the watches again");
                crate::watch_restart::restart_all();
            }
            Ok(()) => {}
            Err(e) => {
                failing = true;
                tracing::warn!(node = %node, error = %e, "renewing the node lease failed");
            }
        }
    }
}

/// The status patch of a probe's transition, as seen from `node`.
fn probe_status(t: &Transition, node: &str) -> serde_json::Value {
    json!({"status": {"phase": t.to.as_str(), "message": t.result.message,
        "lastTransitionTime": Timestamp::try_from(t.at).unwrap_or_else(|_| Timestamp::now()).strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "latencyMs": t.result.latency.as_secs_f64() * 1000.0, "prober": node}})
}

/// Writes a probe's status (`id` is `namespace/name`) in the background, bounded by
/// [`REQUEST_TIMEOUT`]; a write that fails is made again by [`Reports::rewrites`].
fn write_probe_status(client: &Client, id: &str, t: &Transition, node: &str) {
    let Some((ns, name)) = id.split_once('/') else {
        return;
    };
    let api: Api<NetworkProbe> = Api::namespaced(client.clone(), ns);
    let (id, name, status) = (id.to_string(), name.to_string(), probe_status(t, node));
    tokio::spawn(async move {
        let (params, patch) = (PatchParams::default(), Patch::Merge(&status));
        if let Err(e) = bounded(REQUEST_TIMEOUT, api.patch_status(&name, &params, &patch)).await {
            tracing::warn!(probe = %id, error = %e, "writing probe status failed");
        }
    });
}

/// Renews (or creates) the Lease `kube-node-lease/NAME` held by `holder`, lasting
/// `duration_s`.
pub(crate) async fn renew_named_lease(
    client: &Client,
    name: &str,
    holder: &str,
    duration_s: i32,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), ferry_api::AGENT_LEASE_NAMESPACE);
    let spec = LeaseSpec {
        holder_identity: Some(holder.into()),
        lease_duration_seconds: Some(duration_s),
        renew_time: Some(MicroTime(Timestamp::now())),
        ..Default::default()
    };
    match api.get_opt(name).await? {
        Some(mut l) => {
            l.spec = Some(spec);
            api.replace(name, &PostParams::default(), &l)
                .await
                .map(|_| ())
        }
        None => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(ferry_api::AGENT_LEASE_NAMESPACE.into()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &l).await.map(|_| ())
        }
    }
}

fn probe_spec(p: &NetworkProbe, netns: PathBuf) -> Option<ProbeSpec> {
    let kind = match p.spec.type_ {
        HealthCheckType::TCP => ProbeKind::Tcp,
        HealthCheckType::HTTP => ProbeKind::Http {
            path: p.spec.path.clone().unwrap_or_else(|| "/".into()),
        },
        HealthCheckType::UDP => ProbeKind::Udp {
            silence: p.spec.udp_silence.unwrap_or_default(),
        },
        HealthCheckType::ICMP => ProbeKind::Icmp,
    };
    Some(ProbeSpec {
        id: format!("{}/{}", p.namespace()?, p.name_any()),
        netns: Some(netns),
        target: ProbeTarget {
            kind,
            ip: p.spec.target.ip.parse().ok()?,
            port: u16::try_from(p.spec.port).ok()?,
        },
        period: Duration::from_secs(p.spec.period_seconds.max(1) as u64),
        timeout: Duration::from_secs(p.spec.timeout_seconds.max(1) as u64),
        thresholds: Thresholds {
            success: p.spec.success_threshold.max(1) as u32,
            failure: p.spec.failure_threshold.max(1) as u32,
        },
    })
}

/// `dpu-host`: whether new pods may be plumbed now ([`crate::dpu::admit`] over the Lease
/// of this node's DPU agent); the reason if not.
async fn dpu_admits(client: &Client, node: &str) -> Result<(), String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), crate::dpu::DPU_LEASE_NAMESPACE);
    let lease = api
        .get_opt(&crate::dpu::dpu_lease_name(node))
        .await
        .map_err(|e| format!("reading the DPU Lease of {node}: {e}"))?;
    crate::dpu::admit(node, lease.and_then(|l| l.spec).as_ref(), Timestamp::now())
        .map_err(|r| r.to_string())
}

/// `dpu-host`: writes (or with `None` withdraws) the pod's [`crate::dpu::ANNOTATION_VF`],
/// `key` being `pod/NS/NAME`.
async fn announce_vf(client: &Client, key: &str, representor: Option<&str>) -> Result<(), String> {
    let Some((ns, name)) = key.strip_prefix("pod/").and_then(|r| r.split_once('/')) else {
        return Err(format!("{key} is not a pod"));
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let patch = json!({"metadata": {"annotations": {crate::dpu::ANNOTATION_VF: representor}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|e| format!("annotating pod {ns}/{name} with its VF: {e}"))
}

#[cfg(test)]
fn pod_workload(pod: &Pod) -> Option<Workload> {
    crate::lab_pods::pod_workload(pod, &runtime::PodInputs::default())
}

fn host_workload(
    kind: ferry_net::PortKind,
    meta: &ObjectMeta,
    subnet: &str,
    ip: Option<&String>,
    mac: Option<&String>,
    subnets: &Store<Subnet>,
) -> Option<Workload> {
    let annotations = meta.annotations.clone().unwrap_or_default();
    let (prefix, gateway) = if subnet == ferry_net::EXTERNAL_SWITCH {
        let cidr = annotations.get(ferry_api::ANNOTATION_CIDR)?;
        (
            cidr.split('/').nth(1)?.to_string(),
            annotations.get(ferry_api::ANNOTATION_GATEWAY)?.clone(),
        )
    } else {
        let s = subnets.get(&reflector::ObjectRef::new(subnet))?;
        let net: ipnet::Ipv4Net = s.spec.cidr_block.parse().ok()?;
        let gw =
            s.spec.gateway.clone().unwrap_or_else(|| {
                std::net::Ipv4Addr::from(u32::from(net.network()) + 1).to_string()
            });
        (net.prefix_len().to_string(), gw)
    };
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    Some(Workload {
        key: format!("{kind:?}/{ns}/{name}"),
        uid: meta.uid.clone().unwrap_or_default(),
        netns: runtime::netns_name(&ns, &name),
        iface_id: ferry_net::port_name(kind, &ns, &name),
        mac: mac?.clone(),
        ip_cidr: format!("{}/{prefix}", ip?),
        gateway,
        routes: vec![],
        containers: runtime::host_command(&annotations),
        restart: RestartPolicy::Always,
    })
}

/// Listens for the API server's `pods/log` and `pods/exec` ([`crate::streaming`]) and
/// publishes the address on this node's Node; a failure is logged and the agent goes on
/// without logs and exec.
async fn start_streaming(
    client: &Client,
    cfg: &AgentConfig,
    sc: &crate::streaming::StreamingConfig,
    pods: crate::streaming::PodDirectory,
    shutdown: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::bind(sc.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(listen = %sc.listen, error = %e, "not serving logs and exec");
            return;
        }
    };
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    tokio::spawn(crate::streaming::serve(
        listener,
        sc.token.clone(),
        cfg.runtime.log_dir.clone(),
        pods,
        shutdown,
    ));
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({"metadata": {"annotations": {crate::streaming::ENDPOINT_ANNOTATION: addr.to_string()}}});
    match api
        .patch(&cfg.node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::info!(node = %cfg.node, %addr, "serving logs and exec"),
        Err(e) => {
            tracing::warn!(node = %cfg.node, error = %e, "publishing the logs/exec endpoint failed")
        }
    }
}

/// Runs the agent until `shutdown` turns true; in lab mode it then removes every namespace
/// and process it created.
pub async fn run(
    client: Client,
    cfg: AgentConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let service_cidr: ipnet::IpNet =
        cfg.service_cidr
            .parse()
            .map_err(|source| AgentError::ServiceCidr {
                cidr: cfg.service_cidr.clone(),
                source,
            })?;
    let duties = crate::dpu::duties(cfg.mode);
    let mut cfg = cfg;
    if !duties.node_interface {
        cfg.node_interface = None;
    }
    register(&client, &cfg.node, cfg.lab, cfg.external_ip)
        .await
        .map_err(|source| AgentError::Register {
            node: cfg.node.clone(),
            source,
        })?;
    if cfg.hw_offload && duties.hw_offload {
        crate::dpu::enable_hw_offload(&cfg.runtime.ovs_db).map_err(AgentError::HwOffload)?;
    }
    if duties.bind_representors {
        tokio::spawn(crate::dpu_agent::run(
            client.clone(),
            cfg.node.clone(),
            crate::dpu_agent::OvsPlace {
                db: cfg.runtime.ovs_db.clone(),
                bridge: cfg.runtime.bridge.clone(),
                netns: cfg.runtime.ovs_netns.clone(),
            },
            shutdown.clone(),
        ));
    }
    let record = Arc::new(Record::open(record_path(&cfg.state_dir, &cfg.node)));
    let pod_directory = crate::streaming::PodDirectory::default();
    // Logs and exec are served where the pods run (not by a `dpu` agent).
    if let (true, Some(sc)) = (cfg.lab && duties.plumb_pods, &cfg.streaming) {
        start_streaming(&client, &cfg, sc, pod_directory.clone(), shutdown.clone()).await;
    }
    let (wake_tx, mut wake) = mpsc::channel(1);
    let on_node = format!("spec.nodeName={}", cfg.node);
    let probes: Store<NetworkProbe> = reflect(
        Api::all(client.clone()),
        watcher::Config::default().fields(&on_node),
        wake_tx.clone(),
    );
    let nodes: Store<Node> = reflect(
        Api::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={}", cfg.node)),
        wake_tx.clone(),
    );
    // Lab nodes serve NodePorts on their join address (kube-proxy's job on a real node).
    let k8s_services: Option<Store<k8s_openapi::api::core::v1::Service>> = cfg.lab.then(|| {
        reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            wake_tx.clone(),
        )
    });
    let mut node_port_rules = String::new();
    let subnets: Store<Subnet> = reflect(
        Api::all(client.clone()),
        watcher::Config::default(),
        wake_tx.clone(),
    );
    let pods: Option<Store<Pod>> = cfg.lab.then(|| {
        reflect(
            Api::all(client.clone()),
            watcher::Config::default().fields(&on_node),
            wake_tx.clone(),
        )
    });
    let bms: Option<Store<ferry_api::BareMetal>> = cfg.lab.then(|| {
        reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            wake_tx.clone(),
        )
    });
    let vnics: Option<Store<ferry_api::VNicIP>> = cfg.lab.then(|| {
        reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            wake_tx.clone(),
        )
    });
    // VM-like lab hosts are KubeVirt VMIs, where that API exists.
    let vmi_gvk = kube::api::GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance");
    let vmis: Option<Store<ferry_api::VirtualMachineInstance>> = match (
        cfg.lab,
        kube::discovery::pinned_kind(&client, &vmi_gvk).await,
    ) {
        (true, Ok(_)) => Some(reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            wake_tx.clone(),
        )),
        _ => None,
    };

    let (mut runner, mut transitions) = ProbeRunner::new(4096);
    let mut scheduled: BTreeMap<String, ProbeSpec> = BTreeMap::new();
    let mut probe_netns: BTreeMap<String, Sandbox> = BTreeMap::new();
    let socket_lb = crate::socket_lb::start_for_agent(&client, &cfg, shutdown.clone()).await;
    // `in_agent: false`: `ferry dns` serves this node's share (a process of its own).
    let mut node_dns = match cfg.dns.as_ref().filter(|d| d.in_agent) {
        Some(d) => match crate::dns::NodeDns::start(client.clone(), d) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "not serving the cluster DNS");
                None
            }
        },
        None => None,
    };
    let mut node_iface: Option<Sandbox> = None;
    // Real node: the plumbed request, when it was last verified, when to retry a failure
    // and the last problem logged (so a bad annotation is not logged every tick).
    let mut host_iface: Option<(crate::plumb::PlumbRequest, std::time::Instant)> = None;
    let mut host_iface_retry = std::time::Instant::now();
    let mut host_iface_problem = String::new();
    let mut sandboxes: BTreeMap<String, Sandbox> = BTreeMap::new();
    let mut pod_prep =
        crate::lab_pods::PodPrep::new(cfg.state_dir.join(format!("tokens-{}", cfg.node)));
    let mut written_status: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    // Lab sandboxes start in the background, PARALLEL_STARTS at a time; each one joins
    // `sandboxes` (and gets its status) as soon as it is up, not after a whole batch.
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<(String, StartResult)>();
    let start_slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL_STARTS));
    let mut in_flight: BTreeSet<String> = BTreeSet::new();
    let mut finished: Vec<(String, StartResult)> = Vec::new();
    let mut last_dpu_refusal = String::new();
    // The DPU renews its own Lease (crate::dpu_agent); the host keeps the agent's.
    if !duties.dpu_lease {
        tokio::spawn(keep_lease(
            client.clone(),
            cfg.node.clone(),
            cfg.lease,
            shutdown.clone(),
        ));
    }
    let mut reports = Reports::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = wake.recv() => {}
            _ = tick.tick() => {}
            Some(ev) = transitions.recv() => {
                write_probe_status(&client, &ev.id, &ev.transition, &cfg.node);
                // Only probes still assigned here are written again later.
                if scheduled.contains_key(&ev.id) {
                    reports.transition(&ev.id, ev.transition, std::time::Instant::now());
                }
                continue;
            }
            Some(done) = started_rx.recv() => finished.push(done),
            _ = shutdown.changed() => break,
        }
        ferry_metrics::agent().node_state(&cfg.node, sandboxes.len(), runner.len());
        let me = nodes.get(&reflector::ObjectRef::new(&cfg.node));
        // Probe namespaces: one per VPC, on the probe port the controller gave this node.
        if let Some(me) = &me {
            let ports = ferry_api::probe_ports(me.annotations());
            // A `dpu-host` runs no probes: its DPU does, with the node's probe ports.
            for (vpc, p) in ports.iter().filter(|_| duties.probes) {
                if probe_netns.contains_key(vpc) {
                    continue;
                }
                let Some(addr) = p.address(vpc) else {
                    continue;
                };
                let w = Workload {
                    key: format!("probe/{}/{vpc}", cfg.node),
                    uid: String::new(),
                    netns: crate::dns::probe_netns(&cfg.node, vpc),
                    iface_id: ferry_net::port_name(ferry_net::PortKind::Probe, vpc, &cfg.node),
                    mac: addr.mac.clone(),
                    ip_cidr: addr.ip_cidr(),
                    gateway: addr.gateway.to_string(),
                    routes: vec![],
                    containers: vec![],
                    restart: RestartPolicy::Never,
                };
                let (rc, rec) = (cfg.runtime.clone(), record.clone());
                match tokio::task::spawn_blocking(move || Sandbox::start(&rc, w, &rec)).await {
                    Ok(Ok(s)) => {
                        tracing::info!(vpc = %vpc, netns = %s.workload.netns, "probe port ready");
                        probe_netns.insert(vpc.clone(), s);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(vpc = %vpc, error = %e, "plumbing the probe port failed")
                    }
                    Err(e) => tracing::warn!(error = %e, "probe port task failed"),
                }
            }
            // The cluster DNS of each VPC answers on this node's probe port there.
            if let Some(nd) = node_dns.as_mut() {
                for (vpc, s) in &probe_netns {
                    let ip = s
                        .workload
                        .ip_cidr
                        .split('/')
                        .next()
                        .and_then(|i| i.parse().ok());
                    if nd.serves(vpc) {
                        continue;
                    }
                    let Some(ip) = ip else { continue };
                    let path = std::path::Path::new("/var/run/netns").join(&s.workload.netns);
                    if let Err(e) = nd.serve_vpc(vpc, &path, ip).await {
                        tracing::warn!(vpc = %vpc, error = %e, "serving the cluster DNS failed; will retry");
                    }
                }
            }
            // The node interface on the join subnet, with routes to services and the
            // default VPC (scenario 2). In the lab the node is a namespace of its own.
            let a = me.annotations();
            if cfg.lab
                && duties.node_interface
                && node_iface.is_none()
                && let (Some(ip), Some(mac), Some(gw), Some(cidr)) = (
                    a.get(ferry_api::ANNOTATION_IP),
                    a.get(ferry_api::ANNOTATION_MAC),
                    a.get(ferry_api::ANNOTATION_GATEWAY),
                    a.get(ferry_api::ANNOTATION_CIDR),
                )
            {
                let mut routes = vec![(cfg.service_cidr.clone(), gw.clone())];
                if let Some(d) =
                    subnets.get(&reflector::ObjectRef::new(ferry_api::DEFAULT_POD_SUBNET))
                {
                    routes.push((d.spec.cidr_block.clone(), gw.clone()));
                }
                let w = Workload {
                    key: format!("node/{}", cfg.node),
                    uid: String::new(),
                    netns: format!("ferry-{}", cfg.node),
                    iface_id: ferry_net::port_name(ferry_net::PortKind::Node, "", &cfg.node),
                    mac: mac.clone(),
                    ip_cidr: format!("{ip}/{}", cidr.split('/').nth(1).unwrap_or("16")),
                    gateway: gw.clone(),
                    routes,
                    containers: vec![],
                    restart: RestartPolicy::Never,
                };
                let (rc, rec) = (cfg.runtime.clone(), record.clone());
                if let Ok(Ok(s)) =
                    tokio::task::spawn_blocking(move || Sandbox::start(&rc, w, &rec)).await
                {
                    tracing::info!(netns = %s.workload.netns, "node interface ready");
                    if let Some(d) = &cfg.dns
                        && let Err(e) = crate::dns::write_resolv_conf(
                            &s.workload.netns,
                            &crate::dns::resolv_conf(d, None),
                        )
                    {
                        tracing::warn!(error = %e, "writing the node's resolv.conf failed");
                    }
                    node_iface = Some(s);
                }
            }
            if let (Some(svcs), Some(n), Some(ip)) = (
                &k8s_services,
                &node_iface,
                a.get(ferry_api::ANNOTATION_IP).and_then(|i| i.parse().ok()),
            ) {
                let state = svcs.state();
                let ports = crate::node_ports::node_ports(state.iter().map(|s| s.as_ref()));
                let script = crate::node_ports::ruleset(ip, &ports);
                if script != node_port_rules {
                    let netns = n.workload.netns.clone();
                    let s2 = script.clone();
                    let applied = tokio::task::spawn_blocking(move || {
                        crate::node_ports::enable_forwarding(Some(&netns))?;
                        crate::node_ports::apply(Some(&netns), &s2)
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
                    match applied {
                        Ok(()) => node_port_rules = script,
                        Err(e) => {
                            tracing::warn!(error = %e, "programming node ports failed; will retry")
                        }
                    }
                }
            }
            // On a real node: in the host's own namespace, without a default route. Its
            // routes come from the Subnets, so it waits for their first list: plumbed
            // earlier, it would lack the pod routes and be re-plumbed a moment later.
            let subnets_listed = subnets.wait_until_ready().now_or_never().is_some();
            if let (false, Some(ifname), true) = (cfg.lab, &cfg.node_interface, subnets_listed) {
                let target = node_iface::Target {
                    ifname: ifname.clone(),
                    netns: node_iface::own_netns().to_path_buf(),
                };
                let routed = node_iface::routed_cidrs(
                    service_cidr,
                    subnets.state().iter().map(|s| s.as_ref()),
                );
                match node_iface::request(&cfg.node, a, &routed, &target, &cfg.runtime) {
                    Ok(Some(req)) => {
                        let due = match &host_iface {
                            Some((cur, verified)) => {
                                *cur != req || verified.elapsed() >= NODE_IFACE_RECHECK
                            }
                            None => true,
                        };
                        if due && std::time::Instant::now() >= host_iface_retry {
                            let (r, rec) = (req.clone(), record.clone());
                            match tokio::task::spawn_blocking(move || node_iface::ensure(&r, &rec))
                                .await
                            {
                                Ok(Ok(done)) => {
                                    let kept = done == node_iface::Ensured::Kept;
                                    if !kept || host_iface.is_none() {
                                        tracing::info!(ifname = %req.ifname, address = %req.ip_cidr,
                                            routes = ?req.routes, kept, "node interface ready");
                                    }
                                    host_iface = Some((req, std::time::Instant::now()));
                                    host_iface_problem.clear();
                                }
                                Ok(Err(e)) => {
                                    host_iface_retry = std::time::Instant::now() + NODE_IFACE_RETRY;
                                    if e.to_string() != host_iface_problem {
                                        tracing::warn!(ifname = %req.ifname, error = %e, "plumbing the node interface failed");
                                        host_iface_problem = e.to_string();
                                    }
                                }
                                Err(e) => tracing::warn!(error = %e, "node interface task failed"),
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if e.to_string() != host_iface_problem {
                            tracing::warn!(error = %e, "cannot plumb the node interface");
                            host_iface_problem = e.to_string();
                        }
                    }
                }
            }
        }
        // Probes: schedule what is assigned here, drop what is gone.
        let mut want = BTreeSet::new();
        for p in probes.state() {
            let Some(ns) = probe_netns.get(&p.spec.target.vpc) else {
                continue;
            };
            let Some(spec) = probe_spec(&p, netns_admin::netns_path(&ns.workload.netns)) else {
                continue;
            };
            want.insert(spec.id.clone());
            if scheduled.get(&spec.id) != Some(&spec) {
                if let Err(e) = runner.upsert(spec.clone()) {
                    tracing::warn!(probe = %spec.id, error = %e, "scheduling a probe failed");
                    continue;
                }
                scheduled.insert(spec.id.clone(), spec);
            }
        }
        for gone in scheduled
            .keys()
            .filter(|k| !want.contains(*k))
            .cloned()
            .collect::<Vec<_>>()
        {
            runner.remove(&gone);
            scheduled.remove(&gone);
            reports.forget(&gone);
        }
        // Results the status does not show (a write lost, or the controller marked them
        // Unknown while this agent's Lease had lapsed) are written again.
        let stored = |id: &str| {
            let (ns, name) = id.split_once('/')?;
            probes
                .get(&reflector::ObjectRef::new(name).within(ns))
                .and_then(|p| p.status.clone())
        };
        for (id, t) in reports.rewrites(&cfg.node, std::time::Instant::now(), stored) {
            tracing::info!(probe = %id, phase = t.to.as_str(), "writing probe status again");
            write_probe_status(&client, &id, &t, &cfg.node);
        }
        // The lab runtime.
        if let (Some(pods), Some(bms), Some(vnics)) = (&pods, &bms, &vnics) {
            let mut desired: BTreeMap<String, Workload> = BTreeMap::new();
            // Pods are plumbed where they run (`full`, `dpu-host`); the lab's other hosts
            // (bare metal, VMIs, VNICs) sit where OVS is (`full`, `dpu`: on the DPU).
            let live: Vec<Arc<Pod>> = pods
                .state()
                .into_iter()
                .filter(|p| duties.plumb_pods && p.metadata.deletion_timestamp.is_none())
                .collect();
            for w in pod_prep.workloads(&client, &live).await {
                desired.insert(w.key.clone(), w);
            }
            for bm in bms
                .state()
                .iter()
                .filter(|_| duties.ovs_ports)
                .filter(|b| b.spec.node_name.as_deref() == Some(cfg.node.as_str()))
            {
                let st = bm.status.clone().unwrap_or_default();
                if let Some(w) = host_workload(
                    ferry_net::PortKind::BareMetal,
                    &bm.metadata,
                    &bm.spec.subnet,
                    st.ip_address.as_ref(),
                    st.mac_address.as_ref(),
                    &subnets,
                ) {
                    desired.insert(w.key.clone(), w);
                }
            }
            for vmi in vmis
                .iter()
                .flat_map(|s| s.state())
                .filter(|_| duties.ovs_ports)
            {
                if vmi.status.as_ref().and_then(|s| s.node_name.as_deref())
                    != Some(cfg.node.as_str())
                    || vmi.metadata.deletion_timestamp.is_some()
                {
                    continue;
                }
                let a = vmi.annotations();
                if let Some(subnet) = a.get(ferry_api::ANNOTATION_SUBNET)
                    && let Some(w) = host_workload(
                        ferry_net::PortKind::Vmi,
                        &vmi.metadata,
                        subnet,
                        a.get(ferry_api::ANNOTATION_IP),
                        a.get(ferry_api::ANNOTATION_MAC),
                        &subnets,
                    )
                {
                    desired.insert(w.key.clone(), w);
                }
            }
            for v in vnics
                .state()
                .iter()
                .filter(|_| duties.ovs_ports)
                .filter(|b| b.spec.node_name.as_deref() == Some(cfg.node.as_str()))
            {
                let st = v.status.clone().unwrap_or_default();
                let (ip, mac) = if v.spec.subnet == ferry_net::EXTERNAL_SWITCH {
                    (v.spec.ip_address.as_ref(), v.spec.mac_address.as_ref())
                } else {
                    (st.ip_address.as_ref(), st.mac_address.as_ref())
                };
                if let Some(w) = host_workload(
                    ferry_net::PortKind::VNicIP,
                    &v.metadata,
                    &v.spec.subnet,
                    ip,
                    mac,
                    &subnets,
                ) {
                    desired.insert(w.key.clone(), w);
                }
            }
            // Sandboxes that came up since the last pass (stopped below if no longer wanted).
            while let Ok(done) = started_rx.try_recv() {
                finished.push(done);
            }
            for (key, r) in finished.drain(..) {
                in_flight.remove(&key);
                match r {
                    Ok(Ok(s)) => {
                        // `dpu-host`: tell the DPU which representor to bind; a VF the DPU
                        // is not told of is undone, as CNI ADD does (docs/dpu.md).
                        // (A hostNetwork pod, in the agent's own namespace, has none.)
                        let host = s.workload.netns.is_empty();
                        if duties.needs_dpu
                            && key.starts_with("pod/")
                            && !host
                            && let Err(e) = announce_vf(&client, &key, Some(s.host_end())).await
                        {
                            tracing::warn!(workload = %key, error = %e, "announcing the VF failed; unplumbed, will retry");
                            let rec = record.clone();
                            let _ = tokio::task::spawn_blocking(move || s.stop(&rec)).await;
                            continue;
                        }
                        tracing::info!(workload = %key, netns = %s.workload.netns, "started");
                        // Pods resolve through the cluster DNS, searching their namespace.
                        if let (Some(d), Some(rest), false) =
                            (&cfg.dns, key.strip_prefix("pod/"), host)
                        {
                            let ns = rest.split('/').next();
                            if let Err(e) = crate::dns::write_resolv_conf(
                                &s.workload.netns,
                                &crate::dns::resolv_conf(d, ns),
                            ) {
                                tracing::warn!(workload = %key, error = %e, "writing resolv.conf failed");
                            }
                        }
                        if let (Some(lb), false) = (&socket_lb, host) {
                            lb.lab_sandbox_started(&key, &s.workload.netns, pods);
                        }
                        sandboxes.insert(key, s);
                    }
                    Ok(Err(e)) => tracing::warn!(workload = %key, error = %e, "starting failed"),
                    Err(e) => tracing::warn!(error = %e, "start task failed"),
                }
            }
            for key in sandboxes
                .keys()
                .filter(|k| desired.get(*k) != sandboxes.get(*k).map(|s| &s.workload))
                .cloned()
                .collect::<Vec<_>>()
            {
                if let Some(s) = sandboxes.remove(&key) {
                    if let Some(lb) = &socket_lb {
                        lb.sandbox_stopped(&key);
                    }
                    if cfg.dns.is_some() && !s.workload.netns.is_empty() {
                        crate::dns::remove_resolv_conf(&s.workload.netns);
                    }
                    s.remove_logs(&cfg.runtime);
                    let rec = record.clone();
                    let _ = tokio::task::spawn_blocking(move || s.stop(&rec)).await;
                    written_status.remove(&key);
                }
            }
            // A `dpu-host` plumbs no new pod while its DPU agent's Lease has lapsed.
            let dpu_refusal = match duties.needs_dpu
                && desired
                    .keys()
                    .any(|k| !sandboxes.contains_key(k) && !in_flight.contains(k))
            {
                true => dpu_admits(&client, &cfg.node).await.err(),
                false => None,
            };
            if let Some(why) = &dpu_refusal
                && *why != last_dpu_refusal
            {
                tracing::warn!(node = %cfg.node, reason = %why, "refusing new pods");
            }
            last_dpu_refusal = dpu_refusal.clone().unwrap_or_default();
            // Start what is missing, in the background (each start is a few `ip` and
            // `ovs-vsctl` calls); a start that fails is tried again on a later pass.
            for (key, w) in desired {
                if dpu_refusal.is_some()
                    || sandboxes.contains_key(&key)
                    || !in_flight.insert(key.clone())
                {
                    continue;
                }
                let (rc, rec) = (cfg.runtime.clone(), record.clone());
                let (slots, tx) = (start_slots.clone(), started_tx.clone());
                tokio::spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    let r = tokio::task::spawn_blocking(move || Sandbox::start(&rc, w, &rec)).await;
                    let _ = tx.send((key, r));
                });
            }
            // Restarts and due probes of every sandbox, side by side.
            let (rc, rec) = (&cfg.runtime, &record);
            futures::future::join_all(sandboxes.values_mut().map(|s| s.tick(rc, rec))).await;
            pod_directory.update(rc, sandboxes.values());
            let host_ip = me
                .as_ref()
                .and_then(|n| n.annotations().get(ferry_api::ANNOTATION_IP).cloned());
            let mut writes = Vec::new();
            for (key, s) in sandboxes.iter() {
                let Some(rest) = key.strip_prefix("pod/") else {
                    continue;
                };
                let Some((ns, name)) = rest.split_once('/') else {
                    continue;
                };
                let prev = written_status.get(key).map(|v| &v["status"]);
                let status = json!({"status": crate::pod_status::status(
                    &s.observed(host_ip.clone()),
                    prev,
                    Timestamp::now(),
                )});
                if written_status.get(key) != Some(&status) {
                    writes.push((key.clone(), ns.to_string(), name.to_string(), status));
                }
            }
            // Status writes side by side (a burst of new pods is many writes).
            let written: Vec<(String, serde_json::Value)> = futures::stream::iter(writes)
                .map(|(key, ns, name, status)| {
                    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                    async move {
                        match api
                            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                            .await
                        {
                            Ok(_) => Some((key, status)),
                            Err(e) => {
                                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "writing pod status failed");
                                None
                            }
                        }
                    }
                })
                .buffer_unordered(PARALLEL_STARTS * 2)
                .filter_map(|w| async move { w })
                .collect()
                .await;
            written_status.extend(written);
        }
    }
    // Shutdown: wait for sandboxes still starting, so they are stopped with the others.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (key, r) in finished.drain(..) {
        in_flight.remove(&key);
        if let Ok(Ok(s)) = r {
            sandboxes.insert(key, s);
        }
    }
    while !in_flight.is_empty() {
        match tokio::time::timeout_at(deadline, started_rx.recv()).await {
            Ok(Some((key, r))) => {
                in_flight.remove(&key);
                if let Ok(Ok(s)) = r {
                    sandboxes.insert(key, s);
                }
            }
            _ => break,
        }
    }
    // The socket LB withdraws its announcement, then unpins and detaches (before the pods
    // go: they are still translated meanwhile).
    if let Some(lb) = &socket_lb {
        lb.finished(Duration::from_secs(10)).await;
    }
    // Stop what runs here and remove the namespaces.
    if let Some(nd) = node_dns {
        nd.stop();
    }
    if cfg.dns.is_some() {
        for s in sandboxes.values().chain(node_iface.iter()) {
            crate::dns::remove_resolv_conf(&s.workload.netns);
        }
    }
    let rec = record.clone();
    let mut all: Vec<Sandbox> = sandboxes
        .into_values()
        .chain(probe_netns.into_values())
        .chain(node_iface)
        .collect();
    let _ = tokio::task::spawn_blocking(move || {
        for s in all.drain(..) {
            s.stop(&rec);
        }
        if let Some((req, _)) = host_iface
            && let Err(e) = node_iface::remove(&req, &rec)
        {
            tracing::warn!(ifname = %req.ifname, error = %e, "removing the node interface failed");
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
#[path = "node/partition_tests.rs"]
mod partition_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a pod deleted and created again under the same name and address between
    /// two passes kept the old sandbox and its written status, so it stayed Pending.
    #[test]
    fn a_pod_created_again_under_its_name_is_a_new_workload() {
        let pod = |uid: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "again", "namespace": "default", "uid": uid,
                "annotations": {"iaas.yusur.io/ip_address": "10.16.0.200", "iaas.yusur.io/mac_address": "0a:00:00:00:00:01",
                    "iaas.yusur.io/subnet": "ovn-default", "iaas.yusur.io/cidr": "10.16.0.0/16", "iaas.yusur.io/gateway": "10.16.0.1"}},
                "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "x", "command": ["sleep", "infinity"]}]}}))
            .expect("pod")
        };
        let (a, b) = (pod_workload(&pod("u1")), pod_workload(&pod("u2")));
        let (a, b) = (a.expect("a workload"), b.expect("a workload"));
        assert_eq!(a.key, b.key);
        assert_ne!(a, b);
        assert_eq!(Some(a), pod_workload(&pod("u1")));
    }

    /// Regression: the start-up patch was a JSON merge patch of `conditions` holding only
    /// `Ready`, which replaced every kubelet condition on a real node.
    #[test]
    fn readiness_patch_leaves_kubelet_conditions_alone_on_a_real_node() {
        let now = "2026-01-01T00:00:00Z";
        let cond = |t: &str| {
            json!({"type": t, "status": "True", "reason": "FerryAgentReady",
                "message": "the Ferry agent runs on this node", "lastHeartbeatTime": now,
                "lastTransitionTime": now})
        };
        let ip: std::net::Ipv4Addr = "198.18.0.11".parse().expect("ip");
        let cases = [
            (
                "real node",
                false,
                None,
                json!({"status": {"conditions": [cond("FerryAgentReady")]}}),
            ),
            (
                "lab node (the agent is its kubelet)",
                true,
                None,
                json!({"status": {"conditions": [cond("Ready"), cond("FerryAgentReady")]}}),
            ),
            (
                "real node with an external address",
                false,
                Some(ip),
                json!({"status": {"conditions": [cond("FerryAgentReady")],
                    "addresses": [{"type": "ExternalIP", "address": "198.18.0.11"},
                                  {"type": "Hostname", "address": "n1"}]}}),
            ),
        ];
        for (name, lab, external_ip, want) in cases {
            assert_eq!(readiness_patch(lab, "n1", external_ip, now), want, "{name}");
        }
    }
}
