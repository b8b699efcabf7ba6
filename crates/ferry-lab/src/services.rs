//! Ordinary Kubernetes Services and the cluster DNS in the lab: one Service of each type in
//! the default VPC (and a UDP and an SCTP one) in front of two pods on different nodes, a
//! default-VPC client, and the `ferry lab check` rows that prove them with real traffic and
//! real DNS queries (`curl`, `dig`, a UDP exchange), from pods, nodes and the outside.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::lab::CheckRow;
use crate::topology::{self, LabHost};

/// The lab nodes' external addresses (NodePorts answer there from outside).
pub const NODE_EXTERNAL_IPS: [(&str, &str); 2] =
    [("node1", "198.18.0.11"), ("node2", "198.18.0.12")];
/// The cluster DNS address (the same in every VPC); not .10, which the lab's scenario 1
/// service holds (interfaces.md).
pub const CLUSTER_DNS: &str = "10.96.0.53";
/// The pods behind the Services, by node.
pub const BACKENDS: [(&str, &str); 2] = [("k8s-ep-1", "node1"), ("k8s-ep-2", "node2")];
/// The default-VPC client pod.
pub const CLIENT: &str = "client-default";
const NODE_PORT: u16 = 30080;
/// An `externalIPs` address of a Service, on the external network (not in the EIP pool).
const EXTERNAL_IP: &str = "198.18.0.77";
const NODE_PORT_LOCAL: u16 = 30081;
const UDP_PORT: u16 = 5353;
/// The EIP of the UDP YusurService (in the lab's pool, beside the fixed .100 and .101).
const UDP_EIP: &str = "198.18.0.120";
/// Backends answer here with the client's address.
const WHO_PORT: u16 = 8081;
const NODE_PORT_WHO: u16 = 30082;
/// `ext-client`'s address on the external network (topology.rs).
const EXT_CLIENT_IP: &str = "198.18.0.250";

/// A backend that answers HTTP on 8080 and a UDP datagram on 5353 with its name, and HTTP
/// on 8081 with the address the connection came from (the client-IP-kept row).
fn backend_command(name: &str) -> Vec<String> {
    let mut cmd = topology::backend_command(name);
    let udp = format!(
        "python3 -c 'import socket as s;u=s.socket(2,2);u.bind((\"\",{UDP_PORT}));[u.sendto(b\"{name}\\n\",u.recvfrom(512)[1]) for _ in iter(int,1)]' & "
    );
    let who = format!(
        "python3 -c 'import socket as s;t=s.socket();t.setsockopt(1,2,1);t.bind((\"\",{WHO_PORT}));t.listen(64);[(c.recv(4096),c.sendall((\"HTTP/1.0 200 OK\\r\\n\\r\\n\"+a[0]+\"\\n\").encode()),c.close()) for c,a in iter(t.accept,0)]' & "
    );
    if let Some(script) = cmd.last_mut() {
        script.insert_str(0, &format!("{udp}{who}"));
    }
    cmd
}

fn pod(name: &str, node: &str, labels: Value, command: Vec<String>) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels,
        "annotations": {"iaas.yusur.io/subnet": "ovn-default"}},
        "spec": {"nodeName": node, "restartPolicy": "Always", "containers": [{"name": "main", "image": "lab", "command": command}]}})
}

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

