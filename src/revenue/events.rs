//! Applies Stripe events, from `POST /webhooks/stripe` or the `/v1/events` catch-up, to the
//! stored objects. Idempotent by event id; an event older than the stored object (out-of-order
//! delivery) updates nothing but still records the subscription state it describes, at its
//! own time, so the MRR history is right whatever order events arrive in.

use serde_json::Value;

use super::RevenueError;
use super::records;
use super::stripe::client::StripeClient;
use super::stripe::objects::Event;
use crate::store::{Store, now_ms};

type Result<T, E = RevenueError> = std::result::Result<T, E>;

/// How an event was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored; the MRR history needs a recompute when `changes_mrr`.
    Applied { changes_mrr: bool },
    /// Seen before (a retry, or Stripe's duplicate delivery).
    Duplicate,
    /// Older than what is stored; only the subscription state was recorded.
    Stale { changes_mrr: bool },
    /// A type opsdeck does not use; logged.
    Ignored,
}

impl Outcome {
    pub fn changes_mrr(self) -> bool {
        matches!(
            self,
            Self::Applied { changes_mrr: true } | Self::Stale { changes_mrr: true }
        )
    }
}

/// The stored object type an event type carries, if opsdeck keeps it.
pub fn object_kind(event_type: &str) -> Option<&'static str> {
    let (prefix, rest) = event_type.split_once('.')?;
    Some(match prefix {
        "customer" if rest.starts_with("subscription.") => "subscription",
        "customer" if matches!(rest, "created" | "updated" | "deleted") => "customer",
        "invoice" => "invoice",
        "payment_intent" => "payment_intent",
        "charge" if rest.starts_with("dispute.") => "dispute",
        "charge" if rest.starts_with("refund.") => "refund",
        "charge" => "charge",
        "refund" => "refund",
        "price" => "price",
        "product" => "product",
        "coupon" => "coupon",
        _ => return None,
    })
}

/// Applies one event. `via` is `webhook` or `catchup`.
pub async fn apply(store: &Store, event: &Event, via: &str) -> Result<Outcome> {
    let created = event.created * 1000;
    let mut tx = store.begin().await?;
    if !records::claim_event(&mut tx, &event.id, &event.kind, created, via, now_ms()).await? {
        return Ok(Outcome::Duplicate);
    }
    let Some(kind) = object_kind(&event.kind) else {
        records::finish_event(&mut tx, &event.id, "ignored", None).await?;
        tx.commit().await?;
        return Ok(Outcome::Ignored);
    };
    let mut object = event.data.object.clone();
    if event.kind.ends_with(".deleted") && kind != "subscription" {
        object["deleted"] = Value::Bool(true);
    }
    if let Err(problem) = super::sync::check_object(kind, &object) {
        tracing::warn!(event = %event.id, kind, %problem, "Stripe event carries a malformed object");
        records::finish_event(&mut tx, &event.id, "failed", Some(&problem)).await?;
        tx.commit().await?;
        return Err(RevenueError::Malformed(format!(
            "event {}: {problem}",
            event.id
        )));
    }
    let fresh = records::upsert_object(&mut tx, kind, &object, created).await?;
    let changes_mrr = matches!(kind, "subscription" | "price" | "coupon");
    if kind == "subscription" {
        match super::states::record(&mut tx, &object, created, "event").await {
            Ok(()) => {}
            Err(RevenueError::Malformed(problem)) => {
                tracing::warn!(event = %event.id, %problem, "cannot value the subscription an event carries");
                records::finish_event(&mut tx, &event.id, "failed", Some(&problem)).await?;
                tx.commit().await?;
                return Err(RevenueError::Malformed(format!(
                    "event {}: {problem}",
                    event.id
                )));
            }
            Err(e) => return Err(e),
        }
    }
    let outcome = if fresh {
        Outcome::Applied { changes_mrr }
    } else {
        Outcome::Stale { changes_mrr }
    };
    let label = if fresh { "applied" } else { "stale" };
    records::finish_event(&mut tx, &event.id, label, None).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Applies every event Stripe still holds (its `/v1/events` keeps 30 days) created at or after
/// `since_secs`, oldest first: event ids are not ordered, so they are sorted by `created`.
/// Returns how many were new.
pub async fn catch_up(
    store: &Store,
    client: &StripeClient,
    since_secs: i64,
) -> Result<(usize, bool)> {
    let mut pages = client.pages::<Value>(
        "/v1/events",
        vec![("created[gte]".into(), since_secs.to_string())],
    );
    let mut events = Vec::new();
    while let Some(page) = pages.next().await? {
        for raw in page {
            match serde_json::from_value::<Event>(raw) {
                Ok(e) => events.push(e),
                Err(problem) => tracing::warn!(%problem, "skipping an unreadable Stripe event"),
            }
        }
    }
    events.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    let mut new = 0;
    let mut changes_mrr = false;
    for event in &events {
        match apply(store, event, "catchup").await {
            Ok(Outcome::Duplicate) => {}
            Ok(outcome) => {
                new += 1;
                changes_mrr |= outcome.changes_mrr();
            }
            Err(RevenueError::Malformed(problem)) => {
                tracing::warn!(%problem, "catch-up goes on past a malformed event");
            }
            Err(e) => return Err(e),
        }
    }
    Ok((new, changes_mrr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_map_to_the_objects_they_carry() {
        for (t, kind) in [
            ("customer.subscription.updated", Some("subscription")),
            ("customer.subscription.deleted", Some("subscription")),
            ("customer.created", Some("customer")),
            ("customer.discount.created", None),
            ("invoice.payment_failed", Some("invoice")),
            ("payment_intent.succeeded", Some("payment_intent")),
            ("charge.refunded", Some("charge")),
            ("charge.dispute.created", Some("dispute")),
            ("charge.refund.updated", Some("refund")),
            ("price.updated", Some("price")),
            ("product.deleted", Some("product")),
            ("account.updated", None),
            ("nodot", None),
        ] {
            assert_eq!(object_kind(t), kind, "{t}");
        }
    }
}
