//! A stack with [`OvnOptions::tls`]: NB and SB on `pssl:` with a PKI made by `ovs-pki`,
//! `ovn-northd` connected to both over TLS (a switch written over `ssl:` reaches the SB),
//! and a client without a certificate from that CA turned away.

use std::process::Command;

use ferry_ovn_stack::{OvnOptions, OvnStack, OvsPki};
use ferry_testkit::ovn::StackDir;

/// `ovn-nbctl`/`ovn-sbctl` over `ssl:` with a key, certificate and CA.
fn ctl_ssl(
    program: &str,
    remote: &str,
    key: &std::path::Path,
    cert: &std::path::Path,
    ca: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    Command::new(program)
        .arg(format!("--db={remote}"))
        .arg(format!("--private-key={}", key.display()))
        .arg(format!("--certificate={}", cert.display()))
        .arg(format!("--ca-cert={}", ca.display()))
        .arg("--timeout=10")
        .args(args)
        .output()
        .expect("run ovn ctl")
}

#[test]
#[ignore = "needs OVN binaries"]
fn central_stack_with_tls_serves_pssl_and_northd_translates_over_it() -> anyhow::Result<()> {
    let lab = StackDir::new("tls")?;
    let stack = OvnStack::start(
        lab.path(),
        OvnOptions {
            tls: true,
            ..OvnOptions::central()
        },
    )?;
    let tls = stack.tls().expect("tls stack").clone();
    assert_eq!(stack.nb_remote(), format!("ssl:127.0.0.1:{}", tls.nb_port));
    assert!(stack.sb_remote().starts_with("ssl:127.0.0.1:"));
    // ovn-northd was given the ssl: remotes.
    let northd = std::fs::read_to_string(format!(
        "/proc/{}/cmdline",
        stack.pid(ferry_ovn_stack::Daemon::Northd).expect("northd")
    ))?;
    assert!(northd.contains(&stack.nb_remote()) && northd.contains(&stack.sb_remote()));

    let c = &tls.client;
    let out = ctl_ssl(
        "ovn-nbctl",
        &stack.nb_remote(),
        &c.private_key,
        &c.certificate,
        &tls.pki.ca_cert,
        &["--wait=sb", "ls-add", "over-tls"],
    );
    assert!(out.status.success(), "nbctl over ssl: {out:?}");
    let out = ctl_ssl(
        "ovn-sbctl",
        &stack.sb_remote(),
        &c.private_key,
        &c.certificate,
        &tls.pki.ca_cert,
        &[
            "--bare",
            "--columns=external_ids",
            "list",
            "Datapath_Binding",
        ],
    );
    let dp = String::from_utf8_lossy(&out.stdout);
    assert!(
        dp.contains("name=over-tls"),
        "SB datapaths over ssl: {out:?}"
    );

    // A client whose certificate another CA signed gets nothing.
    let other_dir = tempfile::tempdir()?;
    let other = OvsPki::open_or_init(other_dir.path())?;
    let stranger = other.issue("stranger")?;
    let out = ctl_ssl(
        "ovn-nbctl",
        &stack.nb_remote(),
        &stranger.private_key,
        &stranger.certificate,
        &tls.pki.ca_cert,
        &["--timeout=3", "ls-list"],
    );
    assert!(!out.status.success(), "a stranger was served: {out:?}");
    stack.stop()?;
    Ok(())
}
