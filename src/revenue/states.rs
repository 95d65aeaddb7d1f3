//! The states each subscription went through, valued for the MRR engine. Owns
//! `stripe_subscription_states` (what a recompute reads) and `stripe_subscription_echoes`
//! (states that repeat the state before them in everything the engine reads).
//!
//! Stripe sends `customer.subscription.updated` at every renewal, so a subscription billed
//! monthly gains a state a month that usually changes nothing: at 100k subscriptions × 24
//! months that is 2.4M rows for a recompute to read, most of them repeats. A repeat is kept
//! aside rather than dropped because an event can arrive late: a different state delivered
//! between two identical ones makes the second a change again, and it moves back. Every write
//! re-sorts the subscription's whole list, so the split never depends on arrival order.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::RevenueError;
use super::mrr;
use super::stripe::{convert, objects};
use crate::args;
use crate::store::{PG_STATEMENT_BYTES, Tx, chunks_by_size, multi_row_insert};

type Result<T, E = RevenueError> = std::result::Result<T, E>;

/// One stored row: a state of a subscription (from `state_at`, learnt from `source`) valued at
/// one moment `at`, in micro-minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    pub subscription_id: String,
    pub state_at: i64,
    pub source: String,
    pub at: i64,
    pub customer_id: String,
    pub status: String,
    pub currency: String,
    pub mrr: i64,
    /// The object an event carried, on an event state's first row: nothing else could
    /// rebuild it.
    pub data: Option<String>,
}
crate::from_row!(StateRow {
    subscription_id,
    state_at,
    source,
    at,
    customer_id,
    status,
    currency,
    mrr,
    data
});

const COLUMNS: &str = "subscription_id, state_at, source, at, customer_id, status, currency, \
     mrr, data";

/// How a later source overrides an earlier one at the same moment.
pub fn source_rank(source: &str) -> u8 {
    match source {
        "start" => 0,
        "invoice" => 1,
        "sync" => 2,
        _ => 3,
    }
}

/// The order the engine reads a subscription's rows in.
fn order_key(r: &StateRow) -> (i64, u8, &str, i64) {
    (r.state_at, source_rank(&r.source), &r.source, r.at)
}

/// The rows of subscription `object` in this state from `at` (ms) on, as learnt from
/// `source` (`start`, `invoice`, `sync` or `event`): valued at its start and wherever one of
/// its discounts starts or ends later.
pub fn rows_of(object: &Value, at: i64, source: &str) -> Result<Vec<StateRow>> {
    let sub: objects::Subscription = serde_json::from_value(object.clone())
        .map_err(|e| RevenueError::Malformed(format!("subscription: {e}")))?;
    let snapshot = convert::snapshot(&sub).map_err(RevenueError::Malformed)?;
    let data = (source == "event").then(|| object.to_string());
    Ok(valued_moments(&snapshot, at)
        .into_iter()
        .enumerate()
        .map(|(n, (moment, mrr))| StateRow {
            subscription_id: sub.id.clone(),
            state_at: at,
            source: source.to_string(),
            at: moment,
            customer_id: sub.customer.id().to_string(),
            status: sub.status.as_str().to_string(),
            currency: sub.currency.to_ascii_lowercase(),
            mrr,
            data: if n == 0 { data.clone() } else { None },
        })
        .collect())
}

/// The moments from `at` on where `snapshot`'s MRR is set (its start, each later discount start
/// or end) with the MRR from each.
pub fn valued_moments(snapshot: &mrr::Snapshot, at: i64) -> Vec<(i64, i64)> {
    let mut moments = vec![at];
    let discounts = snapshot
        .discounts
        .iter()
        .chain(snapshot.items.iter().flat_map(|i| &i.discounts));
    for d in discounts {
        moments.extend([Some(d.start_ms), d.end_ms].into_iter().flatten());
    }
    moments.retain(|t| *t >= at);
    moments.sort_unstable();
    moments.dedup();
    moments
        .into_iter()
        .map(|t| (t, snapshot.mrr_at(t)))
        .collect()
}

