//! Proofs of usage: a sum within the limit proves and verifies; anything
//! altered fails; a sum over the limit cannot be proved.
#![cfg(feature = "prover")]

use ark_std::rand::rngs::StdRng;
use ark_std::rand::SeedableRng;
use zeromesh_trace::usage::{self, Commitment, Opening, UsageError, UsageVerifier, MAX_RECORDS_PER_PROOF};
use zeromesh_trace::usage_circuit::{check, UsageCircuit, UsageProver};

fn openings(amounts: &[u64]) -> Vec<Opening> {
    amounts
        .iter()
        .enumerate()
        .map(|(i, amount)| {
            let mut blinding = [0u8; 32];
            blinding[..8].copy_from_slice(&(i as u64 * 7919 + 1).to_le_bytes());
            blinding[31] = 0xff; // ignored: 31 bytes are used
            Opening { amount: *amount, blinding }
        })
        .collect()
}

#[test]
fn a_sum_within_the_limit_proves_and_verifies_and_anything_altered_fails() {
    let mut rng = StdRng::seed_from_u64(7);
    let prover = UsageProver::setup(&mut rng).unwrap();
    let verifier = UsageVerifier::from_bytes(&usage::encode_verifying_key(prover.verifying_key())).unwrap();
    let amounts: Vec<u64> = (0..MAX_RECORDS_PER_PROOF as u64).map(|i| i * 3 + 1).collect();
    let sum: u64 = amounts.iter().sum();
    let openings = openings(&amounts);
    let commitments: Vec<Commitment> = openings.iter().map(Opening::commit).collect();

    let proof = prover.prove(sum, &openings, &mut rng).unwrap();
    assert_eq!(proof.len(), 128);
    verifier.verify(sum, &commitments, &proof).unwrap();
    verifier.verify(sum + 1000, &commitments, &proof).unwrap_err();
    verifier.verify(sum - 1, &commitments, &proof).unwrap_err();

    let mut altered = commitments.clone();
    altered.swap(0, 1);
    assert_eq!(verifier.verify(sum, &altered, &proof), Err(UsageError::Invalid));
    assert_eq!(verifier.verify(sum, &commitments[1..], &proof), Err(UsageError::Invalid));
    let mut tampered = proof;
    tampered[5] ^= 1;
    assert!(verifier.verify(sum, &commitments, &tampered).is_err());

    // Fewer records than slots: the rest are padding.
    let few = &openings[..5];
    let few_commitments: Vec<Commitment> = few.iter().map(Opening::commit).collect();
    let proof = prover.prove(1_000, few, &mut rng).unwrap();
    verifier.verify(1_000, &few_commitments, &proof).unwrap();

    // The proving key survives a round trip through bytes.
    let reread = UsageProver::from_bytes(&prover.to_bytes()).unwrap();
    let proof = reread.prove(1_000, few, &mut rng).unwrap();
    verifier.verify(1_000, &few_commitments, &proof).unwrap();
}

#[test]
fn a_sum_over_the_limit_cannot_be_proved() {
    let openings = openings(&[40, 30, 31]);
    let mut padded = openings.clone();
    padded.resize(MAX_RECORDS_PER_PROOF, Opening { amount: 0, blinding: [0; 32] });
    let (satisfied, constraints) = check(UsageCircuit { limit: 101, openings: Some(padded.clone()) }).unwrap();
    assert!(satisfied);
    assert!(constraints < 40_000, "{constraints} constraints");
    let (satisfied, _) = check(UsageCircuit { limit: 100, openings: Some(padded) }).unwrap();
    assert!(!satisfied, "a sum one over the limit must leave the circuit unsatisfied");

    let mut rng = StdRng::seed_from_u64(8);
    let prover = UsageProver::setup(&mut rng).unwrap();
    assert_eq!(prover.prove(100, &openings, &mut rng), Err(UsageError::OverLimit));
}

#[test]
fn malformed_keys_commitments_and_proofs_are_refused_with_a_reason() {
    assert!(matches!(UsageVerifier::from_bytes(&[0u8; 10]), Err(UsageError::Malformed { .. })));
    assert!(matches!(UsageVerifier::from_bytes(&vec![0u8; 10_000]), Err(UsageError::Malformed { .. })));
    let too_many = vec![Opening { amount: 1, blinding: [0; 32] }.commit(); MAX_RECORDS_PER_PROOF + 1];
    assert_eq!(usage::records_digest(&too_many), Err(UsageError::TooManyRecords(65)));
    assert!(Commitment::try_from("ff".repeat(32)).is_err(), "not a canonical field element");
}
