//! Alerts: rules over the metrics the other domains record (`rules`, `metrics`), the evaluator
//! that moves each rule's alerts through pending → firing → resolved and notifies once per
//! group through the webhook queue (`engine`), acknowledgements, silences and maintenance
//! windows (`silences`), and the routes. Owns `alert_rules`, `alerts`, `alert_events` and
//! `alert_silences`.

pub mod engine;
pub mod list;
pub mod metrics;
pub mod routes;
pub mod rules;
pub mod silences;
pub mod summary;

#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    #[error(transparent)]
    Tokens(#[from] crate::tokens::TokensError),
    #[error(transparent)]
    Queue(#[from] crate::webhooks::queue::QueueError),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

use crate::app::AppState;
use crate::config::Config;
use crate::jobs::Outcome;
use crate::store::now_ms;

/// The evaluator's lease (`jobs::Lease`): one instance evaluates at a time, so one transition
/// is seen once.
pub const LEASE: &str = "alerts";

/// The run settings from config.
pub fn settings(config: &Config) -> engine::Settings {
    let base = config.server.public_url.trim_end_matches('/');
    engine::Settings {
        repeat_ms: i64::try_from(config.alerts.repeat_interval.0.as_millis()).unwrap_or(i64::MAX),
        alerts_url: if base.is_empty() {
            String::new()
        } else {
            format!("{base}/alerts")
        },
    }
}

/// What rules may name: the metrics `/metrics` exposes and the notifiers that exist.
pub async fn names(state: &AppState) -> Result<(Vec<String>, Vec<String>), AlertsError> {
    names_in(state, &state.metrics.render(state)).await
}

/// [`names`], with `/metrics` already rendered as `text`.
async fn names_in(state: &AppState, text: &str) -> Result<(Vec<String>, Vec<String>), AlertsError> {
    let prometheus = metrics::prometheus_names(text);
    let notifiers: Vec<(String,)> = state
        .store
        .fetch_all("SELECT name FROM webhook_endpoints", crate::args![])
        .await?;
    Ok((prometheus, notifiers.into_iter().map(|n| n.0).collect()))
}

/// Stores `[[alert_rules]]` and the built-in defaults (routed to `[alerts] default_notifiers`).
pub async fn sync_config(state: &AppState) -> Result<(), AlertsError> {
    let (prometheus, notifiers) = names(state).await?;
    let config = &state.config;
    for (i, n) in config.alerts.default_notifiers.iter().enumerate() {
        if !notifiers.contains(n) {
            return Err(AlertsError::Invalid {
                field: format!("alerts.default_notifiers[{i}]"),
                message: format!("no notifier is named {n:?}"),
            });
        }
    }
    rules::sync_config(
        &state.store,
        &config.alert_rules,
        &rules::defaults(&config.alerts.default_notifiers),
        &prometheus,
        &notifiers,
    )
    .await
}

/// One evaluator step: evaluates every rule and publishes what changed. The `alerts` job runs
/// it only while this instance holds [`LEASE`]; each transition is a conditional update, so
/// even a step overlapping another instance's records and notifies a transition once.
pub async fn step(state: &AppState) -> Result<Outcome, AlertsError> {
    // Rendered once: rules read their `opsdeck_…` metrics from it, and it says which exist.
    let text = state.metrics.render(state);
    let (prometheus, notifiers) = names_in(state, &text).await?;
    let rules = rules::load(&state.store, &prometheus, &notifiers).await?;
    let (report, events) = engine::run(
        &state.store,
        &rules,
        now_ms(),
        &text,
        &settings(&state.config),
    )
    .await?;
    if report.fired + report.resolved + report.reminded > 0 {
        tracing::info!(?report, "alerts evaluated");
    }
    for e in events {
        state.events.send(e);
    }
    Ok(Outcome::Idle)
}
