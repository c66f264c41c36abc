//! The replicated state machine of the memory log, over RocksDB.
//!
//! Apply is deterministic: each entry's effect depends only on the entry
//! (the leader stamped its time into it) and on the state before it. All
//! entries of one `apply` call land in one RocksDB write batch together with
//! the new applied state and the entries' trace leaves, so state, applied
//! index and trace tree never disagree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError, StoredMembership};
use zeromesh_protocol::{CommandReply, MemoryPath, NodeId};
use zeromesh_storage::{SnapshotFile, SnapshotHeader, SnapshotStats, Store};
use zeromesh_trace::merkle::{self, CompactRange};

use crate::applied::AppliedState;
use crate::apply::Applier;
use crate::snapshot_schedule::SnapshotSchedule;
use crate::trace::{trace_leaf, TraceHead};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, TypeConfig};

/// The memory log's state machine. Reads go to the same [`Store`] directly.
pub struct MemoryStateMachine {
    store: Store,
    applied: AppliedState,
    /// The right edge of the trace tree: one leaf per applied entry.
    trace: CompactRange,
    trace_heads: tokio::sync::watch::Sender<TraceHead>,
    /// The latest entry time applied by this process, and when.
    applied_times: tokio::sync::watch::Sender<Option<(u64, std::time::Instant)>>,
    registry_changes: tokio::sync::watch::Sender<u64>,
    state_changes: tokio::sync::broadcast::Sender<StateChange>,
    /// This member's own points for snapshots, once a node schedules them.
    snapshots: Option<SnapshotSchedule>,
}

/// What changed when entries were applied here: memories, agreements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// These paths were written (put, compare-and-set or delete).
    Paths(Arc<[MemoryPath]>),
    /// These agreements changed (state or usage); `violations` when a
    /// violation was recorded.
    Agreements { ids: Arc<[String]>, violations: bool },
    /// The policy set changed to `version`.
    Policy { version: u64 },
    /// A snapshot replaced the whole state: any memory may have changed.
    Everything,
}

/// Changes a slow listener may fall behind by before it is told it lagged.
const STATE_CHANGES_BUFFERED: usize = 1024;

impl MemoryStateMachine {
    /// Opens the state machine on `store`, recovering its applied state.
    pub fn open(store: Store) -> Result<Self, zeromesh_storage::StorageError> {
        let applied = decode_applied(store.applied_state()?.as_deref())?;
        let trace = load_trace(&store, &applied)?;
        let head = TraceHead { size: trace.size(), root: trace.root() };
        Ok(MemoryStateMachine {
            store,
            applied,
            trace,
            trace_heads: tokio::sync::watch::Sender::new(head),
            applied_times: tokio::sync::watch::Sender::new(None),
            registry_changes: tokio::sync::watch::Sender::new(0),
            state_changes: tokio::sync::broadcast::Sender::new(STATE_CHANGES_BUFFERED),
            snapshots: None,
        })
    }

    /// Has member `id` build a snapshot every `every` entries at points of
    /// its own ([`SnapshotSchedule`]); the count returned moves at each.
    pub(crate) fn schedule_snapshots(&mut self, id: NodeId, every: u64) -> tokio::sync::watch::Receiver<u64> {
        let (schedule, due) = SnapshotSchedule::new(id, every);
        self.snapshots = Some(schedule);
        due
    }

    /// Announces every memory change applied here, after it is stored. A
    /// receiver that falls behind gets `Lagged` and should assume anything
    /// changed.
    pub fn state_changes(&self) -> tokio::sync::broadcast::Sender<StateChange> {
        self.state_changes.clone()
    }

