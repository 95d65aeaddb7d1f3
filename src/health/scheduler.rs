//! Runs every monitor on its interval. Each monitor keeps a fixed grid (its first run, then
//! every interval after, plus a small per-run jitter), so runs never drift however long checks
//! take; a run that could not start before the next one was due is skipped rather than bunched.
//! At most `concurrency` checks run at once. Results go to one recorder, which applies the
//! state machine and writes them in batches.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::checks::{self, CheckResult};
use super::grid::{Grid, Integration, Listed};
use super::monitor::Monitor;
use super::state::{Thresholds, Tracker};
use super::store::{self, Recorded};
use crate::access::audit::Actor;
use crate::access::secrets::MasterKey;
use crate::store::{Store, now_ms};

/// How often the scheduler looks for monitors changed elsewhere.
const CHANGES_POLL: Duration = Duration::from_secs(5);

/// Most results the recorder holds before writing, and longest it waits.
const BATCH: usize = 500;
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// A run's jitter: up to a tenth of the interval, at most a second, so monitors declared with
/// one interval do not all fire in the same instant.
fn jitter(interval: Duration) -> Duration {
    let most = (interval / 10).min(Duration::from_secs(1));
    if most.is_zero() {
        return Duration::ZERO;
    }
    rand::rng().random_range(Duration::ZERO..most)
}

/// What the recorder needs of a monitor: its name (for the log), thresholds and maintenance
/// windows.
#[derive(Debug, Clone)]
struct Known {
    name: String,
    kind: &'static str,
    thresholds: Thresholds,
    maintenance: Vec<super::monitor::Window>,
}

impl Known {
    fn of(m: &Monitor) -> Self {
        Known {
            name: m.name.clone(),
            kind: m.kind.as_str(),
            thresholds: Thresholds {
                failures: m.failure_threshold,
                successes: m.success_threshold,
            },
            maintenance: m.maintenance.clone(),
        }
    }
}

/// What reaches the recorder, in order: results, the set of monitors after a reload, and
/// deletions (done by the recorder so that no result of a deleted monitor is written after it).
enum Msg {
    Done(Finished),
    /// The rules of monitors (re)read by a reload, and those no longer checked (deleted,
    /// paused, unreadable); with `full`, `known` is every checked monitor.
    Monitors {
        known: HashMap<i64, Known>,
        unknown: Vec<i64>,
        full: bool,
    },
    Delete {
        id: i64,
        actor: Actor,
        reply: oneshot::Sender<Result<(), super::HealthError>>,
    },
}

struct Finished {
    monitor_id: i64,
    at: i64,
    /// How late the check started against its slot on the grid; `None` for a manual check.
    drift: Option<Duration>,
    result: CheckResult,
    /// A manual check carries its monitor's rules (a paused monitor is not in the recorder's
    /// set), waits for its result to be written and gets the state after it.
    manual: Option<(Known, oneshot::Sender<Tracker>)>,
}

/// What the running scheduler shares: start lateness, the HTTP client every check uses, and
/// the way in for manual checks so that one task alone moves monitor states.
#[derive(Debug)]
pub struct Health {
    pub drift: DriftStats,
    outbound: checks::Outbound,
    inbox: std::sync::Mutex<Option<mpsc::Sender<Msg>>>,
    /// Asks the running scheduler to read the monitors again; answered once it has.
    reloads: std::sync::Mutex<Option<mpsc::Sender<oneshot::Sender<()>>>>,
    /// The status grid, kept by the running scheduler; `None` until it has loaded it.
    grid: std::sync::RwLock<Option<Grid>>,
    /// The OAuth credentials' current access tokens, for the token kinds.
    pub tokens: Arc<crate::tokens::Vault>,
    /// Where no scheduler runs here (a standby instance), the grid as last read from the
    /// store and when: reused for [`STANDBY_GRID_TTL`], so a dashboard polling a standby does
    /// not read every monitor's windows on each request, and requests arriving during a read
    /// wait for it rather than each starting their own.
    standby: tokio::sync::Mutex<Option<(Instant, Grid)>>,
    /// Where state changes are announced (`system_status`) once recorded.
    pub events: crate::events::Bus,
}

