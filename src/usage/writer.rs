//! The ingest writer: one task owns every event insert and commits what concurrent requests
//! hand it in one transaction (group commit). A request is answered only after the transaction
//! holding its events has committed, so an acknowledged event survives a crash, while the cost
//! of each commit's fsync is shared by every request that arrived meanwhile.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::dedup::{self, Window};
use super::event::NewEvent;
use super::quota::Watch;
use super::rollup::{Deferred, Rollups};
use crate::store::fence::SettleRequest;
use crate::store::{
    DirectSqlite, PG_STATEMENT_BYTES, Store, StoreError, Tx, chunks_by_size, now_ms,
};

/// Most events written in one transaction; a bigger backlog is split across commits.
const MAX_EVENTS_PER_COMMIT: usize = 20_000;

/// What happened to one request's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    pub accepted: usize,
    pub duplicates: usize,
}

struct Job {
    /// Shared so the SQLite path can hand the events to its blocking thread without a copy.
    events: Arc<Vec<NewEvent>>,
    reply: oneshot::Sender<Result<Written, IngestError>>,
}

/// The handle request handlers use; cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    tx: mpsc::Sender<Job>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the ingest writer is not running (server shutting down)")]
    Stopped,
    #[error("storing events failed: {0}")]
    Store(String),
    /// The store stayed locked by another writer past the busy timeout; nothing was written.
    #[error("the store is busy with another writer; retry shortly")]
    Busy,
}

impl Ingestor {
    /// Creates the handle and the receiving end [`run`] consumes.
    pub fn channel() -> (Self, WriterInbox) {
        // Bounded: under overload requests wait for room instead of growing memory.
        let (tx, rx) = mpsc::channel(1024);
        (Self { tx }, WriterInbox(rx))
    }

    /// Hands `events` to the writer and waits until they are committed.
    pub async fn write(&self, events: Vec<NewEvent>) -> Result<Written, IngestError> {
        if events.is_empty() {
            return Ok(Written::default());
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                events: Arc::new(events),
                reply,
            })
            .await
            .map_err(|_| IngestError::Stopped)?;
        answer.await.map_err(|_| IngestError::Stopped)?
    }
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        if e.is_busy() {
            IngestError::Busy
        } else {
            IngestError::Store(e.to_string())
        }
    }
}

/// The SQLite dedup window's bounds (`ingest.dedup_window`, `ingest.dedup_max_events`).
#[derive(Debug, Clone, Copy)]
pub struct DedupSettings {
    pub window_ms: i64,
    pub max_events: usize,
}

impl DedupSettings {
    pub fn from_config(c: &crate::config::IngestConfig) -> Self {
        Self {
            window_ms: i64::try_from(c.dedup_window.0.as_millis()).unwrap_or(i64::MAX),
            max_events: c.dedup_max_events,
        }
    }
}

/// The writer's end of the channel.
pub struct WriterInbox(mpsc::Receiver<Job>);

/// Transactions the writer keeps in flight at once on PostgreSQL. Each commit is a sequence of
/// round trips on one connection, which left half of both cores idle; a second transaction
/// inserts its events while the first writes its rollups. (SQLite allows one writer at a time,
/// so it commits one group at a time.)
const PG_COMMITS_IN_FLIGHT: usize = 2;

/// Times a PostgreSQL group commit is tried when it is aborted as a deadlock or serialization
/// failure (see [`StoreError::is_retryable`]).
const PG_COMMIT_ATTEMPTS: u32 = 3;

/// Runs until every [`Ingestor`] handle is dropped or `stop` resolves, finishing the jobs it has
/// already received.
pub async fn run(
    store: Store,
    inbox: WriterInbox,
    quota_watch: Arc<Watch>,
    dedup: DedupSettings,
    stop: impl std::future::Future<Output = ()>,
) {
    match store.direct_sqlite() {
        Some(direct) => run_direct(store, direct, inbox, quota_watch, dedup, stop).await,
        None => run_pooled(store, inbox, quota_watch, stop).await,
    }
}

/// Takes the first job (or `None` once the inbox is closed and drained) and whatever else is
/// already queued, up to [`MAX_EVENTS_PER_COMMIT`] events.
fn gather(first: Job, inbox: &mut WriterInbox) -> Vec<Job> {
    let n = first.events.len();
    let mut jobs = vec![first];
    top_up(&mut jobs, n, inbox);
    jobs
}