    /// Counts changes of the plugin registry (applied commands and installed
    /// snapshots); a receiver wakes when the count moves.
    pub fn registry_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.registry_changes.subscribe()
    }

    fn registry_changed(&self) {
        self.registry_changes.send_modify(|count| *count += 1);
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.applied.last_applied
    }

    /// The trace tree's size and root, updated after every apply.
    pub fn trace_heads(&self) -> tokio::sync::watch::Receiver<TraceHead> {
        self.trace_heads.subscribe()
    }

    /// The latest entry time applied by this process (ms since the Unix
    /// epoch) and when, by the monotonic clock: what a new leader's stamps
    /// go on from.
    pub fn applied_times(&self) -> tokio::sync::watch::Receiver<Option<(u64, std::time::Instant)>> {
        self.applied_times.subscribe()
    }

    fn set_trace(&mut self, trace: CompactRange) {
        let head = TraceHead { size: trace.size(), root: trace.root() };
        self.trace = trace;
        self.trace_heads.send_replace(head);
    }
}

/// The trace tree's right edge for the state applied up to `applied`: leaf
/// `i` is log entry `i`, so the tree holds one more leaf than the last
/// applied index.
fn load_trace(store: &Store, applied: &AppliedState) -> Result<CompactRange, zeromesh_storage::StorageError> {
    let size = applied.last_applied.map_or(0, |log_id| log_id.index + 1);
    CompactRange::load(size, store).map_err(|error| zeromesh_storage::StorageError::BadSnapshot {
        path: store.dir().display().to_string(),
        reason: format!(
            "the trace tree does not hold the {size} entries applied ({error}); \
             a data directory written before the trace log existed must be started afresh"
        ),
    })
}

fn decode_applied(bytes: Option<&[u8]>) -> Result<AppliedState, zeromesh_storage::StorageError> {
    AppliedState::decode(bytes)
        .map_err(|source| zeromesh_storage::StorageError::Decode { what: "applied state", source })
}

fn sm_write_error(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&error)).into()
}

fn snapshot_error(error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::new(&error)).into()
}

fn join_error(error: tokio::task::JoinError) -> zeromesh_storage::StorageError {
    zeromesh_storage::StorageError::Join(error.to_string())
}

/// How far below the node's own threads a snapshot is built (nice values
/// above the node's; 19 is the lowest priority).
const SNAPSHOT_NICE_STEP: i32 = 10;

/// Runs `work` on a thread of its own at a lower CPU priority: on a shared
/// or busy machine a build would otherwise take the CPU from the writes
/// (members build at points of their own: `snapshot_schedule`).
async fn on_background_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, zeromesh_storage::StorageError> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("snapshot-build".into())
        .spawn(move || {
            // On Linux the nice value is the calling thread's own, inherited
            // from the thread that started it. Should lowering it fail, the
            // build still runs, at the node's priority.
            if let Ok(nice) = rustix::process::getpriority_process(None) {
                let _ = rustix::process::setpriority_process(None, (nice + SNAPSHOT_NICE_STEP).min(19));
            }
            let _ = done.send(work());
        })
        .map_err(|error| zeromesh_storage::StorageError::Join(format!("starting the snapshot thread: {error}")))?;
    result
        .await
        .map_err(|_| zeromesh_storage::StorageError::Join("the snapshot thread stopped without a result".into()))
}

/// What one `apply` call changed, once its batch is written.
struct Applied {
    applied: AppliedState,
    trace: CompactRange,
    replies: Vec<CommandReply>,
    registry_changed: bool,
    changes: Vec<StateChange>,
    /// The latest entry time applied, if an entry was.
    clock: Option<u64>,
}

