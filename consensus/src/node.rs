//! One member of a zeromesh cluster: its store, state machine and Raft, and
//! the operations the rest of the node calls: write, read, membership.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::{ChangeMembers, ServerState};
use zeromesh_protocol::{Command, CommandOutcome, CommandReply, MemberInfo, MemoryBatch, NodeId, Request};
use zeromesh_storage::{LogStore, ReleaseProbe, Store, StoreLimits};

use crate::error::ConsensusError;
use crate::network::{RaftTransport, TransportNetwork};
use crate::read_batch::ReadIndexBatcher;
use crate::reads::{Consistency, ReadQuery, ReadReply};
use crate::settings::RaftSettings;
use crate::state_machine::{MemoryStateMachine, StateChange};
use crate::types::{Raft, TypeConfig};

/// What a client learns when its write is committed and applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReceipt {
    /// The Raft log index of the entry that carried the write.
    pub log_index: u64,
    /// One outcome per command, in order.
    pub outcomes: Vec<CommandOutcome>,
}

/// A member's view of the cluster, from its Raft metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub node_id: NodeId,
    pub state: ServerState,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub last_log_index: Option<u64>,
    /// On the leader: the last log index known replicated to each member.
    pub matched: BTreeMap<NodeId, Option<u64>>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}

/// One cluster member running on its own data directory.
pub struct ConsensusNode {
    id: NodeId,
    raft: Raft,
    store: Store,
    registry_changes: tokio::sync::watch::Receiver<u64>,
    state_changes: tokio::sync::broadcast::Sender<StateChange>,
    trace_heads: tokio::sync::watch::Receiver<crate::trace::TraceHead>,
    read_indexes: ReadIndexBatcher,
    /// Stamps this node's proposals.
    clock: crate::clock::EntryClock,
    applied_times: tokio::sync::watch::Receiver<Option<(u64, std::time::Instant)>>,
    /// Asks Raft for this node's scheduled snapshots; holds a Raft handle,
    /// so it ends with this node.
    snapshot_trigger: tokio::task::AbortHandle,
}

impl Drop for ConsensusNode {
    fn drop(&mut self) {
        self.snapshot_trigger.abort();
    }
}

