//! Request extractors that turn credentials into an [`access::Principal`]: a Bearer API key or
//! the session cookie for the JSON API, the session cookie for pages, and the CSRF check that
//! guards every state-changing form and cookie-authenticated API call.

use std::net::{IpAddr, SocketAddr};

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

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip());
        let trusted = &state.config.server.trusted_proxies;
        Ok(ClientAddr(peer.map(|p| {
            client_ip(p, &parts.headers, trusted).to_string()
        })))
    }
}

/// The client behind any trusted proxies: X-Forwarded-For is believed only when the peer is a
/// configured proxy, and then read right to left up to the first address that is not one. An
/// entry that is not a bare IP address ends the walk: nothing left of it can be trusted.
/// Addresses are compared in canonical form, so an IPv4 peer on a dual-stack socket
/// (`::ffff:127.0.0.1`) matches `127.0.0.1`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[String]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| {
        trusted
            .iter()
            .any(|t| t.parse::<IpAddr>().is_ok_and(|t| t.to_canonical() == *ip))
    };
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

impl ClientAddr {
    pub fn actor(&self, principal: &Principal) -> Actor {
        Actor::new(principal.actor(), self.0.clone())
    }
}

/// Filled by [`Auth`] with the API key that authenticated the request, and read by the
/// `record_key_use` middleware once the response status is known.
#[derive(Clone, Default)]
pub struct UsedKey(pub std::sync::Arc<std::sync::OnceLock<i64>>);

/// An authenticated JSON API caller, already counted against the per-credential request limit.
/// 401 without a valid credential; handlers then check the scope they need.
pub struct Auth(pub Principal);

/// An authenticated ingest caller, not yet counted against any limit: ingest is limited in
/// events, not requests (`ingest.events_per_second`), so the handler charges the batch once it
/// knows its size. Every other route uses [`Auth`], whose request limit protects reads and
/// admin actions.
pub struct IngestAuth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = authenticate(parts, state).await?;
        state
            .api_limiter
            .check(&principal.rate_key())
            .map_err(ApiError::RateLimited)?;
        Ok(Auth(principal))
    }
}

impl FromRequestParts<AppState> for IngestAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(IngestAuth(authenticate(parts, state).await?))
    }
}

/// The credential of a JSON API request: a Bearer key, or the session cookie (with the CSRF
/// header for writes). Records which key authenticated, for its last-use time.
async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Principal, ApiError> {
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
    if let (Principal::Key(k), Some(slot)) = (&principal, parts.extensions.get::<UsedKey>()) {
        let _ = slot.0.set(k.id);
    }
    Ok(principal)
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

/// For forms whose only field is the CSRF token (sign-out, delete and revoke buttons).
#[derive(Deserialize)]
pub struct NoFields {}

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
        Actor::user(&self.user.email, self.client.0.clone())
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
/// Browsers drop tabs and newlines from URLs, so only visible ASCII is allowed, and the second
/// character may not turn the path into a scheme-relative `//host` or `/\host`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && n.bytes().all(|b| (0x21..=0x7e).contains(&b))
                && !matches!(n.as_bytes().get(1), Some(b'/' | b'\\'))
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
        for bad in [
            "//evil.com",
            "https://evil.com",
            "/\\evil.com",
            "evil",
            "/\t/evil.com",
            "/\n",
            "/a b",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.2".parse().unwrap());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = vec!["10.0.0.1".to_string(), "10.0.0.2".to_string()];
        assert_eq!(client_ip(proxy, &h, &trusted).to_string(), "203.0.113.9");
        assert_eq!(
            client_ip(proxy, &h, &[]),
            proxy,
            "untrusted peer: header ignored"
        );
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_ip(mapped, &h, &trusted).to_string(), "203.0.113.9");
        let mut spoofed = HeaderMap::new();
        spoofed.insert(
            "x-forwarded-for",
            "6.6.6.6, unknown, 10.0.0.2".parse().unwrap(),
        );
        assert_eq!(
            client_ip(proxy, &spoofed, &trusted).to_string(),
            "10.0.0.2",
            "walk stops at garbage"
        );
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
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

    proptest::proptest! {
        #[test]
        fn any_next_value_redirects_on_site(next in "\\PC{0,40}|/[\\x00-\\x7f]{0,20}") {
            let target = safe_next(Some(&next));
            proptest::prop_assert!(target.starts_with('/'));
            proptest::prop_assert!(!matches!(target.as_bytes().get(1), Some(b'/' | b'\\')));
            proptest::prop_assert!(target.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            proptest::prop_assert!(!target.contains("://"));
        }

        #[test]
        fn plain_paths_are_kept(path in "(/[a-z0-9_-]{1,12}){1,4}(\\?[a-z]=[0-9]{1,3})?") {
            proptest::prop_assert_eq!(safe_next(Some(&path)), path);
        }
    }
}
