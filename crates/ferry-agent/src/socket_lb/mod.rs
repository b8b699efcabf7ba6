//! The agent's socket-level load balancer (`ferry agent --socket-lb`, issue 18): the
//! [`ferry_sock`] BPF programs attached at the cgroup v2 root, programmed from what the
//! service side publishes, so a Ferry pod's service connections never carry the VIP and
//! skip OVN's load balancer and conntrack.
//!
//! It owns three things and decides nothing about health:
//! - **which sockets**: the network namespaces of pod sandboxes on this node, each with the
//!   number of its VPC ([`desired::VpcIds`]). In the lab the runtime reports them
//!   ([`SocketLbHandle::lab_sandbox_started`] / [`SocketLbHandle::sandbox_stopped`]); on a
//!   real node `ferry cni` ADD/DEL writes [`sandbox_record`]s that this module reads (with
//!   a watch on this node's Pods for their VPC). VMs, bare-metal hosts, VNicIPs, probe
//!   ports and the node itself are never registered: they keep OVN's load balancers, as
//!   does every client elsewhere (EIPs, other nodes).
//! - **what to program**: YusurServices (status.clusterIP, ports, affinity, VPCs) and
//!   ordinary `v1 Service`s (default VPC), each with the ready endpoints of its
//!   EndpointSlices, which the controller writes with healthy backends only;
//!   [`desired`] turns them into map entries.
//! - **when**: every watch event names the services it touches (an EndpointSlice names its
//!   service by label), and only those are planned and written ([`SocketLb::apply_changes`],
//!   on the blocking pool), so a probe flip reaches the kernel map one watch hop after the
//!   controller writes the slice. A relist, a Subnet change or a VPC's first pod on this
//!   node re-plans everything (the planner still writes only what changed).
//!
//! If the programs cannot be loaded (no root, old kernel) the agent runs without: OVN's load
//! balancers serve every client as before.
//!
//! **Restarts.** The maps and links are pinned in `/sys/fs/bpf/ferry/NODE`
//! ([`ferry_sock::SocketLb::load_pinned`]) when `/sys/fs/bpf` is a bpffs, so the socket LB
//! keeps translating while the agent is down (a crash, `kill -9`): its pods stay in the
//! socket-LB port group meanwhile, which is only correct while something translates. A
//! restarted agent adopts the pins (same links, same maps), keeps its announcement, holds
//! its writes until every store has listed, then swaps in maps rebuilt from that state in
//! one go. The liveness guard stops translation [`LIVENESS_GRACE`] past the agent's Lease
//! after its last heartbeat, later than the controller takes a dead agent's pods out of the
//! port group. A clean stop (SIGTERM) withdraws the announcement, then unpins and detaches.
//! Without a bpffs the socket LB is not pinned and detaches with the agent, as before.
//!
//! Over 600 lines: the watches and the map writes share one task's state; the pure
//! planning already lives in `desired.rs`.

pub mod desired;
pub mod sandbox_record;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_api::{Subnet, YusurService};
use ferry_sock::{MapSizes, ServiceKey, ServiceSpec, SockLbError, SocketLb};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use desired::{Entries, VpcIds, VpcSubnets};

/// How the socket LB runs.
#[derive(Debug, Clone)]
pub struct SocketLbConfig {
    /// The cgroup v2 directory the programs attach to; `None` = the cgroup2 mount's root
    /// (every process on the node).
    pub cgroup: Option<PathBuf>,
    /// Real node: where `ferry cni` records sandboxes ([`sandbox_record`]). `None` in the
    /// lab, whose runtime reports its sandboxes directly.
    pub sandbox_dir: Option<PathBuf>,
    pub sizes: MapSizes,
    /// Where the maps and links are pinned (a directory on a bpffs, one per node); `None`:
    /// [`default_pin_dir`] if `/sys/fs/bpf` is a bpffs, else not pinned.
    pub pin_dir: Option<PathBuf>,
    /// How long the pinned programs keep translating after the agent's last heartbeat
    /// ([`start_for_agent`]: the agent Lease's duration plus [`LIVENESS_GRACE`]).
    pub liveness_ttl: Duration,
}

