//! Scheduling and workloads end to end, as a kubectl user meets them on `ferry up` with two
//! lab nodes (agents in lab mode, its own OVN): with kubectl 1.27, 1.32 and 1.33 each,
//! `create deployment web --replicas=3 -- python3 -m http.server 8080` gives 3 Running
//! pods spread over both nodes whose server answers through OVN, `rollout status`
//! returns, `logs` (also `-f`, `--tail`), `exec` (exit codes, stdin) and `port-forward` reach
//! a replica through the API server and its node's agent, `scale --replicas=1` leaves one,
//! a pod whose nodeSelector matches nothing is Pending with `PodScheduled=False` and a
//! FailedScheduling Event; the kubelet duties include `logs --previous`. A second test creates
//! 100 pods and prints created -> bound and created -> Running latencies (p50/p99).
//!
//! Names are unique per test process (nodes `wl<pid>a`/`wl<pid>b`, chassis `wl<pid>`), so
//! a lab or another test on the machine is never touched.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_testkit::{eventually, tail};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// One `ferry up` at a time in this binary (each runs an OVN stack).
static SERIAL: Mutex<()> = Mutex::new(());

/// `ferry up` with two lab nodes; SIGTERM (by PID) on drop, which stops the agents (they
/// remove their namespaces and processes) and OVN.
struct Up {
    child: Child,
    dir: tempfile::TempDir,
    nodes: [String; 2],
    rt: tokio::runtime::Runtime,
    /// Set once it serves.
    api: Option<kube::Client>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Up {
    fn start(tag: &str) -> Result<Up> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{tag}-"))
            .tempdir()?;
        let id = std::process::id();
        let nodes = [format!("{tag}{id}a"), format!("{tag}{id}b")];
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.path().join("up.log"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["up", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--gateway-chassis", &format!("{tag}{id}")])
            .args(["--nodes", &nodes.join(",")])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start ferry up")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let kubeconfig = dir.path().join("data/kubeconfig");
        let mut up = Up {
            child,
            api: None,
            rt,
            dir,
            nodes,
        };
        let client = eventually("ferry up serving", Duration::from_secs(90), || {
            if let Ok(Some(status)) = up.child.try_wait() {
                return Err(format!("ferry up exited: {status}"));
            }
            up.rt
                .block_on(async {
                    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).ok()?;
                    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                        .await
                        .ok()?;
                    let client = kube::Client::try_from(cfg).ok()?;
                    let vpc = kube::api::GroupVersionKind::gvk("iaas.yusur.io", "v1", "Vpc");
                    kube::discovery::pinned_kind(&client, &vpc).await.ok()?;
                    Some(client)
                })
                .ok_or_else(|| "not yet".to_string())
        });
        match client {
            Ok(c) => up.api = Some(c),
            Err(e) => bail!("{e}\n{}", up.log_tail()),
        }
        Ok(up)
    }

    fn client(&self) -> kube::Client {
        self.api.clone().expect("serving")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("data/kubeconfig")
    }

    fn log_tail(&self) -> String {
        tail(&self.dir.path().join("up.log"), 40)
    }

    fn kubectl(&self, version: &str) -> Option<Kubectl> {
        Some(Kubectl {
            bin: kubectl_for(version)?,
            kubeconfig: self.kubeconfig(),
            cache: self.dir.path().join(format!("kubectl-cache-{version}")),
        })
    }

    /// The default VPC with its pod subnet and the join subnet, as the lab has them.
    fn default_vpc(&self) -> Result<()> {
        let k = self.kubectl("1.33").or_else(|| {
            Some(Kubectl {
                bin: PathBuf::from("kubectl"),
                kubeconfig: self.kubeconfig(),
                cache: self.dir.path().join("kubectl-cache"),
            })
        });
        let k = k.context("kubectl")?;
        let objs = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "iaas.yusur.io/v1", "kind": "Vpc", "metadata": {"name": ferry_api::DEFAULT_VPC}, "spec": {}},
            {"apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": "ovn-default"},
                "spec": {"vpc": ferry_api::DEFAULT_VPC, "cidrBlock": "10.16.0.0/16", "default": true}},
            {"apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": "subnet0"},
                "spec": {"vpc": ferry_api::DEFAULT_VPC, "cidrBlock": "100.64.0.0/16", "default": false}}]});
        let file = self.dir.path().join("vpc.json");
        std::fs::write(&file, serde_json::to_vec(&objs)?)?;
        k.ok(&["create", "-f", file.to_str().context("utf-8")?])?;
        Ok(())
    }

    fn pods(&self, ns: &str) -> Result<Vec<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client(), ns);
        Ok(self.rt.block_on(api.list(&ListParams::default()))?.items)
    }
}

