//! The node's cluster operations: writes and reads that any node accepts
//! and forwards to the leader when needed, joins, and status. The tools, the
//! plugins and the mesh's inbound side all call it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use zeromesh_consensus::{ClusterView, ConsensusError, ConsensusNode, Consistency, ReadQuery, ReadReply, TraceHead};
use zeromesh_protocol::limits::{MAX_BATCH_BYTES, MAX_BATCH_COMMANDS};
use zeromesh_protocol::{MemberInfo, MemoryBatch, MemoryCommand, NodeId};

use super::batcher::WriteBatcher;
use super::forward::Forwarder;
use super::transport::{member_address, Liveness};
use crate::mesh::messages::{
    JoinAccepted, JoinRequest, MeshError, MeshRequest, MeshResponse, NodeStatus, WriteAccepted,
};
use crate::mesh::{peer_of, MeshHandle, MeshSendError};

/// How long a write or read waits for a leader and for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a leader waits for a forwarded proposal to commit: less than
/// the forwarding node waits, so the forwarder hears "outcome unknown" from
/// the leader rather than nothing.
pub const LEADER_COMMIT_TIMEOUT: Duration = Duration::from_secs(8);

/// What a leader answers a forwarded proposal that did not commit in time.
pub(super) fn not_committed_on_leader() -> MeshError {
    MeshError::Unknown(format!(
        "the leader proposed it but it was not committed within {} ms (is the leader cut off from a quorum?)",
        LEADER_COMMIT_TIMEOUT.as_millis()
    ))
}

/// How long a status query waits for each member.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
const TOKEN_HASH_FILE: &str = "join-token.sha256";
/// Pause before asking again while leadership is changing hands.
pub(super) const LEADER_RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Pause before asking again a leader that was busy or unreachable.
pub(super) const BUSY_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Why a client's request failed, in words the client can act on.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Refused(String),
    #[error("the outcome is unknown: {0}; it may or may not have been applied: read it back to find out")]
    Unknown(String),
}

impl ServiceError {
    /// The error's kind, as the API's `_meta["zeromesh/error"]` names it: a
    /// client tells "nothing was done" (`invalid`, `refused`, `unavailable`)
    /// from "it may have been done" (`outcome_unknown`).
    pub fn kind(&self) -> &'static str {
        match self {
            ServiceError::Invalid(_) => "invalid",
            ServiceError::Unavailable(_) => "unavailable",
            ServiceError::Refused(_) => "refused",
            ServiceError::Unknown(_) => "outcome_unknown",
        }
    }
}

impl From<ConsensusError> for ServiceError {
    fn from(error: ConsensusError) -> Self {
        match error {
            ConsensusError::Invalid(_) | ConsensusError::Rejected(_) => ServiceError::Invalid(error.to_string()),
            other => ServiceError::Unavailable(other.to_string()),
        }
    }
}

impl From<MeshError> for ServiceError {
    fn from(error: MeshError) -> Self {
        match error {
            MeshError::Invalid(reason) => ServiceError::Invalid(reason),
            MeshError::Refused(reason) => ServiceError::Refused(reason),
            MeshError::Unknown(reason) => ServiceError::Unknown(reason),
            other => ServiceError::Unavailable(other.to_string()),
        }
    }
}

/// Hex SHA-256 of a join token: what nodes keep instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How a linearizable read was served: here (this node leads), or at the
/// read index the leader confirmed.
enum Served {
    Here(ReadReply),
    At(u64),
}

/// One node's cluster operations.
pub struct Cluster {
    pub consensus: Arc<ConsensusNode>,
    batcher: WriteBatcher,
    forwarder: Forwarder,
    pub mesh: MeshHandle,
    pub info: MemberInfo,
    pub liveness: Liveness,
    /// This node's `--voter-count`: the cluster's until one is set through the log.
    pub configured_voter_count: usize,
    pub voter_timeout: Duration,
    /// A non-voter unreachable this long is removed from the cluster.
    pub remove_after: Duration,
    pub(super) data_dir: PathBuf,
    /// Bytes this node keeps free on its data disk (see `disk`).
    pub min_free_disk: u64,
    pub(super) disk_verdict: super::disk::DiskVerdict,
    token_hash: Mutex<Option<String>>,
    pub checkpoints: super::checkpoint::Checkpoints,
}

