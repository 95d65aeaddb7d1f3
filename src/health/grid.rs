//! The status grid, held in memory: every monitor's state, last check and sliding-window
//! figures (uptime over 24 h / 7 d / 30 d, latency percentiles and an hourly sparkline over
//! 24 h). It is loaded once from the stored states and hour/day rollups, then kept current by
//! the recorder as each batch is written, so reading the grid never touches the database —
//! summing 10,000 monitors' rollups per request cannot meet the grid's 10 ms budget. Windows
//! are rings of hour and day slots stamped with their hour or day, so a slot from a previous
//! lap is recognised as stale rather than subtracted.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use super::HealthError;
use super::checks::Verdict;
use super::state::{State, Tracker};
use super::store::{self, BUCKETS, Recorded};
use crate::args;
use crate::store::Store;
use crate::usage::quota::rfc3339 as iso;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Hour slots: the last 24 hours and the current one.
const HOURS: usize = 25;
/// Day slots: today and the 30 before it, so 30 whole days fit beside a partial today.
const DAYS: usize = 31;
/// Monitors whose rollups are read in one query at load.
const LOAD_CHUNK: usize = 1000;

/// Share of checks that passed (up or degraded), 0..1; `null` without checks.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Uptime {
    #[serde(rename = "24h")]
    pub day: Option<f64>,
    #[serde(rename = "7d")]
    pub week: Option<f64>,
    #[serde(rename = "30d")]
    pub month: Option<f64>,
}

/// Check latency percentiles over the last 24 hours, in milliseconds (the upper bound of the
/// histogram bucket each falls in).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// One row of the status grid.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Integration {
    pub id: i64,
    pub name: String,
    pub kind: String,
    /// `config` (read-only) or `api`.
    pub source: String,
    /// `up`, `degraded`, `down`, `unknown` or `paused`.
    pub state: String,
    /// When the state began (RFC 3339).
    pub since: Option<String>,
    pub last_check: Option<String>,
    pub last_latency_ms: Option<f64>,
    pub last_error: Option<String>,
    /// How often it is checked, in seconds; 0 when the scheduler does not run it.
    pub interval_secs: f64,
    pub uptime: Uptime,
    pub latency_ms: Latency,
    /// Mean latency (ms) of each of the last 24 hours, oldest first; `null` for an hour
    /// without checks.
    pub sparkline: Vec<Option<f64>>,
    /// The provider quota with a known total, as last read; `null` for other kinds.
    pub quota: Option<QuotaGauge>,
    /// When the OAuth credential of a token kind (google_oauth, google_calendar, meta) stops
    /// working, as last read (RFC 3339); `null` for other kinds.
    pub token_expires_at: Option<String>,
}

/// How much of a provider quota is used, as last read.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaGauge {
    pub name: String,
    pub remaining: f64,
    pub total: f64,
    /// 0–100.
    pub used_percent: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct HourSlot {
    /// Hours since the epoch; 0 for a slot never used.
    hour: i64,
    checks: u32,
    down: u32,
    latency_sum_us: u64,
    histogram: [u16; BUCKETS],
}

#[derive(Debug, Clone, Copy, Default)]
struct DaySlot {
    day: i64,
    checks: u32,
    down: u32,
}

/// One monitor's row as the grid keeps it.
#[derive(Debug, Clone)]
struct Entry {
    id: i64,
    name: String,
    kind: String,
    source: String,
    paused: bool,
    interval: Option<Duration>,
    tracker: Tracker,
    last_check_at: Option<i64>,
    last_latency_us: Option<i64>,
    last_error: Option<String>,
    /// Why the stored definition cannot be read, for a monitor the scheduler cannot run;
    /// shown in place of the last check's error.
    problem: Option<String>,
    hours: [HourSlot; HOURS],
    days: [DaySlot; DAYS],
    quota: Option<QuotaGauge>,
    /// UTC ms, from a token kind's `token_expires_at` reading.
    token_expires_at: Option<i64>,
    /// The row as JSON, with the (current hour, first hour of the 24 h window, today) it was
    /// computed for: valid until a result, a change of the monitor, or the windows slide.
    json: Option<((i64, i64, i64), Box<str>)>,
}

