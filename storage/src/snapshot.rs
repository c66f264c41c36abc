//! Snapshot files: built from a consistent RocksDB view, streamed to and from
//! disk record by record, verified whole before an install changes anything.
//!
//! Layout: the magic `ZMSNAP02`; a length-prefixed header; records of
//! `table u8 | key_len u32 | key | value_len u32 | value`; an end mark `0xFF`,
//! the record count (u64) and a CRC-32 of every byte before it. Integers are
//! big-endian. Version 02 added the trace nodes (table 4).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use zeromesh_protocol::limits::{MAX_PATH_BYTES, MAX_SNAPSHOT_HEADER_BYTES, MAX_SNAPSHOT_RECORD_BYTES};
use zeromesh_protocol::MemoryPath;

use crate::error::{decode, encode, StorageError};
use crate::keys::*;
use crate::snapshot_file::SnapshotFile;
use crate::store::Store;
use crate::tables::StoredVersion;

const MAGIC: &[u8; 8] = b"ZMSNAP02";
const END_MARK: u8 = 0xFF;
const CURRENT_FILE: &str = "current.snap";
/// Records and bytes per RocksDB write batch while installing.
const INSTALL_BATCH_RECORDS: usize = 4096;
const INSTALL_BATCH_BYTES: usize = 8 * 1024 * 1024;
const IO_BUFFER_BYTES: usize = 256 * 1024;
/// A snapshot being built is made durable this many bytes at a time.
const SNAPSHOT_SYNC_BYTES: u64 = 1 << 20;

/// What a snapshot file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub snapshot_id: String,
    /// Index of the last log entry the snapshot covers: a newer snapshot has
    /// a larger one.
    pub last_index: u64,
    /// The consensus layer's encoded applied state at that point.
    pub applied: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotStats {
    pub records: u64,
    pub bytes: u64,
}

pub(crate) struct SnapshotDir {
    dir: PathBuf,
    /// The header of `current.snap`; the lock also serialises replacing it.
    current: Mutex<Option<SnapshotHeader>>,
    next_file_number: AtomicU64,
}