/// How long a standby instance serves the grid it read (changes made through it are shown at
/// once: they drop the copy).
const STANDBY_GRID_TTL: Duration = Duration::from_secs(5);

impl Default for Health {
    fn default() -> Self {
        Self {
            drift: DriftStats::default(),
            outbound: checks::outbound(),
            inbox: std::sync::Mutex::default(),
            reloads: std::sync::Mutex::default(),
            grid: std::sync::RwLock::default(),
            tokens: Arc::default(),
            standby: tokio::sync::Mutex::default(),
            events: crate::events::Bus::default(),
        }
    }
}

impl Health {
    /// A scheduler's shared parts reading access tokens from `tokens`.
    pub fn with_tokens(tokens: Arc<crate::tokens::Vault>) -> Self {
        Health {
            tokens,
            ..Health::default()
        }
    }

    /// Checks reach their targets through `outbound` (its guard and clients).
    pub fn with_outbound(mut self, outbound: checks::Outbound) -> Self {
        self.outbound = outbound;
        self
    }

    /// The guard and clients checks go through, for the collections that run beside them.
    pub fn outbound(&self) -> &checks::Outbound {
        &self.outbound
    }

    /// Announces state changes on `events` (the application's bus) instead of a private one.
    pub fn with_events(mut self, events: crate::events::Bus) -> Self {
        self.events = events;
        self
    }

    /// Publishes recorded state changes on the bus: after their commit, never before.
    fn announce(&self, changes: &[store::Transition]) {
        for change in changes {
            self.events.publish(
                crate::events::Channel::SystemStatus,
                "integration.state_changed",
                change.data(),
            );
        }
    }

