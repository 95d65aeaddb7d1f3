//! Outgoing webhooks: endpoints that subscribe to opsdeck's events and to alert
//! notifications, the durable queue of deliveries to them (`queue`), signing per the Standard
//! Webhooks spec (`signing`), and the SSRF guard every outgoing notifier and webhook request
//! goes through (`guard`: link-local and metadata addresses always refused, private ones
//! unless allowed). The worker that sends each attempt and retries on a schedule comes next.
//!
//! Nothing here renders pages or answers HTTP requests; routes and pages call into it.

pub mod endpoints;
pub mod guard;
pub mod queue;
pub mod routes;
pub mod signing;
pub mod worker;
