//! `deploy/` applied for real (`kubectl apply -k`) to `ferry up`'s API server, and the
//! agent DaemonSet's Pods run by the lab runtime from the image `scripts/image.sh` built
//! (issue 16): the embedded DaemonSet controller makes one Pod for the lab node, the lab
//! agent (`ferry agent --lab --lab-images`, playing the node's kubelet) unpacks the image
//! and runs the `install-cni` init container, then the `agent` and `cni` containers,
//! chrooted into it, in the host's network namespace, with the ConfigMap's environment and
//! a token of the `ferry-agent` ServiceAccount bound to the Pod.
//!
//! Asserted: `kubectl get ds` shows DESIRED = READY = 1 and `kubectl rollout status`
//! succeeds; the agent container's process has the unpacked root file system as its root
//! and the image's binary as its executable; the init container installed the image's
//! binary, the conflist (with the ConfigMap's DNS) and a kubeconfig on the lab host, and
//! that kubeconfig is the ServiceAccount's identity; the chrooted agent serves its metrics
//! (what its readiness probe checks) and the Pod is Ready; a changed template rolls out
//! (a new Pod, the plugin installed again); `kubectl delete -k` removes the Pod and the
//! `cni` container removes the plugin files as it stops.
//!
//! Everything runs in private mount and network namespaces (`scripts/lab-isolated.sh`),
//! with tmpfs over the host paths the DaemonSet mounts (/opt/cni, /etc/cni, /run/ferry,
//! /var/lib/ferry, /var/run/openvswitch), so nothing reaches the machine's own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const NODE: &str = "lab-ds-1";
const TAG: &str = "deploy-test";
/// The API server's port inside the private network namespace.
const PORT: u16 = 6555;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child process stopped with SIGTERM (by PID) on drop, SIGKILL after 15 s.
struct Proc(Child);

impl Proc {
    fn stop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Commands run inside the private namespaces held by a `sleep` under lab-isolated.sh.
struct Isolated {
    holder: Proc,
    kubeconfig: PathBuf,
}

impl Isolated {
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args([
            "-t",
            &self.holder.0.id().to_string(),
            "-m",
            "-n",
            "--",
            program,
        ]);
        c
    }

    fn sh(&self, script: &str) -> Output {
        let o = self
            .cmd("sh")
            .args(["-c", script])
            .output()
            .expect("nsenter sh");
        assert!(o.status.success(), "{script}: {}", text(&o));
        o
    }

    fn kubectl_run(&self, args: &[&str]) -> Output {
        self.cmd("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl")
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let o = self.kubectl_run(args);
        assert!(o.status.success(), "kubectl {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let o = self.kubectl_run(&[args, &["-o", "json"]].concat());
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).ok())?
    }
}

/// Builds the image of the binary under test into `out` (the Debian layer is cached
/// there by its inputs) and returns its manifest digest.
fn build_image(out: &Path) -> String {
    std::fs::create_dir_all(out).expect("mkdir");
    let binary = out.join("ferry.bin");
    std::fs::copy(env!("CARGO_BIN_EXE_ferry"), &binary).expect("copy the ferry binary");
    let started = Instant::now();
    let o = Command::new(repo().join("scripts/image.sh"))
        .arg("--binary")
        .arg(&binary)
        .arg("--out")
        .arg(out)
        .args(["--tag", TAG, "--no-load"])
        .output()
        .expect("scripts/image.sh");
    assert!(o.status.success(), "image.sh: {}", text(&o));
    let digest = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    eprintln!(
        "image {digest} built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(digest.starts_with("sha256:"), "{}", text(&o));
    digest
}

fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The PID of the process whose command line is `argv`.
fn find_process(argv: &[&str]) -> Option<i32> {
    let want = argv.join("\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (String::from_utf8_lossy(&cmdline).trim_end_matches('\0') == want).then_some(pid)
    })
}

