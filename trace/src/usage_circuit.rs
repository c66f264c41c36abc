//! The usage circuit and its prover (feature `prover`): the amounts behind
//! up to [`MAX_RECORDS_PER_PROOF`] Poseidon commitments are each below
//! 2^64 and sum to at most a public limit; the commitments enter through
//! their public digest.

use ark_bn254::{Bn254, Fr};
use ark_groth16::{Groth16, ProvingKey, VerifyingKey};
use ark_r1cs_std::fields::fp::FpVar;
use ark_r1cs_std::prelude::*;
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ark_std::rand::{CryptoRng, RngCore};

use crate::poseidon;
use crate::usage::{
    blinding_element, records_digest, Commitment, Opening, UsageError, MAX_RECORDS_PER_PROOF, PADDING, PROOF_BYTES,
    SLACK_BITS, VALUE_BITS,
};

/// The witness and public inputs of one statement. `None` witnesses make
/// the shape-only circuit the key generation runs on.
#[derive(Clone)]
pub struct UsageCircuit {
    pub limit: u64,
    /// Exactly [`MAX_RECORDS_PER_PROOF`] openings, padded, or `None`.
    pub openings: Option<Vec<Opening>>,
}

fn poseidon_var(state: [FpVar<Fr>; 3]) -> Result<[FpVar<Fr>; 3], SynthesisError> {
    let parameters = poseidon::parameters();
    let mut state = state;
    for (round, constants) in parameters.round_constants.iter().enumerate() {
        for (element, constant) in state.iter_mut().zip(constants) {
            *element += *constant;
        }
        let sbox = |x: &FpVar<Fr>| -> Result<FpVar<Fr>, SynthesisError> { Ok(x.square()?.square()? * x) };
        if poseidon::is_full_round(round) {
            state = [sbox(&state[0])?, sbox(&state[1])?, sbox(&state[2])?];
        } else {
            state[0] = sbox(&state[0])?;
        }
        let mixed = parameters.mds.map(|row| row.iter().zip(&state).fold(FpVar::zero(), |sum, (m, x)| sum + x * *m));
        state = mixed;
    }
    Ok(state)
}

fn hash2_var(left: &FpVar<Fr>, right: &FpVar<Fr>) -> Result<FpVar<Fr>, SynthesisError> {
    let [out, _, _] = poseidon_var([FpVar::zero(), left.clone(), right.clone()])?;
    Ok(out)
}

/// `bits` little-endian bits of `value`, as witnesses.
fn bits_var(
    cs: &ConstraintSystemRef<Fr>,
    value: Option<u128>,
    bits: usize,
) -> Result<Vec<Boolean<Fr>>, SynthesisError> {
    (0..bits)
        .map(|bit| {
            Boolean::new_witness(cs.clone(), || {
                value.map(|v| (v >> bit) & 1 == 1).ok_or(SynthesisError::AssignmentMissing)
            })
        })
        .collect()
}

impl ConstraintSynthesizer<Fr> for UsageCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let openings = self.openings.as_ref();
        let commitments: Option<Vec<Commitment>> = openings.map(|o| o.iter().map(Opening::commit).collect());
        let digest = commitments.as_ref().map(|c| records_digest(c).map_err(|_| SynthesisError::Unsatisfiable));
        let limit = FpVar::new_input(cs.clone(), || Ok(Fr::from(self.limit)))?;
        let digest_input = FpVar::new_input(cs.clone(), || digest.ok_or(SynthesisError::AssignmentMissing)?)?;
        let mut chain = FpVar::zero();
        let mut sum = FpVar::zero();
        let mut native_sum: u128 = 0;
        let mut pending: Option<FpVar<Fr>> = None;
        for slot in 0..MAX_RECORDS_PER_PROOF {
            let opening = openings.map(|o| o[slot]);
            let bits = bits_var(&cs, opening.map(|o| o.amount as u128), VALUE_BITS)?;
            let amount = Boolean::le_bits_to_fp(&bits)?;
            let blinding = FpVar::new_witness(cs.clone(), || {
                opening.map(|o| blinding_element(&o.blinding)).ok_or(SynthesisError::AssignmentMissing)
            })?;
            let commitment = hash2_var(&amount, &blinding)?;
            match pending.take() {
                None => pending = Some(commitment),
                Some(left) => chain = poseidon_var([chain, left, commitment])?[0].clone(),
            }
            sum += &amount;
            native_sum += opening.map_or(0, |o| o.amount as u128);
        }
        chain.enforce_equal(&digest_input)?;
        // limit - sum must be a small non-negative number: if the sum were
        // over the limit, the difference would wrap to nearly the field's size.
        let slack_value = openings.map(|_| (self.limit as u128).wrapping_sub(native_sum) & ((1u128 << SLACK_BITS) - 1));
        let slack = Boolean::le_bits_to_fp(&bits_var(&cs, slack_value, SLACK_BITS)?)?;
        (limit - sum).enforce_equal(&slack)?;
        Ok(())
    }
}

