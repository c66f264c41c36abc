//! Getting a command to the leader: here if this node leads, else forwarded
//! over the mesh, retried across leader changes (`through_leader`, shared by
//! memory writes and the registry and token commands).

use std::time::Duration;

use zeromesh_consensus::ConsensusError;
use zeromesh_protocol::{Command, CommandReply, MemberInfo, NodeId};

use super::service::{
    Cluster, ServiceError, BUSY_RETRY_PAUSE, LEADER_COMMIT_TIMEOUT, LEADER_RETRY_PAUSE, REQUEST_TIMEOUT,
};
use crate::mesh::messages::{MeshError, MeshRequest, MeshResponse};
use crate::mesh::MeshSendError;

/// What a proposal that timed out on this node reports: it may still commit.
pub(super) fn timed_out_here() -> ServiceError {
    ServiceError::Unknown(format!(
        "proposed here but not committed within {} ms (is this node cut off from a quorum?)",
        REQUEST_TIMEOUT.as_millis()
    ))
}

impl Cluster {
    /// Proposes `command` and returns its log index and applied reply.
    pub async fn propose(&self, command: Command) -> Result<(u64, CommandReply), ServiceError> {
        command.validate().map_err(|error| ServiceError::Invalid(error.to_string()))?;
        self.check_disk()?;
        let command = &command;
        self.through_leader(
            "command",
            move || self.consensus.propose(command.clone()),
            move |leader, info, remaining| async move {
                self.send(leader, &info, MeshRequest::Propose(command.clone()), remaining).await
            },
            |response| match response {
                MeshResponse::Propose(result) => Ok(result),
                other => Err(other),
            },
            timed_out_here,
        )
        .await
    }

    /// Runs `here` while this node leads; otherwise asks the leader with
    /// `send(leader, its addresses, time left)` and takes its answer with
    /// `answer` (which hands back any other response). Retries across
    /// leader changes until `REQUEST_TIMEOUT`. `here` running out of time is
    /// reported by `timed_out_here`.
    pub(super) async fn through_leader<T, Here, HereFuture, Send, SendFuture>(
        &self,
        what: &str,
        here: Here,
        send: Send,
        answer: impl Fn(MeshResponse) -> Result<Result<T, MeshError>, MeshResponse>,
        timed_out_here: impl FnOnce() -> ServiceError,
    ) -> Result<T, ServiceError>
    where
        Here: Fn() -> HereFuture,
        HereFuture: std::future::Future<Output = Result<T, ConsensusError>>,
        Send: Fn(NodeId, MemberInfo, Duration) -> SendFuture,
        SendFuture: std::future::Future<Output = Result<MeshResponse, MeshSendError>>,
    {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(ServiceError::Unavailable(format!(
                    "no leader accepted the {what} within {} ms",
                    REQUEST_TIMEOUT.as_millis()
                )));
            }
            // Tried here unless another node is known to lead: a follower
            // does not put each request through its own Raft first.
            let elsewhere = self.consensus.known_leader().is_some_and(|(leader, _)| leader != self.node_id());
            if !elsewhere {
                match tokio::time::timeout(remaining, here()).await {
                    Ok(Ok(done)) => return Ok(done),
                    Ok(Err(ConsensusError::NotLeader { .. })) => {}
                    Ok(Err(other)) => return Err(other.into()),
                    Err(_) => return Err(timed_out_here()),
                }
            }
            let (leader, info) = self.leader(remaining).await?;
            if leader == self.node_id() {
                // Leadership is still being settled here; try again shortly.
                tokio::time::sleep(LEADER_RETRY_PAUSE).await;
                continue;
            }
            match send(leader, info, remaining).await.map(&answer) {
                Ok(Ok(Ok(done))) => return Ok(done),
                // The leader changed before it proposed: nothing was done; try the new one.
                Ok(Ok(Err(MeshError::NotLeader { .. }))) => tokio::time::sleep(LEADER_RETRY_PAUSE).await,
                Ok(Ok(Err(error))) => return Err(error.into()),
                Ok(Err(MeshResponse::Refused(MeshError::Unavailable(_)))) => tokio::time::sleep(BUSY_RETRY_PAUSE).await,
                Ok(Err(other)) => return Err(ServiceError::Unknown(format!("the leader answered {other:?}"))),
                // Not delivered (the leader is down or cut off): wait for a new one.
                Err(MeshSendError::Unreachable { .. }) => tokio::time::sleep(BUSY_RETRY_PAUSE).await,
                Err(error) => return Err(ServiceError::Unknown(error.to_string())),
            }
        }
    }

    /// Handles a command forwarded by another node: proposed only if this
    /// node leads.
    pub async fn propose_as_leader(&self, command: Command) -> Result<(u64, CommandReply), MeshError> {
        command.validate().map_err(|error| MeshError::Invalid(error.to_string()))?;
        let Ok(applied) = tokio::time::timeout(LEADER_COMMIT_TIMEOUT, self.consensus.propose(command)).await else {
            return Err(super::service::not_committed_on_leader());
        };
        match applied {
            Ok(applied) => Ok(applied),
            Err(ConsensusError::NotLeader { leader, .. }) => Err(MeshError::NotLeader { leader }),
            Err(error @ (ConsensusError::Invalid(_) | ConsensusError::Rejected(_))) => {
                Err(MeshError::Invalid(error.to_string()))
            }
            Err(error) => Err(MeshError::Unavailable(error.to_string())),
        }
    }
}
