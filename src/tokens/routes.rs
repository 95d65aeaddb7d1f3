//! HTTP routes of the tokens domain: the credentials registry (list, create, get, delete) and
//! `POST /api/v1/tokens/refresh`. All need the admin scope; no answer ever carries a secret,
//! only whether each is set.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::job::{self, Report};
use super::store::{self, LogRow, Plain};
use super::{CredentialSpec, TokenState};
use crate::access::Scope;
use crate::app::AppState;
use crate::http::Result;
use crate::http::auth::{Auth, ClientAddr};
use crate::http::error::ErrorBody;
use crate::store::now_ms;
use crate::usage::quota::rfc3339 as iso;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_credentials, create_credential))
        .routes(routes!(get_credential, delete_credential))
        .routes(routes!(refresh))
}

/// A credential as the API shows it: never a secret, only whether each is set.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialView {
    pub name: String,
    /// `google`, `meta` or `oauth2`.
    pub provider: String,
    /// `config` (read-only) or `api`.
    pub source: String,
    pub token_url: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub owner: String,
    pub tenant: String,
    pub warn_before_secs: i64,
    pub has_client_secret: bool,
    pub has_access_token: bool,
    pub has_refresh_token: bool,
    pub state: TokenState,
    pub expires_at: Option<String>,
    /// Meta's data-access expiry.
    pub data_access_expires_at: Option<String>,
    pub last_refresh_at: Option<String>,
    /// `refreshed`, `invalid_grant` or `failed`.
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    /// When the job tries again after a failed refresh.
    pub next_attempt_at: Option<String>,
    pub failures: i64,
}

fn view(p: &Plain, s: Option<&store::Secrets>, now: i64) -> CredentialView {
    CredentialView {
        name: p.name.clone(),
        provider: p.provider.clone(),
        source: p.source.clone(),
        token_url: p.token_url.clone(),
        client_id: p.client_id.clone(),
        scopes: p.scopes.split_whitespace().map(str::to_string).collect(),
        owner: p.owner.clone(),
        tenant: p.tenant.clone(),
        warn_before_secs: p.warn_before_ms / 1000,
        has_client_secret: s.is_some_and(|s| s.client_secret.is_some()),
        has_access_token: s.is_some_and(|s| s.access_token.is_some()),
        has_refresh_token: s.is_some_and(|s| s.refresh_token.is_some()),
        state: p.state_at(now),
        expires_at: p.expires_at.map(iso),
        data_access_expires_at: p.data_access_expires_at.map(iso),
        last_refresh_at: p.last_refresh_at.map(iso),
        last_outcome: p.last_outcome.clone(),
        last_error: p.last_error.clone(),
        next_attempt_at: p.next_attempt_at.map(iso),
        failures: p.failures,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialList {
    pub credentials: Vec<CredentialView>,
}

/// Every credential with its state and expiry.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("api_key" = ["admin"])),
    responses((status = 200, body = CredentialList), (status = 403, body = ErrorBody)))]
async fn list_credentials(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<CredentialList>> {
    p.require(Scope::Admin)?;
    let now = now_ms();
    let credentials = store::opened(&state.store, &state.master_key)
        .await?
        .iter()
        .map(|(p, s)| view(p, Some(s), now))
        .collect();
    Ok(Json(CredentialList { credentials }))
}

/// One credential with its latest refresh attempts.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialDetail {
    #[serde(flatten)]
    pub credential: CredentialView,
    pub refreshes: Vec<LogRow>,
}

/// Registers a credential. Its secrets are stored encrypted and never shown again.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", security(("api_key" = ["admin"])),
    request_body = CredentialSpec,
    responses((status = 201, body = CredentialView), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_credential(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Json(spec): Json<CredentialSpec>,
) -> Result<(StatusCode, Json<CredentialView>)> {
    p.require(Scope::Admin)?;
    // The server's policy for token endpoints (loopback and private only where the operator
    // allows them), on top of what validation refuses everywhere. A named host is checked
    // again at each refresh, as it resolves then.
    if let Some(url) = spec.token_url.as_deref()
        && let Ok(parsed) = reqwest::Url::parse(url.trim())
        && let Err(refused) = state.tokens.guard.check_url(&parsed)
    {
        return Err(
            crate::tokens::TokensError::Invalid(crate::tokens::credential::invalid(
                "token_url",
                format!("destination refused: {refused}"),
            ))
            .into(),
        );
    }
    let created = store::create(&state.store, &state.master_key, &spec, &client.actor(&p)).await?;
    store::reload_vault(&state.store, &state.master_key, &state.tokens.vault).await?;
    let secrets = spec.validate().ok().map(|c| store::Secrets {
        client_secret: c.client_secret,
        access_token: c.access_token,
        refresh_token: c.refresh_token,
    });
    Ok((
        StatusCode::CREATED,
        Json(view(&created, secrets.as_ref(), now_ms())),
    ))
}

async fn find(state: &AppState, name: &str) -> Result<(Plain, store::Secrets)> {
    store::opened(&state.store, &state.master_key)
        .await?
        .into_iter()
        .find(|(p, _)| p.name == name)
        .ok_or_else(|| crate::http::ApiError::NotFound(format!("no credential {name:?}")))
}

#[utoipa::path(get, path = "/api/v1/tokens/{name}", tag = "tokens", security(("api_key" = ["admin"])),
    params(("name" = String, Path, description = "Credential name")),
    responses((status = 200, body = CredentialDetail), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn get_credential(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<CredentialDetail>> {
    p.require(Scope::Admin)?;
    let (plain, secrets) = find(&state, &name).await?;
    let refreshes = store::log(&state.store, plain.id, 20).await?;
    Ok(Json(CredentialDetail {
        credential: view(&plain, Some(&secrets), now_ms()),
        refreshes,
    }))
}

/// Deletes a credential and its refresh log. Config credentials are read-only (409).
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens", security(("api_key" = ["admin"])),
    params(("name" = String, Path, description = "Credential name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn delete_credential(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    store::delete(&state.store, &name, &client.actor(&p)).await?;
    store::reload_vault(&state.store, &state.master_key, &state.tokens.vault).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RefreshQuery {
    /// Refresh only this credential; all when absent.
    name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshResults {
    pub results: Vec<Report>,
}

/// Refreshes now, whatever the expiry: every credential ("refresh all") or `?name=`. Answers
/// each credential's outcome; credentials needing re-authorization are skipped.
#[utoipa::path(post, path = "/api/v1/tokens/refresh", tag = "tokens", security(("api_key" = ["admin"])),
    params(RefreshQuery),
    responses((status = 200, body = RefreshResults), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn refresh(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Query(q): Query<RefreshQuery>,
) -> Result<Json<RefreshResults>> {
    p.require(Scope::Admin)?;
    let results = job::refresh_now(
        &state.store,
        &state.master_key,
        &state.tokens,
        q.name.as_deref(),
        &client.actor(&p),
        now_ms(),
    )
    .await?;
    Ok(Json(RefreshResults { results }))
}
