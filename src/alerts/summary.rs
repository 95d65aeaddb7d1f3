//! What is open right now, for the Overview: open alerts (pending or firing) counted by
//! severity, and the few most severe. Reads `alerts` only; changes nothing.

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

/// Open alerts counted by severity, with the `limit` most severe. Both read the open alerts
/// alone (the `alerts_by_severity` index), however long the history of resolved ones.
pub async fn open(store: &Store, limit: i64) -> Result<OpenAlerts, AlertsError> {
    let counts: Vec<(String, i64)> = store
        .fetch_all(
            "SELECT severity, COUNT(*) FROM alerts WHERE state IN ('pending', 'firing') \
             GROUP BY state, severity",
            args![],
        )
        .await?;
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
