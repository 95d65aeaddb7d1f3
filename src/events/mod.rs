//! The in-process event bus: what happened, as it happens, for whoever is listening now (the
//! Socket.IO and SSE streams, the Redis fan-out). It is not durable: a listener that falls
//! behind loses the oldest events and is told how many. Anything that must not be lost goes
//! through the webhook queue (`webhooks::queue::enqueue`) in the producer's transaction; the
//! producer publishes here after it commits.
//!
//! Besides the events clients see, the bus carries one internal message: a credential was
//! revoked ([`Revoked`], on [`Channel::Revocation`]), so that every open stream authenticated by
//! it ends at once — on this instance directly, on others through the Redis fan-out. The
//! streams act on it and never show it to a client.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

/// How many events a slow listener may be behind before it starts losing the oldest.
const CAPACITY: usize = 4096;

/// The channels the real-time clients see (Socket.IO event names, SSE `event:` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Headline figures when they change (throttled by the producer).
    MetricsUpdate,
    /// An alert fired, resolved or was acknowledged.
    Alert,
    /// An integration's state changed.
    SystemStatus,
    /// Ingested analytics events, sampled.
    UserActivity,
    /// Internal: a credential was revoked ([`Revoked`]). Never sent to clients.
    Revocation,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::MetricsUpdate => "metrics_update",
            Channel::Alert => "alert",
            Channel::SystemStatus => "system_status",
            Channel::UserActivity => "user_activity",
            Channel::Revocation => "revocation",
        }
    }

    /// Whether this channel is for the streams' own use, never for clients.
    pub fn is_internal(self) -> bool {
        self == Channel::Revocation
    }
}

/// What stopped being a valid credential. A stream compares it with the credential it was
/// opened with (see `realtime::Credential`) and ends when it names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revoked {
    /// An API key, by id.
    Key(i64),
    /// One session (sign-out), by the SHA-256 of its cookie as stored in `sessions.id_hash`.
    /// That hash is not a secret: it is what the database holds, and the cookie cannot be
    /// derived from it, so it may travel through Redis.
    Session(String),
    /// Every session of a user (password change, deletion), by user id.
    User(i64),
}

/// The event type of a revocation message.
const REVOKED: &str = "credential.revoked";

/// One event: its channel, its type (`alert.firing`, `integration.state_changed`…), when
/// (UTC ms) and its data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub channel: Channel,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: i64,
    pub data: Value,
}

impl Event {
    /// The revocation this event announces, if it is one.
    pub fn revoked(&self) -> Option<Revoked> {
        if self.channel != Channel::Revocation {
            return None;
        }
        serde_json::from_value(self.data.clone()).ok()
    }
}

/// The bus. Cheap to clone; publishing with nobody listening costs next to nothing.
#[derive(Clone, Debug)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
    /// Events that happened in this process only (not relayed from another instance): what
    /// the Redis fan-out forwards, so a relayed event never goes round again.
    local: broadcast::Sender<Arc<Event>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            tx: broadcast::channel(CAPACITY).0,
            local: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Bus {
    pub fn publish(&self, channel: Channel, kind: &str, data: Value) {
        self.send(Event {
            channel,
            kind: kind.to_string(),
            at: crate::store::now_ms(),
            data,
        });
    }

    /// Publishes an event as it is.
    pub fn send(&self, event: Event) {
        let event = Arc::new(event);
        // An error only says nobody is listening.
        let _ = self.local.send(event.clone());
        let _ = self.tx.send(event);
    }

    /// Announces that a credential was revoked; called after the revoking transaction
    /// committed, so a stream that re-checks its credential on hearing it finds it gone.
    pub fn revoke(&self, revoked: Revoked) {
        let data = serde_json::to_value(&revoked).unwrap_or(Value::Null);
        self.publish(Channel::Revocation, REVOKED, data);
    }

    /// Hands listeners here an event that happened on another instance; it is not forwarded
    /// again.
    pub fn relay(&self, event: Event) {
        let _ = self.tx.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Events published in this process only, for the fan-out to other instances.
    pub fn subscribe_local(&self) -> broadcast::Receiver<Arc<Event>> {
        self.local.subscribe()
    }

    /// How many listeners (streams) are attached, so producers can skip work nobody sees.
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_get_what_is_published_after_they_subscribe() {
        let bus = Bus::default();
        bus.publish(Channel::Alert, "alert.firing", serde_json::json!({"n": 0}));
        let mut rx = bus.subscribe();
        bus.publish(Channel::Alert, "alert.firing", serde_json::json!({"n": 1}));
        let e = rx.recv().await.unwrap();
        assert_eq!(e.data["n"], 1);
        assert_eq!(e.channel.as_str(), "alert");
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn relayed_events_reach_listeners_but_are_not_forwarded_again() {
        let bus = Bus::default();
        let mut all = bus.subscribe();
        let mut local = bus.subscribe_local();
        bus.relay(Event {
            channel: Channel::SystemStatus,
            kind: "integration.state_changed".into(),
            at: 1,
            data: serde_json::json!({}),
        });
        bus.publish(Channel::Alert, "alert.firing", serde_json::json!({}));
        assert_eq!(all.recv().await.unwrap().at, 1);
        assert_eq!(all.recv().await.unwrap().kind, "alert.firing");
        assert_eq!(local.recv().await.unwrap().kind, "alert.firing");
        assert!(local.try_recv().is_err());
    }

    #[tokio::test]
    async fn revocations_are_internal_and_round_trip() {
        let bus = Bus::default();
        let mut rx = bus.subscribe();
        bus.revoke(Revoked::Session("ab12".into()));
        bus.publish(
            Channel::Alert,
            "alert.firing",
            serde_json::json!({"key": 1}),
        );
        let e = rx.recv().await.unwrap();
        assert!(e.channel.is_internal());
        assert_eq!(e.revoked(), Some(Revoked::Session("ab12".into())));
        // Through JSON, as the Redis fan-out carries it.
        let back: Event = serde_json::from_str(&serde_json::to_string(&*e).unwrap()).unwrap();
        assert_eq!(back.revoked(), Some(Revoked::Session("ab12".into())));
        let other = rx.recv().await.unwrap();
        assert!(!other.channel.is_internal());
        assert_eq!(other.revoked(), None, "an ordinary event is no revocation");
    }
}
