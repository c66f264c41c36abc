//! Read-index batching: linearizable reads that arrive while a leadership
//! confirmation is in flight share the next one, instead of each costing a
//! round to a quorum. A read joins only a round that has not started yet, so
//! the confirmation it gets began after the read arrived: linearizable.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::error::ConsensusError;
use crate::types::Raft;

/// A round's outcome: the read index, or the error (kept cloneable).
type Outcome = Option<Result<u64, SharedError>>;

#[derive(Debug, Clone)]
enum SharedError {
    NotLeader { leader: Option<zeromesh_protocol::NodeId>, leader_info: Option<zeromesh_protocol::MemberInfo> },
    ShuttingDown,
    Other(String),
}

impl From<ConsensusError> for SharedError {
    fn from(error: ConsensusError) -> Self {
        match error {
            ConsensusError::NotLeader { leader, leader_info } => SharedError::NotLeader { leader, leader_info },
            ConsensusError::ShuttingDown => SharedError::ShuttingDown,
            other => SharedError::Other(other.to_string()),
        }
    }
}

impl From<SharedError> for ConsensusError {
    fn from(error: SharedError) -> Self {
        match error {
            SharedError::NotLeader { leader, leader_info } => ConsensusError::NotLeader { leader, leader_info },
            SharedError::ShuttingDown => ConsensusError::ShuttingDown,
            SharedError::Other(reason) => ConsensusError::Raft(reason),
        }
    }
}

/// At most one confirmation in flight and one waiting to start.
pub(crate) struct ReadIndexBatcher {
    raft: Raft,
    /// The round new readers join; taken when it starts.
    pending: Arc<Mutex<Option<watch::Receiver<Outcome>>>>,
    /// Held by the round in flight.
    in_flight: Arc<tokio::sync::Mutex<()>>,
}

impl ReadIndexBatcher {
    pub fn new(raft: Raft) -> Self {
        ReadIndexBatcher { raft, pending: Arc::default(), in_flight: Arc::default() }
    }

    /// A read index confirmed by a quorum after this call began.
    pub async fn read_index(&self) -> Result<u64, ConsensusError> {
        let mut outcome = {
            let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match &*pending {
                Some(round) => round.clone(),
                None => {
                    let (publish, round) = watch::channel::<Outcome>(None);
                    *pending = Some(round.clone());
                    self.start(publish);
                    round
                }
            }
        };
        // The round runs in its own task, so a caller that gives up cannot
        // strand the others.
        let result = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ConsensusError::ShuttingDown)?
            .clone()
            .unwrap_or(Err(SharedError::ShuttingDown));
        result.map_err(ConsensusError::from)
    }

    fn start(&self, publish: watch::Sender<Outcome>) {
        let (raft, pending, in_flight) = (self.raft.clone(), self.pending.clone(), self.in_flight.clone());
        tokio::spawn(async move {
            let _turn = in_flight.lock_owned().await;
            // From here on, new readers start the next round.
            pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            let confirmed = match raft.get_read_log_id().await {
                Ok((read_log_id, _applied)) => Ok(read_log_id.map_or(0, |log_id| log_id.index)),
                Err(error) => Err(SharedError::from(ConsensusError::from(error))),
            };
            let _ = publish.send(Some(confirmed));
        });
    }
}
