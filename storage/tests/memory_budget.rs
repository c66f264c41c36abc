//! RocksDB's memory stays within a store's budget while more data than the
//! budget is written and read back; flushes keep to the background write
//! limit; writes that wait for flushes are counted.

use zeromesh_protocol::MemoryPath;
use zeromesh_storage::{Store, StoreLimits, StoredVersion, WriteStalls};

const BUDGET: usize = 8 << 20;

fn version(value: &[u8]) -> StoredVersion {
    StoredVersion {
        version: 1,
        written_at_ms: 0,
        log_index: 1,
        deleted: false,
        value: value.to_vec(),
        content_type: "application/octet-stream".into(),
        tags: Vec::new(),
    }
}

#[test]
fn memory_stays_within_the_budget_under_six_times_as_much_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), StoreLimits { memory_bytes: BUDGET, ..StoreLimits::default() }).unwrap();
    // 48 MiB of values, each stored twice (latest and history).
    let value = vec![7u8; 1024];
    let (batches, per_batch) = (48, 1024);
    let mut peak = store.memory_usage();
    let mut observe = |store: &Store| {
        let now = store.memory_usage();
        peak.cache_bytes = peak.cache_bytes.max(now.cache_bytes);
        peak.memtable_bytes = peak.memtable_bytes.max(now.memtable_bytes);
    };
    for batch_index in 0..batches {
        let mut batch = store.state_batch();
        for index in 0..per_batch {
            let path = MemoryPath::parse(&format!("agent-a/b{batch_index}/k{index}")).unwrap();
            batch.put_version(&path, &version(&value)).unwrap();
        }
        batch.commit().unwrap();
        observe(&store);
    }
    for batch_index in 0..batches {
        for index in (0..per_batch).step_by(7) {
            let path = MemoryPath::parse(&format!("agent-a/b{batch_index}/k{index}")).unwrap();
            assert_eq!(store.latest(&path).unwrap().unwrap().value, value);
        }
        observe(&store);
    }
    assert_eq!(peak.budget_bytes, BUDGET);
    // The cache's capacity is not strict (a block in use stays), so allow
    // it a little over; memtables wait for flushes at half the budget.
    assert!(peak.cache_bytes <= BUDGET + BUDGET / 8, "{peak:?}");
    assert!(peak.memtable_bytes <= BUDGET, "{peak:?}");
    assert!(peak.cache_bytes > BUDGET / 2, "the reads filled the cache: {peak:?}");
}

/// Writes `bytes` of values into a fresh store opened within `limits` and
/// flushes them to table files; returns the store.
fn flushed(dir: &std::path::Path, limits: StoreLimits, bytes: usize) -> Store {
    let store = Store::open_with(dir, limits).unwrap();
    let value = vec![9u8; 1024];
    let mut batch = store.state_batch();
    for index in 0..bytes / 1024 {
        let path = MemoryPath::parse(&format!("agent-a/k{index}")).unwrap();
        batch.put_version(&path, &version(&value)).unwrap();
    }
    batch.commit().unwrap();
    store.flush().unwrap();
    store
}

#[test]
fn flushes_write_through_the_background_limit_and_wait_for_it() {
    // 256 KiB a second, topped up every 10 ms (2.6 KiB at a time): no flush
    // of 64 KiB of values (twice over, latest and history) gets through
    // without waiting.
    let limited = StoreLimits { background_write_bytes_per_sec: 256 << 10, ..StoreLimits::default() };
    let dir = tempfile::tempdir().unwrap();
    let store = flushed(dir.path(), limited, 64 << 10);
    assert!(
        store.background_bytes_limited() >= 64 << 10,
        "{} bytes went through the limit",
        store.background_bytes_limited()
    );
    assert!(store.background_write_wait_micros() > 0, "no flush waited for the limit");

    let unlimited = StoreLimits { background_write_bytes_per_sec: 0, ..StoreLimits::default() };
    let dir = tempfile::tempdir().unwrap();
    let store = flushed(dir.path(), unlimited, 64 << 10);
    assert_eq!(store.background_bytes_limited(), 0);
    assert_eq!(store.background_write_wait_micros(), 0);
}

/// Commits one batch that sets a `bytes`-long value (the applied state's,
/// a single key of one column family).
fn write_value(store: &Store, bytes: usize) {
    let mut batch = store.state_batch();
    batch.set_applied_state(&vec![3u8; bytes]).unwrap();
    batch.commit().unwrap();
}

#[test]
fn writes_held_while_flushes_are_behind_are_counted() {
    // An 8 MiB budget: memtables of 1 MiB, two at most per column family,
    // 4 MiB in all. Flushes write 1 MiB a second: the first memtable's
    // flush takes a second, and the third write finds both memtables of its
    // column family full and waits for it.
    let limits = StoreLimits { memory_bytes: BUDGET, background_write_bytes_per_sec: 1 << 20 };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), limits).unwrap();
    assert_eq!(store.write_stalls(), WriteStalls::default());
    for _ in 0..3 {
        write_value(&store, 1100 << 10);
    }
    let stalls = store.write_stalls();
    assert!(stalls.behind_micros > 0, "{stalls:?}");
}

#[test]
fn writes_stopped_at_the_memory_budget_are_counted() {
    // One write of more than the memtables' half of the budget: the next
    // waits for its flush.
    let limits = StoreLimits { memory_bytes: BUDGET, background_write_bytes_per_sec: 0 };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), limits).unwrap();
    write_value(&store, BUDGET / 2 + (512 << 10));
    assert_eq!(store.write_stalls().memory_limit_stops, 0);
    write_value(&store, 16);
    let stalls = store.write_stalls();
    assert_eq!(stalls.memory_limit_stops, 1, "{stalls:?}");
}
