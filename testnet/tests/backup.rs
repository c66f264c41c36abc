//! Backups, end to end through the command line: `zeromesh backup` of an
//! authenticated 3-node mesh under write load, then `zeromesh restore
//! --init` into a new cluster that a second node joins. Every write
//! acknowledged at or before the backup's log index is there, on both
//! nodes, and none after it; the backup's admin token still works, the
//! plugin installed before it runs there (its module came in the backup),
//! and the new cluster takes writes. A damaged backup is refused whole.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use zeromesh::client::ApiClient;
use zeromesh_testnet::{cli_as, own_applied_index, wait_until, RestoreFrom, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);

/// A plugin with one tool and no capabilities.
const IDLE_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "zm_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "zm_call") (param i32 i32 i32 i32) (result i64) (i64.const 0)))"#;
const IDLE_MANIFEST: &str = r#"{ "name": "idle", "version": "1", "description": "does nothing",
  "tools": [{ "name": "idle", "description": "returns nothing", "input_schema": { "type": "object" } }],
  "limits": { "fuel_per_call": 100000, "memory_bytes": 65536, "wall_clock_ms": 1000 } }"#;

/// Whether node `index` runs plugin `name`.
async fn runs_plugin(testnet: &Testnet, index: usize, name: &str) -> bool {
    let Ok(listed) = testnet.call(index, "plugin_list", json!({})).await else { return false };
    listed["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|plugin| plugin["name"] == name && plugin["running_here"] == true)
}

type Acknowledged = Arc<Mutex<Vec<(String, String, u64)>>>;

/// Writes numbered values to paths of its own through node after node
/// until `stop`, keeping each acknowledged write with its log index.
async fn writer(apis: Vec<String>, token: String, id: usize, stop: Arc<AtomicBool>, acknowledged: Acknowledged) {
    let mut number = 0u64;
    let mut node = id;
    while !stop.load(Ordering::SeqCst) {
        node += 1;
        let Ok(mut client) = ApiClient::connect_with(&apis[node % apis.len()], None, Some(token.clone())).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            let path = format!("backup/writer-{id}-{number}");
            let value = format!("value {number} of writer {id}");
            number += 1;
            match client.call_tool("memory_put", json!({ "path": path, "value": value })).await {
                Ok(answer) => {
                    let index = answer["log_index"].as_u64().expect("a write's log index");
                    acknowledged.lock().unwrap().push((path, value, index));
                }
                // Perhaps applied, perhaps not: neither side checks it.
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_into_a_new_cluster_with_every_write_up_to_its_index() {
    let old = Testnet::start(3, TestnetOptions { auth: true, ..Default::default() }).await.unwrap();
    let admin = old.admin_token.clone().unwrap();
    let apis: Vec<String> = old.nodes.iter().map(|node| node.address.api.clone()).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let publisher = cli_as(Some(&admin), &["plugin", "keygen", "--out", &path("publisher.key")]).unwrap();
    cli_as(Some(&admin), &["plugin", "trust", publisher.lines().next().unwrap().trim(), "--node", &apis[0]]).unwrap();
    std::fs::write(path("idle.wasm"), wat::parse_str(IDLE_WAT).unwrap()).unwrap();
    std::fs::write(path("idle.json"), IDLE_MANIFEST).unwrap();
    let (module, manifest, key, package) =
        (path("idle.wasm"), path("idle.json"), path("publisher.key"), path("idle.zmp"));
    zeromesh_testnet::sign_plugin(Path::new(&module), Path::new(&manifest), Path::new(&key), Path::new(&package))
        .unwrap();
    cli_as(Some(&admin), &["plugin", "install", &package, "--wait", "--node", &apis[0]]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Acknowledged = Arc::default();
    let writers: Vec<_> = (0..2)
        .map(|id| tokio::spawn(writer(apis.clone(), admin.clone(), id, stop.clone(), acknowledged.clone())))
        .collect();
    let count = || acknowledged.lock().unwrap().len();
    wait_until("writes before the backup", WAIT, || async { (count() >= 30).then_some(()) }).await.unwrap();

    // The backup, through a follower, while the writers go on.
    let file = dir.path().join("mesh.zmbackup");
    let leader = old.leader(WAIT).await.unwrap();
    let follower = apis[(leader + 1) % 3].clone();
    let args = ["backup", "--node", follower.as_str(), "--out", file.to_str().unwrap()];
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    let token = admin.clone();
    let said = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_as(Some(&token), &args)
    })
    .await
    .unwrap()
    .unwrap();
    let backup_index: u64 = said
        .strip_prefix("backup of log index ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|index| index.parse().ok())
        .unwrap_or_else(|| panic!("the backup says its log index: {said}"));
    assert!(said.contains(" 1 plugin modules"), "the plugin's module is in the backup: {said}");
    let at_backup = count();
    wait_until("writes after the backup", WAIT, || async { (count() >= at_backup + 20).then_some(()) }).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    let (before, after): (Vec<_>, Vec<_>) = acknowledged.iter().partition(|(_, _, index)| *index <= backup_index);
    assert!(!before.is_empty() && !after.is_empty(), "writes on both sides of index {backup_index}");
    drop(old);

    // A damaged copy is refused, and leaves no store behind.
    let damaged = dir.path().join("damaged.zmbackup");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&damaged, bytes).unwrap();
    let refused_dir = dir.path().join("refused");
    let refused = cli_as(
        None,
        &[
            "restore",
            damaged.to_str().unwrap(),
            "--init",
            "--data",
            refused_dir.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
        ],
    )
    .expect_err("a damaged backup is refused");
    let said = format!("{refused:#}");
    assert!(said.contains("damaged.zmbackup") && (said.contains("is invalid") || said.contains("decode")), "{said}");
    assert!(!refused_dir.join("raft/CURRENT").exists(), "a refused restore writes no store");

    // The restore: a new cluster from the backup, and a node joining it.
    let restore = RestoreFrom { backup: file.clone(), admin_token: admin.clone() };
    let new =
        Testnet::start(2, TestnetOptions { auth: true, restore: Some(restore), ..Default::default() }).await.unwrap();
    let mut client = new.client(0).await.unwrap();
    let marker = client.call_tool("memory_put", json!({ "path": "restored/marker", "value": "new cluster" })).await;
    let marker = marker.expect("the backup's admin token writes to the new cluster")["log_index"].as_u64().unwrap();
    assert!(marker > backup_index, "the new cluster goes on after index {backup_index}: {marker}");
    new.wait_for_cluster("both nodes to apply the marker", WAIT, |status| {
        own_applied_index(status).is_some_and(|applied| applied >= marker)
    })
    .await
    .unwrap();
    for index in 0..2 {
        wait_until(&format!("node {index} to run the plugin"), WAIT, || async {
            runs_plugin(&new, index, "idle").await.then_some(())
        })
        .await
        .unwrap();
        let held = new.memories(index, "backup/").await.unwrap();
        for (path, value, log_index) in &before {
            assert_eq!(held.get(path), Some(value), "node {index} lacks {path} (index {log_index} <= {backup_index})");
        }
        for (path, _, log_index) in &after {
            assert!(!held.contains_key(path), "node {index} holds {path}, written at {log_index} > {backup_index}");
        }
    }
}
