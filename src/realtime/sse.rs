//! `GET /api/v1/stream`: the event bus as Server-Sent Events. Each event is `event: <channel>`,
//! `id: <n>` (this connection's sequence) and `data: <the event as JSON>`; a client too slow
//! for the bus gets `event: lagged` with how many events it missed, then the stream goes on.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::events::Event;
use crate::http::error::ErrorBody;

/// A comment line sent this often keeps proxies and browsers from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_events))
}

/// The live event stream (`metrics_update`, `alert`, `system_status`, `user_activity`).
#[utoipa::path(get, path = "/api/v1/stream", tag = "events", security(("api_key" = [])),
    responses(
        (status = 200, description = "text/event-stream: `event: <channel>`, `id:`, `data: {channel, type, at, data}`; `event: lagged` with `{missed}` when the client fell behind", content_type = "text/event-stream"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn stream_events(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, crate::http::ApiError> {
    super::principal(&state, &headers, None).await?;
    // Subscribed before the answer goes out: whatever happens after the client sees the
    // headers reaches it.
    let rx = state.events.subscribe();
    let events = stream_of(rx, state.clone());
    let ready = stream::once(async { Ok(SseEvent::default().comment("ready")) });
    Ok((
        [("x-accel-buffering", "no")],
        Sse::new(ready.chain(events)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    ))
}

/// The bus as SSE events; counts the client while the stream lives.
fn stream_of(
    rx: broadcast::Receiver<Arc<Event>>,
    state: AppState,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    struct Open {
        rx: broadcast::Receiver<Arc<Event>>,
        seq: u64,
        _watcher: super::Watcher,
    }
    let open = Open {
        rx,
        seq: 0,
        _watcher: super::Watcher::new(&state),
    };
    let stop = state.realtime.stop.clone();
    stream::unfold(open, move |mut open| {
        let stop = stop.clone();
        async move {
            let got = tokio::select! {
                _ = stop.cancelled() => return None,
                got = open.rx.recv() => got,
            };
            let event = match got {
                Ok(event) => sse_event(&event),
                Err(RecvError::Lagged(missed)) => SseEvent::default()
                    .event("lagged")
                    .data(serde_json::json!({"missed": missed}).to_string()),
                Err(RecvError::Closed) => return None,
            };
            open.seq += 1;
            let event = event.id(open.seq.to_string());
            Some((Ok(event), open))
        }
    })
}

fn sse_event(event: &Event) -> SseEvent {
    SseEvent::default()
        .event(event.channel.as_str())
        .data(serde_json::to_string(event).unwrap_or_else(|_| "{}".into()))
}
