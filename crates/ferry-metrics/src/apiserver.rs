//! The API server's families: request duration and count by verb, resource and code,
//! requests in flight, open watches, throttled (429) requests, and the watch cache size.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use http_body_util::BodyExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::{enabled, labels};

/// Series of the request families beyond which new resources count as `other`.
const MAX_REQUEST_SERIES: usize = 4000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbResource {
    pub verb: &'static str,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbResourceCode {
    pub verb: &'static str,
    pub resource: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Resource {
    pub resource: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// See the module doc; one per process ([`crate::apiserver`]).
#[derive(Debug)]
pub struct ApiServerMetrics {
    pub(crate) registry: Registry,
    /// `ferry_apiserver_request_duration_seconds{verb,resource}` (watches excluded: they
    /// last as long as the client wants).
    pub request_duration_seconds: HistogramFamily<VerbResource>,
    /// `ferry_apiserver_requests_total{verb,resource,code}`.
    pub requests: Family<VerbResourceCode, Counter>,
    /// `ferry_apiserver_inflight_requests`: non-watch requests being served.
    pub inflight_requests: Gauge,
    /// `ferry_apiserver_watchers{resource}`: open watches.
    pub watchers: Family<Resource, Gauge>,
    /// `ferry_apiserver_throttled_requests_total`: requests answered 429 (in-flight cap).
    pub throttled_requests: Counter,
    /// `ferry_apiserver_cache_objects`: objects in the watch cache (set at each scrape).
    pub cache_objects: Gauge,
    /// `ferry_apiserver_cache_revision`: the newest revision the watch cache holds.
    pub cache_revision: Gauge,
    /// Request series created so far (a bound on label cardinality).
    request_series: AtomicUsize,
}

impl ApiServerMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry_apiserver");
        let m = ApiServerMetrics {
            registry: Registry::default(),
            request_duration_seconds: Family::new_with_constructor(crate::latency_buckets),
            requests: Family::default(),
            inflight_requests: Gauge::default(),
            watchers: Family::default(),
            throttled_requests: Counter::default(),
            cache_objects: Gauge::default(),
            cache_revision: Gauge::default(),
            request_series: AtomicUsize::new(0),
        };
        registry.register(
            "request_duration_seconds",
            "Time from a request's first byte to its response headers, by verb and resource (watches excluded)",
            m.request_duration_seconds.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by verb, resource and HTTP code",
            m.requests.clone(),
        );
        registry.register(
            "inflight_requests",
            "Non-watch requests being served",
            m.inflight_requests.clone(),
        );
        registry.register("watchers", "Open watches by resource", m.watchers.clone());
        registry.register(
            "throttled_requests",
            "Requests refused with 429 because their identity had too many in flight",
            m.throttled_requests.clone(),
        );
        registry.register(
            "cache_objects",
            "Objects held by the watch cache",
            m.cache_objects.clone(),
        );
        registry.register(
            "cache_revision",
            "Newest store revision the watch cache holds",
            m.cache_revision.clone(),
        );
        ApiServerMetrics { registry, ..m }
    }

    /// Starts timing one request; call [`RequestTimer::finish`] with its response.
    pub fn request(&'static self, method: &str, path: &str, is_watch: bool) -> RequestTimer {
        let on = enabled();
        if on && !is_watch {
            self.inflight_requests.inc();
        }
        RequestTimer {
            metrics: self,
            started: Instant::now(),
            // Nothing is kept (or allocated) when recording is off.
            method: if on {
                method.to_string()
            } else {
                String::new()
            },
            path: if on { path.to_string() } else { String::new() },
            is_watch,
            counted_inflight: on && !is_watch,
        }
    }

    /// Sets the cache gauges (the API server calls it before each exposition).
    pub fn set_cache(&self, objects: usize, revision: u64) {
        self.cache_objects.set(objects as i64);
        self.cache_revision.set(revision as i64);
    }
}

/// One request being timed; it leaves the in-flight gauge when dropped.
#[derive(Debug)]
pub struct RequestTimer {
    metrics: &'static ApiServerMetrics,
    started: Instant,
    method: String,
    path: String,
    is_watch: bool,
    counted_inflight: bool,
}

impl RequestTimer {
    /// Records the response (code, duration; an open watch until its body ends) and
    /// returns it, its body wrapped for a watch.
    pub fn finish(self, resp: Response) -> Response {
        if !enabled() {
            return resp;
        }
        let m = self.metrics;
        let code = resp.status().as_u16();
        let (verb, mut resource) = labels::request_labels(&self.method, &self.path, self.is_watch);
        let key = VerbResourceCode {
            verb,
            resource: resource.clone(),
            code,
        };
        if m.requests.get(&key).is_none()
            && m.request_series.fetch_add(1, Ordering::Relaxed) >= MAX_REQUEST_SERIES
        {
            resource = "other".to_string();
        }
        if code == 429 {
            m.throttled_requests.inc();
        }
        if !self.is_watch {
            m.request_duration_seconds
                .get_or_create(&VerbResource {
                    verb,
                    resource: resource.clone(),
                })
                .observe(self.started.elapsed().as_secs_f64());
        }
        let watching = self.is_watch && resp.status().is_success();
        m.requests
            .get_or_create(&VerbResourceCode {
                verb,
                resource: resource.clone(),
                code,
            })
            .inc();
        if !watching {
            return resp;
        }
        let gauge = m.watchers.get_or_create_owned(&Resource { resource });
        gauge.inc();
        let guard = WatchGuard(gauge);
        let (parts, body) = resp.into_parts();
        let body = body.map_frame(move |f| {
            let _ = &guard;
            f
        });
        Response::from_parts(parts, Body::new(body))
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        if self.counted_inflight {
            self.metrics.inflight_requests.dec();
        }
    }
}

/// Holds one open watch in the `watchers` gauge until the response body is dropped.
struct WatchGuard(Gauge);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
