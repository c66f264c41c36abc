//! Read-index batching: linearizable reads that arrive while a leadership
//! confirmation is in flight share the next one, instead of each costing a
//! round to a quorum. A read joins only a round that has not started yet, so
//! the confirmation it gets began after the read arrived: linearizable.
//! [`SharedRounds`] is that scheme for any operation (a follower shares its
//! requests for the leader's read index the same way).

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use openraft::error::{CheckIsLeaderError, RaftError};

use crate::error::ConsensusError;
use crate::types::Raft;

/// How long a read-index round that found no quorum in time is retried.
const READ_INDEX_RETRIES_FOR: std::time::Duration = std::time::Duration::from_secs(2);
/// The pause before a retried round: a round that fails at once does not
/// spin.
const READ_INDEX_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

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

/// Rounds of one operation whose answer callers may share: a caller joins
/// the round that has not started yet, or makes one; at most one round runs
/// at a time and one waits to start. A caller's round therefore starts
/// after the caller arrived, which is what lets linearizable reads share a
/// leadership confirmation. Each round runs in its own task, so a caller
/// that gives up cannot strand the others.
pub struct SharedRounds<R> {
    /// The round new callers join; taken when it starts.
    pending: Arc<Mutex<Option<watch::Receiver<Option<R>>>>>,
    /// Held by the round in flight.
    in_flight: Arc<tokio::sync::Mutex<()>>,
}

impl<R> Default for SharedRounds<R> {
    fn default() -> Self {
        SharedRounds { pending: Arc::default(), in_flight: Arc::default() }
    }
}

impl<R: Clone + Send + Sync + 'static> SharedRounds<R> {
    /// The outcome of a round that starts after this call: the one waiting
    /// to start, or a new one that runs `round()` once the round in flight
    /// ends. `None` if the round's task was dropped (the runtime stopping).
    pub async fn join<F, Fut>(&self, round: F) -> Option<R>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = R> + Send + 'static,
    {
        let mut outcome = {
            let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match &*pending {
                Some(waiting) => waiting.clone(),
                None => {
                    let (publish, waiting) = watch::channel::<Option<R>>(None);
                    *pending = Some(waiting.clone());
                    let (pending, in_flight) = (self.pending.clone(), self.in_flight.clone());
                    tokio::spawn(async move {
                        let _turn = in_flight.lock_owned().await;
                        // From here on, new callers make the next round.
                        pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
                        let _ = publish.send(Some(round().await));
                    });
                    waiting
                }
            }
        };
        // Bound before returning: the watch's guard must go before `outcome`.
        let shared = outcome.wait_for(Option::is_some).await.ok()?.clone();
        shared
    }
}

/// Linearizable reads' leadership confirmations, shared (see [`SharedRounds`]).
pub(crate) struct ReadIndexBatcher {
    raft: Raft,
    rounds: SharedRounds<Result<u64, SharedError>>,
}

impl ReadIndexBatcher {
    pub fn new(raft: Raft) -> Self {
        ReadIndexBatcher { raft, rounds: SharedRounds::default() }
    }

    /// A read index confirmed by a quorum after this call began. A round
    /// that a quorum did not answer within openraft's heartbeat deadline (a
    /// member busy with a slow fsync) is tried again for up to
    /// [`READ_INDEX_RETRIES_FOR`] before the read fails.
    pub async fn read_index(&self) -> Result<u64, ConsensusError> {
        let raft = self.raft.clone();
        let confirmed = self
            .rounds
            .join(move || async move {
                let deadline = tokio::time::Instant::now() + READ_INDEX_RETRIES_FOR;
                loop {
                    match raft.get_read_log_id().await {
                        Ok((read_log_id, _applied)) => return Ok(read_log_id.map_or(0, |log_id| log_id.index)),
                        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))
                            if tokio::time::Instant::now() < deadline =>
                        {
                            tokio::time::sleep(READ_INDEX_RETRY_PAUSE).await;
                        }
                        Err(error) => return Err(SharedError::from(ConsensusError::from(error))),
                    }
                }
            })
            .await
            .unwrap_or(Err(SharedError::ShuttingDown));
        confirmed.map_err(ConsensusError::from)
    }
}
