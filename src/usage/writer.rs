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
use super::rollup::Rollups;
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
    mut inbox: WriterInbox,
    quota_watch: Arc<Watch>,
    dedup: DedupSettings,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let direct = store.direct_sqlite();
    let window = Arc::new(Mutex::new(Window::new(dedup.window_ms, dedup.max_events)));
    if let Some(d) = &direct {
        // Before the first commit, so that a retry of an event acknowledged before a restart
        // is still recognised.
        let w = window.clone();
        let loaded = d
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
    }
    let limit = if direct.is_some() {
        1
    } else {
        PG_COMMITS_IN_FLIGHT
    };
    let mut in_flight = tokio::task::JoinSet::new();
    let mut stopping = false;
    loop {
        while in_flight.len() >= limit {
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
        let mut jobs = vec![first];
        let mut n = jobs[0].events.len();
        while n < MAX_EVENTS_PER_COMMIT {
            match inbox.0.try_recv() {
                Ok(job) => {
                    n += job.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let (store, direct, watch) = (store.clone(), direct.clone(), quota_watch.clone());
        in_flight.spawn(commit_and_reply(store, direct, window.clone(), jobs, watch));
    }
    while in_flight.join_next().await.is_some() {}
}

/// Commits one group of jobs and answers each job's request.
async fn commit_and_reply(
    store: Store,
    direct: Option<DirectSqlite>,
    window: Arc<Mutex<Window>>,
    jobs: Vec<Job>,
    quota_watch: Arc<Watch>,
) {
    let commit = |events: Vec<Arc<Vec<NewEvent>>>| {
        let (store, direct, window) = (&store, direct.clone(), window.clone());
        async move {
            match direct {
                Some(d) => commit_direct(&d, window, events).await,
                None => {
                    // A transaction PostgreSQL aborted for its interleaving with the other one
                    // in flight changed nothing, so it is run again before anyone hears of it.
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

/// PostgreSQL's statement storing a batch of events, each column bound as one array (see
/// [`EventColumns`]); a (source, id) already stored, or repeated earlier in the batch, is not
/// inserted, and the `(source, event_id)` of the rows it did insert come back. The text never
/// varies with the batch size, so each connection plans it once.
pub const INSERT_EVENTS_PG: &str = "INSERT INTO events \
     (source, event_id, type, subject, time, received_at, data, cost_nano) \
     SELECT source, event_id, type, subject, time, $6, data, cost_nano \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $7::text[], \
     $8::int8[]) AS e (source, event_id, type, subject, time, data, cost_nano) \
     ON CONFLICT (source, event_id) DO NOTHING RETURNING source, event_id";

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

    /// Runs [`INSERT_EVENTS_PG`] and returns the `(source, event_id)` of the rows it inserted.
    pub async fn insert(
        self,
        conn: &mut sqlx::PgConnection,
        received_at: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let q = sqlx::query_as(INSERT_EVENTS_PG)
            .bind(self.source)
            .bind(self.id)
            .bind(self.kind)
            .bind(self.subject)
            .bind(self.time)
            .bind(received_at)
            .bind(self.data)
            .bind(self.cost_nano);
        Ok(q.fetch_all(conn).await?)
    }
}

/// The SQLite form of [`commit`], on the store's direct connection. An event whose key the
/// dedup window holds (or an earlier event of the same commit had) is a duplicate, decided in
/// memory before any SQL; the others are inserted with one cached single-row statement each,
/// the commit's keys are appended to `event_dedup` as one row, and the new events' rollups are
/// upserted in the same transaction. Keys added by a transaction that fails are
/// taken back.
async fn commit_direct(
    direct: &DirectSqlite,
    window: Arc<Mutex<Window>>,
    jobs: Vec<Arc<Vec<NewEvent>>>,
) -> Result<Vec<Written>, StoreError> {
    direct
        .run(move |conn| {
            let received = now_ms();
            let mut window = window.lock().unwrap_or_else(|p| p.into_inner());
            let mut added = Vec::new();
            let mut fresh: Vec<&NewEvent> = Vec::new();
            let mut results = Vec::with_capacity(jobs.len());
            for job in &jobs {
                let before = fresh.len();
                for e in job.iter() {
                    let key = dedup::key(&e.source, &e.id);
                    if window.insert(key, received) {
                        added.push(key);
                        fresh.push(e);
                    }
                }
                let accepted = fresh.len() - before;
                results.push(Written {
                    accepted,
                    duplicates: job.len() - accepted,
                });
            }
            let result = (|| {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                insert_events_direct(&tx, &fresh, received)?;
                dedup::append(&tx, received, &added)?;
                let mut rollups = Rollups::default();
                for e in &fresh {
                    rollups.add(e);
                }
                rollups.write_direct(&tx)?;
                tx.commit()?;
                Ok::<(), StoreError>(())
            })();
            if let Err(e) = result {
                window.remove(&added);
                return Err(e);
            }
            Ok(results)
        })
        .await
}

/// SQLite's statement storing one event; duplicates never reach it (see [`dedup`]).
pub const INSERT_EVENT_SQLITE: &str = "INSERT INTO events \
     (source, event_id, type, subject, time, received_at, data, cost_nano) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Inserts `events` on a direct SQLite connection inside the caller's transaction.
pub fn insert_events_direct(
    tx: &rusqlite::Transaction<'_>,
    events: &[&NewEvent],
    received_at: i64,
) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(INSERT_EVENT_SQLITE)?;
    for e in events {
        insert.execute(rusqlite::params![
            e.source,
            e.id,
            e.kind,
            e.subject,
            e.time_ms,
            received_at,
            e.data,
            e.facts.cost_nano
        ])?;
    }
    Ok(())
}

/// Inserts every job's events in one transaction (PostgreSQL), in statements that never span
/// two jobs so the rows each one returns belong to one request, and adds the inserted ones to the
/// rollups before the same commit. A (source, id) already stored, or repeated earlier in the
/// same commit, is not inserted and counts as a duplicate.
async fn commit(store: &Store, jobs: &[Arc<Vec<NewEvent>>]) -> Result<Vec<Written>, StoreError> {
    let received = now_ms();
    let mut tx = store.begin().await?;
    let Tx::Postgres(conn) = &mut tx else {
        return Err(StoreError::Unsupported(
            "the pooled ingest path is PostgreSQL's; SQLite writes through its direct connection",
        ));
    };
    // Every job's events go in (source, id) order across the whole group: the writer keeps
    // two transactions in flight, and a repeated event makes the later insert wait for the
    // earlier transaction, so two groups holding the same events in opposite orders would
    // deadlock. The sort is stable, so among copies of one event the earliest job's comes
    // first and is the one counted as accepted.
    let mut order: Vec<(usize, &NewEvent)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, job)| job.iter().map(move |e| (j, e)))
        .collect();
    order.sort_by(|(_, a), (_, b)| (&a.source, &a.id).cmp(&(&b.source, &b.id)));
    let mut accepted = vec![0; jobs.len()];
    let mut rollups = Rollups::default();
    for chunk in chunks_by_size(&order, PG_STATEMENT_BYTES, |(_, e)| {
        EventColumns::wire_size(e)
    }) {
        let inserted = EventColumns::new(chunk.iter().map(|(_, e)| *e))
            .insert(conn, received)
            .await?;
        if inserted.len() == chunk.len() {
            // The common case: nothing was a duplicate, so no lookup is needed.
            for (j, e) in chunk {
                rollups.add(e);
                accepted[*j] += 1;
            }
            continue;
        }
        // Only the rows actually inserted reach the rollups; an event repeated within the
        // chunk is matched once.
        let mut fresh: HashSet<(&str, &str)> = inserted
            .iter()
            .map(|(s, i)| (s.as_str(), i.as_str()))
            .collect();
        for (j, e) in chunk {
            if fresh.remove(&(e.source.as_str(), e.id.as_str())) {
                rollups.add(e);
                accepted[*j] += 1;
            }
        }
    }
    let results = jobs
        .iter()
        .zip(accepted)
        .map(|(job, accepted)| Written {
            accepted,
            duplicates: job.len() - accepted,
        })
        .collect();
    rollups.write_pg(conn).await?;
    tx.commit().await?;
    Ok(results)
}
