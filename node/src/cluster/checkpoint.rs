//! Checkpoints of the trace log, cosigned by the voters. The leader
//! periodically asks every voter to sign the root of the tree at a size;
//! each voter computes that root itself and signs only if it matches, and
//! raises an alarm if it does not. Once a majority signed, the leader hands
//! the checkpoint to every member, which checks the cosignatures and its own
//! root before keeping it; a member that did not keep it (one that joined,
//! or was behind, when it was handed out) is handed it again, so every
//! member holds the latest checkpoint even when no write follows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use zeromesh_protocol::{MemberInfo, NodeId};
use zeromesh_trace::checkpoint::{majority, Checkpoint, SignedCheckpoint};
use zeromesh_trace::merkle::Hash;
use zeromesh_trace::note::{self, NoteSignature, NoteVerifier};

use super::service::Cluster;
use crate::lock;
use crate::mesh::messages::{MeshError, MeshRequest, MeshResponse};
use crate::mesh::peer_of;

/// How long a voter waits to apply up to the size it is asked to sign.
const COSIGN_APPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the leader waits for each voter's cosignature.
const COSIGN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long handing a checkpoint to a member may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the leader hands the latest checkpoint again to a member that
/// did not keep it.
const HAND_OUT_AGAIN_AFTER: Duration = Duration::from_secs(2);

/// The latest checkpoint a member kept from this node, and when this node
/// last handed it one.
struct Handed {
    size: u64,
    at: Instant,
}

/// This node's part in checkpoints: its signing key and what it counted.
#[derive(Default)]
pub struct Checkpoints {
    /// The node's identity key; none until the runtime gives it.
    key: Option<SigningKey>,
    /// Roots this node was asked to sign that differ from its own.
    pub mismatches: AtomicU64,
    /// Checkpoints this node cosigned.
    pub cosigned: AtomicU64,
    /// Checkpoints this node published as leader.
    pub published: AtomicU64,
    /// The size of the latest checkpoint this node keeps; waited on by
    /// proofs that need a checkpoint covering their entries.
    pub latest_size: tokio::sync::watch::Sender<u64>,
    /// How long this node's last cosigning round took as leader, from the
    /// first request to the checkpoint kept here, in microseconds.
    pub last_round_micros: AtomicU64,
    /// As leader: what each member kept of the checkpoints handed to it.
    handed: Mutex<HashMap<NodeId, Handed>>,
}

impl Checkpoints {
    pub fn new(key: SigningKey) -> Checkpoints {
        Checkpoints {
            key: Some(key),
            mismatches: AtomicU64::new(0),
            cosigned: AtomicU64::new(0),
            published: AtomicU64::new(0),
            latest_size: tokio::sync::watch::Sender::new(0),
            last_round_micros: AtomicU64::new(0),
            handed: Mutex::default(),
        }
    }
}

