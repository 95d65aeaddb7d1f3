//! Outgoing webhooks: signing per the Standard Webhooks spec (`signing`) and the SSRF guard every
//! outgoing notifier and webhook request goes through (`guard`). The durable delivery queue and
//! its worker live beside them.
//!
//! Nothing here renders pages or answers HTTP requests; routes and pages call into it.

pub mod guard;
pub mod signing;
