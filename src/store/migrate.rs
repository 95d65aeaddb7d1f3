//! Schema migrations, one folder per dialect under `migrations/`, embedded in the binary.
//!
//! Both folders must hold the same numbered files and end in the same tables and columns; the
//! `migrations_give_both_dialects_the_same_schema` integration test enforces it against a real PostgreSQL.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::{Backend, Pool, Result, Store};
use crate::args;

/// (version, description, SQLite text, PostgreSQL text)
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "platform",
        include_str!("../../migrations/sqlite/0001_platform.sql"),
        include_str!("../../migrations/postgres/0001_platform.sql"),
    ),
    (
        2,
        "events",
        include_str!("../../migrations/sqlite/0002_events.sql"),
        include_str!("../../migrations/postgres/0002_events.sql"),
    ),
    (
        3,
        "usage_rollups",
        include_str!("../../migrations/sqlite/0003_usage_rollups.sql"),
        include_str!("../../migrations/postgres/0003_usage_rollups.sql"),
    ),
    (
        4,
        "metering",
        include_str!("../../migrations/sqlite/0004_metering.sql"),
        include_str!("../../migrations/postgres/0004_metering.sql"),
    ),
    (
        5,
        "read_paths",
        include_str!("../../migrations/sqlite/0005_read_paths.sql"),
        include_str!("../../migrations/postgres/0005_read_paths.sql"),
    ),
    (
        6,
        "rollups_by_customer",
        include_str!("../../migrations/sqlite/0006_rollups_by_customer.sql"),
        include_str!("../../migrations/postgres/0006_rollups_by_customer.sql"),
    ),
    (
        7,
        "revenue",
        include_str!("../../migrations/sqlite/0007_revenue.sql"),
        include_str!("../../migrations/postgres/0007_revenue.sql"),
    ),
    (
        8,
        "ingest storage",
        include_str!("../../migrations/sqlite/0008_ingest_storage.sql"),
        include_str!("../../migrations/postgres/0008_ingest_storage.sql"),
    ),
    (
        9,
        "state echoes",
        include_str!("../../migrations/sqlite/0009_state_echoes.sql"),
        include_str!("../../migrations/postgres/0009_state_echoes.sql"),
    ),
    (
        10,
        "health",
        include_str!("../../migrations/sqlite/0010_health.sql"),
        include_str!("../../migrations/postgres/0010_health.sql"),
    ),
    (
        11,
        "error log",
        include_str!("../../migrations/sqlite/0011_error_log.sql"),
        include_str!("../../migrations/postgres/0011_error_log.sql"),
    ),
    (
        12,
        "provider readings",
        include_str!("../../migrations/sqlite/0012_provider_readings.sql"),
        include_str!("../../migrations/postgres/0012_provider_readings.sql"),
    ),
    (
        13,
        "tokens",
        include_str!("../../migrations/sqlite/0013_tokens.sql"),
        include_str!("../../migrations/postgres/0013_tokens.sql"),
    ),
    (
        14,
        "provider extras",
        include_str!("../../migrations/sqlite/0014_provider_extras.sql"),
        include_str!("../../migrations/postgres/0014_provider_extras.sql"),
    ),
    (
        15,
        "leases",
        include_str!("../../migrations/sqlite/0015_leases.sql"),
        include_str!("../../migrations/postgres/0015_leases.sql"),
    ),
    (
        16,
        "monitor purges",
        include_str!("../../migrations/sqlite/0016_monitor_purges.sql"),
        include_str!("../../migrations/postgres/0016_monitor_purges.sql"),
    ),
    (
        17,
        "webhooks",
        include_str!("../../migrations/sqlite/0017_webhooks.sql"),
        include_str!("../../migrations/postgres/0017_webhooks.sql"),
    ),
    (
        18,
        "notifiers",
        include_str!("../../migrations/sqlite/0018_notifiers.sql"),
        include_str!("../../migrations/postgres/0018_notifiers.sql"),
    ),
    (
        19,
        "alerts",
        include_str!("../../migrations/sqlite/0019_alerts.sql"),
        include_str!("../../migrations/postgres/0019_alerts.sql"),
    ),
    (
        20,
        "customer mrr today",
        include_str!("../../migrations/sqlite/0020_customer_mrr_today.sql"),
        include_str!("../../migrations/postgres/0020_customer_mrr_today.sql"),
    ),
    (
        21,
        "problems first",
        include_str!("../../migrations/sqlite/0021_problems_first.sql"),
        include_str!("../../migrations/postgres/0021_problems_first.sql"),
    ),
    (
        23,
        "check error detail",
        include_str!("../../migrations/sqlite/0023_check_error_detail.sql"),
        include_str!("../../migrations/postgres/0023_check_error_detail.sql"),
    ),
    (
        24,
        "open alerts by severity",
        include_str!("../../migrations/sqlite/0024_open_alerts_by_severity.sql"),
        include_str!("../../migrations/postgres/0024_open_alerts_by_severity.sql"),
    ),
    (
        25,
        "lean events",
        include_str!("../../migrations/sqlite/0025_lean_events.sql"),
        include_str!("../../migrations/postgres/0025_lean_events.sql"),
    ),
    (
        26,
        "rollup journal",
        include_str!("../../migrations/sqlite/0026_rollup_journal.sql"),
        include_str!("../../migrations/postgres/0026_rollup_journal.sql"),
    ),
    (
        27,
        "margin costs by day",
        include_str!("../../migrations/sqlite/0027_margin_costs_by_day.sql"),
        include_str!("../../migrations/postgres/0027_margin_costs_by_day.sql"),
    ),
    (
        28,
        "customer search",
        include_str!("../../migrations/sqlite/0028_customer_search.sql"),
        include_str!("../../migrations/postgres/0028_customer_search.sql"),
    ),
    (
        29,
        "recent plan assignments",
        include_str!("../../migrations/sqlite/0029_recent_plan_assignments.sql"),
        include_str!("../../migrations/postgres/0029_recent_plan_assignments.sql"),
    ),
    (
        30,
        "rollups without a time index",
        include_str!("../../migrations/sqlite/0030_rollups_without_time_index.sql"),
        include_str!("../../migrations/postgres/0030_rollups_without_time_index.sql"),
    ),
    (
        31,
        "searchable ids",
        include_str!("../../migrations/sqlite/0031_searchable_ids.sql"),
        include_str!("../../migrations/postgres/0031_searchable_ids.sql"),
    ),
    (
        32,
        "delivery counts",
        include_str!("../../migrations/sqlite/0032_delivery_counts.sql"),
        include_str!("../../migrations/postgres/0032_delivery_counts.sql"),
    ),
    (
        33,
        "page read paths",
        include_str!("../../migrations/sqlite/0033_page_read_paths.sql"),
        include_str!("../../migrations/postgres/0033_page_read_paths.sql"),
    ),
    (
        34,
        "kept counts",
        include_str!("../../migrations/sqlite/0034_kept_counts.sql"),
        include_str!("../../migrations/postgres/0034_kept_counts.sql"),
    ),
    (
        35,
        "search index",
        include_str!("../../migrations/sqlite/0035_search_index.sql"),
        include_str!("../../migrations/postgres/0035_search_index.sql"),
    ),
    (
        36,
        "delivery hours",
        include_str!("../../migrations/sqlite/0036_delivery_hours.sql"),
        include_str!("../../migrations/postgres/0036_delivery_hours.sql"),
    ),
    (
        37,
        "event keys",
        include_str!("../../migrations/sqlite/0037_event_keys.sql"),
        include_str!("../../migrations/postgres/0037_event_keys.sql"),
    ),
    (
        38,
        "paying count",
        include_str!("../../migrations/sqlite/0038_paying_count.sql"),
        include_str!("../../migrations/postgres/0038_paying_count.sql"),
    ),
    (
        39,
        "costed count",
        include_str!("../../migrations/sqlite/0039_costed_count.sql"),
        include_str!("../../migrations/postgres/0039_costed_count.sql"),
    ),
    (
        40,
        "payment counts",
        include_str!("../../migrations/sqlite/0040_payment_counts.sql"),
        include_str!("../../migrations/postgres/0040_payment_counts.sql"),
    ),
    (
        41,
        "journaled months",
        include_str!("../../migrations/sqlite/0041_journaled_months.sql"),
        include_str!("../../migrations/postgres/0041_journaled_months.sql"),
    ),
    (
        42,
        "event runs",
        include_str!("../../migrations/sqlite/0042_event_runs.sql"),
        include_str!("../../migrations/postgres/0042_event_runs.sql"),
    ),
    (
        43,
        "customer plan counts",
        include_str!("../../migrations/sqlite/0043_customer_plan_counts.sql"),
        include_str!("../../migrations/postgres/0043_customer_plan_counts.sql"),
    ),
    (
        44,
        "last failures",
        include_str!("../../migrations/sqlite/0044_last_failures.sql"),
        include_str!("../../migrations/postgres/0044_last_failures.sql"),
    ),
];

