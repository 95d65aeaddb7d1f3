//! The evaluator. Each run reads every metric the rules use (once per metric and window),
//! decides each series' transition with [`decide`] — a pure function, so flapping, `for`,
//! hysteresis and reminders are unit-tested without a clock — and writes the transitions and
//! their notifications in one transaction. Transitions are conditional updates on the
//! alert's previous state, and notifications are queued in the same transaction, so a run
//! repeated (two instances, a retry after a crash) cannot notify twice. Alerts changing in a
//! run that share a group key, status and route go out as one notification.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};

use super::AlertsError;
use super::metrics::{self, Metric, Sample};
use super::rules::Rule;
use super::silences::{self, Silence};
use crate::args;
use crate::events::{Channel, Event};
use crate::store::{Store, Tx};
use crate::usage::quota::rfc3339;
use crate::webhooks::queue;

type Result<T, E = AlertsError> = std::result::Result<T, E>;

/// An open (pending or firing) alert as the evaluator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    pub id: i64,
    pub firing: bool,
    pub pending_since: i64,
    pub last_notified_at: Option<i64>,
    pub acked: bool,
    pub value: Option<f64>,
}

/// What one series does in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing to write (or only the current value).
    Stay,
    /// The condition started holding; it must hold for `for` before firing.
    Pend,
    /// Fires now (new, or pending long enough).
    Fire,
    /// A pending alert whose condition stopped holding before it fired: forgotten.
    Clear,
    Resolve,
    /// Still firing, unacknowledged, and not notified for the repeat interval.
    Remind,
}

/// The transition of one series. `value` is `None` when the series is gone (an integration
/// removed, a window with no checks): an open alert then ends as if healthy. In a
/// maintenance window nothing new is raised and nothing already firing changes.
pub fn decide(
    rule: &Rule,
    open: Option<&Open>,
    value: Option<f64>,
    now: i64,
    repeat_ms: i64,
    maintenance: bool,
) -> Transition {
    let for_ms = i64::try_from(rule.for_.as_millis()).unwrap_or(i64::MAX);
    let breach = match (open, value) {
        (_, None) => false,
        (Some(o), Some(v)) if o.firing => rule.condition.still_holds(v, rule.hysteresis),
        (_, Some(v)) => rule.condition.holds(v),
    };
    match open {
        None if breach && !maintenance => {
            if for_ms == 0 {
                Transition::Fire
            } else {
                Transition::Pend
            }
        }
        None => Transition::Stay,
        Some(o) if !o.firing => {
            if !breach || maintenance {
                Transition::Clear
            } else if now - o.pending_since >= for_ms {
                Transition::Fire
            } else {
                Transition::Stay
            }
        }
        Some(_) if maintenance => Transition::Stay,
        Some(_) if !breach => Transition::Resolve,
        Some(o) => {
            let due = o
                .last_notified_at
                .is_some_and(|at| repeat_ms > 0 && now - at >= repeat_ms);
            if due && !o.acked {
                Transition::Remind
            } else {
                Transition::Stay
            }
        }
    }
}

/// The settings a run needs besides the rules.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Reminder interval, ms; 0 for none.
    pub repeat_ms: i64,
    /// Where the Alerts page is, for links in notifications (may be empty).
    pub alerts_url: String,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub rules: usize,
    pub series: usize,
    pub fired: usize,
    pub resolved: usize,
    pub reminded: usize,
    /// Notifications queued (one per group, status and route).
    pub notifications: usize,
}

/// The canonical identity of a series within a rule.
fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_default()
}

fn group_key(rule: &Rule, labels: &BTreeMap<String, String>) -> String {
    let mut key = format!("rule:{}", rule.id);
    for g in &rule.spec.group_by {
        key.push_str(&format!(
            "|{g}={}",
            labels.get(g).map(String::as_str).unwrap_or("")
        ));
    }
    key
}