/// What a row's figures depend on besides the entry itself: the hour and day windows.
fn window_key(now: i64) -> (i64, i64, i64) {
    (
        now.div_euclid(HOUR_MS),
        (now - DAY_MS + HOUR_MS - 1).div_euclid(HOUR_MS),
        now.div_euclid(DAY_MS),
    )
}

impl Entry {
    fn new(id: i64, name: String, kind: String, source: String, paused: bool) -> Self {
        Entry {
            id,
            name,
            kind,
            source,
            paused,
            interval: None,
            tracker: Tracker::default(),
            last_check_at: None,
            last_latency_us: None,
            last_error: None,
            problem: None,
            hours: [HourSlot::default(); HOURS],
            days: [DaySlot::default(); DAYS],
            quota: None,
            token_expires_at: None,
            json: None,
        }
    }

    /// The row as JSON, from the cache while it is still valid at `now`.
    fn json(&mut self, now: i64) -> &str {
        let key = window_key(now);
        if self.json.as_ref().is_none_or(|(k, _)| *k != key) {
            let text = serde_json::to_string(&self.row(now)).unwrap_or_else(|_| "null".into());
            self.json = Some((key, text.into_boxed_str()));
        }
        self.json.as_ref().map_or("null", |(_, j)| j)
    }

    /// Takes the quota gauge from a check's readings, if the kind has a quota with a total.
    fn read_quota(&mut self, readings: &[(String, f64)]) {
        if let Some((_, at)) = readings.iter().find(|(n, _)| n == "token_expires_at") {
            self.token_expires_at = Some(*at as i64 * 1000);
        }
        if self.kind == "meta" {
            // Meta's gauge is its rate limit: the nearest of the usage figures to 100 %.
            if let Some((_, used)) = readings.iter().find(|(n, _)| n == "graph_usage_percent") {
                self.quota = Some(QuotaGauge {
                    name: "Graph API rate limit".into(),
                    remaining: (100.0 - used).max(0.0),
                    total: 100.0,
                    used_percent: *used,
                });
            }
            return;
        }
        let Some(provider) = super::providers::Provider::parse(&self.kind) else {
            return;
        };
        for def in super::forecast::quotas(provider) {
            if let Some((remaining, Some(total))) = def.read(readings)
                && total > 0.0
            {
                self.quota = Some(QuotaGauge {
                    name: def.name.to_string(),
                    remaining,
                    total,
                    used_percent: ((total - remaining) / total * 1000.0).round() / 10.0,
                });
                return;
            }
        }
    }

    /// The hour slot for `hour`, emptied if it still holds an older lap; `None` when `hour` is
    /// older than what the slot holds (a result too late to count in the window).
    fn hour_slot(&mut self, hour: i64) -> Option<&mut HourSlot> {
        let slot = &mut self.hours[hour.rem_euclid(HOURS as i64) as usize];
        if slot.hour < hour {
            *slot = HourSlot {
                hour,
                ..Default::default()
            };
        }
        (slot.hour == hour).then_some(slot)
    }

    fn day_slot(&mut self, day: i64) -> Option<&mut DaySlot> {
        let slot = &mut self.days[day.rem_euclid(DAYS as i64) as usize];
        if slot.day < day {
            *slot = DaySlot {
                day,
                ..Default::default()
            };
        }
        (slot.day == day).then_some(slot)
    }

    fn count(&mut self, at: i64, verdict: Verdict, latency_us: i64) {
        self.json = None;
        let down = u32::from(verdict == Verdict::Down);
        if let Some(h) = self.hour_slot(at.div_euclid(HOUR_MS)) {
            h.checks = h.checks.saturating_add(1);
            h.down = h.down.saturating_add(down);
            h.latency_sum_us = h
                .latency_sum_us
                .saturating_add(u64::try_from(latency_us).unwrap_or(0));
            let b = &mut h.histogram[store::bucket_of(latency_us)];
            *b = b.saturating_add(1);
        }
        if let Some(d) = self.day_slot(at.div_euclid(DAY_MS)) {
            d.checks = d.checks.saturating_add(1);
            d.down = d.down.saturating_add(down);
        }
    }

