//! The replicated plugin registry: every install check runs at apply, against
//! the registry as the entry finds it and the leader's stamped time, so all
//! nodes accept or refuse alike; snapshots carry the registry.

use ed25519_dalek::SigningKey;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};
use zeromesh_consensus::Entry;
use zeromesh_protocol::plugin::{
    Capability, CapabilitySet, Manifest, PackageError, PluginCommand, PluginLimits, PluginOutcome, PublisherKey,
    SignedManifest, ToolSpec,
};
use zeromesh_protocol::{Command, CommandReply, Request};

mod common;
use common::{open_machine, runtime};

fn entry(index: u64, stamped_at_ms: u64, command: PluginCommand) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request { stamped_at_ms, command: Command::Plugin(command) }),
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn manifest(name: &str, capabilities: &[Capability], expires_at_ms: Option<u64>) -> Manifest {
    Manifest {
        name: name.into(),
        version: "1.0.0".into(),
        description: "a test plugin".into(),
        tools: vec![ToolSpec {
            name: "echo".into(),
            description: "echoes".into(),
            input_schema: serde_json::json!({ "type": "object" }),
        }],
        capabilities: capabilities.iter().copied().collect(),
        limits: PluginLimits { fuel_per_call: 1_000, memory_bytes: 1 << 20, wall_clock_ms: 100 },
        module_sha256: hex::encode([7u8; 32]),
        expires_at_ms,
    }
}

fn install(manifest: &Manifest, key: &SigningKey, granted: &[Capability]) -> PluginCommand {
    PluginCommand::Install {
        manifest: SignedManifest::sign(manifest, key).expect("signs"),
        granted: granted.iter().copied().collect::<CapabilitySet>(),
    }
}

fn trust(key: &SigningKey) -> PluginCommand {
    PluginCommand::TrustPublisher { publisher: PublisherKey::of(key) }
}

fn outcomes(replies: Vec<CommandReply>) -> Vec<PluginOutcome> {
    replies
        .into_iter()
        .map(|reply| match reply {
            CommandReply::Plugin(outcome) => outcome,
            other => panic!("not a plugin reply: {other:?}"),
        })
        .collect()
}

#[test]
fn an_install_is_accepted_only_once_its_publisher_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let changes = machine.registry_changes();
    let publisher = key(1);
    let plugin = manifest("echo", &[], None);
    let replies = runtime()
        .block_on(machine.apply(vec![
            entry(1, 10, install(&plugin, &publisher, &[])),
            entry(2, 11, trust(&publisher)),
            entry(3, 12, install(&plugin, &publisher, &[])),
        ]))
        .unwrap();
    let outcomes = outcomes(replies);
    assert_eq!(outcomes[0], PluginOutcome::Refused(PackageError::Untrusted(PublisherKey::of(&publisher))));
    assert_eq!(outcomes[1], PluginOutcome::Trusted { already: false });
    assert!(matches!(&outcomes[2], PluginOutcome::Installed { name, replaced: None, .. } if name == "echo"));
    let installed = store.installed_plugins().unwrap();
    assert_eq!(installed.len(), 1);
    assert_eq!((installed[0].log_index, installed[0].installed_at_ms, installed[0].module_sha256), (3, 12, [7; 32]));
    assert!(changes.has_changed().unwrap(), "the registry change is signalled");
}

#[test]
fn tampered_expired_and_overgranted_installs_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let publisher = key(2);
    let rt = runtime();
    rt.block_on(machine.apply(vec![entry(1, 10, trust(&publisher))])).unwrap();
    let before = common::effects(&store, 1000);

    let mut tampered = install(&manifest("echo", &[], None), &publisher, &[]);
    if let PluginCommand::Install { manifest, .. } = &mut tampered {
        let at = manifest.manifest_json.iter().position(|byte| *byte == b'1').unwrap();
        manifest.manifest_json[at] = b'2';
    }
    let expired = install(&manifest("late", &[], Some(500)), &publisher, &[]);
    let overgranted = install(&manifest("greedy", &[Capability::Log], None), &publisher, &[Capability::MemoryWrite]);
    let replies = rt
        .block_on(machine.apply(vec![
            entry(2, 1_000, tampered),
            entry(3, 1_000, expired),
            entry(4, 1_000, overgranted),
        ]))
        .unwrap();
    let outcomes = outcomes(replies);
    assert_eq!(outcomes[0], PluginOutcome::Refused(PackageError::BadSignature(PublisherKey::of(&publisher))));
    assert_eq!(outcomes[1], PluginOutcome::Refused(PackageError::Expired { expired_at_ms: 500, now_ms: 1_000 }));
    assert!(
        matches!(&outcomes[2], PluginOutcome::Refused(PackageError::InvalidManifest(reason)) if reason.contains("memory.write")),
        "{:?}",
        outcomes[2]
    );
    assert_eq!(common::effects(&store, 1000), before, "refused installs change nothing");
}

#[test]
fn distrusting_a_publisher_uninstalls_its_plugins_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let (alice, bob) = (key(3), key(4));
    let replies = runtime()
        .block_on(machine.apply(vec![
            entry(1, 10, trust(&alice)),
            entry(2, 10, trust(&bob)),
            entry(3, 10, install(&manifest("from-alice", &[], None), &alice, &[])),
            entry(4, 10, install(&manifest("from-bob", &[], None), &bob, &[])),
            entry(5, 10, PluginCommand::DistrustPublisher { publisher: PublisherKey::of(&alice) }),
            entry(6, 10, PluginCommand::Uninstall { name: "from-alice".into() }),
            entry(7, 10, PluginCommand::Uninstall { name: "from-bob".into() }),
        ]))
        .unwrap();
    let outcomes = outcomes(replies);
    assert_eq!(outcomes[4], PluginOutcome::Distrusted { was_trusted: true, uninstalled: vec!["from-alice".into()] });
    assert_eq!(outcomes[5], PluginOutcome::NotInstalled { name: "from-alice".into() });
    assert_eq!(outcomes[6], PluginOutcome::Uninstalled { name: "from-bob".into() });
    assert!(store.installed_plugins().unwrap().is_empty());
    let trusted: Vec<PublisherKey> = store.trusted_publishers().unwrap().into_iter().map(|t| t.publisher).collect();
    assert_eq!(trusted, vec![PublisherKey::of(&bob)]);
}

#[test]
fn a_snapshot_carries_the_registry_and_signals_the_change() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, mut machine_a) = open_machine(&dir_a);
    let (store_b, mut machine_b) = open_machine(&dir_b);
    let changes_b = machine_b.registry_changes();
    let publisher = key(5);
    runtime().block_on(async {
        machine_a
            .apply(vec![
                entry(1, 10, trust(&publisher)),
                entry(2, 10, install(&manifest("kept", &[], None), &publisher, &[])),
            ])
            .await
            .unwrap();
        let mut snapshot = machine_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut received = machine_b.begin_receiving_snapshot().await.unwrap();
        tokio::io::copy(&mut snapshot.snapshot, &mut received).await.unwrap();
        machine_b.install_snapshot(&snapshot.meta, received).await.unwrap();
    });
    assert_eq!(store_b.installed_plugins().unwrap(), store_a.installed_plugins().unwrap());
    assert_eq!(store_b.trusted_publishers().unwrap(), store_a.trusted_publishers().unwrap());
    assert_eq!(store_b.installed_plugins().unwrap().len(), 1);
    assert!(changes_b.has_changed().unwrap());
}
