//! A data file damaged on disk: the store refuses to open, naming the file,
//! rather than serving what is left of it.

use zeromesh_storage::{LogStore, Store};

mod support;

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use support::Config;

fn entries(indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry<Config>> {
    indexes
        .map(|index| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(format!("entry {index} {}", "x".repeat(200))),
        })
        .collect()
}

/// A store holding entries 1 to 200, appended 10 at a time, then closed
/// (flushed to table files first if `flush`).
fn written_store(dir: &tempfile::TempDir, flush: bool) {
    let store = Store::open(dir.path()).unwrap();
    let log = LogStore::<Config>::new(store.clone());
    for first in (1..=200).step_by(10) {
        log.write_entries_synced(entries(first..=first + 9)).unwrap();
    }
    if flush {
        store.flush().unwrap();
    }
}

/// The store's first file named `*.{extension}`.
fn file_named(dir: &tempfile::TempDir, extension: &str) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir.path().join("db"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|found| found == extension))
        .collect();
    files.sort();
    files.into_iter().next().unwrap_or_else(|| panic!("no .{extension} file"))
}

fn refusal(dir: &tempfile::TempDir) -> String {
    match Store::open(dir.path()) {
        Ok(_) => panic!("a damaged store opened"),
        Err(error) => error.to_string(),
    }
}

async fn last_index(dir: &tempfile::TempDir) -> Option<u64> {
    let mut log = LogStore::<Config>::new(Store::open(dir.path()).unwrap());
    log.get_log_state().await.unwrap().last_log_id.map(|id| id.index)
}

#[test]
fn a_write_ahead_log_damaged_in_the_middle_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    written_store(&dir, false);
    let wal = file_named(&dir, "log");
    let mut bytes = std::fs::read(&wal).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 8] {
        *byte ^= 0xff;
    }
    std::fs::write(&wal, bytes).unwrap();
    let refused = refusal(&dir);
    assert!(refused.contains(&wal.display().to_string()) && refused.contains("is damaged"), "{refused}");
}

#[test]
fn a_truncated_table_file_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    written_store(&dir, true);
    let table = file_named(&dir, "sst");
    let length = std::fs::metadata(&table).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&table).unwrap().set_len(length / 2).unwrap();
    let refused = refusal(&dir);
    assert!(refused.contains(&table.display().to_string()), "{refused}");
}

#[tokio::test]
async fn a_torn_last_record_of_the_write_ahead_log_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    written_store(&dir, false);
    let wal = file_named(&dir, "log");
    let length = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(length - 100).unwrap();
    assert_eq!(last_index(&dir).await, Some(190));
}