    fn row(&self, now: i64) -> Integration {
        let share = |checks: u64, down: u64| {
            (checks > 0).then(|| (checks - down.min(checks)) as f64 / checks as f64)
        };
        let this_hour = now.div_euclid(HOUR_MS);
        // As the rollup query had it: hour buckets starting within the last 24 hours.
        let first_hour = (now - DAY_MS + HOUR_MS - 1).div_euclid(HOUR_MS);
        let (mut checks, mut down) = (0u64, 0u64);
        let mut histogram = [0i64; BUCKETS];
        let mut sparkline = vec![None; 24];
        for slot in &self.hours {
            if slot.checks == 0 || slot.hour < first_hour || slot.hour > this_hour {
                continue;
            }
            checks += u64::from(slot.checks);
            down += u64::from(slot.down);
            for (sum, n) in histogram.iter_mut().zip(slot.histogram) {
                *sum += i64::from(n);
            }
            // The sparkline's last point is the current hour.
            if let Some(point) = usize::try_from(23 - (this_hour - slot.hour))
                .ok()
                .and_then(|i| sparkline.get_mut(i))
            {
                *point = Some(
                    (slot.latency_sum_us as f64 / f64::from(slot.checks) / 1000.0 * 10.0).round()
                        / 10.0,
                );
            }
        }
        let today = now.div_euclid(DAY_MS);
        let days = |n: i64| {
            self.days
                .iter()
                .filter(|d| d.day > today - n && d.day <= today)
                .fold((0u64, 0u64), |(c, dn), d| {
                    (c + u64::from(d.checks), dn + u64::from(d.down))
                })
        };
        let (week_checks, week_down) = days(7);
        let (month_checks, month_down) = days(30);
        Integration {
            id: self.id,
            name: self.name.clone(),
            kind: self.kind.clone(),
            source: self.source.clone(),
            state: if self.paused {
                "paused".into()
            } else {
                self.tracker.state.as_str().into()
            },
            since: self.tracker.since.map(iso),
            last_check: self.last_check_at.map(iso),
            last_latency_ms: self.last_latency_us.map(|us| us as f64 / 1000.0),
            last_error: match &self.problem {
                Some(p) => Some(format!("the stored definition cannot be read: {p}")),
                None => self.last_error.clone(),
            },
            interval_secs: self.interval.map_or(0.0, |d| d.as_secs_f64()),
            uptime: Uptime {
                day: share(checks, down),
                week: share(week_checks, week_down),
                month: share(month_checks, month_down),
            },
            latency_ms: Latency {
                p50: store::quantile(&histogram, 0.50),
                p95: store::quantile(&histogram, 0.95),
                p99: store::quantile(&histogram, 0.99),
            },
            sparkline,
            quota: self.quota.clone(),
            token_expires_at: self.token_expires_at.map(iso),
        }
    }
}

/// Every monitor's grid row, by id, with the order the grid lists them in (by name).
#[derive(Debug, Default)]
pub struct Grid {
    entries: HashMap<i64, Entry>,
    order: Vec<i64>,
    /// Checks of monitors the grid does not list yet: a monitor created through the API and
    /// checked at once can be recorded before the reload that lists it reaches the grid.
    /// Applied when it is listed; bounded, since a monitor deleted meanwhile is never listed.
    early: Vec<Recorded>,
}

/// The most checks [`Grid::early`] holds.
const EARLY_MAX: usize = 256;

/// Monitors by state and the ones with a problem, from [`Grid::summary`].
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub total: usize,
    /// (state, monitors), problems first.
    pub counts: Vec<(&'static str, usize)>,
    /// Down, then degraded, each by name.
    pub problems: Vec<Problem>,
}

impl Summary {
    pub fn count(&self, state: &str) -> usize {
        self.counts
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }
}

/// A monitor down or degraded.
#[derive(Debug, Clone)]
pub struct Problem {
    pub id: i64,
    pub name: String,
    pub state: &'static str,
    /// When the state began, UTC ms.
    pub since: Option<i64>,
}

/// A monitor as the grid lists it: what the scheduler knows after a reload.
pub struct Listed {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub source: String,
    pub paused: bool,
    pub interval: Option<Duration>,
    /// Set for a monitor whose definition cannot be read (see [`Entry::problem`]).
    pub problem: Option<String>,
}

