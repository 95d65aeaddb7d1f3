//! The stored Stripe data: objects as Stripe sent them (newest version wins, so a late or
//! repeated webhook never rolls an object back), the event log that makes deliveries
//! idempotent, and per-resource sync progress. Owns the `stripe_objects`, `stripe_events` and
//! `stripe_sync` tables; the states subscriptions went through are `states`'.

use std::collections::BTreeMap;

use serde_json::Value;

use super::RevenueError;
use crate::args;
use crate::store::{Store, Tx};

type Result<T, E = RevenueError> = std::result::Result<T, E>;

/// The customer id an object belongs to, whether `customer` is an id or expanded.
pub fn customer_of(object: &Value) -> Option<&str> {
    match object.get("customer")? {
        Value::String(id) => Some(id),
        Value::Object(o) => o.get("id")?.as_str(),
        _ => None,
    }
}

/// Stores `object` (of Stripe type `kind`) unless a newer version is already stored; returns
/// whether it was written.
pub async fn upsert_object(tx: &mut Tx, kind: &str, object: &Value, version: i64) -> Result<bool> {
    let id = object
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| RevenueError::Malformed(format!("{kind} without an id")))?;
    let customer = if kind == "customer" {
        Some(id)
    } else {
        customer_of(object)
    };
    let created = object.get("created").and_then(Value::as_i64).unwrap_or(0) * 1000;
    let written = tx
        .execute(
            "INSERT INTO stripe_objects (object_type, id, customer_id, created, version, data) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (object_type, id) DO UPDATE SET customer_id = excluded.customer_id, \
             created = excluded.created, version = excluded.version, data = excluded.data \
             WHERE stripe_objects.version <= excluded.version",
            args![kind, id, customer, created, version, object.to_string()],
        )
        .await?;
    if written > 0 {
        project_payment(tx, kind, id, customer, created, object).await?;
        if kind == "customer" {
            super::customers::index(tx, id, object).await?;
        } else if let (Some(customer), "subscription") = (customer, kind) {
            // The MRR engine's customers, searchable before (or without) their customer object.
            super::customers::know(tx, customer).await?;
        }
    }
    Ok(written > 0)
}