impl Cluster {
    pub fn new(
        consensus: ConsensusNode,
        mesh: MeshHandle,
        info: MemberInfo,
        liveness: Liveness,
        voter_count: usize,
        voter_timeout: Duration,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        let stored = match std::fs::read_to_string(data_dir.join(TOKEN_HASH_FILE)) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(error.into()),
        };
        let consensus = Arc::new(consensus);
        Ok(Cluster {
            batcher: WriteBatcher::start(consensus.clone()),
            forwarder: Forwarder::start(mesh.clone()),
            consensus,
            mesh,
            info,
            liveness,
            configured_voter_count: voter_count,
            voter_timeout,
            remove_after: Duration::from_millis(crate::config::DEFAULT_MEMBER_REMOVE_AFTER_MS),
            data_dir: data_dir.to_owned(),
            min_free_disk: crate::config::DEFAULT_MIN_FREE_DISK_MB << 20,
            disk_verdict: Default::default(),
            token_hash: Mutex::new(stored),
            checkpoints: super::checkpoint::Checkpoints::default(),
        })
    }

    /// The voters the cluster keeps: as set through the log (by the node
    /// that made the cluster, and by `cluster_set_voters`), else this
    /// node's `--voter-count`.
    pub fn voter_count(&self) -> usize {
        match self.consensus.voter_count_setting() {
            Ok(Some(count)) => count as usize,
            _ => self.configured_voter_count,
        }
    }

    /// Sets the bytes this node keeps free on its data disk.
    pub fn with_disk_reserve(mut self, bytes: u64) -> Self {
        self.min_free_disk = bytes;
        self
    }

    /// Sets how long a non-voter may stay unreachable before it is removed.
    pub fn with_member_removal(mut self, after: Duration) -> Self {
        self.remove_after = after;
        self
    }

    /// Gives the node the key it cosigns trace checkpoints with.
    pub fn with_checkpoint_key(mut self, key: ed25519_dalek::SigningKey) -> Self {
        self.checkpoints = super::checkpoint::Checkpoints::new(key);
        self
    }

    /// What this node forwarded to the leader.
    pub fn forwarded(&self) -> &super::forward::ForwardCounters {
        &self.forwarder.counters
    }

    pub fn node_id(&self) -> NodeId {
        self.consensus.id()
    }

    /// Keeps the hash of the cluster's join token, so this node can check
    /// joiners' tokens if it leads one day.
    pub fn remember_token(&self, token: &str) -> anyhow::Result<()> {
        let hash = token_hash(token);
        write_durably(&self.data_dir.join(TOKEN_HASH_FILE), format!("{hash}\n").as_bytes())?;
        *self.token_hash.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(hash);
        Ok(())
    }

    fn token_matches(&self, token: &str) -> bool {
        let stored = self.token_hash.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        match stored {
            // Compare digests, not tokens: the time taken says nothing about the token.
            Some(stored) => stored.as_bytes() == token_hash(token).as_bytes(),
            None => false,
        }
    }

    /// Waits (up to `timeout`) for a known leader and returns it with its addresses.
    pub(super) async fn leader(&self, timeout: Duration) -> Result<(NodeId, MemberInfo), ServiceError> {
        if let Some((leader, Some(info))) = self.consensus.known_leader() {
            return Ok((leader, info));
        }
        let view =
            self.consensus.wait_for("a leader to be known", timeout, |view| view.leader.is_some()).await.map_err(
                |_| {
                    ServiceError::Unavailable(format!(
                        "no leader is known after {} ms; is a quorum of voters up?",
                        timeout.as_millis()
                    ))
                },
            )?;
        let leader = view.leader.unwrap_or_default();
        let info = self.consensus.members().get(&leader).cloned().ok_or_else(|| {
            ServiceError::Unavailable(format!("the leader {leader} is not in this node's membership yet; retry"))
        })?;
        Ok((leader, info))
    }

    /// Sends `request` to member `target`.
    async fn ask(
        &self,
        target: NodeId,
        info: &MemberInfo,
        request: MeshRequest,
        timeout: Duration,
    ) -> Result<MeshResponse, ServiceError> {
        self.send(target, info, request, timeout).await.map_err(|error| ServiceError::Unavailable(error.to_string()))
    }

    pub(super) async fn send(
        &self,
        target: NodeId,
        info: &MemberInfo,
        request: MeshRequest,
        timeout: Duration,
    ) -> Result<MeshResponse, MeshSendError> {
        let (peer, address) = member_address(target, info)
            .map_err(|error| MeshSendError::Failed { peer: self.mesh.peer_id(), reason: error.to_string() })?;
        self.mesh.request(peer, vec![address], request, timeout).await
    }

    /// Proposes `batch`, here if this node leads, else through the leader.
    pub async fn write(&self, batch: MemoryBatch) -> Result<WriteAccepted, ServiceError> {
        batch.validate().map_err(|error| ServiceError::Invalid(error.to_string()))?;
        self.check_disk()?;
        let batch = &batch;
        self.through_leader(
            "write",
            move || async move {
                let receipt = self.batcher.write(batch.clone()).await?;
                Ok(WriteAccepted { log_index: receipt.log_index, outcomes: receipt.outcomes })
            },
            move |leader, info, remaining| async move {
                self.forwarder.write(leader, &info, batch.clone(), remaining).await
            },
            |response| match response {
                MeshResponse::Writes(results) => match <[_; 1]>::try_from(results) {
                    Ok([result]) => Ok(result),
                    Err(results) => Err(MeshResponse::Writes(results)),
                },
                other => Err(other),
            },
            super::propose::timed_out_here,
        )
        .await
    }

    /// Handles writes forwarded together by another node: each proposed
    /// (only if this node leads) and answered on its own, all at once so
    /// they can share Raft entries. Validated again, the group's size too:
    /// the mesh is outside input.
    pub async fn writes_as_leader(
        &self,
        batches: Vec<MemoryBatch>,
    ) -> Result<Vec<Result<WriteAccepted, MeshError>>, MeshError> {
        let commands: usize = batches.iter().map(|batch| batch.commands.len()).sum();
        let bytes: usize = batches.iter().flat_map(|batch| &batch.commands).map(MemoryCommand::encoded_bytes).sum();
        if commands > MAX_BATCH_COMMANDS || bytes > MAX_BATCH_BYTES {
            return Err(MeshError::Invalid(format!(
                "forwarded writes hold {commands} commands and {bytes} bytes; at most {MAX_BATCH_COMMANDS} and {MAX_BATCH_BYTES} travel together"
            )));
        }
        // A write that is not valid is refused alone (`Some`); the others
        // (`None`) are proposed together.
        let mut answers: Vec<Option<Result<WriteAccepted, MeshError>>> = Vec::with_capacity(batches.len());
        let mut valid = Vec::with_capacity(batches.len());
        for batch in batches {
            match batch.validate() {
                Ok(()) => {
                    answers.push(None);
                    valid.push(batch);
                }
                Err(error) => answers.push(Some(Err(MeshError::Invalid(error.to_string())))),
            }
        }
        if valid.is_empty() {
            return Ok(answers.into_iter().flatten().collect());
        }
        let mut written = match tokio::time::timeout(LEADER_COMMIT_TIMEOUT, self.batcher.write_all(valid)).await {
            Ok(Ok(receipts)) => Ok(receipts.into_iter()),
            Ok(Err(ConsensusError::NotLeader { leader, .. })) => Err(MeshError::NotLeader { leader }),
            Ok(Err(error @ (ConsensusError::Invalid(_) | ConsensusError::Rejected(_)))) => {
                Err(MeshError::Invalid(error.to_string()))
            }
            Ok(Err(error)) => Err(MeshError::Unavailable(error.to_string())),
            Err(_) => Err(not_committed_on_leader()),
        };
        Ok(answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| match &mut written {
                    Ok(receipts) => receipts
                        .next()
                        .map(|receipt| WriteAccepted { log_index: receipt.log_index, outcomes: receipt.outcomes })
                        .ok_or_else(|| MeshError::Unavailable("a forwarded write got no receipt".into())),
                    Err(error) => Err(error.clone()),
                })
            })
            .collect())
    }

    /// The leader's read index, if this node leads.
    pub async fn read_index_as_leader(&self) -> Result<u64, MeshError> {
        let Ok(confirmed) = tokio::time::timeout(REQUEST_TIMEOUT, self.consensus.read_index()).await else {
            return Err(MeshError::Unavailable(format!(
                "leadership not confirmed within {} ms",
                REQUEST_TIMEOUT.as_millis()
            )));
        };
        match confirmed {
            Ok(index) => Ok(index),
            Err(ConsensusError::NotLeader { leader, .. }) => Err(MeshError::NotLeader { leader }),
            Err(error) => Err(MeshError::Unavailable(error.to_string())),
        }
    }

    /// Reads at `consistency`. A linearizable read on a follower asks the
    /// leader for its read index, waits to apply it, and reads here.
    pub async fn read(&self, consistency: Consistency, query: ReadQuery) -> Result<ReadReply, ServiceError> {
        query.validate().map_err(|error| ServiceError::Invalid(error.to_string()))?;
        if consistency == Consistency::Stale {
            return Ok(self.consensus.read(Consistency::Stale, query).await?);
        }
        let started = tokio::time::Instant::now();
        let query = &query;
        let served = self
            .through_leader(
                "read",
                move || async move { self.consensus.read(Consistency::Linearizable, query.clone()).await.map(Served::Here) },
                move |leader, info, remaining| async move {
                    self.forwarder.read_index(leader, &info, remaining).await
                },
                |response| match response {
                    MeshResponse::ReadIndex(result) => Ok(result.map(Served::At)),
                    other => Err(other),
                },
                || {
                    ServiceError::Unavailable(format!(
                        "leadership not confirmed by a quorum within {} ms (is this node cut off?)",
                        REQUEST_TIMEOUT.as_millis()
                    ))
                },
            )
            .await
            // A read changes nothing, so no outcome is ever unknown: it just failed.
            .map_err(|error| match error {
                ServiceError::Unknown(reason) => ServiceError::Unavailable(reason),
                other => other,
            })?;
        match served {
            Served::Here(reply) => Ok(reply),
            Served::At(read_index) => {
                let remaining = REQUEST_TIMEOUT.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
                Ok(self.consensus.read_at(read_index, query.clone(), remaining).await?)
            }
        }
    }

    /// Waits until this node has applied every entry committed when it was
    /// called: a linearizable read through the leader's read index, whose
    /// answer is not used.
    pub async fn catch_up(&self) -> Result<(), ServiceError> {
        let path = zeromesh_protocol::MemoryPath::parse("zeromesh/catch-up").expect("a valid path");
        self.read(Consistency::Linearizable, ReadQuery::Get { path, version: None }).await.map(drop)
    }

    /// Admits a joiner (on the leader) or passes the request to the leader.
    pub async fn join(&self, request: JoinRequest) -> Result<JoinAccepted, MeshError> {
        let view = self.consensus.cluster_view();
        if view.leader != Some(self.node_id()) {
            let (leader, info) =
                self.leader(REQUEST_TIMEOUT).await.map_err(|e| MeshError::Unavailable(e.to_string()))?;
            if leader != self.node_id() {
                return match self.ask(leader, &info, MeshRequest::Join(request), REQUEST_TIMEOUT).await {
                    Ok(MeshResponse::Join(result)) => result,
                    Ok(other) => Err(MeshError::Unavailable(format!("the leader answered {other:?}"))),
                    Err(error) => Err(MeshError::Unavailable(error.to_string())),
                };
            }
        }
        if !self.token_matches(&request.token) {
            return Err(MeshError::Refused(
                "wrong join token: give the token the --init node printed (--join-token or ZEROMESH_JOIN_TOKEN)".into(),
            ));
        }
        check_own_address(request.node_id, &request.info)?;
        if let Some(known) = self.consensus.members().get(&request.node_id) {
            if *known == request.info {
                return Ok(JoinAccepted {
                    leader: self.node_id(),
                    membership_log_index: view.applied_index.unwrap_or(0),
                });
            }
        }
        tracing::info!(node = request.node_id, info = %request.info, "adding a learner");
        match self.consensus.add_learner_now(request.node_id, request.info).await {
            Ok(index) => Ok(JoinAccepted { leader: self.node_id(), membership_log_index: index }),
            Err(ConsensusError::NotLeader { leader, .. }) => Err(MeshError::NotLeader { leader }),
            Err(error) => Err(MeshError::Unavailable(error.to_string())),
        }
    }

    /// Puts member `id`'s new addresses in the membership (on the leader):
    /// a member restarted on other ports or another IP asks it for itself.
    pub async fn update_member(&self, id: NodeId, info: MemberInfo) -> Result<u64, MeshError> {
        check_own_address(id, &info)?;
        let view = self.consensus.cluster_view();
        if view.leader != Some(self.node_id()) {
            return Err(MeshError::NotLeader { leader: view.leader });
        }
        match self.consensus.members().get(&id) {
            None => return Err(MeshError::Refused(format!("node {id} is not a member"))),
            Some(known) if *known == info => return Ok(view.applied_index.unwrap_or(0)),
            Some(_) => {}
        }
        tracing::info!(node = id, %info, "a member's addresses changed");
        match self.consensus.set_member_info(id, info).await {
            Ok(index) => Ok(index),
            Err(ConsensusError::NotLeader { leader, .. }) => Err(MeshError::NotLeader { leader }),
            Err(error) => Err(MeshError::Unavailable(error.to_string())),
        }
    }

    /// Whether the membership holds this node's current addresses; if not,
    /// has the leader put them there. Called periodically: a member
    /// restarted elsewhere is reachable again once it did.
    pub async fn keep_own_address(&self) {
        let id = self.node_id();
        if self.consensus.members().get(&id).is_none_or(|known| *known == self.info) {
            return;
        }
        let outcome = match self.leader(REQUEST_TIMEOUT).await {
            Ok((leader, _)) if leader == id => self.update_member(id, self.info.clone()).await,
            Ok((leader, info)) => {
                match self.ask(leader, &info, MeshRequest::UpdateMember(self.info.clone()), REQUEST_TIMEOUT).await {
                    Ok(MeshResponse::UpdateMember(result)) => result,
                    Ok(other) => Err(MeshError::Unavailable(format!("the leader answered {other:?}"))),
                    Err(error) => Err(MeshError::Unavailable(error.to_string())),
                }
            }
            Err(error) => Err(MeshError::Unavailable(error.to_string())),
        };
        match outcome {
            Ok(index) => tracing::info!(index, info = %self.info, "this node's new addresses are in the membership"),
            Err(error) => tracing::info!(%error, "this node's new addresses are not in the membership yet; will retry"),
        }
    }

    /// This node's own view, as other nodes ask for it.
    pub fn own_status(&self) -> NodeStatus {
        status_of(
            &self.consensus.cluster_view(),
            &self.consensus.trace_head(),
            &self.mesh.peer_id().to_string(),
            &self.info,
        )
    }

    /// Every member's addresses in the membership and its own view (asked
    /// over the mesh at those addresses, in parallel), by id.
    pub async fn member_statuses(&self) -> BTreeMap<NodeId, (MemberInfo, Result<NodeStatus, String>)> {
        let members = self.consensus.members();
        let asks = members.into_iter().map(|(id, info)| async move {
            if id == self.node_id() {
                return (id, (info, Ok(self.own_status())));
            }
            let answer = match self.ask(id, &info, MeshRequest::Status, STATUS_TIMEOUT).await {
                Ok(MeshResponse::Status(status)) => Ok(status),
                Ok(other) => Err(format!("answered {other:?}")),
                Err(error) => Err(error.to_string()),
            };
            (id, (info, answer))
        });
        futures::future::join_all(asks).await.into_iter().collect()
    }
}

