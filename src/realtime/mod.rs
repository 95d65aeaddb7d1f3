//! Real-time push: owns the two streams that carry the event bus (`crate::events`) to
//! clients — Socket.IO v4 at `/socket.io/` (`socketio.rs`) and Server-Sent Events at
//! `GET /api/v1/stream` (`sse.rs`) — who may open them, the Redis fan-out that lets a client
//! on any instance see every instance's events (`fanout.rs`), and the two producers that exist
//! only for live clients: sampled `user_activity` from ingest and throttled `metrics_update`
//! from the headline figures.

pub mod fanout;
pub mod socketio;
pub mod sse;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderMap, header};
use serde_json::Value;

use crate::access::sessions::{self, COOKIE_NAME};
use crate::access::{AccessError, Principal, Scope, keys};
use crate::app::AppState;
use crate::events::Channel;
use crate::http::auth::cookie;

/// Most `user_activity` events published per second: a dashboard shows a pulse, not a copy of
/// the ingest stream, and a burst of 100k events/s must not become 100k pushes per client.
pub const ACTIVITY_PER_SECOND: u32 = 20;

/// How often the headline figures are compared and, when changed, pushed: at most one
/// `metrics_update` per interval.
pub const METRICS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Errors of the stream boundary; `http::error` maps them to status codes, and Socket.IO
/// sends their text in the `connect_error` packet.
#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    #[error(transparent)]
    Access(#[from] AccessError),
}

/// Shared parts of the streams. Lives in `AppState`.
#[derive(Default)]
pub struct Realtime {
    /// Open stream clients on this instance (SSE and Socket.IO), so producers that exist
    /// only for them skip their work when nobody watches.
    clients: AtomicUsize,
    /// (second, events published in it) for `user_activity` sampling.
    activity: Mutex<(i64, u32)>,
    /// The headline figures last published, so only changes go out.
    last_figures: Mutex<Option<Value>>,
    /// Fired when the server shuts down: open streams end, or a graceful shutdown would wait
    /// for them forever.
    pub stop: tokio_util::sync::CancellationToken,
}

impl Realtime {
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    fn enter(&self) {
        self.clients.fetch_add(1, Ordering::Relaxed);
    }

    fn leave(&self) {
        self.clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// How many of `offered` activity events may go out now, within
    /// [`ACTIVITY_PER_SECOND`]; never waits.
    pub fn sample(&self, offered: usize, now_ms: i64) -> usize {
        let second = now_ms.div_euclid(1000);
        let mut slot = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        if slot.0 != second {
            *slot = (second, 0);
        }
        let take = (ACTIVITY_PER_SECOND - slot.1).min(u32::try_from(offered).unwrap_or(u32::MAX));
        slot.1 += take;
        take as usize
    }
}

/// One open stream client, counted in [`Realtime::clients`] until dropped.
pub struct Watcher(AppState);

impl Watcher {
    pub fn new(state: &AppState) -> Self {
        state.realtime.enter();
        Watcher(state.clone())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.realtime.leave();
    }
}

/// Who opens a stream: an API key (`token`, from the Socket.IO handshake's `auth`, or
/// `Authorization: Bearer`) or the session cookie. The streams carry every customer's
/// activity, so the credential needs `read`; a tenant key (`tenant:<id>`) is refused rather
/// than shown other customers' events.
pub async fn principal(
    state: &AppState,
    headers: &HeaderMap,
    token: Option<&str>,
) -> Result<Principal, RealtimeError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or(RealtimeError::Unauthenticated)
        })
        .transpose()?;
    let principal = if let Some(token) = token.or(bearer) {
        Principal::Key(
            keys::authenticate(&state.store, token)
                .await?
                .ok_or(RealtimeError::Unauthenticated)?,
        )
    } else if let Some(value) = cookie(headers, COOKIE_NAME) {
        Principal::User(
            sessions::lookup(&state.store, value)
                .await?
                .ok_or(RealtimeError::Unauthenticated)?,
        )
    } else {
        return Err(RealtimeError::Unauthenticated);
    };
    if principal
        .scopes()
        .0
        .iter()
        .any(|s| matches!(s, Scope::Tenant(_)))
    {
        return Err(RealtimeError::Forbidden(
            "a tenant key cannot open the event stream: it carries every customer's events".into(),
        ));
    }
    principal
        .require(Scope::Read)
        .map_err(|_| RealtimeError::Forbidden("the event stream needs the read scope".into()))?;
    state
        .api_limiter
        .check(&principal.rate_key())
        .map_err(RealtimeError::RateLimited)?;
    Ok(principal)
}

