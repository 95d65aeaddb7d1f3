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
        "webhooks",
        Duration::from_millis(500),
        cancel.clone(),
        move || {
            let s = s.clone();
            async move {
                s.webhooks
                    .step(&s.store, &s.master_key)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    ));
    // "0s" turns the evaluator off (an instance kept out of alerting, or a test that
    // evaluates at times of its own).
    if !state.config.alerts.evaluation_interval.is_zero() {
        let s = state.clone();
        let holder = format!("alerts-{}", uuid::Uuid::new_v4().simple());
        tracker.spawn(run_until_stopped(
            "alerts",
            state.config.alerts.evaluation_interval.0,
            cancel.clone(),
            move || {
                let (s, holder) = (s.clone(), holder.clone());
                async move {
                    crate::alerts::step(&s, &holder)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        ));
    }
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
    tracker.spawn(run_until_stopped(
        "realtime-metrics",
        crate::realtime::METRICS_EVERY,
        cancel.clone(),
        move || {
            let s = s.clone();
            async move {
                crate::realtime::metrics_step(&s)
                    .await
                    .map(|_| Outcome::Idle)
            }
        },
    ));
    tracker.spawn(health_scheduler(state.clone(), cancel.clone()));
    let s = state.clone();
    let stop = cancel.clone();
    tracker.spawn(async move {
        // The first step waits one interval: credentials are refreshed minutes ahead of expiry,
        // so nothing is lost, and a server that has just started (a test adding credentials,
        // an instance joining others) is not raced by a refresh it did not ask for.
        let interval = Duration::from_secs(60);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        run_until_stopped("tokens", interval, stop, move || {
            let s = s.clone();
            async move { tokens(&s).await }
        })
        .await
    });
    // Provider extras on their own cadence, apart from the health scheduler: slow, bounded
    // collections that must never delay a health check.
    let s = state.clone();
    // The provider client: guarded like every check, and following no redirects, so key
    // headers never reach another host.
    let client = state.health.outbound().no_redirect.clone();
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
    state.event_limiter.shrink();
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
        crate::usage::writer::DedupSettings::from_config(&state.config.ingest).window_ms,
    )
    .await
    .map_err(|e| e.to_string())?;
    if deleted > 0 {
        return Ok(Outcome::MoreWork);
    }
    // The history of monitors deleted by a process that stopped before removing it.
    let purged = crate::health::store::purge_deleted(&state.store)
        .await
        .map_err(|e| e.to_string())?;
    if purged > 0 {
        tracing::info!(rows = purged, "removed the history of deleted monitors");
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

/// Takes or renews the health scheduler's lease: `Some(held)`, or `None` when the store could
/// not say in time (which is not the same as someone else holding it).
async fn take(s: &AppState, holder: &str) -> Option<bool> {
    let ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(30_000);
    let attempt =
        crate::store::lease::acquire(&s.store, HEALTH_LEASE, holder, ttl, crate::store::now_ms());
    match tokio::time::timeout(LEASE_TTL / 3, attempt).await {
        Ok(Ok(held)) => Some(held),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not take or renew the health scheduler's lease");
            None
        }
        Err(_) => {
            tracing::warn!("taking or renewing the health scheduler's lease timed out");
            None
        }
    }
}

/// Lease on the health scheduler, and how long it lasts without renewal.
const HEALTH_LEASE: &str = "health-scheduler";
const LEASE_TTL: Duration = Duration::from_secs(30);

/// Runs the health scheduler while this instance holds its lease: with several instances on
/// one database, one checks the monitors and the others stand by, taking over within the
/// lease's 30 s once the holder stops renewing. A failure to start (the store unreadable) is
/// retried after a pause rather than leaving health unwatched.
async fn health_scheduler(s: AppState, stop: CancellationToken) {
    let holder = uuid::Uuid::new_v4().to_string();
    let mut standing_by = false;
    loop {
        if take(&s, &holder).await != Some(true) {
            if !standing_by {
                tracing::info!("another instance runs the health scheduler; standing by");
                standing_by = true;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(LEASE_TTL / 3) => continue,
            }
        }
        standing_by = false;
        // Renewed every 10 s. Another holder stops this run at once; a store that cannot
        // answer stops it only when the lease this instance last renewed is about to run out
        // (so a passing error does not restart the scheduler, and two instances never check
        // at once past the lease).
        let run_stop = stop.child_token();
        let renew = {
            let (s, holder, run_stop) = (s.clone(), holder.clone(), run_stop.clone());
            tokio::spawn(async move {
                let mut renewed = tokio::time::Instant::now();
                loop {
                    tokio::select! {
                        _ = run_stop.cancelled() => return,
                        _ = tokio::time::sleep(LEASE_TTL / 3) => {}
                    }
                    match take(&s, &holder).await {
                        Some(true) => renewed = tokio::time::Instant::now(),
                        Some(false) => {
                            tracing::warn!(
                                "another instance holds the health scheduler's lease; stopping checks here"
                            );
                            run_stop.cancel();
                            return;
                        }
                        None if renewed.elapsed() >= LEASE_TTL - LEASE_TTL / 3 => {
                            tracing::warn!(
                                "could not renew the health scheduler's lease in time; stopping checks here"
                            );
                            run_stop.cancel();
                            return;
                        }
                        None => {}
                    }
                }
            })
        };
        let run = crate::health::scheduler::run(
            s.store.clone(),
            s.master_key.clone(),
            s.config.health.concurrency,
            s.health.clone(),
            run_stop.clone(),
        )
        .await;
        run_stop.cancel();
        let _ = renew.await;
        if let Err(e) = run {
            tracing::warn!(error = %e, "health scheduler could not start; retrying in 30 s");
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
        if stop.is_cancelled() {
            // Handed over at once rather than when the lease runs out.
            let _ = crate::store::lease::release(&s.store, HEALTH_LEASE, &holder).await;
            return;
        }
    }
}

/// One tokens step: refreshes the OAuth credentials that are due, logs expiry warnings once
/// per expiry and reloads the health checks' vault.
pub async fn tokens(state: &AppState) -> Result<Outcome, String> {
    crate::tokens::job::refresh_due(
        &state.store,
        &state.master_key,
        &state.tokens,
        crate::store::now_ms(),
    )
    .await
    .map(|_| Outcome::Idle)
    .map_err(|e| e.to_string())
}
