//! Ferry's CNI under a real container runtime: Debian's containerd (its CRI plugin, runc)
//! runs as a child of this test with its own config, root, state and socket, its CNI
//! config and bin dirs filled by `ferry cni-install` (the DaemonSet's init container), and
//! an image built here (busybox-static in one umoci layer, imported with `ctr`) as both the
//! sandbox ("pause") image and the containers' image. The test drives the CRI the way the
//! kubelet does for Pods that exist in a private `ferry up` (API server, controllers, its
//! own OVN/OVS), with `ferry agent` probing for the node:
//!
//! - RunPodSandbox: containerd runs the installed plugin; the sandbox gets the address the
//!   controller assigned (PodSandboxStatus and the pod's annotation agree);
//! - CreateContainer/StartContainer: busybox httpd in one pod, a client in the other;
//! - the client reaches the server directly and through a YusurService (ExecSync wget);
//! - CNI CHECK (as a runtime would send it) passes;
//! - containerd restarted: the pods keep their network and the service still answers,
//!   CHECK still passes;
//! - StopPodSandbox/RemovePodSandbox: CNI DEL removes the OVS port and the host veth;
//! - `ferry cni-install --uninstall`: the runtime reports NetworkReady=false.

mod common;
mod cri;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use common::{FerryUp, annotation, eventually};
use cri::{Containerd, Cri, PodConfig};
use ferry_agent::plumb::host_ifname;

const IMAGE: &str = "localhost/ferry-test/busybox:1";

/// `ferry agent` for the test's node in the test's own namespace (no node interface, no
/// DNS: nothing on the host is touched); stopped by PID on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..300 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sandboxes the test made, stopped and removed through the CRI on drop (a failed
/// assertion must not leave pods, shims or namespaces behind), and libcni's cached
/// results for them removed.
struct Sandboxes<'a> {
    cri: &'a Cri,
    ids: Vec<String>,
}

impl Drop for Sandboxes<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.cri.stop_pod_sandbox(id);
            let _ = self.cri.remove_pod_sandbox(id);
            for name in [format!("ferry-{id}-eth0"), format!("cni-loopback-{id}-lo")] {
                let _ = std::fs::remove_file(Path::new("/var/lib/cni/results").join(name));
            }
        }
    }
}

