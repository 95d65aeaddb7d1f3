//! DigitalOcean extras: the droplets (following `links.pages.next`), CPU, memory, disk and
//! public bandwidth of the first few active ones from the monitoring API, and the balance and
//! month-to-date usage. Metrics come as Prometheus-style matrices of `[unix_s, "value"]`;
//! `cpu` is cumulative CPU-seconds per mode, turned into a utilisation by
//! [`math::cpu_percent`]. Droplets without the metrics agent return empty matrices and show
//! "—"; a token without `monitoring:read` lists droplets without figures, with a note.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::math::{self, name_part};
use super::{Collected, Ctx, Failure, list, num_of, shape, str_of};

/// Seconds of metrics read per droplet: long enough for several samples of each series.
const METRICS_SPAN_S: i64 = 900;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub droplets: Vec<Droplet>,
    pub total_droplets: u64,
    pub account_balance_usd: Option<String>,
    pub month_to_date_usage_usd: Option<String>,
    pub month_to_date_balance_usd: Option<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Droplet {
    pub id: String,
    pub name: String,
    pub status: String,
    pub region: String,
    pub size: String,
    pub vcpus: u64,
    pub memory_mb: u64,
    pub disk_gb: u64,
    /// Whether metrics were read for it (the first active ones are).
    pub measured: bool,
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    pub disk_percent: Option<f64>,
    pub bandwidth_in_mbps: Option<f64>,
    pub bandwidth_out_mbps: Option<f64>,
}

/// One series of a matrix: its labels and `(unix s, value)` points, oldest first.
pub type Series<'a> = (&'a serde_json::Map<String, Value>, Vec<(i64, f64)>);

/// A matrix answer's series.
pub fn matrix(json: &Value) -> Result<Vec<Series<'_>>, String> {
    let result = json
        .pointer("/data/result")
        .and_then(Value::as_array)
        .ok_or("no data.result list")?;
    let mut out = Vec::with_capacity(result.len());
    for series in result {
        let labels = series
            .get("metric")
            .and_then(Value::as_object)
            .ok_or("a series without metric labels")?;
        let values = series
            .get("values")
            .and_then(Value::as_array)
            .ok_or("a series without values")?;
        let mut points = Vec::with_capacity(values.len());
        for v in values {
            let pair = v
                .as_array()
                .filter(|p| p.len() == 2)
                .ok_or("a point is not [time, value]")?;
            let t = pair[0].as_f64().ok_or("a point's time is not a number")? as i64;
            let x = match &pair[1] {
                Value::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("value {s:?} is not a number"))?,
                Value::Number(n) => n.as_f64().ok_or("a value out of range")?,
                other => return Err(format!("value {other} is not a number")),
            };
            points.push((t, x));
        }
        points.sort_by_key(|(t, _)| *t);
        out.push((labels, points));
    }
    Ok(out)
}

/// CPU utilisation from a `cpu` matrix (one series per mode).
pub fn cpu_from(json: &Value) -> Result<Option<f64>, String> {
    let modes: BTreeMap<String, Vec<(i64, f64)>> = matrix(json)?
        .into_iter()
        .filter_map(|(labels, points)| Some((labels.get("mode")?.as_str()?.to_string(), points)))
        .collect();
    Ok(if modes.is_empty() {
        None
    } else {
        math::cpu_percent(&modes)
    })
}

/// The sum over series of each one's latest value (filesystems: one series per mount).
pub fn latest_sum(json: &Value) -> Result<Option<f64>, String> {
    let series = matrix(json)?;
    let lasts: Vec<f64> = series
        .iter()
        .filter_map(|(_, p)| p.last().map(|x| x.1))
        .collect();
    Ok((!lasts.is_empty()).then(|| lasts.iter().sum()))
}

/// The mean of every point (bandwidth: a rate per sample).
pub fn mean_of(json: &Value) -> Result<Option<f64>, String> {
    let values: Vec<f64> = matrix(json)?
        .into_iter()
        .flat_map(|(_, p)| p.into_iter().map(|x| x.1))
        .collect();
    Ok(math::mean(&values))
}

