//! Online backup of the SQLite store.
//!
//! `VACUUM INTO` copies the database inside one read transaction, so the copy is consistent even
//! while `opsdeck serve` keeps writing through WAL; the result is then integrity-checked.

use std::path::Path;

use super::{Backend, Result, Store, StoreError};
use crate::args;

/// Writes a consistent copy of the SQLite database to `target` (which must not exist yet) and
/// returns its size in bytes.
pub async fn backup_sqlite(store: &Store, target: &Path) -> Result<u64> {
    if store.backend() != Backend::Sqlite {
        return Err(StoreError::Backup(
            "opsdeck backup copies the embedded SQLite store; for PostgreSQL use pg_dump".into(),
        ));
    }
    if target.exists() {
        return Err(StoreError::Backup(format!(
            "{} already exists; choose a new file name",
            target.display()
        )));
    }
    let target_str = target
        .to_str()
        .ok_or_else(|| StoreError::Backup(format!("{} is not valid UTF-8", target.display())))?;
    store.execute("VACUUM INTO $1", args![target_str]).await?;

    let opts = super::ConnectOptions {
        create_if_missing: false,
        ..Default::default()
    };
    let copy = Store::connect(&format!("sqlite://{target_str}"), &opts).await?;
    let check: (String,) = copy.fetch_one("PRAGMA integrity_check", args![]).await?;
    copy.close().await;
    if check.0 != "ok" {
        return Err(StoreError::Backup(format!(
            "backup failed its integrity check: {}",
            check.0
        )));
    }
    Ok(std::fs::metadata(target).map(|m| m.len()).unwrap_or(0))
}
