//! A follower's side of forwarding: writes that reach a follower travel to
//! the leader together, and linearizable reads share their requests for the
//! leader's read index.
//!
//! Writes: group commit at the follower. A group forms while earlier
//! groups are on their way (at most `MAX_PROPOSALS_IN_FLIGHT`), so a lone
//! write leaves at once and adds no delay; a group holds at most
//! `MAX_BATCH_COMMANDS` commands and `MAX_BATCH_BYTES`, the limits of one
//! Raft entry, and only writes for the same leader. The leader answers each
//! write on its own, so one caller's failed compare-and-set or refusal never
//! touches another's.
//!
//! Reads: a request for the read index joins only one that has not been
//! sent yet ([`SharedRounds`]), so the leadership confirmation behind its
//! answer began after the read arrived: still linearizable.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use zeromesh_consensus::SharedRounds;
use zeromesh_protocol::limits::MAX_PENDING_WRITES;
use zeromesh_protocol::{MemberInfo, MemoryBatch, NodeId};

use super::batcher::Groups;
use super::transport::AddressBook;
use crate::mesh::messages::{MeshError, MeshRequest, MeshResponse};
use crate::mesh::{MeshHandle, MeshSendError};

/// What a caller gets back: the leader's answer to its own write (or read
/// index), shaped as if it had been sent alone.
type Answer = Result<MeshResponse, MeshSendError>;

struct Forward {
    leader: NodeId,
    peer: PeerId,
    address: Multiaddr,
    batch: MemoryBatch,
    deadline: Instant,
    reply: oneshot::Sender<Answer>,
}

/// A read-index answer, kept cloneable so the callers of one round share it.
#[derive(Clone)]
enum ReadIndexAnswer {
    Index(Result<u64, MeshError>),
    Refused(MeshError),
}

/// What this node forwarded to the leader, for `/metrics`.
#[derive(Default)]
pub struct ForwardCounters {
    /// Writes forwarded, and the requests that carried them.
    pub writes: AtomicU64,
    pub write_requests: AtomicU64,
    /// Linearizable reads that asked the leader, and the requests sent.
    pub reads: AtomicU64,
    pub read_index_requests: AtomicU64,
}

/// Forwards a follower's writes and read-index requests to the leader.
pub(super) struct Forwarder {
    mesh: MeshHandle,
    queue: mpsc::Sender<Forward>,
    read_indexes: SharedRounds<Result<ReadIndexAnswer, MeshSendError>>,
    addresses: AddressBook,
    pub counters: Arc<ForwardCounters>,
}

impl Forwarder {
    pub fn start(mesh: MeshHandle) -> Self {
        let (queue, pending) = mpsc::channel(MAX_PENDING_WRITES);
        let counters = Arc::new(ForwardCounters::default());
        tokio::spawn(send_groups(mesh.clone(), pending, counters.clone()));
        Forwarder { mesh, queue, read_indexes: SharedRounds::default(), addresses: AddressBook::default(), counters }
    }

    /// Sends `batch` to `leader` in the next group; the answer is the
    /// leader's for this batch, as `MeshResponse::Writes` of one.
    pub async fn write(&self, leader: NodeId, info: &MemberInfo, batch: MemoryBatch, timeout: Duration) -> Answer {
        let (peer, address) = self.address_of(leader, info)?;
        let (reply, answer) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        let forward = Forward { leader, peer, address, batch, deadline, reply };
        match tokio::time::timeout_at(deadline, self.queue.send(forward)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(MeshSendError::Stopped),
            // Never queued, so never sent.
            Err(_) => return Err(MeshSendError::Unreachable { peer, reason: "too many writes waiting here".into() }),
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(MeshSendError::Stopped),
            Err(_) => Err(MeshSendError::Timeout { peer, timeout_ms: timeout.as_millis() as u64 }),
        }
    }

    fn address_of(&self, member: NodeId, info: &MemberInfo) -> Result<(PeerId, Multiaddr), MeshSendError> {
        self.addresses
            .resolve(member, info)
            .map_err(|error| MeshSendError::Failed { peer: self.mesh.peer_id(), reason: error.to_string() })
    }