/// For rows of one subscription sorted by [`order_key`], whether each is a repeat (true: an
/// echo, which the engine would read to the same result without it).
///
/// Of the states beginning at one moment the engine reads only the last (the highest-ranked
/// source), so the others are repeats. A state is a repeat of the last state kept when it has
/// the same customer, status and currency and the same MRR at every moment from its start on.
/// A past-due state always counts: the auto-churn clock runs from its start.
pub fn split_echoes(rows: &[StateRow]) -> Vec<bool> {
    // The states: runs of rows with one (state_at, source).
    let mut states: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        match states.last_mut() {
            Some(s) if rows[s.start].state_at == r.state_at && rows[s.start].source == r.source => {
                s.end = i + 1
            }
            _ => states.push(i..i + 1),
        }
    }
    let mut echo = vec![false; rows.len()];
    let mut kept: Option<std::ops::Range<usize>> = None;
    for (n, state) in states.iter().enumerate() {
        let overridden = states
            .get(n + 1)
            .is_some_and(|next| rows[next.start].state_at == rows[state.start].state_at);
        let repeats = overridden
            || kept
                .as_ref()
                .is_some_and(|k| repeats(&rows[k.clone()], &rows[state.clone()]));
        if repeats {
            echo[state.clone()].fill(true);
        } else {
            kept = Some(state.clone());
        }
    }
    echo
}

/// One subscription's rows split into (states, echoes), each in engine order.
pub fn split(mut rows: Vec<StateRow>) -> (Vec<StateRow>, Vec<StateRow>) {
    rows.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
    let echo = split_echoes(&rows);
    let (mut states, mut echoes) = (Vec::new(), Vec::new());
    for (row, echo) in rows.into_iter().zip(echo) {
        if echo {
            echoes.push(row);
        } else {
            states.push(row);
        }
    }
    (states, echoes)
}

/// Whether `later` (beginning after `earlier`) changes nothing the engine reads.
fn repeats(earlier: &[StateRow], later: &[StateRow]) -> bool {
    let (e, l) = (&earlier[0], &later[0]);
    if e.customer_id != l.customer_id
        || e.status != l.status
        || e.currency != l.currency
        || mrr::Status::parse(&l.status).is_none_or(|s| s == mrr::Status::PastDue)
    {
        return false;
    }
    // Each state's MRR at time t is that of its latest point at or before t.
    let value =
        |rows: &[StateRow], t: i64| rows.iter().take_while(|r| r.at <= t).last().map(|r| r.mrr);
    let from = l.state_at;
    let moments: BTreeSet<i64> = earlier
        .iter()
        .chain(later)
        .map(|r| r.at)
        .filter(|t| *t >= from)
        .chain([from])
        .collect();
    moments
        .into_iter()
        .all(|t| value(earlier, t) == value(later, t))
}

/// Records a state of subscription `object` from `at` on, learnt from `source`; a later write
/// for the same moment and source replaces it. Re-sorts the subscription's repeats.
pub async fn record(tx: &mut Tx, object: &Value, at: i64, source: &str) -> Result<()> {
    let new = rows_of(object, at, source)?;
    let Some(sub) = new.first().map(|r| r.subscription_id.clone()) else {
        return Ok(());
    };
    for table in TABLES {
        tx.execute_assembled(
            format!(
                "DELETE FROM {table} WHERE subscription_id = $1 AND state_at = $2 AND source = $3"
            ),
            args![sub.as_str(), at, source],
        )
        .await?;
    }
    let mut rows = load(tx, &sub, &sub, false).await?;
    rows.extend(new.into_iter().map(|r| (r, None)));
    let (to_states, to_echoes) = settle(tx, rows).await?;
    insert(tx, STATES, &to_states).await?;
    insert(tx, ECHOES, &to_echoes).await?;
    Ok(())
}

