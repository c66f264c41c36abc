//! Usage records and the keys for proofs of usage, in the replicated
//! registry table:
//! `u/{account} NUL {limit index} {window start} {ordinal}`: a record's
//! leaf and the opening of its commitment, so a node can prove the window;
//! an ordinal of `u32::MAX` marks a window that overflowed;
//! `x/{version} {node}`: a node's registered verifying key.

use rocksdb::{Direction, IteratorMode};
use zeromesh_protocol::limits::MAX_USAGE_KEYS;
use zeromesh_protocol::trace::{UsageKeyRecord, UsageRecord};
use zeromesh_protocol::NodeId;

use crate::error::{decode, StorageError};
use crate::keys::CF_PLUGIN_REGISTRY;
use crate::store::Store;
use crate::tables::StateBatch;

pub(crate) const USAGE_RECORD_KEY_PREFIX: &[u8] = b"u/";
pub(crate) const USAGE_KEY_KEY_PREFIX: &[u8] = b"x/";
/// The ordinal that marks a window with more records than are kept.
pub const OVERFLOW_ORDINAL: u32 = u32::MAX;

/// `u/{account} NUL {limit}`: every window of one limit of one account.
fn limit_prefix(account: &str, limit: u8) -> Vec<u8> {
    [USAGE_RECORD_KEY_PREFIX, account.as_bytes(), b"\0", &[limit]].concat()
}

fn window_prefix(account: &str, limit: u8, start_ms: u64) -> Vec<u8> {
    [limit_prefix(account, limit), start_ms.to_be_bytes().to_vec()].concat()
}

fn record_key(account: &str, limit: u8, start_ms: u64, ordinal: u32) -> Vec<u8> {
    [window_prefix(account, limit, start_ms), ordinal.to_be_bytes().to_vec()].concat()
}

fn usage_key_key(version: u32, node: NodeId) -> Vec<u8> {
    [USAGE_KEY_KEY_PREFIX, &version.to_be_bytes()[..], &node.to_be_bytes()[..]].concat()
}

/// A fixed-width field of a stored usage key, or a decode error naming it.
fn key_field<const N: usize>(bytes: Option<&[u8]>) -> Result<[u8; N], StorageError> {
    bytes.and_then(|bytes| bytes.try_into().ok()).ok_or_else(|| StorageError::Decode {
        what: "usage record key",
        source: Box::new(bincode::ErrorKind::Custom(format!("a field is not {N} bytes"))),
    })
}

/// Checks one usage registry record from a snapshot; `None` when the key is
/// not one of them.
pub(crate) fn check_usage_record(key: &[u8], value: &[u8]) -> Option<Result<(), String>> {
    if let Some(rest) = key.strip_prefix(USAGE_RECORD_KEY_PREFIX) {
        // account NUL, then limit (1), start (8), ordinal (4).
        let shaped = rest.len() > 14 && rest[rest.len() - 14] == 0;
        if !shaped {
            return Some(Err("a usage record's key is malformed".into()));
        }
        let ordinal = u32::from_be_bytes(rest[rest.len() - 4..].try_into().expect("4 bytes"));
        if ordinal == OVERFLOW_ORDINAL {
            return Some(if value.is_empty() { Ok(()) } else { Err("an overflow mark holds a value".into()) });
        }
        return Some(decode::<UsageRecord>("usage record", value).map(|_| ()).map_err(|e| e.to_string()));
    }
    if let Some(rest) = key.strip_prefix(USAGE_KEY_KEY_PREFIX) {
        let checked = decode::<UsageKeyRecord>("usage key", value).map_err(|e| e.to_string()).and_then(|record| {
            match *rest == usage_key_key(record.version, record.node)[USAGE_KEY_KEY_PREFIX.len()..] {
                true => Ok(()),
                false => Err("a usage key's key and record disagree".into()),
            }
        });
        return Some(checked);
    }
    None
}

/// One window's kept records, in ordinal order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageWindow {
    pub records: Vec<UsageRecord>,
    /// It had more records than are kept: it cannot be proved.
    pub overflowed: bool,
}

