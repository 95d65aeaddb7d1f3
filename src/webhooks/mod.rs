//! Outgoing webhooks: endpoints that subscribe to opsdeck's events and to alert
//! notifications, the durable queue of deliveries to them (`queue.rs`), the worker that sends
//! each attempt signed per Standard Webhooks and retries on a schedule, and the guard that
//! keeps endpoints off link-local, metadata and (unless allowed) private addresses.

pub mod queue;
