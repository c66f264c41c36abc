//! Proofs of usage: Poseidon commitments to metered amounts, and the
//! Groth16 (BN254) statement "the amounts committed in these records sum to
//! at most this limit", verified without seeing the amounts.
//!
//! A proof covers up to [`MAX_RECORDS_PER_PROOF`] commitments; the verifier
//! recomputes their digest (a Poseidon chain over the commitments, padded
//! with the commitment to zero) from the records it holds, so a proof is
//! tied to those records and to the leaves that carry them. A window of
//! more records is proved in chunks chained by commitments to the running
//! sum (the carry): each chunk proves `carry_in + its amounts = carry_out`
//! and `carry_out <= limit`, and the first chunk's carry in is the
//! commitment to zero with zero blinding. Only the sums' commitments are
//! public, never a sum. What a proof cannot show is that no record was left
//! out: that rests on the log.

use ark_bn254::{Bn254, Fr};
use ark_ff::{BigInteger, PrimeField};
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof, VerifyingKey};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};

use crate::poseidon;

/// The version of the circuit, and so of the keys made for it.
pub const CIRCUIT_VERSION: u32 = 1;
/// Most usage records one proof covers.
pub const MAX_RECORDS_PER_PROOF: usize = 64;
/// Most chained proofs (chunks) one window's proof holds.
pub const MAX_CHUNKS: usize = 4;
/// Most usage records one window's proof covers.
pub const MAX_RECORDS_PER_WINDOW: usize = MAX_RECORDS_PER_PROOF * MAX_CHUNKS;
/// A committed amount is below 2^VALUE_BITS.
pub const VALUE_BITS: usize = 64;
/// `limit - sum` is below 2^SLACK_BITS when the sum is within the limit; a
/// carried sum is below 2^SLACK_BITS too.
pub const SLACK_BITS: usize = 72;
// A carry below 2^72 plus 64 amounts below 2^64 stays below 2^73, far from
// the field's 2^253: no wrap.
const _: () = assert!(
    MAX_RECORDS_PER_PROOF <= 1 << (SLACK_BITS - VALUE_BITS)
        && SLACK_BITS < 250
        && MAX_RECORDS_PER_PROOF.is_multiple_of(2)
);
/// A compressed Groth16 proof over BN254: two G1 points and one G2 point.
pub const PROOF_BYTES: usize = 128;
/// Largest verifying key accepted, in bytes.
pub const MAX_VERIFYING_KEY_BYTES: usize = 4096;

/// Why a usage statement or proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("{0} records, more than the {MAX_RECORDS_PER_PROOF} one proof covers")]
    TooManyRecords(usize),
    #[error("the committed amounts sum to more than the limit: no proof can be made")]
    OverLimit,
    #[error("an opening does not match its commitment")]
    WrongOpening,
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("the proof does not verify against these records and this limit")]
    Invalid,
    #[error("proving failed: {0}")]
    Proving(String),
}

/// A Poseidon commitment to an amount: `hash2(amount, blinding)`, as a
/// field element's 32 big-endian bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Commitment(pub [u8; 32]);

impl From<Commitment> for String {
    fn from(c: Commitment) -> String {
        hex::encode(c.0)
    }
}

impl TryFrom<String> for Commitment {
    type Error = UsageError;

    fn try_from(text: String) -> Result<Commitment, UsageError> {
        let bytes =
            hex::decode(&text).map_err(|e| UsageError::Malformed { what: "commitment", reason: e.to_string() })?;
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| UsageError::Malformed { what: "commitment", reason: "not 32 bytes".into() })?;
        let commitment = Commitment(array);
        commitment.element()?;
        Ok(commitment)
    }
}

impl Commitment {
    pub(crate) fn element(&self) -> Result<Fr, UsageError> {
        let element = Fr::from_be_bytes_mod_order(&self.0);
        if to_bytes(&element) != self.0 {
            return Err(UsageError::Malformed { what: "commitment", reason: "not a canonical field element".into() });
        }
        Ok(element)
    }
}

pub(crate) fn to_bytes(element: &Fr) -> [u8; 32] {
    let bytes = element.into_bigint().to_bytes_be();
    bytes.try_into().expect("a BN254 scalar is 32 bytes")
}

/// The blinding of a commitment as a field element: 31 bytes are taken, so
/// every blinding is canonical.
pub(crate) fn blinding_element(blinding: &[u8; 32]) -> Fr {
    Fr::from_le_bytes_mod_order(&blinding[..31])
}

/// What opens a commitment: the amount and the blinding drawn for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Opening {
    pub amount: u64,
    pub blinding: [u8; 32],
}

impl Opening {
    pub fn commit(&self) -> Commitment {
        Commitment(to_bytes(&poseidon::hash2(Fr::from(self.amount), blinding_element(&self.blinding))))
    }
}

/// The opening padding unused slots.
pub(crate) const PADDING: Opening = Opening { amount: 0, blinding: [0; 32] };

/// The digest of `commitments`, padded to the circuit's size: a chain of
/// Poseidon permutations, each absorbing two commitments,
/// `d' = P([d, c_2k, c_2k+1])[0]` from `d = 0`.
pub fn records_digest(commitments: &[Commitment]) -> Result<Fr, UsageError> {
    if commitments.len() > MAX_RECORDS_PER_PROOF {
        return Err(UsageError::TooManyRecords(commitments.len()));
    }
    let padding = PADDING.commit();
    let slot = |index: usize| commitments.get(index).unwrap_or(&padding).element();
    let mut digest = Fr::from(0u64);
    for pair in 0..MAX_RECORDS_PER_PROOF / 2 {
        digest = poseidon::permute([digest, slot(2 * pair)?, slot(2 * pair + 1)?])[0];
    }
    Ok(digest)
}