/// Keeps `revenue_payments` in step with a stored payment intent, charge, refund, dispute or
/// invoice; other objects are not money movements.
async fn project_payment(
    tx: &mut Tx,
    kind: &str,
    id: &str,
    customer: Option<&str>,
    created: i64,
    object: &Value,
) -> Result<()> {
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default();
    let int = |key: &str| object.get(key).and_then(Value::as_i64).unwrap_or(0);
    let status = text("status");
    let (amount, failed, recurring) = match kind {
        "payment_intent" => {
            let errored = object
                .get("last_payment_error")
                .is_some_and(|e| !e.is_null());
            (int("amount"), errored && status != "succeeded", false)
        }
        "charge" => (int("amount"), status == "failed", false),
        "refund" | "dispute" => (int("amount"), false, false),
        "invoice" => {
            let invoice: Option<super::stripe::objects::Invoice> =
                serde_json::from_value(object.clone()).ok();
            let subscription = invoice.as_ref().and_then(|i| i.subscription_id()).is_some();
            let paid = status == "paid";
            let amount = if paid {
                int("amount_paid")
            } else {
                int("amount_due")
            };
            let failed = !paid && int("attempt_count") > 0 && status != "void";
            (amount, failed, subscription)
        }
        _ => return Ok(()),
    };
    // Refunds and disputes count against the day their charge was made for the dispute rate,
    // and belong to the charge's customer (Stripe gives them none of their own).
    let (charge_created, charge_customer) = match (kind, object.get("charge")) {
        ("refund" | "dispute", Some(charge)) => {
            let charge_id = charge
                .as_str()
                .or_else(|| charge.get("id").and_then(Value::as_str))
                .unwrap_or_default();
            tx.fetch_optional::<(i64, Option<String>)>(
                "SELECT created, customer_id FROM stripe_objects \
                 WHERE object_type = 'charge' AND id = $1",
                args![charge_id],
            )
            .await?
            .map_or((None, None), |(created, customer)| {
                (Some(created), customer)
            })
        }
        _ => (None, None),
    };
    let customer = customer.or(charge_customer.as_deref());
    let row = PaymentFacts {
        kind: kind.to_string(),
        created,
        status: status.to_string(),
        amount,
        currency: text("currency").to_ascii_lowercase(),
        failed,
        recurring,
        charge_created,
    };
    // The daily sums change by the new row's contribution less the old one's; on PostgreSQL
    // the old row is locked so that two deliveries of one object cannot both subtract it.
    let lock = if matches!(tx, Tx::Postgres(_)) {
        " FOR UPDATE"
    } else {
        ""
    };
    let old: Option<PaymentRow> = tx
        .fetch_all_assembled(
            format!(
                "SELECT kind, created, status, amount, currency, failed, recurring, \
                 charge_created FROM revenue_payments WHERE kind = $1 AND id = $2{lock}"
            ),
            args![kind, id],
        )
        .await?
        .into_iter()
        .next();
    let mut deltas: BTreeMap<(i64, String), [i64; PAYMENT_SUMS]> = BTreeMap::new();
    for (sign, facts) in [
        (1, Some(row.clone())),
        (-1, old.map(PaymentFacts::from_row)),
    ] {
        let Some(facts) = facts else { continue };
        for (day, sums) in facts.contributions() {
            let slot = deltas
                .entry((day, facts.currency.clone()))
                .or_insert([0; PAYMENT_SUMS]);
            for (d, v) in slot.iter_mut().zip(sums) {
                *d += sign * v;
            }
        }
    }
    for ((day, currency), d) in deltas {
        if d.iter().all(|v| *v == 0) {
            continue;
        }
        tx.execute(
            "INSERT INTO revenue_payment_days (day, currency, intents_succeeded, intents_failed, \
             charges, charged, refunds, refunded, disputes_opened, disputes_lost, recurring, \
             disputes_on_charges) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (day, currency) DO UPDATE SET \
             intents_succeeded = revenue_payment_days.intents_succeeded + excluded.intents_succeeded, \
             intents_failed = revenue_payment_days.intents_failed + excluded.intents_failed, \
             charges = revenue_payment_days.charges + excluded.charges, \
             charged = revenue_payment_days.charged + excluded.charged, \
             refunds = revenue_payment_days.refunds + excluded.refunds, \
             refunded = revenue_payment_days.refunded + excluded.refunded, \
             disputes_opened = revenue_payment_days.disputes_opened + excluded.disputes_opened, \
             disputes_lost = revenue_payment_days.disputes_lost + excluded.disputes_lost, \
             recurring = revenue_payment_days.recurring + excluded.recurring, \
             disputes_on_charges = revenue_payment_days.disputes_on_charges + excluded.disputes_on_charges",
            args![
                day, currency, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9]
            ],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO revenue_payments (kind, id, customer_id, created, status, amount, currency, \
         failed, recurring, charge_created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (kind, id) DO UPDATE SET customer_id = excluded.customer_id, \
         created = excluded.created, status = excluded.status, amount = excluded.amount, \
         currency = excluded.currency, failed = excluded.failed, recurring = excluded.recurring, \
         charge_created = excluded.charge_created",
        args![
            kind,
            id,
            customer,
            created,
            status,
            amount,
            text("currency").to_ascii_lowercase(),
            i64::from(failed),
            i64::from(recurring),
            charge_created
        ],
    )
    .await?;
    Ok(())
}

/// Sums kept per day and currency in `revenue_payment_days`, in this order: payment intents
/// succeeded and failed, successful charges (count, amount), refunds (count, amount),
/// disputes opened, amount lost in disputes, paid subscription invoices (amount) — all by the
/// object's day — and disputes by the day of their charge.
pub const PAYMENT_SUMS: usize = 10;
/// Which of the sums are money (converted per day), the rest counts.
pub const PAYMENT_SUM_IS_MONEY: [bool; PAYMENT_SUMS] = [
    false, false, false, true, false, true, false, true, true, false,
];

/// (kind, created, status, amount, currency, failed, recurring, charge_created) of a
/// `revenue_payments` row.
type PaymentRow = (String, i64, String, i64, String, i64, i64, Option<i64>);

/// One `revenue_payments` row, as far as the daily sums need it.
#[derive(Debug, Clone, PartialEq)]
struct PaymentFacts {
    kind: String,
    created: i64,
    status: String,
    amount: i64,
    currency: String,
    failed: bool,
    recurring: bool,
    charge_created: Option<i64>,
}

impl PaymentFacts {
    fn from_row(r: PaymentRow) -> Self {
        Self {
            kind: r.0,
            created: r.1,
            status: r.2,
            amount: r.3,
            currency: r.4,
            failed: r.5 != 0,
            recurring: r.6 != 0,
            charge_created: r.7,
        }
    }

    /// What this row adds to the daily sums, per day.
    fn contributions(&self) -> Vec<(i64, [i64; PAYMENT_SUMS])> {
        let mut sums = [0i64; PAYMENT_SUMS];
        let status = self.status.as_str();
        match self.kind.as_str() {
            "payment_intent" => {
                sums[0] = i64::from(status == "succeeded");
                sums[1] = i64::from(self.failed);
            }
            "charge" if status == "succeeded" => {
                sums[2] = 1;
                sums[3] = self.amount;
            }
            "refund" if status != "failed" && status != "canceled" => {
                sums[4] = 1;
                sums[5] = self.amount;
            }
            "dispute" => {
                sums[6] = 1;
                sums[7] = if status == "lost" { self.amount } else { 0 };
            }
            "invoice" if status == "paid" && self.recurring => sums[8] = self.amount,
            _ => {}
        }
        let mut out = vec![(day_of(self.created), sums)];
        if let (true, Some(charged)) = (self.kind == "dispute", self.charge_created) {
            let mut on_charge = [0i64; PAYMENT_SUMS];
            on_charge[9] = 1;
            out.push((day_of(charged), on_charge));
        }
        out
    }
}

fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000) * 86_400_000
}

