//! Silences and maintenance windows (`alert_silences`). Both match alerts by label values
//! (`rule` matches the rule's name, `severity` its severity) over a time span. A silence holds
//! back notifications — the alert still fires and shows, marked silenced; a maintenance
//! window stops alerts from being raised at all, so planned downtime leaves no alert behind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::AlertsError;
use crate::access::audit::{self, Actor};
use crate::args;
use crate::store::Store;

type Result<T, E = AlertsError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceSpec {
    /// `silence` (default) or `maintenance`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Label → value; every one must match. At least one.
    pub matchers: BTreeMap<String, String>,
    /// UTC ms; default now.
    #[serde(default)]
    pub starts_at: Option<i64>,
    /// UTC ms, after `starts_at`.
    pub ends_at: i64,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Silence {
    pub id: i64,
    pub kind: String,
    pub matchers: BTreeMap<String, String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub matchers_json: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub comment: String,
    pub created_by: String,
    pub created_at: i64,
}
crate::from_row!(Silence {
    id,
    kind,
    matchers: skip,
    matchers_json,
    starts_at,
    ends_at,
    comment,
    created_by,
    created_at
});

impl Silence {
    pub fn active(&self, now: i64) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// Whether the silence covers an alert of `rule` (`severity`) with `labels`.
    pub fn matches(&self, rule: &str, severity: &str, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|(k, v)| match k.as_str() {
            "rule" => rule == v,
            "severity" => severity == v,
            _ => labels.get(k) == Some(v),
        })
    }
}

fn invalid(field: &str, message: &str) -> AlertsError {
    AlertsError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

pub async fn create(store: &Store, spec: &SilenceSpec, actor: &Actor, now: i64) -> Result<Silence> {
    let kind = spec.kind.clone().unwrap_or_else(|| "silence".into());
    if kind != "silence" && kind != "maintenance" {
        return Err(invalid("kind", "must be silence or maintenance"));
    }
    if spec.matchers.is_empty() {
        return Err(invalid(
            "matchers",
            "at least one label matcher (e.g. {\"integration\": \"api\"})",
        ));
    }
    if spec.matchers.len() > 32
        || spec
            .matchers
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 500)
    {
        return Err(invalid(
            "matchers",
            "at most 32, names 1–64 and values up to 500 characters",
        ));
    }
    let starts_at = spec.starts_at.unwrap_or(now);
    if spec.ends_at <= starts_at {
        return Err(invalid("ends_at", "must be after starts_at"));
    }
    if spec.ends_at <= now {
        return Err(invalid("ends_at", "is in the past"));
    }
    if spec.comment.len() > 2000 {
        return Err(invalid("comment", "at most 2000 characters"));
    }
    let matchers_json =
        serde_json::to_string(&spec.matchers).map_err(|e| AlertsError::Internal(e.to_string()))?;
    let mut tx = store.begin().await?;
    let (id,): (i64,) = tx
        .fetch_one(
            "INSERT INTO alert_silences (kind, matchers, starts_at, ends_at, comment, created_by, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            args![
                kind.as_str(),
                matchers_json.as_str(),
                starts_at,
                spec.ends_at,
                spec.comment.as_str(),
                actor.name.as_str(),
                now
            ],
        )
        .await?;
    audit::record(
        &mut tx,
        actor,
        &format!("alert_{kind}.create"),
        Some(&id.to_string()),
        Some(serde_json::json!({"matchers": spec.matchers, "ends_at": spec.ends_at})),
    )
    .await?;
    tx.commit().await?;
    Ok(Silence {
        id,
        kind,
        matchers: spec.matchers.clone(),
        matchers_json,
        starts_at,
        ends_at: spec.ends_at,
        comment: spec.comment.clone(),
        created_by: actor.name.clone(),
        created_at: now,
    })
}

/// Silences and windows not yet over, soonest ending first.
pub async fn current(store: &Store, now: i64) -> Result<Vec<Silence>> {
    let mut rows: Vec<Silence> = store
        .fetch_all(
            "SELECT id, kind, matchers AS matchers_json, starts_at, ends_at, comment, created_by, \
             created_at FROM alert_silences WHERE ends_at > $1 ORDER BY ends_at, id",
            args![now],
        )
        .await?;
    for r in &mut rows {
        r.matchers = serde_json::from_str(&r.matchers_json).unwrap_or_default();
    }
    Ok(rows)
}

/// Ends a silence now (kept for the record).
pub async fn expire(store: &Store, id: i64, actor: &Actor, now: i64) -> Result<()> {
    let mut tx = store.begin().await?;
    let n = tx
        .execute(
            "UPDATE alert_silences SET ends_at = $2 WHERE id = $1 AND ends_at > $2",
            args![id, now],
        )
        .await?;
    if n == 0 {
        return Err(AlertsError::NotFound(format!("no current silence {id}")));
    }
    audit::record(
        &mut tx,
        actor,
        "alert_silence.expire",
        Some(&id.to_string()),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
