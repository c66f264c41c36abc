//! Backups: a backup is a snapshot file, the whole replicated state at one
//! log index, consistent (one RocksDB view) and checksummed; it is made
//! fresh on request and read from an open handle, so a newer snapshot
//! replacing it meanwhile changes nothing. A restore makes a new data
//! directory from one: the state at that index, with a membership of one
//! member, the restoring node, which then elects itself and goes on from
//! the next index; nodes join it as they join any cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::{Membership, StoredMembership, Vote};
use tokio::io::AsyncWriteExt;
use zeromesh_protocol::{MemberInfo, NodeId};
use zeromesh_storage::{LogStore, SnapshotHeader, SnapshotStats, Store};

use crate::applied::AppliedState;
use crate::{ConsensusError, ConsensusNode, TypeConfig};

/// What a backup holds, and where to read it.
#[derive(Debug)]
pub struct Backup {
    pub header: SnapshotHeader,
    /// The last log index the state includes.
    pub log_index: u64,
    /// The snapshot file, open: its size is `bytes`.
    pub file: std::fs::File,
    pub bytes: u64,
}

/// What a restore installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup's last log index: the new cluster goes on from the next.
    pub log_index: u64,
    pub records: u64,
    pub bytes: u64,
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
        let bytes = file.metadata().map_err(|error| ConsensusError::Raft(error.to_string()))?.len();
        let log_index = crate::state_machine::snapshot_log_index(&header)?;
        Ok(Backup { header, log_index, file, bytes })
    }
}

/// Makes `dir`, which must not hold a store, the store of a new cluster
/// whose one member is `id` at `info`, holding the state of the snapshot
/// file `backup` (verified whole first; nothing is written if it fails).
pub async fn restore(dir: &Path, backup: &Path, id: NodeId, info: MemberInfo) -> Result<Restored, ConsensusError> {
    let invalid = |reason: String| ConsensusError::Raft(reason);
    if dir.join("CURRENT").exists() {
        return Err(invalid(format!("{} already holds a store; restore into a new data directory", dir.display())));
    }
    let file = std::fs::File::open(backup).map_err(|error| invalid(format!("{}: {error}", backup.display())))?;
    let (meta, _) = crate::check_snapshot(std::io::BufReader::new(file), backup)?;
    let Some(last) = meta.last_log_id else {
        return Err(invalid(format!("{} holds no applied entry: there is nothing to restore", backup.display())));
    };

    let opened = dir.to_owned();
    let store = tokio::task::spawn_blocking(move || Store::open(&opened))
        .await
        .map_err(|error| invalid(format!("opening the store panicked: {error}")))??;
    // Installed as a received snapshot is: copied in, verified again, loaded.
    let mut receiving = store.begin_receiving_snapshot()?;
    let mut source = tokio::fs::File::open(backup).await.map_err(|error| invalid(error.to_string()))?;
    tokio::io::copy(&mut source, &mut receiving).await.map_err(|error| invalid(error.to_string()))?;
    receiving.flush().await.map_err(|error| invalid(error.to_string()))?;
    receiving.sync().await.map_err(|error| invalid(error.to_string()))?;
    let received = receiving.path().to_owned();
    drop(receiving);
    let installing = store.clone();
    let (_, stats): (SnapshotHeader, SnapshotStats) =
        tokio::task::spawn_blocking(move || installing.install_snapshot(&received, &meta.snapshot_id))
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
    Ok(Restored { log_index: last.index, records: stats.records, bytes: stats.bytes })
}
