//! Usage rollups: per minute, hour and day, counts and sums by customer, app, type, endpoint
//! category, provider, sku and unit: cost and unpriced counts for `provider.usage`, status
//! classes, summed latency and a latency histogram for `api.request`. The writer folds the events it
//! actually inserted (never duplicates) into a [`Rollups`] and upserts it in the same
//! transaction, so rollups always agree with the raw events.

// Seeded per process, so the keys (customer ids, sources, types from requests) cannot be
// chosen to collide.
use foldhash::{HashMap, HashMapExt as _};

use super::event::NewEvent;
use crate::store::{PG_STATEMENT_BYTES, StoreError, chunks_by_size};

// The upserts' column lists and conflict clauses, as macros so that both backends' statements
// are assembled from the same literals by `concat!` (SQLite's single-row statements,
// PostgreSQL's `UNNEST` ones).
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

/// The same upsert for a row whose cost rises (or falls): its cost after the upsert comes back,
/// so the writer can tell whether the customer's month crossed zero (`usage_month_counts`).
const UPSERT_MONTH_COSTED_SQLITE: &str = concat!(
    "INSERT INTO ",
    months_columns!(),
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ",
    months_conflict!(),
    " RETURNING cost_nano"
);

/// Adds to a month's count of customers with a cost (SQLite: one row per month).
const ADD_COSTED_SQLITE: &str = "INSERT INTO usage_month_counts (month, kind, n) \
     VALUES (?1, 'costed', ?2) ON CONFLICT (month, kind) DO UPDATE SET n = n + excluded.n";

/// PostgreSQL's month upsert. The rows whose cost changed are joined back to what the upsert
/// returned, and each month whose customers' costs crossed zero gets a +1 / -1 row in
/// `usage_month_counts`, in the same statement (no rows travel back).
const UPSERT_MONTHS_PG: &str = concat!(
    "WITH input AS (SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::int8[], \
     $5::float8[], $6::int8[]) AS i (month, subject, calls, events, credits, cost_nano)), \
     up AS (INSERT INTO ",
    months_columns!(),
    " SELECT * FROM input ",
    months_conflict!(),
    " RETURNING month, subject, cost_nano), \
     crossed AS (SELECT up.month, CASE WHEN up.cost_nano > 0 THEN 1 ELSE -1 END AS n \
       FROM up JOIN input ON input.month = up.month AND input.subject = up.subject \
       WHERE input.cost_nano <> 0 AND (up.cost_nano > 0) <> (up.cost_nano - input.cost_nano > 0)) \
     INSERT INTO usage_month_counts (month, kind, n) \
     SELECT month, 'costed', SUM(n) FROM crossed GROUP BY month HAVING SUM(n) <> 0"
);

