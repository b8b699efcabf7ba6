//! `ferry federation lab up|check|down`: issue 17's federation lab on one machine.
//!
//! Each member cluster is a whole `ferry lab` (its own `ferry up`: API server, controllers,
//! OVN/OVS, node agents, VPCs that overlap across members on purpose, backends, and an
//! outside client `ext-client` on its external network) run in its own private mount and
//! network namespace, as `scripts/lab-isolated.sh` does, because a lab's namespace names
//! and API port are fixed. Beside them, a supervisor process (`lab serve`) runs the
//! federation API server and controller on the host's loopback and one join agent per
//! member; a join agent reaches its member's API server (loopback inside the member's
//! namespace) through a forwarder whose connecting thread has entered that namespace
//! (`setns`), so nothing is routed between namespaces and the members stay dial-out only.
//!
//! One shared external network ([`external`]) carries every member's EIP range: each member
//! gets an edge host on its own external network, bridged into a namespace outside every
//! member, where the one outside client reaches each member's EIPs by routes to its edge.
//!
//! Layout of DIR: `cN/` each member lab, `fed/` the federation API server's data,
//! `supervisor.pid` and `supervisor.log`, `cN.kubeconfig` each member's API seen through
//! its forwarder.

pub mod external;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::controller::{self, ControllerConfig};
use crate::credential::{self, MemberSpec};
use crate::join::{self, JoinConfig};
use crate::server::{client_for, start_server};
use crate::types::{FederatedYusurService, MemberCluster};

/// The federated service the lab places, in `default`.
pub const SERVICE: &str = "fed-web";
/// Its EIP in member `cN`: the first address of the member's own EIP range on the shared
/// external network ([`external::eip_range`]: c1 198.18.0.152, c2 .160, c3 .168).
pub fn eip_of(member: usize) -> String {
    external::first_eip(member)
}
/// The members it is placed on (the third is left out).
pub const PLACED: [&str; 2] = ["c1", "c2"];
/// The port a gray release adds (its backends listen on 8080 like port 80's).
pub const GRAY_PORT: u16 = 81;
/// The port the update made while member c2 is stopped adds.
pub const STOPPED_PORT: u16 = 82;
/// Tenant and workspace of every lab member and of the lab's object.
const TENANT: &str = "t1";
const WORKSPACE: &str = "w1";
/// The member's API server inside its namespace (`ferry lab`'s fixed address).
const MEMBER_API: &str = "127.0.0.1:6444";

/// A step of the lab that failed, with the log to read.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {message}{}", log.as_ref().map(|l| format!("\n  see {}", l.display())).unwrap_or_default())]
pub struct LabError {
    pub step: String,
    pub message: String,
    pub log: Option<PathBuf>,
}

fn fail(step: &str, message: impl std::fmt::Display, log: Option<&Path>) -> LabError {
    LabError {
        step: step.into(),
        message: message.to_string(),
        log: log.map(Path::to_path_buf),
    }
}

/// The files of a federation lab directory.
#[derive(Debug, Clone)]
pub struct FedLab {
    pub dir: PathBuf,
}

impl FedLab {
    pub fn new(dir: &Path) -> FedLab {
        FedLab {
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
        }
    }
    /// Member `cN`'s lab directory.
    pub fn member(&self, n: usize) -> PathBuf {
        self.dir.join(format!("c{n}"))
    }
    /// The federation API server's data dir.
    pub fn fed(&self) -> PathBuf {
        self.dir.join("fed")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.fed().join("kubeconfig")
    }
    /// Member `n`'s own kubeconfig for the federation (its token, from `member add`).
    pub fn member_federation_kubeconfig(&self, n: usize) -> PathBuf {
        self.dir.join(format!("c{n}-federation.kubeconfig"))
    }
    fn supervisor_pid(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }
    fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
    /// Members found on disk (`c1`, `c2`, ... with a running lab's pid file).
    pub fn members(&self) -> Vec<usize> {
        (1..)
            .take_while(|n| self.member(*n).join("ferry.pid").exists())
            .collect()
    }
    /// The pid of member `n`'s `ferry up`, whose namespaces are the member's.
    pub fn member_pid(&self, n: usize) -> Result<i32, LabError> {
        let file = self.member(n).join("ferry.pid");
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| fail(&format!("member c{n}"), "no ferry.pid", Some(&file)))
    }
}

// === up / down ===

