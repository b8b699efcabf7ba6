//! The page in a real browser: headless Chromium driven through WebDriver (chromedriver,
//! the W3C protocol over plain HTTP), against a real Ferry API server holding a lab-like
//! topology with hand-written statuses (what the controller and the agents would write).
//! It checks that the page signs in from its one-time URL, loads without console errors,
//! shows ysvc1 with 5/5 ready and its five backends healthy, and that a backend whose
//! probe turns unhealthy turns red without a reload; it leaves a screenshot.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use ferry_api::{NetworkProbe, YusurService};
use ferry_testkit::api::{TestApiServer, apply};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

/// (backend kind, short kind, name, vpc, subnet, ip) of ysvc1's five backends (as the lab).
const SEED_BACKENDS: [(&str, &str, &str, &str, &str, &str); 5] = [
    (
        "Pod",
        "pod",
        "svc1-ep-1",
        "vpc1",
        "vpc1-subnet1",
        "10.0.1.11",
    ),
    (
        "Pod",
        "pod",
        "svc1-ep-2",
        "vpc1",
        "vpc1-subnet2",
        "10.0.2.11",
    ),
    (
        "BareMetal",
        "bm",
        "bm-1",
        "vpc1",
        "vpc1-subnet3",
        "10.0.3.11",
    ),
    (
        "VirtualMachineInstance",
        "vmi",
        "vm-1",
        "vpc1",
        "vpc1-subnet1",
        "10.0.1.12",
    ),
    (
        "VNicIP",
        "vnic",
        "vnic-1",
        "vpc1",
        "vpc1-subnet2",
        "10.0.2.12",
    ),
];

