//! What a trace leaf holds: one applied Raft entry, in canonical bytes.
//! Every node encodes the same entry to the same bytes, so every node
//! computes the same tree.
//!
//! A leaf is a small header: the entry's position, what kind it is, the
//! SHA-256 of its payload's bytes, and the usage commitments it carries.
//! The payload (the command itself) is hashed apart, so a leaf can be shown
//! and proved without revealing the payload, and the payload checked
//! against the leaf when it is shown.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use bincode::Options;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::agreement::Limit;
use crate::limits::{MAX_LEAF_BYTES, MAX_VERIFYING_KEY_BYTES};
use crate::validate::{check_len, ValidationError};
use crate::{MemberInfo, NodeId, Request};

/// The first bytes of every leaf: what the bytes are and their version.
pub const LEAF_DOMAIN: &[u8] = b"zeromesh/trace-leaf/v1\n";

/// The leaf of one applied entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceLeaf {
    /// The entry's Raft log index, which is also its leaf index.
    pub index: u64,
    pub term: u64,
    /// The node that led the term the entry was written in.
    pub leader: NodeId,
    pub kind: EntryKind,
    /// SHA-256 of the payload's canonical bytes ([`TracePayload::to_bytes`]).
    pub payload_sha256: [u8; 32],
    /// Poseidon commitments to the usage amounts the entry settled, one per
    /// limit they count against (empty for every other entry).
    pub commitments: Vec<UsageCommitment>,
}

/// One usage record: a settled call's (or lease's) amount of one limit's
/// metric, hidden in a Poseidon commitment, with where it counts in the
/// clear: the account, the limit, the window and the record's place in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCommitment {
    /// An agreement id, or `agent/{id}` for an agent's own quotas.
    pub account: String,
    /// The limit's position in the account's limits, and the limit itself.
    pub limit_index: u8,
    pub limit: Limit,
    /// When the window the reservation counted in began (ms since the epoch).
    pub window_start_ms: u64,
    /// The record's place in its window: 0, 1, 2, ... with no gap.
    pub ordinal: u32,
    /// `Poseidon(amount, blinding)`: 32 big-endian bytes of a BN254 scalar.
    pub commitment: [u8; 32],
}

/// Registers a node's key for proofs of usage: the verifying key goes in
/// the replicated state, so a proof bundle can show the entry that put it
/// there; the proving key stays with the node, named by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceCommand {
    RegisterUsageKey {
        node: NodeId,
        /// The circuit version the keys were made for.
        version: u32,
        /// The compressed Groth16 verifying key.
        verifying_key: Vec<u8>,
        proving_key_sha256: [u8; 32],
    },
}

impl TraceCommand {
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            TraceCommand::RegisterUsageKey { verifying_key, .. } => {
                check_len("verifying key", verifying_key.len(), MAX_VERIFYING_KEY_BYTES)
            }
        }
    }
}

/// A registered key for proofs of usage, as the replicated state keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageKeyRecord {
    pub node: NodeId,
    pub version: u32,
    pub verifying_key: Vec<u8>,
    pub proving_key_sha256: [u8; 32],
    /// The entry that registered it: its leaf and payload prove the key.
    pub log_index: u64,
}

/// What applying a [`TraceCommand`] answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceOutcome {
    Registered {
        log_index: u64,
        replaced: bool,
    },
    /// Nothing was changed.
    Refused(String),
}

/// A usage record as the replicated state keeps it, to prove its window:
/// the leaf that carries its commitment, and the commitment's opening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub log_index: u64,
    /// The leaf's bytes ([`TraceLeaf::to_bytes`]).
    pub leaf: Vec<u8>,
    pub amount: u64,
    pub blinding: [u8; 32],
}

/// The blinding of one commitment of a settlement: derived from the 32
/// random bytes the settlement carries, the account and the limit, so one
/// draw serves every limit and no two commitments share a blinding.
pub fn usage_blinding(seed: &[u8; 32], account: &str, limit_index: u8) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"zeromesh/usage-blinding/v1\0");
    hasher.update(seed);
    hasher.update(account.as_bytes());
    hasher.update([0, limit_index]);
    hasher.finalize().into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Blank,
    Command,
    Membership,
}