/// A proving key, with the verifying key inside it.
pub struct UsageProver {
    key: ProvingKey<Bn254>,
}

/// Pads `openings` to the circuit's size, refusing too many.
fn padded(openings: &[Opening]) -> Result<Vec<Opening>, UsageError> {
    if openings.len() > MAX_RECORDS_PER_PROOF {
        return Err(UsageError::TooManyRecords(openings.len()));
    }
    let mut all = openings.to_vec();
    all.resize(MAX_RECORDS_PER_PROOF, PADDING);
    Ok(all)
}

impl UsageProver {
    /// Makes a fresh key pair for the circuit. Whoever knows `rng`'s output
    /// could forge proofs: draw it from the operating system and drop it.
    pub fn setup<R: RngCore + CryptoRng>(rng: &mut R) -> Result<UsageProver, UsageError> {
        let circuit = UsageCircuit { limit: 0, openings: None };
        let key = Groth16::<Bn254>::generate_random_parameters_with_reduction(circuit, rng)
            .map_err(|e| UsageError::Proving(e.to_string()))?;
        Ok(UsageProver { key })
    }

    pub fn verifying_key(&self) -> &VerifyingKey<Bn254> {
        &self.key.vk
    }

    /// Proves that `openings`' amounts sum to at most `limit`; refuses when
    /// they do not (the circuit could not be satisfied).
    pub fn prove<R: RngCore + CryptoRng>(
        &self,
        limit: u64,
        openings: &[Opening],
        rng: &mut R,
    ) -> Result<[u8; PROOF_BYTES], UsageError> {
        let sum: u128 = openings.iter().map(|o| o.amount as u128).sum();
        if sum > limit as u128 {
            return Err(UsageError::OverLimit);
        }
        let circuit = UsageCircuit { limit, openings: Some(padded(openings)?) };
        let proof = Groth16::<Bn254>::create_random_proof_with_reduction(circuit, &self.key, rng)
            .map_err(|e| UsageError::Proving(e.to_string()))?;
        let mut bytes = Vec::with_capacity(PROOF_BYTES);
        proof.serialize_compressed(&mut bytes).expect("writing to a Vec cannot fail");
        bytes.try_into().map_err(|b: Vec<u8>| UsageError::Proving(format!("a proof of {} bytes", b.len())))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.key.serialize_compressed(&mut bytes).expect("writing to a Vec cannot fail");
        bytes
    }

    /// Reads a proving key written by [`UsageProver::to_bytes`]. Its points
    /// are not checked (a node reads back only keys it stored itself).
    pub fn from_bytes(bytes: &[u8]) -> Result<UsageProver, UsageError> {
        let key = ProvingKey::<Bn254>::deserialize_compressed_unchecked(bytes)
            .map_err(|e| UsageError::Malformed { what: "proving key", reason: e.to_string() })?;
        Ok(UsageProver { key })
    }
}

/// Whether `circuit` is satisfied, and how many constraints it has: for
/// tests of what cannot be proved.
pub fn check(circuit: UsageCircuit) -> Result<(bool, usize), UsageError> {
    let cs = ark_relations::gr1cs::ConstraintSystem::<Fr>::new_ref();
    circuit.generate_constraints(cs.clone()).map_err(|e| UsageError::Proving(e.to_string()))?;
    cs.finalize();
    let satisfied = cs.is_satisfied().map_err(|e| UsageError::Proving(e.to_string()))?;
    Ok((satisfied, cs.num_constraints()))
}
