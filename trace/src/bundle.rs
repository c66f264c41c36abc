//! Proof bundles: what a node hands out and a verifier checks offline, with
//! only the voters' public keys. Each check names what failed.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::checkpoint::SignedCheckpoint;
use crate::merkle::{self, Hash};
use crate::note::NoteVerifier;

/// A proof and the checkpoint it leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProofBundle {
    Inclusion(InclusionBundle),
    Consistency(ConsistencyBundle),
    Usage(UsageBundle),
}

/// Leaf `index` is in the tree the checkpoint signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionBundle {
    pub index: u64,
    /// The leaf's bytes (base64): the entry's header, which commits to the
    /// hash of its payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
    /// The entry's payload bytes (base64), when the node still holds the
    /// entry; the leaf names their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    pub leaf_hash: Hash,
    pub tree_size: u64,
    /// The audit path, bottom up.
    pub path: Vec<Hash>,
    /// The cosigned checkpoint (signed-note text) of size `tree_size`.
    pub checkpoint: String,
}

/// The tree of `old_size` leaves with root `old_root` is a prefix of the
/// tree the checkpoint signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyBundle {
    pub old_size: u64,
    pub old_root: Hash,
    pub new_size: u64,
    pub path: Vec<Hash>,
    pub checkpoint: String,
}

/// One leaf and its audit path, in a bundle of several sharing one
/// checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafProof {
    pub index: u64,
    /// The leaf's bytes (base64).
    pub leaf: String,
    /// The entry's payload bytes (base64), when the bundle shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    pub path: Vec<Hash>,
}

/// The amounts committed in one window's usage records sum to at most the
/// limit: the records' leaves and the leaf that registered the verifying
/// key, each proved in the checkpoint's tree, and the window's chained
/// Groth16 proofs. What the leaves mean (which commitments, which key) is
/// read by the caller, which knows the leaf format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBundle {
    /// Whose usage: an agreement id, or `agent/{id}`.
    pub account: String,
    /// Which of its limits, by position.
    pub limit_index: u8,
    /// When the window began (ms since the epoch).
    pub window_start_ms: u64,
    /// The records' leaves, in the order their commitments were proved.
    pub records: Vec<LeafProof>,
    /// The entry that put the verifying key in the replicated state, with
    /// its payload (which holds the key).
    pub key: LeafProof,
    pub chunks: Vec<crate::usage::Chunk>,
    pub tree_size: u64,
    pub checkpoint: String,
}

/// Why a bundle did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("the checkpoint: {0}")]
    Checkpoint(String),
    #[error("the checkpoint is of size {checkpoint}, the proof of size {proof}")]
    SizeMismatch { checkpoint: u64, proof: u64 },
    #[error("the leaf or payload bytes are not base64: {0}")]
    LeafEncoding(String),
    #[error("the leaf bytes hash to {computed}, not to the leaf hash {claimed}: the entry was altered")]
    LeafAltered { computed: Hash, claimed: Hash },
    #[error("the proof: {0}")]
    Proof(#[from] merkle::ProofError),
    #[error("the old root {claimed} is not the one the older checkpoint signs ({signed})")]
    OldRootMismatch { claimed: Hash, signed: Hash },
    #[error("leaf {index}: {error}")]
    Leaf { index: u64, error: Box<BundleError> },
    #[error("{records} records, more than the {max} a window's proof covers")]
    TooManyRecords { records: usize, max: usize },
}

/// What a verified usage bundle's leaves hold, for the caller to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLeaves {
    pub checkpoint: Verified,
    /// Each record's leaf bytes, in the bundle's order.
    pub records: Vec<Vec<u8>>,
    /// The key entry's leaf bytes and payload bytes.
    pub key_leaf: Vec<u8>,
    pub key_payload: Option<Vec<u8>>,
}

/// What a verified bundle established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub origin: String,
    pub tree_size: u64,
    pub root: Hash,
    /// The voters whose cosignatures verified.
    pub cosigners: Vec<String>,
    /// The leaf's bytes, when the bundle carried them.
    pub leaf: Option<Vec<u8>>,
    /// The payload's bytes, when the bundle carried them: the caller checks
    /// them against the hash the leaf names.
    pub payload: Option<Vec<u8>>,
}

fn checked_checkpoint(text: &str, voters: &[NoteVerifier]) -> Result<(SignedCheckpoint, Vec<String>), BundleError> {
    let signed = SignedCheckpoint::parse(text).map_err(|e| BundleError::Checkpoint(e.to_string()))?;
    let cosigners = signed.verify(voters).map_err(|e| BundleError::Checkpoint(e.to_string()))?;
    Ok((signed, cosigners))
}