/// PostgreSQL's rollup upsert. It is sent only the minute rows; each statement derives the
/// hour and day rows and the all-customer totals from them (minutes before `$26` only as hours
/// and days, see [`MINUTE_KEEP_MS`]), sums those per key (an upsert may
/// touch a row once) and writes them customer by customer, the totals (customer '') first.
/// Sending a third of the rows cut the rollup step's round trips by as much.
const UPSERT_ROLLUPS_PG: &str = concat!(
    "INSERT INTO ",
    rollup_columns!(),
    " SELECT g.granularity, g.bucket, g.subject, m.source, m.type, m.category, m.provider, \
     m.sku, m.unit, sum(m.events)::int8, sum(m.quantity), sum(m.cost_nano)::int8, \
     sum(m.unpriced)::int8, sum(m.s2)::int8, sum(m.s3)::int8, sum(m.s4)::int8, \
     sum(m.s5)::int8, sum(m.duration), sum(m.l0)::int8, sum(m.l1)::int8, sum(m.l2)::int8, \
     sum(m.l3)::int8, sum(m.l4)::int8, sum(m.l5)::int8, sum(m.l6)::int8, sum(m.l7)::int8 \
     FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::text[], $9::int8[], $10::float8[], $11::int8[], $12::int8[], $13::int8[], \
     $14::int8[], $15::int8[], $16::int8[], $17::float8[], $18::int8[], $19::int8[], \
     $20::int8[], $21::int8[], $22::int8[], $23::int8[], $24::int8[], $25::int8[]) \
     AS m (bucket, subject, source, type, category, provider, sku, unit, events, quantity, \
     cost_nano, unpriced, s2, s3, s4, s5, duration, l0, l1, l2, l3, l4, l5, l6, l7) \
     CROSS JOIN LATERAL (VALUES \
     ('minute', m.bucket, m.subject), \
     ('hour', m.bucket - mod(mod(m.bucket, 3600000) + 3600000, 3600000), m.subject), \
     ('day', m.bucket - mod(mod(m.bucket, 86400000) + 86400000, 86400000), m.subject), \
     ('minute_total', m.bucket, ''), \
     ('hour_total', m.bucket - mod(mod(m.bucket, 3600000) + 3600000, 3600000), ''), \
     ('day_total', m.bucket - mod(mod(m.bucket, 86400000) + 86400000, 86400000), '')) \
     AS g (granularity, bucket, subject) \
     WHERE g.granularity NOT IN ('minute', 'minute_total') OR g.bucket >= $26 \
     GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ORDER BY 3, 1, 2, 4, 5, 6, 7, 8, 9 ",
    rollup_conflict!()
);

