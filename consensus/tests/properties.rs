//! Properties of the state machine, checked on real RocksDB stores:
//! determinism, snapshot round trips and compare-and-set under interleaving.

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeromesh_consensus::Entry;
use zeromesh_protocol::{
    Command, CommandOutcome, CommandReply, MemoryBatch, MemoryCommand, MemoryPath, MemoryValue, Request,
};

const MAX_RECORDS: usize = 1_000_000;

mod common;
use common::{open_machine, runtime};

fn entry(index: u64, stamped_at_ms: u64, commands: Vec<MemoryCommand>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request { stamped_at_ms, command: Command::Memory(MemoryBatch { commands }) }),
    }
}

fn path_strategy() -> impl Strategy<Value = MemoryPath> {
    (0..3usize, 0..4usize).prop_map(|(agent, name)| MemoryPath::parse(&format!("agent-{agent}/notes/{name}")).unwrap())
}

fn value_strategy() -> impl Strategy<Value = MemoryValue> {
    (proptest::collection::vec(any::<u8>(), 0..64), proptest::collection::vec("[a-z]{1,8}", 0..3))
        .prop_map(|(value, tags)| MemoryValue { value, content_type: "application/octet-stream".into(), tags })
}

fn command_strategy() -> impl Strategy<Value = MemoryCommand> {
    prop_oneof![
        4 => (path_strategy(), value_strategy()).prop_map(|(path, value)| MemoryCommand::Put { path, value }),
        1 => path_strategy().prop_map(|path| MemoryCommand::Delete { path }),
        2 => (path_strategy(), 0..6u64, value_strategy())
            .prop_map(|(path, expected_version, value)| MemoryCommand::CompareAndSet { path, expected_version, value }),
    ]
}

fn entries_strategy() -> impl Strategy<Value = Vec<Vec<MemoryCommand>>> {
    proptest::collection::vec(proptest::collection::vec(command_strategy(), 1..6), 1..40)
}

