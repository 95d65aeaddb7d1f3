//! Credential definitions: `[[credentials]]` in config and the body of `POST /api/v1/tokens`,
//! validated by one function so both name the same field (`credentials[1].token_url: …` in
//! config, `token_url: …` from the API). Nothing here touches the network or the store.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::health::monitor::Secret;

/// Which token protocol a credential speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Google OAuth2: the refresh-token grant at `oauth2.googleapis.com/token`.
    Google,
    /// Meta (Facebook): the long-lived `fb_exchange_token` exchange and `debug_token`.
    Meta,
    /// Any other OAuth2 token endpoint with the refresh-token grant.
    Oauth2,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Google, Provider::Meta, Provider::Oauth2];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::Meta => "meta",
            Provider::Oauth2 => "oauth2",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The production token endpoint; `oauth2` has none and needs `token_url`.
    pub fn default_token_url(self) -> Option<&'static str> {
        match self {
            Provider::Google => Some("https://oauth2.googleapis.com/token"),
            Provider::Meta => Some("https://graph.facebook.com/v25.0/oauth/access_token"),
            Provider::Oauth2 => None,
        }
    }
}

/// A credential as declared, before validation.
#[derive(Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialSpec {
    pub name: String,
    /// `google`, `meta` or `oauth2`.
    pub provider: String,
    /// The token endpoint. Default: Google's or Meta's production endpoint; required for
    /// `oauth2`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Where the refresh grant sends the client credentials: `body` (default, as Google wants)
    /// or `basic` (HTTP Basic, as many OAuth2 servers want).
    #[serde(default)]
    pub client_auth: Option<String>,
    /// The OAuth client id (Meta: the app id).
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub access_token: Option<Secret>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub refresh_token: Option<Secret>,
    /// When the access token expires (RFC 3339), if known.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Who authorized it (a person or team), for the Token Status tab.
    #[serde(default)]
    pub owner: Option<String>,
    /// The customer or workspace it acts for, if any.
    #[serde(default)]
    pub tenant: Option<String>,
    /// How long before expiry it counts as expiring, e.g. "24h" (default) or "3d".
    #[serde(default)]
    pub warn_before: Option<String>,
}

impl fmt::Debug for CredentialSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret fields print as *** through their own Debug.
        f.debug_struct("CredentialSpec")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .finish_non_exhaustive()
    }
}

/// How the refresh grant authenticates the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Body,
    Basic,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Body => "body",
            ClientAuth::Basic => "basic",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "body" => Some(ClientAuth::Body),
            "basic" => Some(ClientAuth::Basic),
            _ => None,
        }
    }
}

/// A validated credential.
#[derive(Clone)]
pub struct Credential {
    pub name: String,
    pub provider: Provider,
    pub token_url: String,
    pub client_auth: ClientAuth,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    /// UTC ms.
    pub expires_at: Option<i64>,
    pub scopes: Vec<String>,
    pub owner: String,
    pub tenant: String,
    pub warn_before_ms: i64,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Whether the access token renews through a refresh token (Meta's exchange renews the
    /// access token too, but its data access still runs out).
    pub fn renews_itself(&self) -> bool {
        self.provider != Provider::Meta && self.refresh_token.is_some()
    }
}

/// A refused definition: the field at fault and why (never the value of a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

pub fn invalid(field: &str, problem: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_string(),
        problem: problem.into(),
    }
}

const DEFAULT_WARN_BEFORE_MS: i64 = 24 * 3_600_000;

/// A secret given as non-empty text on one line (tokens travel in form bodies and headers).
fn secret(field: &str, value: &Option<Secret>) -> Result<Option<String>, Invalid> {
    match value {
        None => Ok(None),
        Some(s) => {
            let t = s.expose().trim();
            if t.is_empty() || t.contains(['\r', '\n', '\0']) {
                Err(invalid(field, "must be non-empty, on one line"))
            } else {
                Ok(Some(t.to_string()))
            }
        }
    }
}