/// Bucket widths, in milliseconds, by granularity name.
pub const GRANULARITIES: &[(&str, i64)] =
    &[("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000)];

/// How long minute rollups (per customer and the all-customer totals) are kept, in
/// milliseconds: the last two days. A minute is the usage API's finest interval and the alert
/// rules' short windows, both about the last hours; hour and day rollups are kept
/// `retention.rollup_days`. Increments for older minutes (a history import) go into their hour
/// and day rows only: with many customers nearly every imported event was a minute row of its
/// own at a random place in the table, a third of the import's writes for rows nothing reads.
pub const MINUTE_KEEP_MS: i64 = 2 * 86_400_000;

/// The oldest minute bucket kept at `now_ms` (see [`MINUTE_KEEP_MS`]).
pub fn minute_floor(now_ms: i64) -> i64 {
    bucket_start(now_ms - MINUTE_KEEP_MS, 60_000)
}

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

/// One rollup row's identity. Borrowed from the events being committed, so folding an event
/// allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
/// per event, and each customer's calendar month (`usage_months`) from the journal's minutes
/// when they are folded (see [`Deferred::absorb_with_months`]).
#[derive(Debug, Default)]
pub struct Rollups<'a> {
    minutes: HashMap<Key<'a>, Totals>,
}

#[derive(Debug, Default)]
struct Month {
    calls: i64,
    events: i64,
    credits: f64,
    cost_nano: i64,
}

/// Adds month totals to the stored ones on a direct SQLite connection, in primary key order so
/// that consecutive upserts land on neighbouring pages, and keeps each month's count of
/// customers with a cost.
fn upsert_months_direct(
    tx: &rusqlite::Transaction<'_>,
    months: &HashMap<(i64, Box<str>), Month>,
) -> Result<(), StoreError> {
    let mut rows: Vec<(&(i64, Box<str>), &Month)> = months.iter().collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut month = tx.prepare_cached(UPSERT_MONTH_SQLITE)?;
    let mut costed = tx.prepare_cached(UPSERT_MONTH_COSTED_SQLITE)?;
    // Months whose count of customers with a cost changes, and by how much.
    let mut crossed: HashMap<i64, i64> = HashMap::new();
    for ((start, subject), m) in rows {
        let row = rusqlite::params![start, subject, m.calls, m.events, m.credits, m.cost_nano];
        if m.cost_nano == 0 {
            // Most rows: no cost in this flush, so the customer's side of zero stays.
            month.execute(row)?;
            continue;
        }
        let after: i64 = costed.query_row(row, |r| r.get(0))?;
        let before = after.saturating_sub(m.cost_nano);
        if (after > 0) != (before > 0) {
            *crossed.entry(*start).or_default() += if after > 0 { 1 } else { -1 };
        }
    }
    let mut add = tx.prepare_cached(ADD_COSTED_SQLITE)?;
    for (start, n) in crossed {
        if n != 0 {
            add.execute(rusqlite::params![start, n])?;
        }
    }
    Ok(())
}

/// Start of the bucket of `width_ms` holding `time_ms` (UTC; works before 1970 too).
pub fn bucket_start(time_ms: i64, width_ms: i64) -> i64 {
    time_ms - time_ms.rem_euclid(width_ms)
}

impl<'a> Rollups<'a> {
    /// Room for the minute rows of `events` events without growing (at most one row each).
    pub fn for_events(events: usize) -> Self {
        Rollups {
            minutes: HashMap::with_capacity(events),
        }
    }

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
    /// again summed over customers; minutes before `minute_floor` only through their hours and
    /// days (see [`MINUTE_KEEP_MS`]).
    fn all_granularities(
        mut minutes: HashMap<Key<'a>, Totals>,
        minute_floor: i64,
    ) -> HashMap<Key<'a>, Totals> {
        let mut all = HashMap::with_capacity(minutes.len() * 4);
        for (key, totals) in &minutes {
            for (level, (granularity, width)) in GRANULARITIES.iter().enumerate() {
                let bucket = bucket_start(key.bucket, *width);
                if level == 0 && bucket < minute_floor {
                    continue;
                }
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
        minutes.retain(|k, _| k.bucket >= minute_floor);
        all.extend(minutes);
        all
    }

    /// The minute increments as one journal record (see [`Deferred`]).
    pub fn journal(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.minutes.len() * 200);
        for (k, t) in &self.minutes {
            encode_entry(&mut out, k, t);
        }
        out
    }
}

/// Upserts rows on a direct SQLite connection, one cached single-row statement each, in primary
/// key order so that consecutive upserts land on neighbouring pages.
fn upsert_direct<'a>(
    tx: &rusqlite::Transaction<'_>,
    rows: HashMap<Key<'a>, Totals>,
) -> Result<(), StoreError> {
    let mut rows: Vec<(Key<'a>, Totals)> = rows.into_iter().collect();
    rows.sort_unstable_by(|(a, _), (b, _)| {
        (a.granularity, a.subject, a.bucket, a).cmp(&(b.granularity, b.subject, b.bucket, b))
    });
    let mut rollup = tx.prepare_cached(UPSERT_ROLLUP_SQLITE)?;
    for (k, t) in rows {
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

/// Bytes of one journal entry's figures: [`Totals`]' seventeen numbers.
const TOTALS_BYTES: usize = 17 * 8;

/// Appends `k` (a minute key) and `t` to a journal record: the key's length (u16), the key
/// (bucket, then each text as u16 length and bytes), then the figures, all little-endian.
fn encode_entry(out: &mut Vec<u8>, k: &Key<'_>, t: &Totals) {
    let texts = [
        k.subject, k.source, k.kind, k.category, k.provider, k.sku, k.unit,
    ];
    let key_len = 8 + texts.iter().map(|s| 2 + s.len()).sum::<usize>();
    // Every text is at most a few hundred bytes (event attributes are capped at 512), so the
    // key always fits its u16 length.
    out.extend_from_slice(&(key_len as u16).to_le_bytes());
    out.extend_from_slice(&k.bucket.to_le_bytes());
    for s in texts {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let ints = [t.events, t.cost_nano, t.unpriced];
    for n in ints.into_iter().chain(t.status).chain(t.latency) {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&t.quantity.to_le_bytes());
    out.extend_from_slice(&t.duration_ms.to_le_bytes());
}

/// A journal record that does not parse: the store was written by something else.
#[derive(Debug, thiserror::Error)]
#[error("rollup journal entry {0} is malformed")]
pub struct BadJournal(usize);

fn decode_key(bytes: &[u8]) -> Option<Key<'_>> {
    let bucket = i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let mut rest = &bytes[8..];
    let mut texts = [""; 7];
    for t in &mut texts {
        let len = usize::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?));
        *t = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
        rest = &rest[2 + len..];
    }
    if !rest.is_empty() {
        return None;
    }
    let [subject, source, kind, category, provider, sku, unit] = texts;
    Some(Key {
        granularity: GRANULARITIES[0].0,
        bucket,
        subject,
        source,
        kind,
        category,
        provider,
        sku,
        unit,
    })
}

fn decode_totals(bytes: &[u8]) -> Totals {
    let n = |i: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        b
    };
    let int = |i| i64::from_le_bytes(n(i));
    Totals {
        events: int(0),
        cost_nano: int(1),
        unpriced: int(2),
        status: [int(3), int(4), int(5), int(6)],
        latency: std::array::from_fn(|j| int(7 + j)),
        quantity: f64::from_le_bytes(n(15)),
        duration_ms: f64::from_le_bytes(n(16)),
    }
}