/// The versioned kubectl (`kubectl.1.27`, ...) beside the `kubectl` on PATH, if installed.
fn kubectl_for(version: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kubectl = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.exists())?;
    let bin = std::fs::canonicalize(kubectl)
        .ok()?
        .with_file_name(format!("kubectl.{version}"));
    bin.exists().then_some(bin)
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .output();
        let Ok(out) = out else {
            return (false, format!("cannot run {}", self.bin.display()));
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("$ kubectl {}\n{text}", args.join(" "));
        (out.status.success(), text)
    }
    fn ok(&self, args: &[&str]) -> Result<String> {
        let (ok, text) = self.run(args);
        if !ok {
            bail!("kubectl {} failed: {text}", args.join(" "));
        }
        Ok(text)
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn condition(p: &Pod, type_: &str) -> Option<(String, Option<String>, Option<String>)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn kubectl_flow(up: &Up, k: &Kubectl, ns: &str) -> Result<()> {
    k.ok(&["create", "ns", ns])?;
    let t0 = Instant::now();
    k.ok(&[
        "-n",
        ns,
        "create",
        "deployment",
        "web",
        "--image=web",
        "--replicas=3",
        "--",
        "python3",
        "-m",
        "http.server",
        "8080",
    ])?;
    let pods = eventually("3 Running pods of web", Duration::from_secs(60), || {
        let ps = up.pods(ns).map_err(|e| e.to_string())?;
        let running: Vec<Pod> = ps.into_iter().filter(|p| phase(p) == "Running").collect();
        if running.len() == 3 {
            Ok(running)
        } else {
            Err(format!("{} Running", running.len()))
        }
    })
    .with_context(|| up.log_tail())?;
    eprintln!(
        "FIGURE {ns}: 3 replicas Running {:.2} s after kubectl create deployment",
        t0.elapsed().as_secs_f64()
    );
    let mut nodes: Vec<String> = pods.iter().map(node_of).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes, up.nodes.to_vec(), "replicas spread over both nodes");
    for p in &pods {
        let st = p.status.as_ref().context("status")?;
        assert!(st.pod_ip.is_some() && st.start_time.is_some(), "{st:?}");
        assert_eq!(
            condition(p, "PodScheduled").map(|c| c.0),
            Some("True".into())
        );
        let cs = &st
            .container_statuses
            .as_ref()
            .context("containerStatuses")?[0];
        assert_eq!((cs.image.as_str(), cs.restart_count), ("web", 0));
        assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
    }
    let out = k.ok(&[
        "-n",
        ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=60s",
    ])?;
    assert!(out.contains("successfully rolled out"), "{out}");
    // The server answers through OVN from a node's namespace.
    let ip = pods[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("podIP")?;
    let from = format!("ferry-{}", up.nodes[0]);
    let body = eventually(
        "python's http.server answering",
        Duration::from_secs(30),
        || {
            ferry_testkit::tool(
                "ip",
                &[
                    "netns",
                    "exec",
                    &from,
                    "curl",
                    "-s",
                    "-m",
                    "2",
                    &format!("http://{ip}:8080/"),
                ],
            )
            .ok()
            .filter(|b| b.contains("Directory listing"))
        },
    )?;
    assert!(body.contains("Directory listing"));
    let pod = pods[0].metadata.name.clone().context("pod name")?;
    logs_and_exec(k, ns, &pod, &from, &ip)?;
    k.ok(&["-n", ns, "scale", "deployment/web", "--replicas=1"])?;
    eventually("one pod of web left", Duration::from_secs(60), || {
        let n = up.pods(ns).map_err(|e| e.to_string())?.len();
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} pods"))
        }
    })?;
    k.ok(&[
        "-n",
        ns,
        "run",
        "nowhere",
        "--image=x",
        "--overrides={\"apiVersion\":\"v1\",\"spec\":{\"nodeSelector\":{\"disk\":\"nvme\"}}}",
    ])?;
    let want = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.";
    eventually(
        "nowhere Pending, PodScheduled=False",
        Duration::from_secs(30),
        || {
            let p = up
                .pods(ns)
                .ok()?
                .into_iter()
                .find(|p| p.metadata.name.as_deref() == Some("nowhere"))?;
            (phase(&p) == "Pending"
                && condition(&p, "PodScheduled")
                    == Some((
                        "False".into(),
                        Some("Unschedulable".into()),
                        Some(want.into()),
                    )))
            .then_some(())
        },
    )?;
    let events: Api<Event> = Api::namespaced(up.client(), ns);
    eventually("a FailedScheduling Event", Duration::from_secs(30), || {
        up.rt
            .block_on(events.list(&ListParams::default()))
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("nowhere")
                    && e.reason.as_deref() == Some("FailedScheduling")
                    && e.message.as_deref() == Some(want)
            })
    })?;
    k.ok(&["delete", "ns", ns, "--wait=false"])?;
    Ok(())
}

