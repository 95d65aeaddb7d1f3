//! Background jobs, supervised in one place. Each job is one step (`try_execute`, which tests
//! call directly) plus a loop that sleeps when idle, backs off after errors and stops when the
//! shared [`CancellationToken`] fires.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::AppState;

/// What a step did, so the loop knows whether to run again at once.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// There may be more to do right away.
    MoreWork,
    /// Nothing left; sleep for the job's interval.
    Idle,
}

/// Starts every job; the returned tracker lets the caller wait for them after cancelling.
pub fn spawn_all(state: AppState, cancel: CancellationToken) -> TaskTracker {
    let tracker = TaskTracker::new();
    let s = state.clone();
    tracker.spawn(run_until_stopped(
        "housekeeping",
        Duration::from_secs(60),
        cancel.clone(),
        move || {
            let s = s.clone();
            async move { housekeeping(&s).await }
        },
    ));
    let s = state.clone();
    tracker.spawn(run_until_stopped(
        "quota",
        state.config.usage.quota_check_interval.0,
        cancel.clone(),
        move || {
            let s = s.clone();
            async move { quota(&s).await }
        },
    ));
    let s = state.clone();
    tracker.spawn(run_until_stopped(
        "prices",
        Duration::from_secs(10),
        cancel.clone(),
        move || {
            let s = s.clone();
            async move {
                s.prices
                    .reload_if_changed(&s.store)
                    .await
                    .map(|_| Outcome::Idle)
                    .map_err(|e| e.to_string())
            }
        },
    ));
    let s = state.clone();
    tracker.spawn(run_until_stopped(
        "mrr",
        Duration::from_secs(5),
        cancel.clone(),
        move || {
            let s = s.clone();
            async move {
                s.revenue
                    .recompute_if_dirty(&s.store)
                    .await
                    .map(|_| Outcome::Idle)
                    .map_err(|e| e.to_string())
            }
        },
    ));
    if state.revenue.client.is_some() && !state.config.stripe.sync_interval.0.is_zero() {
        let s = state.clone();
        tracker.spawn(run_until_stopped(
            "stripe-sync",
            state.config.stripe.sync_interval.0,
            cancel.clone(),
            move || {
                let s = s.clone();
                async move { stripe_sync(&s).await }
            },
        ));
    }
    let s = state.clone();
    let stop = cancel.clone();
    tracker.spawn(async move {
        // The scheduler runs until cancelled; a failure to start (the store unreadable) is
        // retried after a pause rather than leaving health unwatched.
        loop {
            let run = crate::health::scheduler::run(
                s.store.clone(),
                s.master_key.clone(),
                s.config.health.concurrency,
                s.health.clone(),
                stop.clone(),
            );
            match run.await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "health scheduler could not start; retrying in 30 s")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    });
    // Provider extras on their own cadence, apart from the health scheduler: slow, bounded
    // collections that must never delay a health check.
    let s = state.clone();
    let client = crate::health::checks::client();
    tracker.spawn(run_until_stopped(
        "provider-extras",
        EXTRAS_TICK,
        cancel.clone(),
        move || {
            let (s, client) = (s.clone(), client.clone());
            async move { provider_extras(&s, &client).await }
        },
    ));
    let s = state.clone();
    tracker.spawn(run_until_stopped(
        "retention",
        Duration::from_secs(60),
        cancel,
        move || {
            let s = s.clone();
            async move { retention(&s).await }
        },
    ));
    tracker
}

/// How often the provider-extras job looks for monitors whose slot has come; a slot is at
/// least a minute, so a collection starts at most this late.
const EXTRAS_TICK: Duration = Duration::from_secs(15);

