//! Background jobs, supervised in one place. Each job is one step (`try_execute`, which tests
//! call directly) plus a loop that sleeps when idle, backs off after errors and stops when the
//! shared [`CancellationToken`] fires. Jobs that must run in one instance at a time when
//! several share a database run under a [`Lease`], the one place that takes named leases.

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
    // One holder name for every lease this instance takes.
    let holder = holder_id();
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
        let interval = state.config.alerts.evaluation_interval.0;
        tracker.spawn(Lease::new(crate::alerts::LEASE, &holder).run(
            state.store.clone(),
            cancel.clone(),
            move |run_stop| {
                let s = s.clone();
                run_leased_steps("alerts", interval, run_stop, move || {
                    let s = s.clone();
                    async move { crate::alerts::step(&s).await.map_err(|e| e.to_string()) }
                })
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
        let interval = state.config.stripe.sync_interval.0;
        tracker.spawn(Lease::new(STRIPE_SYNC_LEASE, &holder).run(
            state.store.clone(),
            cancel.clone(),
            move |run_stop| {
                let s = s.clone();
                run_leased_steps("stripe-sync", interval, run_stop, move || {
                    let s = s.clone();
                    async move { stripe_sync(&s).await }
                })
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
    tracker.spawn(health_scheduler(
        state.clone(),
        Lease::new(HEALTH_LEASE, &holder),
        cancel.clone(),
    ));
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
    tracker.spawn(Lease::new(RETENTION_LEASE, &holder).run(
        state.store.clone(),
        cancel,
        move |run_stop| {
            let s = s.clone();
            run_leased_steps("retention", Duration::from_secs(60), run_stop, move || {
                let s = s.clone();
                async move { retention(&s).await }
            })
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
/// long write lock), lets the rate limiter forget idle keys and folds the kept counts'
/// PostgreSQL change rows (migration 0034).
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
    crate::alerts::summary::fold_counts(&state.store)
        .await
        .map_err(|e| e.to_string())?;
    crate::usage::quota::fold_counts(&state.store)
        .await
        .map_err(|e| e.to_string())?;
    crate::usage::plans::fold_counts(&state.store)
        .await
        .map_err(|e| e.to_string())?;
    crate::webhooks::queue::fold_counts(&state.store)
        .await
        .map_err(|e| e.to_string())?;
    crate::revenue::drill::fold_counts(&state.store)
        .await
        .map_err(|e| e.to_string())?;
    crate::costs::report::fold_counts(&state.store)
        .await
        .map_err(|e| e.to_string())?;
    state
        .key_usage
        .flush(&state.store)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Outcome::Idle)
}

/// One retention step: prunes a batch of expired raw events and the oldest expired rollup
/// bucket of each granularity, running again at once while there is more to delete; then
/// expired health check results and rollups, and webhook delivery counts past two days.
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
    // Delivery counts by hour are read for the last day only; one instance prunes them.
    crate::webhooks::queue::prune_counts(&state.store, crate::store::now_ms())
        .await
        .map_err(|e| e.to_string())?;
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

/// How long a lease lasts without renewal (by the database's clock). With the renewal and
/// standby poll below, a standby takes over at most `LEASE_TTL + LEASE_POLL` (7 s) after its
/// holder's last renewal, so a job resumes within 10 s of its holder's death.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often a holder renews: one renewal may fail (a slow statement, a passing error) without
/// the work stopping, so a hiccup never hands a lease over (no thrashing); without a confirmed
/// renewal by its deadline the work stops before the lease can lapse.
const LEASE_RENEW: Duration = Duration::from_secs(2);
/// How often a standby tries to take an expired lease.
const LEASE_POLL: Duration = Duration::from_secs(1);
/// A holder stops its work this long before the lease it last renewed would run out, so it has
/// stopped before anyone else may start.
const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// A named lease held by this instance while it runs one singleton job. Every leased job goes
/// through [`Lease::run`], so they all share one takeover time and one set of rules: a standby
/// never takes an unexpired lease, the holder renews while it lives and stops its work when it
/// cannot renew before its own deadline, and a clean stop gives the lease back at once.
#[derive(Debug, Clone)]
pub struct Lease {
    name: &'static str,
    holder: String,
}

impl Lease {
    /// The lease `name` for the instance known as `holder` (see [`holder_id`]).
    pub fn new(name: &'static str, holder: &str) -> Self {
        Lease {
            name,
            holder: holder.to_string(),
        }
    }

    /// Takes or renews the lease: `Some(held)`, or `None` when the store could not say within
    /// `wait` (which is not the same as someone else holding it).
    async fn take(&self, store: &crate::store::Store, wait: Duration) -> Option<bool> {
        let ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(6_000);
        let attempt = crate::store::lease::acquire(store, self.name, &self.holder, ttl);
        match tokio::time::timeout(wait, attempt).await {
            Ok(Ok(held)) => Some(held),
            Ok(Err(e)) => {
                tracing::warn!(lease = self.name, error = %e, "could not take or renew a lease");
                None
            }
            Err(_) => {
                tracing::warn!(lease = self.name, "taking or renewing a lease timed out");
                None
            }
        }
    }

    /// Runs `work` whenever this instance holds the lease, until `stop` fires. `work` gets a
    /// token that fires when the lease is lost (or `stop` fires) and must return promptly
    /// then; it should otherwise run until that token fires. On `stop` the lease is given
    /// back after `work` returned, so a standby takes over at once with what it recorded.
    pub async fn run<F, Fut>(self, store: crate::store::Store, stop: CancellationToken, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut standing_by = false;
        loop {
            // The deadline is counted from before the statement is sent: the database writes
            // its expiry later, so this instance's deadline is never past it.
            let sent = tokio::time::Instant::now();
            if self.take(&store, LEASE_POLL).await != Some(true) {
                if !standing_by {
                    tracing::info!(
                        lease = self.name,
                        "another instance holds this job's lease; standing by"
                    );
                    standing_by = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(sent + LEASE_POLL) => continue,
                }
            }
            if standing_by {
                tracing::info!(lease = self.name, "took the lease over");
            }
            standing_by = false;
            let run_stop = stop.child_token();
            let renew = tokio::spawn(self.clone().keep(
                store.clone(),
                sent + LEASE_TTL - LEASE_MARGIN,
                run_stop.clone(),
            ));
            work(run_stop.clone()).await;
            run_stop.cancel();
            let _ = renew.await;
            if stop.is_cancelled() {
                if let Err(e) = crate::store::lease::release(&store, self.name, &self.holder).await
                {
                    tracing::warn!(lease = self.name, error = %e, "could not give a lease back; it lapses on its own");
                }
                return;
            }
        }
    }

    /// Renews the lease every `LEASE_RENEW` until `run_stop` fires, and fires it when the lease
    /// is lost: at once when another instance holds it, or when the store has not confirmed a
    /// renewal by `deadline` (a passing error does not stop the work, and two instances never
    /// work at once past a lease).
    async fn keep(
        self,
        store: crate::store::Store,
        mut deadline: tokio::time::Instant,
        run_stop: CancellationToken,
    ) {
        // Renewals are due every LEASE_RENEW from the last one sent, not from its answer, and
        // each may wait until the deadline: on a store whose one write lock another writer holds
        // for a second or two (a bulk write on SQLite), a renewal queued behind it still lands
        // in time, and the next one is not pushed back by the wait.
        let mut due = tokio::time::Instant::now() + LEASE_RENEW;
        loop {
            tokio::select! {
                _ = run_stop.cancelled() => return,
                _ = tokio::time::sleep_until(due) => {}
            }
            let sent = tokio::time::Instant::now();
            due = sent + LEASE_RENEW;
            let wait = deadline.saturating_duration_since(sent);
            match self.take(&store, wait).await {
                Some(true) => deadline = sent + LEASE_TTL - LEASE_MARGIN,
                Some(false) => {
                    tracing::warn!(
                        lease = self.name,
                        "another instance holds this job's lease; stopping it here"
                    );
                    run_stop.cancel();
                    return;
                }
                None if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(
                        lease = self.name,
                        "could not renew this job's lease in time; stopping it here"
                    );
                    run_stop.cancel();
                    return;
                }
                None => {}
            }
        }
    }
}

/// This instance's name in the `leases` table: its process id (so an operator, or a test,
/// can tell which process holds a lease) and a random part (so two apps in one process, as
/// in the tests, are two holders).
pub fn holder_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("pid{}-{}", std::process::id(), &random[..8])
}

/// `run_until_stopped` for a leased job: a step in progress is abandoned when the lease is
/// lost, so the job's work stops with the lease and not at the end of a long step.
async fn run_leased_steps<F, Fut>(
    name: &'static str,
    interval: Duration,
    run_stop: CancellationToken,
    step: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Outcome, String>>,
{
    let cancel = run_stop.clone();
    run_until_stopped(name, interval, run_stop, move || {
        let step = step();
        let cancel = cancel.clone();
        async move {
            tokio::select! {
                r = step => r,
                _ = cancel.cancelled() => Ok(Outcome::Idle),
            }
        }
    })
    .await
}

/// Lease on the health scheduler.
pub const HEALTH_LEASE: &str = "health-scheduler";
/// Lease on the periodic Stripe sync: one instance polls Stripe.
pub const STRIPE_SYNC_LEASE: &str = "stripe-sync";
/// Lease on retention: one instance prunes, so two never delete the same batches.
pub const RETENTION_LEASE: &str = "retention";

/// Runs the health scheduler while this instance holds its lease: with several instances on
/// one database, one checks the monitors and the others stand by. A failure to start (the store
/// unreadable) is retried after a pause rather than leaving health unwatched.
async fn health_scheduler(s: AppState, lease: Lease, stop: CancellationToken) {
    let store = s.store.clone();
    lease
        .run(store, stop, move |run_stop| {
            let s = s.clone();
            async move {
                while !run_stop.is_cancelled() {
                    let run = crate::health::scheduler::run(
                        s.store.clone(),
                        s.master_key.clone(),
                        s.config.health.concurrency,
                        s.health.clone(),
                        run_stop.clone(),
                    )
                    .await;
                    if let Err(e) = run {
                        tracing::warn!(error = %e, "health scheduler could not start; retrying in 30 s");
                        tokio::select! {
                            _ = run_stop.cancelled() => {}
                            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                        }
                    }
                }
            }
        })
        .await
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
