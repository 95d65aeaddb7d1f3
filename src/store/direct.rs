//! A direct SQLite connection for the store's one hot writer, the usage ingest writer. Through
//! sqlx every statement and every returned row crosses a channel to sqlx's worker thread; at
//! tens of thousands of rows per commit that hop, not SQLite, was the writer's main cost. Here the
//! caller's closure runs on a blocking thread against rusqlite's cached prepared statements.
//! Both libraries link the same bundled SQLite, so they share its locks on the database file.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Result, StoreError};

/// A lazily opened connection to a SQLite store; cheap to clone.
#[derive(Clone)]
pub struct DirectSqlite {
    path: PathBuf,
    busy_timeout: Duration,
    conn: Arc<Mutex<Option<rusqlite::Connection>>>,
    turns: Arc<super::turn::Turns>,
}

impl std::fmt::Debug for DirectSqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectSqlite")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Direct(e)
    }
}

impl DirectSqlite {
    pub(super) fn new(
        path: PathBuf,
        busy_timeout: Duration,
        turns: Arc<super::turn::Turns>,
    ) -> Self {
        Self {
            path,
            busy_timeout,
            conn: Arc::new(Mutex::new(None)),
            turns,
        }
    }

    /// Runs `f` with the connection on a blocking thread, opening it first if needed, once the
    /// writes pending through the pool have gone first (see `store::turn`). Calls are
    /// serialised; the caller owns transactions (`Connection::transaction_with_behavior`).
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        let (path, busy, conn) = (self.path.clone(), self.busy_timeout, self.conn.clone());
        self.turns.give_way().await;
        tokio::task::spawn_blocking(move || {
            // A panic inside `f` poisons the lock; the connection itself is still sound, and
            // SQLite rolled back the unfinished transaction when its handle dropped.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            let conn = match guard.take() {
                Some(c) => guard.insert(c),
                None => guard.insert(open(&path, busy)?),
            };
            f(conn)
        })
        .await
        .map_err(|e| StoreError::Thread(e.to_string()))?
    }
}

/// Runs a passive checkpoint on a connection of its own, beside the writer: pages the WAL holds
/// are copied into the database file while the writer goes on appending (a passive checkpoint
/// never waits for it), and once every reader has moved past them the next commit starts the
/// WAL from its beginning again, so it does not grow without end. Returns the WAL's size and the
/// pages copied so far, in pages.
pub fn checkpoint(conn: &rusqlite::Connection) -> Result<(i64, i64)> {
    let run = |mode: &str| -> Result<(i64, i64)> {
        let (_busy, log, copied): (i64, i64, i64) =
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        Ok((log, copied))
    };
    let (mut log, copied) = run("PASSIVE")?;
    // Under a steady stream of commits a passive checkpoint never catches up with the end of
    // the WAL, so the WAL never starts again from its beginning: a history import grew it to
    // 2.4 GB beside a 0.9 GB database. Past the bound, a RESTART checkpoint holds new commits
    // back while it copies what is left and waits for the readers to finish with the WAL, and
    // the next commit starts it over. What is left is what was committed while the last
    // passive pass ran, so passes are repeated until that is small: after a single pass the
    // RESTART held ingest for 21–143 ms, every 2 s at 130k events/s.
    if log > WAL_RESTART_PAGES {
        for _ in 0..RESTART_CATCH_UP_PASSES {
            let (now, _) = run("PASSIVE")?;
            let arrived = now - log;
            log = now;
            if arrived <= RESTART_LEFT_PAGES {
                break;
            }
        }
        return run("RESTART");
    }
    Ok((log, copied))
}

/// How long the checkpoint connection waits for the writer or the readers.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(100);

/// WAL size, in pages, past which [`checkpoint`] restarts the WAL: 256 MiB of 4 KiB pages.
const WAL_RESTART_PAGES: i64 = 65_536;

/// Passive passes at most before a RESTART checkpoint, and the pages committed during the last
/// one that let it stop early.
const RESTART_CATCH_UP_PASSES: usize = 4;
const RESTART_LEFT_PAGES: i64 = 256;

/// The WAL file's size kept after it restarts, in bytes (SQLite otherwise keeps its largest
/// size on disk).
const WAL_KEEP_BYTES: i64 = 64 << 20;

impl DirectSqlite {
    /// A second connection to the same file, for [`checkpoint`].
    pub fn open_checkpointer(&self) -> Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Short: a RESTART checkpoint holds every writer back while it waits for the readers
        // to leave the WAL, so it gives up (and tries again next time) rather than wait out
        // a long read. With the store's own timeout a long read stopped every writer for 30 s.
        conn.busy_timeout(CHECKPOINT_BUSY)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(conn)
    }
}

/// The writer connection's page cache, in KiB (negative: SQLite's unit for a size in KiB).
const WRITER_CACHE_KIB: i64 = -32_768;

/// Opens the store's file with the pool's durability policy: WAL (already set on the file by
/// the pool), `synchronous=FULL` so an acknowledged commit survives power loss, foreign keys on.
fn open(path: &std::path::Path, busy_timeout: Duration) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The writer's working set: the right-hand pages of the events and dedup tables, one leaf
    // per active customer in (subject, seq) and the rollups being upserted. SQLite's default
    // 2 MiB spilled them between commits, and every commit read them back.
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
    // Checkpoints run on their own thread (see [`DirectSqlite::checkpoint`]): by default the
    // connection that commits past 1,000 WAL pages copies them into the database file before
    // its commit returns, and that was a tenth of the writer's time.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
    // Every multi-row statement inside a transaction keeps a statement journal (the prior
    // contents of each page it changes, so that it alone can be undone), and past 64 KiB
    // SQLite spills it to a temporary file: a 64-event insert wrote a few hundred KiB there
    // per commit, 6 % of the server's CPU under ingest. In memory it is a copy and a free.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}