/// Recomputes `revenue_payment_days` from every stored payment (the sums are otherwise kept
/// up to date one payment at a time): a repair, and the bench's way to load many payments.
pub async fn rebuild_payment_days(store: &Store) -> Result<usize> {
    let rows: Vec<PaymentRow> = store
        .fetch_all(
            "SELECT kind, created, status, amount, currency, failed, recurring, charge_created \
             FROM revenue_payments",
            args![],
        )
        .await?;
    let mut sums: BTreeMap<(i64, String), [i64; PAYMENT_SUMS]> = BTreeMap::new();
    for row in rows {
        let facts = PaymentFacts::from_row(row);
        for (day, add) in facts.contributions() {
            let slot = sums
                .entry((day, facts.currency.clone()))
                .or_insert([0; PAYMENT_SUMS]);
            for (s, v) in slot.iter_mut().zip(add) {
                *s += v;
            }
        }
    }
    let mut tx = store.begin().await?;
    tx.execute("DELETE FROM revenue_payment_days", args![])
        .await?;
    let rows: Vec<_> = sums.into_iter().collect();
    for chunk in rows.chunks(50) {
        let sql = crate::store::multi_row_insert(
            "revenue_payment_days (day, currency, intents_succeeded, intents_failed, charges, \
             charged, refunds, refunded, disputes_opened, disputes_lost, recurring, \
             disputes_on_charges)",
            12,
            chunk.len(),
            "",
        );
        let mut values = Vec::with_capacity(chunk.len() * 12);
        for ((day, currency), d) in chunk {
            values.extend(args![
                *day,
                currency.as_str(),
                d[0],
                d[1],
                d[2],
                d[3],
                d[4],
                d[5],
                d[6],
                d[7],
                d[8],
                d[9]
            ]);
        }
        tx.execute_assembled(sql, values).await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// Claims event `id` for processing: false when it was seen before (a retry or a duplicate).
pub async fn claim_event(
    tx: &mut Tx,
    id: &str,
    kind: &str,
    created_ms: i64,
    via: &str,
    now: i64,
) -> Result<bool> {
    let inserted = tx
        .execute(
            "INSERT INTO stripe_events (id, type, created, received_at, via, outcome) \
             VALUES ($1, $2, $3, $4, $5, 'received') ON CONFLICT (id) DO NOTHING",
            args![id, kind, created_ms, now, via],
        )
        .await?;
    Ok(inserted > 0)
}

/// Logs a delivery refused for its signature (outcome `rejected`, the reason as detail) under
/// an id of its own: the body's claimed event id is not trusted, and a real event delivered
/// properly later must still be processed.
pub async fn log_rejected(store: &Store, reason: &str, now: i64) -> Result<()> {
    let id = format!("rejected_{}", uuid::Uuid::new_v4().simple());
    store
        .execute(
            "INSERT INTO stripe_events (id, type, created, received_at, via, outcome, detail) \
             VALUES ($1, '', $2, $2, 'webhook', 'rejected', $3)",
            args![id.as_str(), now, reason],
        )
        .await?;
    Ok(())
}

/// Sets how event `id` was handled: `applied`, `ignored` (a type opsdeck does not use),
/// `stale` (older than what is stored) or `failed`, with a detail for the log.
pub async fn finish_event(
    tx: &mut Tx,
    id: &str,
    outcome: &str,
    detail: Option<&str>,
) -> Result<()> {
    tx.execute(
        "UPDATE stripe_events SET outcome = $2, detail = $3 WHERE id = $1",
        args![id, outcome, detail],
    )
    .await?;
    Ok(())
}

/// One logged Stripe event delivery, as the Integrations page's Webhooks tab lists it.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub id: String,
    pub kind: String,
    /// When Stripe created the event, UTC ms.
    pub created: i64,
    pub received_at: i64,
    /// `webhook` or `catchup` (fetched from `/v1/events` after downtime).
    pub via: String,
    /// `received` (being applied), `applied`, `ignored`, `stale`, `failed`, or `rejected` (a
    /// bad or missing signature; the reason is the detail).
    pub outcome: String,
    pub detail: Option<String>,
}
crate::from_row!(Receipt {
    id,
    kind: "type",
    created,
    received_at,
    via,
    outcome,
    detail
});

/// Logged events received before `(received_at, id)` of the previous page's last row, newest
/// first. Only the first delivery of an event is logged (redeliveries are answered as
/// duplicates); deliveries refused for their signature are logged as `rejected`, at most a
/// few a second.
pub async fn receipts(
    store: &Store,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<Receipt>> {
    let (at, id) = before.unwrap_or((i64::MAX, String::new()));
    // Ties on `received_at` are settled by the id.
    Ok(store
        .fetch_all(
            "SELECT id, type, created, received_at, via, outcome, detail FROM stripe_events \
             WHERE received_at <= $1 AND (received_at < $1 OR id < $2) \
             ORDER BY received_at DESC, id DESC LIMIT $3",
            args![at, id, limit],
        )
        .await?)
}

/// Logged events received at or after `since` (UTC ms), counted by how they were received
/// and handled: `(via, outcome, count)`.
pub async fn receipt_counts(store: &Store, since: i64) -> Result<Vec<(String, String, i64)>> {
    Ok(store
        .fetch_all(
            "SELECT via, outcome, COUNT(*) FROM stripe_events WHERE received_at >= $1 \
             GROUP BY via, outcome ORDER BY via, outcome",
            args![since],
        )
        .await?)
}

/// One resource's sync progress, as the Settings page and `opsdeck sync stripe` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SyncProgress {
    pub resource: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub fetched: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}
crate::from_row!(SyncProgress {
    resource,
    state,
    fetched,
    started_at,
    finished_at,
    error
});

pub async fn set_progress(store: &Store, p: &SyncProgress) -> Result<()> {
    store
        .execute(
            "INSERT INTO stripe_sync (resource, state, fetched, started_at, finished_at, error) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (resource) DO UPDATE SET \
             state = excluded.state, fetched = excluded.fetched, started_at = excluded.started_at, \
             finished_at = excluded.finished_at, error = excluded.error",
            args![
                p.resource.as_str(),
                p.state.as_str(),
                p.fetched,
                p.started_at,
                p.finished_at,
                p.error.clone()
            ],
        )
        .await?;
    Ok(())
}

pub async fn progress(store: &Store) -> Result<Vec<SyncProgress>> {
    Ok(store
        .fetch_all(
            "SELECT resource, state, fetched, started_at, finished_at, error FROM stripe_sync \
             ORDER BY started_at, resource",
            args![],
        )
        .await?)
}