impl Grid {
    /// Reads the grid from the store: monitors, their states and the hour and day rollups of
    /// the windows. Intervals are unknown until the scheduler lists its monitors.
    pub async fn load(store: &Store, now: i64) -> Result<Self, HealthError> {
        Self::load_only(store, now, None).await
    }

    /// [`Grid::load`] of monitor `only` alone (a page of one integration on an instance that
    /// keeps no grid), or of every monitor.
    pub async fn load_only(
        store: &Store,
        now: i64,
        only: Option<i64>,
    ) -> Result<Self, HealthError> {
        // The id is a number, so it goes into the text as one.
        let (where_id, where_monitor, and_monitor) = match only {
            Some(id) => (
                format!(" WHERE id = {id}"),
                format!(" WHERE monitor_id = {id}"),
                format!(" AND monitor_id = {id}"),
            ),
            None => (String::new(), String::new(), String::new()),
        };
        let monitors: Vec<(i64, String, String, String, i64)> = store
            .fetch_all_assembled(
                format!("SELECT id, name, kind, source, paused FROM monitors{where_id}"),
                args![],
            )
            .await?;
        let mut grid = Grid::default();
        for (id, name, kind, source, paused) in monitors {
            grid.entries
                .insert(id, Entry::new(id, name, kind, source, paused != 0));
        }
        grid.sort();
        struct StateRow {
            monitor_id: i64,
            state: String,
            since: Option<i64>,
            failures: i64,
            successes: i64,
            last_check_at: Option<i64>,
            last_latency_us: Option<i64>,
            last_error: Option<String>,
        }
        crate::from_row!(StateRow {
            monitor_id,
            state,
            since,
            failures,
            successes,
            last_check_at,
            last_latency_us,
            last_error
        });
        let states: Vec<StateRow> = store
            .fetch_all_assembled(
                format!(
                    "SELECT monitor_id, state, since, failures, successes, last_check_at, \
                     last_latency_us, last_error FROM monitor_states{where_monitor}"
                ),
                args![],
            )
            .await?;
        for s in states {
            if let Some(e) = grid.entries.get_mut(&s.monitor_id) {
                e.tracker = Tracker {
                    state: State::parse(&s.state).unwrap_or(State::Unknown),
                    since: s.since,
                    failures: u32::try_from(s.failures).unwrap_or(u32::MAX),
                    successes: u32::try_from(s.successes).unwrap_or(u32::MAX),
                };
                e.last_check_at = s.last_check_at;
                e.last_latency_us = s.last_latency_us;
                e.last_error = s.last_error;
            }
        }
        let histogram: String = (0..BUCKETS).map(|i| format!(", b{i}")).collect();
        let first_hour = (now.div_euclid(HOUR_MS) - HOURS as i64 + 1) * HOUR_MS;
        let first_day = (now.div_euclid(DAY_MS) - DAYS as i64 + 1) * DAY_MS;
        // A thousand monitors at a time, named one by one so that both databases seek each
        // monitor's window on the primary key (monitor, granularity, bucket) rather than
        // scanning its whole history; 10,000 monitors' windows read at once would also be the
        // process's peak memory.
        let mut ids: Vec<i64> = grid.entries.keys().copied().collect();
        ids.sort_unstable();
        for chunk in ids.chunks(LOAD_CHUNK) {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            for (granularity, from) in [("hour", first_hour), ("day", first_day)] {
                let rows: Vec<RollupRow> = store
                    .fetch_all_assembled(
                        format!(
                            "SELECT monitor_id, granularity, bucket, checks, down, \
                             latency_sum_us{histogram} FROM check_rollups \
                             WHERE monitor_id IN ({list}) AND granularity = $1 AND bucket >= $2"
                        ),
                        args![granularity, from],
                    )
                    .await?;
                for r in rows {
                    grid.count_rollup(&r);
                }
            }
        }
        // The latest value of each provider reading, for the quota gauges.
        let latest: Vec<(i64, String, f64)> = store
            .fetch_all_assembled(
                format!(
                    "SELECT r.monitor_id, r.name, r.value FROM provider_readings r \
                     JOIN (SELECT monitor_id, name, MAX(at) AS at FROM provider_readings \
                     WHERE 1 = 1{and_monitor} GROUP BY monitor_id, name) m \
                     ON m.monitor_id = r.monitor_id AND m.name = r.name AND m.at = r.at"
                ),
                args![],
            )
            .await?;
        let mut by_monitor: HashMap<i64, Vec<(String, f64)>> = HashMap::new();
        for (id, name, value) in latest {
            by_monitor.entry(id).or_default().push((name, value));
        }
        for (id, readings) in by_monitor {
            if let Some(e) = grid.entries.get_mut(&id) {
                e.read_quota(&readings);
            }
        }
        Ok(grid)
    }

