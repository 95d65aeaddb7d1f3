//! Alert rules: their definition as written (config `[[alert_rules]]`, the API, the built-in
//! defaults), validation that names the field at fault, and the `alert_rules` table. A rule
//! is a metric from the catalogue (`metrics::CATALOGUE`, or any `opsdeck_…` Prometheus
//! metric), a condition (`"> 5"`), an evaluation window, a `for` duration, a severity,
//! labels, label filters, grouping and the notifiers it routes to.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::AlertsError;
use super::metrics;
use crate::access::audit::{self, Actor};
use crate::args;
use crate::config::ConfigDuration;
use crate::store::{Store, now_ms};

type Result<T, E = AlertsError> = std::result::Result<T, E>;

/// A rule as written. Durations are text (`"5m"`), kept as written so a rule reads back the
/// way it was entered.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    /// A metric from the catalogue (`integration.error_rate`…) or an `opsdeck_…` metric of
    /// `/metrics`.
    pub metric: String,
    /// `<op> <number>`: op one of `>`, `>=`, `<`, `<=`, `==`, `!=`.
    pub condition: String,
    /// The span the metric is computed over (rates, percentiles, counts); default 5m.
    #[serde(default)]
    pub window: Option<String>,
    /// How long the condition must hold before the alert fires; default 0s (at once).
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    /// `info`, `warning` or `critical`; default warning.
    #[serde(default)]
    pub severity: Option<String>,
    /// Once firing, the alert resolves only when the value is this far back past the
    /// threshold, so a value hovering at it does not flap.
    #[serde(default)]
    pub hysteresis: Option<f64>,
    /// Labels added to every alert of the rule.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Only series whose labels have these values.
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    /// Labels whose values split notifications into groups (default: one group per rule).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Notifiers (by name) told when the rule's alerts fire, resolve or are acknowledged.
    #[serde(default)]
    pub notifiers: Vec<String>,
    /// Further thresholds past the condition's, each with its severity (`> 90` then steps at
    /// 100 and 120). A series still has one alert: it follows the highest step its value
    /// reaches, a higher step replacing the alert at a lower one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepSpec>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// One further threshold of a rule: the condition's operator at `at`, with its severity.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub at: f64,
    /// `info`, `warning` or `critical`.
    pub severity: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// A parsed condition: `value <op> threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    pub op: Op,
    pub threshold: f64,
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.threshold)
    }
}

impl Condition {
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let t = text.trim();
        let (op, rest) = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">", Op::Gt),
            ("<", Op::Lt),
        ]
        .iter()
        .find_map(|(p, op)| t.strip_prefix(p).map(|r| (*op, r)))
        .ok_or_else(|| {
            format!("{text:?} must start with one of >, >=, <, <=, ==, != (e.g. \"> 5\")")
        })?;
        let threshold: f64 = rest
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: {:?} is not a number", rest.trim()))?;
        if !threshold.is_finite() {
            return Err(format!("{text:?}: the threshold must be finite"));
        }
        Ok(Condition { op, threshold })
    }

    pub fn holds(&self, v: f64) -> bool {
        match self.op {
            Op::Gt => v > self.threshold,
            Op::Ge => v >= self.threshold,
            Op::Lt => v < self.threshold,
            Op::Le => v <= self.threshold,
            Op::Eq => v == self.threshold,
            Op::Ne => v != self.threshold,
        }
    }

    /// Whether a firing alert keeps firing at `v`: the condition with the threshold moved
    /// `margin` back toward the healthy side (`> 90` with margin 5 keeps firing above 85).
    pub fn still_holds(&self, v: f64, margin: f64) -> bool {
        let t = self.threshold;
        match self.op {
            Op::Gt => v > t - margin,
            Op::Ge => v >= t - margin,
            Op::Lt => v < t + margin,
            Op::Le => v <= t + margin,
            Op::Eq => (v - t).abs() <= margin,
            Op::Ne => (v - t).abs() > margin || v != t,
        }
    }
}

/// A validated rule, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: i64,
    pub source: String,
    pub spec: RuleSpec,
    pub metric: metrics::Metric,
    pub condition: Condition,
    pub window: Duration,
    pub for_: Duration,
    pub severity: Severity,
    pub hysteresis: f64,
    /// The condition and severity first, then each step, in order of gravity.
    pub levels: Vec<Level>,
}

