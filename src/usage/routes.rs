//! `POST /api/v1/events`: CloudEvents ingest. Parses and validates at the edge, hands the valid
//! events to the group-commit writer, and answers once they are durable.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::event::{Rules, validate_json};
use super::writer::IngestError;
use crate::access::Scope;
use crate::app::AppState;
use crate::http::auth::IngestAuth;
use crate::http::error::ErrorBody;
use crate::http::{ApiError, Result};
use crate::store::now_ms;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ingest))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rejection {
    /// Position of the event in the request (0 for a single event).
    pub index: usize,
    pub error: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestReply {
    /// Events stored by this request.
    pub accepted: usize,
    /// Valid events whose (source, id) was already stored; they changed nothing.
    pub duplicates: usize,
    /// Invalid events, with the reason; their valid siblings were still stored.
    pub rejected: Vec<Rejection>,
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Single,
    Batch,
    Either,
}

/// Ingests one CloudEvent or a batch. The reply is sent only after the accepted events are
/// committed.
#[utoipa::path(post, path = "/api/v1/events", tag = "usage", security(("api_key" = ["ingest"])),
    request_body(content = serde_json::Value, description = "One CloudEvents 1.0 event (application/cloudevents+json), \
        a JSON array of them (application/cloudevents-batch+json), or either as application/json."),
    responses((status = 200, body = IngestReply),
        (status = 400, body = ErrorBody, description = "The body is not JSON, or not the shape its content type announces."),
        (status = 413, body = ErrorBody, description = "The body exceeds ingest.max_body_bytes, or the batch ingest.max_events."),
        (status = 415, body = ErrorBody, description = "A content type other than the three accepted."),
        (status = 429, body = ErrorBody, description = "Over this credential's ingest.events_per_second; the Retry-After header says when to try again."),
        (status = 503, body = ErrorBody, description = "The server is stopping and took no events, or the request took longer than server.request_timeout.")))]
async fn ingest(
    State(state): State<AppState>,
    IngestAuth(p): IngestAuth,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestReply>> {
    p.require(Scope::Ingest)?;
    let limits = &state.config.ingest;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let shape = match media.as_str() {
        "application/cloudevents+json" => Shape::Single,
        "application/cloudevents-batch+json" => Shape::Batch,
        "application/json" => Shape::Either,
        _ => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type {media:?} is not accepted; use application/cloudevents+json, \
                 application/cloudevents-batch+json or application/json"
            )));
        }
    };
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "request body exceeds the ingest limit of {} bytes (ingest.max_body_bytes)",
            limits.max_body_bytes
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limits.max_body_bytes)
        .await
        .map_err(|_| too_large())?;
    let not_json =
        |e: serde_json::Error| ApiError::BadRequest(format!("body is not valid JSON: {e}"));
    // Each event is kept as its text and judged on its own (see `validate_json`).
    let body: &RawValue = serde_json::from_slice(&bytes).map_err(not_json)?;
    let text = body.get();
    let events: Vec<&RawValue> = match (shape, text.as_bytes().first()) {
        (Shape::Single | Shape::Either, Some(b'{')) => vec![body],
        (Shape::Batch | Shape::Either, Some(b'[')) => {
            serde_json::from_str(text).map_err(not_json)?
        }
        (Shape::Single, _) => {
            return Err(ApiError::BadRequest(
                "application/cloudevents+json carries one event: a JSON object".into(),
            ));
        }
        (Shape::Batch, _) => {
            return Err(ApiError::BadRequest(
                "application/cloudevents-batch+json carries a JSON array of events".into(),
            ));
        }
        (Shape::Either, _) => {
            return Err(ApiError::BadRequest(
                "expected one event (a JSON object) or a batch (a JSON array)".into(),
            ));
        }
    };
    if events.len() > limits.max_events {
        return Err(ApiError::PayloadTooLarge(format!(
            "batch has {} events; the limit is {} (ingest.max_events)",
            events.len(),
            limits.max_events
        )));
    }
    // Charged before validation: refused events cost the server as much as accepted ones.
    state
        .event_limiter
        .check(&p.rate_key(), events.len())
        .map_err(|wait| ApiError::EventRateLimited(wait, limits.events_per_second))?;

    let rules = Rules {
        now_ms: now_ms(),
        max_future_skew_ms: limits.max_future_skew.0.as_millis() as i64,
    };
    let mut valid = Vec::with_capacity(events.len());
    let mut rejected = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let judged = validate_json(event, rules).map_err(|e| {
            // Named as a decoding of the whole body names it, with its line and column there.
            not_json(
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .err()
                    .unwrap_or(e),
            )
        })?;
        match judged {
            Ok(mut e) => {
                if let Some(endpoint) = &e.facts.endpoint {
                    e.facts.category = Some(state.categories.of(endpoint));
                }
                valid.push(e)
            }
            Err(error) => rejected.push(Rejection { index, error }),
        }
    }
    state.prices.price_all(&mut valid);
    // A sample for the live streams, taken before the events move to the writer; only
    // when someone may watch (here, or on another instance through Redis), and within a
    // per-second budget.
    let watched = state.realtime.clients() > 0 || !state.config.server.redis_url.is_empty();
    let sample: Vec<serde_json::Value> = if watched {
        let n = state.realtime.sample(valid.len(), crate::store::now_ms());
        valid
            .iter()
            .take(n)
            .map(crate::realtime::activity_data)
            .collect()
    } else {
        Vec::new()
    };
    let written = state.ingestor.write(valid).await.map_err(|e| match e {
        IngestError::Stopped | IngestError::Busy => ApiError::Unavailable(e.to_string()),
        IngestError::Store(m) => ApiError::Internal(m),
    })?;
    if written.accepted > 0 {
        crate::realtime::publish_activity(&state, sample);
    }
    Ok(Json(IngestReply {
        accepted: written.accepted,
        duplicates: written.duplicates,
        rejected,
    }))
}