/// Where the bpffs is mounted on a node.
pub const BPFFS: &str = "/sys/fs/bpf";

/// How long past the agent's Lease the pinned programs keep translating after the agent's
/// last heartbeat: the controller takes a dead agent's pods out of the socket-LB port
/// group when its Lease lapses, and its pods must fall back to OVN's load balancers only
/// after that (both orders are wrong the other way round only while they overlap).
pub const LIVENESS_GRACE: Duration = Duration::from_secs(5);

/// How often the agent moves the liveness deadline forward.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// `/sys/fs/bpf/ferry/NODE`.
pub fn default_pin_dir(node: &str) -> PathBuf {
    Path::new(BPFFS).join("ferry").join(node)
}

/// Removes the pins a node's socket LB left in [`default_pin_dir`] (`ferry lab down`, an
/// uninstall); true when there were some. Its programs detach with them (unless an agent
/// still runs and holds them).
pub fn remove_pins(node: &str) -> std::io::Result<bool> {
    ferry_sock::remove_pinned(&default_pin_dir(node))
}

/// Whether `path` is a bpffs mount (statfs magic `BPF_FS_MAGIC`).
pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

impl SocketLbConfig {
    /// The lab's: sandboxes come from the lab runtime.
    pub fn lab() -> SocketLbConfig {
        SocketLbConfig {
            cgroup: None,
            sandbox_dir: None,
            sizes: MapSizes::default(),
            pin_dir: None,
            liveness_ttl: ferry_api::AgentLeaseTiming::KUBELET.duration + LIVENESS_GRACE,
        }
    }

    /// A real node's: sandboxes come from `ferry cni`'s records.
    pub fn node() -> SocketLbConfig {
        SocketLbConfig {
            sandbox_dir: Some(sandbox_record::DEFAULT_SANDBOX_DIR.into()),
            ..SocketLbConfig::lab()
        }
    }
}

/// Why the socket LB could not start.
#[derive(Debug, thiserror::Error)]
pub enum SocketLbError {
    #[error("no cgroup v2 mount in /proc/self/mountinfo")]
    NoCgroup2,
    #[error(transparent)]
    Kernel(#[from] SockLbError),
    #[error("loading the socket LB: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A service as its source names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum SvcRef {
    Yusur(String, String),
    Kube(String, String),
}

enum Msg {
    /// These services changed.
    Dirty(Vec<SvcRef>),
    /// Re-plan everything (a relist, a Subnet change).
    All,
    SandboxUp {
        key: String,
        cookie: u64,
        vpc: String,
    },
    SandboxDown {
        key: String,
    },
    /// Every store has listed: program everything, then announce the socket LB on the
    /// Node ([`ferry_api::ANNOTATION_SOCKET_LB`]).
    Synced,
}

/// The running socket LB: cheap to clone; the programs stay attached while the task runs
/// (until the agent's shutdown).
#[derive(Clone)]
pub struct SocketLbHandle {
    tx: mpsc::UnboundedSender<Msg>,
    lb: Arc<Mutex<SocketLb>>,
    /// Turns true when the task has stopped (unpinned and detached).
    finished: watch::Receiver<bool>,
}

impl std::fmt::Debug for SocketLbHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketLbHandle").finish_non_exhaustive()
    }
}

