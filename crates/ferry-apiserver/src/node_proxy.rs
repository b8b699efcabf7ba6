//! `pods/log`, `pods/exec` and `pods/portforward`: proxied to the node agent that runs the
//! pod, as kube-apiserver proxies them to the kubelet's port 10250. The agent publishes
//! where it listens on its Node ([`ENDPOINT_ANNOTATION`], written by `ferry-agent`'s
//! streaming endpoint); the server presents that node's own API token there, so an agent
//! serves only the API server (and itself). Log bodies stream through (`follow=true`); an
//! upgraded connection (WebSocket or SPDY/3.1, whichever kubectl asked for) is spliced to
//! the agent's byte for byte, so the protocols live in one place, the agent.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::objects::Objects;
use crate::resources::Registry;
use crate::status::ApiError;

/// Annotation on a Node with the `host:port` of its agent's streaming endpoint (the name
/// `ferry-agent`'s `streaming::ENDPOINT_ANNOTATION` writes).
pub const ENDPOINT_ANNOTATION: &str = "agent.ferry.io/streaming-endpoint";

/// Pod subresources served by proxying to the node.
pub fn is_proxied(group: &str, plural: &str, sub: &str) -> bool {
    group.is_empty() && plural == "pods" && matches!(sub, "log" | "exec" | "portforward")
}

/// The RBAC verb of a proxied subresource: reading logs is `get`; exec and port-forward
/// are `create` whatever the method (kube-apiserver asks `create` of WebSocket GETs too).
pub fn verb(sub: &str) -> &'static str {
    if sub == "log" { "get" } else { "create" }
}

/// Headers of the client's request that travel to the agent.
const FORWARDED: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
/// Headers of the agent's answer that travel back.
const RETURNED: &[&str] = &[
    "content-type",
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// The container a request is for: the one named, or the pod's only one.
pub fn container_of(pod: &Value, asked: Option<&str>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    match asked.filter(|a| !a.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

/// The agent's path for a subresource request.
pub fn agent_path(sub: &str, ns: &str, pod: &str, container: &str, query: Option<&str>) -> String {
    let base = match sub {
        "log" => format!("/containerLogs/{ns}/{pod}/{container}"),
        "portforward" => format!("/portForward/{ns}/{pod}"),
        _ => format!("/exec/{ns}/{pod}/{container}"),
    };
    match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{base}?{q}"),
        None => base,
    }
}

/// Proxies `req` (for `sub` of pod `ns/name`) to the agent of the pod's node, presenting
/// `credential(node)`.
pub async fn proxy(
    objects: &Objects,
    registry: &Registry,
    ns: &str,
    name: &str,
    sub: &str,
    credential: impl Fn(&str) -> Option<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let pods = registry
        .get("", "v1", "pods")
        .cloned()
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let nodes = registry
        .get("", "v1", "nodes")
        .cloned()
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let (pod, _) = objects
        .current(&pods, Some(ns), name)
        .await?
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let node = pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?
        .to_string();
    let query: Vec<(String, String)> =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(req.uri())
            .map(|x| x.0)
            .unwrap_or_default();
    let asked = query
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.as_str());
    // Port forwarding is to the pod, not to one of its containers.
    let container = match sub {
        "portforward" => String::new(),
        _ => container_of(&pod, asked)?,
    };
    let (node_obj, _) = objects
        .current(&nodes, None, &node)
        .await?
        .ok_or_else(|| ApiError::not_found("", "nodes", &node))?;
    let endpoint = node_obj["metadata"]["annotations"][ENDPOINT_ANNOTATION]
        .as_str()
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "the agent of node {node} serves no logs, exec or port-forward (no {ENDPOINT_ANNOTATION} annotation on the Node)"
            ))
        })?
        .to_string();
    let token = credential(&node)
        .ok_or_else(|| ApiError::internal(format!("no credential for the agent of node {node}")))?;
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::internal(format!(
            "error dialing the agent of node {node} at {endpoint}: {e}"
        ))
    };
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(&endpoint),
    )
    .await
    .map_err(|e| unreachable(&e))?
    .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut upstream = hyper::Request::builder()
        .method(req.method().clone())
        .uri(agent_path(sub, ns, name, &container, req.uri().query()))
        .header(header::HOST, endpoint.as_str())
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    for h in FORWARDED {
        for v in req.headers().get_all(*h) {
            upstream = upstream.header(*h, v);
        }
    }
    let upstream = upstream
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(format!("building the agent request: {e}")))?;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = sender
        .send_request(upstream)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = resp.status();
    let mut out = Response::builder().status(status);
    for h in RETURNED {
        for v in resp.headers().get_all(*h) {
            out = out.header(*h, v);
        }
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let agent_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(agent)) = (client_upgrade.await, agent_upgrade.await) else {
                return;
            };
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(agent))
                    .await;
        });
        return out
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    if status.is_success() {
        return Ok(out
            .body(Body::new(resp.into_body()))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()));
    }
    // The agent's error as a Status kubectl prints.
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)])
        .trim()
        .to_string();
    Err(match status.as_u16() {
        400 | 403 => ApiError::bad_request(text),
        404 => ApiError {
            code: 404,
            reason: "NotFound",
            message: text,
            details: None,
            retry_after: None,
        },
        _ => ApiError::internal(format!(
            "the agent of node {node} answered {status}: {text}"
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_the_named_one_or_the_only_one() {
        let one = json!({"metadata": {"name": "web-1"}, "spec": {"containers": [{"name": "web"}]}});
        let two = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(container_of(&one, None).unwrap(), "web");
        assert_eq!(container_of(&two, Some("b")).unwrap(), "b");
        assert_eq!(
            container_of(&two, None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(
            container_of(&one, Some("x")).unwrap_err().message,
            "container x is not valid for pod web-1"
        );
    }

    #[test]
    fn subresources_map_to_the_agents_paths() {
        assert_eq!(
            agent_path(
                "log",
                "t1",
                "web-1",
                "web",
                Some("follow=true&container=web")
            ),
            "/containerLogs/t1/web-1/web?follow=true&container=web"
        );
        assert_eq!(
            agent_path(
                "exec",
                "t1",
                "web-1",
                "web",
                Some("command=hostname&stdout=true")
            ),
            "/exec/t1/web-1/web?command=hostname&stdout=true"
        );
        assert_eq!(
            agent_path("log", "d", "p", "c", None),
            "/containerLogs/d/p/c"
        );
        assert_eq!(
            agent_path("portforward", "d", "p", "", Some("ports=8080")),
            "/portForward/d/p?ports=8080"
        );
        assert!(is_proxied("", "pods", "exec") && !is_proxied("", "pods", "status"));
        assert_eq!(
            (verb("log"), verb("exec"), verb("portforward")),
            ("get", "create", "create")
        );
    }
}
