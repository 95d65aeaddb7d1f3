//! OAuth tokens: the credentials registry (`[[credentials]]` and the API), refreshing access
//! tokens ahead of expiry (the OAuth2 refresh-token grant; Meta's long-lived exchange and
//! `debug_token`), the refresh log, expiry warnings, and the monitor kinds that read a provider
//! with a registered credential (`google_oauth`, `google_calendar`, `meta`).
//!
//! `credential` validates definitions (one validator for config and API, naming the field at
//! fault); `store` owns the `credentials` and `token_refresh_log` tables, with every secret
//! sealed by the master key; `refresh` speaks the token endpoints; `job` decides what is due and
//! records each attempt; `checks` holds the monitor kinds; `routes` the JSON API. `invalid_grant`
//! is terminal: such a credential is marked `reauthorization_required` and never tried again
//! until someone gives it new tokens. Secrets never appear in errors, logs or answers.
//!
//! The in-memory [`Vault`] holds each credential's current access token for the health checks,
//! so a check never decrypts anything; it is reloaded after every change and refresh.

pub mod checks;
pub mod credential;
pub mod job;
pub mod refresh;
pub mod routes;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;

pub use credential::{CredentialSpec, Invalid, Provider};

use crate::access::AccessError;
use crate::access::secrets::Secret;
use crate::store::StoreError;

/// Failures of the tokens domain; the HTTP layer maps them in one place.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AccessError> for TokensError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Store(s) => TokensError::Store(s),
            other => TokensError::Internal(other.to_string()),
        }
    }
}

pub type Result<T, E = TokensError> = std::result::Result<T, E>;

/// A credential's condition as people and alerts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Ok,
    /// Stops working within `warn_before` unless someone acts (or a refresh succeeds).
    Expiring,
    /// Past its expiry.
    Expired,
    /// The last refresh failed for a reason worth retrying; the job tries again with backoff.
    RefreshFailing,
    /// The provider answered `invalid_grant` (or Meta's OAuthException 190): only new tokens
    /// from the user help. Never retried automatically.
    ReauthorizationRequired,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Ok => "ok",
            TokenState::Expiring => "expiring",
            TokenState::Expired => "expired",
            TokenState::RefreshFailing => "refresh_failing",
            TokenState::ReauthorizationRequired => "reauthorization_required",
        }
    }

    /// Words for the Token Status tab.
    pub fn label(self) -> &'static str {
        match self {
            TokenState::Ok => "ok",
            TokenState::Expiring => "expiring",
            TokenState::Expired => "expired",
            TokenState::RefreshFailing => "refresh failing",
            TokenState::ReauthorizationRequired => "re-authorization required",
        }
    }
}

/// The stored refresh condition (`ok`, `refresh_failing`, `reauthorization_required`).
pub const STORED_OK: &str = "ok";
pub const STORED_FAILING: &str = "refresh_failing";
pub const STORED_REAUTH: &str = "reauthorization_required";

/// The moment a credential stops working without intervention: the earlier of the access
/// token's expiry and Meta's data-access expiry. A credential with a refresh token renews its
/// access token by itself, so that expiry counts only while refreshing fails.
pub fn effective_expiry(
    expires_at: Option<i64>,
    data_access_expires_at: Option<i64>,
    renews_itself: bool,
    stored_state: &str,
) -> Option<i64> {
    let access = if renews_itself && stored_state == STORED_OK {
        None
    } else {
        expires_at
    };
    match (access, data_access_expires_at) {
        (Some(a), Some(d)) => Some(a.min(d)),
        (a, d) => a.or(d),
    }
}

/// The state shown and alerted on, from what is stored and the time.
pub fn derive_state(
    stored_state: &str,
    effective_expiry: Option<i64>,
    warn_before_ms: i64,
    now: i64,
) -> TokenState {
    if stored_state == STORED_REAUTH {
        return TokenState::ReauthorizationRequired;
    }
    match effective_expiry {
        Some(at) if at <= now => TokenState::Expired,
        _ if stored_state == STORED_FAILING => TokenState::RefreshFailing,
        Some(at) if at - now <= warn_before_ms => TokenState::Expiring,
        _ => TokenState::Ok,
    }
}

/// One credential's status, without any secret: what the alerts capability fires on.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenStatus {
    pub name: String,
    pub provider: String,
    pub owner: String,
    pub tenant: String,
    pub state: TokenState,
    /// When it stops working without intervention (UTC ms), if known.
    pub effective_expiry: Option<i64>,
    pub expires_at: Option<i64>,
    pub data_access_expires_at: Option<i64>,
    pub last_error: Option<String>,
}

