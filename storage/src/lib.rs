//! RocksDB storage for a zeromesh node: the Raft log store (openraft storage
//! v2; a follower's append is fsynced before it is reported durable, a
//! leader's own proposals are fsynced in the background and nothing is
//! applied or announced committed past what is on disk), the state machine's
//! column families, and snapshot files that are written, sent and installed
//! as streams, never as one buffer.
//!
//! The replicated logic itself (what a command does) lives in
//! `zeromesh-consensus`; this crate stores what it is told and reads it back.

mod agreements;
mod blocking;
mod durability;
mod error;
mod heads;
mod keys;
mod log_store;
mod recent;
mod registry;
mod snapshot;
mod snapshot_file;
mod store;
mod tables;
mod trace;
mod usage;

pub use blocking::run_blocking;
pub use durability::LogDurability;
pub use error::StorageError;
pub use log_store::LogStore;
pub use snapshot::{verify_snapshot, SnapshotHeader, SnapshotStats};
pub use snapshot_file::SnapshotFile;
pub use store::{
    MemoryUsage, ReleaseProbe, Store, StoreLimits, WriteStalls, DEFAULT_BACKGROUND_WRITE_BYTES_PER_SEC,
    DEFAULT_MEMORY_BUDGET_BYTES, MIN_MEMORY_BUDGET_BYTES,
};
pub use tables::{Head, HistoryPage, ListPage, StateBatch, StoredVersion};
pub use usage::{UsageWindow, OVERFLOW_ORDINAL};
