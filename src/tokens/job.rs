//! Refreshing: which credentials are due (less than a tenth of their token's lifetime, or ten
//! minutes, left; never one that needs re-authorization; not before a failed one's backoff
//! ends), one attempt each with its outcome logged, the once-per-expiry warning, and the manual
//! "refresh now" / "refresh all" behind the API and the Token Status tab. The job's step takes
//! `now`, so tests move time without sleeping.

use serde::Serialize;

use super::refresh::{self, Failure};
use super::store::{self, Plain, Secrets};
use super::{Result, STORED_REAUTH, TokenState, Tokens, TokensError};
use crate::access::audit::{self, Actor};
use crate::access::secrets::MasterKey;
use crate::store::Store;

const MINUTE_MS: i64 = 60_000;
/// Refresh at the latest this long before expiry, however short the token's life.
const AHEAD_MIN_MS: i64 = 10 * MINUTE_MS;
/// The longest pause between retries of a failing refresh.
const BACKOFF_MAX_MS: i64 = 60 * MINUTE_MS;
/// How long one instance holds a credential while refreshing it.
const LEASE_MS: i64 = 2 * MINUTE_MS;

/// One credential's refresh, as the API and the page report it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub name: String,
    /// `refreshed`, `invalid_grant`, `failed` or `skipped`.
    pub outcome: String,
    pub error: Option<String>,
    /// The access token's expiry after the attempt (RFC 3339), if known.
    pub expires_at: Option<String>,
    pub state: TokenState,
}

/// Whether the job should refresh `p` at `now`.
pub fn due(p: &Plain, s: &Secrets, now: i64) -> bool {
    if p.state == STORED_REAUTH || store::refreshable(p, s).is_err() {
        return false;
    }
    if p.next_attempt_at.is_some_and(|next| next > now) {
        return false;
    }
    match p.expires_at {
        // Unknown expiry: one refresh learns it.
        None => p.last_outcome.as_deref() != Some("refreshed"),
        Some(at) => {
            let lifetime = (at - p.obtained_at).max(0);
            at - now <= (lifetime / 10).max(AHEAD_MIN_MS)
        }
    }
}

/// The pause before retrying after `failures` failures in a row: 1, 2, 4 … minutes, at most
/// an hour.
pub fn backoff_ms(failures: i64) -> i64 {
    (MINUTE_MS << failures.clamp(0, 10)).min(BACKOFF_MAX_MS)
}

/// The job's step: refreshes every due credential, logs each expiring credential's warning
/// once per expiry, and reloads the vault. Returns what it attempted.
#[tracing::instrument(skip_all)]
pub async fn refresh_due(
    store: &Store,
    key: &MasterKey,
    tokens: &Tokens,
    now: i64,
) -> Result<Vec<Report>> {
    let _one_at_a_time = tokens.running.lock().await;
    let mut reports = Vec::new();
    for (p, s) in store::opened(store, key).await? {
        if due(&p, &s, now) {
            reports.push(attempt(store, key, tokens, &p, &s, "job", now).await?);
        }
    }
    for p in store::plain(store).await? {
        let state = p.state_at(now);
        if let (TokenState::Expiring | TokenState::Expired, Some(at)) =
            (state, p.effective_expiry())
            && p.warned_for != Some(at)
        {
            tracing::warn!(
                credential = %p.name,
                provider = %p.provider,
                expires_at = %crate::usage::quota::rfc3339(at),
                state = state.as_str(),
                "OAuth credential expiring"
            );
            store::mark_warned(store, p.id, at).await?;
        }
    }
    store::reload_vault(store, key, &tokens.vault).await?;
    Ok(reports)
}

/// Refreshes now, whatever the expiry: every credential, or the one named `only`. One that
/// needs re-authorization is skipped (its grant is dead; only new tokens help). Asking for a
/// single credential that cannot be refreshed is an error naming the missing field, and
/// stores nothing.
pub async fn refresh_now(
    store: &Store,
    key: &MasterKey,
    tokens: &Tokens,
    only: Option<&str>,
    actor: &Actor,
    now: i64,
) -> Result<Vec<Report>> {
    let _one_at_a_time = tokens.running.lock().await;
    let all = store::opened(store, key).await?;
    let chosen: Vec<&(Plain, Secrets)> = match only {
        Some(name) => {
            let one = all
                .iter()
                .find(|(p, _)| p.name == name)
                .ok_or_else(|| TokensError::NotFound(format!("no credential {name:?}")))?;
            store::refreshable(&one.0, &one.1)?;
            vec![one]
        }
        None => all.iter().collect(),
    };
    let mut tx = store.begin().await?;
    let names: Vec<&str> = chosen.iter().map(|(p, _)| p.name.as_str()).collect();
    audit::record(
        &mut tx,
        actor,
        "credential.refresh",
        only.map(|n| format!("credential:{n}")).as_deref(),
        Some(serde_json::json!({ "credentials": names })),
    )
    .await?;
    tx.commit().await?;
    let mut reports = Vec::with_capacity(chosen.len());
    for (p, s) in chosen {
        let skip = |why: String| Report {
            name: p.name.clone(),
            outcome: "skipped".into(),
            error: Some(why),
            expires_at: p.expires_at.map(crate::usage::quota::rfc3339),
            state: p.state_at(now),
        };
        if p.state == STORED_REAUTH {
            reports.push(skip(
                "re-authorization required: give the credential new tokens".into(),
            ));
            continue;
        }
        if let Err(e) = store::refreshable(p, s) {
            reports.push(skip(e.to_string()));
            continue;
        }
        reports.push(attempt(store, key, tokens, p, s, "manual", now).await?);
    }
    store::reload_vault(store, key, &tokens.vault).await?;
    Ok(reports)
}