impl SocketLbHandle {
    /// Lab runtime: a sandbox `key` (`pod/NS/NAME`; other kinds are ignored, they keep
    /// OVN's load balancers) started in the named network namespace; its VPC comes from
    /// the pod's `iaas.yusur.io/vpc` annotation.
    pub fn lab_sandbox_started(&self, key: &str, netns: &str, pods: &Store<Pod>) {
        let Some((ns, name)) = key.strip_prefix("pod/").and_then(|r| r.split_once('/')) else {
            return;
        };
        let Some(vpc) = pods
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|p| p.annotations().get(ferry_api::ANNOTATION_VPC).cloned())
        else {
            warn!(pod = %key, "no VPC annotation: the pod keeps OVN's load balancers");
            return;
        };
        let path = crate::netns_admin::netns_path(netns);
        match ferry_sock::netns_cookie_of_path(&path) {
            Ok(cookie) => {
                let _ = self.tx.send(Msg::SandboxUp {
                    key: key.to_string(),
                    cookie,
                    vpc,
                });
            }
            Err(e) => warn!(pod = %key, error = %e, "socket LB: no netns cookie"),
        }
    }

    /// Waits (at most `limit`) until the task has stopped after the shutdown signal: the
    /// announcement withdrawn, the pins removed, the programs detached.
    pub async fn finished(&self, limit: Duration) {
        let mut f = self.finished.clone();
        let _ = tokio::time::timeout(limit, f.wait_for(|done| *done)).await;
    }

    /// A sandbox stopped: its namespace is no longer translated.
    pub fn sandbox_stopped(&self, key: &str) {
        let _ = self.tx.send(Msg::SandboxDown {
            key: key.to_string(),
        });
    }

    /// Reads one service back from the kernel maps (slot addresses), for checks.
    pub fn kernel_backends(
        &self,
        key: &ServiceKey,
    ) -> Result<Option<Vec<std::net::SocketAddrV4>>, SockLbError> {
        let lb = self.lb.lock().map_err(|_| poisoned())?;
        Ok(lb.kernel_service(key)?.map(|(_, slots)| slots))
    }

    /// The registered namespaces (cookie -> VPC number).
    pub fn netns(&self) -> BTreeMap<u64, ferry_sock::VpcId> {
        self.lb
            .lock()
            .map(|lb| lb.netns().clone())
            .unwrap_or_default()
    }
}

fn poisoned() -> SockLbError {
    SockLbError::NetnsCookie {
        what: "socket LB state".into(),
        source: std::io::Error::other("a thread panicked while holding the socket LB"),
    }
}

