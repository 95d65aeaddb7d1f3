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
use crate::access::audit::Actor;
use crate::access::{AccessError, random_token, sessions, users};
use crate::app::AppState;
use crate::http::ApiError;
use crate::http::auth::{ClientAddr, CsrfForm, PageUser, cookie, safe_next};

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

fn with_login_cookie(mut res: Response, token: &str, secure: bool) -> Response {
    let value = format!(
        "{LOGIN_CSRF_COOKIE}={token}; Path=/signin; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

fn signin_page(
    state: &AppState,
    status: StatusCode,
    next: String,
    email: String,
    error: Option<&'static str>,
) -> Response {
    let token = random_token(24);
    let page = SigninPage {
        csrf_token: token.clone(),
        next,
        email,
        error,
    };
    with_login_cookie(render(status, &page), &token, state.config.behind_tls())
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
    let account = format!("account:{}", f.email.trim().to_lowercase());
    let address = format!("address:{}", client.0.as_deref().unwrap_or("unknown"));
    state
        .login_limiter
        .check(&[&account, &address])
        .map_err(ApiError::RateLimited)?;

    match users::verify_login(&state.store, &f.email, &f.password).await {
        Ok(user) => {
            state.login_limiter.clear(&account);
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
            let cookie = format!(
                "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
                sessions::COOKIE_NAME,
                ttl.as_secs(),
                if state.config.behind_tls() {
                    "; Secure"
                } else {
                    ""
                }
            );
            let mut res = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
            // The login token has done its job.
            if let Ok(v) =
                HeaderValue::from_str(&format!("{LOGIN_CSRF_COOKIE}=; Path=/signin; Max-Age=0"))
            {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
            Ok(res)
        }
        Err(AccessError::BadCredentials) => {
            state.login_limiter.record_failure(&[&account, &address]);
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

#[derive(Deserialize)]
pub struct NoFields {}

pub async fn signout(
    State(state): State<AppState>,
    form: CsrfForm<NoFields>,
) -> Result<Response, ApiError> {
    let actor: Actor = form.actor();
    sessions::destroy(&state.store, &form.user, &actor).await?;
    let mut res = Redirect::to("/signin").into_response();
    let clear = format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        sessions::COOKIE_NAME
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(res)
}