#[test]
#[ignore = "needs root, mmdebstrap/umoci, the Debian mirror and kubectl"]
fn deploy_daemonset_runs_from_the_built_image_in_the_lab() {
    let work = tempfile::tempdir().expect("tempdir");
    let d = work.path();
    let image_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-daemonset-image");
    let digest = build_image(&image_dir);
    let ferry = d.join("ferry");
    std::fs::copy(env!("CARGO_BIN_EXE_ferry"), &ferry).expect("copy ferry");

    let holder = Proc(
        Command::new(repo().join("scripts/lab-isolated.sh"))
            .args(["sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("scripts/lab-isolated.sh"),
    );
    let pid = holder.0.id();
    eventually("the isolated namespaces", 10, || {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "sleep").then_some(())
    });
    let lab = Isolated {
        holder,
        kubeconfig: d.join("up/kubeconfig"),
    };
    lab.sh(
        "for p in /opt/cni /etc/cni /run/ferry /var/lib/ferry /var/run/openvswitch; do \
            mkdir -p $p && mount -t tmpfs ferry-deploy-test $p; done",
    );

    let log = |name: &str| std::fs::File::create(d.join(name)).expect("log");
    let mut up = Proc(
        lab.cmd(ferry.to_str().expect("utf-8"))
            .args(["up", "--no-dataplane", "--data-dir"])
            .arg(d.join("up"))
            .args(["--listen", &format!("127.0.0.1:{PORT}")])
            .stdin(Stdio::null())
            .stdout(log("up.log"))
            .stderr(log("up.err"))
            .spawn()
            .expect("ferry up"),
    );
    eventually("the API server", 60, || {
        let o = lab.kubectl_run(&["get", "--raw", "/healthz"]);
        o.status.success().then_some(())
    });
    // The lab node's kubelet: the lab runtime with the image layout.
    let mut kubelet = Proc(
        lab.cmd(ferry.to_str().expect("utf-8"))
            .args(["agent", "--lab", "--node", NODE, "--kubeconfig"])
            .arg(&lab.kubeconfig)
            .arg("--state-dir")
            .arg(d.join("agent"))
            .arg("--lab-images")
            .arg(image_dir.join("oci"))
            .args(["--ovs-db", "/var/run/openvswitch/db.sock"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log("agent.log"))
            .stderr(log("agent.err"))
            .spawn()
            .expect("ferry agent --lab"),
    );

    // deploy/ as deploy/README.md installs it, with the image built here.
    let deploy = d.join("deploy");
    let o = Command::new("cp")
        .arg("-r")
        .arg(repo().join("deploy"))
        .arg(&deploy)
        .output()
        .expect("cp");
    assert!(o.status.success(), "{}", text(&o));
    let kust = deploy.join("kustomization.yaml");
    let k = std::fs::read_to_string(&kust).expect("kustomization");
    let edited = k.replace(
        "  newName: ferry\n  newTag: latest",
        &format!("  newName: localhost/ferry\n  newTag: {TAG}"),
    );
    assert_ne!(k, edited, "the kustomization's image entry changed");
    std::fs::write(&kust, edited).expect("write");
    let applied = lab.kubectl(&["apply", "-k", deploy.to_str().expect("utf-8")]);
    assert!(
        applied.contains("daemonset.apps/ferry-agent created"),
        "{applied}"
    );

    let ds = eventually("the DaemonSet ready on the lab node", 180, || {
        let ds = lab.json(&["-n", "ferry-system", "get", "ds", "ferry-agent"])?;
        let s = &ds["status"];
        (s["desiredNumberScheduled"] == 1
            && s["numberReady"] == 1
            && s["updatedNumberScheduled"] == 1
            && s["numberAvailable"] == 1)
            .then_some(ds)
    });
    eprintln!("status: {}", ds["status"]);
    let rollout = lab.kubectl(&[
        "-n",
        "ferry-system",
        "rollout",
        "status",
        "ds/ferry-agent",
        "--timeout=60s",
    ]);
    assert!(rollout.contains("successfully rolled out"), "{rollout}");
    let table = lab.kubectl(&["-n", "ferry-system", "get", "ds"]);
    eprintln!("{table}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0][..6],
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE"
        ]
    );
    assert_eq!(rows[1][..6], ["ferry-agent", "1", "1", "1", "1", "1"]);

    // The Pod: on the lab node, both containers running, Ready.
    let pods = lab
        .json(&["-n", "ferry-system", "get", "pods", "-l", "app=ferry-agent"])
        .expect("pods");
    let pod = &pods["items"][0];
    assert_eq!(pod["spec"]["nodeName"], NODE, "{pod}");
    let ready = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "{pod}");

    // The agent container runs the image's binary, chrooted into the unpacked image.
    let rootfs = d
        .join("agent/images")
        .join(digest.replace(':', "-"))
        .join("rootfs");
    let agent_pid = find_process(&[
        "/usr/local/bin/ferry",
        "agent",
        &format!("--node={NODE}"),
        "--metrics-listen=0.0.0.0:9478",
        "--socket-lb-cgroup=/host/cgroup",
    ])
    .expect("the agent container's process");
    let root = std::fs::read_link(format!("/proc/{agent_pid}/root")).expect("root");
    assert_eq!(root, rootfs);
    let exe = std::fs::read_link(format!("/proc/{agent_pid}/exe")).expect("exe");
    assert_eq!(exe, rootfs.join("usr/local/bin/ferry"));
    let image_binary = sha256(&rootfs.join("usr/local/bin/ferry"));
    // (image.sh strips the debug info: the image's binary is not cargo's.)
    assert_ne!(image_binary, sha256(Path::new(env!("CARGO_BIN_EXE_ferry"))));

    // The init container installed the plugin on the lab host: the image's binary, the
    // conflist with the ConfigMap's cluster DNS, and the ServiceAccount's kubeconfig.
    let host = lab.sh("sha256sum /opt/cni/bin/ferry; cat /etc/cni/net.d/10-ferry.conflist");
    let host = String::from_utf8_lossy(&host.stdout).into_owned();
    let (sum, conflist) = host.split_once('\n').expect("two outputs");
    assert!(sum.starts_with(&image_binary), "{sum} vs {image_binary}");
    let conflist: Value = serde_json::from_str(conflist).expect("conflist");
    assert_eq!(
        conflist["plugins"][0]["dns"]["nameservers"],
        serde_json::json!(["10.96.0.10"]),
        "{conflist}"
    );
    assert_eq!(
        conflist["plugins"][0]["kubeconfig"],
        "/etc/cni/net.d/ferry-kubeconfig"
    );
    let whoami = lab
        .cmd("kubectl")
        .args([
            "--kubeconfig",
            "/etc/cni/net.d/ferry-kubeconfig",
            "auth",
            "whoami",
            "-o",
            "json",
        ])
        .output()
        .expect("kubectl auth whoami");
    assert!(whoami.status.success(), "{}", text(&whoami));
    let me: Value = serde_json::from_slice(&whoami.stdout).expect("whoami json");
    assert_eq!(
        me["status"]["userInfo"]["username"], "system:serviceaccount:ferry-system:ferry-agent",
        "{me}"
    );

    // The chrooted agent answers on its metrics port (its readiness probe's port).
    let metrics = lab.sh("curl -sf http://127.0.0.1:9478/metrics");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.contains("ferry_agent"), "{metrics}");

    // A changed template rolls: the old Pod goes (its `cni` container removes the plugin),
    // then the new Pod's init container installs it again.
    let old = pod["metadata"]["name"].as_str().expect("name").to_string();
    lab.kubectl(&[
        "-n",
        "ferry-system",
        "patch",
        "ds",
        "ferry-agent",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"ferry.test/revision":"2"}}}}}"#,
    ]);
    let rollout = lab.kubectl(&[
        "-n",
        "ferry-system",
        "rollout",
        "status",
        "ds/ferry-agent",
        "--timeout=120s",
    ]);
    assert!(rollout.contains("successfully rolled out"), "{rollout}");
    let pods = lab
        .json(&["-n", "ferry-system", "get", "pods", "-l", "app=ferry-agent"])
        .expect("pods");
    let names: Vec<&str> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert!(names.len() == 1 && names[0] != old, "{names:?} after {old}");
    eventually("the plugin installed by the new Pod", 60, || {
        let o = lab
            .cmd("test")
            .args(["-x", "/opt/cni/bin/ferry"])
            .status()
            .ok()?;
        o.success().then_some(())
    });

    // Uninstall: the Pod goes, and its `cni` container removes the plugin as it stops.
    lab.kubectl(&[
        "delete",
        "-k",
        deploy.to_str().expect("utf-8"),
        "--ignore-not-found",
    ]);
    eventually("the plugin files removed", 120, || {
        let o = lab
            .cmd("sh")
            .args(["-c", "ls /opt/cni/bin /etc/cni/net.d"])
            .output()
            .ok()?;
        let left = String::from_utf8_lossy(&o.stdout).into_owned();
        (!left.contains("ferry")).then_some(())
    });
    assert!(find_process(&["/usr/local/bin/ferry", "cni-install", "--watch"]).is_none());
    kubelet.stop();
    up.stop();
}
