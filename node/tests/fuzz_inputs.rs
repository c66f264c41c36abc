//! The fuzzed decoders (`zeromesh::fuzzing`) on inputs zeromesh itself
//! writes, on the seed corpus in `fuzz/seeds`, and on every crash the
//! fuzzers found (`fuzz/regressions`). `ZEROMESH_WRITE_FUZZ_SEEDS=1` makes
//! the first test rewrite the seed corpus from what it generates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use serde_json::json;
use zeromesh::fuzzing::TARGETS;
use zeromesh::mesh::advert::{Advert, AdvertServer, SignedAdvert};
use zeromesh::mesh::codec;
use zeromesh::mesh::messages::{JoinRequest, MeshError, MeshRequest, MeshResponse, NodeStatus, WriteAccepted};
use zeromesh::mesh::offload::{
    sha256, CallKind, OffloadMessage, OffloadRequest, OffloadResponse, Receipt, ReceiptReservation, SignedReceipt,
};
use zeromesh_consensus::{ConsensusNode, InProcessRouter, RaftSettings, TypeConfig};
use zeromesh_plugins::{Manifest, Package};
use zeromesh_protocol::agent::AgentSnapshot;
use zeromesh_protocol::{Command, MemberInfo, MemoryBatch, MemoryCommand, MemoryPath, MemoryValue, Request};

/// Named inputs for one target.
type Inputs = Vec<(String, Vec<u8>)>;

/// How long the snapshot's node may take to elect itself and to snapshot.
const WAIT: Duration = Duration::from_secs(30);

/// The checkout under test (cargo and nextest say where `node/` is when they
/// run a test; the binary may come from another clone).
fn repository() -> PathBuf {
    let package =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    package.parent().expect("node/ is in the repository").to_owned()
}

fn decoder(target: &str) -> zeromesh::fuzzing::Decoder {
    TARGETS.iter().find(|(name, _)| *name == target).unwrap_or_else(|| panic!("no fuzz target {target}")).1
}

fn member() -> MemberInfo {
    MemberInfo { p2p_addr: "/ip4/127.0.0.1/tcp/7001".into(), api_addr: "127.0.0.1:8765".into() }
}

fn put(path: &str, value: &str) -> MemoryBatch {
    MemoryBatch {
        commands: vec![MemoryCommand::Put {
            path: MemoryPath::parse(path).expect("a valid path"),
            value: MemoryValue { value: value.as_bytes().to_vec(), content_type: "text/plain".into(), tags: vec![] },
        }],
    }
}

fn mesh_messages() -> Inputs {
    let log_id = |index| LogId::new(CommittedLeaderId::new(2, 1), index);
    let entry = openraft::Entry::<TypeConfig> {
        log_id: log_id(8),
        payload: EntryPayload::Normal(Request {
            stamped_at_ms: 1_790_000_000_000,
            command: Command::Memory(put("a/b", "v")),
        }),
    };
    let requests = [
        (
            "append_entries",
            MeshRequest::AppendEntries(AppendEntriesRequest {
                vote: Vote::new_committed(2, 1),
                prev_log_id: Some(log_id(7)),
                entries: vec![entry],
                leader_commit: Some(log_id(7)),
            }),
        ),
        ("vote", MeshRequest::Vote(VoteRequest::new(Vote::new(3, 2), Some(log_id(8))))),
        ("writes", MeshRequest::Writes(vec![put("agent-1/notes/today", "hello"), put("agent-2/notes/x", "hi")])),
        ("read_index", MeshRequest::ReadIndex),
        ("join", MeshRequest::Join(JoinRequest { token: "zm1-token".into(), node_id: 4, info: member() })),
        ("cosign", MeshRequest::CosignCheckpoint { size: 9, root: [7; 32] }),
        ("update_member", MeshRequest::UpdateMember(member())),
    ];
    let status = NodeStatus {
        node_id: 1,
        peer_id: "12D3KooWexample".into(),
        role: "leader".into(),
        term: 2,
        leader: Some(1),
        voters: vec![1, 2, 3],
        non_voters: vec![4],
        last_log_index: Some(8),
        applied_index: Some(8),
        snapshot_index: None,
        trace_size: 8,
        trace_root: "00".repeat(32),
        info: member(),
    };
    let responses = [
        ("status", MeshResponse::Status(status)),
        (
            "writes_accepted",
            MeshResponse::Writes(vec![
                Ok(WriteAccepted { log_index: 9, outcomes: vec![] }),
                Err(MeshError::Invalid("compare-and-set: no such path".into())),
            ]),
        ),
        ("not_leader", MeshResponse::ReadIndex(Err(MeshError::NotLeader { leader: Some(2) }))),
        ("module", MeshResponse::FetchPluginModule(Some(b"\0asm\x01\0\0\0".to_vec()))),
    ];
    let mut inputs: Vec<_> = requests
        .iter()
        .map(|(name, message)| (format!("request-{name}"), codec::encode(message).expect("encodes")))
        .collect();
    inputs.extend(
        responses.iter().map(|(name, message)| (format!("response-{name}"), codec::encode(message).expect("encodes"))),
    );
    // Frames on a link: a numbered request, and a numbered answer or none.
    let (_, vote) = &requests[1];
    inputs.push(("link-request-vote".into(), codec::encode(&(7u64, vote)).expect("encodes")));
    let (_, status) = &responses[0];
    inputs.push(("link-answer-status".into(), codec::encode(&(7u64, Some(status))).expect("encodes")));
    inputs.push(("link-answer-dropped".into(), codec::encode(&(8u64, None::<MeshResponse>)).expect("encodes")));
    inputs
}

