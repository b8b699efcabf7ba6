//! `ferry agent --socket-lb` end to end, on a real-node agent (the built binary) against a
//! private `ferry up` with its own OVN: pods plumbed by `ferry cni` (which records their
//! sandboxes for the agent), a YusurService with one health-probed backend, and OVN made to
//! reject the service's VIP (an ACL on the pods' switch), so only a connection the socket
//! LB translated can succeed.
//!
//! - a registered pod of the default VPC reaches the VIP: the application sees the VIP
//!   (`getpeername`) while the kernel socket is connected to the backend (`/proc/net/tcp`),
//!   so no packet carried the VIP and OVN's load balancer was not involved;
//!   an unregistered pod (its CNI config records elsewhere) is rejected by OVN;
//! - a registered pod of vpc2 (overlapping CIDR) dialing the default VPC's VIP gets no
//!   translation: its socket stays on the VIP and nothing answers;
//! - the backend refusing its port (a REJECT rule in its namespace) makes its probe
//!   Unhealthy, which takes it out of the kernel map (the pod's connections fall back to
//!   the VIP, which OVN rejects); removing the rule makes it Healthy and puts it back; the
//!   time from the rule change to the agent's map write is printed (no timing assertion);
//! - CNI DEL of the pod stops its translation.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use common::{FerryUp, Netns, annotation, cni, eventually};

const VIP: &str = "10.96.0.77";

/// Connects to VIP:80 from inside the namespace it runs in and reports, as JSON, what the
/// application sees (`getpeername`), where the kernel socket really points (its
/// `/proc/net/tcp` row, read while it is open) and the HTTP status line if one came.
const CLIENT: &str = r#"
import json, socket, sys
vip, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setblocking(False)
out = {"connected": False}
try:
    s.connect((vip, port))
except BlockingIOError:
    pass
except OSError as e:
    out["error"] = str(e)
local = s.getsockname()
def kernel_peer():
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        lip, lport = f[1].split(":")
        if int(lport, 16) == local[1]:
            rip, rport = f[2].split(":")
            ip = ".".join(str(b) for b in reversed(bytes.fromhex(rip)))
            return f"{ip}:{int(rport, 16)}"
out["kernel_peer"] = kernel_peer()
s.setblocking(True)
s.settimeout(2)
try:
    import select
    _, w, _ = select.select([], [s], [], 2)
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if w and err == 0:
        out["connected"] = True
        out["peer"] = "%s:%d" % s.getpeername()
        s.sendall(f"GET / HTTP/1.0\r\nHost: {vip}\r\n\r\n".encode())
        out["status"] = s.recv(200).decode(errors="replace").split("\r\n")[0]
    else:
        out["error"] = f"connect: errno {err}" if w else "connect: timed out"
except OSError as e:
    out["error"] = str(e)
print(json.dumps(out))
"#;

fn dial(ns: &Netns) -> Result<Value> {
    let out = ns.exec(&["python3", "-c", CLIENT, VIP, "80"])?;
    Ok(serde_json::from_str(out.trim())?)
}

