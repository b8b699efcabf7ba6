//! Shared by the end-to-end tests that run the built `ferry` binary the way a node runs it:
//! a private `ferry up --no-agent` (API server, controllers and its own OVN/OVS under
//! `DIR/ovn`, `ovs-vswitchd` in the namespace `<chassis>-ovs`) and an API client; named
//! network namespaces, child processes and waiting come from `ferry-testkit`.
//!
//! Names are unique per test process and never start with `ferry-` or `fp-`, the lab's
//! prefixes, so these tests and a lab (or `lab_e2e.rs`) never touch each other's things.
//! The lab tests' own part (`ferry lab up`/`down` in a temporary directory) is [`lab`].

#![allow(dead_code)]

pub mod lab;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
pub use ferry_testkit::netns::{ChildGuard, Netns};
use ferry_testkit::tail;
pub use ferry_testkit::{eventually, tool};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::Scope;
use serde_json::Value;

/// The `ferry` binary under test.
pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// A running `ferry up --no-agent` with its own OVN; stopped with SIGTERM (by PID) on drop,
/// which stops OVN and removes its namespace.
pub struct FerryUp {
    // Dropped in this order: the process before its directory.
    process: Stopping,
    rt: tokio::runtime::Runtime,
    client: Client,
    /// The OVS `system-id`; `ovs-vswitchd` runs in the namespace `<chassis>-ovs`.
    pub chassis: String,
    /// The API server's port on 127.0.0.1.
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// A child process stopped with SIGTERM (by PID) on drop, SIGKILL after 30 s.
struct Stopping(Child);

impl Drop for Stopping {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl FerryUp {
    /// Starts it and waits until the API answers. `tag` makes the chassis name unique.
    pub fn start(tag: &str) -> Result<FerryUp> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{tag}-"))
            .tempdir()?;
        let chassis = format!("{tag}{}", std::process::id());
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.path().join("up.log"))?;
        let mut process = Stopping(
            Command::new(ferry_bin())
                .args(["up", "--no-agent", "--data-dir"])
                .arg(dir.path().join("data"))
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--gateway-chassis", &chassis])
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("start ferry up")?,
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let kubeconfig = dir.path().join("data/kubeconfig");
        let ovs_sock = dir.path().join("data/ovn/run/db.sock");
        let ready = eventually("ferry up serving", Duration::from_secs(60), || {
            if let Ok(Some(status)) = process.0.try_wait() {
                return Some(Err(anyhow::anyhow!("ferry up exited: {status}")));
            }
            let client = rt.block_on(async {
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig).ok()?;
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .ok()?;
                let client = Client::try_from(config).ok()?;
                // Serving, and Ferry's CRDs installed (`ferry up` installs them after the
                // API server answers).
                let vpc = GroupVersionKind::gvk("iaas.yusur.io", "v1", "Vpc");
                kube::discovery::pinned_kind(&client, &vpc).await.ok()?;
                Some(client)
            })?;
            ovs_sock.exists().then_some(Ok(client))
        });
        let client = match ready.and_then(|r| r) {
            Ok(c) => c,
            Err(e) => bail!("{e}\n{}", tail(&dir.path().join("up.log"), 30)),
        };
        Ok(FerryUp {
            process,
            rt,
            client,
            chassis,
            port,
            dir,
        })
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data().join("kubeconfig")
    }
    /// The node agents' kubeconfig (least privilege: reads pods and nodes).
    pub fn agent_kubeconfig(&self) -> PathBuf {
        self.data().join("kubeconfig-agent")
    }
    /// The Open_vSwitch database socket of its OVS.
    pub fn ovs_sock(&self) -> PathBuf {
        self.data().join("ovn/run/db.sock")
    }
    /// The namespace its `ovs-vswitchd` runs in.
    pub fn ovs_netns(&self) -> String {
        format!("{}-ovs", self.chassis)
    }
    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db=unix:{}", self.ovs_sock().display());
        tool("ovs-vsctl", &[&[db.as_str()], args].concat())
    }
    pub fn nbctl(&self, args: &[&str]) -> Result<String> {
        let db = format!(
            "--db=unix:{}",
            self.data().join("ovn/run/nb.sock").display()
        );
        tool("ovn-nbctl", &[&[db.as_str()], args].concat())
    }

    /// The last lines of `ferry up`'s log and ovn-controller's, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- ferry up ---\n{}\n--- ovn-controller ---\n{}",
            tail(&self.dir.path().join("up.log"), 30),
            tail(&self.data().join("ovn/logs/ovn-controller.log"), 30)
        )
    }

    /// Creates any object from its JSON manifest (namespaced ones in their
    /// `metadata.namespace`, else `default`).
    pub fn create(&self, obj: Value) -> Result<DynamicObject> {
        let (group, version) = match obj["apiVersion"].as_str().context("apiVersion")? {
            v if v.contains('/') => v.split_once('/').context("apiVersion")?,
            v => ("", v),
        };
        let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().context("kind")?);
        let namespace = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let o: DynamicObject = serde_json::from_value(obj)?;
        self.rt.block_on(async {
            let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk).await?;
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Namespaced => Api::namespaced_with(self.client.clone(), &namespace, &ar),
                Scope::Cluster => Api::all_with(self.client.clone(), &ar),
            };
            Ok(api.create(&PostParams::default(), &o).await?)
        })
    }

    /// Pod `default/name`, if it exists.
    pub fn get_pod(&self, name: &str) -> Result<Option<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        Ok(self.rt.block_on(api.get_opt(name))?)
    }

    /// Node `name`, if it exists.
    pub fn get_node(&self, name: &str) -> Result<Option<Node>> {
        let api: Api<Node> = Api::all(self.client.clone());
        Ok(self.rt.block_on(api.get_opt(name))?)
    }

    /// The default VPC `ovn-cluster` with its pod subnet `ovn-default` (10.16.0.0/16, the
    /// default subnet) and, with `join`, the join subnet `subnet0` (100.64.0.0/16).
    pub fn default_vpc(&self, join: bool) -> Result<()> {
        self.create(serde_json::json!({
            "apiVersion": "iaas.yusur.io/v1", "kind": "Vpc",
            "metadata": {"name": ferry_api::DEFAULT_VPC}, "spec": {}}))?;
        let mut subnets = vec![("ovn-default", "10.16.0.0/16", true)];
        if join {
            subnets.push(("subnet0", "100.64.0.0/16", false));
        }
        for (name, cidr, default) in subnets {
            self.create(serde_json::json!({
                "apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": name},
                "spec": {"vpc": ferry_api::DEFAULT_VPC, "cidrBlock": cidr, "default": default}}))?;
        }
        Ok(())
    }

    /// Creates a pod in `default` (optionally bound to `node`) and, with `wait`, waits for
    /// the controller's address annotations.
    pub fn pod(&self, name: &str, labels: Value, node: Option<&str>, wait: bool) -> Result<()> {
        let mut spec = serde_json::json!({"containers": [{"name": "main", "image": "none"}]});
        if let Some(n) = node {
            spec["nodeName"] = n.into();
        }
        self.create(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels}, "spec": spec}))?;
        if !wait {
            return Ok(());
        }
        self.annotated_pod(name).map(|_| ())
    }

    /// Waits until pod `default/name` carries every address annotation the CNI plugin needs.
    pub fn annotated_pod(&self, name: &str) -> Result<Pod> {
        eventually(
            &format!("annotations on pod default/{name}"),
            Duration::from_secs(30),
            || {
                let pod = self.get_pod(name).ok()??;
                let a = pod.metadata.annotations.clone().unwrap_or_default();
                [
                    "iaas.yusur.io/ip_address",
                    "iaas.yusur.io/mac_address",
                    "iaas.yusur.io/gateway",
                    "iaas.yusur.io/cidr",
                ]
                .iter()
                .all(|k| a.contains_key(*k))
                .then_some(pod)
            },
        )
    }

    /// The network configuration a runtime would hand `ferry cni` on this node.
    pub fn cni_conf(&self) -> Value {
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "ferry", "type": "ferry",
            "ovsDbSock": self.ovs_sock(), "bridge": "br-int",
            "ovsNetns": format!("/var/run/netns/{}", self.ovs_netns()),
            "kubeconfig": self.agent_kubeconfig(),
        })
    }
}

