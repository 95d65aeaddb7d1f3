//! People who sign in: email, argon2id password hash and role; first-start admin bootstrap.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use serde::Serialize;

use super::audit::{self, Actor};
use super::{AccessError, Result, Role, random_token};
use crate::args;
use crate::events::{Bus, Revoked};
use crate::store::{Store, now_ms};

pub const MIN_PASSWORD_LEN: usize = 10;
const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub role: Role,
    pub created_at: i64,
}

struct UserRow {
    id: i64,
    email: String,
    role: String,
    created_at: i64,
    password_hash: String,
}
crate::from_row!(UserRow {
    id,
    email,
    role,
    created_at,
    password_hash
});

impl UserRow {
    fn into_user(self) -> Result<User> {
        Ok(User {
            id: self.id,
            email: self.email,
            role: Role::parse(&self.role)?,
            created_at: self.created_at,
        })
    }
}

/// Lower-cases and checks an email address enough to catch typos; delivery is not our concern.
pub fn normalize_email(raw: &str) -> Result<String> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(AccessError::Invalid(format!(
            "{raw:?} is not an email address"
        )))
    }
}

fn check_password(password: &str) -> Result<()> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(AccessError::Invalid(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(AccessError::Invalid(format!(
            "password must be at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// argon2id with the crate's default (OWASP-recommended) parameters. CPU-heavy: callers in async
/// code run it through `spawn_blocking`.
pub fn hash_password(password: &str) -> Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AccessError::Crypto(e.to_string()))
}

fn verify_hash(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

async fn hash_blocking(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| AccessError::Crypto(e.to_string()))?
}

pub async fn create(
    store: &Store,
    email: &str,
    password: &str,
    role: Role,
    actor: &Actor,
) -> Result<User> {
    let email = normalize_email(email)?;
    check_password(password)?;
    let hash = hash_blocking(password.to_string()).await?;
    let now = now_ms();
    let mut tx = store.begin().await?;
    let (id,): (i64,) = tx
        .fetch_one(
            "INSERT INTO users (email, password_hash, role, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $4) RETURNING id",
            args![&email, hash, role.as_str(), now],
        )
        .await
        .map_err(|e| match AccessError::from(e) {
            AccessError::Conflict(_) => {
                AccessError::Conflict(format!("a user with email {email} already exists"))
            }
            other => other,
        })?;
    audit::record(
        &mut tx,
        actor,
        "user.create",
        Some(&email),
        Some(serde_json::json!({"role": role.as_str()})),
    )
    .await?;
    tx.commit().await?;
    Ok(User {
        id,
        email,
        role,
        created_at: now,
    })
}

/// Sets a new password and signs the user out everywhere, ending the streams their sessions
/// opened (announced on `bus`).
pub async fn set_password(
    store: &Store,
    bus: &Bus,
    email: &str,
    password: &str,
    actor: &Actor,
) -> Result<()> {
    let email = normalize_email(email)?;
    check_password(password)?;
    let hash = hash_blocking(password.to_string()).await?;
    let mut tx = store.begin().await?;
    let row: Option<(i64,)> = tx
        .fetch_optional(
            "UPDATE users SET password_hash = $1, updated_at = $2 WHERE email = $3 RETURNING id",
            args![hash, now_ms(), &email],
        )
        .await?;
    let (id,) = row.ok_or_else(|| AccessError::NotFound(format!("user {email}")))?;
    tx.execute("DELETE FROM sessions WHERE user_id = $1", args![id])
        .await?;
    audit::record(&mut tx, actor, "user.password_change", Some(&email), None).await?;
    tx.commit().await?;
    bus.revoke(Revoked::User(id));
    Ok(())
}

/// Removes a user and ends the streams their sessions opened (announced on `bus`); the last
/// admin cannot be removed, so opsdeck is never locked.
pub async fn delete(store: &Store, bus: &Bus, id: i64, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    // Take the admin rows (PostgreSQL) or the write lock (SQLite) before counting, so two admins
    // removing each other at once cannot both see "another admin remains".
    tx.execute(
        "UPDATE users SET updated_at = updated_at WHERE role = 'admin'",
        args![],
    )
    .await?;
    let row: Option<UserRow> = tx
        .fetch_optional(
            "SELECT id, email, role, created_at, password_hash FROM users WHERE id = $1",
            args![id],
        )
        .await?;
    let user = row
        .ok_or_else(|| AccessError::NotFound(format!("user {id}")))?
        .into_user()?;
    if user.role == Role::Admin {
        let (admins,): (i64,) = tx
            .fetch_one("SELECT COUNT(*) FROM users WHERE role = 'admin'", args![])
            .await?;
        if admins <= 1 {
            return Err(AccessError::Conflict("cannot remove the last admin".into()));
        }
    }
    tx.execute("DELETE FROM users WHERE id = $1", args![id])
        .await?;
    audit::record(&mut tx, actor, "user.delete", Some(&user.email), None).await?;
    tx.commit().await?;
    bus.revoke(Revoked::User(id));
    Ok(())
}

pub async fn list(store: &Store) -> Result<Vec<User>> {
    let rows: Vec<UserRow> = store
        .fetch_all(
            "SELECT id, email, role, created_at, '' AS password_hash FROM users ORDER BY email",
            args![],
        )
        .await?;
    rows.into_iter().map(UserRow::into_user).collect()
}

pub async fn count(store: &Store) -> Result<i64> {
    let (n,): (i64,) = store
        .fetch_one("SELECT COUNT(*) FROM users", args![])
        .await?;
    Ok(n)
}

/// Checks an email/password pair. Unknown emails still pay for one hash verification so that
/// response time does not reveal which accounts exist.
pub async fn verify_login(store: &Store, email: &str, password: &str) -> Result<User> {
    // A real hash with the same parameters, so the unknown-email path costs the same.
    static DUMMY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| hash_password("opsdeck-dummy-password").unwrap_or_default());
    let email = normalize_email(email).unwrap_or_default();
    let row: Option<UserRow> = store
        .fetch_optional(
            "SELECT id, email, role, created_at, password_hash FROM users WHERE email = $1",
            args![&email],
        )
        .await?;
    let hash = row
        .as_ref()
        .map_or_else(|| DUMMY.clone(), |r| r.password_hash.clone());
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || verify_hash(&password, &hash))
        .await
        .map_err(|e| AccessError::Crypto(e.to_string()))?;
    match row {
        Some(r) if ok => r.into_user(),
        _ => Err(AccessError::BadCredentials),
    }
}

/// Result of the first-start check.
pub enum Bootstrap {
    /// Users already exist; nothing was done.
    Existing,
    /// An admin was created with the password the operator supplied.
    Created { email: String },
    /// An admin was created with a generated password, to be shown once.
    Generated { email: String, password: String },
}

/// On a store without users, creates the first admin from the given email/password, generating
/// a password when none is given.
pub async fn bootstrap_admin(
    store: &Store,
    email: Option<&str>,
    password: Option<&str>,
) -> Result<Bootstrap> {
    if count(store).await? > 0 {
        return Ok(Bootstrap::Existing);
    }
    let email = email.unwrap_or("admin@localhost.localdomain");
    let actor = Actor::new("system:bootstrap", None);
    match password {
        Some(pw) => {
            let user = create(store, email, pw, Role::Admin, &actor).await?;
            Ok(Bootstrap::Created { email: user.email })
        }
        None => {
            let pw = random_token(15);
            let user = create(store, email, &pw, Role::Admin, &actor).await?;
            Ok(Bootstrap::Generated {
                email: user.email,
                password: pw,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@example",
            "ada@.com",
            "a da@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_hash("correct horse battery", &h));
        assert!(!verify_hash("wrong horse battery", &h));
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(check_password("short").is_err());
        assert!(check_password("long enough pw").is_ok());
    }
}
