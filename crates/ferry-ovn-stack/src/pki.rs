//! OVN's PKI made the way an operator makes it: `ovs-pki` (package `openvswitch-common`)
//! in a directory, one CA (`switchca`), and key/certificate pairs signed by it for the
//! database servers and for each client. Everything is PEM, as ovsdb-server's and
//! ovn-controller's `--private-key`, `--certificate` and `--ca-cert` take it.
//!
//! One CA signs both sides: ovsdb-server's `--ca-cert` checks clients and the clients'
//! `--ca-cert` checks the server, so with one CA the same file serves both.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::process::run_ok;

/// A PKI directory made by `ovs-pki init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsPki {
    /// Where `ovs-pki` keeps its CAs (`DIR/pki`) and where issued pairs are written.
    pub dir: PathBuf,
    /// The CA certificate every pair here is signed by (`DIR/pki/switchca/cacert.pem`).
    pub ca_cert: PathBuf,
}

/// A private key and its certificate, as `ovs-pki req+sign NAME` leaves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// `DIR/NAME-privkey.pem` (PKCS#8, mode 0600).
    pub private_key: PathBuf,
    /// `DIR/NAME-cert.pem`.
    pub certificate: PathBuf,
}

impl OvsPki {
    /// Opens the PKI under `dir`, creating it (`ovs-pki init`) if it is not there yet.
    pub fn open_or_init(dir: &Path) -> Result<OvsPki> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let pki = OvsPki {
            dir: dir.to_owned(),
            ca_cert: dir.join("pki").join("switchca").join("cacert.pem"),
        };
        if !pki.ca_cert.exists() {
            pki.ovs_pki(&["init"])?;
        }
        Ok(pki)
    }

    /// The pair for `name`, issued (`ovs-pki req+sign NAME switch`) unless it already
    /// exists. `name` becomes the certificate's CN (`NAME id:UUID`); no host name is
    /// written into it, and OVS's clients check none.
    pub fn issue(&self, name: &str) -> Result<CertPair> {
        let pair = CertPair {
            private_key: self.dir.join(format!("{name}-privkey.pem")),
            certificate: self.dir.join(format!("{name}-cert.pem")),
        };
        if !(pair.private_key.exists() && pair.certificate.exists()) {
            // ovs-pki refuses to overwrite a half-made pair.
            for stale in [
                &pair.private_key,
                &pair.certificate,
                &self.dir.join(format!("{name}-req.pem")),
            ] {
                let _ = std::fs::remove_file(stale);
            }
            self.ovs_pki(&["req+sign", name, "switch"])?;
        }
        Ok(pair)
    }

    /// The ovsdb-server / ovn-northd / ovn-controller flags for `pair`.
    pub fn ssl_args(&self, pair: &CertPair) -> Vec<String> {
        vec![
            format!("--private-key={}", pair.private_key.display()),
            format!("--certificate={}", pair.certificate.display()),
            format!("--ca-cert={}", self.ca_cert.display()),
        ]
    }

    fn ovs_pki(&self, args: &[&str]) -> Result<String> {
        // Run in DIR: `req+sign` writes NAME-*.pem to the current directory.
        run_ok(
            Command::new("ovs-pki")
                .current_dir(&self.dir)
                .arg(format!("--dir={}", self.dir.join("pki").display()))
                .arg(format!("--log={}", self.dir.join("ovs-pki.log").display()))
                .arg("--force")
                .args(args),
        )
    }
}

/// The TLS side of a stack started with [`crate::OvnOptions::tls`]: its PKI under
/// `DIR/pki`, one pair per role, and the loopback ports NB and SB serve `pssl:` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackTls {
    pub pki: OvsPki,
    /// The NB and SB `ovsdb-server`s' pair.
    pub server: CertPair,
    /// `ovn-northd`'s pair (it reaches NB and SB over `ssl:`).
    pub northd: CertPair,
    /// `ovn-controller`'s pair (it reaches the SB over `ssl:`).
    pub controller: CertPair,
    /// The pair for Ferry's controller (and any other NB client).
    pub client: CertPair,
    /// `pssl:PORT:127.0.0.1` of the NB.
    pub nb_port: u16,
    /// `pssl:PORT:127.0.0.1` of the SB.
    pub sb_port: u16,
}

impl StackTls {
    /// Makes (or reuses) the PKI under `dir` and picks two free loopback ports.
    pub fn create(dir: &Path) -> Result<StackTls> {
        let pki = OvsPki::open_or_init(dir)?;
        Ok(StackTls {
            server: pki.issue("ovsdb-server")?,
            northd: pki.issue("ovn-northd")?,
            controller: pki.issue("ovn-controller")?,
            client: pki.issue("ferry")?,
            nb_port: free_port(dir)?,
            sb_port: free_port(dir)?,
            pki,
        })
    }

    /// `ssl:127.0.0.1:PORT` of the NB.
    pub fn nb_remote(&self) -> String {
        format!("ssl:127.0.0.1:{}", self.nb_port)
    }

    /// `ssl:127.0.0.1:PORT` of the SB.
    pub fn sb_remote(&self) -> String {
        format!("ssl:127.0.0.1:{}", self.sb_port)
    }
}

/// A loopback port nothing listens on now (the kernel's pick; the daemon binds it a
/// moment later).
fn free_port(dir: &Path) -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("pick a loopback port for", dir, e))
}