impl SnapshotDir {
    pub(crate) fn open(dir: &Path) -> Result<SnapshotDir, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let path = entry.map_err(|e| StorageError::io(dir, e))?.path();
            if path.extension().is_some_and(|ext| ext == "part" || ext == "tmp") {
                std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
            }
        }
        let current_path = dir.join(CURRENT_FILE);
        let current = if current_path.exists() { Some(verify_snapshot_file(&current_path)?.0) } else { None };
        Ok(SnapshotDir { dir: dir.to_owned(), current: Mutex::new(current), next_file_number: AtomicU64::new(1) })
    }

    fn scratch_path(&self, extension: &str) -> PathBuf {
        let number = self.next_file_number.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{number}.{extension}"))
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT_FILE)
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<SnapshotHeader>> {
        // A panic while holding the lock leaves the header as it was before
        // the rename it guarded, which is still a valid description.
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `path` the current snapshot (rename, then fsync the folder).
    fn promote(
        &self,
        current: &mut Option<SnapshotHeader>,
        path: &Path,
        header: SnapshotHeader,
    ) -> Result<(), StorageError> {
        let target = self.current_path();
        std::fs::rename(path, &target).map_err(|e| StorageError::io(&target, e))?;
        File::open(&self.dir).and_then(|dir| dir.sync_all()).map_err(|e| StorageError::io(&self.dir, e))?;
        *current = Some(header);
        Ok(())
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R: Read> {
    inner: R,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

fn table_tag(table: &str) -> u8 {
    match table {
        CF_MEM_LATEST => 1,
        CF_MEM_HISTORY => 2,
        CF_PLUGIN_REGISTRY => 3,
        CF_TRACE_NODES => 4,
        other => unreachable!("{other} is not a state table"),
    }
}

fn tag_table(tag: u8) -> Option<&'static str> {
    match tag {
        1 => Some(CF_MEM_LATEST),
        2 => Some(CF_MEM_HISTORY),
        3 => Some(CF_PLUGIN_REGISTRY),
        4 => Some(CF_TRACE_NODES),
        _ => None,
    }
}

/// Reads records from a snapshot file (or any reader of one; `path` names
/// it in errors), checking every length against the limits before
/// allocating.
struct RecordReader<R: Read> {
    reader: HashingReader<R>,
    path: PathBuf,
}

enum Item {
    Record { table: &'static str, key: Vec<u8>, value: Vec<u8> },
    End { count: u64 },
}

impl RecordReader<BufReader<File>> {
    fn open(path: &Path) -> Result<(Self, SnapshotHeader), StorageError> {
        let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
        RecordReader::start(BufReader::with_capacity(IO_BUFFER_BYTES, file), path)
    }
}

impl<R: Read> RecordReader<R> {
    /// Reads and checks the magic and the header.
    fn start(inner: R, path: &Path) -> Result<(Self, SnapshotHeader), StorageError> {
        let mut reader = RecordReader {
            reader: HashingReader { inner, hasher: crc32fast::Hasher::new(), bytes: 0 },
            path: path.to_owned(),
        };
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(reader.bad("it does not start with the zeromesh snapshot magic"));
        }
        let header_len = reader.read_u32()? as usize;
        if header_len > MAX_SNAPSHOT_HEADER_BYTES {
            return Err(reader.bad(format!("header of {header_len} bytes exceeds {MAX_SNAPSHOT_HEADER_BYTES}")));
        }
        let header_bytes = reader.read_vec(header_len)?;
        let header: SnapshotHeader = decode("snapshot header", &header_bytes)?;
        Ok((reader, header))
    }

    fn bad(&self, reason: impl Into<String>) -> StorageError {
        StorageError::BadSnapshot { path: self.path.display().to_string(), reason: reason.into() }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), StorageError> {
        self.reader.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.bad("it ends before its end mark (truncated)")
            } else {
                StorageError::io(&self.path, e)
            }
        })
    }

    fn read_u32(&mut self) -> Result<u32, StorageError> {
        let mut bytes = [0u8; 4];
        self.read_exact(&mut bytes)?;
        Ok(u32::from_be_bytes(bytes))
    }

    fn read_vec(&mut self, len: usize) -> Result<Vec<u8>, StorageError> {
        let mut bytes = vec![0u8; len];
        self.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    fn next(&mut self) -> Result<Item, StorageError> {
        let mut tag = [0u8; 1];
        self.read_exact(&mut tag)?;
        if tag[0] == END_MARK {
            let mut count = [0u8; 8];
            self.read_exact(&mut count)?;
            return Ok(Item::End { count: u64::from_be_bytes(count) });
        }
        let table = tag_table(tag[0]).ok_or_else(|| self.bad(format!("unknown table tag {}", tag[0])))?;
        let key_len = self.read_u32()? as usize;
        if key_len > MAX_PATH_BYTES + 9 {
            return Err(self.bad(format!("a key of {key_len} bytes exceeds {} bytes", MAX_PATH_BYTES + 9)));
        }
        let key = self.read_vec(key_len)?;
        let value_len = self.read_u32()? as usize;
        if value_len > MAX_SNAPSHOT_RECORD_BYTES {
            return Err(self.bad(format!("a record of {value_len} bytes exceeds {MAX_SNAPSHOT_RECORD_BYTES} bytes")));
        }
        let value = self.read_vec(value_len)?;
        Ok(Item::Record { table, key, value })
    }

    /// Reads the trailing checksum and checks it, and that nothing follows.
    /// Returns the bytes read.
    fn finish(mut self) -> Result<u64, StorageError> {
        let computed = self.reader.hasher.clone().finalize();
        let mut stored = [0u8; 4];
        self.reader.inner.read_exact(&mut stored).map_err(|_| self.bad("its checksum is missing"))?;
        if u32::from_be_bytes(stored) != computed {
            return Err(self.bad("its checksum does not match its contents"));
        }
        let mut extra = [0u8; 1];
        match self.reader.inner.read(&mut extra) {
            Ok(0) => Ok(self.reader.bytes + 4),
            Ok(_) => Err(self.bad("bytes follow its checksum")),
            Err(e) => Err(StorageError::io(&self.path, e)),
        }
    }
}

fn check_record<R: Read>(reader: &RecordReader<R>, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
    if table == CF_PLUGIN_REGISTRY {
        return crate::registry::check_registry_record(key, value)
            .map_err(|reason| reader.bad(format!("a plugin registry record is invalid: {reason}")));
    }
    if table == CF_TRACE_NODES {
        return crate::trace::check_trace_record(key, value)
            .map_err(|reason| reader.bad(format!("a trace record is invalid: {reason}")));
    }
    let path_bytes = if table == CF_MEM_LATEST {
        key
    } else {
        let path_len = key.len().checked_sub(9).ok_or_else(|| reader.bad("a history key is too short"))?;
        if key[path_len] != 0 {
            return Err(reader.bad("a history key lacks its separator"));
        }
        &key[..path_len]
    };
    let path = std::str::from_utf8(path_bytes).map_err(|_| reader.bad("a path is not UTF-8"))?;
    MemoryPath::parse(path).map_err(|e| reader.bad(format!("a stored path is invalid: {e}")))?;
    let stored: StoredVersion = decode("snapshot record", value)?;
    if table == CF_MEM_HISTORY && history_version(key) != Some(stored.version) {
        return Err(reader.bad("a history key and its record disagree on the version"));
    }
    Ok(())
}

