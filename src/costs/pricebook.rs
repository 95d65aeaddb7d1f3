//! The price book: every dated price held in memory so pricing a `provider.usage` event at
//! ingest is a map lookup, reloaded from the `prices` table whenever prices change (here, or in
//! another process such as `opsdeck pricing import`, noticed by the reload job).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::money;
use crate::store::{Store, StoreError};
use crate::usage::event::NewEvent;

/// One dated price of a (provider, sku).
#[derive(Debug, Clone, PartialEq)]
struct Point {
    effective_from: i64,
    unit: String,
    price_pico: i64,
}

/// provider → sku → prices sorted by `effective_from`.
type Table = HashMap<String, HashMap<String, Vec<Point>>>;

#[derive(Default)]
struct Loaded {
    table: Table,
    /// What the table was loaded from, to notice changes cheaply: rows, and newest id plus newest
    /// write time (an edited row gets a new `created_at`).
    version: (i64, i64),
}

/// Shared, cheaply cloned handle.
#[derive(Clone, Default)]
pub struct PriceBook(Arc<RwLock<Arc<Loaded>>>);

impl PriceBook {
    /// Loads every price from the store.
    pub async fn load(store: &Store) -> Result<Self, StoreError> {
        let book = Self::default();
        book.reload(store).await?;
        Ok(book)
    }

    /// Re-reads the prices if the table changed since the last load; returns whether it did.
    pub async fn reload_if_changed(&self, store: &Store) -> Result<bool, StoreError> {
        let version = version(store).await?;
        if version == self.current().version {
            return Ok(false);
        }
        self.reload(store).await?;
        Ok(true)
    }

    /// Re-reads every price.
    pub async fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let version = version(store).await?;
        let rows: Vec<(String, String, String, i64, i64)> = store
            .fetch_all(
                "SELECT provider, sku, unit, price_pico, effective_from FROM prices \
                 ORDER BY provider, sku, effective_from",
                crate::args![],
            )
            .await?;
        let mut table = Table::new();
        for (provider, sku, unit, price_pico, effective_from) in rows {
            table
                .entry(provider)
                .or_default()
                .entry(sku)
                .or_default()
                .push(Point {
                    effective_from,
                    unit,
                    price_pico,
                });
        }
        let loaded = Arc::new(Loaded { table, version });
        match self.0.write() {
            Ok(mut slot) => *slot = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
        Ok(())
    }

    fn current(&self) -> Arc<Loaded> {
        match self.0.read() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Prices every `provider.usage` event of `events` in place; the others are untouched.
    /// One read of the shared table serves the whole batch.
    pub fn price_all(&self, events: &mut [NewEvent]) {
        let loaded = self.current();
        for e in events {
            let (Some(provider), Some(sku)) = (&e.facts.provider, &e.facts.sku) else {
                continue;
            };
            e.facts.cost_nano = loaded
                .table
                .get(provider.as_str())
                .and_then(|skus| skus.get(sku.as_str()))
                .and_then(|points| {
                    let idx = points.partition_point(|p| p.effective_from <= e.time_ms);
                    points.get(idx.checked_sub(1)?)
                })
                .filter(|p| p.unit == e.facts.unit)
                .map(|p| money::cost_nano(e.facts.quantity, p.price_pico));
        }
    }
}

async fn version(store: &Store) -> Result<(i64, i64), StoreError> {
    store
        .fetch_one(
            "SELECT COUNT(*), COALESCE(MAX(id), 0) + COALESCE(MAX(created_at), 0) FROM prices",
            crate::args![],
        )
        .await
}
