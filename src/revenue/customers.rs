//! Customers as people know them: the name and email of each Stripe customer (from the stored
//! customer objects) beside its id, a search by id, name or email, and the paged lists of the
//! Revenue page (customers by MRR, the movements of a period) with their totals, so a page can
//! say how much it cut and an export can take the whole result.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::RevenueError;
use super::drill::{CustomerMrr, MovementRow, movement_rows};
use super::metrics::micro_to_minor;
use crate::args;
use crate::money::Money;
use crate::store::{Store, Value as Arg};

type Result<T, E = RevenueError> = std::result::Result<T, E>;

/// A customer's id with the name and email Stripe has for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerName {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

fn name_of(id: String, data: &str) -> CustomerName {
    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    CustomerName {
        name: text("name"),
        email: text("email"),
        id,
    }
}

/// Names and emails of the given customer ids, for those Stripe knows.
pub async fn names(store: &Store, ids: &[String]) -> Result<HashMap<String, CustomerName>> {
    let mut out = HashMap::new();
    let mut ids: Vec<&String> = ids.iter().collect();
    ids.sort();
    ids.dedup();
    // Bounded parameter lists: SQLite allows 32,766 and PostgreSQL 65,535 per statement.
    for chunk in ids.chunks(500) {
        let marks: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, data FROM stripe_objects WHERE object_type = $1 AND id IN ({})",
            marks.join(", ")
        );
        let mut args: Vec<Arg> = args!["customer"];
        args.extend(chunk.iter().map(|id| Arg::from(id.as_str())));
        let rows: Vec<(String, String)> = store.fetch_all_assembled(sql, args).await?;
        for (id, data) in rows {
            out.insert(id.clone(), name_of(id, &data));
        }
    }
    Ok(out)
}

/// Customers whose id, name or email contains `query` (case-insensitive): Stripe customers,
/// and customers known only by their usage plan or MRR. Exact id matches first, at most
/// `limit`.
pub async fn search(store: &Store, query: &str, limit: usize) -> Result<Vec<CustomerName>> {
    let q = query.trim().to_lowercase();
    if q.is_empty() {
        return Ok(Vec::new());
    }
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let pattern = format!("%{escaped}%");
    let (stripe, others) = tokio::try_join!(
        store.fetch_all::<(String, String)>(
            "SELECT id, data FROM stripe_objects WHERE object_type = 'customer' \
             AND (LOWER(id) LIKE $1 ESCAPE '\\' OR LOWER(data) LIKE $1 ESCAPE '\\') \
             ORDER BY id LIMIT 2000",
            args![pattern.as_str()],
        ),
        store.fetch_all::<(String,)>(
            "SELECT customer_id FROM customer_plans WHERE LOWER(customer_id) LIKE $1 ESCAPE '\\' \
             UNION SELECT customer_id FROM revenue_customers \
             WHERE LOWER(customer_id) LIKE $1 ESCAPE '\\' ORDER BY 1 LIMIT 2000",
            args![pattern.as_str()],
        ),
    )?;
    let contains = |s: &Option<String>| s.as_ref().is_some_and(|s| s.to_lowercase().contains(&q));
    // The JSON matched anywhere (metadata, addresses): keep the id, name and email matches.
    let mut found: Vec<CustomerName> = stripe
        .into_iter()
        .map(|(id, data)| name_of(id, &data))
        .filter(|c| c.id.to_lowercase().contains(&q) || contains(&c.name) || contains(&c.email))
        .collect();
    for (id,) in others {
        if !found.iter().any(|c| c.id == id) {
            found.push(CustomerName {
                id,
                name: None,
                email: None,
            });
        }
    }
    found.sort_by_key(|c| (c.id.to_lowercase() != q, c.id.clone()));
    found.truncate(limit);
    Ok(found)
}

/// Paying customers by MRR (highest first), `limit` from `offset`, with how many there are.
pub async fn by_mrr(
    store: &Store,
    currency: &str,
    limit: i64,
    offset: i64,
) -> Result<(Vec<CustomerMrr>, i64)> {
    let (rows, (total,)) = tokio::try_join!(
        store.fetch_all::<(String, i64, i64, i64)>(
            "SELECT customer_id, mrr, first_day, last_day FROM revenue_customers \
             WHERE mrr > 0 ORDER BY mrr DESC, customer_id LIMIT $1 OFFSET $2",
            args![limit, offset],
        ),
        store.fetch_one::<(i64,)>(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM revenue_customers WHERE mrr > 0",
            args![],
        ),
    )?;
    let rows = rows
        .into_iter()
        .map(|(customer, mrr, first_day, last_day)| CustomerMrr {
            customer,
            mrr: Money {
                amount: micro_to_minor(mrr),
                currency: currency.to_string(),
            },
            first_day,
            last_day,
        })
        .collect();
    Ok((rows, total))
}

/// The movements in `[from, to)` (optionally of one kind), newest first, `limit` from
/// `offset`, with how many there are.
pub async fn movements(
    store: &Store,
    currency: &str,
    (from, to): (i64, i64),
    kind: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<MovementRow>, i64)> {
    let kind = kind.unwrap_or("");
    let (rows, (total,)) = tokio::try_join!(
        store.fetch_all::<(i64, String, String, i64)>(
            "SELECT day, customer_id, kind, amount FROM revenue_movements \
             WHERE day >= $1 AND day < $2 AND ($3 = '' OR kind = $3) \
             ORDER BY day DESC, customer_id, kind LIMIT $4 OFFSET $5",
            args![from, to, kind, limit, offset],
        ),
        store.fetch_one::<(i64,)>(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM revenue_movements \
             WHERE day >= $1 AND day < $2 AND ($3 = '' OR kind = $3)",
            args![from, to, kind],
        ),
    )?;
    Ok((movement_rows(rows, currency), total))
}
