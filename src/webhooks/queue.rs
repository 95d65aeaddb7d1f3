//! The durable queue of outgoing deliveries: owns `webhook_messages`, `webhook_deliveries` and
//! `webhook_attempts`. A message is stored with one delivery per subscribed endpoint inside
//! the caller's transaction, so whatever produced it (an alert firing, a payment failing) and
//! its notifications commit together. Workers claim due deliveries by writing a lease on them
//! in one statement: on SQLite the statement runs alone, and on PostgreSQL a second claimer
//! blocked on the same row re-checks the lease condition once the first commits and skips it,
//! so one attempt is never made by two instances.

use serde_json::Value;

use crate::args;
use crate::store::{Store, StoreError, Tx};
use crate::usage::quota::rfc3339;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

type Result<T, E = QueueError> = std::result::Result<T, E>;

/// Event types are dotted lowercase names (`alert.firing`, `payment.failed`).
pub fn valid_type(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 100
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && !kind.starts_with('.')
        && !kind.ends_with('.')
}

/// Whether an endpoint subscribed to `patterns` (`*`, an exact type, or `prefix.*`) takes
/// messages of type `kind`.
pub fn subscribed(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == kind
            || p.strip_suffix(".*").is_some_and(|prefix| {
                kind.strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with('.'))
            })
    })
}

/// The body every endpoint receives for a message: `{type, timestamp, data}`.
pub fn body(kind: &str, at: i64, data: &Value) -> String {
    serde_json::json!({"type": kind, "timestamp": rfc3339(at), "data": data}).to_string()
}

/// Stores a message of type `kind` and a delivery of it to every enabled endpoint subscribed
/// to the type, due at once, inside `tx`; returns the message id (`msg_…`). The message is
/// kept even when no endpoint takes it, so it can be replayed to one added later.
pub async fn enqueue(tx: &mut Tx, kind: &str, data: &Value, now: i64) -> Result<String> {
    enqueue_with(tx, kind, data, now, &[]).await
}

/// [`enqueue`], plus a delivery to each of `also` (a notifier route) whatever it subscribed
/// to; an endpoint both subscribed and routed gets the message once.
pub async fn enqueue_with(
    tx: &mut Tx,
    kind: &str,
    data: &Value,
    now: i64,
    also: &[i64],
) -> Result<String> {
    let id = add_message(tx, kind, data, now).await?;
    for endpoint in also {
        add_delivery(tx, &id, *endpoint, now).await?;
    }
    let endpoints: Vec<(i64, String)> = tx
        .fetch_all(
            "SELECT id, event_types FROM webhook_endpoints WHERE enabled = 1",
            args![],
        )
        .await?;
    for (endpoint, types) in endpoints {
        let patterns: Vec<String> = serde_json::from_str(&types).unwrap_or_default();
        if subscribed(&patterns, kind) {
            add_delivery(tx, &id, endpoint, now).await?;
        }
    }
    Ok(id)
}

/// Stores a message of type `kind` with a delivery to each of `endpoints` (a notifier route:
/// the endpoints named, whatever their subscriptions), inside `tx`; returns the message id.
/// A disabled endpoint still gets its delivery, which then fails visibly instead of vanishing.
pub async fn enqueue_to(
    tx: &mut Tx,
    kind: &str,
    data: &Value,
    now: i64,
    endpoints: &[i64],
) -> Result<String> {
    let id = add_message(tx, kind, data, now).await?;
    for endpoint in endpoints {
        add_delivery(tx, &id, *endpoint, now).await?;
    }
    Ok(id)
}

async fn add_message(tx: &mut Tx, kind: &str, data: &Value, now: i64) -> Result<String> {
    if !valid_type(kind) {
        return Err(QueueError::Invalid(format!(
            "{kind:?} is not an event type (dotted lowercase name)"
        )));
    }
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    tx.execute(
        "INSERT INTO webhook_messages (id, type, body, created_at) VALUES ($1, $2, $3, $4)",
        args![id.as_str(), kind, body(kind, now, data), now],
    )
    .await?;
    Ok(id)
}

async fn add_delivery(tx: &mut Tx, message: &str, endpoint: i64, now: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO webhook_deliveries (message_id, endpoint_id, state, attempts, \
         next_attempt_at, created_at, updated_at) VALUES ($1, $2, 'pending', 0, $3, $3, $3) \
         ON CONFLICT (message_id, endpoint_id) DO NOTHING",
        args![message, endpoint, now],
    )
    .await?;
    Ok(())
}