/// Runs the plugin the way containerd does for CHECK: the sandbox's id and netns, the
/// pod in CNI_ARGS, the conflist's plugin entry with the list's name and version.
fn cni_check(conflist: &Value, sandbox: &str, netns: &str, pod: &str) -> Result<()> {
    let mut conf = conflist["plugins"][0].clone();
    conf["name"] = conflist["name"].clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={sandbox}"
    );
    let out = common::cni(
        &[
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", sandbox),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", &args),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        &conf,
    )?;
    if !out.status.success() || !out.stdout.is_empty() {
        bail!(
            "CHECK {pod}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}

/// GET `url` from `container` with busybox wget until the body contains `want` (60 s).
/// (No `wget -T`: Debian 12's static busybox segfaults with it; ExecSync's timeout bounds
/// each attempt instead.)
fn wget(cri: &Cri, container: &str, url: &str, want: &str) -> Result<String> {
    let mut last = String::new();
    eventually(
        &format!("GET {url}"),
        Duration::from_secs(60),
        || match cri.exec_sync(container, &["wget", "-q", "-O", "-", url], 5) {
            Ok((out, err, code)) => {
                last = format!("exit {code}: {out}{err}");
                (code == 0 && out.contains(want)).then_some(out)
            }
            Err(e) => {
                last = e.to_string();
                None
            }
        },
    )
    .with_context(|| format!("last attempt: {last}"))
}

#[test]
#[ignore = "needs root, containerd/runc/umoci/busybox-static, OVN/OVS and network namespaces"]
fn containerd_runs_pods_through_ferry_cni() -> Result<()> {
    let pid = std::process::id();
    let up = FerryUp::start("fcr")?;
    up.default_vpc(false)?;
    let node = format!("fcr{pid}node");

    // The node's agent: probes the service's backends.
    let agent_log = up.dir.path().join("agent.log");
    let log = std::fs::File::create(&agent_log)?;
    let _agent = Agent(
        Command::new(common::ferry_bin())
            .args(["agent", "--node", &node, "--kubeconfig"])
            .arg(up.agent_kubeconfig())
            .arg("--state-dir")
            .arg(up.dir.path().join("agent-state"))
            .arg("--ovs-db")
            .arg(up.ovs_sock())
            .args(["--ovs-netns", &up.ovs_netns()])
            .args(["--node-interface=false", "--cluster-dns", ""])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("ferry agent")?,
    );

    // containerd's dirs, and the plugin installed into them as the DaemonSet does.
    let dir = up.dir.path().join("containerd");
    std::fs::create_dir_all(&dir)?;
    let (bin_dir, conf_dir) = (
        Containerd::cni_bin_dir(&dir),
        Containerd::cni_conf_dir(&dir),
    );
    let install = Command::new(common::ferry_bin())
        .arg("cni-install")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--conf-dir")
        .arg(&conf_dir)
        .arg("--host-conf-dir")
        .arg(&conf_dir)
        .arg("--kubeconfig")
        .arg(up.agent_kubeconfig())
        .arg("--ovs-db")
        .arg(up.ovs_sock())
        .args(["--ovs-netns", &up.ovs_netns(), "--cluster-dns", ""])
        .output()?;
    assert!(
        install.status.success(),
        "cni-install: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let conflist: Value =
        serde_json::from_slice(&std::fs::read(conf_dir.join("10-ferry.conflist"))?)?;
    // containerd's CRI also sets up the pod's loopback with the standard `loopback`
    // plugin (Debian: containernetworking-plugins; kubeadm nodes: kubernetes-cni).
    std::os::unix::fs::symlink("/usr/lib/cni/loopback", bin_dir.join("loopback"))
        .context("linking /usr/lib/cni/loopback (apt-get install containernetworking-plugins)")?;

    std::fs::write(dir.join("config.toml"), Containerd::config(&dir, IMAGE))?;
    let mut containerd = Containerd::start(&dir)?;
    let cri = Cri::new(&containerd.socket)?;
    let (runtime, version) = cri.version()?;
    eprintln!("CRI runtime: {runtime} {version}");
    assert_eq!(runtime, "containerd");

    // The image, built here and imported (never pulled).
    let image = cri::busybox_image(&dir.join("image"), IMAGE)?;
    containerd.ctr(&[
        "-n",
        "k8s.io",
        "images",
        "import",
        &image.display().to_string(),
    ])?;
    let images = containerd.ctr(&["-n", "k8s.io", "images", "ls", "-q"])?;
    assert!(images.lines().any(|l| l == IMAGE), "{images}");

    // The runtime found Ferry's network config.
    let conditions = eventually("NetworkReady", Duration::from_secs(30), || {
        let c = cri.conditions().ok()?;
        c.iter()
            .any(|(t, ok, _)| t == "NetworkReady" && *ok)
            .then_some(c)
    })
    .with_context(|| format!("{:?}", cri.conditions()))?;
    eprintln!("runtime conditions: {conditions:?}");

    // Two Pods bound to the node, as the scheduler leaves them for the kubelet.
    up.pod("web", json!({"app": "cri-web"}), Some(&node), false)?;
    up.pod("client", json!({"app": "cri-client"}), Some(&node), false)?;
    let logs = dir.join("pods");
    let pod = |name: &str| -> Result<(PodConfig, k8s_openapi::api::core::v1::Pod)> {
        let p = up.get_pod(name)?.context("pod")?;
        let config = PodConfig {
            name: name.into(),
            namespace: "default".into(),
            uid: p.metadata.uid.clone().unwrap_or_default(),
            log_dir: logs.join(name),
        };
        std::fs::create_dir_all(&config.log_dir)?;
        Ok((config, p))
    };
    let (web_pod, _) = pod("web")?;
    let (client_pod, _) = pod("client")?;

    // RunPodSandbox right after the Pod exists: the plugin waits for the controller.
    let mut sandboxes = Sandboxes {
        cri: &cri,
        ids: Vec::new(),
    };
    let web = cri
        .run_pod_sandbox(&web_pod)
        .with_context(|| containerd.log_tail(30))?;
    sandboxes.ids.push(web.clone());
    let client = cri
        .run_pod_sandbox(&client_pod)
        .with_context(|| containerd.log_tail(30))?;
    sandboxes.ids.push(client.clone());
    let web_status = cri.sandbox_status(&web)?;
    let client_status = cri.sandbox_status(&client)?;
    let web_ip = annotation(&up.annotated_pod("web")?, "iaas.yusur.io/ip_address");
    let client_ip = annotation(&up.annotated_pod("client")?, "iaas.yusur.io/ip_address");
    assert!(web_status.ready && client_status.ready);
    assert_eq!(
        web_status.ip, web_ip,
        "the sandbox's IP is the pod's OVN address"
    );
    assert_eq!(client_status.ip, client_ip);
    assert_ne!(web_ip, client_ip);
    let ports = up.vsctl(&["list-ports", "br-int"])?;
    for id in [&web, &client] {
        assert!(ports.contains(&host_ifname(id, "eth0")), "{ports}");
    }

    // Containers: busybox httpd in web, a sleeping client.
    let httpd = cri.create_container(
        &web,
        &web_pod,
        "web",
        IMAGE,
        &[
            "/bin/sh",
            "-c",
            "echo ferry-cri-web-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    )?;
    cri.start_container(&httpd)?;
    let sleeper =
        cri.create_container(&client, &client_pod, "client", IMAGE, &["sleep", "1000000"])?;
    cri.start_container(&sleeper)?;
    let (addr, _, _) = cri.exec_sync(&sleeper, &["ip", "addr", "show", "eth0"], 10)?;
    assert!(addr.contains(&format!("inet {client_ip}/")), "{addr}");

    // Pod to pod, then through a YusurService (the web pod is its backend, probed by the
    // agent).
    let body = wget(
        &cri,
        &sleeper,
        &format!("http://{web_ip}:8080/"),
        "ferry-cri-web-web",
    )?;
    eprintln!("client -> web pod: {body}");
    up.create(
        json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
        "metadata": {"name": "cri-web", "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.88",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                 "selector": {"app": "cri-web"}}}),
    )?;
    let body =
        wget(&cri, &sleeper, "http://10.96.0.88/", "ferry-cri-web-web").with_context(|| {
            format!(
                "{}\n--- agent ---\n{}",
                up.log_tail(),
                ferry_testkit::tail(&agent_log, 30)
            )
        })?;
    eprintln!("client -> YusurService cri-web: {body}");

    // CHECK, as the runtime would send it.
    let netns = |id: &str| cri.sandbox_status(id).and_then(|s| s.netns());
    cni_check(&conflist, &web, &netns(&web)?, "web")?;
    cni_check(&conflist, &client, &netns(&client)?, "client")?;

    // containerd restarted: the pods keep their network.
    containerd.stop()?;
    containerd = Containerd::start(&dir)?;
    let after = cri.sandbox_status(&web)?;
    assert!(after.ready, "web sandbox not ready after the restart");
    assert_eq!(after.ip, web_ip);
    let body = wget(&cri, &sleeper, "http://10.96.0.88/", "ferry-cri-web-web")?;
    eprintln!("after the containerd restart: {body}");
    cni_check(&conflist, &web, &netns(&web)?, "web")?;
    cni_check(&conflist, &client, &netns(&client)?, "client")?;

    // StopPodSandbox runs CNI DEL; RemovePodSandbox removes the sandbox.
    for (id, name) in [(&client, "client"), (&web, "web")] {
        let ns = netns(id)?;
        // Twice, as the kubelet may: the second is a no-op success.
        for _ in 0..2 {
            cri.stop_pod_sandbox(id)
                .with_context(|| containerd.log_tail(30))?;
        }
        let host = host_ifname(id, "eth0");
        let ports = up.vsctl(&["list-ports", "br-int"])?;
        assert!(
            !ports.contains(&host),
            "{name}: OVS port {host} left: {ports}"
        );
        assert!(
            common::tool("ip", &["-n", &up.ovs_netns(), "link", "show", &host]).is_err(),
            "{name}: host veth {host} left"
        );
        cri.remove_pod_sandbox(id)?;
        assert!(
            cri.sandbox_status(id).is_err(),
            "{name}: sandbox still listed"
        );
        assert!(!Path::new(&ns).exists(), "{name}: netns {ns} left");
    }
    drop(sandboxes);

    // Uninstalled (the DaemonSet's `cni` container on SIGTERM): the runtime reports its
    // network not ready, so the kubelet stops starting pods on the node.
    let uninstall = Command::new(common::ferry_bin())
        .arg("cni-install")
        .arg("--uninstall")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--conf-dir")
        .arg(&conf_dir)
        .arg("--kubeconfig")
        .arg(up.agent_kubeconfig())
        .output()?;
    assert!(uninstall.status.success(), "{uninstall:?}");
    assert!(!bin_dir.join("ferry").exists() && !conf_dir.join("10-ferry.conflist").exists());
    let (_, _, message) = eventually("NetworkReady=false", Duration::from_secs(30), || {
        cri.conditions()
            .ok()?
            .into_iter()
            .find(|(t, ok, _)| t == "NetworkReady" && !*ok)
    })?;
    eprintln!("after cni-install --uninstall: NetworkReady=false: {message}");
    containerd.stop()?;
    Ok(())
}
