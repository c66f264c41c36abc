//! Raft over the mesh: a [`RaftTransport`] that carries append-entries,
//! vote and snapshot chunks on the request-response protocol, and records
//! when each member last answered (the leader replaces voters that stop).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bincode::Options;
use libp2p::{Multiaddr, PeerId};
use openraft::error::InstallSnapshotError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use zeromesh_consensus::{RaftTransport, RemoteResult, TransportError, TypeConfig};
use zeromesh_protocol::limits::MAX_MESH_MESSAGE_BYTES;
use zeromesh_protocol::{MemberInfo, NodeId};

use crate::mesh::messages::{MeshRequest, MeshResponse};
use crate::mesh::{peer_of, MeshHandle, MeshSendError};

/// When each member last answered a Raft message from this node.
#[derive(Clone, Default)]
pub struct Liveness(Arc<Mutex<HashMap<NodeId, Instant>>>);

impl Liveness {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Instant>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn record(&self, node: NodeId) {
        self.lock().insert(node, Instant::now());
    }

    /// How long since `node` last answered; a node never heard from is
    /// counted from the first time anyone asked.
    pub fn silent_for(&self, node: NodeId) -> Duration {
        let now = Instant::now();
        self.lock().entry(node).or_insert(now).elapsed()
    }

    /// Forgets everything: a new leader gives every member a fresh grace period.
    pub fn reset(&self) {
        self.lock().clear();
    }
}

/// The mesh's side of Raft.
pub struct MeshTransport {
    mesh: MeshHandle,
    liveness: Liveness,
}

impl MeshTransport {
    pub fn new(mesh: MeshHandle, liveness: Liveness) -> Self {
        MeshTransport { mesh, liveness }
    }

    async fn call(
        &self,
        target: NodeId,
        info: &MemberInfo,
        request: MeshRequest,
        timeout: Duration,
    ) -> Result<MeshResponse, TransportError> {
        let (peer, address) = member_address(target, info)?;
        let response = self.mesh.request(peer, vec![address], request, timeout).await.map_err(|error| match error {
            MeshSendError::Unreachable { reason, .. } | MeshSendError::Lost { reason, .. } => {
                TransportError::Unreachable { target, reason }
            }
            MeshSendError::Timeout { timeout_ms, .. } => TransportError::Timeout { target, timeout_ms },
            MeshSendError::Failed { reason, .. } => TransportError::Failed { target, reason },
            MeshSendError::Stopped => TransportError::Unreachable { target, reason: "this node's mesh stopped".into() },
        })?;
        self.liveness.record(target);
        Ok(response)
    }
}

/// The peer id and address of a member, from its membership entry.
pub fn member_address(target: NodeId, info: &MemberInfo) -> Result<(PeerId, Multiaddr), TransportError> {
    let address: Multiaddr = info.p2p_addr.parse().map_err(|error| TransportError::Failed {
        target,
        reason: format!("member address {:?} is not a multiaddr: {error}", info.p2p_addr),
    })?;
    let peer = peer_of(&address).ok_or_else(|| TransportError::Failed {
        target,
        reason: format!("member address {:?} has no /p2p/ peer id", info.p2p_addr),
    })?;
    Ok((peer, address))
}

fn unexpected(target: NodeId, response: MeshResponse) -> TransportError {
    let reason = match response {
        MeshResponse::Refused(error) => format!("refused: {error}"),
        other => format!("answered with the wrong message: {other:?}"),
    };
    TransportError::Failed { target, reason }
}

impl RaftTransport for MeshTransport {
    async fn append_entries(
        &self,
        target: NodeId,
        target_info: &MemberInfo,
        request: AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<RemoteResult<AppendEntriesResponse<NodeId>>, TransportError> {
        let entries = request.entries.len() as u64;
        let size = bincode::DefaultOptions::new().with_fixint_encoding().serialized_size(&request).unwrap_or(u64::MAX);
        // Leave room for the enum tag and the frame; Raft retries with fewer entries.
        if size > (MAX_MESH_MESSAGE_BYTES as u64) - 1024 && entries > 1 {
            return Err(TransportError::TooLarge { target, entries_hint: entries / 2 });
        }
        match self.call(target, target_info, MeshRequest::AppendEntries(request), timeout).await? {
            MeshResponse::AppendEntries(result) => Ok(result),
            other => Err(unexpected(target, other)),
        }
    }

    async fn vote(
        &self,
        target: NodeId,
        target_info: &MemberInfo,
        request: VoteRequest<NodeId>,
        timeout: Duration,
    ) -> Result<RemoteResult<VoteResponse<NodeId>>, TransportError> {
        match self.call(target, target_info, MeshRequest::Vote(request), timeout).await? {
            MeshResponse::Vote(result) => Ok(result),
            other => Err(unexpected(target, other)),
        }
    }

    async fn install_snapshot(
        &self,
        target: NodeId,
        target_info: &MemberInfo,
        request: InstallSnapshotRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<RemoteResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError>, TransportError> {
        match self.call(target, target_info, MeshRequest::InstallSnapshot(request), timeout).await? {
            MeshResponse::InstallSnapshot(result) => Ok(result),
            other => Err(unexpected(target, other)),
        }
    }
}
