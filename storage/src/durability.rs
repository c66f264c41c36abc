//! Which prefix of the Raft log is on disk.
//!
//! A leader's own proposals are written without an fsync and reported to
//! openraft at once, so that replication to the followers starts while the
//! leader's fsync runs (Raft lets the leader write to its disk in parallel
//! with replicating; Ongaro's thesis, §10.2.1). openraft 0.9 then counts the
//! leader in a quorum before that fsync ends, so what keeps a commit true is
//! that nothing outside the leader learns of one before the leader holds the
//! entry on disk: the state machine applies an entry, and the transport sends
//! a commit index, only up to [`LogDurability::wait`]'s mark. An entry is
//! therefore answered, applied anywhere or announced as committed only once
//! the leader and the followers counted with it have fsynced it. Followers'
//! appends are fsynced before they are acknowledged, as before.
//!
//! A synced RocksDB write makes every earlier write durable too (one
//! write-ahead log), so the mark after any fsync is the log's last index.

use std::sync::Mutex;

use tokio::sync::watch;

use crate::error::StorageError;

/// The durable mark of one store's Raft log, shared by its log store, its
/// state machine and its transport.
pub struct LogDurability {
    state: Mutex<State>,
    mark: watch::Sender<Mark>,
}

/// What only the writers and the flusher need; changes of [`Mark`] are
/// made while holding it too.
struct State {
    /// Background fsyncs done (each covers every write before it).
    background_fsyncs: u64,
    /// A background fsync is running (at most one at a time).
    flushing: bool,
    /// Bumped by every truncation: an fsync that started before one must not
    /// raise the mark over entries written after it.
    generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    /// The log's last index as written (synced or not).
    written: u64,
    /// Every entry at or below this index that is in the log is on disk.
    durable: u64,
    /// An fsync failed: nothing may be assumed durable past `durable` again.
    failed: bool,
}

/// What the caller of [`LogDurability::written_unsynced`] must do.
#[must_use]
pub(crate) enum Flush {
    /// Start the background fsync ([`LogDurability::flush_until_caught_up`]).
    Start,
    /// One is running and will cover this write too.
    Running,
}

