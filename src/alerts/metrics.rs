//! The metrics alert rules can watch, and how each is read from what the other domains
//! record: one query per metric and window per evaluation, shared by every rule that uses
//! it (so 10,000 rules on a handful of metrics cost a handful of queries). Each metric gives
//! series — labels and a value — such as one per integration or per customer.

use std::collections::BTreeMap;

use super::AlertsError;
use crate::args;
use crate::health::store::{BUCKETS, quantile};
use crate::store::Store;

/// One series' current value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One integration's latency histogram summed over a window.
struct Histogram {
    name: String,
    kind: String,
    buckets: [i64; BUCKETS],
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for Histogram
where
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let mut buckets = [0; BUCKETS];
        for (i, slot) in buckets.iter_mut().enumerate() {
            *slot = row.try_get(2 + i)?;
        }
        Ok(Histogram {
            name: row.try_get(0)?,
            kind: row.try_get(1)?,
            buckets,
        })
    }
}

/// The catalogue: name, series labels and meaning, for validation, the API and the docs.
pub const CATALOGUE: &[(&str, &str, &str)] = &[
    (
        "integration.state",
        "integration, kind",
        "0 up, 1 degraded, 2 down (paused and unknown left out)",
    ),
    (
        "integration.error_rate",
        "integration, kind",
        "percent of checks down over the window",
    ),
    (
        "integration.success_rate",
        "integration, kind",
        "percent of checks not down over the window",
    ),
    (
        "integration.latency_p50",
        "integration, kind",
        "median check latency over the window, ms",
    ),
    (
        "integration.latency_p95",
        "integration, kind",
        "95th percentile check latency over the window, ms",
    ),
    (
        "integration.latency_p99",
        "integration, kind",
        "99th percentile check latency over the window, ms",
    ),
    (
        "integration.rate_limit_hits",
        "integration, kind",
        "provider checks answered rate-limited over the window",
    ),
    (
        "token.expiry_hours",
        "credential, provider",
        "hours until the credential stops working",
    ),
    (
        "token.broken",
        "credential, provider",
        "1 when the credential needs re-authorization",
    ),
    (
        "quota.percent",
        "customer, plan",
        "the customer's quota use this period, percent",
    ),
    (
        "webhooks.failure_rate",
        "endpoint",
        "percent of delivery attempts failed over the window",
    ),
    (
        "webhooks.endpoint_disabled",
        "endpoint, reason",
        "1 for an endpoint disabled for failing",
    ),
    (
        "revenue.mrr_change_percent",
        "",
        "MRR change over the window (at least a day), percent",
    ),
    (
        "costs.spike_percent",
        "provider",
        "cost over the window as a percent of the trailing 7 windows' average",
    ),
    (
        "costs.unpriced_events",
        "provider",
        "usage events with no price over the window",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Metric {
    IntegrationState,
    ErrorRate,
    SuccessRate,
    Latency(u8),
    RateLimitHits,
    TokenExpiryHours,
    TokenBroken,
    QuotaPercent,
    WebhookFailureRate,
    EndpointDisabled,
    MrrChange,
    CostSpike,
    Unpriced,
    /// A metric of `/metrics`, by name.
    Prometheus(String),
}

impl Metric {
    /// `prometheus` is what `/metrics` exposes now; an `opsdeck_…` name must be among them.
    pub fn parse(name: &str, prometheus: &[String]) -> Result<Self, String> {
        Ok(match name {
            "integration.state" => Metric::IntegrationState,
            "integration.error_rate" => Metric::ErrorRate,
            "integration.success_rate" => Metric::SuccessRate,
            "integration.latency_p50" => Metric::Latency(50),
            "integration.latency_p95" => Metric::Latency(95),
            "integration.latency_p99" => Metric::Latency(99),
            "integration.rate_limit_hits" => Metric::RateLimitHits,
            "token.expiry_hours" => Metric::TokenExpiryHours,
            "token.broken" => Metric::TokenBroken,
            "quota.percent" => Metric::QuotaPercent,
            "webhooks.failure_rate" => Metric::WebhookFailureRate,
            "webhooks.endpoint_disabled" => Metric::EndpointDisabled,
            "revenue.mrr_change_percent" => Metric::MrrChange,
            "costs.spike_percent" => Metric::CostSpike,
            "costs.unpriced_events" => Metric::Unpriced,
            p if p.starts_with("opsdeck_") => {
                if !prometheus.iter().any(|m| m == p) {
                    return Err(format!("{p:?} is not a metric /metrics exposes"));
                }
                Metric::Prometheus(p.to_string())
            }
            other => {
                return Err(format!(
                    "unknown metric {other:?}; one of {} or an opsdeck_… metric of /metrics",
                    CATALOGUE.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
                ));
            }
        })
    }
}

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Reads `metric` over `window_ms` ending at `now`. `prometheus` is the `/metrics` text of
/// this instance, for `opsdeck_…` metrics.
pub async fn read(
    store: &Store,
    metric: &Metric,
    window_ms: i64,
    now: i64,
    prometheus: &str,
) -> Result<Vec<Sample>, AlertsError> {
    let from = now - window_ms;
    Ok(match metric {
        Metric::IntegrationState => {
            let rows: Vec<(String, String, String)> = store
                .fetch_all(
                    "SELECT m.name, m.kind, s.state FROM monitors m \
                     JOIN monitor_states s ON s.monitor_id = m.id WHERE m.paused = 0",
                    args![],
                )
                .await?;
            rows.into_iter()
                .filter_map(|(name, kind, state)| {
                    let v = match state.as_str() {
                        "up" => 0.0,
                        "degraded" => 1.0,
                        "down" => 2.0,
                        _ => return None,
                    };
                    Some(Sample {
                        labels: labels([("integration", &name), ("kind", &kind)]),
                        value: v,
                    })
                })
                .collect()
        }
        Metric::ErrorRate | Metric::SuccessRate => {
            let rows: Vec<(String, String, i64, i64)> = store
                .fetch_all(
                    "SELECT m.name, m.kind, COUNT(*), \
                     SUM(CASE WHEN r.verdict = 'down' THEN 1 ELSE 0 END) \
                     FROM check_results r JOIN monitors m ON m.id = r.monitor_id \
                     WHERE r.at > $1 AND r.at <= $2 AND m.paused = 0 GROUP BY m.name, m.kind",
                    args![from, now],
                )
                .await?;
            rows.into_iter()
                .filter(|r| r.2 > 0)
                .map(|(name, kind, n, down)| {
                    let error = down as f64 * 100.0 / n as f64;
                    Sample {
                        labels: labels([("integration", &name), ("kind", &kind)]),
                        value: if *metric == Metric::ErrorRate {
                            error
                        } else {
                            100.0 - error
                        },
                    }
                })
                .collect()
        }
        Metric::Latency(p) => {
            // Minute rollups: their histograms add up, so no raw result is read.
            let sums: String = (0..BUCKETS)
                .map(|i| format!(", CAST(SUM(r.b{i}) AS BIGINT)"))
                .collect();
            let rows: Vec<Histogram> = store
                .fetch_all_assembled(
                    format!(
                        "SELECT m.name, m.kind{sums} FROM check_rollups r \
                         JOIN monitors m ON m.id = r.monitor_id \
                         WHERE r.granularity = 'minute' AND r.bucket >= $1 AND m.paused = 0 \
                         GROUP BY m.name, m.kind"
                    ),
                    args![from - from.rem_euclid(60_000)],
                )
                .await?;
            rows.into_iter()
                .filter_map(|h| {
                    Some(Sample {
                        value: quantile(&h.buckets, f64::from(*p) / 100.0)?,
                        labels: labels([("integration", &h.name), ("kind", &h.kind)]),
                    })
                })
                .collect()
        }
        Metric::RateLimitHits => {
            let rows: Vec<(String, String, i64)> = store
                .fetch_all(
                    "SELECT m.name, m.kind, \
                     SUM(CASE WHEN p.value >= 1 THEN 1 ELSE 0 END) FROM provider_readings p \
                     JOIN monitors m ON m.id = p.monitor_id \
                     WHERE p.name = 'rate_limited' AND p.at > $1 AND p.at <= $2 \
                     GROUP BY m.name, m.kind",
                    args![from, now],
                )
                .await?;
            rows.into_iter()
                .map(|(name, kind, n)| Sample {
                    labels: labels([("integration", &name), ("kind", &kind)]),
                    value: n as f64,
                })
                .collect()
        }
        Metric::TokenExpiryHours | Metric::TokenBroken => {
            let tokens = crate::tokens::status(store, now).await?;
            tokens
                .into_iter()
                .filter_map(|t| {
                    let l = labels([("credential", &t.name), ("provider", &t.provider)]);
                    if *metric == Metric::TokenBroken {
                        let broken = t.state == crate::tokens::TokenState::ReauthorizationRequired;
                        return Some(Sample {
                            labels: l,
                            value: if broken { 1.0 } else { 0.0 },
                        });
                    }
                    let at = t.effective_expiry?;
                    Some(Sample {
                        labels: l,
                        value: (at - now) as f64 / 3_600_000.0,
                    })
                })
                .collect()
        }
        Metric::QuotaPercent => {
            let rows: Vec<(String, String, f64)> = store
                .fetch_all(
                    "SELECT customer_id, plan_id, percent FROM quota_states",
                    args![],
                )
                .await?;
            rows.into_iter()
                .map(|(customer, plan, percent)| Sample {
                    labels: labels([("customer", &customer), ("plan", &plan)]),
                    value: percent,
                })
                .collect()
        }
        Metric::WebhookFailureRate => {
            let rows: Vec<(String, i64, i64)> = store
                .fetch_all(
                    "SELECT e.name, COUNT(*), \
                     SUM(CASE WHEN a.status >= 200 AND a.status < 300 THEN 0 ELSE 1 END) \
                     FROM webhook_attempts a \
                     JOIN webhook_deliveries d ON d.id = a.delivery_id \
                     JOIN webhook_endpoints e ON e.id = d.endpoint_id \
                     WHERE a.at > $1 AND a.at <= $2 GROUP BY e.name",
                    args![from, now],
                )
                .await?;
            rows.into_iter()
                .filter(|r| r.1 > 0)
                .map(|(name, n, failed)| Sample {
                    labels: labels([("endpoint", &name)]),
                    value: failed as f64 * 100.0 / n as f64,
                })
                .collect()
        }
        Metric::EndpointDisabled => {
            let rows: Vec<(String, String)> = store
                .fetch_all(
                    "SELECT name, disabled_reason FROM webhook_endpoints \
                     WHERE enabled = 0 AND disabled_reason IS NOT NULL",
                    args![],
                )
                .await?;
            rows.into_iter()
                .map(|(name, reason)| Sample {
                    labels: labels([("endpoint", &name), ("reason", &reason)]),
                    value: 1.0,
                })
                .collect()
        }
        Metric::MrrChange => {
            let latest: Option<(i64, i64)> = store
                .fetch_optional(
                    // Today's MRR: the history runs on to the last scheduled movement.
                    "SELECT day, mrr FROM revenue_days WHERE day <= $1 ORDER BY day DESC LIMIT 1",
                    args![now],
                )
                .await?;
            let Some((day, mrr)) = latest else {
                return Ok(Vec::new());
            };
            let back = window_ms.max(86_400_000);
            let before: Option<(i64,)> = store
                .fetch_optional(
                    "SELECT mrr FROM revenue_days WHERE day <= $1 ORDER BY day DESC LIMIT 1",
                    args![day - back],
                )
                .await?;
            match before {
                Some((old,)) if old > 0 => vec![Sample {
                    labels: BTreeMap::new(),
                    value: (mrr - old) as f64 * 100.0 / old as f64,
                }],
                _ => Vec::new(),
            }
        }
        Metric::CostSpike | Metric::Unpriced => {
            let (granularity, width) = if window_ms >= 3_600_000 {
                ("hour_total", 3_600_000)
            } else {
                ("minute_total", 60_000)
            };
            let start = from - from.rem_euclid(width);
            let history = if *metric == Metric::CostSpike {
                window_ms * 7
            } else {
                0
            };
            store.settle().await;
            let rows: Vec<(String, i64, i64, i64)> = store
                .fetch_all(
                    "SELECT provider, \
                     CAST(SUM(CASE WHEN bucket >= $2 THEN cost_nano ELSE 0 END) AS BIGINT), \
                     CAST(SUM(CASE WHEN bucket < $2 THEN cost_nano ELSE 0 END) AS BIGINT), \
                     CAST(SUM(CASE WHEN bucket >= $2 THEN unpriced ELSE 0 END) AS BIGINT) \
                     FROM usage_rollups WHERE granularity = $1 AND subject = '' \
                     AND bucket >= $3 AND provider <> '' GROUP BY provider",
                    args![granularity, start, start - history],
                )
                .await?;
            rows.into_iter()
                .filter_map(|(provider, now_cost, before, unpriced)| {
                    let value = if *metric == Metric::Unpriced {
                        unpriced as f64
                    } else {
                        let average = before as f64 / 7.0;
                        if average <= 0.0 {
                            return None;
                        }
                        now_cost as f64 * 100.0 / average
                    };
                    Some(Sample {
                        labels: labels([("provider", &provider)]),
                        value,
                    })
                })
                .collect()
        }
        Metric::Prometheus(name) => prometheus_samples(prometheus, name),
    })
}

/// The metric names a Prometheus text exposition declares (`# TYPE name …`).
pub fn prometheus_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The samples of `name` in a Prometheus text exposition (histogram and summary parts under
/// their own suffixed names).
pub fn prometheus_samples(text: &str, name: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels_text, value_text) = if let Some(r) = rest.strip_prefix('{') {
            match r.rfind('}') {
                Some(end) => (&r[..end], &r[end + 1..]),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // another metric sharing the prefix
        };
        let Some(value) = value_text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        out.push(Sample {
            labels: parse_labels(labels_text),
            value,
        });
    }
    out
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let Some(after) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                other => value.push(other),
            }
        }
        out.insert(key, value);
        rest = &after[end.min(after.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_text() {
        let text = "# TYPE opsdeck_http_requests_total counter\n\
            opsdeck_http_requests_total{route=\"/a\",status=\"200\"} 12\n\
            opsdeck_http_requests_total{route=\"/b \\\"x\\\"\",status=\"500\"} 3\n\
            opsdeck_http_requests_total_other 9\n\
            # TYPE opsdeck_up gauge\nopsdeck_up 1\n";
        assert_eq!(
            prometheus_names(text),
            vec!["opsdeck_http_requests_total", "opsdeck_up"]
        );
        let s = prometheus_samples(text, "opsdeck_http_requests_total");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["route"], "/a");
        assert_eq!(s[1].labels["route"], "/b \"x\"");
        assert_eq!(s[1].value, 3.0);
        let up = prometheus_samples(text, "opsdeck_up");
        assert_eq!(up.len(), 1);
        assert!(up[0].labels.is_empty());
    }

    #[test]
    fn unknown_metrics_are_named() {
        let e = Metric::parse("cpu", &[]).unwrap_err();
        assert!(
            e.contains("\"cpu\"") && e.contains("integration.error_rate"),
            "{e}"
        );
        assert!(Metric::parse("opsdeck_up", &["opsdeck_up".into()]).is_ok());
    }
}
