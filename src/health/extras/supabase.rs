//! Supabase extras through the Management API: health per service, API request counts over
//! the last day (`usage.api-counts`, summed over its buckets), disk use, and `pg_stat_*`
//! figures (connections against `max_connections`, cache hit rate, rollbacks, deadlocks)
//! through the read-only SQL endpoint, so no database password is needed. That endpoint is
//! newer and may be refused to the token; then a note says so and the rest stands.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::math::{self, name_part};
use super::{Collected, Ctx, Failure, list, num_of, shape, str_of};

const SERVICES: &str = "auth,db,pooler,realtime,rest,storage";

/// One row of figures from `pg_stat_database` and `pg_stat_activity`, read-only.
const PG_STAT_SQL: &str = "SELECT (SELECT count(*) FROM pg_stat_activity) AS connections, \
     (SELECT setting::int FROM pg_settings WHERE name = 'max_connections') AS max_connections, \
     xact_commit, xact_rollback, blks_hit, blks_read, deadlocks \
     FROM pg_stat_database WHERE datname = current_database()";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// (service, status, error) as Supabase reports them.
    pub services: Vec<(String, String, Option<String>)>,
    pub api: ApiCounts,
    pub disk: Option<Disk>,
    pub db: Option<DbStats>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiCounts {
    pub interval: String,
    pub rest: u64,
    pub auth: u64,
    pub storage: u64,
    pub realtime: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub avail_bytes: u64,
    pub used_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbStats {
    pub connections: u64,
    pub max_connections: u64,
    /// blks_hit / (blks_hit + blks_read).
    pub cache_hit_rate: Option<f64>,
    /// xact_rollback / (xact_commit + xact_rollback).
    pub rollback_rate: Option<f64>,
    pub deadlocks: u64,
}

/// Sums each counter over the api-counts buckets.
pub fn api_counts(json: &Value, interval: &str) -> Result<ApiCounts, String> {
    let rows = json
        .get("result")
        .and_then(Value::as_array)
        .ok_or("no result list")?;
    let mut c = ApiCounts {
        interval: interval.into(),
        ..ApiCounts::default()
    };
    for row in rows {
        let n = |field: &str| num_of(row, field).unwrap_or(0.0).max(0.0) as u64;
        c.rest += n("total_rest_requests");
        c.auth += n("total_auth_requests");
        c.storage += n("total_storage_requests");
        c.realtime += n("total_realtime_requests");
    }
    Ok(c)
}

/// The pg_stat row as figures.
pub fn db_stats(row: &Value) -> Option<DbStats> {
    let n = |field: &str| num_of(row, field).map(|v| v.max(0.0) as u64);
    let (hit, read) = (n("blks_hit")?, n("blks_read")?);
    let (commit, rollback) = (n("xact_commit")?, n("xact_rollback")?);
    Some(DbStats {
        connections: n("connections")?,
        max_connections: n("max_connections")?,
        cache_hit_rate: math::rate(hit, hit + read),
        rollback_rate: math::rate(rollback, commit + rollback),
        deadlocks: n("deadlocks").unwrap_or(0),
    })
}

pub async fn collect(ctx: &Ctx<'_>) -> Result<Collected, Failure> {
    let project = format!("/v1/projects/{}", ctx.account);
    let get = |path: &str| {
        ctx.client
            .get(ctx.url(&format!("{project}{path}")))
            .bearer_auth(&ctx.key)
    };
    let mut notes = Vec::new();

    let health = ctx
        .fetch(
            "Supabase health",
            get("/health").query(&[("services", SERVICES)]),
        )
        .await?;
    let mut services = Vec::new();
    for s in list("Supabase health", &health.json, "")? {
        let name = str_of(s, "name");
        let status = str_of(s, "status");
        if name.is_empty() || status.is_empty() {
            return Err(shape("Supabase health", "a service without name or status"));
        }
        let error = s
            .get("error")
            .and_then(Value::as_str)
            .map(|e| e.chars().take(200).collect());
        services.push((name.to_string(), status.to_string(), error));
    }

    const INTERVAL: &str = "1day";
    let counts = ctx
        .fetch(
            "Supabase API counts",
            get("/analytics/endpoints/usage.api-counts").query(&[("interval", INTERVAL)]),
        )
        .await?;
    let api =
        api_counts(&counts.json, INTERVAL).map_err(|why| shape("Supabase API counts", why))?;

    let disk = match ctx.fetch("Supabase disk", get("/config/disk/util")).await {
        Ok(page) => {
            let m = |f: &str| {
                page.json
                    .pointer(&format!("/metrics/{f}"))
                    .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
            };
            let (Some(size), Some(used)) = (m("fs_size_bytes"), m("fs_used_bytes")) else {
                return Err(shape(
                    "Supabase disk",
                    "no metrics.fs_size_bytes or fs_used_bytes",
                ));
            };
            Some(Disk {
                size_bytes: size as u64,
                used_bytes: used as u64,
                avail_bytes: m("fs_avail_bytes").unwrap_or(size - used).max(0.0) as u64,
                used_percent: math::percent_used(used, size),
            })
        }
        // Projects on shared compute have no disk figures.
        Err(f) if matches!(f.status, Some(400 | 403 | 404)) => {
            notes.push(f.why);
            None
        }
        Err(f) => return Err(f),
    };

    let query = ctx
        .client
        .post(ctx.url(&format!("{project}/database/query/read-only")))
        .bearer_auth(&ctx.key)
        .json(&json!({ "query": PG_STAT_SQL }));
    let db =
        match ctx.fetch("Supabase pg_stat", query).await {
            Ok(page) => {
                let row = page
                    .json
                    .as_array()
                    .and_then(|rows| rows.first())
                    .ok_or_else(|| shape("Supabase pg_stat", "no row"))?;
                Some(db_stats(row).ok_or_else(|| {
                    shape("Supabase pg_stat", "a row without the pg_stat columns")
                })?)
            }
            Err(f) if matches!(f.status, Some(400 | 401 | 403 | 404)) => {
                notes.push(f.why);
                None
            }
            Err(f) => return Err(f),
        };

    let mut readings = Vec::new();
    let healthy = services
        .iter()
        .filter(|(_, s, _)| s == "ACTIVE_HEALTHY")
        .count();
    readings.push(("supabase.services.healthy".to_string(), healthy as f64));
    for (name, status, _) in &services {
        readings.push((
            format!("supabase.service.{}.healthy", name_part(name)),
            f64::from(u8::from(status == "ACTIVE_HEALTHY")),
        ));
    }
    for (name, n) in [
        ("rest", api.rest),
        ("auth", api.auth),
        ("storage", api.storage),
        ("realtime", api.realtime),
    ] {
        readings.push((format!("supabase.api.{name}_requests"), n as f64));
    }
    readings.push((
        "supabase.api.total_requests".to_string(),
        (api.rest + api.auth + api.storage + api.realtime) as f64,
    ));
    if let Some(d) = &disk {
        readings.push(("supabase.disk.size_bytes".into(), d.size_bytes as f64));
        readings.push(("supabase.disk.used_bytes".into(), d.used_bytes as f64));
        if let Some(p) = d.used_percent {
            readings.push(("supabase.disk.used_percent".into(), p));
        }
    }
    if let Some(s) = &db {
        readings.push(("supabase.db.connections".into(), s.connections as f64));
        readings.push((
            "supabase.db.max_connections".into(),
            s.max_connections as f64,
        ));
        if let Some(r) = s.cache_hit_rate {
            readings.push(("supabase.db.cache_hit_rate".into(), r));
        }
        if let Some(r) = s.rollback_rate {
            readings.push(("supabase.db.rollback_rate".into(), r));
        }
        readings.push(("supabase.db.deadlocks".into(), s.deadlocks as f64));
    }
    Ok(Collected {
        readings,
        snapshot: super::Snapshot::Supabase(Snapshot {
            services,
            api,
            disk,
            db,
            notes,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_counts_sum_buckets_and_pg_stat_rates() {
        let v = json!({"result": [
            {"timestamp": "2026-11-20T10:00:00Z", "total_rest_requests": 100, "total_auth_requests": 7,
             "total_storage_requests": 0, "total_realtime_requests": 3},
            {"timestamp": "2026-11-20T11:00:00Z", "total_rest_requests": "25", "total_auth_requests": 1,
             "total_storage_requests": 2, "total_realtime_requests": 0},
        ]});
        let c = api_counts(&v, "1day").expect("sums");
        assert_eq!((c.rest, c.auth, c.storage, c.realtime), (125, 8, 2, 3));
        assert!(api_counts(&json!({"rows": []}), "1day").is_err());
        let row = json!({"connections": 12, "max_connections": 60, "xact_commit": 990,
            "xact_rollback": 10, "blks_hit": 9_900, "blks_read": 100, "deadlocks": 1});
        let s = db_stats(&row).expect("figures");
        assert_eq!(s.cache_hit_rate, Some(0.99));
        assert_eq!(s.rollback_rate, Some(0.01));
        assert_eq!((s.connections, s.max_connections, s.deadlocks), (12, 60, 1));
        assert_eq!(db_stats(&json!({"connections": 1})), None);
    }
}
