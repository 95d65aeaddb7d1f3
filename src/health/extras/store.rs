//! The stored side of provider extras: owns `provider_extras` (one row per monitor and
//! collection slot) and writes the extras' readings into `provider_readings`. [`run_due`] is
//! the job step: it claims each due monitor's slot by inserting its row (the insert is the
//! lease, so instances sharing a database collect a slot once), runs the collections a few
//! at a time, and records each outcome in its own transaction, so one provider failing or
//! hanging never holds back another.

use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use super::{Collected, Ctx, Failure, Limits, Snapshot, collect, has_extras};
use crate::access::secrets::MasterKey;
use crate::args;
use crate::health::HealthError;
use crate::health::monitor::Kind;
use crate::store::{Store, multi_row_insert};

type Result<T, E = HealthError> = std::result::Result<T, E>;

/// Collections running at once: they are slow and bounded, and share the providers' rate
/// limits with the health checks.
const CONCURRENCY: usize = 4;

/// The start of the slot `now` falls in, for a monitor collected every `interval_ms`. Each
/// monitor's slots are offset by a hash of its id, so monitors with the same interval spread
/// over it instead of all calling out at once.
pub fn slot_of(now: i64, interval_ms: i64, monitor_id: i64) -> i64 {
    let interval_ms = interval_ms.max(1);
    let offset = monitor_id
        .wrapping_mul(2_654_435_761)
        .rem_euclid(interval_ms);
    now - (now - offset).rem_euclid(interval_ms)
}