/// Asks Raft for a snapshot each time the state machine passes one of this
/// member's points ([`crate::snapshot_schedule`]); a build already running
/// makes Raft skip the request. Ends when Raft stops.
async fn trigger_snapshots(raft: Raft, mut due: tokio::sync::watch::Receiver<u64>) {
    while due.changed().await.is_ok() {
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

/// How long a linearizable read waits for this node to apply its read index.
const READ_APPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl ConsensusNode {
    /// Opens the member `id` on `dir` (creating or recovering its store) and
    /// starts its Raft, sending through `transport`.
    pub async fn open<T: RaftTransport>(
        id: NodeId,
        dir: &Path,
        settings: &RaftSettings,
        transport: T,
    ) -> Result<ConsensusNode, ConsensusError> {
        let config = settings.to_config()?;
        let dir = dir.to_owned();
        let limits = StoreLimits {
            memory_bytes: settings.storage_memory_bytes,
            background_write_bytes_per_sec: settings.storage_background_write_bytes_per_sec,
        };
        let store = tokio::task::spawn_blocking(move || Store::open_with(&dir, limits))
            .await
            .map_err(|e| ConsensusError::Raft(format!("opening the store panicked: {e}")))??;
        let log_store = LogStore::<TypeConfig>::for_member(store.clone(), id);
        let mut state_machine = MemoryStateMachine::open(store.clone())?;
        let snapshots_due = state_machine.schedule_snapshots(id, settings.snapshot_every_entries);
        let registry_changes = state_machine.registry_changes();
        let state_changes = state_machine.state_changes();
        let trace_heads = state_machine.trace_heads();
        let applied_times = state_machine.applied_times();
        let network = TransportNetwork::new(Arc::new(transport), store.log_durability().clone());
        let raft = Raft::new(id, config, network, log_store, state_machine)
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))?;
        let read_indexes = ReadIndexBatcher::new(raft.clone());
        let snapshot_trigger = tokio::spawn(trigger_snapshots(raft.clone(), snapshots_due)).abort_handle();
        Ok(ConsensusNode {
            id,
            raft,
            store,
            registry_changes,
            state_changes,
            trace_heads,
            read_indexes,
            clock: Default::default(),
            applied_times,
            snapshot_trigger,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The Raft handle, for the transport's receiving side.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// How far this node's Raft log is on disk, and how many background
    /// fsyncs covered its own proposals as leader.
    pub fn log_durability(&self) -> &zeromesh_storage::LogDurability {
        self.store.log_durability()
    }

    pub(crate) fn trace_heads(&self) -> &tokio::sync::watch::Receiver<crate::trace::TraceHead> {
        &self.trace_heads
    }

    /// What RocksDB holds in memory now, against its budget.
    pub fn storage_memory(&self) -> zeromesh_storage::MemoryUsage {
        self.store.memory_usage()
    }

    /// How long RocksDB's flushes and compactions have waited for the
    /// background write limit since the store opened, in microseconds.
    pub fn storage_background_write_wait_micros(&self) -> u64 {
        self.store.background_write_wait_micros()
    }

    /// How writes have waited for RocksDB's flushes since the store opened.
    pub fn storage_write_stalls(&self) -> zeromesh_storage::WriteStalls {
        self.store.write_stalls()
    }

    /// Lets a caller wait until every handle on this node's store is gone,
    /// so the same directory can be reopened in this process.
    pub fn release_probe(&self) -> ReleaseProbe {
        self.store.release_probe()
    }

    /// Starts a new cluster whose first voters are `members`. Call it on one
    /// node only, once; a node that already has a log refuses.
    pub async fn initialize(&self, members: BTreeMap<NodeId, MemberInfo>) -> Result<(), ConsensusError> {
        self.raft.initialize(members).await?;
        Ok(())
    }

    /// Proposes a memory batch: validated here, stamped with this (leading)
    /// node's clock (`clock`), committed by a quorum and applied before it returns.
    pub async fn write(&self, batch: MemoryBatch) -> Result<WriteReceipt, ConsensusError> {
        let command = Command::Memory(batch);
        command.validate()?;
        let response = self.raft.client_write(Request { stamped_at_ms: self.stamp_ms(), command }).await?;
        let log_index = response.log_id.index;
        match response.data {
            CommandReply::Memory(outcomes) => Ok(WriteReceipt { log_index, outcomes }),
            CommandReply::Rejected(reason) => Err(ConsensusError::Rejected(reason)),
            _ => Err(ConsensusError::Raft("a memory write was applied without a memory reply".into())),
        }
    }

    /// The stamp for a proposal made now (see `crate::clock`).
    fn stamp_ms(&self) -> u64 {
        self.clock.stamp_ms(*self.applied_times.borrow())
    }

    /// Proposes any replicated command and returns the entry's log index and
    /// what applying it answered.
    pub async fn propose(&self, command: Command) -> Result<(u64, CommandReply), ConsensusError> {
        command.validate()?;
        let response = self.raft.client_write(Request { stamped_at_ms: self.stamp_ms(), command }).await?;
        match response.data {
            CommandReply::Rejected(reason) => Err(ConsensusError::Rejected(reason)),
            reply => Ok((response.log_id.index, reply)),
        }
    }

    /// Wakes when the plugin registry changes (see
    /// [`MemoryStateMachine::registry_changes`]).
    pub fn registry_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.registry_changes.clone()
    }

    /// Every memory change applied on this node from now on (see
    /// [`MemoryStateMachine::state_changes`]).
    pub fn state_changes(&self) -> tokio::sync::broadcast::Receiver<StateChange> {
        self.state_changes.subscribe()
    }

    /// Runs a read at the requested consistency.
    pub async fn read(&self, consistency: Consistency, query: ReadQuery) -> Result<ReadReply, ConsensusError> {
        query.validate()?;
        if consistency == Consistency::Linearizable {
            let read_index = self.read_indexes.read_index().await?;
            self.wait_for("this node to apply the read index", READ_APPLY_TIMEOUT, |view| {
                view.applied_index.unwrap_or(0) >= read_index
            })
            .await?;
        }
        let store = self.store.clone();
        let reply = tokio::task::spawn_blocking(move || query.run(&store))
            .await
            .map_err(|e| ConsensusError::Raft(format!("a read panicked: {e}")))??;
        Ok(reply)
    }

    /// Adds `id` as a learner and waits until the leader has replicated the
    /// log to it. Returns the log index of the membership entry; the learner
    /// has applied everything once it has applied that index.
    pub async fn add_learner(&self, id: NodeId, info: MemberInfo) -> Result<u64, ConsensusError> {
        let response = self.raft.add_learner(id, info, true).await?;
        Ok(response.log_id.index)
    }

    /// Adds `id` as a learner once its membership entry commits, without
    /// waiting for it to catch up. Returns the membership entry's log index.
    pub async fn add_learner_now(&self, id: NodeId, info: MemberInfo) -> Result<u64, ConsensusError> {
        let response = self.raft.add_learner(id, info, false).await?;
        Ok(response.log_id.index)
    }

    /// On the leader: confirms leadership with a quorum and returns the log
    /// index a linearizable read must wait for (Raft's read index).
    /// Concurrent callers share one confirmation (see `read_batch`).
    pub async fn read_index(&self) -> Result<u64, ConsensusError> {
        self.read_indexes.read_index().await
    }

    /// Runs `query` once this node has applied `read_index` (learned from the
    /// leader's [`ConsensusNode::read_index`]): a linearizable read served by
    /// any member.
    pub async fn read_at(
        &self,
        read_index: u64,
        query: ReadQuery,
        timeout: Duration,
    ) -> Result<ReadReply, ConsensusError> {
        query.validate()?;
        self.wait_for("this node to apply the read index", timeout, |view| {
            view.applied_index.unwrap_or(0) >= read_index
        })
        .await?;
        self.read(Consistency::Stale, query).await
    }

    /// Replaces the voter set with `voters`, all of which must already be
    /// members (learners or voters). Former voters are kept as learners
    /// only if `keep_removed` is true.
    pub async fn replace_voters(&self, voters: BTreeSet<NodeId>, keep_removed: bool) -> Result<u64, ConsensusError> {
        let response = self.raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), keep_removed).await?;
        Ok(response.log_id.index)
    }

    /// Removes non-voting members `ids` from the cluster: the leader stops
    /// replicating to them, and the mesh takes nothing more from them.
    pub async fn remove_members(&self, ids: BTreeSet<NodeId>) -> Result<u64, ConsensusError> {
        let response = self.raft.change_membership(ChangeMembers::RemoveNodes(ids), false).await?;
        Ok(response.log_id.index)
    }

    /// Replaces member `id`'s addresses in the membership (the same node,
    /// found elsewhere).
    pub async fn set_member_info(&self, id: NodeId, info: MemberInfo) -> Result<u64, ConsensusError> {
        let response = self.raft.change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, info)])), true).await?;
        Ok(response.log_id.index)
    }

    /// The leader this node knows of and its addresses, read in place (no
    /// copy of the metrics): what every forwarded request asks first.
    pub fn known_leader(&self) -> Option<(NodeId, Option<MemberInfo>)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        Some((leader, metrics.membership_config.membership().get_node(&leader).cloned()))
    }

    /// Every member (voter or learner) with its addresses, as the latest
    /// membership config this node knows.
    pub fn members(&self) -> BTreeMap<NodeId, MemberInfo> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics.membership_config.membership().nodes().map(|(id, info)| (*id, info.clone())).collect()
    }

    /// Whether this node's log holds any membership: it belongs to (or once
    /// belonged to) a cluster, so it must not be initialised or join anew.
    pub async fn is_initialized(&self) -> Result<bool, ConsensusError> {
        self.raft.is_initialized().await.map_err(|e| ConsensusError::Raft(e.to_string()))
    }

    /// Makes the learner `id` a voter (joint consensus, then the new
    /// config). Returns the log index of the final membership entry.
    pub async fn promote_to_voter(&self, id: NodeId) -> Result<u64, ConsensusError> {
        let view = self.cluster_view();
        if view.voters.contains(&id) {
            return Ok(view.applied_index.unwrap_or(0));
        }
        if !view.learners.contains(&id) {
            return Err(ConsensusError::Membership(format!("node {id} is not a learner; add it as a learner first")));
        }
        let response = self.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await?;
        Ok(response.log_id.index)
    }

    /// This member's current view of the cluster.
    /// The Raft term this node is in.
    pub fn current_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    pub fn cluster_view(&self) -> ClusterView {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        ClusterView {
            node_id: self.id,
            state: metrics.state,
            term: metrics.current_term,
            leader: metrics.current_leader,
            voters,
            learners,
            last_log_index: metrics.last_log_index,
            matched: metrics
                .replication
                .iter()
                .flatten()
                .map(|(id, matched)| (*id, matched.map(|log_id| log_id.index)))
                .collect(),
            applied_index: metrics.last_applied.map(|log_id| log_id.index),
            snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
            purged_index: metrics.purged.map(|log_id| log_id.index),
        }
    }

    /// On the leader, the highest log index a majority of voters hold: the
    /// commit index. `None` on other members, which do not track it.
    pub fn committed_index(&self) -> Option<u64> {
        let view = self.cluster_view();
        if view.leader != Some(self.id) || view.voters.is_empty() {
            return None;
        }
        let mut held: Vec<u64> = view
            .voters
            .iter()
            .map(|voter| match view.matched.get(voter) {
                Some(matched) => matched.unwrap_or(0),
                None if *voter == self.id => view.last_log_index.unwrap_or(0),
                None => 0,
            })
            .collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        held.get(held.len() / 2).copied()
    }

    /// Waits until `condition` holds for this member's view, or `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&ClusterView) -> bool,
    ) -> Result<ClusterView, ConsensusError> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let view = self.cluster_view();
            if condition(&view) {
                return Ok(view);
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ConsensusError::ShuttingDown),
                Err(_) => {
                    return Err(ConsensusError::Timeout {
                        what: what.to_owned(),
                        timeout_ms: timeout.as_millis() as u64,
                    })
                }
            }
        }
    }

    /// Stops Raft cleanly and releases the store.
    pub async fn shutdown(self) -> Result<(), ConsensusError> {
        self.raft.shutdown().await.map_err(|e| ConsensusError::Raft(format!("shutdown failed: {e}")))
    }
}
