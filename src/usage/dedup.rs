//! The SQLite store's duplicate check: the keys of the events received within the dedup window,
//! held in memory, and the append-only `event_dedup` table they are reloaded from on start.
//!
//! A unique index on `(source, id)` made every stored event a random insert into a B-tree that
//! grows with the store; once it outgrew the page cache each event cost a page read and a page
//! written to the WAL, and ingest fell from 34k to 6k events/s between 2 and 5 M events stored.
//! Retries arrive within minutes or hours of the original, so the check covers a bounded window
//! (`ingest.dedup_window`, at most `ingest.dedup_max_events` events): each event's key is a
//! 64-bit hash of `(source, id)`, kept in a few in-memory sets, one per slice of the window, and
//! appended to `event_dedup` in the same transaction as the event, so an acknowledged event is
//! recognised after a crash too.
//!
//! PostgreSQL cannot hold the window in one process's memory: several instances share one
//! database there, and only the database sees every instance's inserts. It keeps the same
//! bounded window as a table, `event_keys`: one 8-byte key ([`pg_key`]) per event received
//! within the window, inserted with the event (`ON CONFLICT DO NOTHING` decides which events of
//! a batch are new) and pruned by retention. Its B-tree is a quarter of the unique index on
//! `(source, event_id)` it replaced and stops growing with the store.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::store::StoreError;

/// Slices the window is kept in. A slice is dropped whole once its newest key is older than the
/// window, so every key is held for at least the window (and at most one slice longer).
const SLICES: usize = 8;

/// The key of an event: a 64-bit SipHash-2-4 of its source and id. The chance that a different
/// event within a window of 20 M has the same key is about one in 10^12 per event. The keys are
/// fixed (not per process) because the hashes are stored and reloaded.
pub fn key(source: &str, id: &str) -> i64 {
    #[allow(deprecated)] // SipHasher is deprecated only as a HashMap default; its output is stable.
    let mut h = std::hash::SipHasher::new_with_keys(0x6f70_7364_6563_6b64, 0x6564_7570_6b65_7973);
    h.write(source.as_bytes());
    // 0xff never occurs in UTF-8, so ("ab", "c") and ("a", "bc") hash differently.
    h.write_u8(0xff);
    h.write(id.as_bytes());
    h.finish() as i64
}

/// The key of an event on PostgreSQL: the first eight bytes of SHA-256 of its source, 0xff and
/// its id, read big-endian. PostgreSQL computes the same value (`sha256`, then the bytes as a
/// `bit(64)` cast to `bigint`), so migration 0037 could key the events stored before it; SipHash
/// has no SQL form there. Within a window of 20 M the chance of a different event having the
/// same key is as small as [`key`]'s.
pub fn pg_key(source: &str, id: &str) -> i64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(source.as_bytes())
        .chain_update([0xff])
        .chain_update(id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// The keys are already uniform hashes; hashing them again would only cost time.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_i64(&mut self, n: i64) {
        self.0 = n as u64;
    }
}

type KeySet = HashSet<i64, BuildHasherDefault<Identity>>;

struct Slice {
    /// Receipt time of the slice's first key (UTC ms).
    start_ms: i64,
    /// Receipt time of its newest key: the slice is forgotten once this is older than the
    /// window.
    newest_ms: i64,
    keys: KeySet,
}

/// The keys of the events received within the window, newest slice last.
pub struct Window {
    window_ms: i64,
    max_keys: usize,
    slices: VecDeque<Slice>,
    len: usize,
}