/// Loads and attaches the programs (adopting pinned ones) and starts watching; runs until
/// `shutdown` turns true, then unpins and detaches (OVN's load balancers take over).
pub async fn start(
    client: Client,
    node: &str,
    cfg: SocketLbConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<SocketLbHandle, SocketLbError> {
    let cgroup = match &cfg.cgroup {
        Some(c) => c.clone(),
        None => ferry_sock::cgroup2_mount().ok_or(SocketLbError::NoCgroup2)?,
    };
    let pin_dir = cfg
        .pin_dir
        .clone()
        .or_else(|| is_bpffs(Path::new(BPFFS)).then(|| default_pin_dir(node)));
    let (sizes, ttl) = (cfg.sizes, cfg.liveness_ttl);
    let pin = pin_dir.map(|dir| ferry_sock::PinConfig { dir, ttl });
    let (lb, adopted) = tokio::task::spawn_blocking(move || match pin {
        Some(pin) => SocketLb::load_pinned(&cgroup, sizes, &pin)
            .map(|(lb, a)| (lb, (a.adopted, a.adopted && !a.expired))),
        None => {
            warn!("no bpffs at {BPFFS}: the socket LB is not pinned and detaches with the agent");
            SocketLb::load(&cgroup, sizes).map(|lb| (lb, (false, false)))
        }
    })
    .await??;
    let (adopted, translating) = adopted;
    // Adopted and still within its deadline: the previous run's programs kept
    // translating, its announcement stays true. Otherwise a previous run may have died
    // with its announcement on the Node: take it back (its pods leave the stateless port
    // group until this run has programmed everything).
    if !translating {
        announce(&client, node, false).await;
    }
    // The VPC numbers of the adopted maps (the names the previous run recorded), so the
    // first write already numbers every VPC as the maps do.
    let mut ids = VpcIds::default();
    for (id, name) in lb.vpc_names() {
        ids.adopt(&name, id);
    }
    ids.reserve(lb.netns().values().copied());
    let lb = Arc::new(Mutex::new(lb));
    let (tx, rx) = mpsc::unbounded_channel();
    let stores = Stores {
        ysvcs: reflect(Api::all(client.clone()), watcher::Config::default(), &tx),
        services: reflect(Api::all(client.clone()), watcher::Config::default(), &tx),
        slices: reflect(Api::all(client.clone()), watcher::Config::default(), &tx),
        subnets: reflect(Api::all(client.clone()), watcher::Config::default(), &tx),
        pods: cfg.sandbox_dir.as_ref().map(|_| {
            reflect(
                Api::all(client.clone()),
                watcher::Config::default().fields(&format!("spec.nodeName={node}")),
                &tx,
            )
        }),
    };
    let synced = {
        let (s, tx) = (stores.clone(), tx.clone());
        async move {
            if s.wait_until_ready().await {
                let _ = tx.send(Msg::Synced);
            }
        }
    };
    tokio::spawn(synced);
    let (finished_tx, finished) = watch::channel(false);
    let handle = SocketLbHandle {
        tx,
        lb: lb.clone(),
        finished,
    };
    let task = Task {
        client,
        node: node.to_string(),
        lb,
        stores,
        ids,
        owned: BTreeMap::new(),
        sandboxes: BTreeMap::new(),
        sandbox_dir: cfg.sandbox_dir,
        adopted,
        announced: translating,
    };
    tokio::spawn(async move {
        task.run(rx, shutdown).await;
        let _ = finished_tx.send(true);
    });
    info!(node, adopted, "socket LB attached");
    Ok(handle)
}

/// The agent's entry point: starts the socket LB when `cfg.socket_lb` asks for it. A
/// failure is logged and the agent runs on without it (OVN's load balancers serve).
pub async fn start_for_agent(
    client: &Client,
    cfg: &crate::node::AgentConfig,
    shutdown: watch::Receiver<bool>,
) -> Option<SocketLbHandle> {
    let mut lb = cfg.socket_lb.clone()?;
    lb.liveness_ttl = cfg.lease.duration + LIVENESS_GRACE;
    match start(client.clone(), &cfg.node, lb, shutdown).await {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = %e, "socket LB not started: pods use OVN's load balancers");
            None
        }
    }
}

/// What a watch event means for the socket LB.
trait Touches: Resource + Sized {
    fn touches(&self) -> Vec<SvcRef>;
}

fn ns_name<K: Resource>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

impl Touches for YusurService {
    fn touches(&self) -> Vec<SvcRef> {
        let (ns, name) = ns_name(self);
        vec![SvcRef::Yusur(ns, name)]
    }
}

impl Touches for Service {
    fn touches(&self) -> Vec<SvcRef> {
        let (ns, name) = ns_name(self);
        vec![SvcRef::Kube(ns, name)]
    }
}

impl Touches for EndpointSlice {
    fn touches(&self) -> Vec<SvcRef> {
        let ns = self.namespace().unwrap_or_default();
        match self.labels().get(desired::SERVICE_NAME_LABEL) {
            Some(svc) => vec![
                SvcRef::Yusur(ns.clone(), svc.clone()),
                SvcRef::Kube(ns, svc.clone()),
            ],
            None => vec![],
        }
    }
}

/// Subnets and Pods change what every service means (a backend's VPC) or which sandbox
/// belongs where: re-plan everything.
impl Touches for Subnet {
    fn touches(&self) -> Vec<SvcRef> {
        vec![]
    }
}

impl Touches for Pod {
    fn touches(&self) -> Vec<SvcRef> {
        vec![]
    }
}