/// A [`NodeStatus`] from a Raft view.
pub fn status_of(view: &ClusterView, trace: &TraceHead, peer_id: &str, info: &MemberInfo) -> NodeStatus {
    NodeStatus {
        node_id: view.node_id,
        peer_id: peer_id.to_owned(),
        role: format!("{:?}", view.state),
        term: view.term,
        leader: view.leader,
        voters: view.voters.iter().copied().collect(),
        non_voters: view.learners.iter().copied().collect(),
        last_log_index: view.last_log_index,
        applied_index: view.applied_index,
        snapshot_index: view.snapshot_index,
        trace_size: trace.size,
        trace_root: trace.root.to_hex(),
        info: info.clone(),
    }
}

/// Writes `bytes` to `path` whole or not at all: to a temporary file,
/// synced, then renamed over it.
pub(crate) fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes)?;
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// Checks that `info`'s mesh address names the peer whose node id is `id`.
fn check_own_address(id: NodeId, info: &MemberInfo) -> Result<(), MeshError> {
    let address: libp2p::Multiaddr =
        info.p2p_addr.parse().map_err(|_| MeshError::Invalid(format!("{:?} is not a multiaddr", info.p2p_addr)))?;
    let peer = peer_of(&address).ok_or_else(|| MeshError::Invalid("the address has no /p2p/ peer id".into()))?;
    if crate::identity::node_id_of(&peer) != id {
        return Err(MeshError::Invalid(format!("node id {id} is not the id of peer {peer}")));
    }
    Ok(())
}
