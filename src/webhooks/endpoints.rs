//! Webhook endpoints and notifiers: owns `webhook_endpoints`. An endpoint is a kind (a Standard
//! Webhooks `webhook`, or a notifier such as `slack` or `email`), where it sends, the kind's
//! settings, the event types it takes and its one secret, sealed with the master key (read
//! back only to send; a generated `whsec_` is shown once). Endpoints declared in `[[notifiers]]`
//! are written here at start and read-only elsewhere. Validation is here and in `notifiers`,
//! so the API and config name the same fields.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::notifiers::{Checked, Kind};
use super::signing::Secret;
use crate::access::audit::{self, Actor};
use crate::access::secrets::MasterKey;
use crate::args;
use crate::health::definition::mask_target;
use crate::store::{Store, StoreError, Tx};

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
    #[error("notifier {0:?} is declared in the config file; change it there")]
    ReadOnly(String),
    #[error("the endpoint's secret cannot be opened: {0}")]
    Sealed(String),
    #[error("writing the audit log: {0}")]
    Audit(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T, E = EndpointError> = std::result::Result<T, E>;

/// An endpoint or notifier as created through the API or declared in `[[notifiers]]`: the
/// fields every kind has, then each kind's own (see `notifiers::check` for which kind takes
/// which; a field of another kind is refused by name).
#[derive(Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub name: String,
    /// `webhook` (default), `email`, `twilio_sms`, `vonage_sms`, `slack`, `discord` or
    /// `pagerduty`.
    #[serde(default)]
    pub kind: Option<String>,
    /// `webhook`: where to POST. `slack`/`discord`: the incoming-webhook URL (a secret:
    /// shown redacted).
    #[serde(default)]
    pub url: String,
    /// Event types (`alert.firing`), `prefix.*` or `*`. Default: every type for a webhook,
    /// none for other kinds (they get what alert routes send them).
    #[serde(default)]
    pub event_types: Vec<String>,
    /// `webhook`: a `whsec_…` secret; one is generated (and returned once) when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// Most attempts a second; 0 or absent for no limit.
    #[serde(default)]
    pub rate_per_second: Option<u32>,
    /// `twilio_sms`, `vonage_sms`, `pagerduty`: the API's base URL (tests and proxies).
    #[serde(default)]
    pub api_base: Option<String>,
    /// `twilio_sms`: `AC…`.
    #[serde(default)]
    pub account_sid: Option<String>,
    /// `twilio_sms`: the auth token (secret).
    #[serde(default)]
    pub auth_token: Option<String>,
    /// `twilio_sms`: `MG…`, instead of `from`.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// `twilio_sms`, `vonage_sms`: the sender; `email`: the From address.
    #[serde(default)]
    pub from: Option<String>,
    /// SMS kinds: one E.164 number; `email`: one address or a list.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub to: Option<super::notifiers::Recipients>,
    /// `vonage_sms`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// `vonage_sms` (secret).
    #[serde(default)]
    pub api_secret: Option<String>,
    /// `pagerduty`: the Events API v2 integration key (secret).
    #[serde(default)]
    pub routing_key: Option<String>,
    /// `email`: the SMTP server.
    #[serde(default)]
    pub host: Option<String>,
    /// `email`: default 587 (starttls), 465 (tls), 25 (none).
    #[serde(default)]
    pub port: Option<u16>,
    /// `email`: `starttls` (default), `tls` (implicit) or `none`.
    #[serde(default)]
    pub tls: Option<String>,
    /// `email`.
    #[serde(default)]
    pub username: Option<String>,
    /// `email`: the SMTP password (secret).
    #[serde(default)]
    pub password: Option<String>,
    /// `email`: a PEM file of extra CA certificates to trust (a private relay).
    #[serde(default)]
    pub ca_file: Option<String>,
}

impl std::fmt::Debug for EndpointSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("EndpointSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("event_types", &self.event_types)
            .field("secret", &redacted(&self.secret))
            .field("auth_token", &redacted(&self.auth_token))
            .field("api_secret", &redacted(&self.api_secret))
            .field("routing_key", &redacted(&self.routing_key))
            .field("password", &redacted(&self.password))
            .finish_non_exhaustive()
    }
}

/// An endpoint as listed (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Endpoint {
    pub id: i64,
    pub name: String,
    /// The notifier kind (`webhook` for plain endpoints).
    pub kind: String,
    /// Where requests go, as shown: Slack and Discord URLs are secrets and shown redacted;
    /// a webhook's URL with its user info, token-like path segments and credential query
    /// values (`token`, `key`, `secret`, …) masked as `********`, for admins too.
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(skip)]
    pub event_types_json: String,
    /// The kind's non-secret fields.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    #[serde(skip)]
    pub settings_json: String,
    /// `config` (declared in the config file: read-only here) or `api`.
    pub source: String,
    pub rate_per_second: i64,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<i64>,
    pub last_success_at: Option<i64>,
}
crate::from_row!(Endpoint {
    id,
    name,
    kind,
    url,
    event_types: skip,
    event_types_json,
    settings: skip,
    settings_json,
    source,
    rate_per_second,
    enabled,
    disabled_reason,
    failing_since,
    last_success_at
});

