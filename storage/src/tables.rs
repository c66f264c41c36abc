//! The memory log's tables: typed reads of the latest and historical versions
//! of paths, and a write batch the state machine fills during one apply.

use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use serde::{Deserialize, Serialize};
use zeromesh_protocol::limits::MAX_READ_PAGE_BYTES;
use zeromesh_protocol::{MemoryPath, MemoryRecord};

use crate::error::{decode, encode, StorageError};
use crate::keys::*;
use crate::store::Store;

/// One version of a path as stored (the path is the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    pub version: u64,
    pub written_at_ms: u64,
    pub log_index: u64,
    pub deleted: bool,
    pub value: Vec<u8>,
    pub content_type: String,
    pub tags: Vec<String>,
}

/// What applying a write needs of a path's latest version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub version: u64,
    /// Whether the version is a deletion (a tombstone).
    pub deleted: bool,
    /// The bytes its value, content type and tags count for (0 when deleted).
    pub stored_bytes: u64,
}

impl StoredVersion {
    pub fn head(&self) -> Head {
        let stored_bytes = match self.deleted {
            true => 0,
            false => zeromesh_protocol::memory::stored_bytes(&self.value, &self.content_type, &self.tags),
        };
        Head { version: self.version, deleted: self.deleted, stored_bytes }
    }

    pub fn into_record(self, path: MemoryPath) -> MemoryRecord {
        MemoryRecord {
            path,
            version: self.version,
            written_at_ms: self.written_at_ms,
            log_index: self.log_index,
            deleted: self.deleted,
            value: self.value,
            content_type: self.content_type,
            tags: self.tags,
        }
    }
}

/// One page of a prefix listing. `next_cursor` is the last path examined when
/// more may follow; pass it as `after` to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub records: Vec<MemoryRecord>,
    pub next_cursor: Option<String>,
}

/// One page of a path's history, newest first. `next_before` is the version
/// to pass as `before` to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub records: Vec<MemoryRecord>,
    pub next_before: Option<u64>,
}

/// A listing examines at most this many stored paths per requested entry, so
/// a prefix full of tombstones cannot make one read scan without bound.
const LIST_SCAN_FACTOR: usize = 8;

fn stored_path(key: &[u8]) -> Result<MemoryPath, StorageError> {
    let text = std::str::from_utf8(key).map_err(|e| StorageError::BadSnapshot {
        path: "mem_latest".into(),
        reason: format!("a stored path is not UTF-8: {e}"),
    })?;
    MemoryPath::parse(text).map_err(|e| StorageError::BadSnapshot {
        path: "mem_latest".into(),
        reason: format!("a stored path is invalid: {e}"),
    })
}