pub async fn collect(ctx: &Ctx<'_>) -> Result<Collected, Failure> {
    let mut notes = Vec::new();
    let mut droplets = Vec::new();
    let mut url = format!(
        "{}?per_page={}&page=1",
        ctx.url("/v2/droplets"),
        ctx.limits.page_size.min(200)
    );
    let mut remaining = None;
    let mut total = None;
    for page_no in 0..ctx.limits.max_pages {
        let page = ctx
            .fetch(
                "DigitalOcean droplets",
                ctx.client.get(&url).bearer_auth(&ctx.key),
            )
            .await?;
        remaining = ratelimit(&page.headers).or(remaining);
        // `meta.total` counts droplets past the page bound too.
        total = total.or_else(|| page.json.pointer("/meta/total").and_then(Value::as_u64));
        for d in list("DigitalOcean droplets", &page.json, "/droplets")? {
            droplets.push(Droplet {
                id: match d.get("id") {
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::String(s)) => s.clone(),
                    _ => return Err(shape("DigitalOcean droplets", "a droplet without an id")),
                },
                name: str_of(d, "name").into(),
                status: str_of(d, "status").into(),
                region: d
                    .pointer("/region/slug")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                size: str_of(d, "size_slug").into(),
                vcpus: num_of(d, "vcpus").unwrap_or(0.0) as u64,
                memory_mb: num_of(d, "memory").unwrap_or(0.0) as u64,
                disk_gb: num_of(d, "disk").unwrap_or(0.0) as u64,
                ..Droplet::default()
            });
        }
        match page
            .json
            .pointer("/links/pages/next")
            .and_then(Value::as_str)
        {
            Some(next) => {
                url = ctx.rebase(next).ok_or_else(|| {
                    shape("DigitalOcean droplets", "links.pages.next is not a URL")
                })?;
                if page_no + 1 == ctx.limits.max_pages {
                    notes.push(format!("only the first {} droplets listed", droplets.len()));
                }
            }
            None => break,
        }
    }
    let total = total
        .unwrap_or(droplets.len() as u64)
        .max(droplets.len() as u64);

    let balance = ctx
        .fetch(
            "DigitalOcean balance",
            ctx.client
                .get(ctx.url("/v2/customers/my/balance"))
                .bearer_auth(&ctx.key),
        )
        .await?;
    let money = |field: &str| balance.json.get(field).and_then(math::micros_of);
    let (account, mtd_usage, mtd_balance) = (
        money("account_balance"),
        money("month_to_date_usage"),
        money("month_to_date_balance"),
    );
    if mtd_usage.is_none() {
        return Err(shape("DigitalOcean balance", "no month_to_date_usage"));
    }

    let end = ctx.now / 1000;
    let start = end - METRICS_SPAN_S;
    let mut measured = 0;
    for d in droplets.iter_mut() {
        if d.status != "active" || measured >= ctx.limits.max_droplets {
            continue;
        }
        measured += 1;
        match measure(ctx, d, start, end).await {
            Ok(()) => d.measured = true,
            Err(f) if matches!(f.status, Some(401 | 403)) => {
                notes.push(format!("{} (the token needs monitoring:read)", f.why));
                break;
            }
            Err(f) => return Err(f),
        }
    }
    if droplets.iter().filter(|d| d.status == "active").count() > ctx.limits.max_droplets {
        notes.push(format!(
            "metrics read for the first {} active droplets",
            ctx.limits.max_droplets
        ));
    }

    let mut readings = vec![
        ("do.droplets.total".to_string(), total as f64),
        (
            "do.droplets.active".to_string(),
            droplets.iter().filter(|d| d.status == "active").count() as f64,
        ),
    ];
    for (name, v) in [
        ("do.balance.account_usd", account),
        ("do.balance.month_to_date_usage_usd", mtd_usage),
        ("do.balance.month_to_date_balance_usd", mtd_balance),
    ] {
        if let Some(v) = v {
            readings.push((name.to_string(), math::units(v)));
        }
    }
    if let Some(r) = remaining {
        readings.push(("do.ratelimit_remaining".to_string(), r));
    }
    for d in droplets.iter().filter(|d| d.measured) {
        let p = format!("do.droplet.{}", name_part(&d.id));
        for (figure, v) in [
            ("cpu_percent", d.cpu_percent),
            ("memory_percent", d.memory_percent),
            ("disk_percent", d.disk_percent),
            ("bandwidth_in_mbps", d.bandwidth_in_mbps),
            ("bandwidth_out_mbps", d.bandwidth_out_mbps),
        ] {
            if let Some(v) = v {
                readings.push((format!("{p}.{figure}"), v));
            }
        }
    }
    droplets.truncate(100);
    Ok(Collected {
        readings,
        snapshot: super::Snapshot::DigitalOcean(Snapshot {
            total_droplets: total,
            droplets,
            account_balance_usd: account.map(math::decimal),
            month_to_date_usage_usd: mtd_usage.map(math::decimal),
            month_to_date_balance_usd: mtd_balance.map(math::decimal),
            notes,
        }),
    })
}