fn seal_name(id_name: &str) -> String {
    format!("webhook-endpoint:{id_name}")
}

/// What validation gives: the kind's checked fields, the event types and the secret text to
/// seal (a generated `whsec_` for a webhook without one).
struct Valid {
    checked: Checked,
    types: Vec<String>,
    secret: String,
    generated: Option<Secret>,
}

impl EndpointSpec {
    /// Checks every field, naming the first at fault.
    fn validate(&self) -> Result<Valid> {
        let invalid = |field, problem: &str| EndpointError::Invalid {
            field,
            problem: problem.into(),
        };
        let name = self.name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(invalid("name", "give 1 to 100 printable characters"));
        }
        let checked = super::notifiers::check(self)?;
        let types = if !self.event_types.is_empty() {
            self.event_types.clone()
        } else if checked.kind == Kind::Webhook {
            vec!["*".to_string()]
        } else {
            Vec::new()
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
        let (secret, generated) = match checked.kind {
            Kind::Webhook => {
                let secret = match &checked.secret {
                    Some(text) => {
                        Secret::parse(text).map_err(|e| invalid("secret", &e.to_string()))?
                    }
                    None => Secret::generate(),
                };
                (secret.expose(), Some(secret))
            }
            _ => (checked.secret.clone().unwrap_or_default(), None),
        };
        Ok(Valid {
            checked,
            types,
            secret,
            generated,
        })
    }

    /// Validation alone, for the config file (errors name the field).
    pub fn check(&self) -> Result<()> {
        self.validate().map(|_| ())
    }
}

/// Creates an endpoint, with an audit row; returns its id and, for a webhook, its signing
/// secret (to show once).
pub async fn create(
    store: &Store,
    key: &MasterKey,
    spec: &EndpointSpec,
    actor: &Actor,
    now: i64,
) -> Result<(i64, Option<Secret>)> {
    let valid = spec.validate()?;
    let name = spec.name.trim();
    let mut tx = store.begin().await?;
    let inserted = insert(&mut tx, key, spec, &valid, "api", now).await;
    let id = match inserted {
        Ok(id) => id,
        Err(EndpointError::Store(StoreError::Conflict(_))) => {
            return Err(EndpointError::Taken(name.to_string()));
        }
        Err(e) => return Err(e),
    };
    audit::record(
        &mut tx,
        actor,
        "webhook_endpoint.create",
        Some(&format!("webhook_endpoint:{id}:{name}")),
        Some(
            serde_json::json!({"url": mask_target(&valid.checked.display_url),
            "kind": valid.checked.kind.as_str()}),
        ),
    )
    .await
    .map_err(|e| EndpointError::Audit(e.to_string()))?;
    tx.commit().await?;
    Ok((id, valid.generated))
}

fn sealed(key: &MasterKey, name: &str, secret: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    key.seal(&seal_name(name), secret.as_bytes())
        .map_err(|e| EndpointError::Sealed(e.to_string()))
}

async fn insert(
    tx: &mut Tx,
    key: &MasterKey,
    spec: &EndpointSpec,
    valid: &Valid,
    source: &str,
    now: i64,
) -> Result<i64> {
    let name = spec.name.trim();
    let (nonce, sealed) = sealed(key, name, &valid.secret)?;
    let Checked {
        kind,
        display_url,
        settings,
        ..
    } = &valid.checked;
    let (id,): (i64,) = tx
        .fetch_one(
            "INSERT INTO webhook_endpoints (name, kind, url, settings, source, secret_nonce,              secret_sealed, event_types, rate_per_second, enabled, created_at, updated_at)              VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10) RETURNING id",
            args![
                name,
                kind.as_str(),
                display_url.as_str(),
                settings.to_string(),
                source,
                nonce,
                sealed,
                types_json(&valid.types),
                i64::from(spec.rate_per_second.unwrap_or(0)),
                now
            ],
        )
        .await?;
    Ok(id)
}

fn types_json(types: &[String]) -> String {
    serde_json::to_string(types).unwrap_or_else(|_| "[]".into())
}