/// Relays TCP between two namespaces through a unix socket (whose path no namespace
/// hides): `tcp HOST PORT PATH` listens on TCP and connects to PATH; `unix PATH HOST PORT`
/// listens on PATH and connects to TCP.
const RELAY: &str = r#"
import socket, sys, threading
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
if sys.argv[1] == "tcp":
    host, port, path = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    listener = socket.create_server((host, port))
    def connect():
        u = socket.socket(socket.AF_UNIX)
        u.connect(path)
        return u
else:
    path, host, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(64)
    def connect():
        return socket.create_connection((host, port))
while True:
    c, _ = listener.accept()
    try:
        u = connect()
    except OSError:
        c.close()
        continue
    for x, y in ((c, u), (u, c)):
        threading.Thread(target=pump, args=(x, y), daemon=True).start()
"#;

impl FerryUp {
    /// Makes the API server reachable from inside `ns` at the kubeconfigs' address
    /// (`127.0.0.1:PORT` in `ns` too), as a node reaches its API server, over loopback in
    /// both namespaces and a unix socket between them. Returns the two relay processes.
    pub fn api_relay_into(&self, ns: &Netns) -> Result<(ChildGuard, ChildGuard)> {
        let sock = self.dir.path().join(format!("api-relay-{}.sock", ns.name));
        let sock = sock.to_str().context("utf-8 path")?.to_string();
        let port = self.port.to_string();
        let outside = ChildGuard(
            Command::new("python3")
                .args(["-c", RELAY, "unix", &sock, "127.0.0.1", &port])
                .stdin(Stdio::null())
                .spawn()?,
        );
        eventually("the relay's unix socket", Duration::from_secs(10), || {
            Path::new(&sock).exists().then_some(())
        })?;
        let inside = ns.spawn(
            &["python3", "-c", RELAY, "tcp", "127.0.0.1", &port, &sock],
            None,
        )?;
        let url = format!("https://127.0.0.1:{port}/version");
        eventually(
            &format!("the API server from inside {}", ns.name),
            Duration::from_secs(10),
            || {
                ns.exec(&[
                    "curl",
                    "-sk",
                    "-m",
                    "2",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &url,
                ])
                .ok()
                .filter(|code| code != "000")
            },
        )?;
        Ok((outside, inside))
    }
}

