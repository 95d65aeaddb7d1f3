//! The audit log: one row per admin action (who, what, when, from where), written in the same
//! transaction as the action so the log never claims something that was rolled back.

use serde::Serialize;

use super::Result;
use crate::args;
use crate::store::{Store, Tx, now_ms};

/// Who did something and from where; built from the request (or `cli:<user>` for the CLI).
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub client_addr: Option<String>,
}

impl Actor {
    pub fn new(name: impl Into<String>, client_addr: Option<String>) -> Self {
        Self {
            name: name.into(),
            client_addr,
        }
    }

    /// A signed-in person; the one spelling of user actors in the log.
    pub fn user(email: &str, client_addr: Option<String>) -> Self {
        Self::new(format!("user:{email}"), client_addr)
    }

    /// The local operator running a CLI command, by their OS user name.
    pub fn cli(os_user: &str) -> Self {
        Self {
            name: format!("cli:{os_user}"),
            client_addr: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// UTC milliseconds since the Unix epoch.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    /// JSON object with action-specific context.
    pub detail: Option<String>,
    pub client_addr: Option<String>,
}
crate::from_row!(AuditEntry {
    id,
    at,
    actor,
    action,
    target,
    detail,
    client_addr
});

/// Appends one entry inside the caller's transaction.
pub async fn record(
    tx: &mut Tx,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    detail: Option<serde_json::Value>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, target, detail, client_addr)
         VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            now_ms(),
            &actor.name,
            action,
            target,
            detail.map(|d| d.to_string()),
            actor.client_addr.clone()
        ],
    )
    .await?;
    Ok(())
}

/// Newest entries first; `before_id` pages backwards.
pub async fn list(store: &Store, limit: i64, before_id: Option<i64>) -> Result<Vec<AuditEntry>> {
    Ok(store
        .fetch_all(
            "SELECT id, at, actor, action, target, detail, client_addr FROM audit_log
             WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
            args![before_id, limit.clamp(1, 1000)],
        )
        .await?)
}