/// Starts `clusters` member labs (one after the other, each in its own namespaces), then the
/// supervisor in the background, and waits until every member is Ready in the federation.
/// Each member runs one chassis (`ferry lab up --single-chassis`) unless `chassis_per_node`.
pub async fn up(
    lab: &FedLab,
    clusters: usize,
    listen: SocketAddr,
    ferry: &Path,
    chassis_per_node: bool,
) -> Result<(), LabError> {
    std::fs::create_dir_all(&lab.dir).map_err(|e| fail("lab dir", e, None))?;
    for n in 1..=clusters {
        if lab.member(n).join("ferry.pid").exists() {
            eprintln!("ferry: member c{n} already up");
            continue;
        }
        let t = Instant::now();
        eprintln!("ferry: starting member c{n} (ferry lab up in its own namespaces) ...");
        let log = lab.dir.join(format!("c{n}-up.log"));
        let out = std::fs::File::create(&log).map_err(|e| fail("log", e, None))?;
        let status = isolated_lab_up(ferry, &lab.member(n), chassis_per_node)
            .stdout(out.try_clone().map_err(|e| fail("log", e, None))?)
            .stderr(out)
            .status()
            .map_err(|e| fail(&format!("member c{n}"), e, Some(&log)))?;
        if !status.success() {
            return Err(fail(
                &format!("member c{n}"),
                format!("ferry lab up: {status}"),
                Some(&log),
            ));
        }
        eprintln!("ferry: member c{n} up ({:.1}s)", t.elapsed().as_secs_f64());
    }
    if !lab.supervisor_pid().exists() {
        let log = std::fs::File::create(lab.supervisor_log()).map_err(|e| fail("log", e, None))?;
        let child = Command::new(ferry)
            .args(["federation", "lab", "serve", "--dir"])
            .arg(&lab.dir)
            .args(["--listen", &listen.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| fail("log", e, None))?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| fail("supervisor", e, None))?;
        std::fs::write(lab.supervisor_pid(), child.id().to_string())
            .map_err(|e| fail("supervisor", e, None))?;
    }
    let log = lab.supervisor_log();
    wait_for("the federation API server", Duration::from_secs(60), || {
        let ok = lab.kubeconfig().exists();
        async move { ok.then_some(()).ok_or("no kubeconfig yet".to_string()) }
    })
    .await
    .map_err(|e| fail("federation up", e, Some(&log)))?;
    let fed = client_for(&lab.kubeconfig())
        .await
        .map_err(|e| fail("federation client", e, Some(&log)))?;
    let mcs: Api<MemberCluster> = Api::all(fed.clone());
    wait_for("every member Ready", Duration::from_secs(120), || {
        let mcs = mcs.clone();
        async move {
            let list = mcs
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let ready = list.items.iter().filter(|m| is_ready(m)).count();
            (ready >= clusters)
                .then_some(())
                .ok_or(format!("{ready}/{clusters} ready"))
        }
    })
    .await
    .map_err(|e| fail("members", e, Some(&log)))?;
    shared_external_network(lab, clusters).await?;
    apply_service(&fed, None, &[])
        .await
        .map_err(|e| fail("federated service", e, None))?;
    eprintln!(
        "ferry: federation lab up: {clusters} members, {SERVICE} placed on {}\n  export KUBECONFIG={}; kubectl get mc; kubectl get fysvc\n  ferry federation lab check --dir {}",
        PLACED.join(","),
        lab.kubeconfig().display(),
        lab.dir.display()
    );
    Ok(())
}

/// Gives each member its own backends of the federated service ([`backends`]) and its edge
/// host (a VNicIP on its external switch), through the supervisor's forwarder to its API
/// server, waits for the member's agent to plumb the edge, then builds the shared external
/// network ([`external::create`]).
async fn shared_external_network(lab: &FedLab, clusters: usize) -> Result<(), LabError> {
    let mut members = Vec::new();
    for n in 1..=clusters {
        let step = format!("c{n} edge");
        let client = client_for(&lab.dir.join(format!("c{n}.kubeconfig")))
            .await
            .map_err(|e| fail(&step, e, None))?;
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
        for pod in backends(n) {
            create_if_missing(&pods, pod)
                .await
                .map_err(|e| fail(&step, e, None))?;
        }
        let vnics: Api<ferry_api::VNicIP> = Api::namespaced(client, "default");
        create_if_missing(&vnics, external::edge_object())
            .await
            .map_err(|e| fail(&step, e, None))?;
        let pid = lab.member_pid(n)?;
        let netns = external::edge_netns_path(pid);
        wait_for("the edge's namespace", Duration::from_secs(60), || {
            let ok = Path::new(&netns).exists();
            async move { ok.then_some(()).ok_or("not plumbed yet".to_string()) }
        })
        .await
        .map_err(|e| fail(&step, e, Some(&lab.member(n).join("ferry.log"))))?;
        members.push((n, pid));
    }
    external::create(&members)
}

/// Creates `manifest` through `api` unless an object of its name exists (so `lab up` can run
/// again on members that have it).
async fn create_if_missing<K>(api: &Api<K>, manifest: Value) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let obj: K = serde_json::from_value(manifest).map_err(kube::Error::SerdeError)?;
    let name = obj.meta().name.clone().unwrap_or_default();
    if api.get_opt(&name).await?.is_none() {
        api.create(&Default::default(), &obj).await?;
    }
    Ok(())
}

/// `ferry lab up --dir DIR --single-chassis` (or `--chassis-per-node`) in fresh private
/// mount and network namespaces with their own `/run/netns` and `/etc/netns` (what
/// `scripts/lab-isolated.sh` does).
fn isolated_lab_up(ferry: &Path, dir: &Path, chassis_per_node: bool) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--net", "--propagation", "private", "sh", "-c"])
        .arg(concat!(
            "ip link set lo up && mkdir -p /run/netns && mount -t tmpfs ferry-netns /run/netns && ",
            "mkdir -p /etc/netns && mount -t tmpfs ferry-etc-netns /etc/netns && ",
            "exec \"$0\" lab up --dir \"$1\" \"$2\""
        ))
        .arg(ferry)
        .arg(dir)
        .arg(match chassis_per_node {
            true => "--chassis-per-node",
            false => "--single-chassis",
        })
        .stdin(Stdio::null());
    c
}

