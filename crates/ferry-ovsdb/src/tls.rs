//! TLS for `ssl:` remotes, with OVN's PKI: the private key, certificate and CA certificate
//! that `ovs-pki` makes (PEM files), or the same as PEM bytes (a Kubernetes Secret).
//!
//! Mutual TLS: ovsdb-server started with `--private-key/--certificate/--ca-cert` requires
//! a client certificate signed by its CA, so one is always presented.
//!
//! The server's certificate must chain to the configured CA; its *name* is not checked.
//! That is what Open vSwitch's own SSL client does (ovn-controller, ovn-nbctl): `ovs-pki`
//! certificates carry `CN=NAME id:UUID` and no subjectAltName, so no host name could ever
//! match. Trust comes from the private CA, which signs only OVN's own components.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};

/// One piece of PEM material: a file (read again at every connection, so a rotated
/// certificate is picked up on the next reconnect) or bytes held in memory.
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl fmt::Debug for Pem {
    /// Never prints the bytes: one of them is a private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(p) => write!(f, "File({})", p.display()),
            Pem::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
        }
    }
}

impl Pem {
    fn read(&self, what: &'static str) -> Result<Vec<u8>> {
        match self {
            Pem::Bytes(b) => Ok(b.clone()),
            Pem::File(p) => std::fs::read(p).map_err(|e| Error::TlsMaterial {
                what,
                reason: format!("reading {}: {e}", p.display()),
            }),
        }
    }
}

/// The TLS material for `ssl:` remotes: the same three files as ovsdb-server's and
/// ovn-controller's `--private-key`, `--certificate` and `--ca-cert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Our private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub private_key: Pem,
    /// Our certificate (PEM; further certificates in the file are sent as the chain).
    pub certificate: Pem,
    /// The CA certificate(s) the server's certificate must chain to (PEM).
    pub ca_cert: Pem,
}

impl TlsConfig {
    /// Material from three PEM files, as `ovs-pki` leaves them.
    pub fn from_files(
        private_key: impl Into<PathBuf>,
        certificate: impl Into<PathBuf>,
        ca_cert: impl Into<PathBuf>,
    ) -> TlsConfig {
        TlsConfig {
            private_key: Pem::File(private_key.into()),
            certificate: Pem::File(certificate.into()),
            ca_cert: Pem::File(ca_cert.into()),
        }
    }

    /// Reads and parses the material into a rustls client configuration (ring provider,
    /// TLS 1.2 and 1.3).
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let bad = |what: &'static str| {
            move |e: &dyn fmt::Display| Error::TlsMaterial {
                what,
                reason: e.to_string(),
            }
        };
        let key_pem = self.private_key.read("private key")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad("private key")(&e))?;
        let chain = certs(&self.certificate.read("certificate")?, "certificate")?;
        let mut roots = RootCertStore::empty();
        for ca in certs(&self.ca_cert.read("CA certificate")?, "CA certificate")? {
            roots.add(ca).map_err(|e| bad("CA certificate")(&e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| bad("CA certificate")(&e))?;
        let verifier = Arc::new(ChainOnly {
            webpki,
            provider: provider.clone(),
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("protocol versions")(&e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad("private key and certificate")(&e))?;
        Ok(Arc::new(config))
    }
}

fn certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::TlsMaterial {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::TlsMaterial {
            what,
            reason: "no PEM CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The name rustls is given for `host` (not checked, see the module doc, but rustls
/// needs one, and sends DNS names as SNI).
pub(crate) fn server_name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}

/// webpki's verification (chain to the CA, validity dates, key usage, signatures) minus
/// the host-name match, as Open vSwitch's SSL client does.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // webpki checks the name only after the chain, dates and usage passed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_material_names_what_is_wrong() {
        let cases = [
            (
                "missing key file",
                TlsConfig::from_files("/nonexistent/key.pem", "/x", "/y"),
                "private key",
            ),
            (
                "key bytes that are not PEM",
                TlsConfig {
                    private_key: Pem::Bytes(b"not pem".to_vec()),
                    certificate: Pem::Bytes(vec![]),
                    ca_cert: Pem::Bytes(vec![]),
                },
                "private key",
            ),
        ];
        for (name, config, want) in cases {
            let err = config.client_config().expect_err(name);
            assert!(
                matches!(&err, Error::TlsMaterial { what, .. } if *what == want),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let pem = Pem::Bytes(b"-----BEGIN PRIVATE KEY-----secret".to_vec());
        assert_eq!(format!("{pem:?}"), "Bytes(33 bytes)");
    }
}
