//! Read-your-writes for figures the ingest writer folds lazily. The writer commits events at
//! once but upserts their rollups later, in bulk (see `usage::writer`); a read of
//! those rollups first calls [`Store::settle`], which returns at once when nothing is pending and
//! otherwise asks the writer to write what it holds and waits for that commit. So every event
//! acknowledged before a read began is in what the read sees.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

/// A request to write pending rollups; answered once they are committed (or the attempt failed).
pub type SettleRequest = oneshot::Sender<()>;

#[derive(Debug, Default)]
pub struct Fence {
    /// Events acknowledged whose rollups are not written yet. Raised before the acknowledgement
    /// and lowered only after the commit that wrote them.
    pending: AtomicU64,
    writer: Mutex<Option<mpsc::UnboundedSender<SettleRequest>>>,
    /// Held by whoever folds on this instance's behalf (PostgreSQL), so that two folds never
    /// both take the same acknowledged events off `pending`.
    pub folding: tokio::sync::Mutex<()>,
}

impl Fence {
    /// Registers the writer's end; returns the requests it must answer.
    pub fn attach(&self) -> mpsc::UnboundedReceiver<SettleRequest> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    pub fn add_pending(&self, events: u64) {
        self.pending.fetch_add(events, Ordering::SeqCst);
    }

    pub fn set_pending(&self, events: u64) {
        self.pending.store(events, Ordering::SeqCst);
    }

    /// Events acknowledged whose rollups are not written yet.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }

    /// Lowers the count by `events` written since [`Fence::pending`] read it.
    pub fn written(&self, events: u64) {
        let _ = self
            .pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                Some(p.saturating_sub(events))
            });
    }

    pub(super) async fn settle(&self) {
        if self.pending.load(Ordering::SeqCst) == 0 {
            return;
        }
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(writer) = writer else { return };
        let (tx, rx) = oneshot::channel();
        if writer.send(tx).is_ok() {
            // A writer that stopped or failed answers by dropping the request; the read then
            // goes ahead with what is stored.
            let _ = rx.await;
        }
    }
}