/// The built `ferry agent` on the host, stopped with SIGTERM by PID.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// Log lines of the agent containing every one of `needles`.
fn log_lines(log: &Path, needles: &[&str]) -> Vec<String> {
    let text = strip_ansi(&std::fs::read_to_string(log).unwrap_or_default());
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// Seconds since the epoch of a log line's leading UTC timestamp
/// (`2026-11-28T23:30:51.458753Z`, as tracing-subscriber writes it).
fn log_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min, sec): (i64, i64, f64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    // Days from the civil date (proleptic Gregorian), H. Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + h * 3600 + min * 60) as f64 + sec)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root, cgroup v2, BPF, OVN/OVS and network namespaces"]
fn a_pod_reaches_a_yusurservice_vip_through_the_socket_lb_and_vpc2_gets_no_translation()
-> Result<()> {
    let pid = std::process::id();
    let up = FerryUp::start("fsl")?;
    up.default_vpc(true)?;
    // vpc2 reuses the default VPC's pod CIDR.
    up.create(json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Vpc",
        "metadata": {"name": "vpc2"}, "spec": {}}))?;
    up.create(json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Subnet",
        "metadata": {"name": "vpc2-net"},
        "spec": {"vpc": "vpc2", "cidrBlock": "10.16.0.0/16"}}))?;
    let node = format!("fsl{pid}node");
    let records = up.dir.path().join("sandboxes");
    let elsewhere = up.dir.path().join("not-read");

    let agent_log = up.dir.path().join("agent.log");
    let log = std::fs::File::create(&agent_log)?;
    let _agent = Agent(
        Command::new(common::ferry_bin())
            .args(["agent", "--node", &node, "--kubeconfig"])
            .arg(up.agent_kubeconfig())
            .arg("--state-dir")
            .arg(up.dir.path().join("agent"))
            .arg("--ovs-db")
            .arg(up.ovs_sock())
            .args(["--ovs-netns", &up.ovs_netns(), "--node-interface=false"])
            .arg("--socket-lb")
            .arg("--socket-lb-sandbox-dir")
            .arg(&records)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start ferry agent")?,
    );

    // Pods on this node: the backend, a client recorded for the socket LB, a client whose
    // records go where the agent does not look, and a vpc2 client.
    let pods = [
        ("web", None, &records),
        ("client", None, &records),
        ("plain", None, &elsewhere),
        ("intruder", Some("vpc2-net"), &records),
    ];
    let mut netns = Vec::new();
    let mut ips = Vec::new();
    for (name, subnet, dir) in pods {
        let mut meta = json!({"name": name, "labels": {"app": name}});
        if let Some(s) = subnet {
            meta["annotations"] = json!({"iaas.yusur.io/subnet": s});
        }
        up.create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "none"}]}}))?;
        let pod = up.annotated_pod(name)?;
        ips.push(annotation(&pod, "iaas.yusur.io/ip_address"));
        let ns = Netns::add(&format!("fsl{pid}-{name}"))?;
        let mut conf = up.cni_conf();
        conf["sandboxDir"] = json!(dir);
        let add = cni(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", &format!("fsl{pid}{name}")),
                ("CNI_NETNS", &ns.path().display().to_string()),
                ("CNI_IFNAME", "eth0"),
                (
                    "CNI_ARGS",
                    &format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"),
                ),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            &conf,
        )?;
        ensure!(
            add.status.success(),
            "CNI ADD {name}: {}",
            String::from_utf8_lossy(&add.stdout)
        );
        netns.push(ns);
    }
    let (web, client, plain, intruder) = (&netns[0], &netns[1], &netns[2], &netns[3]);
    let web_ip = ips[0].clone();
    ensure!(ips[3].starts_with("10.16."), "vpc2 pod got {}", ips[3]);
    let _server = web.spawn(
        &["python3", "-m", "http.server", "8080", "--bind", &web_ip],
        None,
    )?;
    up.create(
        json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": VIP,
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                 "selector": {"app": "web"}}}),
    )?;

    // The agent programs the VIP once the probe finds the backend healthy, and has every
    // recorded sandbox (the vpc2 one included) registered.
    let programmed = format!("{VIP}:80/tcp -> 1 backends");
    eventually(
        "the socket LB programs the VIP",
        Duration::from_secs(90),
        || {
            log_lines(&agent_log, &["socket LB programmed", &programmed])
                .first()
                .cloned()
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}\n{}", ferry_testkit::tail(&agent_log, 30)))?;
    for (name, vpc) in [("client", "ovn-cluster"), ("intruder", "vpc2")] {
        let want = format!("sandbox=cni/fsl{pid}{name}");
        eventually(
            &format!("{name} registered in {vpc}"),
            Duration::from_secs(10),
            || {
                log_lines(&agent_log, &["socket LB serves the sandbox", &want, vpc])
                    .first()
                    .cloned()
            },
        )?;
    }
    ensure!(
        log_lines(
            &agent_log,
            &["socket LB serves the sandbox", &format!("fsl{pid}plain")]
        )
        .is_empty(),
        "the unrecorded pod must not be registered"
    );

    // OVN rejects the VIP on the pods' switch from now on: only translated sockets get
    // through (their packets carry the backend's address).
    up.nbctl(&[
        "--wait=hv",
        "acl-add",
        "ovn-default",
        "from-lport",
        "1002",
        &format!("ip4.dst == {VIP}"),
        "reject",
    ])?;
    let r = eventually(
        "OVN rejects the VIP for an unregistered pod",
        Duration::from_secs(20),
        || dial(plain).ok().filter(|v| v["connected"] == false),
    )?;
    // OVN's reset may close the socket before its row is read: never the backend.
    assert_ne!(r["kernel_peer"], format!("{web_ip}:8080"), "{r}");

    let r = eventually(
        "the registered pod reaches the VIP",
        Duration::from_secs(20),
        || dial(client).ok().filter(|v| v["connected"] == true),
    )?;
    eprintln!("registered pod: {r}");
    assert_eq!(
        r["peer"],
        format!("{VIP}:80"),
        "the application sees the VIP: {r}"
    );
    assert_eq!(
        r["kernel_peer"],
        format!("{web_ip}:8080"),
        "the kernel socket is connected to the backend: {r}"
    );
    assert!(
        r["status"].as_str().is_some_and(|s| s.contains(" 200 ")),
        "the backend answered: {r}"
    );

    // Isolation: vpc2's pod gets no translation to the default VPC's VIP.
    let r = dial(intruder)?;
    eprintln!("vpc2 pod: {r}");
    assert_eq!(r["connected"], false, "vpc2 reached the VIP: {r}");
    assert_eq!(
        r["kernel_peer"],
        format!("{VIP}:80"),
        "vpc2's socket must keep the VIP (no translation): {r}"
    );

    // Probe flips reach the kernel map.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let kube = rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(up.kubeconfig())?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        anyhow::Ok(kube::Client::try_from(cfg)?)
    })?;
    let probes: kube::Api<ferry_api::NetworkProbe> = kube::Api::namespaced(kube, "default");
    let probe = eventually("the backend's probe", Duration::from_secs(10), || {
        let list = rt.block_on(probes.list(&Default::default())).ok()?;
        list.items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .find(|n| n.starts_with("web-"))
    })?;
    // The backend really fails and recovers: its port refuses (a REJECT rule in its
    // namespace), so the agent's own probe turns it Unhealthy. (Patching the probe's
    // status by hand raced the agent, which writes back what its probe found.)
    let reject = ["INPUT", "-p", "tcp", "--dport", "8080", "-j", "REJECT"];
    let mut latencies = Vec::new();
    for (phase, want, connected) in [
        ("Unhealthy", format!("{VIP}:80/tcp removed"), false),
        ("Healthy", programmed.clone(), true),
        ("Unhealthy", format!("{VIP}:80/tcp removed"), false),
        ("Healthy", programmed.clone(), true),
    ] {
        let before = log_lines(&agent_log, &["socket LB programmed", &want]).len();
        let t0 = now();
        let rule = if phase == "Unhealthy" { "-I" } else { "-D" };
        web.exec(&[&["iptables", rule][..], &reject[..]].concat())?;
        eventually(
            &format!("the probe turns {phase}"),
            Duration::from_secs(30),
            || {
                let p = rt.block_on(probes.get(&probe)).ok()?;
                (p.status?.phase.as_str() == phase).then_some(())
            },
        )?;
        let line = eventually(
            &format!("{phase}: the map follows"),
            Duration::from_secs(20),
            || {
                log_lines(&agent_log, &["socket LB programmed", &want])
                    .get(before)
                    .cloned()
            },
        )?;
        if let Some(t) = log_time(&line) {
            latencies.push((phase, (t - t0) * 1000.0));
        }
        let r = eventually(
            &format!("{phase}: the pod's connections follow"),
            Duration::from_secs(20),
            || dial(client).ok().filter(|v| v["connected"] == connected),
        )?;
        // Untranslated, OVN rejects at once and the row may be gone: never the backend.
        let to_backend = r["kernel_peer"] == format!("{web_ip}:8080");
        assert_eq!(to_backend, connected, "{phase}: {r}");
    }
    eprintln!(
        "backend blocked or unblocked -> socket LB map written (probe detection included): {}",
        latencies
            .iter()
            .map(|(p, ms)| format!("{p} {ms:.0} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // CNI DEL: the pod is no longer translated.
    let del = cni(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", &format!("fsl{pid}client")),
            ("CNI_NETNS", &client.path().display().to_string()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=client"),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        &{
            let mut c = up.cni_conf();
            c["sandboxDir"] = json!(records);
            c
        },
    )?;
    ensure!(
        del.status.success(),
        "CNI DEL: {}",
        String::from_utf8_lossy(&del.stdout)
    );
    ensure!(
        !records.join(format!("fsl{pid}client.json")).exists(),
        "DEL removes the record"
    );
    let gone = format!("sandbox=cni/fsl{pid}client");
    eventually(
        "the agent forgets the deleted sandbox",
        Duration::from_secs(10),
        || {
            log_lines(
                &agent_log,
                &["socket LB no longer serves the sandbox", &gone],
            )
            .first()
            .cloned()
        },
    )?;
    // Its namespace still exists (DEL removed only its port): with a route again, a
    // connect() waits in SYN_SENT, and its socket keeps the VIP.
    client.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])?;
    client.ip(&["link", "set", "d1", "up"])?;
    client.ip(&["addr", "add", "10.16.250.250/16", "dev", "d0"])?;
    client.ip(&["link", "set", "d0", "up"])?;
    client.ip(&["route", "add", "default", "dev", "d0"])?;
    let r = dial(client)?;
    assert_eq!(r["kernel_peer"], format!("{VIP}:80"), "after DEL: {r}");
    Ok(())
}
