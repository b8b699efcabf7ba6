//! `ferry up --metrics-listen`: the controller's families on their own listener (behind
//! the admin token) move when a service changes, the API server's `/metrics` answers the
//! admin through kubectl and refuses the agent, and the web page's proxy serves the API
//! to a signed-in cookie only.

mod common;
use common::{Up, wait};

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `curl -s -i ARGS`: (status code, headers and body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut c = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(s) = stdin {
        c.stdin
            .take()
            .expect("stdin")
            .write_all(s.as_bytes())
            .expect("write");
    }
    drop(c.stdin.take());
    c.wait_with_output().expect("kubectl output")
}

/// The value of the series named exactly `series` in an exposition.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
#[ignore = "needs root and OVN"]
fn ferry_up_metrics_move_with_a_service_change_and_the_page_proxy_needs_a_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let log_path = dir.path().join("up.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let (port, mport) = (free_port(), free_port());
    let metrics = format!("127.0.0.1:{mport}");
    let _up = Up(Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["up", "--no-agent", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &metrics])
        .args(["--gateway-chassis", &format!("met{}", std::process::id())])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start ferry up"));
    let kubeconfig = data.join("kubeconfig");
    wait("CRDs served", &log_path, || {
        kubectl(&kubeconfig, &["get", "yusurservices.iaas.yusur.io"], None)
            .status
            .success()
            .then_some(())
    });
    let tokens: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("tokens.json")).expect("tokens"))
            .expect("tokens json");
    let admin = tokens["admin"].as_str().expect("admin token").to_string();
    let bearer = format!("Authorization: Bearer {admin}");
    let scrape = || curl(&["-H", &bearer, &format!("http://{metrics}/metrics")]);

    // A VPC, a subnet and the seed service, through the API.
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ysvc1.yaml"),
    )
    .expect("examples/ysvc1.yaml");
    let objects = format!(
        "apiVersion: iaas.yusur.io/v1\nkind: Vpc\nmetadata: {{name: vpc1}}\nspec: {{}}\n---\n\
         apiVersion: iaas.yusur.io/v1\nkind: Subnet\nmetadata: {{name: vpc1-subnet1}}\n\
         spec: {{vpc: vpc1, cidrBlock: 10.0.1.0/24}}\n---\n{seed}"
    );
    let out = kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&objects));
    assert!(out.status.success(), "{out:?}");
    let programmed = wait("ysvc1 programmed, counted", &log_path, || {
        let (code, text) = scrape();
        let n = value(&text, "ferry_service_programming_seconds_count")?;
        (code == 200 && n >= 1.0).then_some(n)
    });

    // The controller's listener wants the admin token and shows its families.
    assert_eq!(curl(&[&format!("http://{metrics}/metrics")]).0, 401);
    let (_, text) = scrape();
    for family in [
        "# TYPE ferry_endpoint_flip_seconds histogram",
        "# TYPE ferry_nb_transaction_seconds histogram",
        "ferry_nb_rows{table=\"Load_Balancer\"}",
        "ferry_probes{phase=\"Healthy\"}",
        "# TYPE ferry_controller_pass_seconds histogram",
    ] {
        assert!(text.contains(family), "{family} missing in:\n{text}");
    }
    assert!(value(&text, "ferry_nb_transaction_seconds_count").is_some_and(|n| n >= 1.0));

    // A service change moves ferry_service_programming_seconds_count.
    let out = kubectl(
        &kubeconfig,
        &[
            "patch",
            "yusurservice",
            "ysvc1",
            "--type=merge",
            "-p",
            r#"{"spec":{"ports":[{"name":"iperf","port":5002,"protocol":"TCP","targetPort":5001}]}}"#,
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    wait("the change counted", &log_path, || {
        let n = value(&scrape().1, "ferry_service_programming_seconds_count")?;
        (n > programmed).then_some(())
    });

    // The API server's /metrics: the admin through kubectl, not the agent.
    let out = kubectl(&kubeconfig, &["get", "--raw", "/metrics"], None);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        value(
            &text,
            "ferry_apiserver_requests_total{verb=\"patch\",resource=\"yusurservices\",code=\"200\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(value(&text, "ferry_store_fsync_seconds_count").is_some_and(|n| n >= 1.0));
    assert!(
        value(
            &text,
            "ferry_apiserver_watchers{resource=\"yusurservices\"}"
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert!(value(&text, "ferry_apiserver_cache_objects").is_some_and(|n| n >= 3.0));
    let out = kubectl(
        &data.join("kubeconfig-agent"),
        &["get", "--raw", "/metrics"],
        None,
    );
    assert!(!out.status.success(), "the agent may not read /metrics");

    // The page: static without a session, its API proxy only with one.
    let (code, page) = curl(&[&format!("http://{metrics}/ui/")]);
    assert_eq!(code, 200);
    assert!(page.contains("<title>Ferry</title>"));
    let api = format!("http://{metrics}/ui/api/apis/iaas.yusur.io/v1/yusurservices");
    assert_eq!(curl(&[&api]).0, 401);
    let session = format!("http://{metrics}/ui/session");
    assert_eq!(curl(&["-d", "wrong", &session]).0, 401);
    let (code, signed) = curl(&["-d", &admin, &session]);
    assert_eq!(code, 204, "{signed}");
    assert!(signed.contains("HttpOnly; SameSite=Strict"), "{signed}");
    let cookie = format!("Cookie: ferry_ui={admin}");
    let (code, list) = curl(&["-H", &cookie, &api]);
    assert_eq!(code, 200);
    assert!(list.contains("\"name\":\"ysvc1\""), "{list}");
    assert_eq!(
        curl(&["-H", &cookie, &format!("http://{metrics}/ui/api/metrics")]).0,
        404
    );
    // The agent's token signs in too, and the proxy then reads only what the agent may.
    let agent = tokens["agent"].as_str().expect("agent token");
    let (code, secrets) = curl(&[
        "-H",
        &format!("Cookie: ferry_ui={agent}"),
        &format!("http://{metrics}/ui/api/api/v1/secrets"),
    ]);
    assert_eq!(code, 403, "{secrets}");
}
