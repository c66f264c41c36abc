//! The Raft log store on real RocksDB: what is appended, truncated, purged
//! and voted survives a reopen.

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
use zeromesh_storage::{LogStore, Store};

mod support;

use support::Config;

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry<Config>> {
    indexes
        .map(|index| Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(format!("entry {index}")) })
        .collect()
}

fn open(dir: &tempfile::TempDir) -> LogStore<Config> {
    LogStore::new(Store::open(dir.path()).expect("open a store"))
}

#[test]
fn each_append_is_fsynced_once_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = LogStore::<Config>::new(store.clone());
    let mut next = 1;
    for batch_size in [1u64, 64, 1024] {
        let before = store.wal_syncs();
        log.write_entries_synced(entries(1, next..=next + batch_size - 1)).unwrap();
        next += batch_size;
        assert_eq!(store.wal_syncs() - before, 1, "one fsync for an append of {batch_size} entries");
    }
}

#[tokio::test]
async fn appended_entries_votes_and_purges_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(&dir);
        assert_eq!(log.get_log_state().await.unwrap().last_log_id, None);
        assert_eq!(log.write_entries_synced(entries(1, 1..=10)).unwrap(), 10);
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        log.save_committed(Some(log_id(1, 8))).await.unwrap();
        log.purge(log_id(1, 4)).await.unwrap();
    }
    let mut log = open(&dir);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(1, 10)));
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 8)));
    let kept = log.try_get_log_entries(0..=u64::MAX).await.unwrap();
    assert_eq!(kept.iter().map(|entry| entry.log_id.index).collect::<Vec<_>>(), (5..=10).collect::<Vec<_>>());
    let some = log.try_get_log_entries(6..8).await.unwrap();
    assert_eq!(some.iter().map(|entry| entry.log_id.index).collect::<Vec<_>>(), vec![6, 7]);
}

#[tokio::test]
async fn truncation_removes_the_conflicting_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    log.write_entries_synced(entries(1, 1..=10)).unwrap();
    log.truncate(log_id(1, 6)).await.unwrap();
    log.write_entries_synced(entries(2, 6..=7)).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 7)));
    let all = log.try_get_log_entries(..).await.unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(all[5].log_id, log_id(2, 6));
}

/// The writer's reads (served from the entries it keeps in memory where it
/// can) against a second log store's on the same RocksDB (which keeps none),
/// after every change: bounded ranges, as openraft reads them.
#[tokio::test]
async fn entries_read_back_after_appends_truncations_and_purges_match_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut writer = LogStore::<Config>::new(store.clone());
    let mut disk = LogStore::<Config>::new(store);
    async fn agree(writer: &mut LogStore<Config>, disk: &mut LogStore<Config>, first: u64, last: u64, step: &str) {
        for start in first..=last + 1 {
            for end in start..=last + 2 {
                let kept = writer.try_get_log_entries(start..end).await.unwrap();
                let read = disk.try_get_log_entries(start..end).await.unwrap();
                assert_eq!(
                    kept.iter().map(|e| (e.log_id, format!("{:?}", e.payload))).collect::<Vec<_>>(),
                    read.iter().map(|e| (e.log_id, format!("{:?}", e.payload))).collect::<Vec<_>>(),
                    "entries {start}..{end} after {step}"
                );
            }
        }
    }
    writer.write_entries_synced(entries(1, 1..=10)).unwrap();
    agree(&mut writer, &mut disk, 1, 10, "the first append").await;
    // A new leader overwrites 6.. : truncated first, then appended.
    writer.truncate(log_id(1, 6)).await.unwrap();
    agree(&mut writer, &mut disk, 1, 10, "a truncation").await;
    writer.write_entries_synced(entries(2, 6..=8)).unwrap();
    assert_eq!(writer.try_get_log_entries(6..7).await.unwrap()[0].log_id, log_id(2, 6));
    agree(&mut writer, &mut disk, 1, 10, "an append after the truncation").await;
    writer.purge(log_id(1, 3)).await.unwrap();
    agree(&mut writer, &mut disk, 1, 10, "a purge").await;
    // An append that does not follow on (after a snapshot install).
    writer.purge(log_id(2, 8)).await.unwrap();
    writer.write_entries_synced(entries(3, 20..=22)).unwrap();
    agree(&mut writer, &mut disk, 18, 23, "an append after a gap").await;
}

#[tokio::test]
async fn a_fully_purged_log_reports_the_purged_id_as_last() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir);
    log.write_entries_synced(entries(1, 1..=5)).unwrap();
    log.purge(log_id(1, 5)).await.unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(1, 5)));
    assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
}