/// Minute increments that are committed, as journal records in `rollup_journal`, but not yet
/// upserted into `usage_rollups` (SQLite). Upserting a commit's rollups cost more than inserting
/// its events: with many customers nearly every event is its own minute, hour and day row, three
/// upserts each. Held here across commits and written in bulk, a busy customer's minute is
/// upserted once per flush instead of once per commit, and the hour and day rows once for all
/// of its minutes. A crash loses nothing: the journal is replayed on start.
#[derive(Debug, Default)]
pub struct Deferred {
    /// Keys in their journal encoding, so they are owned without one allocation per text.
    minutes: HashMap<Box<[u8]>, Totals>,
    /// Month totals by (month start, customer), from the records absorbed with
    /// [`Deferred::absorb_with_months`] (the records with `rollup_journal.months = 1`).
    months: HashMap<(i64, Box<str>), Month>,
    /// Events folded in so far.
    events: u64,
    /// The first and last `rollup_journal` ids whose records are folded in (see
    /// [`Deferred::note_journal`]).
    journal: Option<(i64, i64)>,
}

impl Deferred {
    /// Adds one journal record, written for `events` events. A record that does not parse
    /// adds nothing.
    pub fn absorb(&mut self, record: &[u8], events: u64) -> Result<(), BadJournal> {
        self.absorb_record(record, events, false)
    }

    /// [`Deferred::absorb`], and the record's month totals too: each customer's minute entries
    /// summed into their calendar month, which gives exactly each customer's month of events
    /// (every event with a status has a latency bucket, credits are the quantity of `credit`
    /// entries). For records whose commit did not upsert its month totals (`months = 1`).
    pub fn absorb_with_months(&mut self, record: &[u8], events: u64) -> Result<(), BadJournal> {
        self.absorb_record(record, events, true)
    }