/// One provider-extras step: collects the extras of every provider monitor whose slot is due.
pub async fn provider_extras(
    state: &AppState,
    client: &reqwest::Client,
) -> Result<Outcome, String> {
    let ran = crate::health::extras::run_due(
        &state.store,
        &state.master_key,
        client,
        crate::store::now_ms(),
    )
    .await
    .map_err(|e| e.to_string())?;
    if ran > 0 {
        tracing::debug!(collections = ran, "collected provider extras");
    }
    Ok(Outcome::Idle)
}

/// Loops `step` until cancelled: again at once after `MoreWork`, after `interval` when idle,
/// and after an exponentially growing pause (capped at 5 minutes) when it fails.
pub async fn run_until_stopped<F, Fut>(
    name: &'static str,
    interval: Duration,
    cancel: CancellationToken,
    step: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Outcome, String>>,
{
    let mut failures: u32 = 0;
    loop {
        let pause = match step().await {
            Ok(Outcome::MoreWork) => {
                failures = 0;
                Duration::ZERO
            }
            Ok(Outcome::Idle) => {
                failures = 0;
                interval
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let backoff =
                    Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300));
                tracing::warn!(job = name, error = %e, retry_in_s = backoff.as_secs(), "job step failed");
                backoff
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One Stripe sync: a backfill the first time, the events since the last one after. A sync
/// already running (started from the API) is left to finish.
pub async fn stripe_sync(state: &AppState) -> Result<Outcome, String> {
    match state.revenue.sync(&state.store, false, &|_| {}).await {
        Ok(_) | Err(crate::revenue::RevenueError::Busy) => Ok(Outcome::Idle),
        Err(e) => Err(e.to_string()),
    }
}

/// One housekeeping step: drops expired sessions in small batches (so a backlog never holds a
/// long write lock) and lets the rate limiter forget idle keys.
#[tracing::instrument(skip_all)]
pub async fn housekeeping(state: &AppState) -> Result<Outcome, String> {
    const BATCH: i64 = 500;
    let pruned = crate::access::sessions::prune_expired(&state.store, BATCH)
        .await
        .map_err(|e| e.to_string())?;
    if pruned as i64 == BATCH {
        return Ok(Outcome::MoreWork);
    }
    state.api_limiter.shrink();
    state
        .key_usage
        .flush(&state.store)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Outcome::Idle)
}

/// One retention step: prunes a batch of expired raw events and the oldest expired rollup
/// bucket of each granularity, running again at once while there is more to delete; then
/// expired health check results and rollups.
#[tracing::instrument(skip_all)]
pub async fn retention(state: &AppState) -> Result<Outcome, String> {
    let r = &state.config.retention;
    let deleted = crate::usage::retention::prune_step(
        &state.store,
        crate::store::now_ms(),
        r.raw_days,
        r.rollup_days,
    )
    .await
    .map_err(|e| e.to_string())?;
    if deleted > 0 {
        return Ok(Outcome::MoreWork);
    }
    let checks = crate::health::store::prune(
        &state.store,
        crate::store::now_ms(),
        r.check_results_days,
        r.rollup_days,
    )
    .await
    .map_err(|e| e.to_string())?;
    if checks > 0 {
        tracing::debug!(rows = checks, "pruned old health check results");
    }
    // Extras runs are kept as long as check results (their readings are pruned with those).
    crate::health::extras::store::prune(
        &state.store,
        crate::store::now_ms() - i64::from(r.check_results_days) * 86_400_000,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(Outcome::Idle)
}

/// One quota step: re-evaluates the customers with new usage or a new plan since the last step
/// and records their state changes.
#[tracing::instrument(skip_all)]
pub async fn quota(state: &AppState) -> Result<Outcome, String> {
    let u = &state.config.usage;
    let changes = crate::usage::quota::evaluate(
        &state.store,
        &state.quota_watch,
        &u.default_plan,
        f64::from(u.quota_hysteresis_percent),
    )
    .await
    .map_err(|e| e.to_string())?;
    if changes > 0 {
        tracing::info!(changes, "quota states changed");
    }
    Ok(Outcome::Idle)
}
