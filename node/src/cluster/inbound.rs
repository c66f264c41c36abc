//! The mesh's inbound side: answers what other nodes ask. Raft messages,
//! forwarded writes, read-index requests, proposals, checkpoints and plugin
//! module fetches are taken only from members (or from anyone while this
//! node has no cluster yet, so a leader can reach a joiner); a peer outside
//! the cluster may only ask to join and for a node's status.

use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use futures::FutureExt;
use libp2p::PeerId;

use super::service::Cluster;
use crate::identity::node_id_of;
use crate::mesh::messages::{MeshError, MeshRequest, MeshResponse};
use crate::mesh::InboundHandler;

/// Answers inbound mesh requests once the node's cluster is up; before
/// that, every request is refused as "starting".
#[derive(Clone, Default)]
pub struct Inbound {
    cluster: Arc<OnceLock<Arc<Cluster>>>,
}

impl Inbound {
    pub fn set(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }
}

async fn sender_may_speak_raft(cluster: &Cluster, peer: &PeerId) -> bool {
    let members = cluster.consensus.members();
    members.contains_key(&node_id_of(peer)) || members.is_empty()
}

async fn answer(cluster: Arc<Cluster>, peer: PeerId, request: MeshRequest) -> MeshResponse {
    let members_only = !matches!(request, MeshRequest::Join(_) | MeshRequest::Status);
    if members_only && !sender_may_speak_raft(&cluster, &peer).await {
        return MeshResponse::Refused(MeshError::Refused(format!(
            "peer {peer} is not a member of this node's cluster"
        )));
    }
    let raft = cluster.consensus.raft();
    match request {
        MeshRequest::AppendEntries(request) => MeshResponse::AppendEntries(raft.append_entries(request).await),
        MeshRequest::Vote(request) => MeshResponse::Vote(raft.vote(request).await),
        MeshRequest::InstallSnapshot(request) => MeshResponse::InstallSnapshot(raft.install_snapshot(request).await),
        MeshRequest::Writes(batches) => match cluster.writes_as_leader(batches).await {
            Ok(results) => MeshResponse::Writes(results),
            Err(error) => MeshResponse::Refused(error),
        },
        MeshRequest::ReadIndex => MeshResponse::ReadIndex(cluster.read_index_as_leader().await),
        MeshRequest::Join(request) => MeshResponse::Join(cluster.join(request).await),
        MeshRequest::Status => MeshResponse::Status(cluster.own_status()),
        MeshRequest::Propose(command) => MeshResponse::Propose(cluster.propose_as_leader(command).await),
        MeshRequest::FetchPluginModule { sha256 } => {
            MeshResponse::FetchPluginModule(cluster.consensus.module(sha256).await.ok().flatten())
        }
        MeshRequest::CosignCheckpoint { size, root } => {
            MeshResponse::CosignCheckpoint(cluster.cosign(size, root).await)
        }
        MeshRequest::PublishCheckpoint(text) => MeshResponse::PublishCheckpoint(cluster.accept_checkpoint(text).await),
        MeshRequest::UpdateMember(info) => {
            MeshResponse::UpdateMember(cluster.update_member(node_id_of(&peer), info).await)
        }
    }
}

impl InboundHandler for Inbound {
    fn handle(&self, peer: PeerId, request: MeshRequest) -> BoxFuture<'static, MeshResponse> {
        match self.cluster.get() {
            Some(cluster) => answer(cluster.clone(), peer, request).boxed(),
            None => {
                futures::future::ready(MeshResponse::Refused(MeshError::Unavailable("node is starting".into()))).boxed()
            }
        }
    }
}
