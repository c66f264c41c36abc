//! Raft log append with fsync at batch sizes 1, 64 and 1024: entries/s.
//! One RocksDB write batch and one fsync per append, so entries/s should
//! grow with the batch size.
//!
//! Run: `scripts/bench.sh log_append`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use zeromesh_storage::{LogStore, Store};

#[path = "../tests/support/mod.rs"]
mod support;

use support::Config;

/// The payload of one entry: 256 bytes, as in the mesh benchmarks.
const PAYLOAD_BYTES: usize = 256;

fn log_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_append_fsync");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    for batch_size in [1u64, 64, 1024] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = LogStore::<Config>::new(Store::open(dir.path()).expect("open a store"));
        let payload = "x".repeat(PAYLOAD_BYTES);
        let mut next_index = 1u64;
        group.throughput(Throughput::Elements(batch_size));
        group.bench_with_input(BenchmarkId::from_parameter(batch_size), &batch_size, |b, &batch_size| {
            b.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let entries: Vec<Entry<Config>> = (next_index..next_index + batch_size)
                        .map(|index| Entry {
                            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                            payload: EntryPayload::Normal(payload.clone()),
                        })
                        .collect();
                    next_index += batch_size;
                    let started = Instant::now();
                    log.write_entries_synced(entries).expect("append");
                    elapsed += started.elapsed();
                }
                elapsed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, log_append);
criterion_main!(benches);