/// Adds what the inbox holds already to `jobs` (of `n` events), up to [`MAX_EVENTS_PER_COMMIT`].
fn top_up(jobs: &mut Vec<Job>, mut n: usize, inbox: &mut WriterInbox) {
    while n < MAX_EVENTS_PER_COMMIT {
        match inbox.0.try_recv() {
            Ok(job) => {
                n += job.events.len();
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
}

/// PostgreSQL: up to [`PG_COMMITS_IN_FLIGHT`] group commits at once, each journaling its
/// minute increments in a `rollup_journal` row of its own; [`run_folder`] folds the journal (of
/// every instance sharing the database) into `usage_rollups` and `usage_months` about once a
/// second. Upserting each commit's rollups in that commit was most of PostgreSQL's work per
/// event, and its month totals made the commits in flight wait on each other.
async fn run_pooled(
    store: Store,
    mut inbox: WriterInbox,
    quota_watch: Arc<Watch>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let (stop_folder, folder_stopped) = oneshot::channel();
    let folder = tokio::spawn(run_folder(store.clone(), folder_stopped));
    let mut in_flight = tokio::task::JoinSet::new();
    let mut stopping = false;
    loop {
        while in_flight.len() >= PG_COMMITS_IN_FLIGHT {
            in_flight.join_next().await;
        }
        let first = if stopping {
            match inbox.0.recv().await {
                Some(job) => job,
                None => break,
            }
        } else {
            tokio::select! {
                job = inbox.0.recv() => match job { Some(job) => job, None => break },
                () = &mut stop => {
                    inbox.0.close();
                    stopping = true;
                    continue;
                }
            }
        };
        let jobs = gather(first, &mut inbox);
        in_flight.spawn(commit_and_reply(store.clone(), jobs, quota_watch.clone()));
    }
    while in_flight.join_next().await.is_some() {}
    // A clean stop leaves nothing journaled.
    let _ = stop_folder.send(());
    let _ = folder.await;
}

/// Rollups held in memory are written once this many events' worth are held...
const FLUSH_EVENTS: u64 = 200_000;
/// ...or this many minute rows (a history import spread over many customers and days)...
const FLUSH_ROWS: usize = 16_000;
/// ...or when the oldest has waited this long...
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// ...or when no request has arrived for this long after a commit, so a quiet store has
/// nothing pending; and at once when a read asks (see `store::fence`).
const FLUSH_IDLE: std::time::Duration = std::time::Duration::from_millis(50);

/// SQLite: one group commit at a time on the direct connection; each commit journals its
/// rollups, and they are written in bulk (see [`Deferred`]).
///
/// Pipelined: while one group is on the connection's thread, the next is prepared here (see
/// [`prepare`]), so that thread only runs statements. The next group is closed as late as its
/// preparation allows ([`Pace`]), so it holds every request that arrived meanwhile.
async fn run_direct(
    store: Store,
    direct: DirectSqlite,
    mut inbox: WriterInbox,
    quota_watch: Arc<Watch>,
    dedup: DedupSettings,
    stop: impl std::future::Future<Output = ()>,
) {
    use std::time::Instant;
    tokio::pin!(stop);
    let window = Arc::new(Mutex::new(Window::new(dedup.window_ms, dedup.max_events)));
    let deferred = Arc::new(Mutex::new(Deferred::default()));
    // Before the first commit, so that a retry of an event acknowledged before a restart is
    // still recognised.
    let w = window.clone();
    let loaded = direct
        .run(move |conn| {
            let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
            dedup::load(conn, &mut w, now_ms())?;
            Ok(w.len())
        })
        .await;
    match loaded {
        Ok(n) => tracing::info!(keys = n, "dedup window loaded"),
        Err(e) => {
            tracing::error!(error = %e, "could not load the dedup window; duplicates of events received before this start will not be recognised")
        }
    }
    let _checkpointer = spawn_checkpointer(&direct);
    let mut settle = store.fence().attach();
    let mut waiters: Vec<SettleRequest> = Vec::new();
    // When the oldest held rollup arrived, and when the last commit finished.
    let mut held_since: Option<Instant> = None;
    let mut last_commit = Instant::now();
    // After a failed flush, none but a read's is tried again before this: the held counts
    // stay past their bounds, and the loop would otherwise retry at once, forever.
    let mut retry_flush: Option<Instant> = None;
    let mut stopping = false;
    let mut closed = false;
    // Requests received and not yet prepared, the group prepared and waiting for the
    // connection, and the group on it.
    let mut queued: Vec<Job> = Vec::new();
    // Events in `queued`: it takes from the inbox up to one group's worth, so that the
    // inbox's bound still holds requests back.
    let mut queued_events = 0;
    let mut next: Option<Prepared> = None;
    let mut writing: Option<Writing> = None;
    let mut pace = Pace::default();
    let ctx = DirectCtx {
        direct: direct.clone(),
        window: window.clone(),
        deferred: deferred.clone(),
        store: store.clone(),
        quota_watch,
    };
    loop {
        if writing.is_none() {
            let held = deferred_events(&deferred);
            let backing_off = retry_flush.is_some_and(|t| Instant::now() < t);
            if (!backing_off && flush_due(&deferred, held_since)) || !waiters.is_empty() {
                if held > 0 {
                    let ok = flush(&direct, &deferred, &store).await;
                    flushed(ok, &mut held_since, &mut retry_flush);
                }
                // Answered even on failure: the read goes ahead with what is stored.
                waiters.clear();
                continue;
            }
            if next.is_none() && !queued.is_empty() {
                let started = Instant::now();
                next = Some(prepare(&window, take_group(&mut queued, &mut inbox)));
                queued_events = events_in(&queued);
                pace.prepared = started.elapsed();
            }
            if let Some(group) = next.take() {
                writing = Some(ctx.start(group));
            }
        }
        if closed && writing.is_none() && next.is_none() && queued.is_empty() {
            break;
        }
        // The next group is closed when its preparation would end about as the group being
        // written does; an idle connection takes what there is at once.
        let prepare_at = writing.as_ref().map(|w| pace.prepare_at(w.started));
        let flush_at = held_since.map(|t| {
            let at = (t + FLUSH_AFTER).min(last_commit + FLUSH_IDLE);
            retry_flush.map_or(at, |r| at.max(r))
        });
        tokio::select! {
            biased;
            Some(req) = settle.recv() => waiters.push(req),
            outcome = async {
                match writing.as_mut() {
                    Some(w) => w.wait().await,
                    None => std::future::pending().await,
                }
            }, if writing.is_some() => {
                let Some(done) = writing.take() else { continue };
                pace.wrote = done.started.elapsed();
                // The next group goes to the connection before this one's requests are
                // answered; not after a failure, which takes back the keys it was prepared
                // against, nor when a read waits for the held rollups.
                let backing_off = retry_flush.is_some_and(|t| Instant::now() < t);
                if outcome.is_ok()
                    && waiters.is_empty()
                    && (backing_off || !flush_due(&deferred, held_since))
                    && let Some(group) = next.take()
                {
                    writing = Some(ctx.start(group));
                }
                ctx.finish(done, outcome, &mut next, &mut queued).await;
                queued_events = events_in(&queued);
                last_commit = Instant::now();
                if held_since.is_none() && deferred_events(&deferred) > 0 {
                    held_since = Some(last_commit);
                }
            }
            () = &mut stop, if !stopping => {
                inbox.0.close();
                stopping = true;
            }
            // Before the inbox: a steady stream of requests must not keep the next group open.
            () = async {
                match prepare_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            }, if next.is_none() && !queued.is_empty() => {
                let started = Instant::now();
                next = Some(prepare(&window, take_group(&mut queued, &mut inbox)));
                queued_events = events_in(&queued);
                pace.prepared = started.elapsed();
            }
            job = inbox.0.recv(), if !closed && queued_events < MAX_EVENTS_PER_COMMIT => match job {
                Some(job) => {
                    queued_events += job.events.len();
                    queued.push(job);
                }
                None => closed = true,
            },
            () = async {
                match flush_at {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            }, if writing.is_none() => {
                let ok = deferred_events(&deferred) == 0
                    || flush(&direct, &deferred, &store).await;
                flushed(ok, &mut held_since, &mut retry_flush);
            }
        }
    }
    // A clean stop leaves nothing for the next start to replay.
    if deferred_events(&deferred) > 0 {
        flush(&direct, &deferred, &store).await;
    }
}

/// How long the last group took to prepare and to write, which places the next group's
/// preparation (see [`run_direct`]).
#[derive(Default)]
struct Pace {
    prepared: std::time::Duration,
    wrote: std::time::Duration,
}

impl Pace {
    /// When to close and prepare the next group, for a write that started at `started`: its
    /// preparation (with room for a larger group) should end as the write does.
    fn prepare_at(&self, started: std::time::Instant) -> std::time::Instant {
        started
            + self
                .wrote
                .saturating_sub(self.prepared * 2 + std::time::Duration::from_millis(1))
    }
}

/// Events in `jobs`.
fn events_in(jobs: &[Job]) -> usize {
    jobs.iter().map(|j| j.events.len()).sum()
}

/// Takes the first queued requests, and whatever else the inbox holds already, up to
/// [`MAX_EVENTS_PER_COMMIT`] events (at least one request).
fn take_group(queued: &mut Vec<Job>, inbox: &mut WriterInbox) -> Vec<Job> {
    let mut n = 0;
    let mut take = 0;
    for job in queued.iter() {
        if take > 0 && n + job.events.len() > MAX_EVENTS_PER_COMMIT {
            break;
        }
        n += job.events.len();
        take += 1;
    }
    let mut jobs: Vec<Job> = queued.drain(..take).collect();
    if queued.is_empty() {
        top_up(&mut jobs, n, inbox);
    }
    jobs
}

/// How often the WAL is checkpointed beside the writer.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Checkpoints the WAL on a thread and connection of its own every [`CHECKPOINT_EVERY`] (the
/// writer's connection never does; see `store::direct`), until the returned guard is dropped.
fn spawn_checkpointer(direct: &DirectSqlite) -> Arc<()> {
    let alive = Arc::new(());
    let watch = Arc::downgrade(&alive);
    let conn = match direct.open_checkpointer() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "could not open the checkpoint connection; the WAL is checkpointed only by other writers");
            return alive;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("opsdeck-checkpoint".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                std::thread::sleep(CHECKPOINT_EVERY);
                if watch.upgrade().is_none() {
                    break;
                }
                match crate::store::direct_checkpoint(&conn) {
                    Ok(_) => failing = false,
                    // Logged once per run of failures: a locked store retries next time.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                    }
                    Err(_) => {}
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the checkpoint thread");
    }
    alive
}

/// Notes a flush attempt: once written nothing is held; after a failure the held rollups are
/// tried again after another interval rather than at once.
fn flushed(
    ok: bool,
    held_since: &mut Option<std::time::Instant>,
    retry: &mut Option<std::time::Instant>,
) {
    let now = std::time::Instant::now();
    *held_since = (!ok).then_some(now);
    *retry = (!ok).then(|| now + FLUSH_AFTER);
}

/// Whether the held rollups are to be written before the next group (besides a read asking).
fn flush_due(d: &Mutex<Deferred>, held_since: Option<std::time::Instant>) -> bool {
    let d = d.lock().unwrap_or_else(|p| p.into_inner());
    d.events() > 0
        && (d.events() >= FLUSH_EVENTS
            || d.rows() >= FLUSH_ROWS
            || held_since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER))
}

fn deferred_events(d: &Mutex<Deferred>) -> u64 {
    d.lock().unwrap_or_else(|p| p.into_inner()).events()
}

/// Writes the held rollups and empties the journal in one transaction. Returns whether it
/// committed; on failure everything stays held (and journaled) for the next attempt.
async fn flush(direct: &DirectSqlite, deferred: &Arc<Mutex<Deferred>>, store: &Store) -> bool {
    let (def, fence_store) = (deferred.clone(), store.clone());
    let result = direct
        .run(move |conn| {
            let mut def = def.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            def.write_direct(&tx, now_ms())?;
            fold_runs(&tx)?;
            if let Some((first, last)) = def.journal_rows() {
                tx.execute(
                    "DELETE FROM rollup_journal WHERE id BETWEEN ?1 AND ?2",
                    [first, last],
                )?;
            }
            tx.commit()?;
            def.clear();
            // The writer is the only one adding to the fence, and it is waiting for this.
            fence_store.fence().set_pending(0);
            Ok(())
        })
        .await;
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "writing the held usage rollups failed; retrying shortly");
            false
        }
    }
}

