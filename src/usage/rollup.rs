//! Usage rollups: per minute, hour and day, counts and sums by customer, app, type, endpoint
//! category, provider, sku and unit: cost and unpriced counts for `provider.usage`, status
//! classes, summed latency and a latency histogram for `api.request`. The writer folds the events it
//! actually inserted (never duplicates) into a [`Rollups`] and upserts it in the same
//! transaction, so rollups always agree with the raw events.

use std::collections::HashMap;

use super::event::NewEvent;
use crate::args;
use crate::store::{StoreError, Tx, Value, multi_row_insert};

// The upserts' column lists and conflict clauses, as macros so that both backends' statements
// are assembled from the same literals (`multi_row_insert` for PostgreSQL, `concat!` for
// SQLite's single-row statements).
macro_rules! rollup_columns {
    () => {
        "usage_rollups (granularity, bucket, subject, source, type, category, provider, sku, \
         unit, events, quantity, cost_nano, unpriced, status_2xx, status_3xx, status_4xx, \
         status_5xx, duration_ms_sum, lat_50, lat_100, lat_250, lat_500, lat_1000, lat_2500, \
         lat_5000, lat_inf)"
    };
}

macro_rules! rollup_conflict {
    () => {
        "ON CONFLICT (granularity, bucket, subject, source, type, category, provider, sku, unit) \
         DO UPDATE SET \
         events = usage_rollups.events + excluded.events, \
         quantity = usage_rollups.quantity + excluded.quantity, \
         cost_nano = usage_rollups.cost_nano + excluded.cost_nano, \
         unpriced = usage_rollups.unpriced + excluded.unpriced, \
         lat_50 = usage_rollups.lat_50 + excluded.lat_50, \
         lat_100 = usage_rollups.lat_100 + excluded.lat_100, \
         lat_250 = usage_rollups.lat_250 + excluded.lat_250, \
         lat_500 = usage_rollups.lat_500 + excluded.lat_500, \
         lat_1000 = usage_rollups.lat_1000 + excluded.lat_1000, \
         lat_2500 = usage_rollups.lat_2500 + excluded.lat_2500, \
         lat_5000 = usage_rollups.lat_5000 + excluded.lat_5000, \
         lat_inf = usage_rollups.lat_inf + excluded.lat_inf, \
         status_2xx = usage_rollups.status_2xx + excluded.status_2xx, \
         status_3xx = usage_rollups.status_3xx + excluded.status_3xx, \
         status_4xx = usage_rollups.status_4xx + excluded.status_4xx, \
         status_5xx = usage_rollups.status_5xx + excluded.status_5xx, \
         duration_ms_sum = usage_rollups.duration_ms_sum + excluded.duration_ms_sum"
    };
}

macro_rules! months_columns {
    () => {
        "usage_months (month, subject, calls, events, credits, cost_nano)"
    };
}

macro_rules! months_conflict {
    () => {
        "ON CONFLICT (month, subject) DO UPDATE SET \
         calls = usage_months.calls + excluded.calls, \
         events = usage_months.events + excluded.events, \
         credits = usage_months.credits + excluded.credits, \
         cost_nano = usage_months.cost_nano + excluded.cost_nano"
    };
}

const UPSERT_ROLLUP_SQLITE: &str = concat!(
    "INSERT INTO ",
    rollup_columns!(),
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26) ",
    rollup_conflict!()
);

const UPSERT_MONTH_SQLITE: &str = concat!(
    "INSERT INTO ",
    months_columns!(),
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ",
    months_conflict!()
);

