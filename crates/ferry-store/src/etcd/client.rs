//! The one seam to etcd: JSON over HTTP/1.1 to its gRPC gateway, with failover between the
//! cluster's client endpoints.
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
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::wire;
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
    http: Client<HttpConnector, Full<Bytes>>,
    /// `host:port` of each member's client URL.
    endpoints: Vec<String>,
    /// Index of the endpoint in use; moved on when it fails.
    current: AtomicUsize,
}

impl Conn {
    pub(crate) fn new(endpoints: Vec<String>) -> Conn {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        Conn {
            http: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            endpoints,
            current: AtomicUsize::new(0),
        }
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
                Ok(Err(e)) => (e.is_connect(), format!("{}: {e}", self.endpoints[idx])),
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
        let req = hyper::Request::post(format!("http://{}{path}", self.endpoints[idx]))
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
                Ok(Err(e)) => last = format!("{}: {e}", self.endpoints[idx]),
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