/// Writes the rollups a crash left in the journal. Run before the server takes requests, so
/// that every read sees them. A record that does not parse is logged and dropped. Returns the
/// events whose rollups were written.
pub async fn recover_rollups(store: &Store) -> Result<u64, StoreError> {
    let Some(direct) = store.direct_sqlite() else {
        return fold_pg(store).await;
    };
    direct
        .run(|conn| {
            let mut deferred = Deferred::default();
            {
                let mut stmt = conn.prepare(
                    "SELECT id, events, record, months FROM rollup_journal ORDER BY id",
                )?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    let (id, events, record, months): (i64, i64, Vec<u8>, i64) =
                        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
                    let events = u64::try_from(events).unwrap_or(0);
                    // Records of older versions (`months = 0`) were committed with their month
                    // totals, so only their rollups are still to be written.
                    let absorbed = if months != 0 {
                        deferred.absorb_with_months(&record, events)
                    } else {
                        deferred.absorb(&record, events)
                    };
                    if let Err(e) = absorbed {
                        tracing::error!(journal_id = id, error = %e, "dropping a rollup journal record that does not parse");
                    }
                }
            }
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            deferred.write_direct(&tx, now_ms())?;
            fold_runs(&tx)?;
            tx.execute("DELETE FROM rollup_journal", [])?;
            tx.commit()?;
            Ok(deferred.events())
        })
        .await
}

