//! Integration tests: the real server on port 0, spoken to over HTTP, against a fresh SQLite
//! file and (with `OPSDECK_TEST_POSTGRES_URL`) a fresh PostgreSQL database per test.

mod helpers;

mod access;
mod alerts;
mod browser;
mod browser_alerts;
mod browser_csv;
mod browser_format;
mod browser_layout;
mod cli;
mod durability;
mod extras;
mod gcp;
mod health;
mod ingest;
mod integrations;
mod keys;
mod lease;
mod metering;
mod notifiers;
mod openapi;
mod ops;
mod realtime;
mod revenue;
mod revocation;
mod ssrf;
mod storage;
mod tokens;
mod triage;
mod webhooks;
