//! Ferry's controller programs an NB served on `ssl:` (a Subnet created through the API
//! becomes a logical switch): `ferry up --ovn-tls` (the OVN it starts serves NB and SB on
//! `pssl:` with an `ovs-pki` PKI), and `ferry up --ovn-nb ssl:… --ovn-ssl-key/-cert/-ca`
//! against an NB of its own.

mod common;
use common::{create_subnet_and_list_switches, ferry_up_logged as ferry_up, nb_switches, wait};

use std::path::Path;

use ferry_testkit::ovsdb::NbServer;

/// The `ssl:` remote the controller logged its NB connection to.
fn connected_remote(log_path: &Path) -> String {
    wait("controller connected over ssl:", log_path, || {
        let text = std::fs::read_to_string(log_path).ok()?;
        let line = text
            .lines()
            .find(|l| l.contains("OVSDB connected") && l.contains("ssl:127.0.0.1:"))?;
        let at = line.find("ssl:127.0.0.1:")?;
        Some(
            line[at..]
                .split(|c: char| c.is_whitespace() || c == '\u{1b}')
                .next()?
                .to_owned(),
        )
    })
}

#[test]
#[ignore = "needs root and OVN"]
fn ferry_up_with_ovn_tls_programs_the_nb_over_ssl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let log_path = dir.path().join("up.log");
    let chassis = format!("tls{}", std::process::id());
    let _up = ferry_up(dir.path(), &["--ovn-tls", "--gateway-chassis", &chassis]);

    // The controller's NB connection is the ssl: remote.
    let remote = connected_remote(&log_path);
    let nb_sock = data.join("ovn/run/nb.sock");
    let ovn_northd = std::fs::read_to_string(data.join("ovn/run/ovn-northd.pid"))
        .ok()
        .and_then(|p| std::fs::read_to_string(format!("/proc/{}/cmdline", p.trim())).ok())
        .unwrap_or_default();
    assert!(
        ovn_northd.contains(&format!("--ovnnb-db={remote}")),
        "northd uses the NB's ssl: remote {remote}: {ovn_northd:?}"
    );
    assert!(data.join("ovn/pki/ferry-privkey.pem").exists());

    // A Subnet created through the API reaches the NB, written over ssl:.
    let nb_db = format!("unix:{}", nb_sock.display());
    let switches = create_subnet_and_list_switches(&data, &log_path, || nb_switches(&nb_db));
    assert!(switches.contains("ovn-default"), "{switches}");
}

#[test]
#[ignore = "needs OVN binaries"]
fn ferry_up_with_an_ssl_nb_and_the_ovn_ssl_flags_programs_it() {
    let server = NbServer::standalone_tls();
    let pki = server.pki.clone().expect("tls server");
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("up.log");
    let (key, cert, ca) = (
        pki.client.private_key.display().to_string(),
        pki.client.certificate.display().to_string(),
        pki.pki.ca_cert.display().to_string(),
    );
    let _up = ferry_up(
        dir.path(),
        &[
            "--ovn-nb",
            &server.ssl_remote(),
            "--ovn-ssl-key",
            &key,
            "--ovn-ssl-cert",
            &cert,
            "--ovn-ssl-ca",
            &ca,
        ],
    );
    assert_eq!(connected_remote(&log_path), server.ssl_remote());
    let switches = create_subnet_and_list_switches(&dir.path().join("data"), &log_path, || {
        server.nbctl(&["ls-list"])
    });
    assert!(switches.contains("ovn-default"), "{switches}");
}