    fn count_rollup(&mut self, r: &RollupRow) {
        let Some(e) = self.entries.get_mut(&r.monitor_id) else {
            return;
        };
        let sat = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        if r.granularity == "hour" {
            if let Some(h) = e.hour_slot(r.bucket.div_euclid(HOUR_MS)) {
                h.checks = sat(r.checks);
                h.down = sat(r.down);
                h.latency_sum_us = u64::try_from(r.latency_sum_us).unwrap_or(0);
                for (slot, n) in h.histogram.iter_mut().zip(r.histogram) {
                    *slot = u16::try_from(n).unwrap_or(u16::MAX);
                }
            }
        } else if let Some(d) = e.day_slot(r.bucket.div_euclid(DAY_MS)) {
            d.checks = sat(r.checks);
            d.down = sat(r.down);
        }
    }

    fn sort(&mut self) {
        let mut order: Vec<(&str, i64)> = self
            .entries
            .values()
            .map(|e| (e.name.as_str(), e.id))
            .collect();
        order.sort_unstable();
        self.order = order.into_iter().map(|(_, id)| id).collect();
    }

    /// Takes the monitors the scheduler read: `listed` added or updated (keeping their
    /// figures), `removed` dropped; with `full`, `listed` is every monitor and any other entry
    /// goes too.
    pub fn update_monitors(&mut self, listed: Vec<Listed>, removed: &[i64], full: bool) {
        if full {
            let keep: std::collections::HashSet<i64> = listed.iter().map(|m| m.id).collect();
            self.entries.retain(|id, _| keep.contains(id));
        }
        for id in removed {
            self.entries.remove(id);
        }
        for m in listed {
            let e = self.entries.entry(m.id).or_insert_with(|| {
                Entry::new(
                    m.id,
                    m.name.clone(),
                    m.kind.clone(),
                    m.source.clone(),
                    m.paused,
                )
            });
            e.json = None;
            e.name = m.name;
            e.kind = m.kind;
            e.source = m.source;
            e.paused = m.paused;
            e.interval = m.interval;
            e.problem = m.problem;
        }
        self.early.retain(|r| !removed.contains(&r.monitor_id));
        if !self.early.is_empty() {
            let (listed, waiting): (Vec<Recorded>, Vec<Recorded>) = std::mem::take(&mut self.early)
                .into_iter()
                .partition(|r| self.entries.contains_key(&r.monitor_id));
            self.early = waiting;
            self.apply(&listed);
        }
        self.sort();
    }

    /// When monitor `id` was last checked (UTC ms), if it was.
    pub fn last_check(&self, id: i64) -> Option<i64> {
        self.entries.get(&id).and_then(|e| e.last_check_at)
    }

    /// Counts a written batch.
    pub fn apply(&mut self, batch: &[Recorded]) {
        for r in batch {
            let Some(e) = self.entries.get_mut(&r.monitor_id) else {
                if self.early.len() < EARLY_MAX {
                    self.early.push(r.clone());
                }
                continue;
            };
            e.count(r.at, r.result.verdict, r.result.latency_us);
            if !r.result.readings.is_empty() {
                e.read_quota(&r.result.readings);
            }
            if e.last_check_at.is_none_or(|last| r.at >= last) {
                e.tracker = r.tracker;
                e.last_check_at = Some(r.at);
                e.last_latency_us = Some(r.result.latency_us);
                e.last_error.clone_from(&r.result.error);
            }
        }
    }

    pub fn remove(&mut self, id: i64) {
        if self.entries.remove(&id).is_some() {
            self.order.retain(|i| *i != id);
        }
    }

