//! An appender process is killed with SIGKILL mid-stream; every append it
//! acknowledged is in the log when the store is reopened.
//!
//! The test binary plays both parts: run normally it is the checker; with
//! `ZEROMESH_KILL9_DIR` set it is the appender, printing each acknowledged
//! log index on stdout.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};
use zeromesh_storage::{LogStore, Store};

mod support;

use support::Config;

const DIR_VARIABLE: &str = "ZEROMESH_KILL9_DIR";
/// The appender stops by itself after this many entries, so a checker that
/// failed to kill it cannot leave it running.
const APPENDER_MAX_ENTRIES: u64 = 200_000;
const ACKS_BEFORE_KILL: usize = 300;
const DEADLINE: Duration = Duration::from_secs(60);

#[test]
#[ignore = "the appender side of every_acknowledged_append_survives_a_kill_9, started by it"]
fn appender_process() {
    let Ok(dir) = std::env::var(DIR_VARIABLE) else { return };
    let log = LogStore::<Config>::new(Store::open(std::path::Path::new(&dir)).expect("open the store"));
    for index in 1..=APPENDER_MAX_ENTRIES {
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(format!("entry {index}")),
        };
        log.write_entries_synced([entry]).expect("append");
        println!("acked {index}");
    }
}

#[tokio::test]
async fn every_acknowledged_append_survives_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "appender_process", "--ignored", "--nocapture", "--test-threads=1"])
        .env(DIR_VARIABLE, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the appender");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut last_acked = 0u64;
    let mut acks = 0usize;
    while acks < ACKS_BEFORE_KILL {
        assert!(started.elapsed() < DEADLINE, "the appender acknowledged only {acks} entries within {DEADLINE:?}");
        let Some(line) = lines.next() else { panic!("the appender exited after {acks} acknowledgements") };
        if let Some(index) = line.unwrap().strip_prefix("acked ") {
            last_acked = index.parse().unwrap();
            acks += 1;
        }
    }
    child.kill().expect("SIGKILL the appender");
    child.wait().unwrap();
    // Acknowledgements already in the pipe count too: each was acked before printed.
    for line in lines.map_while(Result::ok) {
        if let Some(index) = line.strip_prefix("acked ") {
            last_acked = index.parse().unwrap();
        }
    }

    let mut log = LogStore::<Config>::new(Store::open(dir.path()).expect("reopen after the kill"));
    let state = log.get_log_state().await.unwrap();
    let last = state.last_log_id.expect("the log is not empty").index;
    assert!(last >= last_acked, "acknowledged up to {last_acked} but the log ends at {last}");
    let entries = log.try_get_log_entries(1..=last_acked).await.unwrap();
    assert_eq!(entries.len() as u64, last_acked, "every acknowledged entry is readable");
}
