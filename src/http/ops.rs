//! Operational endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.
//! They answer without credentials so load balancers and scrapers need no key.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::app::AppState;
use crate::store::MIGRATION_COUNT;

pub fn router(openapi_json: String) -> Router<AppState> {
    let doc = Arc::new(openapi_json);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        doc.as_str().to_owned(),
                    )
                }
            }),
        )
}

/// The process is up and serving HTTP; says nothing about dependencies.
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// Ready for traffic: the database answers and every migration this binary knows is applied.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (ready, database, migrations) = match state.store.ping().await {
        Err(e) => (false, format!("unreachable: {e}"), "unknown".to_string()),
        Ok(()) => match state.store.applied_migrations().await {
            Ok(n) if n >= MIGRATION_COUNT => {
                (true, "ok".into(), format!("{n}/{MIGRATION_COUNT} applied"))
            }
            Ok(n) => (false, "ok".into(), format!("{n}/{MIGRATION_COUNT} applied")),
            Err(e) => (false, "ok".into(), format!("unknown: {e}")),
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "database": database,
            "backend": state.store.backend().as_str(),
            "migrations": migrations,
        })),
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state),
    )
}
