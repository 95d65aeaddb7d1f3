//! Webhook endpoints: owns `webhook_endpoints`. An endpoint is a URL, the event types it takes
//! and its signing secret, sealed with the master key (read back only to sign, shown once when
//! generated). Validation is here, so the API and config name the same fields.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::signing::Secret;
use crate::access::audit::{self, Actor};
use crate::access::secrets::MasterKey;
use crate::args;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("no webhook endpoint {0}")]
    NotFound(i64),
    #[error("a webhook endpoint named {0:?} already exists")]
    Taken(String),
    #[error("the endpoint's secret cannot be opened: {0}")]
    Sealed(String),
    #[error("writing the audit log: {0}")]
    Audit(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T, E = EndpointError> = std::result::Result<T, E>;

/// An endpoint as created or edited.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub name: String,
    pub url: String,
    /// Event types (`alert.firing`), `prefix.*` or `*`; default every type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// A `whsec_…` secret; one is generated (and returned once) when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// Most attempts a second; 0 or absent for no limit.
    #[serde(default)]
    pub rate_per_second: Option<u32>,
}

/// An endpoint as listed (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Endpoint {
    pub id: i64,
    pub name: String,
    pub url: String,
    #[sqlx(skip)]
    pub event_types: Vec<String>,
    #[serde(skip)]
    pub event_types_json: String,
    pub rate_per_second: i64,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<i64>,
    pub last_success_at: Option<i64>,
}

fn seal_name(id_name: &str) -> String {
    format!("webhook-endpoint:{id_name}")
}

impl EndpointSpec {
    /// Checks every field, naming the first at fault; returns the secret to store.
    fn validate(&self) -> Result<(Vec<String>, Secret)> {
        let invalid = |field, problem: &str| EndpointError::Invalid {
            field,
            problem: problem.into(),
        };
        let name = self.name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(invalid("name", "give 1 to 100 printable characters"));
        }
        let url = reqwest::Url::parse(self.url.trim())
            .map_err(|e| invalid("url", &format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(invalid("url", "must be an http(s) URL with a host"));
        }
        if self.url.len() > 2000 {
            return Err(invalid("url", "at most 2000 characters"));
        }
        let types = if self.event_types.is_empty() {
            vec!["*".to_string()]
        } else {
            self.event_types.clone()
        };
        if types.len() > 50 {
            return Err(invalid("event_types", "at most 50"));
        }
        for t in &types {
            let plain = t.strip_suffix(".*").unwrap_or(t);
            if t != "*" && !super::queue::valid_type(plain) {
                return Err(invalid(
                    "event_types",
                    &format!("{t:?} is not an event type, `prefix.*` or `*`"),
                ));
            }
        }
        let secret = match &self.secret {
            Some(text) => Secret::parse(text).map_err(|e| invalid("secret", &e.to_string()))?,
            None => Secret::generate(),
        };
        Ok((types, secret))
    }
}

/// Creates an endpoint, with an audit row; returns its id and its secret (to show once).
pub async fn create(
    store: &Store,
    key: &MasterKey,
    spec: &EndpointSpec,
    actor: &Actor,
    now: i64,
) -> Result<(i64, Secret)> {
    let (types, secret) = spec.validate()?;
    let name = spec.name.trim();
    let (nonce, sealed) = key
        .seal(&seal_name(name), secret.expose().as_bytes())
        .map_err(|e| EndpointError::Sealed(e.to_string()))?;
    let types = serde_json::to_string(&types).unwrap_or_else(|_| "[\"*\"]".into());
    let mut tx = store.begin().await?;
    let inserted: std::result::Result<(i64,), StoreError> = tx
        .fetch_one(
            "INSERT INTO webhook_endpoints (name, url, secret_nonce, secret_sealed, event_types, \
             rate_per_second, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) RETURNING id",
            args![
                name,
                spec.url.trim(),
                nonce,
                sealed,
                types,
                i64::from(spec.rate_per_second.unwrap_or(0)),
                now
            ],
        )
        .await;
    let id = match inserted {
        Ok((id,)) => id,
        Err(StoreError::Conflict(_)) => return Err(EndpointError::Taken(name.to_string())),
        Err(e) => return Err(e.into()),
    };
    audit::record(
        &mut tx,
        actor,
        "webhook_endpoint.create",
        Some(&format!("webhook_endpoint:{id}:{name}")),
        Some(serde_json::json!({"url": spec.url.trim()})),
    )
    .await
    .map_err(|e| EndpointError::Audit(e.to_string()))?;
    tx.commit().await?;
    Ok((id, secret))
}