fn reflect<K>(api: Api<K>, config: watcher::Config, tx: &mpsc::UnboundedSender<Msg>) -> Store<K>
where
    K: Touches + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, crate::watch_restart::restartable(api, config))
        .backoff(ferry_api::WatchBackoff::default());
    let tx = tx.clone();
    tokio::spawn(async move {
        stream
            .for_each(|ev| {
                let msg = match ev {
                    Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => {
                        let refs = o.touches();
                        if refs.is_empty() {
                            Some(Msg::All)
                        } else {
                            Some(Msg::Dirty(refs))
                        }
                    }
                    Ok(watcher::Event::InitDone) => Some(Msg::All),
                    _ => None,
                };
                if let Some(m) = msg {
                    let _ = tx.send(m);
                }
                futures::future::ready(())
            })
            .await;
    });
    reader
}

#[derive(Clone)]
struct Stores {
    ysvcs: Store<YusurService>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    subnets: Store<Subnet>,
    /// Real node: this node's Pods, for the VPC of a recorded sandbox.
    pods: Option<Store<Pod>>,
}

impl Stores {
    /// Waits until every store has listed once; false if a watch ended first.
    async fn wait_until_ready(&self) -> bool {
        let pods_ready = async {
            match &self.pods {
                Some(p) => p.wait_until_ready().await.is_ok(),
                None => true,
            }
        };
        let (a, b, c, d, e) = tokio::join!(
            self.ysvcs.wait_until_ready(),
            self.services.wait_until_ready(),
            self.slices.wait_until_ready(),
            self.subnets.wait_until_ready(),
            pods_ready,
        );
        a.is_ok() && b.is_ok() && c.is_ok() && d.is_ok() && e
    }
}

/// Writes (`on`) or removes [`ferry_api::ANNOTATION_SOCKET_LB`] on this node's Node: the
/// controller puts the pods of an announcing node (with a live agent Lease) in their VPC's
/// socket-LB port group, whose traffic between members skips conntrack and so relies on
/// this socket LB translating every VIP. A failure is logged: unannounced, the pods keep
/// conntrack (always correct, only slower).
async fn announce(client: &Client, node: &str, on: bool) {
    let value = if on {
        serde_json::json!("true")
    } else {
        serde_json::Value::Null
    };
    let patch =
        serde_json::json!({"metadata": {"annotations": {ferry_api::ANNOTATION_SOCKET_LB: value}}});
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    match api
        .patch(
            node,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => info!(node, on, "socket LB announced on the Node"),
        Err(e) => warn!(node, on, error = %e, "socket LB: writing the Node announcement failed"),
    }
}

/// How long a stopping socket LB keeps translating after withdrawing its announcement,
/// so the controller can take its pods out of the stateless port group first.
const WITHDRAW_GRACE: Duration = Duration::from_secs(1);

/// How often a real node's sandbox records are read.
const SANDBOX_POLL: Duration = Duration::from_millis(500);

struct Task {
    client: Client,
    node: String,
    lb: Arc<Mutex<SocketLb>>,
    stores: Stores,
    ids: VpcIds,
    /// The map keys each service programmed.
    owned: BTreeMap<SvcRef, BTreeSet<ServiceKey>>,
    /// Registered sandboxes: key -> netns cookie.
    sandboxes: BTreeMap<String, u64>,
    sandbox_dir: Option<PathBuf>,
    /// The maps were adopted from a previous run: nothing is written before every store
    /// has listed (a partial state would replace the adopted maps' complete one).
    adopted: bool,
    /// The Node carries this node's announcement already (adopted maps still translating).
    announced: bool,
}