/// One threshold of a rule and the severity of an alert at it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub condition: Condition,
    pub severity: Severity,
}

impl Rule {
    /// The level a series with value `v` is at, or `None` when the condition does not hold.
    /// `current` is the level of the series' firing alert: a value reaching a higher level
    /// moves up at once, and one falling back moves down only past the hysteresis, so a
    /// value hovering at a step does not flap between two alerts.
    pub fn level_for(&self, v: f64, current: Option<usize>) -> Option<usize> {
        let up = (0..self.levels.len())
            .rev()
            .find(|&k| self.levels[k].condition.holds(v));
        let Some(c) = current else { return up };
        let c = c.min(self.levels.len() - 1);
        if let Some(u) = up.filter(|&u| u > c) {
            return Some(u);
        }
        (0..=c)
            .rev()
            .find(|&k| self.levels[k].condition.still_holds(v, self.hysteresis))
    }

    /// The level an alert stored with `threshold` is at (the rule may have changed since:
    /// then the highest level the threshold itself reaches).
    pub fn level_of(&self, threshold: f64) -> usize {
        self.levels
            .iter()
            .position(|l| l.condition.threshold == threshold)
            .or_else(|| self.level_for(threshold, None))
            .unwrap_or(0)
    }
}

fn field(name: &str, message: impl Into<String>) -> AlertsError {
    AlertsError::Invalid {
        field: name.to_string(),
        message: message.into(),
    }
}

fn label_name_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

impl RuleSpec {
    /// Checks every field, naming the first one at fault. `prometheus` is the names of the
    /// metrics `/metrics` currently exposes (for `opsdeck_…` metrics); `notifiers` the names
    /// of the notifiers that exist.
    pub fn validate(&self, prometheus: &[String], notifiers: &[String]) -> Result<Rule> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(field("name", "must be 1–200 printable characters"));
        }
        let metric =
            metrics::Metric::parse(&self.metric, prometheus).map_err(|m| field("metric", m))?;
        let condition = Condition::parse(&self.condition).map_err(|m| field("condition", m))?;
        let duration = |key: &str, v: &Option<String>, default: Duration| -> Result<Duration> {
            match v {
                None => Ok(default),
                Some(text) => ConfigDuration::parse(text)
                    .map(|d| d.0)
                    .map_err(|m| field(key, m)),
            }
        };
        let window = duration("window", &self.window, Duration::from_secs(300))?;
        if window < Duration::from_secs(1) || window > Duration::from_secs(90 * 86_400) {
            return Err(field("window", "must be between 1s and 90d"));
        }
        let for_ = duration("for", &self.for_, Duration::ZERO)?;
        if for_ > Duration::from_secs(30 * 86_400) {
            return Err(field("for", "must be at most 30d"));
        }
        let severity = match &self.severity {
            None => Severity::Warning,
            Some(s) => Severity::parse(s).ok_or_else(|| {
                field(
                    "severity",
                    format!("{s:?} is not info, warning or critical"),
                )
            })?,
        };
        let hysteresis = self.hysteresis.unwrap_or(0.0);
        if !hysteresis.is_finite() || hysteresis < 0.0 {
            return Err(field("hysteresis", "must be a number ≥ 0"));
        }
        for (kind, map) in [("labels", &self.labels), ("filter", &self.filter)] {
            if map.len() > 32 {
                return Err(field(kind, "at most 32 entries"));
            }
            for (k, v) in map {
                if !label_name_ok(k) {
                    return Err(field(
                        &format!("{kind}.{k}"),
                        "label names are letters, digits, _ and . (at most 64)",
                    ));
                }
                if v.len() > 500 {
                    return Err(field(&format!("{kind}.{k}"), "at most 500 characters"));
                }
            }
        }
        for (i, g) in self.group_by.iter().enumerate() {
            if !label_name_ok(g) {
                return Err(field(
                    &format!("group_by[{i}]"),
                    format!("{g:?} is not a label name"),
                ));
            }
        }
        for (i, n) in self.notifiers.iter().enumerate() {
            if !notifiers.iter().any(|x| x == n) {
                return Err(field(
                    &format!("notifiers[{i}]"),
                    format!("no notifier is named {n:?}"),
                ));
            }
        }
        let mut levels = vec![Level {
            condition,
            severity,
        }];
        if !self.steps.is_empty() && matches!(condition.op, Op::Eq | Op::Ne) {
            return Err(field("steps", "steps need a condition with >, >=, < or <="));
        }
        if self.steps.len() > 8 {
            return Err(field("steps", "at most 8"));
        }
        for (i, step) in self.steps.iter().enumerate() {
            let previous = levels[levels.len() - 1].condition.threshold;
            let rising = matches!(condition.op, Op::Gt | Op::Ge);
            if !step.at.is_finite()
                || (rising && step.at <= previous)
                || (!rising && step.at >= previous)
            {
                return Err(field(
                    &format!("steps[{i}].at"),
                    format!(
                        "must be a number {} {previous}",
                        if rising { "above" } else { "below" }
                    ),
                ));
            }
            let severity = Severity::parse(&step.severity).ok_or_else(|| {
                field(
                    &format!("steps[{i}].severity"),
                    format!("{:?} is not info, warning or critical", step.severity),
                )
            })?;
            levels.push(Level {
                condition: Condition {
                    op: condition.op,
                    threshold: step.at,
                },
                severity,
            });
        }
        Ok(Rule {
            id: 0,
            source: String::new(),
            spec: RuleSpec {
                name: name.to_string(),
                ..self.clone()
            },
            metric,
            condition,
            window,
            for_,
            severity,
            hysteresis,
            levels,
        })
    }
}

