//! `ssl:` remotes against a real ovsdb-server on `pssl:` with a PKI made by `ovs-pki`
//! (mutual TLS: the server requires our certificate): transact, the monitor keeping the
//! mirror current, reconnection after a server restart, and refusals that say why when
//! the CA does not match on either side.

use std::collections::BTreeSet;
use std::time::Duration;

use ferry_ovn_stack::OvsPki;
use ferry_ovsdb::nb::{self, logical_switch as ls};
use ferry_ovsdb::{Client, Config, Error, Mirror, Pem, TlsConfig, wire};
use ferry_testkit::ovsdb::{NbServer, TestPki};
use serde_json::json;

const DB: &str = nb::DATABASE;
const WAIT: Duration = Duration::from_secs(20);

fn client_tls(p: &TestPki) -> TlsConfig {
    TlsConfig::from_files(&p.client.private_key, &p.client.certificate, &p.pki.ca_cert)
}

fn names(m: &Mirror) -> BTreeSet<String> {
    m.table(ls::TABLE)
        .into_iter()
        .flat_map(|t| t.values())
        .map(|r| r[ls::NAME].as_str().unwrap_or("").to_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn transact_and_monitor_over_mutual_tls() {
    let server = NbServer::standalone_tls();
    let pki = server.pki.clone().expect("tls server");
    let c = Client::connect(nb::config([server.ssl_remote()]).with_tls(client_tls(&pki)))
        .await
        .expect("connect over TLS");
    assert_eq!(c.status().connected, Some(server.ssl_remote()));

    c.transact(
        DB,
        vec![wire::insert(
            ls::TABLE,
            wire::row([(ls::NAME, json!("over-tls"))]),
        )],
    )
    .await
    .expect("transact over TLS");
    assert_eq!(
        c.with_mirror(names),
        set(&["over-tls"]),
        "mirror after our write"
    );

    // A change made by someone else (ovn-nbctl over the unix socket) reaches the mirror
    // through the TLS monitor.
    server.nbctl(&["ls-add", "from-nbctl"]);
    c.wait_until(WAIT, |m| names(m).contains("from-nbctl"))
        .await
        .expect("monitor update over TLS");
    assert_eq!(
        server.nbctl(&[
            "--bare",
            "--columns=name",
            "find",
            "Logical_Switch",
            "name=over-tls"
        ]),
        "over-tls"
    );

    // The same material given as PEM bytes (a Kubernetes Secret) works the same.
    let read = |p: &std::path::Path| std::fs::read(p).expect("read pem");
    let bytes = TlsConfig {
        private_key: Pem::Bytes(read(&pki.client.private_key)),
        certificate: Pem::Bytes(read(&pki.client.certificate)),
        ca_cert: Pem::Bytes(read(&pki.pki.ca_cert)),
    };
    let c2 = Client::connect(nb::config([server.ssl_remote()]).with_tls(bytes))
        .await
        .expect("connect with PEM bytes");
    assert_eq!(c2.with_mirror(names), set(&["over-tls", "from-nbctl"]));
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn reconnects_over_tls_after_a_server_restart() {
    let mut server = NbServer::standalone_tls();
    let pki = server.pki.clone().expect("tls server");
    let mut config = nb::config([server.ssl_remote()]).with_tls(client_tls(&pki));
    config.backoff_min = Duration::from_millis(200);
    config.backoff_max = Duration::from_millis(500);
    config.request_timeout = WAIT;
    let c = Client::connect(config).await.expect("connect");
    server.nbctl(&["ls-add", "before"]);
    c.wait_until(WAIT, |m| names(m).contains("before"))
        .await
        .expect("before");

    server.kill();
    server.start();
    server.nbctl(&["ls-add", "while-away"]);
    c.wait_until(WAIT, |m| names(m) == set(&["before", "while-away"]))
        .await
        .unwrap_or_else(|e| panic!("mirror after restart: {e}; have {:?}", c.with_mirror(names)));
    // The request path works again over the new TLS session.
    c.transact(
        DB,
        vec![wire::insert(
            ls::TABLE,
            wire::row([(ls::NAME, json!("after"))]),
        )],
    )
    .await
    .expect("transact after restart");
    assert_eq!(
        c.with_mirror(names),
        set(&["before", "while-away", "after"])
    );
    assert!(c.status().connects >= 2, "{:?}", c.status());
}

/// Connects with a short timeout and returns the error `Client::connect` gives up with.
async fn refused(remote: String, tls: TlsConfig) -> Error {
    let mut config = Config::new([remote], DB).with_tls(tls);
    config.request_timeout = Duration::from_secs(3);
    Client::connect(config).await.expect_err("must be refused")
}

#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn a_server_not_signed_by_our_ca_is_refused_with_a_clear_error() {
    let server = NbServer::standalone_tls();
    let pki = server.pki.clone().expect("tls server");
    let other = tempfile::tempdir().expect("tempdir");
    let other = OvsPki::open_or_init(other.path()).expect("second ovs-pki");

    // Our CA is another PKI's: the server's certificate does not chain to it.
    let err = refused(
        server.ssl_remote(),
        TlsConfig::from_files(
            &pki.client.private_key,
            &pki.client.certificate,
            &other.ca_cert,
        ),
    )
    .await;
    let msg = err.to_string();
    eprintln!("wrong CA: {msg}");
    // Two ovs-pki CAs share their subject name, so rustls may find "our" CA as the issuer
    // by name and then fail on the signature: either way the chain is refused.
    assert!(
        msg.contains("TLS handshake")
            && (msg.contains("UnknownIssuer") || msg.contains("BadSignature")),
        "{msg}"
    );

    // Our certificate is signed by another CA: the server refuses it.
    let stranger = other.issue("stranger").expect("pair from the other CA");
    let err = refused(
        server.ssl_remote(),
        TlsConfig::from_files(
            &stranger.private_key,
            &stranger.certificate,
            &pki.pki.ca_cert,
        ),
    )
    .await;
    let msg = err.to_string();
    eprintln!("client cert from another CA: {msg}");
    assert!(msg.contains(&server.ssl_remote()), "{msg}");
    assert!(
        matches!(err, Error::NoUsableRemote { .. }) && msg.contains("fatal alert: UnknownCA"),
        "{msg}"
    );
    // Nothing was written by either attempt.
    assert_eq!(server.nbctl(&["ls-list"]), "");
}

#[tokio::test]
async fn missing_tls_files_fail_at_start_naming_the_file() {
    let err = Client::start(Config::new(["ssl:127.0.0.1:6641"], DB).with_tls(
        TlsConfig::from_files(
            "/nonexistent/ferry-key.pem",
            "/nonexistent/ferry-cert.pem",
            "/nonexistent/ca.pem",
        ),
    ))
    .expect_err("missing files");
    assert!(
        matches!(
            &err,
            Error::TlsMaterial {
                what: "private key",
                ..
            }
        ) && err.to_string().contains("/nonexistent/ferry-key.pem"),
        "{err}"
    );
}

/// Key and certificate files are read again at every connection attempt: a client started
/// with a pair the server refuses connects, without a restart, once the files hold a good
/// pair (a rotated certificate needs no restart either).
#[tokio::test]
#[ignore = "needs OVN binaries"]
async fn replaced_certificate_files_are_used_at_the_next_attempt() {
    let server = NbServer::standalone_tls();
    let pki = server.pki.clone().expect("tls server");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let stranger = OvsPki::open_or_init(other_dir.path())
        .and_then(|p| p.issue("stranger"))
        .expect("pair from another CA");
    let files = tempfile::tempdir().expect("tempdir");
    let key = files.path().join("key.pem");
    let cert = files.path().join("cert.pem");
    std::fs::copy(&stranger.private_key, &key).expect("copy key");
    std::fs::copy(&stranger.certificate, &cert).expect("copy cert");

    let mut config = nb::config([server.ssl_remote()]).with_tls(TlsConfig::from_files(
        &key,
        &cert,
        &pki.pki.ca_cert,
    ));
    config.backoff_min = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(300);
    config.request_timeout = WAIT;
    let c = Client::start(config).expect("start");
    // Refused while the files hold the stranger's pair.
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        let status = c.status();
        if status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("UnknownCA"))
        {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never refused: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.connected, None, "{status:?}");

    std::fs::copy(&pki.client.private_key, &key).expect("rotate key");
    std::fs::copy(&pki.client.certificate, &cert).expect("rotate cert");
    server.nbctl(&["ls-add", "after-rotation"]);
    c.wait_until(WAIT, |m| names(m).contains("after-rotation"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "not connected after the files changed: {e}; {:?}",
                c.status()
            )
        });
    assert_eq!(c.status().connected, Some(server.ssl_remote()));
}
