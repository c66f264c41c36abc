//! Agent snapshots on real node processes with authentication, through the
//! command line: a snapshot taken through one node and recovered through
//! another into a new id holds identical memories; an export signed with an
//! operator's key, imported into a fresh mesh, too; a tampered or foreign
//! file is refused with the check that failed.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use zeromesh_testnet::{cli_as, wait_until, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);

fn path(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// Agent `agent`'s live memories through node `index`, as (path under the
/// agent, value as the API shows it, content type, tags).
async fn memories(testnet: &Testnet, index: usize, agent: &str) -> Vec<(String, Value, Value, Value)> {
    let listed = testnet.call(index, "memory_list", json!({ "prefix": format!("{agent}/") })).await.unwrap();
    listed["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| {
            let path = record["path"].as_str().unwrap().strip_prefix(&format!("{agent}/")).unwrap().to_owned();
            let value = record.get("value").or(record.get("value_base64")).cloned().unwrap();
            (path, value, record["content_type"].clone(), record["tags"].clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_recovers_on_another_node_and_an_export_imports_into_a_fresh_mesh_identical() {
    let testnet =
        Testnet::start(3, TestnetOptions { auth: true, ..Default::default() }).await.expect("a testnet starts");
    let admin = testnet.admin_token.clone().expect("node 0 printed the first admin token");
    let api: Vec<String> = testnet.nodes.iter().map(|node| node.address.api.clone()).collect();
    let operator = |args: &[&str]| cli_as(Some(&admin), args);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("operator.key");
    operator(&["plugin", "keygen", "--out", &path(&key)]).unwrap();

    operator(&[
        "agent",
        "spawn",
        "origin",
        "--owner",
        "ops",
        "--tool",
        "memory_*",
        "--description",
        "the first",
        "--node",
        &api[0],
    ])
    .unwrap();
    let writes = [
        json!({ "path": "origin/notes/today", "value": "met the client", "tags": ["work"] }),
        json!({ "path": "origin/plan", "value": "v1" }),
        json!({ "path": "origin/plan", "value": "v2" }),
        json!({ "path": "origin/blob", "value_base64": "AAEC/w==", "content_type": "application/octet-stream" }),
        json!({ "path": "origin/gone", "value": "soon deleted" }),
    ];
    for write in writes {
        testnet.call(1, "memory_put", write).await.unwrap();
    }
    testnet.call(1, "memory_delete", json!({ "path": "origin/gone" })).await.unwrap();
    let original = memories(&testnet, 0, "origin").await;
    assert_eq!(original.len(), 3, "{original:?}");

    let taken = operator(&["agent", "snapshot", "origin", "snap-1", "--node", &api[0]]).unwrap();
    assert!(taken.contains("snapshot snap-1 of agent origin: 3 memories"), "{taken}");
    // Later writes are not in the snapshot.
    testnet.call(0, "memory_put", json!({ "path": "origin/after", "value": "later" })).await.unwrap();
    let again = operator(&["agent", "snapshot", "origin", "snap-1", "--node", &api[1]]).unwrap_err().to_string();
    assert!(again.contains("already exists"), "{again}");

    let recovered = operator(&["agent", "recover", "snap-1", "--into", "copy", "--node", &api[2]]).unwrap();
    assert!(recovered.contains("agent copy now holds snapshot snap-1 (3 memories, spawned"), "{recovered}");
    assert_eq!(memories(&testnet, 2, "copy").await, original, "recovered on another node into a new id");
    let shown = testnet.call(1, "agent_show", json!({ "id": "copy" })).await.unwrap();
    assert_eq!((shown["description"].as_str(), shown["state"].as_str()), (Some("the first"), Some("running")));

    // Recovering into the agent itself drops what was written since.
    operator(&["agent", "recover", "snap-1", "--into", "origin", "--node", &api[1]]).unwrap();
    assert_eq!(memories(&testnet, 0, "origin").await, original);

    let export = dir.path().join("origin.agent.json");
    let exported =
        operator(&["agent", "export", "snap-1", "--key", &path(&key), "--out", &path(&export), "--node", &api[1]]);
    assert!(exported.unwrap().contains("exported agent origin (3 memories"));

    let fresh =
        Testnet::start(3, TestnetOptions { auth: true, ..Default::default() }).await.expect("a second mesh starts");
    let fresh_admin = fresh.admin_token.clone().unwrap();
    let fresh_api = fresh.nodes[1].address.api.clone();
    let importer = |args: &[&str]| cli_as(Some(&fresh_admin), args);
    let public = format!("{}.pub", path(&key));

    let mut tampered: Value = serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    tampered["snapshot"]["memories"][0]["content_type"] = json!("text/evil");
    let tampered_file = dir.path().join("tampered.json");
    std::fs::write(&tampered_file, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let refused = importer(&["agent", "import", &path(&tampered_file), "--node", &fresh_api]).unwrap_err().to_string();
    assert!(refused.contains("hash check failed"), "{refused}");
    let stranger = dir.path().join("stranger.key");
    importer(&["plugin", "keygen", "--out", &path(&stranger)]).unwrap();
    let foreign = format!("{}.pub", path(&stranger));
    let refused = importer(&["agent", "import", &path(&export), "--trust", &foreign, "--node", &fresh_api]);
    assert!(refused.unwrap_err().to_string().contains("trust check failed"));

    let imported = importer(&["agent", "import", &path(&export), "--trust", &public, "--node", &fresh_api]).unwrap();
    assert!(imported.contains("agent origin now holds snapshot snap-1 (3 memories, spawned"), "{imported}");
    let moved = wait_until("the import to reach node 2 of the fresh mesh", WAIT, || async {
        let moved = memories(&fresh, 2, "origin").await;
        (moved.len() == original.len()).then_some(moved)
    })
    .await
    .unwrap();
    assert_eq!(moved, original, "imported into a fresh mesh");
}
