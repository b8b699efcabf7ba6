//! A minimal CRI client and a private containerd for the tests: gRPC (protobuf over HTTP/2,
//! hyper's client on the containerd socket) with only the `runtime.v1.RuntimeService`
//! calls the kubelet makes to run a pod (RunPodSandbox, CreateContainer, StartContainer,
//! ExecSync, PodSandboxStatus, StopPodSandbox, RemovePodSandbox, Status, Version), and
//! [`Containerd`]: Debian's containerd as a child process with its own config, root,
//! state and socket (never the system one), its CRI plugin pointed at the test's CNI
//! dirs and sandbox image.

#![allow(dead_code)]

pub mod proto;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use proto::Msg;

const RUNTIME: &str = "runtime.v1.RuntimeService";

/// Runs futures of the h2 connection on the client's runtime.
#[derive(Clone)]
struct Exec;

impl<F> hyper::rt::Executor<F> for Exec
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

/// The CRI endpoint (a unix socket), called the way the kubelet calls it.
pub struct Cri {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
}

/// The gRPC length-prefixed frame of one message.
fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// The message of a unary reply body (one frame).
fn unframe(body: &[u8]) -> Result<Vec<u8>> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let len = body
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .context("short gRPC frame")? as usize;
    if body[0] != 0 {
        bail!("compressed gRPC reply");
    }
    body.get(5..5 + len)
        .map(<[u8]>::to_vec)
        .context("truncated gRPC frame")
}