fn to_entries(batches: &[Vec<MemoryCommand>]) -> Vec<Entry> {
    batches.iter().enumerate().map(|(i, commands)| entry(i as u64 + 1, 1_000 + i as u64, commands.clone())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Two fresh state machines fed the same entries, in differently sized
    /// apply calls, end with byte-identical state and the same replies.
    #[test]
    fn the_same_entries_give_identical_state(batches in entries_strategy(), split in 1..10usize) {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (store_a, mut machine_a) = open_machine(&dir_a);
        let (store_b, mut machine_b) = open_machine(&dir_b);
        let entries = to_entries(&batches);
        let rt = runtime();
        let replies_a = rt.block_on(machine_a.apply(entries.clone())).unwrap();
        let mut replies_b = Vec::new();
        for chunk in entries.chunks(split) {
            replies_b.extend(rt.block_on(machine_b.apply(chunk.to_vec())).unwrap());
        }
        prop_assert_eq!(replies_a, replies_b);
        prop_assert_eq!(store_a.state_records(MAX_RECORDS).unwrap(), store_b.state_records(MAX_RECORDS).unwrap());
        prop_assert_eq!(rt.block_on(machine_a.applied_state()).unwrap(), rt.block_on(machine_b.applied_state()).unwrap());
    }

    /// A machine that installed a snapshot and then applied the rest of the
    /// entries has the same trace tree (size, root, every node) as one that
    /// applied them all.
    #[test]
    fn a_machine_that_installed_a_snapshot_continues_the_same_trace_tree(
        batches in entries_strategy(),
        cut in 0..40usize,
    ) {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (store_a, mut machine_a) = open_machine(&dir_a);
        let (store_b, mut machine_b) = open_machine(&dir_b);
        let entries = to_entries(&batches);
        let cut = cut.min(entries.len());
        let rt = runtime();
        rt.block_on(async {
            machine_a.apply(entries[..cut].to_vec()).await.unwrap();
            let mut snapshot = machine_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
            let mut received = machine_b.begin_receiving_snapshot().await.unwrap();
            tokio::io::copy(&mut snapshot.snapshot, &mut received).await.unwrap();
            machine_b.install_snapshot(&snapshot.meta, received).await.unwrap();
            machine_a.apply(entries[cut..].to_vec()).await.unwrap();
            machine_b.apply(entries[cut..].to_vec()).await.unwrap();
        });
        let (head_a, head_b) = (*machine_a.trace_heads().borrow(), *machine_b.trace_heads().borrow());
        prop_assert_eq!(head_a.size, entries.len() as u64 + 1);
        prop_assert_eq!(head_a, head_b);
        prop_assert_eq!(store_a.state_records(MAX_RECORDS).unwrap(), store_b.state_records(MAX_RECORDS).unwrap());
    }

    /// A snapshot built from one state machine and installed on a fresh one
    /// reproduces the same state and applied state.
    #[test]
    fn a_snapshot_then_restore_gives_identical_state(batches in entries_strategy()) {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (store_a, mut machine_a) = open_machine(&dir_a);
        let (store_b, mut machine_b) = open_machine(&dir_b);
        let rt = runtime();
        rt.block_on(async {
            machine_a.apply(to_entries(&batches)).await.unwrap();
            let mut builder = machine_a.get_snapshot_builder().await;
            let mut snapshot = builder.build_snapshot().await.unwrap();
            // Carry the file across in small chunks, as the network would.
            let mut received = machine_b.begin_receiving_snapshot().await.unwrap();
            let mut chunk = vec![0u8; 777];
            loop {
                let read = snapshot.snapshot.read(&mut chunk).await.unwrap();
                if read == 0 { break; }
                received.write_all(&chunk[..read]).await.unwrap();
            }
            machine_b.install_snapshot(&snapshot.meta, received).await.unwrap();
        });
        prop_assert_eq!(store_a.state_records(MAX_RECORDS).unwrap(), store_b.state_records(MAX_RECORDS).unwrap());
        prop_assert_eq!(rt.block_on(machine_a.applied_state()).unwrap(), rt.block_on(machine_b.applied_state()).unwrap());
        // The restored machine also recovers the same state when reopened.
        drop(machine_b);
        drop(store_b);
        let (store_c, _machine_c) = open_machine(&dir_b);
        prop_assert_eq!(store_a.state_records(MAX_RECORDS).unwrap(), store_c.state_records(MAX_RECORDS).unwrap());
    }

    /// Clients that increment a counter by read-then-compare-and-set, in any
    /// interleaving, never lose an increment: the final value equals the
    /// number of acknowledged compare-and-sets, and each acknowledged one
    /// wrote a distinct version.
    #[test]
    fn compare_and_set_never_loses_an_update(schedule in proptest::collection::vec(0..4usize, 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut machine) = open_machine(&dir);
        let rt = runtime();
        let counter = MemoryPath::parse("agent-0/counter").unwrap();
        // Each client holds the (version, value) it last read, if any.
        let mut seen: Vec<Option<(u64, u64)>> = vec![None; 4];
        let mut acknowledged_versions = Vec::new();
        let mut next_index = 0;
        for client in &schedule {
            match seen[*client].take() {
                None => {
                    let latest = store.latest(&counter).unwrap();
                    let read = latest.map_or((0, 0), |stored| {
                        (stored.version, String::from_utf8(stored.value).unwrap().parse::<u64>().unwrap())
                    });
                    seen[*client] = Some(read);
                }
                Some((version, value)) => {
                    let command = MemoryCommand::CompareAndSet {
                        path: counter.clone(),
                        expected_version: version,
                        value: MemoryValue { value: (value + 1).to_string().into_bytes(), content_type: "text/plain".into(), tags: vec![] },
                    };
                    next_index += 1;
                    let replies = rt.block_on(machine.apply(vec![entry(next_index, 0, vec![command])])).unwrap();
                    if let [CommandReply::Memory(outcomes)] = replies.as_slice() {
                        if let [CommandOutcome::Written { version }] = outcomes.as_slice() {
                            acknowledged_versions.push(*version);
                        }
                    } else {
                        prop_assert!(false, "unexpected replies {:?}", replies);
                    }
                }
            }
        }
        let final_value = store
            .latest(&counter)
            .unwrap()
            .map_or(0, |stored| String::from_utf8(stored.value).unwrap().parse::<u64>().unwrap());
        prop_assert_eq!(final_value, acknowledged_versions.len() as u64);
        let expected_versions: Vec<u64> = (1..=acknowledged_versions.len() as u64).collect();
        prop_assert_eq!(acknowledged_versions, expected_versions);
    }
}

#[test]
fn commands_in_one_entry_see_each_other_and_answer_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let path = MemoryPath::parse("agent-9/a").unwrap();
    let value =
        |text: &str| MemoryValue { value: text.as_bytes().to_vec(), content_type: "text/plain".into(), tags: vec![] };
    let commands = vec![
        MemoryCommand::CompareAndSet { path: path.clone(), expected_version: 0, value: value("one") },
        MemoryCommand::CompareAndSet { path: path.clone(), expected_version: 0, value: value("lost") },
        MemoryCommand::Put { path: path.clone(), value: value("two") },
        MemoryCommand::Delete { path: path.clone() },
        MemoryCommand::Delete { path: path.clone() },
        MemoryCommand::CompareAndSet { path: path.clone(), expected_version: 0, value: value("three") },
    ];
    let replies = runtime().block_on(machine.apply(vec![entry(1, 5, commands)])).unwrap();
    assert_eq!(
        replies,
        vec![CommandReply::Memory(vec![
            CommandOutcome::Written { version: 1 },
            CommandOutcome::VersionMismatch { current_version: 1 },
            CommandOutcome::Written { version: 2 },
            CommandOutcome::Deleted { version: 3 },
            CommandOutcome::NotFound,
            CommandOutcome::Written { version: 4 },
        ])]
    );
    let latest = store.latest(&path).unwrap().unwrap();
    assert_eq!((latest.version, latest.value.as_slice(), latest.written_at_ms), (4, &b"three"[..], 5));
    let history = store.history(&path, None, 10).unwrap();
    assert_eq!(history.records.iter().map(|r| r.version).collect::<Vec<_>>(), vec![4, 3, 2, 1]);
    assert!(history.records[1].deleted);
}

