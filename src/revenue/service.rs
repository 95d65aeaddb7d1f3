//! The running Stripe connection: the client (when a key is configured), whether the MRR
//! history needs recomputing, and the connector's health as the pages show it (last sync,
//! last error, a refused key). One per application, in `AppState`.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use super::RevenueError;
use super::history::{self, Settings};
use super::records::{self, SyncProgress};
use super::stripe::client::{RetryPolicy, StripeClient};
use super::{events, sync};
use crate::config::StripeConfig;
use crate::store::{Store, now_ms};
use crate::usage::quota::Watch;

type Result<T, E = RevenueError> = std::result::Result<T, E>;

/// Events are re-read from a little before the last catch-up started, so one created while
/// it ran is not missed; repeats are recognised by id.
const CATCH_UP_OVERLAP_MS: i64 = 5 * 60_000;
/// Stripe's `/v1/events` keeps 30 days; older gaps need a full backfill.
const EVENTS_WINDOW_MS: i64 = 30 * 86_400_000;

/// The connector's state for the pages and the health grid.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Stripe refused the key (401): nothing syncs until it is fixed.
    pub broken: bool,
    pub last_error: Option<String>,
    /// When the last sync (backfill or catch-up) finished, UTC ms.
    pub last_sync_at: Option<i64>,
}

pub struct Revenue {
    pub client: Option<StripeClient>,
    pub webhook_secret: String,
    plan_map: std::collections::BTreeMap<String, String>,
    /// Customers whose plan a sync changed are re-evaluated against their new quota.
    quota_watch: Arc<Watch>,
    settings: Settings,
    /// How often the background sync runs (zero: never); data older than twice this is stale.
    sync_every: std::time::Duration,
    dirty: AtomicBool,
    /// The day (UTC ms) of the earliest movement after the last recompute's day: a coupon
    /// ending, a scheduled change. Once it comes, the customers' stored MRR now is out of date
    /// and the history is recomputed even if nothing else changed.
    next_due: AtomicI64,
    health: Mutex<Health>,
    /// Bounds how many refused webhook deliveries are logged (a flood of forged requests
    /// must not become a flood of writes); the rest are only counted in the server log.
    pub rejected_log: governor::DefaultDirectRateLimiter,
    /// Held while a sync runs: one at a time.
    running: tokio::sync::Mutex<()>,
    /// Held while the history is recomputed, so that a caller who asks for a recompute
    /// (a sync) returns only once the history reflects what it wrote, even when the
    /// background job took the dirty flag first.
    recomputing: tokio::sync::Mutex<()>,
    /// Margins computed for the dashboard and the API, kept while their data is unchanged.
    pub margin: super::margin::Cache,
}

/// Whether the revenue figures are current, as the pages and `GET /api/v1/stripe/sync` show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SyncStatus {
    /// Whether a Stripe key is configured.
    pub connected: bool,
    /// Stripe refused the key (401): nothing syncs until it is fixed.
    pub broken: bool,
    /// A sync is running now.
    pub running: bool,
    /// Why the last sync failed, if it did.
    pub last_error: Option<String>,
    /// When the last successful sync finished, UTC ms (kept across restarts).
    pub last_sync_at: Option<i64>,
    /// Seconds since then.
    pub age_secs: Option<i64>,
    /// The figures may be out of date: the last sync failed, none has run, or it is older
    /// than twice the sync interval (a day when background sync is off). Stored data is kept
    /// and shown either way.
    pub stale: bool,
    /// Progress of the last sync, per resource.
    pub resources: Vec<SyncProgress>,
}

/// What `sync` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    Backfill(sync::Summary),
    CatchUp { events: usize },
}

impl Revenue {
    pub fn new(config: &StripeConfig, quota_watch: Arc<Watch>) -> Result<Self> {
        Self::with_retry(config, RetryPolicy::default(), quota_watch)
    }

