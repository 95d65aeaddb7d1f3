//! Request extractors that turn credentials into an [`access::Principal`]: a Bearer API key or
//! the session cookie for the JSON API, the session cookie for pages, and the CSRF check that
//! guards every state-changing form and cookie-authenticated API call.

use std::net::SocketAddr;

use axum::extract::{
    ConnectInfo, Form, FromRequest, FromRequestParts, OptionalFromRequestParts, Request,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::access::sessions::{self, COOKIE_NAME, SessionUser};
use crate::access::{Principal, Role, audit::Actor, keys};
use crate::app::AppState;
use crate::http::ApiError;

/// Header a browser script sends with cookie-authenticated state-changing API calls.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Reads one cookie from the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The peer address, for rate limiting and the audit log.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| a.ip().to_string()),
        ))
    }
}

impl ClientAddr {
    pub fn actor(&self, principal: &Principal) -> Actor {
        Actor::new(principal.actor(), self.0.clone())
    }
}

/// An authenticated JSON API caller, already counted against the per-credential rate limit.
/// 401 without a valid credential; handlers then check the scope they need.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or(ApiError::Unauthenticated)?;
            Principal::Key(
                keys::authenticate(&state.store, token.trim())
                    .await?
                    .ok_or(ApiError::Unauthenticated)?,
            )
        } else if let Some(value) = cookie(&parts.headers, COOKIE_NAME) {
            let session = sessions::lookup(&state.store, value)
                .await?
                .ok_or(ApiError::Unauthenticated)?;
            // Browsers attach cookies to cross-site requests; a header only our script can set
            // proves the call came from our page.
            if !parts.method.is_safe() {
                let sent = parts
                    .headers
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                session.check_csrf(sent)?;
            }
            Principal::User(session)
        } else {
            return Err(ApiError::Unauthenticated);
        };
        state
            .api_limiter
            .check(&principal.rate_key())
            .map_err(ApiError::RateLimited)?;
        Ok(Auth(principal))
    }
}

/// A signed-in person viewing a page; anyone else is sent to the sign-in page.
pub struct PageUser(pub SessionUser);

impl FromRequestParts<AppState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match <Self as OptionalFromRequestParts<AppState>>::from_request_parts(parts, state).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let target = format!("/signin?next={}", urlencode(next));
                Err(Redirect::to(&target).into_response())
            }
            Err(e) => Err(e.into_response()),
        }
    }
}

impl OptionalFromRequestParts<AppState> for PageUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        let Some(value) = cookie(&parts.headers, COOKIE_NAME) else {
            return Ok(None);
        };
        Ok(sessions::lookup(&state.store, value).await?.map(PageUser))
    }
}

/// A signed-in admin; viewers get 403.
pub struct AdminPage(pub SessionUser);

impl FromRequestParts<AppState> for AdminPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let PageUser(user) =
            <PageUser as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            return Err(ApiError::Forbidden("this page is for admins".into()).into_response());
        }
        Ok(AdminPage(user))
    }
}

#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf_token: String,
    #[serde(flatten)]
    form: T,
}

/// A submitted form from a signed-in person whose CSRF token matched their session. The check
/// happens before the handler runs, so a rejected form cannot have written anything.
pub struct CsrfForm<T> {
    pub user: SessionUser,
    pub form: T,
    pub client: ClientAddr,
}

impl<T> CsrfForm<T> {
    pub fn actor(&self) -> Actor {
        Actor::new(format!("user:{}", self.user.email), self.client.0.clone())
    }
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let PageUser(user) =
            <PageUser as FromRequestParts<AppState>>::from_request_parts(&mut parts, state).await?;
        let Ok(client) = ClientAddr::from_request_parts(&mut parts, state).await;
        let req = Request::from_parts(parts, body);
        let Form(WithCsrf { csrf_token, form }) = Form::<WithCsrf<T>>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        user.check_csrf(&csrf_token)
            .map_err(|e| ApiError::from(e).into_response())?;
        Ok(CsrfForm { user, form, client })
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Accepts only same-site paths as post-sign-in targets, so `next=` cannot redirect off-site.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.contains("://") =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_targets_stay_on_site() {
        assert_eq!(safe_next(Some("/settings/keys")), "/settings/keys");
        for bad in ["//evil.com", "https://evil.com", "/\\evil.com", "evil"] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; opsdeck_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, "opsdeck_session"), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