/// A command run inside member `n`'s namespaces.
fn in_member(lab: &FedLab, n: usize, argv: &[&str]) -> Result<Command, LabError> {
    let pid = lab.member_pid(n)?.to_string();
    let mut c = Command::new("nsenter");
    c.args(["-t", &pid, "-m", "-n"]).args(argv);
    Ok(c)
}

/// Stops the supervisor (by its pid) and takes every member lab down inside its namespaces.
pub fn down(lab: &FedLab, ferry: &Path) -> Result<Vec<String>, LabError> {
    let mut report = Vec::new();
    if let Some(pid) = std::fs::read_to_string(lab.supervisor_pid())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        report.push(format!("supervisor {pid} stopped"));
    }
    let _ = std::fs::remove_file(lab.supervisor_pid());
    if external::exists() {
        external::delete();
        report.push("shared external network removed".into());
    }
    for n in lab.members() {
        let dir = lab.member(n);
        let status = in_member(lab, n, &[])?
            .arg(ferry)
            .args(["lab", "down", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => report.push(format!("member c{n} down")),
            other => report.push(format!("member c{n}: ferry lab down: {other:?}")),
        }
        // A lab whose processes are gone has no namespace to enter: its pid file goes.
        let _ = std::fs::remove_file(dir.join("ferry.pid"));
    }
    Ok(report)
}

// === the supervisor ===

/// The federation API server and controller on `listen`, and one join agent per member
/// (through its forwarder), until `shutdown` resolves.
pub async fn serve(
    lab: &FedLab,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), LabError> {
    let server = start_server(&lab.fed(), listen)
        .await
        .map_err(|e| fail("federation API server", e, None))?;
    let fed = client_for(&server.kubeconfig)
        .await
        .map_err(|e| fail("federation client", e, None))?;
    let (tx, rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn({
        let (fed, rx) = (fed.clone(), rx.clone());
        async move {
            let config = ControllerConfig::new(format!("federation-lab-{}", std::process::id()));
            if let Err(e) = controller::run(fed, config, rx).await {
                tracing::error!(error = %e, "federation controller");
            }
        }
    })];
    for n in lab.members() {
        let pid = lab.member_pid(n)?;
        let target: SocketAddr = MEMBER_API
            .parse()
            .map_err(|e| fail("member address", e, None))?;
        let addr = forward_into(pid, target)
            .await
            .map_err(|e| fail(&format!("forwarder to c{n}"), e, None))?;
        let kubeconfig = lab.dir.join(format!("c{n}.kubeconfig"));
        let text = std::fs::read_to_string(lab.member(n).join("ferry/kubeconfig"))
            .map_err(|e| fail(&format!("c{n} kubeconfig"), e, None))?;
        std::fs::write(
            &kubeconfig,
            text.replace(&format!("https://{MEMBER_API}"), &format!("https://{addr}")),
        )
        .map_err(|e| fail(&format!("c{n} kubeconfig"), e, None))?;
        let member = client_for(&kubeconfig)
            .await
            .map_err(|e| fail(&format!("c{n} client"), e, None))?;
        // The member joins with its own token, as `ferry federation member add` issues it.
        let spec = MemberSpec {
            name: format!("c{n}"),
            tenant: Some(TENANT.into()),
            workspace: Some(WORKSPACE.into()),
            cells: Vec::new(),
        };
        let own = lab.member_federation_kubeconfig(n);
        let token = credential::add_member(&fed, &spec)
            .await
            .map_err(|e| fail(&format!("c{n} member add"), e, None))?;
        let endpoint = credential::endpoint_of(&server.kubeconfig)
            .map_err(|e| fail(&format!("c{n} member add"), e, None))?;
        credential::write_member_kubeconfig(
            &own,
            &credential::member_kubeconfig(&endpoint, &spec.name, &token),
        )
        .map_err(|e| fail(&format!("c{n} member add"), e, None))?;
        let member_fed = client_for(&own)
            .await
            .map_err(|e| fail(&format!("c{n} federation client"), e, None))?;
        let mut config = JoinConfig::new(spec.name.clone());
        config.tenant = spec.tenant.clone();
        config.workspace = spec.workspace.clone();
        config.heartbeat = Duration::from_secs(2);
        let rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = join::run(member_fed, member, config, rx).await {
                tracing::error!(member = n, error = %e, "join agent");
            }
        }));
        tracing::info!(member = n, %addr, "member joined through its forwarder");
    }
    // Each member's edge relay, once `lab up` has made the edge.
    for n in lab.members() {
        let pid = lab.member_pid(n)?;
        tasks.push(tokio::spawn(external::relay(pid, rx.clone())));
    }
    eprintln!(
        "ferry: federation lab supervisor serving on https://{}",
        server.addr
    );
    shutdown.await;
    let _ = tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    server.shutdown().await;
    Ok(())
}