/// An http(s) URL with a host and no credentials in it.
pub fn check_url(field: &str, text: &str) -> Result<String, Invalid> {
    let url = reqwest::Url::parse(text.trim())
        .map_err(|_| invalid(field, format!("{text:?} is not a URL")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(field, format!("{text:?} is not an http(s) URL")));
    }
    if url.password().is_some() || !url.username().is_empty() {
        return Err(invalid(
            field,
            "must carry no credentials; use client_id and client_secret",
        ));
    }
    // Link-local and metadata addresses (in any spelling) are refused whatever the
    // operator allows; loopback and private ones depend on the running server's policy and
    // are checked by the API and at each refresh.
    crate::net::guard::Guard::private_allowed()
        .check_url(&url)
        .map_err(|e| invalid(field, format!("destination refused: {e}")))?;
    Ok(text.trim().to_string())
}

impl CredentialSpec {
    pub fn validate(&self) -> Result<Credential, Invalid> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(invalid("name", "must be 1 to 100 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("name", "must not contain control characters"));
        }
        let provider = Provider::parse(self.provider.trim()).ok_or_else(|| {
            invalid(
                "provider",
                format!(
                    "unknown provider {:?} (known: google, meta, oauth2)",
                    self.provider
                ),
            )
        })?;
        let token_url = match (self.token_url.as_deref(), provider.default_token_url()) {
            (Some(u), _) => check_url("token_url", u)?,
            (None, Some(d)) => d.to_string(),
            (None, None) => {
                return Err(invalid(
                    "token_url",
                    "is required for oauth2 credentials: the provider's token endpoint",
                ));
            }
        };
        let client_auth = match self.client_auth.as_deref() {
            None => ClientAuth::Body,
            Some(a) => ClientAuth::parse(a)
                .ok_or_else(|| invalid("client_auth", format!("{a:?} is not body or basic")))?,
        };
        let client_id = self.client_id.trim().to_string();
        if client_id.contains(char::is_control) || client_id.len() > 500 {
            return Err(invalid("client_id", "must be at most 500 characters"));
        }
        let client_secret = secret("client_secret", &self.client_secret)?;
        let access_token = secret("access_token", &self.access_token)?;
        let refresh_token = secret("refresh_token", &self.refresh_token)?;
        if access_token.is_none() && refresh_token.is_none() {
            return Err(invalid(
                "access_token",
                "is required when there is no refresh_token",
            ));
        }
        if provider == Provider::Meta {
            // Meta has no refresh tokens: the access token itself is exchanged, and
            // debug_token is signed with the app id and secret.
            if refresh_token.is_some() {
                return Err(invalid(
                    "refresh_token",
                    "meta credentials have none; the access token is exchanged for a long-lived one",
                ));
            }
            if access_token.is_none() {
                return Err(invalid("access_token", "is required for meta credentials"));
            }
            if client_id.is_empty() {
                return Err(invalid("client_id", "is required for meta: the app id"));
            }
            if client_secret.is_none() {
                return Err(invalid(
                    "client_secret",
                    "is required for meta: the app secret",
                ));
            }
        }
        if refresh_token.is_some() && client_id.is_empty() {
            return Err(invalid(
                "client_id",
                "is required to refresh: the OAuth client id",
            ));
        }
        let expires_at = match self.expires_at.as_deref() {
            None => None,
            Some(t) => Some(
                time::OffsetDateTime::parse(
                    t.trim(),
                    &time::format_description::well_known::Rfc3339,
                )
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .map_err(|_| invalid("expires_at", format!("{t:?} is not an RFC 3339 time")))?,
            ),
        };
        let mut scopes = Vec::with_capacity(self.scopes.len());
        for (i, s) in self.scopes.iter().enumerate() {
            let s = s.trim();
            if s.is_empty() || s.contains(char::is_whitespace) || s.len() > 500 {
                return Err(invalid(
                    &format!("scopes[{i}]"),
                    "must be one scope without spaces",
                ));
            }
            scopes.push(s.to_string());
        }
        let text = |field: &str, v: &Option<String>| {
            let t = v.as_deref().unwrap_or("").trim().to_string();
            if t.len() > 200 || t.contains(char::is_control) {
                Err(invalid(field, "must be at most 200 characters on one line"))
            } else {
                Ok(t)
            }
        };
        let warn_before_ms = match self.warn_before.as_deref() {
            None => DEFAULT_WARN_BEFORE_MS,
            Some(t) => {
                let d = crate::config::ConfigDuration::parse(t)
                    .map_err(|p| invalid("warn_before", p))?
                    .0;
                if d.is_zero() || d.as_secs() > 365 * 86_400 {
                    return Err(invalid(
                        "warn_before",
                        "must be longer than zero and at most 365d",
                    ));
                }
                d.as_millis() as i64
            }
        };
        Ok(Credential {
            name: name.to_string(),
            provider,
            token_url,
            client_auth,
            client_id,
            client_secret,
            access_token,
            refresh_token,
            expires_at,
            scopes,
            owner: text("owner", &self.owner)?,
            tenant: text("tenant", &self.tenant)?,
            warn_before_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn google() -> CredentialSpec {
        CredentialSpec {
            name: "ads".into(),
            provider: "google".into(),
            client_id: "cid.apps.googleusercontent.com".into(),
            client_secret: Some(Secret("GOCSPX-hunter2".into())),
            refresh_token: Some(Secret("1//rt-hunter2".into())),
            ..Default::default()
        }
    }

    #[test]
    fn the_documented_example_credentials_validate() {
        let example = crate::config::DEFAULT_TOML;
        let start = example
            .find("# [[credentials]]")
            .expect("example credentials");
        let block: Vec<&str> = example[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.strip_prefix("# ").unwrap_or(""))
            .collect();
        #[derive(Deserialize)]
        struct Example {
            credentials: Vec<CredentialSpec>,
        }
        let parsed: Example = toml::from_str(&block.join("\n")).expect("the example parses");
        let providers: Vec<Provider> = parsed
            .credentials
            .iter()
            .map(|c| {
                c.validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", c.name))
                    .provider
            })
            .collect();
        assert_eq!(providers, Provider::ALL);
    }

    #[test]
    fn defaults_fill_in() {
        let c = google().validate().expect("valid");
        assert_eq!(c.token_url, "https://oauth2.googleapis.com/token");
        assert_eq!(c.warn_before_ms, 86_400_000);
        assert_eq!(c.client_auth, ClientAuth::Body);
        assert!(c.renews_itself());
        assert!(!format!("{c:?} {:?}", google()).contains("hunter2"));
    }

    #[test]
    fn bad_definitions_name_the_field_and_never_the_secret() {
        let cases: Vec<(CredentialSpec, &str, &str)> = vec![
            (
                CredentialSpec {
                    provider: "github".into(),
                    ..google()
                },
                "provider",
                "unknown provider",
            ),
            (
                CredentialSpec {
                    token_url: Some("not a url".into()),
                    ..google()
                },
                "token_url",
                "not a URL",
            ),
            (
                CredentialSpec {
                    token_url: Some("https://u:hunter2@auth.example.com/token".into()),
                    ..google()
                },
                "token_url",
                "no credentials",
            ),
            (
                CredentialSpec {
                    provider: "oauth2".into(),
                    ..google()
                },
                "token_url",
                "required for oauth2",
            ),
            (
                CredentialSpec {
                    refresh_token: None,
                    ..google()
                },
                "access_token",
                "no refresh_token",
            ),
            (
                CredentialSpec {
                    provider: "meta".into(),
                    access_token: Some(Secret("EAAB".into())),
                    ..google()
                },
                "refresh_token",
                "meta credentials have none",
            ),
            (
                CredentialSpec {
                    expires_at: Some("tomorrow".into()),
                    ..google()
                },
                "expires_at",
                "RFC 3339",
            ),
            (
                CredentialSpec {
                    warn_before: Some("soon".into()),
                    ..google()
                },
                "warn_before",
                "not a duration",
            ),
            (
                CredentialSpec {
                    scopes: vec!["a b".into()],
                    ..google()
                },
                "scopes[0]",
                "without spaces",
            ),
            (
                CredentialSpec {
                    client_auth: Some("jwt".into()),
                    ..google()
                },
                "client_auth",
                "body or basic",
            ),
            (
                CredentialSpec {
                    refresh_token: Some(Secret("a\nb".into())),
                    ..google()
                },
                "refresh_token",
                "one line",
            ),
        ];
        for (spec, field, why) in cases {
            let e = spec.validate().expect_err(field);
            assert_eq!(e.field, field, "{e}");
            assert!(e.problem.contains(why), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }
}