/// The pods and Services, in creation order.
pub fn objects() -> Vec<Value> {
    let web = json!({"app": "k8s-web"});
    let http = json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]);
    let mut out: Vec<Value> = BACKENDS
        .iter()
        .map(|(name, node)| pod(name, node, web.clone(), backend_command(name)))
        .collect();
    out.push(pod(
        CLIENT,
        "node1",
        json!({"role": "client"}),
        vec!["sleep".into(), "infinity".into()],
    ));
    out.extend([
        service("k8s-web", json!({"selector": web, "ports": http})),
        service("k8s-np", json!({"type": "NodePort", "selector": web,
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": NODE_PORT}]})),
        service("k8s-local", json!({"type": "NodePort", "externalTrafficPolicy": "Local", "selector": web,
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": NODE_PORT_LOCAL},
                {"name": "who", "port": 81, "targetPort": WHO_PORT, "nodePort": NODE_PORT_WHO}]})),
        service("k8s-lb", json!({"type": "LoadBalancer", "selector": web, "ports": http})),
        service("k8s-extip", json!({"selector": web, "ports": http, "externalIPs": [EXTERNAL_IP]})),
        service("k8s-affinity", json!({"selector": web, "ports": http, "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}})),
        // The same with a one-second timeout: the affinity-expiry row.
        service("k8s-affinity-1s", json!({"selector": web, "ports": http, "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 1}}})),
        service("k8s-udp", json!({"selector": web,
            "ports": [{"name": "echo", "port": UDP_PORT, "protocol": "UDP", "targetPort": UDP_PORT}]})),
        service("k8s-sctp", json!({"selector": web,
            "ports": [{"name": "sctp", "port": 9999, "protocol": "SCTP", "targetPort": 9999}]})),
        service("k8s-headless", json!({"clusterIP": "None", "selector": web,
            "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]})),
        service("k8s-ext", json!({"type": "ExternalName", "externalName": "k8s-web.default.svc.cluster.local"})),
        // A YusurService with ClientIP affinity, in vpc1 over the seed's five backends.
        json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
            "metadata": {"name": "web-affinity", "namespace": "default"},
            "spec": {"type": "ClusterIP", "scope": "vpc", "vpc": "vpc1", "sessionAffinity": "ClientIP",
                "sessionAffinityTimeoutSeconds": 60, "selector": {"svc": "svc1-ep"},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}),
        json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
            "metadata": {"name": "web-affinity-1s", "namespace": "default"},
            "spec": {"type": "ClusterIP", "scope": "vpc", "vpc": "vpc1", "sessionAffinity": "ClientIP",
                "sessionAffinityTimeoutSeconds": 1, "selector": {"svc": "svc1-ep"},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}),
        // A UDP YusurService behind an EIP with no healthCheck: its probes follow the
        // port's protocol (a TCP probe of this UDP echo never succeeded).
        json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
            "metadata": {"name": "udp-eip", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "scope": "vpc", "eip": UDP_EIP, "selector": web,
                "ports": [{"name": "echo", "port": UDP_PORT, "protocol": "UDP", "targetPort": UDP_PORT}]}}),
    ]);
    out
}

/// The lab hosts these objects add.
pub fn hosts() -> Vec<LabHost> {
    BACKENDS
        .iter()
        .map(|(n, _)| *n)
        .chain([CLIENT])
        .map(|name| LabHost {
            name: name.into(),
            kind: "Pod".into(),
            netns: format!("ferry-{name}"),
            vpc: ferry_api::DEFAULT_VPC.into(),
        })
        .collect()
}

/// `--node-external-ips` for `ferry up`.
pub fn node_external_ips_flag() -> String {
    NODE_EXTERNAL_IPS
        .iter()
        .map(|(n, ip)| format!("{n}={ip}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `argv` in lab host `host`'s namespace (its resolv.conf mounted, as `ip netns exec`
/// does); stdout, or why it failed.
fn run_in(host: &str, argv: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("ferry-{host}")])
        .args(argv)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} failed (exit {}): {}",
            argv.first().unwrap_or(&""),
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `f`, tried again (twice, a second apart) when it fails: OVS 3.1's userspace conntrack
/// aborts ovs-vswitchd now and then (`conntrack.c:1063: assertion conn->conn_type ==
/// CT_CONN_TYPE_DEFAULT failed`), and the data plane is gone until the supervisor has it
/// back. Retries are counted ([`retries`]); each row says how many it needed.
pub(crate) fn retried<T>(f: impl Fn() -> Result<T, String>) -> Result<T, String> {
    let mut r = f();
    for _ in 0..2 {
        if r.is_ok() {
            break;
        }
        RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(1));
        r = f();
    }
    r
}

static RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Requests retried so far (see [`retried`]).
pub fn retries() -> usize {
    RETRIES.load(std::sync::atomic::Ordering::Relaxed)
}

/// The first line of `GET http://target/` from `host` (retried, see [`retried`]).
pub fn get(host: &str, target: &str) -> Result<String, String> {
    retried(|| {
        run_in(
            host,
            &["curl", "-s", "-m", "2", &format!("http://{target}/")],
        )
        .map(|out| out.lines().next().unwrap_or_default().trim().to_string())
    })
}

/// The answer of a UDP exchange with `target` from `host` (retried).
fn udp(host: &str, ip: &str, port: u16) -> Result<String, String> {
    let script = format!(
        "import socket as s;u=s.socket(2,2);u.settimeout(2);u.sendto(b'x',('{ip}',{port}));print(u.recv(512).decode().strip())"
    );
    retried(|| run_in(host, &["python3", "-c", &script]).map(|o| o.trim().to_string()))
}

/// `dig` from `host`: (status, answer lines).
fn dig(host: &str, name: &str, qtype: &str) -> Result<(String, Vec<String>), String> {
    let out = retried(|| {
        run_in(
            host,
            &[
                "dig",
                "+tries=1",
                "+time=2",
                "+noall",
                "+comments",
                "+answer",
                name,
                qtype,
            ],
        )
    })?;
    let status = out
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
        .to_string();
    let answers = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().skip(3).collect::<Vec<_>>().join(" "))
        .collect();
    Ok((status, answers))
}

fn row(check: &str, client: &str, target: &str, result: String, pass: bool) -> CheckRow {
    CheckRow {
        check: check.into(),
        client: client.into(),
        target: target.into(),
        result,
        pass,
    }
}

/// `n` requests from `client` to `target`: a row passing when every one is answered by a
/// backend in `allowed` and at least `distinct` of them answered.
fn spread(
    check: &str,
    client: &str,
    target: &str,
    n: usize,
    allowed: &[&str],
    distinct: usize,
) -> CheckRow {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    let before = retries();
    for _ in 0..n {
        match get(client, target) {
            Ok(who) => *seen.entry(who).or_default() += 1,
            Err(_) => failed += 1,
        }
    }
    let strangers: Vec<&String> = seen
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    let pass = failed == 0 && strangers.is_empty() && seen.len() >= distinct;
    let who: Vec<String> = seen.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    row(
        check,
        client,
        target,
        format!(
            "{}/{n} answers [{}]{}{}",
            n - failed,
            who.join(" "),
            if strangers.is_empty() {
                String::new()
            } else {
                format!(", UNEXPECTED {strangers:?}")
            },
            match retries() - before {
                0 => String::new(),
                r => format!(" ({r} retried after a data-plane outage)"),
            }
        ),
        pass,
    )
}

async fn cluster_ip(svcs: &Api<Service>, name: &str) -> String {
    svcs.get(name)
        .await
        .ok()
        .and_then(|s| s.spec?.cluster_ip)
        .unwrap_or_else(|| "0.0.0.0".into())
}

/// The lab's `ClusterIP`, `LoadBalancer` address and probe of every Service; for
/// `lab status`.
pub async fn status(c: &Client) -> Value {
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let mut out = Vec::new();
    for name in [
        "k8s-web",
        "k8s-np",
        "k8s-local",
        "k8s-lb",
        "k8s-extip",
        "k8s-affinity",
        "k8s-affinity-1s",
        "k8s-udp",
        "k8s-sctp",
        "k8s-headless",
        "k8s-ext",
    ] {
        if let Ok(s) = svcs.get(name).await {
            let spec = s.spec.clone().unwrap_or_default();
            let lb = s
                .status
                .and_then(|st| st.load_balancer?.ingress?.first()?.ip.clone());
            out.push(json!({"service": format!("default/{name}"), "type": spec.type_, "clusterIP": spec.cluster_ip,
                "loadBalancerIP": lb}));
        }
    }
    json!(out)
}

/// Waits until the default-VPC client gets an answer through `k8s-web`.
pub async fn wait_ready(c: &Client, timeout: Duration) -> Result<(), String> {
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let deadline = Instant::now() + timeout;
    loop {
        let ip = cluster_ip(&svcs, "k8s-web").await;
        match get(CLIENT, &format!("{ip}:80")) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("k8s-web from {CLIENT}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Every Service and DNS row of `ferry lab check`.
/// Three `GET http://target/`s on new connections from one process in `host`'s namespace:
/// the first line of each answer and how long the three took; `None` if one failed.
fn http_burst(host: &str, target: &str) -> Option<(Vec<String>, Duration)> {
    let script = format!(
        "import urllib.request as u,time\nt=time.time()\nr=[u.urlopen('http://{target}/',timeout=2).read().decode().split()[0] for _ in range(3)]\nprint(time.time()-t,*r)"
    );
    let out = run_in(host, &["python3", "-c", &script]).ok()?;
    let mut words = out.split_whitespace();
    let took = Duration::from_secs_f64(words.next()?.parse().ok()?);
    let answers: Vec<String> = words.map(str::to_string).collect();
    (answers.len() == 3).then_some((answers, took))
}

/// `cycles` bursts of requests from `client` to `target` (a ClientIP Service with
/// `timeoutSeconds: 1`), each followed by an idle pause longer than the timeout. Every burst
/// must meet one backend. Through the socket LB (`expires`) the choice expires, so the bursts
/// must meet more than one backend; OVN's path picks by a hash of the client address, which
/// never expires, so there every burst must meet the same one.
fn affinity_expiry(
    check: &str,
    client: &str,
    target: &str,
    cycles: usize,
    expires: bool,
) -> CheckRow {
    let mut picks: Vec<String> = Vec::new();
    let mut broken = Vec::new();
    // A burst is one process in the client's namespace making three connections (a
    // process per request took over a second on a loaded machine). A burst that still
    // took 0.9 s or more may rightly have lost its pick in between, and one with a failed
    // request met a data-plane outage: either proves nothing and is counted apart.
    let mut slow = 0;
    for cycle in 0..cycles {
        let burst = http_burst(client, target);
        std::thread::sleep(Duration::from_millis(1500));
        let Some((answers, took)) = burst else {
            slow += 1;
            continue;
        };
        let distinct: BTreeSet<&String> = answers.iter().collect();
        if took >= Duration::from_millis(900) {
            slow += 1;
        } else if distinct.len() != 1 {
            broken.push(format!("burst {cycle}: {answers:?}"));
        }
        picks.extend(answers.into_iter().next());
    }
    let distinct: BTreeSet<&String> = picks.iter().collect();
    let pass = broken.is_empty()
        && slow * 2 <= cycles
        && if expires {
            distinct.len() >= 2
        } else {
            distinct.len() == 1
        };
    row(
        check,
        client,
        target,
        format!(
            "{cycles} bursts of 3 with 1.5 s idle: {} backend(s) {distinct:?}{}{}",
            distinct.len(),
            match slow {
                0 => String::new(),
                n => format!(", {n} burst(s) over 0.9 s or with a failed request not counted"),
            },
            if broken.is_empty() {
                String::new()
            } else {
                format!(", NOT STICKY {broken:?}")
            }
        ),
        pass,
    )
}

/// Every Service and DNS row of `ferry lab check`; `socket_lb`: pods use the agents'
/// socket-level load balancer.
pub async fn check(
    c: &Client,
    n: usize,
    nb_sock: &std::path::Path,
    socket_lb: bool,
) -> Vec<CheckRow> {
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let backends: Vec<&str> = BACKENDS.iter().map(|(b, _)| *b).collect();
    let mut rows = Vec::new();
    let web = cluster_ip(&svcs, "k8s-web").await;
    rows.push(spread(
        "svc ClusterIP from a default-VPC pod",
        CLIENT,
        &format!("{web}:80"),
        n,
        &backends,
        2,
    ));
    rows.push(spread(
        "svc ClusterIP from a node",
        "node1",
        &format!("{web}:80"),
        n,
        &backends,
        2,
    ));
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.clone());
    let node1_ip = nodes
        .get("node1")
        .await
        .ok()
        .and_then(|n| {
            n.metadata
                .annotations?
                .get(ferry_api::ANNOTATION_IP)
                .cloned()
        })
        .unwrap_or_default();
    rows.push(spread(
        "svc NodePort from the other node",
        "node2",
        &format!("{node1_ip}:{NODE_PORT}"),
        n,
        &backends,
        2,
    ));
    let ext1 = NODE_EXTERNAL_IPS[0].1;
    rows.push(spread(
        "svc NodePort from outside",
        "ext-client",
        &format!("{ext1}:{NODE_PORT}"),
        n,
        &backends,
        2,
    ));
    let ext2 = NODE_EXTERNAL_IPS[1].1;
    rows.push(spread(
        "svc NodePort Local: node2's pod only",
        "ext-client",
        &format!("{ext2}:{NODE_PORT_LOCAL}"),
        n,
        &["k8s-ep-2"],
        1,
    ));
    // externalTrafficPolicy: Local keeps the client's address: node2's pod sees ext-client.
    let seen: Vec<String> = (0..3)
        .filter_map(|_| get("ext-client", &format!("{ext2}:{NODE_PORT_WHO}")).ok())
        .collect();
    rows.push(row(
        "svc NodePort Local keeps the client IP",
        "ext-client",
        &format!("{ext2}:{NODE_PORT_WHO}"),
        format!("backend saw {seen:?}, client is {EXT_CLIENT_IP}"),
        seen.len() == 3 && seen.iter().all(|a| a == EXT_CLIENT_IP),
    ));
    let lb = svcs
        .get("k8s-lb")
        .await
        .ok()
        .and_then(|s| s.status?.load_balancer?.ingress?.first()?.ip.clone());
    match &lb {
        Some(ip) => rows.push(spread(
            "svc LoadBalancer from outside",
            "ext-client",
            &format!("{ip}:80"),
            n,
            &backends,
            2,
        )),
        None => rows.push(row(
            "svc LoadBalancer from outside",
            "ext-client",
            "-",
            "no status.loadBalancer.ingress".into(),
            false,
        )),
    }
    rows.push(spread(
        "svc externalIPs from outside",
        "ext-client",
        &format!("{EXTERNAL_IP}:80"),
        n,
        &backends,
        2,
    ));
    // ClientIP affinity: every request of one client to one backend.
    let aff = format!("{}:80", cluster_ip(&svcs, "k8s-affinity").await);
    let mut per_client = BTreeMap::new();
    for client in [CLIENT, "node1", "node2", "default-ep-1"] {
        let answers: Vec<String> = (0..20).filter_map(|_| get(client, &aff).ok()).collect();
        let distinct: BTreeSet<&String> = answers.iter().collect();
        per_client.insert(
            client,
            (
                answers.len(),
                distinct.len(),
                answers.first().cloned().unwrap_or_default(),
            ),
        );
    }
    let sticky = per_client.values().all(|(n, d, _)| *n == 20 && *d == 1);
    let across: BTreeSet<&String> = per_client.values().map(|(_, _, b)| b).collect();
    // Sticky per client, and still balanced across clients (the backend is a hash of the
    // client's address).
    let pass = sticky && across.len() >= 2;
    rows.push(row(
        "svc ClientIP affinity (20 from each client)",
        "client-default,node1,node2,default-ep-1",
        &aff,
        format!(
            "{}; {} backend(s) across clients",
            per_client
                .iter()
                .map(|(c, (n, d, b))| format!("{c}: {n}/20 to {d} backend ({b})"))
                .collect::<Vec<_>>()
                .join(", "),
            across.len()
        ),
        pass,
    ));
    // The same for a YusurService (vpc1's client, the seed's backends).
    let ysvcs: Api<ferry_api::YusurService> = Api::namespaced(c.clone(), "default");
    let ysvc_aff = ysvcs
        .get("web-affinity")
        .await
        .ok()
        .and_then(|s| s.status?.cluster_ip)
        .unwrap_or_default();
    let answers: Vec<String> = (0..20)
        .filter_map(|_| get("client-vpc1", &format!("{ysvc_aff}:80")).ok())
        .collect();
    let distinct: BTreeSet<&String> = answers.iter().collect();
    rows.push(row(
        "ysvc ClientIP affinity (20 from one client)",
        "client-vpc1",
        &format!("{ysvc_aff}:80"),
        format!("{}/20 to {distinct:?}", answers.len()),
        answers.len() == 20 && distinct.len() == 1,
    ));
    // ClientIP affinity expiry (timeoutSeconds: 1), a Service from the default-VPC pod and
    // a YusurService from vpc1's pod, side by side. The socket LB picks at random after
    // expiry: 16 bursts over two backends all meet one with probability 2^-15, 10 over
    // five backends 5^-9.
    let svc_1s = format!("{}:80", cluster_ip(&svcs, "k8s-affinity-1s").await);
    let ysvc_1s = ysvcs
        .get("web-affinity-1s")
        .await
        .ok()
        .and_then(|s| s.status?.cluster_ip)
        .map(|ip| format!("{ip}:80"))
        .unwrap_or_default();
    let path = if socket_lb {
        "expires (socket LB)"
    } else {
        "never expires (OVN hash of the client)"
    };
    let (cycles_svc, cycles_ysvc) = if socket_lb { (16, 10) } else { (3, 3) };
    let (svc_row, ysvc_row) = std::thread::scope(|s| {
        let svc = s.spawn(|| {
            affinity_expiry(
                &format!("svc ClientIP timeoutSeconds=1 {path}"),
                CLIENT,
                &svc_1s,
                cycles_svc,
                socket_lb,
            )
        });
        let ysvc = affinity_expiry(
            &format!("ysvc ClientIP timeoutSeconds=1 {path}"),
            "client-vpc1",
            &ysvc_1s,
            cycles_ysvc,
            socket_lb,
        );
        (svc.join(), ysvc)
    });
    rows.extend(svc_row.ok());
    rows.push(ysvc_row);
    let udp_ip = cluster_ip(&svcs, "k8s-udp").await;
    let answers: Vec<Result<String, String>> =
        (0..n).map(|_| udp(CLIENT, &udp_ip, UDP_PORT)).collect();
    let ok: BTreeSet<&String> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    let good = answers
        .iter()
        .all(|a| a.as_ref().is_ok_and(|w| backends.contains(&w.as_str())));
    rows.push(row(
        "svc UDP",
        CLIENT,
        &format!("{udp_ip}:{UDP_PORT}/udp"),
        format!(
            "{}/{n} answers from {ok:?}",
            answers.iter().filter(|a| a.is_ok()).count()
        ),
        good,
    ));
    let answers: Vec<Result<String, String>> = (0..n)
        .map(|_| udp("ext-client", UDP_EIP, UDP_PORT))
        .collect();
    let ok: BTreeSet<&String> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    let good = answers
        .iter()
        .all(|a| a.as_ref().is_ok_and(|w| backends.contains(&w.as_str())));
    rows.push(row(
        "ysvc UDP behind an EIP from outside",
        "ext-client",
        &format!("{UDP_EIP}:{UDP_PORT}/udp"),
        format!(
            "{}/{n} answers from {ok:?}",
            answers.iter().filter(|a| a.is_ok()).count()
        ),
        good,
    ));
    // SCTP: programmed into OVN; this kernel has no SCTP, so no traffic can prove it.
    let sctp_ip = cluster_ip(&svcs, "k8s-sctp").await;
    let lbs = Command::new("ovn-nbctl")
        .arg(format!(
            "--db={}",
            ferry_ovn_stack::raft::remotes_beside(nb_sock)
        ))
        .args([
            "--bare",
            "--columns=protocol,vips",
            "find",
            "Load_Balancer",
            "name=ferry-svc-default-k8s-sctp-cip-ovn-cluster-sctp",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let programmed = lbs.contains("sctp") && lbs.contains(&format!("{sctp_ip}:9999"));
    rows.push(row(
        "svc SCTP (programmed only)",
        "-",
        &format!("{sctp_ip}:9999/sctp"),
        format!(
            "load balancer {}; no SCTP traffic: this kernel has no SCTP (socket(IPPROTO_SCTP) fails with EPROTONOSUPPORT, no sctp module)",
            if programmed { "in the NB" } else { "MISSING from the NB" }
        ),
        programmed,
    ));
    // DNS.
    match get(CLIENT, "k8s-web.default.svc.cluster.local") {
        Ok(who) => rows.push(row(
            "DNS: full name",
            CLIENT,
            "k8s-web.default.svc.cluster.local",
            format!("answered by {who}"),
            backends.contains(&who.as_str()),
        )),
        Err(e) => rows.push(row(
            "DNS: full name",
            CLIENT,
            "k8s-web.default.svc.cluster.local",
            e,
            false,
        )),
    }
    match get(CLIENT, "k8s-web") {
        Ok(who) => rows.push(row(
            "DNS: short name (search path)",
            CLIENT,
            "k8s-web",
            format!("answered by {who}"),
            backends.contains(&who.as_str()),
        )),
        Err(e) => rows.push(row(
            "DNS: short name (search path)",
            CLIENT,
            "k8s-web",
            e,
            false,
        )),
    }
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let mut pod_ips = BTreeSet::new();
    for (b, _) in BACKENDS {
        if let Some(ip) = pods.get(b).await.ok().and_then(|p| p.status?.pod_ip) {
            pod_ips.insert(ip);
        }
    }
    let headless = dig(CLIENT, "k8s-headless.default.svc.cluster.local", "A");
    let got: BTreeSet<String> = headless
        .as_ref()
        .map(|(_, a)| {
            a.iter()
                .map(|l| l.split_whitespace().last().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    rows.push(row(
        "DNS: headless -> ready pod IPs",
        CLIENT,
        "k8s-headless.default.svc.cluster.local",
        format!("{got:?} (pods {pod_ips:?})"),
        !pod_ips.is_empty() && got == pod_ips,
    ));
    let ext = dig(CLIENT, "k8s-ext.default.svc.cluster.local", "A");
    let cname = ext
        .as_ref()
        .map(|(_, a)| {
            a.iter()
                .any(|l| l.starts_with("CNAME k8s-web.default.svc.cluster.local"))
        })
        .unwrap_or(false);
    rows.push(row(
        "DNS: ExternalName -> CNAME",
        CLIENT,
        "k8s-ext.default.svc.cluster.local",
        format!("{:?}", ext.map(|(_, a)| a)),
        cname,
    ));
    let ysvcs: Api<ferry_api::YusurService> = Api::namespaced(c.clone(), "default");
    let ysvc1 = ysvcs
        .get("ysvc1")
        .await
        .ok()
        .and_then(|s| s.status?.cluster_ip)
        .unwrap_or_default();
    let from_vpc1 = dig("client-vpc1", "ysvc1.default.svc.cluster.local", "A");
    rows.push(row(
        "DNS: a vpc1 name from vpc1",
        "client-vpc1",
        "ysvc1.default.svc.cluster.local",
        format!("{from_vpc1:?}"),
        from_vpc1
            .as_ref()
            .is_ok_and(|(s, a)| s == "NOERROR" && a.iter().any(|l| l.ends_with(&ysvc1))),
    ));
    let from_vpc2 = dig("client-vpc2", "ysvc1.default.svc.cluster.local", "A");
    rows.push(row(
        "DNS: the vpc1 name from vpc2",
        "client-vpc2",
        "ysvc1.default.svc.cluster.local",
        format!("{from_vpc2:?}"),
        from_vpc2.as_ref().is_ok_and(|(s, _)| s == "NXDOMAIN"),
    ));
    rows.push(expose(c).await);
    rows
}

/// `kubectl expose` of a new pod: the time from the Service's creation to an answer
/// through its ClusterIP and its DNS name; both removed afterwards.
async fn expose(c: &Client) -> CheckRow {
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    // A new name each check: a pod recreated under the name of one just deleted may keep
    // the old sandbox in the lab agent (same key and address) and never be reported Running.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 100_000)
        .unwrap_or_default();
    let owned = format!("expose-web-{stamp}");
    let name = owned.as_str();
    let p: Pod = match serde_json::from_value(pod(
        name,
        "node2",
        json!({"run": name}),
        topology::backend_command(name),
    )) {
        Ok(p) => p,
        Err(e) => {
            return row(
                "kubectl expose: new pod reachable",
                CLIENT,
                name,
                e.to_string(),
                false,
            );
        }
    };
    let _ = pods.delete(name, &DeleteParams::default()).await;
    let _ = svcs.delete(name, &DeleteParams::default()).await;
    // A previous check's pod may still be going away (a second `lab check` on one lab).
    let gone_by = Instant::now() + Duration::from_secs(30);
    while pods.get_opt(name).await.ok().flatten().is_some() && Instant::now() < gone_by {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let result = async {
        pods.create(&PostParams::default(), &p).await.map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while pods.get(name).await.ok().and_then(|p| p.status?.phase).as_deref() != Some("Running") {
            if Instant::now() > deadline {
                return Err("the pod never ran".to_string());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // What `kubectl expose pod expose-web --port 80 --target-port 8080` creates.
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"run": name}},
            "spec": {"selector": {"run": name}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}))
            .map_err(|e| e.to_string())?;
        let created = Instant::now();
        let s = svcs.create(&PostParams::default(), &svc).await.map_err(|e| e.to_string())?;
        let ip = s.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        let mut by_ip = None;
        let mut by_name = None;
        while by_ip.is_none() || by_name.is_none() {
            if Instant::now() > created + Duration::from_secs(30) {
                return Err(format!("not reachable after 30 s (ClusterIP {ip}: {by_ip:?}, DNS: {by_name:?})"));
            }
            if by_ip.is_none() && get(CLIENT, &format!("{ip}:80")).is_ok_and(|w| w == name) {
                by_ip = Some(created.elapsed());
            }
            if by_name.is_none() && get(CLIENT, &format!("{name}.default.svc.cluster.local")).is_ok_and(|w| w == name) {
                by_name = Some(created.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(format!(
            "ClusterIP {ip} answered {:.2} s and its DNS name {:.2} s after the Service was created",
            by_ip.unwrap_or_default().as_secs_f64(),
            by_name.unwrap_or_default().as_secs_f64()
        ))
    }
    .await;
    let _ = svcs.delete(name, &DeleteParams::default()).await;
    let _ = pods.delete(name, &DeleteParams::default()).await;
    match result {
        Ok(r) => row("kubectl expose: new pod reachable", CLIENT, name, r, true),
        Err(e) => row("kubectl expose: new pod reachable", CLIENT, name, e, false),
    }
}
