//! Backfill from Stripe's list endpoints and the states each subscription went through.
//!
//! Every resource is paged with `limit=100` / `starting_after` and stored page by page, one
//! transaction per page, with progress recorded as it goes; an object that does not parse is
//! logged with its id and skipped, and the sync goes on. A failing sync leaves what was stored
//! in place (figures go stale, never empty). Stripe keeps only each subscription's current
//! state, so its history before opsdeck was installed is rebuilt from the subscription's own
//! dates (start, trial, cancellation) and from its invoices' lines, which record what was
//! billed for each period.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::RevenueError;
use super::records::{self, SyncProgress};
use super::states;
use super::stripe::client::StripeClient;
use super::stripe::objects;
use crate::args;
use crate::store::{Store, now_ms};

type Result<T, E = RevenueError> = std::result::Result<T, E>;

/// A list endpoint and the object type it returns.
pub struct Resource {
    pub kind: &'static str,
    pub path: &'static str,
    pub params: &'static [(&'static str, &'static str)],
}

/// In dependency order: prices before the subscriptions that use them.
pub const RESOURCES: &[Resource] = &[
    Resource {
        kind: "product",
        path: "/v1/products",
        params: &[],
    },
    Resource {
        kind: "price",
        path: "/v1/prices",
        params: &[("expand[]", "data.tiers")],
    },
    Resource {
        kind: "coupon",
        path: "/v1/coupons",
        params: &[],
    },
    Resource {
        kind: "customer",
        path: "/v1/customers",
        params: &[],
    },
    Resource {
        kind: "subscription",
        path: "/v1/subscriptions",
        params: &[
            ("status", "all"),
            ("expand[]", "data.discounts"),
            ("expand[]", "data.items.data.discounts"),
        ],
    },
    Resource {
        kind: "invoice",
        path: "/v1/invoices",
        params: &[],
    },
    Resource {
        kind: "payment_intent",
        path: "/v1/payment_intents",
        params: &[],
    },
    Resource {
        kind: "charge",
        path: "/v1/charges",
        params: &[],
    },
    Resource {
        kind: "refund",
        path: "/v1/refunds",
        params: &[],
    },
    Resource {
        kind: "dispute",
        path: "/v1/disputes",
        params: &[],
    },
    Resource {
        kind: "balance_transaction",
        path: "/v1/balance_transactions",
        params: &[],
    },
];

/// Checks that `object` parses as the typed form of `kind`, naming the problem when not.
pub fn check_object(kind: &str, object: &Value) -> Result<(), String> {
    fn parse<T: serde::de::DeserializeOwned>(object: &Value) -> Result<(), String> {
        T::deserialize(object)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    match kind {
        "customer" => parse::<objects::Customer>(object),
        "product" => parse::<objects::Product>(object),
        "price" => parse::<objects::Price>(object),
        "coupon" => parse::<objects::Coupon>(object),
        "subscription" => parse::<objects::Subscription>(object),
        "invoice" => parse::<objects::Invoice>(object),
        "charge" => parse::<objects::Charge>(object),
        "refund" => parse::<objects::Refund>(object),
        "dispute" => parse::<objects::Dispute>(object),
        "payment_intent" => parse::<objects::PaymentIntent>(object),
        "balance_transaction" => parse::<objects::BalanceTransaction>(object),
        _ => Ok(()),
    }
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub stored: u64,
    /// Objects that did not parse: (type, id, problem).
    pub skipped: Vec<(String, String, String)>,
}

/// Reads every resource from Stripe into the store, then rebuilds the subscription states.
/// `report` sees each resource's progress after every page.
pub async fn backfill(
    store: &Store,
    client: &StripeClient,
    reporting_currency: &str,
    report: &(dyn Fn(&SyncProgress) + Send + Sync),
) -> Result<Summary> {
    let mut summary = Summary::default();
    for resource in RESOURCES {
        let mut progress = SyncProgress {
            resource: resource.kind.into(),
            state: "running".into(),
            fetched: 0,
            started_at: now_ms(),
            finished_at: None,
            error: None,
        };
        records::set_progress(store, &progress).await?;
        report(&progress);
        match backfill_one(store, client, resource, &mut progress, &mut summary, report).await {
            Ok(()) => progress.state = "done".into(),
            Err(e) => {
                progress.state = "failed".into();
                progress.error = Some(e.to_string());
                progress.finished_at = Some(now_ms());
                records::set_progress(store, &progress).await?;
                report(&progress);
                return Err(e);
            }
        }
        progress.finished_at = Some(now_ms());
        records::set_progress(store, &progress).await?;
        report(&progress);
    }
    super::history::derive_stripe_rates(store, reporting_currency).await?;
    let rebuilding = std::time::Instant::now();
    rebuild_states(store, now_ms()).await?;
    tracing::info!(
        elapsed_ms = rebuilding.elapsed().as_millis() as u64,
        "Stripe backfill: subscription states rebuilt"
    );
    Ok(summary)
}

async fn backfill_one(
    store: &Store,
    client: &StripeClient,
    resource: &Resource,
    progress: &mut SyncProgress,
    summary: &mut Summary,
    report: &(dyn Fn(&SyncProgress) + Send + Sync),
) -> Result<()> {
    let params = resource
        .params
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    let mut pages = client.pages::<Value>(resource.path, params);
    while let Some(page) = pages.next().await? {
        let version = now_ms();
        let mut tx = store.begin().await?;
        for object in &page {
            let id = object.get("id").and_then(Value::as_str).unwrap_or("?");
            if let Err(problem) = check_object(resource.kind, object) {
                tracing::warn!(kind = resource.kind, id, %problem, "skipping a Stripe object that does not parse");
                summary
                    .skipped
                    .push((resource.kind.into(), id.into(), problem));
                continue;
            }
            records::upsert_object(&mut tx, resource.kind, object, version).await?;
            summary.stored += 1;
        }
        tx.commit().await?;
        progress.fetched += page.len() as i64;
        records::set_progress(store, progress).await?;
        report(progress);
    }
    Ok(())
}

/// `sub` with `status` replaced: the same items and discounts in an earlier state. A pause of
/// collection belongs to the current state only, so it is dropped.
fn with_status(sub: &Value, status: &str) -> Value {
    let mut out = sub.clone();
    out["status"] = json!(status);
    if let Some(o) = out.as_object_mut() {
        o.remove("pause_collection");
    }
    out
}

fn secs(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64).map(|s| s * 1000)
}