    /// The state a row shows: `paused` over the tracker's.
    fn shown_state(e: &Entry) -> &'static str {
        if e.paused {
            "paused"
        } else {
            e.tracker.state.as_str()
        }
    }

    /// Ids in the order the grid lists them: problems first (down, then degraded), then the
    /// rest, each by name. States move with every check, so this is worked out per read:
    /// three passes over the name order, no sorting.
    fn problems_first(&self) -> Vec<i64> {
        let rank = |id: &i64| match self.entries.get(id).map(Self::shown_state) {
            Some("down") => 0,
            Some("degraded") => 1,
            _ => 2,
        };
        let mut out = Vec::with_capacity(self.order.len());
        for pass in 0..3 {
            out.extend(self.order.iter().filter(|id| rank(id) == pass));
        }
        out
    }

    /// How many monitors are in each state, and the ones down or degraded (down first, then by
    /// name): the Overview's status line, without building a row per monitor.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for id in self.problems_first() {
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            let state = Self::shown_state(e);
            match summary.counts.iter_mut().find(|(s, _)| *s == state) {
                Some((_, n)) => *n += 1,
                None => summary.counts.push((state, 1)),
            }
            if state == "down" || state == "degraded" {
                summary.problems.push(Problem {
                    id,
                    name: e.name.clone(),
                    state,
                    since: e.tracker.since,
                });
            }
        }
        summary.total = self.entries.len();
        summary
    }

    /// `{"integrations": [...]}` at `now`, problems first (see [`Grid::rows`]), each row's JSON reused
    /// from the last call unless its monitor changed or the windows slid since: at 10,000
    /// monitors and 1,000 checks a second most rows are unchanged between two reads.
    pub fn json(&mut self, now: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 512 + 32);
        out.extend_from_slice(b"{\"integrations\":[");
        for (i, id) in self.problems_first().iter().enumerate() {
            if let Some(e) = self.entries.get_mut(id) {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(e.json(now).as_bytes());
            }
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// The rows at `now`: all of them, down first, then degraded, then the rest, each group
    /// by name; or the one with id `only`.
    pub fn rows(&self, now: i64, only: Option<i64>) -> Vec<Integration> {
        match only {
            Some(id) => self
                .entries
                .get(&id)
                .map(|e| e.row(now))
                .into_iter()
                .collect(),
            None => self
                .problems_first()
                .iter()
                .filter_map(|id| self.entries.get(id))
                .map(|e| e.row(now))
                .collect(),
        }
    }
}

