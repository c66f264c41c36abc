//! Proofs of usage: a sum within the limit proves and verifies; anything
//! altered fails; a sum over the limit cannot be proved.
#![cfg(feature = "prover")]

use ark_std::rand::rngs::StdRng;
use ark_std::rand::SeedableRng;
use zeromesh_trace::usage::{self, Commitment, Opening, UsageError, UsageVerifier, MAX_RECORDS_PER_PROOF};
use zeromesh_trace::usage_circuit::{check, UsageCircuit, UsageProver, Witness};

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

fn commitments(openings: &[Opening]) -> Vec<Commitment> {
    openings.iter().map(Opening::commit).collect()
}

#[test]
fn a_sum_within_the_limit_proves_and_verifies_and_anything_altered_fails() {
    let mut rng = StdRng::seed_from_u64(7);
    let prover = UsageProver::setup(&mut rng).unwrap();
    let verifier = UsageVerifier::from_bytes(&usage::encode_verifying_key(prover.verifying_key())).unwrap();
    let amounts: Vec<u64> = (0..MAX_RECORDS_PER_PROOF as u64).map(|i| i * 3 + 1).collect();
    let sum: u64 = amounts.iter().sum();
    let openings = openings(&amounts);
    let commitments = commitments(&openings);

    let chunks = prover.prove_window(sum, &openings, &mut rng).unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].proof.len(), 128);
    verifier.verify_window(sum, &commitments, &chunks).unwrap();
    verifier.verify_window(sum + 1000, &commitments, &chunks).unwrap_err();
    verifier.verify_window(sum - 1, &commitments, &chunks).unwrap_err();

    let mut altered = commitments.clone();
    altered.swap(0, 1);
    assert_eq!(verifier.verify_window(sum, &altered, &chunks), Err(UsageError::Invalid));
    assert_eq!(verifier.verify_window(sum, &commitments[1..], &chunks), Err(UsageError::Invalid));
    let mut tampered = chunks.clone();
    tampered[0].proof[5] ^= 1;
    assert!(verifier.verify_window(sum, &commitments, &tampered).is_err());
    let mut other_carry = chunks.clone();
    other_carry[0].carry_out = usage::first_carry();
    assert_eq!(verifier.verify_window(sum, &commitments, &other_carry), Err(UsageError::Invalid));

    // Fewer records than slots: the rest are padding.
    let few = &openings[..5];
    let chunks = prover.prove_window(1_000, few, &mut rng).unwrap();
    verifier.verify_window(1_000, &commitments[..5], &chunks).unwrap();

    // The proving key survives a round trip through bytes.
    let reread = UsageProver::from_bytes(&prover.to_bytes()).unwrap();
    let chunks = reread.prove_window(1_000, few, &mut rng).unwrap();
    verifier.verify_window(1_000, &commitments[..5], &chunks).unwrap();
}

#[test]
fn a_window_of_more_records_than_one_proof_holds_is_proved_in_chained_chunks() {
    let mut rng = StdRng::seed_from_u64(9);
    let prover = UsageProver::setup(&mut rng).unwrap();
    let verifier = UsageVerifier::from_bytes(&usage::encode_verifying_key(prover.verifying_key())).unwrap();
    let openings = openings(&vec![2; MAX_RECORDS_PER_PROOF * 2 + 3]);
    let commitments = commitments(&openings);
    let sum = 2 * openings.len() as u64;
    let chunks = prover.prove_window(sum, &openings, &mut rng).unwrap();
    assert_eq!(chunks.len(), 3);
    verifier.verify_window(sum, &commitments, &chunks).unwrap();
    // Each chunk alone is within the limit, the whole is not: refused.
    verifier.verify_window(sum - 1, &commitments, &chunks).unwrap_err();
    assert_eq!(prover.prove_window(sum - 1, &openings, &mut rng), Err(UsageError::OverLimit));
    // A chunk left out, repeated or reordered breaks the chain.
    assert!(verifier.verify_window(sum, &commitments, &chunks[..2]).is_err());
    let reordered = vec![chunks[1].clone(), chunks[0].clone(), chunks[2].clone()];
    assert_eq!(verifier.verify_window(sum, &commitments, &reordered), Err(UsageError::Invalid));
    let mut restarted = chunks.clone();
    restarted[1] = prover
        .prove_chunk(sum, &Opening { amount: 0, blinding: [0; 32] }, &openings[64..128], [3; 32], &mut rng)
        .unwrap()
        .0;
    assert_eq!(
        verifier.verify_window(sum, &commitments, &restarted),
        Err(UsageError::Invalid),
        "a chunk that starts again from zero"
    );
    let too_many = vec![Opening { amount: 1, blinding: [0; 32] }; usage::MAX_RECORDS_PER_WINDOW + 1];
    assert_eq!(
        prover.prove_window(u64::MAX, &too_many, &mut rng),
        Err(UsageError::TooManyRecords(usage::MAX_RECORDS_PER_WINDOW + 1))
    );
}

#[test]
fn a_sum_over_the_limit_cannot_be_proved() {
    let openings = openings(&[40, 30, 31]);
    let mut padded = openings.clone();
    padded.resize(MAX_RECORDS_PER_PROOF, Opening { amount: 0, blinding: [0; 32] });
    let start = Opening { amount: 0, blinding: [0; 32] };
    let circuit = |limit, sum| UsageCircuit {
        limit,
        witness: Some(Witness {
            carry_in: start,
            openings: padded.clone(),
            carry_out: Opening { amount: sum, blinding: [5; 32] },
        }),
    };
    let (satisfied, constraints) = check(circuit(101, 101)).unwrap();
    assert!(satisfied);
    assert!(constraints < 40_000, "{constraints} constraints");
    let (satisfied, _) = check(circuit(100, 101)).unwrap();
    assert!(!satisfied, "a sum one over the limit must leave the circuit unsatisfied");
    let (satisfied, _) = check(circuit(101, 100)).unwrap();
    assert!(!satisfied, "a carry out that is not the sum must leave the circuit unsatisfied");
    // A carry in "below zero" (a field element that wraps) cannot hide amounts.
    let mut wrapped = circuit(101, 101);
    wrapped.witness.as_mut().unwrap().carry_in.amount = u64::MAX;
    assert!(!check(wrapped).unwrap().0);

    let mut rng = StdRng::seed_from_u64(8);
    let prover = UsageProver::setup(&mut rng).unwrap();
    assert_eq!(prover.prove_window(100, &openings, &mut rng), Err(UsageError::OverLimit));
}

#[test]
fn malformed_keys_commitments_and_proofs_are_refused_with_a_reason() {
    assert!(matches!(UsageVerifier::from_bytes(&[0u8; 10]), Err(UsageError::Malformed { .. })));
    assert!(matches!(UsageVerifier::from_bytes(&vec![0u8; 10_000]), Err(UsageError::Malformed { .. })));
    let too_many = vec![Opening { amount: 1, blinding: [0; 32] }.commit(); MAX_RECORDS_PER_PROOF + 1];
    assert_eq!(usage::records_digest(&too_many), Err(UsageError::TooManyRecords(65)));
    assert!(Commitment::try_from("ff".repeat(32)).is_err(), "not a canonical field element");
}