/// The states a subscription's own dates imply, as (from ms, source, object): the trial, the
/// paid span carrying its current items (`start`, overridden by invoice states where invoices
/// say otherwise), the current state from its current period (`sync`), and the end.
pub fn implied_states(sub: &Value, now: i64) -> Vec<(i64, &'static str, Value)> {
    let start = secs(sub, "start_date")
        .or_else(|| secs(sub, "created"))
        .unwrap_or(now);
    let status = sub.get("status").and_then(Value::as_str).unwrap_or("");
    let mut out = Vec::new();
    let trial_end = secs(sub, "trial_end").filter(|end| *end > start);
    let paid_from = trial_end.unwrap_or(start);
    if trial_end.is_some() || status == "trialing" {
        out.push((start, "start", with_status(sub, "trialing")));
    }
    if status == "trialing" {
        return out;
    }
    match status {
        "canceled" | "incomplete_expired" => {
            let end = secs(sub, "ended_at")
                .or_else(|| secs(sub, "canceled_at"))
                .unwrap_or(now);
            if end > paid_from {
                out.push((paid_from, "start", with_status(sub, "active")));
            }
            out.push((end.max(start), "sync", sub.clone()));
        }
        _ => {
            // The current period began when the present state was last billed; a state
            // such as past_due is known to hold from then.
            let period_start = sub
                .get("items")
                .and_then(|i| i.get("data"))
                .and_then(Value::as_array)
                .and_then(|items| {
                    items
                        .iter()
                        .filter_map(|i| secs(i, "current_period_start"))
                        .max()
                })
                .or_else(|| secs(sub, "current_period_start"))
                .unwrap_or(paid_from)
                .max(paid_from);
            if period_start > paid_from {
                out.push((paid_from, "start", with_status(sub, "active")));
            }
            out.push((period_start, "sync", sub.clone()));
        }
    }
    out
}

