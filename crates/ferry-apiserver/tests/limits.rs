//! Flow control: one identity with a request in flight up to its cap gets 429 with
//! Retry-After on the next, other identities are unaffected, and the slot frees up when
//! the held request completes. Requests for one Lease (the Lease lane) are not counted. (A LIST before the watch cache is ready is tested in
//! `server.rs`, since `ApiServer::start` returns only once the cache is filled.)

mod common;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_per_identity_inflight_cap_get_429() {
    let ts = common::start(ferry_apiserver::Limits {
        max_inflight_per_identity: 1,
        ..Default::default()
    })
    .await;
    let admin = ts.tokens().admin.clone();
    let url = ts.url("/api/v1/namespaces/default/configmaps");

    // Hold one admin request in flight: a create whose body is still being uploaded
    // (chunked, from a pipe this test keeps open). The held request can lose the race to
    // one of the GETs below and get the 429 itself: it is then sent again.
    let (mut held, mut stdin) = hold_create(&url, &admin);
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        if held.try_wait().expect("curl status").is_some() {
            let code = output(&mut held);
            assert_eq!(
                code, "429",
                "the held create ended before its body was sent"
            );
            (held, stdin) = hold_create(&url, &admin);
        }
        let r = common::curl("GET", &url, Some(&admin), None);
        if r.code == 429 {
            break r;
        }
        assert_eq!(r.code, 200, "{}", r.body);
        assert!(Instant::now() < deadline, "the cap never applied");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refused.json()["reason"], "TooManyRequests");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ferry:admin"),
        "{}",
        refused.body
    );

    // The Lease lane is not counted: with the admin's slot still taken, its Lease is
    // created, read and renewed (leader election must not be refused because the same
    // identity's bulk writes fill its cap), while a bulk request is still refused.
    let leases = ts.url("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases");
    let lease = r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"held-leader"},"spec":{"holderIdentity":"a","leaseDurationSeconds":2}}"#;
    let r = common::curl("POST", &leases, Some(&admin), Some(lease));
    assert_eq!(r.code, 201, "{}", r.body);
    let r = common::curl("GET", &format!("{leases}/held-leader"), Some(&admin), None);
    assert_eq!(r.code, 200, "{}", r.body);
    let mut renewed = r.json();
    renewed["spec"]["holderIdentity"] = "b".into();
    let r = common::curl(
        "PUT",
        &format!("{leases}/held-leader"),
        Some(&admin),
        Some(&renewed.to_string()),
    );
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.json()["spec"]["holderIdentity"], "b");
    let r = common::curl("GET", &url, Some(&admin), None);
    assert_eq!(r.code, 429, "{}", r.body);

    // Another identity is not held back by the admin's requests.
    let r = common::curl("GET", &url, Some(&ts.tokens().embedded), None);
    assert_eq!(r.code, 200, "{}", r.body);

    // Completing the held request frees the slot.
    stdin
        .write_all(b"{\"name\":\"held\"},\"data\":{\"a\":\"b\"}}")
        .expect("rest of the body");
    drop(stdin);
    assert_eq!(output(&mut held), "201");
    let r = common::curl("GET", &format!("{url}/held"), Some(&admin), None);
    assert_eq!(r.code, 200, "{}", r.body);
    ts.stop().await;
}

/// Starts an admin create whose body is half sent; the rest is written to the returned pipe.
fn hold_create(url: &str, token: &str) -> (Child, ChildStdin) {
    let mut held = Command::new("curl")
        .args(["-sS", "-k", "--http1.1", "-X", "POST", "-T", "-"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json"])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning curl");
    let mut stdin = held.stdin.take().expect("piped stdin");
    stdin
        .write_all(b"{\"metadata\":")
        .expect("first half of the body");
    stdin.flush().expect("flush");
    (held, stdin)
}

/// The HTTP status a finished `hold_create` curl printed (it must have exited cleanly).
fn output(held: &mut Child) -> String {
    let mut code = String::new();
    held.stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut code)
        .expect("curl output");
    assert!(held.wait().expect("curl exit").success());
    code.trim().to_string()
}