    /// The grid's rows (all, or monitor `only`): from memory while the scheduler runs, else
    /// from the store (one monitor's row read alone, the whole grid through the standby copy).
    pub async fn rows(
        &self,
        store: &Store,
        only: Option<i64>,
    ) -> Result<Vec<Integration>, super::HealthError> {
        let now = now_ms();
        if let Some(grid) = self.grid.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(grid.rows(now, only));
        }
        if only.is_some() {
            return Ok(Grid::load_only(store, now, only).await?.rows(now, only));
        }
        self.with_standby(store, |g| g.rows(now, None)).await
    }

    /// Monitors by state and the ones down or degraded, from memory like [`Health::rows`].
    pub async fn summary(&self, store: &Store) -> Result<super::grid::Summary, super::HealthError> {
        if let Some(grid) = self.grid.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(grid.summary());
        }
        self.with_standby(store, |g| g.summary()).await
    }

    /// The whole grid as `{"integrations": [...]}`, mostly from rows cached as JSON.
    pub async fn grid_json(&self, store: &Store) -> Result<Vec<u8>, super::HealthError> {
        let now = now_ms();
        if let Some(grid) = self
            .grid
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            return Ok(grid.json(now));
        }
        self.with_standby(store, |g| g.json(now)).await
    }

    /// Runs `f` on the standby copy of the grid, read again when older than its TTL.
    async fn with_standby<T>(
        &self,
        store: &Store,
        f: impl FnOnce(&mut Grid) -> T,
    ) -> Result<T, super::HealthError> {
        let mut copy = self.standby.lock().await;
        let (read, mut grid) = match copy.take() {
            Some((read, grid)) if read.elapsed() < STANDBY_GRID_TTL => (read, grid),
            _ => (Instant::now(), Grid::load(store, now_ms()).await?),
        };
        let out = f(&mut grid);
        *copy = Some((read, grid));
        Ok(out)
    }

    /// Drops the standby copy after a change made through this instance, so its next read
    /// shows the change.
    async fn forget_standby(&self) {
        *self.standby.lock().await = None;
    }

    fn with_grid(&self, f: impl FnOnce(&mut Grid)) {
        if let Some(grid) = self
            .grid
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            f(grid);
        }
    }

    fn inbox(&self) -> Option<mpsc::Sender<Msg>> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes the running scheduler (if any) pick up created, edited, paused and resumed
    /// monitors; returns once it has, so the next read of the grid shows the change.
    pub async fn reload(&self) {
        let sender = self
            .reloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(sender) = sender {
            let (done, wait) = oneshot::channel();
            if sender.send(done).await.is_ok() {
                let _ = wait.await;
            }
        }
        self.forget_standby().await;
    }

    /// Deletes an API monitor and everything recorded of it. With a scheduler running, the
    /// recorder removes the monitor between two batches and forgets it, so a check of it still
    /// in flight is dropped rather than written after the monitor is gone; its history is
    /// removed after that, in chunks, without holding the recorder up.
    pub async fn delete(
        &self,
        store: &Store,
        id: i64,
        actor: &Actor,
    ) -> Result<(), super::HealthError> {
        if let Some(inbox) = self.inbox() {
            let (reply, answer) = oneshot::channel();
            let msg = Msg::Delete {
                id,
                actor: actor.clone(),
                reply,
            };
            if inbox.send(msg).await.is_ok()
                && let Ok(outcome) = answer.await
            {
                outcome?;
                self.reload().await;
                // The history goes here, outside the recorder, before the answer; a purge cut
                // short is finished by the retention job.
                store::purge_deleted(store).await?;
                return Ok(());
            }
        }
        store::delete(store, id, actor).await?;
        self.forget_standby().await;
        store::purge_deleted(store).await?;
        Ok(())
    }

    /// Runs one check of monitor `id` now and records it like a scheduled one, returning the
    /// result and the monitor's state after it; `None` when there is no such monitor.
    pub async fn check_now(
        &self,
        store: &Store,
        key: &MasterKey,
        id: i64,
    ) -> Result<Option<(CheckResult, Tracker)>, super::HealthError> {
        let Some(stored) = store::get(store, key, id).await? else {
            return Ok(None);
        };
        let at = now_ms();
        let result = checks::run_with(&stored.monitor, &self.outbound, Some(&self.tokens)).await;
        let limits = Thresholds {
            failures: stored.monitor.failure_threshold,
            successes: stored.monitor.success_threshold,
        };
        if let Some(inbox) = self.inbox() {
            let (reply, answer) = oneshot::channel();
            let finished = Finished {
                monitor_id: id,
                at,
                drift: None,
                result: result.clone(),
                manual: Some((Known::of(&stored.monitor), reply)),
            };
            if inbox.send(Msg::Done(finished)).await.is_ok() {
                match answer.await {
                    Ok(tracker) => return Ok(Some((result, tracker))),
                    // The recorder drops a result of a monitor deleted meanwhile.
                    Err(_) if store::get(store, key, id).await?.is_none() => return Ok(None),
                    Err(_) => {}
                }
            }
        }
        // No scheduler running (or it stopped meanwhile): nothing else moves states.
        let mut tracker = store::trackers(store)
            .await?
            .remove(&id)
            .unwrap_or_default();
        let previous = tracker.apply(
            result.verdict,
            limits,
            stored.monitor.in_maintenance(at),
            at,
        );
        let changes: Vec<store::Transition> = previous
            .map(|from| store::Transition {
                monitor_id: id,
                name: stored.monitor.name.clone(),
                kind: stored.monitor.kind.as_str(),
                from,
                to: tracker.state,
                at,
                error: result.error.clone(),
            })
            .into_iter()
            .collect();
        store::record_with(
            store,
            &[Recorded {
                monitor_id: id,
                at,
                result: result.clone(),
                tracker,
            }],
            &changes,
        )
        .await?;
        self.announce(&changes);
        self.forget_standby().await;
        Ok(Some((result, tracker)))
    }
}

/// Lateness of check starts, for the benchmark and `/metrics`: the latest samples only, so a
/// server that runs for months holds a fixed amount.
#[derive(Debug, Default)]
pub struct DriftStats {
    samples: std::sync::Mutex<std::collections::VecDeque<u32>>,
}

const DRIFT_SAMPLES: usize = 1 << 16;

