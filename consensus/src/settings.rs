//! Raft timing and log-compaction settings, checked before use.

use std::sync::Arc;

use zeromesh_protocol::limits::{MAX_APPEND_ENTRIES_PER_MESSAGE, MAX_SNAPSHOT_CHUNK_BYTES};

use crate::error::ConsensusError;

/// How long the leader waits for a follower to take one snapshot chunk (up
/// to 1 MiB over the mesh) and, for the last, to install the snapshot.
/// openraft's default, 200 ms, is less than a chunk takes on a busy node:
/// the chunk timed out, the transfer started over, and a late node could
/// take minutes to catch up (or never, under load).
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 10_000;

/// The knobs of one node's Raft instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSettings {
    pub cluster_name: String,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Each member builds a snapshot every this many entries, at points of
    /// the log of its own so that members do not all build at once
    /// (`snapshot_schedule`).
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind the latest snapshot, so that slightly
    /// lagging followers can catch up without a snapshot.
    pub log_entries_kept_after_snapshot: u64,
    pub snapshot_chunk_bytes: u64,
    pub max_entries_per_append: u64,
    /// What RocksDB may hold in memory (`storage_memory_mb`).
    pub storage_memory_bytes: usize,
    /// What RocksDB's flushes and compactions may write per second, 0 for no
    /// limit (`storage_background_write_mb_per_sec`).
    pub storage_background_write_bytes_per_sec: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            cluster_name: "zeromesh".into(),
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_every_entries: 10_000,
            log_entries_kept_after_snapshot: 1_000,
            snapshot_chunk_bytes: 1024 * 1024,
            max_entries_per_append: 256,
            storage_memory_bytes: zeromesh_storage::DEFAULT_MEMORY_BUDGET_BYTES,
            storage_background_write_bytes_per_sec: zeromesh_storage::DEFAULT_BACKGROUND_WRITE_BYTES_PER_SEC,
        }
    }
}

impl RaftSettings {
    pub(crate) fn to_config(&self) -> Result<Arc<openraft::Config>, ConsensusError> {
        let invalid = |reason: String| ConsensusError::InvalidSettings(reason);
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > MAX_SNAPSHOT_CHUNK_BYTES {
            return Err(invalid(format!("snapshot_chunk_bytes must be 1..={MAX_SNAPSHOT_CHUNK_BYTES}")));
        }
        if self.max_entries_per_append == 0 || self.max_entries_per_append > MAX_APPEND_ENTRIES_PER_MESSAGE {
            return Err(invalid(format!("max_entries_per_append must be 1..={MAX_APPEND_ENTRIES_PER_MESSAGE}")));
        }
        if self.snapshot_every_entries == 0 {
            return Err(invalid("snapshot_every_entries must be at least 1".into()));
        }
        let config = openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // The node asks for each snapshot at its own points; openraft's
            // policy only backs that up, should a request be lost.
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries.saturating_mul(2)),
            max_in_snapshot_log_to_keep: self.log_entries_kept_after_snapshot,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
            max_payload_entries: self.max_entries_per_append,
            ..Default::default()
        };
        config.validate().map(Arc::new).map_err(|e| invalid(e.to_string()))
    }
}
