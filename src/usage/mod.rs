//! Usage metering: CloudEvents ingest (validation, dedup, group-commit writer) and, as the
//! capability grows, rollups, plans and quotas. Owns the `events` table.

pub mod event;
pub mod retention;
pub mod rollup;
pub mod routes;
pub mod writer;