impl Window {
    pub fn new(window_ms: i64, max_keys: usize) -> Self {
        Self {
            window_ms: window_ms.max(1),
            max_keys: max_keys.max(SLICES),
            slices: VecDeque::new(),
            len: 0,
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, key: i64) -> bool {
        // Newest first: a retry usually follows its original closely.
        self.slices.iter().rev().any(|s| s.keys.contains(&key))
    }

    /// Adds `key`, received at `now_ms`; false if it is already held (a duplicate).
    pub fn insert(&mut self, key: i64, now_ms: i64) -> bool {
        // First forget what the window no longer covers: after a quiet spell the newest slice
        // may be wholly older than the window too.
        self.expire(now_ms);
        if self.contains(key) {
            return false;
        }
        let slice_ms = self.window_ms / SLICES as i64;
        let per_slice = self.max_keys / SLICES;
        let start_new = match self.slices.back() {
            None => true,
            Some(s) => now_ms - s.start_ms >= slice_ms.max(1) || s.keys.len() >= per_slice,
        };
        if start_new {
            self.slices.push_back(Slice {
                start_ms: now_ms,
                newest_ms: now_ms,
                keys: KeySet::default(),
            });
        }
        if let Some(s) = self.slices.back_mut() {
            s.keys.insert(key);
            s.newest_ms = s.newest_ms.max(now_ms);
            self.len += 1;
        }
        self.expire(now_ms);
        true
    }

    /// Forgets `keys`, added by a transaction that did not commit.
    pub fn remove(&mut self, keys: &[i64]) {
        for k in keys {
            for s in self.slices.iter_mut().rev() {
                if s.keys.remove(k) {
                    self.len -= 1;
                    break;
                }
            }
        }
    }

    /// Drops the slices wholly older than the window, and the oldest ones past the key limit.
    fn expire(&mut self, now_ms: i64) {
        while let Some(oldest) = self.slices.front() {
            let too_old = now_ms - oldest.newest_ms > self.window_ms;
            if !(too_old || self.len - oldest.keys.len() >= self.max_keys) {
                break;
            }
            if let Some(s) = self.slices.pop_front() {
                self.len -= s.keys.len();
            }
        }
    }
}

/// `event_dedup`'s statement appending one commit's keys.
const INSERT_KEYS_SQLITE: &str = "INSERT INTO event_dedup (received_at, keys) VALUES (?1, ?2)";

/// Appends the keys of one commit's events, received at `received_at`, as one row: eight
/// little-endian bytes per key. One row per commit rather than per event keeps the table's cost
/// at ingest to one insert per transaction.
pub fn append(tx: &rusqlite::Connection, received_at: i64, keys: &[i64]) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut blob = Vec::with_capacity(keys.len() * 8);
    for k in keys {
        blob.extend_from_slice(&k.to_le_bytes());
    }
    tx.prepare_cached(INSERT_KEYS_SQLITE)?
        .execute(rusqlite::params![received_at, blob])?;
    Ok(())
}

/// The keys in one `event_dedup` row.
fn unpack(blob: &[u8]) -> impl Iterator<Item = i64> + '_ {
    blob.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
}

/// Loads the keys received within the window from `event_dedup`, newest first up to the key
/// limit. Reads in receipt order by walking rowids, the table's only index.
pub fn load(
    conn: &mut rusqlite::Connection,
    window: &mut Window,
    now_ms: i64,
) -> Result<(), StoreError> {
    let since = now_ms - window.window_ms;
    let limit = i64::try_from(window.max_keys).unwrap_or(i64::MAX);
    seed(conn, since, limit)?;
    // Newest rows first until the key limit or the window's start, then inserted oldest first
    // so that slices are built in order. Rows are appended in receipt order, so rowid order is
    // time order.
    let mut stmt = conn.prepare("SELECT received_at, keys FROM event_dedup ORDER BY rowid DESC")?;
    let mut rows = stmt.query([])?;
    let mut batches: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut held = 0;
    while let Some(row) = rows.next()? {
        let (at, keys): (i64, Vec<u8>) = (row.get(0)?, row.get(1)?);
        if at < since || held >= limit {
            break;
        }
        held += i64::try_from(keys.len() / 8).unwrap_or(i64::MAX);
        batches.push((at, keys));
    }
    for (at, keys) in batches.iter().rev() {
        for k in unpack(keys) {
            window.insert(k, *at);
        }
    }
    window.expire(now_ms);
    Ok(())
}

