//! The lab agent's streaming endpoint, what the kubelet's port 10250 is to kube-apiserver:
//! container logs (`GET /containerLogs/NS/POD/CONTAINER`, `follow` streams), `exec`
//! (`/exec/NS/POD/CONTAINER?command=..`, upgraded to WebSocket or SPDY/3.1, see
//! [`remotecommand`]) and port forwarding (`/portForward/NS/POD`, see [`portforward`]) for the pods this agent runs. The API server proxies `pods/log` and
//! `pods/exec` here after its own authorization; this endpoint accepts only requests that
//! carry the agent's own API token (which only the agent and the API server that issued it
//! know), listens on its own address (`--streaming-listen`), and publishes that address on
//! its Node ([`ENDPOINT_ANNOTATION`]), so it works the same for agents inside `ferry up`
//! and for per-node `ferry agent --lab` processes.
//!
//! Modules: [`websocket`] and [`spdy`] are pure framing, [`exec`] runs the command,
//! [`remotecommand`] speaks the protocols; this file routes and reads logs.

pub mod exec;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod websocket;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::container_log::{self, LogOptions};
use crate::runtime::{ContainerSpec, RuntimeConfig, Sandbox};

/// Annotation on the Node with the `host:port` of its agent's streaming endpoint.
pub const ENDPOINT_ANNOTATION: &str = "agent.ferry.io/streaming-endpoint";

/// How the streaming endpoint runs.
#[derive(Debug, Clone)]
pub struct StreamingConfig {
    pub listen: SocketAddr,
    /// The agent's own API bearer token: the credential the API server presents.
    pub token: String,
}

/// One container as the endpoint sees it.
#[derive(Debug, Clone)]
pub struct ContainerEntry {
    pub spec: ContainerSpec,
    /// The current run (the restart count).
    pub run: i32,
    pub running: bool,
    pub dir: PathBuf,
}

/// One pod this agent runs.
#[derive(Debug, Clone)]
pub struct PodEntry {
    pub netns: String,
    pub containers: Vec<ContainerEntry>,
}

/// The pods this agent runs, by (namespace, name); the agent's loop keeps it current.
#[derive(Debug, Clone, Default)]
pub struct PodDirectory(Arc<RwLock<BTreeMap<(String, String), PodEntry>>>);

impl PodDirectory {
    /// Replaces the directory with the pods among `sandboxes`.
    pub fn update<'a>(&self, cfg: &RuntimeConfig, sandboxes: impl Iterator<Item = &'a Sandbox>) {
        let mut map = BTreeMap::new();
        for s in sandboxes {
            let Some((ns, name)) = s
                .workload
                .key
                .strip_prefix("pod/")
                .and_then(|r| r.split_once('/'))
            else {
                continue;
            };
            let containers = s
                .containers
                .iter()
                .zip(&s.workload.containers)
                .map(|(c, spec)| ContainerEntry {
                    spec: spec.clone(),
                    run: c.restarts,
                    running: c.running(),
                    dir: crate::runtime::work_dir(cfg, &s.workload, spec),
                })
                .collect();
            map.insert(
                (ns.to_string(), name.to_string()),
                PodEntry {
                    netns: s.workload.netns.clone(),
                    containers,
                },
            );
        }
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    fn netns(&self, ns: &str, pod: &str) -> Result<String, String> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(&(ns.to_string(), pod.to_string()))
            .map(|p| p.netns.clone())
            .ok_or_else(|| format!("pod {ns}/{pod} does not run on this node"))
    }

    fn container(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Result<(String, ContainerEntry), String> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        let p = map
            .get(&(ns.to_string(), pod.to_string()))
            .ok_or_else(|| format!("pod {ns}/{pod} does not run on this node"))?;
        let c = p
            .containers
            .iter()
            .find(|c| c.spec.name == container)
            .ok_or_else(|| format!("container {container:?} is not valid for pod {pod:?}"))?;
        Ok((p.netns.clone(), c.clone()))
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(http_body_util::Full::new(Bytes::from(msg.into())).boxed());
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Decodes a query string into its pairs (`+` is a space, `%XX` a byte).
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    match std::str::from_utf8(&b[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(kv), String::new()),
        })
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the endpoint until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    token: String,
    log_dir: PathBuf,
    pods: PodDirectory,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Arc::new((token, log_dir, pods));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared.0, &shared.1, &shared.2, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}