impl Cri {
    pub fn new(socket: &Path) -> Result<Cri> {
        Ok(Cri {
            socket: socket.to_owned(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    /// One unary call of `runtime.v1.RuntimeService/METHOD` on a fresh connection.
    pub fn call(&self, method: &str, req: Msg) -> Result<Vec<u8>> {
        let socket = self.socket.clone();
        let method = method.to_owned();
        self.rt.block_on(async move {
            let io = tokio::net::UnixStream::connect(&socket)
                .await
                .with_context(|| format!("connecting to {}", socket.display()))?;
            let (mut send, conn) = hyper::client::conn::http2::Builder::new(Exec)
                .handshake(hyper_util::rt::TokioIo::new(io))
                .await?;
            tokio::spawn(conn);
            let request = hyper::Request::builder()
                .method(hyper::Method::POST)
                .uri(format!("http://localhost/{RUNTIME}/{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from(frame(&req.0))))?;
            let response =
                tokio::time::timeout(Duration::from_secs(120), send.send_request(request))
                    .await
                    .with_context(|| format!("{method}: no answer in 120 s"))??;
            let headers = response.headers().clone();
            let collected = response.into_body().collect().await?;
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let get = |k: &str| {
                trailers
                    .get(k)
                    .or_else(|| headers.get(k))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let code: u32 = get("grpc-status")
                .context("no grpc-status")?
                .parse()
                .context("grpc-status")?;
            if code != 0 {
                bail!(
                    "{method}: grpc-status {code}: {}",
                    get("grpc-message").unwrap_or_default()
                );
            }
            unframe(&collected.to_bytes())
        })
    }

    /// VersionResponse.runtime_name and runtime_version.
    pub fn version(&self) -> Result<(String, String)> {
        let r = self.call("Version", Msg::new().string(1, "v1"))?;
        Ok((proto::string_of(&r, 2), proto::string_of(&r, 3)))
    }

    /// The runtime's conditions (`RuntimeReady`, `NetworkReady`) as (type, status, message).
    pub fn conditions(&self) -> Result<Vec<(String, bool, String)>> {
        let r = self.call("Status", Msg::new())?;
        let status = proto::bytes_of(&r, 1);
        Ok(proto::repeated_of(status, 1)
            .into_iter()
            .map(|c| {
                (
                    proto::string_of(c, 1),
                    proto::uint_of(c, 2) != 0,
                    proto::string_of(c, 4),
                )
            })
            .collect())
    }

    pub fn run_pod_sandbox(&self, config: &PodConfig) -> Result<String> {
        let r = self.call("RunPodSandbox", Msg::new().message(1, config.encode()))?;
        Ok(proto::string_of(&r, 1))
    }

    pub fn create_container(
        &self,
        sandbox: &str,
        pod: &PodConfig,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> Result<String> {
        let config = Msg::new()
            .message(1, Msg::new().string(1, name))
            .message(2, Msg::new().string(1, image))
            .strings(3, command)
            .string(11, &format!("{name}.log"));
        let r = self.call(
            "CreateContainer",
            Msg::new()
                .string(1, sandbox)
                .message(2, config)
                .message(3, pod.encode()),
        )?;
        Ok(proto::string_of(&r, 1))
    }

    pub fn start_container(&self, id: &str) -> Result<()> {
        self.call("StartContainer", Msg::new().string(1, id))
            .map(drop)
    }

    /// ExecSync: (stdout, stderr, exit code).
    pub fn exec_sync(
        &self,
        container: &str,
        cmd: &[&str],
        timeout_s: u64,
    ) -> Result<(String, String, i64)> {
        let r = self.call(
            "ExecSync",
            Msg::new()
                .string(1, container)
                .strings(2, cmd)
                .uint(3, timeout_s),
        )?;
        Ok((
            proto::string_of(&r, 1),
            proto::string_of(&r, 2),
            // int32 exit_code: negative values are 10-byte varints.
            proto::uint_of(&r, 3) as i64,
        ))
    }

    /// PodSandboxStatus (verbose): the status message and the `info` map.
    pub fn sandbox_status(&self, id: &str) -> Result<SandboxStatus> {
        let r = self.call("PodSandboxStatus", Msg::new().string(1, id).bool(2, true))?;
        let status = proto::bytes_of(&r, 1);
        let network = proto::bytes_of(status, 5);
        Ok(SandboxStatus {
            id: proto::string_of(status, 1),
            ready: proto::uint_of(status, 3) == 0,
            ip: proto::string_of(network, 1),
            info: proto::map_of(&r, 2).into_iter().collect(),
        })
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.call("StopPodSandbox", Msg::new().string(1, id))
            .map(drop)
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.call("RemovePodSandbox", Msg::new().string(1, id))
            .map(drop)
    }
}

/// What the kubelet puts in a PodSandboxConfig, for one Pod.
#[derive(Debug, Clone)]
pub struct PodConfig {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub log_dir: PathBuf,
}

impl PodConfig {
    pub fn encode(&self) -> Msg {
        Msg::new()
            .message(
                1,
                Msg::new()
                    .string(1, &self.name)
                    .string(2, &self.uid)
                    .string(3, &self.namespace),
            )
            .string(2, &self.name)
            .string(3, &self.log_dir.display().to_string())
            .entry(6, "io.kubernetes.pod.name", &self.name)
            .entry(6, "io.kubernetes.pod.namespace", &self.namespace)
            .entry(6, "io.kubernetes.pod.uid", &self.uid)
    }
}

/// PodSandboxStatus as read back.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    pub id: String,
    pub ready: bool,
    /// The address the CNI result gave the sandbox.
    pub ip: String,
    /// containerd's verbose `info` (its `info` key holds JSON: the CNI result, the OCI spec).
    pub info: std::collections::BTreeMap<String, String>,
}

impl SandboxStatus {
    /// The sandbox's network namespace path: the OCI spec's `network` namespace in
    /// containerd's verbose info.
    pub fn netns(&self) -> Result<String> {
        let info: serde_json::Value =
            serde_json::from_str(self.info.get("info").context("no verbose info")?)?;
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("no network namespace in the sandbox's spec: {info}"))
    }
}

/// containerd run by the test: its own config, root, state, socket and CNI dirs.
pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    pub fn cni_bin_dir(dir: &Path) -> PathBuf {
        dir.join("cni/bin")
    }
    pub fn cni_conf_dir(dir: &Path) -> PathBuf {
        dir.join("cni/net.d")
    }

    /// The config.toml (version 2, containerd 1.6): CRI with the test's CNI dirs and
    /// sandbox image, runc through the v2 shim with cgroupfs, the native snapshotter (it
    /// works on any file system the temp dir is on).
    pub fn config(dir: &Path, sandbox_image: &str) -> String {
        format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  enable_selinux = false
  # Keep the pods' oom_score_adj at or above containerd's own: lowering it needs
  # CAP_SYS_RESOURCE, which a CI container may lack.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = 1
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = dir.join("containerd.sock").display(),
            opt = dir.join("opt").display(),
            bin = Containerd::cni_bin_dir(dir).display(),
            conf = Containerd::cni_conf_dir(dir).display(),
        )
    }

    /// Starts containerd with the config in `dir` (written by the caller) and waits for
    /// its CRI to answer.
    pub fn start(dir: &Path) -> Result<Containerd> {
        let socket = dir.join("containerd.sock");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd (apt-get install containerd)")?;
        let mut c = Containerd {
            dir: dir.to_owned(),
            socket,
            child: Some(child),
        };
        let cri = Cri::new(&c.socket)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(ch) = c.child.as_mut()
                && let Some(status) = ch.try_wait()?
            {
                bail!("containerd exited: {status}\n{}", c.log_tail(30));
            }
            if cri.version().is_ok() {
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!("containerd's CRI never answered\n{}", c.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ctr` against this containerd.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("running ctr")?;
        if !out.status.success() {
            bail!(
                "ctr {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn log_tail(&self, n: usize) -> String {
        ferry_testkit::tail(&self.dir.join("containerd.log"), n)
    }

    /// SIGTERM (by PID) and wait; the shims and the pods' processes keep running, as
    /// when a node's containerd is restarted.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Builds a tiny OCI image archive (one layer: busybox-static as /bin/busybox with its
/// applets linked, entrypoint `sleep`) with umoci, ready for `ctr images import`.
/// `name` is the image reference (e.g. `localhost/ferry-test/busybox:1`).
pub fn busybox_image(work: &Path, name: &str) -> Result<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox is missing (apt-get install busybox-static)");
    }
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    for d in ["proc", "sys", "dev", "etc", "tmp", "www"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy(busybox, rootfs.join("bin/busybox"))?;
    for applet in [
        "sh", "sleep", "wget", "ip", "httpd", "cat", "hostname", "ls",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    let layer = work.join("layer.tar");
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
        ])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg("."))?;
    let oci = work.join("oci");
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let image = format!("{}:{tag}", oci.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(&oci))?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image", &image])
        .arg(&layer))?;
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.entrypoint=/bin/sleep",
        "--config.cmd=1000000000",
        "--config.env=PATH=/bin",
    ]))?;
    // containerd's importer names the image from the annotation
    // `io.containerd.image.name`, or from `org.opencontainers.image.ref.name` with
    // `--base-name`; write the full name as the ref so the import keeps it.
    let index_path = oci.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path)?)?;
    for m in index["manifests"].as_array_mut().into_iter().flatten() {
        m["annotations"]["io.containerd.image.name"] = name.into();
    }
    std::fs::write(&index_path, serde_json::to_vec(&index)?)?;
    let archive = work.join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&oci)
        .arg("-cf")
        .arg(&archive)
        .arg("."))?;
    Ok(archive)
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
