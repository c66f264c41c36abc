//! An in-process [`RaftTransport`]: members of one process call each other's
//! Raft directly. Used by tests, benchmarks and the single-process demo; it
//! can drop a member (a crash) and cut members off from each other (a
//! partition).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::InstallSnapshotError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use zeromesh_protocol::{MemberInfo, NodeId};

use crate::network::{RaftTransport, RemoteResult, TransportError};
use crate::types::{Raft, TypeConfig};

#[derive(Default)]
struct Routes {
    members: BTreeMap<NodeId, Raft>,
    isolated: BTreeSet<NodeId>,
}

/// The switchboard of an in-process cluster. Each member sends through its
/// own [`InProcessRouter::endpoint`].
#[derive(Clone, Default)]
pub struct InProcessRouter {
    routes: Arc<Mutex<Routes>>,
}

/// One member's sending side of an [`InProcessRouter`].
pub struct Endpoint {
    router: InProcessRouter,
    source: NodeId,
}

impl InProcessRouter {
    pub fn new() -> Self {
        Self::default()
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The transport that member `source` sends through.
    pub fn endpoint(&self, source: NodeId) -> Endpoint {
        Endpoint { router: self.clone(), source }
    }

    /// Makes `raft` reachable as member `id`.
    pub fn connect(&self, id: NodeId, raft: Raft) {
        self.routes().members.insert(id, raft);
    }

    /// Makes member `id` unreachable and drops the router's handle on it.
    pub fn disconnect(&self, id: NodeId) {
        self.routes().members.remove(&id);
    }

    /// Cuts member `id` off from every other member, both ways.
    pub fn isolate(&self, id: NodeId) {
        self.routes().isolated.insert(id);
    }

    /// Undoes [`InProcessRouter::isolate`].
    pub fn heal(&self, id: NodeId) {
        self.routes().isolated.remove(&id);
    }

    fn route(&self, source: NodeId, target: NodeId) -> Result<Raft, TransportError> {
        let routes = self.routes();
        if routes.isolated.contains(&source) || routes.isolated.contains(&target) {
            return Err(TransportError::Unreachable { target, reason: "partitioned".into() });
        }
        routes
            .members
            .get(&target)
            .cloned()
            .ok_or_else(|| TransportError::Unreachable { target, reason: "not running".into() })
    }
}

impl Endpoint {
    async fn call<R, F>(
        &self,
        target: NodeId,
        timeout: Duration,
        send: impl FnOnce(Raft) -> F,
    ) -> Result<R, TransportError>
    where
        F: Future<Output = R>,
    {
        let raft = self.router.route(self.source, target)?;
        let reply = tokio::time::timeout(timeout, send(raft))
            .await
            .map_err(|_| TransportError::Timeout { target, timeout_ms: timeout.as_millis() as u64 })?;
        // A partition that began while the call was in flight loses the answer.
        self.router.route(self.source, target)?;
        Ok(reply)
    }
}

impl RaftTransport for Endpoint {
    async fn append_entries(
        &self,
        target: NodeId,
        _target_info: &MemberInfo,
        request: AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<RemoteResult<AppendEntriesResponse<NodeId>>, TransportError> {
        self.call(target, timeout, |raft| async move { raft.append_entries(request).await }).await
    }

    async fn vote(
        &self,
        target: NodeId,
        _target_info: &MemberInfo,
        request: VoteRequest<NodeId>,
        timeout: Duration,
    ) -> Result<RemoteResult<VoteResponse<NodeId>>, TransportError> {
        self.call(target, timeout, |raft| async move { raft.vote(request).await }).await
    }

    async fn install_snapshot(
        &self,
        target: NodeId,
        _target_info: &MemberInfo,
        request: InstallSnapshotRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<RemoteResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError>, TransportError> {
        self.call(target, timeout, |raft| async move { raft.install_snapshot(request).await }).await
    }
}