/// A delivery a worker holds the lease of.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub message_id: String,
    pub endpoint_id: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    /// Attempts made before the current retry schedule began.
    pub schedule_start: i64,
}
crate::from_row!(Claimed {
    id,
    message_id,
    endpoint_id,
    attempts,
    schedule_start
});

/// Leases up to `limit` deliveries due at `now` to `owner` until `now + lease_ms`, oldest due
/// first. On PostgreSQL the rows are picked `FOR UPDATE SKIP LOCKED`: concurrent claimers
/// take different rows instead of queueing on the same ones (and then finding them taken,
/// which would make a busy queue look empty). SQLite runs one writer at a time, so its claim
/// is one plain statement, with the conditions repeated outside the subquery.
pub async fn claim(
    store: &Store,
    owner: &str,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<Claimed>> {
    // A CTE, not `WHERE id IN (subquery … LIMIT … SKIP LOCKED)`: PostgreSQL may run such a
    // subquery again for each row it joins, each run skipping the rows the last one locked,
    // so the LIMIT held for each run and not for the whole (a claim of 3 took 600). A CTE
    // that locks rows is run once.
    const PG: &str = "WITH picked AS (SELECT id FROM webhook_deliveries WHERE state = 'pending' \
           AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
           ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
         UPDATE webhook_deliveries d SET lease_owner = $1, lease_until = $2 FROM picked \
         WHERE d.id = picked.id \
         RETURNING d.id, d.message_id, d.endpoint_id, d.attempts, d.schedule_start";
    const SQLITE: &str = "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2 \
         WHERE id IN (SELECT id FROM webhook_deliveries WHERE state = 'pending' \
           AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
           ORDER BY next_attempt_at LIMIT $4) \
         AND state = 'pending' AND (lease_until IS NULL OR lease_until < $3) \
         RETURNING id, message_id, endpoint_id, attempts, schedule_start";
    let sql = match store.backend() {
        crate::store::Backend::Postgres => PG,
        crate::store::Backend::Sqlite => SQLITE,
    };
    Ok(store
        .fetch_all(sql, args![owner, now + lease_ms, now, limit])
        .await?)
}

/// Extends `owner`'s lease on the deliveries it has claimed and not yet recorded to `until`;
/// returns how many it still holds. A worker calls it while its attempts are in flight, so a
/// claim's lease can be short (a dead instance's deliveries are taken over soon) and still
/// outlast slow attempts. A delivery another worker has taken since is not its to extend.
pub async fn extend(store: &Store, owner: &str, until: i64) -> Result<u64> {
    Ok(store
        .execute(
            "UPDATE webhook_deliveries SET lease_until = $2 \
             WHERE lease_owner = $1 AND state = 'pending'",
            args![owner, until],
        )
        .await?)
}

/// What happens to a delivery after an attempt (or a decision not to make one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered (a 2xx answer).
    Succeeded,
    /// Failed; the next attempt is due at this time (UTC ms).
    RetryAt(i64),
    /// Failed for good: the schedule ran out, or the endpoint is disabled or gone.
    Failed,
    /// No attempt was made (the endpoint's rate limit); due again at this time.
    Postponed(i64),
}

/// One attempt's outcome, or a postponement (`attempted` false).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery_id: i64,
    pub endpoint_id: i64,
    pub attempted: bool,
    /// The attempt's number, from 1.
    pub attempt: i64,
    pub at: i64,
    pub status: Option<u16>,
    pub latency_us: i64,
    /// The start of the answer's body, as text.
    pub response: Option<String>,
    pub error: Option<String>,
    pub next: Next,
    /// Set when this outcome disables the endpoint (410 Gone), with the reason.
    pub disable: Option<String>,
}