/// `kubectl logs` shows the server's access log (python's http.server writes it to
/// stderr), `logs -f` streams a request made after it started, `exec -- hostname` answers
/// the pod's name, `exec -- sh -c 'exit 3'` exits 3, `exec -i -- cat` echoes stdin and
/// `port-forward` reaches the server: kubectl 1.27 over SPDY/3.1, 1.30+ over WebSocket,
/// through the API server's proxy to the agent of the pod's node.
fn logs_and_exec(k: &Kubectl, ns: &str, pod: &str, from_netns: &str, ip: &str) -> Result<()> {
    let curl = |path: &str| {
        ferry_testkit::tool(
            "ip",
            &[
                "netns",
                "exec",
                from_netns,
                "curl",
                "-s",
                "-m",
                "2",
                &format!("http://{ip}:8080{path}"),
            ],
        )
    };
    let logs = eventually(
        "kubectl logs shows the access log",
        Duration::from_secs(30),
        || {
            let (ok, out) = k.run(&["-n", ns, "logs", pod]);
            (ok && out.contains("\"GET / HTTP/1.1\" 200")).then_some(out)
        },
    )?;
    assert!(logs.contains("GET / HTTP/1.1"), "{logs}");
    let tail = k.ok(&["-n", ns, "logs", pod, "--tail=1", "-c", "web"])?;
    assert_eq!(tail.lines().count(), 1, "{tail}");
    // Follow: a request made after `logs -f` started shows up in its output.
    let mut follow = Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args(["-n", ns, "logs", "-f", pod])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("kubectl logs -f")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = follow.stdout.take().context("stdout")?;
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let marker = format!("/followed-{}", std::process::id());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        let _ = curl(&marker);
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            if line.contains(&marker) {
                seen = true;
                break;
            }
        }
    }
    let pid = follow.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = follow.wait();
    assert!(seen, "kubectl logs -f never showed a request to {marker}");
    let host = k.ok(&["-n", ns, "exec", pod, "--", "hostname"])?;
    assert_eq!(host.trim(), pod);
    let out = Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args([
            "-n",
            ns,
            "exec",
            pod,
            "--",
            "sh",
            "-c",
            "echo bye >&2; exit 3",
        ])
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("bye"));
    let mut cat = Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args(["-n", ns, "exec", "-i", pod, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().context("stdin")?;
        stdin.write_all(b"through stdin\n")?;
    }
    let echoed = cat.wait_with_output()?;
    assert_eq!(
        (
            echoed.status.code(),
            String::from_utf8_lossy(&echoed.stdout).as_ref()
        ),
        (Some(0), "through stdin\n")
    );
    // Port-forward (SPDY/3.1 on 1.27, SPDY tunnelled in WebSocket on 1.31+): a local
    // port answers with the pod's server.
    let mut pf = Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args(["-n", ns, "port-forward", &format!("pod/{pod}"), ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("kubectl port-forward")?;
    let pf_out = pf.stdout.take().context("stdout")?;
    let (ptx, prx) = std::sync::mpsc::channel::<u16>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(pf_out)
            .lines()
            .map_while(Result::ok)
        {
            // "Forwarding from 127.0.0.1:43567 -> 8080"
            if let Some(port) = line
                .strip_prefix("Forwarding from 127.0.0.1:")
                .and_then(|r| r.split(' ').next())
                .and_then(|p| p.parse().ok())
            {
                let _ = ptx.send(port);
            }
        }
    });
    let forwarded = prx.recv_timeout(Duration::from_secs(30)).map(|port| {
        ferry_testkit::tool(
            "curl",
            &["-s", "-m", "5", &format!("http://127.0.0.1:{port}/")],
        )
    });
    let _ = Command::new("kill")
        .args(["-TERM", &pf.id().to_string()])
        .status();
    let _ = pf.wait();
    let page = forwarded
        .context("kubectl port-forward printed no local port")?
        .context("curl through the forwarded port")?;
    assert!(page.contains("Directory listing"), "{page}");
    Ok(())
}

