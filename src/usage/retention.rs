//! Retention: raw events older than `retention.raw_days`, and rollups, month totals and recorded
//! quota state changes older than `retention.rollup_days`, are deleted by the background job, a small batch per step so that
//! pruning never holds the database's write lock for long.

use crate::args;
use crate::store::{Store, StoreError};

/// Raw events deleted per step.
const EVENT_BATCH: i64 = 2_000;

const DAY_MS: i64 = 86_400_000;

/// One pruning step at `now_ms`; returns how many rows it deleted (0 when nothing is due).
pub async fn prune_step(
    store: &Store,
    now_ms: i64,
    raw_days: u32,
    rollup_days: u32,
) -> Result<u64, StoreError> {
    let raw_cutoff = now_ms - i64::from(raw_days) * DAY_MS;
    let mut deleted = store
        .execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE time < $1 LIMIT $2)",
            args![raw_cutoff, EVENT_BATCH],
        )
        .await?;
    // Rollups go one bucket at a time per granularity: the (granularity, bucket) index makes
    // finding the oldest bucket a seek.
    let rollup_cutoff = now_ms - i64::from(rollup_days) * DAY_MS;
    let rollup = super::rollup::GRANULARITIES
        .iter()
        .chain(super::rollup::TOTAL_GRANULARITIES);
    for (granularity, _) in rollup {
        deleted += store
            .execute(
                "DELETE FROM usage_rollups WHERE granularity = $1 AND bucket =
                   (SELECT MIN(bucket) FROM usage_rollups WHERE granularity = $1 AND bucket < $2)",
                args![*granularity, rollup_cutoff],
            )
            .await?;
    }
    // Recorded quota state changes are history like the rollups, and kept as long. They are
    // written in time order, so looking only at the oldest ids keeps each step bounded.
    deleted += store
        .execute(
            "DELETE FROM quota_state_changes WHERE at < $1 AND id IN \
               (SELECT id FROM quota_state_changes ORDER BY id LIMIT $2)",
            args![rollup_cutoff, EVENT_BATCH],
        )
        .await?;
    deleted += store
        .execute(
            "DELETE FROM usage_months WHERE month =
               (SELECT MIN(month) FROM usage_months WHERE month < $1)",
            args![super::quota::month_of(rollup_cutoff).0],
        )
        .await?;
    Ok(deleted)
}
