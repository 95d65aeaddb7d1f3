//! Quotas: a customer's use of their plan in the current calendar month (UTC), its state
//! (`ok`, `warning` 80 %, `critical` 90 %, `over` 100 %, `suspended` at the plan's hard limit)
//! with hysteresis, and the evaluator that records state changes for the alerts to consume.
//!
//! Usage is read from the customer's `usage_months` row, folded from the ingest journal with
//! the rollups about once a second (readers settle first, so an acknowledged event is always
//! counted), so the quota route is one primary-key read however many raw events there are. The route and the evaluator start from
//! the same recorded state, so they agree on where a customer stands.

use foldhash::HashSet;
use std::sync::Mutex;

use serde::Serialize;
use time::{Date, Month, OffsetDateTime, Time};
use utoipa::ToSchema;

use super::UsageError;
use super::event::NewEvent;
use crate::args;
use crate::money::Money;
use crate::store::{Store, now_ms};

type Result<T, E = UsageError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ok,
    Warning,
    Critical,
    Over,
    Suspended,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Ok,
        State::Warning,
        State::Critical,
        State::Over,
        State::Suspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Warning => "warning",
            State::Critical => "critical",
            State::Over => "over",
            State::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// State for `percent` of quota without history.
    pub fn at(percent: f64, hard_limit_percent: f64) -> Self {
        if percent >= hard_limit_percent {
            State::Suspended
        } else if percent >= 100.0 {
            State::Over
        } else if percent >= 90.0 {
            State::Critical
        } else if percent >= 80.0 {
            State::Warning
        } else {
            State::Ok
        }
    }

    /// The next state from `previous` at `percent`: rising takes effect at once, falling only
    /// once usage is `hysteresis` points below the threshold of the state being left.
    pub fn next(
        previous: Option<State>,
        percent: f64,
        hard_limit_percent: f64,
        hysteresis: f64,
    ) -> Self {
        let raw = State::at(percent, hard_limit_percent);
        match previous {
            Some(prev) if prev > raw => {
                raw.max(prev.min(State::at(percent + hysteresis, hard_limit_percent)))
            }
            _ => raw,
        }
    }
}

/// The calendar month (UTC) holding `now_ms`, as [start, end) UTC milliseconds.
pub fn month_of(now_ms: i64) -> (i64, i64) {
    let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let start = |year: i32, month: Month| {
        Date::from_calendar_date(year, month, 1)
            .map(|d| d.with_time(Time::MIDNIGHT).assume_utc())
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or(0)
    };
    let (year, month) = (now.year(), now.month());
    let next_year = if month == Month::December {
        year + 1
    } else {
        year
    };
    (start(year, month), start(next_year, month.next()))
}

/// One dimension of a quota.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Dimension {
    pub used: f64,
    /// Null when the plan has no quota on this dimension.
    pub limit: Option<i64>,
    pub percent: Option<f64>,
}

/// The quota route's answer.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Quota {
    pub customer: String,
    /// Plan id.
    pub plan: String,
    pub plan_name: String,
    /// Current billing period (calendar month, UTC), RFC 3339.
    pub period_start: String,
    pub period_end: String,
    /// API calls (`api.request` events) this period.
    pub used: i64,
    /// The plan's monthly API-call quota; null when it has none.
    pub limit: Option<i64>,
    /// Percent of the quota used, the higher of calls and credits; null without quotas.
    pub percent: Option<f64>,
    pub state: State,
    /// Overage so far at the plan's price per 1,000 calls past the quota.
    pub overage_usd: Money,
    /// Provider credits (`provider.usage` in unit "credit") this period.
    pub credits: Dimension,
    pub hard_limit_percent: i64,
}

/// What the quota of one customer is computed from.
struct Inputs {
    plan_id: String,
    plan_name: String,
    api_calls: i64,
    credits: i64,
    overage_pico_per_1k: i64,
    hard_limit_percent: i64,
    /// Recorded state and the period it belongs to.
    recorded: Option<(State, i64)>,
    /// The percent recorded with it.
    recorded_percent: f64,
    calls_used: i64,
    credits_used: f64,
}

type PlanRow = (String, String, i64, i64, i64, i64);