/// The name of the built-in quota rule.
pub const QUOTA_RULE: &str = "customer quota";

/// The rules built in for what the product documents name, routed to
/// `[alerts] default_notifiers`. A rule of the same name in config or the API replaces one.
pub fn defaults(notifiers: &[String]) -> Vec<RuleSpec> {
    let rule =
        |name: &str, metric: &str, condition: &str, window: &str, for_: &str, severity: &str| {
            RuleSpec {
                name: name.to_string(),
                metric: metric.to_string(),
                condition: condition.to_string(),
                window: Some(window.to_string()),
                for_: Some(for_.to_string()),
                severity: Some(severity.to_string()),
                hysteresis: None,
                labels: BTreeMap::new(),
                filter: BTreeMap::new(),
                group_by: Vec::new(),
                notifiers: notifiers.to_vec(),
                steps: Vec::new(),
                enabled: true,
            }
        };
    let mut out = vec![
        rule(
            "integration down",
            "integration.state",
            ">= 2",
            "5m",
            "0s",
            "critical",
        ),
        rule(
            "integration error rate",
            "integration.error_rate",
            "> 5",
            "5m",
            "2m",
            "warning",
        ),
        rule(
            "integration success rate",
            "integration.success_rate",
            "< 95",
            "15m",
            "5m",
            "warning",
        ),
        rule(
            "token expiring",
            "token.expiry_hours",
            "< 24",
            "5m",
            "0s",
            "warning",
        ),
        rule(
            "token needs re-authorization",
            "token.broken",
            ">= 1",
            "5m",
            "0s",
            "critical",
        ),
        rule(
            "webhook failure rate",
            "webhooks.failure_rate",
            "> 20",
            "15m",
            "5m",
            "warning",
        ),
        rule(
            "webhook endpoint disabled",
            "webhooks.endpoint_disabled",
            ">= 1",
            "5m",
            "0s",
            "warning",
        ),
        rule(
            "rate-limit violations",
            "integration.rate_limit_hits",
            "> 0",
            "15m",
            "0s",
            "warning",
        ),
    ];
    // One rule for quotas, so a customer has one alert at a time: at 80 % it is info, and it
    // is replaced by a warning at 90 % and a critical one at 100 % and 120 %.
    let mut quota = rule(QUOTA_RULE, "quota.percent", ">= 80", "5m", "0s", "info");
    quota.steps = [(90.0, "warning"), (100.0, "critical"), (120.0, "critical")]
        .into_iter()
        .map(|(at, severity)| StepSpec {
            at,
            severity: severity.to_string(),
        })
        .collect();
    // Hysteresis as the quota states have it: 2 points below before it steps down or ends.
    quota.hysteresis = Some(2.0);
    out.push(quota);
    for r in &mut out {
        if r.metric == "integration.error_rate" || r.metric == "webhooks.failure_rate" {
            r.hysteresis = Some(2.0);
        }
        if r.metric == "integration.success_rate" {
            r.hysteresis = Some(1.0);
        }
    }
    out
}