/// The lab hosts the global name is resolved from in each member: a pod of the default VPC,
/// of vpc1 and of vpc2 (each VPC's own cluster DNS).
const GLOBAL_CLIENTS: [&str; 3] = ["client-default", "client-vpc1", "client-vpc2"];

/// A request to the connecting thread: dial this address, hand back the stream.
pub(crate) type Dial = (
    SocketAddr,
    oneshot::Sender<std::io::Result<std::net::TcpStream>>,
);

/// Listens on the host's loopback and forwards each connection to `target` inside the
/// network namespace of process `pid`. The connections are opened by one thread that has
/// entered that namespace (a socket stays in the namespace it was created in).
pub async fn forward_into(pid: i32, target: SocketAddr) -> std::io::Result<SocketAddr> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let (dial_tx, _) = dialer_in(ns, format!("netns-dialer-{pid}"), None).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            tokio::spawn(splice(inbound, target, dial_tx.clone()));
        }
    });
    Ok(addr)
}

/// A thread that enters the network namespace `ns` and opens the connections asked of it
/// (a socket stays in the namespace it was created in); with `listen`, it first binds a
/// listener on `0.0.0.0:PORT` there.
pub(crate) async fn dialer_in(
    ns: std::fs::File,
    name: String,
    listen: Option<u16>,
) -> std::io::Result<(mpsc::Sender<Dial>, Option<tokio::net::TcpListener>)> {
    let (dial_tx, mut dial_rx) = mpsc::channel::<Dial>(64);
    let (ready_tx, ready_rx) = oneshot::channel();
    std::thread::Builder::new().name(name).spawn(move || {
        let entered = nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)
            .and_then(|()| {
                listen
                    .map(|port| std::net::TcpListener::bind(("0.0.0.0", port)))
                    .transpose()
            });
        let ok = entered.is_ok();
        let _ = ready_tx.send(entered);
        if !ok {
            return;
        }
        while let Some((addr, reply)) = dial_rx.blocking_recv() {
            let _ = reply.send(std::net::TcpStream::connect_timeout(
                &addr,
                Duration::from_secs(5),
            ));
        }
    })?;
    let listener = ready_rx
        .await
        .map_err(|_| std::io::Error::other("the dialer thread ended"))??;
    let listener = match listener {
        Some(l) => {
            l.set_nonblocking(true)?;
            Some(tokio::net::TcpListener::from_std(l)?)
        }
        None => None,
    };
    Ok((dial_tx, listener))
}

/// Opens a connection to `target` through `dialer` and copies both ways with `inbound`
/// until either side ends.
pub(crate) async fn splice(
    mut inbound: tokio::net::TcpStream,
    target: SocketAddr,
    dialer: mpsc::Sender<Dial>,
) {
    let (reply, rx) = oneshot::channel();
    if dialer.send((target, reply)).await.is_err() {
        return;
    }
    let Ok(Ok(stream)) = rx.await else { return };
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut outbound) = tokio::net::TcpStream::from_std(stream) else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

// === the federated service ===

/// Member `n`'s backends of the federated service are named `fed-web-cN-...`.
pub fn backend_prefix(n: usize) -> String {
    format!("{SERVICE}-c{n}")
}

/// Member `n`'s own backends of the federated service: a pod on each node in vpc1, labelled
/// `fed: fed-web`, answering `GET /` (port 8080) with its name, so an answer says which
/// member served it (every member's lab is otherwise the same, names and addresses alike).
pub fn backends(n: usize) -> Vec<Value> {
    [("a", "node1", "vpc1-subnet1"), ("b", "node2", "vpc1-subnet2")]
        .into_iter()
        .map(|(suffix, node, subnet)| {
            let name = format!("{}-{suffix}", backend_prefix(n));
            let script = format!(
                "mkdir -p www && printf '{name}\\n' > www/index.html && exec python3 -m http.server 8080 -d www"
            );
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "labels": {"fed": SERVICE},
                             "annotations": {"iaas.yusur.io/subnet": subnet}},
                "spec": {"nodeName": node, "restartPolicy": "Always",
                         "containers": [{"name": "main", "image": "lab", "command": ["sh", "-c", script]}]}})
        })
        .collect()
}

