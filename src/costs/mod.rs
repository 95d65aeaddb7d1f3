//! Provider cost: pricing tables (provider, sku, unit, exact price, effective date), pricing of
//! `provider.usage` events at ingest, price imports, and the cost figures read from the rollups.
//! Owns the `prices` table.

pub mod import;
pub mod pricebook;
pub mod prices;
pub mod report;
pub mod routes;

use crate::access::AccessError;
use crate::store::StoreError;
use crate::usage::event::UNITS;

/// Failures of the costs domain; the HTTP layer maps them in one place.
#[derive(Debug, thiserror::Error)]
pub enum CostsError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AccessError> for CostsError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Store(s) => CostsError::Store(s),
            other => CostsError::Invalid(other.to_string()),
        }
    }
}

/// One dated unit price, as declared in config, imported from a file or entered in Settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceRow {
    /// Lowercase provider id, e.g. `luma`.
    pub provider: String,
    /// Lowercase sku id, e.g. `v2`; may contain `/`, `:` and `@` (model names such as
    /// `openai/gpt-4o`).
    pub sku: String,
    /// One of [`UNITS`].
    pub unit: String,
    /// USD per unit in pico-dollars (10^-12).
    pub price_pico: i64,
    /// UTC milliseconds from which the price applies; `None` lets the caller choose (the import
    /// time, or a `--effective-from` flag).
    pub effective_from: Option<i64>,
}

/// Checks a provider id: lowercase ASCII letters, digits, `.`, `_`, `-`.
pub fn check_provider(id: &str) -> Result<(), String> {
    check_id("provider", id, b"._-")
}

/// Checks a sku id: like a provider id, plus `/`, `:` and `@` as model names use them.
pub fn check_sku(id: &str) -> Result<(), String> {
    check_id("sku", id, b"._-/:@")
}

fn check_id(what: &str, id: &str, extra: &[u8]) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {id:?} must be 1–200 characters of a–z, 0–9 and {}",
            extra
                .iter()
                .map(|b| format!("'{}'", *b as char))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Checks a unit name against [`UNITS`].
pub fn check_unit(unit: &str) -> Result<(), String> {
    if UNITS.contains(&unit) {
        Ok(())
    } else {
        Err(format!("unit {unit:?} is not one of {}", UNITS.join(", ")))
    }
}
