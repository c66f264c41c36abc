//! Group commit: writes that arrive together ride in one Raft entry. Each
//! caller's commands keep their order and get their own outcomes; they share
//! the entry's log index. A grouped entry is applied like any batch: each
//! command answers on its own, so one caller's failed compare-and-set never
//! touches another's write.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use zeromesh_consensus::{ConsensusError, ConsensusNode, WriteReceipt};
use zeromesh_protocol::limits::{MAX_BATCH_BYTES, MAX_BATCH_COMMANDS, MAX_PENDING_WRITES, MAX_PROPOSALS_IN_FLIGHT};
use zeromesh_protocol::{MemoryBatch, MemoryCommand};

struct Pending {
    commands: Vec<MemoryCommand>,
    /// How many of `commands` each write holds, in order: one write, or the
    /// writes a follower forwarded together.
    shares: Vec<usize>,
    reply: oneshot::Sender<Result<Vec<WriteReceipt>, ConsensusError>>,
}

fn batch_bytes(commands: &[MemoryCommand]) -> usize {
    commands.iter().map(MemoryCommand::encoded_bytes).sum()
}

/// Groups of queued writes, each within one Raft entry's limits, formed
/// while up to `MAX_PROPOSALS_IN_FLIGHT` earlier groups are out: a lone
/// write leaves at once. Shared by the leader's batcher and a follower's
/// forwarder.
pub(super) struct Groups<T> {
    queue: mpsc::Receiver<T>,
    carried: Option<T>,
    slots: Arc<Semaphore>,
}

impl<T> Groups<T> {
    pub fn new(queue: mpsc::Receiver<T>) -> Self {
        Groups { queue, carried: None, slots: Arc::new(Semaphore::new(MAX_PROPOSALS_IN_FLIGHT)) }
    }

    /// The next group, with the slot it holds until it is answered; `None`
    /// once the queue is closed. `commands` gives a write's commands;
    /// `joins(first, next)` whether `next` may ride with the group's first.
    pub async fn next(
        &mut self,
        commands: impl Fn(&T) -> &[MemoryCommand],
        joins: impl Fn(&T, &T) -> bool,
    ) -> Option<(Vec<T>, OwnedSemaphorePermit)> {
        let first = match self.carried.take() {
            Some(first) => first,
            None => self.queue.recv().await?,
        };
        // Waiting for a free slot is when later writes pile up behind this
        // one and join its group.
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        let mut count = commands(&first).len();
        let mut bytes = batch_bytes(commands(&first));
        let mut group = vec![first];
        while let Ok(next) = self.queue.try_recv() {
            let next_bytes = batch_bytes(commands(&next));
            if !joins(&group[0], &next)
                || count + commands(&next).len() > MAX_BATCH_COMMANDS
                || bytes + next_bytes > MAX_BATCH_BYTES
            {
                self.carried = Some(next);
                break;
            }
            count += commands(&next).len();
            bytes += next_bytes;
            group.push(next);
        }
        Some((group, slot))
    }
}

/// The grouping queue in front of one node's Raft proposals.
#[derive(Clone)]
pub struct WriteBatcher {
    queue: mpsc::Sender<Pending>,
}

impl WriteBatcher {
    /// Starts the task that groups writes and proposes them through `consensus`.
    pub fn start(consensus: Arc<ConsensusNode>) -> Self {
        let (queue, pending) = mpsc::channel(MAX_PENDING_WRITES);
        tokio::spawn(group_and_propose(consensus, pending));
        WriteBatcher { queue }
    }

    /// Proposes `batch` (already validated) in the next group.
    pub async fn write(&self, batch: MemoryBatch) -> Result<WriteReceipt, ConsensusError> {
        let receipts = self.write_all(vec![batch]).await?;
        receipts.into_iter().next().ok_or_else(|| ConsensusError::Raft("a write got no receipt".into()))
    }

    /// Proposes `batches` (each validated, together within one entry's
    /// limits) in the next group: one receipt per batch, in order.
    pub async fn write_all(&self, batches: Vec<MemoryBatch>) -> Result<Vec<WriteReceipt>, ConsensusError> {
        let (reply, answer) = oneshot::channel();
        let shares = batches.iter().map(|batch| batch.commands.len()).collect();
        let commands = batches.into_iter().flat_map(|batch| batch.commands).collect();
        self.queue.send(Pending { commands, shares, reply }).await.map_err(|_| ConsensusError::ShuttingDown)?;
        answer.await.map_err(|_| ConsensusError::ShuttingDown)?
    }
}

/// One caller's share of a group's error. Errors are not `Clone`; what a
/// caller acts on (the leader's whereabouts, a rejection) is kept.
fn shared_error(error: &ConsensusError) -> ConsensusError {
    match error {
        ConsensusError::NotLeader { leader, leader_info } => {
            ConsensusError::NotLeader { leader: *leader, leader_info: leader_info.clone() }
        }
        ConsensusError::Rejected(reason) => ConsensusError::Rejected(reason.clone()),
        ConsensusError::ShuttingDown => ConsensusError::ShuttingDown,
        other => ConsensusError::Raft(other.to_string()),
    }
}