fn summary(rule: &Rule, labels: &BTreeMap<String, String>, value: Option<f64>) -> String {
    let series: Vec<String> = labels
        .iter()
        .filter(|(k, _)| !rule.spec.labels.contains_key(*k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let value = value.map_or("no data".to_string(), |v| {
        format!("{}", (v * 100.0).round() / 100.0)
    });
    if series.is_empty() {
        format!(
            "{}: {} is {value} ({})",
            rule.spec.name, rule.spec.metric, rule.spec.condition
        )
    } else {
        format!(
            "{}: {} {} is {value} ({})",
            rule.spec.name,
            series.join(", "),
            rule.spec.metric,
            rule.spec.condition
        )
    }
}

/// An alert changing in this run, to be notified.
struct Change {
    rule: usize,
    alert: Value,
    status: &'static str,
    id: i64,
    silenced: bool,
}

/// Evaluates every rule at `now`. `prometheus` is this instance's `/metrics` text. Returns
/// what it did and the events to publish once committed.
pub async fn run(
    store: &Store,
    rules: &[Rule],
    now: i64,
    prometheus: &str,
    settings: &Settings,
) -> Result<(Report, Vec<Event>)> {
    let mut report = Report {
        rules: rules.len(),
        ..Report::default()
    };
    // Each metric and window read once.
    let mut readings: HashMap<(Metric, i64), Vec<Sample>> = HashMap::new();
    for rule in rules.iter().filter(|r| r.spec.enabled) {
        let window = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX);
        if let std::collections::hash_map::Entry::Vacant(slot) =
            readings.entry((rule.metric.clone(), window))
        {
            slot.insert(metrics::read(store, &rule.metric, window, now, prometheus).await?);
        }
    }
    let open = load_open(store).await?;
    let silences = silences::current(store, now).await?;
    let endpoints: HashMap<String, i64> = store
        .fetch_all::<(String, i64)>("SELECT name, id FROM webhook_endpoints", args![])
        .await?
        .into_iter()
        .collect();

    let mut indexes: HashMap<((Metric, i64), String), ByValue> = HashMap::new();
    let mut tx = store.begin().await?;
    let mut changes: Vec<Change> = Vec::new();
    for (ri, rule) in rules.iter().enumerate() {
        if !rule.spec.enabled {
            continue;
        }
        let window = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX);
        let key = (rule.metric.clone(), window);
        let samples = &readings[&key];
        // A rule filtered to one series (one integration, one customer) looks its candidates
        // up by the first filter label instead of scanning every series of the metric.
        let candidates: Vec<&Sample> = match rule.spec.filter.iter().next() {
            Some((k, v)) => {
                let by_value = indexes
                    .entry((key, k.clone()))
                    .or_insert_with(|| index(samples, k));
                by_value
                    .get(v)
                    .map(|ix| ix.iter().map(|&i| &samples[i]).collect())
                    .unwrap_or_default()
            }
            None => samples.iter().collect(),
        };
        let mut seen: HashSet<String> = HashSet::new();
        let mut series: Vec<(BTreeMap<String, String>, Option<f64>)> = Vec::new();
        for s in candidates {
            if !rule
                .spec
                .filter
                .iter()
                .all(|(k, v)| s.labels.get(k) == Some(v))
            {
                continue;
            }
            let mut labels = s.labels.clone();
            labels.extend(rule.spec.labels.clone());
            seen.insert(fingerprint(&labels));
            series.push((labels, Some(s.value)));
        }
        // Open alerts whose series is gone end as if healthy.
        if let Some(of_rule) = open.get(&rule.id) {
            for (fp, (labels, _)) in of_rule {
                if !seen.contains(fp) {
                    series.push((labels.clone(), None));
                }
            }
        }
        report.series += series.len();
        for (labels, value) in series {
            let fp = fingerprint(&labels);
            let current = open.get(&rule.id).and_then(|m| m.get(&fp)).map(|(_, o)| o);
            let severity = rule.severity.as_str();
            let covering = |kind: &str| {
                silences.iter().any(|s: &Silence| {
                    s.kind == kind && s.active(now) && s.matches(&rule.spec.name, severity, &labels)
                })
            };
            let maintenance = covering("maintenance");
            let t = decide(rule, current, value, now, settings.repeat_ms, maintenance);
            let (id, status) = match (t, current) {
                (Transition::Stay, Some(o)) => {
                    if value.is_some() && value != o.value {
                        tx.execute(
                            "UPDATE alerts SET value = $2 WHERE id = $1",
                            args![o.id, value],
                        )
                        .await?;
                    }
                    continue;
                }
                (Transition::Stay, None) => continue,
                (Transition::Pend | Transition::Fire, None) => {
                    let firing = t == Transition::Fire;
                    let row: Option<(i64,)> = tx
                        .fetch_optional(
                            "INSERT INTO alerts (rule_id, rule, fingerprint, labels, state, \
                             severity, group_key, summary, value, threshold, pending_since, \
                             started_at, updated_at) \
                             VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10) \
                             ON CONFLICT (rule_id, fingerprint) WHERE state <> 'resolved' \
                             DO NOTHING RETURNING id",
                            args![
                                rule.id,
                                rule.spec.name.as_str(),
                                fp.as_str(),
                                if firing { "firing" } else { "pending" },
                                severity,
                                group_key(rule, &labels),
                                summary(rule, &labels, value),
                                value,
                                rule.condition.threshold,
                                now,
                                firing.then_some(now)
                            ],
                        )
                        .await?;
                    let Some((id,)) = row else { continue };
                    event(
                        &mut tx,
                        id,
                        now,
                        if firing { "firing" } else { "pending" },
                        None,
                    )
                    .await?;
                    if !firing {
                        continue;
                    }
                    (id, "firing")
                }
                (Transition::Fire, Some(o)) => {
                    let n = tx
                        .execute(
                            "UPDATE alerts SET state = 'firing', started_at = $2, value = $3, \
                             summary = $4, updated_at = $2 WHERE id = $1 AND state = 'pending'",
                            args![o.id, now, value, summary(rule, &labels, value)],
                        )
                        .await?;
                    if n == 0 {
                        continue;
                    }
                    event(&mut tx, o.id, now, "firing", None).await?;
                    (o.id, "firing")
                }
                (Transition::Clear, Some(o)) => {
                    tx.execute(
                        "DELETE FROM alerts WHERE id = $1 AND state = 'pending'",
                        args![o.id],
                    )
                    .await?;
                    tx.execute("DELETE FROM alert_events WHERE alert_id = $1", args![o.id])
                        .await?;
                    continue;
                }
                (Transition::Resolve, Some(o)) => {
                    let n = tx
                        .execute(
                            "UPDATE alerts SET state = 'resolved', resolved_at = $2, \
                             value = COALESCE($3, value), updated_at = $2 \
                             WHERE id = $1 AND state = 'firing'",
                            args![o.id, now, value],
                        )
                        .await?;
                    if n == 0 {
                        continue;
                    }
                    event(&mut tx, o.id, now, "resolved", None).await?;
                    (o.id, "resolved")
                }
                (Transition::Remind, Some(o)) => {
                    event(&mut tx, o.id, now, "reminder", None).await?;
                    (o.id, "firing")
                }
                _ => continue,
            };
            match t {
                Transition::Resolve => report.resolved += 1,
                Transition::Remind => report.reminded += 1,
                _ => report.fired += 1,
            }
            let silenced = covering("silence") || maintenance;
            changes.push(Change {
                rule: ri,
                status,
                id,
                silenced,
                alert: alert_json(&mut tx, id).await?,
            });
        }
    }
    let events = notify(
        &mut tx,
        rules,
        &changes,
        &endpoints,
        now,
        settings,
        &mut report,
    )
    .await?;
    tx.commit().await?;
    Ok((report, events))
}

