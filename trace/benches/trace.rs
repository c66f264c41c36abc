//! The trace engine's costs: appending leaves, building and verifying
//! inclusion and consistency proofs, verifying a cosigned checkpoint, a
//! Poseidon hash, and a Groth16 proof of usage over 64 records.
//!
//! Run: `scripts/bench.sh trace`

use std::time::Duration;

use ark_std::rand::SeedableRng;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::SigningKey;
use zeromesh_trace::checkpoint::{Checkpoint, SignedCheckpoint};
use zeromesh_trace::merkle::{self, CompactRange, Hash, MemoryNodes};
use zeromesh_trace::note::{self, NoteVerifier};
use zeromesh_trace::usage::{Commitment, Opening, UsageVerifier, MAX_RECORDS_PER_PROOF};
use zeromesh_trace::usage_circuit::UsageProver;

/// Leaves in the tree the proofs are taken from.
const TREE_LEAVES: u64 = 1 << 16;
/// Bytes of each appended leaf: a small memory write's canonical entry.
const LEAF_BYTES: usize = 200;

fn tree() -> (MemoryNodes, Vec<Hash>) {
    let leaves: Vec<Hash> = (0..TREE_LEAVES).map(|i| merkle::leaf_hash(&i.to_le_bytes())).collect();
    let (nodes, _) = MemoryNodes::from_leaves(&leaves);
    (nodes, leaves)
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("trace_append");
    group.throughput(Throughput::Elements(1024));
    let entry = vec![7u8; LEAF_BYTES];
    group.bench_function("hash_and_append_1024_leaves_of_200_bytes", |b| {
        let mut range = CompactRange::default();
        let mut nodes = Vec::with_capacity(2048);
        b.iter(|| {
            for _ in 0..1024 {
                range.append(merkle::leaf_hash(&entry), |id, hash| nodes.push((id, hash)));
            }
            nodes.clear();
        })
    });
    group.finish();
}

fn proofs(c: &mut Criterion) {
    let (nodes, leaves) = tree();
    let root = merkle::root(TREE_LEAVES, &nodes).unwrap();
    let mut group = c.benchmark_group("trace_proofs_65536_leaves");
    let index = TREE_LEAVES / 3;
    group
        .bench_function("inclusion_prove", |b| b.iter(|| merkle::inclusion_proof(index, TREE_LEAVES, &nodes).unwrap()));
    let path = merkle::inclusion_proof(index, TREE_LEAVES, &nodes).unwrap();
    group.bench_function("inclusion_verify", |b| {
        b.iter(|| merkle::verify_inclusion(index, TREE_LEAVES, &leaves[index as usize], &path, &root).unwrap())
    });
    let old = TREE_LEAVES / 3 + 1;
    let old_root = merkle::root(old, &nodes).unwrap();
    group.bench_function("consistency_prove", |b| {
        b.iter(|| merkle::consistency_proof(old, TREE_LEAVES, &nodes).unwrap())
    });
    let path = merkle::consistency_proof(old, TREE_LEAVES, &nodes).unwrap();
    group.bench_function("consistency_verify", |b| {
        b.iter(|| merkle::verify_consistency(old, TREE_LEAVES, &path, &old_root, &root).unwrap())
    });
    group.finish();
}

fn checkpoints(c: &mut Criterion) {
    let keys: Vec<SigningKey> = (1..=3u8).map(|seed| SigningKey::from_bytes(&[seed; 32])).collect();
    let verifiers: Vec<NoteVerifier> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| NoteVerifier::new(&format!("voter-{i}"), key.verifying_key()).unwrap())
        .collect();
    let checkpoint = Checkpoint { origin: "zeromesh/bench".into(), size: 1 << 20, root: merkle::leaf_hash(b"root") };
    let mut group = c.benchmark_group("trace_checkpoint_3_voters");
    group.bench_function("cosign_all", |b| {
        b.iter(|| {
            let mut signed = SignedCheckpoint::unsigned(checkpoint.clone()).unwrap();
            for (i, key) in keys.iter().enumerate() {
                signed.note.add(note::sign(&signed.note.text, &format!("voter-{i}"), key).unwrap()).unwrap();
            }
            signed.encode()
        })
    });
    let mut signed = SignedCheckpoint::unsigned(checkpoint.clone()).unwrap();
    for (i, key) in keys.iter().enumerate() {
        signed.note.add(note::sign(&signed.note.text, &format!("voter-{i}"), key).unwrap()).unwrap();
    }
    let text = signed.encode();
    group.bench_function("parse_and_verify", |b| {
        b.iter(|| SignedCheckpoint::parse(&text).unwrap().verify(&verifiers).unwrap())
    });
    group.finish();
}

fn usage(c: &mut Criterion) {
    let mut rng = ark_std::rand::rngs::StdRng::seed_from_u64(2026);
    let prover = UsageProver::setup(&mut rng).unwrap();
    let verifier =
        UsageVerifier::from_bytes(&zeromesh_trace::usage::encode_verifying_key(prover.verifying_key())).unwrap();
    let openings: Vec<Opening> =
        (0..MAX_RECORDS_PER_PROOF as u64).map(|i| Opening { amount: 1000 + i, blinding: [i as u8 + 1; 32] }).collect();
    let commitments: Vec<Commitment> = openings.iter().map(Opening::commit).collect();
    let limit = 1_000_000;
    let mut group = c.benchmark_group("usage_proof_64_records");
    group.bench_function("poseidon_commitment", |b| b.iter(|| openings[0].commit()));
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("groth16_prove", |b| {
        b.iter_batched(|| (), |()| prover.prove_window(limit, &openings, &mut rng).unwrap(), BatchSize::PerIteration)
    });
    let chunks = prover.prove_window(limit, &openings, &mut rng).unwrap();
    group.sample_size(50).measurement_time(Duration::from_secs(5));
    group.bench_function("groth16_verify_with_digest", |b| {
        b.iter(|| verifier.verify_window(limit, &commitments, &chunks).unwrap())
    });
    group.finish();
}

criterion_group!(benches, append, proofs, checkpoints, usage);
criterion_main!(benches);