const STATES: &str = "stripe_subscription_states";
const ECHOES: &str = "stripe_subscription_echoes";
const TABLES: [&str; 2] = [STATES, ECHOES];

/// The stored rows of subscriptions `first..=last` (only event rows with `events_only`),
/// without their objects, with whether each is an echo.
async fn load(
    tx: &mut Tx,
    first: &str,
    last: &str,
    events_only: bool,
) -> Result<Vec<(StateRow, Option<bool>)>> {
    struct Stored {
        row: StateRow,
        echo: i64,
    }
    crate::from_row!(Stored { row: flatten, echo });
    let filter = if events_only {
        " AND source NOT IN ('start', 'invoice', 'sync')"
    } else {
        ""
    };
    let select = |table: &str, echo: u8| {
        format!(
            "SELECT subscription_id, state_at, source, at, customer_id, status, currency, mrr, \
             CAST(NULL AS TEXT) AS data, CAST({echo} AS BIGINT) AS echo FROM {table} \
             WHERE subscription_id >= $1 AND subscription_id <= $2{filter}"
        )
    };
    let rows: Vec<Stored> = tx
        .fetch_all_assembled(
            format!("{} UNION ALL {}", select(STATES, 0), select(ECHOES, 1)),
            args![first, last],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|s| (s.row, Some(s.echo == 1)))
        .collect())
}

/// Splits one subscription's rows — each stored (`Some(is an echo)`) or new (`None`) — into
/// states and echoes: moves stored rows that change sides and returns the new rows to insert
/// into each table.
async fn settle(
    tx: &mut Tx,
    mut rows: Vec<(StateRow, Option<bool>)>,
) -> Result<(Vec<StateRow>, Vec<StateRow>)> {
    rows.sort_by(|a, b| order_key(&a.0).cmp(&order_key(&b.0)));
    let plain: Vec<StateRow> = rows.iter().map(|(r, _)| r.clone()).collect();
    let (mut to_states, mut to_echoes) = (Vec::new(), Vec::new());
    for ((row, stored), echo) in rows.into_iter().zip(split_echoes(&plain)) {
        match stored {
            Some(was) if was == echo => {}
            Some(was) => {
                // Moved in SQL: the row's object stays in the database.
                let (from, to) = if was {
                    (ECHOES, STATES)
                } else {
                    (STATES, ECHOES)
                };
                let key = "subscription_id = $1 AND state_at = $2 AND source = $3 AND at = $4";
                let args = || {
                    args![
                        row.subscription_id.as_str(),
                        row.state_at,
                        row.source.as_str(),
                        row.at
                    ]
                };
                tx.execute_assembled(
                    format!(
                        "INSERT INTO {to} ({COLUMNS}) SELECT {COLUMNS} FROM {from} WHERE {key}"
                    ),
                    args(),
                )
                .await?;
                tx.execute_assembled(format!("DELETE FROM {from} WHERE {key}"), args())
                    .await?;
            }
            None if echo => to_echoes.push(row),
            None => to_states.push(row),
        }
    }
    Ok((to_states, to_echoes))
}

/// Replaces the `start`, `invoice` and `sync` states of each subscription in
/// `derived` (sorted by id) with the given rows, keeping event states and re-sorting repeats.
pub async fn replace_derived(tx: &mut Tx, derived: Vec<(String, Vec<StateRow>)>) -> Result<()> {
    for table in TABLES {
        tx.execute_assembled(
            format!("DELETE FROM {table} WHERE source IN ('start', 'invoice', 'sync')"),
            args![],
        )
        .await?;
    }
    // A few hundred subscriptions at a time bounds what is held of the event states.
    for batch in derived.chunks(500) {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            continue;
        };
        let mut events: HashMap<String, Vec<(StateRow, Option<bool>)>> = HashMap::new();
        for (row, echo) in load(tx, &first.0, &last.0, true).await? {
            events
                .entry(row.subscription_id.clone())
                .or_default()
                .push((row, echo));
        }
        let (mut to_states, mut to_echoes) = (Vec::new(), Vec::new());
        for (sub, rows) in batch {
            let mut all = events.remove(sub).unwrap_or_default();
            all.extend(rows.iter().map(|r| (r.clone(), None)));
            let (s, e) = settle(tx, all).await?;
            to_states.extend(s);
            to_echoes.extend(e);
        }
        insert(tx, STATES, &to_states).await?;
        insert(tx, ECHOES, &to_echoes).await?;
    }
    Ok(())
}

