//! Socket.IO v4 at `/socket.io/` (socketioxide): the bus's events emitted as `metrics_update`,
//! `alert`, `system_status` and `user_activity` with the event (`{channel, type, at, data}`)
//! as payload. A client is admitted by a connect middleware (API key in the handshake's
//! `auth: {"token"}` or `Authorization: Bearer`, or the session cookie); a refused one gets a
//! `connect_error` saying why. Admitted sockets join one room, and a single task emits each
//! bus event to that room, so an event is serialized once however many clients listen.
//!
//! Each socket also joins one room per way its credential can be revoked
//! (`Credential::rooms`); a revocation on the bus disconnects that room's sockets, and a task
//! per socket re-checks the credential every `Realtime::recheck_every` and disconnects it once
//! the credential no longer holds. A socket authenticated by the session cookie is admitted
//! only from opsdeck's own origin (`super::origin_allowed`): browsers send cookies with a
//! WebSocket handshake whatever page opens it, and no CORS rule stands in the way. A key is
//! not ambient — a page can only send one it was given — so key sockets are not origin-bound.

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use tokio::sync::broadcast::error::RecvError;

use super::Credential;
use crate::app::AppState;
use crate::events::Bus;

/// The room every admitted socket joins.
const ROOM: &str = "events";

/// Builds the layer to put on the router and starts the task that feeds it from the bus.
pub fn layer(state: &AppState) -> SocketIoLayer {
    let (layer, io) = SocketIo::builder().with_state(state.clone()).build_layer();
    io.ns("/", on_connect.with(authorize));
    tokio::spawn(forward(io, state.clone()));
    layer
}

async fn authorize(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(state): State<AppState>,
) -> Result<(), super::RealtimeError> {
    let token = auth
        .ok()
        .and_then(|a| a.get("token").and_then(Value::as_str).map(str::to_string));
    let headers = &socket.req_parts().headers;
    let principal = super::principal(&state, headers, token.as_deref()).await?;
    let credential = Credential::of(&principal);
    if matches!(credential, Credential::Session { .. })
        && !super::origin_allowed(&state.config.server.public_url, headers)
    {
        return Err(super::RealtimeError::Forbidden(
            "a session cookie is accepted only from opsdeck's own pages (Origin does not match server.public_url)".into(),
        ));
    }
    // Here rather than in the connect handler, which runs after the `40` answer: whatever is
    // published once the client holds its answer reaches it, a revocation included. (A
    // refused socket is removed from its rooms by socketioxide.)
    socket.join(ROOM);
    socket.join(credential.rooms());
    tokio::spawn(recheck(socket, state, credential));
    Ok(())
}

/// Re-checks a socket's credential every `recheck_every` (and whenever the forwarder lagged)
/// and disconnects the socket once it no longer holds; ends with the socket or the server.
async fn recheck(socket: SocketRef, state: AppState, credential: Credential) {
    let every = state.realtime.recheck_every();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.realtime.stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = state.realtime.recheck_now.notified() => {}
        }
        if !socket.connected() {
            return;
        }
        if !credential.recheck(&state).await {
            let _ = socket.disconnect();
            return;
        }
    }
}

async fn on_connect(socket: SocketRef, State(state): State<AppState>) {
    // Counted until it disconnects; the handler must be cloneable, the count taken once.
    let watcher = std::sync::Arc::new(std::sync::Mutex::new(Some(super::Watcher::new(&state))));
    socket.on_disconnect(move || {
        let watcher = watcher.clone();
        async move {
            watcher.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    });
}

/// Emits bus events to the room and disconnects the sockets a revocation names, until the
/// server stops, then closes every socket (a graceful shutdown does not wait for upgraded
/// connections, and clients should reconnect elsewhere).
async fn forward(io: SocketIo, state: AppState) {
    let bus: &Bus = &state.events;
    let stop = &state.realtime.stop;
    let mut rx = bus.subscribe();
    loop {
        let got = tokio::select! {
            _ = stop.cancelled() => {
                io.close().await;
                return;
            }
            got = rx.recv() => got,
        };
        match got {
            Ok(event) => {
                if let Some(revoked) = event.revoked() {
                    let room = super::room_of(&revoked);
                    if let Err(e) = io.to(room).disconnect().await {
                        tracing::warn!(error = %e, "Socket.IO: could not disconnect every socket of a revoked credential");
                    }
                } else if event.channel.is_internal() {
                    // Never shown to clients.
                } else if let Err(e) = io.to(ROOM).emit(event.channel.as_str(), &*event).await {
                    tracing::debug!(error = %e, "Socket.IO broadcast reached not every client");
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "Socket.IO forwarder fell behind the event bus");
                // A revocation may be among the missed events: every socket asks the store.
                state.realtime.recheck_now.notify_waiters();
            }
            Err(RecvError::Closed) => return,
        }
    }
}
