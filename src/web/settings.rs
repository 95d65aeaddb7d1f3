//! Settings pages (admins only): users, API keys, the audit log and provider secrets. Pricing and
//! plans arrive with metering. Every form goes through [`CsrfForm`].

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Chrome, render};
use crate::access::audit::{self, AuditEntry};
use crate::access::keys::{self, ApiKey};
use crate::access::secrets::{self, Secret, SecretInfo};
use crate::access::sessions::SessionUser;
use crate::access::users::{self, User};
use crate::access::{AccessError, Role, Scopes};
use crate::app::AppState;
use crate::http::ApiError;
use crate::http::auth::{AdminPage, CsrfForm, NoFields};

pub(super) type PageResult = Result<Response, ApiError>;

/// Validation problems re-show the page with the message; anything else is a real error.
fn form_problem(e: AccessError) -> Result<(StatusCode, String), ApiError> {
    match e {
        AccessError::Invalid(m) => Ok((StatusCode::UNPROCESSABLE_ENTITY, m)),
        AccessError::Conflict(m) => Ok((StatusCode::CONFLICT, m)),
        AccessError::NotFound(m) => Ok((StatusCode::NOT_FOUND, format!("{m} not found"))),
        other => Err(other.into()),
    }
}

pub async fn index(AdminPage(_): AdminPage) -> Response {
    Redirect::to("/settings/users").into_response()
}

#[derive(askama::Template)]
#[template(path = "settings_users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<User>,
    error: Option<String>,
    me: i64,
}

async fn users_page(
    state: &AppState,
    user: &SessionUser,
    status: StatusCode,
    error: Option<String>,
) -> PageResult {
    let users = users::list(&state.store).await?;
    Ok(render(
        status,
        &UsersPage {
            chrome: Chrome::new(user, "/settings"),
            users,
            error,
            me: user.user_id,
        },
    ))
}

pub async fn users(State(state): State<AppState>, AdminPage(user): AdminPage) -> PageResult {
    users_page(&state, &user, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct AddUser {
    email: String,
    role: String,
    password: String,
}

pub async fn add_user(State(state): State<AppState>, form: CsrfForm<AddUser>) -> PageResult {
    require_admin(&form.user)?;
    let actor = form.actor();
    let f = &form.form;
    let result = match Role::parse(&f.role) {
        Ok(role) => users::create(&state.store, &f.email, &f.password, role, &actor)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(Redirect::to("/settings/users").into_response()),
        Err(e) => {
            let (status, msg) = form_problem(e)?;
            users_page(&state, &form.user, status, Some(msg)).await
        }
    }
}

pub async fn delete_user(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm<NoFields>,
) -> PageResult {
    require_admin(&form.user)?;
    match users::delete(&state.store, &state.events, id, &form.actor()).await {
        Ok(()) => Ok(Redirect::to("/settings/users").into_response()),
        Err(e) => {
            let (status, msg) = form_problem(e)?;
            users_page(&state, &form.user, status, Some(msg)).await
        }
    }
}

#[derive(askama::Template)]
#[template(path = "settings_keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<ApiKey>,
    created: Option<String>,
    error: Option<String>,
}

async fn keys_page(
    state: &AppState,
    user: &SessionUser,
    status: StatusCode,
    created: Option<String>,
    error: Option<String>,
) -> PageResult {
    let keys = keys::list(&state.store).await?;
    Ok(render(
        status,
        &KeysPage {
            chrome: Chrome::new(user, "/settings"),
            keys,
            created,
            error,
        },
    ))
}

pub async fn keys(State(state): State<AppState>, AdminPage(user): AdminPage) -> PageResult {
    keys_page(&state, &user, StatusCode::OK, None, None).await
}

#[derive(Deserialize)]
pub struct CreateKey {
    name: String,
    /// Space- or comma-separated.
    scopes: String,
}

pub async fn create_key(State(state): State<AppState>, form: CsrfForm<CreateKey>) -> PageResult {
    require_admin(&form.user)?;
    let actor = form.actor();
    let result = match Scopes::parse_list(&[&form.form.scopes]) {
        Ok(scopes) => keys::create(&state.store, &form.form.name, &scopes, &actor).await,
        Err(e) => Err(e),
    };
    match result {
        // Rendered directly (not redirected) so the secret never appears in a URL or history.
        Ok(created) => {
            keys_page(
                &state,
                &form.user,
                StatusCode::CREATED,
                Some(created.secret),
                None,
            )
            .await
        }
        Err(e) => {
            let (status, msg) = form_problem(e)?;
            keys_page(&state, &form.user, status, None, Some(msg)).await
        }
    }
}

pub async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    form: CsrfForm<NoFields>,
) -> PageResult {
    require_admin(&form.user)?;
    match keys::revoke(&state.store, &state.events, id, &form.actor()).await {
        Ok(()) => Ok(Redirect::to("/settings/keys").into_response()),
        Err(e) => {
            let (status, msg) = form_problem(e)?;
            keys_page(&state, &form.user, status, None, Some(msg)).await
        }
    }
}

#[derive(askama::Template)]
#[template(path = "settings_audit.html")]
struct AuditPage {
    chrome: Chrome,
    entries: Vec<AuditEntry>,
    older: Option<i64>,
}

#[derive(Deserialize)]
pub struct AuditQuery {
    before: Option<i64>,
}

pub async fn audit(
    State(state): State<AppState>,
    AdminPage(user): AdminPage,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    const PAGE: i64 = 100;
    let entries = audit::list(&state.store, PAGE, q.before).await?;
    let older = (entries.len() as i64 == PAGE)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(render(
        StatusCode::OK,
        &AuditPage {
            chrome: Chrome::new(&user, "/settings"),
            entries,
            older,
        },
    ))
}

#[derive(askama::Template)]
#[template(path = "settings_secrets.html")]
struct SecretsPage {
    chrome: Chrome,
    secrets: Vec<SecretInfo>,
    error: Option<String>,
}

async fn secrets_page(
    state: &AppState,
    user: &SessionUser,
    status: StatusCode,
    error: Option<String>,
) -> PageResult {
    let secrets = secrets::list(&state.store).await?;
    Ok(render(
        status,
        &SecretsPage {
            chrome: Chrome::new(user, "/settings"),
            secrets,
            error,
        },
    ))
}

pub async fn secrets(State(state): State<AppState>, AdminPage(user): AdminPage) -> PageResult {
    secrets_page(&state, &user, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub struct PutSecret {
    name: String,
    value: String,
}

pub async fn put_secret(State(state): State<AppState>, form: CsrfForm<PutSecret>) -> PageResult {
    require_admin(&form.user)?;
    let actor = form.actor();
    let value = Secret::new(form.form.value.clone());
    match secrets::put(
        &state.store,
        &state.master_key,
        form.form.name.trim(),
        &value,
        &actor,
    )
    .await
    {
        Ok(()) => Ok(Redirect::to("/settings/integrations").into_response()),
        Err(e) => {
            let (status, msg) = form_problem(e)?;
            secrets_page(&state, &form.user, status, Some(msg)).await
        }
    }
}

/// Forms are reachable only from admin pages, but a viewer could still post one by hand.
pub(super) fn require_admin(user: &SessionUser) -> Result<(), ApiError> {
    if user.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "only admins can change settings".into(),
        ))
    }
}
