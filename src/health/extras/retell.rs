//! Retell extras over the window: call success rate (and Retell's own post-call analysis
//! verdict), latency percentiles, cost per call and the disconnection reasons. Calls are
//! listed newest first through `POST /v3/list-calls`, following `pagination_key` while
//! `has_more`; a server without v3 answers 404 and the bare-array v2 list is read instead.
//!
//! Latency percentiles pool every call's `values` (the per-turn samples) so they are true
//! percentiles over the window; a call without samples contributes its own p50 once.
//! `combined_cost` is in cents, possibly fractional, and is summed exactly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::math::{self, Micros};
use super::{Collected, Ctx, Failure, num_of, shape, str_of};

/// The latency kinds shown, as Retell names them.
const LATENCIES: [&str; 3] = ["e2e", "llm", "tts"];
/// Samples pooled per latency kind: bounds memory on a busy account.
const MAX_SAMPLES: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub window_hours: i64,
    pub calls: u64,
    pub ended: u64,
    pub failed: u64,
    pub in_progress: u64,
    /// ended / (ended + error + not_connected).
    pub success_rate: Option<f64>,
    /// Share of analysed calls Retell judged successful.
    pub analysis_success_rate: Option<f64>,
    pub latency: Vec<Latency>,
    pub cost_total_cents: String,
    pub cost_per_call_cents: Option<String>,
    /// Most frequent first.
    pub disconnection_reasons: Vec<(String, u64)>,
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub name: String,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Default)]
struct Acc {
    calls: u64,
    ended: u64,
    failed: u64,
    in_progress: u64,
    analysed: u64,
    judged_successful: u64,
    samples: BTreeMap<&'static str, Vec<f64>>,
    /// Millionths of a cent.
    cost: Micros,
    costed: u64,
    reasons: BTreeMap<String, u64>,
}

impl Acc {
    fn add(&mut self, call: &Value) -> Result<(), String> {
        self.calls += 1;
        match str_of(call, "call_status") {
            "ended" => self.ended += 1,
            "error" | "not_connected" => self.failed += 1,
            _ => self.in_progress += 1,
        }
        if let Some(ok) = call
            .pointer("/call_analysis/call_successful")
            .and_then(Value::as_bool)
        {
            self.analysed += 1;
            self.judged_successful += u64::from(ok);
        }
        for name in LATENCIES {
            let Some(l) = call.pointer(&format!("/latency/{name}")) else {
                continue;
            };
            let pool = self.samples.entry(name).or_default();
            let values: Vec<f64> = l
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            if values.is_empty() {
                pool.extend(num_of(l, "p50"));
            } else {
                let room = MAX_SAMPLES.saturating_sub(pool.len());
                pool.extend(values.into_iter().take(room));
            }
        }
        if let Some(c) = call.pointer("/call_cost/combined_cost") {
            let m =
                math::micros_of(c).ok_or_else(|| format!("combined_cost {c} is not a number"))?;
            self.cost += m;
            self.costed += 1;
        }
        let reason = str_of(call, "disconnection_reason");
        if !reason.is_empty() {
            *self.reasons.entry(reason.to_string()).or_default() += 1;
        }
        Ok(())
    }

    fn finish(mut self, window_hours: i64, truncated: bool) -> Snapshot {
        let latency = LATENCIES
            .iter()
            .filter_map(|name| {
                let pool = self.samples.get_mut(name)?;
                Some(Latency {
                    name: (*name).into(),
                    p50_ms: math::percentile(pool, 0.5),
                    p90_ms: math::percentile(pool, 0.9),
                    p95_ms: math::percentile(pool, 0.95),
                    p99_ms: math::percentile(pool, 0.99),
                })
            })
            .collect();
        let mut reasons: Vec<(String, u64)> = self.reasons.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Snapshot {
            window_hours,
            calls: self.calls,
            ended: self.ended,
            failed: self.failed,
            in_progress: self.in_progress,
            success_rate: math::rate(self.ended, self.ended + self.failed),
            analysis_success_rate: math::rate(self.judged_successful, self.analysed),
            latency,
            cost_total_cents: math::decimal(self.cost),
            cost_per_call_cents: (self.costed > 0)
                .then(|| math::decimal((self.cost as f64 / self.costed as f64).round() as Micros)),
            disconnection_reasons: reasons,
            truncated,
        }
    }
}