impl Task {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut poll = tokio::time::interval(SANDBOX_POLL);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut announced = self.announced;
        let mut synced_once = false;
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => batch.push(m),
                    None => break,
                },
                _ = poll.tick(), if self.sandbox_dir.is_some() => {}
                _ = heartbeat.tick() => {
                    self.keep_alive();
                    continue;
                }
                _ = shutdown.changed() => break,
            }
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
            }
            let mut all = false;
            let mut synced = false;
            let mut dirty = BTreeSet::new();
            if let Some(dir) = self.sandbox_dir.clone() {
                all |= self.sync_records(&dir);
            }
            for m in batch {
                match m {
                    Msg::Dirty(refs) => dirty.extend(refs),
                    Msg::All => all = true,
                    Msg::SandboxUp { key, cookie, vpc } => all |= self.register(key, cookie, &vpc),
                    Msg::SandboxDown { key } => self.unregister(&key),
                    Msg::Synced => {
                        all = true;
                        synced = true;
                    }
                }
            }
            synced_once |= synced;
            if all {
                dirty = self.every_service();
            }
            if !dirty.is_empty() && (synced_once || !self.adopted) {
                self.program(dirty).await;
            }
            if synced && !announced {
                announce(&self.client, &self.node, true).await;
                announced = true;
            }
        }
        if announced {
            announce(&self.client, &self.node, false).await;
            tokio::time::sleep(WITHDRAW_GRACE).await;
        }
        let r = match self.lb.lock() {
            Ok(mut lb) => lb.unpin(),
            Err(_) => Err(poisoned()),
        };
        match r {
            Ok(()) => info!("socket LB detached"),
            Err(e) => warn!(error = %e, "socket LB: removing its pins failed"),
        }
    }

    /// Moves the pinned programs' liveness deadline forward.
    fn keep_alive(&self) {
        let r = match self.lb.lock() {
            Ok(mut lb) => lb.keep_alive(),
            Err(_) => Err(poisoned()),
        };
        if let Err(e) = r {
            warn!(error = %e, "socket LB: the heartbeat failed");
        }
    }

    /// Registers a sandbox's namespace; true when its VPC is new here (its services are
    /// then programmed too).
    fn register(&mut self, key: String, cookie: u64, vpc: &str) -> bool {
        let new_vpc = self.ids.get(vpc).is_none();
        let r = match self.lb.lock() {
            Ok(mut lb) => {
                // A namespace the adopted maps hold keeps its VPC's number.
                let id = match lb.netns().get(&cookie) {
                    Some(old) => self.ids.adopt(vpc, *old),
                    None => self.ids.assign(vpc),
                };
                if new_vpc && let Err(e) = lb.set_vpc_name(id, vpc) {
                    warn!(vpc, error = %e, "socket LB: recording the VPC's number failed");
                }
                lb.set_netns_vpc(cookie, id)
            }
            Err(_) => Err(poisoned()),
        };
        match r {
            Ok(()) => {
                info!(sandbox = %key, vpc, cookie, "socket LB serves the sandbox");
                self.sandboxes.insert(key, cookie);
            }
            Err(e) => {
                warn!(sandbox = %key, error = %e, "socket LB: registering the sandbox failed")
            }
        }
        new_vpc
    }

    fn unregister(&mut self, key: &str) {
        let Some(cookie) = self.sandboxes.remove(key) else {
            return;
        };
        let r = match self.lb.lock() {
            Ok(mut lb) => lb.remove_netns(cookie),
            Err(_) => Err(poisoned()),
        };
        match r {
            Ok(()) => info!(sandbox = %key, cookie, "socket LB no longer serves the sandbox"),
            Err(e) => warn!(sandbox = %key, error = %e, "socket LB: forgetting the sandbox failed"),
        }
    }

    /// Real node: registers recorded sandboxes whose pod's VPC is known, forgets removed
    /// records. True when a VPC is new here.
    fn sync_records(&mut self, dir: &Path) -> bool {
        let records = sandbox_record::read_all(dir);
        let live: BTreeSet<String> = records.iter().map(|(id, _)| format!("cni/{id}")).collect();
        for gone in self
            .sandboxes
            .keys()
            .filter(|k| k.starts_with("cni/") && !live.contains(*k))
            .cloned()
            .collect::<Vec<_>>()
        {
            self.unregister(&gone);
        }
        let mut new_vpc = false;
        for (id, rec) in records {
            let key = format!("cni/{id}");
            if self.sandboxes.contains_key(&key) {
                continue;
            }
            let vpc = self.stores.pods.as_ref().and_then(|pods| {
                pods.get(&ObjectRef::new(&rec.name).within(&rec.namespace))
                    .and_then(|p| p.annotations().get(ferry_api::ANNOTATION_VPC).cloned())
            });
            // Not known yet (the pod watch lags): tried again at the next poll.
            let Some(vpc) = vpc else { continue };
            new_vpc |= self.register(key, rec.cookie, &vpc);
        }
        new_vpc
    }

    /// Every service the stores hold and every one that programmed something.
    fn every_service(&self) -> BTreeSet<SvcRef> {
        let mut out: BTreeSet<SvcRef> = self.owned.keys().cloned().collect();
        for y in self.stores.ysvcs.state() {
            let (ns, name) = ns_name(y.as_ref());
            out.insert(SvcRef::Yusur(ns, name));
        }
        for s in self.stores.services.state() {
            let (ns, name) = ns_name(s.as_ref());
            out.insert(SvcRef::Kube(ns, name));
        }
        out
    }

    /// Plans `dirty` from the stores and writes what changed.
    async fn program(&mut self, dirty: BTreeSet<SvcRef>) {
        let started = Instant::now();
        let subnets = VpcSubnets::new(
            self.stores
                .subnets
                .state()
                .iter()
                .filter_map(|s| Some((s.spec.cidr_block.parse().ok()?, s.spec.vpc.clone()))),
        );
        // Slices by (namespace, service name), built once per batch.
        let mut slices: BTreeMap<(String, String), Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        let want: BTreeSet<(String, String)> = dirty
            .iter()
            .map(|r| match r {
                SvcRef::Yusur(ns, n) | SvcRef::Kube(ns, n) => (ns.clone(), n.clone()),
            })
            .collect();
        for sl in self.stores.slices.state() {
            if let Some(svc) = sl.labels().get(desired::SERVICE_NAME_LABEL) {
                let k = (sl.namespace().unwrap_or_default(), svc.clone());
                if want.contains(&k) {
                    slices.entry(k).or_default().push(sl);
                }
            }
        }
        let mut changes: BTreeMap<ServiceKey, Option<ServiceSpec>> = BTreeMap::new();
        let mut owned_after = Vec::new();
        for r in &dirty {
            let (ns, name) = match r {
                SvcRef::Yusur(ns, n) | SvcRef::Kube(ns, n) => (ns, n),
            };
            let sl: Vec<&EndpointSlice> = slices
                .get(&(ns.clone(), name.clone()))
                .map(|v| v.iter().map(|s| s.as_ref()).collect())
                .unwrap_or_default();
            let entries: Result<Entries, desired::LeftToOvn> = match r {
                SvcRef::Yusur(..) => self
                    .stores
                    .ysvcs
                    .get(&ObjectRef::new(name).within(ns))
                    .map_or(Ok(Entries::new()), |y| {
                        desired::yusur_entries(&y, &sl, &subnets)
                    }),
                SvcRef::Kube(..) => self
                    .stores
                    .services
                    .get(&ObjectRef::new(name).within(ns))
                    .map_or(Ok(Entries::new()), |s| {
                        desired::service_entries(&s, &sl, &subnets)
                    }),
            };
            let entries = entries.unwrap_or_else(|why| {
                debug!(service = ?r, %why, "left to OVN's load balancer");
                Entries::new()
            });
            let keyed = desired::keyed(&entries, &self.ids);
            let before = self.owned.get(r).cloned().unwrap_or_default();
            for (k, v) in desired::changes(&before, &keyed) {
                // Another service's entry for the same key wins over a removal.
                if v.is_some() || !changes.contains_key(&k) {
                    changes.insert(k, v);
                }
            }
            owned_after.push((r.clone(), keyed.into_keys().collect::<BTreeSet<_>>()));
        }
        let lb = self.lb.clone();
        let services = dirty.len();
        let r = tokio::task::spawn_blocking(move || apply(&lb, changes)).await;
        match r {
            Ok(Ok(report)) => {
                for (r, keys) in owned_after {
                    if keys.is_empty() {
                        self.owned.remove(&r);
                    } else {
                        self.owned.insert(r, keys);
                    }
                }
                if report.written > 0 || !report.rejected.is_empty() {
                    info!(
                        services,
                        written = report.written,
                        ops = report.ops,
                        rejected = report.rejected.len(),
                        ms = started.elapsed().as_secs_f64() * 1000.0,
                        changed = %report.changed,
                        "socket LB programmed"
                    );
                }
                for rej in &report.rejected {
                    warn!(service = %rej.key, reason = %rej.reason, "socket LB: service left to OVN");
                }
            }
            Ok(Err(e)) => {
                warn!(error = %e, "socket LB: programming failed; retried at the next change")
            }
            Err(e) => warn!(error = %e, "socket LB: programming task failed"),
        }
    }
}

