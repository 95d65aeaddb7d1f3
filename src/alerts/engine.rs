//! The evaluator. Each run reads every metric the rules use (once per metric and window),
//! decides each series' transition with [`decide`] — a pure function, so flapping, `for`,
//! hysteresis and reminders are unit-tested without a clock — and writes the transitions and
//! their notifications in one transaction. Transitions are conditional updates on the
//! alert's previous state, and notifications are queued in the same transaction, so a run
//! repeated (two instances, a retry after a crash) cannot notify twice. Alerts changing in a
//! run that share a group key, status and route go out as one notification.
//!
//! A rule with steps (the built-in quota rule: 80, 90, 100, 120 %) still gives a series one
//! open alert: reaching a higher step resolves the alert at the lower one as superseded and
//! opens one at the higher step (notified as firing), and falling back past the hysteresis
//! steps down the same way, quietly, keeping the acknowledgement. Both rows and both
//! timeline entries are written by the same conditional update in the same transaction.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};

use super::AlertsError;
use super::metrics::{self, Metric, Sample};
use super::rules::{Op, Rule, Severity};
use super::silences::{self, Silence};
use crate::access::audit::{self, Actor};
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
    pub acked_by: Option<String>,
    pub acked_at: Option<i64>,
    pub ack_note: Option<String>,
    pub value: Option<f64>,
    /// The threshold it was raised at, which says its step.
    pub threshold: f64,
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
    /// Still firing, at another step of the rule (the level it moves to): the alert is
    /// superseded by one at that step.
    Step(usize),
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
    let holds = value.is_some_and(|v| rule.condition.holds(v));
    match open {
        None if holds && !maintenance => {
            if for_ms == 0 {
                Transition::Fire
            } else {
                Transition::Pend
            }
        }
        None => Transition::Stay,
        Some(o) if !o.firing => {
            if !holds || maintenance {
                Transition::Clear
            } else if now - o.pending_since >= for_ms {
                Transition::Fire
            } else {
                Transition::Stay
            }
        }
        Some(_) if maintenance => Transition::Stay,
        Some(o) => {
            let current = rule.level_of(o.threshold);
            match value.and_then(|v| rule.level_for(v, Some(current))) {
                None => Transition::Resolve,
                Some(level) if level != current => Transition::Step(level),
                Some(_) => {
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
    /// Alerts replaced by one at a lower step (not notified).
    pub stepped_down: usize,
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

fn percent(v: f64) -> String {
    format!("{} %", (v * 10.0).round() / 10.0)
}

/// One alert's line: the rule, the series, the value and the threshold it crossed.
fn summary(
    rule: &Rule,
    level: usize,
    labels: &BTreeMap<String, String>,
    value: Option<f64>,
) -> String {
    let condition = rule.levels[level].condition;
    if rule.metric == Metric::QuotaPercent
        && let Some(customer) = labels.get("customer")
    {
        let plan = labels
            .get("plan")
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        let value = value.map_or("no data".to_string(), percent);
        return format!(
            "{customer}{plan} at {value} of quota ({} {} %)",
            condition.op.as_str(),
            condition.threshold
        );
    }
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
            "{}: {} is {value} ({condition})",
            rule.spec.name, rule.spec.metric
        )
    } else {
        format!(
            "{}: {} {} is {value} ({condition})",
            rule.spec.name,
            series.join(", "),
            rule.spec.metric
        )
    }
}

/// How many of a group's alerts a headline names before "and n more".
const NAMED: usize = 3;

/// The headline of a notification about `alerts` (worst first) of a rule on `metric`: the
/// alert's own summary for one; for quota alerts of many customers "12 customers over quota:
/// a (123 %), b (104 %), c (101 %) and 9 more"; otherwise the first and how many more.
pub fn group_summary(metric: &str, status: &str, alerts: &[Value]) -> String {
    let first = alerts
        .first()
        .and_then(|a| a["summary"].as_str())
        .unwrap_or_default()
        .to_string();
    let n = alerts.len();
    if n <= 1 {
        return first;
    }
    let more = if n > NAMED {
        format!(" and {} more", n - NAMED)
    } else {
        String::new()
    };
    if metric == "quota.percent" {
        let what = match status {
            "resolved" => "back under quota",
            "acknowledged" => "over quota acknowledged",
            _ => "over quota",
        };
        let named: Vec<String> = alerts
            .iter()
            .take(NAMED)
            .map(|a| {
                let who = a["labels"]["customer"].as_str().unwrap_or("?");
                match a["value"].as_f64() {
                    Some(v) => format!("{who} ({})", percent(v)),
                    None => who.to_string(),
                }
            })
            .collect();
        return format!("{n} customers {what}: {}{more}", named.join(", "));
    }
    format!("{first} (and {} more)", n - 1)
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
/// Transitions written per transaction. A burst (a bulk import taking 20k customers over their
/// quota at once) written in one transaction held SQLite's write lock for 25 s, and every
/// other writer (the Stripe sync, lease renewals, sign-ins) failed behind it.
pub const RUN_CHUNK: usize = 500;

pub async fn run(
    store: &Store,
    rules: &[Rule],
    now: i64,
    prometheus: &str,
    settings: &Settings,
) -> Result<(Report, Vec<Event>)> {
    run_chunked(store, rules, now, prometheus, settings, RUN_CHUNK).await
}

/// [`run`], committing (with its notifications) after every `chunk` transitions: a group of
/// alerts changing in one run is then notified in messages of at most `chunk` alerts.
pub async fn run_chunked(
    store: &Store,
    rules: &[Rule],
    now: i64,
    prometheus: &str,
    settings: &Settings,
    chunk: usize,
) -> Result<(Report, Vec<Event>)> {
    let chunk = chunk.max(1);
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
    let run = RunCtx {
        rules,
        endpoints: &endpoints,
        now,
        settings,
    };
    // Every series is decided first, without a transaction: on SQLite a transaction holds
    // the one write lock, and a run over tens of thousands of series (a quota rule over every
    // customer) kept every other writer (ingest, syncs, lease renewals) waiting for all of it.
    // Only the transitions and the moved values are written, after.
    let mut decided: Vec<Decided> = Vec::new();
    // Open alerts whose value moved without a transition, written together at the end.
    let mut moved: Vec<(i64, f64)> = Vec::new();
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
            // The step the series is at: where its value puts it, else where its alert is.
            let at = current.map(|o| rule.level_of(o.threshold));
            let level = value
                .and_then(|v| rule.level_for(v, at.filter(|_| current.is_some_and(|o| o.firing))))
                .or(at)
                .unwrap_or(0);
            let severity = rule.levels[level].severity.as_str();
            let covering = |kind: &str| {
                silences.iter().any(|s: &Silence| {
                    s.kind == kind && s.active(now) && s.matches(&rule.spec.name, severity, &labels)
                })
            };
            let maintenance = covering("maintenance");
            let t = decide(rule, current, value, now, settings.repeat_ms, maintenance);
            if t == Transition::Stay {
                if let (Some(o), Some(v)) = (current, value)
                    && value != o.value
                {
                    moved.push((o.id, v));
                }
                continue;
            }
            let silenced = covering("silence") || maintenance;
            decided.push(Decided {
                ri,
                labels,
                fp,
                level,
                value,
                t,
                current,
                silenced,
            });
        }
    }
    if decided.is_empty() && moved.is_empty() {
        return Ok((report, Vec::new()));
    }

    let mut tx = store.begin().await?;
    let mut changes: Vec<Change> = Vec::new();
    // Transitions written in the open transaction, and the events of those committed.
    let mut written = 0;
    let mut events: Vec<Event> = Vec::new();
    for d in decided {
        let Decided {
            ri,
            labels,
            fp,
            level,
            value,
            t,
            current,
            silenced,
        } = d;
        let rule = &rules[ri];
        if written >= chunk {
            let done = std::mem::take(&mut changes);
            events.extend(run.commit(tx, &done, &mut report).await?);
            written = 0;
            // A burst is many chunks back to back: the writes waiting meanwhile (a lease
            // renewal, a Stripe page) go first.
            store.give_way().await;
            tx = store.begin().await?;
        }
        written += 1;
        let (id, status) = match (t, current) {
            (Transition::Pend | Transition::Fire, None) => {
                let firing = t == Transition::Fire;
                let new = NewAlert {
                    rule,
                    level,
                    fingerprint: &fp,
                    labels: &labels,
                    value,
                };
                let Some(id) = new.insert(&mut tx, firing, now).await? else {
                    continue;
                };
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
                let lv = rule.levels[level];
                let n = tx
                    .execute(
                        "UPDATE alerts SET state = 'firing', started_at = $2, value = $3, \
                         summary = $4, severity = $5, threshold = $6, updated_at = $2 \
                         WHERE id = $1 AND state = 'pending'",
                        args![
                            o.id,
                            now,
                            value,
                            summary(rule, level, &labels, value),
                            lv.severity.as_str(),
                            lv.condition.threshold
                        ],
                    )
                    .await?;
                if n == 0 {
                    continue;
                }
                event(&mut tx, o.id, now, "firing", None).await?;
                (o.id, "firing")
            }
            (Transition::Step(to), Some(o)) => {
                let from = rule.level_of(o.threshold);
                if !resolve_firing(&mut tx, o.id, now, value).await? {
                    continue;
                }
                let new = NewAlert {
                    rule,
                    level: to,
                    fingerprint: &fp,
                    labels: &labels,
                    value,
                };
                let id = new.insert(&mut tx, true, now).await?.ok_or_else(|| {
                    AlertsError::Internal(format!("alert {} was replaced meanwhile", o.id))
                })?;
                let up = to > from;
                let lv = rule.levels[to];
                let was = rule.levels[from];
                event(
                    &mut tx,
                    o.id,
                    now,
                    "superseded",
                    Some(
                        &json!({"by": id, "severity": lv.severity.as_str(),
                                "threshold": lv.condition.threshold})
                        .to_string(),
                    ),
                )
                .await?;
                event(
                    &mut tx,
                    id,
                    now,
                    if up { "escalated" } else { "stepped_down" },
                    Some(
                        &json!({"replaces": o.id, "severity": was.severity.as_str(),
                                "threshold": was.condition.threshold})
                        .to_string(),
                    ),
                )
                .await?;
                if !up {
                    // Good news is not paged: the lower alert carries on where the higher
                    // one was, acknowledged if it was, reminded on the same clock.
                    tx.execute(
                        "UPDATE alerts SET acked_by = $2, acked_at = $3, ack_note = $4, \
                         last_notified_at = $5 WHERE id = $1",
                        args![
                            id,
                            o.acked_by.clone(),
                            o.acked_at,
                            o.ack_note.clone(),
                            o.last_notified_at
                        ],
                    )
                    .await?;
                    report.stepped_down += 1;
                    continue;
                }
                (id, "firing")
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
                if !resolve_firing(&mut tx, o.id, now, value).await? {
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
        changes.push(Change {
            rule: ri,
            status,
            id,
            silenced,
            alert: alert_json(&mut tx, id).await?,
        });
    }
    update_values(&mut tx, &moved).await?;
    events.extend(run.commit(tx, &changes, &mut report).await?);
    Ok((report, events))
}

/// Resolves alert `id` if it is still firing (a step to another level resolves the old one
/// too); returns whether it was.
async fn resolve_firing(tx: &mut Tx, id: i64, now: i64, value: Option<f64>) -> Result<bool> {
    let n = tx
        .execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = $2, \
             value = COALESCE($3, value), updated_at = $2 WHERE id = $1 AND state = 'firing'",
            args![id, now, value],
        )
        .await?;
    Ok(n > 0)
}

/// A series whose alert changes in this run, as decided before anything is written.
struct Decided<'a> {
    /// Index of its rule.
    ri: usize,
    labels: BTreeMap<String, String>,
    fp: String,
    level: usize,
    value: Option<f64>,
    t: Transition,
    current: Option<&'a Open>,
    silenced: bool,
}

/// What a run's commits share.
struct RunCtx<'a> {
    rules: &'a [Rule],
    endpoints: &'a HashMap<String, i64>,
    now: i64,
    settings: &'a Settings,
}

impl RunCtx<'_> {
    /// Queues the notifications of `changes` and commits them with the transitions.
    async fn commit(
        &self,
        mut tx: Tx,
        changes: &[Change],
        report: &mut Report,
    ) -> Result<Vec<Event>> {
        let events = notify(
            &mut tx,
            self.rules,
            changes,
            self.endpoints,
            self.now,
            self.settings,
            report,
        )
        .await?;
        tx.commit().await?;
        Ok(events)
    }
}