/// Writes a batch of outcomes in one transaction: each attempt, each delivery's new state
/// (only while `owner` still holds its lease: a worker that overran its lease leaves the
/// delivery to whoever took it over), and the endpoints' success and failure times. Endpoints
/// failing since before `failing_cutoff` with no success since are disabled. Returns the ids
/// of endpoints this batch disabled, with the reason.
pub async fn record(
    store: &Store,
    owner: &str,
    outcomes: &[Outcome],
    failing_cutoff: i64,
) -> Result<Vec<(i64, String)>> {
    let mut tx = store.begin().await?;
    let mut disabled = Vec::new();
    for o in outcomes {
        if o.attempted {
            tx.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, at, status, latency_us, \
                 response, error, worker) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (delivery_id, attempt) DO NOTHING",
                args![
                    o.delivery_id,
                    o.attempt,
                    o.at,
                    o.status.map(i64::from),
                    o.latency_us,
                    o.response.as_deref(),
                    o.error.as_deref(),
                    owner
                ],
            )
            .await?;
        }
        let (state, next_at) = match o.next {
            Next::Succeeded => ("succeeded", None),
            Next::Failed => ("failed", None),
            Next::RetryAt(at) | Next::Postponed(at) => ("pending", Some(at)),
        };
        let attempts = if o.attempted {
            o.attempt
        } else {
            o.attempt - 1
        };
        tx.execute(
            "UPDATE webhook_deliveries SET state = $3, attempts = $4, next_attempt_at = $5, \
             lease_owner = NULL, lease_until = NULL, \
             last_status = CASE WHEN $6 THEN $7 ELSE last_status END, \
             last_error = CASE WHEN $6 THEN $8 ELSE COALESCE($8, last_error) END, updated_at = $9 \
             WHERE id = $1 AND lease_owner = $2",
            args![
                o.delivery_id,
                owner,
                state,
                attempts,
                next_at,
                o.attempted,
                o.status.map(i64::from),
                o.error.as_deref(),
                o.at
            ],
        )
        .await?;
        if !o.attempted {
            continue;
        }
        if o.next == Next::Succeeded {
            tx.execute(
                "UPDATE webhook_endpoints SET last_success_at = $2, failing_since = NULL \
                 WHERE id = $1",
                args![o.endpoint_id, o.at],
            )
            .await?;
            continue;
        }
        tx.execute(
            "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2) \
             WHERE id = $1",
            args![o.endpoint_id, o.at],
        )
        .await?;
        let changed = match o.disable.clone() {
            Some(reason) => {
                let n = tx
                    .execute(
                        "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $2, \
                         updated_at = $3 WHERE id = $1 AND enabled = 1",
                        args![o.endpoint_id, reason.as_str(), o.at],
                    )
                    .await?;
                (n > 0).then_some(reason)
            }
            None => {
                let reason = "failing without a success for too long".to_string();
                let n = tx
                    .execute(
                        "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $2, \
                         updated_at = $3 WHERE id = $1 AND enabled = 1 \
                         AND failing_since < $4",
                        args![o.endpoint_id, reason.as_str(), o.at, failing_cutoff],
                    )
                    .await?;
                (n > 0).then_some(reason)
            }
        };
        if let Some(reason) = changed {
            disabled.push((o.endpoint_id, reason));
        }
    }
    tx.commit().await?;
    Ok(disabled)
}

/// One delivery as listed.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryRow {
    pub id: i64,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub endpoint_id: i64,
    pub endpoint: String,
    /// `pending`, `succeeded` or `failed`.
    pub state: String,
    pub attempts: i64,
    /// UTC ms.
    pub next_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}
crate::from_row!(DeliveryRow {
    id,
    message_id,
    kind,
    endpoint_id,
    endpoint,
    state,
    attempts,
    next_attempt_at,
    last_status,
    last_error,
    created_at,
    updated_at
});

/// Deliveries newest first, optionally of one state and endpoint, before id `before` (a
/// cursor: the last id of the previous page).
pub async fn deliveries(
    store: &Store,
    state: Option<&str>,
    endpoint: Option<i64>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRow>> {
    // Only the filters given, so each reaches its index ((state, id), (endpoint_id, id);
    // migration 0036): as `($1 = '' OR d.state = $1)` the plan walked every delivery newest
    // first looking for a failed one (10 ms at 94k deliveries, none failed).
    let mut q = crate::store::Assembled::new(
        "SELECT d.id, d.message_id, m.type AS kind, d.endpoint_id, e.name AS endpoint, \
         d.state, d.attempts, d.next_attempt_at, d.last_status, d.last_error, \
         d.created_at, d.updated_at \
         FROM webhook_deliveries d \
         JOIN webhook_messages m ON m.id = d.message_id \
         JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE 1 = 1",
    );
    if let Some(state) = state {
        q.bind(" AND d.state = ?", state.into());
    }
    // 0 is no id, and has always meant "not given" here.
    if let Some(endpoint) = endpoint.filter(|e| *e != 0) {
        q.bind(" AND d.endpoint_id = ?", endpoint.into());
    }
    if let Some(before) = before.filter(|b| *b != 0) {
        q.bind(" AND d.id < ?", before.into());
    }
    q.bind(" ORDER BY d.id DESC LIMIT ?", limit.into());
    Ok(store.fetch_all_assembled(q.sql, q.args).await?)
}

/// One attempt as listed.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AttemptRow {
    pub attempt: i64,
    /// UTC ms.
    pub at: i64,
    pub status: Option<i64>,
    pub latency_us: i64,
    pub response: Option<String>,
    pub error: Option<String>,
}
crate::from_row!(AttemptRow {
    attempt,
    at,
    status,
    latency_us,
    response,
    error
});