/// Deletes an endpoint with its deliveries and their attempts, with an audit row.
pub async fn delete(store: &Store, id: i64, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    let name: Option<(String,)> = tx
        .fetch_optional(
            "SELECT name FROM webhook_endpoints WHERE id = $1",
            args![id],
        )
        .await?;
    let Some((name,)) = name else {
        return Err(EndpointError::NotFound(id));
    };
    for sql in [
        "DELETE FROM webhook_attempts WHERE delivery_id IN \
         (SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)",
        "DELETE FROM webhook_deliveries WHERE endpoint_id = $1",
        "DELETE FROM webhook_endpoints WHERE id = $1",
    ] {
        tx.execute(sql, args![id]).await?;
    }
    audit::record(
        &mut tx,
        actor,
        "webhook_endpoint.delete",
        Some(&format!("webhook_endpoint:{id}:{name}")),
        None,
    )
    .await
    .map_err(|e| EndpointError::Audit(e.to_string()))?;
    tx.commit().await?;
    Ok(())
}

const COLUMNS: &str = "id, name, url, event_types AS event_types_json, rate_per_second, \
     enabled <> 0 AS enabled, disabled_reason, failing_since, last_success_at";

fn finish(mut e: Endpoint) -> Endpoint {
    e.event_types = serde_json::from_str(&e.event_types_json).unwrap_or_default();
    e
}

/// Every endpoint, by name.
pub async fn list(store: &Store) -> Result<Vec<Endpoint>> {
    let rows: Vec<Endpoint> = store
        .fetch_all_assembled(
            format!("SELECT {COLUMNS} FROM webhook_endpoints ORDER BY name"),
            args![],
        )
        .await?;
    Ok(rows.into_iter().map(finish).collect())
}

/// The endpoints `ids` with their secrets opened, for the worker.
pub async fn for_sending(
    store: &Store,
    key: &MasterKey,
    ids: &[i64],
) -> Result<Vec<(Endpoint, Secret)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        endpoint: Endpoint,
        secret_nonce: Vec<u8>,
        secret_sealed: Vec<u8>,
    }
    // Integers only, so inlining them is safe.
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let rows: Vec<Row> = store
        .fetch_all_assembled(
            format!(
                "SELECT {COLUMNS}, secret_nonce, secret_sealed FROM webhook_endpoints \
                 WHERE id IN ({list})"
            ),
            args![],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let plain = key
            .open(
                &seal_name(&r.endpoint.name),
                &r.secret_nonce,
                &r.secret_sealed,
            )
            .map_err(|e| EndpointError::Sealed(e.to_string()))?;
        let text = String::from_utf8_lossy(plain.expose()).into_owned();
        let secret = Secret::parse(&text).map_err(|e| EndpointError::Sealed(e.to_string()))?;
        out.push((finish(r.endpoint), secret));
    }
    Ok(out)
}

/// Turns an endpoint on again (after a fix), clearing why it was off and its failing streak.
pub async fn enable(store: &Store, id: i64, now: i64) -> Result<()> {
    let n = store
        .execute(
            "UPDATE webhook_endpoints SET enabled = 1, disabled_reason = NULL, \
             failing_since = NULL, updated_at = $2 WHERE id = $1",
            args![id, now],
        )
        .await?;
    if n == 0 {
        return Err(EndpointError::NotFound(id));
    }
    Ok(())
}