fn offload_messages() -> Inputs {
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes([9; 32]).expect("a key from 32 bytes");
    let request = OffloadRequest {
        call_id: [5; 16],
        kind: CallKind::Plugin,
        plugin: "echo".into(),
        module_sha256: [0xab; 32],
        tool: "echo".into(),
        arguments: br#"{"text":"hello"}"#.to_vec(),
        agent: "agent-1".into(),
        fuel: Some(1_000_000),
        wall_ms: 2_000,
        reservation: Some(ReceiptReservation { agreement: "deal-1".into(), key: "k-1".into(), log_index: 42 }),
    };
    let output = br#"{"text":"hello"}"#.to_vec();
    let receipt = Receipt {
        call_id: request.call_id,
        kind: request.kind,
        peer_id: keypair.public().to_peer_id().to_string(),
        node_id: 3,
        plugin: request.plugin.clone(),
        tool: request.tool.clone(),
        module_sha256: request.module_sha256,
        input_sha256: sha256(&request.arguments),
        output_sha256: sha256(&output),
        is_error: false,
        fuel_used: 5_000,
        wall_ms: 2,
        reservation: request.reservation.clone(),
    };
    let receipt = SignedReceipt::sign(&receipt, &keypair).expect("signs");
    let describe = OffloadMessage::Describe { server: "notes".into(), definitions: vec![[0xcd; 32]] };
    let described = OffloadResponse::Described(vec![br#"{"inputSchema":{"type":"object"},"name":"lookup"}"#.to_vec()]);
    vec![
        ("request".into(), offload_encode(&OffloadMessage::Call(request))),
        ("request-describe".into(), offload_encode(&describe)),
        ("response-ran".into(), offload_encode(&OffloadResponse::Ran { output, receipt })),
        ("response-not-run".into(), offload_encode(&OffloadResponse::NotRun("busy".into()))),
        ("response-described".into(), offload_encode(&described)),
    ]
}

/// A message encoded within the offload protocol's limit.
fn offload_encode<T: serde::Serialize>(message: &T) -> Vec<u8> {
    codec::encode_within(message, zeromesh_protocol::limits::MAX_OFFLOAD_MESSAGE_BYTES).expect("encodes")
}

fn adverts() -> Inputs {
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes([7; 32]).expect("a key from 32 bytes");
    let advert = Advert {
        peer_id: keypair.public().to_peer_id().to_string(),
        node_id: 3,
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/7003".into()],
        api_addr: "127.0.0.1:8767".into(),
        version: "0.1.0".into(),
        free_cpu_millicores: 1500,
        free_memory_bytes: 8 << 30,
        load_milli: 420,
        cores: 2,
        runs_plugins: true,
        plugin_hashes: vec!["ab".repeat(32)],
        free_disk_bytes: Some(20 << 30),
        min_free_disk_bytes: 128 << 20,
        servers: vec![AdvertServer {
            name: "notes".into(),
            log_index: 40,
            serving: true,
            tools: vec![("lookup".into(), [0xcd; 32])],
        }],
        sequence: 12,
    };
    vec![
        ("signed".into(), SignedAdvert::sign(&advert, &keypair).expect("signs")),
        ("unsigned".into(), codec::encode(&advert).expect("encodes")),
    ]
}

/// A backup file around `snapshot`, with `modules`.
fn backup_file(snapshot: &[u8], modules: &[&[u8]]) -> Vec<u8> {
    use sha2::Digest;
    let mut file = [b"ZMBACK01".as_slice(), &(snapshot.len() as u64).to_be_bytes(), snapshot].concat();
    file.extend_from_slice(&(modules.len() as u32).to_be_bytes());
    for module in modules {
        file.extend_from_slice(&sha2::Sha256::digest(module));
        file.extend_from_slice(&(module.len() as u32).to_be_bytes());
        file.extend_from_slice(module);
    }
    file
}

fn backups(snapshot: &[u8]) -> Inputs {
    vec![
        ("no-modules".into(), backup_file(snapshot, &[])),
        ("one-module".into(), backup_file(snapshot, &[b"\0asm\x01\0\0\0"])),
    ]
}

/// A real snapshot: one consensus node on RocksDB takes it after a few writes.
fn snapshots() -> Inputs {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let bytes = runtime.block_on(async {
        let router = InProcessRouter::new();
        let settings = RaftSettings {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            ..Default::default()
        };
        let node = ConsensusNode::open(1, dir.path(), &settings, router.endpoint(1)).await.expect("opens");
        router.connect(1, node.raft().clone());
        node.initialize(BTreeMap::from([(1, member())])).await.expect("initialises");
        node.wait_for("a leader", WAIT, |view| view.leader == Some(1)).await.expect("elects itself");
        for (path, value) in [("agent-1/notes/today", "hello"), ("agent-1/notes/today", "again"), ("b/c", "x")] {
            node.write(put(path, value)).await.expect("writes");
        }
        node.raft().trigger().snapshot().await.expect("asks for a snapshot");
        node.wait_for("a snapshot", WAIT, |view| view.snapshot_index.is_some()).await.expect("takes a snapshot");
        let bytes = std::fs::read(dir.path().join("snapshots/current.snap")).expect("the snapshot file");
        node.shutdown().await.expect("shuts down");
        bytes
    });
    vec![("three-writes".into(), bytes)]
}

fn plugin_packages() -> Inputs {
    let manifest: Manifest = serde_json::from_value(json!({
        "name": "echo",
        "version": "1.0.0",
        "description": "Returns its arguments",
        "tools": [{ "name": "echo", "description": "echo", "input_schema": { "type": "object" } }],
        "capabilities": ["log"],
        "limits": { "fuel_per_call": 1_000_000, "memory_bytes": 1 << 20, "wall_clock_ms": 1000 },
        "expires_at_ms": 1_900_000_000_000u64,
    }))
    .expect("a manifest");
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let package = Package::sign(b"\0asm\x01\0\0\0".to_vec(), manifest, &key).expect("signs");
    vec![("echo".into(), package.encode())]
}

fn configs() -> Inputs {
    let systemd = std::fs::read(repository().join("deploy/systemd/zeromesh.toml")).expect("the systemd example");
    let every_setting = r#"
data = "/var/lib/zeromesh"
listen = "/ip4/0.0.0.0/tcp/7001"
api = "127.0.0.1:8765"
bootstrap = ["/ip4/10.0.0.1/tcp/7001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
join_token = "zm1-0123456789abcdef"
voter_count = 5
voter_timeout_ms = 10000
member_remove_after_ms = 3600000
log_format = "json"
min_free_disk_mb = 256
advert_interval_ms = 5000
advert_ttl_ms = 30000
checkpoint_interval_ms = 10000
snapshot_every_entries = 10000
storage_memory_mb = 48
storage_background_write_mb_per_sec = 64
dev = false
rate_limit_per_token = 1000
api_idle_timeout_ms = 90000
lease_calls = 16
run_plugins = true
offload_above_load = 0.8
"#;
    vec![("systemd".into(), systemd), ("every-setting".into(), every_setting.as_bytes().to_vec())]
}

fn agent_exports() -> Inputs {
    let snapshot: AgentSnapshot = serde_json::from_value(json!({
        "snapshot": "s-1",
        "agent": {
            "id": "agent-1", "owner": "ops", "description": "a test agent", "tools": ["memory_*"],
            "tags": ["team-a"], "key": null, "memory_quota_bytes": 4096, "max_concurrent_calls": 4,
            "limits": [{"metric": "Calls", "window": "Minute", "max": 100}], "state": "Running", "spawned_at_ms": 1, "changed_at_ms": 2, "log_index": 3
        },
        "memories": [{ "path": "notes/today", "value": "68656c6c6f", "content_type": "text/plain", "tags": [] }],
        "log_index": 4,
        "taken_at_ms": 5
    }))
    .expect("an agent snapshot");
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let document = zeromesh::tools::agents::export_document(&snapshot, &key);
    vec![("agent-1".into(), serde_json::to_vec_pretty(&document).expect("encodes"))]
}

fn requests() -> Inputs {
    let messages = [
        (
            "initialize",
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}}),
        ),
        ("initialized", json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
        ("tools-list", json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})),
        (
            "tools-call",
            json!({"jsonrpc": "2.0", "id": "c-3", "method": "tools/call", "params": {
            "name": "memory_put", "arguments": {"path": "a/b", "value": "v"}}}),
        ),
        (
            "resources-read",
            json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "zeromesh://memory/a/b"}}),
        ),
        ("ping", json!({"jsonrpc": "2.0", "id": 5, "method": "ping"})),
    ];
    messages.iter().map(|(name, message)| (name.to_string(), message.to_string().into_bytes())).collect()
}

