//! Speaking the token endpoints: the OAuth2 refresh-token grant (RFC 6749 §6; Google's
//! `oauth2.googleapis.com/token`), Meta's long-lived exchange (`fb_exchange_token`) and
//! `debug_token`. Each answer is classified as renewed, terminal (`invalid_grant`, Meta's
//! OAuthException 190: only the user can fix it) or failed (worth retrying). Errors carry the
//! provider's own words but never a URL (Meta's carry the app secret in the query) or a token.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::store::{Plain, Renewed, Secrets};
use super::{Provider, REFRESH_TIMEOUT};
use crate::net::guard::{Guard, guard_error};

/// Why a refresh did not renew the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The grant is dead: revoked, expired, or never valid. Never retried automatically.
    Terminal(String),
    /// Anything else (transport, 5xx, 429, a garbled answer): retried later with backoff.
    Failed(String),
}

impl Failure {
    pub fn text(&self) -> &str {
        match self {
            Failure::Terminal(t) | Failure::Failed(t) => t,
        }
    }
}

/// The client for token endpoints: through `guard` (every address resolved for a token URL
/// checked as it is connected to), no proxy, no redirects (a token endpoint that redirects
/// is misconfigured, and following would resend the secrets), bounded time.
pub fn client(guard: Arc<Guard>) -> reqwest::Client {
    crate::net::guard::client_builder(guard)
        .timeout(REFRESH_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("opsdeck/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Renews `p`'s access token with the protocol its provider speaks. A token URL whose literal address `guard` refuses is never sent anything (named hosts are
/// checked by the client's resolver as they are resolved); the refusal is a failure, not
/// terminal, since it lifts once the operator allows the range.
pub async fn renew(
    client: &reqwest::Client,
    guard: &Guard,
    p: &Plain,
    s: &Secrets,
    now: i64,
) -> Result<Renewed, Failure> {
    let url = reqwest::Url::parse(&p.token_url)
        .map_err(|_| Failure::Failed("the token URL is not a URL".into()))?;
    if let Err(refused) = guard.check_url(&url) {
        return Err(Failure::Failed(format!("token_url refused: {refused}")));
    }
    match p.provider() {
        Provider::Meta => meta_exchange(client, p, s, now).await,
        Provider::Google | Provider::Oauth2 => refresh_grant(client, p, s, now).await,
    }
}

/// Sends a request and reads a JSON answer (status, body); a transport failure is `Failed`.
async fn send(req: reqwest::RequestBuilder) -> Result<(u16, Option<Value>), Failure> {
    let res = req
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| {
            Failure::Failed(match guard_error(&e) {
                Some(refused) if refused.is_refusal() => format!("token_url refused: {refused}"),
                _ => crate::health::checks::describe(&e.without_url()),
            })
        })?;
    let status = res.status().as_u16();
    let body = crate::health::checks::read_body(res)
        .await
        .map_err(Failure::Failed)?;
    Ok((status, serde_json::from_slice(&body).ok()))
}

fn short(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Classifies an OAuth2 error answer (`{"error": "...", "error_description": "..."}`).
fn oauth_error(status: u16, body: Option<&Value>) -> Failure {
    let code = body
        .and_then(|b| b.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let description = body
        .and_then(|b| b.get("error_description"))
        .and_then(Value::as_str)
        .map(short);
    let mut text = format!("HTTP {status}");
    if !code.is_empty() {
        text.push_str(": ");
        text.push_str(&short(code));
    }
    if let Some(d) = description {
        text.push_str(": ");
        text.push_str(&d);
    }
    if code == "invalid_grant" {
        Failure::Terminal(text)
    } else {
        Failure::Failed(text)
    }
}

/// Classifies a Graph API error answer (`{"error": {"message", "type", "code", …}}`). Code 190
/// is an invalid or expired access token: an expired token cannot be exchanged, so only a new
/// login helps.
fn graph_error(status: u16, body: Option<&Value>) -> Failure {
    let err = body.and_then(|b| b.get("error"));
    let code = err.and_then(|e| e.get("code")).and_then(Value::as_i64);
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(short);
    let mut text = format!("HTTP {status}");
    if let Some(c) = code {
        text.push_str(&format!(": OAuthException {c}"));
    }
    if let Some(m) = message {
        text.push_str(": ");
        text.push_str(&m);
    }
    if code == Some(190) {
        Failure::Terminal(text)
    } else {
        Failure::Failed(text)
    }
}

/// A number that may come as a JSON number or a string (Google sends both in places).
fn seconds(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The refresh-token grant: a form POST with `grant_type=refresh_token`, the client
/// authenticated in the body or with HTTP Basic as the credential says.
async fn refresh_grant(
    client: &reqwest::Client,
    p: &Plain,
    s: &Secrets,
    now: i64,
) -> Result<Renewed, Failure> {
    let refresh_token = s
        .refresh_token
        .as_deref()
        .ok_or_else(|| Failure::Terminal("no refresh token is stored".into()))?;
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    let mut req = client.post(&p.token_url);
    if p.client_auth == "basic" {
        req = req.basic_auth(&p.client_id, s.client_secret.as_deref());
    } else {
        form.push(("client_id", &p.client_id));
        if let Some(secret) = s.client_secret.as_deref() {
            form.push(("client_secret", secret));
        }
    }
    let body = encode_form(&form);
    let (status, json) = send(
        req.header("content-type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await?;
    if !(200..300).contains(&status) {
        return Err(oauth_error(status, json.as_ref()));
    }
    let json = json.ok_or_else(|| Failure::Failed("the token answer is not JSON".into()))?;
    let access_token = json
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Failure::Failed("the token answer has no access_token".into()))?;
    let expires_at = seconds(json.get("expires_in")).map(|s| now + s * 1000);
    let scopes = json
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split_whitespace().map(str::to_string).collect());
    Ok(Renewed {
        access_token: access_token.to_string(),
        refresh_token: json
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        expires_at,
        data_access_expires_at: None,
        scopes,
    })
}

/// `application/x-www-form-urlencoded` without the `form` feature of reqwest.
fn encode_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC),
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The Graph API base a Meta token URL sits under: `…/v25.0/oauth/access_token` → `…/v25.0`.
pub fn graph_base(token_url: &str) -> String {
    token_url
        .trim_end_matches('/')
        .trim_end_matches("/oauth/access_token")
        .to_string()
}

/// What `debug_token` says of a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Debugged {
    pub is_valid: bool,
    /// UTC ms; `None` = never (Meta sends 0).
    pub expires_at: Option<i64>,
    pub data_access_expires_at: Option<i64>,
    pub scopes: Vec<String>,
    /// Why it is invalid, when Meta says.
    pub error: Option<String>,
    /// Response headers worth keeping (`x-app-usage`, `x-business-use-case-usage`).
    pub headers: Vec<(String, String)>,
}

/// `GET {graph}/debug_token?input_token=…&access_token={app-id}|{app-secret}`.
pub async fn debug_token(
    client: &reqwest::Client,
    graph: &str,
    token: &str,
    app_id: &str,
    app_secret: &str,
) -> Result<Debugged, Failure> {
    let app_token = format!("{app_id}|{app_secret}");
    let res = client
        .get(format!("{}/debug_token", graph.trim_end_matches('/')))
        .query(&[("input_token", token), ("access_token", app_token.as_str())])
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| Failure::Failed(crate::health::checks::describe(&e.without_url())))?;
    let status = res.status().as_u16();
    let headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-") && k.as_str().ends_with("-usage"))
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = crate::health::checks::read_body(res)
        .await
        .map_err(Failure::Failed)?;
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if !(200..300).contains(&status) {
        return Err(graph_error(status, json.as_ref()));
    }
    let data = json
        .as_ref()
        .and_then(|j| j.get("data"))
        .ok_or_else(|| Failure::Failed("the debug_token answer has no data".into()))?;
    let when = |field: &str| {
        seconds(data.get(field))
            .filter(|s| *s > 0)
            .map(|s| s * 1000)
    };
    Ok(Debugged {
        is_valid: data
            .get("is_valid")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        expires_at: when("expires_at"),
        data_access_expires_at: when("data_access_expires_at"),
        scopes: data
            .get("scopes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        error: data
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(short),
        headers,
    })
}

/// Meta: exchange the current token for a long-lived one, then ask `debug_token` for its
/// expiry and data-access expiry (the exchange answer's `expires_in` is only a fallback).
async fn meta_exchange(
    client: &reqwest::Client,
    p: &Plain,
    s: &Secrets,
    now: i64,
) -> Result<Renewed, Failure> {
    let (Some(token), Some(secret)) = (s.access_token.as_deref(), s.client_secret.as_deref())
    else {
        return Err(Failure::Terminal(
            "an access token and the app secret are needed for the exchange".into(),
        ));
    };
    let req = client.get(&p.token_url).query(&[
        ("grant_type", "fb_exchange_token"),
        ("client_id", p.client_id.as_str()),
        ("client_secret", secret),
        ("fb_exchange_token", token),
    ]);
    let (status, json) = send(req).await?;
    if !(200..300).contains(&status) {
        return Err(graph_error(status, json.as_ref()));
    }
    let json = json.ok_or_else(|| Failure::Failed("the exchange answer is not JSON".into()))?;
    let new_token = json
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Failure::Failed("the exchange answer has no access_token".into()))?
        .to_string();
    let fallback = seconds(json.get("expires_in")).map(|s| now + s * 1000);
    let graph = graph_base(&p.token_url);
    let d = debug_token(client, &graph, &new_token, &p.client_id, secret).await?;
    if !d.is_valid {
        return Err(Failure::Terminal(format!(
            "debug_token says the new token is not valid{}",
            d.error.map(|e| format!(": {e}")).unwrap_or_default()
        )));
    }
    Ok(Renewed {
        access_token: new_token,
        refresh_token: None,
        expires_at: d.expires_at.or(fallback),
        data_access_expires_at: Some(d.data_access_expires_at),
        scopes: (!d.scopes.is_empty()).then_some(d.scopes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn invalid_grant_and_code_190_are_terminal_and_the_rest_is_not() {
        let f = oauth_error(
            400,
            Some(
                &json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
            ),
        );
        assert_eq!(
            f,
            Failure::Terminal("HTTP 400: invalid_grant: Token has been expired or revoked.".into())
        );
        assert!(matches!(
            oauth_error(500, Some(&json!({"error": "internal_failure"}))),
            Failure::Failed(_)
        ));
        assert!(matches!(oauth_error(503, None), Failure::Failed(_)));
        let f = graph_error(
            400,
            Some(
                &json!({"error": {"message": "Error validating access token: Session has expired", "type": "OAuthException", "code": 190, "error_subcode": 463, "fbtrace_id": "A1"}}),
            ),
        );
        assert!(
            matches!(f, Failure::Terminal(ref t) if t.contains("190") && t.contains("Session has expired")),
            "{f:?}"
        );
        assert!(matches!(
            graph_error(
                400,
                Some(
                    &json!({"error": {"message": "Application request limit reached", "code": 4}})
                )
            ),
            Failure::Failed(_)
        ));
    }

    #[test]
    fn helpers() {
        assert_eq!(
            graph_base("https://graph.facebook.com/v25.0/oauth/access_token"),
            "https://graph.facebook.com/v25.0"
        );
        assert_eq!(seconds(Some(&json!("3599"))), Some(3599));
        assert_eq!(seconds(Some(&json!(3599))), Some(3599));
        assert_eq!(encode_form(&[("a b", "1/2&3")]), "a%20b=1%2F2%263");
    }
}