/// Every credential's status at `now`, for alert rules ("token expiring", "re-authorization
/// required") and the pages. Reads only plain columns: nothing is decrypted.
pub async fn status(store: &crate::store::Store, now: i64) -> Result<Vec<TokenStatus>> {
    Ok(store::plain(store)
        .await?
        .into_iter()
        .map(|c| c.status(now))
        .collect())
}

/// What a health check needs of a credential: its current access token, and for Meta the app
/// credentials that sign `debug_token`.
#[derive(Clone)]
pub struct Live {
    pub provider: Provider,
    pub access_token: Option<Secret<String>>,
    pub client_id: String,
    pub client_secret: Option<Secret<String>>,
    pub state: TokenState,
    pub effective_expiry: Option<i64>,
    pub warn_before_ms: i64,
    /// The access token renews through a refresh token, so its own expiry is no warning.
    pub renews: bool,
}

/// The current access tokens by credential name, for the health checks. Cheap to read; filled
/// from the store at start, after every change and after every refresh.
#[derive(Default)]
pub struct Vault {
    inner: RwLock<HashMap<String, Live>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inner.read().map(|m| m.len()).unwrap_or(0);
        write!(f, "Vault({n} credentials)")
    }
}

impl Vault {
    pub fn get(&self, name: &str) -> Option<Live> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn replace(&self, all: HashMap<String, Live>) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = all;
    }

    /// A vault holding the credentials declared in config as given there, for `opsdeck
    /// check`, which runs without the store (so without tokens refreshed since).
    pub fn from_config(specs: &[CredentialSpec], now: i64) -> Self {
        let vault = Vault::default();
        let mut all = HashMap::new();
        for spec in specs {
            if let Ok(c) = spec.validate() {
                let renews = c.renews_itself();
                let eff = effective_expiry(c.expires_at, None, renews, STORED_OK);
                all.insert(
                    c.name.clone(),
                    Live {
                        provider: c.provider,
                        access_token: c.access_token.clone().map(Secret::new),
                        client_id: c.client_id.clone(),
                        client_secret: c.client_secret.clone().map(Secret::new),
                        state: derive_state(STORED_OK, eff, c.warn_before_ms, now),
                        effective_expiry: eff,
                        warn_before_ms: c.warn_before_ms,
                        renews,
                    },
                );
            }
        }
        vault.replace(all);
        vault
    }
}

/// The tokens capability's shared parts: the vault, the HTTP client for token endpoints, and
/// a lock so that one process never refreshes the same credentials twice at once.
#[derive(Debug)]
pub struct Tokens {
    pub vault: Arc<Vault>,
    pub client: reqwest::Client,
    /// The destination policy token URLs answer to: the operator's, as for webhooks (link-local
    /// and metadata always refused; loopback and private only where allowed).
    pub guard: Arc<crate::net::guard::Guard>,
    pub running: tokio::sync::Mutex<()>,
}

impl Tokens {
    pub fn new(vault: Arc<Vault>, guard: crate::net::guard::Guard) -> Self {
        let guard = Arc::new(guard);
        Tokens {
            vault,
            client: refresh::client(guard.clone()),
            guard,
            running: tokio::sync::Mutex::new(()),
        }
    }
}

/// How long a token endpoint may take.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_the_expiry_and_the_stored_condition() {
        let h = 3_600_000;
        assert_eq!(derive_state("ok", None, 24 * h, 0), TokenState::Ok);
        assert_eq!(derive_state("ok", Some(25 * h), 24 * h, 0), TokenState::Ok);
        assert_eq!(
            derive_state("ok", Some(24 * h), 24 * h, 0),
            TokenState::Expiring
        );
        assert_eq!(derive_state("ok", Some(0), 24 * h, 0), TokenState::Expired);
        assert_eq!(
            derive_state("refresh_failing", Some(30 * h), 24 * h, 0),
            TokenState::RefreshFailing
        );
        assert_eq!(
            derive_state("reauthorization_required", Some(30 * h), h, 0),
            TokenState::ReauthorizationRequired
        );
        // A refresh token renews the access token: its hourly expiry is no warning, but the
        // data-access expiry is, and so is the access expiry once refreshing fails.
        assert_eq!(effective_expiry(Some(5), Some(9), true, "ok"), Some(9));
        assert_eq!(effective_expiry(Some(5), None, true, "ok"), None);
        assert_eq!(
            effective_expiry(Some(5), None, true, "refresh_failing"),
            Some(5)
        );
        assert_eq!(effective_expiry(Some(5), Some(3), false, "ok"), Some(3));
    }
}