/// Publishes a sample of just-ingested events as `user_activity` (at most
/// [`ACTIVITY_PER_SECOND`]); `events` are the `(source, id, type, subject, time)` of events
/// the writer committed. Never blocks: the bus drops what slow listeners cannot take.
pub fn publish_activity(state: &AppState, events: Vec<Value>) {
    for data in events {
        state
            .events
            .publish(Channel::UserActivity, "usage.event_ingested", data);
    }
}

/// The `user_activity` data of one ingested event.
pub fn activity_data(e: &crate::usage::event::NewEvent) -> Value {
    let who = e.subject.as_deref().unwrap_or("an unknown subject");
    serde_json::json!({
        "source": e.source,
        "id": e.id,
        "type": e.kind,
        "subject": e.subject,
        "time": crate::usage::quota::rfc3339(e.time_ms),
        "summary": format!("{} from {who}", e.kind),
    })
}

/// One step of the `realtime-metrics` job: when someone watches here and the headline
/// figures (Overview, last 30 days) changed since the last step, publishes them as
/// `metrics_update`. Each instance computes its own for its own clients (the fan-out does not
/// relay this channel), so figures are never doubled across instances.
pub async fn metrics_step(state: &AppState) -> Result<(), String> {
    if state.realtime.clients() == 0 {
        // Published again in full as soon as someone connects.
        *state
            .realtime
            .last_figures
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        return Ok(());
    }
    let overview = crate::overview::overview(state, time::OffsetDateTime::now_utc(), 30 * 86_400)
        .await
        .map_err(|e| e.to_string())?;
    let figures = serde_json::to_value(&overview.figures).map_err(|e| e.to_string())?;
    let changed = {
        let mut last = state
            .realtime
            .last_figures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let changed: Vec<String> = match (last.as_ref(), figures.as_object()) {
            (Some(Value::Object(old)), Some(new)) => new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(v))
                .map(|(k, _)| k.clone())
                .collect(),
            (_, Some(new)) => new.keys().cloned().collect(),
            _ => Vec::new(),
        };
        *last = Some(figures.clone());
        changed
    };
    if changed.is_empty() {
        return Ok(());
    }
    let summary = format!("headline figures changed: {}", changed.join(", "));
    state.events.publish(
        Channel::MetricsUpdate,
        "metrics.updated",
        serde_json::json!({
            "period": overview.period,
            "figures": figures,
            "changed": changed,
            "summary": summary,
        }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_sampling_is_bounded_per_second() {
        let r = Realtime::default();
        assert_eq!(r.sample(5, 1_000), 5);
        assert_eq!(r.sample(100, 1_500), ACTIVITY_PER_SECOND as usize - 5);
        assert_eq!(r.sample(1, 1_999), 0, "budget spent for this second");
        assert_eq!(r.sample(3, 2_000), 3, "a new second, a new budget");
    }

    #[test]
    fn client_guards_count_open_streams() {
        let r = Realtime::default();
        r.enter();
        r.enter();
        assert_eq!(r.clients(), 2);
        r.leave();
        assert_eq!(r.clients(), 1);
        r.leave();
        assert_eq!(r.clients(), 0);
    }
}
