//! Backups: the whole replicated state at one log index (a snapshot file:
//! consistent, one RocksDB view, and checksummed), made fresh on request
//! and read from an open handle, so a newer snapshot replacing it meanwhile
//! changes nothing; and the plugin modules the node holds, which are not
//! replicated (nodes fetch them from each other) but which a new cluster
//! has no one to fetch from. A restore makes a new data directory from one:
//! the state at that index, with a membership of one member, the restoring
//! node, which then elects itself and goes on from the next index; nodes
//! join it as they join any cluster.
//!
//! A backup file: the magic `ZMBACK01`; the snapshot's length (u64) and the
//! snapshot file; the number of modules (u32); per module its SHA-256, its
//! length (u32) and its bytes. Integers are big-endian.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::{Membership, StoredMembership, Vote};
use zeromesh_protocol::limits::{MAX_INSTALLED_PLUGINS, MAX_PLUGIN_PACKAGE_BYTES};
use zeromesh_protocol::{MemberInfo, NodeId};
use zeromesh_storage::{LogStore, SnapshotHeader, Store};

use crate::applied::AppliedState;
use crate::{ConsensusError, ConsensusNode, TypeConfig};

const MAGIC: &[u8; 8] = b"ZMBACK01";

/// What a backup holds, and where to read it.
#[derive(Debug)]
pub struct Backup {
    pub header: SnapshotHeader,
    /// The last log index the state includes.
    pub log_index: u64,
    /// The snapshot file, open: its size is `snapshot_bytes`.
    pub file: std::fs::File,
    pub snapshot_bytes: u64,
    /// The modules this node holds, with their sizes, to be read with
    /// [`ConsensusNode::module`] as they are sent.
    pub modules: Vec<([u8; 32], u64)>,
    /// Installed plugins whose module this node does not hold (not fetched
    /// yet): a backup from another node has them.
    pub modules_missing: usize,
}

impl Backup {
    /// What comes before the snapshot file.
    pub fn prefix(&self) -> Vec<u8> {
        [MAGIC.as_slice(), &self.snapshot_bytes.to_be_bytes()].concat()
    }

    /// What comes between the snapshot file and the first module.
    pub fn modules_prefix(&self) -> Vec<u8> {
        (self.modules.len() as u32).to_be_bytes().to_vec()
    }

    /// What comes before module `sha256`'s bytes.
    pub fn module_prefix(sha256: &[u8; 32], len: u64) -> Vec<u8> {
        [sha256.as_slice(), &(len as u32).to_be_bytes()].concat()
    }

    /// The backup file's whole size.
    pub fn bytes(&self) -> u64 {
        let modules: u64 = self.modules.iter().map(|(_, len)| 36 + len).sum();
        16 + self.snapshot_bytes + 4 + modules
    }
}

/// What a backup file holds, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBackup {
    /// The last log index its state includes.
    pub log_index: u64,
    pub records: u64,
    pub modules: usize,
    pub bytes: u64,
}

/// What a restore installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup's last log index: the new cluster goes on from the next.
    pub log_index: u64,
    pub records: u64,
    pub modules: usize,
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> ConsensusError {
    ConsensusError::Raft(format!("backup {} is invalid: {reason}", path.display()))
}

fn read_array<const N: usize>(reader: &mut impl Read, path: &Path, what: &str) -> Result<[u8; N], ConsensusError> {
    let mut bytes = [0u8; N];
    reader.read_exact(&mut bytes).map_err(|_| bad(path, format!("it ends before {what} (truncated)")))?;
    Ok(bytes)
}

/// Reads a backup file's head: its snapshot's length.
fn read_prefix(reader: &mut impl Read, path: &Path) -> Result<u64, ConsensusError> {
    if &read_array::<8>(reader, path, "its magic")? != MAGIC {
        return Err(bad(path, "it does not start with the zeromesh backup magic"));
    }
    Ok(u64::from_be_bytes(read_array(reader, path, "the snapshot's length")?))
}

/// Reads the modules after the snapshot, each checked against its SHA-256,
/// handing each to `keep`; then checks that nothing follows.
fn read_modules(
    reader: &mut impl Read,
    path: &Path,
    mut keep: impl FnMut([u8; 32], Vec<u8>) -> Result<(), ConsensusError>,
) -> Result<usize, ConsensusError> {
    use sha2::Digest;
    let count = u32::from_be_bytes(read_array(reader, path, "the module count")?) as usize;
    if count > MAX_INSTALLED_PLUGINS {
        return Err(bad(path, format!("it says {count} modules; at most {MAX_INSTALLED_PLUGINS} are installed")));
    }
    for _ in 0..count {
        let sha256: [u8; 32] = read_array(reader, path, "a module's hash")?;
        let len = u32::from_be_bytes(read_array(reader, path, "a module's length")?) as usize;
        if len > MAX_PLUGIN_PACKAGE_BYTES {
            return Err(bad(path, format!("a module of {len} bytes exceeds {MAX_PLUGIN_PACKAGE_BYTES}")));
        }
        let mut module = vec![0u8; len];
        reader.read_exact(&mut module).map_err(|_| bad(path, "it ends inside a module (truncated)"))?;
        if <[u8; 32]>::from(sha2::Sha256::digest(&module)) != sha256 {
            return Err(bad(path, format!("module {} does not hash to its name", hex::encode(sha256))));
        }
        keep(sha256, module)?;
    }
    let mut extra = [0u8; 1];
    match reader.read(&mut extra) {
        Ok(0) => Ok(count),
        Ok(_) => Err(bad(path, "bytes follow its last module")),
        Err(error) => Err(bad(path, error)),
    }
}

