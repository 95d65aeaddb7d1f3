//! Operational endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.
//! They answer without credentials so load balancers and scrapers need no key.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::http::RequestId;
use crate::store::MIGRATION_COUNT;

/// The JSON probes, documented in the OpenAPI document like every other JSON route.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Text endpoints (metrics, the OpenAPI document itself).
pub fn router(openapi_json: String) -> Router<AppState> {
    let doc = Arc::new(openapi_json);
    Router::new().route("/metrics", get(metrics)).route(
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

#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
    version: &'static str,
}

/// The process is up and serving HTTP; says nothing about dependencies.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// `ok` or `unreachable` (details go to the server log, not to this unauthenticated route).
    database: &'static str,
    /// `sqlite` or `postgres`.
    backend: &'static str,
    /// e.g. `1/1 applied`.
    migrations: String,
    /// When not ready, the error-body fields every failure carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

/// Ready for traffic: the database answers and every migration this binary knows is applied.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
) -> impl IntoResponse {
    let (ready, database, migrations) = match state.store.ping().await {
        Err(e) => {
            // The detail goes to the log only: /readyz answers without credentials.
            tracing::warn!(error = %e, "readiness check: database unreachable");
            (false, "unreachable", "unknown".to_string())
        }
        Ok(()) => match state.store.applied_migrations().await {
            Ok(n) => (
                n >= MIGRATION_COUNT,
                "ok",
                format!("{n}/{MIGRATION_COUNT} applied"),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "readiness check: cannot read migrations");
                (false, "ok", "unknown".to_string())
            }
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let detail = (!ready).then(|| format!("database {database}, migrations {migrations}"));
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        database,
        backend: state.store.backend().as_str(),
        migrations,
        code: (!ready).then_some("not_ready"),
        detail,
        request_id: (!ready).then_some(request_id.0),
    };
    (status, axum::Json(body))
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
