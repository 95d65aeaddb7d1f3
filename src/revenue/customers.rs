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

/// Names and emails of the given customer ids, for those Stripe knows. Read from
/// `customer_search`, which holds them beside each id: parsing every customer's stored JSON
/// (a few KB each) was most of a page's time at 50k customers.
pub async fn names(store: &Store, ids: &[String]) -> Result<HashMap<String, CustomerName>> {
    let mut out = HashMap::new();
    let mut ids: Vec<&String> = ids.iter().collect();
    ids.sort();
    ids.dedup();
    // Bounded parameter lists: SQLite allows 32,766 and PostgreSQL 65,535 per statement.
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT id, name, email FROM customer_search WHERE id IN ({})",
            crate::store::placeholders(1, chunk.len())
        );
        let args: Vec<Arg> = chunk.iter().map(|id| Arg::from(id.as_str())).collect();
        let rows: Vec<(String, Option<String>, Option<String>)> =
            store.fetch_all_assembled(sql, args).await?;
        for (id, name, email) in rows {
            out.insert(id.clone(), CustomerName { id, name, email });
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

/// Makes a customer id searchable that may have no Stripe customer object: one with a usage
/// plan or a subscription. A customer object stored later fills in its name and email.
pub async fn know(tx: &mut Tx, id: &str) -> Result<(), crate::store::StoreError> {
    tx.execute(
        "INSERT INTO customer_search (id, name, email, haystack) VALUES ($1, NULL, NULL, $2) \
         ON CONFLICT (id) DO NOTHING",
        args![id, format!("{}\n\n", id.to_lowercase())],
    )
    .await?;
    Ok(())
}

/// Most matches a search considers; past this a search keeps the first ones in id order.
const SEARCH_SCOPE: usize = 2000;

/// Customers whose id, name or email contains `query` (case-insensitive): Stripe customers,
/// and customers known only by their usage plan or MRR. Exact id matches first, at most
/// `limit`.
pub async fn search(store: &Store, query: &str, limit: usize) -> Result<Vec<CustomerName>> {
    let q = query.trim().to_lowercase();
    if q.is_empty() {
        return Ok(Vec::new());
    }
    let mut found = match indexed_matches(store, &q).await? {
        Some(found) => found,
        None => scanned_matches(store, &q).await?,
    };
    found.sort_by_key(|c| (c.id.to_lowercase() != q, c.id.clone()));
    found.truncate(limit);
    Ok(found)
}

/// Every customer matching `q` through SQLite's trigram index (migration 0035), or `None`
/// where the index cannot answer: on PostgreSQL (whose trigram index serves the scan's LIKE
/// itself), for fewer than three characters (no whole trigram), or when more than
/// [`SEARCH_SCOPE`] match, where the scan finds the first ones in id order sooner than the
/// index would list them all.
async fn indexed_matches(store: &Store, q: &str) -> Result<Option<Vec<CustomerName>>> {
    if store.backend() != crate::store::Backend::Sqlite || q.chars().count() < 3 {
        return Ok(None);
    }
    // One FTS5 string: the query as a phrase of its trigrams, i.e. the substring itself.
    let phrase = format!("\"{}\"", q.replace('"', "\"\""));
    let found: Vec<CustomerName> = store
        .fetch_all::<(String, Option<String>, Option<String>)>(
            "SELECT s.id, s.name, s.email FROM customer_search_fts f \
             JOIN customer_search_fts_keys k ON k.docid = f.rowid \
             JOIN customer_search s ON s.id = k.id \
             WHERE customer_search_fts MATCH $1 LIMIT $2",
            args![phrase.as_str(), SEARCH_SCOPE as i64 + 1],
        )
        .await?
        .into_iter()
        .map(|(id, name, email)| CustomerName { id, name, email })
        .collect();
    Ok((found.len() <= SEARCH_SCOPE).then_some(found))
}

/// The first [`SEARCH_SCOPE`] customers in id order whose row contains `q`, by a scan of
/// `customer_search`. Customers known only by their usage plan or subscription have rows too
/// (see [`know`]).
async fn scanned_matches(store: &Store, q: &str) -> Result<Vec<CustomerName>> {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let pattern = format!("%{escaped}%");
    Ok(store
        .fetch_all::<(String, Option<String>, Option<String>)>(
            "SELECT id, name, email FROM customer_search WHERE haystack LIKE $1 ESCAPE '\\' \
             ORDER BY id LIMIT $2",
            args![pattern.as_str(), SEARCH_SCOPE as i64],
        )
        .await?
        .into_iter()
        .map(|(id, name, email)| CustomerName { id, name, email })
        .collect())
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
