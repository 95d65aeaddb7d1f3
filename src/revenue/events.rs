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
    if let Some(data) = payment_failed(&event.kind, &event.id, &object) {
        // With the event's record, so a failure is notified exactly when it is stored (a
        // redelivered event is a duplicate above and enqueues nothing).
        crate::webhooks::queue::enqueue(&mut tx, "payment.failed", &data, now_ms()).await?;
    }
    let label = if fresh { "applied" } else { "stale" };
    records::finish_event(&mut tx, &event.id, label, None).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// The `payment.failed` message data for a Stripe event that reports a failed payment:
/// `invoice.payment_failed` (subscription and invoice payments), and `charge.failed` for a
/// charge outside any invoice. A subscription's failed charge also produces
/// `invoice.payment_failed`, so only charges that say they have no invoice (`"invoice": null`;
/// API versions from 2025-03-31.basil no longer say) are notified on their own: one failure,
/// one message.
pub fn payment_failed(kind: &str, event_id: &str, object: &Value) -> Option<Value> {
    let text = |k: &str| object.get(k).and_then(Value::as_str);
    let int = |k: &str| object.get(k).and_then(Value::as_i64);
    let (amount, reason) = match kind {
        "invoice.payment_failed" => (int("amount_due"), None),
        "charge.failed" if object.get("invoice").is_some_and(Value::is_null) => (
            int("amount"),
            text("failure_message").or(text("failure_code")),
        ),
        _ => return None,
    };
    let object_kind = if kind.starts_with("invoice.") {
        "invoice"
    } else {
        "charge"
    };
    let customer = text("customer");
    let currency = text("currency").map(str::to_uppercase);
    let mut summary = format!(
        "Payment failed for {}: {} {}",
        customer.unwrap_or("an unknown customer"),
        amount.map_or("?".to_string(), |a| format!(
            "{}.{:02}",
            a / 100,
            (a % 100).abs()
        )),
        currency.as_deref().unwrap_or("")
    );
    if let Some(r) = reason {
        summary.push_str(&format!(" ({r})"));
    }
    if let Some(n) = int("attempt_count") {
        summary.push_str(&format!(", attempt {n}"));
    }
    Some(serde_json::json!({
        "stripe_event": event_id,
        "object": object_kind,
        "id": text("id"),
        "customer": customer,
        "amount": amount,
        "currency": currency,
        "attempt_count": int("attempt_count"),
        "next_payment_attempt": int("next_payment_attempt"),
        "reason": reason,
        "url": text("hosted_invoice_url"),
        "summary": summary.trim_end().to_string(),
    }))
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
    fn failed_payments_become_one_message_each() {
        let invoice = serde_json::json!({"id": "in_1", "customer": "cus_1", "amount_due": 2600,
            "currency": "usd", "attempt_count": 2, "hosted_invoice_url": "https://invoice.stripe.com/i/x"});
        let data = payment_failed("invoice.payment_failed", "evt_1", &invoice).unwrap();
        assert_eq!(
            data["summary"],
            "Payment failed for cus_1: 26.00 USD, attempt 2"
        );
        assert_eq!(data["object"], "invoice");
        assert_eq!(data["amount"], 2600);
        let standalone = serde_json::json!({"id": "ch_1", "customer": "cus_2", "amount": 999,
            "currency": "eur", "invoice": null, "failure_message": "Your card was declined."});
        let data = payment_failed("charge.failed", "evt_2", &standalone).unwrap();
        assert_eq!(
            data["summary"],
            "Payment failed for cus_2: 9.99 EUR (Your card was declined.)"
        );
        let of_invoice = serde_json::json!({"id": "ch_2", "invoice": "in_1", "amount": 2600});
        assert!(payment_failed("charge.failed", "evt_3", &of_invoice).is_none());
        let basil = serde_json::json!({"id": "ch_3", "amount": 2600});
        assert!(payment_failed("charge.failed", "evt_4", &basil).is_none());
        assert!(payment_failed("invoice.paid", "evt_5", &invoice).is_none());
    }

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