/// One annotation of a pod.
pub fn annotation(pod: &Pod, key: &str) -> String {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
        .unwrap_or_default()
}

/// The `ferry cni` invocation as a container runtime makes it: a clean environment with
/// only `PATH` and the `CNI_*` variables, the network configuration on stdin.
pub fn cni(vars: &[(&str, &str)], conf: &Value) -> Result<Output> {
    use std::io::Write;
    let mut child = Command::new(ferry_bin())
        .arg("cni")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start ferry cni")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    eprintln!(
        "ferry cni {:?} -> {}\n  stdout: {}\n  stderr: {}",
        vars.iter()
            .find(|(k, _)| *k == "CNI_COMMAND")
            .map(|(_, v)| v),
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out)
}

/// GET `url` from inside `ns` until it answers with a body (or 30 s).
pub fn http_get(ns: &Netns, url: &str) -> Result<String> {
    let start = Instant::now();
    eventually(
        &format!("GET {url} from {}", ns.name),
        Duration::from_secs(30),
        || {
            ns.exec(&["curl", "-s", "-m", "2", url])
                .ok()
                .filter(|b| !b.is_empty())
        },
    )
    .inspect(|_| eprintln!("GET {url} from {} after {:?}", ns.name, start.elapsed()))
}

/// `ferry up`, SIGTERM by PID on drop (it then stops its OVN).
pub struct Up(pub std::process::Child);

/// `ferry up --no-agent --data-dir DIR/data --listen 127.0.0.1:FREE ARGS`, logging (at
/// `info`) to `DIR/up.log`.
pub fn ferry_up_logged(dir: &Path, args: &[&str]) -> Up {
    let log = std::fs::File::create(dir.join("up.log")).expect("log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    Up(Command::new(ferry_bin())
        .args(["up", "--no-agent", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start ferry up"))
}

/// `ovn-nbctl --db=DB ls-list` (empty when it fails).
pub fn nb_switches(db: &str) -> String {
    Command::new("ovn-nbctl")
        .arg(format!("--db={db}"))
        .args(["--timeout=5", "ls-list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Creates the default VPC and subnet through the API (`ferry_testkit::kubectl`), then
/// waits until `ls_list` (the NB's switches) shows its switch; returns the list.
pub fn create_subnet_and_list_switches(
    data: &Path,
    log_path: &Path,
    ls_list: impl Fn() -> String,
) -> String {
    use ferry_testkit::kubectl;
    if let Err(e) = kubectl::create_default_subnet(&data.join("kubeconfig")) {
        panic!(
            "creating the default subnet: {e:#}; ferry up log:\n{}",
            std::fs::read_to_string(log_path).unwrap_or_default()
        );
    }
    wait("the subnet's switch in the NB", log_path, || {
        let list = ls_list();
        list.contains(kubectl::DEFAULT_SWITCH).then_some(list)
    })
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 200 ms until it returns `Some`, or panics with `what` and the log.
pub fn wait<T>(what: &str, log: &std::path::Path, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: timed out; ferry up log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
