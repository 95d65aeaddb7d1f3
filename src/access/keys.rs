//! API keys: `opsk_<prefix>_<secret>`, 256 random bits, shown once, stored as SHA-256 with their
//! scopes. The prefix is public and indexes the row, so verification is one lookup plus a
//! constant-time hash comparison.

use serde::Serialize;
use subtle::ConstantTimeEq;

use super::audit::{self, Actor};
use super::{AccessError, Result, Scopes, random_token, sha256_hex};
use crate::args;
use crate::events::{Bus, Revoked};
use crate::store::{Store, now_ms};

const KEY_PREFIX: &str = "opsk_";

/// The caller behind a valid API key.
#[derive(Debug, Clone)]
pub struct KeyPrincipal {
    pub id: i64,
    pub name: String,
    pub scopes: Scopes,
}

/// A key as listed (never with its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    /// Public identifier, the part of the key after `opsk_` and before the second `_`.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

struct KeyRow {
    id: i64,
    name: String,
    prefix: String,
    key_hash: String,
    scopes: String,
    created_by: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}
crate::from_row!(KeyRow {
    id,
    name,
    prefix,
    key_hash,
    scopes,
    created_by,
    created_at,
    last_used_at,
    revoked_at
});

impl From<KeyRow> for ApiKey {
    fn from(r: KeyRow) -> Self {
        ApiKey {
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            scopes: r.scopes.split(' ').map(str::to_string).collect(),
            created_by: r.created_by,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A freshly created key: the only time the full secret exists outside the caller's hands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The full key. Shown once; store it now.
    pub secret: String,
}

fn check_name(name: &str) -> Result<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AccessError::Invalid(
            "key name must be 1–100 printable characters".into(),
        ));
    }
    Ok(name)
}

pub async fn create(
    store: &Store,
    name: &str,
    scopes: &Scopes,
    actor: &Actor,
) -> Result<CreatedKey> {
    let name = check_name(name)?;
    let prefix = random_token(6).replace(['-', '_'], "x");
    let secret = format!("{KEY_PREFIX}{prefix}_{}", random_token(32));
    let now = now_ms();
    let mut tx = store.begin().await?;
    let (id,): (i64,) = tx
        .fetch_one(
            "INSERT INTO api_keys (name, prefix, key_hash, scopes, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            args![
                name,
                &prefix,
                sha256_hex(&secret),
                scopes.to_string(),
                &actor.name,
                now
            ],
        )
        .await?;
    audit::record(
        &mut tx,
        actor,
        "api_key.create",
        Some(&format!("key:{id}:{name}")),
        Some(serde_json::json!({"scopes": scopes.to_strings()})),
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedKey {
        key: ApiKey {
            id,
            name: name.to_string(),
            prefix,
            scopes: scopes.to_strings(),
            created_by: actor.name.clone(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        },
        secret,
    })
}

pub async fn list(store: &Store) -> Result<Vec<ApiKey>> {
    let rows: Vec<KeyRow> = store
        .fetch_all(
            "SELECT id, name, prefix, '' AS key_hash, scopes, created_by, created_at, last_used_at,
                    revoked_at
             FROM api_keys ORDER BY id",
            args![],
        )
        .await?;
    Ok(rows.into_iter().map(ApiKey::from).collect())
}

/// Revokes a key; it stops working on its next request, and its open streams end once `bus`
/// carries the news (at once where the bus reaches; see `realtime` for the re-check that covers
/// the rest). Revoking twice is a 404.
pub async fn revoke(store: &Store, bus: &Bus, id: i64, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    let row: Option<(String,)> = tx
        .fetch_optional(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING name",
            args![now_ms(), id],
        )
        .await?;
    let (name,) = row.ok_or_else(|| AccessError::NotFound(format!("active API key {id}")))?;
    audit::record(
        &mut tx,
        actor,
        "api_key.revoke",
        Some(&format!("key:{id}:{name}")),
        None,
    )
    .await?;
    tx.commit().await?;
    bus.revoke(Revoked::Key(id));
    Ok(())
}

/// Whether the key with this id still exists unrevoked: what a long-lived stream opened with
/// it re-checks, holding only the id.
pub async fn is_active(store: &Store, id: i64) -> Result<bool> {
    let row: Option<(i64,)> = store
        .fetch_optional(
            "SELECT id FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
            args![id],
        )
        .await?;
    Ok(row.is_some())
}

/// Resolves a presented key. Any malformed, unknown, wrong or revoked key is simply `None`.
pub async fn authenticate(store: &Store, presented: &str) -> Result<Option<KeyPrincipal>> {
    let Some(rest) = presented.strip_prefix(KEY_PREFIX) else {
        return Ok(None);
    };
    let Some((prefix, _)) = rest.split_once('_') else {
        return Ok(None);
    };
    if prefix.is_empty() || prefix.len() > 16 || presented.len() > 128 {
        return Ok(None);
    }
    let row: Option<KeyRow> = store
        .fetch_optional(
            "SELECT id, name, prefix, key_hash, scopes, created_by, created_at, last_used_at, revoked_at
             FROM api_keys WHERE prefix = $1",
            args![prefix],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let matches = bool::from(
        sha256_hex(presented)
            .as_bytes()
            .ct_eq(row.key_hash.as_bytes()),
    );
    if !matches || row.revoked_at.is_some() {
        return Ok(None);
    }
    let scopes: Vec<&str> = row.scopes.split(' ').collect();
    Ok(Some(KeyPrincipal {
        id: row.id,
        name: row.name,
        scopes: Scopes::parse_list(&scopes)?,
    }))
}

/// "Last used" times of keys whose requests succeeded, kept in memory and written by the
/// housekeeping job: a hot key would otherwise cost a write per request, and a rejected request
/// must not write at all.
#[derive(Default)]
pub struct KeyUsage(std::sync::Mutex<std::collections::HashMap<i64, i64>>);

impl KeyUsage {
    pub fn record(&self, key_id: i64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key_id, now_ms());
    }

    /// Writes the recorded times in one transaction; returns how many keys were updated. On
    /// failure the times are put back (keeping the newer of two), to be written next time.
    pub async fn flush(&self, store: &Store) -> Result<usize> {
        let pending: Vec<(i64, i64)> = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.drain().collect()
        };
        if pending.is_empty() {
            return Ok(0);
        }
        match write_last_used(store, &pending).await {
            Ok(()) => Ok(pending.len()),
            Err(e) => {
                let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
                for (id, at) in pending {
                    map.entry(id)
                        .and_modify(|t| *t = (*t).max(at))
                        .or_insert(at);
                }
                Err(e)
            }
        }
    }
}

async fn write_last_used(store: &Store, pending: &[(i64, i64)]) -> Result<()> {
    let mut tx = store.begin().await?;
    for (id, at) in pending {
        tx.execute(
            "UPDATE api_keys SET last_used_at = $1
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            args![*at, *id],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