/// A rollup row read at load: the monitor, the slot and its counts and histogram.
struct RollupRow {
    monitor_id: i64,
    granularity: String,
    bucket: i64,
    checks: i64,
    down: i64,
    latency_sum_us: i64,
    histogram: [i64; BUCKETS],
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for RollupRow
where
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let mut histogram = [0; BUCKETS];
        for (i, h) in histogram.iter_mut().enumerate() {
            *h = row.try_get(6 + i)?;
        }
        Ok(Self {
            monitor_id: row.try_get(0)?,
            granularity: row.try_get(1)?,
            bucket: row.try_get(2)?,
            checks: row.try_get(3)?,
            down: row.try_get(4)?,
            latency_sum_us: row.try_get(5)?,
            histogram,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::checks::CheckResult;

    fn recorded(id: i64, at: i64, verdict: Verdict, latency_ms: i64) -> Recorded {
        Recorded {
            monitor_id: id,
            at,
            result: CheckResult {
                verdict,
                latency_us: latency_ms * 1000,
                status: None,
                error: (verdict == Verdict::Down).then(|| "HTTP 503".to_string()),
                detail: None,
                headers: Vec::new(),
                readings: Vec::new(),
            },
            tracker: Tracker {
                state: if verdict == Verdict::Down {
                    State::Down
                } else {
                    State::Up
                },
                since: Some(at),
                failures: 0,
                successes: 0,
            },
        }
    }

    fn grid_of(ids: &[(i64, &str)]) -> Grid {
        let mut g = Grid::default();
        g.update_monitors(
            ids.iter()
                .map(|(id, name)| Listed {
                    id: *id,
                    name: (*name).into(),
                    kind: "http".into(),
                    source: "api".into(),
                    paused: false,
                    interval: Some(Duration::from_secs(60)),
                    problem: None,
                })
                .collect(),
            &[],
            true,
        );
        g
    }

    #[test]
    fn a_check_recorded_before_its_monitor_is_listed_is_kept() {
        let mut g = grid_of(&[(1, "one")]);
        g.apply(&[recorded(2, 1_000, Verdict::Down, 30)]);
        assert_eq!(g.last_check(2), None);
        g.update_monitors(
            vec![Listed {
                id: 2,
                name: "two".into(),
                kind: "http".into(),
                source: "api".into(),
                paused: false,
                interval: Some(Duration::from_secs(60)),
                problem: None,
            }],
            &[],
            false,
        );
        assert_eq!(g.last_check(2), Some(1_000));
        assert!(g.early.is_empty());
    }

    #[test]
    fn problems_come_first_then_names() {
        let now = 1_000 * DAY_MS;
        let mut g = grid_of(&[(1, "alpha"), (2, "bravo"), (3, "charlie"), (4, "delta")]);
        let mut degraded = recorded(2, now, Verdict::Degraded, 10);
        degraded.tracker.state = State::Degraded;
        g.apply(&[
            recorded(1, now, Verdict::Up, 10),
            degraded,
            recorded(4, now, Verdict::Down, 10),
        ]);
        let names: Vec<String> = g.rows(now, None).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["delta", "bravo", "alpha", "charlie"]);
        let json: serde_json::Value = serde_json::from_slice(&g.json(now)).unwrap();
        let ids: Vec<i64> = json["integrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [4, 2, 1, 3]);
        let s = g.summary();
        assert_eq!((s.total, s.count("down"), s.count("degraded")), (4, 1, 1));
        assert_eq!((s.count("up"), s.count("unknown")), (1, 1));
        let problems: Vec<(&str, &str)> = s
            .problems
            .iter()
            .map(|p| (p.name.as_str(), p.state))
            .collect();
        assert_eq!(problems, [("delta", "down"), ("bravo", "degraded")]);
    }

    #[test]
    fn windows_slide_and_old_laps_do_not_count() {
        let now = 1_000 * DAY_MS + 10 * HOUR_MS + 5 * 60_000;
        let mut g = grid_of(&[(1, "api")]);
        g.apply(&[
            // 40 days ago: outside every window, though its slots get reused.
            recorded(1, now - 40 * DAY_MS, Verdict::Down, 10),
            // 25 hours ago: outside 24 h, inside 7 d.
            recorded(1, now - 25 * HOUR_MS, Verdict::Down, 10),
            // 10 days ago: inside 30 d only.
            recorded(1, now - 10 * DAY_MS, Verdict::Down, 10),
            recorded(1, now - 2 * HOUR_MS, Verdict::Up, 40),
            recorded(1, now - 60_000, Verdict::Up, 120),
            recorded(1, now - 30_000, Verdict::Down, 800),
        ]);
        let row = &g.rows(now, None)[0];
        assert_eq!(row.uptime.day, Some(2.0 / 3.0));
        assert_eq!(row.uptime.week, Some(2.0 / 4.0));
        assert_eq!(row.uptime.month, Some(2.0 / 5.0));
        assert_eq!(row.latency_ms.p50, Some(150.0));
        assert_eq!(row.latency_ms.p99, Some(1000.0));
        assert_eq!(row.state, "down");
        assert_eq!(row.last_error.as_deref(), Some("HTTP 503"));
        assert_eq!(row.sparkline.len(), 24);
        assert_eq!(
            row.sparkline[23],
            Some(460.0),
            "this hour's mean: (120 + 800) / 2"
        );
        assert_eq!(row.sparkline[21], Some(40.0));
        assert_eq!(row.sparkline.iter().flatten().count(), 2);

        // A day later with nothing new: the recent checks have slid out of 24 h but not 7 d.
        let later = &g.rows(now + DAY_MS, None)[0];
        assert_eq!(later.uptime.day, None);
        assert_eq!(later.uptime.week, Some(2.0 / 4.0));
        // A result too old for its slot's current lap is not counted.
        g.apply(&[recorded(
            1,
            now - 25 * DAY_MS - 2 * HOUR_MS,
            Verdict::Down,
            1,
        )]);
        assert_eq!(g.rows(now, None)[0].uptime.day, Some(2.0 / 3.0));
    }

    #[test]
    fn the_cached_json_is_the_rows_and_follows_results_and_time() {
        let now = 900 * DAY_MS + 5 * HOUR_MS + 30 * 60_000;
        let mut g = grid_of(&[(1, "b"), (2, "a")]);
        g.apply(&[recorded(1, now - 60_000, Verdict::Up, 20)]);
        let as_rows = |g: &Grid, at: i64| serde_json::json!({"integrations": serde_json::to_value(g.rows(at, None)).unwrap()});
        let parse = |bytes: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&bytes).unwrap();
        assert_eq!(parse(g.json(now)), as_rows(&g, now));
        // A new result changes its row at once.
        g.apply(&[recorded(1, now, Verdict::Down, 700)]);
        let after = parse(g.json(now));
        assert_eq!(after, as_rows(&g, now));
        // Down now, so listed first.
        assert_eq!(after["integrations"][0]["state"], "down");
        // A day later the cached rows have slid with the windows.
        let later = now + DAY_MS;
        assert_eq!(parse(g.json(later)), as_rows(&g, later));
        assert_eq!(
            parse(g.json(later))["integrations"][0]["uptime"]["24h"],
            serde_json::Value::Null
        );
        g.remove(2);
        assert_eq!(parse(g.json(later)), as_rows(&g, later));
    }

    #[test]
    fn monitors_come_and_go_in_name_order_keeping_their_figures() {
        let now = 500 * DAY_MS;
        let mut g = grid_of(&[(1, "b"), (2, "a")]);
        g.apply(&[recorded(1, now - 1000, Verdict::Up, 5)]);
        let names: Vec<String> = g.rows(now, None).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b"]);
        g.update_monitors(
            vec![
                Listed {
                    id: 1,
                    name: "c".into(),
                    kind: "http".into(),
                    source: "api".into(),
                    paused: true,
                    interval: None,
                    problem: None,
                },
                Listed {
                    id: 3,
                    name: "a2".into(),
                    kind: "tcp".into(),
                    source: "config".into(),
                    paused: false,
                    interval: Some(Duration::from_secs(5)),
                    problem: None,
                },
            ],
            &[],
            true,
        );
        let rows = g.rows(now, None);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a2", "c"]);
        assert_eq!(rows[1].state, "paused");
        assert_eq!(
            rows[1].uptime.day,
            Some(1.0),
            "renamed and paused, history kept"
        );
        assert_eq!(rows[1].interval_secs, 0.0);
        assert_eq!(rows[0].state, "unknown");
        // A partial update touches only what it names: one monitor added (unreadable), one
        // removed, the other kept.
        g.update_monitors(
            vec![Listed {
                id: 4,
                name: "b".into(),
                kind: "http".into(),
                source: "api".into(),
                paused: false,
                interval: None,
                problem: Some("sealed with another key".into()),
            }],
            &[3],
            false,
        );
        let rows = g.rows(now, None);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        assert!(
            rows[0]
                .last_error
                .as_deref()
                .unwrap()
                .contains("sealed with another key"),
            "{:?}",
            rows[0].last_error
        );
        g.remove(1);
        assert_eq!(g.rows(now, None).len(), 1);
        assert!(g.rows(now, Some(1)).is_empty());
        // Results of a monitor the grid does not list are ignored.
        g.apply(&[recorded(9, now, Verdict::Up, 1)]);
        assert_eq!(g.rows(now, None).len(), 1);
    }

    #[test]
    fn meta_shows_its_rate_limit_as_the_gauge() {
        let now = 500 * DAY_MS;
        let mut g = Grid::default();
        g.update_monitors(
            vec![Listed {
                id: 7,
                name: "ads".into(),
                kind: "meta".into(),
                source: "api".into(),
                paused: false,
                interval: Some(Duration::from_secs(60)),
                problem: None,
            }],
            &[],
            true,
        );
        let mut r = recorded(7, now, Verdict::Up, 5);
        r.result.readings = vec![
            ("app_call_count".into(), 12.0),
            ("graph_usage_percent".into(), 64.0),
        ];
        g.apply(&[r]);
        let quota = g.rows(now, Some(7))[0].quota.clone().expect("a gauge");
        assert_eq!(quota.name, "Graph API rate limit");
        assert_eq!(
            (quota.used_percent, quota.remaining, quota.total),
            (64.0, 36.0, 100.0)
        );
    }
}
