//! State-machine apply (puts/s) and snapshot build and install of 100k
//! memory records, on real RocksDB; and, in the same run, the trace log's
//! share of apply: hashing each entry's canonical bytes and appending the
//! leaf to the tree.
//!
//! Run: `scripts/bench.sh state_machine`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeromesh_consensus::{Entry, MemoryStateMachine};
use zeromesh_protocol::{Command, MemoryBatch, MemoryCommand, MemoryPath, MemoryValue, Request};
use zeromesh_storage::Store;

const PUTS_PER_ENTRY: u64 = 64;
const ENTRIES_PER_APPLY: u64 = 16;
const SNAPSHOT_RECORDS: u64 = 100_000;
const VALUE_BYTES: usize = 256;

fn put_entries(first_index: u64, entry_count: u64, first_key: u64) -> Vec<Entry> {
    (0..entry_count)
        .map(|n| {
            let commands = (0..PUTS_PER_ENTRY)
                .map(|k| MemoryCommand::Put {
                    path: MemoryPath::parse(&format!("agent-{}/notes/{}", k % 8, first_key + n * PUTS_PER_ENTRY + k))
                        .unwrap(),
                    value: MemoryValue {
                        value: vec![b'v'; VALUE_BYTES],
                        content_type: "text/plain".into(),
                        tags: vec![],
                    },
                })
                .collect();
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), first_index + n),
                payload: EntryPayload::Normal(Request {
                    stamped_at_ms: 0,
                    command: Command::Memory(MemoryBatch { commands }),
                }),
            }
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn apply(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut machine = MemoryStateMachine::open(Store::open(dir.path()).unwrap()).unwrap();
    let mut next_index = 0;
    let mut group = c.benchmark_group("state_machine_apply");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(PUTS_PER_ENTRY * ENTRIES_PER_APPLY));
    group.bench_function("puts_256B_64_per_entry_16_entries_per_apply", |b| {
        b.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let entries = put_entries(next_index, ENTRIES_PER_APPLY, next_index * PUTS_PER_ENTRY);
                next_index += ENTRIES_PER_APPLY;
                let started = Instant::now();
                rt.block_on(machine.apply(entries)).unwrap();
                elapsed += started.elapsed();
            }
            elapsed
        })
    });
    // The trace's part of the same apply: each entry's leaf hash (its
    // canonical bytes hashed as they are encoded) and the tree's new nodes.
    let mut range = zeromesh_trace::merkle::CompactRange::default();
    let mut nodes = Vec::new();
    group.bench_function("trace_leaves_of_the_same_entries", |b| {
        b.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let entries = put_entries(range.size(), ENTRIES_PER_APPLY, range.size() * PUTS_PER_ENTRY);
                let started = Instant::now();
                for entry in &entries {
                    range.append(zeromesh_consensus::entry_leaf(entry), |id, hash| nodes.push((id, hash)));
                }
                elapsed += started.elapsed();
                nodes.clear();
            }
            elapsed
        })
    });
    group.finish();
}

fn snapshot(c: &mut Criterion) {
    let rt = runtime();
    let source_dir = tempfile::tempdir().unwrap();
    let mut source = MemoryStateMachine::open(Store::open(source_dir.path()).unwrap()).unwrap();
    let entry_count = SNAPSHOT_RECORDS / PUTS_PER_ENTRY;
    for chunk in 0..entry_count.div_ceil(ENTRIES_PER_APPLY) {
        let first = chunk * ENTRIES_PER_APPLY;
        let count = ENTRIES_PER_APPLY.min(entry_count - first);
        rt.block_on(source.apply(put_entries(first, count, first * PUTS_PER_ENTRY))).unwrap();
    }

    let mut group = c.benchmark_group("snapshot_100k_memories");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(entry_count * PUTS_PER_ENTRY));
    group.bench_function("build", |b| {
        b.iter(|| rt.block_on(async { source.get_snapshot_builder().await.build_snapshot().await.unwrap() }))
    });

    let target_dir = tempfile::tempdir().unwrap();
    let mut target = MemoryStateMachine::open(Store::open(target_dir.path()).unwrap()).unwrap();
    group.bench_function("install", |b| {
        b.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let (meta, received) = rt.block_on(async {
                    let mut snapshot = source.get_current_snapshot().await.unwrap().unwrap();
                    let mut received = target.begin_receiving_snapshot().await.unwrap();
                    let mut buffer = vec![0u8; 1 << 20];
                    loop {
                        let read = snapshot.snapshot.read(&mut buffer).await.unwrap();
                        if read == 0 {
                            break;
                        }
                        received.write_all(&buffer[..read]).await.unwrap();
                    }
                    (snapshot.meta, received)
                });
                let started = Instant::now();
                rt.block_on(target.install_snapshot(&meta, received)).unwrap();
                elapsed += started.elapsed();
            }
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, apply, snapshot);
criterion_main!(benches);