/// Reads a whole backup file from `source` (named `path` in errors) and
/// checks it as a restore would before writing anything: the snapshot's
/// structure, records, checksum and applied state, and every module's hash.
pub fn verify_backup(source: impl Read, path: &Path) -> Result<VerifiedBackup, ConsensusError> {
    let mut reader = std::io::BufReader::new(source);
    let snapshot_bytes = read_prefix(&mut reader, path)?;
    let (meta, stats) = crate::check_snapshot((&mut reader).take(snapshot_bytes), path)?;
    let mut module_bytes = 0u64;
    let modules = read_modules(&mut reader, path, |_, module| {
        module_bytes += 36 + module.len() as u64;
        Ok(())
    })?;
    Ok(VerifiedBackup {
        log_index: meta.last_log_id.map_or(0, |log_id| log_id.index),
        records: stats.records,
        modules,
        bytes: 16 + stats.bytes + 4 + module_bytes,
    })
}

impl ConsensusNode {
    /// A snapshot taken now, covering at least every entry this node had
    /// applied when asked, opened for reading.
    pub async fn backup(&self, timeout: Duration) -> Result<Backup, ConsensusError> {
        let applied = self.cluster_view().applied_index.unwrap_or(0);
        self.raft().trigger().snapshot().await.map_err(|error| ConsensusError::Raft(error.to_string()))?;
        self.wait_for("a snapshot of everything applied", timeout, |view| {
            view.snapshot_index.is_some_and(|index| index >= applied)
        })
        .await?;
        let store = self.store().clone();
        let (header, file) = tokio::task::spawn_blocking(move || store.current_snapshot_file())
            .await
            .map_err(|error| ConsensusError::Raft(format!("opening the snapshot panicked: {error}")))??
            .ok_or_else(|| ConsensusError::Raft("the node has no snapshot after taking one".into()))?;
        let snapshot_bytes = file.metadata().map_err(|error| ConsensusError::Raft(error.to_string()))?.len();
        let log_index = crate::state_machine::snapshot_log_index(&header)?;
        let mut modules = Vec::new();
        let mut modules_missing = 0;
        for plugin in self.installed_plugins().await? {
            match self.module(plugin.module_sha256).await? {
                Some(module) => modules.push((plugin.module_sha256, module.len() as u64)),
                None => modules_missing += 1,
            }
        }
        modules.sort_unstable();
        modules.dedup();
        Ok(Backup { header, log_index, file, snapshot_bytes, modules, modules_missing })
    }
}

/// Makes `dir`, which must not hold a store, the store of a new cluster
/// whose one member is `id` at `info`, holding the state and the modules of
/// the backup file `backup` (verified whole first; nothing is written if it
/// fails).
pub async fn restore(dir: &Path, backup: &Path, id: NodeId, info: MemberInfo) -> Result<Restored, ConsensusError> {
    let invalid = |reason: String| ConsensusError::Raft(reason);
    if dir.join("CURRENT").exists() {
        return Err(invalid(format!("{} already holds a store; restore into a new data directory", dir.display())));
    }
    let file = std::fs::File::open(backup).map_err(|error| invalid(format!("{}: {error}", backup.display())))?;
    verify_backup(file, backup)?;

    // One pass over the file: the snapshot is copied where a received one
    // goes, verified again and installed; the modules are kept as if
    // fetched from a peer.
    let (dir, backup) = (dir.to_owned(), backup.to_owned());
    let (store, last, records, modules) = tokio::task::spawn_blocking(move || {
        let store = Store::open(&dir)?;
        let io = |error: std::io::Error| invalid(format!("{}: {error}", backup.display()));
        let mut reader = std::io::BufReader::new(std::fs::File::open(&backup).map_err(io)?);
        let snapshot_bytes = read_prefix(&mut reader, &backup)?;
        let received = store.begin_receiving_snapshot()?.path().to_owned();
        let mut copy = std::fs::OpenOptions::new().write(true).open(&received).map_err(io)?;
        std::io::copy(&mut (&mut reader).take(snapshot_bytes), &mut copy).map_err(io)?;
        copy.sync_all().map_err(io)?;
        let meta = crate::state_machine::snapshot_meta(&store.snapshot_header(&received)?)?;
        let Some(last) = meta.last_log_id else {
            return Err(invalid(format!("{} holds no applied entry: there is nothing to restore", backup.display())));
        };
        let (_, stats) = store.install_snapshot(&received, &meta.snapshot_id)?;
        let modules =
            read_modules(&mut reader, &backup, |sha256, module| Ok(store.put_plugin_blob(&sha256, &module)?))?;
        Ok::<_, ConsensusError>((store, last, stats.records, modules))
    })
    .await
    .map_err(|error| invalid(format!("installing the backup panicked: {error}")))??;

    // The membership becomes the restoring node alone, from the backup's
    // last entry on; the snapshot is taken again so that it says so too
    // (it is what a joining node is sent).
    let membership = Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, info)]));
    let applied = AppliedState { last_applied: Some(last), membership: StoredMembership::new(Some(last), membership) };
    let encoded = applied.encode().map_err(|error| invalid(format!("encoding the applied state: {error}")))?;
    let mut batch = store.state_batch();
    batch.set_applied_state(&encoded)?;
    batch.commit()?;
    let snapshot_id = format!("{}-{id}-{}-restored", last.leader_id.term, last.index);
    store.build_snapshot(|_| Ok((snapshot_id, last.index)))?;

    // The log starts after the backup's last entry; the node's vote is in
    // that entry's term, so its first election is in a later one.
    let mut log = LogStore::<TypeConfig>::new(store.clone());
    log.save_vote(&Vote::new(last.leader_id.term, id)).await.map_err(|error| invalid(error.to_string()))?;
    log.purge(last).await.map_err(|error| invalid(error.to_string()))?;
    store.flush()?;
    Ok(Restored { log_index: last.index, records, modules })
}