/// What the SQLite writer's groups share.
struct DirectCtx {
    direct: DirectSqlite,
    window: Arc<Mutex<Window>>,
    deferred: Arc<Mutex<Deferred>>,
    store: Store,
    quota_watch: Arc<Watch>,
}

/// A group on the connection's thread.
struct Writing {
    handle: tokio::task::JoinHandle<Result<Option<i64>, StoreError>>,
    started: std::time::Instant,
    jobs: Vec<Job>,
    results: Vec<Written>,
    added: Arc<Vec<i64>>,
    record: Arc<Vec<u8>>,
    stored: u64,
}

impl Writing {
    /// The write's outcome: the id of the journal row it committed, if any.
    async fn wait(&mut self) -> Result<Option<i64>, StoreError> {
        (&mut self.handle)
            .await
            .unwrap_or_else(|e| Err(StoreError::Thread(e.to_string())))
    }
}

impl DirectCtx {
    /// Hands a prepared group to the connection's thread.
    fn start(&self, group: Prepared) -> Writing {
        let Prepared {
            jobs,
            batch,
            results,
            added,
        } = group;
        let (record, stored) = (batch.record.clone(), batch.fresh.len() as u64);
        let direct = self.direct.clone();
        let handle = tokio::spawn(async move { direct.run(move |conn| batch.write(conn)).await });
        Writing {
            handle,
            started: std::time::Instant::now(),
            jobs,
            results,
            added,
            record,
            stored,
        }
    }

    /// Answers a written group's requests. Once it has committed its increments join the held
    /// rollups (and the fence counts them) before any request hears back. A failed group gives
    /// back its keys, and so does the group prepared behind it, whose duplicates were decided
    /// against them; its requests are prepared again. Then each of the failed group's requests
    /// is retried on its own, so that one request's events do not fail everyone else's.
    async fn finish(
        &self,
        done: Writing,
        outcome: Result<Option<i64>, StoreError>,
        next: &mut Option<Prepared>,
        queued: &mut Vec<Job>,
    ) {
        let journal_id = match outcome {
            Ok(id) => id,
            Err(e) => {
                self.forget(&done.added);
                if let Some(behind) = next.take() {
                    self.forget(&behind.added);
                    queued.splice(0..0, behind.jobs);
                }
                self.isolate(done.jobs, e).await;
                return;
            }
        };
        self.answer(done, journal_id);
    }

    /// Answers a committed group's requests, its increments held and counted first.
    fn answer(&self, done: Writing, journal_id: Option<i64>) {
        self.absorb(journal_id, &done.record, done.stored);
        for job in &done.jobs {
            self.quota_watch.saw(&job.events);
        }
        for (job, written) in done.jobs.into_iter().zip(done.results) {
            let _ = job.reply.send(Ok(written));
        }
    }

    /// Answers a request whose events could not be committed.
    fn refuse(job: Job, e: StoreError) {
        tracing::error!(error = %e, events = job.events.len(), "ingest commit failed");
        let _ = job.reply.send(Err(IngestError::from(e)));
    }

    fn forget(&self, keys: &[i64]) {
        self.window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(keys);
    }

    fn absorb(&self, journal_id: Option<i64>, record: &[u8], stored: u64) {
        let mut held = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = journal_id {
            held.note_journal(id);
        }
        if let Err(e) = held.absorb_with_months(record, stored) {
            // Cannot happen for a record encoded by this process; the journal still holds
            // it, and the next start replays it.
            tracing::error!(error = %e, "a rollup journal record written now does not parse");
        }
        self.store.fence().add_pending(stored);
    }

    async fn isolate(&self, jobs: Vec<Job>, e: StoreError) {
        if jobs.len() == 1 {
            if let Some(job) = jobs.into_iter().next() {
                Self::refuse(job, e);
            }
            return;
        }
        tracing::warn!(error = %e, jobs = jobs.len(), "group commit failed; committing requests one by one");
        for job in jobs {
            let mut writing = self.start(prepare(&self.window, vec![job]));
            match writing.wait().await {
                Ok(journal_id) => self.answer(writing, journal_id),
                Err(e) => {
                    self.forget(&writing.added);
                    if let Some(job) = writing.jobs.into_iter().next() {
                        Self::refuse(job, e);
                    }
                }
            }
        }
    }
}

