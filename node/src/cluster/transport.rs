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

/// Members' addresses as parsed from their membership entries, by node id.
/// Every Raft message and forwarded request needs its target's peer id and
/// address, and parsing them (the peer id is base58) was 1% of a leader's
/// CPU under load. An entry is parsed again when the member's address
/// changes; the book holds at most [`AddressBook::CAPACITY`] members.
#[derive(Clone, Default)]
pub struct AddressBook(Arc<Mutex<HashMap<NodeId, (String, PeerId, Multiaddr)>>>);

impl AddressBook {
    /// More members than any membership holds; past it the book starts over.
    const CAPACITY: usize = 1024;

    /// [`member_address`], parsed once per member and address.
    pub fn resolve(&self, target: NodeId, info: &MemberInfo) -> Result<(PeerId, Multiaddr), TransportError> {
        let mut book = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((text, peer, address)) = book.get(&target) {
            if *text == info.p2p_addr {
                return Ok((*peer, address.clone()));
            }
        }
        let (peer, address) = member_address(target, info)?;
        if book.len() >= Self::CAPACITY {
            book.clear();
        }
        book.insert(target, (info.p2p_addr.clone(), peer, address.clone()));
        Ok((peer, address))
    }
}

/// The mesh's side of Raft.
pub struct MeshTransport {
    mesh: MeshHandle,
    liveness: Liveness,
    addresses: AddressBook,
}

impl MeshTransport {
    pub fn new(mesh: MeshHandle, liveness: Liveness) -> Self {
        MeshTransport { mesh, liveness, addresses: AddressBook::default() }
    }

    async fn call(
        &self,
        target: NodeId,
        info: &MemberInfo,
        request: MeshRequest,
        timeout: Duration,
    ) -> Result<MeshResponse, TransportError> {
        let (peer, address) = self.addresses.resolve(target, info)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn member(port: u16, peer: &PeerId) -> MemberInfo {
        MemberInfo { p2p_addr: format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"), api_addr: String::new() }
    }

    #[test]
    fn the_address_book_parses_a_member_again_only_when_its_address_changes() {
        let book = AddressBook::default();
        let (first, second) = (PeerId::random(), PeerId::random());
        let (peer, address) = book.resolve(7, &member(4001, &first)).unwrap();
        assert_eq!((peer, address.to_string()), (first, member(4001, &first).p2p_addr));
        assert_eq!(book.resolve(7, &member(4001, &first)).unwrap().0, first);
        // The same member at a new address, with a new identity.
        let (peer, address) = book.resolve(7, &member(4002, &second)).unwrap();
        assert_eq!((peer, address.to_string()), (second, member(4002, &second).p2p_addr));
        // What does not parse is refused, and the member's last good entry is not used for it.
        let unparsable = MemberInfo { p2p_addr: "/ip4/127.0.0.1/tcp/4003".into(), api_addr: String::new() };
        assert!(matches!(book.resolve(7, &unparsable), Err(TransportError::Failed { target: 7, .. })));
        let garbage = MemberInfo { p2p_addr: "not an address".into(), api_addr: String::new() };
        assert!(matches!(book.resolve(8, &garbage), Err(TransportError::Failed { target: 8, .. })));
    }

    #[test]
    fn the_address_book_stays_within_its_capacity() {
        let book = AddressBook::default();
        let peer = PeerId::random();
        for id in 0..(AddressBook::CAPACITY as u64 + 10) {
            book.resolve(id, &member(4001, &peer)).unwrap();
        }
        assert!(book.0.lock().unwrap().len() <= AddressBook::CAPACITY);
    }
}