#[test]
#[ignore = "needs root, OVN/OVS and network namespaces"]
fn deployment_on_two_lab_nodes_with_kubectl_1_27_1_32_1_33() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let up = Up::start("wl")?;
    up.default_vpc()?;
    eventually("both agents' Nodes", Duration::from_secs(60), || {
        let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(up.client());
        let n = up
            .rt
            .block_on(api.list(&ListParams::default()))
            .ok()?
            .items
            .len();
        (n == 2).then_some(())
    })?;
    for (i, version) in ["1.27", "1.32", "1.33"].iter().enumerate() {
        let Some(k) = up.kubectl(version) else {
            eprintln!("SKIPPED: kubectl {version} is not installed");
            continue;
        };
        kubectl_flow(&up, &k, &format!("t{}", i + 1))
            .with_context(|| format!("kubectl {version}\n{}", up.log_tail()))?;
    }
    kubelet_duties(&up).with_context(|| up.log_tail())?;
    Ok(())
}

fn container_status(p: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

/// What the lab agent does as a kubelet: readiness decides Ready, a failing liveness probe
/// restarts the container, `restartPolicy: Never` ends in Succeeded or Failed with the exit
/// code, env and the downward API reach the process.
fn kubelet_duties(up: &Up) -> Result<()> {
    let ns = "kubelet";
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(up.client());
    up.rt.block_on(api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
    ))?;
    let pods: Api<Pod> = Api::namespaced(up.client(), ns);
    let make = |name: &str, spec: serde_json::Value| -> Result<()> {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?;
        up.rt.block_on(pods.create(&PostParams::default(), &p))?;
        Ok(())
    };
    make(
        "ready-later",
        json!({"containers": [{"name": "c", "image": "srv",
        "command": ["sh", "-c", "sleep 3; exec python3 -m http.server 8081"],
        "ports": [{"name": "http", "containerPort": 8081}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}]}),
    )?;
    make(
        "unlively",
        json!({"containers": [{"name": "c", "image": "srv", "command": ["sleep", "600"],
        "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2}}]}),
    )?;
    make(
        "done-ok",
        json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "job", "command": ["true"]}]}),
    )?;
    make(
        "done-bad",
        json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "job", "command": ["sh", "-c", "exit 3"]}]}),
    )?;
    make(
        "twice",
        json!({"containers": [{"name": "c", "image": "job",
        "command": ["sh", "-c", "echo run $(date +%s%N); sleep 1; exit 1"]}]}),
    )?;
    make(
        "env",
        json!({"containers": [{"name": "c", "image": "env",
        "command": ["sh", "-c", "echo \"$GREETING from $ME in $(pwd)\"; sleep 600"], "workingDir": "/tmp",
        "env": [{"name": "GREETING", "value": "hello"},
            {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}),
    )?;
    let get = |name: &str| up.rt.block_on(pods.get(name)).ok();
    // Readiness: Running but not Ready first, then Ready once the server answers.
    let not_ready = eventually(
        "ready-later Running, not Ready",
        Duration::from_secs(60),
        || {
            let p = get("ready-later")?;
            (phase(&p) == "Running").then(|| condition(&p, "Ready"))
        },
    )?;
    assert_eq!(
        not_ready,
        Some((
            "False".into(),
            Some("ContainersNotReady".into()),
            Some("containers with unready status: [c]".into())
        ))
    );
    eventually("ready-later Ready", Duration::from_secs(60), || {
        let p = get("ready-later")?;
        (condition(&p, "Ready").map(|c| c.0) == Some("True".into())
            && condition(&p, "ContainersReady").map(|c| c.0) == Some("True".into()))
        .then_some(())
    })?;
    // Liveness: killed and restarted, the last run recorded.
    let cs = eventually("unlively restarted", Duration::from_secs(60), || {
        let cs = container_status(&get("unlively")?)?;
        (cs.restart_count >= 1).then_some(cs)
    })?;
    let last = cs
        .last_state
        .and_then(|s| s.terminated)
        .context("lastState.terminated")?;
    assert_eq!(last.exit_code, 137, "{last:?}");
    // restartPolicy Never: Succeeded and Failed, with the exit code.
    for (name, want, code, reason) in [
        ("done-ok", "Succeeded", 0, "Completed"),
        ("done-bad", "Failed", 3, "Error"),
    ] {
        let p = eventually(&format!("{name} {want}"), Duration::from_secs(60), || {
            let p = get(name)?;
            (phase(&p) == want).then_some(p)
        })?;
        let t = container_status(&p)
            .and_then(|c| c.state)
            .and_then(|s| s.terminated)
            .context("state.terminated")?;
        assert_eq!(
            (t.exit_code, t.reason.as_deref()),
            (code, Some(reason)),
            "{name}"
        );
        assert_eq!(
            condition(&p, "Ready").map(|c| c.1),
            Some(Some("PodCompleted".into()))
        );
    }
    // env, the downward API and workingDir, from the container's output (`pods/log`).
    let line = eventually("env's output", Duration::from_secs(60), || {
        let text = up.rt.block_on(pods.logs("env", &Default::default())).ok()?;
        text.lines().find(|l| l.contains("hello")).map(String::from)
    })?;
    assert_eq!(line, "hello from env in /tmp");
    // `kubectl logs --previous`: the run before the last restart keeps its own output.
    let (previous, current) = eventually("twice's two runs", Duration::from_secs(60), || {
        let cs = container_status(&get("twice")?)?;
        if cs.restart_count < 1 {
            return None;
        }
        let logs = |previous: bool| {
            let lp = kube::api::LogParams {
                previous,
                ..Default::default()
            };
            up.rt
                .block_on(pods.logs("twice", &lp))
                .ok()
                .and_then(|t| t.lines().find(|l| l.starts_with("run ")).map(String::from))
        };
        Some((logs(true)?, logs(false)?))
    })?;
    assert_ne!(previous, current, "each run has its own log");
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Created -> bound and created -> Running of 100 bare pods (created 10 at a time, as a
/// burst from one client), measured by the client: from the create call's answer to the
/// first watch event showing `spec.nodeName` / `phase: Running`.
#[test]
#[ignore = "needs root, OVN/OVS and network namespaces"]
fn bench_100_pods_created_to_running() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let up = Up::start("wb")?;
    up.default_vpc()?;
    eventually("both agents' Nodes", Duration::from_secs(60), || {
        let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(up.client());
        let n = up
            .rt
            .block_on(api.list(&ListParams::default()))
            .ok()?
            .items
            .len();
        (n == 2).then_some(())
    })?;
    let n = 100;
    let (bound, addressed, running) = up.rt.block_on(measure(up.client(), n))?;
    let report = |what: &str, v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        eprintln!(
            "FIGURE {n} pods created -> {what}: p50 {:.3} s, p99 {:.3} s, max {:.3} s",
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            v.last().copied().unwrap_or_default()
        );
    };
    report("bound", &bound);
    report(
        "addressed (Ferry's controller's ip_address annotation)",
        &addressed,
    );
    report("Running", &running);
    assert_eq!(
        (bound.len(), running.len()),
        (n, n),
        "every pod bound and Running"
    );
    Ok(())
}

type Times = (Option<Instant>, Option<Instant>, Option<Instant>);

async fn measure(client: kube::Client, n: usize) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    use std::collections::HashMap;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let seen: std::sync::Arc<Mutex<HashMap<String, Times>>> = Default::default();
    let s2 = seen.clone();
    let watch = tokio::spawn(async move {
        let mut stream = std::pin::pin!(
            watcher::watcher(
                api,
                watcher::Config::default().labels("bench=created-to-running")
            )
            .applied_objects()
        );
        while let Some(Ok(p)) = stream.next().await {
            let now = Instant::now();
            let name = p.metadata.name.clone().unwrap_or_default();
            let mut m = s2.lock().unwrap_or_else(|e| e.into_inner());
            let e = m.entry(name).or_default();
            if e.0.is_none() && !node_of(&p).is_empty() {
                e.0 = Some(now);
            }
            if e.1.is_none() && phase(&p) == "Running" {
                e.1 = Some(now);
            }
            let annotated = p
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ferry_api::ANNOTATION_IP));
            if e.2.is_none() && annotated {
                e.2 = Some(now);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let api: Api<Pod> = Api::namespaced(client, "default");
    let created: HashMap<String, Instant> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("bench-{i:03}");
                let p: Pod = serde_json::from_value(json!({"metadata": {"name": name,
                    "labels": {"bench": "created-to-running"}},
                    "spec": {"containers": [{"name": "c", "image": "bench",
                        "command": ["sleep", "600"]}]}}))?;
                api.create(&PostParams::default(), &p).await?;
                Ok::<_, anyhow::Error>((name, Instant::now()))
            }
        })
        .buffer_unordered(10)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = {
            let m = seen.lock().unwrap_or_else(|e| e.into_inner());
            m.values().filter(|v| v.1.is_some()).count()
        };
        if done >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.abort();
    let m = seen.lock().unwrap_or_else(|e| e.into_inner());
    let since = |name: &str, at: Option<Instant>| -> Option<f64> {
        let c = created.get(name)?;
        Some(at?.saturating_duration_since(*c).as_secs_f64())
    };
    let bound = m.iter().filter_map(|(k, v)| since(k, v.0)).collect();
    let running = m.iter().filter_map(|(k, v)| since(k, v.1)).collect();
    let addressed = m.iter().filter_map(|(k, v)| since(k, v.2)).collect();
    Ok((bound, addressed, running))
}