/// Commits one group of jobs and answers each job's request (PostgreSQL).
async fn commit_and_reply(store: Store, jobs: Vec<Job>, quota_watch: Arc<Watch>) {
    let commit = |events: Vec<Arc<Vec<NewEvent>>>| {
        let store = &store;
        async move {
            // A transaction PostgreSQL aborted for its interleaving with the other one in
            // flight changed nothing, so it is run again before anyone hears of it.
            let mut attempt = 1;
            loop {
                match commit(store, &events).await {
                    Err(e) if e.is_retryable() && attempt < PG_COMMIT_ATTEMPTS => {
                        tracing::warn!(error = %e, attempt, "ingest commit aborted; retrying");
                        attempt += 1;
                    }
                    other => break other,
                }
            }
        }
    };
    match commit(jobs.iter().map(|j| j.events.clone()).collect()).await {
        Ok(results) => {
            for job in &jobs {
                quota_watch.saw(&job.events);
            }
            for (job, written) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(Ok(written));
            }
        }
        Err(e) if jobs.len() > 1 => {
            // Isolate the failure: one request's events must not fail everyone else's, so
            // each job is retried in a transaction of its own.
            tracing::warn!(error = %e, jobs = jobs.len(), "group commit failed; committing requests one by one");
            for job in jobs {
                let result = commit(vec![job.events.clone()]).await;
                if result.is_ok() {
                    quota_watch.saw(&job.events);
                }
                let reply = result.map(|mut w| w.remove(0)).map_err(|e| {
                    tracing::error!(error = %e, events = job.events.len(), "ingest commit failed");
                    IngestError::from(e)
                });
                let _ = job.reply.send(reply);
            }
        }
        Err(e) => {
            let n: usize = jobs.iter().map(|j| j.events.len()).sum();
            tracing::error!(error = %e, events = n, "ingest commit failed");
            let busy = e.is_busy();
            for job in jobs {
                let _ = job.reply.send(Err(if busy {
                    IngestError::Busy
                } else {
                    IngestError::Store(e.to_string())
                }));
            }
        }
    }
}

/// PostgreSQL's statement adding a commit's dedup keys ([`super::dedup::pg_key`]) to
/// `event_keys`; the keys that were not there already come back, and only their events are
/// stored.
pub const INSERT_KEYS_PG: &str = "INSERT INTO event_keys (key, received_at) \
     SELECT key, $2 FROM UNNEST($1::int8[]) AS k (key) ON CONFLICT (key) DO NOTHING RETURNING key";

/// Keys per [`INSERT_KEYS_PG`] statement: eight bytes and a length word each, within
/// [`PG_STATEMENT_BYTES`].
const KEYS_PER_STATEMENT: usize = PG_STATEMENT_BYTES / 12;

/// PostgreSQL's statement storing a batch of events, each column bound as one array (see
/// [`EventColumns`]), in the arrays' order. The text never varies with the batch size, so each
/// connection plans it once.
pub const INSERT_EVENTS_PG: &str = "INSERT INTO events \
     (source, event_id, type, subject, time, received_at, data, cost_nano) \
     SELECT source, event_id, type, subject, time, $6, data, cost_nano \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $7::text[], \
     $8::int8[]) AS e (source, event_id, type, subject, time, data, cost_nano)";

/// A batch of events as one vector per column, borrowed from the events.
pub struct EventColumns<'a> {
    source: Vec<&'a str>,
    id: Vec<&'a str>,
    kind: Vec<&'a str>,
    subject: Vec<Option<&'a str>>,
    time: Vec<i64>,
    data: Vec<&'a str>,
    cost_nano: Vec<Option<i64>>,
}

impl<'a> EventColumns<'a> {
    pub fn new(events: impl IntoIterator<Item = &'a NewEvent>) -> Self {
        let events = events.into_iter();
        let n = events.size_hint().0;
        let mut c = Self {
            source: Vec::with_capacity(n),
            id: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            subject: Vec::with_capacity(n),
            time: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            cost_nano: Vec::with_capacity(n),
        };
        for e in events {
            c.source.push(e.source.as_str());
            c.id.push(e.id.as_str());
            c.kind.push(e.kind.as_str());
            c.subject.push(e.subject.as_deref());
            c.time.push(e.time_ms);
            c.data.push(e.data.as_str());
            c.cost_nano.push(e.facts.cost_nano);
        }
        c
    }

    /// About how many bytes `e` adds to the statement's message: its text columns plus each
    /// array element's length word and the fixed-width numbers. Used to keep a statement within
    /// [`PG_STATEMENT_BYTES`].
    pub fn wire_size(e: &NewEvent) -> usize {
        e.source.len()
            + e.id.len()
            + e.kind.len()
            + e.subject.as_ref().map_or(0, String::len)
            + e.data.len()
            + 7 * 4
            + 2 * 8
    }

