//! Prometheus metrics for the HTTP layer and the database pool, in the OpenMetrics text format.
//! Each app instance owns its registry (no process-global recorder), so tests can run many
//! apps in one process without sharing counters.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::app::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    backend: String,
    state: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct HttpMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    pool: Family<PoolLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~4 s: dashboard routes aim for single-digit milliseconds.
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

impl HttpMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("opsdeck");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let pool = Family::<PoolLabels, Gauge>::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            duration.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database pool connections by state",
            pool.clone(),
        );
        registry.register("build_info", "Build information; always 1", build);
        Self {
            registry,
            requests,
            duration,
            pool,
        }
    }

    /// Renders the registry after refreshing gauges that are read rather than counted.
    pub fn render(&self, state: &AppState) -> String {
        let (open, idle) = state.store.pool_stats();
        let backend = state.store.backend().as_str().to_string();
        for (name, value) in [
            ("open", open),
            ("idle", idle),
            ("in_use", open.saturating_sub(idle)),
        ] {
            self.pool
                .get_or_create(&PoolLabels {
                    backend: backend.clone(),
                    state: name.into(),
                })
                .set(i64::from(value));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware: counts and times every request under its route template (not its raw path, which
/// would let clients create unbounded label values).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let res = next.run(req).await;
    let m = &state.metrics;
    m.requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status: res.status().as_u16(),
        })
        .inc();
    m.duration
        .get_or_create(&RouteLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    res
}