/// The carry into a window's first chunk: the commitment to zero with zero
/// blinding.
pub fn first_carry() -> Commitment {
    PADDING.commit()
}

/// The circuit's public inputs: `limit`, the digest of `commitments`, and
/// the commitments to the running sum before and after them.
pub fn public_inputs(
    limit: u64,
    commitments: &[Commitment],
    carry_in: &Commitment,
    carry_out: &Commitment,
) -> Result<Vec<Fr>, UsageError> {
    Ok(vec![Fr::from(limit), records_digest(commitments)?, carry_in.element()?, carry_out.element()?])
}

/// One chained proof of a window: the commitment to the running sum after
/// its records, and the Groth16 proof.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    pub carry_out: Commitment,
    /// The compressed proof, hex.
    #[serde(with = "hex_proof")]
    pub proof: Vec<u8>,
}

mod hex_proof {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(deserializer)?;
        if text.len() > 2 * super::PROOF_BYTES {
            return Err(serde::de::Error::custom("a proof longer than 128 bytes"));
        }
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// How many chunks prove a window of `records` records.
pub fn chunks_for(records: usize) -> usize {
    records.div_ceil(MAX_RECORDS_PER_PROOF).max(1)
}

/// A window's records as its chunks take them: up to
/// [`MAX_RECORDS_PER_PROOF`] each, and one empty chunk for no record.
pub(crate) fn chunk_groups<T>(records: &[T]) -> Vec<&[T]> {
    match records {
        [] => vec![&[]],
        _ => records.chunks(MAX_RECORDS_PER_PROOF).collect(),
    }
}

/// A verifying key, decoded and prepared once.
pub struct UsageVerifier {
    prepared: PreparedVerifyingKey<Bn254>,
}

impl UsageVerifier {
    /// Decodes a compressed verifying key, checking its points.
    pub fn from_bytes(bytes: &[u8]) -> Result<UsageVerifier, UsageError> {
        if bytes.len() > MAX_VERIFYING_KEY_BYTES {
            return Err(UsageError::Malformed { what: "verifying key", reason: format!("{} bytes", bytes.len()) });
        }
        let key = VerifyingKey::<Bn254>::deserialize_compressed(bytes)
            .map_err(|e| UsageError::Malformed { what: "verifying key", reason: e.to_string() })?;
        if key.gamma_abc_g1.len() != PUBLIC_INPUTS + 1 {
            return Err(UsageError::Malformed {
                what: "verifying key",
                reason: format!(
                    "made for {} public inputs, not {PUBLIC_INPUTS}",
                    key.gamma_abc_g1.len().saturating_sub(1)
                ),
            });
        }
        Ok(UsageVerifier { prepared: ark_groth16::prepare_verifying_key(&key) })
    }

    /// Checks one chunk's `proof` for "the amounts committed in
    /// `commitments`, added to the sum `carry_in` commits to, make the sum
    /// `carry_out` commits to, and it is at most `limit`".
    pub fn verify(
        &self,
        limit: u64,
        commitments: &[Commitment],
        carry_in: &Commitment,
        carry_out: &Commitment,
        proof: &[u8],
    ) -> Result<(), UsageError> {
        if proof.len() != PROOF_BYTES {
            return Err(UsageError::Malformed {
                what: "proof",
                reason: format!("{} bytes, not {PROOF_BYTES}", proof.len()),
            });
        }
        let proof = Proof::<Bn254>::deserialize_compressed(proof)
            .map_err(|e| UsageError::Malformed { what: "proof", reason: e.to_string() })?;
        let inputs = public_inputs(limit, commitments, carry_in, carry_out)?;
        match Groth16::<Bn254>::verify_proof(&self.prepared, &proof, &inputs) {
            Ok(true) => Ok(()),
            _ => Err(UsageError::Invalid),
        }
    }

    /// Checks a window's chained proofs: "the amounts committed in
    /// `commitments` (in order) sum to at most `limit`".
    pub fn verify_window(&self, limit: u64, commitments: &[Commitment], chunks: &[Chunk]) -> Result<(), UsageError> {
        if commitments.len() > MAX_RECORDS_PER_WINDOW {
            return Err(UsageError::TooManyRecords(commitments.len()));
        }
        if chunks.len() != chunks_for(commitments.len()) {
            return Err(UsageError::Malformed {
                what: "window proof",
                reason: format!(
                    "{} chunks for {} records, not {}",
                    chunks.len(),
                    commitments.len(),
                    chunks_for(commitments.len())
                ),
            });
        }
        let mut carry_in = first_carry();
        for (records, chunk) in chunk_groups(commitments).into_iter().zip(chunks) {
            self.verify(limit, records, &carry_in, &chunk.carry_out, &chunk.proof)?;
            carry_in = chunk.carry_out;
        }
        Ok(())
    }
}

/// Public inputs of the circuit: limit, digest, carry in, carry out.
pub const PUBLIC_INPUTS: usize = 4;

/// Encodes a verifying key the way [`UsageVerifier::from_bytes`] reads it.
pub fn encode_verifying_key(key: &VerifyingKey<Bn254>) -> Vec<u8> {
    let mut bytes = Vec::new();
    key.serialize_compressed(&mut bytes).expect("writing to a Vec cannot fail");
    bytes
}