/// Number of embedded migrations; `/readyz` compares it with what the database has applied.
pub const MIGRATION_COUNT: i64 = MIGRATIONS.len() as i64;

fn migrator(backend: Backend) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sqlite, pg)| {
            let sql = match backend {
                Backend::Sqlite => *sqlite,
                Backend::Postgres => *pg,
            };
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// One column of the live schema, normalised so both dialects compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SchemaColumn {
    pub table_name: String,
    pub column_name: String,
    /// `integer`, `real`, `text`, `bool` or `bytes`.
    pub kind: String,
    pub nullable: bool,
}
crate::from_row!(SchemaColumn {
    table_name,
    column_name,
    kind,
    nullable
});

impl Store {
    /// Applies every embedded migration not yet applied. Safe to run while another instance
    /// runs: sqlx takes an advisory lock on PostgreSQL, and SQLite serialises writers.
    pub async fn migrate(&self) -> Result<()> {
        let m = migrator(self.backend());
        match &self.pool {
            Pool::Sqlite(p) => m.run(p).await?,
            Pool::Postgres(p) => m.run(p).await?,
        }
        Ok(())
    }

    /// How many embedded migrations the database has successfully applied.
    pub async fn applied_migrations(&self) -> Result<i64> {
        let row: Option<(i64,)> = self
            .fetch_optional(
                "SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE",
                args![],
            )
            .await
            .or_else(|e| match e {
                // Before the first migration the bookkeeping table does not exist yet.
                super::StoreError::Database(_) => Ok(None),
                other => Err(other),
            })?;
        Ok(row.map(|r| r.0).unwrap_or(0))
    }

