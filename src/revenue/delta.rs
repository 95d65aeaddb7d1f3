//! Storing a recomputed MRR history as its difference from the history already stored.
//!
//! A recompute runs the engine over every subscription state, but between two recomputes
//! only the customers whose subscriptions changed get different rows. Writing just those
//! (and deleting rows that no longer exist) instead of replacing every table keeps a
//! recompute after a webhook cheap, leaves PostgreSQL without a table's worth of dead tuples
//! to vacuum, and lets readers keep their pages. When most rows differ (the first fill, a
//! changed reporting currency) replacing the tables wholesale is faster, and [`plan`] says so.

use super::mrr::{DayTotals, Kind, Movement};

/// A `revenue_days` row, in [`DayTotals::columns`] order.
pub type DayColumns = [i64; 12];
use crate::store::{PG_STATEMENT_BYTES, StoreError, chunks_by_size};

/// The rows to upsert and the keys to delete so that a table holding `old` holds `new`.
#[derive(Debug, PartialEq)]
pub struct Delta<K, V> {
    pub upsert: Vec<(K, V)>,
    pub delete: Vec<K>,
}

impl<K, V> Delta<K, V> {
    /// Rows written or deleted.
    pub fn changes(&self) -> usize {
        self.upsert.len() + self.delete.len()
    }
}

/// Compares `old` (any order; sorted here) with `new` (sorted by key, keys unique).
pub fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    mut old: Vec<(K, V)>,
    new: &[(K, V)],
) -> Delta<K, V> {
    old.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut delta = Delta {
        upsert: Vec::new(),
        delete: Vec::new(),
    };
    let mut old = old.into_iter().peekable();
    for (key, value) in new {
        while let Some((k, _)) = old.next_if(|(k, _)| k < key) {
            delta.delete.push(k);
        }
        match old.next_if(|(k, _)| k == key) {
            Some((_, v)) if v == *value => {}
            _ => delta.upsert.push((key.clone(), value.clone())),
        }
    }
    delta.delete.extend(old.map(|(k, _)| k));
    delta
}

/// A movement row's key: customer (index into the sorted names) and day.
pub type MovementKey = (u32, i64);
/// A movement row's value: kind, amount and the day its paying spell began.
pub type MovementValue = (Kind, i64, i64);
/// A customer row: MRR as of the recompute's day, first movement day, latest movement day on
/// or before it, and the day of their first movement after it (a scheduled change).
pub type CustomerValue = (i64, i64, i64, Option<i64>);

/// The three tables' differences, or `None` where rewriting them is the cheaper way.
pub struct Plan {
    pub days: Delta<i64, DayColumns>,
    pub movements: Delta<MovementKey, MovementValue>,
    pub customers: Delta<u32, CustomerValue>,
    /// Stored rows of customers the recompute no longer knows (by id), to delete.
    pub orphan_movements: Vec<(String, i64)>,
    pub orphan_customers: Vec<String>,
}

/// What the stored tables hold, as read back, keyed like the fresh rows.
#[derive(Default)]
pub struct Stored {
    days: Vec<(i64, DayColumns)>,
    movements: Vec<(MovementKey, MovementValue)>,
    orphan_movements: Vec<(String, i64)>,
    customers: Vec<(u32, CustomerValue)>,
    orphan_customers: Vec<String>,
    /// The last customer id looked up and its number: movements come in key order, a
    /// customer's rows together, so most lookups are this one.
    last: Option<(String, Option<u32>)>,
}

/// The stored tables' rows, as [`Stored`] reads them.
pub const STORED_DAYS_SQL: &str = "SELECT day, mrr, customers, subscriptions, new, expansion, \
     contraction, churn, reactivation, new_customers, churned_customers, reactivated_customers \
     FROM revenue_days";
pub const STORED_MOVEMENTS_SQL: &str =
    "SELECT customer_id, day, kind, amount, since FROM revenue_movements";
pub const STORED_CUSTOMERS_SQL: &str =
    "SELECT customer_id, mrr, first_day, last_day, next_day FROM revenue_customers";

impl Stored {
    pub fn day(&mut self, c: DayColumns) {
        self.days.push((c[0], c));
    }