/// Bucket widths, in milliseconds, by granularity name.
pub const GRANULARITIES: &[(&str, i64)] =
    &[("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000)];

/// The same widths summed over all customers (rows with subject ''), in the same order.
pub const TOTAL_GRANULARITIES: &[(&str, i64)] = &[
    ("minute_total", 60_000),
    ("hour_total", 3_600_000),
    ("day_total", 86_400_000),
];

/// The all-customers counterpart of a per-customer granularity name.
pub fn total_of(granularity: &str) -> Option<&'static str> {
    let i = GRANULARITIES.iter().position(|(g, _)| *g == granularity)?;
    Some(TOTAL_GRANULARITIES[i].0)
}

/// Upper bounds (ms) of the latency histogram's buckets; a last, open-ended bucket follows.
pub const LATENCY_BOUNDS_MS: [f64; 7] = [50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];
const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// Columns per upserted row, and rows per statement (kept short: see the writer's note on
/// PostgreSQL and long VALUES lists).
const WIDTH: usize = 26;
const ROWS_PER_STATEMENT: usize = 32;

/// One rollup row's identity. Borrowed from the events being committed, so folding an event
/// allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key<'a> {
    granularity: &'static str,
    bucket: i64,
    subject: &'a str,
    source: &'a str,
    kind: &'a str,
    category: &'a str,
    provider: &'a str,
    sku: &'a str,
    unit: &'a str,
}

#[derive(Debug, Clone, Default)]
struct Totals {
    events: i64,
    quantity: f64,
    cost_nano: i64,
    unpriced: i64,
    status: [i64; 4],
    duration_ms: f64,
    latency: [i64; LATENCY_BUCKETS],
}

impl Totals {
    fn merge(&mut self, other: &Totals) {
        self.events += other.events;
        self.quantity += other.quantity;
        self.cost_nano = self.cost_nano.saturating_add(other.cost_nano);
        self.unpriced += other.unpriced;
        self.duration_ms += other.duration_ms;
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
    }
}

/// Index of the histogram bucket holding a duration.
pub fn latency_bucket(duration_ms: f64) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|b| duration_ms <= *b)
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// Rollup increments accumulated over one commit, per minute; hours, days and the
/// all-customer totals are derived from the minutes when written rather than counted six times
/// per event. Also each customer's increments for the calendar month (`usage_months`).
#[derive(Debug, Default)]
pub struct Rollups<'a> {
    minutes: HashMap<Key<'a>, Totals>,
    months: HashMap<(i64, &'a str), Month>,
    /// Day start → month start, so the calendar arithmetic runs once per day seen.
    month_of_day: HashMap<i64, i64>,
}

#[derive(Debug, Default)]
struct Month {
    calls: i64,
    events: i64,
    credits: f64,
    cost_nano: i64,
}

/// Start of the bucket of `width_ms` holding `time_ms` (UTC; works before 1970 too).
pub fn bucket_start(time_ms: i64, width_ms: i64) -> i64 {
    time_ms - time_ms.rem_euclid(width_ms)
}

impl<'a> Rollups<'a> {
    pub fn add(&mut self, e: &'a NewEvent) {
        let (granularity, width) = GRANULARITIES[0];
        let key = Key {
            granularity,
            bucket: bucket_start(e.time_ms, width),
            subject: e.subject.as_deref().unwrap_or(""),
            source: &e.source,
            kind: &e.kind,
            category: e.facts.category.as_deref().unwrap_or(""),
            provider: e.facts.provider.as_deref().unwrap_or(""),
            sku: e.facts.sku.as_deref().unwrap_or(""),
            unit: e.facts.unit,
        };
        if let Some(subject) = e.subject.as_deref() {
            let day = bucket_start(e.time_ms, 86_400_000);
            let month = *self
                .month_of_day
                .entry(day)
                .or_insert_with(|| super::quota::month_of(day).0);
            let m = self.months.entry((month, subject)).or_default();
            m.events += 1;
            m.calls += i64::from(e.facts.status.is_some());
            if e.facts.unit == "credit" {
                m.credits += e.facts.quantity;
            }
            m.cost_nano = m.cost_nano.saturating_add(e.facts.cost_nano.unwrap_or(0));
        }
        let t = self.minutes.entry(key).or_default();
        t.events += 1;
        t.quantity += e.facts.quantity;
        match e.facts.cost_nano {
            Some(c) => t.cost_nano = t.cost_nano.saturating_add(c),
            None if e.facts.provider.is_some() => t.unpriced += 1,
            None => {}
        }
        if let Some(status) = e.facts.status {
            t.duration_ms += e.facts.duration_ms;
            t.latency[latency_bucket(e.facts.duration_ms)] += 1;
            if let class @ 2..=5 = status / 100 {
                t.status[usize::from(class) - 2] += 1;
            }
        }
    }

