//! Customer → plan from Stripe subscriptions, through `stripe.plan_map` (price or product id →
//! plan id), so quotas follow what customers pay for. A manual assignment (API, CLI, Settings)
//! always wins; an assignment that came from Stripe is replaced when the subscription changes
//! plan and removed when the customer has no live mapped subscription left.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::RevenueError;
use crate::access::audit::Actor;
use crate::args;
use crate::store::Store;
use crate::usage::plans;

type Result<T, E = RevenueError> = std::result::Result<T, E>;

/// The plan a subscription maps to: the first item whose price id, else product id, is mapped.
pub fn plan_of<'a>(sub: &Value, map: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let items = sub.get("items")?.get("data")?.as_array()?;
    let price_of = |item: &Value| item.get("price").cloned().unwrap_or(Value::Null);
    let by_price = items.iter().find_map(|item| {
        let id = price_of(item).get("id")?.as_str()?.to_string();
        map.get(&id).map(String::as_str)
    });
    by_price.or_else(|| {
        items.iter().find_map(|item| {
            let product = price_of(item).get("product").cloned()?;
            let id = product
                .as_str()
                .map(str::to_string)
                .or_else(|| product.get("id")?.as_str().map(str::to_string))?;
            map.get(&id).map(String::as_str)
        })
    })
}

/// Applies the map to every stored subscription; returns the customers whose plan changed.
pub async fn apply(store: &Store, map: &BTreeMap<String, String>) -> Result<Vec<String>> {
    if map.is_empty() {
        return Ok(Vec::new());
    }
    let subs: Vec<(Option<String>, i64, String)> = store
        .fetch_all(
            "SELECT customer_id, created, data FROM stripe_objects \
             WHERE object_type = 'subscription' ORDER BY created",
            args![],
        )
        .await?;
    // The newest live subscription that maps to a plan decides.
    let mut wanted: HashMap<String, String> = HashMap::new();
    let mut seen: Vec<String> = Vec::new();
    for (customer, _, data) in subs {
        let (Some(customer), Ok(sub)) = (customer, serde_json::from_str::<Value>(&data)) else {
            continue;
        };
        seen.push(customer.clone());
        let status = sub.get("status").and_then(Value::as_str).unwrap_or("");
        let live = matches!(status, "active" | "past_due" | "trialing");
        if let (true, Some(plan)) = (live, plan_of(&sub, map)) {
            wanted.insert(customer, plan.to_string());
        }
    }
    let current: Vec<(String, String, String)> = store
        .fetch_all(
            "SELECT customer_id, plan_id, source FROM customer_plans",
            args![],
        )
        .await?;
    let current: HashMap<String, (String, String)> =
        current.into_iter().map(|(c, p, s)| (c, (p, s))).collect();
    let actor = Actor::new("stripe-sync", None);
    let mut changed = Vec::new();
    seen.sort();
    seen.dedup();
    for customer in seen {
        let now = current.get(&customer);
        if now.is_some_and(|(_, source)| source != "stripe") {
            continue;
        }
        match (wanted.get(&customer), now) {
            (Some(plan), Some((p, _))) if p == plan => {}
            (Some(plan), _) => {
                match plans::assign(store, &customer, plan, "stripe", &actor).await {
                    Ok(_) => changed.push(customer),
                    // A map naming a plan that does not exist must not stop the sync.
                    Err(crate::usage::UsageError::Invalid(problem)) => {
                        tracing::warn!(%customer, %plan, %problem, "stripe.plan_map names no plan");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            (None, Some(_)) => {
                plans::unassign(store, &customer, &actor).await?;
                changed.push(customer);
            }
            (None, None) => {}
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_price_entry_wins_over_its_product() {
        let map: BTreeMap<String, String> = [
            ("price_pro_annual".to_string(), "pro".to_string()),
            ("prod_growth".to_string(), "growth".to_string()),
        ]
        .into_iter()
        .collect();
        let sub = |price: &str, product: Value| json!({"items": {"data": [{"price": {"id": price, "product": product}}]}});
        assert_eq!(
            plan_of(&sub("price_1", json!("prod_growth")), &map),
            Some("growth")
        );
        assert_eq!(
            plan_of(&sub("price_1", json!({"id": "prod_growth"})), &map),
            Some("growth")
        );
        assert_eq!(
            plan_of(&sub("price_pro_annual", json!("prod_growth")), &map),
            Some("pro")
        );
        assert_eq!(plan_of(&sub("price_1", json!("prod_other")), &map), None);
    }
}