/// Checks a checkpoint's cosignatures and that it signs a tree of `size`.
fn signed_at(text: &str, voters: &[NoteVerifier], size: u64) -> Result<Verified, BundleError> {
    let (signed, cosigners) = checked_checkpoint(text, voters)?;
    let checkpoint = signed.checkpoint;
    if checkpoint.size != size {
        return Err(BundleError::SizeMismatch { checkpoint: checkpoint.size, proof: size });
    }
    Ok(Verified {
        origin: checkpoint.origin,
        tree_size: checkpoint.size,
        root: checkpoint.root,
        cosigners,
        leaf: None,
        payload: None,
    })
}

impl InclusionBundle {
    /// Checks the checkpoint's cosignatures (a majority of `voters`), the
    /// leaf bytes against the leaf hash, and the path to the signed root.
    pub fn verify(&self, voters: &[NoteVerifier]) -> Result<Verified, BundleError> {
        let mut verified = signed_at(&self.checkpoint, voters, self.tree_size)?;
        if let Some(encoded) = &self.leaf {
            let bytes = decode(encoded)?;
            let computed = merkle::leaf_hash(&bytes);
            if computed != self.leaf_hash {
                return Err(BundleError::LeafAltered { computed, claimed: self.leaf_hash });
            }
            verified.leaf = Some(bytes);
        }
        verified.payload = self.payload.as_deref().map(decode).transpose()?;
        merkle::verify_inclusion(self.index, self.tree_size, &self.leaf_hash, &self.path, &verified.root)?;
        Ok(verified)
    }
}

fn decode(encoded: &str) -> Result<Vec<u8>, BundleError> {
    BASE64.decode(encoded).map_err(|e| BundleError::LeafEncoding(e.to_string()))
}

impl LeafProof {
    /// Checks the path from the leaf's bytes to `root` of a tree of `size`;
    /// returns the leaf's and the payload's bytes.
    fn verify(&self, size: u64, root: &Hash) -> Result<(Vec<u8>, Option<Vec<u8>>), BundleError> {
        let within = |error: BundleError| BundleError::Leaf { index: self.index, error: Box::new(error) };
        let leaf = decode(&self.leaf).map_err(within)?;
        let payload = self.payload.as_deref().map(decode).transpose().map_err(within)?;
        merkle::verify_inclusion(self.index, size, &merkle::leaf_hash(&leaf), &self.path, root)
            .map_err(|e| within(e.into()))?;
        Ok((leaf, payload))
    }
}

impl UsageBundle {
    /// Checks the checkpoint's cosignatures and every leaf's path to its
    /// root. The proofs of usage are checked by the caller, with the
    /// commitments and the key it reads from these leaves.
    pub fn verify_leaves(&self, voters: &[NoteVerifier]) -> Result<VerifiedLeaves, BundleError> {
        let max = crate::usage::MAX_RECORDS_PER_WINDOW;
        if self.records.len() > max {
            return Err(BundleError::TooManyRecords { records: self.records.len(), max });
        }
        let checkpoint = signed_at(&self.checkpoint, voters, self.tree_size)?;
        let records = self
            .records
            .iter()
            .map(|record| record.verify(checkpoint.tree_size, &checkpoint.root).map(|(leaf, _)| leaf))
            .collect::<Result<Vec<_>, _>>()?;
        let (key_leaf, key_payload) = self.key.verify(checkpoint.tree_size, &checkpoint.root)?;
        Ok(VerifiedLeaves { checkpoint, records, key_leaf, key_payload })
    }
}

impl ConsistencyBundle {
    /// Checks the checkpoint's cosignatures and that the old tree is a
    /// prefix of the signed one. With `older`, a checkpoint the verifier
    /// kept from before, the old root must also be the one it signs.
    pub fn verify(&self, voters: &[NoteVerifier], older: Option<&str>) -> Result<Verified, BundleError> {
        let verified = signed_at(&self.checkpoint, voters, self.new_size)?;
        if let Some(older) = older {
            let (old, _) = checked_checkpoint(older, voters)?;
            if old.checkpoint.size != self.old_size {
                return Err(BundleError::SizeMismatch { checkpoint: old.checkpoint.size, proof: self.old_size });
            }
            if old.checkpoint.root != self.old_root {
                return Err(BundleError::OldRootMismatch { claimed: self.old_root, signed: old.checkpoint.root });
            }
        }
        merkle::verify_consistency(self.old_size, self.new_size, &self.path, &self.old_root, &verified.root)?;
        Ok(verified)
    }
}

/// Encodes leaf or payload bytes for a bundle.
pub fn encode_bytes(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}
