//! Usage figures read back from the rollups (series, endpoint categories, status classes,
//! latency percentiles from the histograms, top customers) and the recent raw events, for
//! `GET /api/v1/usage` and the Usage page.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::UsageError;
use super::rollup::{GRANULARITIES, LATENCY_BOUNDS_MS, bucket_start};
use crate::args;
use crate::costs::report::change_pct;
use crate::store::Store;

type Result<T, E = UsageError> = std::result::Result<T, E>;

/// Most buckets one series may have.
pub const MAX_BUCKETS: i64 = 2000;

/// What to report on.
#[derive(Debug, Clone)]
pub struct Query {
    pub customer: Option<String>,
    /// [from, to) UTC milliseconds.
    pub from: i64,
    pub to: i64,
    /// `minute`, `hour` or `day`.
    pub interval: &'static str,
}

impl Query {
    /// Checks the range and interval, naming the problem.
    pub fn new(customer: Option<String>, from: i64, to: i64, interval: &str) -> Result<Self> {
        let (interval, width) = GRANULARITIES
            .iter()
            .find(|(g, _)| *g == interval)
            .copied()
            .ok_or_else(|| {
                UsageError::Invalid(format!(
                    "interval {interval:?} is not one of minute, hour, day"
                ))
            })?;
        if to <= from {
            return Err(UsageError::Invalid("from must be before to".into()));
        }
        let from = bucket_start(from, width);
        if (to - from) / width > MAX_BUCKETS {
            return Err(UsageError::Invalid(format!(
                "{interval} interval over this range gives more than {MAX_BUCKETS} points; use a \
                 coarser interval or a shorter range"
            )));
        }
        // Older minutes are not kept (see MINUTE_KEEP_MS): an empty series would read as no
        // usage.
        if interval == "minute" && from < super::rollup::minute_floor(crate::store::now_ms()) {
            return Err(UsageError::Invalid(
                "minute rollups are kept for the last 2 days; use interval=hour for an earlier \
                 range"
                    .into(),
            ));
        }
        if let Some(c) = &customer {
            super::plans::check_customer_id(c)?;
        }
        Ok(Self {
            customer,
            from,
            to,
            interval,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Point {
    /// Bucket start, UTC milliseconds.
    pub bucket: i64,
    /// API calls (`api.request` events).
    pub calls: i64,
    /// Calls answered 5xx.
    pub errors: i64,
    /// Every event, of any type.
    pub events: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Latency {
    pub avg_ms: Option<f64>,
    /// Percentiles estimated from the histogram: the upper bound of the bucket holding them
    /// (null for the open-ended last bucket).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Category {
    pub category: String,
    pub calls: i64,
    pub errors: i64,
    pub latency: Latency,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Totals {
    pub calls: i64,
    pub events: i64,
    pub status_2xx: i64,
    pub status_3xx: i64,
    pub status_4xx: i64,
    pub status_5xx: i64,
    /// 5xx share of calls, percent; null without calls.
    pub error_rate: Option<f64>,
    pub latency: Latency,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TopCustomer {
    pub customer: String,
    pub calls: i64,
    pub events: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RecentEvent {
    pub time: i64,
    pub source: String,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: Option<String>,
    pub data: Value,
    /// Cost in USD as an exact decimal string (priced provider.usage only).
    pub cost_usd: Option<String>,
}

/// Period-over-period change of the headline figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Change {
    /// Percent change of API calls; null when the previous period had none.
    pub calls_pct: Option<f64>,
    /// Percent change of events of every type; null when the previous period had none.
    pub events_pct: Option<f64>,
    /// Change of the 5xx error rate, in percentage points; null unless both periods had calls.
    pub error_rate_points: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Usage {
    pub customer: Option<String>,
    pub from: i64,
    pub to: i64,
    pub interval: String,
    pub totals: Totals,
    /// Start of the previous period of the same length, which ends at `from`.
    pub previous_from: i64,
    /// The same totals over the previous period.
    pub previous: Totals,
    pub change: Change,
    pub series: Vec<Point>,
    pub categories: Vec<Category>,
    /// Busiest customers this calendar month (only without a customer filter).
    pub top_customers: Vec<TopCustomer>,
}

/// Histogram counts → (p50, p95, p99) as bucket upper bounds.
fn percentiles(h: &[i64; 8]) -> (Option<f64>, Option<f64>, Option<f64>) {
    let total: i64 = h.iter().sum();
    let at = |q: f64| -> Option<f64> {
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil() as i64;
        let mut seen = 0;
        for (i, n) in h.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BOUNDS_MS.get(i).copied();
            }
        }
        None
    };
    (at(0.50), at(0.95), at(0.99))
}

fn latency(h: &[i64; 8], calls: i64, duration_sum: f64) -> Latency {
    let (p50, p95, p99) = percentiles(h);
    Latency {
        avg_ms: (calls > 0).then(|| (duration_sum / calls as f64 * 10.0).round() / 10.0),
        p50_ms: p50,
        p95_ms: p95,
        p99_ms: p99,
    }
}

const SUMS: &str = "CAST(SUM(CASE WHEN type = 'api.request' THEN events ELSE 0 END) AS BIGINT) AS calls, \
     CAST(SUM(status_5xx) AS BIGINT) AS errors, CAST(SUM(events) AS BIGINT) AS events, \
     CAST(SUM(status_2xx) AS BIGINT) AS s2, CAST(SUM(status_3xx) AS BIGINT) AS s3, \
     CAST(SUM(status_4xx) AS BIGINT) AS s4, CAST(SUM(status_5xx) AS BIGINT) AS s5, \
     CAST(SUM(duration_ms_sum) AS DOUBLE PRECISION) AS duration, CAST(SUM(lat_50) AS BIGINT) AS l0, \
     CAST(SUM(lat_100) AS BIGINT) AS l1, CAST(SUM(lat_250) AS BIGINT) AS l2, \
     CAST(SUM(lat_500) AS BIGINT) AS l3, CAST(SUM(lat_1000) AS BIGINT) AS l4, \
     CAST(SUM(lat_2500) AS BIGINT) AS l5, CAST(SUM(lat_5000) AS BIGINT) AS l6, \
     CAST(SUM(lat_inf) AS BIGINT) AS l7";

/// One group's sums: the dimension, calls, 5xx errors, all events, status classes, summed
/// duration and the latency histogram counts `l0`..`l7`.
struct RawRow {
    dim: String,
    calls: i64,
    errors: i64,
    events: i64,
    s2: i64,
    s3: i64,
    s4: i64,
    s5: i64,
    duration: f64,
    l0: i64,
    l1: i64,
    l2: i64,
    l3: i64,
    l4: i64,
    l5: i64,
    l6: i64,
    l7: i64,
}
crate::from_row!(RawRow {
    dim,
    calls,
    errors,
    events,
    s2,
    s3,
    s4,
    s5,
    duration,
    l0,
    l1,
    l2,
    l3,
    l4,
    l5,
    l6,
    l7
});

impl RawRow {
    fn histogram(&self) -> [i64; 8] {
        [
            self.l0, self.l1, self.l2, self.l3, self.l4, self.l5, self.l6, self.l7,
        ]
    }
}

/// Sums grouped by `dimension` (a column expression cast to text) over the query's range: one
/// customer's rows, or the all-customer totals.
async fn grouped(store: &Store, q: &Query, dimension: &str) -> Result<Vec<RawRow>> {
    store.settle().await;
    let (granularity, filter) = match q.customer {
        Some(_) => (q.interval, "subject = $4"),
        None => (
            super::rollup::total_of(q.interval).unwrap_or(q.interval),
            "subject = '' AND $4 IS NULL",
        ),
    };
    let sql = format!(
        "SELECT {dimension} AS dim, {SUMS} FROM usage_rollups WHERE granularity = $1 AND bucket >= $2 \
         AND bucket < $3 AND {filter} GROUP BY {dimension}"
    );
    Ok(store
        .fetch_all_assembled(sql, args![granularity, q.from, q.to, q.customer.clone()])
        .await?)
}

/// Calls, events, status classes and latency summed over `rows`.
fn totals_of(rows: &[RawRow]) -> Totals {
    let mut totals = Totals::default();
    let mut hist = [0i64; 8];
    let mut duration = 0.0;
    for r in rows {
        totals.calls += r.calls;
        totals.events += r.events;
        totals.status_2xx += r.s2;
        totals.status_3xx += r.s3;
        totals.status_4xx += r.s4;
        totals.status_5xx += r.s5;
        duration += r.duration;
        for (a, b) in hist.iter_mut().zip(r.histogram()) {
            *a += b;
        }
    }
    totals.error_rate = (totals.calls > 0)
        .then(|| (totals.status_5xx as f64 / totals.calls as f64 * 1000.0).round() / 10.0);
    totals.latency = latency(&hist, totals.calls, duration);
    totals
}

/// The usage report for `q`.
pub async fn usage(store: &Store, q: &Query) -> Result<Usage> {
    // The previous period of the same length, summed in one group (granularity is fixed by
    // the filter, so grouping by it yields a single row).
    let previous_q = Query {
        from: q.from - (q.to - q.from),
        to: q.from,
        ..q.clone()
    };
    // Independent reads, run at once on separate pool connections.
    let (by_bucket, previous, by_category, top_customers) = tokio::try_join!(
        grouped(store, q, "CAST(bucket AS TEXT)"),
        grouped(store, &previous_q, "granularity"),
        grouped(store, q, "category"),
        top_customers(store, q.customer.is_none()),
    )?;
    let mut series: Vec<Point> = by_bucket
        .iter()
        .map(|r| Point {
            bucket: r.dim.parse().unwrap_or_default(),
            calls: r.calls,
            errors: r.errors,
            events: r.events,
        })
        .collect();
    series.sort_by_key(|p| p.bucket);

    let totals = totals_of(&by_bucket);
    let previous = totals_of(&previous);
    let change = Change {
        calls_pct: change_pct(totals.calls, previous.calls),
        events_pct: change_pct(totals.events, previous.events),
        error_rate_points: totals
            .error_rate
            .zip(previous.error_rate)
            .map(|(now, before)| ((now - before) * 10.0).round() / 10.0),
    };

    let mut categories: Vec<Category> = by_category
        .into_iter()
        .filter(|r| r.calls > 0)
        .map(|r| Category {
            latency: latency(&r.histogram(), r.calls, r.duration),
            category: r.dim,
            calls: r.calls,
            errors: r.errors,
        })
        .collect();
    categories.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.category.cmp(&b.category)));

    Ok(Usage {
        customer: q.customer.clone(),
        from: q.from,
        to: q.to,
        interval: q.interval.into(),
        totals,
        previous_from: previous_q.from,
        previous,
        change,
        series,
        categories,
        top_customers,
    })
}

/// The busiest customers this calendar month, from the per-customer month totals (an index
/// walk, not a scan); nothing unless `wanted`.
async fn top_customers(store: &Store, wanted: bool) -> Result<Vec<TopCustomer>> {
    if !wanted {
        return Ok(Vec::new());
    }
    store.settle().await;
    let month = super::quota::month_of(crate::store::now_ms()).0;
    let rows: Vec<(String, i64, i64)> = store
        .fetch_all(
            "SELECT subject, calls, events FROM usage_months WHERE month = $1 \
             ORDER BY calls DESC, subject DESC LIMIT 20",
            args![month],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(customer, calls, events)| TopCustomer {
            customer,
            calls,
            events,
        })
        .collect())
}

/// Filters for the recent-events log.
#[derive(Debug, Clone, Default)]
pub struct RecentFilter {
    pub customer: Option<String>,
    pub kind: Option<String>,
    pub source: Option<String>,
    /// Only events before this sequence number (paging backwards).
    pub before_seq: Option<i64>,
}

/// One raw event as the events log reads it.
type EventRow = (
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<i64>,
);

/// The newest raw events matching `f`, newest first, with their sequence numbers.
pub async fn recent(
    store: &Store,
    f: &RecentFilter,
    limit: i64,
) -> Result<Vec<(i64, RecentEvent)>> {
    let rows = match (&f.customer, store.backend()) {
        (Some(customer), crate::store::Backend::Sqlite) => {
            recent_by_runs(store, customer, f, limit).await?
        }
        // PostgreSQL keeps the (subject, seq) index (see migration 0042); without a customer
        // the log walks the events newest first.
        _ => {
            let q = recent_query(
                "SELECT seq, time, source, event_id, type, subject, data, cost_nano FROM events",
                "",
                &[("subject = ?", f.customer.clone().map(Into::into))],
                f,
                f.before_seq,
                " ORDER BY seq DESC",
                limit,
            );
            store.fetch_all_assembled(q.sql, q.args).await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(seq, time, source, id, kind, subject, data, cost)| {
            (
                seq,
                RecentEvent {
                    time,
                    source,
                    id,
                    kind,
                    subject,
                    data: serde_json::from_str(&data).unwrap_or(Value::Null),
                    cost_usd: cost.map(|c| crate::money::format_scaled(c, crate::money::NANO, 2)),
                },
            )
        })
        .collect())
}

/// A customer's newest events on SQLite, found through their runs (see migration 0042): first
/// those of the commits not yet moved into `event_runs`, then, if the page is not full, the
/// older ones below the oldest already found. The two reads need no common snapshot: every
/// committed event is in one of the two tables, and the second read stops below what the first
/// returned, so a move between them can neither hide an event nor show one twice.
///
/// Both reads walk the runs newest first, each run's events newest first (`CROSS JOIN` keeps
/// the runs as the outer loop: left to itself SQLite read the recent runs by walking every
/// event backwards), and stop at the limit without sorting.
async fn recent_by_runs(
    store: &Store,
    customer: &str,
    f: &RecentFilter,
    limit: i64,
) -> Result<Vec<EventRow>> {
    // One read of `table`'s runs of the customer below `below`, at most `limit` events.
    let read = |table: &str, below: Option<i64>, limit: i64| {
        let q = recent_query(
            &format!(
                "SELECT e.seq, e.time, e.source, e.event_id, e.type, e.subject, e.data, \
                 e.cost_nano FROM {table} r \
                 CROSS JOIN events e ON e.seq BETWEEN r.first_seq AND r.last_seq"
            ),
            "e.",
            &[
                ("r.subject = ?", Some(customer.into())),
                ("r.first_seq < ?", below.map(Into::into)),
            ],
            f,
            below,
            " ORDER BY r.first_seq DESC, e.seq DESC",
            limit,
        );
        store.fetch_all_assembled::<EventRow>(q.sql, q.args)
    };
    let mut rows = read("event_runs_recent", f.before_seq, limit).await?;
    let missing = limit - rows.len() as i64;
    if missing > 0 {
        let below = rows.last().map(|r| r.0).or(f.before_seq);
        rows.extend(read("event_runs", below, missing).await?);
    }
    Ok(rows)
}

/// `head` with the given conditions, `f`'s type and source filters and `seq < before` (on the
/// events' columns, named with `events`, their alias and a dot, or ""), then `order` and the
/// limit. Only the filters given appear in the SQL, so each read can use the index that fits.
fn recent_query(
    head: &str,
    events: &str,
    leading: &[(&str, Option<crate::store::Value>)],
    f: &RecentFilter,
    before: Option<i64>,
    order: &str,
    limit: i64,
) -> crate::store::Assembled {
    let column = |c: &str| format!("{events}{c}");
    let mut q = crate::store::Assembled::new(head);
    let filters = leading
        .iter()
        .map(|(c, v)| (c.to_string(), v.clone()))
        .chain([
            (
                format!("{} = ?", column("type")),
                f.kind.clone().map(crate::store::Value::from),
            ),
            (
                format!("{} = ?", column("source")),
                f.source.clone().map(crate::store::Value::from),
            ),
            (
                format!("{} < ?", column("seq")),
                before.map(crate::store::Value::from),
            ),
        ]);
    for (condition, value) in filters {
        if let Some(v) = value {
            q.sql.push_str(if q.args.is_empty() {
                " WHERE "
            } else {
                " AND "
            });
            q.bind(&condition, v);
        }
    }
    q.sql.push_str(order);
    q.bind(" LIMIT ?", limit.into());
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_bucket_bounds() {
        let h = [50, 30, 10, 5, 3, 1, 1, 0];
        assert_eq!(percentiles(&h), (Some(50.0), Some(500.0), Some(2500.0)));
        assert_eq!(percentiles(&[0; 8]), (None, None, None));
        // Everything in the open-ended bucket has no upper bound to report.
        assert_eq!(percentiles(&[0, 0, 0, 0, 0, 0, 0, 4]).0, None);
    }
}