    pub fn with_retry(
        config: &StripeConfig,
        retry: RetryPolicy,
        quota_watch: Arc<Watch>,
    ) -> Result<Self> {
        let client = if config.secret_key.is_empty() {
            None
        } else {
            let client = StripeClient::new(&config.api_base, &config.secret_key, retry)?;
            Some(match config.max_reads_per_second {
                0 => client,
                n => client.with_pace(n),
            })
        };
        Ok(Self {
            client,
            webhook_secret: config.webhook_secret.clone(),
            plan_map: config.plan_map.clone(),
            quota_watch,
            settings: Settings {
                reporting_currency: config.reporting_currency.clone(),
                past_due_churn_days: config.past_due_churn_days,
            },
            sync_every: config.sync_interval.0,
            dirty: AtomicBool::new(true),
            next_due: AtomicI64::new(0),
            health: Mutex::new(Health::default()),
            running: tokio::sync::Mutex::new(()),
            rejected_log: governor::RateLimiter::direct(governor::Quota::per_second(
                std::num::NonZeroU32::MIN.saturating_add(4),
            )),
            recomputing: tokio::sync::Mutex::new(()),
            margin: Default::default(),
        })
    }

    pub fn reporting_currency(&self) -> &str {
        &self.settings.reporting_currency
    }

    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// While a key is configured and no sync has ever finished (the first backfill is running,
    /// or failed): the revenue figures are pending, with the objects fetched so far. `None`
    /// once a sync has finished (kept across restarts), or without a key.
    pub async fn first_sync_pending(
        &self,
        store: &Store,
    ) -> Result<Option<crate::overview::Pending>> {
        if self.client.is_none() || self.health().last_sync_at.is_some() {
            return Ok(None);
        }
        let progress = records::progress(store).await?;
        if progress
            .iter()
            .any(|p| p.resource == "events" && p.state == "done")
        {
            return Ok(None);
        }
        Ok(Some(crate::overview::Pending {
            source: "revenue".into(),
            objects: progress
                .iter()
                .filter(|p| p.resource != "events")
                .map(|p| p.fetched)
                .sum(),
        }))
    }

    /// The connection's state and the last sync's progress, as of `now` (UTC ms).
    pub async fn status(&self, store: &Store, now: i64) -> Result<SyncStatus> {
        let health = self.health();
        let resources = records::progress(store).await?;
        let last_sync_at = resources
            .iter()
            .filter(|p| p.resource == "events" && p.state == "done")
            .filter_map(|p| p.finished_at)
            .chain(health.last_sync_at)
            .max();
        let age_secs = last_sync_at.map(|t| (now - t).max(0) / 1000);
        let allowed = if self.sync_every.is_zero() {
            86_400
        } else {
            2 * self.sync_every.as_secs().max(30) as i64
        };
        let connected = self.client.is_some();
        Ok(SyncStatus {
            connected,
            broken: health.broken,
            running: self.running.try_lock().is_err(),
            stale: connected
                && (health.last_error.is_some() || age_secs.is_none_or(|a| a > allowed)),
            last_error: health.last_error,
            last_sync_at,
            age_secs,
            resources,
        })
    }

