//! Signed WASM plugins across the mesh, end to end, through the command line
//! and the peer API of real node processes: trust, install on one node, run
//! on another, agents kept apart, adverts, `list_changed`, modules fetched
//! from peers by hash, uninstall everywhere.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use zeromesh::client::ApiClient;
use zeromesh_protocol::limits::MAX_PLUGIN_CALLS_IN_FLIGHT;
use zeromesh_testnet::{wait_until, zeromesh_binary, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);

fn run(args: &[&str]) -> (bool, String) {
    let output = Command::new(zeromesh_binary().expect("the zeromesh binary")).args(args).output().expect("runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn run_ok(args: &[&str]) -> String {
    let (ok, text) = run(args);
    assert!(ok, "zeromesh {args:?} failed: {text}");
    text
}

fn examples() -> std::path::PathBuf {
    zeromesh_testnet::package_dir().join("../plugins/examples")
}

/// A plugin whose one tool, `spin`, loops forever.
const SPIN_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "zm_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "zm_call") (param i32 i32 i32 i32) (result i64) (loop $forever (br $forever)) (i64.const 0)))"#;
const SPIN_MANIFEST: &str = r#"{ "name": "spin", "version": "1", "description": "loops forever",
  "tools": [{ "name": "spin", "description": "never returns", "input_schema": { "type": "object" } }],
  "limits": { "fuel_per_call": 5000000, "memory_bytes": 65536, "wall_clock_ms": 2000 } }"#;

/// Makes a publisher key through the command line; returns it and its public half.
fn publisher_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("publisher.key");
    let public =
        run_ok(&["plugin", "keygen", "--out", key.to_str().unwrap()]).lines().next().unwrap().trim().to_owned();
    (key, public)
}

/// Signs `wasm` with `manifest` through the command line; returns the package path.
fn sign(dir: &Path, name: &str, wasm: Vec<u8>, manifest: &Path, key: &Path) -> String {
    let (module, package) = (dir.join(format!("{name}.wasm")), dir.join(format!("{name}.zmp")));
    std::fs::write(&module, wasm).unwrap();
    zeromesh_testnet::sign_plugin(&module, manifest, key, &package).expect("signs");
    package.to_str().unwrap().to_owned()
}

