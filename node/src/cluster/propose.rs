//! Proposing commands other than memory writes (the plugin registry's):
//! here if this node leads, else forwarded to the leader. Memory writes take
//! the batched path in `service`.

use zeromesh_consensus::ConsensusError;
use zeromesh_protocol::{Command, CommandReply};

use super::service::{NodeService, ServiceError, BUSY_RETRY_PAUSE, LEADER_RETRY_PAUSE, REQUEST_TIMEOUT};
use crate::mesh::messages::{MeshError, MeshRequest, MeshResponse};
use crate::mesh::MeshSendError;

impl NodeService {
    /// Proposes `command` and returns its log index and applied reply.
    pub async fn propose(&self, command: Command) -> Result<(u64, CommandReply), ServiceError> {
        command.validate().map_err(|error| ServiceError::Invalid(error.to_string()))?;
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(ServiceError::Unavailable(format!(
                    "no leader accepted the command within {} ms",
                    REQUEST_TIMEOUT.as_millis()
                )));
            }
            match tokio::time::timeout(remaining, self.consensus.propose(command.clone())).await {
                Ok(Ok(applied)) => return Ok(applied),
                Ok(Err(ConsensusError::NotLeader { .. })) => {}
                Ok(Err(other)) => return Err(other.into()),
                Err(_) => {
                    return Err(ServiceError::Unknown(format!(
                        "proposed here but not committed within {} ms (is this node cut off from a quorum?)",
                        REQUEST_TIMEOUT.as_millis()
                    )))
                }
            }
            let (leader, info) = self.leader(remaining).await?;
            if leader == self.node_id() {
                tokio::time::sleep(LEADER_RETRY_PAUSE).await;
                continue;
            }
            match self.send(leader, &info, MeshRequest::Propose(command.clone()), remaining).await {
                Ok(MeshResponse::Propose(Ok(applied))) => return Ok(applied),
                Ok(MeshResponse::Propose(Err(MeshError::NotLeader { .. }))) => {
                    tokio::time::sleep(LEADER_RETRY_PAUSE).await;
                }
                Ok(MeshResponse::Propose(Err(error))) => return Err(error.into()),
                Ok(MeshResponse::Refused(MeshError::Unavailable(_))) => tokio::time::sleep(BUSY_RETRY_PAUSE).await,
                Ok(other) => return Err(ServiceError::Unknown(format!("the leader answered {other:?}"))),
                Err(MeshSendError::Unreachable { .. }) => tokio::time::sleep(BUSY_RETRY_PAUSE).await,
                Err(error) => return Err(ServiceError::Unknown(error.to_string())),
            }
        }
    }

    /// Handles a command forwarded by another node: proposed only if this
    /// node leads.
    pub async fn propose_as_leader(&self, command: Command) -> Result<(u64, CommandReply), MeshError> {
        command.validate().map_err(|error| MeshError::Invalid(error.to_string()))?;
        let Ok(applied) = tokio::time::timeout(REQUEST_TIMEOUT, self.consensus.propose(command)).await else {
            return Err(MeshError::Unavailable(format!("not committed within {} ms", REQUEST_TIMEOUT.as_millis())));
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