    /// Runs [`INSERT_EVENTS_PG`].
    pub async fn insert(
        self,
        conn: &mut sqlx::PgConnection,
        received_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(INSERT_EVENTS_PG)
            .bind(self.source)
            .bind(self.id)
            .bind(self.kind)
            .bind(self.subject)
            .bind(self.time)
            .bind(received_at)
            .bind(self.data)
            .bind(self.cost_nano)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// One group of requests made ready for the SQLite connection (see [`prepare`]).
struct Prepared {
    jobs: Vec<Job>,
    batch: Batch,
    results: Vec<Written>,
    /// The dedup keys the group added to the window, taken back if it does not commit (the
    /// batch appends the same keys to `event_dedup`).
    added: Arc<Vec<i64>>,
}

/// What the connection's thread is given of a [`Prepared`] group.
struct Batch {
    events: Vec<Arc<Vec<NewEvent>>>,
    received: i64,
    /// (request, event) of each event to store, in the order they are stored.
    fresh: Vec<(u32, u32)>,
    /// Their dedup keys, in any order.
    keys: Arc<Vec<i64>>,
    record: Arc<Vec<u8>>,
}

/// The SQLite form of [`commit`], up to the SQL. An event whose key the dedup window holds (or
/// an earlier event of the group had) is a duplicate, decided in memory; the others are put in
/// customer order and their rollups counted and encoded. [`Batch::write`] stores them.
fn prepare(window: &Mutex<Window>, jobs: Vec<Job>) -> Prepared {
    let received = now_ms();
    let events: Vec<Arc<Vec<NewEvent>>> = jobs.iter().map(|j| j.events.clone()).collect();
    let mut added = Vec::new();
    let mut fresh: Vec<(u32, u32)> = Vec::new();
    let mut results = Vec::with_capacity(jobs.len());
    {
        let mut window = window.lock().unwrap_or_else(|p| p.into_inner());
        for (j, job) in events.iter().enumerate() {
            let before = fresh.len();
            for (i, e) in job.iter().enumerate() {
                let key = dedup::key(&e.source, &e.id);
                if window.insert(key, received) {
                    added.push(key);
                    // A request holds far fewer than 2^32 events (the body limit).
                    fresh.push((j as u32, i as u32));
                }
            }
            let accepted = fresh.len() - before;
            results.push(Written {
                accepted,
                duplicates: job.len() - accepted,
            });
        }
    }
    let event = |&(j, i): &(u32, u32)| &events[j as usize][i as usize];
    // Customer by customer: each customer's events become one run (see `append_runs`), and
    // consecutive upserts land on neighbouring pages. The order within a group is arbitrary
    // anyway (its requests arrived concurrently); the sort is stable, so one customer's events
    // keep theirs.
    fresh.sort_by(|a, b| event(a).subject.cmp(&event(b).subject));
    let record = {
        let mut rollups = Rollups::for_events(fresh.len());
        for f in &fresh {
            rollups.add(event(f));
        }
        rollups.journal()
    };
    let added = Arc::new(added);
    Prepared {
        jobs,
        batch: Batch {
            events,
            received,
            fresh,
            keys: added.clone(),
            record: Arc::new(record),
        },
        results,
        added,
    }
}

impl Batch {
    /// Inserts the events, appends their runs and the group's dedup keys (as one
    /// `event_dedup` row), upserts the month totals and journals the minute increments (as one
    /// `rollup_journal` row), all in one transaction. Returns the journal row's id.
    fn write(self, conn: &mut rusqlite::Connection) -> Result<Option<i64>, StoreError> {
        let fresh: Vec<&NewEvent> = self
            .fresh
            .iter()
            .map(|&(j, i)| &self.events[j as usize][i as usize])
            .collect();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        insert_events_direct(&tx, &fresh, self.received)?;
        append_runs(&tx, &fresh)?;
        dedup::append(&tx, self.received, &self.keys)?;
        let mut journal_id = None;
        if !self.record.is_empty() {
            // The month totals travel in the record (`months = 1`) and reach `usage_months`
            // with the rollups when they are flushed.
            tx.prepare_cached(
                "INSERT INTO rollup_journal (events, record, months) VALUES (?1, ?2, 1)",
            )?
            .execute(rusqlite::params![
                fresh.len() as i64,
                self.record.as_slice()
            ])?;
            journal_id = Some(tx.last_insert_rowid());
        }
        tx.commit()?;
        Ok(journal_id)
    }
}

/// Events stored by one SQLite insert statement. Each execution pays for the statement's set-up,
/// its reset and, because `seq` is AUTOINCREMENT, a read and a write of `sqlite_sequence`; with
/// one row per execution those were a third of the writer's time per event.
const EVENTS_PER_INSERT: usize = 64;

/// SQLite's statement storing `rows` events; duplicates never reach it (see [`dedup`]).
///
/// `OR FAIL` rather than the default `ABORT`: a multi-row statement that may abort keeps a
/// statement journal (a copy of every page it changes, so that it alone can be undone), 4 % of
/// the server's CPU under ingest. A failure here fails the whole transaction anyway, and it
/// is rolled back as a whole, so undoing one statement of it buys nothing.
fn insert_events_sqlite(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR FAIL INTO events (source, event_id, type, subject, time, received_at, data, cost_nano) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?)");
    }
    sql
}

/// Inserts `events` on a direct SQLite connection inside the caller's transaction, in their
/// order (so `seq` follows receipt order).
pub fn insert_events_direct(
    tx: &rusqlite::Transaction<'_>,
    events: &[&NewEvent],
    received_at: i64,
) -> Result<(), StoreError> {
    let mut chunks = events.chunks_exact(EVENTS_PER_INSERT);
    if chunks.len() > 0 {
        static FULL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| insert_events_sqlite(EVENTS_PER_INSERT));
        let mut insert = tx.prepare_cached(&FULL)?;
        for chunk in &mut chunks {
            bind_events(&mut insert, chunk, received_at)?;
            insert.raw_execute()?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Not cached: up to 63 statement shapes would crowd the connection's statement cache.
        let mut insert = tx.prepare(&insert_events_sqlite(rest.len()))?;
        bind_events(&mut insert, rest, received_at)?;
        insert.raw_execute()?;
    }
    Ok(())
}

/// Runs appended to `event_runs_recent` per statement (three parameters each).
const RUNS_PER_INSERT: usize = 100;

