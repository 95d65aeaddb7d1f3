//! The `prices` table: listing, adding and deleting dated prices, importing price files and
//! applying `[[pricing]]` from config. Every write is audited; the price book picks changes up.

use serde::Serialize;
use utoipa::ToSchema;

use super::{CostsError, PriceRow, check_provider, check_sku, check_unit};
use crate::access::audit::{self, Actor};
use crate::args;
use crate::config::PriceConfig;
use crate::money::{self, PICO};
use crate::store::{Store, Tx, now_ms};

type Result<T, E = CostsError> = std::result::Result<T, E>;

/// One dated price as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Price {
    pub id: i64,
    pub provider: String,
    pub sku: String,
    pub unit: String,
    /// USD per unit, exact decimal string.
    pub price_usd: String,
    /// UTC milliseconds from which the price applies.
    pub effective_from: i64,
    /// `default`, `config`, `import` or `ui`.
    pub origin: String,
    /// Whether this is the price in force now for its provider and sku.
    pub current: bool,
}

/// Every price, grouped by provider and sku, oldest first.
pub async fn list(store: &Store) -> Result<Vec<Price>> {
    let rows: Vec<(i64, String, String, String, i64, i64, String)> = store
        .fetch_all(
            "SELECT id, provider, sku, unit, price_pico, effective_from, origin FROM prices \
             ORDER BY provider, sku, effective_from",
            args![],
        )
        .await?;
    let now = now_ms();
    let mut prices: Vec<Price> = rows
        .into_iter()
        .map(|(id, provider, sku, unit, pico, from, origin)| Price {
            id,
            provider,
            sku,
            unit,
            price_usd: money::format_scaled(pico, PICO, 2),
            effective_from: from,
            origin,
            current: false,
        })
        .collect();
    // The current price is the last one already in force for its (provider, sku).
    for i in 0..prices.len() {
        let p = &prices[i];
        let next_in_force = prices
            .get(i + 1)
            .is_some_and(|n| n.provider == p.provider && n.sku == p.sku && n.effective_from <= now);
        prices[i].current = p.effective_from <= now && !next_in_force;
    }
    Ok(prices)
}

fn check(row: &PriceRow) -> Result<()> {
    check_provider(&row.provider).map_err(CostsError::Invalid)?;
    check_sku(&row.sku).map_err(CostsError::Invalid)?;
    check_unit(&row.unit).map_err(CostsError::Invalid)?;
    if row.price_pico < 0 {
        return Err(CostsError::Invalid("price must not be negative".into()));
    }
    Ok(())
}

/// Writes one price at (provider, sku, effective_from), replacing a price dated the same.
async fn put(tx: &mut Tx, row: &PriceRow, effective_from: i64, origin: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO prices (provider, sku, unit, price_pico, effective_from, origin, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (provider, sku, effective_from) DO UPDATE SET unit = excluded.unit, \
         price_pico = excluded.price_pico, origin = excluded.origin, created_at = excluded.created_at",
        args![
            &row.provider,
            &row.sku,
            &row.unit,
            row.price_pico,
            effective_from,
            origin,
            now_ms()
        ],
    )
    .await?;
    Ok(())
}

/// The price (unit, pico) in force at `at` for a (provider, sku).
async fn in_force(
    tx: &mut Tx,
    provider: &str,
    sku: &str,
    at: i64,
) -> Result<Option<(String, i64)>> {
    Ok(tx
        .fetch_optional(
            "SELECT unit, price_pico FROM prices WHERE provider = $1 AND sku = $2 \
             AND effective_from <= $3 ORDER BY effective_from DESC LIMIT 1",
            args![provider, sku, at],
        )
        .await?)
}

/// Adds a dated price (from Settings or the API). Costs already recorded keep their price.
pub async fn add(store: &Store, row: &PriceRow, actor: &Actor) -> Result<()> {
    check(row)?;
    let from = row
        .effective_from
        .ok_or_else(|| CostsError::Invalid("effective_from is required".into()))?;
    let mut tx = store.begin().await?;
    put(&mut tx, row, from, "ui").await?;
    audit::record(
        &mut tx,
        actor,
        "price.add",
        Some(&format!("{}/{}", row.provider, row.sku)),
        Some(serde_json::json!({
            "unit": row.unit,
            "price_usd": money::format_scaled(row.price_pico, PICO, 2),
            "effective_from": from,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes one dated price.
pub async fn delete(store: &Store, id: i64, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    let row: Option<(String, String, i64)> = tx
        .fetch_optional(
            "SELECT provider, sku, effective_from FROM prices WHERE id = $1",
            args![id],
        )
        .await?;
    let (provider, sku, from) = row.ok_or_else(|| CostsError::NotFound(format!("price {id}")))?;
    tx.execute("DELETE FROM prices WHERE id = $1", args![id])
        .await?;
    audit::record(
        &mut tx,
        actor,
        "price.delete",
        Some(&format!("{provider}/{sku}")),
        Some(serde_json::json!({"effective_from": from})),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportReport {
    /// Prices for a (provider, sku) that had none in force at their date.
    pub added: usize,
    /// Prices that differ from the one in force at their date (recorded as a new dated price).
    pub changed: usize,
    /// Entries equal to the price already in force, plus entries the file's parser refused.
    pub skipped: usize,
}

/// Applies parsed price rows in one transaction. A row without a date applies from
/// `default_from`. A row equal to the price in force at its date is skipped, so importing the
/// same file twice changes nothing.
pub async fn import(
    store: &Store,
    rows: &[PriceRow],
    default_from: i64,
    actor: &Actor,
    file: &str,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut tx = store.begin().await?;
    for row in rows {
        if check(row).is_err() {
            report.skipped += 1;
            continue;
        }
        let from = row.effective_from.unwrap_or(default_from);
        match in_force(&mut tx, &row.provider, &row.sku, from).await? {
            Some((unit, pico)) if unit == row.unit && pico == row.price_pico => {
                report.skipped += 1;
                continue;
            }
            Some(_) => report.changed += 1,
            None => report.added += 1,
        }
        put(&mut tx, row, from, "import").await?;
    }
    audit::record(
        &mut tx,
        actor,
        "price.import",
        Some(file),
        Some(serde_json::json!({
            "added": report.added, "changed": report.changed, "skipped": report.skipped,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(report)
}

/// Writes the config's `[[pricing]]` (already validated at load) into the table.
pub async fn sync_config(store: &Store, declared: &[PriceConfig]) -> Result<()> {
    if declared.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    for p in declared {
        let row = PriceRow {
            provider: p.provider.clone(),
            sku: p.sku.clone(),
            unit: p.unit.clone(),
            price_pico: money::parse_scaled(&p.price.0, PICO).map_err(CostsError::Invalid)?,
            effective_from: None,
        };
        check(&row)?;
        let from =
            super::import::parse_effective_from(&p.effective_from).map_err(CostsError::Invalid)?;
        // Unchanged config rows are left alone so restarts do not look like price edits.
        let same: Option<(i64,)> = tx
            .fetch_optional(
                "SELECT id FROM prices WHERE provider = $1 AND sku = $2 AND effective_from = $3 \
                 AND unit = $4 AND price_pico = $5",
                args![&row.provider, &row.sku, from, &row.unit, row.price_pico],
            )
            .await?;
        if same.is_none() {
            put(&mut tx, &row, from, "config").await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
