//! The RocksDB database of one node and its snapshot folder.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rocksdb::statistics::{StatsLevel, Ticker};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteOptions, DB};

use crate::error::StorageError;
use crate::keys::*;
use crate::snapshot::SnapshotDir;

/// One node's storage: the RocksDB database (`<dir>/db`) and the snapshot
/// folder (`<dir>/snapshots`). Cheap to clone; every clone shares the database.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<OpenDb>,
    pub(crate) snapshots: Arc<SnapshotDir>,
    /// Kept for its statistics (fsync counts).
    options: Arc<Options>,
    dir: PathBuf,
}

/// The open database. When the last handle drops it, RocksDB is closed
/// (its files and its lock released) before `closed` is set: the last
/// handle's count reaches zero before the database's own drop has run.
pub(crate) struct OpenDb {
    db: Option<DB>,
    closed: Arc<AtomicBool>,
}

impl std::ops::Deref for OpenDb {
    type Target = DB;

    fn deref(&self) -> &DB {
        self.db.as_ref().expect("the database is open until its last handle drops")
    }
}

impl Drop for OpenDb {
    fn drop(&mut self) {
        drop(self.db.take());
        self.closed.store(true, Ordering::Release);
    }
}

/// Tells whether every handle on a store has been dropped and the database
/// closed, so the same data directory may be opened again (used to restart
/// a node in one process).
pub struct ReleaseProbe(Arc<AtomicBool>);

impl ReleaseProbe {
    pub fn is_released(&self) -> bool {
        self.0.load(Ordering::Acquire)
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
        let store = Store {
            db: Arc::new(OpenDb { db: Some(db), closed: Arc::default() }),
            snapshots: Arc::new(snapshots),
            options: Arc::new(options),
            dir: dir.to_owned(),
        };
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
        ReleaseProbe(self.db.closed.clone())
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
