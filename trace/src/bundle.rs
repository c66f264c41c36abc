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

impl InclusionBundle {
    /// Checks the checkpoint's cosignatures (a majority of `voters`), the
    /// leaf bytes against the leaf hash, and the path to the signed root.
    pub fn verify(&self, voters: &[NoteVerifier]) -> Result<Verified, BundleError> {
        let (signed, cosigners) = checked_checkpoint(&self.checkpoint, voters)?;
        let checkpoint = signed.checkpoint;
        if checkpoint.size != self.tree_size {
            return Err(BundleError::SizeMismatch { checkpoint: checkpoint.size, proof: self.tree_size });
        }
        let leaf = match &self.leaf {
            Some(encoded) => {
                let bytes = BASE64.decode(encoded).map_err(|e| BundleError::LeafEncoding(e.to_string()))?;
                let computed = merkle::leaf_hash(&bytes);
                if computed != self.leaf_hash {
                    return Err(BundleError::LeafAltered { computed, claimed: self.leaf_hash });
                }
                Some(bytes)
            }
            None => None,
        };
        let payload = match &self.payload {
            Some(encoded) => Some(BASE64.decode(encoded).map_err(|e| BundleError::LeafEncoding(e.to_string()))?),
            None => None,
        };
        merkle::verify_inclusion(self.index, self.tree_size, &self.leaf_hash, &self.path, &checkpoint.root)?;
        Ok(Verified {
            origin: checkpoint.origin,
            tree_size: checkpoint.size,
            root: checkpoint.root,
            cosigners,
            leaf,
            payload,
        })
    }
}

impl ConsistencyBundle {
    /// Checks the checkpoint's cosignatures and that the old tree is a
    /// prefix of the signed one. With `older`, a checkpoint the verifier
    /// kept from before, the old root must also be the one it signs.
    pub fn verify(&self, voters: &[NoteVerifier], older: Option<&str>) -> Result<Verified, BundleError> {
        let (signed, cosigners) = checked_checkpoint(&self.checkpoint, voters)?;
        let checkpoint = signed.checkpoint;
        if checkpoint.size != self.new_size {
            return Err(BundleError::SizeMismatch { checkpoint: checkpoint.size, proof: self.new_size });
        }
        if let Some(older) = older {
            let (old, _) = checked_checkpoint(older, voters)?;
            if old.checkpoint.size != self.old_size {
                return Err(BundleError::SizeMismatch { checkpoint: old.checkpoint.size, proof: self.old_size });
            }
            if old.checkpoint.root != self.old_root {
                return Err(BundleError::OldRootMismatch { claimed: self.old_root, signed: old.checkpoint.root });
            }
        }
        merkle::verify_consistency(self.old_size, self.new_size, &self.path, &self.old_root, &checkpoint.root)?;
        Ok(Verified {
            origin: checkpoint.origin,
            tree_size: checkpoint.size,
            root: checkpoint.root,
            cosigners,
            leaf: None,
            payload: None,
        })
    }
}

/// Encodes leaf or payload bytes for a bundle.
pub fn encode_bytes(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}
