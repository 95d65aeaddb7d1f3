//! Access: who may do what. Owns users (argon2id passwords, roles), server-side sessions with
//! CSRF tokens, API keys and their scopes, login and API rate limits, the encrypted secret store
//! and the audit log. HTTP handlers ask this module for a [`Principal`] and check a [`Scope`];
//! they never read these tables themselves.

pub mod audit;
pub mod keys;
pub mod ratelimit;
pub mod routes;
pub mod secrets;
pub mod sessions;
pub mod users;

use std::fmt;

use rand::RngCore;
use serde::Serialize;

use crate::store::StoreError;

/// Errors of the access boundary; `http::error` maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Deliberately vague: the client learns nothing about which part was wrong.
    #[error("authentication required")]
    Unauthenticated,
    #[error("invalid email or password")]
    BadCredentials,
    #[error("this credential lacks the {0} scope")]
    Forbidden(String),
    #[error("missing or invalid CSRF token")]
    Csrf,
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("crypto failure: {0}")]
    Crypto(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AccessError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => AccessError::Conflict(m),
            other => AccessError::Store(other),
        }
    }
}

pub type Result<T, E = AccessError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            other => Err(AccessError::Invalid(format!(
                "unknown role {other:?}; use admin or viewer"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

/// What a credential may do. `admin` implies `read`; `tenant:<customer-id>` confines a key to
/// one customer's tenant routes and implies nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Ingest,
    Read,
    Admin,
    Tenant(String),
}

impl Scope {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ingest" => Ok(Scope::Ingest),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => match other.strip_prefix("tenant:") {
                Some(id)
                    if !id.is_empty()
                        && id.len() <= 255
                        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b)) =>
                {
                    Ok(Scope::Tenant(id.to_string()))
                }
                Some(_) => Err(AccessError::Invalid(
                    "tenant scope needs a customer id of letters, digits, '_', '-', '.' or ':' (tenant:<customer-id>)".into(),
                )),
                None => Err(AccessError::Invalid(format!(
                    "unknown scope {other:?}; use ingest, read, admin or tenant:<customer-id>"
                ))),
            },
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Ingest => f.write_str("ingest"),
            Scope::Read => f.write_str("read"),
            Scope::Admin => f.write_str("admin"),
            Scope::Tenant(id) => write!(f, "tenant:{id}"),
        }
    }
}

/// The scopes of one credential, stored space-separated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(pub Vec<Scope>);

impl Scopes {
    pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Self> {
        let mut scopes: Vec<Scope> = Vec::new();
        for item in items {
            for part in item.as_ref().split([' ', ',']).filter(|p| !p.is_empty()) {
                let scope = Scope::parse(part)?;
                if !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }
        }
        if scopes.is_empty() {
            return Err(AccessError::Invalid(
                "at least one scope is required".into(),
            ));
        }
        let tenants = scopes
            .iter()
            .filter(|s| matches!(s, Scope::Tenant(_)))
            .count();
        if tenants > 0 && (tenants > 1 || scopes.len() > 1) {
            return Err(AccessError::Invalid(
                "a tenant:<customer-id> scope stands alone: a tenant key sees one customer only"
                    .into(),
            ));
        }
        Ok(Scopes(scopes))
    }

    pub fn allows(&self, needed: &Scope) -> bool {
        self.0
            .iter()
            .any(|s| s == needed || (*s == Scope::Admin && *needed == Scope::Read))
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(Scope::to_string).collect()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strings().join(" "))
    }
}

/// An authenticated caller: a signed-in person or an API key.
#[derive(Debug, Clone)]
pub enum Principal {
    User(sessions::SessionUser),
    Key(keys::KeyPrincipal),
}

impl Principal {
    pub fn scopes(&self) -> Scopes {
        match self {
            Principal::User(u) => match u.role {
                Role::Admin => Scopes(vec![Scope::Admin, Scope::Read]),
                Role::Viewer => Scopes(vec![Scope::Read]),
            },
            Principal::Key(k) => k.scopes.clone(),
        }
    }

    /// 403 unless this principal holds `needed`.
    pub fn require(&self, needed: Scope) -> Result<()> {
        if self.scopes().allows(&needed) {
            Ok(())
        } else {
            Err(AccessError::Forbidden(needed.to_string()))
        }
    }

    /// How this principal appears in the audit log.
    pub fn actor(&self) -> String {
        match self {
            Principal::User(u) => audit::Actor::user(&u.email, None).name,
            Principal::Key(k) => format!("key:{}:{}", k.id, k.name),
        }
    }

    /// Key under which the API rate limit counts this caller's requests.
    pub fn rate_key(&self) -> String {
        match self {
            Principal::User(u) => format!("u{}", u.user_id),
            Principal::Key(k) => format!("k{}", k.id),
        }
    }
}

/// `n` random bytes from the OS-seeded CSPRNG, URL-safe base64 without padding.
pub fn random_token(n: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Lower-case hex SHA-256, for high-entropy tokens (session cookies, API keys) only.
pub fn sha256_hex(data: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_imply() {
        let s = Scopes::parse_list(&["ingest", "read"]).unwrap();
        assert!(s.allows(&Scope::Read) && s.allows(&Scope::Ingest) && !s.allows(&Scope::Admin));
        let a = Scopes::parse_list(&["admin"]).unwrap();
        assert!(a.allows(&Scope::Read) && !a.allows(&Scope::Ingest));
        let t = Scopes::parse_list(&["tenant:cus_123"]).unwrap();
        assert!(t.allows(&Scope::Tenant("cus_123".into())) && !t.allows(&Scope::Read));
        assert!(Scopes::parse_list(&["tenant:a", "read"]).is_err());
        assert!(Scopes::parse_list(&["tenant:"]).is_err());
        assert!(Scopes::parse_list(&["tenant:a b"]).is_err());
        assert!(Scopes::parse_list(&["root"]).is_err());
        assert!(Scopes::parse_list::<&str>(&[]).is_err());
        assert_eq!(
            Scopes::parse_list(&["read,ingest read"])
                .unwrap()
                .to_string(),
            "read ingest"
        );
    }

    proptest::proptest! {
        #[test]
        fn scopes_round_trip_through_text(s in "ingest|read|admin|tenant:[A-Za-z0-9_.:-]{1,40}|\\PC{0,20}") {
            if let Ok(scope) = Scope::parse(&s) {
                proptest::prop_assert_eq!(scope.to_string(), s);
            }
        }
    }
}
