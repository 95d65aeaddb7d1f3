//! What is open right now, for the Overview: open alerts (pending or firing) counted by
//! severity, and the few most severe. Reads `alerts` only; changes nothing.

use super::AlertsError;
use crate::args;
use crate::store::Store;

/// Severities from the most to the least urgent.
pub const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];

/// One open alert as the Overview lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
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

/// Open alerts by severity and the most severe of them.
#[derive(Debug, Clone, Default)]
pub struct OpenAlerts {
    /// (severity, open alerts), most severe first; every severity, zeros included.
    pub counts: Vec<(&'static str, i64)>,
    pub total: i64,
    /// Firing before pending, critical before warning before info, newest first.
    pub top: Vec<OpenAlert>,
}

/// Open alerts counted by severity, with the `top` most severe. Both read the open alerts
/// alone (the `(state, id)` index), however long the history of resolved ones.
pub async fn open(store: &Store, top: i64) -> Result<OpenAlerts, AlertsError> {
    let counts: Vec<(String, i64)> = store
        .fetch_all(
            "SELECT severity, COUNT(*) FROM alerts WHERE state IN ('pending', 'firing') \
             GROUP BY severity",
            args![],
        )
        .await?;
    let top: Vec<OpenAlert> = store
        .fetch_all(
            "SELECT id, rule, severity, state, summary, \
             COALESCE(started_at, pending_since) AS since, acked_at \
             FROM alerts WHERE state IN ('pending', 'firing') \
             ORDER BY CASE state WHEN 'firing' THEN 0 ELSE 1 END, \
             CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, \
             COALESCE(started_at, pending_since) DESC, id DESC LIMIT $1",
            args![top],
        )
        .await?;
    let count = |s: &str| {
        counts
            .iter()
            .filter(|(severity, _)| severity == s)
            .map(|(_, n)| *n)
            .sum::<i64>()
    };
    Ok(OpenAlerts {
        counts: SEVERITIES.iter().map(|s| (*s, count(s))).collect(),
        total: counts.iter().map(|(_, n)| n).sum(),
        top,
    })
}