pub async fn collect(ctx: &Ctx<'_>) -> Result<Collected, Failure> {
    const WHAT: &str = "Retell calls";
    let since = ctx.now - ctx.limits.window_ms;
    let mut acc = Acc::default();
    let mut key: Option<String> = None;
    let mut v2 = false;
    let mut truncated = true;
    'pages: for _ in 0..ctx.limits.max_pages {
        let mut body = json!({"limit": ctx.limits.page_size, "sort_order": "descending"});
        if let Some(k) = &key {
            body["pagination_key"] = json!(k);
        }
        let path = if v2 {
            "/v2/list-calls"
        } else {
            "/v3/list-calls"
        };
        let req = ctx
            .client
            .post(ctx.url(path))
            .bearer_auth(&ctx.key)
            .json(&body);
        let page = match ctx.fetch(WHAT, req).await {
            Ok(p) => p,
            // Servers before v3 (2026-05) list calls at v2, as a bare array.
            Err(f) if f.status == Some(404) && !v2 && key.is_none() => {
                v2 = true;
                let req = ctx
                    .client
                    .post(ctx.url("/v2/list-calls"))
                    .bearer_auth(&ctx.key)
                    .json(&body);
                ctx.fetch(WHAT, req).await?
            }
            Err(f) => return Err(f),
        };
        let (items, more, next) = match (&page.json, v2) {
            (Value::Array(items), true) => {
                let full = items.len() as u64 >= u64::from(ctx.limits.page_size);
                let last = items.last().map(|c| str_of(c, "call_id").to_string());
                (items, full, last)
            }
            (v, false) => {
                let Some(items) = v.get("items").and_then(Value::as_array) else {
                    return Err(shape(WHAT, "no items list"));
                };
                let more = v.get("has_more").and_then(Value::as_bool).unwrap_or(false);
                let next = v
                    .get("pagination_key")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                (items, more, next)
            }
            _ => return Err(shape(WHAT, "not a list of calls")),
        };
        for call in items {
            let Some(start) = num_of(call, "start_timestamp") else {
                // Registered calls have not started: nothing to measure yet.
                continue;
            };
            if (start as i64) < since {
                truncated = false;
                break 'pages;
            }
            acc.add(call).map_err(|why| shape(WHAT, why))?;
        }
        match (more, next) {
            (true, Some(k)) if !k.is_empty() => key = Some(k),
            _ => {
                truncated = false;
                break;
            }
        }
    }
    let s = acc.finish(ctx.limits.window_ms / 3_600_000, truncated);
    let mut readings = vec![("retell.calls.total".to_string(), s.calls as f64)];
    if let Some(r) = s.success_rate {
        readings.push(("retell.calls.success_rate".into(), r));
    }
    if let Some(r) = s.analysis_success_rate {
        readings.push(("retell.calls.analysis_success_rate".into(), r));
    }
    for l in &s.latency {
        for (q, v) in [
            ("p50", l.p50_ms),
            ("p90", l.p90_ms),
            ("p95", l.p95_ms),
            ("p99", l.p99_ms),
        ] {
            if let Some(v) = v {
                readings.push((format!("retell.latency_{}_{q}_ms", l.name), v));
            }
        }
    }
    if let Some(c) = math::parse_micros(&s.cost_total_cents) {
        readings.push(("retell.cost_total_cents".into(), math::units(c)));
    }
    if let Some(c) = s
        .cost_per_call_cents
        .as_deref()
        .and_then(math::parse_micros)
    {
        readings.push(("retell.cost_per_call_cents".into(), math::units(c)));
    }
    for (reason, n) in &s.disconnection_reasons {
        readings.push((
            format!("retell.disconnection.{}", math::name_part(reason)),
            *n as f64,
        ));
    }
    Ok(Collected {
        readings,
        snapshot: super::Snapshot::Retell(s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_percentiles_cents_and_reasons() {
        let mut acc = Acc::default();
        // Call A: ten samples 100..1000 ms; call B: no samples, p50 2000 ms.
        let a = json!({"call_status": "ended", "disconnection_reason": "user_hangup",
            "latency": {"e2e": {"p50": 550, "values": [100,200,300,400,500,600,700,800,900,1000]}},
            "call_cost": {"combined_cost": 12.5}, "call_analysis": {"call_successful": true}});
        let b = json!({"call_status": "error", "disconnection_reason": "error_llm_websocket_open",
            "latency": {"e2e": {"p50": 2000}}, "call_cost": {"combined_cost": "7.25"},
            "call_analysis": {"call_successful": false}});
        let c = json!({"call_status": "ended", "disconnection_reason": "user_hangup"});
        for call in [&a, &b, &c] {
            acc.add(call).expect("adds");
        }
        let s = acc.finish(24, false);
        assert_eq!((s.calls, s.ended, s.failed), (3, 2, 1));
        assert_eq!(s.success_rate, Some(2.0 / 3.0));
        assert_eq!(s.analysis_success_rate, Some(0.5));
        let e2e = &s.latency[0];
        // 11 samples: the median is the 6th (600), p95 the 11th (2000).
        assert_eq!(e2e.p50_ms, Some(600.0));
        assert_eq!(e2e.p95_ms, Some(2000.0));
        assert_eq!(e2e.p90_ms, Some(1000.0));
        // Cents, not dollars: 12.5 + 7.25 = 19.75 cents over two costed calls.
        assert_eq!(s.cost_total_cents, "19.75");
        assert_eq!(s.cost_per_call_cents.as_deref(), Some("9.875"));
        assert_eq!(
            s.disconnection_reasons,
            vec![
                ("user_hangup".to_string(), 2),
                ("error_llm_websocket_open".to_string(), 1)
            ]
        );
        let mut bad = Acc::default();
        assert!(
            bad.add(&json!({"call_cost": {"combined_cost": "lots"}}))
                .unwrap_err()
                .contains("combined_cost")
        );
    }
}