impl LogDurability {
    /// A log whose entries up to `last` are all on disk.
    pub(crate) fn new(last: u64) -> Self {
        LogDurability {
            state: Mutex::new(State { background_fsyncs: 0, flushing: false, generation: 0 }),
            mark: watch::Sender::new(Mark { written: last, durable: last, failed: false }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every entry at or below this index in the log is on disk.
    pub fn durable(&self) -> u64 {
        self.mark.borrow().durable
    }

    /// How many background fsyncs covered a leader's own proposals.
    pub fn background_fsyncs(&self) -> u64 {
        self.state().background_fsyncs
    }

    /// Waits until the log is on disk up to `index` (entries past the log's
    /// end, which some tools apply without a log, are not waited for).
    /// Fails when an fsync failed: the node must then stop (its disk can no
    /// longer be trusted).
    pub async fn wait(&self, index: u64) -> Result<(), StorageError> {
        let settled = |mark: &Mark| mark.durable >= index || mark.written < index;
        let mut marks = self.mark.subscribe();
        let mark = marks
            .wait_for(|mark| mark.failed || settled(mark))
            .await
            .map_err(|_| StorageError::LogSync("the store was closed".to_owned()))?;
        if settled(&mark) {
            Ok(())
        } else {
            Err(StorageError::LogSync(format!("the log could not be fsynced past index {}", mark.durable)))
        }
    }

    /// Entries up to `last` were written with an fsync: they and everything
    /// written before them are on disk.
    pub(crate) fn written_synced(&self, last: u64) {
        let _state = self.state();
        self.mark.send_modify(|mark| {
            mark.written = last;
            raise(mark, last);
        });
    }

    /// Entries up to `last` were written without an fsync.
    pub(crate) fn written_unsynced(&self, last: u64) -> Flush {
        let mut state = self.state();
        self.mark.send_modify(|mark| mark.written = last);
        if state.flushing {
            Flush::Running
        } else {
            state.flushing = true;
            Flush::Start
        }
    }

    /// Entries from `since` on were removed (with an fsync).
    pub(crate) fn truncated(&self, since: u64) {
        let kept = since.saturating_sub(1);
        let mut state = self.state();
        state.generation += 1;
        // The removal's fsync covered every entry kept.
        self.mark.send_modify(|mark| {
            mark.written = mark.written.min(kept);
            mark.durable = if mark.failed { mark.durable.min(kept) } else { kept };
        });
    }

    /// The background fsync: `sync` fsyncs everything written so far; it is
    /// called again until the mark reaches the last write, or not at all
    /// once an fsync failed. Runs on a blocking thread.
    pub(crate) fn flush_until_caught_up(&self, sync: impl Fn() -> Result<(), StorageError>) {
        loop {
            let (target, generation) = {
                let mut state = self.state();
                let mark = *self.mark.borrow();
                if mark.failed || mark.durable >= mark.written {
                    state.flushing = false;
                    return;
                }
                (mark.written, state.generation)
            };
            let result = sync();
            let mut state = self.state();
            state.background_fsyncs += 1;
            match result {
                Ok(()) if state.generation == generation => {
                    self.mark.send_if_modified(|mark| raise(mark, target));
                }
                Ok(()) => {}
                Err(error) => {
                    tracing::error!(%error, "fsync of the Raft log failed; this node stops applying entries");
                    self.mark.send_modify(|mark| mark.failed = true);
                    state.flushing = false;
                    return;
                }
            }
        }
    }
}

/// Raises the mark, never after a failed fsync: a later fsync that succeeds
/// does not vouch for pages the kernel may have dropped after the failure.
fn raise(mark: &mut Mark, durable: u64) -> bool {
    if durable > mark.durable && !mark.failed {
        mark.durable = durable;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(durability: &LogDurability) -> u64 {
        durability.durable()
    }

    #[test]
    fn an_unsynced_write_is_durable_only_after_the_fsync() {
        let durability = LogDurability::new(4);
        assert!(matches!(durability.written_unsynced(6), Flush::Start));
        assert!(matches!(durability.written_unsynced(7), Flush::Running));
        assert_eq!(mark(&durability), 4);
        let syncs = std::cell::Cell::new(0);
        durability.flush_until_caught_up(|| {
            syncs.set(syncs.get() + 1);
            Ok(())
        });
        assert_eq!(mark(&durability), 7);
        assert_eq!(syncs.get(), 1, "one fsync covers both writes");
        assert!(matches!(durability.written_unsynced(8), Flush::Start), "the flusher finished");
    }

    #[test]
    fn a_synced_write_covers_the_unsynced_ones_before_it() {
        let durability = LogDurability::new(0);
        let _ = durability.written_unsynced(3);
        durability.written_synced(5);
        assert_eq!(mark(&durability), 5);
    }

    #[test]
    fn an_fsync_that_began_before_a_truncation_does_not_vouch_for_the_entries_after_it() {
        let durability = LogDurability::new(2);
        let _ = durability.written_unsynced(9);
        let first = std::cell::Cell::new(true);
        durability.flush_until_caught_up(|| {
            // While the first fsync runs, entries 5.. are replaced; the
            // replacements (written without an fsync here) are not covered.
            if first.replace(false) {
                durability.truncated(5);
                let _ = durability.written_unsynced(6);
            }
            Ok(())
        });
        assert_eq!(mark(&durability), 6, "the second round covers the replacements");
        assert_eq!(durability.background_fsyncs(), 2);
        durability.truncated(4);
        assert_eq!(mark(&durability), 3);
    }

    #[tokio::test]
    async fn a_failed_fsync_fails_every_wait_past_the_mark() {
        let durability = LogDurability::new(1);
        let _ = durability.written_unsynced(2);
        durability.flush_until_caught_up(|| Err(StorageError::LogSync("disk gone".to_owned())));
        assert!(durability.wait(1).await.is_ok());
        assert!(durability.wait(3).await.is_ok(), "nothing to wait for past the log's end");
        let error = durability.wait(2).await.expect_err("nothing past 1 is durable");
        assert!(error.to_string().contains("past index 1"), "{error}");
        durability.written_synced(2);
        assert!(durability.wait(2).await.is_err(), "a later fsync does not vouch for the failed one");
        assert!(matches!(durability.written_unsynced(3), Flush::Start));
        durability.flush_until_caught_up(|| panic!("no fsync is tried after a failed one"));
        assert!(durability.wait(3).await.is_err());
    }
}
