//! The Redis fan-out: with `server.redis_url` set, each instance publishes the events that
//! happened in it to the `opsdeck:events` channel, tagged with its instance id, and relays the
//! other instances' events onto its own bus, so a client connected anywhere sees every event
//! once. `metrics_update` is not relayed: every instance computes the same figures from the
//! shared database for its own clients. The bus is not durable and neither is this: while
//! Redis is away, events are dropped (logged), both loops reconnect with backoff, and a
//! producer never waits for Redis.
//!
//! Revocations (`events::Revoked`) travel the same way, so revoking a key or ending a session on
//! one instance ends its streams on all. Commands run outside the server (`opsdeck key revoke`,
//! `opsdeck user passwd`) have no relay of their own; they hand their revocations to
//! [`announce`], which publishes them once on the same channel.

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::events::{Bus, Channel, Event};

/// The pub/sub channel every instance shares.
pub const CHANNEL: &str = "opsdeck:events";

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A PUBLISH that takes longer means Redis is gone; the connection is made anew.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// What travels through Redis.
#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    event: Event,
}

/// Starts both loops; the handle ends once `cancel` fires.
pub fn spawn(url: &str, bus: Bus, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    let client = match redis::Client::open(url) {
        Ok(c) => c,
        Err(e) => {
            // Validation already checked the scheme; anything else is reported, not fatal.
            tracing::error!(error = %e, "server.redis_url: cannot use it; events stay on this instance");
            return tokio::spawn(async {});
        }
    };
    let origin = uuid::Uuid::new_v4().simple().to_string();
    tracing::info!(instance = %origin, "fanning events out through Redis");
    let publisher = tokio::spawn(publish(
        client.clone(),
        origin.clone(),
        bus.clone(),
        cancel.clone(),
    ));
    let relay = tokio::spawn(relay(client, origin, bus, cancel));
    tokio::spawn(async move {
        let _ = publisher.await;
        let _ = relay.await;
    })
}

/// Publishes `events` on [`CHANNEL`] once, as an instance of its own would, for a process that
/// does not run the relay (the command line). Bounded by [`PUBLISH_TIMEOUT`].
pub async fn announce(url: &str, events: Vec<Event>) -> Result<(), redis::RedisError> {
    let origin = format!("cli-{}", uuid::Uuid::new_v4().simple());
    let publish = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        for event in events {
            let payload = serde_json::to_string(&Envelope {
                origin: origin.clone(),
                event,
            })
            .map_err(|e| redis::RedisError::from(std::io::Error::other(e)))?;
            redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await?;
        }
        Ok(())
    };
    tokio::time::timeout(PUBLISH_TIMEOUT, publish)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "Redis did not answer in time",
            )))
        })
}

async fn pause(backoff: &mut Duration, cancel: &CancellationToken) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

async fn publish(client: redis::Client, origin: String, bus: Bus, cancel: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    let mut rx = bus.subscribe_local();
    loop {
        let connected = tokio::select! {
            _ = cancel.cancelled() => return,
            c = client.get_multiplexed_async_connection() => c,
        };
        let mut conn = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "Redis fan-out: cannot connect to publish; retrying");
                if !pause(&mut backoff, &cancel).await {
                    return;
                }
                // What happened meanwhile is not sent late.
                rx = rx.resubscribe();
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        loop {
            let got = tokio::select! {
                _ = cancel.cancelled() => return,
                got = rx.recv() => got,
            };
            let event = match got {
                Ok(e) => e,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "Redis fan-out fell behind; events not sent to other instances"
                    );
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            if event.channel == Channel::MetricsUpdate {
                continue;
            }
            let payload = match serde_json::to_string(&Envelope {
                origin: origin.clone(),
                event: (*event).clone(),
            }) {
                Ok(p) => p,
                Err(_) => continue,
            };
            let sent = tokio::time::timeout(
                PUBLISH_TIMEOUT,
                redis::cmd("PUBLISH")
                    .arg(CHANNEL)
                    .arg(payload)
                    .query_async::<i64>(&mut conn),
            )
            .await;
            match sent {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Redis fan-out: publish failed; reconnecting");
                    break;
                }
                Err(_) => {
                    tracing::warn!("Redis fan-out: publish timed out; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn relay(client: redis::Client, origin: String, bus: Bus, cancel: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let connected = tokio::select! {
            _ = cancel.cancelled() => return,
            c = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(CHANNEL).await?;
                Ok::<_, redis::RedisError>(pubsub)
            } => c,
        };
        let pubsub = match connected {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "Redis fan-out: cannot subscribe; retrying");
                if !pause(&mut backoff, &cancel).await {
                    return;
                }
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        let mut messages = pubsub.into_on_message();
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return,
                msg = messages.next() => msg,
            };
            let Some(msg) = msg else {
                tracing::warn!("Redis fan-out: subscription lost; reconnecting");
                break;
            };
            match serde_json::from_slice::<Envelope>(msg.get_payload_bytes()) {
                Ok(envelope) if envelope.origin != origin => bus.relay(envelope.event),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "Redis fan-out: ignoring a message that is not an event")
                }
            }
        }
        if !pause(&mut backoff, &cancel).await {
            return;
        }
    }
}
