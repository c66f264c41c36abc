//! The RocksDB database of one node and its snapshot folder.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use rocksdb::statistics::{StatsLevel, Ticker};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteOptions, DB};

use crate::error::StorageError;
use crate::keys::*;
use crate::snapshot::SnapshotDir;

/// One node's storage: the RocksDB database (`<dir>/db`) and the snapshot
/// folder (`<dir>/snapshots`). Cheap to clone; every clone shares the database.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<DB>,
    pub(crate) snapshots: Arc<SnapshotDir>,
    /// Kept for its statistics (fsync counts).
    options: Arc<Options>,
    dir: PathBuf,
}

/// Tells whether every handle on a store has been dropped, so the same data
/// directory may be opened again (used to restart a node in one process).
pub struct ReleaseProbe(Weak<DB>);

impl ReleaseProbe {
    pub fn is_released(&self) -> bool {
        self.0.strong_count() == 0
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`. An interrupted snapshot install
    /// found here is redone before the store is returned.
    pub fn open(dir: &Path) -> Result<Store, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_keep_log_file_num(4);
        options.set_max_open_files(512);
        options.set_max_total_wal_size(256 * 1024 * 1024);
        options.enable_statistics();
        options.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
        let descriptors = ALL_CFS.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir.join("db"), descriptors)?;
        let snapshots = SnapshotDir::open(&dir.join("snapshots"))?;
        let store =
            Store { db: Arc::new(db), snapshots: Arc::new(snapshots), options: Arc::new(options), dir: dir.to_owned() };
        store.finish_interrupted_install()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many times RocksDB has fsynced its write-ahead log since open.
    pub fn wal_syncs(&self) -> u64 {
        self.options.get_ticker_count(Ticker::WalFileSynced)
    }

    pub fn release_probe(&self) -> ReleaseProbe {
        ReleaseProbe(Arc::downgrade(&self.db))
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StorageError> {
        self.db.cf_handle(name).ok_or(StorageError::MissingColumnFamily(name))
    }

    pub(crate) fn synced() -> WriteOptions {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        options
    }
}
