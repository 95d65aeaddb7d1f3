//! The ingest writer: one task owns every event insert and commits what concurrent requests
//! hand it in one transaction (group commit). A request is answered only after the transaction
//! holding its events has committed, so an acknowledged event survives a crash, while the cost
//! of each commit's fsync is shared by every request that arrived meanwhile.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::event::NewEvent;
use super::quota::Watch;
use super::rollup::Rollups;
use crate::args;
use crate::store::{DirectSqlite, Store, StoreError, Value, multi_row_insert, now_ms};

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
    reply: oneshot::Sender<Result<Written, String>>,
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
        answer
            .await
            .map_err(|_| IngestError::Stopped)?
            .map_err(IngestError::Store)
    }
}

/// The writer's end of the channel.
pub struct WriterInbox(mpsc::Receiver<Job>);

/// Runs until every [`Ingestor`] handle is dropped or `stop` resolves, finishing the jobs it has
/// already received.
pub async fn run(
    store: Store,
    mut inbox: WriterInbox,
    quota_watch: Arc<Watch>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let direct = store.direct_sqlite();
    let commit = |jobs: Vec<Arc<Vec<NewEvent>>>| {
        let (store, direct) = (store.clone(), direct.clone());
        async move {
            match direct {
                Some(d) => commit_direct(&d, jobs).await,
                None => commit(&store, &jobs).await,
            }
        }
    };
    loop {
        let first = tokio::select! {
            job = inbox.0.recv() => match job { Some(job) => job, None => return },
            () = &mut stop => {
                inbox.0.close();
                match inbox.0.recv().await { Some(job) => job, None => return }
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
                        e.to_string()
                    });
                    let _ = job.reply.send(reply);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = n, "ingest commit failed");
                for job in jobs {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// The statement storing `rows` events, each bound with [`event_values`]; with `returning` it
/// reports the `(source, event_id)` of the rows it actually inserted.
pub fn insert_events_sql(rows: usize, returning: bool) -> String {
    multi_row_insert(
        "events (source, event_id, type, subject, time, received_at, data, cost_nano)",
        8,
        rows,
        if returning {
            "ON CONFLICT (source, event_id) DO NOTHING RETURNING source, event_id"
        } else {
            "ON CONFLICT (source, event_id) DO NOTHING"
        },
    )
}

/// One event's values for [`insert_events_sql`].
pub fn event_values(e: &NewEvent, received_at: i64) -> Vec<Value> {
    args![
        &e.source,
        &e.id,
        &e.kind,
        e.subject.clone(),
        e.time_ms,
        received_at,
        &e.data,
        e.facts.cost_nano
    ]
}

/// Rows per INSERT statement on PostgreSQL, which re-plans long VALUES lists on every execution
/// and falls from ~60k to ~5k events/s at 256 rows (measured with `cargo bench --bench ingest`).
/// SQLite's direct path needs no batching: a cached single-row statement costs no round trip.
pub const ROWS_PER_STATEMENT: usize = 32;

/// The SQLite form of [`commit`], on the store's direct connection: one cached single-row
/// statement per event, whose change count says whether it was inserted or was a duplicate.
async fn commit_direct(
    direct: &DirectSqlite,
    jobs: Vec<Arc<Vec<NewEvent>>>,
) -> Result<Vec<Written>, StoreError> {
    direct
        .run(move |conn| {
            let received = now_ms();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut results = Vec::with_capacity(jobs.len());
            let mut rollups = Rollups::default();
            for job in &jobs {
                let mut accepted = 0;
                insert_events_direct(&tx, job, received, |e| {
                    rollups.add(e);
                    accepted += 1;
                })?;
                results.push(Written {
                    accepted,
                    duplicates: job.len() - accepted,
                });
            }
            rollups.write_direct(&tx)?;
            tx.commit()?;
            Ok(results)
        })
        .await
}

/// SQLite's statement storing one event; a (source, id) already stored changes nothing.
pub const INSERT_EVENT_SQLITE: &str = "INSERT INTO events \
     (source, event_id, type, subject, time, received_at, data, cost_nano) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (source, event_id) DO NOTHING";

/// Inserts `events` on a direct SQLite connection inside the caller's transaction, calling
/// `inserted` for each one actually stored (not a duplicate, even of an earlier event in the
/// same transaction).
pub fn insert_events_direct<'a>(
    tx: &rusqlite::Transaction<'_>,
    events: &'a [NewEvent],
    received_at: i64,
    mut inserted: impl FnMut(&'a NewEvent),
) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(INSERT_EVENT_SQLITE)?;
    for e in events {
        let changed = insert.execute(rusqlite::params![
            e.source,
            e.id,
            e.kind,
            e.subject,
            e.time_ms,
            received_at,
            e.data,
            e.facts.cost_nano
        ])?;
        if changed == 1 {
            inserted(e);
        }
    }
    Ok(())
}

/// Inserts every job's events in one transaction (PostgreSQL), as multi-row statements that
/// never span two jobs, so the rows each statement returns belong to one request, and adds the inserted ones to
/// the rollups before the same commit. A (source, id) already
/// stored, or repeated earlier in the same commit, is not inserted and counts as a duplicate.
async fn commit(store: &Store, jobs: &[Arc<Vec<NewEvent>>]) -> Result<Vec<Written>, StoreError> {
    let received = now_ms();
    let mut tx = store.begin().await?;
    let mut results = Vec::with_capacity(jobs.len());
    let mut rollups = Rollups::default();
    for job in jobs {
        let mut accepted = 0;
        for chunk in job.chunks(ROWS_PER_STATEMENT) {
            let sql = insert_events_sql(chunk.len(), true);
            let values = chunk
                .iter()
                .flat_map(|e| event_values(e, received))
                .collect();
            // Only the rows actually inserted reach the rollups; a repeat of an event earlier in
            // the same statement is matched once.
            let inserted: Vec<(String, String)> = tx.fetch_all_assembled(sql, values).await?;
            let mut fresh: HashSet<(&str, &str)> = inserted
                .iter()
                .map(|(s, i)| (s.as_str(), i.as_str()))
                .collect();
            for e in chunk {
                if fresh.remove(&(e.source.as_str(), e.id.as_str())) {
                    rollups.add(e);
                    accepted += 1;
                }
            }
        }
        results.push(Written {
            accepted,
            duplicates: job.len() - accepted,
        });
    }
    rollups.write(&mut tx).await?;
    tx.commit().await?;
    Ok(results)
}