    fn set_health(&self, f: impl FnOnce(&mut Health)) {
        f(&mut self.health.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Recomputes the MRR history, and re-applies the plan map, if anything changed since the
    /// last time or a scheduled movement's day has come; returns whether it ran.
    pub async fn recompute_if_dirty(&self, store: &Store) -> Result<bool> {
        let _one_at_a_time = self.recomputing.lock().await;
        let now = now_ms();
        let due = now >= self.next_due.load(Ordering::Acquire);
        if !self.dirty.swap(false, Ordering::AcqRel) && !due {
            return Ok(false);
        }
        let done = async {
            let done = history::recompute(store, &self.settings, now).await?;
            self.next_due.store(
                history::next_scheduled_day(store)
                    .await?
                    .unwrap_or(i64::MAX),
                Ordering::Release,
            );
            self.apply_plan_map(store).await?;
            Ok::<_, RevenueError>(done)
        };
        match done.await {
            Ok(done) => {
                if !done.unreadable.is_empty() || done.unconverted > 0 {
                    tracing::warn!(
                        unreadable = done.unreadable.len(),
                        unconverted = done.unconverted,
                        "MRR history left out some subscription states"
                    );
                }
                Ok(true)
            }
            Err(e) => {
                self.mark_dirty();
                Err(e)
            }
        }
    }

    /// Puts customers on the plans their subscriptions map to (`stripe.plan_map`).
    pub async fn apply_plan_map(&self, store: &Store) -> Result<()> {
        for customer in super::plans::apply(store, &self.plan_map).await? {
            self.quota_watch.touch(&customer);
        }
        Ok(())
    }

    /// Starts [`Revenue::sync`] (not `--full`) on its own task, for the API and the page's
    /// button; progress shows in [`Revenue::status`]. Refused when no key is configured.
    pub fn sync_in_background(self: &Arc<Self>, store: &Store) -> Result<()> {
        if self.client.is_none() {
            return Err(RevenueError::NotConfigured);
        }
        let (me, store) = (self.clone(), store.clone());
        tokio::spawn(async move {
            if let Err(e) = me.sync(&store, false, &|_| {}).await {
                tracing::warn!(error = %e, "Stripe sync failed");
            }
        });
        Ok(())
    }

    /// Brings the store up to date with Stripe: a full backfill when asked, when nothing was
    /// synced yet, or when the last catch-up is older than Stripe keeps events; otherwise the
    /// events since the last catch-up. The MRR history is recomputed after.
    pub async fn sync(
        &self,
        store: &Store,
        full: bool,
        report: &(dyn Fn(&SyncProgress) + Send + Sync),
    ) -> Result<Synced> {
        let client = self.client.as_ref().ok_or(RevenueError::NotConfigured)?;
        let _running = self.running.try_lock().map_err(|_| RevenueError::Busy)?;
        let started = now_ms();
        let last = records::progress(store)
            .await?
            .into_iter()
            .find(|p| p.resource == "events" && p.state == "done");
        let result = match last {
            Some(p) if !full && started - p.started_at < EVENTS_WINDOW_MS => {
                let since = (p.started_at - CATCH_UP_OVERLAP_MS) / 1000;
                events::catch_up(store, client, since)
                    .await
                    .map(|(n, _)| Synced::CatchUp { events: n })
            }
            _ => sync::backfill(store, client, &self.settings.reporting_currency, report)
                .await
                .map(Synced::Backfill),
        };
        match &result {
            Ok(_) => {
                // Recompute before saying "synced" (the health's time and the "events"
                // progress row both say it), so that a page showing the sync time shows
                // figures that include what it brought.
                self.mark_dirty();
                let recomputing = std::time::Instant::now();
                let recomputed = self.recompute_if_dirty(store).await;
                tracing::info!(
                    elapsed_ms = recomputing.elapsed().as_millis() as u64,
                    "Stripe sync: MRR history recomputed"
                );
                records::set_progress(
                    store,
                    &SyncProgress {
                        resource: "events".into(),
                        state: "done".into(),
                        fetched: 0,
                        started_at: started,
                        finished_at: Some(now_ms()),
                        error: None,
                    },
                )
                .await?;
                self.set_health(|h| {
                    h.broken = false;
                    h.last_error = None;
                    h.last_sync_at = Some(now_ms());
                });
                recomputed?;
            }
            Err(e) => {
                let broken = matches!(e, RevenueError::Stripe(s) if s.is_unauthorized());
                let message = e.to_string();
                self.set_health(|h| {
                    h.broken = broken;
                    h.last_error = Some(message);
                });
            }
        }
        result
    }
}
