//! End to end, as a user runs it: `ferry lab up`, `ferry lab check` (every scenario,
//! isolation and failover with real packets through OVN), `ferry lab status -o json`,
//! `ferry lab exec`, then `ferry lab down` leaving no namespace or process behind.

use std::process::Command;

fn ferry(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run ferry");
    eprintln!(
        "$ ferry {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

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

fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("ferry-") || n.starts_with("fp-"))
        .map(String::from)
        .collect()
}

#[test]
#[ignore = "needs root, OVN/OVS and network namespaces"]
fn lab_up_check_status_exec_down() {
    assert!(
        lab_namespaces().is_empty(),
        "another lab runs on this machine: {:?}",
        lab_namespaces()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = dir.path().join("lab");
    let lab = lab.to_str().expect("utf-8 path");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let up = ferry(&["lab", "up", "--dir", lab, "--listen", &listen]);
    let check = if up.status.success() {
        Some(ferry(&["lab", "check", "--dir", lab]))
    } else {
        None
    };
    let status = ferry(&["lab", "status", "--dir", lab, "-o", "json"]);
    let scraped = scrape_metrics(&status.stdout);
    let exec = ferry(&[
        "lab",
        "exec",
        "--dir",
        lab,
        "client-vpc1",
        "--",
        "curl",
        "-s",
        "-m",
        "3",
        "http://10.96.0.10/",
    ]);
    let down = ferry(&["lab", "down", "--dir", lab]);
    let again = ferry(&["lab", "down", "--dir", lab]);
    assert!(up.status.success(), "lab up failed");
    let check = check.expect("check ran");
    let table = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "lab check failed:\n{table}");
    for row in [
        "1 clusterip-in-vpc",
        "2 node-to-default-vpc",
        "3 eip-to-vpc",
        "4 eip-to-multi-vpc",
        "isolation: vpc2 -> vpc1",
        "failover: svc1-ep-2 blocked",
        "seed ysvc1",
    ] {
        assert!(table.contains(row), "missing row {row}");
    }
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status is JSON");
    assert_eq!(st["scenarios"].as_array().map(Vec::len), Some(4));
    assert_eq!(st["scenarios"][0]["target"], "10.96.0.10:80");
    // Every component's /metrics, from the URLs status gives, with the token of its `ui`.
    let family = |who: &str, series: &str| {
        let (_, body) = scraped.iter().find(|(w, _)| w == who).expect("scraped");
        body.lines().any(|l| l.starts_with(series))
    };
    assert!(
        st["ui"].as_str().is_some_and(|u| u.contains("/ui/#token=")),
        "ui: {}",
        st["ui"]
    );
    assert!(
        family("apiserver", "ferry_apiserver_requests_total{"),
        "{scraped:?}"
    );
    assert!(family("apiserver", "ferry_store_fsync_seconds_count"));
    assert!(family(
        "controller",
        "ferry_service_programming_seconds_count"
    ));
    assert!(family(
        "controller",
        "ferry_nb_rows{table=\"Load_Balancer\"}"
    ));
    assert!(family("controller", "ferry_probes{phase=\"Healthy\"}"));
    assert!(family("node1", "ferry_probe_results_total{"));
    assert!(family("node1", "ferry_agent_plumbed_ports{node=\"node1\"}"));
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
    assert!(
        down.status.success() && again.status.success(),
        "down (twice)"
    );
    assert!(
        lab_namespaces().is_empty(),
        "namespaces left: {:?}",
        lab_namespaces()
    );
    assert!(!std::path::Path::new(lab).exists(), "lab dir left");
}
