//! Plans (monthly price, API-call and provider-credit quotas, overage, hard limit) and which
//! customer is on which plan. Owns the `plans` and `customer_plans` tables.
//!
//! Plans declared in config are written to the table at start (the file is authoritative for
//! them, so Settings shows them read-only); plans created through the API or Settings live only
//! in the table.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::UsageError;
use crate::access::audit::{self, Actor};
use crate::args;
use crate::config::PlanConfig;
use crate::money::{self, Money, PICO};
use crate::store::{Store, Tx, now_ms};

type Result<T, E = UsageError> = std::result::Result<T, E>;

/// Longest customer id (the events' `subject`).
pub const MAX_CUSTOMER_ID: usize = super::event::MAX_SUBJECT;

/// A plan as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Plan {
    pub id: String,
    pub name: String,
    /// Monthly price.
    pub price: Money,
    /// Monthly API-call quota; null when the plan has none.
    pub api_calls: Option<i64>,
    /// Monthly provider-credit quota; null when the plan has none.
    pub provider_credits: Option<i64>,
    /// USD per 1,000 calls past the quota, as an exact decimal string.
    pub overage_per_1k_calls: String,
    /// Percent of quota from which the customer is `suspended`.
    pub hard_limit_percent: i64,
    /// `config` (declared in the config file; read-only here) or `ui`.
    pub origin: String,
    /// Customers currently on the plan.
    pub customers: i64,
}

/// What creating or editing a plan takes; the same fields as `[[plans]]`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    pub id: String,
    pub name: String,
    /// Monthly price as a decimal string, e.g. "26.00".
    pub price: String,
    #[serde(default = "usd")]
    pub currency: String,
    /// Monthly API-call quota; 0 or absent = none.
    #[serde(default)]
    pub api_calls: i64,
    /// Monthly provider-credit quota; 0 or absent = none.
    #[serde(default)]
    pub provider_credits: i64,
    /// USD per 1,000 calls past the quota as a decimal string, e.g. "0.50".
    #[serde(default = "zero")]
    pub overage_per_1k_calls: String,
    #[serde(default = "hard_limit")]
    pub hard_limit_percent: i64,
}

fn usd() -> String {
    "usd".into()
}
fn zero() -> String {
    "0".into()
}
fn hard_limit() -> i64 {
    120
}

/// A plan row checked and converted to what the table stores.
struct Checked {
    id: String,
    name: String,
    price_minor: i64,
    currency: String,
    api_calls: i64,
    provider_credits: i64,
    overage_pico: i64,
    hard_limit_percent: i64,
}

/// Checks a plan id: 1–64 characters of a–z, 0–9, '_' and '-'.
pub fn check_plan_id(id: &str) -> Result<(), String> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "plan id {id:?} must be 1–64 characters of a–z, 0–9, '_' and '-'"
        ))
    }
}

/// Checks a customer id as the quota and plan routes take it: what `subject` accepts.
pub fn check_customer_id(id: &str) -> Result<(), UsageError> {
    if id.is_empty() || id.len() > MAX_CUSTOMER_ID || id.chars().any(char::is_control) {
        return Err(UsageError::Invalid(format!(
            "customer id must be 1–{MAX_CUSTOMER_ID} bytes without control characters"
        )));
    }
    Ok(())
}

impl PlanInput {
    fn check(&self) -> Result<Checked> {
        let invalid = |field: &str, p: String| UsageError::Invalid(format!("{field}: {p}"));
        check_plan_id(&self.id).map_err(|p| invalid("id", p))?;
        let name = self.name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(invalid("name", "must be 1–100 characters".into()));
        }
        let price_minor = money::parse_scaled(&self.price, 2).map_err(|p| invalid("price", p))?;
        let currency = Money::new(0, &self.currency)
            .map_err(|p| invalid("currency", p))?
            .currency;
        if self.api_calls < 0 || self.provider_credits < 0 {
            return Err(UsageError::Invalid(
                "api_calls and provider_credits must not be negative".into(),
            ));
        }
        let overage_pico = money::parse_scaled(&self.overage_per_1k_calls, PICO)
            .map_err(|p| invalid("overage_per_1k_calls", p))?;
        if !(100..=1000).contains(&self.hard_limit_percent) {
            return Err(invalid(
                "hard_limit_percent",
                "must be between 100 and 1000".into(),
            ));
        }
        Ok(Checked {
            id: self.id.clone(),
            name: name.to_string(),
            price_minor,
            currency,
            api_calls: self.api_calls,
            provider_credits: self.provider_credits,
            overage_pico,
            hard_limit_percent: self.hard_limit_percent,
        })
    }
}

