//! The change feed's delivery on this process: one poller finds the newest event any watcher may
//! read and wakes the watchers, each of which reads its own events from the table from its cursor.
//!
//! A change on this process wakes the poller at once ([`Feed::wake`]); changes made by other
//! processes are found at the next poll (`ROSTER_EVENTS_POLL_MS`). However many watchers there
//! are, an idle process asks the database once per poll, and not at all while nobody watches. A
//! slow watcher holds at most one page in its stream's buffer and reads on from the table when it
//! catches up: it slows nobody else.

use roster_store::{EventCursor, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

pub(crate) struct Feed {
    store: Store,
    poll: Duration,
    wake: Notify,
    /// The newest event readers may read, as last seen.
    newest: watch::Sender<Option<EventCursor>>,
    /// Set when the server starts shutting down: watchers end, so that clients move elsewhere.
    closing: watch::Sender<bool>,
}

impl Feed {
    pub(crate) fn new(store: Store, poll: Duration) -> Self {
        Self { store, poll, wake: Notify::new(), newest: watch::channel(None).0, closing: watch::channel(false).0 }
    }

    /// A change committed on this process: look now rather than at the next poll.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// The newest event readers may read, changing as events commit.
    pub(crate) fn newest(&self) -> watch::Receiver<Option<EventCursor>> {
        self.newest.subscribe()
    }

    /// Whether the server is shutting down, changing once when it starts to.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ends every watch: the server is shutting down.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Polls until `stop`.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
                _ = stop.changed() => return,
            }
            if self.newest.receiver_count() == 0 {
                // Nobody watches: nothing to ask. A new watcher reads the table before it waits.
                continue;
            }
            match self.store.newest_event().await {
                Ok(newest) => {
                    self.newest.send_if_modified(|seen| {
                        let newer = newest > *seen;
                        if newer {
                            *seen = newest;
                        }
                        newer
                    });
                }
                Err(err) => tracing::warn!(error = %err, "could not read the change feed's newest event"),
            }
        }
    }
}
