//! The data dir's PKI: a CA and a serving certificate (generated once, kept across
//! restarts) and the kubeconfigs that trust that CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::auth::{Tokens, write_private};

/// Errors preparing TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("reading or writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// PEM paths of the data dir's PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl Pki {
    /// Creates the CA and serving certificate unless present; the serving certificate names
    /// localhost, 127.0.0.1 and the listen address.
    pub fn ensure(dir: &Path, listen: SocketAddr) -> Result<Pki, TlsError> {
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir).map_err(io(&pki_dir))?;
        let pki = Pki {
            ca_cert: pki_dir.join("ca.crt"),
            server_cert: pki_dir.join("server.crt"),
            server_key: pki_dir.join("server.key"),
        };
        let ip = listen.ip().to_string();
        let sans_ok = std::fs::read_to_string(pki_dir.join("server.sans"))
            .is_ok_and(|s| s.lines().any(|l| l == ip));
        if pki.ca_cert.exists() && pki.server_cert.exists() && pki.server_key.exists() && sans_ok {
            return Ok(pki);
        }
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ferry-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        if !names.contains(&ip) && !listen.ip().is_unspecified() {
            names.push(ip.clone());
        }
        let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params
            .distinguished_name
            .push(DnType::CommonName, "ferry-apiserver");
        let server_cert = params.signed_by(&server_key, &issuer)?;

        std::fs::write(&pki.ca_cert, ca_cert.pem()).map_err(io(&pki.ca_cert))?;
        std::fs::write(&pki.server_cert, server_cert.pem()).map_err(io(&pki.server_cert))?;
        write_private(&pki.server_key, server_key.serialize_pem().as_bytes())
            .map_err(io(&pki.server_key))?;
        let sans = pki_dir.join("server.sans");
        std::fs::write(&sans, names.join("\n") + "\n").map_err(io(&sans))?;
        Ok(pki)
    }

    /// A rustls server configuration advertising HTTP/2 and HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.server_cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| TlsError::Load {
                path: self.server_cert.clone(),
                message: e.to_string(),
            })?;
        let key = PrivateKeyDer::from_pem_file(&self.server_key).map_err(|e| TlsError::Load {
            path: self.server_key.clone(),
            message: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Writes `DIR/kubeconfig` (admin), `DIR/kubeconfig-controller`, `DIR/kubeconfig-agent`
/// (the agent ServiceAccount) and `DIR/kubeconfig-embedded` (the embedded controllers).
pub fn write_kubeconfigs(
    dir: &Path,
    pki: &Pki,
    listen: SocketAddr,
    tokens: &Tokens,
) -> Result<(), TlsError> {
    for (file, user, token) in [
        ("kubeconfig", "admin", &tokens.admin),
        ("kubeconfig-controller", "controller", &tokens.controller),
        ("kubeconfig-agent", "agent", &tokens.agent),
        ("kubeconfig-embedded", "embedded", &tokens.embedded),
    ] {
        write_kubeconfig(&dir.join(file), pki, listen, user, token)?;
    }
    Ok(())
}

/// Writes one kubeconfig (mode 0600) for `token`, trusting the data dir's CA.
pub fn write_kubeconfig(
    path: &Path,
    pki: &Pki,
    listen: SocketAddr,
    user: &str,
    token: &str,
) -> Result<(), TlsError> {
    let ca = std::fs::read(&pki.ca_cert).map_err(io(&pki.ca_cert))?;
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(ca);
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        listen.ip().to_string()
    };
    let server = if host.contains(':') {
        format!("https://[{host}]:{}", listen.port())
    } else {
        format!("https://{host}:{}", listen.port())
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ferry\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_b64}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: ferry\n  context:\n    cluster: ferry\n    user: {user}\n    namespace: default\ncurrent-context: ferry\n"
    );
    write_private(path, text.as_bytes()).map_err(io(path))
}
