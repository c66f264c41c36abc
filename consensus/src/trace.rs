//! The trace log in the state machine: every applied entry becomes a leaf
//! (the hash of its header, which commits to the hash of its payload),
//! appended in the same write batch as the entry's effects; the tree's
//! nodes are read back for roots and proofs.

use openraft::EntryPayload;
use zeromesh_protocol::agreement::UsageCommand;
use zeromesh_protocol::trace::{TraceLeaf, TracePayload};
use zeromesh_protocol::Command;
use zeromesh_trace::merkle::{self, Hash, ProofError};

use crate::types::Entry;

/// The size and root of a node's trace tree after its last apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHead {
    pub size: u64,
    pub root: Hash,
}

/// What a log entry carried, as the trace encodes it.
pub fn trace_payload(entry: &Entry) -> TracePayload<'_> {
    match &entry.payload {
        EntryPayload::Blank => TracePayload::Blank,
        EntryPayload::Normal(request) => TracePayload::Command(std::borrow::Cow::Borrowed(request)),
        EntryPayload::Membership(membership) => TracePayload::Membership {
            configs: membership.get_joint_config().clone(),
            members: membership.nodes().map(|(id, info)| (*id, info.clone())).collect(),
        },
    }
}

/// The leaf of a log entry: its header, committing to its payload's hash.
pub fn trace_leaf(entry: &Entry) -> TraceLeaf {
    let log_id = entry.log_id;
    TraceLeaf::of(log_id.index, log_id.leader_id.term, log_id.leader_id.node_id, &trace_payload(entry))
}

/// The leaf hash of a log entry that carries no usage commitments.
pub fn entry_leaf(entry: &Entry) -> Hash {
    merkle::leaf_hash(&trace_leaf(entry).to_bytes())
}

/// Why a trace read failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error("leaf {index} is not in the trace yet: this node has applied {size} entries")]
    NotYetApplied { index: u64, size: u64 },
    #[error("the entry of leaf {index} was compacted into a snapshot; its hash is still proved, its bytes are gone")]
    Compacted { index: u64 },
    #[error("{0}")]
    Storage(String),
}

impl crate::node::ConsensusNode {
    /// The trace tree's size and root as of this node's last apply.
    pub fn trace_head(&self) -> TraceHead {
        *self.trace_heads().borrow()
    }

    /// Waits until this node's tree holds at least `size` leaves, at most
    /// `timeout`.
    pub async fn wait_trace(&self, size: u64, timeout: std::time::Duration) -> Result<TraceHead, TraceError> {
        let mut heads = self.trace_heads().clone();
        let waited = tokio::time::timeout(timeout, heads.wait_for(|head| head.size >= size)).await;
        match waited {
            Ok(Ok(head)) => Ok(*head),
            _ => Err(TraceError::NotYetApplied { index: size.saturating_sub(1), size: self.trace_head().size }),
        }
    }

