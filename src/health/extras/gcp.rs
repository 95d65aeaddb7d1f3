//! Google Cloud extras: for each of the monitor's metric types (by default instance CPU
//! utilization and received network bytes), the time series of the last ten minutes from
//! Cloud Monitoring's `timeSeries.list`, aligned to one-minute means, following
//! `nextPageToken`; the latest point of each series becomes a reading and a row of the
//! monitor page's table. The access token comes from `health::gcp`, shared with the health
//! checks of the same key. Values arrive as `doubleValue`, `int64Value` (a JSON string, since
//! int64 overflows JSON numbers) or `boolValue`; distributions are listed without a figure.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::math::name_part;
use super::{Collected, Ctx, Failure, shape, str_of};
use crate::health::gcp::{self, GcpError, MONITORING_READ, ServiceAccount};

/// How far back points are asked for: enough for a few one-minute alignment periods, since
/// Compute Engine metrics arrive a few minutes late.
const WINDOW_S: i64 = 600;
/// Series kept over all metric types; past it the collection notes the truncation.
const MAX_SERIES: usize = 100;
/// Series asked for per page.
const PAGE_SIZE: u32 = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub project: String,
    pub series: Vec<Series>,
    pub notes: Vec<String>,
}

/// One time series: what it measures, on what, and its latest point.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub metric: String,
    /// The monitored resource type, e.g. `gce_instance`.
    pub resource: String,
    /// The instance name where the series has one, else its id or its resource labels.
    pub instance: String,
    pub instance_id: String,
    pub zone: String,
    pub value_type: String,
    pub latest: Option<f64>,
    /// RFC 3339 end of the latest point's interval.
    pub latest_at: Option<String>,
    pub points: u64,
}

impl Series {
    /// The series' id in reading names: the instance id, else its name.
    fn subject(&self) -> String {
        if self.instance_id.is_empty() {
            name_part(&self.instance)
        } else {
            name_part(&self.instance_id)
        }
    }
}

/// A metric type's part after the service, as a reading figure:
/// `compute.googleapis.com/instance/cpu/utilization` → `instance_cpu_utilization`.
pub fn figure(metric_type: &str) -> String {
    let path = metric_type
        .split_once('/')
        .map(|(_, p)| p)
        .unwrap_or(metric_type);
    name_part(path)
}

/// A point's value as a number: `doubleValue`, `int64Value` (a string, or a number from a
/// lenient server), `boolValue` as 1 or 0; `None` for distributions and strings.
pub fn point_value(value: &Value) -> Result<Option<f64>, String> {
    if let Some(v) = value.get("doubleValue") {
        return match v {
            Value::Number(n) => Ok(n.as_f64()),
            // Google writes NaN and infinities as strings; no figure then.
            Value::String(s) => Ok(s.parse::<f64>().ok().filter(|x| x.is_finite())),
            other => Err(format!("doubleValue {other} is not a number")),
        };
    }
    if let Some(v) = value.get("int64Value") {
        return match v {
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(|i| Some(i as f64))
                .map_err(|_| format!("int64Value {s:?} is not an integer")),
            Value::Number(n) => Ok(n.as_f64()),
            other => Err(format!("int64Value {other} is not an integer")),
        };
    }
    if let Some(v) = value.get("boolValue") {
        return v
            .as_bool()
            .map(|b| Some(if b { 1.0 } else { 0.0 }))
            .ok_or_else(|| format!("boolValue {v} is not a boolean"));
    }
    Ok(None)
}

