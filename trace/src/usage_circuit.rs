//! The usage circuit and its prover (feature `prover`): the amounts behind
//! up to [`MAX_RECORDS_PER_PROOF`] Poseidon commitments are each below
//! 2^64, and added to a committed running sum (the carry in) they make a
//! committed sum (the carry out) of at most a public limit; the
//! commitments enter through their public digest.

use ark_bn254::{Bn254, Fr};
use ark_groth16::{Groth16, ProvingKey, VerifyingKey};
use ark_r1cs_std::fields::fp::FpVar;
use ark_r1cs_std::prelude::*;
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ark_std::rand::rngs::StdRng;
use ark_std::rand::{CryptoRng, RngCore, SeedableRng};

use crate::poseidon;
use crate::usage::{
    blinding_element, chunk_groups, records_digest, Chunk, Opening, UsageError, MAX_RECORDS_PER_PROOF,
    MAX_RECORDS_PER_WINDOW, PADDING, PROOF_BYTES, SLACK_BITS, VALUE_BITS,
};

/// What one chunk proves about: the running sum before (`carry_in`), the
/// records' openings (exactly [`MAX_RECORDS_PER_PROOF`], padded), and the
/// running sum after (`carry_out`).
#[derive(Clone)]
pub struct Witness {
    pub carry_in: Opening,
    pub openings: Vec<Opening>,
    pub carry_out: Opening,
}

/// The statement of one chunk. A `None` witness makes the shape-only
/// circuit the key generation runs on.
#[derive(Clone)]
pub struct UsageCircuit {
    pub limit: u64,
    pub witness: Option<Witness>,
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

/// An opening's amount (range-checked to `bits` bits) and blinding as
/// witnesses, and the commitment they make.
fn opening_var(
    cs: &ConstraintSystemRef<Fr>,
    opening: Option<Opening>,
    bits: usize,
) -> Result<(FpVar<Fr>, FpVar<Fr>), SynthesisError> {
    let amount = Boolean::le_bits_to_fp(&bits_var(cs, opening.map(|o| o.amount as u128), bits)?)?;
    let blinding = FpVar::new_witness(cs.clone(), || {
        opening.map(|o| blinding_element(&o.blinding)).ok_or(SynthesisError::AssignmentMissing)
    })?;
    let commitment = hash2_var(&amount, &blinding)?;
    Ok((amount, commitment))
}

impl ConstraintSynthesizer<Fr> for UsageCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let witness = self.witness.as_ref();
        let native = |f: fn(&Witness) -> Result<Fr, UsageError>| {
            witness.map(|w| f(w).map_err(|_| SynthesisError::Unsatisfiable)).ok_or(SynthesisError::AssignmentMissing)?
        };
        let limit = FpVar::new_input(cs.clone(), || Ok(Fr::from(self.limit)))?;
        let digest_input = FpVar::new_input(cs.clone(), || {
            native(|w| records_digest(&w.openings.iter().map(Opening::commit).collect::<Vec<_>>()))
        })?;
        let carry_in_input = FpVar::new_input(cs.clone(), || native(|w| w.carry_in.commit().element()))?;
        let carry_out_input = FpVar::new_input(cs.clone(), || native(|w| w.carry_out.commit().element()))?;