    fn absorb_record(
        &mut self,
        record: &[u8],
        events: u64,
        with_months: bool,
    ) -> Result<(), BadJournal> {
        let mut entries = Vec::new();
        let mut rest = record;
        while !rest.is_empty() {
            let bad = || BadJournal(entries.len());
            let len = rest.get(..2).ok_or_else(bad)?;
            let key_len = usize::from(u16::from_le_bytes([len[0], len[1]]));
            let key = rest.get(2..2 + key_len).ok_or_else(bad)?;
            decode_key(key).ok_or_else(bad)?;
            let totals = rest
                .get(2 + key_len..2 + key_len + TOTALS_BYTES)
                .ok_or_else(bad)?;
            entries.push((key, decode_totals(totals)));
            rest = &rest[2 + key_len + TOTALS_BYTES..];
        }
        if with_months {
            for (key, t) in &entries {
                // Decoded once already, above.
                let Some(k) = decode_key(key) else { continue };
                if k.subject.is_empty() {
                    continue;
                }
                let month = super::quota::month_of(k.bucket).0;
                let m = self.months.entry((month, k.subject.into())).or_default();
                m.events += t.events;
                m.calls += t.latency.iter().sum::<i64>();
                if k.unit == "credit" {
                    m.credits += t.quantity;
                }
                m.cost_nano = m.cost_nano.saturating_add(t.cost_nano);
            }
        }
        for (key, totals) in entries {
            match self.minutes.get_mut(key) {
                Some(t) => t.merge(&totals),
                None => {
                    self.minutes.insert(key.into(), totals);
                }
            }
        }
        self.events += events;
        Ok(())
    }

    /// Records that the journal row `id` is folded in, so the flush deletes exactly the rows
    /// it wrote (and never rows a failed recovery left for the next start).
    pub fn note_journal(&mut self, id: i64) {
        self.journal = Some(match self.journal {
            Some((first, last)) => (first.min(id), last.max(id)),
            None => (id, id),
        });
    }

    /// The journal rows folded in, first and last id.
    pub fn journal_rows(&self) -> Option<(i64, i64)> {
        self.journal
    }

    /// Events whose increments are held.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Minute rows held.
    pub fn rows(&self) -> usize {
        self.minutes.len()
    }

    /// Upserts everything held (minute, hour and day rows and their all-customer totals, and
    /// the month totals of the records absorbed with them) inside the caller's transaction;
    /// [`Deferred::clear`] once it has committed. Minutes older than [`MINUTE_KEEP_MS`] at
    /// `now_ms` go into their hours and days only.
    pub fn write_direct(
        &self,
        tx: &rusqlite::Transaction<'_>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        upsert_direct(
            tx,
            Rollups::all_granularities(self.decoded(), minute_floor(now_ms)),
        )?;
        upsert_months_direct(tx, &self.months)
    }

    /// Upserts everything held inside a PostgreSQL transaction (see [`upsert_minutes_pg`]),
    /// and the month totals of the records absorbed with them.
    pub async fn write_pg(
        &self,
        conn: &mut sqlx::PgConnection,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        upsert_minutes_pg(conn, self.decoded(), minute_floor(now_ms)).await?;
        let months: Vec<((i64, &str), &Month)> = self
            .months
            .iter()
            .map(|((m, who), t)| ((*m, &**who), t))
            .collect();
        upsert_months_pg(conn, months).await
    }

    /// The held minute rows with their keys decoded.
    fn decoded<'a, C: FromIterator<(Key<'a>, Totals)>>(&'a self) -> C {
        self.minutes
            .iter()
            // Every key was decoded once when absorbed.
            .filter_map(|(k, t)| Some((decode_key(k)?, t.clone())))
            .collect()
    }

    pub fn clear(&mut self) {
        self.minutes.clear();
        self.months.clear();
        self.events = 0;
        self.journal = None;
    }
}

impl Rollups<'_> {
    /// Whether any event was added.
    pub fn is_empty(&self) -> bool {
        self.minutes.is_empty()
    }
}

