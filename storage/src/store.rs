//! The RocksDB database of one node and its snapshot folder.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::statistics::{StatsLevel, Ticker};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBRecoveryMode, Env, LruCacheOptions, Options,
    WriteBufferManager, WriteOptions, DB,
};

use crate::durability::LogDurability;
use crate::error::StorageError;
use crate::heads::{Heads, MAX_CACHED_HEAD_BYTES};
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
    memory: Arc<Memory>,
    durability: Arc<LogDurability>,
    /// The heads of paths written recently (`heads.rs`).
    heads: Arc<Mutex<Heads>>,
    dir: PathBuf,
}

/// What RocksDB may hold in memory when a store is opened without a budget
/// of its own: `storage_memory_mb`'s default. Chosen so that a node under
/// sustained mixed load stays within 128 MiB in all (BENCHMARKS.md, "Soak").
pub const DEFAULT_MEMORY_BUDGET_BYTES: usize = 48 << 20;
/// The smallest budget a store accepts.
pub const MIN_MEMORY_BUDGET_BYTES: usize = 8 << 20;
/// What flushes and compactions may write per second when a store is opened
/// without a limit of its own: `storage_background_write_mb_per_sec`'s default
/// (BENCHMARKS.md, "Background writes held to a rate").
pub const DEFAULT_BACKGROUND_WRITE_BYTES_PER_SEC: u64 = 64 << 20;
/// How often the background write allowance is topped up: a flush or
/// compaction writes at most a hundredth of a second's allowance at once.
const BACKGROUND_WRITE_REFILL_MICROS: i64 = 10_000;
/// Table files are written out to the disk this many bytes at a time.
const BACKGROUND_BYTES_PER_SYNC: u64 = 256 << 10;
/// The block cache is split into shards (each with its own lock) of at least
/// this much. Each shard keeps to its own share of the budget, and what it
/// cannot evict (the memtables' charge, in 256 KiB pieces placed by hash)
/// stays over that share: with RocksDB's default shards of 512 KiB, a shard
/// that three pieces fall in is half as much again over its share, and an
/// 8 MiB budget was seen 18% over.
const MIN_CACHE_SHARD_BYTES: usize = 4 << 20;
/// The filter of the latest versions' memtable, as a share of the
/// memtable's size (charged to the budget with it): with entries of a few
/// hundred bytes, about 25 bits a key.
const MEMTABLE_FILTER_RATIO: f64 = 0.01;
/// At most 2^6 shards, RocksDB's own ceiling.
const MAX_CACHE_SHARD_BITS: u32 = 6;

/// What a store may take of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// All of RocksDB's memory that grows with data (at least
    /// [`MIN_MEMORY_BUDGET_BYTES`]).
    pub memory_bytes: usize,
    /// Bytes per second flushes and compactions may write together; 0 for no
    /// limit. The write-ahead log (every Raft entry) is never held back.
    pub background_write_bytes_per_sec: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            memory_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
            background_write_bytes_per_sec: DEFAULT_BACKGROUND_WRITE_BYTES_PER_SEC,
        }
    }
}

/// One budget for all of RocksDB's memory that grows with data: one block
/// cache shared by every column family, holding data, index and filter
/// blocks, with the memtables charged to it as well (a write buffer
/// manager); writes wait for a flush when memtables reach half of it.
struct Memory {
    budget: usize,
    cache: Cache,
    /// Held for as long as the database uses it.
    _write_buffers: WriteBufferManager,
}

/// What a store holds in memory now, against its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    pub budget_bytes: usize,
    /// The shared block cache, memtables' charge included.
    pub cache_bytes: usize,
    /// Of which memtables.
    pub memtable_bytes: usize,
}

/// How writes have waited for RocksDB since a store was opened. Both grow
/// when flushes cannot keep up with the writes: the disk is slow, the
/// background write limit is low for the load, or the memory budget is
/// small for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStalls {
    /// Time writes were slowed or stopped because flushes or compactions were
    /// behind: a column family's memtables all full and waiting for a flush,
    /// or too many level-0 files.
    pub behind_micros: u64,
    /// Writes stopped until a flush freed memory because the memtables
    /// reached their share (half) of the memory budget.
    pub memory_limit_stops: u64,
}

