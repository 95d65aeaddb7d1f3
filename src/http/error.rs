//! The one error type at the HTTP boundary and the one place errors become responses.
//!
//! Handlers return [`ApiError`]; its `IntoResponse` only records status, code and detail in a
//! response extension. The [`render_errors`] middleware, which knows the request id and whether
//! the client is on `/api` or a page, turns that — and any bare error response from axum itself
//! (rejections, 405, 413) — into `{"code", "detail", "request_id"}` JSON or an HTML error page.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::AccessError;
use crate::app::AppState;
use crate::http::RequestId;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Invalid(String),
    #[error("authentication required")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("missing or invalid CSRF token")]
    Csrf,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    /// Ingest over its event rate: seconds to wait, and the rate.
    #[error(
        "more than {1} events a second from this credential (ingest.events_per_second); retry in {0} s"
    )]
    EventRateLimited(u64, u32),
    #[error("{0}")]
    Unavailable(String),
    /// A receiver that this instance has not been set up for (no signing secret to check
    /// senders against).
    #[error("{0}")]
    NotConfigured(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Logged with the request id; the client sees only that id.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::Csrf => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited(_) | ApiError::EventRateLimited(..) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // 404: until it is configured the receiver does not exist on this instance. Not a
            // 5xx, which reads as an outage that passes (it will not: someone has to set the
            // secret); not 400, the request is well-formed; not 401/403, there is nothing to
            // check a signature against. The code and detail say what to configure.
            ApiError::NotConfigured(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Invalid(_) => "invalid",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Csrf => "csrf_rejected",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::RateLimited(_) | ApiError::EventRateLimited(..) => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::NotConfigured(_) => "not_configured",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Unauthenticated | AccessError::BadCredentials => ApiError::Unauthenticated,
            AccessError::Forbidden(scope) => {
                ApiError::Forbidden(format!("this credential lacks the {scope} scope"))
            }
            AccessError::Csrf => ApiError::Csrf,
            AccessError::RateLimited(s) => ApiError::RateLimited(s),
            AccessError::Invalid(m) => ApiError::Invalid(m),
            AccessError::Conflict(m) => ApiError::Conflict(m),
            AccessError::NotFound(m) => ApiError::NotFound(format!("{m} not found")),
            AccessError::Crypto(m) => ApiError::Internal(m),
            AccessError::Store(s) => s.into(),
        }
    }
}

impl From<crate::usage::UsageError> for ApiError {
    fn from(e: crate::usage::UsageError) -> Self {
        use crate::usage::UsageError;
        match e {
            UsageError::Invalid(m) => ApiError::Invalid(m),
            e @ UsageError::NotFound(_) => ApiError::NotFound(e.to_string()),
            UsageError::Conflict(m) => ApiError::Conflict(m),
            UsageError::Store(s) => s.into(),
        }
    }
}

impl From<crate::costs::CostsError> for ApiError {
    fn from(e: crate::costs::CostsError) -> Self {
        use crate::costs::CostsError;
        match e {
            CostsError::Invalid(m) => ApiError::Invalid(m),
            e @ CostsError::NotFound(_) => ApiError::NotFound(e.to_string()),
            CostsError::Store(s) => s.into(),
        }
    }
}

impl From<crate::health::HealthError> for ApiError {
    fn from(e: crate::health::HealthError) -> Self {
        use crate::health::HealthError;
        match e {
            HealthError::Invalid(i) => ApiError::Invalid(i.to_string()),
            HealthError::Conflict(m) => ApiError::Conflict(m),
            HealthError::NotFound(m) => ApiError::NotFound(m),
            HealthError::Internal(m) => ApiError::Internal(m),
            HealthError::Store(s) => s.into(),
        }
    }
}

impl From<crate::tokens::TokensError> for ApiError {
    fn from(e: crate::tokens::TokensError) -> Self {
        use crate::tokens::TokensError;
        match e {
            TokensError::Invalid(i) => ApiError::Invalid(i.to_string()),
            TokensError::Conflict(m) => ApiError::Conflict(m),
            TokensError::NotFound(m) => ApiError::NotFound(m),
            TokensError::Internal(m) => ApiError::Internal(m),
            TokensError::Store(s) => s.into(),
        }
    }
}

impl From<crate::revenue::RevenueError> for ApiError {
    fn from(e: crate::revenue::RevenueError) -> Self {
        use crate::revenue::RevenueError;
        match e {
            RevenueError::Invalid(m) => ApiError::Invalid(m),
            e @ RevenueError::Malformed(_) => ApiError::BadRequest(e.to_string()),
            e @ RevenueError::NotConfigured => ApiError::Unavailable(e.to_string()),
            e @ RevenueError::Busy => ApiError::Conflict(e.to_string()),
            e @ RevenueError::Stripe(_) => ApiError::Unavailable(e.to_string()),
            RevenueError::Store(s) => s.into(),
            RevenueError::Usage(u) => u.into(),
            RevenueError::Costs(c) => c.into(),
        }
    }
}

