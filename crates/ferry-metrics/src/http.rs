//! The `/metrics` endpoint of a component's own listener (the controller's and the agent's
//! `--metrics-listen`), optionally behind a bearer token, with room for extra routes (the
//! web page). The API server serves its families on its own port instead, behind its own
//! authentication.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::Component;

/// Errors starting the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("listening for metrics on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What one listener exposes.
#[derive(Debug, Clone)]
pub struct Exposition {
    /// Components `/metrics` shows, in order; each also has `/metrics/<name>`.
    pub components: Vec<Component>,
    /// A bearer token every request must carry (`None`: open, as Prometheus scrapes
    /// in-cluster pods).
    pub token: Option<String>,
}

/// A running endpoint; dropping it does not stop it (call [`Served::stop`]).
#[derive(Debug)]
pub struct Served {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    pub fn stop(self) {
        self.task.abort();
    }
}

/// The routes of `exposition`: `/metrics` and `/metrics/{apiserver,controller,agent}`.
pub fn router(exposition: Exposition) -> Router {
    Router::new()
        .route("/metrics", get(all))
        .route("/metrics/{component}", get(one))
        .with_state(Arc::new(exposition))
}

/// Listens on `listen` and serves `exposition` plus `extra` routes.
pub async fn serve(
    listen: SocketAddr,
    exposition: Exposition,
    extra: Option<Router>,
) -> Result<Served, MetricsError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| MetricsError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| MetricsError::Listen {
            addr: listen,
            source,
        })?;
    let mut app = router(exposition);
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    tracing::info!(%addr, "metrics endpoint serving");
    Ok(Served { addr, task })
}

/// Whether the request carries the token (or none is needed).
pub fn authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(want) = token else { return true };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|got| constant_time_eq(got.trim().as_bytes(), want.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The exposition of `components` as an HTTP response.
pub fn response(components: &[Component]) -> Response {
    (
        [(header::CONTENT_TYPE, crate::CONTENT_TYPE)],
        crate::encode(components),
    )
        .into_response()
}

async fn all(State(e): State<Arc<Exposition>>, headers: HeaderMap) -> Response {
    if !authorized(e.token.as_deref(), &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    response(&e.components)
}

async fn one(
    State(e): State<Arc<Exposition>>,
    Path(component): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(e.token.as_deref(), &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let c = match component.as_str() {
        "apiserver" => Component::ApiServer,
        "controller" => Component::Controller,
        "agent" => Component::Agent,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    if !e.components.contains(&c) {
        return StatusCode::NOT_FOUND.into_response();
    }
    response(&[c])
}