/// Adds month totals to the stored ones inside a PostgreSQL transaction: one statement per
/// chunk, every row's values travelling as one array per column and unpacked by `UNNEST`, so
/// the statement text never changes and is planned once per connection.
async fn upsert_months_pg(
    conn: &mut sqlx::PgConnection,
    mut months: Vec<((i64, &str), &Month)>,
) -> Result<(), StoreError> {
    // Rows go in (month, customer) order: two instances folding at once take the row locks of
    // rows both touch in one global order, so they never wait on each other in a cycle.
    months.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // Text plus each element's length word and the five fixed-width numbers.
    let month_size = |((_, who), _): &((i64, &str), &Month)| who.len() + 6 * 4 + 5 * 8;
    for chunk in chunks_by_size(&months, PG_STATEMENT_BYTES, month_size) {
        sqlx::query(UPSERT_MONTHS_PG)
            .bind(chunk.iter().map(|((m, _), _)| *m).collect::<Vec<_>>())
            .bind(chunk.iter().map(|((_, who), _)| *who).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, m)| m.calls).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, m)| m.events).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, m)| m.credits).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, m)| m.cost_nano).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Upserts minute increments, and the hour, day and all-customer rows PostgreSQL derives from
/// them (see UPSERT_ROLLUPS_PG), one statement per chunk of rows.
async fn upsert_minutes_pg(
    conn: &mut sqlx::PgConnection,
    mut rows: Vec<(Key<'_>, Totals)>,
    minute_floor: i64,
) -> Result<(), StoreError> {
    // Grouped by customer so each customer's hour and day rows come from one statement, and in
    // one global order so that two instances folding at once never wait on each other in a
    // cycle.
    rows.sort_unstable_by(|(a, _), (b, _)| (a.subject, a).cmp(&(b.subject, b)));
    let row_size = |(k, _): &(Key, Totals)| {
        k.subject.len()
            + k.source.len()
            + k.kind.len()
            + k.category.len()
            + k.provider.len()
            + k.sku.len()
            + k.unit.len()
            + 25 * 4
            + 18 * 8
    };
    for chunk in chunks_by_size(&rows, PG_STATEMENT_BYTES, row_size) {
        let mut c = RollupColumns::with_capacity(chunk.len());
        for (k, t) in chunk {
            c.push(k, t);
        }
        let mut q = sqlx::query(UPSERT_ROLLUPS_PG)
            .bind(c.bucket)
            .bind(c.subject)
            .bind(c.source)
            .bind(c.kind)
            .bind(c.category)
            .bind(c.provider)
            .bind(c.sku)
            .bind(c.unit)
            .bind(c.events)
            .bind(c.quantity)
            .bind(c.cost_nano)
            .bind(c.unpriced);
        for s in c.status {
            q = q.bind(s);
        }
        q = q.bind(c.duration_ms);
        for l in c.latency {
            q = q.bind(l);
        }
        q.bind(minute_floor).execute(&mut *conn).await?;
    }
    Ok(())
}

/// [`upsert_minutes_pg`]'s rows turned into one vector per column.
struct RollupColumns<'a> {
    bucket: Vec<i64>,
    subject: Vec<&'a str>,
    source: Vec<&'a str>,
    kind: Vec<&'a str>,
    category: Vec<&'a str>,
    provider: Vec<&'a str>,
    sku: Vec<&'a str>,
    unit: Vec<&'a str>,
    events: Vec<i64>,
    quantity: Vec<f64>,
    cost_nano: Vec<i64>,
    unpriced: Vec<i64>,
    status: [Vec<i64>; 4],
    duration_ms: Vec<f64>,
    latency: [Vec<i64>; LATENCY_BUCKETS],
}

