//! Sign-in and sign-out. The sign-in form is protected by a double-submit token (a cookie plus
//! the same value in the form) because no session exists yet; failures count against the
//! account and the client address, and the answer never says which part was wrong.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::render;
use crate::access::{AccessError, random_token, sessions, users};
use crate::app::AppState;
use crate::http::ApiError;
use crate::http::auth::{ClientAddr, CsrfForm, NoFields, PageUser, cookie, safe_next};

const LOGIN_CSRF_COOKIE: &str = "opsdeck_login_csrf";

#[derive(askama::Template)]
#[template(path = "signin.html")]
struct SigninPage {
    csrf_token: String,
    next: String,
    email: String,
    error: Option<&'static str>,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Appends a `Set-Cookie` that is always HttpOnly, `Secure` when opsdeck is served over TLS,
/// and removed when `max_age` is 0.
fn set_cookie(
    res: &mut Response,
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: u64,
) {
    let secure = if state.config.behind_tls() {
        "; Secure"
    } else {
        ""
    };
    let line = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
    );
    if let Ok(v) = HeaderValue::from_str(&line) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn signin_page(
    state: &AppState,
    status: StatusCode,
    next: String,
    email: String,
    error: Option<&'static str>,
) -> Response {
    let token = random_token(24);
    let mut res = render(
        status,
        &SigninPage {
            csrf_token: token.clone(),
            next,
            email,
            error,
        },
    );
    set_cookie(
        &mut res,
        state,
        LOGIN_CSRF_COOKIE,
        &token,
        "/signin",
        "Strict",
        3600,
    );
    res
}

pub async fn show(
    State(state): State<AppState>,
    user: Option<PageUser>,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if user.is_some() {
        return Redirect::to(&next).into_response();
    }
    signin_page(&state, StatusCode::OK, next, String::new(), None)
}

#[derive(Deserialize)]
pub struct SigninForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf_token: String,
    next: Option<String>,
}

pub async fn submit(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    Form(f): Form<SigninForm>,
) -> Result<Response, ApiError> {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(f.csrf_token.as_bytes())) {
        return Err(ApiError::Csrf);
    }
    let next = safe_next(f.next.as_deref());
    let account = f.email.trim().to_lowercase();
    let address = client.0.as_deref().unwrap_or("unknown");
    let attempt = state
        .login_limiter
        .begin(address, &account)
        .map_err(ApiError::RateLimited)?;

    match users::verify_login(&state.store, &f.email, &f.password).await {
        Ok(user) => {
            drop(attempt);
            state.login_limiter.clear_account(&account);
            let ua = headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let ttl = state.config.access.session_ttl.0;
            let value = sessions::create(
                &state.store,
                user.id,
                &user.email,
                ttl,
                client.0.clone(),
                ua,
            )
            .await?;
            let mut res = Redirect::to(&next).into_response();
            set_cookie(
                &mut res,
                &state,
                sessions::COOKIE_NAME,
                &value,
                "/",
                "Lax",
                ttl.as_secs(),
            );
            // The login token has done its job.
            set_cookie(
                &mut res,
                &state,
                LOGIN_CSRF_COOKIE,
                "",
                "/signin",
                "Strict",
                0,
            );
            Ok(res)
        }
        Err(AccessError::BadCredentials) => {
            attempt.failed();
            tracing::info!(address = ?client.0, "failed sign-in");
            Ok(signin_page(
                &state,
                StatusCode::UNAUTHORIZED,
                next,
                f.email,
                Some("Invalid email or password."),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn signout(
    State(state): State<AppState>,
    form: CsrfForm<NoFields>,
) -> Result<Response, ApiError> {
    sessions::destroy(&state.store, &state.events, &form.user, &form.actor()).await?;
    let mut res = Redirect::to("/signin").into_response();
    set_cookie(&mut res, &state, sessions::COOKIE_NAME, "", "/", "Lax", 0);
    Ok(res)
}