    /// One stored movement; `names` are the fresh history's customer ids, sorted.
    pub fn movement(
        &mut self,
        names: &[String],
        id: &str,
        day: i64,
        kind: &str,
        amount: i64,
        since: i64,
    ) {
        let known = match &self.last {
            Some((last, n)) if last == id => *n,
            _ => {
                let n = number(names, id);
                self.last = Some((id.to_owned(), n));
                n
            }
        };
        match known {
            // A kind this version does not know matches no new row: the new row overwrites
            // it, or the delete removes it.
            Some(c) => self.movements.push((
                (c, day),
                Kind::parse(kind).map_or((Kind::New, i64::MIN, i64::MIN), |k| (k, amount, since)),
            )),
            None => self.orphan_movements.push((id.to_owned(), day)),
        }
    }

    pub fn customer(&mut self, names: &[String], id: &str, row: CustomerValue) {
        match number(names, id) {
            Some(c) => self.customers.push((c, row)),
            None => self.orphan_customers.push(id.to_owned()),
        }
    }
}

/// A customer id's number in the fresh history (its index in the sorted ids).
fn number(names: &[String], id: &str) -> Option<u32> {
    names
        .binary_search_by(|n| n.as_str().cmp(id))
        .ok()
        .map(|i| i as u32)
}

/// The new history's rows.
pub struct Fresh {
    pub days: Vec<DayTotals>,
    /// In (customer, day) order.
    pub movements: Vec<Movement>,
    /// Each movement's paying-spell start.
    pub since: Vec<i64>,
    /// Per customer number, in number order.
    pub customers: Vec<(u32, CustomerValue)>,
}

/// The difference between `stored` and `fresh`, or `None` when more than a quarter of the
/// movements differ and a wholesale rewrite is cheaper.
pub fn plan(stored: Stored, fresh: &Fresh) -> Option<Plan> {
    let Stored {
        days: old_days,
        movements: old_movements,
        orphan_movements,
        customers: old_customers,
        orphan_customers,
        ..
    } = stored;
    let mut new_movements: Vec<(MovementKey, MovementValue)> = fresh
        .movements
        .iter()
        .zip(&fresh.since)
        .map(|(m, since)| ((m.customer, m.day), (m.kind, m.amount, *since)))
        .collect();
    if !new_movements.is_sorted_by(|a, b| a.0 < b.0) {
        new_movements.sort_unstable_by_key(|m| m.0);
    }
    let rows = new_movements.len().max(old_movements.len());
    let movements = diff(old_movements, &new_movements);
    if orphan_movements.len() + movements.changes() > rows / 4 {
        return None;
    }
    let customers = diff(old_customers, &fresh.customers);
    let new_days: Vec<(i64, DayColumns)> =
        fresh.days.iter().map(|d| (d.day, d.columns())).collect();
    let days = diff(old_days, &new_days);
    Some(Plan {
        days,
        movements,
        customers,
        orphan_movements,
        orphan_customers,
    })
}