/// Alerts' values updated per statement: two parameters each, well under both backends'
/// limits.
const VALUES_PER_UPDATE: usize = 400;

/// Sets each open alert's current value. With tens of thousands of open alerts (a quota rule
/// over every customer) whose values move on every evaluation, one statement per alert held
/// the transaction, and on SQLite the one write lock, for seconds at every evaluation.
async fn update_values(tx: &mut Tx, moved: &[(i64, f64)]) -> Result<()> {
    for chunk in moved.chunks(VALUES_PER_UPDATE) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
            .collect();
        let sql = format!(
            "WITH v (id, value) AS (VALUES {}) \
             UPDATE alerts SET value = v.value FROM v WHERE alerts.id = v.id",
            rows.join(", ")
        );
        let mut params = Vec::with_capacity(chunk.len() * 2);
        for &(id, value) in chunk {
            params.extend(args![id, value]);
        }
        tx.execute_assembled(sql, params).await?;
    }
    Ok(())
}

/// An alert about to be stored: a rule's series at one of its levels.
struct NewAlert<'a> {
    rule: &'a Rule,
    level: usize,
    fingerprint: &'a str,
    labels: &'a BTreeMap<String, String>,
    value: Option<f64>,
}

impl NewAlert<'_> {
    /// Inserts it pending or firing; `None` when the series already has an open alert (the
    /// partial unique index: another run got there first).
    async fn insert(&self, tx: &mut Tx, firing: bool, now: i64) -> Result<Option<i64>> {
        let level = self.rule.levels[self.level];
        let row: Option<(i64,)> = tx
            .fetch_optional(
                "INSERT INTO alerts (rule_id, rule, fingerprint, labels, state, \
                 severity, group_key, summary, value, threshold, pending_since, \
                 started_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $11) \
                 ON CONFLICT (rule_id, fingerprint) WHERE state <> 'resolved' \
                 DO NOTHING RETURNING id",
                args![
                    self.rule.id,
                    self.rule.spec.name.as_str(),
                    self.fingerprint,
                    fingerprint(self.labels),
                    if firing { "firing" } else { "pending" },
                    level.severity.as_str(),
                    group_key(self.rule, self.labels),
                    summary(self.rule, self.level, self.labels, self.value),
                    self.value,
                    level.condition.threshold,
                    now,
                    firing.then_some(now)
                ],
            )
            .await?;
        Ok(row.map(|r| r.0))
    }
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
    for ((key, status, route), mut members) in groups {
        let rule = &rules[members[0].rule];
        let rising = matches!(rule.condition.op, Op::Gt | Op::Ge);
        members.sort_by(|a, b| worse(&a.alert, &b.alert, rising));
        let alerts: Vec<Value> = members.iter().map(|c| c.alert.clone()).collect();
        let summary = group_summary(&rule.spec.metric, status, &alerts);
        let (kind, mut data) = notification(&key, status, summary, alerts, settings);
        if status == "resolved" {
            // Others of the group may still fire: PagerDuty then keeps the incident open.
            let (open,): (i64,) = tx
                .fetch_one(
                    "SELECT COUNT(*) FROM alerts WHERE state = 'firing' AND group_key = $1",
                    args![key.as_str()],
                )
                .await?;
            data["group_open"] = json!(open);
        }
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

fn severity_of(alert: &Value) -> Severity {
    alert["severity"]
        .as_str()
        .and_then(Severity::parse)
        .unwrap_or(Severity::Info)
}

/// Orders a group's alerts worst first: by severity, then by how far past the threshold
/// (`rising`: higher values are worse), then oldest first.
fn worse(a: &Value, b: &Value, rising: bool) -> std::cmp::Ordering {
    let value = |x: &Value| x["value"].as_f64().unwrap_or(0.0);
    let by_value = value(b).total_cmp(&value(a));
    severity_of(b)
        .cmp(&severity_of(a))
        .then(if rising { by_value } else { by_value.reverse() })
        .then(a["id"].as_i64().cmp(&b["id"].as_i64()))
}

/// A notification's type and data (the shape every notifier renders). The severity is the
/// gravest of the alerts'.
pub fn notification(
    group_key: &str,
    status: &str,
    summary: String,
    alerts: Vec<Value>,
    settings: &Settings,
) -> (&'static str, Value) {
    let kind = match status {
        "resolved" => "alert.resolved",
        "acknowledged" => "alert.acknowledged",
        _ => "alert.firing",
    };
    let severity = alerts
        .iter()
        .map(severity_of)
        .max()
        .unwrap_or(Severity::Info);
    let data = json!({
        "group_key": group_key,
        "status": status,
        "severity": severity.as_str(),
        "summary": summary,
        "count": alerts.len(),
        "url": settings.alerts_url,
        "alerts": alerts,
    });
    (kind, data)
}

/// Open alerts by rule, then fingerprint: (labels, state).
type OpenAlerts = HashMap<i64, HashMap<String, (BTreeMap<String, String>, Open)>>;

async fn load_open(store: &Store) -> Result<OpenAlerts> {
    let rows: Vec<OpenRow> = store
        .fetch_all(
            "SELECT id, rule_id, fingerprint, labels, state, pending_since, last_notified_at, \
                 acked_by, acked_at, ack_note, value, threshold \
                 FROM alerts WHERE state <> 'resolved'",
            args![],
        )
        .await?;
    let mut out: OpenAlerts = HashMap::new();
    for r in rows {
        let labels: BTreeMap<String, String> = serde_json::from_str(&r.labels).unwrap_or_default();
        out.entry(r.rule_id).or_default().insert(
            r.fingerprint,
            (
                labels,
                Open {
                    id: r.id,
                    firing: r.state == "firing",
                    pending_since: r.pending_since,
                    last_notified_at: r.last_notified_at,
                    acked: r.acked_at.is_some(),
                    acked_by: r.acked_by,
                    acked_at: r.acked_at,
                    ack_note: r.ack_note,
                    value: r.value,
                    threshold: r.threshold,
                },
            ),
        );
    }
    Ok(out)
}

struct OpenRow {
    id: i64,
    rule_id: i64,
    fingerprint: String,
    labels: String,
    state: String,
    pending_since: i64,
    last_notified_at: Option<i64>,
    acked_by: Option<String>,
    acked_at: Option<i64>,
    ack_note: Option<String>,
    value: Option<f64>,
    threshold: f64,
}
crate::from_row!(OpenRow {
    id,
    rule_id,
    fingerprint,
    labels,
    state,
    pending_since,
    last_notified_at,
    acked_by,
    acked_at,
    ack_note,
    value,
    threshold
});

/// One alert as notifications, events and the API show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AlertRow {
    pub id: i64,
    pub rule_id: i64,
    pub rule: String,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    pub severity: String,
    pub group_key: String,
    pub summary: String,
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
crate::from_row!(AlertRow {
    id,
    rule_id,
    rule,
    state,
    severity,
    group_key,
    summary,
    labels: skip,
    labels_json,
    value,
    threshold,
    pending_since,
    started_at,
    resolved_at,
    last_notified_at,
    acked_by,
    acked_at,
    ack_note
});

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
    actor: &Actor,
    note: &str,
    now: i64,
    settings: &Settings,
) -> Result<(AlertRow, Event)> {
    let (mut alerts, mut events) =
        acknowledge_many(store, &[id], actor, note, now, settings).await?;
    match (alerts.pop(), events.pop()) {
        (Some(a), Some(e)) => Ok((a, e)),
        _ => Err(AlertsError::Internal(format!(
            "alert {id} not acknowledged"
        ))),
    }
}