impl DriftStats {
    fn push(&self, drift: Duration) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() == DRIFT_SAMPLES {
            s.pop_front();
        }
        s.push_back(u32::try_from(drift.as_micros()).unwrap_or(u32::MAX));
    }

    /// (checks seen, p50, p99, max) of the start lateness, and clears the samples.
    pub fn take(&self) -> (usize, Duration, Duration, Duration) {
        let mut s: Vec<u32> =
            std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner())).into();
        if s.is_empty() {
            return (0, Duration::ZERO, Duration::ZERO, Duration::ZERO);
        }
        s.sort_unstable();
        let at = |q: f64| {
            Duration::from_micros(u64::from(s[((s.len() - 1) as f64 * q).round() as usize]))
        };
        (s.len(), at(0.5), at(0.99), at(1.0))
    }
}

/// One scheduled monitor. `generation` changes when it is edited, so slots queued for the old
/// definition are dropped when they come due.
struct Scheduled {
    monitor: Arc<Monitor>,
    /// A hash of the definition, to tell an edit from a reload that changed nothing without
    /// keeping a second copy of every definition.
    definition: u64,
    generation: u64,
}

fn definition_hash(spec: &super::monitor::MonitorSpec) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(spec).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// The scheduler's view of the stored monitors, brought up to date on every reload.
struct Plan {
    scheduled: HashMap<i64, Scheduled>,
    /// (when to start: the slot plus its jitter, the slot on the monitor's grid, monitor id,
    /// generation). The grid advances from the slot, not from the jittered start, so jitter
    /// never accumulates into a longer interval.
    due: BinaryHeap<Reverse<(Instant, Instant, i64, u64)>>,
    generations: u64,
    /// Each stored monitor's `updated_at` as last read (paused and unreadable ones too), so a
    /// reload opens only the definitions changed since; empty until the first reload.
    versions: HashMap<i64, i64>,
}

impl Plan {
    /// Reloads, logging a failure (the current set stays, and the next reload tries again).
    async fn reload_logged(
        &mut self,
        store: &Store,
        key: &MasterKey,
        health: &Health,
        recorder: &mpsc::Sender<Msg>,
    ) {
        if let Err(e) = self.reload(store, key, health, recorder).await {
            tracing::warn!(error = %e, "could not reload monitors; keeping the current set");
        }
    }

