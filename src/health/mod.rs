//! Integration health: monitors (what to check, how often, what counts as up), the checks
//! themselves, and the condition language they are judged by. `monitor` validates definitions
//! from config and the API alike; `checks` runs one check and returns its verdict, with the
//! protocol-speaking kinds (tls, dns, postgres, redis, smtp) in `probes`; `conditions`
//! parses and evaluates `[SUBJECT] <op> <value>` conditions; `state` is the up/degraded/down
//! state machine with its thresholds; `store` owns the monitor, state, result and rollup tables;
//! `scheduler` runs every monitor on its interval and records the results in batches;
//! `extras` is provider monitors' slower, deeper collection on its own cadence; `gcp` holds
//! Google Cloud's service-account key, JWT-bearer grant and token cache.

pub mod checks;
pub mod conditions;
pub mod definition;
pub mod extras;
pub mod forecast;
pub mod gcp;
pub mod grid;
pub mod history;
pub mod monitor;
pub mod probes;
pub mod providers;
pub mod routes;
pub mod scheduler;
pub mod state;
pub mod store;

use crate::access::AccessError;
use crate::store::StoreError;

/// Failures of the health domain; the HTTP layer maps them in one place.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error(transparent)]
    Invalid(#[from] monitor::Invalid),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::webhooks::queue::QueueError> for HealthError {
    fn from(e: crate::webhooks::queue::QueueError) -> Self {
        match e {
            crate::webhooks::queue::QueueError::Store(s) => HealthError::Store(s),
            other => HealthError::Internal(other.to_string()),
        }
    }
}

impl From<AccessError> for HealthError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Store(s) => HealthError::Store(s),
            other => HealthError::Internal(other.to_string()),
        }
    }
}

use checks::CheckResult;
use monitor::Monitor;

/// Runs one check (token kinds with the access tokens in `tokens`) of every monitor in `monitors` whose name is `only` (all when `None`), at most
/// `concurrency` at a time, returning results in the monitors' order.
pub async fn check_all(
    monitors: &[Monitor],
    only: Option<&str>,
    concurrency: usize,
    tokens: &crate::tokens::Vault,
) -> Vec<(Monitor, CheckResult)> {
    use futures_util::StreamExt;
    let client = checks::outbound();
    let chosen: Vec<Monitor> = monitors
        .iter()
        .filter(|m| only.is_none_or(|name| m.name == name))
        .cloned()
        .collect();
    futures_util::stream::iter(chosen)
        .map(|m| {
            let client = client.clone();
            async move {
                let result = checks::run_with(&m, &client, Some(tokens)).await;
                (m, result)
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await
}