fn unix_of(rfc3339: &str) -> Option<i64> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// One `timeSeries[]` entry: its labels and its latest point (by interval end, whatever order
/// the points come in).
pub fn series_of(metric: &str, ts: &Value) -> Result<Series, String> {
    let labels = |pointer: &str| ts.pointer(pointer).and_then(Value::as_object);
    let resource_labels = labels("/resource/labels");
    let label = |k: &str| {
        resource_labels
            .and_then(|l| l.get(k))
            .or_else(|| labels("/metric/labels").and_then(|l| l.get(k)))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let instance_id = label("instance_id");
    let mut instance = label("instance_name");
    if instance.is_empty() {
        instance = if instance_id.is_empty() {
            resource_labels
                .map(|l| {
                    l.iter()
                        .filter(|(k, _)| k.as_str() != "project_id")
                        .filter_map(|(_, v)| v.as_str())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .unwrap_or_default()
        } else {
            instance_id.clone()
        };
    }
    let points = match ts.get("points") {
        None => &[][..],
        Some(Value::Array(p)) => p.as_slice(),
        Some(_) => return Err("points is not a list".into()),
    };
    let mut latest: Option<(i64, &str, &Value)> = None;
    for p in points {
        let end = p
            .pointer("/interval/endTime")
            .and_then(Value::as_str)
            .ok_or("a point without interval.endTime")?;
        let at = unix_of(end).ok_or_else(|| format!("endTime {end:?} is not RFC 3339"))?;
        let value = p.get("value").ok_or("a point without a value")?;
        if latest.is_none_or(|(t, _, _)| at > t) {
            latest = Some((at, end, value));
        }
    }
    let (latest, latest_at) = match latest {
        Some((_, end, value)) => (point_value(value)?, Some(end.to_string())),
        None => (None, None),
    };
    Ok(Series {
        metric: metric.to_string(),
        resource: ts
            .pointer("/resource/type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        instance,
        instance_id,
        zone: label("zone"),
        value_type: str_of(ts, "valueType").to_string(),
        latest,
        latest_at,
        points: points.len() as u64,
    })
}

fn token_failure(e: GcpError) -> Failure {
    match e {
        GcpError::Token { status, .. } => Failure {
            status,
            why: format!("Google Cloud {e}"),
        },
        GcpError::Key(_) => Failure::new(format!("Google Cloud key: {e}")),
    }
}

pub async fn collect(ctx: &Ctx<'_>) -> Result<Collected, Failure> {
    let sa = ServiceAccount::parse(&ctx.key).map_err(token_failure)?;
    let project = if ctx.account.is_empty() {
        sa.project_id.clone().unwrap_or_default()
    } else {
        ctx.account.clone()
    };
    let token = gcp::access_token(ctx.client, &sa, MONITORING_READ)
        .await
        .map_err(token_failure)?;
    let metric_types: Vec<String> = if ctx.metric_types.is_empty() {
        gcp::DEFAULT_METRIC_TYPES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        ctx.metric_types.clone()
    };
    let end = ctx.now / 1000;
    let url = gcp::time_series_url(&ctx.base, &project);
    let mut series: Vec<Series> = Vec::new();
    let mut notes = Vec::new();
    let mut counts = Vec::new();
    'metrics: for metric in &metric_types {
        let what = format!("Google Cloud time series of {metric}");
        let mut page_token: Option<String> = None;
        let mut count = 0usize;
        for page_no in 0..ctx.limits.max_pages {
            let mut query = vec![
                ("filter", gcp::metric_filter(metric)),
                ("interval.startTime", gcp::rfc3339(end - WINDOW_S)),
                ("interval.endTime", gcp::rfc3339(end)),
                ("aggregation.alignmentPeriod", "60s".to_string()),
                ("aggregation.perSeriesAligner", "ALIGN_MEAN".to_string()),
                ("pageSize", ctx.limits.page_size.min(PAGE_SIZE).to_string()),
            ];
            if let Some(t) = &page_token {
                query.push(("pageToken", t.clone()));
            }
            let req = ctx.client.get(&url).bearer_auth(&token).query(&query);
            let page = match ctx.fetch(&what, req).await {
                Ok(p) => p,
                Err(f) => {
                    if f.status == Some(401) {
                        gcp::forget(&sa, MONITORING_READ);
                    }
                    return Err(f);
                }
            };
            // Google leaves an empty list out of the answer.
            let list = match page.json.get("timeSeries") {
                None if page.json.is_object() => &[][..],
                Some(Value::Array(l)) => l.as_slice(),
                _ => return Err(shape(&what, "timeSeries is not a list")),
            };
            for ts in list {
                if series.len() >= MAX_SERIES {
                    notes.push(format!("only the first {MAX_SERIES} series are shown"));
                    counts.push((metric.clone(), count));
                    break 'metrics;
                }
                series.push(series_of(metric, ts).map_err(|why| shape(&what, why))?);
                count += 1;
            }
            match page.json.get("nextPageToken").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => {
                    page_token = Some(next.to_string());
                    if page_no + 1 == ctx.limits.max_pages {
                        notes.push(format!("only the first {count} series of {metric} read"));
                    }
                }
                _ => break,
            }
        }
        counts.push((metric.clone(), count));
    }

    let mut readings: Vec<(String, f64)> = counts
        .iter()
        .map(|(m, n)| (format!("gcp.{}.series", figure(m)), *n as f64))
        .collect();
    for s in &series {
        let Some(v) = s.latest else { continue };
        let name = format!(
            "gcp.{}.{}.{}",
            name_part(if s.resource.is_empty() {
                "resource"
            } else {
                &s.resource
            }),
            s.subject(),
            figure(&s.metric)
        );
        // Two series of one instance and metric (differing in a metric label) keep the first.
        if !readings.iter().any(|(n, _)| *n == name) {
            readings.push((name, v));
        }
    }
    if series
        .iter()
        .any(|s| s.latest.is_none() && s.value_type == "DISTRIBUTION")
    {
        notes.push("distribution values are listed without a figure".into());
    }
    Ok(Collected {
        readings,
        snapshot: super::Snapshot::Gcp(Snapshot {
            project,
            series,
            notes,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx<'a>(client: &'a reqwest::Client, base: &str, key: String, max_pages: u32) -> Ctx<'a> {
        let mut limits = super::super::Limits::for_timeout(std::time::Duration::from_secs(5));
        limits.max_pages = max_pages;
        Ctx {
            client,
            provider: crate::health::providers::Provider::Gcp,
            base: base.to_string(),
            account: String::new(),
            key,
            metric_types: Vec::new(),
            whatsapp_senders: Vec::new(),
            limits,
            now: crate::store::now_ms(),
        }
    }

    /// Against the fake, two series a page: every page is followed, each series' latest value
    /// is a reading; past the page bound the collection says so; a refusal names what was read.
    #[tokio::test]
    async fn series_are_paged_through_and_bounded() {
        use crate::simulators::gcp::{FakeGcp, GcpBehaviour};
        let fake = FakeGcp::new().expect("a key");
        let (base, _server) = fake.start().await.expect("fake starts");
        fake.max_page(2);
        let client = crate::health::checks::outbound().no_redirect;
        let c = collect(&ctx(&client, &base, fake.key_file(), 8))
            .await
            .expect("collects");
        let super::super::Snapshot::Gcp(snap) = &c.snapshot else {
            panic!("a gcp snapshot")
        };
        assert_eq!(snap.series.len(), 6, "{snap:?}");
        assert!(snap.notes.is_empty(), "{:?}", snap.notes);
        let reading = |n: &str| c.readings.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(
            reading("gcp.gce_instance.7310000000000000001.instance_cpu_utilization"),
            Some(0.42)
        );
        // Aligned to means, the byte counts come back as doubles: the latest one is read.
        assert_eq!(
            reading("gcp.gce_instance.7310000000000000002.instance_network_received_bytes_count"),
            Some(2_400_000.0)
        );
        // Two pages of each metric's three series: 2 × 2 list requests (+ none for the token).
        assert_eq!(fake.list_requests(), 4);
        let c = collect(&ctx(&client, &base, fake.key_file(), 1))
            .await
            .expect("collects");
        let super::super::Snapshot::Gcp(snap) = &c.snapshot else {
            panic!("a gcp snapshot")
        };
        assert_eq!(snap.series.len(), 4);
        assert!(
            snap.notes
                .iter()
                .any(|n| n.contains("only the first 2 series of")),
            "{:?}",
            snap.notes
        );
        fake.set(GcpBehaviour::PermissionDenied);
        let e = collect(&ctx(&client, &base, fake.key_file(), 8))
            .await
            .unwrap_err();
        assert_eq!(e.status, Some(403));
        assert!(
            e.why.starts_with(
                "Google Cloud time series of compute.googleapis.com/instance/cpu/utilization: \
                 HTTP 403: Permission monitoring.timeSeries.list denied"
            ),
            "{}",
            e.why
        );
        assert_eq!(fake.token_requests(), 1);
    }

    #[test]
    fn series_give_their_latest_point_whatever_the_value_type() {
        let ts = json!({
            "metric": {"type": "compute.googleapis.com/instance/network/received_bytes_count",
                       "labels": {"instance_name": "web-1", "loadbalanced": "false"}},
            "resource": {"type": "gce_instance",
                         "labels": {"project_id": "p", "instance_id": "4455", "zone": "europe-west1-b"}},
            "metricKind": "DELTA",
            "valueType": "INT64",
            "points": [
                {"interval": {"startTime": "2026-11-29T10:01:00Z", "endTime": "2026-11-29T10:02:00Z"},
                 "value": {"int64Value": "9007199254740993"}},
                {"interval": {"startTime": "2026-11-29T10:00:00Z", "endTime": "2026-11-29T10:01:00Z"},
                 "value": {"int64Value": "12"}},
            ]
        });
        let s = series_of("m/x", &ts).expect("parses");
        assert_eq!(
            (s.instance.as_str(), s.instance_id.as_str(), s.zone.as_str()),
            ("web-1", "4455", "europe-west1-b")
        );
        assert_eq!(s.latest, Some(9_007_199_254_740_993_i64 as f64));
        assert_eq!(s.latest_at.as_deref(), Some("2026-11-29T10:02:00Z"));
        assert_eq!(s.points, 2);
        assert_eq!(point_value(&json!({"doubleValue": 0.25})), Ok(Some(0.25)));
        assert_eq!(point_value(&json!({"boolValue": true})), Ok(Some(1.0)));
        assert_eq!(
            point_value(&json!({"distributionValue": {"count": "3"}})),
            Ok(None)
        );
        assert!(
            point_value(&json!({"int64Value": "lots"}))
                .unwrap_err()
                .contains("lots")
        );
        // No points: listed, without a figure.
        let empty = json!({"resource": {"type": "gce_instance", "labels": {"instance_id": "1"}}});
        assert_eq!(series_of("m/x", &empty).unwrap().latest, None);
        let junk = json!({"points": [{"interval": {"endTime": "yesterday"}, "value": {}}]});
        assert!(series_of("m/x", &junk).unwrap_err().contains("yesterday"));
        assert_eq!(
            figure("compute.googleapis.com/instance/cpu/utilization"),
            "instance_cpu_utilization"
        );
    }
}