/// Makes the config-declared notifiers exactly `specs`: new ones added, changed ones updated
/// in place (their deliveries and history kept), ones gone from the file deleted. An endpoint
/// created through the API may not share a declared one's name.
pub async fn sync_config(store: &Store, key: &MasterKey, specs: &[EndpointSpec]) -> Result<()> {
    let mut tx = store.begin().await?;
    let existing: Vec<(i64, String, String)> = tx
        .fetch_all("SELECT id, name, source FROM webhook_endpoints", args![])
        .await?;
    let now = crate::store::now_ms();
    for spec in specs {
        let valid = spec.validate()?;
        let name = spec.name.trim();
        match existing.iter().find(|(_, n, _)| n == name) {
            Some((_, _, source)) if source != "config" => {
                return Err(EndpointError::Taken(format!(
                    "{name} (declared in the config, and created through the API)"
                )));
            }
            Some((id, _, _)) => {
                let (nonce, sealed) = sealed(key, name, &valid.secret)?;
                tx.execute(
                    "UPDATE webhook_endpoints SET kind = $2, url = $3, settings = $4,                      secret_nonce = $5, secret_sealed = $6, event_types = $7,                      rate_per_second = $8, updated_at = $9 WHERE id = $1",
                    args![
                        *id,
                        valid.checked.kind.as_str(),
                        valid.checked.display_url.as_str(),
                        valid.checked.settings.to_string(),
                        nonce,
                        sealed,
                        types_json(&valid.types),
                        i64::from(spec.rate_per_second.unwrap_or(0)),
                        now
                    ],
                )
                .await?;
            }
            None => {
                insert(&mut tx, key, spec, &valid, "config", now).await?;
            }
        }
    }
    for (id, name, source) in existing {
        if source == "config" && !specs.iter().any(|s| s.name.trim() == name) {
            delete_rows(&mut tx, id).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn delete_rows(tx: &mut Tx, id: i64) -> Result<()> {
    for sql in [
        "DELETE FROM webhook_attempts WHERE delivery_id IN \
         (SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)",
        "DELETE FROM webhook_deliveries WHERE endpoint_id = $1",
        "DELETE FROM webhook_endpoints WHERE id = $1",
    ] {
        tx.execute(sql, args![id]).await?;
    }
    Ok(())
}

/// Deletes an endpoint with its deliveries and their attempts, with an audit row. Endpoints
/// declared in the config file are refused: the next start would put them back.
pub async fn delete(store: &Store, id: i64, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    let head: Option<(String, String)> = tx
        .fetch_optional(
            "SELECT name, source FROM webhook_endpoints WHERE id = $1",
            args![id],
        )
        .await?;
    let Some((name, source)) = head else {
        return Err(EndpointError::NotFound(id));
    };
    if source == "config" {
        return Err(EndpointError::ReadOnly(name));
    }
    delete_rows(&mut tx, id).await?;
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

const COLUMNS: &str = "id, name, kind, url, event_types AS event_types_json, \
     settings AS settings_json, source, rate_per_second, enabled <> 0 AS enabled, \
     disabled_reason, failing_since, last_success_at";

fn finish(mut e: Endpoint) -> Endpoint {
    e.event_types = serde_json::from_str(&e.event_types_json).unwrap_or_default();
    e.settings = serde_json::from_str(&e.settings_json).unwrap_or_default();
    e
}

/// The endpoint as people and keys see it, admins included: its URL masked as monitors'
/// targets are (`health::definition::mask_target`), since a webhook URL often carries its
/// receiver's credential (user info, a path token, `?token=`) and endpoints are listed to
/// every reader. Endpoints are never edited, only created and deleted, so no form needs the
/// URL back; the worker reads it whole through [`for_sending`].
fn shown(mut e: Endpoint) -> Endpoint {
    e.url = mask_target(&e.url);
    e
}

/// Every endpoint, by name, as shown ([`shown`]).
pub async fn list(store: &Store) -> Result<Vec<Endpoint>> {
    let rows: Vec<Endpoint> = store
        .fetch_all_assembled(
            format!("SELECT {COLUMNS} FROM webhook_endpoints ORDER BY name"),
            args![],
        )
        .await?;
    Ok(rows.into_iter().map(finish).map(shown).collect())
}

/// One endpoint, as shown ([`shown`]).
pub async fn get(store: &Store, id: i64) -> Result<Endpoint> {
    let rows: Vec<Endpoint> = store
        .fetch_all_assembled(
            format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1"),
            args![id],
        )
        .await?;
    rows.into_iter()
        .next()
        .map(finish)
        .map(shown)
        .ok_or(EndpointError::NotFound(id))
}

/// The ids of the endpoints (notifiers) named `names`, in that order, inside the caller's
/// transaction: what an alert route resolves before `queue::enqueue_to`. A name with no
/// endpoint is the error, so a route to a deleted notifier is noticed.
pub async fn ids_by_name(tx: &mut Tx, names: &[String]) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        let row: Option<(i64,)> = tx
            .fetch_optional(
                "SELECT id FROM webhook_endpoints WHERE name = $1",
                args![name.trim()],
            )
            .await?;
        match row {
            Some((id,)) => ids.push(id),
            None => {
                return Err(EndpointError::Invalid {
                    field: "notifiers",
                    problem: format!("no notifier named {name:?}"),
                });
            }
        }
    }
    Ok(ids)
}

/// The endpoints `ids` with their secrets opened (a `whsec_…`, a token, a password or a chat
/// webhook URL, by kind), for the worker.
pub async fn for_sending(
    store: &Store,
    key: &MasterKey,
    ids: &[i64],
) -> Result<Vec<(Endpoint, String)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    struct Row {
        endpoint: Endpoint,
        secret_nonce: Vec<u8>,
        secret_sealed: Vec<u8>,
    }
    crate::from_row!(Row {
        endpoint: flatten,
        secret_nonce,
        secret_sealed
    });
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
        out.push((finish(r.endpoint), text));
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
