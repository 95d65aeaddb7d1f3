//! The stored side of health: owns `monitors` (definitions sealed with the master key),
//! `monitor_states`, `check_results` and `check_rollups`. Results are written in batches, one
//! transaction each: the raw rows, the minute/hour/day rollups (pure SQL upserts that add
//! counts and histogram buckets, so no row is read back) and the monitors' states.

use std::collections::{BTreeMap, HashMap};

use super::HealthError;
use super::checks::{CheckResult, Verdict};
use super::monitor::{Monitor, MonitorSpec};
use super::state::{State, Tracker};
use crate::access::audit::{self, Actor};
use crate::access::secrets::MasterKey;
use crate::args;
use crate::store::{Store, Tx, multi_row_insert, now_ms};

type Result<T, E = HealthError> = std::result::Result<T, E>;

/// Upper bounds (ms) of the latency histogram's buckets `b0..b19`; the last is unbounded.
pub const LATENCY_BOUNDS_MS: [f64; 19] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 750.0, 1000.0,
    2000.0, 5000.0, 10000.0, 30000.0,
];
pub const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The histogram bucket of a latency in microseconds.
pub fn bucket_of(latency_us: i64) -> usize {
    let ms = latency_us as f64 / 1000.0;
    LATENCY_BOUNDS_MS.partition_point(|b| *b < ms)
}

/// The `q` quantile (0..1) of a histogram, as the upper bound of the bucket it falls in (the
/// last bucket reports its lower bound); `None` when empty.
pub fn quantile(histogram: &[i64; BUCKETS], q: f64) -> Option<f64> {
    let total: i64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (i, n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(
                LATENCY_BOUNDS_MS
                    .get(i)
                    .copied()
                    .unwrap_or(LATENCY_BOUNDS_MS[BUCKETS - 2]),
            );
        }
    }
    None
}