/// One step of the `provider-extras` job: collects every provider monitor whose current slot
/// has not been claimed yet. Returns how many collections ran.
#[tracing::instrument(skip_all)]
pub async fn run_due(
    store: &Store,
    key: &MasterKey,
    client: &reqwest::Client,
    now: i64,
) -> Result<usize> {
    // Only the kinds with extras are opened: at 10,000 monitors, decrypting every definition
    // each step was this job's whole cost.
    let kinds: Vec<&'static str> = crate::health::providers::Provider::ALL
        .iter()
        .filter(|p| has_extras(**p))
        .map(|p| p.as_str())
        .collect();
    let monitors = crate::health::store::list_active_of_kinds(store, key, &kinds).await?;
    let mut claimed = Vec::new();
    for m in monitors {
        let (Kind::Provider(provider), Some(interval)) =
            (m.monitor.kind, m.monitor.extras_interval)
        else {
            continue;
        };
        if m.paused || !has_extras(provider) {
            continue;
        }
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        let slot = slot_of(now, interval_ms, m.id);
        let inserted = store
            .execute(
                "INSERT INTO provider_extras (monitor_id, slot, started_at, state) \
                 VALUES ($1, $2, $3, 'running') ON CONFLICT (monitor_id, slot) DO NOTHING",
                args![m.id, slot, now],
            )
            .await?;
        if inserted == 1 {
            claimed.push((m, provider, slot));
        }
    }
    let ran = claimed.len();
    let results: Vec<Result<()>> = futures_util::stream::iter(claimed)
        .map(|(m, provider, slot)| async move {
            let ctx = Ctx {
                client,
                provider,
                base: m.monitor.target.trim_end_matches('/').to_string(),
                account: m.monitor.account.clone().unwrap_or_default(),
                key: m
                    .monitor
                    .key
                    .as_ref()
                    .map(|k| k.expose().to_string())
                    .unwrap_or_default(),
                metric_types: m.monitor.metric_types.clone(),
                limits: Limits::for_timeout(m.monitor.timeout),
                now,
                whatsapp_senders: m.monitor.whatsapp_senders.clone(),
            };
            let outcome = collect(&ctx).await;
            if let Err(f) = &outcome {
                tracing::info!(monitor = %m.monitor.name, error = %f.why, "provider extras failed");
            }
            record(store, m.id, slot, &ctx, outcome).await
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(ran)
}

/// Records a collection's outcome on its claimed row, with its readings at its start time.
pub async fn record(
    store: &Store,
    monitor_id: i64,
    slot: i64,
    ctx: &Ctx<'_>,
    outcome: std::result::Result<Collected, Failure>,
) -> Result<()> {
    let finished = crate::store::now_ms();
    let mut tx = store.begin().await?;
    match outcome {
        Ok(c) => {
            let snapshot = serde_json::to_string(&c.snapshot)
                .map_err(|e| HealthError::Internal(e.to_string()))?;
            tx.execute(
                "UPDATE provider_extras SET state = 'ok', finished_at = $3, error = NULL, \
                 snapshot = $4 WHERE monitor_id = $1 AND slot = $2",
                args![monitor_id, slot, finished, ctx.scrub(&snapshot)],
            )
            .await?;
            let readings: Vec<&(String, f64)> =
                c.readings.iter().filter(|(_, v)| v.is_finite()).collect();
            for chunk in readings.chunks(200) {
                let sql = multi_row_insert(
                    "provider_readings (monitor_id, name, at, value)",
                    4,
                    chunk.len(),
                    "ON CONFLICT (monitor_id, name, at) DO UPDATE SET value = excluded.value",
                );
                let mut values = Vec::with_capacity(chunk.len() * 4);
                for (name, value) in chunk {
                    values.extend(args![monitor_id, name.as_str(), ctx.now, *value]);
                }
                tx.execute_assembled(sql, values).await?;
            }
        }
        Err(f) => {
            let why: String = ctx.scrub(&f.why).chars().take(500).collect();
            tx.execute(
                "UPDATE provider_extras SET state = 'failed', finished_at = $3, error = $4 \
                 WHERE monitor_id = $1 AND slot = $2",
                args![monitor_id, slot, finished, why],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// How the latest collection went.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Run {
    /// RFC 3339.
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `ok` or `failed`.
    pub state: String,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
}

/// A monitor's extras as the page and the JSON route show them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Latest {
    /// Seconds between collections; `null` when extras are off for the monitor.
    pub interval_s: Option<u64>,
    /// The latest finished collection, successful or not.
    pub last_run: Option<Run>,
    /// When the snapshot and readings below were collected (RFC 3339).
    pub collected_at: Option<String>,
    /// The latest successful collection's tables, tagged by `provider`.
    #[schema(value_type = Option<Object>)]
    pub snapshot: Option<Snapshot>,
    /// The latest successful collection's figures, by reading name.
    #[schema(value_type = Object)]
    pub readings: std::collections::BTreeMap<String, f64>,
}

/// The latest extras of monitor `id`.
pub async fn latest(store: &Store, id: i64, interval: Option<Duration>) -> Result<Latest> {
    let iso = crate::usage::quota::rfc3339;
    // The last good collection is read before the last finished run: a run finishing between
    // the two reads then shows in both, never as figures without their run.
    let ok: Option<(i64, Option<String>)> = store
        .fetch_optional(
            "SELECT started_at, snapshot FROM provider_extras \
             WHERE monitor_id = $1 AND state = 'ok' ORDER BY slot DESC LIMIT 1",
            args![id],
        )
        .await?;
    let last: Option<(i64, Option<i64>, String, Option<String>)> = store
        .fetch_optional(
            "SELECT started_at, finished_at, state, error FROM provider_extras \
             WHERE monitor_id = $1 AND state <> 'running' ORDER BY slot DESC LIMIT 1",
            args![id],
        )
        .await?;
    let mut readings = std::collections::BTreeMap::new();
    let mut snapshot = None;
    if let Some((at, text)) = &ok {
        snapshot = text
            .as_deref()
            .and_then(|t| serde_json::from_str::<Snapshot>(t).ok());
        // Extras readings are the dotted names; a health check in the same millisecond
        // writes only plain ones.
        let rows: Vec<(String, f64)> = store
            .fetch_all(
                "SELECT name, value FROM provider_readings WHERE monitor_id = $1 AND at = $2 \
                 AND name LIKE '%.%' ORDER BY name",
                args![id, *at],
            )
            .await?;
        readings.extend(rows);
    }
    Ok(Latest {
        interval_s: interval.map(|d| d.as_secs()),
        last_run: last.map(|(started, finished, state, error)| Run {
            started_at: iso(started),
            finished_at: finished.map(iso),
            state,
            error,
            duration_ms: finished.map(|f| f - started),
        }),
        collected_at: ok.map(|(at, _)| iso(at)),
        snapshot,
        readings,
    })
}

/// Deletes extras rows of slots before `before` (UTC ms); returns the rows deleted.
pub async fn prune(store: &Store, before: i64) -> Result<u64> {
    Ok(store
        .execute("DELETE FROM provider_extras WHERE slot < $1", args![before])
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_within_an_interval_and_spread_between_monitors() {
        let interval = 900_000;
        let now = 1_764_000_123_456;
        for id in [1, 2, 77, 10_000] {
            let slot = slot_of(now, interval, id);
            assert!(slot <= now && now < slot + interval, "{id}");
            // The same slot all through it, the next one after.
            assert_eq!(slot_of(slot, interval, id), slot);
            assert_eq!(slot_of(slot + interval - 1, interval, id), slot);
            assert_eq!(slot_of(slot + interval, interval, id), slot + interval);
        }
        assert_ne!(slot_of(now, interval, 1), slot_of(now, interval, 2));
    }
}
