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
use super::monitor::Monitor;
use super::state::{Thresholds, Tracker};
use super::store::{self, Recorded, StoredMonitor};
use crate::access::secrets::MasterKey;
use crate::store::{Store, now_ms};

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

/// A monitor's thresholds and maintenance windows.
type Rules = (Thresholds, Vec<super::monitor::Window>);

struct Finished {
    monitor_id: i64,
    at: i64,
    /// How late the check started against its slot on the grid; `None` for a manual check.
    drift: Option<Duration>,
    result: CheckResult,
    /// A manual check waits for its result to be written and gets the state after it.
    reply: Option<oneshot::Sender<Tracker>>,
}

/// What the running scheduler shares: start lateness, the HTTP client every check uses, and
/// the way in for manual checks so that one task alone moves monitor states.
#[derive(Debug)]
pub struct Health {
    pub drift: DriftStats,
    client: reqwest::Client,
    inbox: std::sync::Mutex<Option<mpsc::Sender<Finished>>>,
    /// Each scheduled monitor's interval, by id, for the grid.
    intervals: std::sync::RwLock<HashMap<i64, Duration>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            drift: DriftStats::default(),
            client: checks::client(),
            inbox: std::sync::Mutex::default(),
            intervals: std::sync::RwLock::default(),
        }
    }
}

impl Health {
    /// How often monitor `id` is checked; `None` when the scheduler does not run it.
    pub fn interval(&self, id: i64) -> Option<Duration> {
        self.intervals
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
    }

    fn inbox(&self) -> Option<mpsc::Sender<Finished>> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
        let result = checks::run(&stored.monitor, &self.client).await;
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
                reply: Some(reply),
            };
            if inbox.send(finished).await.is_ok()
                && let Ok(tracker) = answer.await
            {
                return Ok(Some((result, tracker)));
            }
        }
        // No scheduler running (or it stopped meanwhile): nothing else moves states.
        let mut tracker = store::trackers(store)
            .await?
            .remove(&id)
            .unwrap_or_default();
        tracker.apply(
            result.verdict,
            limits,
            stored.monitor.in_maintenance(at),
            at,
        );
        store::record(
            store,
            &[Recorded {
                monitor_id: id,
                at,
                result: result.clone(),
                tracker,
            }],
        )
        .await?;
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

/// Runs the monitors stored now until `cancel` fires.
pub async fn run(
    store: Store,
    key: MasterKey,
    concurrency: usize,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> Result<(), super::HealthError> {
    let monitors: Vec<StoredMonitor> = store::list(&store, &key)
        .await?
        .into_iter()
        .filter(|m| !m.paused)
        .collect();
    let mut trackers = store::trackers(&store).await?;
    // What the recorder needs of each monitor: its thresholds and maintenance windows.
    let limits: HashMap<i64, Rules> = monitors
        .iter()
        .map(|m| {
            (
                m.id,
                (
                    Thresholds {
                        failures: m.monitor.failure_threshold,
                        successes: m.monitor.success_threshold,
                    },
                    m.monitor.maintenance.clone(),
                ),
            )
        })
        .collect();
    let (tx, rx) = mpsc::channel::<Finished>(BATCH * 4);
    let names: HashMap<i64, String> = monitors
        .iter()
        .map(|m| (m.id, m.monitor.name.clone()))
        .collect();
    *health.intervals.write().unwrap_or_else(|e| e.into_inner()) = monitors
        .iter()
        .map(|m| (m.id, m.monitor.interval))
        .collect();
    *health.inbox.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.clone());
    let recorder = tokio::spawn(record(
        store.clone(),
        rx,
        limits,
        std::mem::take(&mut trackers),
        names,
        health.clone(),
    ));

    let client = health.client.clone();
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let (ids, monitors): (Vec<i64>, Vec<Arc<Monitor>>) = monitors
        .into_iter()
        .map(|m| (m.id, Arc::new(m.monitor)))
        .unzip();
    let start = Instant::now();
    // (next slot, monitor index); each monitor's first slot is spread over its interval.
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = monitors
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let offset =
                rand::rng().random_range(Duration::ZERO..m.interval.max(Duration::from_millis(1)));
            Reverse((start + offset, i))
        })
        .collect();
    loop {
        let Some(Reverse((slot, i))) = due.peek().copied() else {
            cancel.cancelled().await;
            break;
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(slot) => {}
        }
        due.pop();
        let monitor = monitors[i].clone();
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (client, tx, id) = (client.clone(), tx.clone(), ids[i]);
        tokio::spawn(async move {
            let drift = Instant::now().saturating_duration_since(slot);
            let at = now_ms();
            let result = checks::run(&monitor, &client).await;
            drop(permit);
            let _ = tx
                .send(Finished {
                    monitor_id: id,
                    at,
                    drift: Some(drift),
                    result,
                    reply: None,
                })
                .await;
        });
        // The next slot on this monitor's grid that is still ahead.
        let interval = monitors[i].interval;
        let mut next = slot + interval;
        let now = Instant::now();
        while next <= now {
            next += interval;
        }
        due.push(Reverse((next + jitter(interval), i)));
    }
    *health.inbox.lock().unwrap_or_else(|e| e.into_inner()) = None;
    drop(tx);
    let _ = recorder.await;
    Ok(())
}

/// Applies each result to its monitor's state and writes them in batches.
async fn record(
    store: Store,
    mut rx: mpsc::Receiver<Finished>,
    limits: HashMap<i64, Rules>,
    mut trackers: std::collections::BTreeMap<i64, Tracker>,
    names: HashMap<i64, String>,
    health: Arc<Health>,
) {
    let mut batch: Vec<Recorded> = Vec::with_capacity(BATCH);
    let mut replies: Vec<(oneshot::Sender<Tracker>, Tracker)> = Vec::new();
    loop {
        let deadline = tokio::time::sleep(FLUSH_EVERY);
        tokio::pin!(deadline);
        let mut closed = false;
        while batch.len() < BATCH {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(f) => {
                        if let Some(d) = f.drift {
                            health.drift.push(d);
                        }
                        let tracker = trackers.entry(f.monitor_id).or_default();
                        let (limit, maintenance) = limits
                            .get(&f.monitor_id)
                            .map(|(t, w)| (*t, w.iter().any(|w| w.contains(f.at))))
                            .unwrap_or((Thresholds { failures: 1, successes: 1 }, false));
                        if let Some(previous) = tracker.apply(f.result.verdict, limit, maintenance, f.at) {
                            tracing::info!(
                                monitor = names.get(&f.monitor_id).map_or("?", String::as_str),
                                from = previous.as_str(),
                                to = tracker.state.as_str(),
                                error = f.result.error.as_deref().unwrap_or(""),
                                "monitor state changed"
                            );
                        }
                        batch.push(Recorded { monitor_id: f.monitor_id, at: f.at, result: f.result, tracker: *tracker });
                        if let Some(reply) = f.reply {
                            // Someone is waiting: write now.
                            replies.push((reply, *tracker));
                            break;
                        }
                    }
                    None => { closed = true; break; }
                },
                _ = &mut deadline => break,
            }
        }
        if !batch.is_empty() {
            if let Err(e) = store::record(&store, &batch).await {
                tracing::warn!(error = %e, checks = batch.len(), "could not record check results");
            }
            batch.clear();
        }
        for (reply, tracker) in replies.drain(..) {
            let _ = reply.send(tracker);
        }
        if closed {
            return;
        }
    }
}