async fn group_and_propose(consensus: Arc<ConsensusNode>, pending: mpsc::Receiver<Pending>) {
    let mut groups = Groups::new(pending);
    while let Some((group, slot)) = groups.next(|pending| &pending.commands, |_, _| true).await {
        let consensus = consensus.clone();
        tokio::spawn(async move {
            let mut commands = Vec::with_capacity(group.iter().map(|pending| pending.commands.len()).sum());
            let mut replies = Vec::with_capacity(group.len());
            for pending in group {
                commands.extend(pending.commands);
                replies.push((pending.shares, pending.reply));
            }
            let expected = commands.len();
            let result = consensus.write(MemoryBatch { commands }).await;
            drop(slot);
            match result {
                Ok(receipt) => {
                    assert_eq!(receipt.outcomes.len(), expected, "one outcome per grouped command");
                    let mut outcomes = receipt.outcomes.into_iter();
                    for (shares, reply) in replies {
                        let receipts = shares
                            .into_iter()
                            .map(|size| WriteReceipt {
                                log_index: receipt.log_index,
                                outcomes: outcomes.by_ref().take(size).collect(),
                            })
                            .collect();
                        let _ = reply.send(Ok(receipts));
                    }
                }
                Err(error) => {
                    for (_, reply) in replies {
                        let _ = reply.send(Err(shared_error(&error)));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use zeromesh_consensus::{InProcessRouter, RaftSettings};
    use zeromesh_protocol::{CommandOutcome, MemberInfo, MemoryPath, MemoryValue};

    use super::*;

    fn put(path: &str, text: &str) -> MemoryBatch {
        let value = MemoryValue { value: text.as_bytes().to_vec(), content_type: "text/plain".into(), tags: vec![] };
        MemoryBatch { commands: vec![MemoryCommand::Put { path: MemoryPath::parse(path).expect("valid path"), value }] }
    }

    /// The batcher of a one-node cluster's leader, its data in `dir`.
    async fn single_leader(dir: &std::path::Path) -> WriteBatcher {
        let router = InProcessRouter::new();
        let node = ConsensusNode::open(1, dir, &RaftSettings::default(), router.endpoint(1)).await.expect("opens");
        router.connect(1, node.raft().clone());
        node.initialize(BTreeMap::from([(1, MemberInfo::default())])).await.expect("initialises");
        node.wait_for("leadership", Duration::from_secs(10), |view| view.leader == Some(1)).await.expect("leads");
        WriteBatcher::start(Arc::new(node))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_writes_share_entries_and_each_gets_its_own_outcome() {
        let dir = tempfile::tempdir().expect("temp dir");
        let batcher = single_leader(dir.path()).await;

        // Writers 0..200: even ones write their own path, odd ones all write one shared path.
        let writers: Vec<_> = (0..200)
            .map(|writer| {
                let batcher = batcher.clone();
                let path = if writer % 2 == 0 { format!("agent-{writer}/own") } else { "agent-x/shared".to_owned() };
                tokio::spawn(async move { (writer, batcher.write(put(&path, &writer.to_string())).await) })
            })
            .collect();
        let mut entries = BTreeSet::new();
        let mut shared_versions = BTreeSet::new();
        for writer in writers {
            let (writer, receipt) = writer.await.expect("writer finished");
            let receipt = receipt.expect("the write commits");
            assert_eq!(receipt.outcomes.len(), 1, "writer {writer} gets exactly its own outcome");
            let CommandOutcome::Written { version } = receipt.outcomes[0] else {
                panic!("writer {writer}: {:?}", receipt.outcomes)
            };
            if writer % 2 == 0 {
                assert_eq!(version, 1, "writer {writer}'s own path");
            } else {
                assert!(shared_versions.insert(version), "each shared write gets a version of its own");
            }
            entries.insert(receipt.log_index);
        }
        assert_eq!(shared_versions, (1..=100).collect::<BTreeSet<u64>>());
        assert!(
            entries.len() < 200,
            "writes that arrived together shared entries: {} entries for 200 writes",
            entries.len()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn writes_proposed_together_get_one_receipt_each_with_their_own_outcomes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let batcher = single_leader(dir.path()).await;
        batcher.write(put("agent-c/cas", "first")).await.expect("the first version");

        let value = MemoryValue { value: b"x".to_vec(), content_type: "text/plain".into(), tags: vec![] };
        let cas = MemoryCommand::CompareAndSet {
            path: MemoryPath::parse("agent-c/cas").expect("valid path"),
            expected_version: 7,
            value,
        };
        let two =
            MemoryBatch { commands: [put("agent-a/one", "1").commands, put("agent-a/two", "2").commands].concat() };
        let receipts = batcher
            .write_all(vec![two, MemoryBatch { commands: vec![cas] }, put("agent-b/three", "3")])
            .await
            .expect("the writes commit");
        let outcomes: Vec<_> = receipts.iter().map(|receipt| receipt.outcomes.clone()).collect();
        assert_eq!(
            outcomes,
            vec![
                vec![CommandOutcome::Written { version: 1 }, CommandOutcome::Written { version: 1 }],
                vec![CommandOutcome::VersionMismatch { current_version: 1 }],
                vec![CommandOutcome::Written { version: 1 }],
            ]
        );
        assert!(receipts.iter().all(|receipt| receipt.log_index == receipts[0].log_index), "one entry");
    }
}