/// Every rule, oldest first, validated (a stored rule that no longer validates — its
/// notifier deleted — is skipped with a warning rather than stopping evaluation).
pub async fn load(store: &Store, prometheus: &[String], notifiers: &[String]) -> Result<Vec<Rule>> {
    let rows: Vec<(i64, String, String)> = store
        .fetch_all(
            "SELECT id, source, spec FROM alert_rules ORDER BY id",
            args![],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, source, spec) in rows {
        let parsed: RuleSpec = match serde_json::from_str(&spec) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(rule = id, error = %e, "stored alert rule unreadable; skipped");
                continue;
            }
        };
        match parsed.validate(prometheus, notifiers) {
            Ok(mut r) => {
                r.id = id;
                r.source = source;
                out.push(r);
            }
            Err(e) => tracing::warn!(rule = id, error = %e, "alert rule no longer valid; skipped"),
        }
    }
    Ok(out)
}

/// A rule as listed by the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleRow {
    pub id: i64,
    /// `config`, `default` or `api`.
    pub source: String,
    #[serde(flatten)]
    pub spec: RuleSpec,
}

pub async fn list(store: &Store) -> Result<Vec<RuleRow>> {
    let rows: Vec<(i64, String, String)> = store
        .fetch_all(
            "SELECT id, source, spec FROM alert_rules ORDER BY id",
            args![],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, source, spec)| {
            Some(RuleRow {
                id,
                source,
                spec: serde_json::from_str(&spec).ok()?,
            })
        })
        .collect())
}

