//! Errors of the consensus layer. Each says what went wrong and, where the
//! caller can act on it, what to do.

use thiserror::Error;
use zeromesh_protocol::{MemberInfo, NodeId, ValidationError};

#[derive(Debug, Error)]
pub enum ConsensusError {
    #[error("invalid input: {0}")]
    Invalid(#[from] ValidationError),
    #[error("this node is not the leader; send the request to {}", leader_hint(.leader, .leader_info))]
    NotLeader { leader: Option<NodeId>, leader_info: Option<MemberInfo> },
    #[error("storage: {0}")]
    Storage(#[from] zeromesh_storage::StorageError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("invalid raft settings: {0}")]
    InvalidSettings(String),
    #[error("timed out after {timeout_ms} ms waiting for {what}")]
    Timeout { what: String, timeout_ms: u64 },
    #[error("the command was rejected when applied: {0}")]
    Rejected(String),
    #[error("the node is shutting down")]
    ShuttingDown,
}

fn leader_hint(leader: &Option<NodeId>, info: &Option<MemberInfo>) -> String {
    match (leader, info) {
        (Some(id), Some(info)) => format!("node {id} at {}", info.api_addr),
        (Some(id), None) => format!("node {id}"),
        _ => "the leader once one is elected (none is known now); retry shortly".into(),
    }
}

type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, MemberInfo>;

/// Maps an openraft API error: a redirect to the leader becomes `NotLeader`,
/// anything else `other`.
fn from_raft_error<E>(
    error: openraft::error::RaftError<NodeId, E>,
    classify: impl FnOnce(E) -> Result<ForwardToLeader, ConsensusError>,
) -> ConsensusError {
    match error {
        openraft::error::RaftError::APIError(api) => match classify(api) {
            Ok(forward) => ConsensusError::NotLeader { leader: forward.leader_id, leader_info: forward.leader_node },
            Err(other) => other,
        },
        openraft::error::RaftError::Fatal(openraft::error::Fatal::Stopped) => ConsensusError::ShuttingDown,
        openraft::error::RaftError::Fatal(fatal) => ConsensusError::Raft(fatal.to_string()),
    }
}

impl From<openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, MemberInfo>>>
    for ConsensusError
{
    fn from(error: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, MemberInfo>>) -> Self {
        from_raft_error(error, |api| match api {
            openraft::error::ClientWriteError::ForwardToLeader(forward) => Ok(forward),
            other => Err(ConsensusError::Membership(other.to_string())),
        })
    }
}

impl From<openraft::error::RaftError<NodeId, openraft::error::CheckIsLeaderError<NodeId, MemberInfo>>>
    for ConsensusError
{
    fn from(
        error: openraft::error::RaftError<NodeId, openraft::error::CheckIsLeaderError<NodeId, MemberInfo>>,
    ) -> Self {
        from_raft_error(error, |api| match api {
            openraft::error::CheckIsLeaderError::ForwardToLeader(forward) => Ok(forward),
            other => Err(ConsensusError::Raft(format!("leadership could not be confirmed: {other}"))),
        })
    }
}

impl From<openraft::error::RaftError<NodeId, openraft::error::InitializeError<NodeId, MemberInfo>>> for ConsensusError {
    fn from(error: openraft::error::RaftError<NodeId, openraft::error::InitializeError<NodeId, MemberInfo>>) -> Self {
        from_raft_error(error, |api| Err(ConsensusError::Membership(format!("cannot initialise the cluster: {api}"))))
    }
}
