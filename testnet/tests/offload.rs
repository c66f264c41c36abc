//! Plugin calls offloaded to peers, on real node processes with
//! authentication, set up through the command line: a node that runs no
//! plugins serves their tools through the peers that do, with receipts its
//! results carry and its usage is settled with; a peer killed mid-call has
//! the call finish on another (a plugin that writes nothing) or fail as
//! `outcome_unknown` without running again (one that may write); forged
//! receipts are refused.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use zeromesh::client::ApiClient;
use zeromesh_testnet::parties::Parties;
use zeromesh_testnet::{connect_when_known, wait_until, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);
const AGENT: &str = "worker";
const AGREEMENT: &str = "work";

/// A plugin whose tool `{tool}` waits 1.5 s on the node's clock, then
/// answers `{"slept":true}`. It writes nothing: its calls may run again.
const SLOW_WAT: &str = r#"(module
  (import "zeromesh" "clock_ms" (func $clock (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"slept\":true}")
  (func (export "zm_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "zm_call") (param i32 i32 i32 i32) (result i64)
    (local $until i64)
    (local.set $until (i64.add (call $clock) (i64.const 1500)))
    (loop $wait (br_if $wait (i64.lt_s (call $clock) (local.get $until))))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 14))))"#;

fn slow_manifest(name: &str, capabilities: &[&str]) -> String {
    json!({
        "name": name, "version": "1", "description": "waits 1.5 s",
        "tools": [{ "name": name, "description": "waits 1.5 s", "input_schema": { "type": "object" } }],
        "capabilities": capabilities,
        "limits": { "fuel_per_call": 900_000_000u64, "memory_bytes": 65536, "wall_clock_ms": 4000 },
    })
    .to_string()
}

/// Writes the slow plugin as `name` with `capabilities` into `dir`; returns
/// its WebAssembly text and manifest files.
fn slow_plugin(dir: &Path, name: &str, capabilities: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let (wat, manifest) = (dir.join(format!("{name}.wat")), dir.join(format!("{name}.json")));
    std::fs::write(&wat, SLOW_WAT).unwrap();
    std::fs::write(&manifest, slow_manifest(name, capabilities)).unwrap();
    (wat, manifest)
}

/// Calls `tool` as the agent on `client`; the whole result.
async fn call(client: &mut ApiClient, tool: &str, arguments: Value) -> Value {
    let params = json!({ "name": tool, "arguments": arguments });
    client.request("tools/call", params).await.unwrap_or_else(|error| panic!("{tool}: {error}"))
}

/// Node `index`'s id as results show it: text.
fn node_id(testnet: &Testnet, index: usize) -> Value {
    json!(testnet.nodes[index].address.node_id.to_string())
}

fn text_of(result: &Value) -> String {
    result["content"][0]["text"].as_str().unwrap_or_default().to_owned()
}

/// The calls agreement [`AGREEMENT`] has counted, as node `index` reads it.
async fn calls_counted(testnet: &Testnet, index: usize) -> u64 {
    let usage = testnet.call(index, "agreement_usage", json!({ "id": AGREEMENT })).await.unwrap();
    usage["limits"][0]["used"].as_u64().unwrap_or_else(|| panic!("{usage}"))
}