impl Store {
    /// The state machine's encoded applied state, if it has applied anything.
    pub fn applied_state(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.cf(CF_SM_META)?, KEY_APPLIED)?)
    }

    /// The latest version of `path`, tombstones included.
    pub fn latest(&self, path: &MemoryPath) -> Result<Option<StoredVersion>, StorageError> {
        match self.db.get_pinned_cf(self.cf(CF_MEM_LATEST)?, path.as_str())? {
            Some(bytes) => Ok(Some(decode("memory record", &bytes)?)),
            None => Ok(None),
        }
    }

    /// The head of the latest version of `path`, if it has one: from the
    /// heads of paths written recently, else read.
    pub fn head(&self, path: &MemoryPath) -> Result<Option<Head>, StorageError> {
        if let Some(head) = self.heads().get(path.as_str()) {
            return Ok(Some(head));
        }
        Ok(self.latest(path)?.as_ref().map(StoredVersion::head))
    }

    /// A given version of `path`, if it is still kept.
    pub fn version(&self, path: &MemoryPath, version: u64) -> Result<Option<StoredVersion>, StorageError> {
        let key = history_key(path.as_str(), version);
        match self.db.get_pinned_cf(self.cf(CF_MEM_HISTORY)?, key)? {
            Some(bytes) => Ok(Some(decode("memory record", &bytes)?)),
            None => Ok(None),
        }
    }

    /// Live paths starting with `prefix`, in path order, strictly after
    /// `after` when given, at most `limit` of them; a page stops early once its
    /// values pass `MAX_READ_PAGE_BYTES`.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<ListPage, StorageError> {
        let cf = self.cf(CF_MEM_LATEST)?;
        let start: Vec<u8> = match after {
            Some(after) if after.as_bytes() >= prefix.as_bytes() => {
                let mut key = after.as_bytes().to_vec();
                key.push(0);
                key
            }
            _ => prefix.as_bytes().to_vec(),
        };
        let max_scanned = limit.saturating_mul(LIST_SCAN_FACTOR).max(limit).max(1);
        let mut records = Vec::new();
        let mut last_key: Option<Vec<u8>> = None;
        let mut page_bytes = 0usize;
        let mut exhausted = true;
        let iterator = self.db.iterator_cf(cf, IteratorMode::From(&start, Direction::Forward));
        for (scanned, item) in iterator.enumerate() {
            let (key, bytes) = item?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            if records.len() == limit || scanned == max_scanned || page_bytes >= MAX_READ_PAGE_BYTES {
                exhausted = false;
                break;
            }
            let stored: StoredVersion = decode("memory record", &bytes)?;
            if !stored.deleted {
                page_bytes += stored.value.len();
                records.push(stored.into_record(stored_path(&key)?));
            }
            last_key = Some(key.to_vec());
        }
        let next_cursor = if exhausted { None } else { last_key.map(|key| String::from_utf8_lossy(&key).into_owned()) };
        Ok(ListPage { records, next_cursor })
    }

    /// Every live memory under `prefix`, in path order, with its path; `Err`
    /// with the reason when there are more than `max_entries` paths (live or
    /// deleted) under it or their values pass `max_bytes`.
    #[allow(clippy::type_complexity)]
    pub fn live_under(
        &self,
        prefix: &str,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Result<Vec<(String, StoredVersion)>, String>, StorageError> {
        let cf = self.cf(CF_MEM_LATEST)?;
        let (mut found, mut bytes) = (Vec::new(), 0usize);
        for (scanned, item) in
            self.db.iterator_cf(cf, IteratorMode::From(prefix.as_bytes(), Direction::Forward)).enumerate()
        {
            let (key, value) = item?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            if scanned == max_entries {
                return Ok(Err(format!("more than {max_entries} memories")));
            }
            let stored: StoredVersion = decode("memory record", &value)?;
            if stored.deleted {
                continue;
            }
            bytes +=
                zeromesh_protocol::memory::stored_bytes(&stored.value, &stored.content_type, &stored.tags) as usize;
            if bytes > max_bytes {
                return Ok(Err(format!("more than {max_bytes} bytes")));
            }
            found.push((String::from_utf8_lossy(&key).into_owned(), stored));
        }
        Ok(Ok(found))
    }

    /// Kept versions of `path`, newest first, strictly below `before` when
    /// given, at most `limit` of them. Tombstones are included.
    pub fn history(&self, path: &MemoryPath, before: Option<u64>, limit: usize) -> Result<HistoryPage, StorageError> {
        let cf = self.cf(CF_MEM_HISTORY)?;
        let prefix = history_prefix(path.as_str());
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(prefix.clone());
        let start = match before {
            Some(0) => return Ok(HistoryPage { records: Vec::new(), next_before: None }),
            Some(before) => history_key(path.as_str(), before - 1),
            None => history_key(path.as_str(), u64::MAX),
        };
        let mut records = Vec::new();
        let mut next_before = None;
        let mut page_bytes = 0usize;
        for item in self.db.iterator_cf_opt(cf, options, IteratorMode::From(&start, Direction::Reverse)) {
            let (key, bytes) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            if records.len() == limit || page_bytes >= MAX_READ_PAGE_BYTES {
                next_before = history_version(&key).map(|version| version + 1);
                break;
            }
            let stored: StoredVersion = decode("memory record", &bytes)?;
            page_bytes += stored.value.len();
            records.push(stored.into_record(path.clone()));
        }
        Ok(HistoryPage { records, next_before })
    }

    /// Starts a batch of state-machine writes.
    pub fn state_batch(&self) -> StateBatch<'_> {
        StateBatch { store: self, batch: WriteBatch::default(), heads: Vec::new() }
    }
}

/// State-machine writes staged during one apply and committed together, with
/// the applied state, in one RocksDB write.
pub struct StateBatch<'a> {
    pub(crate) store: &'a Store,
    pub(crate) batch: WriteBatch,
    /// The head of each latest version staged, in order.
    heads: Vec<(Box<str>, Head)>,
}

impl StateBatch<'_> {
    /// Stages `stored` as the latest version of `path` and as a history entry.
    pub fn put_version(&mut self, path: &MemoryPath, stored: &StoredVersion) -> Result<(), StorageError> {
        let bytes = encode("memory record", stored)?;
        self.batch.put_cf(self.store.cf(CF_MEM_HISTORY)?, history_key(path.as_str(), stored.version), &bytes);
        self.batch.put_cf(self.store.cf(CF_MEM_LATEST)?, path.as_str(), bytes);
        self.heads.push((path.as_str().into(), stored.head()));
        Ok(())
    }

    /// Stages the removal of one kept version of `path` from its history.
    pub fn forget_version(&mut self, path: &MemoryPath, version: u64) -> Result<(), StorageError> {
        self.batch.delete_cf(self.store.cf(CF_MEM_HISTORY)?, history_key(path.as_str(), version));
        Ok(())
    }

    /// Stages the consensus layer's encoded applied state.
    pub fn set_applied_state(&mut self, applied: &[u8]) -> Result<(), StorageError> {
        self.batch.put_cf(self.store.cf(CF_SM_META)?, KEY_APPLIED, applied);
        Ok(())
    }

    /// Writes everything staged, atomically. Not fsynced: the log already
    /// holds every applied entry durably, and a restarted node re-applies
    /// from its last durable applied state.
    pub fn commit(self) -> Result<(), StorageError> {
        self.store.db.write(self.batch)?;
        self.store.heads().committed(self.heads);
        Ok(())
    }
}

impl Store {
    /// Every record of the state tables, in key order, as `(table, key,
    /// value)`: at most `max_records` of them. For comparing the state of two
    /// stores in tests and checks; not a read path.
    pub fn state_records(&self, max_records: usize) -> Result<Vec<(&'static str, Vec<u8>, Vec<u8>)>, StorageError> {
        let mut records = Vec::new();
        for table in STATE_TABLES {
            for item in self.db.iterator_cf(self.cf(table)?, IteratorMode::Start).take(max_records) {
                let (key, value) = item?;
                records.push((table, key.to_vec(), value.to_vec()));
            }
        }
        records.truncate(max_records);
        Ok(records)
    }
}
