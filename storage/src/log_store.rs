//! The Raft log store: entries, vote and committed log id in RocksDB.
//!
//! An append is written as one RocksDB write batch, so one fsync covers
//! every entry of the batch. A follower's append is written with `sync` set
//! and only after that fsync is the callback told that the entries are
//! durable. The leader's own proposals are written without it, reported at
//! once, and fsynced in the background, so that replication runs in
//! parallel with the leader's fsync; [`crate::LogDurability`] says what that
//! relies on. The newest entries are also kept in memory as written, for
//! openraft's reads right after an append ([`crate::recent`]).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, LogId, LogState, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig, StorageIOError, Vote,
};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::blocking::run_blocking;
use crate::durability::Flush;
use crate::error::{decode, encode, StorageError};
use crate::keys::*;
use crate::recent::RecentEntries;
use crate::store::Store;

type RaftStorageError<C> = openraft::StorageError<<C as RaftTypeConfig>::NodeId>;

/// The openraft log store over a [`Store`]. Generic over the type config so
/// that storage does not depend on the replicated command set.
pub struct LogStore<C: RaftTypeConfig> {
    store: Store,
    /// The member this store belongs to, when it may write its own
    /// proposals without waiting for their fsync.
    member: Option<C::NodeId>,
    /// The vote as last saved or read.
    vote: Arc<Mutex<Option<Vote<C::NodeId>>>>,
    /// The log's last entries, shared by every clone (the log reader too).
    recent: Arc<Mutex<RecentEntries<C::Entry>>>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            store: self.store.clone(),
            member: self.member.clone(),
            vote: self.vote.clone(),
            recent: self.recent.clone(),
        }
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    /// A log store that fsyncs every append before reporting it: for
    /// readers and tools.
    pub fn new(store: Store) -> Self {
        LogStore { store, member: None, vote: Arc::default(), recent: Arc::default() }
    }

    /// The log store of Raft member `id`: its own proposals as leader are
    /// fsynced in the background (see the module's documentation).
    pub fn for_member(store: Store, id: C::NodeId) -> Self {
        LogStore { store, member: Some(id), vote: Arc::default(), recent: Arc::default() }
    }

    /// Writes `entries` in one batch and fsyncs it. Returns the number of
    /// entries written. This is the whole of a follower's append; the trait
    /// method only adds the durability callback.
    pub fn write_entries_synced<I>(&self, entries: I) -> Result<usize, StorageError>
    where
        I: IntoIterator<Item = C::Entry>,
    {
        let (count, last) = self.write_entries(entries, &Store::synced())?;
        if let Some(last) = last {
            self.store.log_durability().written_synced(last);
        }
        Ok(count)
    }

    fn write_entries<I>(&self, entries: I, options: &WriteOptions) -> Result<(usize, Option<u64>), StorageError>
    where
        I: IntoIterator<Item = C::Entry>,
    {
        let cf = self.store.cf(CF_RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        let mut written = Vec::new();
        let mut first = None;
        let mut last = None;
        for entry in entries {
            let index = entry.get_log_id().index;
            let bytes = encode("log entry", &entry)?;
            written.push((entry, bytes.len()));
            batch.put_cf(cf, log_key(index), bytes);
            first.get_or_insert(index);
            last = Some(index);
        }
        let count = written.len();
        if let Some(first) = first {
            self.write_log(batch, options, |recent| recent.appended(first, written))?;
        }
        Ok((count, last))
    }

    /// Writes `batch` to the log, then applies the same change to the
    /// entries kept in memory. After a failed write what reached the log is
    /// unknown, so none are kept: reads go to RocksDB.
    fn write_log(
        &self,
        batch: WriteBatch,
        options: &WriteOptions,
        change: impl FnOnce(&mut RecentEntries<C::Entry>),
    ) -> Result<(), StorageError> {
        let result = self.store.db.write_opt(batch, options);
        let mut recent = self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match result {
            Ok(()) => {
                change(&mut recent);
                Ok(())
            }
            Err(error) => {
                recent.clear();
                Err(error.into())
            }
        }
    }

    /// Whether `first` is a proposal of this member as the leader it is
    /// now: its leader id is this member's committed vote (a vote for
    /// itself that a quorum granted). Anything else, entries from another
    /// leader or from an earlier term of this one, is a follower's append.
    fn own_proposal(&self, first: &C::Entry) -> bool {
        let Some(member) = &self.member else { return false };
        let vote = self.vote.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        vote.as_ref().is_some_and(|vote| {
            vote.is_committed()
                && vote.leader_id().voted_for().as_ref() == Some(member)
                && first.get_log_id().leader_id == *vote.leader_id()
        })
    }

    /// Writes the leader's own proposals without an fsync and starts the
    /// background fsync that will cover them.
    fn write_own_proposals(&self, entries: Vec<C::Entry>) -> Result<(), StorageError> {
        let mut unsynced = WriteOptions::default();
        unsynced.set_sync(false);
        let (_, last) = self.write_entries(entries, &unsynced)?;
        let Some(last) = last else { return Ok(()) };
        let durability = self.store.log_durability().clone();
        if let Flush::Start = durability.written_unsynced(last) {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || {
                durability.flush_until_caught_up(|| store.db.flush_wal(true).map_err(StorageError::from))
            });
        }
        Ok(())
    }

    fn remember_vote(&self, vote: Option<Vote<C::NodeId>>) {
        *self.vote.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = vote;
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8], what: &'static str) -> Result<Option<T>, StorageError> {
        let cf = self.store.cf(CF_RAFT_META)?;
        match self.store.db.get_pinned_cf(cf, key)? {
            Some(bytes) => Ok(Some(decode(what, &bytes)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        what: &'static str,
        value: &T,
        sync: bool,
    ) -> Result<(), StorageError> {
        let cf = self.store.cf(CF_RAFT_META)?;
        let bytes = encode(what, value)?;
        if sync {
            self.store.db.put_cf_opt(cf, key, bytes, &Store::synced())?;
        } else {
            self.store.db.put_cf(cf, key, bytes)?;
        }
        Ok(())
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<C::NodeId>>, StorageError> {
        let cf = self.store.cf(CF_RAFT_LOG)?;
        let mut iter = self.store.db.iterator_cf(cf, IteratorMode::End);
        match iter.next() {
            Some(item) => {
                let (_, bytes) = item?;
                let entry: C::Entry = decode("log entry", &bytes)?;
                Ok(Some(entry.get_log_id().clone()))
            }
            None => Ok(None),
        }
    }

    fn read_range(&self, start: u64, end_exclusive: Option<u64>) -> Result<Vec<C::Entry>, StorageError> {
        let kept = end_exclusive
            .and_then(|end| self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).range(start, end));
        if let Some(entries) = kept {
            return Ok(entries);
        }
        let cf = self.store.cf(CF_RAFT_LOG)?;
        let mut options = ReadOptions::default();
        if let Some(end) = end_exclusive {
            options.set_iterate_upper_bound(log_key(end).to_vec());
        }
        let mode = IteratorMode::From(&log_key(start), Direction::Forward);
        let mut entries = Vec::new();
        for item in self.store.db.iterator_cf_opt(cf, options, mode) {
            let (key, bytes) = item?;
            debug_assert!(log_index(&key).is_some_and(|index| index >= start));
            entries.push(decode("log entry", &bytes)?);
        }
        Ok(entries)
    }
}

fn to_raft<C: RaftTypeConfig>(
    error: StorageError,
    make: fn(AnyError) -> StorageIOError<C::NodeId>,
) -> RaftStorageError<C> {
    make(AnyError::new(&error)).into()
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, RaftStorageError<C>> {
        let start = match range.start_bound() {
            Bound::Included(index) => *index,
            Bound::Excluded(index) => index.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end_exclusive = match range.end_bound() {
            Bound::Included(index) => index.checked_add(1),
            Bound::Excluded(index) => Some(*index),
            Bound::Unbounded => None,
        };
        self.read_range(start, end_exclusive).map_err(|e| to_raft::<C>(e, StorageIOError::read_logs))
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, RaftStorageError<C>> {
        let last_purged_log_id: Option<LogId<C::NodeId>> = self
            .read_meta(KEY_LAST_PURGED, "last purged log id")
            .map_err(|e| to_raft::<C>(e, StorageIOError::read_logs))?;
        let last_log_id = self.last_entry_log_id().map_err(|e| to_raft::<C>(e, StorageIOError::read_logs))?;
        Ok(LogState { last_log_id: last_log_id.or_else(|| last_purged_log_id.clone()), last_purged_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), RaftStorageError<C>> {
        self.write_meta(KEY_VOTE, "vote", vote, true).map_err(|e| to_raft::<C>(e, StorageIOError::write_vote))?;
        self.remember_vote(Some(vote.clone()));
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, RaftStorageError<C>> {
        let vote: Option<Vote<C::NodeId>> =
            self.read_meta(KEY_VOTE, "vote").map_err(|e| to_raft::<C>(e, StorageIOError::read_vote))?;
        self.remember_vote(vote.clone());
        Ok(vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<C::NodeId>>) -> Result<(), RaftStorageError<C>> {
        // Not synced: a committed id lost in a crash is learned again from the
        // leader; it only lets a restarted node re-apply without waiting.
        self.write_meta(KEY_COMMITTED, "committed log id", &committed, false)
            .map_err(|e| to_raft::<C>(e, StorageIOError::write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C::NodeId>>, RaftStorageError<C>> {
        let committed: Option<Option<LogId<C::NodeId>>> =
            self.read_meta(KEY_COMMITTED, "committed log id").map_err(|e| to_raft::<C>(e, StorageIOError::read))?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), RaftStorageError<C>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        let written = match entries.first() {
            // An unsynced write only reaches the memtable and the write-ahead
            // log's file: no blocking thread needed.
            Some(first) if self.own_proposal(first) => self.write_own_proposals(entries),
            _ => {
                let this = self.clone();
                run_blocking(move || this.write_entries_synced(entries).map(|_| ())).await.and_then(|result| result)
            }
        };
        match written {
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(to_raft::<C>(error, StorageIOError::write_logs))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), RaftStorageError<C>> {
        let result = (|| {
            let cf = self.store.cf(CF_RAFT_LOG)?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, log_key(log_id.index), log_key(u64::MAX));
            batch.delete_cf(cf, log_key(u64::MAX));
            self.write_log(batch, &Store::synced(), |recent| recent.truncated(log_id.index))?;
            self.store.log_durability().truncated(log_id.index);
            Ok(())
        })();
        result.map_err(|e| to_raft::<C>(e, StorageIOError::write_logs))
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), RaftStorageError<C>> {
        let result = (|| {
            let log_cf = self.store.cf(CF_RAFT_LOG)?;
            let meta_cf = self.store.cf(CF_RAFT_META)?;
            let mut batch = WriteBatch::default();
            batch.put_cf(meta_cf, KEY_LAST_PURGED, encode("last purged log id", &log_id)?);
            batch.delete_range_cf(log_cf, log_key(0), log_key(log_id.index.saturating_add(1)));
            self.write_log(batch, &WriteOptions::default(), |recent| recent.purged(log_id.index))
        })();
        result.map_err(|e| to_raft::<C>(e, StorageIOError::write_logs))
    }
}
