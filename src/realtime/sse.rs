//! `GET /api/v1/stream`: the event bus as Server-Sent Events. Each event is `event: <channel>`,
//! `id: <n>` (this connection's sequence) and `data: <the event as JSON>`; a client too slow
//! for the bus gets `event: lagged` with how many events it missed, then the stream goes on.
//! The stream ends when its credential is revoked (announced on the bus) or found invalid by
//! the periodic re-check (see the module above).
//!
//! Unlike Socket.IO, the cookie-authenticated stream is not bound to an `Origin`: the session
//! cookie is `SameSite=Lax`, so a cross-site page's `EventSource` is sent without it, and the
//! answer carries no CORS headers, so a page of another origin (a sibling subdomain, which is
//! same-site) cannot read it either.

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

use super::Credential;
use crate::app::AppState;
use crate::events::Event;
use crate::http::error::ErrorBody;

/// A comment line sent this often keeps proxies and browsers from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_events))
}

/// The live event stream (`metrics_update`, `alert`, `system_status`, `user_activity`).
#[utoipa::path(get, path = "/api/v1/stream", tag = "events", security(("api_key" = ["read"])),
    responses(
        (status = 200, description = "text/event-stream: `event: <channel>`, `id:`, `data: {channel, type, at, data}`; `event: lagged` with `{missed}` when the client fell behind. The stream ends when its credential stops being valid: the key revoked, the session signed out, its user's password changed or the user deleted (at once, on every instance sharing Redis), or, for changes made outside a server, at the next re-check (every 30 s), as when the session expires", content_type = "text/event-stream"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn stream_events(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, crate::http::ApiError> {
    let principal = super::principal(&state, &headers, None).await?;
    // Subscribed before the answer goes out: whatever happens after the client sees the
    // headers reaches it, a revocation included.
    let rx = state.events.subscribe();
    let events = stream_of(rx, state.clone(), Credential::of(&principal));
    let ready = stream::once(async { Ok(SseEvent::default().comment("ready")) });
    Ok((
        [("x-accel-buffering", "no")],
        Sse::new(ready.chain(events)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    ))
}

/// The bus as SSE events, until the server stops or `credential` ends; counts the client while
/// the stream lives.
fn stream_of(
    rx: broadcast::Receiver<Arc<Event>>,
    state: AppState,
    credential: Credential,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    struct Open {
        rx: broadcast::Receiver<Arc<Event>>,
        seq: u64,
        credential: Credential,
        recheck: tokio::time::Interval,
        state: AppState,
        _watcher: super::Watcher,
    }
    let every = state.realtime.recheck_every();
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let open = Open {
        rx,
        seq: 0,
        credential,
        recheck,
        _watcher: super::Watcher::new(&state),
        state,
    };
    stream::unfold(open, move |mut open| async move {
        let stop = open.state.realtime.stop.clone();
        let event = loop {
            let got = tokio::select! {
                _ = stop.cancelled() => return None,
                _ = open.recheck.tick() => {
                    if !open.credential.recheck(&open.state).await {
                        return None;
                    }
                    continue;
                }
                got = open.rx.recv() => got,
            };
            match got {
                Ok(event) => match event.revoked() {
                    Some(revoked) if open.credential.is_ended_by(&revoked) => return None,
                    // Internal messages are never shown to clients.
                    _ if event.channel.is_internal() => continue,
                    _ => break sse_event(&event),
                },
                Err(RecvError::Lagged(missed)) => {
                    // A revocation may be among the missed events: ask the store now.
                    if !open.credential.recheck(&open.state).await {
                        return None;
                    }
                    break SseEvent::default()
                        .event("lagged")
                        .data(serde_json::json!({"missed": missed}).to_string());
                }
                Err(RecvError::Closed) => return None,
            }
        };
        open.seq += 1;
        let event = event.id(open.seq.to_string());
        Some((Ok(event), open))
    })
}

fn sse_event(event: &Event) -> SseEvent {
    SseEvent::default()
        .event(event.channel.as_str())
        .data(serde_json::to_string(event).unwrap_or_else(|_| "{}".into()))
}
