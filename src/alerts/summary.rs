//! What is open right now, for the Overview and the Alerts page: open alerts (pending or
//! firing) counted by severity (the counts triggers keep in `alert_counts`), and the few most
//! severe. Changes nothing but the folding of those counts on PostgreSQL ([`fold_counts`]).

use super::AlertsError;
use crate::args;
use crate::store::Store;

/// Severities from the most to the least urgent.
pub const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];

/// One open alert as the Overview lists it.
#[derive(Debug, Clone)]
pub struct OpenAlert {
    pub id: i64,
    pub rule: String,
    pub severity: String,
    /// `pending` or `firing`.
    pub state: String,
    pub summary: String,
    /// When it started firing (or, while pending, when the condition began), UTC ms.
    pub since: i64,
    /// When someone acknowledged it, UTC ms.
    pub acked_at: Option<i64>,
}
crate::from_row!(OpenAlert {
    id,
    rule,
    severity,
    state,
    summary,
    since,
    acked_at
});

/// Open alerts by severity and the most severe of them.
#[derive(Debug, Clone, Default)]
pub struct OpenAlerts {
    /// (severity, open alerts), most severe first; every severity, zeros included.
    pub counts: Vec<(&'static str, i64)>,
    pub total: i64,
    /// Firing before pending, critical before warning before info, newest first.
    pub top: Vec<OpenAlert>,
}

/// Open alerts counted by severity, with the `limit` most severe. The counts are kept as
/// alerts change ([`counts`]); the list reads the open alerts alone (the `alerts_by_severity`
/// index), however long the history of resolved ones.
pub async fn open(store: &Store, limit: i64) -> Result<OpenAlerts, AlertsError> {
    let by_severity = counts(store).await?;
    // One short walk of the `alerts_by_severity` index per (state, severity), in the order
    // shown, until `limit` are found: a single ORDER BY over CASE expressions would sort every
    // open alert first.
    let mut top: Vec<OpenAlert> = Vec::new();
    for state in ["firing", "pending"] {
        for severity in SEVERITIES {
            let wanted = limit - top.len() as i64;
            if wanted <= 0 {
                break;
            }
            let more: Vec<OpenAlert> = store
                .fetch_all(
                    "SELECT id, rule, severity, state, summary, \
                     COALESCE(started_at, pending_since) AS since, acked_at \
                     FROM alerts WHERE state = $1 AND severity = $2 \
                     ORDER BY COALESCE(started_at, pending_since) DESC, id DESC LIMIT $3",
                    args![state, severity, wanted],
                )
                .await?;
            top.extend(more);
        }
    }
    Ok(OpenAlerts {
        counts: SEVERITIES.iter().copied().zip(by_severity).collect(),
        total: by_severity.iter().sum(),
        top,
    })
}

/// Open alerts (pending or firing) by severity, in [`SEVERITIES`] order. Read from
/// `alert_counts`, which triggers keep as alerts are inserted, change state or severity, and
/// are deleted (migration 0034): counting ~31k open alerts per page load took 3-5 ms.
pub async fn counts(store: &Store) -> Result<[i64; 3], AlertsError> {
    // On PostgreSQL a key may have several rows until housekeeping folds them ([`fold_counts`]).
    let rows: Vec<(String, i64)> = store
        .fetch_all(
            "SELECT severity, CAST(SUM(n) AS BIGINT) FROM alert_counts GROUP BY severity",
            args![],
        )
        .await?;
    let mut out = [0; 3];
    for (severity, n) in rows {
        let rank = SEVERITIES
            .iter()
            .position(|s| *s == severity)
            .unwrap_or(SEVERITIES.len() - 1);
        out[rank] += n;
    }
    Ok(out)
}

/// Folds `alert_counts` to one row per key on PostgreSQL, where the triggers append a row per
/// change (see migration 0034); nothing to do on SQLite, which updates one row per key.
pub async fn fold_counts(store: &Store) -> Result<(), AlertsError> {
    Ok(store.fold_counts("alert_counts", "state, severity").await?)
}