/// Stores the config's rules and the built-in defaults (source `config` / `default`): adds
/// new ones, updates changed ones and removes those no longer declared. A default is left
/// out where config names a rule the same. Fails on a rule that does not validate, or that
/// takes the name of one created through the API.
pub async fn sync_config(
    store: &Store,
    config: &[RuleSpec],
    defaults: &[RuleSpec],
    prometheus: &[String],
    notifiers: &[String],
) -> Result<()> {
    let mut wanted: Vec<(&RuleSpec, &str)> = Vec::new();
    for (i, spec) in config.iter().enumerate() {
        spec.validate(prometheus, notifiers).map_err(|e| match e {
            AlertsError::Invalid { field, message } => AlertsError::Invalid {
                field: format!("alert_rules[{i}].{field}"),
                message,
            },
            other => other,
        })?;
        if wanted
            .iter()
            .any(|(s, _)| s.name.trim() == spec.name.trim())
        {
            return Err(field(
                &format!("alert_rules[{i}].name"),
                format!("{:?} is declared twice", spec.name),
            ));
        }
        wanted.push((spec, "config"));
    }
    for spec in defaults {
        if !wanted.iter().any(|(s, _)| s.name.trim() == spec.name) {
            spec.validate(prometheus, notifiers).map_err(|e| match e {
                AlertsError::Invalid { field, message } => AlertsError::Invalid {
                    field: format!("alerts.default_notifiers ({field})"),
                    message,
                },
                other => other,
            })?;
            wanted.push((spec, "default"));
        }
    }
    let now = now_ms();
    let mut tx = store.begin().await?;
    let existing: Vec<(i64, String, String, String)> = tx
        .fetch_all("SELECT id, name, source, spec FROM alert_rules", args![])
        .await?;
    for (spec, source) in &wanted {
        let name = spec.name.trim();
        let json = serde_json::to_string(spec).map_err(|e| AlertsError::Internal(e.to_string()))?;
        match existing.iter().find(|(_, n, _, _)| n == name) {
            Some((_, _, s, _)) if s == "api" => {
                return Err(AlertsError::Conflict(format!(
                    "alert rule {name:?} from the config has the name of one created through the API"
                )));
            }
            Some((id, _, s, old)) => {
                if old != &json || s != source {
                    tx.execute(
                        "UPDATE alert_rules SET source = $2, spec = $3, updated_at = $4 WHERE id = $1",
                        args![*id, *source, json.as_str(), now],
                    )
                    .await?;
                }
            }
            None => {
                tx.execute(
                    "INSERT INTO alert_rules (name, source, spec, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $4)",
                    args![name, *source, json.as_str(), now],
                )
                .await?;
            }
        }
    }
    for (id, name, source, _) in &existing {
        if source != "api" && !wanted.iter().any(|(s, _)| s.name.trim() == name) {
            tx.execute("DELETE FROM alert_rules WHERE id = $1", args![*id])
                .await?;
            // Nothing evaluates its alerts any more (a default renamed or folded into
            // another, such as the four quota rules into one): they end here.
            tx.execute(
                "UPDATE alerts SET state = 'resolved', resolved_at = $2, updated_at = $2 \
                 WHERE rule_id = $1 AND state <> 'resolved'",
                args![*id, now],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Creates a rule through the API (source `api`), with an audit entry.
pub async fn create(
    store: &Store,
    spec: &RuleSpec,
    prometheus: &[String],
    notifiers: &[String],
    actor: &Actor,
) -> Result<RuleRow> {
    let rule = spec.validate(prometheus, notifiers)?;
    let json =
        serde_json::to_string(&rule.spec).map_err(|e| AlertsError::Internal(e.to_string()))?;
    let now = now_ms();
    let mut tx = store.begin().await?;
    let taken: Option<(i64,)> = tx
        .fetch_optional(
            "SELECT id FROM alert_rules WHERE name = $1",
            args![rule.spec.name.as_str()],
        )
        .await?;
    if taken.is_some() {
        return Err(AlertsError::Conflict(format!(
            "an alert rule named {:?} exists",
            rule.spec.name
        )));
    }
    let (id,): (i64,) = tx
        .fetch_one(
            "INSERT INTO alert_rules (name, source, spec, created_at, updated_at) \
             VALUES ($1, 'api', $2, $3, $3) RETURNING id",
            args![rule.spec.name.as_str(), json.as_str(), now],
        )
        .await?;
    audit::record(
        &mut tx,
        actor,
        "alert_rule.create",
        Some(&rule.spec.name),
        Some(serde_json::json!({"metric": rule.spec.metric, "condition": rule.spec.condition})),
    )
    .await?;
    tx.commit().await?;
    Ok(RuleRow {
        id,
        source: "api".into(),
        spec: rule.spec,
    })
}

/// Deletes a rule created through the API, resolving its open alerts quietly (they no longer
/// have a rule to be evaluated by).
pub async fn delete(store: &Store, id: i64, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    let row: Option<(String, String)> = tx
        .fetch_optional(
            "SELECT name, source FROM alert_rules WHERE id = $1",
            args![id],
        )
        .await?;
    let Some((name, source)) = row else {
        return Err(AlertsError::NotFound(format!("no alert rule {id}")));
    };
    if source != "api" {
        return Err(AlertsError::Conflict(format!(
            "alert rule {name:?} comes from the {source}; change it there"
        )));
    }
    let now = now_ms();
    tx.execute("DELETE FROM alert_rules WHERE id = $1", args![id])
        .await?;
    tx.execute(
        "UPDATE alerts SET state = 'resolved', resolved_at = $2, updated_at = $2 \
         WHERE rule_id = $1 AND state <> 'resolved'",
        args![id, now],
    )
    .await?;
    audit::record(&mut tx, actor, "alert_rule.delete", Some(&name), None).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(metric: &str, condition: &str) -> RuleSpec {
        serde_json::from_value(serde_json::json!({
            "name": "r", "metric": metric, "condition": condition
        }))
        .unwrap()
    }

    #[test]
    fn conditions_parse_and_hold() {
        let c = Condition::parse(">= 90").unwrap();
        assert!(c.holds(90.0) && !c.holds(89.9));
        assert!(c.still_holds(88.5, 2.0) && !c.still_holds(87.9, 2.0));
        let c = Condition::parse("<24").unwrap();
        assert!(c.holds(23.0) && !c.holds(24.0));
        assert!(c.still_holds(25.0, 2.0) && !c.still_holds(26.0, 2.0));
        for bad in ["", "90", "=> 3", "> ", "> abc", "> inf", "> NaN"] {
            assert!(Condition::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let err = |s: RuleSpec| match s.validate(&[], &["ops".into()]) {
            Err(AlertsError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(spec("no.such.metric", "> 1")), "metric");
        assert_eq!(err(spec("opsdeck_not_exposed", "> 1")), "metric");
        assert_eq!(
            err(spec("integration.error_rate", "more than 5")),
            "condition"
        );
        let mut s = spec("integration.error_rate", "> 5");
        s.window = Some("soon".into());
        assert_eq!(err(s), "window");
        let mut s = spec("integration.error_rate", "> 5");
        s.for_ = Some("5 parsecs".into());
        assert_eq!(err(s), "for");
        let mut s = spec("integration.error_rate", "> 5");
        s.severity = Some("apocalyptic".into());
        assert_eq!(err(s), "severity");
        let mut s = spec("integration.error_rate", "> 5");
        s.notifiers = vec!["ops".into(), "nobody".into()];
        assert_eq!(err(s), "notifiers[1]");
        let mut s = spec("integration.error_rate", "> 5");
        s.labels.insert("bad label".into(), "x".into());
        assert_eq!(err(s), "labels.bad label");
        let ok = spec("opsdeck_http_requests_total", "> 1")
            .validate(&["opsdeck_http_requests_total".into()], &[])
            .unwrap();
        assert_eq!(ok.window, Duration::from_secs(300));
        assert_eq!(ok.severity, Severity::Warning);
    }

    #[test]
    fn steps_validate_and_pick_the_highest_level() {
        let err = |s: RuleSpec| match s.validate(&[], &[]) {
            Err(AlertsError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let step = |at: f64, severity: &str| StepSpec {
            at,
            severity: severity.into(),
        };
        let mut s = spec("quota.percent", ">= 80");
        s.steps = vec![step(90.0, "warning"), step(85.0, "critical")];
        assert_eq!(err(s), "steps[1].at");
        let mut s = spec("quota.percent", ">= 80");
        s.steps = vec![step(90.0, "dire")];
        assert_eq!(err(s), "steps[0].severity");
        let mut s = spec("quota.percent", "== 80");
        s.steps = vec![step(90.0, "warning")];
        assert_eq!(err(s), "steps");
        let mut s = spec("token.expiry_hours", "< 24");
        s.steps = vec![step(30.0, "critical")];
        assert_eq!(err(s), "steps[0].at", "a falling rule steps downwards");

        let quota = defaults(&[])
            .into_iter()
            .find(|r| r.name == QUOTA_RULE)
            .unwrap()
            .validate(&[], &[])
            .unwrap();
        assert_eq!(quota.levels.len(), 4);
        assert_eq!(quota.level_for(79.9, None), None);
        assert_eq!(quota.level_for(80.0, None), Some(0));
        assert_eq!(quota.level_for(95.0, None), Some(1));
        assert_eq!(quota.level_for(125.0, None), Some(3));
        // Up at once; down only past the 2-point hysteresis.
        assert_eq!(quota.level_for(100.0, Some(1)), Some(2));
        assert_eq!(quota.level_for(118.5, Some(3)), Some(3));
        assert_eq!(quota.level_for(117.9, Some(3)), Some(2));
        assert_eq!(quota.level_for(85.0, Some(3)), Some(0));
        assert_eq!(quota.level_for(78.5, Some(0)), Some(0));
        assert_eq!(quota.level_for(77.9, Some(0)), None);
        assert_eq!(quota.level_of(120.0), 3);
        assert_eq!(quota.levels[3].severity, Severity::Critical);
        assert_eq!(quota.levels[0].severity, Severity::Info);
    }

    #[test]
    fn defaults_validate() {
        for d in defaults(&[]) {
            d.validate(&[], &[]).unwrap();
        }
    }
}