/// Applies `plan` inside a direct SQLite transaction.
pub fn apply_direct(
    tx: &rusqlite::Transaction<'_>,
    plan: &Plan,
    names: &[String],
) -> Result<(), StoreError> {
    let name = |c: u32| names.get(c as usize).map_or("", String::as_str);
    let mut delete = tx.prepare_cached("DELETE FROM revenue_days WHERE day = ?1")?;
    for day in &plan.days.delete {
        delete.execute([day])?;
    }
    let mut upsert = tx.prepare_cached(
        "INSERT OR REPLACE INTO revenue_days (day, mrr, customers, subscriptions, new, \
         expansion, contraction, churn, reactivation, new_customers, churned_customers, \
         reactivated_customers) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    for (_, d) in &plan.days.upsert {
        upsert.execute(rusqlite::params_from_iter(d))?;
    }
    let mut delete =
        tx.prepare_cached("DELETE FROM revenue_movements WHERE customer_id = ?1 AND day = ?2")?;
    for (c, day) in &plan.movements.delete {
        delete.execute(rusqlite::params![name(*c), day])?;
    }
    for (id, day) in &plan.orphan_movements {
        delete.execute(rusqlite::params![id, day])?;
    }
    let mut upsert = tx.prepare_cached(
        "INSERT OR REPLACE INTO revenue_movements (customer_id, day, kind, amount, since) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for ((c, day), (kind, amount, since)) in &plan.movements.upsert {
        upsert.execute(rusqlite::params![
            name(*c),
            day,
            kind.as_str(),
            amount,
            since
        ])?;
    }
    let mut delete = tx.prepare_cached("DELETE FROM revenue_customers WHERE customer_id = ?1")?;
    for c in &plan.customers.delete {
        delete.execute([name(*c)])?;
    }
    for id in &plan.orphan_customers {
        delete.execute([id])?;
    }
    let mut upsert = tx.prepare_cached(
        // An upsert, not INSERT OR REPLACE: a replaced row fires no delete trigger, and the
        // paying count (migration 0038) would count the customer twice.
        "INSERT INTO revenue_customers (customer_id, mrr, first_day, last_day, next_day) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (customer_id) DO UPDATE SET \
         mrr = excluded.mrr, first_day = excluded.first_day, last_day = excluded.last_day, \
         next_day = excluded.next_day",
    )?;
    for (c, (mrr, first, last, next)) in &plan.customers.upsert {
        upsert.execute(rusqlite::params![name(*c), mrr, first, last, next])?;
    }
    Ok(())
}