/// Appends the runs of the events just inserted by [`insert_events_direct`] (in `events`'
/// order, which the caller sorted by customer) to `event_runs_recent`: one row per customer
/// rather than an index entry per event (see migration 0042). [`fold_runs`] moves them into
/// `event_runs`.
pub fn append_runs(tx: &rusqlite::Transaction<'_>, events: &[&NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    // One writer inserts the events in one transaction, so the AUTOINCREMENT keys it was given
    // are consecutive and end at the last one.
    let first = tx.last_insert_rowid() - events.len() as i64 + 1;
    let runs = runs_of(events, first);
    for chunk in runs.chunks(RUNS_PER_INSERT) {
        let mut sql =
            String::from("INSERT INTO event_runs_recent (first_seq, subject, last_seq) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?,?,?)" } else { ",(?,?,?)" });
        }
        // A full chunk's shape is cached; the remainder's (one of 99 shapes) is not, so as not
        // to crowd the connection's statement cache.
        let run = |stmt: &mut rusqlite::Statement<'_>| -> Result<(), StoreError> {
            for (i, (subject, from, to)) in chunk.iter().enumerate() {
                stmt.raw_bind_parameter(i * 3 + 1, from)?;
                stmt.raw_bind_parameter(i * 3 + 2, subject)?;
                stmt.raw_bind_parameter(i * 3 + 3, to)?;
            }
            stmt.raw_execute()?;
            Ok(())
        };
        if chunk.len() == RUNS_PER_INSERT {
            run(&mut *tx.prepare_cached(&sql)?)?;
        } else {
            run(&mut tx.prepare(&sql)?)?;
        }
    }
    Ok(())
}

/// The runs of consecutive events with one customer in `events`, the first of which has
/// sequence number `first`: (customer, first seq, last seq). Events without a customer belong
/// to no run.
fn runs_of<'a>(events: &[&'a NewEvent], first: i64) -> Vec<(&'a str, i64, i64)> {
    let mut runs: Vec<(&str, i64, i64)> = Vec::new();
    for (seq, e) in (first..).zip(events) {
        let Some(subject) = e.subject.as_deref() else {
            continue;
        };
        match runs.last_mut() {
            Some((s, _, last)) if *s == subject && *last + 1 == seq => *last = seq,
            _ => runs.push((subject, seq, seq)),
        }
    }
    runs
}

/// Moves the runs appended since the last call from `event_runs_recent` into `event_runs`, in
/// customer order, inside the caller's transaction.
pub fn fold_runs(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "INSERT INTO event_runs (subject, first_seq, last_seq) \
           SELECT subject, first_seq, last_seq FROM event_runs_recent ORDER BY subject, first_seq; \
         DELETE FROM event_runs_recent;",
    )?;
    Ok(())
}

fn bind_events(
    stmt: &mut rusqlite::Statement<'_>,
    events: &[&NewEvent],
    received_at: i64,
) -> Result<(), StoreError> {
    for (i, e) in events.iter().enumerate() {
        let at = i * 8;
        stmt.raw_bind_parameter(at + 1, &e.source)?;
        stmt.raw_bind_parameter(at + 2, &e.id)?;
        stmt.raw_bind_parameter(at + 3, &e.kind)?;
        stmt.raw_bind_parameter(at + 4, &e.subject)?;
        stmt.raw_bind_parameter(at + 5, e.time_ms)?;
        stmt.raw_bind_parameter(at + 6, received_at)?;
        stmt.raw_bind_parameter(at + 7, &e.data)?;
        stmt.raw_bind_parameter(at + 8, e.facts.cost_nano)?;
    }
    Ok(())
}

/// Inserts every job's events in one transaction (PostgreSQL) and adds them to the rollups
/// before the same commit. An event whose key is in `event_keys` already, or repeated earlier in
/// the same commit, is not inserted and counts as a duplicate.
async fn commit(store: &Store, jobs: &[Arc<Vec<NewEvent>>]) -> Result<Vec<Written>, StoreError> {
    let received = now_ms();
    let mut tx = store.begin().await?;
    let Tx::Postgres(conn) = &mut tx else {
        return Err(StoreError::Unsupported(
            "the pooled ingest path is PostgreSQL's; SQLite writes through its direct connection",
        ));
    };
    let keys: Vec<Vec<i64>> = jobs
        .iter()
        .map(|job| {
            job.iter()
                .map(|e| super::dedup::pg_key(&e.source, &e.id))
                .collect()
        })
        .collect();
    // The keys go in ascending order across the whole group: the writer keeps two
    // transactions in flight, and a repeated event makes the later insert wait for the earlier
    // transaction, so two groups holding the same events in opposite orders would deadlock.
    let mut sorted: Vec<i64> = keys.iter().flatten().copied().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut fresh: HashSet<i64> = HashSet::with_capacity(sorted.len());
    for chunk in sorted.chunks(KEYS_PER_STATEMENT) {
        let new: Vec<i64> = sqlx::query_scalar(INSERT_KEYS_PG)
            .bind(chunk)
            .bind(received)
            .fetch_all(&mut **conn)
            .await?;
        fresh.extend(new);
    }
    // The events whose key was new, in the order the requests sent them (so the events log,
    // newest first, is the reverse of it); among copies of one event the earliest job's is
    // the one stored.
    let mut accepted = vec![0; jobs.len()];
    let mut rollups = Rollups::for_events(fresh.len());
    let mut stored: Vec<&NewEvent> = Vec::with_capacity(fresh.len());
    for (j, (job, keys)) in jobs.iter().zip(&keys).enumerate() {
        for (e, key) in job.iter().zip(keys) {
            if fresh.remove(key) {
                rollups.add(e);
                accepted[j] += 1;
                stored.push(e);
            }
        }
    }
    for chunk in chunks_by_size(&stored, PG_STATEMENT_BYTES, |e| EventColumns::wire_size(e)) {
        EventColumns::new(chunk.iter().copied())
            .insert(conn, received)
            .await?;
    }
    let results: Vec<Written> = jobs
        .iter()
        .zip(accepted)
        .map(|(job, accepted)| Written {
            accepted,
            duplicates: job.len() - accepted,
        })
        .collect();
    let accepted: usize = results.iter().map(|w| w.accepted).sum();
    if !rollups.is_empty() {
        // The month totals travel in the record too (`months = 1`) and reach `usage_months`
        // with the fold: upserted here, the two commits in flight waited on each other's locks
        // on the same customers' rows, and every commit rewrote their indexed totals.
        sqlx::query("INSERT INTO rollup_journal (events, record, months) VALUES ($1, $2, 1)")
            .bind(accepted as i64)
            .bind(rollups.journal())
            .execute(&mut **conn)
            .await?;
    }
    tx.commit().await?;
    // Before the acknowledgement, so that a read after it waits for the fold.
    store.fence().add_pending(accepted as u64);
    Ok(results)
}