impl Store {
    /// The records of the window of `account`'s limit `limit` that began at
    /// `start_ms`.
    pub fn usage_window(&self, account: &str, limit: u8, start_ms: u64) -> Result<UsageWindow, StorageError> {
        let prefix = window_prefix(account, limit, start_ms);
        let cf = self.cf(CF_PLUGIN_REGISTRY)?;
        let mut window = UsageWindow::default();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
            let (key, value) = item?;
            let Some(ordinal) = key.strip_prefix(prefix.as_slice()) else { break };
            if ordinal == OVERFLOW_ORDINAL.to_be_bytes() {
                window.overflowed = true;
            } else {
                window.records.push(decode("usage record", &value)?);
            }
        }
        Ok(window)
    }

    /// The ordinal the next record of that window gets: the count of its
    /// records, or [`OVERFLOW_ORDINAL`] once it overflowed.
    pub fn usage_window_next(&self, account: &str, limit: u8, start_ms: u64) -> Result<u32, StorageError> {
        let prefix = window_prefix(account, limit, start_ms);
        let end = record_key(account, limit, start_ms, OVERFLOW_ORDINAL);
        let cf = self.cf(CF_PLUGIN_REGISTRY)?;
        let last = self.db.iterator_cf(cf, IteratorMode::From(&end, Direction::Reverse)).next().transpose()?;
        Ok(match last {
            Some((key, _)) if key.starts_with(&prefix) => {
                let ordinal = u32::from_be_bytes(key_field(key.get(prefix.len()..))?);
                ordinal.saturating_add(1)
            }
            _ => 0,
        })
    }

    /// The windows of `account`'s limit `limit` that hold records, oldest first.
    pub fn usage_windows(&self, account: &str, limit: u8) -> Result<Vec<u64>, StorageError> {
        let prefix = limit_prefix(account, limit);
        let cf = self.cf(CF_PLUGIN_REGISTRY)?;
        let mut starts: Vec<u64> = Vec::new();
        let mut from = prefix.clone();
        // One seek per window: past a window's records to the next start.
        loop {
            let Some(item) = self.db.iterator_cf(cf, IteratorMode::From(&from, Direction::Forward)).next() else {
                break;
            };
            let (key, _) = item?;
            let Some(rest) = key.strip_prefix(prefix.as_slice()) else { break };
            let start = u64::from_be_bytes(key_field(rest.get(..8))?);
            starts.push(start);
            match start.checked_add(1) {
                Some(next) => from = window_prefix(account, limit, next),
                None => break,
            }
        }
        Ok(starts)
    }

    /// The leaf of entry `log_index`, if a kept usage record of `account`
    /// holds it.
    pub fn usage_leaf(&self, account: &str, log_index: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let prefix = [USAGE_RECORD_KEY_PREFIX, account.as_bytes(), b"\0"].concat();
        let cf = self.cf(CF_PLUGIN_REGISTRY)?;
        for item in self.db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            if key.ends_with(&OVERFLOW_ORDINAL.to_be_bytes()) {
                continue;
            }
            let record: UsageRecord = decode("usage record", &value)?;
            if record.log_index == log_index {
                return Ok(Some(record.leaf));
            }
        }
        Ok(None)
    }

    pub fn usage_key(&self, version: u32, node: NodeId) -> Result<Option<UsageKeyRecord>, StorageError> {
        self.registry_get(&usage_key_key(version, node), "usage key")
    }

    /// Every registered key for proofs of usage.
    pub fn usage_keys(&self) -> Result<Vec<UsageKeyRecord>, StorageError> {
        self.registry_scan(USAGE_KEY_KEY_PREFIX, "usage key", MAX_USAGE_KEYS + 1)
    }
}

impl StateBatch<'_> {
    pub fn put_usage_record(
        &mut self,
        account: &str,
        limit: u8,
        start_ms: u64,
        ordinal: u32,
        record: &UsageRecord,
    ) -> Result<(), StorageError> {
        self.put_registry(&record_key(account, limit, start_ms, ordinal), "usage record", record)
    }

    /// Marks a window as holding more records than are kept.
    pub fn mark_usage_overflow(&mut self, account: &str, limit: u8, start_ms: u64) -> Result<(), StorageError> {
        let key = record_key(account, limit, start_ms, OVERFLOW_ORDINAL);
        self.batch.put_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, key, []);
        Ok(())
    }

    /// Drops every record of one window.
    pub fn drop_usage_window(&mut self, account: &str, limit: u8, start_ms: u64) -> Result<(), StorageError> {
        let from = window_prefix(account, limit, start_ms);
        let to = window_prefix(account, limit, start_ms.saturating_add(1));
        self.batch.delete_range_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, from, to);
        Ok(())
    }

    pub fn put_usage_key(&mut self, record: &UsageKeyRecord) -> Result<(), StorageError> {
        self.put_registry(&usage_key_key(record.version, record.node), "usage key", record)
    }
}
