//! The network seam. Raft needs three calls to other members; a
//! [`RaftTransport`] carries them (the libp2p mesh in a node, an
//! [`crate::InProcessRouter`] in tests) and [`TransportNetwork`] adapts any
//! transport to openraft's network traits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use thiserror::Error;
use zeromesh_protocol::{MemberInfo, NodeId};
use zeromesh_storage::LogDurability;

use crate::types::TypeConfig;

/// Why a message did not reach its target or its answer did not come back.
#[derive(Debug, Clone, Error)]
pub enum TransportError {
    /// The target cannot be reached now (down, partitioned, unknown).
    #[error("node {target} is unreachable: {reason}")]
    Unreachable { target: NodeId, reason: String },
    /// The call was sent but no answer came within `timeout_ms`.
    #[error("no answer from node {target} within {timeout_ms} ms")]
    Timeout { target: NodeId, timeout_ms: u64 },
    /// The message or its answer could not be carried (encoding, size).
    #[error("message to node {target} failed: {reason}")]
    Failed { target: NodeId, reason: String },
    /// An append-entries message encodes larger than the transport carries;
    /// Raft retries with at most `entries_hint` entries.
    #[error("append-entries to node {target} is over the message limit; retry with {entries_hint} entries")]
    TooLarge { target: NodeId, entries_hint: u64 },
}

/// The remote node's answer: its Raft's own result.
pub type RemoteResult<T, E = openraft::error::Infallible> = Result<T, RaftError<NodeId, E>>;

/// Carries Raft messages from this node to other members. Each call returns
/// the target Raft's own result, or a [`TransportError`] when the message or
/// its answer was lost. Implementations bound every call by `timeout`.
pub trait RaftTransport: Send + Sync + 'static {
    fn append_entries(
        &self,
        target: NodeId,
        target_info: &MemberInfo,
        request: AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> impl Future<Output = Result<RemoteResult<AppendEntriesResponse<NodeId>>, TransportError>> + Send;

    fn vote(
        &self,
        target: NodeId,
        target_info: &MemberInfo,
        request: VoteRequest<NodeId>,
        timeout: Duration,
    ) -> impl Future<Output = Result<RemoteResult<VoteResponse<NodeId>>, TransportError>> + Send;

    fn install_snapshot(
        &self,
        target: NodeId,
        target_info: &MemberInfo,
        request: InstallSnapshotRequest<TypeConfig>,
        timeout: Duration,
    ) -> impl Future<Output = Result<RemoteResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError>, TransportError>>
           + Send;
}

/// openraft's network factory over any [`RaftTransport`].
pub struct TransportNetwork<T> {
    transport: Arc<T>,
    durability: Arc<LogDurability>,
}

impl<T> TransportNetwork<T> {
    /// `durability` is this node's log's: no commit index past it is sent.
    pub fn new(transport: Arc<T>, durability: Arc<LogDurability>) -> Self {
        TransportNetwork { transport, durability }
    }
}

/// The connection to one target, as openraft sees it.
pub struct TransportClient<T> {
    transport: Arc<T>,
    durability: Arc<LogDurability>,
    target: NodeId,
    target_info: MemberInfo,
}

impl<T: RaftTransport> RaftNetworkFactory<TypeConfig> for TransportNetwork<T> {
    type Network = TransportClient<T>;

    async fn new_client(&mut self, target: NodeId, node: &MemberInfo) -> Self::Network {
        TransportClient {
            transport: self.transport.clone(),
            durability: self.durability.clone(),
            target,
            target_info: node.clone(),
        }
    }
}