/// The key name and public key a member cosigns with: its peer id and the
/// ed25519 key inside it.
pub fn member_verifier(info: &MemberInfo) -> Result<NoteVerifier, String> {
    let address: libp2p::Multiaddr =
        info.p2p_addr.parse().map_err(|_| format!("{:?} is not a multiaddr", info.p2p_addr))?;
    let peer = peer_of(&address).ok_or_else(|| format!("{} has no /p2p/ peer id", info.p2p_addr))?;
    let public = libp2p::identity::PublicKey::try_decode_protobuf(peer.as_ref().digest())
        .map_err(|_| format!("peer id {peer} does not embed its public key"))?;
    let ed25519 = public.try_into_ed25519().map_err(|_| format!("peer {peer} does not have an ed25519 key"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&ed25519.to_bytes())
        .map_err(|e| format!("peer {peer}'s key is not an ed25519 point: {e}"))?;
    NoteVerifier::new(&peer.to_string(), key).map_err(|e| e.to_string())
}

/// The checkpoint signing key of a node identity.
pub fn signing_key(keypair: &libp2p::identity::Keypair) -> anyhow::Result<SigningKey> {
    let ed25519 = keypair.clone().try_into_ed25519().map_err(|_| anyhow::anyhow!("the node key is not ed25519"))?;
    let secret: [u8; 32] = ed25519.secret().as_ref().try_into()?;
    Ok(SigningKey::from_bytes(&secret))
}

impl Cluster {
    /// The log's origin line: `zeromesh/` and the first 16 hex digits of
    /// the first leaf, which names the cluster's first members.
    pub async fn trace_origin(&self) -> Result<String, String> {
        let first = self.consensus.trace_leaf_hash(0).await.map_err(|e| e.to_string())?;
        Ok(format!("zeromesh/{}", &first.to_hex()[..16]))
    }

    /// The current voters' cosigning keys, by node id.
    pub fn voter_verifiers(&self) -> Result<Vec<(NodeId, NoteVerifier)>, String> {
        let view = self.consensus.cluster_view();
        let members = self.consensus.members();
        view.voters
            .iter()
            .map(|id| {
                let info = members.get(id).ok_or_else(|| format!("voter {id} has no member record"))?;
                Ok((*id, member_verifier(info)?))
            })
            .collect()
    }

    /// Signs checkpoint `(size, root)` if this node computed the same root
    /// for that size. A different root is an alarm: logged and counted.
    pub async fn cosign(&self, size: u64, root: [u8; 32]) -> Result<(String, [u8; 4], Vec<u8>), MeshError> {
        let asked = Hash(root);
        self.consensus
            .wait_trace(size, COSIGN_APPLY_TIMEOUT)
            .await
            .map_err(|e| MeshError::Unavailable(format!("cannot cosign yet: {e}")))?;
        let own = self.consensus.trace_root(size).await.map_err(|e| MeshError::Unavailable(e.to_string()))?;
        if own != asked {
            self.checkpoints.mismatches.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                size,
                asked = %asked,
                own = %own,
                "ALARM: asked to cosign a trace root that differs from the one this node computed; refusing"
            );
            return Err(MeshError::Refused(format!("at size {size} this node's root is {own}, not {asked}")));
        }
        let origin = self.trace_origin().await.map_err(MeshError::Unavailable)?;
        let body = Checkpoint { origin, size, root: own }.body();
        let name = self.mesh.peer_id().to_string();
        let key = self
            .checkpoints
            .key
            .as_ref()
            .ok_or_else(|| MeshError::Unavailable("this node has no checkpoint key".into()))?;
        let signature = note::sign(&body, &name, key).map_err(|e| MeshError::Invalid(e.to_string()))?;
        self.checkpoints.cosigned.fetch_add(1, Ordering::Relaxed);
        Ok((signature.name, signature.key_id.to_be_bytes(), signature.signature))
    }

    /// On the leader: gathers cosignatures for the tree as it is now and,
    /// with a majority, keeps the checkpoint and hands it to every member.
    /// Returns the checkpoint, or why there is none.
    pub async fn make_checkpoint(&self) -> Result<SignedCheckpoint, String> {
        let started = std::time::Instant::now();
        let head = self.consensus.trace_head();
        let origin = self.trace_origin().await?;
        let voters = self.voter_verifiers()?;
        let members = self.consensus.members();
        let mut signed = SignedCheckpoint::unsigned(Checkpoint { origin, size: head.size, root: head.root })
            .map_err(|e| e.to_string())?;
        let asks = voters.iter().map(|(id, verifier)| {
            let info = members.get(id).cloned().unwrap_or_default();
            async move { (id, verifier, self.cosignature_of(*id, &info, head.size, head.root.0).await) }
        });
        let mut refusals = Vec::new();
        for (id, verifier, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok((name, key_id, signature)) => {
                    let line = NoteSignature { name, key_id: u32::from_be_bytes(key_id), signature };
                    // Keep only signatures that verify, by the voter asked.
                    let mut alone = signed.note.clone();
                    alone.signatures = vec![line.clone()];
                    match alone.verify_quorum(std::slice::from_ref(verifier), 1) {
                        Ok(_) => signed.note.add(line).map_err(|e| e.to_string())?,
                        Err(error) => refusals.push(format!("voter {id}: {error}")),
                    }
                }
                Err(error) => refusals.push(format!("voter {id}: {error}")),
            }
        }
        let keys: Vec<NoteVerifier> = voters.into_iter().map(|(_, verifier)| verifier).collect();
        if let Err(error) = signed.verify(&keys) {
            return Err(format!(
                "{error} (needed {} of {}): {}",
                majority(keys.len()),
                keys.len(),
                refusals.join("; ")
            ));
        }
        self.keep_checkpoint(&signed).await?;
        self.checkpoints.last_round_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.checkpoints.published.fetch_add(1, Ordering::Relaxed);
        let others = members.into_iter().filter(|(id, _)| *id != self.node_id()).collect();
        self.hand_out(&signed.encode(), head.size, others).await;
        Ok(signed)
    }

    /// Hands the checkpoint `text` (of `size` entries) to `members`, and
    /// records which of them kept it.
    async fn hand_out(&self, text: &str, size: u64, members: Vec<(NodeId, MemberInfo)>) {
        let sends = members.into_iter().map(|(id, info)| {
            let request = MeshRequest::PublishCheckpoint(text.to_owned());
            async move {
                let kept = match self.send(id, &info, request, PUBLISH_TIMEOUT).await {
                    Ok(MeshResponse::PublishCheckpoint(Ok(()))) => true,
                    Ok(other) => {
                        tracing::debug!(member = id, answer = ?other, "a member did not keep a checkpoint");
                        false
                    }
                    Err(error) => {
                        tracing::debug!(member = id, %error, "could not hand out a checkpoint");
                        false
                    }
                };
                (id, kept)
            }
        });
        let answers = futures::future::join_all(sends).await;
        let mut handed = lock(&self.checkpoints.handed);
        let at = Instant::now();
        for (id, kept) in answers {
            let entry = handed.entry(id).or_insert(Handed { size: 0, at });
            entry.at = at;
            if kept {
                entry.size = entry.size.max(size);
            }
        }
    }

    /// Hands this node's latest checkpoint again to the members that have
    /// not kept it, each at most every [`HAND_OUT_AGAIN_AFTER`].
    pub async fn hand_out_latest(&self) {
        let latest = *self.checkpoints.latest_size.borrow();
        if latest == 0 {
            return;
        }
        let members = self.consensus.members();
        let missing: Vec<(NodeId, MemberInfo)> = {
            let mut handed = lock(&self.checkpoints.handed);
            handed.retain(|id, _| members.contains_key(id));
            members
                .iter()
                .filter(|(id, _)| **id != self.node_id())
                .filter(|(id, _)| {
                    handed.get(id).is_none_or(|kept| kept.size < latest && kept.at.elapsed() >= HAND_OUT_AGAIN_AFTER)
                })
                .map(|(id, info)| (*id, info.clone()))
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        match self.consensus.trace_checkpoint().await {
            Ok(Some(text)) => self.hand_out(&text, latest, missing).await,
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "the latest checkpoint could not be read"),
        }
    }

    /// Voter `id`'s cosignature of `(size, root)`: this node's own, or asked
    /// over the mesh.
    async fn cosignature_of(
        &self,
        id: NodeId,
        info: &MemberInfo,
        size: u64,
        root: [u8; 32],
    ) -> Result<(String, [u8; 4], Vec<u8>), MeshError> {
        if id == self.node_id() {
            return self.cosign(size, root).await;
        }
        match self.send(id, info, MeshRequest::CosignCheckpoint { size, root }, COSIGN_TIMEOUT).await {
            Ok(MeshResponse::CosignCheckpoint(result)) => result,
            Ok(other) => Err(MeshError::Unavailable(format!("answered {other:?}"))),
            Err(error) => Err(MeshError::Unavailable(error.to_string())),
        }
    }

    /// Keeps a checkpoint handed over by the leader if a majority of the
    /// current voters cosigned it and this node computed the same root.
    pub async fn accept_checkpoint(&self, text: String) -> Result<(), MeshError> {
        let signed = SignedCheckpoint::parse(&text).map_err(|e| MeshError::Invalid(e.to_string()))?;
        let keys: Vec<NoteVerifier> =
            self.voter_verifiers().map_err(MeshError::Unavailable)?.into_iter().map(|(_, v)| v).collect();
        signed.verify(&keys).map_err(|e| MeshError::Refused(e.to_string()))?;
        self.keep_checkpoint(&signed).await.map_err(MeshError::Refused)
    }

    /// Stores `signed` as the latest checkpoint, unless this node's own root
    /// at its size differs (an alarm) or it already keeps a later one.
    async fn keep_checkpoint(&self, signed: &SignedCheckpoint) -> Result<(), String> {
        let size = signed.checkpoint.size;
        self.consensus.wait_trace(size, COSIGN_APPLY_TIMEOUT).await.map_err(|e| e.to_string())?;
        let own = self.consensus.trace_root(size).await.map_err(|e| e.to_string())?;
        if own != signed.checkpoint.root {
            self.checkpoints.mismatches.fetch_add(1, Ordering::Relaxed);
            tracing::error!(size, own = %own, signed = %signed.checkpoint.root, "ALARM: a cosigned checkpoint's root differs from this node's");
            return Err(format!("this node's root at size {size} is {own}, not the checkpoint's"));
        }
        if size < *self.checkpoints.latest_size.borrow() {
            return Ok(());
        }
        self.consensus.set_trace_checkpoint(signed.encode()).await.map_err(|e| e.to_string())?;
        self.checkpoints.latest_size.send_if_modified(|latest| {
            let newer = size > *latest;
            *latest = (*latest).max(size);
            newer
        });
        Ok(())
    }
}