    /// Brings the plan up to date with the store: new and edited monitors get a first slot
    /// (see below), unchanged ones keep their place on the grid, paused and deleted ones go.
    /// Only the monitors changed since the last reload are read, so a change made through the
    /// API costs one small query and its own definition, not every monitor's.
    async fn reload(
        &mut self,
        store: &Store,
        key: &MasterKey,
        health: &Health,
        recorder: &mpsc::Sender<Msg>,
    ) -> Result<(), super::HealthError> {
        let current = store::versions(store).await?;
        let full = self.versions.is_empty();
        let changed: Vec<i64> = current
            .iter()
            .filter(|(id, at)| self.versions.get(id) != Some(at))
            .map(|(id, _)| *id)
            .collect();
        let mut removed: Vec<i64> = self
            .versions
            .keys()
            .filter(|id| !current.contains_key(id))
            .copied()
            .collect();
        if !full && changed.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let (stored, unreadable) =
            store::read_for_schedule(store, key, (!full).then_some(changed.as_slice())).await?;
        // A monitor deleted between the two reads is gone now.
        let mut read: std::collections::HashSet<i64> = stored.iter().map(|m| m.id).collect();
        read.extend(unreadable.iter().map(|u| u.id));
        removed.extend(changed.iter().filter(|id| !read.contains(id)));
        for id in &removed {
            self.versions.remove(id);
            self.scheduled.remove(id);
        }
        for id in &read {
            // One read before the definitions: a monitor edited in between is read again
            // next time (a created one has no version yet, and is too).
            self.versions
                .insert(*id, current.get(id).copied().unwrap_or_default());
        }
        let mut listed: Vec<Listed> = Vec::with_capacity(read.len());
        listed.extend(unreadable.into_iter().map(|u| {
            self.scheduled.remove(&u.id);
            Listed {
                id: u.id,
                name: u.name,
                kind: u.kind,
                source: u.source,
                paused: u.paused,
                interval: None,
                problem: Some(u.problem),
            }
        }));
        listed.extend(stored.iter().map(|m| Listed {
            id: m.id,
            name: m.monitor.name.clone(),
            kind: m.monitor.kind.as_str().into(),
            source: m.source.clone(),
            paused: m.paused,
            interval: (!m.paused).then_some(m.monitor.interval),
            problem: None,
        }));
        let now = Instant::now();
        let now_wall = now_ms();
        // When each monitor was last checked (the grid knows), so a restart or a takeover
        // continues each one's rhythm instead of re-drawing it over a whole interval: a 24 h
        // monitor would otherwise wait up to 24 h more.
        let last_checks: HashMap<i64, i64> = {
            let grid = health.grid.read().unwrap_or_else(|e| e.into_inner());
            stored
                .iter()
                .filter_map(|m| Some((m.id, grid.as_ref()?.last_check(m.id)?)))
                .collect()
        };
        let fresh = stored
            .iter()
            .filter(|m| !m.paused && !self.scheduled.contains_key(&m.id))
            .count();
        // Monitors due now (never checked, new, edited, resumed) start within ten seconds, or
        // spread at 100 a second when there are many, never over more than their interval.
        let spread = Duration::from_millis(10) * fresh as u32;
        let catch_up = Duration::from_secs(10).max(spread);
        // Overdue ones (a slot missed while no instance checked, as when a holder died and
        // this instance took the lease over) start within a second at that rate: health is
        // unwatched until they do.
        let overdue = Duration::from_secs(1).max(spread);
        let mut known = HashMap::with_capacity(stored.len());
        let mut unknown = removed.clone();
        for m in stored {
            let previous = self.scheduled.remove(&m.id);
            if m.paused {
                unknown.push(m.id);
                continue;
            }
            let definition = definition_hash(&m.spec);
            let entry = match previous {
                Some(old) if old.definition == definition => old,
                edited => {
                    self.generations += 1;
                    let interval = m.monitor.interval.max(Duration::from_millis(1));
                    let ahead = edited
                        .is_none()
                        .then(|| last_checks.get(&m.id))
                        .flatten()
                        .map(|last| {
                            last + i64::try_from(interval.as_millis()).unwrap_or(i64::MAX)
                                - now_wall
                        });
                    let offset = match ahead {
                        Some(ahead) if ahead > 0 => {
                            Duration::from_millis(u64::try_from(ahead).unwrap_or(0))
                        }
                        Some(_) => rand::rng().random_range(Duration::ZERO..overdue.min(interval)),
                        None => rand::rng().random_range(Duration::ZERO..catch_up.min(interval)),
                    };
                    self.due.push(Reverse((
                        now + offset,
                        now + offset,
                        m.id,
                        self.generations,
                    )));
                    Scheduled {
                        monitor: Arc::new(m.monitor),
                        definition,
                        generation: self.generations,
                    }
                }
            };
            known.insert(m.id, Known::of(&entry.monitor));
            self.scheduled.insert(m.id, entry);
        }
        unknown.extend(listed.iter().filter(|l| l.problem.is_some()).map(|l| l.id));
        health.with_grid(|g| g.update_monitors(listed, &removed, full));
        // Sent before any check of a new monitor starts, so its result finds its rules.
        let _ = recorder
            .send(Msg::Monitors {
                known,
                unknown,
                full,
            })
            .await;
        Ok(())
    }
}

