//! The stored side of tokens: owns `credentials` (secrets sealed with the master key under the
//! credential's name; everything the job and the pages decide on kept plain) and
//! `token_refresh_log`. Config credentials are re-applied at start without losing tokens
//! refreshed since; every admin change is audited in its own transaction.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::credential::{Credential, CredentialSpec, Provider};
use super::{
    Live, Result, STORED_OK, TokenState, TokenStatus, TokensError, Vault, derive_state,
    effective_expiry,
};
use crate::access::audit::{self, Actor};
use crate::access::secrets::{MasterKey, Secret};
use crate::args;
use crate::store::{Store, Tx, now_ms};

/// The sealed part of a credential.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Secrets {
    pub client_secret: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(***)")
    }
}

/// A credential's plain columns.
#[derive(Debug, Clone)]
pub struct Plain {
    pub id: i64,
    pub name: String,
    pub provider: String,
    pub source: String,
    pub token_url: String,
    pub client_auth: String,
    pub client_id: String,
    pub scopes: String,
    pub owner: String,
    pub tenant: String,
    pub warn_before_ms: i64,
    pub renews: i64,
    pub expires_at: Option<i64>,
    pub data_access_expires_at: Option<i64>,
    pub obtained_at: i64,
    pub state: String,
    pub last_error: Option<String>,
    pub failures: i64,
    pub next_attempt_at: Option<i64>,
    pub last_refresh_at: Option<i64>,
    pub last_outcome: Option<String>,
    pub warned_for: Option<i64>,
}
crate::from_row!(Plain {
    id,
    name,
    provider,
    source,
    token_url,
    client_auth,
    client_id,
    scopes,
    owner,
    tenant,
    warn_before_ms,
    renews,
    expires_at,
    data_access_expires_at,
    obtained_at,
    state,
    last_error,
    failures,
    next_attempt_at,
    last_refresh_at,
    last_outcome,
    warned_for
});

const PLAIN_COLUMNS: &str = "id, name, provider, source, token_url, client_auth, client_id, \
     scopes, owner, tenant, warn_before_ms, renews, expires_at, data_access_expires_at, \
     obtained_at, state, last_error, failures, next_attempt_at, last_refresh_at, last_outcome, \
     warned_for";

impl Plain {
    pub fn provider(&self) -> Provider {
        Provider::parse(&self.provider).unwrap_or(Provider::Oauth2)
    }

    pub fn effective_expiry(&self) -> Option<i64> {
        effective_expiry(
            self.expires_at,
            self.data_access_expires_at,
            self.renews != 0,
            &self.state,
        )
    }

    pub fn state_at(&self, now: i64) -> TokenState {
        derive_state(
            &self.state,
            self.effective_expiry(),
            self.warn_before_ms,
            now,
        )
    }

    pub fn status(&self, now: i64) -> TokenStatus {
        TokenStatus {
            name: self.name.clone(),
            provider: self.provider.clone(),
            owner: self.owner.clone(),
            tenant: self.tenant.clone(),
            state: self.state_at(now),
            effective_expiry: self.effective_expiry(),
            expires_at: self.expires_at,
            data_access_expires_at: self.data_access_expires_at,
            last_error: self.last_error.clone(),
        }
    }
}

/// One refresh attempt.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogRow {
    #[serde(skip)]
    pub credential_id: i64,
    /// UTC ms.
    pub at: i64,
    /// `job` or `manual`.
    pub trigger: String,
    /// `refreshed`, `invalid_grant` or `failed`.
    pub outcome: String,
    pub error: Option<String>,
    /// The new expiry after a refresh (UTC ms).
    pub expires_at: Option<i64>,
    pub duration_ms: i64,
}
crate::from_row!(LogRow {
    credential_id,
    at,
    trigger,
    outcome,
    error,
    expires_at,
    duration_ms
});

fn seal_name(name: &str) -> String {
    format!("credential:{name}")
}