impl From<crate::webhooks::endpoints::EndpointError> for ApiError {
    fn from(e: crate::webhooks::endpoints::EndpointError) -> Self {
        use crate::webhooks::endpoints::EndpointError;
        match e {
            EndpointError::Invalid { .. } => ApiError::Invalid(e.to_string()),
            EndpointError::NotFound(_) => ApiError::NotFound(e.to_string()),
            EndpointError::Taken(_) | EndpointError::ReadOnly(_) => {
                ApiError::Conflict(e.to_string())
            }
            EndpointError::Store(s) => s.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::webhooks::queue::QueueError> for ApiError {
    fn from(e: crate::webhooks::queue::QueueError) -> Self {
        use crate::webhooks::queue::QueueError;
        match e {
            QueueError::Invalid(why) => ApiError::Invalid(why),
            QueueError::Store(s) => s.into(),
        }
    }
}

impl From<crate::alerts::AlertsError> for ApiError {
    fn from(e: crate::alerts::AlertsError) -> Self {
        use crate::alerts::AlertsError;
        match e {
            AlertsError::Invalid { .. } => ApiError::Invalid(e.to_string()),
            AlertsError::NotFound(m) => ApiError::NotFound(m),
            AlertsError::Conflict(m) => ApiError::Conflict(m),
            AlertsError::Store(s) => s.into(),
            AlertsError::Queue(q) => q.into(),
            AlertsError::Access(a) => a.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::realtime::RealtimeError> for ApiError {
    fn from(e: crate::realtime::RealtimeError) -> Self {
        use crate::realtime::RealtimeError;
        match e {
            RealtimeError::Unauthenticated => ApiError::Unauthenticated,
            RealtimeError::Forbidden(m) => ApiError::Forbidden(m),
            RealtimeError::RateLimited(s) => ApiError::RateLimited(s),
            RealtimeError::Access(a) => a.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            e if e.is_busy() => ApiError::Unavailable(format!(
                "the store is busy with another writer; retry shortly ({e})"
            )),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// What [`render_errors`] needs to build the body; carried in the response's extensions.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub code: String,
    pub detail: String,
    /// Internal details for the log, never sent.
    pub internal: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (detail, internal) = match &self {
            ApiError::Internal(m) => (
                "internal error; quote the request id when reporting it".to_string(),
                Some(m.clone()),
            ),
            other => (other.to_string(), None),
        };
        let mut res = status.into_response();
        match self {
            ApiError::RateLimited(secs) | ApiError::EventRateLimited(secs, _) => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            // Every 503 is a "not now": the writer is busy or the server is stopping.
            ApiError::Unavailable(_) => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
        res.extensions_mut().insert(ErrorInfo {
            code: self.code().into(),
            detail,
            internal,
        });
        res
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `unauthenticated`, `forbidden`, `payload_too_large`.
    pub code: String,
    pub detail: String,
    /// Also in the `x-request-id` response header and the server log.
    pub request_id: String,
}

/// Middleware: gives every error response its final body.
pub async fn render_errors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let wants_json = is_machine_path(req.uri().path());
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    // Keep what the original response said (Allow on 405, Retry-After on 429), minus the
    // headers that described its old body.
    let mut headers = res.headers().clone();
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    let info = match res.extensions().get::<ErrorInfo>() {
        Some(info) => info.clone(),
        None => {
            // Bodies we rendered ourselves (a page re-shown with a message) are left alone.
            let ct = res
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if ct.starts_with("text/html") || ct.starts_with("application/json") {
                return res;
            }
            from_framework(status, &state, res).await
        }
    };
    if let Some(internal) = &info.internal {
        tracing::error!(request_id = %request_id, error = %internal, "request failed");
    }
    let body = ErrorBody {
        code: info.code,
        detail: info.detail,
        request_id,
    };
    let mut out = if wants_json {
        (status, axum::Json(body)).into_response()
    } else {
        crate::web::error_page(status, &body.code, &body.detail, &body.request_id)
    };
    if status == StatusCode::UNAUTHORIZED && wants_json {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    // A 413 is sent before the rest of the body is read, so the connection cannot carry another
    // request; saying so keeps clients from reusing it and failing their next request.
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    out.headers_mut().extend(headers);
    out
}

/// API, webhook and machine endpoints answer JSON; everything else is a page.
pub fn is_machine_path(path: &str) -> bool {
    path.starts_with("/api")
        || path.starts_with("/webhooks")
        || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Describes an error response produced by axum or tower (extractor rejections, 405, 413, 408).
async fn from_framework(status: StatusCode, state: &AppState, res: Response) -> ErrorInfo {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let detail = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!(
            "request body exceeds the limit of {} bytes",
            state.config.server.max_body_bytes
        )
    } else {
        let bytes = axum::body::to_bytes(res.into_body(), 4096)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_lowercase()
        } else {
            text
        }
    };
    ErrorInfo {
        code: code.into(),
        detail,
        internal: None,
    }
}