async fn handle(
    token: &str,
    log_dir: &std::path::Path,
    pods: &PodDirectory,
    req: Request<Incoming>,
) -> Response<Body> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if token.is_empty() || !constant_time_eq(presented.trim().as_bytes(), token.as_bytes()) {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let path = req.uri().path().to_string();
    let q = query_pairs(req.uri().query().unwrap_or_default());
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segs.as_slice()) {
        (&Method::GET, ["containerLogs", ns, pod, container]) => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            logs(log_dir, pods, &ns, &pod, &container, &q).await
        }
        (&Method::GET | &Method::POST, ["exec", ns, pod, container]) => {
            match pods.container(ns, pod, container) {
                Ok((netns, c)) => exec(req, &q, netns, pod, c),
                Err(m) => text(StatusCode::NOT_FOUND, m),
            }
        }
        (&Method::GET | &Method::POST, ["portForward", ns, pod]) => match pods.netns(ns, pod) {
            Ok(netns) => port_forward(req, netns, pod),
            Err(m) => text(StatusCode::NOT_FOUND, m),
        },
        _ => text(StatusCode::NOT_FOUND, format!("no such endpoint {path}")),
    }
}

fn flag(q: &[(String, String)], name: &str) -> bool {
    q.iter()
        .any(|(k, v)| k == name && matches!(v.as_str(), "1" | "true"))
}

fn value<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

// === impl exec ===

fn exec(
    mut req: Request<Incoming>,
    q: &[(String, String)],
    netns: String,
    pod: &str,
    c: ContainerEntry,
) -> Response<Body> {
    let argv: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if argv.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command",
        );
    }
    let tty = flag(q, "tty");
    let spec = exec::ExecSpec {
        netns,
        hostname: pod.to_string(),
        argv,
        env: c.spec.env.clone(),
        dir: c.dir.clone(),
        stdin: flag(q, "stdin"),
        stdout: flag(q, "stdout"),
        stderr: flag(q, "stderr") && !tty,
        tty,
    };
    if !(spec.stdin || spec.stdout || spec.stderr) {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    let headers = req.headers().clone();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, "");
    resp.headers_mut().remove(header::CONTENT_TYPE);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if upgrade == "websocket" {
        let Some(key) = headers
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
        else {
            return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        let Some(proto) = remotecommand::negotiate(
            &values("sec-websocket-protocol"),
            remotecommand::WEBSOCKET_PROTOCOLS,
        ) else {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "unable to upgrade: none of the offered subprotocols is supported ({})",
                    remotecommand::WEBSOCKET_PROTOCOLS.join(", ")
                ),
            );
        };
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&websocket::accept_key(key)) {
            h.insert("sec-websocket-accept", v);
        }
        h.insert("sec-websocket-protocol", HeaderValue::from_static(proto));
        tokio::spawn(async move {
            if let Ok(io) = on_upgrade.await {
                remotecommand::websocket(TokioIo::new(io), spec).await;
            }
        });
        return resp;
    }
    if upgrade.contains("spdy/3.1") {
        let Some(proto) = remotecommand::negotiate(
            &values("x-stream-protocol-version"),
            remotecommand::SPDY_PROTOCOLS,
        ) else {
            return text(
                StatusCode::FORBIDDEN,
                "unable to upgrade: unable to negotiate protocol: client supports none of v4.channel.k8s.io, v5.channel.k8s.io",
            );
        };
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert("x-stream-protocol-version", HeaderValue::from_static(proto));
        tokio::spawn(async move {
            if let Ok(io) = on_upgrade.await {
                remotecommand::spdy(TokioIo::new(io), spec).await;
            }
        });
        return resp;
    }
    text(
        StatusCode::BAD_REQUEST,
        "unable to upgrade: exec needs a WebSocket or SPDY/3.1 upgrade",
    )
}

// === impl port-forward ===