fn seal(key: &MasterKey, name: &str, secrets: &Secrets) -> Result<(Vec<u8>, Vec<u8>)> {
    let json = serde_json::to_vec(secrets).map_err(|e| TokensError::Internal(e.to_string()))?;
    Ok(key.seal(&seal_name(name), &json)?)
}

fn open(key: &MasterKey, name: &str, nonce: &[u8], sealed: &[u8]) -> Result<Secrets> {
    let plain = key.open(&seal_name(name), nonce, sealed)?;
    serde_json::from_slice(plain.expose()).map_err(|_| {
        TokensError::Internal(format!(
            "credential {name:?}: its sealed secrets are unreadable"
        ))
    })
}

fn secrets_of(c: &Credential) -> Secrets {
    Secrets {
        client_secret: c.client_secret.clone(),
        access_token: c.access_token.clone(),
        refresh_token: c.refresh_token.clone(),
    }
}

/// What config gave, hashed: a restart with the same file keeps tokens refreshed since.
fn digest(c: &Credential) -> String {
    let mut h = Sha256::new();
    for part in [
        c.client_secret.as_deref(),
        c.access_token.as_deref(),
        c.refresh_token.as_deref(),
    ] {
        h.update(part.unwrap_or("").as_bytes());
        h.update([0]);
    }
    h.update(c.expires_at.unwrap_or(0).to_be_bytes());
    hex::encode(h.finalize())
}

/// Writes a whole credential, new tokens included, as a fresh start (state ok, no failures).
async fn write_fresh(
    tx: &mut Tx,
    key: &MasterKey,
    c: &Credential,
    source: &str,
    config_digest: Option<String>,
    existing: Option<i64>,
    now: i64,
) -> Result<i64> {
    let (nonce, sealed) = seal(key, &c.name, &secrets_of(c))?;
    let renews = i64::from(c.renews_itself());
    let scopes = c.scopes.join(" ");
    match existing {
        Some(id) => {
            tx.execute(
                "UPDATE credentials SET provider = $2, token_url = $3, client_auth = $4, \
                 client_id = $5, scopes = $6, owner = $7, tenant = $8, warn_before_ms = $9, \
                 renews = $10, secrets_nonce = $11, secrets_sealed = $12, config_digest = $13, \
                 expires_at = $14, data_access_expires_at = NULL, obtained_at = $15, \
                 state = 'ok', last_error = NULL, failures = 0, next_attempt_at = NULL, \
                 warned_for = NULL, updated_at = $15 WHERE id = $1",
                args![
                    id,
                    c.provider.as_str(),
                    c.token_url.as_str(),
                    c.client_auth.as_str(),
                    c.client_id.as_str(),
                    scopes,
                    c.owner.as_str(),
                    c.tenant.as_str(),
                    c.warn_before_ms,
                    renews,
                    nonce,
                    sealed,
                    config_digest,
                    c.expires_at,
                    now
                ],
            )
            .await?;
            Ok(id)
        }
        None => {
            let (id,): (i64,) = tx
                .fetch_one(
                    "INSERT INTO credentials (name, provider, source, token_url, client_auth, \
                     client_id, scopes, owner, tenant, warn_before_ms, renews, secrets_nonce, \
                     secrets_sealed, config_digest, expires_at, obtained_at, state, failures, \
                     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                     $11, $12, $13, $14, $15, $16, 'ok', 0, $16, $16) RETURNING id",
                    args![
                        c.name.as_str(),
                        c.provider.as_str(),
                        source,
                        c.token_url.as_str(),
                        c.client_auth.as_str(),
                        c.client_id.as_str(),
                        scopes,
                        c.owner.as_str(),
                        c.tenant.as_str(),
                        c.warn_before_ms,
                        renews,
                        nonce,
                        sealed,
                        config_digest,
                        c.expires_at,
                        now
                    ],
                )
                .await?;
            Ok(id)
        }
    }
}