impl From<&PlanConfig> for PlanInput {
    fn from(c: &PlanConfig) -> Self {
        Self {
            id: c.id.clone(),
            name: c.name.clone(),
            price: c.price.0.clone(),
            currency: c.currency.clone(),
            api_calls: i64::try_from(c.api_calls).unwrap_or(i64::MAX),
            provider_credits: i64::try_from(c.provider_credits).unwrap_or(i64::MAX),
            overage_per_1k_calls: c.overage_per_1k_calls.0.clone(),
            hard_limit_percent: i64::from(c.hard_limit_percent),
        }
    }
}

type PlanRow = (String, String, i64, String, i64, i64, i64, i64, String, i64);

fn plan_from(r: PlanRow) -> Plan {
    let (id, name, price_minor, currency, api_calls, credits, overage, hard, origin, customers) = r;
    Plan {
        id,
        name,
        price: Money {
            amount: price_minor,
            currency,
        },
        api_calls: (api_calls > 0).then_some(api_calls),
        provider_credits: (credits > 0).then_some(credits),
        overage_per_1k_calls: money::format_scaled(overage, PICO, 2),
        hard_limit_percent: hard,
        origin,
        customers,
    }
}

/// Every plan, cheapest first.
pub async fn list(store: &Store) -> Result<Vec<Plan>> {
    let rows: Vec<PlanRow> = store
        .fetch_all(
            "SELECT p.id, p.name, p.price_minor, p.currency, p.api_calls, p.provider_credits, \
             p.overage_pico_per_1k, p.hard_limit_percent, p.origin, \
             (SELECT CAST(COALESCE(SUM(c.n), 0) AS BIGINT) FROM customer_plan_counts c \
              WHERE c.plan_id = p.id) \
             FROM plans p ORDER BY p.price_minor, p.id",
            args![],
        )
        .await?;
    Ok(rows.into_iter().map(plan_from).collect())
}

/// One plan by id.
pub async fn get(store: &Store, id: &str) -> Result<Plan> {
    let row: Option<PlanRow> = store
        .fetch_optional(
            "SELECT p.id, p.name, p.price_minor, p.currency, p.api_calls, p.provider_credits, \
             p.overage_pico_per_1k, p.hard_limit_percent, p.origin, \
             (SELECT CAST(COALESCE(SUM(c.n), 0) AS BIGINT) FROM customer_plan_counts c \
              WHERE c.plan_id = p.id) \
             FROM plans p WHERE p.id = $1",
            args![id],
        )
        .await?;
    row.map(plan_from)
        .ok_or_else(|| UsageError::NotFound(format!("plan {id:?}")))
}

async fn upsert(tx: &mut Tx, p: &Checked, origin: &str) -> Result<()> {
    let now = now_ms();
    tx.execute(
        "INSERT INTO plans (id, name, price_minor, currency, api_calls, provider_credits, \
         overage_pico_per_1k, hard_limit_percent, origin, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, price_minor = excluded.price_minor, \
         currency = excluded.currency, api_calls = excluded.api_calls, \
         provider_credits = excluded.provider_credits, \
         overage_pico_per_1k = excluded.overage_pico_per_1k, \
         hard_limit_percent = excluded.hard_limit_percent, origin = excluded.origin, \
         updated_at = excluded.updated_at",
        args![
            &p.id,
            &p.name,
            p.price_minor,
            &p.currency,
            p.api_calls,
            p.provider_credits,
            p.overage_pico,
            p.hard_limit_percent,
            origin,
            now
        ],
    )
    .await?;
    Ok(())
}