/// Journal rows folded per transaction.
const FOLD_ROWS: i64 = 1_000;

/// Folds the journaled minute increments of every instance into `usage_rollups` (PostgreSQL):
/// each transaction locks the oldest journal rows in id order, upserts their sum and deletes
/// them. Two instances folding at once take the rows in the same order, so the second waits for
/// the first and then finds those rows gone. Returns the events folded.
pub async fn fold_pg(store: &Store) -> Result<u64, StoreError> {
    let _one = store.fence().folding.lock().await;
    // Every event this instance acknowledged before this point is in a committed journal row
    // that the loop below folds (or that another instance folded before).
    let pending = store.fence().pending();
    let mut folded = 0;
    loop {
        let mut tx = store.begin().await?;
        let Tx::Postgres(conn) = &mut tx else {
            return Ok(0);
        };
        let rows: Vec<(i64, i64, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT id, events, record, months FROM rollup_journal ORDER BY id LIMIT $1 \
             FOR UPDATE",
        )
        .bind(FOLD_ROWS)
        .fetch_all(&mut **conn)
        .await?;
        if rows.is_empty() {
            break;
        }
        let mut deferred = Deferred::default();
        for (id, events, record, months) in &rows {
            let events = u64::try_from(*events).unwrap_or(0);
            // A record from before migration 0041 had its month totals upserted at commit.
            let absorbed = if *months != 0 {
                deferred.absorb_with_months(record, events)
            } else {
                deferred.absorb(record, events)
            };
            if let Err(e) = absorbed {
                tracing::error!(journal_id = id, error = %e, "dropping a rollup journal record that does not parse");
            }
        }
        deferred.write_pg(conn, now_ms()).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        sqlx::query("DELETE FROM rollup_journal WHERE id = ANY($1)")
            .bind(ids)
            .execute(&mut **conn)
            .await?;
        tx.commit().await?;
        folded += deferred.events();
        if (rows.len() as i64) < FOLD_ROWS {
            break;
        }
    }
    store.fence().written(pending);
    Ok(folded)
}

/// PostgreSQL's folder: every [`FLUSH_AFTER`], at once when a read asks (see `store::fence`),
/// and a last time when the writer stops.
async fn run_folder(store: Store, mut stopped: oneshot::Receiver<()>) {
    let mut settle = store.fence().attach();
    let mut tick = tokio::time::interval(FLUSH_AFTER);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut waiters: Vec<SettleRequest> = Vec::new();
        let last = tokio::select! {
            Some(req) = settle.recv() => {
                waiters.push(req);
                false
            }
            _ = tick.tick() => false,
            _ = &mut stopped => true,
        };
        // Whoever else asked meanwhile is answered by the same fold.
        while let Ok(req) = settle.try_recv() {
            waiters.push(req);
        }
        if let Err(e) = fold_pg(&store).await {
            tracing::error!(error = %e, "folding the journaled usage rollups failed; retrying shortly");
        }
        // Answered even on failure: the read goes ahead with what is stored.
        drop(waiters);
        if last {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(subject: Option<&str>) -> NewEvent {
        NewEvent {
            source: "app".into(),
            id: "e".into(),
            kind: "api.request".into(),
            subject: subject.map(Into::into),
            time_ms: 0,
            data: "{}".into(),
            facts: Default::default(),
        }
    }

    #[test]
    fn runs_follow_consecutive_events_of_one_customer() {
        let events: Vec<NewEvent> = [
            Some("a"),
            Some("a"),
            None,
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
        ]
        .into_iter()
        .map(event)
        .collect();
        let refs: Vec<&NewEvent> = events.iter().collect();
        assert_eq!(
            runs_of(&refs, 100),
            [
                ("a", 100, 101),
                ("a", 103, 103),
                ("b", 104, 105),
                ("c", 106, 106)
            ]
        );
        assert!(runs_of(&[], 1).is_empty());
    }

    /// Migration 0042 turns the stored events into the same runs as `runs_of` would have
    /// recorded, and the runs read back every event of each customer once.
    #[test]
    fn the_migration_finds_the_stored_events_runs() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, subject TEXT); \
             CREATE INDEX events_subject_seq ON events (subject, seq);",
        )
        .unwrap();
        let subjects = [
            Some("a"),
            Some("a"),
            Some("b"),
            None,
            Some("b"),
            Some("b"),
            Some("a"),
            Some("c"),
            Some("c"),
            None,
            Some("a"),
        ];
        for s in subjects {
            conn.execute("INSERT INTO events (subject) VALUES (?1)", [s])
                .unwrap();
        }
        conn.execute_batch(include_str!("../../migrations/sqlite/0042_event_runs.sql"))
            .unwrap();
        let mut stmt = conn
            .prepare("SELECT subject, first_seq, last_seq FROM event_runs ORDER BY first_seq")
            .unwrap();
        let runs: Vec<(String, i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let events: Vec<NewEvent> = subjects.into_iter().map(event).collect();
        let refs: Vec<&NewEvent> = events.iter().collect();
        let expected: Vec<(String, i64, i64)> = runs_of(&refs, 1)
            .into_iter()
            .map(|(s, a, b)| (s.to_string(), a, b))
            .collect();
        assert_eq!(runs, expected);
        let index: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'events_subject_seq'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 0, "the per-event index is dropped");
    }
}
