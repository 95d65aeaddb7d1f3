//! Online backup of the SQLite store.
//!
//! `VACUUM INTO` copies the database inside one read transaction, so the copy is consistent even
//! while `opsdeck serve` keeps writing through WAL; the result is then integrity-checked. The
//! copy is created 0600 before SQLite writes into it (see `files`), as the database is.

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
    let target_str = target
        .to_str()
        .ok_or_else(|| StoreError::Backup(format!("{} is not valid UTF-8", target.display())))?;
    // `VACUUM INTO` accepts an empty file, so the copy is created here with its final mode
    // (and, with `create_new`, never over an existing file) instead of 0644 by SQLite.
    match super::files::create_private_file(target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(StoreError::Backup(format!(
                "{} already exists; choose a new file name",
                target.display()
            )));
        }
        Err(source) => {
            return Err(StoreError::File {
                path: target.display().to_string(),
                source,
            });
        }
    }
    if let Err(e) = store.execute("VACUUM INTO $1", args![target_str]).await {
        // Only the empty file made above is removed; nothing else was there.
        let _ = std::fs::remove_file(target);
        return Err(e);
    }

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