/// Applies `entries` on `store` from `applied`, in one write batch, each
/// entry a new leaf of `trace`.
fn apply_entries(
    store: &Store,
    mut applied: AppliedState,
    mut trace: CompactRange,
    entries: Vec<Entry>,
) -> Result<Applied, zeromesh_storage::StorageError> {
    let mut applier = Applier::new(store);
    let mut replies = Vec::with_capacity(entries.len());
    let mut nodes = Vec::with_capacity(entries.len() * 2);
    for entry in entries {
        assert_eq!(
            entry.log_id.index,
            trace.size(),
            "entries must be applied in log order, with no gap: {:?} after {:?}",
            entry.log_id,
            applied.last_applied
        );
        applied.last_applied = Some(entry.log_id);
        let reply = match &entry.payload {
            EntryPayload::Blank => CommandReply::None,
            EntryPayload::Normal(request) => applier.apply_request(entry.log_id.index, request)?,
            EntryPayload::Membership(membership) => {
                applied.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                CommandReply::None
            }
        };
        // The leaf carries the usage commitments the entry's apply made.
        let leaf = applier.finish_leaf(trace_leaf(&entry))?;
        trace.append(merkle::leaf_hash(&leaf), |id, hash| nodes.push((id, hash)));
        replies.push(reply);
    }
    let registry_changed = applier.registry_changed();
    let clock = applier.applied_clock();
    let mut changes = Vec::new();
    let written = applier.written_paths();
    if !written.is_empty() {
        changes.push(StateChange::Paths(written.into()));
    }
    let (agreements, violations) = applier.changed_agreements();
    if !agreements.is_empty() || violations {
        changes.push(StateChange::Agreements { ids: agreements.into(), violations });
    }
    if let Some(version) = applier.changed_policy() {
        changes.push(StateChange::Policy { version });
    }
    let mut batch = applier.into_batch()?;
    for (id, hash) in nodes {
        batch.put_trace_node(id, hash)?;
    }
    let encoded =
        applied.encode().map_err(|source| zeromesh_storage::StorageError::Encode { what: "applied state", source })?;
    batch.set_applied_state(&encoded)?;
    batch.commit()?;
    Ok(Applied { applied, trace, replies, registry_changed, changes, clock })
}

pub(crate) fn snapshot_meta(header: &SnapshotHeader) -> Result<SnapshotMeta, zeromesh_storage::StorageError> {
    let applied = decode_applied(Some(&header.applied))?;
    Ok(SnapshotMeta {
        last_log_id: applied.last_applied,
        last_membership: applied.membership,
        snapshot_id: header.snapshot_id.clone(),
    })
}

/// The last log index a snapshot covers (0 when it covers none).
pub(crate) fn snapshot_log_index(header: &SnapshotHeader) -> Result<u64, zeromesh_storage::StorageError> {
    Ok(snapshot_meta(header)?.last_log_id.map_or(0, |log_id| log_id.index))
}

/// Checks a snapshot read from `source` (named `path` in errors) as an
/// install does before it replaces anything: its structure, every record,
/// the checksum, and the applied state its header describes.
pub fn check_snapshot(
    source: impl std::io::Read,
    path: &std::path::Path,
) -> Result<(SnapshotMeta, SnapshotStats), zeromesh_storage::StorageError> {
    let (header, stats) = zeromesh_storage::verify_snapshot(source, path)?;
    Ok((snapshot_meta(&header)?, stats))
}

