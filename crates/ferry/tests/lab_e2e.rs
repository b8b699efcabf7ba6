//! End to end, as a user runs it, on the default lab (a chassis per node, Geneve between
//! them, gateways HA over them and a witness): `ferry lab up`, `ferry lab check` (every
//! scenario, isolation and failover with real packets through OVN; each scenario with
//! answers from another chassis than its client's), `ovn-sbctl show` listing the three
//! chassis with Geneve, node1's userspace datapath encapsulating by itself (`tnl_push`)
//! with userspace TSO off, `ferry lab status -o json`, every component's `/metrics` (a
//! service change moves the programming histogram), the web page in headless Chromium
//! (ysvc1 5/5; a backend the lab blocks turns red without a reload; a screenshot), `ferry
//! lab gateway-failover` (the EIP answers through node2 when node1's chassis dies, and comes
//! back), `ferry lab exec`, then `ferry lab down` leaving no namespace or process behind.
//! One lab start for all of it (a start costs about a minute). `lab_chassis_e2e.rs` runs
//! the same check on `--single-chassis`.
//!
//! The screenshot goes to `$FERRY_UI_LAB_SCREENSHOT` when set (relative to the workspace
//! root: `FERRY_UI_LAB_SCREENSHOT=docs/ui-lab.png` refreshes the committed one), else to
//! the target directory's `tmp/ferry-ui-lab.png`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::lab::{Lab, failed_rows, ferry, lab_namespaces, text};
use ferry_testkit::browser::{self, Browser};
use serde_json::{Value, json};

/// `(who, body)` of each metrics URL of `lab status -o json` (apiserver, controller, each
/// agent's node), fetched with the admin token carried by its `ui` URL.
fn scrape_metrics(status: &[u8]) -> Vec<(String, String)> {
    let st: serde_json::Value = serde_json::from_slice(status).unwrap_or_default();
    let token = st["ui"]
        .as_str()
        .and_then(|u| u.split_once("#token="))
        .map(|(_, t)| t.to_string())
        .unwrap_or_default();
    let mut urls = vec![
        ("apiserver".to_string(), st["metrics"]["apiserver"].clone()),
        (
            "controller".to_string(),
            st["metrics"]["controller"].clone(),
        ),
    ];
    if let Some(agents) = st["metrics"]["agents"].as_object() {
        urls.extend(agents.iter().map(|(n, u)| (n.clone(), u.clone())));
    }
    urls.into_iter()
        .map(|(who, url)| {
            let out = std::process::Command::new("curl")
                .args(["-s", "-k", "--max-time", "10", "-H"])
                .arg(format!("Authorization: Bearer {token}"))
                .arg(url.as_str().unwrap_or_default())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            (who, out)
        })
        .collect()
}

