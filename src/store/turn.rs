//! The bulk writers give way at SQLite's one write lock, within this process.
//!
//! SQLite lets one connection write at a time, and a connection that finds the lock taken
//! sleeps and retries (its busy handler) rather than queueing. The ingest writer commits back
//! to back, so under a heavy import it took the lock again within microseconds of releasing it,
//! and the jobs' short writes (a lease renewal, a Stripe page, a webhook outcome) retried into
//! a lock that was nearly never free: leases lapsed and steps failed with "database is locked".
//! Every write through [`Store`](super::Store) (a writing statement, or a transaction for its
//! whole life) is counted here while it waits and runs, and the direct connection's writers
//! (the ingest writer, the MRR history) wait before each of their transactions until no such
//! write is pending, so a short write waits for at most the bulk write already running.
//!
//! Giving way is a courtesy in front of SQLite's own lock, never a replacement for it: a bulk
//! writer waits at most the time given to [`Turns::new`] and then goes ahead (SQLite's lock
//! still serialises the writes), so writes stuck behind another process's lock cannot hold
//! the ingest writer up for longer than that.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Longest a bulk writer gives way before writing anyway.
pub const GIVE_WAY_AT_MOST: Duration = Duration::from_secs(2);

/// The count of pending writes; shared by every clone of a SQLite store.
#[derive(Debug)]
pub struct Turns {
    pending: AtomicUsize,
    none_pending: Notify,
    wait: Duration,
}

impl Default for Turns {
    fn default() -> Self {
        Self::new(GIVE_WAY_AT_MOST)
    }
}

/// A write counted as pending until dropped.
#[derive(Debug)]
pub struct Pending(Arc<Turns>);

impl Drop for Pending {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_pending.notify_waiters();
        }
    }
}

impl Turns {
    /// Turns whose bulk writers give way at most `wait` at a time.
    pub fn new(wait: Duration) -> Self {
        Self {
            pending: AtomicUsize::new(0),
            none_pending: Notify::new(),
            wait,
        }
    }

    /// Counts a write as pending until the returned guard is dropped.
    pub fn announce(self: &Arc<Self>) -> Pending {
        self.pending.fetch_add(1, Ordering::AcqRel);
        Pending(self.clone())
    }

    /// Waits until no announced write is pending, or at most the wait given to
    /// [`Turns::new`]; returns whether it had to wait at all.
    pub async fn give_way(&self) -> bool {
        if self.pending.load(Ordering::Acquire) == 0 {
            return false;
        }
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let idle = self.none_pending.notified();
            tokio::pin!(idle);
            // Registered before the count is read again, so a drop in between is not missed.
            idle.as_mut().enable();
            if self.pending.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return true;
            }
        }
    }
}

/// Whether a statement writes, judged by its first keyword. A statement this misses (a `WITH`
/// that writes) still works; it only competes at SQLite's lock as before, without being
/// counted.
pub fn writes(sql: &str) -> bool {
    let word = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    ["INSERT", "UPDATE", "DELETE", "REPLACE"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_knows_the_writing_statements() {
        assert!(writes("INSERT INTO t VALUES (1)"));
        assert!(writes("  update t SET a = 1"));
        assert!(writes("\nDELETE FROM t"));
        assert!(writes("REPLACE INTO t VALUES (1)"));
        assert!(!writes("SELECT * FROM t"));
        assert!(!writes("WITH x AS (SELECT 1) SELECT * FROM x"));
        assert!(!writes(""));
    }

    #[tokio::test]
    async fn a_bulk_writer_waits_for_the_pending_writes() {
        let turns = Arc::new(Turns::new(Duration::from_secs(10)));
        assert!(!turns.give_way().await, "nothing pending: no wait");
        let first = turns.announce();
        let second = turns.announce();
        let waiter = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                turns.give_way().await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "one write is still pending");
        drop(second);
        let waited = waiter.await.unwrap();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[tokio::test]
    async fn a_bulk_writer_does_not_give_way_forever() {
        let turns = Arc::new(Turns::new(Duration::from_millis(50)));
        let _stuck = turns.announce();
        let started = std::time::Instant::now();
        assert!(turns.give_way().await);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }
}