/// Positions of a metric's samples by the value of one label.
type ByValue = HashMap<String, Vec<usize>>;

/// Positions of `samples` by the value of their label `key`.
fn index(samples: &[Sample], key: &str) -> ByValue {
    let mut out: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, s) in samples.iter().enumerate() {
        if let Some(v) = s.labels.get(key) {
            out.entry(v.clone()).or_default().push(i);
        }
    }
    out
}

async fn event(tx: &mut Tx, alert: i64, at: i64, kind: &str, detail: Option<&str>) -> Result<()> {
    tx.execute(
        "INSERT INTO alert_events (alert_id, at, kind, detail) VALUES ($1, $2, $3, $4)",
        args![alert, at, kind, detail],
    )
    .await?;
    Ok(())
}

/// Groups the run's changes (rule route, group key, status) into notifications, queues each
/// to the route's notifiers and to endpoints subscribed to its type, and returns the events
/// to publish.
async fn notify(
    tx: &mut Tx,
    rules: &[Rule],
    changes: &[Change],
    endpoints: &HashMap<String, i64>,
    now: i64,
    settings: &Settings,
    report: &mut Report,
) -> Result<Vec<Event>> {
    let mut groups: BTreeMap<(String, &'static str, Vec<String>), Vec<&Change>> = BTreeMap::new();
    for c in changes {
        if c.silenced {
            event(tx, c.id, now, "silenced", Some(c.status)).await?;
            continue;
        }
        let rule = &rules[c.rule];
        let key = c.alert["group_key"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        groups
            .entry((key, c.status, rule.spec.notifiers.clone()))
            .or_default()
            .push(c);
    }
    let mut events = Vec::new();
    for ((key, status, route), members) in groups {
        let alerts: Vec<Value> = members.iter().map(|c| c.alert.clone()).collect();
        let rule = &rules[members[0].rule];
        let (kind, data) = notification(&key, status, rule.severity.as_str(), alerts, settings);
        let targets: Vec<i64> = route
            .iter()
            .filter_map(|n| endpoints.get(n).copied())
            .collect();
        let message = queue::enqueue_with(tx, kind, &data, now, &targets).await?;
        let detail = json!({"message": message, "notifiers": route}).to_string();
        for c in &members {
            event(tx, c.id, now, "notified", Some(&detail)).await?;
            tx.execute(
                "UPDATE alerts SET last_notified_at = $2 WHERE id = $1",
                args![c.id, now],
            )
            .await?;
        }
        report.notifications += 1;
        events.push(Event {
            channel: Channel::Alert,
            kind: kind.to_string(),
            at: now,
            data,
        });
    }
    Ok(events)
}

/// A notification's type and data (the shape every notifier renders).
pub fn notification(
    group_key: &str,
    status: &str,
    severity: &str,
    alerts: Vec<Value>,
    settings: &Settings,
) -> (&'static str, Value) {
    let kind = match status {
        "resolved" => "alert.resolved",
        "acknowledged" => "alert.acknowledged",
        _ => "alert.firing",
    };
    let first = alerts
        .first()
        .and_then(|a| a["summary"].as_str())
        .unwrap_or_default()
        .to_string();
    let summary = match alerts.len() {
        0 | 1 => first,
        n => format!("{first} (and {} more)", n - 1),
    };
    let data = json!({
        "group_key": group_key,
        "status": status,
        "severity": severity,
        "summary": summary,
        "url": settings.alerts_url,
        "alerts": alerts,
    });
    (kind, data)
}

/// Open alerts by rule, then fingerprint: (labels, state).
type OpenAlerts = HashMap<i64, HashMap<String, (BTreeMap<String, String>, Open)>>;

async fn load_open(store: &Store) -> Result<OpenAlerts> {
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        i64,
        i64,
        String,
        String,
        String,
        i64,
        Option<i64>,
        Option<i64>,
        Option<f64>,
    )> = store
        .fetch_all(
            "SELECT id, rule_id, fingerprint, labels, state, pending_since, last_notified_at, \
                 acked_at, value FROM alerts WHERE state <> 'resolved'",
            args![],
        )
        .await?;
    let mut out: OpenAlerts = HashMap::new();
    for (id, rule, fp, labels, state, pending_since, last_notified_at, acked_at, value) in rows {
        let labels: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap_or_default();
        out.entry(rule).or_default().insert(
            fp,
            (
                labels,
                Open {
                    id,
                    firing: state == "firing",
                    pending_since,
                    last_notified_at,
                    acked: acked_at.is_some(),
                    value,
                },
            ),
        );
    }
    Ok(out)
}

/// One alert as notifications, events and the API show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct AlertRow {
    pub id: i64,
    pub rule_id: i64,
    pub rule: String,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    pub severity: String,
    pub group_key: String,
    pub summary: String,
    #[sqlx(skip)]
    #[schema(value_type = Object)]
    pub labels: BTreeMap<String, String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub labels_json: String,
    pub value: Option<f64>,
    pub threshold: f64,
    /// UTC ms.
    pub pending_since: i64,
    pub started_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub last_notified_at: Option<i64>,
    pub acked_by: Option<String>,
    pub acked_at: Option<i64>,
    pub ack_note: Option<String>,
}