/// Inserts `rows` into `table` (states or echoes) in statements of bounded size.
async fn insert(tx: &mut Tx, table: &str, rows: &[StateRow]) -> Result<()> {
    let size = |r: &StateRow| {
        64 + r.subscription_id.len()
            + r.customer_id.len()
            + r.source.len()
            + r.status.len()
            + r.data.as_ref().map_or(0, String::len)
    };
    // At most 100 rows a statement keeps SQLite's 32,766-variable limit far off.
    for chunk in chunks_by_size(rows, PG_STATEMENT_BYTES, size).flat_map(|c| c.chunks(100)) {
        let sql = multi_row_insert(&format!("{table} ({COLUMNS})"), 9, chunk.len(), "");
        let mut values = Vec::with_capacity(chunk.len() * 9);
        for r in chunk {
            values.extend(args![
                r.subscription_id.as_str(),
                r.state_at,
                r.source.as_str(),
                r.at,
                r.customer_id.as_str(),
                r.status.as_str(),
                r.currency.as_str(),
                r.mrr,
                r.data.clone()
            ]);
        }
        tx.execute_assembled(sql, values).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revenue::history::{Settings, history_of};
    use proptest::prelude::*;

    const DAY: i64 = 86_400_000;

    fn row(state_at: i64, source: &str, at: i64, status: &str, mrr: i64) -> StateRow {
        StateRow {
            subscription_id: "sub_1".into(),
            state_at,
            source: source.into(),
            at,
            customer_id: "cus_1".into(),
            status: status.into(),
            currency: "usd".into(),
            mrr,
            data: None,
        }
    }

    fn kept(rows: &[StateRow]) -> Vec<(i64, &str, i64)> {
        rows.iter()
            .zip(split_echoes(rows))
            .filter(|(_, echo)| !echo)
            .map(|(r, _)| (r.state_at, r.source.as_str(), r.at))
            .collect()
    }

    #[test]
    fn monthly_renewals_that_change_nothing_are_echoes() {
        let rows: Vec<StateRow> = (0..12)
            .map(|m| row(m * 30 * DAY, "event", m * 30 * DAY, "active", 26))
            .chain([row(12 * 30 * DAY, "event", 12 * 30 * DAY, "active", 68)])
            .collect();
        assert_eq!(
            kept(&rows),
            [(0, "event", 0), (360 * DAY, "event", 360 * DAY)]
        );
    }

    #[test]
    fn a_repeat_must_match_every_later_moment_of_a_discount() {
        // $26 with 25% off until day 90; a renewal on day 30 still carries the discount.
        let first = [
            row(0, "event", 0, "active", 19),
            row(0, "event", 90 * DAY, "active", 26),
        ];
        let same = [
            row(30 * DAY, "event", 30 * DAY, "active", 19),
            row(30 * DAY, "event", 90 * DAY, "active", 26),
        ];
        let rows: Vec<StateRow> = first.iter().chain(&same).cloned().collect();
        assert_eq!(kept(&rows).len(), 2, "{:?}", kept(&rows));
        // The discount dropped early on day 30: a change.
        let dropped = row(30 * DAY, "event", 30 * DAY, "active", 26);
        let rows: Vec<StateRow> = first.iter().cloned().chain([dropped]).collect();
        assert_eq!(kept(&rows).len(), 3);
        // A renewal on day 30 at the discounted price that no longer ends: a change on day 90.
        let forever = row(30 * DAY, "event", 30 * DAY, "active", 19);
        let rows: Vec<StateRow> = first.iter().cloned().chain([forever]).collect();
        assert_eq!(kept(&rows).len(), 3);
        // A renewal after the discount ended, at the undiscounted price: a repeat.
        let after = row(120 * DAY, "event", 120 * DAY, "active", 26);
        let rows: Vec<StateRow> = first.iter().cloned().chain([after]).collect();
        assert_eq!(kept(&rows).len(), 2);
    }

    #[test]
    fn past_due_states_and_overridden_ones_are_handled_as_the_engine_reads_them() {
        let rows = [
            row(0, "start", 0, "active", 26),
            row(0, "sync", 0, "active", 26),
            row(30 * DAY, "event", 30 * DAY, "past_due", 26),
            row(40 * DAY, "event", 40 * DAY, "past_due", 26),
        ];
        // `start` is overridden by `sync` at the same moment; each past-due state restarts
        // the auto-churn clock, so neither is a repeat.
        assert_eq!(
            kept(&rows),
            [
                (0, "sync", 0),
                (30 * DAY, "event", 30 * DAY),
                (40 * DAY, "event", 40 * DAY)
            ]
        );
    }

    fn arb_state() -> impl Strategy<Value = (i64, usize, usize, i64, Option<(i64, i64)>)> {
        (
            0..40i64,
            0..4usize,
            0..5usize,
            prop::sample::select(vec![0i64, 8, 26, 68]),
            prop::option::of((1..60i64, prop::sample::select(vec![0i64, 8, 26]))),
        )
    }

    proptest! {
        /// Whatever the states and the order they are listed in, the engine computes the same
        /// history from the kept rows as from all of them.
        #[test]
        fn echoes_never_change_the_history(
            subs in prop::collection::vec(prop::collection::vec(arb_state(), 1..12), 1..4),
            churn_days in prop::sample::select(vec![0u32, 3]),
        ) {
            let sources = ["start", "invoice", "sync", "event"];
            let statuses = ["active", "past_due", "canceled", "trialing", "paused"];
            let mut rows = Vec::new();
            for (n, states) in subs.iter().enumerate() {
                let mut sub_rows = Vec::new();
                for &(day, source, status, mrr, later) in states {
                    let at = day * 5 * DAY;
                    let mut r = row(at, sources[source], at, statuses[status], mrr * 1_000_000);
                    r.subscription_id = format!("sub_{n}");
                    r.customer_id = format!("cus_{}", n % 2);
                    // One state per (moment, source), as the table's key allows.
                    if sub_rows.iter().any(|s: &StateRow| s.state_at == at && s.source == r.source) {
                        continue;
                    }
                    if let Some((after, value)) = later {
                        let mut l = r.clone();
                        l.at = at + after * DAY;
                        l.mrr = value * 1_000_000;
                        sub_rows.push(r);
                        sub_rows.push(l);
                    } else {
                        sub_rows.push(r);
                    }
                }
                sub_rows.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
                let split = split_echoes(&sub_rows);
                rows.extend(sub_rows.into_iter().zip(split));
            }
            // Stored key order, as a recompute reads them.
            rows.sort_by(|(a, _), (b, _)| {
                (&a.subscription_id, a.state_at, &a.source, a.at)
                    .cmp(&(&b.subscription_id, b.state_at, &b.source, b.at))
            });
            let settings = Settings { reporting_currency: "usd".into(), past_due_churn_days: churn_days };
            let now = 400 * DAY;
            let all: Vec<StateRow> = rows.iter().map(|(r, _)| r.clone()).collect();
            let kept: Vec<StateRow> = rows.iter().filter(|(_, e)| !e).map(|(r, _)| r.clone()).collect();
            prop_assert_eq!(history_of(&kept, &settings, now), history_of(&all, &settings, now));
        }
    }
}