/// The database-wide write stall counts, as text: "Write Stall (count):
/// write-buffer-manager-limit-stops: 3\n".
const WRITE_STALL_STATS_PROPERTY: &str = "rocksdb.db-write-stall-stats";
/// Its count of writes the write buffer manager stopped.
const MEMORY_LIMIT_STOPS: &str = "write-buffer-manager-limit-stops";

/// The count named `name` in RocksDB's write stall statistics text.
fn stall_count(stats: &str, name: &str) -> Option<u64> {
    let after = &stats[stats.find(name)? + name.len()..];
    let digits = after.strip_prefix(": ")?;
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
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

/// Lines of RocksDB's own log read, from its end, for the file a corruption was found in.
const LOG_LINES_SEARCHED: usize = 200;

/// An open refused for corruption, naming the damaged files: RocksDB's
/// status often says only what was wrong, its `LOG` (written by this very
/// open) says where.
fn damaged(db_dir: &Path, error: rocksdb::Error) -> StorageError {
    if error.kind() != rocksdb::ErrorKind::Corruption {
        return StorageError::Rocks(error);
    }
    let log = std::fs::read_to_string(db_dir.join("LOG")).unwrap_or_default();
    let mut files: Vec<&str> = Vec::new();
    for line in log.lines().rev().take(LOG_LINES_SEARCHED) {
        // "[db/db_impl/db_impl_open.cc:1170] /path/000004.log: dropping 6786 bytes; Corruption: ..."
        let Some((before, _)) = line.split_once(": dropping ").filter(|_| line.contains("Corruption")) else {
            continue;
        };
        let file = before.rsplit("] ").next().unwrap_or(before);
        if !files.contains(&file) {
            files.push(file);
        }
    }
    let detail = match files.as_slice() {
        [] => error.to_string(),
        files => format!("{error}, in {}", files.join(", ")),
    };
    StorageError::Damaged { dir: db_dir.display().to_string(), detail }
}

fn last_log_index(db: &DB) -> Result<u64, StorageError> {
    let cf = db.cf_handle(CF_RAFT_LOG).ok_or(StorageError::MissingColumnFamily(CF_RAFT_LOG))?;
    match db.iterator_cf(cf, rocksdb::IteratorMode::End).next() {
        Some(item) => Ok(log_index(&item?.0).unwrap_or(0)),
        None => Ok(0),
    }
}

/// The block cache for `budget`: as many shards as fit [`MIN_CACHE_SHARD_BYTES`].
fn block_cache(budget: usize) -> Cache {
    let shards = (budget / MIN_CACHE_SHARD_BYTES).max(1);
    let mut options = LruCacheOptions::default();
    options.set_capacity(budget);
    options.set_num_shard_bits(shards.ilog2().min(MAX_CACHE_SHARD_BITS) as i32);
    Cache::new_lru_cache_opts(&options)
}

impl Store {
    /// Opens (or creates) the store in `dir` with the default limits. An
    /// interrupted snapshot install found here is redone before the store is
    /// returned.
    pub fn open(dir: &Path) -> Result<Store, StorageError> {
        Store::open_with(dir, StoreLimits::default())
    }

    /// [`Store::open`] within `limits`.
    pub fn open_with(dir: &Path, limits: StoreLimits) -> Result<Store, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let budget = limits.memory_bytes.max(MIN_MEMORY_BUDGET_BYTES);
        let cache = block_cache(budget);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(budget / 2, true, cache.clone());
        let mut options = Options::default();
        // Compactions run below the node's own threads: every node of a mesh
        // compacts at about the same entries, so on a shared or busy machine
        // they would all take the CPU from the writes at once. Flushes keep
        // the node's priority: writes wait for them at the memory budget.
        let mut env = Env::new()?;
        env.lower_thread_pool_cpu_priority();
        options.set_env(&env);
        // Table files from flushes and compactions are written out a little
        // at a time, and no faster than the limit: a flush written at the
        // disk's full speed, or a large write-back at a file's final fsync,
        // holds up the Raft log's fsyncs on the same disk meanwhile.
        options.set_bytes_per_sync(BACKGROUND_BYTES_PER_SYNC);
        if limits.background_write_bytes_per_sec > 0 {
            let rate = i64::try_from(limits.background_write_bytes_per_sec).unwrap_or(i64::MAX);
            options.set_ratelimiter(rate, BACKGROUND_WRITE_REFILL_MICROS, 10);
        }
        options.set_write_buffer_manager(&write_buffers);
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_keep_log_file_num(4);
        options.set_max_open_files(512);
        options.set_max_total_wal_size(256 * 1024 * 1024);
        // A record damaged anywhere but at the very end of the write-ahead
        // log refuses the open (naming the file): only what was written
        // after the last fsync can be torn by a crash (a follower's append
        // not yet acknowledged, a leader's proposals whose fsync had not
        // ended, which nothing has applied or acknowledged yet). The
        // default (point-in-time) would open silently without everything
        // after the damage, acknowledged Raft entries and votes included.
        options.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
        options.enable_statistics();
        options.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
        let mut tables = BlockBasedOptions::default();
        tables.set_block_cache(&cache);
        // Index and filter blocks are cached with high priority but never
        // pinned: pinned blocks of level-0 files sit outside the cache's
        // eviction, and level 0 grows to dozens of files while compactions
        // wait for the disk or the background write limit.
        tables.set_cache_index_and_filter_blocks(true);
        tables.set_cache_index_and_filter_blocks_with_high_priority(true);
        tables.set_pin_l0_filter_and_index_blocks_in_cache(false);
        // Point reads (a path's latest version before every write, an
        // agent's stored bytes) skip table files without the key; the
        // filters live in the block cache, inside the budget.
        tables.set_bloom_filter(10.0, false);
        let mut family = Options::default();
        family.set_block_based_table_factory(&tables);
        // Eight families: one memtable may not take a budget's share alone.
        family.set_write_buffer_size((budget / 8).min(64 << 20));
        let descriptors = ALL_CFS.iter().map(|name| {
            let mut options = family.clone();
            if *name == CF_MEM_LATEST {
                // Every write looks up its path's latest version first, and a
                // path written lately is found among the heads (`heads.rs`):
                // most lookups that come here are of paths the memtable does
                // not hold, whose search a filter of its keys skips.
                options.set_memtable_whole_key_filtering(true);
                options.set_memtable_prefix_bloom_ratio(MEMTABLE_FILTER_RATIO);
            }
            ColumnFamilyDescriptor::new(*name, options)
        });
        let db_dir = dir.join("db");
        let db = DB::open_cf_descriptors(&options, &db_dir, descriptors).map_err(|error| damaged(&db_dir, error))?;
        // Whatever a crash left in the write-ahead log is made durable now,
        // so the whole log as found counts as on disk.
        db.flush_wal(true)?;
        let last_index = last_log_index(&db)?;
        let snapshots = SnapshotDir::open(&dir.join("snapshots"))?;
        let store = Store {
            db: Arc::new(OpenDb { db: Some(db), closed: Arc::default() }),
            snapshots: Arc::new(snapshots),
            options: Arc::new(options),
            memory: Arc::new(Memory { budget, cache, _write_buffers: write_buffers }),
            durability: Arc::new(LogDurability::new(last_index)),
            heads: Arc::new(Mutex::new(Heads::new(MAX_CACHED_HEAD_BYTES))),
            dir: dir.to_owned(),
        };
        store.finish_interrupted_install()?;
        Ok(store)
    }

    pub(crate) fn heads(&self) -> MutexGuard<'_, Heads> {
        self.heads.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes every column family's memtable to table files now (they are
    /// otherwise written when full).
    pub fn flush(&self) -> Result<(), StorageError> {
        for name in ALL_CFS {
            self.db.flush_cf(self.cf(name)?)?;
        }
        Ok(())
    }

    /// How many times RocksDB has fsynced its write-ahead log since open.
    pub fn wal_syncs(&self) -> u64 {
        self.options.get_ticker_count(Ticker::WalFileSynced)
    }

    /// How long flushes and compactions have waited for the background
    /// write limit since open, in microseconds: when it grows about as fast
    /// as time passes, they are behind and the limit is too low for the load.
    pub fn background_write_wait_micros(&self) -> u64 {
        self.options.get_ticker_count(Ticker::RateLimiterTotalWaitMicrosWrite)
    }

    /// Bytes flushes and compactions have written through the background
    /// write limit since open (none without a limit).
    pub fn background_bytes_limited(&self) -> u64 {
        self.options.get_ticker_count(Ticker::RateLimiterBytesWrite)
    }

    /// How writes have waited for RocksDB's flushes and compactions since
    /// open.
    pub fn write_stalls(&self) -> WriteStalls {
        let stall_stats = self.db.property_value(WRITE_STALL_STATS_PROPERTY).ok().flatten().unwrap_or_default();
        WriteStalls {
            behind_micros: self.options.get_ticker_count(Ticker::StallMicros),
            memory_limit_stops: stall_count(&stall_stats, MEMORY_LIMIT_STOPS).unwrap_or(0),
        }
    }

    /// RocksDB's memory now, against the budget. Memtables are counted
    /// from each column family's own figure, not the budget's bookkeeping.
    pub fn memory_usage(&self) -> MemoryUsage {
        let memtable_bytes = ALL_CFS
            .iter()
            .filter_map(|name| self.cf(name).ok())
            .filter_map(|cf| self.db.property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables").ok().flatten())
            .sum::<u64>() as usize;
        MemoryUsage { budget_bytes: self.memory.budget, cache_bytes: self.memory.cache.get_usage(), memtable_bytes }
    }

    /// How far the Raft log is on disk (see [`LogDurability`]).
    pub fn log_durability(&self) -> &Arc<LogDurability> {
        &self.durability
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_counts_are_read_from_rocksdb_s_text() {
        let stats = "Write Stall (count): write-buffer-manager-limit-stops: 37\n";
        assert_eq!(stall_count(stats, MEMORY_LIMIT_STOPS), Some(37));
        let two = "Write Stall (count): a-stops: 1, write-buffer-manager-limit-stops: 0\n";
        assert_eq!(stall_count(two, MEMORY_LIMIT_STOPS), Some(0));
        assert_eq!(stall_count("", MEMORY_LIMIT_STOPS), None);
        assert_eq!(stall_count("write-buffer-manager-limit-stops: x", MEMORY_LIMIT_STOPS), None);
    }

    /// The nice value of the thread whose `/proc` folder is `dir`.
    fn nice_of(dir: &std::path::Path) -> Option<i32> {
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // After the name's closing parenthesis come fields 3 (state)
        // onwards; the nice value is field 19.
        stat[stat.rfind(')')? + 2..].split(' ').nth(16)?.parse().ok()
    }

    /// The nice value of each of this process's threads named `name`.
    fn nice_of_threads(name: &str) -> Vec<i32> {
        let tasks = std::fs::read_dir("/proc/self/task").expect("this process's threads");
        tasks
            .filter_map(|task| {
                let dir = task.ok()?.path();
                let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                (comm.trim_end() == name).then(|| nice_of(&dir))?
            })
            .collect()
    }

    #[test]
    fn compactions_run_at_the_lowest_cpu_priority_and_flushes_at_the_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cf = store.cf(CF_SM_META).unwrap();
        for value in [b"one", b"two"] {
            store.db.put_cf(cf, b"key", value).unwrap();
            store.flush().unwrap();
        }
        store.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        let own = nice_of(std::path::Path::new("/proc/thread-self")).expect("this thread's nice value");
        let compactors = nice_of_threads("rocksdb:low");
        assert!(!compactors.is_empty(), "no thread ran the compaction");
        assert!(compactors.iter().all(|nice| *nice == 19), "compaction threads' nice values: {compactors:?}");
        let flushers = nice_of_threads("rocksdb:high");
        assert!(!flushers.is_empty(), "no thread ran the flushes");
        assert!(flushers.iter().all(|nice| *nice == own), "flush threads' nice values: {flushers:?}, own {own}");
    }
}
