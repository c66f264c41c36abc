//! Group commit: writes that arrive together ride in one Raft entry. Each
//! caller's commands keep their order and get their own outcomes; they share
//! the entry's log index. A grouped entry is applied like any batch: each
//! command answers on its own, so one caller's failed compare-and-set never
//! touches another's write.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use zeromesh_consensus::{ConsensusError, ConsensusNode, WriteReceipt};
use zeromesh_protocol::limits::{MAX_BATCH_BYTES, MAX_BATCH_COMMANDS, MAX_PENDING_WRITES, MAX_PROPOSALS_IN_FLIGHT};
use zeromesh_protocol::{MemoryBatch, MemoryCommand};

struct Pending {
    commands: Vec<MemoryCommand>,
    reply: oneshot::Sender<Result<WriteReceipt, ConsensusError>>,
}

fn batch_bytes(commands: &[MemoryCommand]) -> usize {
    commands.iter().map(MemoryCommand::encoded_bytes).sum()
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
        let (reply, answer) = oneshot::channel();
        self.queue.send(Pending { commands: batch.commands, reply }).await.map_err(|_| ConsensusError::ShuttingDown)?;
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

async fn group_and_propose(consensus: Arc<ConsensusNode>, mut pending: mpsc::Receiver<Pending>) {
    let proposals = Arc::new(Semaphore::new(MAX_PROPOSALS_IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match pending.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // Waiting for a free proposal slot is when later writes pile up
        // behind this one and join its group.
        let Ok(slot) = proposals.clone().acquire_owned().await else { return };
        let mut bytes = batch_bytes(&first.commands);
        let mut count = first.commands.len();
        let mut group = vec![first];
        while let Ok(next) = pending.try_recv() {
            let next_bytes = batch_bytes(&next.commands);
            if count + next.commands.len() > MAX_BATCH_COMMANDS || bytes + next_bytes > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            count += next.commands.len();
            bytes += next_bytes;
            group.push(next);
        }
        let consensus = consensus.clone();
        tokio::spawn(async move {
            let sizes: Vec<usize> = group.iter().map(|pending| pending.commands.len()).collect();
            let combined =
                MemoryBatch { commands: group.iter().flat_map(|pending| pending.commands.iter().cloned()).collect() };
            let result = consensus.write(combined).await;
            drop(slot);
            match result {
                Ok(receipt) => {
                    assert_eq!(receipt.outcomes.len(), sizes.iter().sum::<usize>(), "one outcome per grouped command");
                    let mut outcomes = receipt.outcomes.into_iter();
                    for (pending, size) in group.into_iter().zip(sizes) {
                        let share = WriteReceipt {
                            log_index: receipt.log_index,
                            outcomes: outcomes.by_ref().take(size).collect(),
                        };
                        let _ = pending.reply.send(Ok(share));
                    }
                }
                Err(error) => {
                    for pending in group {
                        let _ = pending.reply.send(Err(shared_error(&error)));
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

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_writes_share_entries_and_each_gets_its_own_outcome() {
        let dir = tempfile::tempdir().expect("temp dir");
        let router = InProcessRouter::new();
        let node =
            ConsensusNode::open(1, dir.path(), &RaftSettings::default(), router.endpoint(1)).await.expect("opens");
        router.connect(1, node.raft().clone());
        node.initialize(BTreeMap::from([(1, MemberInfo::default())])).await.expect("initialises");
        node.wait_for("leadership", Duration::from_secs(10), |view| view.leader == Some(1)).await.expect("leads");
        let batcher = WriteBatcher::start(Arc::new(node));

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
}
