//! Real-time push: owns the two streams that carry the event bus (`crate::events`) to
//! clients — Socket.IO v4 at `/socket.io/` (`socketio.rs`) and Server-Sent Events at
//! `GET /api/v1/stream` (`sse.rs`) — who may open them, the Redis fan-out that lets a client
//! on any instance see every instance's events (`fanout.rs`), and the two producers that exist
//! only for live clients: sampled `user_activity` from ingest and throttled `metrics_update`
//! from the headline figures.
//!
//! A stream lives only as long as its credential. Each remembers the [`Credential`] it was
//! opened with (a key id, or a session and its user) and ends when the bus announces a
//! revocation naming it (`events::Revoked`: key revoked, sign-out, password change, user
//! deleted; relayed from other instances through Redis). As a backstop for revocations the bus
//! never carried — a command run beside the server without Redis, an expired session, a
//! message lost to lag — every stream re-checks its credential against the store every
//! [`RECHECK_EVERY`], and at once after it lagged behind the bus.

pub mod fanout;
pub mod socketio;
pub mod sse;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use serde_json::Value;

use crate::access::sessions::{self, COOKIE_NAME};
use crate::access::{AccessError, Principal, Scope, keys};
use crate::app::AppState;
use crate::events::{Channel, Revoked};
use crate::http::auth::cookie;

/// Most `user_activity` events published per second: a dashboard shows a pulse, not a copy of
/// the ingest stream, and a burst of 100k events/s must not become 100k pushes per client.
pub const ACTIVITY_PER_SECOND: u32 = 20;

/// How often the headline figures are compared and, when changed, pushed: at most one
/// `metrics_update` per interval.
pub const METRICS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// How often an open stream re-checks its credential against the store. Revocations announced on
/// the bus end streams at once; this bounds how long one the bus never heard of can last.
pub const RECHECK_EVERY: Duration = Duration::from_secs(30);

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
    /// The credential re-check interval in milliseconds ([`RECHECK_EVERY`] unless a test
    /// shortens it).
    recheck_ms: AtomicU64,
    /// Wakes every Socket.IO credential check at once: the forwarder lagged behind the bus and
    /// may have missed a revocation.
    pub(crate) recheck_now: tokio::sync::Notify,
}

impl Default for Realtime {
    fn default() -> Self {
        Realtime {
            clients: AtomicUsize::new(0),
            activity: Mutex::new((0, 0)),
            last_figures: Mutex::new(None),
            stop: tokio_util::sync::CancellationToken::new(),
            recheck_ms: AtomicU64::new(RECHECK_EVERY.as_millis() as u64),
            recheck_now: tokio::sync::Notify::new(),
        }
    }
}

impl Realtime {
    /// How often streams opened from now on re-check their credential.
    pub fn recheck_every(&self) -> Duration {
        Duration::from_millis(self.recheck_ms.load(Ordering::Relaxed).max(1))
    }

    /// Changes [`Self::recheck_every`] for streams opened afterwards; tests shorten it to see
    /// the re-check work without waiting half a minute.
    pub fn set_recheck_every(&self, every: Duration) {
        self.recheck_ms
            .store(every.as_millis().max(1) as u64, Ordering::Relaxed);
    }

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

/// The credential a stream was opened with, kept for as long as the stream lives: what a
/// revocation is compared with, and what the periodic re-check looks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API key, by id.
    Key(i64),
    /// A session cookie: the session (as `sessions.id_hash`) and its user.
    Session { session_id: String, user_id: i64 },
}

impl Credential {
    pub fn of(principal: &Principal) -> Credential {
        match principal {
            Principal::Key(k) => Credential::Key(k.id),
            Principal::User(u) => Credential::Session {
                session_id: u.session_id().to_string(),
                user_id: u.user_id,
            },
        }
    }

    /// Whether `revoked` ends this credential: a key's own revocation, its session's
    /// sign-out, or, for any of a user's sessions, the user's password change or deletion.
    pub fn is_ended_by(&self, revoked: &Revoked) -> bool {
        match (self, revoked) {
            (Credential::Key(id), Revoked::Key(r)) => id == r,
            (Credential::Session { session_id, .. }, Revoked::Session(r)) => session_id == r,
            (Credential::Session { user_id, .. }, Revoked::User(r)) => user_id == r,
            _ => false,
        }
    }

    /// The Socket.IO rooms a socket with this credential joins, one per way it can be revoked,
    /// so a revocation disconnects exactly [`room_of`]'s members.
    pub fn rooms(&self) -> Vec<String> {
        match self {
            Credential::Key(id) => vec![room_of(&Revoked::Key(*id))],
            Credential::Session {
                session_id,
                user_id,
            } => vec![
                room_of(&Revoked::Session(session_id.clone())),
                room_of(&Revoked::User(*user_id)),
            ],
        }
    }

