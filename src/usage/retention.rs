//! Retention: raw events received more than `retention.raw_days` ago, SQLite's dedup keys older
//! than the dedup window, and rollups, month totals and recorded quota state changes older than
//! `retention.rollup_days`, are deleted by the background job, a small batch per step so that
//! pruning never holds the database's write lock for long.

use crate::args;
use crate::store::{Store, StoreError};

/// Raw events deleted per step.
const EVENT_BATCH: i64 = 2_000;
/// Rows of dedup keys (one per ingest commit) deleted per step.
const DEDUP_BATCH: i64 = 1_000;

const DAY_MS: i64 = 86_400_000;

/// One pruning step at `now_ms`; returns how many rows it deleted (0 when nothing is due).
pub async fn prune_step(
    store: &Store,
    now_ms: i64,
    raw_days: u32,
    rollup_days: u32,
    dedup_window_ms: i64,
) -> Result<u64, StoreError> {
    // Events go in receipt order: receipt times rise with `seq`, so only the oldest rows can
    // be due and looking at them needs no index beyond the primary key (an index on event
    // time cost every insert a B-tree entry). A history import is kept `raw_days` from when
    // it arrived, like everything else.
    let raw_cutoff = now_ms - i64::from(raw_days) * DAY_MS;
    let mut deleted = store
        .execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM \
               (SELECT seq, received_at FROM events ORDER BY seq LIMIT $2) AS oldest \
             WHERE received_at < $1)",
            args![raw_cutoff, EVENT_BATCH],
        )
        .await?;
    if store.backend() == crate::store::Backend::Sqlite {
        // SQLite's dedup keys, likewise in the order they were appended.
        deleted += store
            .execute(
                "DELETE FROM event_dedup WHERE rowid IN (SELECT rowid FROM \
                   (SELECT rowid, received_at FROM event_dedup ORDER BY rowid LIMIT $2) \
                 WHERE received_at < $1)",
                args![now_ms.saturating_sub(dedup_window_ms), DEDUP_BATCH],
            )
            .await?;
    }
    // Rollups go one bucket at a time per granularity: the (granularity, bucket) index makes
    // finding the oldest bucket a seek.
    let rollup_cutoff = now_ms - i64::from(rollup_days) * DAY_MS;
    // Increments the writer still holds may belong to buckets past the cutoff (a history
    // import); written after this step they would bring those buckets back.
    store.settle().await;
    let rollup = super::rollup::GRANULARITIES
        .iter()
        .chain(super::rollup::TOTAL_GRANULARITIES);
    // The oldest bucket is found first and deleted by its value: nothing is written (and the
    // write lock is not taken) when nothing is due, and the delete is a seek on
    // (granularity, bucket). As one statement with the bucket as a subquery, SQLite walked
    // every row of the granularity holding the write lock: 45–60 s on a 5 GB store, during
    // which every other writer failed.
    for (granularity, _) in rollup {
        let (oldest,): (Option<i64>,) = store
            .fetch_one(
                "SELECT MIN(bucket) FROM usage_rollups WHERE granularity = $1 AND bucket < $2",
                args![*granularity, rollup_cutoff],
            )
            .await?;
        if let Some(bucket) = oldest {
            deleted += store
                .execute(
                    "DELETE FROM usage_rollups WHERE granularity = $1 AND bucket = $2",
                    args![*granularity, bucket],
                )
                .await?;
        }
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
    let (oldest,): (Option<i64>,) = store
        .fetch_one(
            "SELECT MIN(month) FROM usage_months WHERE month < $1",
            args![super::quota::month_of(rollup_cutoff).0],
        )
        .await?;
    if let Some(month) = oldest {
        deleted += store
            .execute("DELETE FROM usage_months WHERE month = $1", args![month])
            .await?;
    }
    Ok(deleted)
}