async fn inputs(
    store: &Store,
    customer: &str,
    default_plan: &str,
    period: (i64, i64),
) -> Result<Inputs> {
    // The assigned plan, else the default one (an empty default matches no plan).
    let plan: PlanRow = store
        .fetch_optional(
            "SELECT id, name, api_calls, provider_credits, overage_pico_per_1k, hard_limit_percent \
             FROM plans WHERE id = \
             COALESCE((SELECT plan_id FROM customer_plans WHERE customer_id = $1), $2)",
            args![customer, default_plan],
        )
        .await?
        .ok_or_else(|| {
            UsageError::NotFound(if default_plan.is_empty() {
                format!("a plan for customer {customer:?} (assign one, or set usage.default_plan)")
            } else {
                format!("customer {customer:?} has no plan and the default plan {default_plan:?}")
            })
        })?;
    let (calls_used, credits_used): (i64, f64) = store
        .fetch_optional(
            "SELECT calls, credits FROM usage_months WHERE month = $1 AND subject = $2",
            args![period.0, customer],
        )
        .await?
        .unwrap_or((0, 0.0));
    let recorded: Option<(String, i64, f64)> = store
        .fetch_optional(
            "SELECT state, period_start, percent FROM quota_states WHERE customer_id = $1",
            args![customer],
        )
        .await?;
    let (plan_id, plan_name, api_calls, credits, overage_pico_per_1k, hard_limit_percent) = plan;
    Ok(Inputs {
        plan_id,
        plan_name,
        api_calls,
        credits,
        overage_pico_per_1k,
        hard_limit_percent,
        recorded_percent: recorded.as_ref().map_or(0.0, |r| r.2),
        recorded: recorded.and_then(|(s, p, _)| Some((State::parse(&s)?, p))),
        calls_used,
        credits_used,
    })
}

fn percent_of(used: f64, limit: i64) -> Option<f64> {
    (limit > 0).then(|| (used / limit as f64 * 1000.0).round() / 10.0)
}

fn compute(customer: &str, i: Inputs, period: (i64, i64), hysteresis: f64) -> Quota {
    let calls_pct = percent_of(i.calls_used as f64, i.api_calls);
    let credits_pct = percent_of(i.credits_used, i.credits);
    let percent = match (calls_pct, credits_pct) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    // A state recorded in an earlier period does not carry over: each month starts afresh.
    let previous = i.recorded.filter(|(_, p)| *p == period.0).map(|(s, _)| s);
    let state = match percent {
        Some(p) => State::next(previous, p, i.hard_limit_percent as f64, hysteresis),
        None => State::Ok,
    };
    let over_calls = if i.api_calls > 0 {
        (i.calls_used - i.api_calls).max(0)
    } else {
        0
    };
    // pico-USD per 1,000 calls × calls / 1,000 → pico-USD; 10^10 pico-USD to the cent.
    // pico-USD per 1,000 calls × calls ÷ 1,000 → pico-USD; ÷ 1,000 → nano-USD. Truncating
    // below a nano-dollar cannot move a half-cent boundary, which is a whole number of nanos.
    let overage_nano = i128::from(over_calls) * i128::from(i.overage_pico_per_1k) / 1_000_000;
    let overage_cents = crate::money::nano_to_cents(overage_nano.min(i128::from(i64::MAX)) as i64);
    Quota {
        customer: customer.to_string(),
        plan: i.plan_id,
        plan_name: i.plan_name,
        period_start: rfc3339(period.0),
        period_end: rfc3339(period.1),
        used: i.calls_used,
        limit: (i.api_calls > 0).then_some(i.api_calls),
        percent,
        state,
        overage_usd: Money {
            amount: overage_cents,
            currency: "usd".into(),
        },
        credits: Dimension {
            used: i.credits_used,
            limit: (i.credits > 0).then_some(i.credits),
            percent: credits_pct,
        },
        hard_limit_percent: i.hard_limit_percent,
    }
}

pub(crate) fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The quota of `customer` now.
pub async fn quota(
    store: &Store,
    customer: &str,
    default_plan: &str,
    hysteresis: f64,
) -> Result<Quota> {
    super::plans::check_customer_id(customer)?;
    store.settle().await;
    let period = month_of(now_ms());
    let i = inputs(store, customer, default_plan, period).await?;
    Ok(compute(customer, i, period, hysteresis))
}

/// Customers whose usage (or plan) changed since the evaluator last ran.
#[derive(Default)]
pub struct Watch(Mutex<HashSet<String>>);