fn objects() -> Vec<Value> {
    let mut out = Vec::new();
    for v in [ferry_api::DEFAULT_VPC, "vpc1", "vpc2"] {
        out.push(json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Vpc", "metadata": {"name": v}, "spec": {}}));
    }
    for (name, vpc, cidr) in [
        ("subnet0", ferry_api::DEFAULT_VPC, "100.64.0.0/16"),
        ("ovn-default", ferry_api::DEFAULT_VPC, "10.16.0.0/16"),
        ("vpc1-subnet1", "vpc1", "10.0.1.0/24"),
        ("vpc1-subnet2", "vpc1", "10.0.2.0/24"),
        ("vpc1-subnet3", "vpc1", "10.0.3.0/24"),
        ("vpc2-subnet1", "vpc2", "10.0.1.0/24"),
    ] {
        out.push(
            json!({"apiVersion": "iaas.yusur.io/v1", "kind": "Subnet", "metadata": {"name": name},
            "spec": {"vpc": vpc, "cidrBlock": cidr}}),
        );
    }
    let svc = |name: &str,
               type_: &str,
               scope: &str,
               vpc: Option<&str>,
               vpcs: Option<Vec<&str>>,
               port: i32| {
        let mut spec = json!({"type": type_, "scope": scope, "ports": [{"port": port, "protocol": "TCP"}],
            "selector": {"app": name}});
        if let Some(v) = vpc {
            spec["vpc"] = json!(v);
        }
        if let Some(v) = vpcs {
            spec["vpcs"] = json!(v);
        }
        json!({"apiVersion": "iaas.yusur.io/v1", "kind": "YusurService",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    };
    out.push(svc("ysvc1", "ClusterIP", "vpc", Some("vpc1"), None, 5001));
    out.push(svc("web-default", "ClusterIP", "vpc", None, None, 80));
    out.push(svc(
        "web-eip",
        "LoadBalancer",
        "vpc",
        Some("vpc1"),
        None,
        80,
    ));
    out.push(svc(
        "web-multi",
        "LoadBalancer",
        "multi-vpc",
        None,
        Some(vec!["vpc1", "vpc2"]),
        80,
    ));
    out
}

/// (service, kind, short kind, backend, vpc, subnet, ip, phase) of one probe.
type ProbeRow = (
    String,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// Every probe of the fixture.
fn probes() -> Vec<ProbeRow> {
    let mut out = Vec::new();
    for (kind, short, name, vpc, subnet, ip) in SEED_BACKENDS {
        out.push((
            "ysvc1".to_string(),
            kind,
            short,
            name,
            vpc,
            subnet,
            ip,
            "Healthy",
        ));
    }
    out.push((
        "web-default".into(),
        "Pod",
        "pod",
        "default-ep-1",
        ferry_api::DEFAULT_VPC,
        "ovn-default",
        "10.16.0.11",
        "Healthy",
    ));
    out.push((
        "web-eip".into(),
        "Pod",
        "pod",
        "svc1-ep-1",
        "vpc1",
        "vpc1-subnet1",
        "10.0.1.11",
        "Healthy",
    ));
    out.push((
        "web-multi".into(),
        "Pod",
        "pod",
        "svc1-ep-1",
        "vpc1",
        "vpc1-subnet1",
        "10.0.1.11",
        "Healthy",
    ));
    out.push((
        "web-multi".into(),
        "Pod",
        "pod",
        "vpc2-ep-1",
        "vpc2",
        "vpc2-subnet1",
        "10.0.1.11",
        "Unknown",
    ));
    out
}

async fn set_probe_phase(client: &kube::Client, name: &str, phase: &str, message: &str) {
    let api: Api<NetworkProbe> = Api::namespaced(client.clone(), "default");
    let status = json!({"status": {"phase": phase, "message": message, "latencyMs": 0.4,
        "lastTransitionTime": "2026-11-28T00:00:00Z", "prober": "node1"}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("writing a probe status");
}

async fn load(client: &kube::Client) {
    for o in objects() {
        apply(client, &o).await.expect("creating an object");
    }
    for (svc, kind, short, backend, vpc, subnet, ip, phase) in probes() {
        let name = format!("{svc}-{short}-{backend}");
        let probe = json!({"apiVersion": "iaas.yusur.io/v1", "kind": "NetworkProbe",
            "metadata": {"name": name, "namespace": "default", "labels": {ferry_api::SERVICE_LABEL: svc}},
            "spec": {"target": {"kind": kind, "name": backend, "vpc": vpc, "subnet": subnet, "ip": ip},
                "type": "TCP", "port": 80, "nodeName": "node1", "periodSeconds": 1, "timeoutSeconds": 1,
                "successThreshold": 1, "failureThreshold": 3}});
        apply(client, &probe).await.expect("creating a probe");
        if phase != "Unknown" {
            set_probe_phase(client, &name, phase, "connected").await;
        }
    }
    let ysvcs: Api<YusurService> = Api::namespaced(client.clone(), "default");
    for (name, ip, eip, ready, total) in [
        ("ysvc1", "10.96.0.20", None, 5, 5),
        ("web-default", "10.96.0.21", None, 1, 1),
        ("web-eip", "10.96.0.22", Some("198.18.0.100"), 1, 1),
        ("web-multi", "10.96.0.23", Some("198.18.0.101"), 1, 2),
    ] {
        let status = json!({"status": {"clusterIP": ip, "eip": eip, "readyEndpoints": ready, "totalEndpoints": total,
            "conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed", "message": "",
                "lastTransitionTime": "2026-11-28T00:00:00Z"}]}});
        ysvcs
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("writing a service status");
    }
}

/// A program on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One W3C WebDriver command over plain HTTP/1.1; the response's `value`.
fn wd(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open: read the header, then exactly the body.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let payload = loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let head = head.to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            match length {
                Some(len) if rest.len() >= len => break rest[..len].to_string(),
                None if head.contains("transfer-encoding: chunked")
                    && rest.ends_with("0\r\n\r\n") =>
                {
                    break dechunk(rest);
                }
                None if n == 0 => break rest.to_string(),
                _ => {}
            }
        }
        if n == 0 {
            return Err("connection closed early".into());
        }
    };
    let v: Value = serde_json::from_str(&payload).map_err(|e| format!("{e}: {payload}"))?;
    if v["value"]["error"].is_string() {
        return Err(format!("{} {}: {}", method, path, v["value"]));
    }
    Ok(v["value"].clone())
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Kills chromedriver (and with it the browser it started) when the test ends, however.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn js(addr: SocketAddr, session: &str, script: &str) -> Value {
    wd(
        addr,
        "POST",
        &format!("/session/{session}/execute/sync"),
        Some(&json!({"script": script, "args": []})),
    )
    .expect("running a script in the page")
}

fn wait_js(
    addr: SocketAddr,
    session: &str,
    script: &str,
    want: &Value,
    within: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if &js(addr, session, script) == want {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn screenshot_path() -> PathBuf {
    std::env::var_os("FERRY_UI_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("ferry-ui-browser.png"))
}

#[test]
#[ignore = "needs chromium and chromium-driver (scripts/setup.sh installs them)"]
fn the_page_shows_ysvc1_ready_and_a_failing_backend_turns_red_live() {
    let chromium = on_path("chromium").expect("chromium on PATH (apt-get install chromium)");
    let chromedriver =
        on_path("chromedriver").expect("chromedriver on PATH (apt-get install chromium-driver)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let api = rt.block_on(TestApiServer::start());
    let admin = api.tokens().admin.clone();
    let client = rt.block_on(api.client());
    rt.block_on(load(&client));
    let kubeconfig = api.kubeconfig.clone();
    let ui_addr = rt.block_on(async move {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        let app = ferry_ui::router(ferry_ui::Upstream::new(config).expect("upstream"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });

    // A wrong token is refused and shows the sign-in form, not data.
    let profile = tempfile::tempdir().expect("browser profile dir");
    let port = free_port();
    let driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver"),
    );
    let wd_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while wd(wd_addr, "GET", "/status", None).map(|v| v["ready"] == true) != Ok(true) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:loggingPrefs": {"browser": "ALL"},
        "goog:chromeOptions": {"binary": chromium, "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1280,1100",
            format!("--user-data-dir={}", profile.path().display())]}}}});
    let session = wd(wd_addr, "POST", "/session", Some(&caps)).expect("a browser session");
    let sid = session["sessionId"]
        .as_str()
        .expect("session id")
        .to_string();
    let go = |url: String| {
        wd(
            wd_addr,
            "POST",
            &format!("/session/{sid}/url"),
            Some(&json!({"url": url})),
        )
        .expect("navigating")
    };

    go(ferry_ui::sign_in_url(
        &format!("http://{ui_addr}"),
        "not-a-token",
    ));
    let refused = wait_js(
        wd_addr,
        &sid,
        "return !document.getElementById('login').hidden && document.getElementById('main').hidden",
        &json!(true),
        Duration::from_secs(10),
    );
    assert!(
        refused.is_some(),
        "a wrong token must show the sign-in form"
    );

    // The one-time URL signs in, and the page fills from the API.
    go(ferry_ui::sign_in_url(&format!("http://{ui_addr}"), &admin));
    let ready = wait_js(
        wd_addr,
        &sid,
        "const r = document.querySelector('#services tr[data-service=\"default/ysvc1\"] .ready'); return r && r.textContent",
        &json!("5/5"),
        Duration::from_secs(20),
    );
    if ready.is_none() {
        let logs = wd(
            wd_addr,
            "POST",
            &format!("/session/{sid}/se/log"),
            Some(&json!({"type": "browser"})),
        );
        let body = js(wd_addr, &sid, "return document.body.innerText");
        panic!("ysvc1 does not show 5/5 ready; console: {logs:?}; page: {body}");
    }
    assert_eq!(
        js(wd_addr, &sid, "return location.hash"),
        json!(""),
        "the token leaves the address bar"
    );
    let healthy = "return document.querySelectorAll('#topo [data-probe^=\"default/ysvc1-\"][data-phase=\"Healthy\"]').length";
    assert_eq!(
        wait_js(wd_addr, &sid, healthy, &json!(5), Duration::from_secs(10)).map(|_| ()),
        Some(()),
        "ysvc1's five backends are drawn healthy"
    );
    assert_eq!(
        js(
            wd_addr,
            &sid,
            "return [...document.querySelectorAll('#services tbody tr td:nth-child(2)')].map(t => t.textContent).sort().join('|')"
        ),
        json!(
            "1 ClusterIP in VPC|2 node \u{2192} default VPC|3 EIP \u{2192} VPC|4 EIP \u{2192} multi-VPC"
        ),
        "the four scenario kinds"
    );
    assert_eq!(
        js(
            wd_addr,
            &sid,
            "return document.querySelectorAll('#topo [data-vpc]').length"
        ),
        json!(3)
    );

    // A backend's probe fails: it turns red without a reload.
    js(wd_addr, &sid, "window.__ferryNoReload = true; return null");
    let probe = "ysvc1-bm-bm-1";
    rt.block_on(set_probe_phase(
        &client,
        probe,
        "Unhealthy",
        "connection refused",
    ));
    let red = wait_js(
        wd_addr,
        &sid,
        &format!(
            "const e = document.querySelector('#topo [data-probe=\"default/{probe}\"]'); \
             const r = document.querySelector('#probes tr[data-probe=\"default/{probe}\"]'); \
             const b = document.querySelector('#topo circle[data-backend=\"vpc1/BareMetal/bm-1\"]'); \
             return !!(e && r && b) && e.dataset.phase + r.dataset.phase + b.dataset.phase"
        ),
        &json!("UnhealthyUnhealthyUnhealthy"),
        Duration::from_secs(5),
    );
    eprintln!("backend turned unhealthy on the page after {red:?}");
    assert!(
        red.is_some(),
        "the failing backend turns unhealthy within 5 s"
    );
    assert_eq!(
        js(wd_addr, &sid, "return window.__ferryNoReload === true"),
        json!(true),
        "no reload"
    );

    // No console errors (chromedriver's log of the page's console).
    let logs = wd(
        wd_addr,
        "POST",
        &format!("/session/{sid}/se/log"),
        Some(&json!({"type": "browser"})),
    )
    .expect("the browser's console log");
    let errors: Vec<&Value> = logs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        // The refused sign-in above answers 401 on purpose.
        .filter(|e| {
            !e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("/ui/session")
        })
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    let png = wd(wd_addr, "GET", &format!("/session/{sid}/screenshot"), None).expect("screenshot");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap_or_default())
        .expect("PNG as base64");
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    let out = screenshot_path();
    std::fs::write(&out, &bytes).expect("writing the screenshot");
    eprintln!("screenshot: {}", out.display());
    let _ = wd(wd_addr, "DELETE", &format!("/session/{sid}"), None);
    drop(driver);
    rt.block_on(api.stop());
}
