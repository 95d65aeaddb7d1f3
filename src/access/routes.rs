//! JSON API for access administration: the caller's identity, users, API keys, secrets and the
//! audit log. Everything here except `/me` needs the `admin` scope.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit::{self, AuditEntry};
use super::keys::{self, ApiKey, CreatedKey};
use super::secrets::{self, Secret, SecretInfo};
use super::users::{self, User};
use super::{Principal, Role, Scope, Scopes};
use crate::app::AppState;
use crate::http::auth::{Auth, ClientAddr};
use crate::http::error::ErrorBody;
use crate::http::{ApiError, Result};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(list_users, create_user))
        .routes(routes!(delete_user))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(list_secrets))
        .routes(routes!(put_secret, delete_secret))
        .routes(routes!(list_audit))
}

#[derive(Serialize, ToSchema)]
struct Me {
    /// `user` or `key`.
    kind: &'static str,
    name: String,
    scopes: Vec<String>,
}

/// Who the credential belongs to and what it may do.
#[utoipa::path(get, path = "/api/v1/me", tag = "access", security(("api_key" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(Auth(p): Auth) -> Json<Me> {
    let scopes = p.scopes().to_strings();
    Json(match &p {
        Principal::User(u) => Me {
            kind: "user",
            name: u.email.clone(),
            scopes,
        },
        Principal::Key(k) => Me {
            kind: "key",
            name: k.name.clone(),
            scopes,
        },
    })
}

/// All users.
#[utoipa::path(get, path = "/api/v1/users", tag = "access", security(("api_key" = ["admin"])),
    responses((status = 200, body = [User]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_users(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Vec<User>>> {
    p.require(Scope::Admin)?;
    Ok(Json(users::list(&state.store).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    role: Role,
    /// At least 10 characters.
    password: String,
}

/// Adds a user who can sign in with the given password.
#[utoipa::path(post, path = "/api/v1/users", tag = "access", security(("api_key" = ["admin"])), request_body = NewUser,
    responses((status = 201, body = User), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Json(body): Json<NewUser>,
) -> Result<(StatusCode, Json<User>)> {
    p.require(Scope::Admin)?;
    let user = users::create(
        &state.store,
        &body.email,
        &body.password,
        body.role,
        &client.actor(&p),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Removes a user and their sessions, ending their live streams; the last admin cannot be removed.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "access", security(("api_key" = ["admin"])),
    params(("id" = i64, Path, description = "User id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_user(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    users::delete(&state.store, &state.events, id, &client.actor(&p)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// All API keys, revoked ones included; never their secrets.
#[utoipa::path(get, path = "/api/v1/keys", tag = "access", security(("api_key" = ["admin"])),
    responses((status = 200, body = [ApiKey]), (status = 403, body = ErrorBody)))]
async fn list_keys(State(state): State<AppState>, Auth(p): Auth) -> Result<Json<Vec<ApiKey>>> {
    p.require(Scope::Admin)?;
    Ok(Json(keys::list(&state.store).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    /// `ingest`, `read`, `admin`, or a lone `tenant:<customer-id>`.
    scopes: Vec<String>,
}

/// Creates an API key. The response is the only time the secret is shown.
#[utoipa::path(post, path = "/api/v1/keys", tag = "access", security(("api_key" = ["admin"])), request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 422, body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Json(body): Json<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>)> {
    p.require(Scope::Admin)?;
    let scopes = Scopes::parse_list(&body.scopes)?;
    let created = keys::create(&state.store, &body.name, &scopes, &client.actor(&p)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revokes an API key at once; its open live streams (SSE, Socket.IO) end.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "access", security(("api_key" = ["admin"])),
    params(("id" = i64, Path, description = "API key id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    keys::revoke(&state.store, &state.events, id, &client.actor(&p)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Names of stored provider secrets (values are write-only).
#[utoipa::path(get, path = "/api/v1/secrets", tag = "access", security(("api_key" = ["admin"])),
    responses((status = 200, body = [SecretInfo]), (status = 403, body = ErrorBody)))]
async fn list_secrets(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> Result<Json<Vec<SecretInfo>>> {
    p.require(Scope::Admin)?;
    Ok(Json(secrets::list(&state.store).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SecretValue {
    value: String,
}

/// Stores (or replaces) a provider secret, encrypted under the master key.
#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "access", security(("api_key" = ["admin"])),
    params(("name" = String, Path, description = "Secret name, e.g. stripe.secret_key")),
    request_body = SecretValue, responses((status = 204), (status = 422, body = ErrorBody)))]
async fn put_secret(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(name): Path<String>,
    Json(body): Json<SecretValue>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    secrets::put(
        &state.store,
        &state.master_key,
        &name,
        &Secret::new(body.value),
        &client.actor(&p),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a provider secret.
#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "access", security(("api_key" = ["admin"])),
    params(("name" = String, Path, description = "Secret name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_secret(
    State(state): State<AppState>,
    Auth(p): Auth,
    client: ClientAddr,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    p.require(Scope::Admin)?;
    secrets::delete(&state.store, &name, &client.actor(&p)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// At most this many entries (1–1000, default 100).
    limit: Option<i64>,
    /// Entries older than this id, for paging.
    before: Option<i64>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "access", security(("api_key" = ["admin"])), params(AuditQuery),
    responses((status = 200, body = [AuditEntry]),
        (status = 422, body = ErrorBody, description = "limit is outside 1–1000.")))]
async fn list_audit(
    State(state): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>> {
    p.require(Scope::Admin)?;
    if q.limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return Err(ApiError::Invalid("limit must be between 1 and 1000".into()));
    }
    Ok(Json(
        audit::list(&state.store, q.limit.unwrap_or(100), q.before).await?,
    ))
}