/// States rebuilt from `invoices` of `sub`: for each billed period, the subscription with the
/// items (price, quantity) its lines billed, from the period's start. Proration lines and
/// void or draft invoices say nothing about the recurring state and are skipped, as are
/// lines whose price is unknown.
pub fn invoice_states(
    sub: &Value,
    invoices: &[objects::Invoice],
    prices: &HashMap<String, Value>,
) -> Vec<(i64, Value)> {
    let mut by_period: std::collections::BTreeMap<i64, Vec<Value>> = Default::default();
    let trial_end = secs(sub, "trial_end");
    for invoice in invoices {
        if matches!(invoice.status.as_deref(), Some("void" | "draft") | None) {
            continue;
        }
        for line in &invoice.lines.data {
            let (Some(period), Some(price_id)) = (&line.period, line.price_id()) else {
                continue;
            };
            let Some(price) = prices.get(price_id) else {
                continue;
            };
            // A trial's $0 invoice bills no MRR.
            let in_trial = trial_end.is_some_and(|end| period.start * 1000 < end);
            if line.is_proration() || in_trial || price.get("recurring").is_none_or(Value::is_null)
            {
                continue;
            }
            by_period
                .entry(period.start * 1000)
                .or_default()
                .push(json!({
                    "id": line.id,
                    "object": "subscription_item",
                    "price": price,
                    "quantity": line.quantity.unwrap_or(1),
                }));
        }
    }
    // A period billing the same items as the one before changes nothing: keeping only the
    // changes keeps a long history to a few states per subscription.
    let mut previous: Option<Vec<(Value, Value)>> = None;
    by_period
        .into_iter()
        .filter(|(_, items)| {
            let signature: Vec<(Value, Value)> = items
                .iter()
                .map(|i| (i["price"]["id"].clone(), i["quantity"].clone()))
                .collect();
            let changed = previous.as_ref() != Some(&signature);
            previous = Some(signature);
            changed
        })
        .map(|(at, items)| {
            let mut state = with_status(sub, "active");
            state["items"] = json!({"object": "list", "data": items, "has_more": false});
            (at, state)
        })
        .collect()
}