fn ratelimit(headers: &[(String, String)]) -> Option<f64> {
    headers
        .iter()
        .find(|(k, _)| k == "ratelimit-remaining")
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Reads one droplet's metrics into it.
async fn measure(ctx: &Ctx<'_>, d: &mut Droplet, start: i64, end: i64) -> Result<(), Failure> {
    let what = format!("DigitalOcean metrics of droplet {}", name_part(&d.id));
    let get = |metric: &'static str, extra: &'static [(&'static str, &'static str)]| {
        let req = ctx
            .client
            .get(ctx.url(&format!("/v2/monitoring/metrics/droplet/{metric}")))
            .bearer_auth(&ctx.key)
            .query(&[
                ("host_id", d.id.clone()),
                ("start", start.to_string()),
                ("end", end.to_string()),
            ])
            .query(extra);
        let what = what.clone();
        async move { ctx.fetch(&what, req).await }
    };
    let (cpu, mem_total, mem_avail, fs_size, fs_free, bw_in, bw_out) = tokio::try_join!(
        get("cpu", &[]),
        get("memory_total", &[]),
        get("memory_available", &[]),
        get("filesystem_size", &[]),
        get("filesystem_free", &[]),
        get(
            "bandwidth",
            &[("interface", "public"), ("direction", "inbound")]
        ),
        get(
            "bandwidth",
            &[("interface", "public"), ("direction", "outbound")]
        ),
    )?;
    let bad = |why: String| shape(&what, why);
    d.cpu_percent = cpu_from(&cpu.json).map_err(bad)?;
    let used_share = |size: Option<f64>, free: Option<f64>| match (size, free) {
        (Some(s), Some(f)) => math::percent_used(s - f, s),
        _ => None,
    };
    d.memory_percent = used_share(
        latest_sum(&mem_total.json).map_err(bad)?,
        latest_sum(&mem_avail.json).map_err(bad)?,
    );
    d.disk_percent = used_share(
        latest_sum(&fs_size.json).map_err(bad)?,
        latest_sum(&fs_free.json).map_err(bad)?,
    );
    d.bandwidth_in_mbps = mean_of(&bw_in.json).map_err(bad)?;
    d.bandwidth_out_mbps = mean_of(&bw_out.json).map_err(bad)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matrices_give_cpu_memory_disk_and_bandwidth() {
        // One vCPU over 120 s: idle grows 90, user 20, system 10 → 25 % busy.
        let cpu = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"host_id": "1", "mode": "idle"}, "values": [[1000, "5000.0"], [1060, "5045.0"], [1120, "5090"]]},
            {"metric": {"host_id": "1", "mode": "user"}, "values": [[1120, "320"], [1000, "300"]]},
            {"metric": {"host_id": "1", "mode": "system"}, "values": [[1000, "50"], [1120, "60"]]},
        ]}});
        let v = cpu_from(&cpu).expect("parses").expect("a figure");
        assert!((v - 25.0).abs() < 1e-9, "{v}");
        // Two filesystems: 100 + 50 GB, 30 + 20 free → 66.7 % used.
        let size = json!({"data": {"result": [
            {"metric": {"device": "/dev/vda1"}, "values": [[1, "90"], [2, "100"]]},
            {"metric": {"device": "/dev/sda"}, "values": [[2, "50"]]}]}});
        let free = json!({"data": {"result": [
            {"metric": {"device": "/dev/vda1"}, "values": [[2, "30"]]},
            {"metric": {"device": "/dev/sda"}, "values": [[2, "20"]]}]}});
        let (s, f) = (
            latest_sum(&size).unwrap().unwrap(),
            latest_sum(&free).unwrap().unwrap(),
        );
        assert_eq!((s, f), (150.0, 50.0));
        assert!((math::percent_used(s - f, s).unwrap() - 66.666_666).abs() < 1e-3);
        let bw = json!({"data": {"result": [{"metric": {}, "values": [[1, "1.5"], [2, "2.5"]]}]}});
        assert_eq!(mean_of(&bw).unwrap(), Some(2.0));
        // An agent-less droplet: empty result, no figure.
        let empty = json!({"data": {"resultType": "matrix", "result": []}});
        assert_eq!(cpu_from(&empty).unwrap(), None);
        assert_eq!(latest_sum(&empty).unwrap(), None);
        // Garbage inside the matrix is an error that says what.
        let junk = json!({"data": {"result": [{"metric": {}, "values": [[1, "lots"]]}]}});
        assert!(mean_of(&junk).unwrap_err().contains("lots"));
        assert!(
            matrix(&json!({"unexpected": true}))
                .unwrap_err()
                .contains("data.result")
        );
    }
}
