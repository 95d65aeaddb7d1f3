//! Customers as people know them: the name and email of each Stripe customer (from the stored
//! customer objects) beside its id, a search by id, name or email (over `customer_search`,
//! which this module keeps in step with the stored customers), and the paged lists of the
//! Revenue page (customers by MRR, the movements of a period) with their totals, so a page can
//! say how much it cut and an export can take the whole result.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::RevenueError;
use super::drill::{CustomerMrr, MovementRow, movement_rows};
use crate::args;
use crate::store::{Store, Tx, Value as Arg};

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

/// Keeps `customer_search` in step with a Stripe customer object just stored, in the same
/// transaction.
pub(super) async fn index(tx: &mut Tx, id: &str, object: &Value) -> Result<()> {
    let text = |k: &str| {
        object
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (name, email) = (text("name"), text("email"));
    let haystack = format!(
        "{}\n{}\n{}",
        id.to_lowercase(),
        name.unwrap_or_default().to_lowercase(),
        email.unwrap_or_default().to_lowercase()
    );
    tx.execute(
        "INSERT INTO customer_search (id, name, email, haystack) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email, \
         haystack = excluded.haystack",
        args![id, name, email, haystack],
    )
    .await?;
    Ok(())
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
        store.fetch_all::<(String, Option<String>, Option<String>)>(
            "SELECT id, name, email FROM customer_search WHERE haystack LIKE $1 ESCAPE '\\' \
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
    let mut found: Vec<CustomerName> = stripe
        .into_iter()
        .map(|(id, name, email)| CustomerName { id, name, email })
        .collect();
    // A prefix shared by thousands of ids matches thousands on both sides.
    let named: std::collections::HashSet<String> = found.iter().map(|c| c.id.clone()).collect();
    for (id,) in others {
        if !named.contains(&id) {
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

/// Paying customers by MRR as of `now` (highest first), `limit` from `offset`, with how many
/// there are: MRR now counts no movement dated after today (see `drill::by_mrr_now`).
pub async fn by_mrr(
    store: &Store,
    currency: &str,
    limit: i64,
    offset: i64,
    now: i64,
) -> Result<(Vec<CustomerMrr>, i64)> {
    super::drill::by_mrr_now(store, currency, limit, offset, now).await
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
