//! Leases on singleton background work. With several opsdeck instances on one database, the
//! instance holding an unexpired lease does the work and the others wait to take over; a
//! holder renews well before expiry, and an instance that dies simply stops renewing. One
//! conditional upsert takes or renews a lease on either database, so two instances can never
//! both believe they hold it.
//!
//! Every lease time is the **database's clock**, read inside the statement that takes or
//! renews the lease: the expiry is written and compared by one clock, so instances whose own
//! clocks disagree still agree on who holds a lease and when it lapses. A holder keeps its
//! own deadline on its monotonic clock, started before it sent the renewal; that deadline is
//! never later than the expiry the database wrote, whatever the skew (see `jobs::Lease`).
//! This module owns the `leases` table.

use super::{Backend, Result, Store};
use crate::args;

/// Takes or renews: the row is written when `holder` already has it or its expiry has passed
/// by the database's clock, so a standby never takes an unexpired lease.
const ACQUIRE_POSTGRES: &str = "INSERT INTO leases (name, holder, expires_at) \
     VALUES ($1, $2, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT + $3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
     expires_at = excluded.expires_at \
     WHERE leases.holder = excluded.holder \
     OR leases.expires_at <= (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";
const ACQUIRE_SQLITE: &str = "INSERT INTO leases (name, holder, expires_at) \
     VALUES ($1, $2, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) + $3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
     expires_at = excluded.expires_at \
     WHERE leases.holder = excluded.holder \
     OR leases.expires_at <= CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// Takes lease `name` for `holder` until `ttl_ms` from now by the database's clock, or renews
/// it if `holder` has it; returns whether `holder` holds it now. Fails to take it while
/// another holder's lease is unexpired.
pub async fn acquire(store: &Store, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
    let sql = match store.backend() {
        Backend::Postgres => ACQUIRE_POSTGRES,
        Backend::Sqlite => ACQUIRE_SQLITE,
    };
    let changed = store.execute(sql, args![name, holder, ttl_ms]).await?;
    Ok(changed == 1)
}

/// Gives lease `name` up if `holder` has it, so another instance can take over at once.
pub async fn release(store: &Store, name: &str, holder: &str) -> Result<()> {
    store
        .execute(
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            args![name, holder],
        )
        .await?;
    Ok(())
}

/// Who holds lease `name` and until when (database clock, UTC ms), expired or not; `None`
/// when nobody has taken it or its holder gave it up.
pub async fn holder(store: &Store, name: &str) -> Result<Option<(String, i64)>> {
    store
        .fetch_optional(
            "SELECT holder, expires_at FROM leases WHERE name = $1",
            args![name],
        )
        .await
}
