//! The stored Stripe data: objects as Stripe sent them (newest version wins, so a late or
//! repeated webhook never rolls an object back), the states each subscription went through,
//! the event log that makes deliveries idempotent, and per-resource sync progress. Owns the
//! `stripe_objects`, `stripe_subscription_states`, `stripe_events` and `stripe_sync` tables.

use serde_json::Value;

use super::RevenueError;
use super::mrr;
use super::stripe::{convert, objects};
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

/// Records that subscription `object` was in this state from `at` (ms) on, as learnt from
/// `source` (`start`, `invoice`, `sync` or `event`), valued at its start and wherever one of its
/// discounts starts or ends later; a later write for the same moment and source replaces it.
pub async fn record_state(tx: &mut Tx, object: &Value, at: i64, source: &str) -> Result<()> {
    let sub: objects::Subscription = serde_json::from_value(object.clone())
        .map_err(|e| RevenueError::Malformed(format!("subscription: {e}")))?;
    let snapshot = convert::snapshot(&sub).map_err(RevenueError::Malformed)?;
    tx.execute(
        "DELETE FROM stripe_subscription_states WHERE subscription_id = $1 AND state_at = $2 \
         AND source = $3",
        args![sub.id.as_str(), at, source],
    )
    .await?;
    let data = (source == "event").then(|| object.to_string());
    for (n, (moment, mrr)) in valued_moments(&snapshot, at).into_iter().enumerate() {
        tx.execute(
            "INSERT INTO stripe_subscription_states (subscription_id, state_at, source, at, \
             customer_id, status, currency, mrr, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            args![
                sub.id.as_str(),
                at,
                source,
                moment,
                sub.customer.id(),
                sub.status.as_str(),
                sub.currency.to_ascii_lowercase(),
                mrr,
                if n == 0 { data.clone() } else { None }
            ],
        )
        .await?;
    }
    Ok(())
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

/// One resource's sync progress, as the Settings page and `opsdeck sync stripe` show it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct SyncProgress {
    pub resource: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub fetched: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

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
