use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::*;

/// The line of `text` that starts with `series ` (a series and its value).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn controller_families_are_exposed_with_units_and_totals() {
    let before = value(
        &encode(&[Component::Controller]),
        "ferry_service_programming_seconds_count",
    )
    .unwrap_or(0.0);
    let t = Instant::now() - Duration::from_millis(20);
    controller().nb_committed(Some(t), Some(t));
    controller().set_nb_rows([("Load_Balancer", 3), ("Logical_Switch", 2)]);
    controller().probes_from(|| vec![("Healthy".into(), 4), ("Unhealthy".into(), 1)]);
    controller().pass(false, Duration::from_millis(3));
    let text = encode(&[Component::Controller]);
    assert_eq!(
        value(&text, "ferry_service_programming_seconds_count"),
        Some(before + 1.0),
        "{text}"
    );
    assert!(value(&text, "ferry_endpoint_flip_seconds_sum").is_some_and(|s| s >= 0.02));
    assert_eq!(
        value(&text, "ferry_nb_rows{table=\"Load_Balancer\"}"),
        Some(3.0)
    );
    assert_eq!(value(&text, "ferry_probes{phase=\"Healthy\"}"), Some(4.0));
    assert_eq!(value(&text, "ferry_probes{phase=\"Unhealthy\"}"), Some(1.0));
    assert!(text.contains("# TYPE ferry_nb_transaction_seconds histogram"));
    assert!(
        text.contains("ferry_controller_pass_seconds_bucket{le=\"0.004\",kind=\"incremental\"}")
            || text.contains(
                "ferry_controller_pass_seconds_bucket{kind=\"incremental\",le=\"0.004\"}"
            ),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
    // The controller's endpoint shows only the controller.
    assert!(!text.contains("ferry_apiserver_"));
}

#[test]
fn agent_counts_probe_results_by_type_and_result() {
    agent().probe_result("UDP", true, Duration::from_millis(2));
    agent().probe_result("UDP", false, Duration::from_millis(1000));
    agent().node_state("node-t", 7, 3);
    let text = encode(&[Component::Agent]);
    assert_eq!(
        value(
            &text,
            "ferry_probe_results_total{type=\"UDP\",result=\"success\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "ferry_probe_results_total{type=\"UDP\",result=\"failure\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "ferry_probe_latency_seconds_count{type=\"UDP\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "ferry_agent_plumbed_ports{node=\"node-t\"}"),
        Some(7.0)
    );
    assert_eq!(
        value(&text, "ferry_agent_probes_running{node=\"node-t\"}"),
        Some(3.0)
    );
}

#[tokio::test]
async fn a_watch_counts_as_a_watcher_until_its_body_is_dropped() {
    let path = "/apis/test.example/v1/namespaces/a/widgets";
    let watchers = || {
        value(
            &encode(&[Component::ApiServer]),
            "ferry_apiserver_watchers{resource=\"widgets\"}",
        )
    };
    let timer = apiserver().request("GET", path, true);
    let resp = timer.finish(axum::response::Response::new(axum::body::Body::from("x")));
    assert_eq!(watchers(), Some(1.0));
    drop(resp);
    assert_eq!(watchers(), Some(0.0));
    // A list is timed and counted by code; a 429 is counted as throttled.
    let throttled = value(
        &encode(&[Component::ApiServer]),
        "ferry_apiserver_throttled_requests_total",
    )
    .unwrap_or(0.0);
    let mut r = axum::response::Response::new(axum::body::Body::empty());
    *r.status_mut() = axum::http::StatusCode::TOO_MANY_REQUESTS;
    let _ = apiserver().request("GET", path, false).finish(r);
    let text = encode(&[Component::ApiServer]);
    assert_eq!(
        value(
            &text,
            "ferry_apiserver_requests_total{verb=\"list\",resource=\"widgets\",code=\"429\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "ferry_apiserver_throttled_requests_total"),
        Some(throttled + 1.0)
    );
    assert_eq!(
        value(
            &text,
            "ferry_apiserver_request_duration_seconds_count{verb=\"list\",resource=\"widgets\"}"
        ),
        Some(1.0)
    );
    store().committed(5, Duration::from_millis(3), Duration::from_millis(2));
    let text = encode(&[Component::ApiServer]);
    assert!(value(&text, "ferry_store_fsync_seconds_count").is_some_and(|c| c >= 1.0));
    assert!(value(&text, "ferry_store_batch_writes_sum").is_some_and(|s| s >= 5.0));
}

fn http_get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_wants_its_token_and_serves_each_component() {
    let served = http::serve(
        "127.0.0.1:0".parse().expect("addr"),
        http::Exposition {
            components: vec![Component::Controller, Component::Agent],
            token: Some("s3cret".into()),
        },
        None,
    )
    .await
    .expect("serve");
    agent().probe_result("ICMP", true, Duration::from_millis(1));
    let addr = served.addr;
    let (no_token, with_token, agent_only, apiserver) = tokio::task::spawn_blocking(move || {
        (
            http_get(addr, "/metrics", None).0,
            http_get(addr, "/metrics", Some("s3cret")),
            http_get(addr, "/metrics/agent", Some("s3cret")),
            http_get(addr, "/metrics/apiserver", Some("s3cret")).0,
        )
    })
    .await
    .expect("client");
    assert_eq!(no_token, 401);
    assert_eq!(with_token.0, 200);
    assert!(
        with_token
            .1
            .contains("# TYPE ferry_service_programming_seconds histogram")
    );
    assert!(
        with_token
            .1
            .contains("ferry_probe_results_total{type=\"ICMP\",result=\"success\"}")
    );
    assert!(with_token.1.contains("application/openmetrics-text"));
    assert_eq!(agent_only.0, 200);
    assert!(!agent_only.1.contains("ferry_nb_rows"));
    assert_eq!(apiserver, 404, "not a component of this listener");
    served.stop();
}