#[test]
fn applied_time_never_goes_back_whatever_the_stamps_and_the_grouping() {
    // Leaders whose clocks disagree: some entries are stamped before their predecessors.
    let stamps = [1_000, 5_000, 2_000, 4_999, 6_000, 3_000];
    let path = MemoryPath::parse("agent-1/clock").unwrap();
    let entries: Vec<Entry> = stamps
        .iter()
        .enumerate()
        .map(|(index, stamp)| {
            let value = MemoryValue { value: vec![index as u8], content_type: "x".into(), tags: vec![] };
            entry(index as u64 + 1, *stamp, vec![MemoryCommand::Put { path: path.clone(), value }])
        })
        .collect();
    let mut states = Vec::new();
    for split in [1, 2, 6] {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut machine) = open_machine(&dir);
        for chunk in entries.chunks(split) {
            runtime().block_on(machine.apply(chunk.to_vec())).unwrap();
        }
        let history = store.history(&path, None, 10).unwrap();
        let times: Vec<u64> = history.records.iter().rev().map(|record| record.written_at_ms).collect();
        assert_eq!(times, vec![1_000, 5_000, 5_000, 5_000, 6_000, 6_000], "applied {split} at a time");
        assert_eq!(store.applied_clock().unwrap(), 6_000);
        states.push(store.state_records(MAX_RECORDS).unwrap());
    }
    assert!(states.windows(2).all(|pair| pair[0] == pair[1]), "every grouping gives the same state");
}

#[test]
fn an_invalid_entry_is_rejected_alike_everywhere_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let too_big = MemoryValue {
        value: vec![0; zeromesh_protocol::limits::MAX_VALUE_BYTES + 1],
        content_type: "x".into(),
        tags: vec![],
    };
    let command = MemoryCommand::Put { path: MemoryPath::parse("agent-9/a").unwrap(), value: too_big };
    let replies = runtime().block_on(machine.apply(vec![entry(1, 0, vec![command])])).unwrap();
    assert!(matches!(replies.as_slice(), [CommandReply::Rejected(reason)] if reason.contains("over the limit")));
    assert!(common::effects(&store, 10).is_empty());
}

#[test]
fn history_keeps_a_bounded_number_of_versions() {
    use zeromesh_protocol::limits::MAX_HISTORY_VERSIONS_PER_PATH;
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let path = MemoryPath::parse("agent-9/hot").unwrap();
    let writes = MAX_HISTORY_VERSIONS_PER_PATH + 10;
    let entries: Vec<Entry> = (1..=writes)
        .map(|i| {
            entry(
                i,
                0,
                vec![MemoryCommand::Put {
                    path: path.clone(),
                    value: MemoryValue { value: vec![1], content_type: String::new(), tags: vec![] },
                }],
            )
        })
        .collect();
    runtime().block_on(machine.apply(entries)).unwrap();
    assert!(store.version(&path, 10).unwrap().is_none(), "the oldest versions are dropped");
    assert!(store.version(&path, 11).unwrap().is_some());
    assert_eq!(store.latest(&path).unwrap().unwrap().version, writes);
}

