//! The one seam to etcd: JSON over HTTP/1.1 (or HTTPS, `etcds://`) to its gRPC gateway, with
//! failover between the cluster's client endpoints.
//!
//! A request that never reached a member (connection refused or reset before sending) is
//! retried on the next endpoint; so is a read that failed in any way. A write whose fate is
//! unknown (the connection broke after it was sent, or etcd answered Unavailable, as when its
//! leader changed) is reported as [`StoreError::Unavailable`] and not retried: it may have
//! been applied, and only the caller can tell whether repeating it is safe.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::{EtcdTls, wire};
use crate::{Result, StoreError};

/// How long one request may take before the next endpoint is tried (reads) or the write is
/// reported unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// gRPC code Unavailable: no leader, leader changed, member stopping.
const GRPC_UNAVAILABLE: u64 = 14;

/// Whether a request may be sent again after an unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, and writes whose repetition is harmless.
    Safe,
    /// Writes: retried only when they certainly never reached a member.
    OnlyIfUnsent,
}

pub(crate) struct Conn {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `http` or `https`.
    scheme: &'static str,
    /// `host:port` of each member's client URL.
    endpoints: Vec<String>,
    /// Index of the endpoint in use; moved on when it fails.
    current: AtomicUsize,
}

impl Conn {
    /// A connection pool to `endpoints`, over HTTPS when `tls` is given (its files are read
    /// here: a missing or unreadable file fails the connect, not the first request).
    pub(crate) fn new(endpoints: Vec<String>, tls: Option<&EtcdTls>) -> Result<Conn> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        connector.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let (connector, scheme) = match tls {
            Some(t) => (
                builder
                    .with_tls_config(client_config(t)?)
                    .https_only()
                    .enable_http1()
                    .wrap_connector(connector),
                "https",
            ),
            // Never used for https (the scheme is http), but the type is one.
            None => (
                builder
                    .with_tls_config(plain_config()?)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(connector),
                "http",
            ),
        };
        Ok(Conn {
            http: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            scheme,
            endpoints,
            current: AtomicUsize::new(0),
        })
    }

    /// Moves on from endpoint `failed` (unless another caller already did).
    fn fail_over(&self, failed: usize) {
        let next = (failed + 1) % self.endpoints.len().max(1);
        let _ = self
            .current
            .compare_exchange(failed, next, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Sends `body` to `path` and returns the parsed answer, or etcd's error.
    pub(crate) async fn call(
        &self,
        op: &'static str,
        path: &str,
        body: &Value,
        retry: Retry,
    ) -> Result<Value> {
        let attempts = self.endpoints.len() * 2;
        let mut last = String::from("no endpoint");
        for attempt in 0..attempts {
            let idx = self.current.load(Ordering::SeqCst) % self.endpoints.len().max(1);
            let outcome =
                tokio::time::timeout(REQUEST_TIMEOUT, self.send(idx, path, body.to_string())).await;
            let (unsent, message) = match outcome {
                Err(_) => (false, format!("{}: timed out", self.endpoints[idx])),
                Ok(Err(e)) => (
                    e.is_connect(),
                    format!("{}: {}", self.endpoints[idx], chain(&e)),
                ),
                Ok(Ok((status, bytes))) => {
                    let answer: Value =
                        serde_json::from_slice(&bytes).map_err(|_| StoreError::Etcd {
                            op,
                            message: format!(
                                "{}: HTTP {status}: not JSON: {}",
                                self.endpoints[idx],
                                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                            ),
                        })?;
                    if status.is_success() {
                        return Ok(answer);
                    }
                    let (code, message) = wire::error_of(&answer);
                    if code != GRPC_UNAVAILABLE {
                        return Err(StoreError::Etcd { op, message });
                    }
                    (false, format!("{}: {message}", self.endpoints[idx]))
                }
            };
            last = message;
            self.fail_over(idx);
            if !unsent && retry == Retry::OnlyIfUnsent {
                break;
            }
            if attempt + 1 >= self.endpoints.len() {
                // Every member tried once: give an election time before the second round.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Err(StoreError::Unavailable { op, message: last })
    }

    async fn send(
        &self,
        idx: usize,
        path: &str,
        body: String,
    ) -> std::result::Result<(hyper::StatusCode, Bytes), hyper_util::client::legacy::Error> {
        let resp = self.request(idx, path, body).await?;
        let status = resp.status();
        // A body cut short is a broken connection after sending: not a connect error.
        let bytes = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        Ok((status, bytes))
    }

    fn request(
        &self,
        idx: usize,
        path: &str,
        body: String,
    ) -> hyper_util::client::legacy::ResponseFuture {
        // Endpoints are checked to be host:port when the store URL is parsed, so building the
        // request does not fail; should it, the empty request fails as a request would.
        let req = hyper::Request::post(format!("{}://{}{path}", self.scheme, self.endpoints[idx]))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| hyper::Request::new(Full::new(Bytes::new())));
        self.http.request(req)
    }

    /// Opens a streaming request (the watch), failing over between endpoints until one
    /// answers 200.
    pub(crate) async fn stream(&self, path: &str, body: &Value) -> Result<Incoming> {
        let mut last = String::from("no endpoint");
        for _ in 0..self.endpoints.len() {
            let idx = self.current.load(Ordering::SeqCst) % self.endpoints.len().max(1);
            let fut = self.request(idx, path, body.to_string());
            match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(resp)) if resp.status().is_success() => return Ok(resp.into_body()),
                Ok(Ok(resp)) => last = format!("{}: HTTP {}", self.endpoints[idx], resp.status()),
                Ok(Err(e)) => last = format!("{}: {}", self.endpoints[idx], chain(&e)),
                Err(_) => last = format!("{}: timed out", self.endpoints[idx]),
            }
            self.fail_over(idx);
        }
        Err(StoreError::Unavailable {
            op: "watch",
            message: last,
        })
    }
}

/// An error and its causes (hyper's own message is only "client error (Connect)"; the TLS
/// alert or the refused connection is underneath).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

// === TLS ===

fn tls_err(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::BadLocation(format!("etcd TLS {what} {}: {e}", path.display()))
}

fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// rustls' client configuration for `tls`: the members' certificates must chain to the CA
/// and name the endpoint's host (webpki, as etcd's own clients check); the client
/// certificate is presented when given.
fn client_config(tls: &EtcdTls) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = |path: &std::path::Path, what: &str| -> Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| tls_err(what, path, e))?;
        if certs.is_empty() {
            return Err(tls_err(what, path, "no PEM CERTIFICATE block"));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(&tls.ca, "CA")? {
        roots.add(ca).map_err(|e| tls_err("CA", &tls.ca, e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", &tls.ca, e))?
        .with_root_certificates(roots);
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert, "client certificate")?;
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err("client key", key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| tls_err("client certificate and key", cert, e))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A configuration with no trust at all, for the plain-HTTP pool (whose requests are all
/// `http://`, so it is never used).
fn plain_config() -> Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::BadLocation(format!("TLS protocol versions: {e}")))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}
