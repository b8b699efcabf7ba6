//! Ferry's web page: a live drawing of the VPCs, routers, gateways, services and their
//! backends' health, a services table and a probes table, kept current from the API's
//! watch. The page (plain HTML/JS/SVG, [`PAGE`]) is embedded in the binary.
//!
//! Authentication is the API server's own: the page's data comes through a read-only
//! proxy (`/ui/api/...`, GET of `/api/...` and `/apis/...` only) that forwards each request
//! to the API server with the caller's bearer token, so whatever that token may not read,
//! the page cannot show. The token reaches the proxy in an `HttpOnly`, `SameSite=Strict`
//! cookie set by `POST /ui/session` after the API server accepted it; a one-time URL
//! `/ui/#token=...` (the fragment never leaves the browser) signs in and clears itself.
//! This crate must not hold credentials of its own: it keeps the API server's address and
//! CA, never a token.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

/// The page, served at `/ui/`.
pub const PAGE: &str = include_str!("page.html");

/// The cookie that carries the signed-in token.
pub const COOKIE: &str = "ferry_ui";

/// Errors building the proxy's upstream.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("building the API client for the page's proxy: {0}")]
    Client(#[source] kube::Error),
}

/// The API server the proxy forwards to: its address and CA, no credentials.
#[derive(Clone)]
pub struct Upstream {
    client: kube::Client,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream")
    }
}

impl Upstream {
    /// From a client configuration (a kubeconfig or in-cluster), dropping its credentials:
    /// each request carries the signed-in user's token instead.
    pub fn new(mut config: kube::Config) -> Result<Upstream, UiError> {
        config.auth_info = Default::default();
        let client = kube::Client::try_from(config).map_err(UiError::Client)?;
        Ok(Upstream { client })
    }

    /// Sends `GET path_and_query` with `token`; the response as it came.
    async fn get(&self, path_and_query: &str, token: &str) -> Result<Response, StatusCode> {
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| StatusCode::UNAUTHORIZED)?;
        let req = Request::get(path_and_query)
            .header(header::AUTHORIZATION, auth)
            .header(header::ACCEPT, "application/json")
            .body(kube::client::Body::empty())
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        let resp = self.client.send(req).await.map_err(|e| {
            tracing::debug!(error = %e, "page proxy: API server unreachable");
            StatusCode::BAD_GATEWAY
        })?;
        let (parts, body) = resp.into_parts();
        let mut out = Response::new(Body::new(body));
        *out.status_mut() = parts.status;
        if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
            out.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        out.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(out)
    }

    /// Whether the API server accepts `token` (it may read discovery).
    async fn accepts(&self, token: &str) -> bool {
        matches!(self.get("/api", token).await, Ok(r) if r.status().is_success())
    }
}

/// The page's routes: `/ui/`, `/ui/session` and `/ui/api/{*path}`.
pub fn router(upstream: Upstream) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(page))
        .route(
            "/ui/session",
            get(session_check).post(sign_in).delete(sign_out),
        )
        .route("/ui/api/{*path}", get(proxy))
        .with_state(Arc::new(upstream))
}

/// The URL that opens the page signed in with `token` (`base` is `http://host:port`).
pub fn sign_in_url(base: &str, token: &str) -> String {
    format!("{}/ui/#token={token}", base.trim_end_matches('/'))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(PAGE),
    )
        .into_response()
}

/// The token in the request's cookie.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| token_shaped(v))
}

/// Tokens are printable ASCII without separators; anything else is refused before it
/// reaches a header or a cookie.
fn token_shaped(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 4096
        && t.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
}

async fn sign_in(State(up): State<Arc<Upstream>>, body: bytes::Bytes) -> Response {
    let token = String::from_utf8_lossy(&body).trim().to_string();
    if !token_shaped(&token) || !up.accepts(&token).await {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let cookie = format!("{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict");
    match HeaderValue::from_str(&cookie) {
        Ok(v) => (StatusCode::NO_CONTENT, [(header::SET_COOKIE, v)]).into_response(),
        Err(_) => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn sign_out() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            HeaderValue::from_static("ferry_ui=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
    )
        .into_response()
}

async fn session_check(State(up): State<Arc<Upstream>>, headers: HeaderMap) -> StatusCode {
    match cookie_token(&headers) {
        Some(t) if up.accepts(&t).await => StatusCode::NO_CONTENT,
        _ => StatusCode::UNAUTHORIZED,
    }
}

async fn proxy(
    State(up): State<Arc<Upstream>>,
    Path(path): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(token) = cookie_token(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Some(target) = upstream_target(&path, uri.query()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match up.get(&target, &token).await {
        Ok(r) => r,
        Err(code) => code.into_response(),
    }
}

/// The API path a proxied request goes to: only `api/...` and `apis/...`, no dot
/// segments; `None` for anything else.
pub fn upstream_target(path: &str, query: Option<&str>) -> Option<String> {
    let path = path.trim_start_matches('/');
    let ok_root = path == "api" || path.starts_with("api/") || path.starts_with("apis");
    let clean = path
        .split('/')
        .all(|s| s != ".." && s != "." && !s.contains('%'));
    if !ok_root || !clean {
        return None;
    }
    Some(match query {
        Some(q) if !q.is_empty() => format!("/{path}?{q}"),
        _ => format!("/{path}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_reaches_only_api_paths() {
        let cases = [
            (
                "list",
                "apis/iaas.yusur.io/v1/yusurservices",
                None,
                Some("/apis/iaas.yusur.io/v1/yusurservices"),
            ),
            (
                "watch",
                "api/v1/pods",
                Some("watch=1&resourceVersion=5"),
                Some("/api/v1/pods?watch=1&resourceVersion=5"),
            ),
            ("discovery", "api", None, Some("/api")),
            ("metrics", "metrics", None, None),
            ("escape", "apis/../metrics", None, None),
            ("encoded escape", "apis/%2e%2e/metrics", None, None),
            ("other root", "healthz", None, None),
        ];
        for (name, path, query, want) in cases {
            assert_eq!(upstream_target(path, query).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn only_token_shaped_cookies_are_used() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; ferry_ui=abc123; c=d"),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("abc123"));
        h.insert(header::COOKIE, HeaderValue::from_static("ferry_ui=a\"b"));
        assert_eq!(cookie_token(&h), None);
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }

    #[test]
    fn the_sign_in_url_keeps_the_token_in_the_fragment() {
        assert_eq!(
            sign_in_url("http://127.0.0.1:6444/", "tok"),
            "http://127.0.0.1:6444/ui/#token=tok"
        );
    }
}