async fn tool_names(testnet: &Testnet, node: usize) -> Vec<String> {
    let Ok(mut client) = testnet.client(node).await else { return Vec::new() };
    let Ok(listed) = client.request("tools/list", json!({})).await else { return Vec::new() };
    listed["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|tool| tool["name"].as_str().map(str::to_owned))
        .collect()
}

async fn swap_note(testnet: &Testnet, node: usize, agent: &str, note: Value) -> Result<Value, String> {
    let mut client = testnet.client(node).await.map_err(|error| error.to_string())?;
    client.call_tool_as("swap_note", note, Some(agent)).await.map_err(|error| error.to_string())
}

async fn advertised_hashes(testnet: &Testnet, node: usize) -> Vec<Vec<String>> {
    let Ok(peers) = testnet.call(node, "mesh_peers", json!({})).await else { return Vec::new() };
    peers["adverts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|advert| {
            advert["plugin_hashes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_installed_on_one_node_runs_on_every_node_and_uninstalls_everywhere() {
    let mut testnet = Testnet::start(3, TestnetOptions::default()).await.expect("a 3-node testnet starts");
    let dir = tempfile::tempdir().unwrap();
    let (key, publisher) = publisher_key(dir.path());
    let notes_wasm = wat::parse_file(examples().join("notes.wat")).expect("notes.wat compiles");
    let package = sign(dir.path(), "notes", notes_wasm, &examples().join("notes.json"), &key);
    let spin_manifest = dir.path().join("spin.json");
    std::fs::write(&spin_manifest, SPIN_MANIFEST).unwrap();
    let spin = sign(dir.path(), "spin", wat::parse_str(SPIN_WAT).unwrap(), &spin_manifest, &key);
    let (first, third) = (testnet.nodes[0].address.api.clone(), testnet.nodes[2].address.api.clone());

    // An untrusted publisher is refused, by the trust check, and nothing is installed.
    let (ok, refused) = run(&["plugin", "install", &package, "--grant", "memory.read,memory.write", "--node", &first]);
    assert!(!ok && refused.contains("trust check failed"), "{refused}");
    run_ok(&["plugin", "trust", &publisher, "--node", &first]);

    // The module imports memory functions: without the grant, the capability check refuses it.
    let (ok, refused) = run(&["plugin", "install", &package, "--node", &first]);
    assert!(!ok && refused.contains("capability check failed") && refused.contains("memory_read"), "{refused}");

    // A session on node 2 hears that its tools changed.
    let mut watcher = ApiClient::connect(&third).await.expect("connects");
    assert_eq!(watcher.server["capabilities"]["tools"]["listChanged"], json!(true));
    let install = ["plugin", "install", &package, "--grant", "memory.read,memory.write", "--wait", "--node", &first];
    let installed = run_ok(&install);
    assert!(installed.contains("installed notes 1.0.0") && installed.contains("swap_note"), "{installed}");
    // --wait: every member has loaded the module when the command returns.
    assert!(installed.contains("loaded on 3 of 3 members"), "{installed}");
    let notification = watcher.next_notification(WAIT).await.expect("a list_changed notification");
    assert_eq!(notification["method"], "notifications/tools/list_changed");

    for node in 0..3 {
        wait_until("the plugin's tool to be listed", WAIT, || async {
            tool_names(&testnet, node).await.contains(&"swap_note".to_owned()).then_some(())
        })
        .await
        .unwrap_or_else(|error| panic!("node {node}: {error}"));
    }

    // Only registered agents allowed the tool may call it.
    for agent in ["alice", "bob", "carol"] {
        testnet.spawn_agent(agent, &["swap_note"]).await.expect("the agent is spawned");
    }
    testnet.spawn_agent("dave", &["memory_*"]).await.expect("the agent is spawned");
    let refused = swap_note(&testnet, 1, "dave", json!({})).await.unwrap_err();
    assert!(refused.contains("may not call swap_note"), "{refused}");
    let refused = swap_note(&testnet, 2, "eve", json!({})).await.unwrap_err();
    assert!(refused.contains("not in the agent registry"), "{refused}");

    // Installed through node 0, run on node 2; each agent sees only its own note.
    assert_eq!(swap_note(&testnet, 2, "alice", json!({ "text": "first" })).await.unwrap(), Value::Null);
    assert_eq!(swap_note(&testnet, 1, "alice", json!({ "text": "second" })).await.unwrap(), json!({ "text": "first" }));
    assert_eq!(swap_note(&testnet, 2, "bob", json!({ "text": "bob's" })).await.unwrap(), Value::Null);
    let alice = testnet.call(0, "memory_get", json!({ "path": "alice/notes/last" })).await.unwrap();
    assert_eq!(alice["record"]["value"], r#"{"text":"second"}"#);
    let bob = testnet.call(0, "memory_get", json!({ "path": "bob/notes/last" })).await.unwrap();
    assert_eq!(bob["record"]["value"], r#"{"text":"bob's"}"#);

    // More calls at once than a node runs, each waiting from its thread on a
    // memory read and a Raft write that need threads of their own: every
    // one is answered (the node's blocking pool outnumbers the call slots).
    let calls = (0..MAX_PLUGIN_CALLS_IN_FLIGHT + 8).map(|index| swap_note(&testnet, 2, "carol", json!({ "n": index })));
    let answers = tokio::time::timeout(WAIT, futures::future::join_all(calls))
        .await
        .expect("every call of a burst larger than the call slots is answered");
    for answer in answers {
        answer.expect("a call of the burst succeeds");
    }

    // A plugin that never returns is stopped with its cause; the node keeps serving.
    // Installed here through the API, asking for progress notifications.
    let mut installer = testnet.client(0).await.unwrap();
    let package_base64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&spin).unwrap())
    };
    let install = json!({ "name": "plugin_install", "arguments": { "package_base64": package_base64 }, "_meta": { "progressToken": "spin-install" } });
    let installed = installer.request("tools/call", install).await.unwrap();
    assert_eq!(installed["isError"], json!(false), "{installed}");
    let mut steps = Vec::new();
    while let Ok(notification) = installer.next_notification(Duration::from_millis(1)).await {
        if notification["method"] == "notifications/progress" {
            assert_eq!(notification["params"]["progressToken"], "spin-install");
            steps.push(notification["params"]["progress"].as_f64().unwrap());
        }
    }
    assert_eq!(steps, [1.0, 2.0, 3.0, 4.0], "four progress steps, in order, before the answer");
    // The same over Streamable HTTP (2026-07-28): the answer becomes an event
    // stream carrying the progress notifications, then the result.
    let install_over_http = zeromesh_testnet::stateless_request(
        9,
        "tools/call",
        json!({ "name": "plugin_install", "arguments": { "package_base64": package_base64 }, "_meta": { "progressToken": "http-install" } }),
    );
    let mut headers = vec![("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
    headers.extend(zeromesh_testnet::stateless_headers(&install_over_http));
    let streamed =
        zeromesh_testnet::http_exchange(&first, "POST", "/mcp", &headers, install_over_http.to_string().as_bytes())
            .await
            .unwrap();
    assert!(
        streamed.header("content-type").is_some_and(|kind| kind.starts_with("text/event-stream")),
        "{}",
        streamed.body
    );
    let messages: Vec<Value> = streamed
        .body
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect();
    let http_steps: Vec<f64> = messages
        .iter()
        .filter(|message| message["method"] == "notifications/progress")
        .filter_map(|message| message["params"]["progress"].as_f64())
        .collect();
    assert_eq!(http_steps, [1.0, 2.0, 3.0, 4.0], "{}", streamed.body);
    let last = messages.last().expect("messages");
    assert_eq!((&last["id"], &last["result"]["isError"]), (&json!(9), &json!(false)), "the result comes last: {last}");
    let stopped = wait_until("the spin plugin to run on node 1", WAIT, || async {
        let mut client = testnet.client(1).await.ok()?;
        match client.call_tool("spin", json!({})).await {
            Err(error) if !error.to_string().contains("unknown tool") => Some(error.to_string()),
            _ => None,
        }
    })
    .await
    .unwrap();
    assert!(stopped.contains("ran out of fuel"), "{stopped}");
    assert_eq!(swap_note(&testnet, 1, "alice", json!({ "text": "third" })).await.unwrap(), json!({ "text": "second" }));
    run_ok(&["plugin", "uninstall", "spin", "--node", &first]);

    // Every node advertises the module it runs.
    let listed = run_ok(&["plugin", "list", "--node", &third]);
    let hash =
        listed.split("module ").nth(1).and_then(|rest| rest.split(',').next()).expect("a module hash").to_owned();
    assert!(listed.contains("running here"), "{listed}");
    wait_until("every advert to list the module", WAIT, || async {
        let adverts = advertised_hashes(&testnet, 1).await;
        (adverts.len() >= 3 && adverts.iter().all(|hashes| hashes.contains(&hash))).then_some(())
    })
    .await
    .expect("adverts list the plugin");

    // The installing node goes away; a new node fetches the module from a peer that has it.
    testnet.kill9(0).await.unwrap();
    let second_p2p = testnet.nodes[1].address.p2p.clone();
    let fourth = testnet.add_node_with(&["--bootstrap", &second_p2p]).await.expect("a fourth node joins");
    wait_until("the new node to run the plugin", WAIT, || async {
        swap_note(&testnet, fourth, "carol", json!({ "n": 1 })).await.ok()
    })
    .await
    .expect("the new node runs the plugin with a module fetched from a peer");
    testnet.restart(0).await.unwrap();

    // Uninstalled through node 1: gone from every node.
    run_ok(&["plugin", "uninstall", "notes", "--node", &testnet.nodes[1].address.api]);
    for node in 0..testnet.nodes.len() {
        wait_until("the plugin's tool to disappear", WAIT, || async {
            let names = tool_names(&testnet, node).await;
            (!names.is_empty() && !names.contains(&"swap_note".to_owned())).then_some(())
        })
        .await
        .unwrap_or_else(|error| panic!("node {node}: {error}"));
    }
    let gone = swap_note(&testnet, 2, "alice", json!({})).await.unwrap_err();
    assert!(gone.contains("unknown tool"), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_tool_called_through_a_node_that_has_not_loaded_it_yet_is_waited_for_not_unknown() {
    let testnet = Testnet::start(3, TestnetOptions::default()).await.expect("a 3-node testnet starts");
    let dir = tempfile::tempdir().unwrap();
    let (key, publisher) = publisher_key(dir.path());
    let notes_wasm = wat::parse_file(examples().join("notes.wat")).expect("notes.wat compiles");
    let package = sign(dir.path(), "notes", notes_wasm, &examples().join("notes.json"), &key);
    let first = testnet.nodes[0].address.api.clone();
    run_ok(&["plugin", "trust", &publisher, "--node", &first]);
    testnet.spawn_agent("alice", &["swap_note"]).await.expect("the agent is spawned");
    let leader = testnet.leader(WAIT).await.unwrap();
    let late = (0..3).find(|node| *node != leader && *node != 0).unwrap_or((leader + 1) % 3);
    // The late node is paused while the plugin is installed elsewhere: when
    // it is called right after it resumes, it has neither applied the
    // install nor fetched the module.
    let pid = testnet.nodes[late].pid().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let installed = run(&["plugin", "install", &package, "--grant", "memory.read,memory.write", "--node", &first]);
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    assert!(installed.0, "{}", installed.1);
    let answer = swap_note(&testnet, late, "alice", json!({ "text": "right away" })).await;
    assert_eq!(answer, Ok(Value::Null), "the call waits for the plugin instead of calling it unknown");
}