        let (carried, carry_in) = opening_var(&cs, witness.map(|w| w.carry_in), SLACK_BITS)?;
        carry_in.enforce_equal(&carry_in_input)?;
        let mut chain = FpVar::zero();
        let mut sum = carried;
        let mut pending: Option<FpVar<Fr>> = None;
        for slot in 0..MAX_RECORDS_PER_PROOF {
            let (amount, commitment) = opening_var(&cs, witness.map(|w| w.openings[slot]), VALUE_BITS)?;
            match pending.take() {
                None => pending = Some(commitment),
                Some(left) => chain = poseidon_var([chain, left, commitment])?[0].clone(),
            }
            sum += &amount;
        }
        chain.enforce_equal(&digest_input)?;
        // The carry out opens to the sum; its amount is not range-checked
        // here: equal to the sum, it is below 2^73.
        let blinding_out = FpVar::new_witness(cs.clone(), || {
            witness.map(|w| blinding_element(&w.carry_out.blinding)).ok_or(SynthesisError::AssignmentMissing)
        })?;
        hash2_var(&sum, &blinding_out)?.enforce_equal(&carry_out_input)?;
        // limit - sum must be a small non-negative number: if the sum were
        // over the limit, the difference would wrap to nearly the field's size.
        let slack_value = witness
            .map(|w| (self.limit as u128).wrapping_sub(w.carry_out.amount as u128) & ((1u128 << SLACK_BITS) - 1));
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
        let circuit = UsageCircuit { limit: 0, witness: None };
        let key = Groth16::<Bn254>::generate_random_parameters_with_reduction(circuit, rng)
            .map_err(|e| UsageError::Proving(e.to_string()))?;
        Ok(UsageProver { key })
    }

    pub fn verifying_key(&self) -> &VerifyingKey<Bn254> {
        &self.key.vk
    }

    /// Proves one chunk: `openings`' amounts added to `carry_in`'s make a
    /// sum of at most `limit`, committed to with `blinding_out`. Refuses
    /// when the sum is over the limit (the circuit could not be satisfied).
    pub fn prove_chunk<R: RngCore + CryptoRng>(
        &self,
        limit: u64,
        carry_in: &Opening,
        openings: &[Opening],
        blinding_out: [u8; 32],
        rng: &mut R,
    ) -> Result<(Chunk, Opening), UsageError> {
        let sum = openings.iter().map(|o| o.amount as u128).sum::<u128>() + carry_in.amount as u128;
        if sum > limit as u128 {
            return Err(UsageError::OverLimit);
        }
        let carry_out = Opening { amount: sum as u64, blinding: blinding_out };
        let witness = Witness { carry_in: *carry_in, openings: padded(openings)?, carry_out };
        let circuit = UsageCircuit { limit, witness: Some(witness) };
        let proof = Groth16::<Bn254>::create_random_proof_with_reduction(circuit, &self.key, rng)
            .map_err(|e| UsageError::Proving(e.to_string()))?;
        let mut bytes = Vec::with_capacity(PROOF_BYTES);
        proof.serialize_compressed(&mut bytes).expect("writing to a Vec cannot fail");
        Ok((Chunk { carry_out: carry_out.commit(), proof: bytes }, carry_out))
    }

    /// Proves a window: `openings`' amounts (in order, at most
    /// [`MAX_RECORDS_PER_WINDOW`]) sum to at most `limit`, in chained
    /// chunks whose carries are blinded from `rng`.
    pub fn prove_window<R: RngCore + CryptoRng>(
        &self,
        limit: u64,
        openings: &[Opening],
        rng: &mut R,
    ) -> Result<Vec<Chunk>, UsageError> {
        if openings.len() > MAX_RECORDS_PER_WINDOW {
            return Err(UsageError::TooManyRecords(openings.len()));
        }
        if openings.iter().map(|o| o.amount as u128).sum::<u128>() > limit as u128 {
            return Err(UsageError::OverLimit);
        }
        let groups = chunk_groups(openings);
        let mut carry = PADDING;
        let mut chunks = Vec::with_capacity(groups.len());
        for group in groups {
            let mut blinding = [0u8; 32];
            rng.fill_bytes(&mut blinding);
            let (chunk, carry_out) = self.prove_chunk(limit, &carry, group, blinding, rng)?;
            chunks.push(chunk);
            carry = carry_out;
        }
        Ok(chunks)
    }

    /// [`UsageProver::setup`] from a generator seeded with `seed`: 32
    /// bytes the caller drew from the operating system and then dropped.
    pub fn setup_from_seed(seed: [u8; 32]) -> Result<UsageProver, UsageError> {
        UsageProver::setup(&mut StdRng::from_seed(seed))
    }

    /// [`UsageProver::prove_window`] with its randomness from `seed`: 32
    /// bytes the caller drew from the operating system for this proof.
    pub fn prove_window_from_seed(
        &self,
        limit: u64,
        openings: &[Opening],
        seed: [u8; 32],
    ) -> Result<Vec<Chunk>, UsageError> {
        self.prove_window(limit, openings, &mut StdRng::from_seed(seed))
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