impl Watch {
    /// Notes the customers of metered events just committed.
    pub fn saw(&self, events: &[NewEvent]) {
        let mut dirty = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            if let (Some(s), true) = (
                &e.subject,
                e.facts.status.is_some() || e.facts.provider.is_some(),
            ) && !dirty.contains(s.as_str())
            {
                dirty.insert(s.clone());
            }
        }
    }

    /// Notes one customer (e.g. after a plan change).
    pub fn touch(&self, customer: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(customer.to_string());
    }

    /// Notes every customer assigned to `plan` (after its quotas changed).
    pub async fn touch_plan(&self, store: &Store, plan: &str) -> Result<()> {
        for a in super::plans::assignments(store, Some(plan), i64::MAX).await? {
            self.touch(&a.customer_id);
        }
        Ok(())
    }

    fn take(&self) -> HashSet<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A recorded state change.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Change {
    pub id: i64,
    pub customer: String,
    pub plan: String,
    /// Start of the period the change belongs to, UTC milliseconds.
    pub period_start: i64,
    pub from: State,
    pub to: State,
    pub percent: f64,
    /// UTC milliseconds.
    pub at: i64,
}

/// Re-evaluates every customer the watch noted and records state changes; returns how many
/// changes were recorded. Customers without a plan are skipped.
pub async fn evaluate(
    store: &Store,
    watch: &Watch,
    default_plan: &str,
    hysteresis: f64,
) -> Result<usize> {
    // The watch notes a customer after their events committed (and joined the fence), so
    // settling after taking it means their month totals include those events.
    let customers = watch.take();
    store.settle().await;
    let period = month_of(now_ms());
    // Read every customer first, then write what changed in a few short transactions: one
    // transaction (and fsync) per customer would make a busy minute's evaluation the store's
    // heaviest writer.
    let mut outcomes = Vec::new();
    for customer in customers {
        let i = match inputs(store, &customer, default_plan, period).await {
            Ok(i) => i,
            Err(UsageError::NotFound(_)) => continue,
            Err(e) => {
                // Try again next round rather than lose the customer.
                watch.touch(&customer);
                return Err(e);
            }
        };
        // The last recorded state, whatever its period: a new month's reset of an `over`
        // customer to `ok` is a change worth recording too.
        let (recorded, recorded_percent) = (i.recorded, i.recorded_percent);
        let from = recorded.map_or(State::Ok, |(s, _)| s);
        let q = compute(&customer, i, period, hysteresis);
        // An `ok` customer already recorded `ok` this period is rewritten only once its percent
        // has moved a point: enough to rank customers by percent of quota without a write per
        // customer per round. Every other state keeps its percent exact.
        let percent = q.percent.unwrap_or(0.0);
        let settled =
            recorded == Some((State::Ok, period.0)) && (percent - recorded_percent).abs() < 1.0;
        if q.state == State::Ok && settled {
            continue;
        }
        outcomes.push(Outcome {
            customer,
            plan: q.plan,
            from,
            to: q.state,
            percent,
            recorded,
        });
    }
    match record(store, &outcomes, period.0).await {
        Ok(changes) => Ok(changes),
        Err(e) => {
            // Nothing evaluated is lost: the next round retries these customers.
            for o in &outcomes {
                watch.touch(&o.customer);
            }
            Err(e)
        }
    }
}

/// One evaluated customer.
struct Outcome {
    customer: String,
    plan: String,
    from: State,
    to: State,
    percent: f64,
    /// The state and period the evaluation read, which a change may replace only if they are
    /// still what is stored.
    recorded: Option<(State, i64)>,
}

/// Upserts a customer's state.
const UPSERT_STATE: &str = "INSERT INTO quota_states (customer_id, plan_id, period_start, state, \
     percent, changed_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (customer_id) DO UPDATE SET \
     plan_id = excluded.plan_id, period_start = excluded.period_start, \
     state = excluded.state, percent = excluded.percent, \
     changed_at = CASE WHEN quota_states.state = excluded.state \
         AND quota_states.period_start = excluded.period_start \
         THEN quota_states.changed_at ELSE excluded.changed_at END";

/// Upserts a changed state only over the state the evaluation read ($7, $8; both null when it
/// read none, which no stored row matches). Every instance evaluates the customers its own
/// ingest touched, so two may evaluate one customer at once; the one whose write finds the
/// state already moved records no change, and the change is notified once.
const CHANGE_STATE: &str = "INSERT INTO quota_states (customer_id, plan_id, period_start, state, \
     percent, changed_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (customer_id) DO UPDATE SET \
     plan_id = excluded.plan_id, period_start = excluded.period_start, \
     state = excluded.state, percent = excluded.percent, changed_at = excluded.changed_at \
     WHERE quota_states.state = $7 AND quota_states.period_start = $8";