/// Makes the `config` credentials exactly `specs` (already validated by the config loader):
/// new ones added; for known ones the plain fields follow the file, and the tokens are
/// replaced only when the file's secrets changed (a re-authorization), so tokens refreshed
/// since the last start survive a restart. Ones gone from the file are removed with their log.
pub async fn sync_config(store: &Store, key: &MasterKey, specs: &[CredentialSpec]) -> Result<()> {
    let mut tx = store.begin().await?;
    let existing: Vec<(i64, String, String, Option<String>)> = tx
        .fetch_all(
            "SELECT id, name, source, config_digest FROM credentials",
            args![],
        )
        .await?;
    let now = now_ms();
    for spec in specs {
        let c = spec.validate()?;
        let d = digest(&c);
        match existing.iter().find(|(_, name, _, _)| *name == c.name) {
            Some((_, _, source, _)) if source != "config" => {
                return Err(TokensError::Conflict(format!(
                    "credential {:?} from the config has the name of one created through the API",
                    c.name
                )));
            }
            Some((id, _, _, Some(old))) if *old == d => {
                tx.execute(
                    "UPDATE credentials SET provider = $2, token_url = $3, client_auth = $4, \
                     client_id = $5, scopes = $6, owner = $7, tenant = $8, warn_before_ms = $9, \
                     updated_at = $10 WHERE id = $1",
                    args![
                        *id,
                        c.provider.as_str(),
                        c.token_url.as_str(),
                        c.client_auth.as_str(),
                        c.client_id.as_str(),
                        c.scopes.join(" "),
                        c.owner.as_str(),
                        c.tenant.as_str(),
                        c.warn_before_ms,
                        now
                    ],
                )
                .await?;
            }
            Some((id, ..)) => {
                write_fresh(&mut tx, key, &c, "config", Some(d), Some(*id), now).await?;
            }
            None => {
                write_fresh(&mut tx, key, &c, "config", Some(d), None, now).await?;
            }
        }
    }
    let names: Vec<String> = specs.iter().map(|s| s.name.trim().to_string()).collect();
    for (id, name, source, _) in existing {
        if source == "config" && !names.contains(&name) {
            delete_in(&mut tx, id).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Creates a credential through the API (validated here, so the API names the same fields as
/// the config).
pub async fn create(
    store: &Store,
    key: &MasterKey,
    spec: &CredentialSpec,
    actor: &Actor,
) -> Result<Plain> {
    let c = spec.validate()?;
    let mut tx = store.begin().await?;
    let taken: Option<(i64,)> = tx
        .fetch_optional(
            "SELECT id FROM credentials WHERE name = $1",
            args![c.name.as_str()],
        )
        .await?;
    if taken.is_some() {
        return Err(TokensError::Conflict(format!(
            "a credential named {:?} already exists",
            c.name
        )));
    }
    let id = write_fresh(&mut tx, key, &c, "api", None, None, now_ms()).await?;
    audit::record(
        &mut tx,
        actor,
        "credential.create",
        Some(&format!("credential:{id}:{}", c.name)),
        Some(serde_json::json!({"provider": c.provider.as_str()})),
    )
    .await?;
    tx.commit().await?;
    get_plain(store, &c.name)
        .await?
        .ok_or_else(|| TokensError::Internal("the new credential vanished".into()))
}

/// Deletes an API credential and its refresh log; config ones are read-only (409).
pub async fn delete(store: &Store, name: &str, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    let row: Option<(i64, String)> = tx
        .fetch_optional(
            "SELECT id, source FROM credentials WHERE name = $1",
            args![name],
        )
        .await?;
    let (id, source) =
        row.ok_or_else(|| TokensError::NotFound(format!("no credential {name:?}")))?;
    if source == "config" {
        return Err(TokensError::Conflict(format!(
            "credential {name:?} is declared in the config file; change it there"
        )));
    }
    delete_in(&mut tx, id).await?;
    audit::record(
        &mut tx,
        actor,
        "credential.delete",
        Some(&format!("credential:{id}:{name}")),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn delete_in(tx: &mut Tx, id: i64) -> Result<()> {
    tx.execute(
        "DELETE FROM token_refresh_log WHERE credential_id = $1",
        args![id],
    )
    .await?;
    tx.execute("DELETE FROM credentials WHERE id = $1", args![id])
        .await?;
    Ok(())
}

/// Every credential's plain columns, by name.
pub async fn plain(store: &Store) -> Result<Vec<Plain>> {
    let sql = format!("SELECT {PLAIN_COLUMNS} FROM credentials ORDER BY name");
    Ok(store.fetch_all_assembled(sql, args![]).await?)
}

pub async fn get_plain(store: &Store, name: &str) -> Result<Option<Plain>> {
    let sql = format!("SELECT {PLAIN_COLUMNS} FROM credentials WHERE name = $1");
    Ok(store
        .fetch_all_assembled::<Plain>(sql, args![name])
        .await?
        .pop())
}

/// Every credential with its secrets opened; one that does not open is skipped with a warning
/// rather than stopping every other.
pub async fn opened(store: &Store, key: &MasterKey) -> Result<Vec<(Plain, Secrets)>> {
    struct Sealed {
        id: i64,
        secrets_nonce: Vec<u8>,
        secrets_sealed: Vec<u8>,
    }
    crate::from_row!(Sealed {
        id,
        secrets_nonce,
        secrets_sealed
    });
    let sealed: HashMap<i64, Sealed> = store
        .fetch_all::<Sealed>(
            "SELECT id, secrets_nonce, secrets_sealed FROM credentials",
            args![],
        )
        .await?
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    let mut out = Vec::new();
    for p in plain(store).await? {
        let Some(s) = sealed.get(&p.id) else { continue };
        match open(key, &p.name, &s.secrets_nonce, &s.secrets_sealed) {
            Ok(secrets) => out.push((p, secrets)),
            Err(e) => tracing::warn!(credential = %p.name, error = %e, "skipping a credential"),
        }
    }
    Ok(out)
}

/// Fills `vault` with every credential's current access token.
pub async fn reload_vault(store: &Store, key: &MasterKey, vault: &Vault) -> Result<()> {
    let now = now_ms();
    let all = opened(store, key)
        .await?
        .into_iter()
        .map(|(p, s)| {
            let live = Live {
                provider: p.provider(),
                access_token: s.access_token.map(Secret::new),
                client_id: p.client_id.clone(),
                client_secret: s.client_secret.map(Secret::new),
                state: p.state_at(now),
                effective_expiry: p.effective_expiry(),
                warn_before_ms: p.warn_before_ms,
                renews: p.renews != 0,
            };
            (p.name, live)
        })
        .collect();
    vault.replace(all);
    Ok(())
}

/// Takes the credential for one refresh until `until`, unless another instance holds it.
pub async fn lease(store: &Store, id: i64, now: i64, until: i64) -> Result<bool> {
    let n = store
        .execute(
            "UPDATE credentials SET lease_until = $3 WHERE id = $1 \
             AND (lease_until IS NULL OR lease_until < $2)",
            args![id, now, until],
        )
        .await?;
    Ok(n == 1)
}

/// What a successful refresh brought.
pub struct Renewed {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: Option<i64>,
    /// `Some(x)` when the provider said (Meta's debug_token), `None` to keep what is stored.
    pub data_access_expires_at: Option<Option<i64>>,
    pub scopes: Option<Vec<String>>,
}

/// Stores new tokens (sealed), clears failures and logs the attempt, in one transaction.
#[allow(clippy::too_many_arguments)]
pub async fn record_success(
    store: &Store,
    key: &MasterKey,
    p: &Plain,
    old: &Secrets,
    new: Renewed,
    trigger: &str,
    started: i64,
    now: i64,
) -> Result<()> {
    let secrets = Secrets {
        client_secret: old.client_secret.clone(),
        access_token: Some(new.access_token),
        // Google usually sends no new refresh token: the old one stays valid.
        refresh_token: new.refresh_token.or_else(|| old.refresh_token.clone()),
    };
    let (nonce, sealed) = seal(key, &p.name, &secrets)?;
    let data_access = match new.data_access_expires_at {
        Some(d) => d,
        None => p.data_access_expires_at,
    };
    let scopes = new
        .scopes
        .map(|s| s.join(" "))
        .unwrap_or_else(|| p.scopes.clone());
    let mut tx = store.begin().await?;
    tx.execute(
        "UPDATE credentials SET secrets_nonce = $2, secrets_sealed = $3, expires_at = $4, \
         data_access_expires_at = $5, obtained_at = $6, scopes = $7, state = 'ok', \
         last_error = NULL, failures = 0, next_attempt_at = NULL, last_refresh_at = $6, \
         last_outcome = 'refreshed', lease_until = NULL, updated_at = $6 WHERE id = $1",
        args![
            p.id,
            nonce,
            sealed,
            new.expires_at,
            data_access,
            now,
            scopes
        ],
    )
    .await?;
    log_in(
        &mut tx,
        p.id,
        now,
        trigger,
        "refreshed",
        None,
        new.expires_at,
        now - started,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Records a failed refresh: terminal (`invalid_grant`) or to retry at `next_attempt_at`.
#[allow(clippy::too_many_arguments)]
pub async fn record_failure(
    store: &Store,
    p: &Plain,
    terminal: bool,
    error: &str,
    next_attempt_at: Option<i64>,
    trigger: &str,
    started: i64,
    now: i64,
) -> Result<()> {
    let (state, outcome) = if terminal {
        (super::STORED_REAUTH, "invalid_grant")
    } else {
        (super::STORED_FAILING, "failed")
    };
    let mut tx = store.begin().await?;
    tx.execute(
        "UPDATE credentials SET state = $2, last_error = $3, failures = failures + 1, \
         next_attempt_at = $4, last_refresh_at = $5, last_outcome = $6, lease_until = NULL, \
         updated_at = $5 WHERE id = $1",
        args![p.id, state, error, next_attempt_at, now, outcome],
    )
    .await?;
    log_in(
        &mut tx,
        p.id,
        now,
        trigger,
        outcome,
        Some(error),
        None,
        now - started,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn log_in(
    tx: &mut Tx,
    credential_id: i64,
    at: i64,
    trigger: &str,
    outcome: &str,
    error: Option<&str>,
    expires_at: Option<i64>,
    duration_ms: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO token_refresh_log (credential_id, at, trigger, outcome, error, expires_at, \
         duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        args![
            credential_id,
            at,
            trigger,
            outcome,
            error,
            expires_at,
            duration_ms.max(0)
        ],
    )
    .await?;
    Ok(())
}

/// Notes that the expiring warning for `expiry` was logged.
pub async fn mark_warned(store: &Store, id: i64, expiry: i64) -> Result<()> {
    store
        .execute(
            "UPDATE credentials SET warned_for = $2 WHERE id = $1",
            args![id, expiry],
        )
        .await?;
    Ok(())
}

/// A credential's newest refresh attempts.
pub async fn log(store: &Store, credential_id: i64, limit: i64) -> Result<Vec<LogRow>> {
    Ok(store
        .fetch_all(
            "SELECT credential_id, at, trigger, outcome, error, expires_at, duration_ms \
             FROM token_refresh_log WHERE credential_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
            args![credential_id, limit.clamp(1, 1000)],
        )
        .await?)
}

/// Whether `p` can be refreshed with what is stored, and if not, which field is missing.
pub fn refreshable(p: &Plain, s: &Secrets) -> std::result::Result<(), super::Invalid> {
    use super::credential::invalid;
    match p.provider() {
        Provider::Meta => {
            if s.access_token.is_none() {
                return Err(invalid("access_token", "is required for the meta exchange"));
            }
            if s.client_secret.is_none() {
                return Err(invalid(
                    "client_secret",
                    "is required for the meta exchange",
                ));
            }
            Ok(())
        }
        Provider::Google | Provider::Oauth2 => {
            if s.refresh_token.is_none() {
                return Err(invalid(
                    "refresh_token",
                    format!(
                        "credential {:?} has none, so it cannot be refreshed; give it a refresh token",
                        p.name
                    ),
                ));
            }
            Ok(())
        }
    }
}

pub fn state_ok(p: &Plain) -> bool {
    p.state == STORED_OK
}