/// Applies `plan` inside a PostgreSQL transaction: each change as column arrays unpacked by
/// `UNNEST`, in statements under [`PG_STATEMENT_BYTES`].
pub async fn apply_pg(
    conn: &mut sqlx::PgConnection,
    plan: &Plan,
    names: &[String],
) -> Result<(), StoreError> {
    let name = |c: u32| names.get(c as usize).map_or("", String::as_str);

    for chunk in plan.days.delete.chunks(PG_STATEMENT_BYTES / 16) {
        sqlx::query("DELETE FROM revenue_days WHERE day = ANY($1::int8[])")
            .bind(chunk)
            .execute(&mut *conn)
            .await?;
    }
    for chunk in plan.days.upsert.chunks(PG_STATEMENT_BYTES / (12 * 12)) {
        let mut q = sqlx::query(
            "INSERT INTO revenue_days (day, mrr, customers, subscriptions, new, expansion, \
             contraction, churn, reactivation, new_customers, churned_customers, \
             reactivated_customers) \
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], \
             $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], \
             $12::int8[]) \
             ON CONFLICT (day) DO UPDATE SET mrr = excluded.mrr, \
             customers = excluded.customers, subscriptions = excluded.subscriptions, \
             new = excluded.new, expansion = excluded.expansion, \
             contraction = excluded.contraction, churn = excluded.churn, \
             reactivation = excluded.reactivation, new_customers = excluded.new_customers, \
             churned_customers = excluded.churned_customers, \
             reactivated_customers = excluded.reactivated_customers",
        );
        for column in 0..12 {
            q = q.bind(chunk.iter().map(|(_, d)| d[column]).collect::<Vec<_>>());
        }
        q.execute(&mut *conn).await?;
    }

    let mut deletes: Vec<(&str, i64)> = plan
        .movements
        .delete
        .iter()
        .map(|(c, day)| (name(*c), *day))
        .collect();
    deletes.extend(
        plan.orphan_movements
            .iter()
            .map(|(id, day)| (id.as_str(), *day)),
    );
    for chunk in chunks_by_size(&deletes, PG_STATEMENT_BYTES, |(id, _)| id.len() + 16) {
        sqlx::query(
            "DELETE FROM revenue_movements m \
             USING UNNEST($1::text[], $2::int8[]) AS d (customer_id, day) \
             WHERE m.customer_id = d.customer_id AND m.day = d.day",
        )
        .bind(chunk.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, day)| *day).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    let size = |((c, _), _): &(MovementKey, MovementValue)| name(*c).len() + 60;
    for chunk in chunks_by_size(&plan.movements.upsert, PG_STATEMENT_BYTES, size) {
        sqlx::query(
            "INSERT INTO revenue_movements (customer_id, day, kind, amount, since) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int8[], $5::int8[]) \
             ON CONFLICT (customer_id, day) DO UPDATE SET kind = excluded.kind, \
             amount = excluded.amount, since = excluded.since",
        )
        .bind(chunk.iter().map(|((c, _), _)| name(*c)).collect::<Vec<_>>())
        .bind(chunk.iter().map(|((_, day), _)| *day).collect::<Vec<_>>())
        .bind(
            chunk
                .iter()
                .map(|(_, (k, _, _))| k.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(chunk.iter().map(|(_, (_, a, _))| *a).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, (_, _, s))| *s).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }

    let mut deletes: Vec<&str> = plan.customers.delete.iter().map(|c| name(*c)).collect();
    deletes.extend(plan.orphan_customers.iter().map(String::as_str));
    for chunk in chunks_by_size(&deletes, PG_STATEMENT_BYTES, |id| id.len() + 8) {
        sqlx::query("DELETE FROM revenue_customers WHERE customer_id = ANY($1::text[])")
            .bind(chunk)
            .execute(&mut *conn)
            .await?;
    }
    let size = |(c, _): &(u32, CustomerValue)| name(*c).len() + 50;
    for chunk in chunks_by_size(&plan.customers.upsert, PG_STATEMENT_BYTES, size) {
        sqlx::query(
            "INSERT INTO revenue_customers (customer_id, mrr, first_day, last_day, next_day) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) \
             ON CONFLICT (customer_id) DO UPDATE SET mrr = excluded.mrr, \
             first_day = excluded.first_day, last_day = excluded.last_day, \
             next_day = excluded.next_day",
        )
        .bind(chunk.iter().map(|(c, _)| name(*c)).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, (m, _, _, _))| *m).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, (_, f, _, _))| *f).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, (_, _, l, _))| *l).collect::<Vec<_>>())
        .bind(chunk.iter().map(|(_, (_, _, _, n))| *n).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lists_changed_new_and_gone_rows() {
        let old = vec![(5, 'e'), (1, 'a'), (2, 'b'), (4, 'x')];
        let new = [(1, 'a'), (3, 'c'), (4, 'd'), (6, 'f')];
        assert_eq!(
            diff(old, &new),
            Delta {
                upsert: vec![(3, 'c'), (4, 'd'), (6, 'f')],
                delete: vec![2, 5],
            }
        );
        assert_eq!(diff(vec![(1, 'a')], &[(1, 'a')]).changes(), 0);
        assert_eq!(diff(Vec::<(i32, char)>::new(), &[(1, 'a')]).upsert.len(), 1);
        assert_eq!(diff(vec![(1, 'a')], &[]).delete, vec![1]);
    }

    fn movement(customer: u32, day: i64, kind: Kind, amount: i64) -> Movement {
        Movement {
            day,
            customer,
            kind,
            amount,
        }
    }

    #[test]
    fn small_changes_are_written_as_a_difference() {
        let names: Vec<String> = (0..10).map(|c| format!("cus_{c}")).collect();
        let fresh = Fresh {
            days: Vec::new(),
            movements: (0..10).map(|c| movement(c, 100, Kind::New, 5)).collect(),
            since: vec![100; 10],
            customers: Vec::new(),
        };
        let mut stored = Stored::default();
        for c in 0..10 {
            // cus_4 stored with another amount; a customer the new history no longer has.
            let amount = if c == 4 { 7 } else { 5 };
            stored.movement(&names, &format!("cus_{c}"), 100, "new", amount, 100);
        }
        stored.movement(&names, "cus_gone", 100, "new", 5, 100);
        let plan = plan(stored, &fresh).expect("two of ten rows differ");
        assert_eq!(plan.movements.upsert, vec![((4, 100), (Kind::New, 5, 100))]);
        assert!(plan.movements.delete.is_empty());
        assert_eq!(plan.orphan_movements, vec![("cus_gone".to_string(), 100)]);

        // Most rows different: rewriting is cheaper.
        let mut stored = Stored::default();
        for c in 0..10 {
            stored.movement(&names, &format!("cus_{c}"), 100, "expansion", 5, 100);
        }
        assert!(super::plan(stored, &fresh).is_none());
        // Nothing stored yet (the first fill): likewise.
        assert!(super::plan(Stored::default(), &fresh).is_none());
    }
}