/// Writes evaluated states in transactions of 100 customers, each short enough not to keep the
/// ingest writer from the write lock for long; returns the changes recorded.
async fn record(store: &Store, outcomes: &[Outcome], period_start: i64) -> Result<usize> {
    let mut changes = 0;
    for (i, chunk) in outcomes.chunks(100).enumerate() {
        if i > 0 {
            // Back-to-back transactions: the writes waiting meanwhile go first.
            store.give_way().await;
        }
        let now = now_ms();
        let mut tx = store.begin().await?;
        for o in chunk {
            if o.from == o.to {
                tx.execute(
                    UPSERT_STATE,
                    args![
                        &o.customer,
                        &o.plan,
                        period_start,
                        o.to.as_str(),
                        o.percent,
                        now
                    ],
                )
                .await?;
            } else {
                let (was, was_period) = match o.recorded {
                    Some((state, period)) => (Some(state.as_str()), Some(period)),
                    None => (None, None),
                };
                let written = tx
                    .execute(
                        CHANGE_STATE,
                        args![
                            &o.customer,
                            &o.plan,
                            period_start,
                            o.to.as_str(),
                            o.percent,
                            now,
                            was,
                            was_period
                        ],
                    )
                    .await?;
                if written == 0 {
                    // Another instance recorded this customer's change first.
                    continue;
                }
                tx.execute(
                    "INSERT INTO quota_state_changes (customer_id, plan_id, period_start, from_state, \
                     to_state, percent, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    args![
                        &o.customer,
                        &o.plan,
                        period_start,
                        o.from.as_str(),
                        o.to.as_str(),
                        o.percent,
                        now
                    ],
                )
                .await?;
                // In the same transaction: the change and its notification commit together.
                crate::webhooks::queue::enqueue(
                    &mut tx,
                    "quota.state_changed",
                    &change_data(o, period_start, now),
                    now,
                )
                .await?;
                changes += 1;
            }
        }
        tx.commit().await?;
    }
    Ok(changes)
}

/// The `quota.state_changed` message data.
fn change_data(o: &Outcome, period_start: i64, at: i64) -> serde_json::Value {
    serde_json::json!({
        "customer": o.customer,
        "plan": o.plan,
        "period_start": rfc3339(period_start),
        "from": o.from.as_str(),
        "to": o.to.as_str(),
        "percent": o.percent,
        "at": rfc3339(at),
        "summary": format!(
            "{} is {} on plan {} ({:.1} % of quota; was {})",
            o.customer,
            o.to.as_str(),
            o.plan,
            o.percent,
            o.from.as_str()
        ),
    })
}

/// Recorded changes after `after_id`, oldest first, optionally for one customer.
pub async fn changes(
    store: &Store,
    customer: Option<&str>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<Change>> {
    type ChangeRow = (i64, String, String, i64, String, String, f64, i64);
    let rows: Vec<ChangeRow> = store
        .fetch_all(
            "SELECT id, customer_id, plan_id, period_start, from_state, to_state, percent, at \
             FROM quota_state_changes WHERE id > $1 AND ($2 IS NULL OR customer_id = $2) \
             ORDER BY id LIMIT $3",
            args![after_id, customer, limit],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(id, customer, plan, period_start, from, to, percent, at)| {
                Some(Change {
                    id,
                    customer,
                    plan,
                    period_start,
                    from: State::parse(&from)?,
                    to: State::parse(&to)?,
                    percent,
                    at,
                })
            },
        )
        .collect())
}

/// Where a customer stands against their quota this period, as last evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AtRisk {
    pub customer: String,
    pub plan: String,
    pub state: State,
    pub percent: f64,
    /// Since when (UTC milliseconds).
    pub since: i64,
}

/// Customers in warning or worse this period, worst first.
pub async fn at_risk(store: &Store, limit: i64) -> Result<Vec<AtRisk>> {
    standings(store, true, limit, 0).await
}

/// [`at_risk`] from the `offset`-th on, for a paged list.
pub async fn at_risk_page(store: &Store, limit: i64, offset: i64) -> Result<Vec<AtRisk>> {
    standings(store, true, limit, offset.max(0)).await
}

/// How many customers are in warning or worse this period. Read from `quota_counts`, which
/// triggers keep as states change (migration 0034): counting ~31k at-risk customers per
/// Overview took 3-5 ms.
pub async fn at_risk_count(store: &Store) -> Result<i64> {
    let period = month_of(now_ms());
    // On PostgreSQL a key may have several rows until housekeeping folds them ([`fold_counts`]).
    let (n,): (i64,) = store
        .fetch_one(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM quota_counts \
             WHERE period_start = $1 AND state <> 'ok'",
            args![period.0],
        )
        .await?;
    Ok(n)
}