/// The most alerts one acknowledgement takes.
pub const ACK_MAX: usize = 500;

/// Acknowledges every alert of `ids` or none: each must exist, be firing and not be
/// acknowledged yet, or the whole request is refused naming the first at fault
/// (`ids[3]: …`). Each gets who, when and the note and a timeline entry; one audit entry
/// records the request; notifiers hear once per group and route, as when alerts fire.
pub async fn acknowledge_many(
    store: &Store,
    ids: &[i64],
    actor: &Actor,
    note: &str,
    now: i64,
    settings: &Settings,
) -> Result<(Vec<AlertRow>, Vec<Event>)> {
    let invalid = |field: &str, message: String| AlertsError::Invalid {
        field: field.into(),
        message,
    };
    if note.chars().count() > 2000 {
        return Err(invalid("note", "at most 2000 characters".into()));
    }
    if ids.is_empty() {
        return Err(invalid("ids", "name at least one alert".into()));
    }
    if ids.len() > ACK_MAX {
        return Err(invalid("ids", format!("at most {ACK_MAX} alerts at once")));
    }
    // A single acknowledgement reads as before; several name the position at fault.
    let at = |i: usize| {
        if ids.len() > 1 {
            format!("ids[{i}]: ")
        } else {
            String::new()
        }
    };
    let mut seen = HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        if !seen.insert(*id) {
            return Err(invalid(
                &format!("ids[{i}]"),
                format!("alert {id} is listed twice"),
            ));
        }
    }
    let who = actor.name.as_str();
    let mut tx = store.begin().await?;
    // Everything is checked before anything is written.
    let mut rules_of: Vec<i64> = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let row: Option<(String, i64, Option<i64>)> = tx
            .fetch_optional(
                "SELECT state, rule_id, acked_at FROM alerts WHERE id = $1",
                args![*id],
            )
            .await?;
        let Some((state, rule_id, acked_at)) = row else {
            return Err(AlertsError::NotFound(format!("{}no alert {id}", at(i))));
        };
        if state != "firing" {
            return Err(AlertsError::Conflict(format!(
                "{}alert {id} is {state}; only a firing alert can be acknowledged",
                at(i)
            )));
        }
        if acked_at.is_some() {
            return Err(AlertsError::Conflict(format!(
                "{}alert {id} is already acknowledged",
                at(i)
            )));
        }
        rules_of.push(rule_id);
    }
    let detail = json!({"by": who, "note": note}).to_string();
    for (i, id) in ids.iter().enumerate() {
        let n = tx
            .execute(
                "UPDATE alerts SET acked_by = $2, acked_at = $3, ack_note = $4, updated_at = $3 \
                 WHERE id = $1 AND state = 'firing' AND acked_at IS NULL",
                args![*id, who, now, note],
            )
            .await?;
        if n == 0 {
            return Err(AlertsError::Conflict(format!(
                "{}alert {id} changed meanwhile",
                at(i)
            )));
        }
        event(&mut tx, *id, now, "acknowledged", Some(&detail)).await?;
    }
    audit::record(
        &mut tx,
        actor,
        "alert.acknowledge",
        Some(&ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")),
        Some(json!({"ids": ids, "note": note})),
    )
    .await?;
    let endpoints: HashMap<String, i64> = tx
        .fetch_all::<(String, i64)>("SELECT name, id FROM webhook_endpoints", args![])
        .await?
        .into_iter()
        .collect();
    let mut specs: HashMap<i64, (String, Vec<String>)> = HashMap::new();
    let mut alerts = Vec::with_capacity(ids.len());
    let mut groups: BTreeMap<(String, String, Vec<String>), Vec<Value>> = BTreeMap::new();
    for (id, rule_id) in ids.iter().zip(&rules_of) {
        if !specs.contains_key(rule_id) {
            let spec: Option<(String,)> = tx
                .fetch_optional(
                    "SELECT spec FROM alert_rules WHERE id = $1",
                    args![*rule_id],
                )
                .await?;
            let spec =
                spec.and_then(|(s,)| serde_json::from_str::<super::rules::RuleSpec>(&s).ok());
            specs.insert(
                *rule_id,
                spec.map(|s| (s.metric, s.notifiers)).unwrap_or_default(),
            );
        }
        let (metric, route) = &specs[rule_id];
        let alert = load_alert(&mut tx, *id).await?;
        groups
            .entry((alert.group_key.clone(), metric.clone(), route.clone()))
            .or_default()
            .push(alert.to_json());
        alerts.push(alert);
    }
    let mut events = Vec::new();
    for ((key, metric, route), mut members) in groups {
        members.sort_by(|a, b| worse(a, b, true));
        let summary = group_summary(&metric, "acknowledged", &members);
        let (kind, mut data) = notification(&key, "acknowledged", summary, members, settings);
        data["acked_by"] = json!(who);
        let targets: Vec<i64> = route
            .iter()
            .filter_map(|n| endpoints.get(n).copied())
            .collect();
        queue::enqueue_with(&mut tx, kind, &data, now, &targets).await?;
        events.push(Event {
            channel: Channel::Alert,
            kind: kind.to_string(),
            at: now,
            data,
        });
    }
    tx.commit().await?;
    Ok((alerts, events))
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
            acked_by: None,
            acked_at: None,
            ack_note: None,
            value: None,
            threshold: 5.0,
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
    fn a_stepped_rule_moves_one_alert_between_levels() {
        let quota = crate::alerts::rules::defaults(&[])
            .into_iter()
            .find(|r| r.name == crate::alerts::rules::QUOTA_RULE)
            .unwrap()
            .validate(&[], &[])
            .unwrap();
        let at = |threshold: f64| Open {
            threshold,
            ..open(true, 0)
        };
        assert_eq!(
            decide(&quota, None, Some(121.0), 0, 0, false),
            Transition::Fire
        );
        assert_eq!(
            decide(&quota, Some(&at(90.0)), Some(101.0), 1, 0, false),
            Transition::Step(2)
        );
        assert_eq!(
            decide(&quota, Some(&at(90.0)), Some(99.0), 1, 0, false),
            Transition::Stay
        );
        assert_eq!(
            decide(&quota, Some(&at(120.0)), Some(110.0), 1, 0, false),
            Transition::Step(2)
        );
        assert_eq!(
            decide(&quota, Some(&at(80.0)), Some(50.0), 1, 0, false),
            Transition::Resolve
        );
        // Maintenance holds a firing alert where it is.
        assert_eq!(
            decide(&quota, Some(&at(80.0)), Some(130.0), 1, 0, true),
            Transition::Stay
        );
    }

    #[test]
    fn quota_groups_read_as_customers_over_quota() {
        let alert = |c: &str, v: f64| {
            json!({"summary": format!("{c} (pro) at {v} % of quota (>= 100 %)"),
                   "labels": {"customer": c, "plan": "pro"}, "value": v})
        };
        let many: Vec<Value> = (0..12)
            .map(|i| alert(&format!("cus_{i}"), 130.0 - f64::from(i)))
            .collect();
        assert_eq!(
            group_summary("quota.percent", "firing", &many),
            "12 customers over quota: cus_0 (130 %), cus_1 (129 %), cus_2 (128 %) and 9 more"
        );
        assert_eq!(
            group_summary("quota.percent", "resolved", &many[..2]),
            "2 customers back under quota: cus_0 (130 %), cus_1 (129 %)"
        );
        assert_eq!(
            group_summary("quota.percent", "firing", &many[..1]),
            "cus_0 (pro) at 130 % of quota (>= 100 %)"
        );
        let (_, data) = notification(
            "rule:1",
            "firing",
            "s".into(),
            vec![
                json!({"severity": "info"}),
                json!({"severity": "critical"}),
                json!({"severity": "warning"}),
            ],
            &Settings::default(),
        );
        assert_eq!(data["severity"], "critical", "the gravest member's");
        assert_eq!(data["count"], 3);
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