#[test]
fn list_and_history_pages_cover_everything_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let value = || MemoryValue { value: b"v".to_vec(), content_type: String::new(), tags: vec![] };
    let mut commands: Vec<MemoryCommand> = (0..25)
        .map(|i| MemoryCommand::Put {
            path: MemoryPath::parse(&format!("agent-1/notes/{i:02}")).unwrap(),
            value: value(),
        })
        .collect();
    // Tombstones are skipped by listings; another agent's paths are outside the prefix.
    commands.push(MemoryCommand::Delete { path: MemoryPath::parse("agent-1/notes/03").unwrap() });
    commands.push(MemoryCommand::Put { path: MemoryPath::parse("agent-10/notes/00").unwrap(), value: value() });
    let hot = MemoryPath::parse("agent-1/hot").unwrap();
    commands.extend((0..10).map(|_| MemoryCommand::Put { path: hot.clone(), value: value() }));
    runtime().block_on(machine.apply(vec![entry(1, 0, commands)])).unwrap();

    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.list("agent-1/notes/", after.as_deref(), 7).unwrap();
        listed.extend(page.records.into_iter().map(|record| record.path.to_string()));
        match page.next_cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).filter(|i| *i != 3).map(|i| format!("agent-1/notes/{i:02}")).collect();
    assert_eq!(listed, expected);

    let mut versions = Vec::new();
    let mut before = None;
    loop {
        let page = store.history(&hot, before, 3).unwrap();
        versions.extend(page.records.iter().map(|record| record.version));
        match page.next_before {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(versions, (1..=10).rev().collect::<Vec<u64>>());
}

#[test]
fn a_snapshot_that_does_not_match_its_announcement_is_refused_and_changes_nothing() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_store_a, mut machine_a) = open_machine(&dir_a);
    let (store_b, mut machine_b) = open_machine(&dir_b);
    let path = MemoryPath::parse("agent-1/a").unwrap();
    let put = MemoryCommand::Put {
        path,
        value: MemoryValue { value: b"x".to_vec(), content_type: String::new(), tags: vec![] },
    };
    runtime().block_on(async {
        machine_a.apply(vec![entry(1, 0, vec![put.clone()]), entry(2, 0, vec![put])]).await.unwrap();
        let mut snapshot = machine_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut received = machine_b.begin_receiving_snapshot().await.unwrap();
        tokio::io::copy(&mut snapshot.snapshot, &mut received).await.unwrap();
        let mut announced = snapshot.meta.clone();
        announced.last_log_id = Some(LogId::new(CommittedLeaderId::new(1, 1), 99));
        let refused = machine_b.install_snapshot(&announced, received).await;
        assert!(refused.is_err(), "a snapshot describing other state than announced is refused");
    });
    assert!(common::effects(&store_b, 10).is_empty(), "nothing was installed");
    assert_eq!(runtime().block_on(machine_b.applied_state()).unwrap().0.map(|log_id| log_id.index), Some(0));
}

/// A machine that wrote a path and then installed a snapshot of another
/// state numbers that path's next version from the snapshot, not from what
/// it wrote before (the heads of paths written recently are not the state).
#[test]
fn after_a_snapshot_install_versions_follow_the_snapshot_not_what_was_written_before() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, mut machine_a) = open_machine(&dir_a);
    let (store_b, mut machine_b) = open_machine(&dir_b);
    let put = |index: u64, path: &str| {
        let path = MemoryPath::parse(path).unwrap();
        let value = MemoryValue { value: vec![b'x'; index as usize], content_type: String::new(), tags: vec![] };
        entry(index, 1_000 + index, vec![MemoryCommand::Put { path, value }])
    };
    let (replies_a, replies_b) = runtime().block_on(async {
        machine_b.apply((1..=3).map(|index| put(index, "agent-1/a")).collect::<Vec<_>>()).await.unwrap();
        let other = (2..=4).map(|index| put(index, "agent-1/b"));
        machine_a.apply(std::iter::once(put(1, "agent-1/a")).chain(other).collect::<Vec<_>>()).await.unwrap();
        let mut snapshot = machine_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut received = machine_b.begin_receiving_snapshot().await.unwrap();
        tokio::io::copy(&mut snapshot.snapshot, &mut received).await.unwrap();
        machine_b.install_snapshot(&snapshot.meta, received).await.unwrap();
        let next = vec![put(5, "agent-1/a")];
        (machine_a.apply(next.clone()).await.unwrap(), machine_b.apply(next).await.unwrap())
    });
    assert_eq!(replies_a, vec![CommandReply::Memory(vec![CommandOutcome::Written { version: 2 }])]);
    assert_eq!(replies_b, replies_a);
    assert_eq!(store_a.state_records(MAX_RECORDS).unwrap(), store_b.state_records(MAX_RECORDS).unwrap());
}
