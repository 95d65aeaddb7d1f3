//! Outgoing connections to addresses a user typed: the destination guard (`guard`) that every
//! such connection goes through — webhook and notifier deliveries, health checks of every
//! kind, OAuth token refreshes — so none of them reaches a cloud metadata service, and only
//! those the operator allows reach opsdeck's own host or private network.
//!
//! It decides and connects; it knows nothing of the domains that use it.

pub mod guard;