/// What an entry carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TracePayload<'a> {
    /// An entry a new leader writes to commit its term.
    Blank,
    /// A replicated command, with the time its leader stamped into it.
    Command(Cow<'a, Request>),
    /// A membership change: the voter sets (two while joint) and every member.
    Membership { configs: Vec<BTreeSet<NodeId>>, members: BTreeMap<NodeId, MemberInfo> },
}

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding()
}

impl TracePayload<'_> {
    pub fn kind(&self) -> EntryKind {
        match self {
            TracePayload::Blank => EntryKind::Blank,
            TracePayload::Command(_) => EntryKind::Command,
            TracePayload::Membership { .. } => EntryKind::Membership,
        }
    }

    /// SHA-256 of the payload's canonical bytes, hashed as they are encoded.
    pub fn sha256(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        options().serialize_into(&mut hasher, self).expect("hashing cannot fail");
        hasher.finalize().into()
    }

    /// The payload's canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        options().serialize(self).expect("encoding into memory cannot fail")
    }

    /// Decodes a payload's bytes, at most `max_bytes` of them.
    pub fn from_bytes(bytes: &[u8], max_bytes: usize) -> Result<TracePayload<'static>, String> {
        if bytes.len() > max_bytes {
            return Err(format!("a payload of {} bytes is over the {max_bytes} allowed", bytes.len()));
        }
        options()
            .with_limit(max_bytes as u64)
            .reject_trailing_bytes()
            .deserialize(bytes)
            .map_err(|e| format!("the payload does not decode: {e}"))
    }
}

impl TraceLeaf {
    /// The leaf of the entry at `index`, written in `term` under `leader`.
    pub fn of(index: u64, term: u64, leader: NodeId, payload: &TracePayload<'_>) -> TraceLeaf {
        TraceLeaf {
            index,
            term,
            leader,
            kind: payload.kind(),
            payload_sha256: payload.sha256(),
            commitments: Vec::new(),
        }
    }

    /// The leaf's canonical bytes: the domain, then the header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = LEAF_DOMAIN.to_vec();
        options().serialize_into(&mut bytes, self).expect("encoding into memory cannot fail");
        bytes
    }

    /// Decodes a leaf's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<TraceLeaf, String> {
        if bytes.len() > MAX_LEAF_BYTES {
            return Err(format!("a leaf of {} bytes is over the {MAX_LEAF_BYTES} allowed", bytes.len()));
        }
        let body = bytes.strip_prefix(LEAF_DOMAIN).ok_or("the bytes are not a zeromesh trace leaf (v1)")?;
        options()
            .with_limit(MAX_LEAF_BYTES as u64)
            .reject_trailing_bytes()
            .deserialize(body)
            .map_err(|e| format!("the leaf does not decode: {e}"))
    }

    /// Checks that `payload` is the payload this leaf commits to.
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), String> {
        let computed: [u8; 32] = Sha256::digest(payload).into();
        if computed != self.payload_sha256 {
            return Err(format!(
                "the payload hashes to {}, not to the leaf's {}: the payload was altered",
                hex::encode(computed),
                hex::encode(self.payload_sha256)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, MemoryBatch};

    #[test]
    fn a_leaf_and_its_payload_round_trip_and_an_altered_payload_is_named() {
        let request = Request { stamped_at_ms: 7, command: Command::Memory(MemoryBatch { commands: vec![] }) };
        let payload = TracePayload::Command(Cow::Borrowed(&request));
        let leaf = TraceLeaf::of(3, 2, 9, &payload);
        assert_eq!(TraceLeaf::from_bytes(&leaf.to_bytes()).unwrap(), leaf);
        let bytes = payload.to_bytes();
        leaf.check_payload(&bytes).unwrap();
        assert_eq!(TracePayload::from_bytes(&bytes, 1 << 20).unwrap(), payload);
        let mut altered = bytes.clone();
        altered[0] ^= 1;
        assert!(leaf.check_payload(&altered).unwrap_err().contains("the payload was altered"));
        assert!(TraceLeaf::from_bytes(b"zeromesh/other\n").is_err());
        assert!(TracePayload::from_bytes(&bytes, 2).is_err());
    }
}