/// Reads a whole snapshot file and checks its structure, every record, the
/// record count and the checksum. Returns its header and size.
fn verify_snapshot_file(path: &Path) -> Result<(SnapshotHeader, SnapshotStats), StorageError> {
    let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
    verify_snapshot(BufReader::with_capacity(IO_BUFFER_BYTES, file), path)
}

/// Reads a whole snapshot from `source` (named `path` in errors) and checks
/// it as [`Store::install_snapshot`] does before an install changes
/// anything: structure, every record, the record count and the checksum.
/// Returns its header and size.
pub fn verify_snapshot(source: impl Read, path: &Path) -> Result<(SnapshotHeader, SnapshotStats), StorageError> {
    let (mut reader, header) = RecordReader::start(source, path)?;
    let mut records = 0u64;
    loop {
        match reader.next()? {
            Item::Record { table, key, value } => {
                check_record(&reader, table, &key, &value)?;
                records += 1;
            }
            Item::End { count } => {
                if count != records {
                    return Err(reader.bad(format!("it says {count} records but holds {records}")));
                }
                break;
            }
        }
    }
    let bytes = reader.finish()?;
    Ok((header, SnapshotStats { records, bytes }))
}

impl Store {
    /// Builds a snapshot from one consistent RocksDB view and makes it the
    /// current snapshot unless a newer one is already current.
    ///
    /// `describe` receives the applied state of that view and returns the
    /// snapshot id and the last log index it covers.
    pub fn build_snapshot<F>(&self, describe: F) -> Result<(SnapshotHeader, SnapshotStats), StorageError>
    where
        F: FnOnce(Option<&[u8]>) -> Result<(String, u64), StorageError>,
    {
        let view = self.db.snapshot();
        let applied = view.get_cf(self.cf(CF_SM_META)?, KEY_APPLIED)?;
        let (snapshot_id, last_index) = describe(applied.as_deref())?;
        let header = SnapshotHeader { snapshot_id, last_index, applied: applied.unwrap_or_default() };

        let path = self.snapshots.scratch_path("tmp");
        let file = File::create(&path).map_err(|e| StorageError::io(&path, e))?;
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(IO_BUFFER_BYTES, file),
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
        };
        let io = |e| StorageError::io(&path, e);
        let header_bytes = encode("snapshot header", &header)?;
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(&(header_bytes.len() as u32).to_be_bytes()).map_err(io)?;
        out.write_all(&header_bytes).map_err(io)?;
        let (mut records, mut synced) = (0u64, 0u64);
        for table in STATE_TABLES {
            for item in view.iterator_cf(self.cf(table)?, IteratorMode::Start) {
                let (key, value) = item?;
                out.write_all(&[table_tag(table)]).map_err(io)?;
                out.write_all(&(key.len() as u32).to_be_bytes()).map_err(io)?;
                out.write_all(&key).map_err(io)?;
                out.write_all(&(value.len() as u32).to_be_bytes()).map_err(io)?;
                out.write_all(&value).map_err(io)?;
                records += 1;
                if out.bytes >= synced + SNAPSHOT_SYNC_BYTES {
                    // Written out a piece at a time: one large write-back at
                    // the end would hold up every fsync on the disk meanwhile,
                    // the Raft log's included.
                    out.inner.flush().map_err(io)?;
                    out.inner.get_ref().sync_data().map_err(io)?;
                    synced = out.bytes;
                }
            }
        }
        out.write_all(&[END_MARK]).map_err(io)?;
        out.write_all(&records.to_be_bytes()).map_err(io)?;
        let checksum = out.hasher.clone().finalize();
        let mut inner = out.inner;
        inner.write_all(&checksum.to_be_bytes()).map_err(io)?;
        let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        let stats = SnapshotStats { records, bytes: out.bytes + 4 };
        drop(file);

