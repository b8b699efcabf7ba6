//! The page in a real browser: headless Chromium driven through WebDriver (chromedriver,
//! the W3C protocol over plain HTTP), against a real Ferry API server holding a lab-like
//! topology with hand-written statuses (what the controller and the agents would write).
//! The WebDriver client is `ferry_testkit::browser`, shared with the lab end to end
//! (`crates/ferry/tests/lab_e2e.rs`), which checks the same page on a running lab.
//! It checks that the page signs in from its one-time URL, loads without console errors,
//! shows ysvc1 with 5/5 ready and its five backends healthy, and that a backend whose
//! probe turns unhealthy turns red without a reload; it leaves a screenshot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_api::{NetworkProbe, YusurService};
use ferry_testkit::api::{TestApiServer, apply};
use ferry_testkit::browser::{self, Browser};
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

fn screenshot_path() -> PathBuf {
    browser::screenshot_path(
        "FERRY_UI_SCREENSHOT",
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("ferry-ui-browser.png"),
    )
}

#[test]
#[ignore = "needs chromium and chromium-driver (scripts/setup.sh installs them)"]
fn the_page_shows_ysvc1_ready_and_a_failing_backend_turns_red_live() {
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
    let b = Browser::start(1280, 1100).expect("headless Chromium (scripts/setup.sh installs it)");
    b.go(&ferry_ui::sign_in_url(
        &format!("http://{ui_addr}"),
        "not-a-token",
    ))
    .expect("navigating");
    let refused = b.wait_js(
        "return !document.getElementById('login').hidden && document.getElementById('main').hidden",
        &json!(true),
        Duration::from_secs(10),
    );
    assert!(
        refused.is_some(),
        "a wrong token must show the sign-in form"
    );

    // The one-time URL signs in, and the page fills from the API.
    b.go(&ferry_ui::sign_in_url(&format!("http://{ui_addr}"), &admin))
        .expect("navigating");
    let ready = b.wait_js(
        "const r = document.querySelector('#services tr[data-service=\"default/ysvc1\"] .ready'); return r && r.textContent",
        &json!("5/5"),
        Duration::from_secs(20),
    );
    if ready.is_none() {
        let logs = b.console();
        let body = b.js("return document.body.innerText");
        panic!("ysvc1 does not show 5/5 ready; console: {logs:?}; page: {body:?}");
    }
    assert_eq!(
        b.js("return location.hash").expect("script"),
        json!(""),
        "the token leaves the address bar"
    );
    let healthy = "return document.querySelectorAll('#topo [data-probe^=\"default/ysvc1-\"][data-phase=\"Healthy\"]').length";
    assert_eq!(
        b.wait_js(healthy, &json!(5), Duration::from_secs(10))
            .map(|_| ()),
        Some(()),
        "ysvc1's five backends are drawn healthy"
    );
    assert_eq!(
        b.js(
            "return [...document.querySelectorAll('#services tbody tr td:nth-child(2)')].map(t => t.textContent).sort().join('|')"
        )
        .expect("script"),
        json!(
            "1 ClusterIP in VPC|2 node \u{2192} default VPC|3 EIP \u{2192} VPC|4 EIP \u{2192} multi-VPC"
        ),
        "the four scenario kinds"
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#topo [data-vpc]').length")
            .expect("script"),
        json!(3)
    );

    // A backend's probe fails: it turns red without a reload.
    b.js("window.__ferryNoReload = true; return null")
        .expect("script");
    let probe = "ysvc1-bm-bm-1";
    rt.block_on(set_probe_phase(
        &client,
        probe,
        "Unhealthy",
        "connection refused",
    ));
    let red = b.wait_js(
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
        b.js("return window.__ferryNoReload === true")
            .expect("script"),
        json!(true),
        "no reload"
    );

    // No console errors; the refused sign-in above answers 401 on purpose.
    let errors = b
        .console_errors(&["/ui/session"])
        .expect("the browser's console log");
    assert!(errors.is_empty(), "console errors: {errors:?}");

    let out = screenshot_path();
    b.save_screenshot(&out).expect("a screenshot");
    eprintln!("screenshot: {}", out.display());
    drop(b);
    rt.block_on(api.stop());
}
