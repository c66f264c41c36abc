//! A cluster of real consensus nodes (RocksDB, openraft) in one process,
//! joined by an in-process router, for the integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use zeromesh_consensus::{
    ConsensusError, ConsensusNode, Consistency, InProcessRouter, RaftSettings, ReadQuery, ReadReply, WriteReceipt,
};
use zeromesh_protocol::{MemberInfo, MemoryBatch, MemoryCommand, MemoryPath, MemoryRecord, MemoryValue, NodeId};

/// Generous: the machine is small and shared, and elections are randomised.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn test_settings() -> RaftSettings {
    RaftSettings {
        heartbeat_interval_ms: 100,
        election_timeout_min_ms: 500,
        election_timeout_max_ms: 1000,
        ..RaftSettings::default()
    }
}

pub fn member(id: NodeId) -> MemberInfo {
    MemberInfo { p2p_addr: format!("in-process/{id}"), api_addr: format!("in-process/{id}") }
}

pub fn path(text: &str) -> MemoryPath {
    MemoryPath::parse(text).expect("test paths are valid")
}

pub fn put(path_text: &str, value: &str) -> MemoryBatch {
    MemoryBatch {
        commands: vec![MemoryCommand::Put {
            path: path(path_text),
            value: MemoryValue { value: value.as_bytes().to_vec(), content_type: "text/plain".into(), tags: vec![] },
        }],
    }
}

pub struct TestCluster {
    pub router: InProcessRouter,
    pub settings: RaftSettings,
    root: TempDir,
    pub nodes: BTreeMap<NodeId, ConsensusNode>,
}

impl TestCluster {
    /// Starts voters `1..=voter_count`, initialises the cluster on node 1 and
    /// waits for a leader.
    pub async fn start(voter_count: u64, settings: RaftSettings) -> TestCluster {
        let mut cluster = TestCluster {
            router: InProcessRouter::new(),
            settings,
            root: tempfile::tempdir().expect("a temporary directory"),
            nodes: BTreeMap::new(),
        };
        for id in 1..=voter_count {
            cluster.start_node(id).await;
        }
        let members = (1..=voter_count).map(|id| (id, member(id))).collect();
        cluster.nodes[&1].initialize(members).await.expect("initialise the cluster");
        cluster.leader().await;
        cluster
    }

    pub fn dir(&self, id: NodeId) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    /// Opens node `id` on its directory and connects it to the router.
    pub async fn start_node(&mut self, id: NodeId) {
        let node = ConsensusNode::open(id, &self.dir(id), &self.settings, self.router.endpoint(id))
            .await
            .expect("open a node");
        self.router.connect(id, node.raft().clone());
        self.nodes.insert(id, node);
    }

    /// Drops node `id` without shutting it down, as a crash would, and waits
    /// until its store is released so that it can be reopened.
    pub async fn crash(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).expect("the node is running");
        self.router.disconnect(id);
        let probe = node.release_probe();
        drop(node);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !probe.is_released() {
            assert!(tokio::time::Instant::now() < deadline, "node {id}'s store was not released within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn node(&self, id: NodeId) -> &ConsensusNode {
        &self.nodes[&id]
    }

    /// Waits until a running node is leader and confirms it with a quorum.
    pub async fn leader(&self) -> NodeId {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let seen: Vec<Option<NodeId>> = self.nodes.values().map(|node| node.cluster_view().leader).collect();
            for leader in seen.iter().flatten() {
                if let Some(node) = self.nodes.get(leader) {
                    if node.raft().ensure_linearizable().await.is_ok() {
                        return *leader;
                    }
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no confirmed leader within {DEADLINE:?}: {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes through the current leader, retrying while leadership moves.
    pub async fn write(&self, batch: MemoryBatch) -> WriteReceipt {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let leader = self.leader().await;
            match self.nodes[&leader].write(batch.clone()).await {
                Ok(receipt) => return receipt,
                Err(ConsensusError::NotLeader { .. }) => {}
                Err(error) => panic!("write failed: {error}"),
            }
            assert!(tokio::time::Instant::now() < deadline, "write not accepted within {DEADLINE:?}");
        }
    }

    /// Waits until node `id` has applied `index`.
    pub async fn wait_applied(&self, id: NodeId, index: u64) {
        self.nodes[&id]
            .wait_for(&format!("node {id} to apply index {index}"), DEADLINE, |view| {
                view.applied_index.is_some_and(|applied| applied >= index)
            })
            .await
            .expect("the node catches up");
    }

    /// Reads a path from node `id` without going through the leader.
    pub async fn local_get(&self, id: NodeId, path_text: &str) -> Option<MemoryRecord> {
        match self.nodes[&id].read(Consistency::Stale, ReadQuery::Get { path: path(path_text), version: None }).await {
            Ok(ReadReply::Record(record)) => record,
            other => panic!("unexpected read reply: {other:?}"),
        }
    }
}

/// A single-threaded runtime for driving a state machine directly.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

/// A state machine on a fresh store in `dir`, and the store for reads. It
/// has applied the log's first entry (index 0, a blank one here, as a new
/// cluster's membership entry would be), so tests number entries from 1.
pub fn open_machine(dir: &tempfile::TempDir) -> (zeromesh_storage::Store, zeromesh_consensus::MemoryStateMachine) {
    use openraft::storage::RaftStateMachine;
    let store = zeromesh_storage::Store::open(dir.path()).expect("open a store");
    let mut machine = zeromesh_consensus::MemoryStateMachine::open(store.clone()).expect("open the state machine");
    if machine.last_applied().is_none() {
        let first = zeromesh_consensus::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 0),
            payload: openraft::EntryPayload::Blank,
        };
        runtime().block_on(machine.apply(vec![first])).expect("the first entry applies");
    }
    (store, machine)
}

/// The state tables' records (at most `max_records`) without the trace
/// tree's nodes and the applied clock, which every applied entry moves on:
/// what an entry's effects change.
pub fn effects(store: &zeromesh_storage::Store, max_records: usize) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let records = store.state_records(max_records).expect("the state tables read");
    records.into_iter().filter(|(table, key, _)| *table != "trace_nodes" && key.as_slice() != b"n/clock").collect()
}