impl<'a> RollupColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            bucket: Vec::with_capacity(n),
            subject: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            category: Vec::with_capacity(n),
            provider: Vec::with_capacity(n),
            sku: Vec::with_capacity(n),
            unit: Vec::with_capacity(n),
            events: Vec::with_capacity(n),
            quantity: Vec::with_capacity(n),
            cost_nano: Vec::with_capacity(n),
            unpriced: Vec::with_capacity(n),
            status: std::array::from_fn(|_| Vec::with_capacity(n)),
            duration_ms: Vec::with_capacity(n),
            latency: std::array::from_fn(|_| Vec::with_capacity(n)),
        }
    }

    fn push(&mut self, k: &Key<'a>, t: &Totals) {
        self.bucket.push(k.bucket);
        self.subject.push(k.subject);
        self.source.push(k.source);
        self.kind.push(k.kind);
        self.category.push(k.category);
        self.provider.push(k.provider);
        self.sku.push(k.sku);
        self.unit.push(k.unit);
        self.events.push(t.events);
        self.quantity.push(t.quantity);
        self.cost_nano.push(t.cost_nano);
        self.unpriced.push(t.unpriced);
        for (column, v) in self.status.iter_mut().zip(t.status) {
            column.push(v);
        }
        self.duration_ms.push(t.duration_ms);
        for (column, v) in self.latency.iter_mut().zip(t.latency) {
            column.push(v);
        }
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

    fn event(n: i64, subject: &str, kind: &str) -> NewEvent {
        NewEvent {
            source: "app".into(),
            id: format!("e{n}"),
            kind: kind.into(),
            subject: Some(subject.into()),
            time_ms: 1_795_433_875_123 + n * 7_000,
            data: "{}".into(),
            facts: super::super::event::Facts {
                provider: (kind == "provider.usage").then(|| "openai".into()),
                sku: (kind == "provider.usage").then(|| "gpt-4o/input".into()),
                unit: if kind == "provider.usage" {
                    "token"
                } else {
                    ""
                },
                quantity: if kind == "provider.usage" {
                    1.5 * n as f64
                } else {
                    0.0
                },
                cost_nano: (kind == "provider.usage" && n % 3 != 0).then_some(n * 1_000),
                status: (kind == "api.request").then_some(if n % 5 == 0 { 503 } else { 200 }),
                duration_ms: 12.5 * n as f64,
                endpoint: None,
                category: None,
            },
        }
    }

    fn events() -> Vec<NewEvent> {
        (0..40)
            .map(|n| {
                let kind = ["api.request", "provider.usage", "page.view"][n as usize % 3];
                event(n, ["cus_ä", "cus_2", "cus_3"][(n as usize / 3) % 3], kind)
            })
            .collect()
    }

    /// The held increments of several journal records, decoded, are the fold of all their events.
    #[test]
    fn journal_records_fold_to_the_same_totals() {
        let evs = events();
        let mut whole = Rollups::default();
        for e in &evs {
            whole.add(e);
        }
        let mut deferred = Deferred::default();
        for part in evs.chunks(13) {
            let mut r = Rollups::default();
            for e in part {
                r.add(e);
            }
            deferred.absorb(&r.journal(), part.len() as u64).unwrap();
        }
        assert_eq!(deferred.events(), evs.len() as u64);
        assert_eq!(deferred.rows(), whole.minutes.len());
        for (k, t) in &deferred.minutes {
            let key = decode_key(k).unwrap();
            let want = &whole.minutes[&key];
            assert_eq!(t.events, want.events, "{key:?}");
            assert_eq!(t.cost_nano, want.cost_nano);
            assert_eq!(t.unpriced, want.unpriced);
            assert_eq!(t.status, want.status);
            assert_eq!(t.latency, want.latency);
            assert_eq!(t.quantity, want.quantity);
            assert_eq!(t.duration_ms, want.duration_ms);
        }
    }

    /// The month totals the fold derives from journal records (minute entries summed per
    /// customer and month) are the events' own: events, calls (any status, inside the 2xx–5xx
    /// classes or not), credits and cost, across a month boundary.
    #[test]
    fn journal_records_give_the_commits_month_totals() {
        let mut evs = events();
        // 2026-11-30 23:59:50 UTC, so some events fall in December.
        let month_end = 1_796_083_190_000;
        for (i, e) in evs.iter_mut().enumerate() {
            if i % 4 == 1 {
                e.facts.unit = "credit";
                e.facts.quantity = 2.25 * i as f64;
            }
            if i % 7 == 0 {
                e.facts.status = Some(101);
            }
            if i >= 30 {
                e.time_ms = month_end + (i as i64 - 30) * 3_000;
            }
        }
        let mut whole = Rollups::default();
        let mut want_months: HashMap<(i64, Box<str>), Month> = HashMap::new();
        for e in &evs {
            whole.add(e);
            let Some(who) = e.subject.as_deref() else {
                continue;
            };
            let m = want_months
                .entry((super::super::quota::month_of(e.time_ms).0, who.into()))
                .or_default();
            m.events += 1;
            m.calls += i64::from(e.facts.status.is_some());
            if e.facts.unit == "credit" {
                m.credits += e.facts.quantity;
            }
            m.cost_nano += e.facts.cost_nano.unwrap_or(0);
        }
        let months_seen: std::collections::HashSet<i64> =
            want_months.keys().map(|(m, _)| *m).collect();
        assert_eq!(months_seen.len(), 2, "the events span two months");
        let mut deferred = Deferred::default();
        for part in evs.chunks(11) {
            let mut r = Rollups::default();
            for e in part {
                r.add(e);
            }
            deferred
                .absorb_with_months(&r.journal(), part.len() as u64)
                .unwrap();
        }
        assert_eq!(deferred.months.len(), want_months.len());
        for ((month, who), want) in &want_months {
            let got = &deferred.months[&(*month, who.clone())];
            assert_eq!(
                (got.events, got.calls, got.cost_nano),
                (want.events, want.calls, want.cost_nano),
                "{who} in {month}"
            );
            assert!(
                (got.credits - want.credits).abs() < 1e-9,
                "{who} in {month}"
            );
        }
        assert!(want_months.values().any(|m| m.credits > 0.0 && m.calls > 0));

        // Records absorbed without their months (those of older versions, whose commit
        // upserted them) add none.
        let mut plain = Deferred::default();
        plain.absorb(&whole.journal(), evs.len() as u64).unwrap();
        assert!(plain.months.is_empty());
        deferred.clear();
        assert!(deferred.months.is_empty());
    }

    #[test]
    fn a_truncated_journal_record_is_refused_and_changes_nothing_after_it() {
        let evs = events();
        let mut r = Rollups::default();
        for e in &evs {
            r.add(e);
        }
        let record = r.journal();
        for cut in [1, 9, record.len() / 2, record.len() - 1] {
            let mut d = Deferred::default();
            assert!(d.absorb(&record[..cut], 1).is_err(), "cut at {cut}");
            assert_eq!(
                (d.events(), d.rows()),
                (0, 0),
                "a refused record adds nothing"
            );
        }
    }

    /// Minutes before the floor are counted in their hours and days (per customer and in the
    /// totals) but get no minute rows of their own; minutes from the floor on get both.
    #[test]
    fn minutes_before_the_floor_count_only_in_hours_and_days() {
        let evs = events();
        let mut r = Rollups::default();
        for e in &evs {
            r.add(e);
        }
        let floor = bucket_start(evs[20].time_ms, 60_000);
        let all = Rollups::all_granularities(std::mem::take(&mut r.minutes), floor);
        let sum = |granularity: &str, keep: &dyn Fn(&Key) -> bool| -> i64 {
            all.iter()
                .filter(|(k, _)| k.granularity == granularity && keep(k))
                .map(|(_, t)| t.events)
                .sum()
        };
        let any = |_: &Key| true;
        let kept = evs.iter().filter(|e| e.time_ms >= floor).count() as i64;
        assert!(
            0 < kept && kept < evs.len() as i64,
            "the floor splits the events"
        );
        for g in ["minute", "minute_total"] {
            assert_eq!(sum(g, &any), kept, "{g}: only minutes from the floor on");
            assert_eq!(
                sum(g, &|k| k.bucket < floor),
                0,
                "{g}: nothing before the floor"
            );
        }
        for g in ["hour", "day", "hour_total", "day_total"] {
            assert_eq!(sum(g, &any), evs.len() as i64, "{g}: every event");
        }
    }
}