        let mut current = self.snapshots.lock_current();
        if current.as_ref().is_some_and(|existing| existing.last_index > header.last_index) {
            // An install overtook this build; the newer snapshot stays.
            std::fs::remove_file(&path).map_err(io)?;
        } else {
            self.snapshots.promote(&mut current, &path, header.clone())?;
        }
        Ok((header, stats))
    }

    /// The current snapshot's header and an open handle on its file.
    pub fn current_snapshot(&self) -> Result<Option<(SnapshotHeader, SnapshotFile)>, StorageError> {
        let current = self.snapshots.lock_current();
        let Some(header) = current.as_ref() else { return Ok(None) };
        let path = self.snapshots.current_path();
        let file = File::open(&path).map_err(|e| StorageError::io(&path, e))?;
        Ok(Some((header.clone(), SnapshotFile::new(path, file))))
    }

    /// The current snapshot's header and the file, opened for reading (a
    /// snapshot replacing it later leaves what this handle reads intact).
    pub fn current_snapshot_file(&self) -> Result<Option<(SnapshotHeader, File)>, StorageError> {
        let current = self.snapshots.lock_current();
        let Some(header) = current.as_ref() else { return Ok(None) };
        let path = self.snapshots.current_path();
        let file = File::open(&path).map_err(|e| StorageError::io(&path, e))?;
        Ok(Some((header.clone(), file)))
    }

    /// A fresh file for receiving a snapshot in chunks. Only one snapshot is
    /// received at a time, so earlier unfinished ones are removed.
    pub fn begin_receiving_snapshot(&self) -> Result<SnapshotFile, StorageError> {
        let dir = &self.snapshots.dir;
        for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let path = entry.map_err(|e| StorageError::io(dir, e))?.path();
            if path.extension().is_some_and(|ext| ext == "part") {
                std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
            }
        }
        let path = self.snapshots.scratch_path("part");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        Ok(SnapshotFile::new(path, file))
    }

    /// Reads only the header of the snapshot file at `path` (the whole file
    /// is verified by [`Store::install_snapshot`]).
    pub fn snapshot_header(&self, path: &Path) -> Result<SnapshotHeader, StorageError> {
        Ok(RecordReader::open(path)?.1)
    }

    /// Verifies the received snapshot file at `received` and replaces the
    /// whole state with it. A file that fails verification changes nothing.
    /// An install cut short by a crash is finished when the store reopens.
    pub fn install_snapshot(
        &self,
        received: &Path,
        expected_id: &str,
    ) -> Result<(SnapshotHeader, SnapshotStats), StorageError> {
        let (header, stats) = verify_snapshot_file(received)?;
        if header.snapshot_id != expected_id {
            return Err(StorageError::BadSnapshot {
                path: received.display().to_string(),
                reason: format!("it holds snapshot {:?}, not the announced {expected_id:?}", header.snapshot_id),
            });
        }
        File::open(received).and_then(|file| file.sync_all()).map_err(|e| StorageError::io(received, e))?;
        let mut current = self.snapshots.lock_current();
        self.db.put_cf_opt(self.cf(CF_SM_META)?, KEY_INSTALLING, b"1", &Store::synced())?;
        self.snapshots.promote(&mut current, received, header.clone())?;
        self.load_current_snapshot()?;
        Ok((header, stats))
    }

    /// Redoes an install that a crash interrupted (see [`Store::install_snapshot`]).
    pub(crate) fn finish_interrupted_install(&self) -> Result<(), StorageError> {
        if self.db.get_pinned_cf(self.cf(CF_SM_META)?, KEY_INSTALLING)?.is_none() {
            return Ok(());
        }
        tracing::warn!(dir = %self.dir().display(), "finishing a snapshot install interrupted by a crash");
        let _current = self.snapshots.lock_current();
        self.load_current_snapshot()
    }

    /// Clears the state tables and loads `current.snap` into them in bounded
    /// batches; the last batch sets the applied state and clears the install
    /// marker, and is fsynced.
    fn load_current_snapshot(&self) -> Result<(), StorageError> {
        let path = self.snapshots.current_path();
        let (mut reader, header) = RecordReader::open(&path)?;
        // Whatever the install leaves, the heads of before are not the state.
        self.heads().clear();
        let mut batch = WriteBatch::default();
        for table in STATE_TABLES {
            batch.delete_range_cf(self.cf(table)?, &[][..], &[0xFFu8][..]);
        }
        let mut batch_bytes = 0usize;
        while let Item::Record { table, key, value } = reader.next()? {
            batch_bytes += key.len() + value.len();
            batch.put_cf(self.cf(table)?, key, value);
            if batch.len() >= INSTALL_BATCH_RECORDS || batch_bytes >= INSTALL_BATCH_BYTES {
                self.db.write(std::mem::take(&mut batch))?;
                batch_bytes = 0;
            }
        }
        reader.finish()?;
        let meta = self.cf(CF_SM_META)?;
        batch.put_cf(meta, KEY_APPLIED, &header.applied);
        batch.delete_cf(meta, KEY_INSTALLING);
        self.db.write_opt(batch, &Store::synced())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoredVersion;

    fn fill(store: &Store, paths: std::ops::Range<u32>) {
        let mut batch = store.state_batch();
        for i in paths {
            let path = MemoryPath::parse(&format!("agent/p{i}")).unwrap();
            let stored = StoredVersion {
                version: 1,
                written_at_ms: 0,
                log_index: u64::from(i),
                deleted: false,
                value: vec![i as u8; 10],
                content_type: String::new(),
                tags: vec![],
            };
            batch.put_version(&path, &stored).unwrap();
        }
        batch.set_applied_state(b"applied-42").unwrap();
        batch.commit().unwrap();
    }

    fn build(store: &Store, last_index: u64) -> SnapshotHeader {
        store.build_snapshot(|_| Ok((format!("snap-{last_index}"), last_index))).unwrap().0
    }

    fn copy_current_to(store: &Store, target: &Store) -> PathBuf {
        let received = target.snapshots.scratch_path("part");
        std::fs::copy(store.snapshots.current_path(), &received).unwrap();
        received
    }

    #[test]
    fn a_snapshot_round_trips_through_a_file() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (source, target) = (Store::open(a.path()).unwrap(), Store::open(b.path()).unwrap());
        fill(&source, 0..500);
        fill(&target, 1000..1010);
        let header = build(&source, 42);
        let received = copy_current_to(&source, &target);
        let (installed, stats) = target.install_snapshot(&received, &header.snapshot_id).unwrap();
        assert_eq!(installed, header);
        assert_eq!(stats.records, 1000);
        assert_eq!(source.state_records(10_000).unwrap(), target.state_records(10_000).unwrap());
        assert_eq!(target.applied_state().unwrap().as_deref(), Some(&b"applied-42"[..]));
    }

    #[test]
    fn a_tampered_or_truncated_snapshot_is_refused_and_changes_nothing() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (source, target) = (Store::open(a.path()).unwrap(), Store::open(b.path()).unwrap());
        fill(&source, 0..50);
        fill(&target, 1000..1010);
        let before = target.state_records(10_000).unwrap();
        let header = build(&source, 7);

        let flipped = copy_current_to(&source, &target);
        let mut bytes = std::fs::read(&flipped).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&flipped, &bytes).unwrap();
        let error = target.install_snapshot(&flipped, &header.snapshot_id).unwrap_err();
        assert!(matches!(error, StorageError::BadSnapshot { .. } | StorageError::Decode { .. }), "{error}");

        let truncated = copy_current_to(&source, &target);
        let bytes = std::fs::read(&truncated).unwrap();
        std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
        let error = target.install_snapshot(&truncated, &header.snapshot_id).unwrap_err();
        assert!(error.to_string().contains("truncated") || error.to_string().contains("checksum"), "{error}");

        let wrong_id = copy_current_to(&source, &target);
        assert!(target.install_snapshot(&wrong_id, "another-snapshot").is_err());

        assert_eq!(target.state_records(10_000).unwrap(), before, "a refused snapshot changes nothing");
    }

    #[test]
    fn an_interrupted_install_is_finished_when_the_store_reopens() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = Store::open(a.path()).unwrap();
        fill(&source, 0..100);
        let header = build(&source, 9);
        {
            let target = Store::open(b.path()).unwrap();
            fill(&target, 1000..1010);
            let received = copy_current_to(&source, &target);
            // What a crash between the marker and the last batch leaves: the
            // file promoted, the marker set, the tables half replaced.
            let mut current = target.snapshots.lock_current();
            target.db.put_cf_opt(target.cf(CF_SM_META).unwrap(), KEY_INSTALLING, b"1", &Store::synced()).unwrap();
            target.snapshots.promote(&mut current, &received, header.clone()).unwrap();
            drop(current);
            fill(&target, 2000..2005);
        }
        let target = Store::open(b.path()).unwrap();
        assert_eq!(source.state_records(10_000).unwrap(), target.state_records(10_000).unwrap());
        assert_eq!(target.applied_state().unwrap().as_deref(), Some(&b"applied-42"[..]));
    }

    #[test]
    fn an_older_build_does_not_replace_a_newer_current_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fill(&store, 0..5);
        build(&store, 20);
        build(&store, 10);
        let (current, _) = store.current_snapshot().unwrap().unwrap();
        assert_eq!(current.last_index, 20);
    }
}