/// `ferry_service_programming_seconds_count` on the controller's `/metrics`.
fn programming_count(url: &str, token: &str) -> Option<u64> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("ferry_service_programming_seconds_count "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// A service change (web-affinity's affinity timeout, through the API with the admin
/// token) moves `ferry_service_programming_seconds_count`: `(before, after)`.
fn programming_moves(st: &Value) -> Result<(u64, u64), String> {
    let (token, url) = (token_of(st), st["metrics"]["controller"].as_str());
    let url = url.ok_or("no controller metrics URL")?;
    let before = programming_count(url, &token).ok_or("no programming count")?;
    let kubeconfig = st["kubeconfig"]
        .as_str()
        .ok_or("no kubeconfig in lab status")?;
    let patch = Command::new("kubectl")
        .arg(format!("--kubeconfig={kubeconfig}"))
        .args(["patch", "ysvc", "web-affinity", "--type=merge", "-p"])
        .arg(r#"{"spec":{"sessionAffinityTimeoutSeconds":61}}"#)
        .output()
        .map_err(|e| format!("kubectl: {e}"))?;
    if !patch.status.success() {
        return Err(format!(
            "kubectl patch: {}",
            String::from_utf8_lossy(&patch.stderr)
        ));
    }
    let start = Instant::now();
    loop {
        let after = programming_count(url, &token).unwrap_or(before);
        if after > before {
            return Ok((before, after));
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("the count stayed at {before} for 30 s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The admin token in the `ui` URL of `lab status -o json`.
fn token_of(st: &Value) -> String {
    st["ui"]
        .as_str()
        .and_then(|u| u.split_once("#token="))
        .map(|(_, t)| t.to_string())
        .unwrap_or_default()
}

/// Blocks TCP `port` into a lab host (as `lab check`'s failover does, iptables REJECT in
/// its namespace, through `ferry lab exec`) until dropped.
struct Blocked<'a> {
    lab: &'a str,
    host: &'a str,
    port: u16,
}

impl<'a> Blocked<'a> {
    fn iptables(lab: &str, host: &str, op: &str, port: u16) -> bool {
        let port = port.to_string();
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["lab", "exec", "--dir", lab, host, "--", "iptables", op])
            .args(["INPUT", "-p", "tcp", "--dport", &port, "-j", "REJECT"])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn new(lab: &'a str, host: &'a str, port: u16) -> Result<Blocked<'a>, String> {
        if Self::iptables(lab, host, "-I", port) {
            Ok(Blocked { lab, host, port })
        } else {
            Err(format!("could not block {host}:{port}"))
        }
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        let _ = Self::iptables(self.lab, self.host, "-D", self.port);
    }
}

/// The page on the running lab in headless Chromium: it loads from `lab status`'s `ui`
/// URL with no console error, shows ysvc1 5/5 with its five backends healthy, and when
/// the lab blocks svc1-ep-2's iperf port (5001, ysvc1's probe) that backend turns red in
/// the drawing and the probes table without a reload, ysvc1 shows 4/5, and all turns
/// back after the unblock. Returns what it measured, for the test's output.
fn browser_on_the_lab(lab: &str, st: &Value) -> Result<String, String> {
    let ui = st["ui"].as_str().ok_or("no ui URL in lab status")?;
    let b = Browser::start(1280, 1400).map_err(|e| format!("{e:#}"))?;
    b.go(ui).map_err(|e| format!("{e:#}"))?;
    let ready = |want: &str, within: u64| {
        b.wait_js(
            "const r = document.querySelector('#services tr[data-service=\"default/ysvc1\"] .ready'); return r && r.textContent",
            &json!(want),
            Duration::from_secs(within),
        )
    };
    if ready("5/5", 30).is_none() {
        let page = b.js("return document.body.innerText");
        return Err(format!(
            "ysvc1 does not show 5/5; console {:?}; page {page:?}",
            b.console()
        ));
    }
    let healthy = "return document.querySelectorAll('#topo line[data-probe^=\"default/ysvc1-\"][data-phase=\"Healthy\"]').length";
    b.wait_js(healthy, &json!(5), Duration::from_secs(10))
        .ok_or("ysvc1's five backends are not drawn healthy")?;
    b.js("window.__ferryNoReload = true; return null")
        .map_err(|e| format!("{e:#}"))?;

    let (probe, backend) = ("default/ysvc1-pod-svc1-ep-2", "vpc1/Pod/svc1-ep-2");
    let phases = format!(
        "const e = document.querySelector('#topo [data-probe=\"{probe}\"]'); \
         const r = document.querySelector('#probes tr[data-probe=\"{probe}\"]'); \
         const b = document.querySelector('#topo circle[data-backend=\"{backend}\"]'); \
         return !!(e && r && b) && e.dataset.phase + r.dataset.phase + b.dataset.phase"
    );
    let blocked = Blocked::new(lab, "svc1-ep-2", 5001)?;
    // The issue's bound: blocked -> red on the page within 5 s (3 failed 1 s probes, the
    // agent's status write, the watch to the page).
    let red = b
        .wait_js(
            &phases,
            &json!("UnhealthyUnhealthyUnhealthy"),
            Duration::from_secs(5),
        )
        .ok_or("svc1-ep-2 did not turn unhealthy on the page within 5 s of the block")?;
    let four = ready("4/5", 15).ok_or("ysvc1 does not show 4/5 with svc1-ep-2 blocked")?;
    let shot = browser::screenshot_path(
        "FERRY_UI_LAB_SCREENSHOT",
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("ferry-ui-lab.png"),
    );
    b.save_screenshot(&shot).map_err(|e| format!("{e:#}"))?;
    drop(blocked);
    let green = b
        .wait_js(
            &phases,
            &json!("HealthyHealthyHealthy"),
            Duration::from_secs(15),
        )
        .ok_or("svc1-ep-2 did not turn healthy again after the unblock")?;
    ready("5/5", 15).ok_or("ysvc1 does not show 5/5 again after the unblock")?;
    if b.js("return window.__ferryNoReload === true").ok() != Some(json!(true)) {
        return Err("the page reloaded".into());
    }
    let errors = b.console_errors(&[]).map_err(|e| format!("{e:#}"))?;
    if !errors.is_empty() {
        return Err(format!("console errors: {errors:?}"));
    }
    Ok(format!(
        "page: svc1-ep-2 red {:.2}s after the block (ysvc1 4/5 {:.2}s later), green {:.2}s after the unblock; screenshot {}",
        red.as_secs_f64(),
        four.as_secs_f64(),
        green.as_secs_f64(),
        shot.display()
    ))
}

/// What the default lab must show about its chassis, from `lab check`'s table, `ovn-sbctl
/// show`, node1's datapath flows and each chassis' OVS settings; `Err` names what is wrong.
fn two_chassis(lab: &Lab, table: &str) -> Result<(), String> {
    for row in ["1 chassis", "2 chassis", "3 chassis", "4 chassis"] {
        if !table.contains(row) {
            return Err(format!("missing row {row}"));
        }
    }
    // Clients on node1, the outside client on node2 reaching the gateway preferred on node1.
    for placed in [
        "client-vpc1@node1",
        "node1@node1",
        "ext-client@node2",
        "via gateway @node1",
    ] {
        if !table.contains(placed) {
            return Err(format!("{placed} not shown"));
        }
    }
    let sb = lab.sb_show();
    for chassis in ["ferry-node1", "ferry-node2", "ferry-witness"] {
        if !sb.contains(&format!("Chassis {chassis}")) {
            return Err(format!("{chassis} not in ovn-sbctl show:\n{sb}"));
        }
    }
    if sb.matches("Encap geneve").count() != 3 {
        return Err(format!("not three Geneve encaps in ovn-sbctl show:\n{sb}"));
    }
    let ovn = lab.ovn();
    let flows = text(
        "ovs-appctl",
        &[
            "-t",
            &format!("{ovn}/chassis-node1/run/ovs-vswitchd.ctl"),
            "dpctl/dump-flows",
        ],
    );
    if !flows.contains("tnl_push") {
        return Err(format!("no tnl_push on node1:\n{flows}"));
    }
    // OVS 3.1 drops TSO segments it has to tunnel: every chassis keeps userspace TSO off.
    for node in ["node1", "node2", "witness"] {
        let tso = lab.userspace_tso(&format!("{ovn}/chassis-{node}"));
        if tso != "false" {
            return Err(format!("{node}: userspace-tso-enable={tso:?}"));
        }
    }
    // The central part (NB, SB, ovn-northd) runs no OVS of its own, so no datapath of this
    // lab has TSO on.
    if std::path::Path::new(&format!("{ovn}/run/db.sock")).exists() {
        return Err("the central part runs an OVS database".into());
    }
    Ok(())
}

#[test]
#[ignore = "needs root, OVN/OVS and network namespaces"]
fn lab_up_check_status_exec_down() {
    let lab = Lab::up(&[]);
    let dir = lab.dir.clone();
    let dir = dir.as_str();
    let check = lab.is_up().then(|| lab.check());
    let chassis = match &check {
        Some(c) => two_chassis(&lab, &String::from_utf8_lossy(&c.stdout)),
        None => Err("lab up failed".into()),
    };
    let status = lab.run("status", &["-o", "json"]);
    let scraped = scrape_metrics(&status.stdout);
    let st: Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
    let (programming, page) = if lab.is_up() {
        (programming_moves(&st), browser_on_the_lab(dir, &st))
    } else {
        (Err("lab up failed".into()), Err("lab up failed".into()))
    };
    eprintln!("programming count (before, after a change): {programming:?}\n{page:?}");
    let failover = lab
        .is_up()
        .then(|| lab.run("gateway-failover", &["-o", "json"]));
    let exec = ferry(&[
        "lab",
        "exec",
        "--dir",
        dir,
        "client-vpc1",
        "--",
        "curl",
        "-s",
        "-m",
        "3",
        "http://10.96.0.10/",
    ]);
    let up_ok = lab.is_up();
    let up_stderr = String::from_utf8_lossy(&lab.up.stderr).into_owned();
    let down = lab.down();
    assert!(up_ok, "lab up failed");
    assert!(
        up_stderr.contains("web page (signed in): http://"),
        "lab up prints the page's address"
    );
    let check = check.expect("check ran");
    let table = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "lab check failed; rows that failed: {:#?}\nits stderr: {}\n{table}",
        failed_rows(&table),
        String::from_utf8_lossy(&check.stderr)
    );
    for row in [
        "1 clusterip-in-vpc",
        "2 node-to-default-vpc",
        "3 eip-to-vpc",
        "4 eip-to-multi-vpc",
        "isolation: vpc2 -> vpc1",
        "isolation: vpc2 -> vpc1 VIP (socket LB on)",
        "failover: svc1-ep-2 blocked",
        "seed ysvc1",
        "ysvc UDP behind an EIP from outside",
    ] {
        assert!(table.contains(row), "missing row {row}");
    }
    if let Err(e) = chassis {
        panic!("two chassis: {e}\n{table}");
    }
    assert!(st.is_object(), "status is JSON");
    assert_eq!(st["scenarios"].as_array().map(Vec::len), Some(4));
    assert_eq!(st["scenarios"][0]["target"], "10.96.0.10:80");
    // Every component's /metrics, from the URLs status gives, with the token of its `ui`:
    // each family there, and live (after lab check's traffic, probes and failover).
    let body = |who: &str| {
        scraped
            .iter()
            .find(|(w, _)| w == who)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    };
    let total = |who: &str, series: &str| -> Option<f64> {
        let b = body(who);
        let values: Vec<f64> = b
            .lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    assert!(
        st["ui"].as_str().is_some_and(|u| u.contains("/ui/#token=")),
        "ui: {}",
        st["ui"]
    );
    for (who, series) in [
        ("apiserver", "ferry_apiserver_requests_total{"),
        (
            "apiserver",
            "ferry_apiserver_request_duration_seconds_count{",
        ),
        ("apiserver", "ferry_apiserver_watchers{"),
        ("apiserver", "ferry_apiserver_cache_objects"),
        ("apiserver", "ferry_store_fsync_seconds_count"),
        ("apiserver", "ferry_store_commit_seconds_count"),
        ("controller", "ferry_service_programming_seconds_count"),
        ("controller", "ferry_endpoint_flip_seconds_count"),
        ("controller", "ferry_nb_transaction_seconds_count"),
        ("controller", "ferry_nb_rows{table=\"Load_Balancer\"}"),
        ("controller", "ferry_probes{phase=\"Healthy\"}"),
        ("controller", "ferry_controller_pass_seconds_count{"),
        ("node1", "ferry_probe_results_total{"),
        ("node1", "ferry_probe_latency_seconds_count{"),
        ("node1", "ferry_agent_plumbed_ports{node=\"node1\"}"),
        ("node2", "ferry_agent_plumbed_ports{node=\"node2\"}"),
        ("node1", "ferry_agent_probes_running{node=\"node1\"}"),
    ] {
        assert!(
            total(who, series).is_some_and(|v| v > 0.0),
            "{who}: {series} missing or zero in:\n{}",
            body(who)
        );
    }
    let (before, after) = programming.expect("a service change moves the programming count");
    assert!(after > before);
    if let Err(e) = page {
        panic!("the web page on the lab: {e}");
    }
    // The active gateway chassis (node1) dies: the EIP answers through node2, and the
    // gateway comes back to node1 once its daemons restart (which needs the underlay
    // route re-added to the restarted ovs-vswitchd: fabric::keep_underlay_route).
    let failover = failover.expect("failover ran");
    let f: Value = serde_json::from_slice(&failover.stdout).unwrap_or_default();
    assert!(failover.status.success(), "gateway-failover failed: {f}");
    assert_eq!((&f["from"], &f["to"]), (&"node1".into(), &"node2".into()));
    assert!(f["firstAnswerS"].is_number(), "{f}");
    assert!(f["failbackS"].is_number(), "{f}");
    let answer = String::from_utf8_lossy(&exec.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        exec.status.success()
            && ["svc1-ep-1", "svc1-ep-2", "bm-1", "vm-1", "vnic-1"].contains(&answer.as_str()),
        "exec through the ClusterIP answered {answer:?}"
    );
    if let Err(e) = down {
        panic!("{e}");
    }
    assert!(
        lab_namespaces().is_empty(),
        "namespaces left: {:?}",
        lab_namespaces()
    );
}