fn generated() -> Vec<(&'static str, Inputs)> {
    let snapshots = snapshots();
    let backups = backups(&snapshots[0].1);
    vec![
        ("mesh_message", mesh_messages()),
        ("offload_message", offload_messages()),
        ("advert", adverts()),
        ("snapshot", snapshots),
        ("backup", backups),
        ("plugin_package", plugin_packages()),
        ("config", configs()),
        ("agent_export", agent_exports()),
        ("request", requests()),
    ]
}

#[test]
fn every_decoder_accepts_what_zeromesh_writes_and_survives_it_cut_and_flipped() {
    let generated = generated();
    assert_eq!(
        generated.iter().map(|(target, _)| *target).collect::<Vec<_>>(),
        TARGETS.iter().map(|(target, _)| *target).collect::<Vec<_>>(),
        "every fuzz target has inputs here"
    );
    let write = std::env::var_os("ZEROMESH_WRITE_FUZZ_SEEDS").is_some();
    for (target, inputs) in &generated {
        let decode = decoder(target);
        if write {
            let dir = repository().join("fuzz/seeds").join(target);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("creates the seed folder");
            for (name, bytes) in inputs {
                std::fs::write(dir.join(name), bytes).expect("writes a seed");
            }
        }
        for (name, bytes) in inputs {
            assert!(decode(bytes), "{target}: {name} is refused, though zeromesh wrote it");
            // Cut short at up to 64 places, and one bit flipped at up to 64
            // others: refused or accepted, never a panic. Formats that mark
            // their end (a checksum, a length, a closing brace) refuse a cut.
            let marks_its_end = matches!(*target, "snapshot" | "backup" | "plugin_package" | "agent_export");
            let step = (bytes.len() / 64).max(1);
            for cut in (0..bytes.len()).step_by(step) {
                let accepted = decode(&bytes[..cut]);
                assert!(!(accepted && marks_its_end), "{target}: {name} cut at {cut} is accepted");
            }
            for at in (0..bytes.len()).step_by(step) {
                let mut flipped = bytes.clone();
                flipped[at] ^= 1 << (at % 8);
                decode(&flipped);
            }
        }
    }
}

#[test]
fn the_seed_corpus_is_accepted_and_every_found_crash_replays_harmlessly() {
    for (target, decode) in TARGETS {
        let seeds = repository().join("fuzz/seeds").join(target);
        let entries: Vec<_> = std::fs::read_dir(&seeds)
            .unwrap_or_else(|error| panic!("{}: {error}", seeds.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        assert!(!entries.is_empty(), "{target} has no seed in {}", seeds.display());
        for path in entries {
            let bytes = std::fs::read(&path).expect("reads a seed");
            assert!(
                decode(&bytes),
                "seed {} is refused: the format changed; rewrite the seeds with ZEROMESH_WRITE_FUZZ_SEEDS=1 (fuzz/README.md)",
                path.display()
            );
        }
        let regressions = repository().join("fuzz/regressions").join(target);
        for entry in std::fs::read_dir(&regressions).into_iter().flatten() {
            let path = entry.expect("a directory entry").path();
            decode(&std::fs::read(&path).expect("reads a regression input"));
        }
    }
}