fn port_forward(mut req: Request<Incoming>, netns: String, pod: &str) -> Response<Body> {
    let headers = req.headers().clone();
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    };
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let path = crate::netns_admin::netns_path(&netns);
    let pod = pod.to_string();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, "");
    resp.headers_mut().remove(header::CONTENT_TYPE);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if upgrade == "websocket" {
        let (Some(key), Some(proto)) = (
            headers
                .get("sec-websocket-key")
                .and_then(|v| v.to_str().ok()),
            remotecommand::negotiate(
                &values("sec-websocket-protocol"),
                &[portforward::TUNNEL_PROTOCOL],
            ),
        ) else {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "unable to upgrade: port forwarding over WebSocket needs the {} subprotocol",
                    portforward::TUNNEL_PROTOCOL
                ),
            );
        };
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&websocket::accept_key(key)) {
            h.insert("sec-websocket-accept", v);
        }
        h.insert("sec-websocket-protocol", HeaderValue::from_static(proto));
        tokio::spawn(async move {
            if let Ok(io) = on_upgrade.await {
                let tunnel = portforward::websocket_tunnel(TokioIo::new(io));
                portforward::spdy_session(tunnel, path, pod).await;
            }
        });
        return resp;
    }
    if upgrade.contains("spdy/3.1")
        && remotecommand::negotiate(
            &values("x-stream-protocol-version"),
            &[portforward::PROTOCOL],
        )
        .is_some()
    {
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static(portforward::PROTOCOL),
        );
        tokio::spawn(async move {
            if let Ok(io) = on_upgrade.await {
                portforward::spdy_session(TokioIo::new(io), path, pod).await;
            }
        });
        return resp;
    }
    text(
        StatusCode::BAD_REQUEST,
        "unable to upgrade: port forwarding needs SPDY/3.1 with portforward.k8s.io",
    )
}

// === impl logs ===

/// The kubelet's `PodLogOptions` from the query.
fn log_options(q: &[(String, String)]) -> Result<LogOptions, String> {
    let num = |name: &str| -> Result<Option<i64>, String> {
        value(q, name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("{name}: {v:?} is not a number"))
            })
            .transpose()
    };
    let since = match (num("sinceSeconds")?, value(q, "sinceTime")) {
        (Some(s), _) => Some(
            jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_secs(s.max(0)))
                .map_err(|e| e.to_string())?,
        ),
        (None, Some(t)) => Some(
            t.parse::<jiff::Timestamp>()
                .map_err(|e| format!("sinceTime {t:?}: {e}"))?,
        ),
        _ => None,
    };
    Ok(LogOptions {
        tail: num("tailLines")?.filter(|t| *t >= 0).map(|t| t as usize),
        since,
        timestamps: flag(q, "timestamps"),
        limit_bytes: num("limitBytes")?.filter(|l| *l > 0).map(|l| l as usize),
    })
}

/// How often a followed log is read for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

async fn logs(
    log_dir: &std::path::Path,
    pods: &PodDirectory,
    ns: &str,
    pod: &str,
    container: &str,
    q: &[(String, String)],
) -> Response<Body> {
    let (netns, c) = match pods.container(ns, pod, container) {
        Ok(x) => x,
        Err(m) => return text(StatusCode::NOT_FOUND, m),
    };
    let opts = match log_options(q) {
        Ok(o) => o,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let previous = flag(q, "previous");
    let run = if previous { c.run - 1 } else { c.run };
    let path = container_log::run_path(log_dir, &netns, container, run);
    let text_now = match tokio::fs::read(&path).await {
        Ok(t) => t,
        Err(_) if previous => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container {container:?} in pod {pod:?} not found"),
            );
        }
        Err(_) => Vec::new(),
    };
    let (first, mut offset) = container_log::select(&text_now, &opts);
    if !flag(q, "follow") || previous {
        let mut r = text(StatusCode::OK, "");
        *r.body_mut() = http_body_util::Full::new(Bytes::from(first)).boxed();
        return r;
    }
    // Follow: what is there, then new lines until this run of the container ends.
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let pods = pods.clone();
    let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
    let since = opts.since;
    let timestamps = opts.timestamps;
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
            return;
        }
        loop {
            let still = pods
                .container(&ns, &pod, &container)
                .is_ok_and(|(_, c)| c.run == run && c.running);
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
            }
            let Ok(all) = tokio::fs::read(&path).await else {
                return;
            };
            // Rotated: the file starts again.
            if all.len() < offset {
                offset = 0;
            }
            if all.len() > offset {
                let rest = &all[offset..];
                let (out, used) = container_log::select(
                    rest,
                    &LogOptions {
                        since,
                        timestamps,
                        ..Default::default()
                    },
                );
                offset += used;
                if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                    return;
                }
            }
            if !still {
                return;
            }
        }
    });
    let body = StreamBody::new(tokio_stream_from(rx)).boxed();
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// A stream of the receiver's items.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests;