/// Fills an empty `event_dedup` with the keys of the events received within the window, once,
/// on the first start after the upgrade that introduced it (events stored before it have none).
fn seed(conn: &mut rusqlite::Connection, since: i64, limit: i64) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let empty: bool = tx.query_row("SELECT NOT EXISTS (SELECT 1 FROM event_dedup)", [], |r| {
        r.get(0)
    })?;
    if !empty {
        return Ok(());
    }
    {
        // Newest first along the rowid, stopping at the window's start; then appended oldest
        // first, as the writer would have.
        let mut read = tx.prepare(
            "SELECT received_at, source, event_id FROM events ORDER BY seq DESC LIMIT ?1",
        )?;
        let mut keys: Vec<(i64, i64)> = Vec::new();
        let mut rows = read.query([limit])?;
        while let Some(row) = rows.next()? {
            let at: i64 = row.get(0)?;
            if at < since {
                break;
            }
            let (source, id): (String, String) = (row.get(1)?, row.get(2)?);
            keys.push((at, key(&source, &id)));
        }
        keys.reverse();
        for same in keys.chunk_by(|a, b| a.0 == b.0) {
            let ks: Vec<i64> = same.iter().map(|(_, k)| *k).collect();
            append(&tx, same[0].0, &ks)?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_source_from_id() {
        assert_ne!(key("ab", "c"), key("a", "bc"));
        assert_eq!(key("app", "1"), key("app", "1"));
        assert_ne!(key("app", "1"), key("app", "2"));
    }

    #[test]
    fn postgres_keys_are_the_sha256_prefix() {
        // Reference values from Python's hashlib: the first eight bytes of
        // sha256(source + b"\xff" + id), read as a big-endian signed integer.
        assert_eq!(pg_key("app", "evt_1"), -9_172_273_938_038_794_429);
        assert_eq!(
            pg_key("https://shop.example/é", "ид-1"),
            5_728_492_016_359_871_783
        );
        assert_ne!(pg_key("ab", "c"), pg_key("a", "bc"));
    }

    #[test]
    fn a_key_is_held_for_the_window_and_then_forgotten() {
        let hour = 3_600_000;
        let mut w = Window::new(24 * hour, 1_000_000);
        assert!(w.insert(1, 0));
        assert!(!w.insert(1, 0), "a repeat is a duplicate");
        for h in 1..=24 {
            assert!(w.insert(100 + h, h * hour));
            assert!(w.contains(1), "still held after {h} h");
        }
        // Once its slice is wholly past the window, the key goes.
        for h in 25..=30 {
            w.insert(100 + h, h * hour);
        }
        assert!(!w.contains(1));
        assert!(w.contains(130));
    }

    #[test]
    fn a_quiet_spell_past_the_window_forgets_the_newest_slice_too() {
        let mut w = Window::new(1_000, 1_000);
        assert!(w.insert(1, 0));
        assert!(!w.insert(1, 500), "within the window");
        assert!(
            w.insert(1, 1_501),
            "nothing arrived since, and the original is past the window"
        );
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn the_key_limit_drops_the_oldest_slices() {
        let mut w = Window::new(86_400_000, 800);
        for k in 0..2_000 {
            w.insert(k, 0);
        }
        assert!(w.len() <= 900, "{} keys held", w.len());
        assert!(w.contains(1_999));
        assert!(!w.contains(0));
    }

    #[test]
    fn keys_of_an_uncommitted_transaction_can_be_taken_back() {
        let mut w = Window::new(86_400_000, 1_000);
        w.insert(7, 0);
        w.insert(8, 0);
        w.remove(&[8]);
        assert!(w.contains(7));
        assert!(!w.contains(8));
        assert_eq!(w.len(), 1);
    }

    /// An in-memory database with the two tables `load` reads, holding `events` rows.
    fn tables(events: &str) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE event_dedup (received_at BIGINT NOT NULL, keys BLOB NOT NULL); \
             CREATE TABLE events (seq INTEGER PRIMARY KEY, source TEXT, event_id TEXT, \
             received_at BIGINT)",
        )
        .unwrap();
        if !events.is_empty() {
            conn.execute_batch(&format!("INSERT INTO events VALUES {events}"))
                .unwrap();
        }
        conn
    }

    #[test]
    fn the_window_reloads_from_the_table() {
        let mut conn = tables("");
        let day = 86_400_000;
        for (at, k) in [(0, 1), (day, 2), (2 * day, 3), (2 * day + 5, 4)] {
            append(&conn, at, &[k]).unwrap();
        }
        let mut w = Window::new(day, 1_000);
        load(&mut conn, &mut w, 2 * day + 10).unwrap();
        assert!(!w.contains(1), "older than the window");
        assert!(w.contains(3) && w.contains(4));
        // The key limit keeps the newest.
        let mut w = Window::new(10 * day, SLICES);
        load(&mut conn, &mut w, 2 * day + 10).unwrap();
        assert!(w.contains(4));
    }

    #[test]
    fn an_empty_table_is_seeded_from_the_events_in_the_window() {
        let mut conn = tables("(1, 'app', 'old', 0), (2, 'app', 'a', 500), (3, 'app', 'b', 900)");
        let mut w = Window::new(600, 1_000);
        load(&mut conn, &mut w, 1_000).unwrap();
        assert!(w.contains(key("app", "a")) && w.contains(key("app", "b")));
        assert!(!w.contains(key("app", "old")));
        let stored: i64 = conn
            .query_row("SELECT COUNT(*) FROM event_dedup", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            stored, 2,
            "seeded once, into the table (one row per receipt time)"
        );
    }
}