/// The lab's FederatedYusurService: each member's own backends in vpc1 ([`backends`])
/// behind an EIP per member (by override, from the member's range), placed on [`PLACED`];
/// `extra_ports` added to port 80, `mask` as given.
pub fn service_manifest(mask: Option<&[&str]>, extra_ports: &[u16]) -> Value {
    let mut ports =
        vec![json!({"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080})];
    for p in extra_ports {
        ports.push(
            json!({"name": format!("p{p}"), "port": p, "protocol": "TCP", "targetPort": 8080}),
        );
    }
    let overrides: Vec<Value> = (1..=3)
        .map(|n| json!({"target": format!("c{n}"), "patches": [{"op": "add", "path": "/spec/eip", "value": eip_of(n)}]}))
        .collect();
    let mut spec = json!({
        "template": {"spec": {"type": "LoadBalancer", "scope": "vpc", "vpc": "vpc1",
                              "ports": ports, "selector": {"fed": SERVICE}}},
        "placement": {"topologyType": "cluster", "clusters": PLACED},
        "overrides": overrides,
    });
    // null when unset: a merge patch then removes it.
    spec["placementMask"] = json!(mask);
    json!({
        "apiVersion": "federation.iaas.yusur.io/v1",
        "kind": "FederatedYusurService",
        "metadata": {"name": SERVICE, "namespace": "default",
                     "labels": {"iaas.yusur.io/tenant": TENANT, "iaas.yusur.io/workspace": WORKSPACE}},
        "spec": spec,
    })
}

async fn apply_service(
    fed: &kube::Client,
    mask: Option<&[&str]>,
    extra_ports: &[u16],
) -> Result<FederatedYusurService, kube::Error> {
    let api: Api<FederatedYusurService> = Api::namespaced(fed.clone(), "default");
    let manifest = service_manifest(mask, extra_ports);
    match api.get_opt(SERVICE).await? {
        // A merge patch replaces the lists (ports) and removes a null mask.
        Some(_) => {
            api.patch(SERVICE, &PatchParams::default(), &Patch::Merge(manifest))
                .await
        }
        None => {
            let mut object = manifest;
            if let Some(spec) = object["spec"].as_object_mut() {
                spec.retain(|_, v| !v.is_null());
            }
            let object = serde_json::from_value(object).map_err(kube::Error::SerdeError)?;
            api.create(&Default::default(), &object).await
        }
    }
}

fn is_ready(m: &MemberCluster) -> bool {
    m.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Polls `check` every 300 ms until it succeeds or `within` passes (then its last error).
async fn wait_for<F, Fut>(what: &str, within: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(last) if start.elapsed() > within => {
                return Err(format!("{what}: not after {}s: {last}", within.as_secs()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

// === check ===

/// One row of `ferry federation lab check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub check: String,
    pub target: String,
    pub result: String,
    pub pass: bool,
}

fn row(check: &str, target: &str, result: impl Into<String>, pass: bool) -> Row {
    Row {
        check: check.into(),
        target: target.into(),
        result: result.into(),
        pass,
    }
}

/// Each member's own token, probed for real ([`crate::access::probe`]) against the next
/// member's objects, and the federation's store holding only the tokens' hashes.
async fn credential_rows(lab: &FedLab, fed: &kube::Client, members: &[usize]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut tokens = Vec::new();
    for (i, n) in members.iter().enumerate() {
        let me = format!("c{n}");
        let other = format!("c{}", members[(i + 1) % members.len()]);
        let path = lab.member_federation_kubeconfig(*n);
        tokens.push(
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_saphyr::from_str::<Value>(&t).ok())
                .and_then(|k| Some(k["users"][0]["user"]["token"].as_str()?.to_string())),
        );
        let probes = match client_for(&path).await {
            Ok(c) => crate::access::probe(&c, &me, &other).await,
            Err(e) => {
                rows.push(row(
                    "member credential: own token, RBAC",
                    &me,
                    e.to_string(),
                    false,
                ));
                continue;
            }
        };
        let allowed = probes.iter().filter(|p| p.allowed).count();
        let bad: Vec<String> = probes
            .iter()
            .filter(|p| !p.holds())
            .map(|p| format!("{}: {:?}", p.what, p.got))
            .collect();
        let result = if bad.is_empty() {
            format!(
                "{allowed} own reads/writes allowed, {} refused (403) incl. {other}'s",
                probes.len() - allowed
            )
        } else {
            bad.join("; ")
        };
        rows.push(row(
            "member credential: own token, RBAC",
            &me,
            result,
            bad.is_empty() && allowed > 0,
        ));
    }
    // The store: one member-token Secret per member, holding the SHA-256, never the token.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(fed.clone(), ferry_apiserver::SYSTEM_NAMESPACE);
    let (pass, result) = match secrets.list(&Default::default()).await {
        Err(e) => (false, e.to_string()),
        Ok(list) => {
            let held = serde_json::to_string(&list.items).unwrap_or_default();
            let hashes_found = tokens
                .iter()
                .flatten()
                .filter(|t| {
                    let name = ferry_apiserver::member_token::secret_name(
                        &ferry_apiserver::member_token::hash_token(t),
                    );
                    list.items
                        .iter()
                        .any(|s| s.metadata.name.as_deref() == Some(name.as_str()))
                })
                .count();
            let plaintext = tokens
                .iter()
                .flatten()
                .filter(|t| held.contains(t.as_str()))
                .count();
            (
                hashes_found == members.len() && plaintext == 0,
                format!(
                    "{hashes_found}/{} tokens' SHA-256 stored, {plaintext} in plain text",
                    members.len()
                ),
            )
        }
    };
    rows.push(row(
        "member tokens stored hashed",
        "federation",
        result,
        pass,
    ));
    rows
}

/// The A records of `name` from lab host `host` of member `n` (through its VPC's cluster
/// DNS), sorted.
fn dig_from(lab: &FedLab, n: usize, host: &str, name: &str) -> Result<Vec<String>, String> {
    let netns = format!("ferry-{host}");
    let out = in_member(lab, n, &["ip", "netns", "exec", &netns])
        .map_err(|e| e.to_string())?
        .args(["dig", "+short", "+tries=1", "+time=2", name, "A"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("dig: {}", out.status));
    }
    let mut ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    ips.sort();
    Ok(ips)
}

/// Answers from `tries` requests of the shared network's client (the backends that
/// answered), or the failure.
fn answers(url: &str, tries: usize) -> Result<Vec<String>, String> {
    let mut seen = Vec::new();
    for _ in 0..tries {
        seen.push(external::get(url)?);
    }
    seen.sort();
    seen.dedup();
    Ok(seen)
}

/// Waits until `url` answers the shared network's client (true) or stays silent (false).
async fn wait_answer(url: &str, want: bool) -> Result<Vec<String>, String> {
    let mut last = Err(String::new());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(45) {
        last = answers(url, 3);
        if last.is_ok() == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    last
}

/// Every federation row with real traffic: placement (answers from each placed member's
/// EIP with its own backends, none from the unplaced one), status feedback, and a gray
/// release by placement mask (a new port reaches only the masked member).
pub async fn check(lab: &FedLab) -> Result<(Vec<Row>, bool), LabError> {
    let fed = client_for(&lab.kubeconfig())
        .await
        .map_err(|e| fail("federation client", e, None))?;
    let members = lab.members();
    let mut rows = Vec::new();

    let mcs: Api<MemberCluster> = Api::all(fed.clone());
    let list = mcs
        .list(&Default::default())
        .await
        .map_err(|e| fail("memberclusters", e, None))?;
    for n in &members {
        let name = format!("c{n}");
        let ready = list
            .items
            .iter()
            .any(|m| m.metadata.name.as_deref() == Some(name.as_str()) && is_ready(m));
        rows.push(row(
            "member joined (dials out)",
            &name,
            if ready { "Ready" } else { "not ready" },
            ready,
        ));
    }
    rows.extend(credential_rows(lab, &fed, &members).await);

    // A fresh start: port 80 only, no mask, every placed member updated.
    let api: Api<FederatedYusurService> = Api::namespaced(fed.clone(), "default");
    apply_service(&fed, None, &[])
        .await
        .map_err(|e| fail("federated service", e, None))?;
    let updated = wait_for("every target updated", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let f = api.get(SERVICE).await.map_err(|e| e.to_string())?;
            let s = f.status.unwrap_or_default();
            (s.updated_targets.as_deref() == Some("2/2"))
                .then_some(())
                .ok_or(format!("updated {:?}", s.updated_targets))
        }
    })
    .await;
    rows.push(row(
        "federated service applied",
        &PLACED.join(","),
        updated
            .clone()
            .err()
            .unwrap_or_else(|| "2/2 updated".into()),
        updated.is_ok(),
    ));

    // Placement: from the one client on the shared external network, each placed member's
    // EIP answers with that member's own backends (named after it); the third member holds
    // nothing and its EIP stays silent.
    for n in &members {
        let name = format!("c{n}");
        let url = format!("http://{}/", eip_of(*n));
        let placed = PLACED.contains(&name.as_str());
        let got = wait_answer(&url, placed).await;
        let held = member_holds(lab, *n, SERVICE).await;
        let own = format!("{}-", backend_prefix(*n));
        let (result, pass) = match (&got, placed) {
            (Ok(backends), true) => (
                format!("answered by {}", backends.join(",")),
                backends.iter().all(|b| b.starts_with(&own)),
            ),
            (Err(e), true) => (e.clone(), false),
            (Ok(backends), false) => (
                format!("answered by {} (placed nowhere here!)", backends.join(",")),
                false,
            ),
            (Err(_), false) => (
                format!("no answer, member holds the object: {held:?}"),
                held == Ok(false),
            ),
        };
        rows.push(row(
            &format!("placement: shared client -> {SERVICE} EIP"),
            &format!("{name} {url}"),
            result,
            pass,
        ));
    }

    // Status feedback from the members.
    let ready = wait_for("status feedback", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let f = api.get(SERVICE).await.map_err(|e| e.to_string())?;
            let s = f.status.unwrap_or_default();
            let fed_ok = s.targets.iter().filter(|t| {
                t.report.eip.as_deref().is_some_and(|e| !e.is_empty())
                    && t.report.ready_endpoints > 0
            });
            let n = fed_ok.count();
            (n == PLACED.len() && s.ready_targets.as_deref() == Some("2/2"))
                .then_some(())
                .ok_or(format!(
                    "{n} targets with EIP and ready endpoints, ready {:?}",
                    s.ready_targets
                ))
        }
    })
    .await;
    let summary = api
        .get(SERVICE)
        .await
        .ok()
        .and_then(|f| f.status)
        .map(|s| {
            s.targets
                .iter()
                .map(|t| {
                    format!(
                        "{} eip={} ready={}/{}",
                        t.name,
                        t.report.eip.clone().unwrap_or_default(),
                        t.report.ready_endpoints,
                        t.report.total_endpoints
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    rows.push(row(
        "status feedback (EIP, endpoints)",
        SERVICE,
        match &ready {
            Ok(()) => summary,
            Err(e) => e.clone(),
        },
        ready.is_ok(),
    ));

    // Global name: in every member (placed or not) it answers the placed members' EIPs.
    let want: Vec<String> = PLACED
        .iter()
        .filter_map(|c| c.trim_start_matches('c').parse::<usize>().ok())
        .map(eip_of)
        .collect();
    let global = format!(
        "{SERVICE}{}.default.svc.cluster.local",
        crate::global::SUFFIX
    );
    // From a pod of every VPC of every member (the global zone is in each VPC's DNS).
    for n in &members {
        let mut got = Vec::new();
        for host in GLOBAL_CLIENTS {
            let mut last = Err(String::new());
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                last = dig_from(lab, *n, host, &global);
                if last.as_ref() == Ok(&want) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            got.push((host, last));
        }
        let pass = got.iter().all(|(_, r)| r.as_ref() == Ok(&want));
        let result = if pass {
            format!("{} from each", want.join(","))
        } else {
            got.iter()
                .map(|(host, r)| match r {
                    Ok(ips) if ips.is_empty() => format!("{host}: no address"),
                    Ok(ips) => format!("{host}: {}", ips.join(",")),
                    Err(e) => format!("{host}: {e}"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        rows.push(row(
            "global name in every VPC: ready members' EIPs",
            &format!("c{n} {} {global}", GLOBAL_CLIENTS.join(",")),
            result,
            pass,
        ));
    }

    // Gray release: a new port with placementMask [c1] reaches c1 only.
    let before = api
        .get(SERVICE)
        .await
        .map_err(|e| fail("federated service", e, None))?;
    let gen_before = before.metadata.generation.unwrap_or_default();
    // Timed from the federated write to the first answer on the new port through c1's
    // EIP: the "change -> traffic" figure of the bench.
    let applied_at = std::time::Instant::now();
    apply_service(&fed, Some(&["c1"]), &[GRAY_PORT])
        .await
        .map_err(|e| fail("gray release", e, None))?;
    let c1 = wait_answer(&format!("http://{}:{GRAY_PORT}/", eip_of(1)), true).await;
    let to_traffic_ms = applied_at.elapsed().as_millis();
    rows.push(row(
        "gray release: masked member gets the update",
        &format!("c1 :{GRAY_PORT}"),
        match &c1 {
            Ok(b) => format!(
                "answered by {}, {to_traffic_ms} ms after the update (polled every 0.5 s)",
                b.join(",")
            ),
            Err(e) => e.clone(),
        },
        c1.is_ok(),
    ));
    // Port 80 answering first shows c2's data plane is up (a loaded lab's probes can
    // flap); right after, the new port must stay silent there.
    let c2_old = wait_answer(&format!("http://{}/", eip_of(2)), true).await;
    let c2_new = answers(&format!("http://{}:{GRAY_PORT}/", eip_of(2)), 2);
    let status = api.get(SERVICE).await.ok().and_then(|f| f.status);
    let gen_of = |name: &str| {
        status
            .as_ref()
            .and_then(|s| s.targets.iter().find(|t| t.name == name))
            .and_then(|t| t.desired_generation)
    };
    let (g1, g2) = (gen_of("c1"), gen_of("c2"));
    let kept = c2_new.is_err() && c2_old.is_ok() && g2 == Some(gen_before) && g1 > g2;
    rows.push(row(
        "gray release: unmasked member untouched",
        &format!("c2 :{GRAY_PORT} and :80"),
        format!(
            ":{GRAY_PORT} {}, :80 {}, generations c1={g1:?} c2={g2:?}",
            if c2_new.is_ok() { "answers" } else { "silent" },
            if c2_old.is_ok() { "answers" } else { "silent" },
        ),
        kept,
    ));
    rows.extend(stopped_member_rows(lab, &fed, g2).await);
    rows.push(tenant_row(lab, &fed, &members).await);
    let pass = rows.iter().all(|r| r.pass);
    Ok((rows, pass))
}

/// Member c2 stopped (SIGSTOP of its `ferry up`: its API server and controllers stop
/// answering, as a member cut off would): an update masked to c1 still reaches c1; once c2
/// runs again (SIGCONT) it keeps its generation `g2` and does not serve the new port.
async fn stopped_member_rows(lab: &FedLab, fed: &kube::Client, g2: Option<i64>) -> Vec<Row> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid = match lab.member_pid(2) {
        Ok(p) => Pid::from_raw(p),
        Err(e) => {
            return vec![row(
                "member stopped: others still updated",
                "c2",
                e.to_string(),
                false,
            )];
        }
    };
    /// Lets c2 run again whatever happens below.
    struct Resume(Pid);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = kill(self.0, Signal::SIGCONT);
        }
    }
    if let Err(e) = kill(pid, Signal::SIGSTOP) {
        return vec![row(
            "member stopped: others still updated",
            "c2",
            format!("SIGSTOP: {e}"),
            false,
        )];
    }
    let resume = Resume(pid);
    let started = Instant::now();
    let api: Api<FederatedYusurService> = Api::namespaced(fed.clone(), "default");
    let applied = apply_service(fed, Some(&["c1"]), &[GRAY_PORT, STOPPED_PORT])
        .await
        .map_err(|e| e.to_string());
    let c1 = match applied {
        Ok(_) => wait_answer(&format!("http://{}:{STOPPED_PORT}/", eip_of(1)), true).await,
        Err(e) => Err(e),
    };
    let first = row(
        "member stopped: the update reaches the others",
        &format!("c2 stopped, c1 :{STOPPED_PORT}"),
        match &c1 {
            Ok(b) => format!(
                "c1 answered by {} {:.1}s after the update",
                b.join(","),
                started.elapsed().as_secs_f64()
            ),
            Err(e) => e.clone(),
        },
        c1.is_ok(),
    );
    drop(resume);
    // Back: its data plane answers again on :80, the masked port stays silent there, and its
    // target generation is unchanged.
    let old = wait_answer(&format!("http://{}/", eip_of(2)), true).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let new = answers(&format!("http://{}:{STOPPED_PORT}/", eip_of(2)), 2);
    let gen2 = api
        .get(SERVICE)
        .await
        .ok()
        .and_then(|f| f.status)
        .and_then(|s| s.targets.into_iter().find(|t| t.name == "c2"))
        .and_then(|t| t.desired_generation);
    let second = row(
        "member stopped: untouched on return",
        &format!("c2 :{STOPPED_PORT} and :80"),
        format!(
            ":{STOPPED_PORT} {}, :80 {}, generation {gen2:?} (before {g2:?})",
            if new.is_ok() { "answers" } else { "silent" },
            if old.is_ok() { "answers" } else { "silent" },
        ),
        new.is_err() && old.is_ok() && gen2 == g2,
    );
    vec![first, second]
}

/// Whether member `n` holds a YusurService `default/name` (through the supervisor's
/// forwarder to its API server).
async fn member_holds(lab: &FedLab, n: usize, name: &str) -> Result<bool, String> {
    let client = client_for(&lab.dir.join(format!("c{n}.kubeconfig")))
        .await
        .map_err(|e| e.to_string())?;
    let api: Api<ferry_api::YusurService> = Api::namespaced(client, "default");
    api.get_opt(name)
        .await
        .map(|o| o.is_some())
        .map_err(|e| e.to_string())
}

/// Tenant isolation: an object of tenant `t2` placed on every (t1) member is refused
/// (`Placement=False/NotInTenant`) and appears in none of them.
async fn tenant_row(lab: &FedLab, fed: &kube::Client, members: &[usize]) -> Row {
    let name = "fed-other-tenant";
    let clusters: Vec<String> = members.iter().map(|n| format!("c{n}")).collect();
    let mut manifest = service_manifest(None, &[]);
    manifest["metadata"]["name"] = json!(name);
    manifest["metadata"]["labels"]["iaas.yusur.io/tenant"] = json!("t2");
    manifest["spec"]["placement"]["clusters"] = json!(clusters);
    if let Some(spec) = manifest["spec"].as_object_mut() {
        spec.retain(|_, v| !v.is_null());
    }
    let api: Api<FederatedYusurService> = Api::namespaced(fed.clone(), "default");
    let created = match serde_json::from_value::<FederatedYusurService>(manifest) {
        Ok(obj) => match api.get_opt(name).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => api
                .create(&Default::default(), &obj)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    let refused = match created {
        Ok(()) => {
            wait_for("NotInTenant", Duration::from_secs(30), || {
                let api = api.clone();
                async move {
                    let f = api.get(name).await.map_err(|e| e.to_string())?;
                    let reason = f
                        .status
                        .unwrap_or_default()
                        .conditions
                        .into_iter()
                        .find(|c| c.type_ == "Placement")
                        .map(|c| c.reason)
                        .unwrap_or_default();
                    (reason == "NotInTenant").then_some(()).ok_or(reason)
                }
            })
            .await
        }
        Err(e) => Err(e),
    };
    let mut held = Vec::new();
    for n in members {
        if member_holds(lab, *n, name).await != Ok(false) {
            held.push(format!("c{n}"));
        }
    }
    let pass = refused.is_ok() && held.is_empty();
    row(
        "tenant isolation: t2's object on t1's members",
        &clusters.join(","),
        match refused {
            Ok(()) if held.is_empty() => "Placement=False/NotInTenant, in no member".to_string(),
            Ok(()) => format!("NotInTenant, but held by {}", held.join(",")),
            Err(e) => e,
        },
        pass,
    )
}

/// Prints the rows as a table.
pub fn print_rows(rows: &[Row]) {
    let w = |f: fn(&Row) -> &str| rows.iter().map(|r| f(r).len()).max().unwrap_or(0);
    let (wc, wt) = (w(|r| &r.check), w(|r| &r.target));
    for r in rows {
        println!(
            "{}  {:wc$}  {:wt$}  {}",
            if r.pass { "PASS" } else { "FAIL" },
            r.check,
            r.target,
            r.result
        );
    }
}