    /// The leader's read index, from a request sent after this call began
    /// (shared with the reads that arrived while the previous one was out).
    pub async fn read_index(&self, leader: NodeId, info: &MemberInfo, timeout: Duration) -> Answer {
        let (peer, address) = self.address_of(leader, info)?;
        self.counters.reads.fetch_add(1, Relaxed);
        let (mesh, counters) = (self.mesh.clone(), self.counters.clone());
        let round = move || async move {
            counters.read_index_requests.fetch_add(1, Relaxed);
            match mesh.request(peer, vec![address], MeshRequest::ReadIndex, timeout).await? {
                MeshResponse::ReadIndex(index) => Ok(ReadIndexAnswer::Index(index)),
                MeshResponse::Refused(error) => Ok(ReadIndexAnswer::Refused(error)),
                other => Err(MeshSendError::Lost {
                    peer,
                    reason: format!("the leader answered {other:?} to a read-index request"),
                }),
            }
        };
        let shared = tokio::time::timeout(timeout, self.read_indexes.join(round))
            .await
            .map_err(|_| MeshSendError::Timeout { peer, timeout_ms: timeout.as_millis() as u64 })?;
        match shared.ok_or(MeshSendError::Stopped)?? {
            ReadIndexAnswer::Index(index) => Ok(MeshResponse::ReadIndex(index)),
            ReadIndexAnswer::Refused(error) => Ok(MeshResponse::Refused(error)),
        }
    }
}

/// Groups queued writes (for one leader each) and sends each group, up
/// to `MAX_PROPOSALS_IN_FLIGHT` groups at once.
async fn send_groups(mesh: MeshHandle, queue: mpsc::Receiver<Forward>, counters: Arc<ForwardCounters>) {
    let mut groups = Groups::new(queue);
    let same_leader = |first: &Forward, next: &Forward| first.leader == next.leader;
    while let Some((mut group, slot)) = groups.next(|forward| &forward.batch.commands, same_leader).await {
        let (peer, address) = (group[0].peer, group[0].address.clone());
        // A caller that gave up was told the outcome is unknown: sending its
        // write is allowed, but not needed.
        group.retain(|forward| !forward.reply.is_closed());
        if group.is_empty() {
            continue;
        }
        counters.writes.fetch_add(group.len() as u64, Relaxed);
        counters.write_requests.fetch_add(1, Relaxed);
        let mesh = mesh.clone();
        tokio::spawn(async move {
            let deadline = group.iter().map(|forward| forward.deadline).max().unwrap_or_else(Instant::now);
            let (batches, replies): (Vec<_>, Vec<_>) =
                group.into_iter().map(|forward| (forward.batch, forward.reply)).unzip();
            let expected = batches.len();
            let timeout = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            let answer = mesh.request(peer, vec![address], MeshRequest::Writes(batches), timeout).await;
            drop(slot);
            for (reply, answer) in replies.into_iter().zip(split(answer, expected, peer)) {
                let _ = reply.send(answer);
            }
        });
    }
}

/// One answer per write of a group of `expected`, from the leader's answer
/// to the whole group.
fn split(answer: Answer, expected: usize, leader: PeerId) -> Vec<Answer> {
    match answer {
        Ok(MeshResponse::Writes(results)) if results.len() == expected => {
            results.into_iter().map(|result| Ok(MeshResponse::Writes(vec![result]))).collect()
        }
        Ok(MeshResponse::Refused(error)) => (0..expected).map(|_| Ok(MeshResponse::Refused(error.clone()))).collect(),
        Ok(other) => {
            let reason = format!("the leader answered {other:?} to {expected} forwarded writes");
            (0..expected).map(|_| Err(MeshSendError::Lost { peer: leader, reason: reason.clone() })).collect()
        }
        Err(error) => (0..expected).map(|_| Err(error.clone())).collect(),
    }
}