/// Every attempt of delivery `id`, first first.
pub async fn attempts(store: &Store, id: i64) -> Result<Vec<AttemptRow>> {
    Ok(store
        .fetch_all(
            "SELECT attempt, at, status, latency_us, response, error FROM webhook_attempts \
             WHERE delivery_id = $1 ORDER BY attempt",
            args![id],
        )
        .await?)
}

/// Makes failed deliveries due again with a fresh retry schedule: delivery `only`, or every
/// failed one (of `endpoint`, if given) whose endpoint is enabled. Returns how many.
pub async fn retry_failed(
    store: &Store,
    only: Option<i64>,
    endpoint: Option<i64>,
    now: i64,
) -> Result<u64> {
    Ok(store
        .execute(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $1, \
             schedule_start = attempts, lease_owner = NULL, lease_until = NULL, updated_at = $1 \
             WHERE state = 'failed' AND ($2 = 0 OR id = $2) AND ($3 = 0 OR endpoint_id = $3) \
             AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled = 1)",
            args![now, only.unwrap_or(0), endpoint.unwrap_or(0)],
        )
        .await?)
}

/// Sends the messages created in `[from, to)` (UTC ms) again to `endpoint`, those of types it
/// subscribes to: a new delivery where there was none, the old one due again (with a fresh
/// schedule) where there was. Returns how many.
pub async fn replay(store: &Store, endpoint: i64, from: i64, to: i64, now: i64) -> Result<u64> {
    let mut tx = store.begin().await?;
    let types: Option<(String,)> = tx
        .fetch_optional(
            "SELECT event_types FROM webhook_endpoints WHERE id = $1 AND enabled = 1",
            args![endpoint],
        )
        .await?;
    let Some((types,)) = types else {
        return Err(QueueError::Invalid(format!(
            "endpoint {endpoint} does not exist or is disabled"
        )));
    };
    let patterns: Vec<String> = serde_json::from_str(&types).unwrap_or_default();
    let messages: Vec<(String, String)> = tx
        .fetch_all(
            "SELECT id, type FROM webhook_messages WHERE created_at >= $1 AND created_at < $2 \
             ORDER BY created_at",
            args![from, to],
        )
        .await?;
    let mut n = 0;
    for (id, _) in messages.iter().filter(|(_, k)| subscribed(&patterns, k)) {
        n += tx
            .execute(
                "INSERT INTO webhook_deliveries (message_id, endpoint_id, state, attempts, \
                 next_attempt_at, created_at, updated_at) VALUES ($1, $2, 'pending', 0, $3, $3, $3) \
                 ON CONFLICT (message_id, endpoint_id) DO UPDATE SET state = 'pending', \
                 next_attempt_at = $3, schedule_start = webhook_deliveries.attempts, \
                 lease_owner = NULL, lease_until = NULL, updated_at = $3",
                args![id.as_str(), endpoint, now],
            )
            .await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// `webhook_delivery_counts` buckets deliveries by the hour they were created in.
const HOUR_MS: i64 = 3_600_000;
/// Hours of delivery counts kept: the endpoints' counts cover the last day.
const COUNTED_HOURS: i64 = 48;

/// Per endpoint, deliveries created since `since` by state: (endpoint, succeeded, failed,
/// pending). Whole hours come from `webhook_delivery_counts` (kept by triggers, migration
/// 0036): a day of a busy endpoint was ~94k index entries to count. The first, partial hour
/// is counted from the deliveries themselves, so the window is exact.
pub async fn stats(store: &Store, since: i64) -> Result<Vec<(i64, i64, i64, i64)>> {
    let first_whole_hour = since + (HOUR_MS - since.rem_euclid(HOUR_MS)) % HOUR_MS;
    // Endpoint by endpoint along each table's (endpoint_id, …) key: a short range of each.
    type Counts = Vec<(i64, String, i64)>;
    let (partial, whole): (Counts, Counts) = tokio::try_join!(
        store.fetch_all(
            "SELECT endpoint_id, state, CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries \
             WHERE endpoint_id IN (SELECT id FROM webhook_endpoints) \
             AND created_at >= $1 AND created_at < $2 GROUP BY endpoint_id, state",
            args![since, first_whole_hour],
        ),
        store.fetch_all(
            "SELECT endpoint_id, state, CAST(SUM(n) AS BIGINT) FROM webhook_delivery_counts \
             WHERE endpoint_id IN (SELECT id FROM webhook_endpoints) AND hour >= $1 \
             GROUP BY endpoint_id, state",
            args![first_whole_hour],
        ),
    )?;
    let mut by_endpoint: std::collections::BTreeMap<i64, (i64, i64, i64)> = Default::default();
    for (endpoint, state, n) in partial.into_iter().chain(whole) {
        let counts = by_endpoint.entry(endpoint).or_default();
        match state.as_str() {
            "succeeded" => counts.0 += n,
            "failed" => counts.1 += n,
            "pending" => counts.2 += n,
            _ => {}
        }
    }
    Ok(by_endpoint
        .into_iter()
        .map(|(endpoint, (s, f, p))| (endpoint, s, f, p))
        .collect())
}

/// Folds PostgreSQL's change rows of `webhook_delivery_counts` (see `Store::fold_counts`).
pub async fn fold_counts(store: &Store) -> Result<()> {
    store
        .fold_counts("webhook_delivery_counts", "endpoint_id, hour, state")
        .await?;
    Ok(())
}

/// Drops delivery counts of hours older than [`COUNTED_HOURS`], which no count reads.
pub async fn prune_counts(store: &Store, now: i64) -> Result<()> {
    store
        .execute(
            "DELETE FROM webhook_delivery_counts WHERE hour < $1",
            args![now - COUNTED_HOURS * HOUR_MS],
        )
        .await?;
    Ok(())
}

/// When the attempt after `attempts_made` failed ones is due, per `schedule` (the delay before
/// each retry) with `jitter` (a share, 0..0.5) either way; a `retry_after` longer than that
/// (the receiver's `Retry-After`, capped at a day) wins. `None` once the schedule has run out.
pub fn next_attempt(
    now: i64,
    attempts_made: i64,
    schedule: &[std::time::Duration],
    jitter: f64,
    retry_after: Option<std::time::Duration>,
    random: f64,
) -> Option<i64> {
    let index = usize::try_from(attempts_made.checked_sub(1)?).ok()?;
    let delay = schedule.get(index)?;
    let base = delay.as_millis() as f64;
    // random in [0, 1) maps to a factor in [1 - jitter, 1 + jitter).
    let jittered = base * (1.0 - jitter + 2.0 * jitter * random);
    let asked = retry_after
        .map(|d| d.min(std::time::Duration::from_secs(86_400)).as_millis() as f64)
        .unwrap_or(0.0);
    Some(now + jittered.max(asked).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn endpoints_take_the_types_they_subscribe_to() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(subscribed(&p(&["*"]), "alert.firing"));
        assert!(subscribed(&p(&["alert.*"]), "alert.firing"));
        assert!(!subscribed(&p(&["alert.*"]), "alerts.firing"));
        assert!(!subscribed(&p(&["alert.*"]), "alert"));
        assert!(subscribed(&p(&["payment.failed", "x.y"]), "payment.failed"));
        assert!(!subscribed(&p(&[]), "payment.failed"));
        assert!(valid_type("integration.state_changed"));
        for bad in ["", "Alert", "a b", ".a", "a.", "a/b"] {
            assert!(!valid_type(bad), "{bad:?}");
        }
    }

    #[test]
    fn retries_follow_the_schedule_with_jitter_and_retry_after() {
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        // After the first failed attempt: 5 s, moved by at most 20 % either way.
        assert_eq!(next_attempt(0, 1, &schedule, 0.2, None, 0.5), Some(5_000));
        assert_eq!(next_attempt(0, 1, &schedule, 0.2, None, 0.0), Some(4_000));
        assert_eq!(
            next_attempt(0, 1, &schedule, 0.2, None, 0.999_999),
            Some(6_000)
        );
        assert_eq!(next_attempt(0, 2, &schedule, 0.0, None, 0.3), Some(300_000));
        // Out of retries.
        assert_eq!(next_attempt(0, 3, &schedule, 0.2, None, 0.5), None);
        // Retry-After wins when longer, up to a day.
        let asked = Some(Duration::from_secs(60));
        assert_eq!(next_attempt(0, 1, &schedule, 0.0, asked, 0.5), Some(60_000));
        let long = Some(Duration::from_secs(7 * 86_400));
        assert_eq!(
            next_attempt(0, 1, &schedule, 0.0, long, 0.5),
            Some(86_400_000)
        );
        let short = Some(Duration::from_secs(1));
        assert_eq!(next_attempt(0, 1, &schedule, 0.0, short, 0.5), Some(5_000));
    }

    #[test]
    fn the_body_is_type_timestamp_and_data() {
        let b: Value =
            serde_json::from_str(&body("alert.firing", 0, &serde_json::json!({"a": 1}))).unwrap();
        assert_eq!(b["type"], "alert.firing");
        assert_eq!(b["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(b["data"]["a"], 1);
    }
}