/// One refresh of one credential, leased so another instance does not do it too, and logged.
async fn attempt(
    store: &Store,
    key: &MasterKey,
    tokens: &Tokens,
    p: &Plain,
    s: &Secrets,
    trigger: &str,
    now: i64,
) -> Result<Report> {
    if !store::lease(store, p.id, now, now + LEASE_MS).await? {
        return Ok(Report {
            name: p.name.clone(),
            outcome: "skipped".into(),
            error: Some("another instance is refreshing it".into()),
            expires_at: p.expires_at.map(crate::usage::quota::rfc3339),
            state: p.state_at(now),
        });
    }
    let started = crate::store::now_ms();
    let result = refresh::renew(&tokens.client, &tokens.guard, p, s, now).await;
    // Durations are measured on the wall clock; `now` may be a test's future.
    let finished = now + (crate::store::now_ms() - started);
    let (outcome, error, expires_at) = match result {
        Ok(renewed) => {
            let expires_at = renewed.expires_at;
            store::record_success(store, key, p, s, renewed, trigger, now, finished).await?;
            tracing::info!(credential = %p.name, trigger, "OAuth credential refreshed");
            ("refreshed", None, expires_at)
        }
        Err(f) => {
            let terminal = matches!(f, Failure::Terminal(_));
            let next = (!terminal).then(|| finished + backoff_ms(p.failures));
            store::record_failure(store, p, terminal, f.text(), next, trigger, now, finished)
                .await?;
            if terminal {
                tracing::error!(credential = %p.name, error = %f.text(),
                    "OAuth credential needs re-authorization; it will not be retried");
                ("invalid_grant", Some(f.text().to_string()), p.expires_at)
            } else {
                tracing::warn!(credential = %p.name, error = %f.text(),
                    "OAuth refresh failed; retrying later");
                ("failed", Some(f.text().to_string()), p.expires_at)
            }
        }
    };
    let after = store::get_plain(store, &p.name).await?;
    Ok(Report {
        name: p.name.clone(),
        outcome: outcome.into(),
        error,
        expires_at: expires_at.map(crate::usage::quota::rfc3339),
        state: after
            .map(|a| a.state_at(finished))
            .unwrap_or(TokenState::Ok),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(expires_at: Option<i64>, obtained_at: i64) -> Plain {
        Plain {
            id: 1,
            name: "c".into(),
            provider: "google".into(),
            source: "api".into(),
            token_url: "http://x/token".into(),
            client_auth: "body".into(),
            client_id: "id".into(),
            scopes: String::new(),
            owner: String::new(),
            tenant: String::new(),
            warn_before_ms: 86_400_000,
            renews: 1,
            expires_at,
            data_access_expires_at: None,
            obtained_at,
            state: "ok".into(),
            last_error: None,
            failures: 0,
            next_attempt_at: None,
            last_refresh_at: None,
            last_outcome: None,
            warned_for: None,
        }
    }

    #[test]
    fn due_ahead_of_expiry_and_never_after_invalid_grant() {
        let s = Secrets {
            refresh_token: Some("rt".into()),
            ..Default::default()
        };
        let hour = 3_600_000;
        // An hour-long token: due in its last ten minutes.
        let p = plain(Some(hour), 0);
        assert!(!due(&p, &s, 49 * MINUTE_MS));
        assert!(due(&p, &s, 50 * MINUTE_MS));
        // A 60-day token: due in its last six days.
        let p = plain(Some(60 * 24 * hour), 0);
        assert!(!due(&p, &s, 53 * 24 * hour));
        assert!(due(&p, &s, 54 * 24 * hour));
        let mut dead = plain(Some(hour), 0);
        dead.state = STORED_REAUTH.into();
        assert!(!due(&dead, &s, 2 * hour));
        let mut waiting = plain(Some(hour), 0);
        waiting.next_attempt_at = Some(2 * hour);
        assert!(!due(&waiting, &s, hour) && due(&waiting, &s, 2 * hour));
        assert!(!due(&plain(Some(hour), 0), &Secrets::default(), 2 * hour));
        assert_eq!(
            (backoff_ms(0), backoff_ms(3), backoff_ms(40)),
            (MINUTE_MS, 8 * MINUTE_MS, BACKOFF_MAX_MS)
        );
    }
}