    /// Minute increments plus the hour and day increments folded from them, and all three
    /// again summed over customers.
    fn all_granularities(minutes: HashMap<Key<'a>, Totals>) -> HashMap<Key<'a>, Totals> {
        let mut all = HashMap::with_capacity(minutes.len() * 4);
        for (key, totals) in &minutes {
            for (level, (granularity, width)) in GRANULARITIES.iter().enumerate() {
                let bucket = bucket_start(key.bucket, *width);
                if level > 0 {
                    all.entry(Key {
                        granularity,
                        bucket,
                        ..*key
                    })
                    .or_insert_with(Totals::default)
                    .merge(totals);
                }
                all.entry(Key {
                    granularity: TOTAL_GRANULARITIES[level].0,
                    bucket,
                    subject: "",
                    ..*key
                })
                .or_insert_with(Totals::default)
                .merge(totals);
            }
        }
        all.extend(minutes);
        all
    }

    /// [`Rollups::write`] on a direct SQLite connection (see `store::DirectSqlite`), one cached
    /// single-row upsert per rollup row.
    pub fn write_direct(self, tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
        let mut month = tx.prepare_cached(UPSERT_MONTH_SQLITE)?;
        for ((start, subject), m) in &self.months {
            month.execute(rusqlite::params![
                start,
                subject,
                m.calls,
                m.events,
                m.credits,
                m.cost_nano
            ])?;
        }
        let mut rollup = tx.prepare_cached(UPSERT_ROLLUP_SQLITE)?;
        for (k, t) in Self::all_granularities(self.minutes) {
            let [l0, l1, l2, l3, l4, l5, l6, l7] = t.latency;
            let [s2, s3, s4, s5] = t.status;
            rollup.execute(rusqlite::params![
                k.granularity,
                k.bucket,
                k.subject,
                k.source,
                k.kind,
                k.category,
                k.provider,
                k.sku,
                k.unit,
                t.events,
                t.quantity,
                t.cost_nano,
                t.unpriced,
                s2,
                s3,
                s4,
                s5,
                t.duration_ms,
                l0,
                l1,
                l2,
                l3,
                l4,
                l5,
                l6,
                l7
            ])?;
        }
        Ok(())
    }

    /// Adds the increments to the stored rollups inside `tx`.
    pub async fn write(self, tx: &mut Tx) -> Result<(), StoreError> {
        let months: Vec<((i64, &str), Month)> = self.months.into_iter().collect();
        for chunk in months.chunks(ROWS_PER_STATEMENT) {
            let sql = multi_row_insert(months_columns!(), 6, chunk.len(), months_conflict!());
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 6);
            for ((month, subject), m) in chunk {
                values.extend(args![
                    *month,
                    *subject,
                    m.calls,
                    m.events,
                    m.credits,
                    m.cost_nano
                ]);
            }
            tx.execute_assembled(sql, values).await?;
        }
        let rows: Vec<(Key, Totals)> = Self::all_granularities(self.minutes).into_iter().collect();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = multi_row_insert(rollup_columns!(), WIDTH, chunk.len(), rollup_conflict!());
            let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * WIDTH);
            for (k, t) in chunk {
                values.extend(args![
                    k.granularity,
                    k.bucket,
                    k.subject,
                    k.source,
                    k.kind,
                    k.category,
                    k.provider,
                    k.sku,
                    k.unit,
                    t.events,
                    t.quantity,
                    t.cost_nano,
                    t.unpriced,
                    t.status[0],
                    t.status[1],
                    t.status[2],
                    t.status[3],
                    t.duration_ms
                ]);
                values.extend(t.latency.iter().map(|n| Value::from(*n)));
            }
            tx.execute_assembled(sql, values).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_start_on_utc_boundaries() {
        let t = 1_795_433_875_123; // 2026-11-23 11:37:55.123 UTC
        assert_eq!(bucket_start(t, 60_000), 1_795_433_820_000);
        assert_eq!(bucket_start(t, 3_600_000), 1_795_431_600_000);
        assert_eq!(bucket_start(t, 86_400_000), 1_795_392_000_000);
        assert_eq!(bucket_start(-1, 60_000), -60_000);
    }
}