pub const ALERT_COLUMNS: &str = "id, rule_id, rule, state, severity, group_key, summary, \
    labels AS labels_json, value, threshold, pending_since, started_at, resolved_at, \
    last_notified_at, acked_by, acked_at, ack_note";

impl AlertRow {
    pub fn fill(mut self) -> Self {
        self.labels = serde_json::from_str(&self.labels_json).unwrap_or_default();
        self
    }

    /// The shape in notifications (times as RFC 3339).
    pub fn to_json(&self) -> Value {
        let t = |v: Option<i64>| v.map(rfc3339);
        json!({
            "id": self.id,
            "rule": self.rule,
            "rule_id": self.rule_id,
            "severity": self.severity,
            "state": self.state,
            "summary": self.summary,
            "labels": self.labels,
            "value": self.value,
            "threshold": self.threshold,
            "group_key": self.group_key,
            "started_at": t(self.started_at),
            "resolved_at": t(self.resolved_at),
            "acked_by": self.acked_by,
            "ack_note": self.ack_note,
        })
    }
}

async fn load_alert(tx: &mut Tx, id: i64) -> Result<AlertRow> {
    let rows: Vec<AlertRow> = tx
        .fetch_all_assembled(
            format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"),
            args![id],
        )
        .await?;
    rows.into_iter()
        .next()
        .map(AlertRow::fill)
        .ok_or_else(|| AlertsError::NotFound(format!("no alert {id}")))
}

