//! Outgoing webhooks: endpoints that subscribe to opsdeck's events and to alert
//! notifications, the durable queue of deliveries to them (`queue`), signing per the Standard
//! Webhooks spec (`signing`), notifier kinds and their validation (`notifiers`), the per-kind
//! request shapes (`render`, `email`), and the worker that sends each attempt through the
//! destination guard (`crate::net::guard`) and retries on a schedule (`worker`).
//!
//! Nothing here renders pages or answers HTTP requests; routes and pages call into it.

pub mod email;
pub mod endpoints;
pub mod notifiers;
pub mod queue;
pub mod render;
pub mod routes;
pub mod signing;
pub mod worker;
