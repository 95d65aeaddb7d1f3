//! Server-side sessions. The cookie holds 256 random bits; the table holds only their SHA-256,
//! the user, a per-session CSRF token and an absolute expiry.

use std::time::Duration;

use subtle::ConstantTimeEq;

use super::audit::{self, Actor};
use super::{AccessError, Result, Role, random_token, sha256_hex};
use crate::args;
use crate::events::{Bus, Revoked};
use crate::store::{Store, now_ms};

pub const COOKIE_NAME: &str = "opsdeck_session";

/// The signed-in person behind a request.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub user_id: i64,
    pub email: String,
    pub role: Role,
    pub csrf_token: String,
    pub(crate) id_hash: String,
}

impl SessionUser {
    /// The session's identity as the table and revocations name it (the SHA-256 of the
    /// cookie, not the cookie).
    pub fn session_id(&self) -> &str {
        &self.id_hash
    }
}

impl SessionUser {
    /// Constant-time comparison of a submitted CSRF token with this session's.
    pub fn check_csrf(&self, submitted: &str) -> Result<()> {
        if !submitted.is_empty()
            && bool::from(submitted.as_bytes().ct_eq(self.csrf_token.as_bytes()))
        {
            Ok(())
        } else {
            Err(AccessError::Csrf)
        }
    }
}

struct SessionRow {
    user_id: i64,
    email: String,
    role: String,
    csrf_token: String,
}
crate::from_row!(SessionRow {
    user_id,
    email,
    role,
    csrf_token
});

/// Creates a session for `user_id` and returns the cookie value (shown to nobody else).
pub async fn create(
    store: &Store,
    user_id: i64,
    email: &str,
    ttl: Duration,
    actor_addr: Option<String>,
    user_agent: Option<String>,
) -> Result<String> {
    let cookie = random_token(32);
    let now = now_ms();
    let expires = now.saturating_add(ttl.as_millis() as i64);
    let mut tx = store.begin().await?;
    tx.execute(
        "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at, client_addr, user_agent)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        args![
            sha256_hex(&cookie),
            user_id,
            random_token(32),
            now,
            expires,
            actor_addr.clone(),
            user_agent.map(|ua| ua.chars().take(256).collect::<String>())
        ],
    )
    .await?;
    let actor = Actor::user(email, actor_addr);
    audit::record(&mut tx, &actor, "session.sign_in", Some(email), None).await?;
    tx.commit().await?;
    Ok(cookie)
}

/// Resolves a cookie value to its live session, if any.
pub async fn lookup(store: &Store, cookie: &str) -> Result<Option<SessionUser>> {
    if cookie.is_empty() || cookie.len() > 128 {
        return Ok(None);
    }
    let id_hash = sha256_hex(cookie);
    let row: Option<SessionRow> = store
        .fetch_optional(
            "SELECT s.user_id, u.email, u.role, s.csrf_token
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id_hash = $1 AND s.expires_at > $2",
            args![&id_hash, now_ms()],
        )
        .await?;
    row.map(|r| {
        Ok(SessionUser {
            user_id: r.user_id,
            email: r.email,
            role: Role::parse(&r.role)?,
            csrf_token: r.csrf_token,
            id_hash,
        })
    })
    .transpose()
}

/// Ends one session (sign-out), and with it the streams it opened (announced on `bus`).
pub async fn destroy(store: &Store, bus: &Bus, session: &SessionUser, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    tx.execute(
        "DELETE FROM sessions WHERE id_hash = $1",
        args![&session.id_hash],
    )
    .await?;
    audit::record(
        &mut tx,
        actor,
        "session.sign_out",
        Some(&session.email),
        None,
    )
    .await?;
    tx.commit().await?;
    bus.revoke(Revoked::Session(session.id_hash.clone()));
    Ok(())
}

/// Whether the session `session_id` (see [`SessionUser::session_id`]) is still live: not
/// signed out, not expired, its user not deleted. Long-lived streams re-check this.
pub async fn is_live(store: &Store, session_id: &str) -> Result<bool> {
    let row: Option<(i64,)> = store
        .fetch_optional(
            "SELECT s.user_id FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id_hash = $1 AND s.expires_at > $2",
            args![session_id, now_ms()],
        )
        .await?;
    Ok(row.is_some())
}

/// One step of the prune job: deletes up to `batch` expired sessions, returns how many.
pub async fn prune_expired(store: &Store, batch: i64) -> Result<u64> {
    Ok(store
        .execute(
            "DELETE FROM sessions WHERE id_hash IN
               (SELECT id_hash FROM sessions WHERE expires_at <= $1 LIMIT $2)",
            args![now_ms(), batch],
        )
        .await?)
}