async fn alert_json(tx: &mut Tx, id: i64) -> Result<Value> {
    Ok(load_alert(tx, id).await?.to_json())
}

/// Acknowledges a firing alert: who, when, a note; reminders stop and the rule's notifiers
/// are told (PagerDuty acknowledges the incident). Returns the alert and the event to publish.
pub async fn acknowledge(
    store: &Store,
    id: i64,
    who: &str,
    note: &str,
    now: i64,
    settings: &Settings,
) -> Result<(AlertRow, Event)> {
    if note.len() > 2000 {
        return Err(AlertsError::Invalid {
            field: "note".into(),
            message: "at most 2000 characters".into(),
        });
    }
    let mut tx = store.begin().await?;
    let row: Option<(String, i64, Option<i64>)> = tx
        .fetch_optional(
            "SELECT state, rule_id, acked_at FROM alerts WHERE id = $1",
            args![id],
        )
        .await?;
    let Some((state, rule_id, acked_at)) = row else {
        return Err(AlertsError::NotFound(format!("no alert {id}")));
    };
    if state != "firing" {
        return Err(AlertsError::Conflict(format!(
            "alert {id} is {state}; only a firing alert can be acknowledged"
        )));
    }
    if acked_at.is_some() {
        return Err(AlertsError::Conflict(format!(
            "alert {id} is already acknowledged"
        )));
    }
    let n = tx
        .execute(
            "UPDATE alerts SET acked_by = $2, acked_at = $3, ack_note = $4, updated_at = $3 \
             WHERE id = $1 AND state = 'firing' AND acked_at IS NULL",
            args![id, who, now, note],
        )
        .await?;
    if n == 0 {
        return Err(AlertsError::Conflict(format!(
            "alert {id} changed meanwhile"
        )));
    }
    event(
        &mut tx,
        id,
        now,
        "acknowledged",
        Some(&json!({"by": who, "note": note}).to_string()),
    )
    .await?;
    let spec: Option<(String,)> = tx
        .fetch_optional("SELECT spec FROM alert_rules WHERE id = $1", args![rule_id])
        .await?;
    let route: Vec<String> = spec
        .and_then(|(s,)| serde_json::from_str::<super::rules::RuleSpec>(&s).ok())
        .map(|s| s.notifiers)
        .unwrap_or_default();
    let targets: Vec<i64> = if route.is_empty() {
        Vec::new()
    } else {
        let all: Vec<(String, i64)> = tx
            .fetch_all("SELECT name, id FROM webhook_endpoints", args![])
            .await?;
        all.into_iter()
            .filter(|(n, _)| route.contains(n))
            .map(|(_, id)| id)
            .collect()
    };
    let alert = load_alert(&mut tx, id).await?;
    let (kind, mut data) = notification(
        &alert.group_key,
        "acknowledged",
        &alert.severity,
        vec![alert.to_json()],
        settings,
    );
    data["acked_by"] = json!(who);
    queue::enqueue_with(&mut tx, kind, &data, now, &targets).await?;
    tx.commit().await?;
    Ok((
        alert,
        Event {
            channel: Channel::Alert,
            kind: kind.to_string(),
            at: now,
            data,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::RuleSpec;

    fn rule(condition: &str, for_: &str, hysteresis: f64) -> Rule {
        let spec: RuleSpec = serde_json::from_value(json!({
            "name": "r", "metric": "integration.error_rate", "condition": condition,
            "for": for_, "hysteresis": hysteresis
        }))
        .unwrap();
        spec.validate(&[], &[]).unwrap()
    }

    fn open(firing: bool, since: i64) -> Open {
        Open {
            id: 1,
            firing,
            pending_since: since,
            last_notified_at: firing.then_some(since),
            acked: false,
            value: None,
        }
    }

    #[test]
    fn pending_waits_for_the_for_duration() {
        let r = rule("> 5", "1m", 0.0);
        assert_eq!(decide(&r, None, Some(9.0), 0, 0, false), Transition::Pend);
        let p = open(false, 0);
        assert_eq!(
            decide(&r, Some(&p), Some(9.0), 59_999, 0, false),
            Transition::Stay
        );
        assert_eq!(
            decide(&r, Some(&p), Some(9.0), 60_000, 0, false),
            Transition::Fire
        );
        // Stops holding before `for`: forgotten, never notified.
        assert_eq!(
            decide(&r, Some(&p), Some(1.0), 30_000, 0, false),
            Transition::Clear
        );
        let now = rule("> 5", "0s", 0.0);
        assert_eq!(decide(&now, None, Some(9.0), 0, 0, false), Transition::Fire);
    }

    #[test]
    fn flapping_is_held_by_for_and_hysteresis() {
        // A value flapping across the threshold every run never fires with `for` longer
        // than its runs of holding.
        let r = rule("> 5", "90s", 0.0);
        let mut state: Option<Open> = None;
        let mut fired = 0;
        for i in 0..20i64 {
            let v = if i % 2 == 0 { 9.0 } else { 1.0 };
            let now = i * 30_000;
            match decide(&r, state.as_ref(), Some(v), now, 0, false) {
                Transition::Pend => state = Some(open(false, now)),
                Transition::Clear => state = None,
                Transition::Fire => fired += 1,
                _ => {}
            }
        }
        assert_eq!(fired, 0);
        // Firing with hysteresis 2: dipping to 4 keeps firing, 2.9 resolves.
        let h = rule("> 5", "0s", 2.0);
        let f = open(true, 0);
        assert_eq!(
            decide(&h, Some(&f), Some(4.0), 1, 0, false),
            Transition::Stay
        );
        assert_eq!(
            decide(&h, Some(&f), Some(3.1), 1, 0, false),
            Transition::Stay
        );
        assert_eq!(
            decide(&h, Some(&f), Some(2.9), 1, 0, false),
            Transition::Resolve
        );
        // A series that disappears resolves its alert.
        assert_eq!(decide(&h, Some(&f), None, 1, 0, false), Transition::Resolve);
    }

    #[test]
    fn reminders_until_acknowledged_and_maintenance_holds() {
        let r = rule("> 5", "0s", 0.0);
        let f = open(true, 0);
        assert_eq!(
            decide(&r, Some(&f), Some(9.0), 3_599_999, 3_600_000, false),
            Transition::Stay
        );
        assert_eq!(
            decide(&r, Some(&f), Some(9.0), 3_600_000, 3_600_000, false),
            Transition::Remind
        );
        assert_eq!(
            decide(&r, Some(&f), Some(9.0), 9_000_000, 0, false),
            Transition::Stay
        );
        let acked = Open {
            acked: true,
            ..f.clone()
        };
        assert_eq!(
            decide(&r, Some(&acked), Some(9.0), 9_000_000, 3_600_000, false),
            Transition::Stay
        );
        // Maintenance: nothing new, nothing firing changes, pending is dropped.
        assert_eq!(decide(&r, None, Some(9.0), 0, 0, true), Transition::Stay);
        assert_eq!(
            decide(&r, Some(&f), Some(1.0), 0, 0, true),
            Transition::Stay
        );
        assert_eq!(
            decide(&r, Some(&open(false, 0)), Some(9.0), 0, 0, true),
            Transition::Clear
        );
    }
}
