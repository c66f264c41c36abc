//! The replicated agent registry: lifecycle changes apply alike on every
//! machine, a termination revokes the agent's tokens in the same entry, a
//! terminated id is never reused, and snapshots carry the registry.

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};
use zeromesh_consensus::Entry;
use zeromesh_protocol::agent::{AgentCommand, AgentOutcome, AgentState};
use zeromesh_protocol::auth::{Role, TokenCommand};
use zeromesh_protocol::{Command, CommandReply, Request};

mod common;
use common::{open_machine, runtime};

fn entry(index: u64, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request { stamped_at_ms: 1000 + index, command }),
    }
}

fn agent(command: AgentCommand) -> Command {
    Command::Agent(command)
}

fn spawn(id: &str) -> Command {
    agent(AgentCommand::Spawn {
        id: id.into(),
        owner: "ops".into(),
        description: String::new(),
        tools: vec!["*".into()],
        tags: vec!["tested".into()],
        key: None,
        memory_quota_bytes: None,
        max_concurrent_calls: None,
        limits: Vec::new(),
    })
}

fn token_for(id: &str, agent: &str) -> Command {
    Command::Token(TokenCommand::Create {
        id: id.into(),
        secret_sha256: [1; 32],
        role: Role::Agent,
        agent: Some(agent.into()),
    })
}

fn lifecycle() -> Vec<Entry> {
    vec![
        entry(1, spawn("alice")),
        entry(2, spawn("bob")),
        entry(3, token_for("00000000000000a1", "alice")),
        entry(4, token_for("00000000000000b1", "bob")),
        entry(5, agent(AgentCommand::Pause { id: "alice".into(), reason: "budget review".into() })),
        entry(6, agent(AgentCommand::Terminate { id: "alice".into() })),
        entry(7, spawn("alice")),
        entry(8, agent(AgentCommand::Resume { id: "alice".into() })),
        entry(9, agent(AgentCommand::Pause { id: "nobody".into(), reason: String::new() })),
    ]
}

fn agent_outcomes(replies: Vec<CommandReply>) -> Vec<AgentOutcome> {
    replies
        .into_iter()
        .filter_map(|reply| match reply {
            CommandReply::Agent(outcome) => Some(outcome),
            CommandReply::Token(_) => None,
            other => panic!("unexpected reply {other:?}"),
        })
        .collect()
}

#[test]
fn a_termination_revokes_the_agents_tokens_and_its_id_is_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let replies = runtime().block_on(machine.apply(lifecycle())).unwrap();
    let changed =
        |id: &str, state: AgentState, tokens_revoked| AgentOutcome::Changed { id: id.into(), state, tokens_revoked };
    assert_eq!(
        agent_outcomes(replies),
        vec![
            changed("alice", AgentState::Running, 0),
            changed("bob", AgentState::Running, 0),
            changed("alice", AgentState::Paused { reason: "budget review".into() }, 0),
            changed("alice", AgentState::Terminated, 1),
            AgentOutcome::Exists { id: "alice".into() },
            AgentOutcome::IsTerminated { id: "alice".into() },
            AgentOutcome::NotFound { id: "nobody".into() },
        ]
    );
    let tokens: Vec<String> = store.tokens().unwrap().into_iter().map(|token| token.id).collect();
    assert_eq!(tokens, ["00000000000000b1"], "only bob's token is left");
    let alice = store.agent("alice").unwrap().expect("a terminated agent stays in the registry");
    assert_eq!(
        (alice.state, alice.log_index, alice.changed_at_ms, alice.spawned_at_ms),
        (AgentState::Terminated, 6, 1006, 1001)
    );
}

#[test]
fn every_machine_applies_the_registry_alike_and_a_snapshot_carries_it() {
    let (dir_a, dir_b, dir_c) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, mut machine_a) = open_machine(&dir_a);
    let (store_b, mut machine_b) = open_machine(&dir_b);
    let (store_c, mut machine_c) = open_machine(&dir_c);
    runtime().block_on(async {
        machine_a.apply(lifecycle()).await.unwrap();
        machine_b.apply(lifecycle()).await.unwrap();
        let mut snapshot = machine_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut received = machine_c.begin_receiving_snapshot().await.unwrap();
        tokio::io::copy(&mut snapshot.snapshot, &mut received).await.unwrap();
        machine_c.install_snapshot(&snapshot.meta, received).await.unwrap();
    });
    assert_eq!(store_a.agents().unwrap().len(), 2);
    assert_eq!(store_b.agents().unwrap(), store_a.agents().unwrap());
    assert_eq!(store_c.agents().unwrap(), store_a.agents().unwrap());
    assert_eq!(store_c.tokens().unwrap(), store_a.tokens().unwrap());
}

fn put(index: u64, path: &str, bytes: usize) -> Entry {
    let value = zeromesh_protocol::MemoryValue { value: vec![b'x'; bytes], content_type: String::new(), tags: vec![] };
    let path = zeromesh_protocol::MemoryPath::parse(path).unwrap();
    entry(
        index,
        Command::Memory(zeromesh_protocol::MemoryBatch {
            commands: vec![zeromesh_protocol::MemoryCommand::Put { path, value }],
        }),
    )
}

