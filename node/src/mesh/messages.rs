//! What nodes say to each other on the request-response protocol: Raft's
//! three calls, writes, commands and read indexes forwarded to the leader,
//! joins, status queries and plugin module fetches.

use openraft::error::InstallSnapshotError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};
use zeromesh_consensus::{RemoteResult, TypeConfig};
use zeromesh_protocol::{Command, CommandOutcome, CommandReply, MemberInfo, MemoryBatch, NodeId};

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum MeshRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Client writes that reached a follower together, for the leader to
    /// propose; each is answered on its own. At most `MAX_BATCH_COMMANDS`
    /// commands and `MAX_BATCH_BYTES` in all.
    Writes(Vec<MemoryBatch>),
    /// A follower asks the leader for a read index, to serve a
    /// linearizable read itself.
    ReadIndex,
    /// A new node asks to become a member.
    Join(JoinRequest),
    /// A node's own view of the cluster.
    Status,
    /// A non-memory command (the plugin registry's) for the leader to propose.
    Propose(Command),
    /// A plugin module this node lacks, asked of a peer by its SHA-256.
    FetchPluginModule {
        sha256: [u8; 32],
    },
    /// The leader asks a voter to cosign the trace tree's root at a size.
    CosignCheckpoint {
        size: u64,
        root: [u8; 32],
    },
    /// The leader hands out a checkpoint a majority of voters cosigned
    /// (signed-note text).
    PublishCheckpoint(String),
    /// A member restarted with other addresses asks the leader to put them
    /// in the membership; only for the sender's own node id.
    UpdateMember(MemberInfo),
}

impl MeshRequest {
    /// Whether it is one of the frequent, small messages that take the link
    /// to the peer when one is open: Raft's append-entries and votes,
    /// forwarded writes and read-index requests.
    pub fn rides_link(&self) -> bool {
        matches!(
            self,
            MeshRequest::AppendEntries(_) | MeshRequest::Vote(_) | MeshRequest::Writes(_) | MeshRequest::ReadIndex
        )
    }
}

/// The answer to a [`MeshRequest`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum MeshResponse {
    AppendEntries(RemoteResult<AppendEntriesResponse<NodeId>>),
    Vote(RemoteResult<VoteResponse<NodeId>>),
    InstallSnapshot(RemoteResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError>),
    /// One result per write, in the order of the request.
    Writes(Vec<Result<WriteAccepted, MeshError>>),
    ReadIndex(Result<u64, MeshError>),
    Join(Result<JoinAccepted, MeshError>),
    Status(NodeStatus),
    Propose(Result<(u64, CommandReply), MeshError>),
    /// The module, or `None` when the peer does not hold it.
    FetchPluginModule(Option<Vec<u8>>),
    /// The voter's signature line: key name, key id, signature.
    CosignCheckpoint(Result<(String, [u8; 4], Vec<u8>), MeshError>),
    PublishCheckpoint(Result<(), MeshError>),
    /// The request was not handled (busy, shutting down, malformed).
    Refused(MeshError),
    /// The log index of the membership that holds the new addresses.
    UpdateMember(Result<u64, MeshError>),
}

/// A committed write, as the leader answers a forwarded one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteAccepted {
    pub log_index: u64,
    pub outcomes: Vec<CommandOutcome>,
}

/// Why a forwarded request failed on the node that handled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MeshError {
    /// The receiver is not the leader; `leader` is whom it believes leads.
    #[error("node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The request was invalid; retrying it unchanged will fail again.
    #[error("{0}")]
    Invalid(String),
    /// The request was refused on purpose (a wrong join token, say).
    #[error("{0}")]
    Refused(String),
    /// The receiver could not serve it now; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The leader proposed it, but cannot say whether it was applied (not
    /// committed in time): it may still be. Retrying could do it twice.
    #[error("{0}")]
    Unknown(String),
}

/// A new node's request to join the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub node_id: NodeId,
    pub info: MemberInfo,
}

/// The leader added the joiner as a learner in this membership entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinAccepted {
    pub leader: NodeId,
    pub membership_log_index: u64,
}

/// One node's own view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub peer_id: String,
    pub role: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub voters: Vec<NodeId>,
    pub non_voters: Vec<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Leaves in this node's trace tree, and its root (hex).
    pub trace_size: u64,
    pub trace_root: String,
    pub info: MemberInfo,
}
