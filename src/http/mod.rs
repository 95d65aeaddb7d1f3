//! The HTTP layer: assembles every domain's router, the middleware stack (request ids, logging,
//! metrics, security headers, error rendering, timeouts, body limits) and the operational
//! endpoints. It owns no business rules: handlers parse, call a domain, and serialize.

pub mod auth;
pub mod error;
pub mod metrics;
pub mod openapi;
mod ops;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
pub use error::{ApiError, Result};

/// The request's id: taken from a sane incoming `x-request-id`, otherwise generated. It appears
/// in logs, in the `x-request-id` response header and in every error body.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "opsdeck",
        description = "Operations cockpit for SaaS teams: revenue, costs, usage, integration health and alerts.",
    ),
    modifiers(&SecurityAddon),
    components(schemas(error::ErrorBody)),
)]
struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An opsdeck API key (opsk_…). Each operation's security requirement \
                         names the scopes that admit it (any one of them); the browser's \
                         session cookie works too, with the x-csrf-token header on writes.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every JSON route, documented; adding a route here without `#[utoipa::path]` does not compile.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::access::routes::router())
        .merge(crate::overview::router())
        .merge(ops::documented())
        .merge(crate::usage::routes::router())
        .merge(crate::usage::api::router())
        .merge(crate::costs::routes::router())
        .merge(crate::revenue::routes::router())
        .merge(crate::health::routes::router())
        .merge(crate::tokens::routes::router())
        .merge(crate::webhooks::routes::router())
        .merge(crate::alerts::routes::router())
        .merge(crate::realtime::sse::router())
}

/// The documented router and its OpenAPI 3.1 document, with the failures every layer and
/// extractor can answer declared on each operation.
fn documented_api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (api, mut doc) = api_routes().split_for_parts();
    openapi::declare_generic_failures(&mut doc);
    (api, doc)
}

/// The generated OpenAPI 3.1 document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_api().1
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let (api, doc) = documented_api();
    let doc_json = doc.to_json().unwrap_or_else(|_| "{}".into());
    let config = &state.config.server;
    // Outermost: Socket.IO's long-polling and websocket connections answer below the request
    // timeout and body limit meant for ordinary requests.
    let socketio = crate::realtime::socketio::layer(&state);

    Router::new()
        .merge(api)
        .merge(ops::router(doc_json))
        .merge(crate::web::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(request_context))
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    metrics::track,
                ))
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    error::render_errors,
                ))
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    record_key_use,
                ))
                // A panicking handler becomes a logged 500 with a request id, not a dropped
                // connection.
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::Internal("handler panicked".into()).into_response()
                }))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    config.request_timeout.0,
                ))
                .layer(DefaultBodyLimit::max(config.max_body_bytes)),
        )
        .with_state(state.clone())
        .layer(socketio)
        // Outside Socket.IO too, so its polling answers and websocket upgrades carry them.
        .layer(middleware::from_fn_with_state(state, security_headers))
}

/// Middleware: request id, a tracing span around the request, one log line per request.
async fn request_context(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mut res = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let elapsed = started.elapsed();
    span.in_scope(|| log_request(res.status(), elapsed));
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    res
}

fn log_request(status: StatusCode, elapsed: Duration) {
    let ms = elapsed.as_secs_f64() * 1000.0;
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), ms, "request finished");
    } else {
        tracing::debug!(status = status.as_u16(), ms, "request finished");
    }
}

/// Middleware: notes the API key's last use, but only for requests that succeeded, so a rejected
/// request leaves no trace in the store.
async fn record_key_use(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let slot = auth::UsedKey::default();
    req.extensions_mut().insert(slot.clone());
    let res = next.run(req).await;
    if let (true, Some(id)) = (res.status().is_success(), slot.0.get()) {
        state.key_usage.record(*id);
    }
    res
}

/// Middleware: headers every response carries. Pages load only our own script and style, and
/// may not be framed.
async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::CACHE_CONTROL, "no-store");
    if state.config.behind_tls() {
        set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
    res
}