/// Folds `quota_counts` to one row per key on PostgreSQL, where the triggers append a row per
/// change, and drops keys that count nobody (past periods); nothing to do on SQLite, which
/// updates one row per key.
pub async fn fold_counts(store: &Store) -> Result<()> {
    Ok(store
        .fold_counts("quota_counts", "period_start, state")
        .await?)
}

/// Customers by percent of quota this period, highest first, whatever their state. An `ok`
/// customer's percent is at most a point behind (see [`evaluate`]).
pub async fn by_percent(store: &Store, limit: i64) -> Result<Vec<AtRisk>> {
    standings(store, false, limit, 0).await
}

async fn standings(store: &Store, not_ok: bool, limit: i64, offset: i64) -> Result<Vec<AtRisk>> {
    let period = month_of(now_ms());
    // Both walk the (period_start, percent) index from the top and stop after `offset + limit`
    // rows.
    let sql = if not_ok {
        "SELECT customer_id, plan_id, state, percent, changed_at FROM quota_states \
         WHERE period_start = $1 AND state <> 'ok' ORDER BY percent DESC, customer_id DESC \
         LIMIT $2 OFFSET $3"
    } else {
        "SELECT customer_id, plan_id, state, percent, changed_at FROM quota_states \
         WHERE period_start = $1 ORDER BY percent DESC, customer_id DESC LIMIT $2 OFFSET $3"
    };
    let rows: Vec<(String, String, String, f64, i64)> =
        store.fetch_all(sql, args![period.0, limit, offset]).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(customer, plan, state, percent, since)| {
            Some(AtRisk {
                customer,
                plan,
                state: State::parse(&state)?,
                percent,
                since,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let s = |p| State::at(p, 120.0);
        assert_eq!(s(0.0), State::Ok);
        assert_eq!(s(79.9), State::Ok);
        assert_eq!(s(80.0), State::Warning);
        assert_eq!(s(90.0), State::Critical);
        assert_eq!(s(100.0), State::Over);
        assert_eq!(s(119.9), State::Over);
        assert_eq!(s(120.0), State::Suspended);
        assert_eq!(State::at(150.0, 200.0), State::Over);
    }

    #[test]
    fn falling_needs_the_hysteresis_margin() {
        let next = |prev, p| State::next(Some(prev), p, 120.0, 5.0);
        // Teetering around 80 % stays in warning once there.
        assert_eq!(next(State::Warning, 79.0), State::Warning);
        assert_eq!(next(State::Warning, 75.1), State::Warning);
        assert_eq!(next(State::Warning, 74.9), State::Ok);
        // Rising is immediate.
        assert_eq!(next(State::Ok, 80.0), State::Warning);
        assert_eq!(next(State::Warning, 130.0), State::Suspended);
        // Falling far lands where the margin allows, never below the raw state.
        assert_eq!(next(State::Over, 92.0), State::Critical);
        assert_eq!(next(State::Suspended, 50.0), State::Ok);
        assert_eq!(next(State::Suspended, 116.0), State::Suspended);
        assert_eq!(State::next(None, 79.0, 120.0, 5.0), State::Ok);
    }

    #[test]
    fn months_are_utc_calendar_months() {
        // 2026-11-23T10:00:00Z
        let (start, end) = month_of(1_795_428_000_000);
        assert_eq!(rfc3339(start), "2026-11-01T00:00:00Z");
        assert_eq!(rfc3339(end), "2026-12-01T00:00:00Z");
        // December rolls into the next year.
        let (s, e) = month_of(1_798_000_000_000);
        assert_eq!(rfc3339(s), "2026-12-01T00:00:00Z");
        assert_eq!(rfc3339(e), "2027-01-01T00:00:00Z");
    }

    #[test]
    fn overage_is_priced_per_thousand_calls() {
        let i = Inputs {
            plan_id: "p".into(),
            plan_name: "P".into(),
            api_calls: 1000,
            credits: 0,
            overage_pico_per_1k: 500_000_000_000, // $0.50
            hard_limit_percent: 120,
            recorded: None,
            recorded_percent: 0.0,
            calls_used: 1250,
            credits_used: 0.0,
        };
        let q = compute("c", i, month_of(0), 5.0);
        // 250 calls over at $0.50 per 1,000: 12.5 cents, rounded half up.
        assert_eq!(q.overage_usd.amount, 13);
        assert_eq!(q.percent, Some(125.0));
        assert_eq!(q.state, State::Suspended);
    }
}