/// Runs the stored monitors until `cancel` fires, reading them again whenever
/// [`Health::reload`] asks.
pub async fn run(
    store: Store,
    key: MasterKey,
    concurrency: usize,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> Result<(), super::HealthError> {
    // The ways in (manual checks, deletions, reloads) open first: anything sent while the
    // grid loads waits in the channels rather than bypassing the recorder or being missed.
    let (tx, rx) = mpsc::channel::<Msg>(BATCH * 4);
    let (reload_tx, mut reload_rx) = mpsc::channel::<oneshot::Sender<()>>(16);
    *health.reloads.lock().unwrap_or_else(|e| e.into_inner()) = Some(reload_tx);
    *health.inbox.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.clone());
    let close = |health: &Health| {
        *health.reloads.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *health.inbox.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *health.grid.write().unwrap_or_else(|e| e.into_inner()) = None;
    };
    let loaded = async {
        let trackers = store::trackers(&store).await?;
        let grid = Grid::load(&store, now_ms()).await?;
        Ok::<_, super::HealthError>((trackers, grid))
    };
    let (trackers, grid) = match loaded.await {
        Ok(loaded) => loaded,
        Err(e) => {
            close(&health);
            return Err(e);
        }
    };
    *health.grid.write().unwrap_or_else(|e| e.into_inner()) = Some(grid);
    let recorder = tokio::spawn(record(store.clone(), rx, trackers, health.clone()));
    let mut plan = Plan {
        scheduled: HashMap::new(),
        due: BinaryHeap::new(),
        generations: 0,
        versions: HashMap::new(),
    };
    if let Err(e) = plan.reload(&store, &key, &health, &tx).await {
        close(&health);
        drop(tx);
        let _ = recorder.await;
        return Err(e);
    }

    let client = health.outbound.clone();
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut poll = tokio::time::interval(CHANGES_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = plan.due.peek().map(|Reverse((start, ..))| *start);
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(done) = reload_rx.recv() => {
                plan.reload_logged(&store, &key, &health, &tx).await;
                let _ = done.send(());
                continue;
            }
            // Changes made through another instance (it has no scheduler to tell) or by a
            // restarted instance's config: seen within the poll interval.
            _ = poll.tick() => {
                plan.reload_logged(&store, &key, &health, &tx).await;
                continue;
            }
            _ = async {
                match next {
                    Some(slot) => tokio::time::sleep_until(slot).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        // A free slot first, the due monitor after: while every slot is busy with slow
        // checks, a reload (an API change waiting for its answer) is still served, and the
        // due monitor stays queued.
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(done) = reload_rx.recv() => {
                plan.reload_logged(&store, &key, &health, &tx).await;
                let _ = done.send(());
                continue;
            }
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let Some(Reverse((start, slot, id, generation))) = plan.due.pop() else {
            continue;
        };
        let Some(entry) = plan
            .scheduled
            .get(&id)
            .filter(|s| s.generation == generation)
        else {
            // Edited, paused or deleted since this slot was queued.
            continue;
        };
        let monitor = entry.monitor.clone();
        let (client, tx, tokens) = (client.clone(), tx.clone(), health.tokens.clone());
        let interval = monitor.interval;
        tokio::spawn(async move {
            let drift = Instant::now().saturating_duration_since(start);
            let at = now_ms();
            let result = checks::run_with(&monitor, &client, Some(&tokens)).await;
            drop(permit);
            let _ = tx
                .send(Msg::Done(Finished {
                    monitor_id: id,
                    at,
                    drift: Some(drift),
                    result,
                    manual: None,
                }))
                .await;
        });
        // The next slot on this monitor's grid that is still ahead.
        let mut next = slot + interval;
        let now = Instant::now();
        while next <= now {
            next += interval;
        }
        plan.due
            .push(Reverse((next + jitter(interval), next, id, generation)));
    }
    close(&health);
    drop(tx);
    let _ = recorder.await;
    Ok(())
}

/// Applies each result to its monitor's state and writes them in batches; deletes monitors
/// between batches.
async fn record(
    store: Store,
    mut rx: mpsc::Receiver<Msg>,
    mut trackers: std::collections::BTreeMap<i64, Tracker>,
    health: Arc<Health>,
) {
    let mut known: HashMap<i64, Known> = HashMap::new();
    let mut last_at: HashMap<i64, i64> = HashMap::new();
    // Deleted monitors, so that a reload read before the deletion cannot bring one back (ids
    // are never reused).
    let mut gone: std::collections::HashSet<i64> = std::collections::HashSet::new();
    let mut batch: Vec<Recorded> = Vec::with_capacity(BATCH);
    let mut changes: Vec<store::Transition> = Vec::new();
    let mut replies: Vec<(oneshot::Sender<Tracker>, Tracker)> = Vec::new();
    loop {
        let deadline = tokio::time::sleep(FLUSH_EVERY);
        tokio::pin!(deadline);
        let mut closed = false;
        let mut delete = None;
        while batch.len() < BATCH {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(Msg::Done(f)) => {
                        if let Some(d) = f.drift {
                            health.drift.push(d);
                        }
                        if gone.contains(&f.monitor_id) {
                            continue;
                        }
                        let (rules, reply) = match f.manual {
                            Some((rules, reply)) => (rules, Some(reply)),
                            None => match known.get(&f.monitor_id) {
                                Some(rules) => (rules.clone(), None),
                                // Paused or deleted while the check ran.
                                None => continue,
                            },
                        };
                        let tracker = trackers.entry(f.monitor_id).or_default();
                        let maintenance = rules.maintenance.iter().any(|w| w.contains(f.at));
                        // A check that started before the last one applied (a slow manual
                        // check, an overlapping run) is recorded but does not move the state:
                        // the store, the grid and this task agree on "the newest check wins".
                        let newest = last_at.get(&f.monitor_id).is_none_or(|last| f.at >= *last);
                        if newest {
                            last_at.insert(f.monitor_id, f.at);
                        }
                        if newest && let Some(previous) = tracker.apply(f.result.verdict, rules.thresholds, maintenance, f.at) {
                            tracing::info!(
                                monitor = rules.name.as_str(),
                                from = previous.as_str(),
                                to = tracker.state.as_str(),
                                error = f.result.error.as_deref().unwrap_or(""),
                                "monitor state changed"
                            );
                            changes.push(store::Transition {
                                monitor_id: f.monitor_id,
                                name: rules.name.clone(),
                                kind: rules.kind,
                                from: previous,
                                to: tracker.state,
                                at: f.at,
                                error: f.result.error.clone(),
                            });
                        }
                        batch.push(Recorded { monitor_id: f.monitor_id, at: f.at, result: f.result, tracker: *tracker });
                        if let Some(reply) = reply {
                            // Someone is waiting: write now.
                            replies.push((reply, *tracker));
                            break;
                        }
                    }
                    Some(Msg::Monitors { known: mut read, unknown, full }) => {
                        read.retain(|id, _| !gone.contains(id));
                        if full {
                            known = read;
                        } else {
                            for id in unknown {
                                known.remove(&id);
                            }
                            known.extend(read);
                        }
                    }
                    Some(Msg::Delete { id, actor, reply }) => {
                        delete = Some((id, actor, reply));
                        break;
                    }
                    None => { closed = true; break; }
                },
                _ = &mut deadline => break,
            }
        }
        if !batch.is_empty() {
            let mut written = store::record_with(&store, &batch, &changes).await;
            if written.is_err() {
                // A monitor deleted by another instance fails the whole batch on its foreign
                // key until the next reload: write the rest.
                let ids: Vec<i64> = batch.iter().map(|r| r.monitor_id).collect();
                if let Ok(present) = store::existing(&store, &ids).await
                    && present.len() < ids.iter().collect::<std::collections::HashSet<_>>().len()
                {
                    batch.retain(|r| present.contains(&r.monitor_id));
                    changes.retain(|c| present.contains(&c.monitor_id));
                    written = store::record_with(&store, &batch, &changes).await;
                }
            }
            match written {
                Ok(()) => {
                    health.with_grid(|g| g.apply(&batch));
                    health.announce(&changes);
                }
                Err(e) => {
                    tracing::warn!(error = %e, checks = batch.len(), "could not record check results");
                }
            }
            batch.clear();
            changes.clear();
        }
        for (reply, tracker) in replies.drain(..) {
            let _ = reply.send(tracker);
        }
        if let Some((id, actor, reply)) = delete {
            let outcome = store::delete(&store, id, &actor).await;
            if outcome.is_ok() {
                gone.insert(id);
                known.remove(&id);
                trackers.remove(&id);
                health.with_grid(|g| g.remove(id));
            }
            let _ = reply.send(outcome);
        }
        if closed {
            return;
        }
    }
}