pub const GRANULARITIES: [(&str, i64); 3] =
    [("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000)];

/// A stored monitor with its definition opened.
#[derive(Debug, Clone)]
pub struct StoredMonitor {
    pub id: i64,
    pub source: String,
    pub paused: bool,
    pub spec: MonitorSpec,
    pub monitor: Monitor,
}

fn seal_name(name: &str) -> String {
    format!("monitor:{name}")
}

/// Makes the `config` monitors exactly `specs` (already validated): new ones added, changed
/// ones updated, ones gone from the config removed with their history. API monitors are left
/// alone, but a config monitor may not share an API monitor's name.
pub async fn sync_config(store: &Store, key: &MasterKey, specs: &[MonitorSpec]) -> Result<()> {
    let mut tx = store.begin().await?;
    let existing: Vec<(i64, String, String)> = tx
        .fetch_all("SELECT id, name, source FROM monitors", args![])
        .await?;
    let now = now_ms();
    for spec in specs {
        let monitor = spec.validate()?;
        let (nonce, sealed) = seal(key, &monitor.name, spec)?;
        match existing.iter().find(|(_, name, _)| *name == monitor.name) {
            Some((_, _, source)) if source != "config" => {
                return Err(HealthError::Conflict(format!(
                    "monitor {:?} from the config has the name of one created through the API",
                    monitor.name
                )));
            }
            Some((id, _, _)) => {
                tx.execute(
                    "UPDATE monitors SET kind = $2, spec_nonce = $3, spec_sealed = $4, \
                     updated_at = $5 WHERE id = $1",
                    args![*id, monitor.kind.as_str(), nonce, sealed, now],
                )
                .await?;
            }
            None => {
                tx.execute(
                    "INSERT INTO monitors (name, kind, source, spec_nonce, spec_sealed, paused, \
                     created_at, updated_at) VALUES ($1, $2, 'config', $3, $4, 0, $5, $5)",
                    args![
                        monitor.name.as_str(),
                        monitor.kind.as_str(),
                        nonce,
                        sealed,
                        now
                    ],
                )
                .await?;
            }
        }
    }
    let names: Vec<String> = specs.iter().map(|s| s.name.trim().to_string()).collect();
    for (id, name, source) in existing {
        if source == "config" && !names.contains(&name) {
            delete_in(&mut tx, id).await?;
        }
    }
    tx.commit().await?;
    purge_deleted(store).await?;
    Ok(())
}

/// The plain columns of one stored monitor, for checks before a change.
async fn head(tx: &mut Tx, id: i64) -> Result<(String, String)> {
    tx.fetch_optional::<(String, String)>(
        "SELECT name, source FROM monitors WHERE id = $1",
        args![id],
    )
    .await?
    .ok_or_else(|| HealthError::NotFound(format!("no integration {id}")))
}

/// Refuses a change to a monitor declared in the config file: the file is its source of truth
/// and would put it back at the next start.
fn writable(name: &str, source: &str) -> Result<()> {
    if source == "config" {
        return Err(HealthError::Conflict(format!(
            "monitor {name:?} is declared in the config file; change it there"
        )));
    }
    Ok(())
}

async fn name_free(tx: &mut Tx, name: &str, except: i64) -> Result<()> {
    let taken: Option<(i64,)> = tx
        .fetch_optional(
            "SELECT id FROM monitors WHERE name = $1 AND id <> $2",
            args![name, except],
        )
        .await?;
    match taken {
        Some(_) => Err(HealthError::Conflict(format!(
            "a monitor named {name:?} already exists"
        ))),
        None => Ok(()),
    }
}

fn seal(key: &MasterKey, name: &str, spec: &MonitorSpec) -> Result<(Vec<u8>, Vec<u8>)> {
    let json = serde_json::to_vec(spec).map_err(|e| HealthError::Internal(e.to_string()))?;
    key.seal(&seal_name(name), &json)
        .map_err(|e| HealthError::Internal(e.to_string()))
}

/// Creates a monitor through the API (validated here, so the API names the same fields as the
/// config); returns its id.
pub async fn create(
    store: &Store,
    key: &MasterKey,
    spec: &MonitorSpec,
    actor: &Actor,
) -> Result<i64> {
    let mut spec = spec.clone();
    super::definition::keep_masked(&mut spec, None)?;
    let monitor = spec.validate()?;
    let (nonce, sealed) = seal(key, &monitor.name, &spec)?;
    let mut tx = store.begin().await?;
    name_free(&mut tx, &monitor.name, 0).await?;
    let now = now_ms();
    let (id,): (i64,) = tx
        .fetch_one(
            "INSERT INTO monitors (name, kind, source, spec_nonce, spec_sealed, paused, \
             created_at, updated_at) VALUES ($1, $2, 'api', $3, $4, 0, $5, $5) RETURNING id",
            args![
                monitor.name.as_str(),
                monitor.kind.as_str(),
                nonce,
                sealed,
                now
            ],
        )
        .await?;
    audit::record(
        &mut tx,
        actor,
        "monitor.create",
        Some(&format!("monitor:{id}:{}", monitor.name)),
        Some(serde_json::json!({"kind": monitor.kind.as_str()})),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Replaces an API monitor's definition. Credentials sent back masked (as the definition
/// route shows them) keep their stored values.
pub async fn update(
    store: &Store,
    key: &MasterKey,
    id: i64,
    spec: &MonitorSpec,
    actor: &Actor,
) -> Result<()> {
    let mut spec = spec.clone();
    let old = get(store, key, id).await?;
    super::definition::keep_masked(&mut spec, old.as_ref().map(|o| &o.spec))?;
    let monitor = spec.validate()?;
    let mut tx = store.begin().await?;
    let (name, source) = head(&mut tx, id).await?;
    writable(&name, &source)?;
    name_free(&mut tx, &monitor.name, id).await?;
    let (nonce, sealed) = seal(key, &monitor.name, &spec)?;
    tx.execute(
        "UPDATE monitors SET name = $2, kind = $3, spec_nonce = $4, spec_sealed = $5, \
         updated_at = $6 WHERE id = $1",
        args![
            id,
            monitor.name.as_str(),
            monitor.kind.as_str(),
            nonce,
            sealed,
            now_ms()
        ],
    )
    .await?;
    audit::record(
        &mut tx,
        actor,
        "monitor.update",
        Some(&format!("monitor:{id}:{}", monitor.name)),
        (name != monitor.name).then(|| serde_json::json!({"renamed_from": name})),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Pauses or resumes a monitor. Config monitors may be paused too: pausing is an operator's
/// switch during an incident, not a change to the definition, and it survives a restart.
pub async fn set_paused(store: &Store, id: i64, paused: bool, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    let (name, _) = head(&mut tx, id).await?;
    tx.execute(
        "UPDATE monitors SET paused = $2, updated_at = $3 WHERE id = $1",
        args![id, i64::from(paused), now_ms()],
    )
    .await?;
    let action = if paused {
        "monitor.pause"
    } else {
        "monitor.resume"
    };
    audit::record(
        &mut tx,
        actor,
        action,
        Some(&format!("monitor:{id}:{name}")),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes an API monitor with its states, results and rollups. Call through
/// [`super::scheduler::Health::delete`] while a scheduler runs, so no result of it is written
/// after it is gone.
pub async fn delete(store: &Store, id: i64, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    let (name, source) = head(&mut tx, id).await?;
    writable(&name, &source)?;
    delete_in(&mut tx, id).await?;
    audit::record(
        &mut tx,
        actor,
        "monitor.delete",
        Some(&format!("monitor:{id}:{name}")),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes monitor `id` and its state, and leaves its id for [`purge_deleted`] to remove its
/// history: a monitor checked every 10 s has tens of thousands of rows, too many to delete
/// while the scheduler's recorder (which deletes for the API) waits.
async fn delete_in(tx: &mut Tx, id: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO monitor_purges (monitor_id, deleted_at) VALUES ($1, $2) \
         ON CONFLICT (monitor_id) DO NOTHING",
        args![id, now_ms()],
    )
    .await?;
    for sql in [
        "DELETE FROM monitor_states WHERE monitor_id = $1",
        "DELETE FROM monitors WHERE id = $1",
    ] {
        tx.execute(sql, args![id]).await?;
    }
    Ok(())
}

/// Rows of a deleted monitor's check results removed per statement, so a long history never
/// holds the database's write lock (SQLite's is the whole file) for long.
const PURGE_CHUNK: i64 = 5_000;

/// Removes the history of every deleted monitor still listed in `monitor_purges`, each table
/// in statements of its own, and then the monitor's id from the list; returns the rows
/// removed. Safe to run twice at once (deleting what is gone deletes nothing).
pub async fn purge_deleted(store: &Store) -> Result<u64> {
    let ids: Vec<(i64,)> = store
        .fetch_all(
            "SELECT monitor_id FROM monitor_purges ORDER BY monitor_id",
            args![],
        )
        .await?;
    let mut removed = 0;
    for (id,) in ids {
        // Oldest first, a chunk at a time along the primary key (monitor, time).
        loop {
            let cutoff: Option<(i64,)> = store
                .fetch_optional(
                    "SELECT at FROM check_results WHERE monitor_id = $1 ORDER BY at \
                     LIMIT 1 OFFSET $2",
                    args![id, PURGE_CHUNK],
                )
                .await?;
            match cutoff {
                Some((at,)) => {
                    removed += store
                        .execute(
                            "DELETE FROM check_results WHERE monitor_id = $1 AND at < $2",
                            args![id, at],
                        )
                        .await?;
                }
                None => {
                    removed += store
                        .execute("DELETE FROM check_results WHERE monitor_id = $1", args![id])
                        .await?;
                    break;
                }
            }
        }
        for sql in [
            "DELETE FROM check_rollups WHERE monitor_id = $1",
            "DELETE FROM provider_readings WHERE monitor_id = $1",
            "DELETE FROM provider_extras WHERE monitor_id = $1",
            "DELETE FROM monitor_purges WHERE monitor_id = $1",
        ] {
            removed += store.execute(sql, args![id]).await?;
        }
    }
    Ok(removed)
}

/// Every stored monitor, by id, with its definition opened and validated again (a definition
/// that no longer validates is skipped with a warning rather than stopping every other).
pub async fn list(store: &Store, key: &MasterKey) -> Result<Vec<StoredMonitor>> {
    Ok(read(store, key, None).await?.0)
}

/// Monitor `id`, with its definition opened; `None` when there is none (or it cannot be read).
pub async fn get(store: &Store, key: &MasterKey, id: i64) -> Result<Option<StoredMonitor>> {
    Ok(read(store, key, Some(&[id])).await?.0.pop())
}

/// The unpaused monitors of the given kinds, with their definitions opened: for jobs that
/// concern a few kinds, which need not open every monitor's definition.
pub async fn list_active_of_kinds(
    store: &Store,
    key: &MasterKey,
    kinds: &[&'static str],
) -> Result<Vec<StoredMonitor>> {
    if kinds.is_empty() {
        return Ok(Vec::new());
    }
    // Kind names are our own constants (lowercase letters, digits and underscores).
    let list = kinds
        .iter()
        .filter(|k| {
            k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(",");
    let ids: Vec<(i64,)> = store
        .fetch_all_assembled(
            format!("SELECT id FROM monitors WHERE paused = 0 AND kind IN ({list}) ORDER BY id"),
            args![],
        )
        .await?;
    let ids: Vec<i64> = ids.into_iter().map(|(id,)| id).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(read(store, key, Some(&ids)).await?.0)
}

/// A stored monitor whose definition cannot be opened or no longer validates (sealed with
/// another master key, or written by a version that accepted what this one refuses). It is
/// not checked, but stays listed so it can be seen, fixed or deleted.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub source: String,
    pub paused: bool,
    pub problem: String,
}

/// The monitors `ids` (all when `None`), read for the scheduler: the definitions it can run
/// and those it cannot.
pub async fn read_for_schedule(
    store: &Store,
    key: &MasterKey,
    ids: Option<&[i64]>,
) -> Result<(Vec<StoredMonitor>, Vec<Unreadable>)> {
    read(store, key, ids).await
}

async fn read(
    store: &Store,
    key: &MasterKey,
    ids: Option<&[i64]>,
) -> Result<(Vec<StoredMonitor>, Vec<Unreadable>)> {
    struct Row {
        id: i64,
        name: String,
        kind: String,
        source: String,
        spec_nonce: Vec<u8>,
        spec_sealed: Vec<u8>,
        paused: i64,
    }
    crate::from_row!(Row {
        id,
        name,
        kind,
        source,
        spec_nonce,
        spec_sealed,
        paused
    });
    const SELECT: &str =
        "SELECT id, name, kind, source, spec_nonce, spec_sealed, paused FROM monitors";
    let rows: Vec<Row> = match ids {
        None => {
            store
                .fetch_all_assembled(format!("{SELECT} ORDER BY id"), args![])
                .await?
        }
        Some(ids) => {
            let mut rows = Vec::with_capacity(ids.len());
            // Integers only, so inlining them is safe; a thousand at a time keeps the
            // statement small.
            for chunk in ids.chunks(1000) {
                let list = chunk
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                rows.extend(
                    store
                        .fetch_all_assembled::<Row>(
                            format!("{SELECT} WHERE id IN ({list}) ORDER BY id"),
                            args![],
                        )
                        .await?,
                );
            }
            rows
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for Row {
        id,
        name,
        kind,
        source,
        spec_nonce: nonce,
        spec_sealed: sealed,
        paused,
    } in rows
    {
        let opened = key
            .open(&seal_name(&name), &nonce, &sealed)
            .map_err(|e| e.to_string())
            .and_then(|plain| {
                serde_json::from_slice::<MonitorSpec>(plain.expose()).map_err(|e| e.to_string())
            })
            .and_then(|spec| Ok((spec.validate().map_err(|e| e.to_string())?, spec)));
        match opened {
            Ok((monitor, spec)) => out.push(StoredMonitor {
                id,
                source,
                paused: paused != 0,
                spec,
                monitor,
            }),
            Err(problem) => {
                tracing::warn!(monitor = %name, %problem, "cannot read a stored monitor; skipping it");
                unreadable.push(Unreadable {
                    id,
                    name,
                    kind,
                    source,
                    paused: paused != 0,
                    problem,
                });
            }
        }
    }
    Ok((out, unreadable))
}

/// Each stored monitor's last change (UTC ms), by id: what the scheduler compares against
/// what it read last to re-read only the monitors created, edited, paused or resumed since,
/// and to drop deleted ones, without opening every definition again.
pub async fn versions(store: &Store) -> Result<HashMap<i64, i64>> {
    let rows: Vec<(i64, i64)> = store
        .fetch_all("SELECT id, updated_at FROM monitors", args![])
        .await?;
    Ok(rows.into_iter().collect())
}

/// Which of `ids` still name a stored monitor.
pub async fn existing(store: &Store, ids: &[i64]) -> Result<std::collections::HashSet<i64>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    // Integers only, so inlining them is safe.
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let rows: Vec<(i64,)> = store
        .fetch_all_assembled(
            format!("SELECT id FROM monitors WHERE id IN ({list})"),
            args![],
        )
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Every monitor's stored state, by id.
pub async fn trackers(store: &Store) -> Result<BTreeMap<i64, Tracker>> {
    let rows: Vec<(i64, String, Option<i64>, i64, i64)> = store
        .fetch_all(
            "SELECT monitor_id, state, since, failures, successes FROM monitor_states",
            args![],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, state, since, failures, successes)| {
            (
                id,
                Tracker {
                    state: State::parse(&state).unwrap_or(State::Unknown),
                    since,
                    failures: u32::try_from(failures).unwrap_or(u32::MAX),
                    successes: u32::try_from(successes).unwrap_or(u32::MAX),
                },
            )
        })
        .collect())
}

/// One check to record: the monitor, when it ran (UTC ms), the result and the monitor's
/// tracker after it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub monitor_id: i64,
    pub at: i64,
    pub result: CheckResult,
    pub tracker: Tracker,
}

/// A monitor's state change, recorded with the check that caused it.
#[derive(Debug, Clone)]
pub struct Transition {
    pub monitor_id: i64,
    pub name: String,
    pub kind: &'static str,
    pub from: State,
    pub to: State,
    /// UTC milliseconds.
    pub at: i64,
    pub error: Option<String>,
}

impl Transition {
    /// The `integration.state_changed` message data (webhook subscriptions and the
    /// `system_status` stream).
    pub fn data(&self) -> serde_json::Value {
        let mut summary = format!(
            "{} is {} (was {})",
            self.name,
            self.to.as_str(),
            self.from.as_str()
        );
        if let Some(e) = self.error.as_deref().filter(|e| !e.is_empty()) {
            summary.push_str(": ");
            summary.extend(e.chars().take(200));
        }
        serde_json::json!({
            "integration_id": self.monitor_id,
            "name": self.name,
            "kind": self.kind,
            "from": self.from.as_str(),
            "to": self.to.as_str(),
            "at": crate::usage::quota::rfc3339(self.at),
            "last_error": self.error,
            "summary": summary,
        })
    }
}

/// Records a batch of checks in one transaction.
pub async fn record(store: &Store, batch: &[Recorded]) -> Result<()> {
    record_with(store, batch, &[]).await
}

/// Records a batch of checks and the state changes they caused in one transaction: each change
/// is enqueued as an `integration.state_changed` message for subscribed webhook endpoints, so
/// a state and its notification commit together.
pub async fn record_with(store: &Store, batch: &[Recorded], changes: &[Transition]) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    // One row per key in each statement: PostgreSQL refuses an upsert that meets the same key
    // twice (two checks of a monitor in one millisecond, a reading repeated in one answer),
    // which would lose the whole batch. The later one is kept, as the upserts below keep it.
    let mut keys = std::collections::HashSet::new();
    let mut unique: Vec<&Recorded> = batch
        .iter()
        .rev()
        .filter(|r| keys.insert((r.monitor_id, r.at)))
        .collect();
    unique.reverse();
    let mut tx = store.begin().await?;
    for chunk in unique.chunks(100) {
        let sql = multi_row_insert(
            "check_results (monitor_id, at, verdict, latency_us, status, error, headers, \
             error_detail)",
            8,
            chunk.len(),
            // Two checks of one monitor in the same millisecond: the later one is kept.
            "ON CONFLICT (monitor_id, at) DO UPDATE SET verdict = excluded.verdict, \
             latency_us = excluded.latency_us, status = excluded.status, \
             error = excluded.error, headers = excluded.headers, \
             error_detail = excluded.error_detail",
        );
        let mut values = Vec::with_capacity(chunk.len() * 8);
        for r in chunk {
            let headers = (!r.result.headers.is_empty())
                .then(|| serde_json::to_string(&r.result.headers).unwrap_or_default());
            values.extend(args![
                r.monitor_id,
                r.at,
                r.result.verdict.as_str(),
                r.result.latency_us,
                r.result.status.map(i64::from),
                r.result.error.clone(),
                headers,
                r.result.detail.clone()
            ]);
        }
        tx.execute_assembled(sql, values).await?;
    }
    let mut names = std::collections::HashSet::new();
    let mut readings: Vec<(i64, &str, i64, f64)> = unique
        .iter()
        .rev()
        .flat_map(|r| {
            r.result
                .readings
                .iter()
                .rev()
                .map(move |(name, value)| (r.monitor_id, name.as_str(), r.at, *value))
        })
        .filter(|(id, name, at, _)| names.insert((*id, *name, *at)))
        .collect();
    readings.reverse();
    for chunk in readings.chunks(200) {
        let sql = multi_row_insert(
            "provider_readings (monitor_id, name, at, value)",
            4,
            chunk.len(),
            "ON CONFLICT (monitor_id, name, at) DO UPDATE SET value = excluded.value",
        );
        let mut values = Vec::with_capacity(chunk.len() * 4);
        for (id, name, at, value) in chunk {
            values.extend(args![*id, *name, *at, *value]);
        }
        tx.execute_assembled(sql, values).await?;
    }
    // Rollups: merged in memory first, so each (monitor, granularity, bucket) is one upsert.
    let mut rollups: BTreeMap<(i64, &str, i64), [i64; 5 + BUCKETS]> = BTreeMap::new();
    for r in batch {
        for (granularity, width) in GRANULARITIES {
            let slot = rollups
                .entry((r.monitor_id, granularity, r.at.div_euclid(width) * width))
                .or_insert([0; 5 + BUCKETS]);
            slot[0] += 1;
            slot[match r.result.verdict {
                Verdict::Up => 1,
                Verdict::Degraded => 2,
                Verdict::Down => 3,
            }] += 1;
            slot[4] += r.result.latency_us;
            slot[5 + bucket_of(r.result.latency_us)] += 1;
        }
    }
    let columns: String = (0..BUCKETS).map(|i| format!(", b{i}")).collect();
    let updates: String = (0..BUCKETS)
        .map(|i| format!(", b{i} = check_rollups.b{i} + excluded.b{i}"))
        .collect();
    let rows: Vec<_> = rollups.into_iter().collect();
    let width = 3 + 5 + BUCKETS;
    for chunk in rows.chunks(20) {
        let sql = multi_row_insert(
            &format!(
                "check_rollups (monitor_id, granularity, bucket, checks, up, degraded, down, \
                 latency_sum_us{columns})"
            ),
            width,
            chunk.len(),
            &format!(
                "ON CONFLICT (monitor_id, granularity, bucket) DO UPDATE SET \
                 checks = check_rollups.checks + excluded.checks, \
                 up = check_rollups.up + excluded.up, \
                 degraded = check_rollups.degraded + excluded.degraded, \
                 down = check_rollups.down + excluded.down, \
                 latency_sum_us = check_rollups.latency_sum_us + excluded.latency_sum_us{updates}"
            ),
        );
        let mut values = Vec::with_capacity(chunk.len() * width);
        for ((id, granularity, bucket), counts) in chunk {
            values.extend(args![*id, *granularity, *bucket]);
            values.extend(counts.iter().map(|c| crate::store::Value::from(*c)));
        }
        tx.execute_assembled(sql, values).await?;
    }
    // The latest state of each monitor in the batch.
    let mut latest: BTreeMap<i64, &Recorded> = BTreeMap::new();
    for r in batch {
        latest
            .entry(r.monitor_id)
            .and_modify(|e| {
                if r.at >= e.at {
                    *e = r;
                }
            })
            .or_insert(r);
    }
    for r in latest.values() {
        let t = &r.tracker;
        tx.execute(
            "INSERT INTO monitor_states (monitor_id, state, since, failures, successes, \
             last_check_at, last_latency_us, last_error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (monitor_id) DO UPDATE SET state = excluded.state, since = excluded.since, \
             failures = excluded.failures, successes = excluded.successes, \
             last_check_at = excluded.last_check_at, last_latency_us = excluded.last_latency_us, \
             last_error = excluded.last_error \
             WHERE monitor_states.last_check_at IS NULL \
             OR monitor_states.last_check_at <= excluded.last_check_at",
            args![
                r.monitor_id,
                t.state.as_str(),
                t.since,
                i64::from(t.failures),
                i64::from(t.successes),
                r.at,
                r.result.latency_us,
                r.result.error.clone()
            ],
        )
        .await?;
    }
    let now = now_ms();
    for change in changes {
        crate::webhooks::queue::enqueue(&mut tx, "integration.state_changed", &change.data(), now)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes check results and minute rollups older than `results_days`, and hour and day
/// rollups older than `rollup_days`, one monitor at a time (each a range of its primary key);
/// returns the rows deleted.
pub async fn prune(store: &Store, now: i64, results_days: u32, rollup_days: u32) -> Result<u64> {
    let ids: Vec<(i64,)> = store
        .fetch_all("SELECT DISTINCT monitor_id FROM monitor_states", args![])
        .await?;
    let day = 86_400_000;
    let results_before = now - i64::from(results_days) * day;
    let rollups_before = now - i64::from(rollup_days) * day;
    let mut deleted = 0;
    for (id,) in ids {
        deleted += store
            .execute(
                "DELETE FROM check_results WHERE monitor_id = $1 AND at < $2",
                args![id, results_before],
            )
            .await?;
        deleted += store
            .execute(
                "DELETE FROM provider_readings WHERE monitor_id = $1 AND at < $2",
                args![id, results_before],
            )
            .await?;
        deleted += store
            .execute(
                "DELETE FROM check_rollups WHERE monitor_id = $1 AND granularity = 'minute' \
                 AND bucket < $2",
                args![id, results_before],
            )
            .await?;
        for granularity in ["hour", "day"] {
            deleted += store
                .execute(
                    "DELETE FROM check_rollups WHERE monitor_id = $1 AND granularity = $2 \
                     AND bucket < $3",
                    args![id, granularity, rollups_before],
                )
                .await?;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_buckets_and_quantiles_read_back() {
        assert_eq!(bucket_of(500), 0);
        assert_eq!(bucket_of(1_000), 0);
        assert_eq!(bucket_of(1_001), 1);
        assert_eq!(bucket_of(120_000), 9);
        assert_eq!(bucket_of(600_000_000), BUCKETS - 1);
        let mut h = [0i64; BUCKETS];
        for us in [
            3_000, 4_000, 8_000, 90_000, 95_000, 99_000, 99_500, 99_900, 99_999, 1_500_000,
        ] {
            h[bucket_of(us)] += 1;
        }
        assert_eq!(quantile(&h, 0.5), Some(100.0));
        assert_eq!(quantile(&h, 0.2), Some(5.0));
        assert_eq!(quantile(&h, 0.99), Some(2000.0));
        assert_eq!(quantile(&[0; BUCKETS], 0.5), None);
    }
}
