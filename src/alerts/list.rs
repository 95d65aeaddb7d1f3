//! Finding alerts: the filter the API (`GET /api/v1/alerts`) and the Alerts page share —
//! state, rule, severity, words — checked field by field, and the one query that applies it.

use serde::Deserialize;
use utoipa::IntoParams;

use super::AlertsError;
use super::engine::{ALERT_COLUMNS, AlertRow};
use super::rules::Severity;
use crate::store::{Assembled, Store, Value};

/// Which alerts to list. Every field is optional; empty text counts as absent, so a form
/// submitted with blank fields lists everything.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertFilter {
    /// `pending`, `firing`, `resolved`, `open` (pending and firing) or `all`.
    pub state: Option<String>,
    pub rule_id: Option<i64>,
    /// `info`, `warning` or `critical`.
    pub severity: Option<String>,
    /// Words the summary or rule name contain.
    pub q: Option<String>,
    /// Only alerts with a smaller id (the last id of the previous page).
    pub before: Option<i64>,
    /// 1–500, default 100.
    pub limit: Option<i64>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

impl AlertFilter {
    pub fn state(&self) -> Option<&str> {
        given(&self.state)
    }

    pub fn severity(&self) -> Option<&str> {
        given(&self.severity)
    }

    pub fn text(&self) -> Option<&str> {
        given(&self.q)
    }

    /// The query text and its parameters, or the field at fault.
    fn sql(&self) -> Result<(String, Vec<Value>), AlertsError> {
        let bad = |field: &str, message: String| AlertsError::Invalid {
            field: field.into(),
            message,
        };
        let limit = self.limit.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(bad("limit", "must be 1–500".into()));
        }
        let mut q = Assembled::new(format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1"));
        match self.state() {
            None | Some("all") => {}
            Some("open") => q.sql.push_str(" AND state <> 'resolved'"),
            Some(s @ ("pending" | "firing" | "resolved")) => q.bind(" AND state = ?", s.into()),
            Some(other) => {
                return Err(bad(
                    "state",
                    format!("{other:?} is not pending, firing, resolved, open or all"),
                ));
            }
        }
        if let Some(r) = self.rule_id {
            q.bind(" AND rule_id = ?", r.into());
        }
        if let Some(s) = self.severity() {
            if Severity::parse(s).is_none() {
                return Err(bad(
                    "severity",
                    format!("{s:?} is not info, warning or critical"),
                ));
            }
            q.bind(" AND severity = ?", s.into());
        }
        if let Some(text) = self.text() {
            if text.len() > 200 {
                return Err(bad("q", "at most 200 characters".into()));
            }
            for word in text.split_whitespace().take(8) {
                q.bind(
                    " AND (LOWER(summary) LIKE ? OR LOWER(rule) LIKE ?)",
                    format!("%{}%", word.to_lowercase()).into(),
                );
            }
        }
        if let Some(b) = self.before {
            q.bind(" AND id < ?", b.into());
        }
        q.bind(" ORDER BY id DESC LIMIT ?", limit.into());
        Ok((q.sql, q.args))
    }
}

/// The alerts `filter` selects, newest first.
pub async fn find(store: &Store, filter: &AlertFilter) -> Result<Vec<AlertRow>, AlertsError> {
    let (sql, args) = filter.sql()?;
    let rows: Vec<AlertRow> = store.fetch_all_assembled(sql, args).await?;
    Ok(rows.into_iter().map(AlertRow::fill).collect())
}