    /// Runs `read` on the store off the async threads.
    async fn trace_read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&zeromesh_storage::Store) -> Result<T, ProofError> + Send + 'static,
    ) -> Result<T, TraceError> {
        let store = self.store().clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| TraceError::Storage(e.to_string()))?
            .map_err(TraceError::from)
    }

    /// Runs a storage read on the store off the async threads.
    async fn stored<T: Send + 'static>(
        &self,
        read: impl FnOnce(&zeromesh_storage::Store) -> Result<T, zeromesh_storage::StorageError> + Send + 'static,
    ) -> Result<T, TraceError> {
        let store = self.store().clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| TraceError::Storage(e.to_string()))?
            .map_err(|e| TraceError::Storage(e.to_string()))
    }

    /// The root of the tree of the first `size` leaves, which this node must
    /// have applied.
    pub async fn trace_root(&self, size: u64) -> Result<Hash, TraceError> {
        self.check_applied(size)?;
        self.trace_read(move |store| merkle::root(size, store)).await
    }

    /// The audit path of leaf `index` in the tree of `size` leaves.
    pub async fn trace_inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>, TraceError> {
        self.check_applied(size)?;
        self.trace_read(move |store| merkle::inclusion_proof(index, size, store)).await
    }

    /// The proof that the tree of `old` leaves is a prefix of that of `new`.
    pub async fn trace_consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, TraceError> {
        self.check_applied(new)?;
        self.trace_read(move |store| merkle::consistency_proof(old, new, store)).await
    }

    /// The leaf hash of leaf `index`, as stored.
    pub async fn trace_leaf_hash(&self, index: u64) -> Result<Hash, TraceError> {
        self.check_applied(index + 1)?;
        self.trace_read(move |store| {
            use zeromesh_trace::merkle::NodeReader;
            store.node(zeromesh_trace::merkle::NodeId { level: 0, index })
        })
        .await
    }

    /// The leaf bytes and the payload bytes of leaf `index`, re-encoded
    /// from its log entry.
    pub async fn trace_leaf_bytes(&self, index: u64) -> Result<(Vec<u8>, Vec<u8>), TraceError> {
        self.check_applied(index + 1)?;
        let mut reader = zeromesh_storage::LogStore::<crate::types::TypeConfig>::new(self.store().clone());
        let entries = openraft::storage::RaftLogReader::try_get_log_entries(&mut reader, index..index + 1)
            .await
            .map_err(|e| TraceError::Storage(e.to_string()))?;
        let Some(entry) = entries.first().filter(|entry| entry.log_id.index == index) else {
            return Err(TraceError::Compacted { index });
        };
        let payload = trace_payload(entry).to_bytes();
        // A call's or a settlement's leaf also carries the commitments its
        // apply made: kept with the usage records while their window is kept.
        if let EntryPayload::Normal(request) = &entry.payload {
            if let Command::Usage(UsageCommand::Reserve { agreement, .. } | UsageCommand::Settle { agreement, .. }) =
                &request.command
            {
                let agreement = agreement.clone();
                let leaf = self.stored(move |store| store.usage_leaf(&agreement, index)).await?;
                if let Some(leaf) = leaf {
                    return Ok((leaf, payload));
                }
            }
        }
        Ok((trace_leaf(entry).to_bytes(), payload))
    }

    /// The usage records of one window of `account`'s limit `limit`.
    pub async fn usage_window(
        &self,
        account: String,
        limit: u8,
        start_ms: u64,
    ) -> Result<zeromesh_storage::UsageWindow, TraceError> {
        self.stored(move |store| store.usage_window(&account, limit, start_ms)).await
    }

    /// The windows of `account`'s limit `limit` whose records are kept, oldest first.
    pub async fn usage_windows(&self, account: String, limit: u8) -> Result<Vec<u64>, TraceError> {
        self.stored(move |store| store.usage_windows(&account, limit)).await
    }

    /// The key for proofs of usage node `node` registered for `version`.
    pub fn usage_key(
        &self,
        version: u32,
        node: zeromesh_protocol::NodeId,
    ) -> Result<Option<zeromesh_protocol::trace::UsageKeyRecord>, TraceError> {
        self.store().usage_key(version, node).map_err(|e| TraceError::Storage(e.to_string()))
    }

    fn check_applied(&self, size: u64) -> Result<(), TraceError> {
        let applied = self.trace_head().size;
        if size > applied {
            return Err(TraceError::NotYetApplied { index: size.saturating_sub(1), size: applied });
        }
        Ok(())
    }

    /// The latest checkpoint this node accepted, as signed-note text.
    pub async fn trace_checkpoint(&self) -> Result<Option<String>, TraceError> {
        let bytes = self.stored(|store| store.trace_checkpoint()).await?;
        Ok(bytes.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Keeps `note` as this node's latest checkpoint. The caller has checked
    /// its cosignatures and that its root is this node's own.
    pub async fn set_trace_checkpoint(&self, note: String) -> Result<(), TraceError> {
        self.stored(move |store| store.set_trace_checkpoint(note.as_bytes())).await
    }
}