/// Starts a call of `tool` on `client` in the background, waits until one
/// of `hosts` runs it for a peer, kills that host (`kill -9`) and returns
/// the call's result and which host was killed.
async fn kill_host_mid_call(testnet: &mut Testnet, client: ApiClient, tool: &str, hosts: [usize; 2]) -> (Value, usize) {
    let tool = tool.to_owned();
    let calling = tokio::spawn(async move {
        let mut client = client;
        let result = call(&mut client, &tool, json!({})).await;
        (result, client)
    });
    let host = wait_until("a peer to run the call", WAIT, || async {
        for host in hosts {
            if testnet.metric(host, "zeromesh_offload_serving").await == Some(1) {
                return Some(host);
            }
        }
        None
    })
    .await
    .unwrap();
    testnet.kill9(host).await.unwrap();
    let (result, _) = calling.await.unwrap();
    (result, host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_plugins_runs_their_tools_on_peers_with_verified_receipts() {
    let options = TestnetOptions { auth: true, ..Default::default() };
    let mut testnet = Testnet::start(2, options).await.expect("a testnet starts");
    let caller = testnet.add_node_with(&["--run-plugins", "false"]).await.unwrap();
    testnet
        .wait_for_cluster("3 members", WAIT, |status| status["members"].as_array().map(Vec::len) == Some(3))
        .await
        .unwrap();
    let hosts = [0, 1];

    let parties = Parties::new(&testnet, AGENT, &["echo", "slow", "slow_write"]);
    let dir = tempfile::tempdir().unwrap();
    let installed = parties.install_example("echo", &["--wait", "60"]);
    assert!(installed.contains("loaded on 2 of 2 members that run plugins (1 run none"), "{installed}");
    let (wat, manifest) = slow_plugin(dir.path(), "slow", &["clock"]);
    parties.install(&wat, &manifest, &["--grant", "clock", "--wait", "60"]);
    let (wat, manifest) = slow_plugin(dir.path(), "slow_write", &["clock", "memory.write"]);
    parties.install(&wat, &manifest, &["--grant", "clock,memory.write", "--wait", "60"]);
    parties.create(AGREEMENT, AGENT, "*", &["calls=1000/lifetime", "fuel=100000000000/day"]);
    parties.sign_and_activate(AGREEMENT);
    let token = parties.agent_token(AGENT);

    // The node that runs no plugins lists their tools and serves them
    // through a peer; the receipt is in the result, and usage settled with it.
    let mut client = connect_when_known(&parties.api[caller], &token, WAIT).await.unwrap();
    wait_until("the caller to list the plugins' tools", WAIT, || async {
        let tools = testnet.client(caller).await.ok()?.request("tools/list", json!({})).await.ok()?;
        let names: Vec<&str> = tools["tools"].as_array()?.iter().filter_map(|tool| tool["name"].as_str()).collect();
        ["echo", "slow", "slow_write"].iter().all(|name| names.contains(name)).then_some(())
    })
    .await
    .unwrap();
    let plugins = testnet.call(caller, "plugin_list", json!({})).await.unwrap();
    let echo = plugins["plugins"].as_array().unwrap().iter().find(|plugin| plugin["name"] == "echo").unwrap();
    assert_eq!(echo["running_here"], false, "{echo}");
    let result = call(&mut client, "echo", json!({ "text": "over there" })).await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["structuredContent"], json!({ "text": "over there" }));
    let host = &result["_meta"]["zeromesh/host"];
    assert_eq!(host["offloaded"], true, "{result}");
    assert!(hosts.iter().any(|index| host["nodeId"] == node_id(&testnet, *index)), "{host}");
    let receipt = &result["_meta"]["zeromesh/receipt"];
    let usage = &result["_meta"]["zeromesh/usage"];
    assert_eq!(receipt["moduleSha256"], echo["module_sha256"], "{receipt}");
    assert_eq!(receipt["nodeId"], host["nodeId"]);
    assert_eq!(receipt["reservation"]["agreement"], AGREEMENT);
    assert_eq!(receipt["reservation"]["logIndex"], usage["logIndex"], "{result}");
    assert!(receipt["fuelUsed"].as_u64().unwrap() > 0, "{receipt}");
    assert_eq!(usage["used"]["fuel"], receipt["fuelUsed"], "usage is settled with the receipt's fuel: {result}");
    assert!(usage["used"]["wall_ms"].as_u64().is_some());

    // A peer killed while it runs a call of a plugin that writes nothing:
    // the call finishes on the other, and is counted once.
    let before = calls_counted(&testnet, 0).await;
    let other_client = connect_when_known(&parties.api[caller], &token, WAIT).await.unwrap();
    let (result, killed) = kill_host_mid_call(&mut testnet, other_client, "slow", hosts).await;
    let survivor = hosts[1 - hosts.iter().position(|host| *host == killed).unwrap()];
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["structuredContent"], json!({ "slept": true }));
    assert_eq!(result["_meta"]["zeromesh/host"]["nodeId"], node_id(&testnet, survivor), "{result}");
    assert_eq!(result["_meta"]["zeromesh/usage"]["used"]["calls"], 1);
    wait_until("the call to be counted once", WAIT, || async {
        (calls_counted(&testnet, survivor).await == before + 1).then_some(())
    })
    .await
    .unwrap();
    testnet.restart(killed).await.unwrap();
    wait_until("the restarted node to run the plugins again", WAIT, || async {
        (testnet.metric(killed, "zeromesh_plugins_running").await == Some(3)).then_some(())
    })
    .await
    .unwrap();

    // A plugin granted memory.write: a host killed mid-call may have written,
    // so the call is not run again: it fails as outcome_unknown.
    let served_before = [
        testnet.metric(0, "zeromesh_offload_served_total{outcome=\"ran\"}").await.unwrap(),
        testnet.metric(1, "zeromesh_offload_served_total{outcome=\"ran\"}").await.unwrap(),
    ];
    let other_client = connect_when_known(&parties.api[caller], &token, WAIT).await.unwrap();
    let (result, killed) = kill_host_mid_call(&mut testnet, other_client, "slow_write", hosts).await;
    let survivor = hosts[1 - hosts.iter().position(|host| *host == killed).unwrap()];
    assert_eq!(result["isError"], true, "{result}");
    assert_eq!(result["_meta"]["zeromesh/error"], "outcome_unknown", "{result}");
    assert!(text_of(&result).contains("may write memories, so it is not run again"), "{result}");
    assert_eq!(
        testnet.metric(survivor, "zeromesh_offload_served_total{outcome=\"ran\"}").await.unwrap(),
        served_before[survivor],
        "the survivor never ran it"
    );
    testnet.restart(killed).await.unwrap();
    wait_until("the restarted node to run the plugins again", WAIT, || async {
        (testnet.metric(killed, "zeromesh_plugins_running").await == Some(3)).then_some(())
    })
    .await
    .unwrap();

    // Both hosts forge their receipts: each is refused, and with no node
    // left to run it the call fails, saying why.
    for host in hosts {
        testnet.call(host, "offload_forge_receipts", json!({ "forge": true })).await.unwrap();
    }
    let refused_before = testnet.metric(caller, "zeromesh_offload_receipts_refused_total").await.unwrap();
    let mut client = connect_when_known(&parties.api[caller], &token, WAIT).await.unwrap();
    let result = call(&mut client, "echo", json!({ "text": "forged" })).await;
    assert_eq!(result["isError"], true, "{result}");
    assert!(text_of(&result).contains("receipt that does not verify"), "{result}");
    assert!(text_of(&result).contains("is signed by"), "{result}");
    let refused = testnet.metric(caller, "zeromesh_offload_receipts_refused_total").await.unwrap();
    assert_eq!(refused, refused_before + 2, "each host's forged receipt was refused");
    // One host signs honestly again: the call is served by it.
    testnet.call(hosts[1], "offload_forge_receipts", json!({ "forge": false })).await.unwrap();
    let result = call(&mut client, "echo", json!({ "text": "honest" })).await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["_meta"]["zeromesh/host"]["nodeId"], node_id(&testnet, hosts[1]), "{result}");
}