#[test]
fn an_agents_stored_bytes_are_counted_in_apply_and_its_quota_refuses_growth_past_it() {
    use zeromesh_protocol::{CommandOutcome, MemoryCommand, MemoryPath};
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let quota = agent(AgentCommand::Spawn {
        id: "small".into(),
        owner: "ops".into(),
        description: String::new(),
        tools: vec!["*".into()],
        tags: vec!["tested".into()],
        key: None,
        memory_quota_bytes: Some(100),
        max_concurrent_calls: None,
        limits: Vec::new(),
    });
    let delete = |index, path: &str| {
        let path = MemoryPath::parse(path).unwrap();
        entry(index, Command::Memory(zeromesh_protocol::MemoryBatch { commands: vec![MemoryCommand::Delete { path }] }))
    };
    let entries = vec![
        entry(1, quota),
        put(2, "small/a", 60),
        put(3, "small/b", 50),
        put(4, "small/a", 40),
        put(5, "small/b", 50),
        put(6, "small/c", 11),
        delete(7, "small/a"),
        put(8, "small/c", 11),
        put(9, "free/big", 5000),
    ];
    let replies = runtime().block_on(machine.apply(entries)).unwrap();
    let outcome = |index: usize| match &replies[index] {
        CommandReply::Memory(outcomes) => outcomes[0].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(outcome(2), CommandOutcome::OverQuota { agent: "small".into(), stored: 60, quota: 100 });
    assert_eq!(outcome(3), CommandOutcome::Written { version: 2 }, "shrinking is never refused");
    assert_eq!(outcome(4), CommandOutcome::Written { version: 1 }, "40 + 50 fits");
    assert_eq!(outcome(5), CommandOutcome::OverQuota { agent: "small".into(), stored: 90, quota: 100 });
    assert_eq!(outcome(7), CommandOutcome::Written { version: 1 }, "a delete frees its bytes");
    assert_eq!(store.stored_bytes("small").unwrap(), 50 + 11);
    assert_eq!(store.stored_bytes("free").unwrap(), 5000, "bytes are counted without a quota too");
    assert!(store.latest(&MemoryPath::parse("small/a").unwrap()).unwrap().unwrap().deleted);
}

#[test]
fn a_quota_set_between_writes_of_one_apply_call_holds_for_the_writes_after_it() {
    use zeromesh_protocol::CommandOutcome;
    let spawn_with_quota = agent(AgentCommand::Spawn {
        id: "late".into(),
        owner: "ops".into(),
        description: String::new(),
        tools: vec!["*".into()],
        tags: vec![],
        key: None,
        memory_quota_bytes: Some(100),
        max_concurrent_calls: None,
        limits: Vec::new(),
    });
    // The first write reads "no such agent", the next ones must not keep
    // that answer once the agent is spawned with a quota.
    let (together, stores) = applied_together_and_one_by_one(|| {
        vec![put(1, "late/a", 60), entry(2, spawn_with_quota.clone()), put(3, "late/b", 50), put(4, "late/c", 40)]
    });
    assert_eq!(
        together[2],
        CommandReply::Memory(vec![CommandOutcome::OverQuota { agent: "late".into(), stored: 60, quota: 100 }])
    );
    assert_eq!(together[3], CommandReply::Memory(vec![CommandOutcome::Written { version: 1 }]));
    for (store, _) in &stores {
        assert_eq!(store.stored_bytes("late").unwrap(), 100);
    }
}

/// Applies `steps()` on two fresh machines, all in one apply call on the
/// first and one entry per call on the second, and checks that both answer
/// alike: the answers, and each store with the folder that holds it.
fn applied_together_and_one_by_one(
    steps: impl Fn() -> Vec<Entry>,
) -> (Vec<CommandReply>, [(zeromesh_storage::Store, tempfile::TempDir); 2]) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, mut machine_a) = open_machine(&dir_a);
    let (store_b, mut machine_b) = open_machine(&dir_b);
    let together = runtime().block_on(machine_a.apply(steps())).unwrap();
    let mut one_by_one = Vec::new();
    for step in steps() {
        one_by_one.extend(runtime().block_on(machine_b.apply(vec![step])).unwrap());
    }
    assert_eq!(together, one_by_one);
    (together, [(store_a, dir_a), (store_b, dir_b)])
}

#[test]
fn snapshots_and_recoveries_apply_alike_whether_entries_come_together_or_one_by_one() {
    use zeromesh_protocol::MemoryPath;
    let steps = || {
        vec![
            entry(1, spawn("alice")),
            put(2, "alice/x", 10),
            entry(3, agent(AgentCommand::Snapshot { id: "alice".into(), snapshot: "s1".into() })),
            put(4, "alice/y", 20),
            entry(5, agent(AgentCommand::Recover { id: "bob".into(), snapshot: "s1".into() })),
            entry(6, agent(AgentCommand::Recover { id: "alice".into(), snapshot: "s1".into() })),
            entry(7, agent(AgentCommand::Recover { id: "carol".into(), snapshot: "missing".into() })),
        ]
    };
    let (together, stores) = applied_together_and_one_by_one(steps);
    let [(store_a, _), (store_b, _)] = &stores;
    let CommandReply::Agent(AgentOutcome::Snapshotted { memories: 1, bytes: 10, .. }) = &together[2] else {
        panic!("{:?}", together[2])
    };
    assert_eq!(together[6], CommandReply::Agent(AgentOutcome::SnapshotNotFound { snapshot: "missing".into() }));
    for (store, _) in &stores {
        let live = |path: &str| store.latest(&MemoryPath::parse(path).unwrap()).unwrap().filter(|kept| !kept.deleted);
        assert_eq!(live("bob/x").unwrap().value.len(), 10, "bob got alice's memory as it was at the snapshot");
        assert!(live("bob/y").is_none(), "the later write is not in the snapshot");
        assert!(live("alice/y").is_none(), "recovering alice drops what she wrote since");
        assert_eq!(store.stored_bytes("bob").unwrap(), 10);
        assert_eq!(store.stored_bytes("alice").unwrap(), 10);
    }
    assert_eq!(store_a.agent_snapshot("s1").unwrap(), store_b.agent_snapshot("s1").unwrap());
}