async fn origin_of(tx: &mut Tx, id: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = tx
        .fetch_optional("SELECT origin FROM plans WHERE id = $1", args![id])
        .await?;
    Ok(row.map(|(o,)| o))
}

/// Makes the table match the config's `[[plans]]`: declared plans are inserted or updated;
/// plans the config no longer declares are deleted, or, while customers are still on them,
/// kept as Settings plans so no customer silently loses their plan.
pub async fn sync_config(store: &Store, declared: &[PlanConfig]) -> Result<()> {
    let mut tx = store.begin().await?;
    for plan in declared {
        let checked = PlanInput::from(plan).check()?;
        upsert(&mut tx, &checked, "config").await?;
    }
    let stale: Vec<(String, i64)> = tx
        .fetch_all(
            "SELECT p.id, (SELECT COUNT(*) FROM customer_plans c WHERE c.plan_id = p.id) \
             FROM plans p WHERE p.origin = 'config'",
            args![],
        )
        .await?;
    for (id, customers) in stale {
        if declared.iter().any(|p| p.id == id) {
            continue;
        }
        if customers > 0 {
            tracing::warn!(plan = %id, customers, "plan removed from config still has customers; keeping it as a Settings plan");
            tx.execute(
                "UPDATE plans SET origin = 'ui', updated_at = $2 WHERE id = $1",
                args![&id, now_ms()],
            )
            .await?;
        } else {
            tx.execute("DELETE FROM plans WHERE id = $1", args![&id])
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Creates a Settings plan; 409 when the id is taken.
pub async fn create(store: &Store, input: &PlanInput, actor: &Actor) -> Result<Plan> {
    let checked = input.check()?;
    let mut tx = store.begin().await?;
    if origin_of(&mut tx, &checked.id).await?.is_some() {
        return Err(UsageError::Conflict(format!(
            "plan {:?} already exists",
            checked.id
        )));
    }
    upsert(&mut tx, &checked, "ui").await?;
    audit::record(
        &mut tx,
        actor,
        "plan.create",
        Some(&checked.id),
        Some(serde_json::json!({"name": checked.name, "price_minor": checked.price_minor})),
    )
    .await?;
    tx.commit().await?;
    get(store, &checked.id).await
}

/// Edits a Settings plan; config plans are refused (edit the config file instead).
pub async fn update(store: &Store, id: &str, input: &PlanInput, actor: &Actor) -> Result<Plan> {
    if input.id != id {
        return Err(UsageError::Invalid(format!(
            "id: the body's id {:?} does not match the path's {id:?}; plan ids cannot change",
            input.id
        )));
    }
    let checked = input.check()?;
    let mut tx = store.begin().await?;
    writable(&mut tx, id).await?;
    upsert(&mut tx, &checked, "ui").await?;
    audit::record(&mut tx, actor, "plan.update", Some(id), None).await?;
    tx.commit().await?;
    get(store, id).await
}

async fn writable(tx: &mut Tx, id: &str) -> Result<()> {
    match origin_of(tx, id).await?.as_deref() {
        None => Err(UsageError::NotFound(format!("plan {id:?}"))),
        Some("config") => Err(UsageError::Conflict(format!(
            "plan {id:?} is declared in the config file; change it there"
        ))),
        Some(_) => Ok(()),
    }
}

/// Deletes a Settings plan nobody is on.
pub async fn delete(store: &Store, id: &str, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    writable(&mut tx, id).await?;
    let (customers,): (i64,) = tx
        .fetch_one(
            "SELECT COUNT(*) FROM customer_plans WHERE plan_id = $1",
            args![id],
        )
        .await?;
    if customers > 0 {
        return Err(UsageError::Conflict(format!(
            "plan {id:?} still has {customers} customer(s); move them to another plan first"
        )));
    }
    tx.execute("DELETE FROM plans WHERE id = $1", args![id])
        .await?;
    audit::record(&mut tx, actor, "plan.delete", Some(id), None).await?;
    tx.commit().await?;
    Ok(())
}

/// A customer's plan assignment.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Assignment {
    pub customer_id: String,
    pub plan_id: String,
    /// `manual` (API, CLI, Settings) or `stripe` (from the customer's subscription).
    pub source: String,
    /// UTC milliseconds.
    pub assigned_at: i64,
}

/// Puts `customer` on `plan_id`, replacing any earlier assignment.
pub async fn assign(
    store: &Store,
    customer: &str,
    plan_id: &str,
    source: &str,
    actor: &Actor,
) -> Result<Assignment> {
    check_customer_id(customer)?;
    let mut tx = store.begin().await?;
    if origin_of(&mut tx, plan_id).await?.is_none() {
        return Err(UsageError::Invalid(format!(
            "plan: no plan {plan_id:?}; create it first"
        )));
    }
    let now = now_ms();
    tx.execute(
        "INSERT INTO customer_plans (customer_id, plan_id, source, assigned_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (customer_id) DO UPDATE SET plan_id = excluded.plan_id, source = excluded.source, \
         assigned_at = excluded.assigned_at",
        args![customer, plan_id, source, now],
    )
    .await?;
    crate::revenue::customers::know(&mut tx, customer).await?;
    audit::record(
        &mut tx,
        actor,
        "customer.plan",
        Some(customer),
        Some(serde_json::json!({"plan": plan_id})),
    )
    .await?;
    tx.commit().await?;
    Ok(Assignment {
        customer_id: customer.into(),
        plan_id: plan_id.into(),
        source: source.into(),
        assigned_at: now,
    })
}

/// Takes `customer` off their plan; 404 when they had none.
pub async fn unassign(store: &Store, customer: &str, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    let n = tx
        .execute(
            "DELETE FROM customer_plans WHERE customer_id = $1",
            args![customer],
        )
        .await?;
    if n == 0 {
        return Err(UsageError::NotFound(format!(
            "customer {customer:?} has no plan"
        )));
    }
    audit::record(&mut tx, actor, "customer.unplan", Some(customer), None).await?;
    tx.commit().await?;
    Ok(())
}

/// Assignments, newest first, optionally only one plan's.
pub async fn assignments(
    store: &Store,
    plan_id: Option<&str>,
    limit: i64,
) -> Result<Vec<Assignment>> {
    let rows: Vec<(String, String, String, i64)> = store
        .fetch_all(
            "SELECT customer_id, plan_id, source, assigned_at FROM customer_plans \
             WHERE ($1 IS NULL OR plan_id = $1) ORDER BY assigned_at DESC, customer_id LIMIT $2",
            args![plan_id, limit],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(customer_id, plan_id, source, assigned_at)| Assignment {
            customer_id,
            plan_id,
            source,
            assigned_at,
        })
        .collect())
}

/// Every assignment, newest first, `limit` from `offset`, with how many there are: the paged
/// list and the full export of Settings → Plans.
pub async fn assignments_page(
    store: &Store,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Assignment>, i64)> {
    let (rows, (total,)) = tokio::try_join!(
        store.fetch_all::<(String, String, String, i64)>(
            "SELECT customer_id, plan_id, source, assigned_at FROM customer_plans \
             ORDER BY assigned_at DESC, customer_id LIMIT $1 OFFSET $2",
            args![limit, offset],
        ),
        store.fetch_one::<(i64,)>(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM customer_plan_counts",
            args![],
        ),
    )?;
    let rows = rows
        .into_iter()
        .map(|(customer_id, plan_id, source, assigned_at)| Assignment {
            customer_id,
            plan_id,
            source,
            assigned_at,
        })
        .collect();
    Ok((rows, total))
}

/// Folds PostgreSQL's appended ±1 rows of `customer_plan_counts` (migration 0043); SQLite's
/// triggers keep one row per plan.
pub async fn fold_counts(store: &Store) -> Result<()> {
    Ok(store.fold_counts("customer_plan_counts", "plan_id").await?)
}