/// What one write did.
struct Applied {
    written: usize,
    ops: usize,
    rejected: Vec<ferry_sock::Rejected>,
    /// The keys written, for the log (short form).
    changed: String,
}

/// Writes the changes whose spec differs from what the maps hold; grows the maps when
/// some did not fit, and tries those again.
fn apply(
    lb: &Mutex<SocketLb>,
    mut changes: BTreeMap<ServiceKey, Option<ServiceSpec>>,
) -> Result<Applied, SockLbError> {
    let mut lb = lb.lock().map_err(|_| poisoned())?;
    changes.retain(|k, v| lb.programmed().services().get(k).map(|p| &p.spec) != v.as_ref());
    // Adopted maps are replaced even when nothing is to be written (everything they held
    // was deleted while the agent was down).
    if changes.is_empty() && !lb.needs_rebuild() {
        return Ok(Applied {
            written: 0,
            ops: 0,
            rejected: vec![],
            changed: String::new(),
        });
    }
    let changed = changes
        .iter()
        .take(8)
        .map(|(k, v)| match v {
            Some(s) => format!("{k} -> {} backends", s.backends.len()),
            None => format!("{k} removed"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut report = lb.apply_changes(&changes)?;
    if let Some(sizes) = lb.sizes().grown_for(&report.rejected) {
        lb.resize(sizes)?;
        let again: BTreeMap<_, _> = report
            .rejected
            .iter()
            .filter_map(|r| Some((r.key, changes.get(&r.key)?.clone())))
            .collect();
        let second = lb.apply_changes(&again)?;
        report.ops += second.ops;
        report.rejected = second.rejected;
    }
    Ok(Applied {
        written: changes.len(),
        ops: report.ops,
        rejected: report.rejected,
        changed,
    })
}

/// `ferry cni` ADD: records the sandbox for the agent's socket LB (see [`sandbox_record`]).
/// Failing to record never fails ADD: the pod then keeps OVN's load balancers.
pub fn cni_added(dir: &Path, container_id: &str, netns: &Path, namespace: &str, name: &str) {
    let rec = match ferry_sock::netns_cookie_of_path(netns) {
        Ok(cookie) => sandbox_record::SandboxRecord {
            cookie,
            netns: netns.to_path_buf(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
        Err(e) => {
            warn!(container = container_id, error = %e, "socket LB: no netns cookie; the pod keeps OVN's load balancers");
            return;
        }
    };
    if let Err(e) = sandbox_record::write(dir, container_id, &rec) {
        warn!(container = container_id, dir = %dir.display(), error = %e, "socket LB: recording the sandbox failed");
    }
}

/// `ferry cni` DEL: forgets the sandbox.
pub fn cni_deleted(dir: &Path, container_id: &str) {
    if let Err(e) = sandbox_record::remove(dir, container_id) {
        warn!(container = container_id, dir = %dir.display(), error = %e, "socket LB: removing the sandbox record failed");
    }
}