    /// The application's tables and columns (bookkeeping tables excluded), sorted. SQLite's
    /// virtual tables, and the tables named after one (FTS5's shadow tables and the search
    /// index's key map, migration 0035), are indexes in all but name, with no PostgreSQL twin.
    pub async fn schema(&self) -> Result<Vec<SchemaColumn>> {
        let mut cols: Vec<SchemaColumn> = match self.backend() {
            Backend::Sqlite => {
                self.fetch_all(
                    "SELECT m.name AS table_name, p.name AS column_name,
                            CASE
                              WHEN upper(p.type) LIKE '%INT%' THEN 'integer'
                              WHEN upper(p.type) LIKE '%BOOL%' THEN 'bool'
                              WHEN upper(p.type) LIKE '%BLOB%' THEN 'bytes'
                              WHEN upper(p.type) LIKE '%REAL%' OR upper(p.type) LIKE '%DOUBLE%' THEN 'real'
                              ELSE 'text'
                            END AS kind,
                            (p.\"notnull\" = 0 AND p.pk = 0) AS nullable
                     FROM sqlite_master m JOIN pragma_table_info(m.name) p
                     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'
                       AND m.name <> '_sqlx_migrations'
                       AND NOT EXISTS (
                         SELECT 1 FROM sqlite_master v
                         WHERE v.type = 'table' AND v.sql LIKE 'CREATE VIRTUAL TABLE%'
                           AND (m.name = v.name OR substr(m.name, 1, length(v.name) + 1) = v.name || '_'))",
                    args![],
                )
                .await?
            }
            Backend::Postgres => {
                self.fetch_all(
                    "SELECT table_name::text AS table_name, column_name::text AS column_name,
                            CASE
                              WHEN data_type IN ('bigint', 'integer', 'smallint') THEN 'integer'
                              WHEN data_type = 'boolean' THEN 'bool'
                              WHEN data_type = 'bytea' THEN 'bytes'
                              WHEN data_type IN ('double precision', 'real') THEN 'real'
                              ELSE 'text'
                            END AS kind,
                            (is_nullable = 'YES') AS nullable
                     FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
                    args![],
                )
                .await?
            }
        };
        cols.sort();
        Ok(cols)
    }
}