/// Rebuilds the `start`, `sync` and `invoice` states of every stored subscription from the
/// stored objects; states from webhook events are kept.
pub async fn rebuild_states(store: &Store, now: i64) -> Result<()> {
    let prices: Vec<(String, String)> = store
        .fetch_all(
            "SELECT id, data FROM stripe_objects WHERE object_type = 'price'",
            args![],
        )
        .await?;
    let prices: HashMap<String, Value> = prices
        .into_iter()
        .filter_map(|(id, data)| Some((id, serde_json::from_str(&data).ok()?)))
        .collect();
    let mut invoices: HashMap<String, Vec<objects::Invoice>> = HashMap::new();
    let rows: Vec<(String,)> = store
        .fetch_all(
            "SELECT data FROM stripe_objects WHERE object_type = 'invoice'",
            args![],
        )
        .await?;
    for (data,) in rows {
        if let Ok(invoice) = serde_json::from_str::<objects::Invoice>(&data)
            && let Some(sub) = invoice.subscription_id().map(str::to_string)
        {
            invoices.entry(sub).or_default().push(invoice);
        }
    }
    let subs: Vec<(String,)> = store
        .fetch_all(
            "SELECT data FROM stripe_objects WHERE object_type = 'subscription'",
            args![],
        )
        .await?;
    let mut derived: Vec<(String, Vec<states::StateRow>)> = Vec::with_capacity(subs.len());
    for (data,) in subs {
        let Ok(sub) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        let id = sub.get("id").and_then(Value::as_str).unwrap_or_default();
        let mut implied = implied_states(&sub, now);
        if let Some(list) = invoices.get(id) {
            implied.extend(
                invoice_states(&sub, list, &prices)
                    .into_iter()
                    .map(|(at, state)| (at, "invoice", state)),
            );
        }
        let mut rows = Vec::new();
        for (at, source, state) in implied {
            match states::rows_of(&state, at, source) {
                Ok(r) => rows.extend(r),
                // One unreadable subscription must not stop the others.
                Err(RevenueError::Malformed(problem)) => {
                    tracing::warn!(subscription = id, %problem, "cannot value a subscription state");
                }
                Err(e) => return Err(e),
            }
        }
        derived.push((id.to_string(), rows));
    }
    derived.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut tx = store.begin().await?;
    states::replace_derived(&mut tx, derived).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const T0: i64 = 1_767_225_600; // 2026-01-01, seconds as Stripe writes them

    fn price(id: &str, cents: i64) -> Value {
        json!({"id": id, "object": "price", "currency": "usd", "unit_amount": cents,
               "billing_scheme": "per_unit", "type": "recurring",
               "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"}})
    }

    fn sub(status: &str, extra: Value) -> Value {
        let mut s = json!({
            "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
            "currency": "usd", "created": T0, "start_date": T0,
            "items": {"object": "list", "has_more": false, "data": [
                {"id": "si_1", "quantity": 1, "price": price("price_growth", 2600),
                 "current_period_start": T0 + 60 * DAY, "current_period_end": T0 + 90 * DAY}]}
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            s[k] = v.clone();
        }
        s
    }

    fn summary(states: &[(i64, &str, Value)]) -> Vec<(i64, String, String)> {
        states
            .iter()
            .map(|(at, source, v)| {
                (
                    (at / 1000 - T0) / DAY,
                    (*source).to_string(),
                    v["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn a_subscriptions_dates_imply_its_states() {
        let now = (T0 + 100 * DAY) * 1000;
        let s = |d: i64, src: &str, st: &str| (d, src.to_string(), st.to_string());
        // Trial of 14 days, active since; current period from day 60.
        let trial = sub(
            "active",
            json!({"trial_start": T0, "trial_end": T0 + 14 * DAY}),
        );
        assert_eq!(
            summary(&implied_states(&trial, now)),
            vec![
                s(0, "start", "trialing"),
                s(14, "start", "active"),
                s(60, "sync", "active")
            ]
        );
        // Past due from its current period's start.
        let late = sub("past_due", json!({}));
        assert_eq!(
            summary(&implied_states(&late, now)),
            vec![s(0, "start", "active"), s(60, "sync", "past_due")]
        );
        // Canceled on day 75: active until then.
        let gone = sub(
            "canceled",
            json!({"canceled_at": T0 + 70 * DAY, "ended_at": T0 + 75 * DAY}),
        );
        assert_eq!(
            summary(&implied_states(&gone, now)),
            vec![s(0, "start", "active"), s(75, "sync", "canceled")]
        );
        let trialing = sub(
            "trialing",
            json!({"trial_start": T0, "trial_end": T0 + 200 * DAY}),
        );
        assert_eq!(
            summary(&implied_states(&trialing, now)),
            vec![s(0, "start", "trialing")]
        );
    }

    #[test]
    fn invoices_rebuild_what_each_period_billed() {
        let prices: HashMap<String, Value> = [
            ("price_starter".to_string(), price("price_starter", 800)),
            ("price_growth".to_string(), price("price_growth", 2600)),
        ]
        .into_iter()
        .collect();
        let invoice = |id: &str, status: &str, start: i64, lines: Value| -> objects::Invoice {
            serde_json::from_value(json!({
                "id": id, "object": "invoice", "status": status, "currency": "usd",
                "created": start,
                "parent": {"type": "subscription_details",
                           "subscription_details": {"subscription": "sub_1"}},
                "lines": {"object": "list", "has_more": false, "data": lines}
            }))
            .expect("invoice")
        };
        let line = |id: &str, price: &str, qty: u64, start: i64, proration: bool| {
            json!({"id": id, "amount": 0, "currency": "usd", "quantity": qty,
                   "period": {"start": start, "end": start + 30 * DAY},
                   "pricing": {"type": "price_details", "price_details": {"price": price}},
                   "parent": {"type": "subscription_item_details",
                              "subscription_item_details": {"proration": proration}}})
        };
        let invoices = vec![
            invoice(
                "in_1",
                "paid",
                T0,
                json!([line("il_1", "price_starter", 1, T0, false)]),
            ),
            invoice(
                "in_2",
                "paid",
                T0 + 30 * DAY,
                json!([
                    line("il_2", "price_growth", 3, T0 + 30 * DAY, false),
                    line("il_3", "price_growth", 1, T0 + 20 * DAY, true)
                ]),
            ),
            invoice(
                "in_3",
                "void",
                T0 + 60 * DAY,
                json!([line("il_4", "price_starter", 9, T0 + 60 * DAY, false)]),
            ),
            invoice(
                "in_4",
                "paid",
                T0 + 90 * DAY,
                json!([line("il_5", "price_unknown", 1, T0 + 90 * DAY, false)]),
            ),
        ];
        let states = invoice_states(&sub("active", json!({})), &invoices, &prices);
        let got: Vec<(i64, String, u64)> = states
            .iter()
            .map(|(at, v)| {
                let item = &v["items"]["data"][0];
                (
                    (at / 1000 - T0) / DAY,
                    item["price"]["id"].as_str().unwrap_or_default().to_string(),
                    item["quantity"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "price_starter".into(), 1),
                (30, "price_growth".into(), 3)
            ]
        );
        assert!(states.iter().all(|(_, v)| v["status"] == "active"));
    }
}