impl RaftStateMachine<TypeConfig> for MemoryStateMachine {
    type SnapshotBuilder = MemorySnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, zeromesh_protocol::MemberInfo>), StorageError> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // The leader counts itself in a quorum before its own fsync ends
        // (zeromesh_storage::LogDurability): nothing is applied, so nothing
        // answered, before this node holds it on disk.
        if let Some(last) = entries.last() {
            self.store.log_durability().wait(last.log_id.index).await.map_err(sm_write_error)?;
        }
        let store = self.store.clone();
        let (applied, trace) = (self.applied.clone(), self.trace.clone());
        let done = zeromesh_storage::run_blocking(move || apply_entries(&store, applied, trace, entries))
            .await
            .and_then(|result| result)
            .map_err(sm_write_error)?;
        let before = self.applied.last_applied.map(|log_id| log_id.index);
        self.applied = done.applied;
        self.set_trace(done.trace);
        if let (Some(schedule), Some(after)) = (&mut self.snapshots, self.applied.last_applied) {
            schedule.applied(before, after.index, &self.applied.membership);
        }
        if let Some(clock) = done.clock {
            self.applied_times.send_replace(Some((clock, std::time::Instant::now())));
        }
        if done.registry_changed {
            self.registry_changed();
        }
        for change in done.changes {
            // No receiver is not an error: nobody is subscribed.
            let _ = self.state_changes.send(change);
        }
        Ok(done.replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MemorySnapshotBuilder { store: self.store.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let store = self.store.clone();
        let file = tokio::task::spawn_blocking(move || store.begin_receiving_snapshot())
            .await
            .map_err(join_error)
            .and_then(|result| result)
            .map_err(snapshot_error)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        snapshot.sync().await.map_err(snapshot_error)?;
        // While the tables are replaced, the tree is not readable: readers
        // see an empty one and wait, rather than read half of two trees.
        self.trace_heads.send_replace(TraceHead { size: 0, root: zeromesh_trace::merkle::empty_root() });
        let store = self.store.clone();
        let path = snapshot.path().to_owned();
        drop(snapshot);
        let snapshot_id = meta.snapshot_id.clone();
        let announced = meta.clone();
        let (header, stats) = tokio::task::spawn_blocking(move || {
            // The file must describe what the leader announced before it may
            // replace anything; install then verifies every record.
            let described = snapshot_meta(&store.snapshot_header(&path)?)?;
            if described.last_log_id != announced.last_log_id || described.last_membership != announced.last_membership
            {
                return Err(zeromesh_storage::StorageError::BadSnapshot {
                    path: path.display().to_string(),
                    reason: format!(
                        "it describes state up to {:?}, but the leader announced {:?}",
                        described.last_log_id, announced.last_log_id
                    ),
                });
            }
            store.install_snapshot(&path, &snapshot_id)
        })
        .await
        .map_err(join_error)
        .and_then(|result| result)
        .map_err(snapshot_error)?;
        let installed = snapshot_meta(&header).map_err(snapshot_error)?;
        self.applied = AppliedState { last_applied: installed.last_log_id, membership: installed.last_membership };
        // The snapshot carried the tree's nodes; its right edge must be whole.
        let trace = load_trace(&self.store, &self.applied).map_err(snapshot_error)?;
        self.set_trace(trace);
        self.registry_changed();
        let _ = self.state_changes.send(StateChange::Everything);
        tracing::info!(snapshot_id = %meta.snapshot_id, records = stats.records, bytes = stats.bytes, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        current_snapshot(&self.store).await
    }
}

async fn current_snapshot(store: &Store) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
    let store = store.clone();
    let current = tokio::task::spawn_blocking(move || store.current_snapshot())
        .await
        .map_err(join_error)
        .and_then(|result| result)
        .map_err(snapshot_error)?;
    match current {
        Some((header, file)) => {
            let meta = snapshot_meta(&header).map_err(snapshot_error)?;
            Ok(Some(Snapshot { meta, snapshot: Box::new(file) }))
        }
        None => Ok(None),
    }
}

/// Builds snapshots from a consistent RocksDB view while apply goes on.
pub struct MemorySnapshotBuilder {
    store: Store,
}

static SNAPSHOT_SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl RaftSnapshotBuilder<TypeConfig> for MemorySnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let store = self.store.clone();
        let (header, stats) = on_background_thread(move || {
            store.build_snapshot(|applied| {
                let applied = decode_applied(applied)?;
                let last = applied.last_applied;
                let sequence = SNAPSHOT_SEQUENCE.fetch_add(1, Ordering::Relaxed);
                let id = match last {
                    Some(log_id) => {
                        format!("{}-{}-{}-{sequence}", log_id.leader_id.term, log_id.leader_id.node_id, log_id.index)
                    }
                    None => format!("empty-{sequence}"),
                };
                Ok((id, last.map_or(0, |log_id| log_id.index)))
            })
        })
        .await
        .and_then(|result| result)
        .map_err(snapshot_error)?;
        tracing::info!(snapshot_id = %header.snapshot_id, records = stats.records, bytes = stats.bytes, "built snapshot");
        current_snapshot(&self.store)
            .await?
            .ok_or_else(|| snapshot_error(std::io::Error::other("the snapshot just built is missing")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn snapshots_are_built_below_the_nodes_priority() {
        let own = rustix::process::getpriority_process(None).expect("own nice value");
        let builder = on_background_thread(|| rustix::process::getpriority_process(None)).await;
        let nice = builder.expect("the thread ran").expect("its nice value");
        assert_eq!(nice, (own + SNAPSHOT_NICE_STEP).min(19));
        let still = rustix::process::getpriority_process(None).expect("own nice value");
        assert_eq!(still, own, "only the builder's thread is lowered");
    }
}
