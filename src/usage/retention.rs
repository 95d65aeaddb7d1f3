//! Retention: raw events received more than `retention.raw_days` ago (and the runs that found
//! them by customer), dedup keys older than the dedup window, minute rollups older than two
//! days, and hour and day rollups, month totals and recorded quota state changes older than
//! `retention.rollup_days`, are deleted by the background job, a small batch per statement so
//! that pruning never holds the database's write lock for long.

use crate::args;
use crate::store::{Store, StoreError};

/// Raw events deleted per step.
const EVENT_BATCH: i64 = 2_000;
/// Runs of a customer's events deleted per step.
const RUN_BATCH: i64 = 2_000;
/// Rows of dedup keys (one per ingest commit) deleted per step.
const DEDUP_BATCH: i64 = 1_000;
/// PostgreSQL's dedup keys (one per event) deleted per step.
const KEY_BATCH: i64 = 10_000;

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
    // The runs (see migration 0042) whose events are all gone, oldest first; with no events
    // left every run is. PostgreSQL's run tables stay empty.
    deleted += store
        .execute(
            "DELETE FROM event_runs WHERE (subject, first_seq) IN (SELECT subject, first_seq \
               FROM event_runs WHERE last_seq < COALESCE((SELECT MIN(seq) FROM events), $1) \
               ORDER BY last_seq LIMIT $2)",
            args![i64::MAX, RUN_BATCH],
        )
        .await?;
    let dedup_cutoff = now_ms.saturating_sub(dedup_window_ms);
    deleted += match store.backend() {
        // SQLite's dedup keys, likewise in the order they were appended.
        crate::store::Backend::Sqlite => {
            store
                .execute(
                    "DELETE FROM event_dedup WHERE rowid IN (SELECT rowid FROM \
                       (SELECT rowid, received_at FROM event_dedup ORDER BY rowid LIMIT $2) \
                     WHERE received_at < $1)",
                    args![dedup_cutoff, DEDUP_BATCH],
                )
                .await?
        }
        // PostgreSQL's, one per event, found through the block-range index on receipt time.
        crate::store::Backend::Postgres => {
            store
                .execute(
                    "DELETE FROM event_keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM event_keys \
                     WHERE received_at < $1 LIMIT $2))",
                    args![dedup_cutoff, KEY_BATCH],
                )
                .await?
        }
    };
    let rollup_cutoff = now_ms - i64::from(rollup_days) * DAY_MS;
    // Increments the writer still holds may belong to buckets past the cutoff (a history
    // import); written after this step they would bring those buckets back.
    store.settle().await;
    for ((granularity, width), (total, _)) in super::rollup::GRANULARITIES
        .iter()
        .zip(super::rollup::TOTAL_GRANULARITIES)
    {
        // Minute rows are kept two days whatever `rollup_days` says (see MINUTE_KEEP_MS).
        let cutoff = if *granularity == "minute" {
            rollup_cutoff.max(super::rollup::minute_floor(now_ms))
        } else {
            rollup_cutoff
        };
        deleted += prune_rollups(store, granularity, total, cutoff, *width).await?;
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
        // Its count of customers with a cost, kept by the ingest writer.
        store
            .execute(
                "DELETE FROM usage_month_counts WHERE month = $1",
                args![month],
            )
            .await?;
    }
    Ok(deleted)
}

/// Customers whose rollups one delete statement prunes.
const SUBJECT_BATCH: i64 = 500;

/// Deletes the rollups of `granularity` (per customer) and `total` (all customers) before
/// `cutoff` (at most 128 buckets' or a day's worth, whichever is longer, per call), once the
/// oldest of them is at least [`slack`] past it, so the walk below runs about once an hour per
/// granularity rather than every time a minute expires. The table is stored by
/// (granularity, subject, bucket) and has no index by time: one was a random insert per rollup
/// row, half of a history import's writes. The all-customer rows, in bucket order under subject
/// '', tell whether anything is due (every bucket with per-customer rows has them); the
/// per-customer rows go customer by customer, a batch per statement, walking the subjects by
/// seeks; the all-customer rows go last, so an interrupted walk is redone from the start by the
/// next step.
async fn prune_rollups(
    store: &Store,
    granularity: &str,
    total: &str,
    cutoff: i64,
    width: i64,
) -> Result<u64, StoreError> {
    let (oldest,): (Option<i64>,) = store
        .fetch_one(
            "SELECT MIN(bucket) FROM usage_rollups WHERE granularity = $1 AND subject = ''",
            args![total],
        )
        .await?;
    let Some(oldest) = oldest.filter(|oldest| *oldest < cutoff - slack(width)) else {
        return Ok(0);
    };
    // A bounded span per walk, so that a store with months due (retention shortened, or minute
    // rows kept by an older release) is pruned in steps of bounded size.
    let cutoff = cutoff.min(oldest + (width * 128).max(DAY_MS));
    let mut deleted = 0;
    let mut after = String::new();
    loop {
        // The next customers after `after`, one index seek each.
        let subjects: Vec<(String,)> = store
            .fetch_all(
                "WITH RECURSIVE walk (subject, n) AS ( \
                   SELECT (SELECT MIN(subject) FROM usage_rollups \
                           WHERE granularity = $1 AND subject > $2), 1 \
                   UNION ALL \
                   SELECT (SELECT MIN(subject) FROM usage_rollups \
                           WHERE granularity = $1 AND subject > walk.subject), walk.n + 1 \
                   FROM walk WHERE walk.subject IS NOT NULL AND walk.n < $3) \
                 SELECT subject FROM walk WHERE subject IS NOT NULL",
                args![granularity, after.clone(), SUBJECT_BATCH],
            )
            .await?;
        let Some((last,)) = subjects.last() else {
            break;
        };
        after = last.clone();
        let sql = format!(
            "DELETE FROM usage_rollups WHERE granularity = $1 AND bucket < $2 AND subject IN ({})",
            crate::store::placeholders(3, subjects.len())
        );
        let mut values = args![granularity, cutoff];
        values.extend(subjects.iter().map(|(s,)| s.clone().into()));
        deleted += store.execute_assembled(sql, values).await?;
        if (subjects.len() as i64) < SUBJECT_BATCH {
            break;
        }
    }
    deleted += store
        .execute(
            "DELETE FROM usage_rollups WHERE granularity = $1 AND subject = '' AND bucket < $2",
            args![total, cutoff],
        )
        .await?;
    Ok(deleted)
}

/// How far past the cutoff the oldest rollup of a granularity `width` ms wide may be before
/// a prune walks every customer: an hour for minutes and hours, a day for days.
fn slack(width: i64) -> i64 {
    width.max(3_600_000)
}
