//! n8n extras: the workflow list, each workflow's execution success rate and average duration
//! over the window, the latest failed executions with their error and node, and how many
//! executions are running or waiting. Lists follow `nextCursor` within the page bound.
//! Totals come from `/insights/summary` where the server has it (newer builds, scope
//! `insights:read`); older servers answer 404 and the totals are counted from `/executions`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::math::{self, name_part};
use super::{Collected, Ctx, Failure, list, shape, str_of};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Where the totals come from: `insights` or `executions` (counted here).
    pub source: String,
    pub insights: Option<Insights>,
    pub window_hours: i64,
    /// Executions read from the list within the window.
    pub executions_scanned: u64,
    /// The page bound was reached before the window's start: figures cover the newest part.
    pub truncated: bool,
    pub running: u64,
    pub waiting: u64,
    /// Busiest first.
    pub workflows: Vec<Workflow>,
    /// Newest first.
    pub failures: Vec<FailedExecution>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insights {
    pub total: f64,
    pub failed: f64,
    pub failure_rate: Option<f64>,
    pub average_run_time_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: String,
    pub name: String,
    pub active: bool,
    pub executions: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// succeeded / (succeeded + failed); canceled and unfinished executions left out.
    pub success_rate: Option<f64>,
    /// Mean of `stoppedAt − startedAt` over finished executions.
    pub avg_duration_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedExecution {
    pub id: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub status: String,
    pub mode: String,
    pub started_at: String,
    pub stopped_at: Option<String>,
    /// The error message, or why it could not be read.
    pub error: Option<String>,
    pub node: Option<String>,
}

/// Per-workflow counts while the executions are read.
#[derive(Default)]
struct Tally {
    executions: u64,
    succeeded: u64,
    failed: u64,
    durations: Vec<f64>,
}

/// An id sent as a string (current servers) or a number (the spec).
fn id_of(v: &Value) -> String {
    match v.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Whether an execution status counts as a success, a failure, or neither.
fn outcome(status: &str) -> Option<bool> {
    match status {
        "success" => Some(true),
        "error" | "crashed" => Some(false),
        _ => None,
    }
}

/// `stoppedAt − startedAt` in ms for a finished execution; running ones have no stop.
pub fn duration_ms(execution: &Value) -> Option<f64> {
    if matches!(str_of(execution, "status"), "running" | "new" | "waiting") {
        return None;
    }
    let stop = execution.get("stoppedAt")?.as_str()?;
    math::rfc3339_span_ms(str_of(execution, "startedAt"), stop).map(|ms| ms as f64)
}

fn iso(ms: i64) -> String {
    crate::usage::quota::rfc3339(ms)
}

/// Follows `nextCursor` over `path` (which has its own query), calling `each` per item until
/// it returns false or the pages run out. Returns (items read, stopped by the page bound).
async fn paged(
    ctx: &Ctx<'_>,
    what: &str,
    path: &str,
    mut each: impl FnMut(&Value) -> bool,
) -> Result<(u64, bool), Failure> {
    let mut cursor: Option<String> = None;
    let mut read = 0;
    for _ in 0..ctx.limits.max_pages {
        let mut req = ctx
            .client
            .get(ctx.url(path))
            .header("X-N8N-API-KEY", &ctx.key)
            .query(&[("limit", ctx.limits.page_size.to_string())]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let page = ctx.fetch(what, req).await?;
        for item in list(what, &page.json, "/data")? {
            read += 1;
            if !each(item) {
                return Ok((read, false));
            }
        }
        match page.json.get("nextCursor") {
            Some(Value::String(c)) if !c.is_empty() => cursor = Some(c.clone()),
            Some(Value::Null) | None => return Ok((read, false)),
            Some(other) => return Err(shape(what, format!("nextCursor is {other}"))),
        }
    }
    Ok((read, true))
}

pub async fn collect(ctx: &Ctx<'_>) -> Result<Collected, Failure> {
    let mut notes = Vec::new();
    let mut workflows: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let (_, more) = paged(ctx, "n8n workflows", "/api/v1/workflows", |w| {
        workflows.insert(
            id_of(w),
            (
                str_of(w, "name").to_string(),
                w.get("active").and_then(Value::as_bool).unwrap_or(false),
            ),
        );
        true
    })
    .await?;
    if more {
        notes.push(format!(
            "only the first {} workflows listed",
            workflows.len()
        ));
    }

    let since = ctx.now - ctx.limits.window_ms;
    let insights = insights(ctx, since, &mut notes).await?;

    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failed: Vec<Value> = Vec::new();
    let mut scanned = 0u64;
    let mut bad = None;
    let (_, truncated) = paged(ctx, "n8n executions", "/api/v1/executions", |e| {
        let Some(started) = math::rfc3339_ms(str_of(e, "startedAt")) else {
            bad = Some(format!("execution {:?} has no startedAt time", id_of(e)));
            return false;
        };
        // Newest first: the first one before the window ends the scan.
        if started < since {
            return false;
        }
        scanned += 1;
        let t = tallies
            .entry(str_of(e, "workflowId").to_string())
            .or_default();
        t.executions += 1;
        match outcome(str_of(e, "status")) {
            Some(true) => t.succeeded += 1,
            Some(false) => {
                t.failed += 1;
                failed.push(e.clone());
            }
            None => {}
        }
        if let Some(d) = duration_ms(e) {
            t.durations.push(d);
        }
        true
    })
    .await?;
    if let Some(why) = bad {
        return Err(shape("n8n executions", why));
    }
    let mut counted = BTreeMap::new();
    for status in ["running", "waiting"] {
        let (n, more) = paged(
            ctx,
            "n8n executions",
            &format!("/api/v1/executions?status={status}"),
            |_| true,
        )
        .await?;
        if more {
            notes.push(format!("more than {n} executions {status}"));
        }
        counted.insert(status, n);
    }

    let mut failures = Vec::new();
    for e in failed.iter().take(ctx.limits.max_failures) {
        failures.push(failure(ctx, e, &workflows).await);
    }

    let mut readings = vec![
        ("n8n.workflows.total".to_string(), workflows.len() as f64),
        (
            "n8n.workflows.active".to_string(),
            workflows.values().filter(|(_, a)| *a).count() as f64,
        ),
        (
            "n8n.executions.running".to_string(),
            counted["running"] as f64,
        ),
        (
            "n8n.executions.waiting".to_string(),
            counted["waiting"] as f64,
        ),
    ];
    let (succeeded, failed_n): (u64, u64) = tallies
        .values()
        .fold((0, 0), |(s, f), t| (s + t.succeeded, f + t.failed));
    let all_durations: Vec<f64> = tallies
        .values()
        .flat_map(|t| t.durations.iter().copied())
        .collect();
    readings.push(("n8n.executions.total".into(), scanned as f64));
    readings.push(("n8n.executions.succeeded".into(), succeeded as f64));
    readings.push(("n8n.executions.failed".into(), failed_n as f64));
    if let Some(r) = math::rate(succeeded, succeeded + failed_n) {
        readings.push(("n8n.executions.success_rate".into(), r));
    }
    if let Some(m) = math::mean(&all_durations) {
        readings.push(("n8n.executions.avg_duration_ms".into(), m));
    }
    if let Some(i) = &insights {
        readings.push(("n8n.insights.total".into(), i.total));
        readings.push(("n8n.insights.failed".into(), i.failed));
        if let Some(r) = i.failure_rate {
            readings.push(("n8n.insights.failure_rate".into(), r));
        }
        if let Some(ms) = i.average_run_time_ms {
            readings.push(("n8n.insights.avg_run_time_ms".into(), ms));
        }
    }

    let mut rows: Vec<Workflow> = workflows
        .iter()
        .map(|(id, (name, active))| {
            let t = tallies.get(id);
            Workflow {
                id: id.clone(),
                name: name.clone(),
                active: *active,
                executions: t.map_or(0, |t| t.executions),
                succeeded: t.map_or(0, |t| t.succeeded),
                failed: t.map_or(0, |t| t.failed),
                success_rate: t.and_then(|t| math::rate(t.succeeded, t.succeeded + t.failed)),
                avg_duration_ms: t.and_then(|t| math::mean(&t.durations)),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.executions.cmp(&a.executions).then(a.id.cmp(&b.id)));
    rows.truncate(100);
    for w in rows.iter().filter(|w| w.executions > 0) {
        let p = format!("n8n.workflow.{}", name_part(&w.id));
        readings.push((format!("{p}.executions"), w.executions as f64));
        readings.push((format!("{p}.failed"), w.failed as f64));
        if let Some(r) = w.success_rate {
            readings.push((format!("{p}.success_rate"), r));
        }
        if let Some(d) = w.avg_duration_ms {
            readings.push((format!("{p}.avg_duration_ms"), d));
        }
    }
    Ok(Collected {
        readings,
        snapshot: super::Snapshot::N8n(Snapshot {
            source: if insights.is_some() {
                "insights"
            } else {
                "executions"
            }
            .into(),
            insights,
            window_hours: ctx.limits.window_ms / 3_600_000,
            executions_scanned: scanned,
            truncated,
            running: counted["running"],
            waiting: counted["waiting"],
            workflows: rows,
            failures,
            notes,
        }),
    })
}

/// `/insights/summary` over the window; `None` where the server has no insights (404) or the
/// key lacks the scope (401/403), which a note records.
async fn insights(
    ctx: &Ctx<'_>,
    since: i64,
    notes: &mut Vec<String>,
) -> Result<Option<Insights>, Failure> {
    const WHAT: &str = "n8n insights";
    let req = ctx
        .client
        .get(ctx.url("/api/v1/insights/summary"))
        .header("X-N8N-API-KEY", &ctx.key)
        .query(&[("startDate", iso(since)), ("endDate", iso(ctx.now))]);
    let page = match ctx.fetch(WHAT, req).await {
        Ok(p) => p,
        Err(f) if f.status == Some(404) => return Ok(None),
        Err(f) if matches!(f.status, Some(401 | 403)) => {
            notes.push(format!("{} (needs the insights:read scope)", f.why));
            return Ok(None);
        }
        Err(f) => return Err(f),
    };
    let value = |field: &str| {
        page.json
            .pointer(&format!("/{field}/value"))
            .and_then(Value::as_f64)
    };
    let (Some(total), Some(failed)) = (value("total"), value("failed")) else {
        return Err(shape(WHAT, "no total.value or failed.value"));
    };
    Ok(Some(Insights {
        total,
        failed,
        // Computed rather than read: the reported failureRate's unit is not documented.
        failure_rate: (total > 0.0).then(|| failed / total),
        average_run_time_ms: value("averageRunTime"),
    }))
}

/// A failed execution with its error, read from the execution's data.
async fn failure(
    ctx: &Ctx<'_>,
    e: &Value,
    workflows: &BTreeMap<String, (String, bool)>,
) -> FailedExecution {
    let id = id_of(e);
    let workflow_id = str_of(e, "workflowId").to_string();
    let req = ctx
        .client
        .get(ctx.url(&format!("/api/v1/executions/{}", name_part(&id))))
        .header("X-N8N-API-KEY", &ctx.key)
        .query(&[("includeData", "true")]);
    let (error, node) = match ctx.fetch("n8n execution", req).await {
        Ok(page) => {
            let err = page.json.pointer("/data/resultData/error");
            let message = err
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .map(|m| m.chars().take(300).collect::<String>());
            let node = err
                .and_then(|e| e.pointer("/node/name"))
                .or_else(|| page.json.pointer("/data/resultData/lastNodeExecuted"))
                .and_then(Value::as_str)
                .map(str::to_string);
            (message, node)
        }
        Err(f) => (Some(format!("details not read: {}", f.why)), None),
    };
    FailedExecution {
        workflow_name: workflows
            .get(&workflow_id)
            .map(|(n, _)| n.clone())
            .unwrap_or_default(),
        id,
        workflow_id,
        status: str_of(e, "status").to_string(),
        mode: str_of(e, "mode").to_string(),
        started_at: str_of(e, "startedAt").to_string(),
        stopped_at: e
            .get("stoppedAt")
            .and_then(Value::as_str)
            .map(str::to_string),
        error: error.map(|m| ctx.scrub(&m)),
        node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_skip_running_executions() {
        let done = serde_json::json!({"status": "success",
            "startedAt": "2026-11-20T10:00:00.000Z", "stoppedAt": "2026-11-20T10:00:02.500Z"});
        assert_eq!(duration_ms(&done), Some(2_500.0));
        let running = serde_json::json!({"status": "running",
            "startedAt": "2026-11-20T10:00:00.000Z", "stoppedAt": null});
        assert_eq!(duration_ms(&running), None);
        // A waiting execution may carry a stop time from before it paused: not a duration.
        let waiting = serde_json::json!({"status": "waiting",
            "startedAt": "2026-11-20T10:00:00.000Z", "stoppedAt": "2026-11-20T10:00:01.000Z"});
        assert_eq!(duration_ms(&waiting), None);
        assert_eq!(outcome("crashed"), Some(false));
        assert_eq!(outcome("canceled"), None);
        assert_eq!(id_of(&serde_json::json!({"id": 1234})), "1234");
        assert_eq!(id_of(&serde_json::json!({"id": "1234"})), "1234");
    }
}
