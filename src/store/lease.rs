//! Leases on singleton background work. With several opsdeck instances on one database, the
//! instance holding an unexpired lease does the work and the others wait to take over; a
//! holder renews well before expiry, and an instance that dies simply stops renewing. One
//! conditional upsert takes or renews a lease on either database, so two instances can never
//! both believe they hold it.

use super::{Result, Store};
use crate::args;

/// Takes lease `name` for `holder` until `now + ttl_ms`, or renews it if `holder` has it;
/// returns whether `holder` holds it now. Fails to take it while another holder's lease is
/// unexpired.
pub async fn acquire(
    store: &Store,
    name: &str,
    holder: &str,
    ttl_ms: i64,
    now: i64,
) -> Result<bool> {
    let changed = store
        .execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
            args![name, holder, now + ttl_ms, now],
        )
        .await?;
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
