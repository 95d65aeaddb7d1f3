//! Usage metering: CloudEvents ingest (validation, dedup, group-commit writer), rollups and
//! their retention, endpoint categories, plans, the customers on them and their quota states,
//! and the usage figures read back. Owns the `events`, `usage_rollups`, `plans`,
//! `customer_plans`, `quota_states` and `quota_state_changes` tables.

pub mod api;
pub mod categories;
pub mod dedup;
pub mod event;
pub mod plans;
pub mod quota;
pub mod report;
pub mod retention;
pub mod rollup;
pub mod routes;
pub mod writer;

use crate::access::AccessError;
use crate::store::StoreError;

/// Failures of the usage domain; the HTTP layer maps them in one place.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::webhooks::queue::QueueError> for UsageError {
    fn from(e: crate::webhooks::queue::QueueError) -> Self {
        match e {
            crate::webhooks::queue::QueueError::Store(s) => UsageError::Store(s),
            other => UsageError::Invalid(other.to_string()),
        }
    }
}

impl From<AccessError> for UsageError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Store(s) => UsageError::Store(s),
            other => UsageError::Invalid(other.to_string()),
        }
    }
}