/// On whichever node leads: a checkpoint every `interval` while the tree
/// grew since the last one, else the latest one handed again to members
/// that lack it. Runs until the process ends.
pub async fn checkpoints(cluster: Arc<Cluster>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let view = cluster.consensus.cluster_view();
        if view.leader != Some(cluster.node_id()) {
            continue;
        }
        let size = cluster.consensus.trace_head().size;
        if size == 0 || size <= *cluster.checkpoints.latest_size.borrow() {
            cluster.hand_out_latest().await;
            continue;
        }
        match cluster.make_checkpoint().await {
            Ok(signed) => {
                tracing::info!(size = signed.checkpoint.size, root = %signed.checkpoint.root, cosigners = signed.note.signatures.len(), "published a trace checkpoint")
            }
            Err(error) => tracing::warn!(%error, "no trace checkpoint this round"),
        }
    }
}

impl Cluster {
    /// Reads back the checkpoint this node kept before a restart.
    pub async fn load_checkpoint(&self) {
        match self.consensus.trace_checkpoint().await {
            Ok(Some(text)) => match SignedCheckpoint::parse(&text) {
                Ok(signed) => {
                    self.checkpoints.latest_size.send_replace(signed.checkpoint.size);
                }
                Err(error) => {
                    tracing::warn!(%error, "the stored trace checkpoint does not parse; a new one will replace it")
                }
            },
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "could not read the stored trace checkpoint"),
        }
    }
}