    /// Whether the credential still holds: the key unrevoked, the session neither signed out
    /// nor expired and its user still there.
    pub async fn still_valid(&self, state: &AppState) -> Result<bool, AccessError> {
        match self {
            Credential::Key(id) => keys::is_active(&state.store, *id).await,
            Credential::Session { session_id, .. } => {
                sessions::is_live(&state.store, session_id).await
            }
        }
    }

    /// The periodic re-check's verdict: `false` ends the stream. A store that cannot answer
    /// keeps the stream open (logged): ending every stream on a database blip would send every
    /// browser reconnecting into the same blip, and an EventSource that meets an error status
    /// stops retrying for good. Bus revocations still end streams meanwhile.
    pub async fn recheck(&self, state: &AppState) -> bool {
        match self.still_valid(state).await {
            Ok(valid) => valid,
            Err(e) => {
                tracing::warn!(error = %e, "stream credential re-check failed; keeping the stream");
                true
            }
        }
    }
}

/// The Socket.IO room holding the sockets `revoked` ends.
pub fn room_of(revoked: &Revoked) -> String {
    match revoked {
        Revoked::Key(id) => format!("key:{id}"),
        Revoked::Session(id) => format!("session:{id}"),
        Revoked::User(id) => format!("user:{id}"),
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

/// Whether a browser page at `origin` (the request's `Origin` header) may use the session
/// cookie on a stream: only opsdeck's own pages may. That is `server.public_url`'s origin when
/// it is set, otherwise the origin whose host is the request's `Host` (all we know of our own
/// address). A request without `Origin` comes from no web page (browsers always send it on
/// WebSocket handshakes and cross-origin requests), so it is allowed.
pub fn origin_allowed(public_url: &str, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Ok(origin) = reqwest::Url::parse(origin) else {
        return false;
    };
    if !public_url.is_empty() {
        return reqwest::Url::parse(public_url).is_ok_and(|own| own.origin() == origin.origin());
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.host_str(), host) {
        (Some(name), Some(host)) => {
            let authority = match origin.port() {
                Some(port) => format!("{name}:{port}"),
                None => name.to_string(),
            };
            authority.eq_ignore_ascii_case(host)
        }
        _ => false,
    }
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
    fn revocations_end_only_the_credentials_they_name() {
        let key = Credential::Key(7);
        let session = Credential::Session {
            session_id: "abc".into(),
            user_id: 3,
        };
        assert!(key.is_ended_by(&Revoked::Key(7)));
        assert!(!key.is_ended_by(&Revoked::Key(8)));
        assert!(
            !key.is_ended_by(&Revoked::User(7)),
            "keys belong to no user"
        );
        assert!(session.is_ended_by(&Revoked::Session("abc".into())));
        assert!(!session.is_ended_by(&Revoked::Session("abd".into())));
        assert!(session.is_ended_by(&Revoked::User(3)));
        assert!(!session.is_ended_by(&Revoked::User(4)));
        assert!(!session.is_ended_by(&Revoked::Key(3)));
        for (cred, revoked) in [
            (&key, Revoked::Key(7)),
            (&session, Revoked::Session("abc".into())),
            (&session, Revoked::User(3)),
        ] {
            assert!(cred.rooms().contains(&room_of(&revoked)), "{revoked:?}");
        }
        assert!(!session.rooms().contains(&room_of(&Revoked::Key(3))));
    }

    #[test]
    fn cookie_streams_admit_only_our_own_origin() {
        let headers = |origin: Option<&str>, host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().unwrap());
            if let Some(o) = origin {
                h.insert(header::ORIGIN, o.parse().unwrap());
            }
            h
        };
        let public = "https://ops.example.com/";
        let own = headers(Some("https://ops.example.com"), "10.0.0.5:8080");
        assert!(origin_allowed(public, &own));
        for foreign in [
            "https://evil.example",
            "http://ops.example.com",
            "https://ops.example.com:8443",
            "https://ops.example.com.evil.example",
            "null",
        ] {
            assert!(
                !origin_allowed(public, &headers(Some(foreign), "ops.example.com")),
                "{foreign}"
            );
        }
        assert!(
            origin_allowed(public, &headers(None, "x")),
            "no page, no Origin"
        );
        // Without public_url, the Host the request was sent to stands for our origin.
        assert!(origin_allowed(
            "",
            &headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")
        ));
        assert!(!origin_allowed(
            "",
            &headers(Some("http://evil.example:8080"), "127.0.0.1:8080")
        ));
        assert!(!origin_allowed(
            "",
            &headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8080")
        ));
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
