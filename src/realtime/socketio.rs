//! Socket.IO v4 at `/socket.io/` (socketioxide): the bus's events emitted as `metrics_update`,
//! `alert`, `system_status` and `user_activity` with the event (`{channel, type, at, data}`)
//! as payload. A client is admitted by a connect middleware (API key in the handshake's
//! `auth: {"token"}` or `Authorization: Bearer`, or the session cookie); a refused one gets a
//! `connect_error` saying why. Admitted sockets join one room, and a single task emits each
//! bus event to that room, so an event is serialized once however many clients listen.

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use tokio::sync::broadcast::error::RecvError;

use crate::app::AppState;
use crate::events::Bus;

/// The room every admitted socket joins.
const ROOM: &str = "events";

/// Builds the layer to put on the router and starts the task that feeds it from the bus.
pub fn layer(state: &AppState) -> SocketIoLayer {
    let (layer, io) = SocketIo::builder().with_state(state.clone()).build_layer();
    io.ns("/", on_connect.with(authorize));
    tokio::spawn(forward(
        io,
        state.events.clone(),
        state.realtime.stop.clone(),
    ));
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
    let headers = socket.req_parts().headers.clone();
    super::principal(&state, &headers, token.as_deref()).await?;
    // Here rather than in the connect handler, which runs after the `40` answer: whatever is
    // published once the client holds its answer reaches it. (A refused socket is removed
    // from its rooms by socketioxide.)
    socket.join(ROOM);
    Ok(())
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

/// Emits bus events to the room until the server stops, then closes every socket (a graceful
/// shutdown does not wait for upgraded connections, and clients should reconnect elsewhere).
async fn forward(io: SocketIo, bus: Bus, stop: tokio_util::sync::CancellationToken) {
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
                if let Err(e) = io.to(ROOM).emit(event.channel.as_str(), &*event).await {
                    tracing::debug!(error = %e, "Socket.IO broadcast reached not every client");
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "Socket.IO forwarder fell behind the event bus");
            }
            Err(RecvError::Closed) => return,
        }
    }
}