impl<T> TransportClient<T> {
    /// A leader counts itself in a quorum before its own fsync ends
    /// (zeromesh_storage::LogDurability): a follower is told an entry is
    /// committed, and may apply it, only once the leader holds it on disk.
    /// Waits for the fsync a quarter of `timeout` at most; past that (a
    /// slow disk) the request goes with a lower commit index rather than
    /// late, so heartbeats and read-index rounds never wait on the leader's
    /// disk. Returns the time left for sending.
    async fn commit_on_disk_only(
        &self,
        request: &mut AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<Duration, TransportError> {
        let Some(commit) = request.leader_commit.as_ref().map(|log_id| log_id.index) else { return Ok(timeout) };
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(timeout / 4, self.durability.wait(commit)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(TransportError::Failed { target: self.target, reason: error.to_string() }),
            Err(_) => lower_commit_to(request, self.durability.durable()),
        }
        Ok(timeout.saturating_sub(started.elapsed()))
    }
}

/// Lowers `request`'s commit index to the latest log id it carries (an
/// entry, or the id the entries follow) at or below `durable`, or to none.
/// Any such id is committed (it is at or below the leader's commit index,
/// in the leader's log) and the follower holds it once it accepts the
/// request; a lower commit index only tells a follower less.
fn lower_commit_to(request: &mut AppendEntriesRequest<TypeConfig>, durable: u64) {
    if request.leader_commit.as_ref().is_none_or(|commit| commit.index <= durable) {
        return;
    }
    let mut carried = request.entries.iter().rev().map(|entry| &entry.log_id).chain(request.prev_log_id.as_ref());
    request.leader_commit = carried.find(|log_id| log_id.index <= durable).cloned();
}

fn into_rpc_error<R, E>(
    target: NodeId,
    result: Result<RemoteResult<R, E>, TransportError>,
) -> Result<R, RPCError<NodeId, MemberInfo, RaftError<NodeId, E>>>
where
    E: std::error::Error,
{
    match result {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(target, remote))),
        Err(error @ TransportError::Unreachable { .. }) | Err(error @ TransportError::Timeout { .. }) => {
            Err(RPCError::Unreachable(Unreachable::new(&error)))
        }
        Err(error @ TransportError::Failed { .. }) => Err(RPCError::Network(NetworkError::new(&error))),
        Err(TransportError::TooLarge { entries_hint, .. }) => {
            Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries_hint.max(1))))
        }
    }
}

impl<T: RaftTransport> RaftNetwork<TypeConfig> for TransportClient<T> {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MemberInfo, RaftError<NodeId>>> {
        let mut request = request;
        let remaining = match self.commit_on_disk_only(&mut request, option.hard_ttl()).await {
            Ok(remaining) => remaining,
            Err(error) => return into_rpc_error(self.target, Err(error)),
        };
        let result = self.transport.append_entries(self.target, &self.target_info, request, remaining).await;
        into_rpc_error(self.target, result)
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, MemberInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        let result = self.transport.install_snapshot(self.target, &self.target_info, request, option.hard_ttl()).await;
        into_rpc_error(self.target, result)
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MemberInfo, RaftError<NodeId>>> {
        let result = self.transport.vote(self.target, &self.target_info, request, option.hard_ttl()).await;
        into_rpc_error(self.target, result)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, Vote};

    use super::*;
    use crate::types::{Entry, LogId};

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(2, 1), index)
    }

    fn request(prev: Option<u64>, entries: &[u64], commit: Option<u64>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: prev.map(log_id),
            entries: entries
                .iter()
                .map(|&index| Entry { log_id: log_id(index), payload: EntryPayload::Blank })
                .collect(),
            leader_commit: commit.map(log_id),
        }
    }

    fn lowered(mut request: AppendEntriesRequest<TypeConfig>, durable: u64) -> Option<u64> {
        lower_commit_to(&mut request, durable);
        request.leader_commit.map(|log_id| log_id.index)
    }

    #[test]
    fn a_commit_index_past_the_durable_mark_is_lowered_to_an_id_the_request_carries() {
        assert_eq!(lowered(request(Some(9), &[10, 11, 12], Some(11)), 20), Some(11), "on disk: unchanged");
        assert_eq!(lowered(request(Some(9), &[10, 11, 12], Some(11)), 10), Some(10), "the last entry on disk");
        assert_eq!(lowered(request(Some(9), &[10, 11, 12], Some(11)), 9), Some(9), "the id the entries follow");
        assert_eq!(lowered(request(Some(9), &[10, 11, 12], Some(11)), 5), None, "nothing carried is on disk");
        assert_eq!(lowered(request(Some(12), &[], Some(12)), 11), None, "a heartbeat past the mark");
        assert_eq!(lowered(request(Some(12), &[], None), 11), None);
    }
}
