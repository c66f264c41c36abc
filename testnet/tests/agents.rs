//! The agent registry on real node processes with authentication: an agent
//! spawned through one node is governed on every node; its token calls only
//! the tools its list allows; pausing refuses its calls everywhere with the
//! reason; terminating revokes its tokens while its memories stay readable
//! by an admin; a terminated id is never reused; its own quota holds across
//! nodes.

use std::time::Duration;

use serde_json::{json, Value};
use zeromesh::client::{ApiClient, ClientError};
use zeromesh_testnet::{cli_as, connect_when_known, wait_until, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);

/// Waits until `client`'s `memory_get` of `path` is refused with a message
/// containing `expected`; returns the message.
async fn wait_refused(client: &mut ApiClient, path: &str, expected: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.call_tool("memory_get", json!({ "path": path })).await {
            Err(ClientError::Rpc { code: -32003, message }) if message.contains(expected) => return message,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "still not refused with {expected:?}: {other:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_is_governed_on_every_node_from_spawn_to_termination() {
    let testnet =
        Testnet::start(3, TestnetOptions { auth: true, ..Default::default() }).await.expect("a testnet starts");
    let admin = testnet.admin_token.clone().expect("node 0 printed the first admin token");
    let api: Vec<String> = testnet.nodes.iter().map(|node| node.address.api.clone()).collect();
    let operator = |args: &[&str]| cli_as(Some(&admin), args);

    let spawned = operator(&["agent", "spawn", "alice", "--owner", "ops", "--tool", "memory_*", "--node", &api[0]]);
    assert!(spawned.expect("spawned").contains("agent alice running"));
    let token = operator(&["token", "create", "--role", "agent", "--agent", "alice", "--node", &api[0]]).unwrap();
    let mut alice = connect_when_known(&api[2], token.trim(), WAIT).await.unwrap();

    // Allowed tools run; a tool outside the list is refused and runs nothing.
    alice.call_tool("memory_put", json!({ "path": "alice/plan", "value": "v1" })).await.expect("allowed");
    match alice.call_tool("cluster_status", json!({})).await {
        Err(ClientError::Rpc { code: -32003, message }) => {
            assert!(message.contains("may not call cluster_status") && message.contains("memory_*"), "{message}")
        }
        other => panic!("cluster_status should be refused: {other:?}"),
    }

    // Paused through node 1: node 2 refuses with the reason; resumed, it serves again.
    operator(&["agent", "pause", "alice", "--reason", "budget review", "--node", &api[1]]).expect("paused");
    let paused = wait_refused(&mut alice, "alice/plan", "paused").await;
    assert!(paused.contains("budget review"), "{paused}");
    operator(&["agent", "resume", "alice", "--node", &api[1]]).expect("resumed");
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Err(error) = alice.call_tool("memory_get", json!({ "path": "alice/plan" })).await {
        assert!(tokio::time::Instant::now() < deadline, "alice is still refused after resume: {error}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Terminated: its token stops working everywhere; an admin still reads its memories.
    let terminated = operator(&["agent", "terminate", "alice", "--node", &api[0]]).expect("terminated");
    assert!(terminated.contains("tokens revoked: 1"), "{terminated}");
    wait_refused(&mut alice, "alice/plan", "revoked").await;
    let kept: Value = testnet.call(2, "memory_get", json!({ "path": "alice/plan" })).await.unwrap();
    assert_eq!(kept["record"]["value"], "v1");
    let listed = operator(&["agent", "list", "--node", &api[2]]).unwrap();
    assert!(listed.contains("alice terminated owner=ops tools=memory_*"), "{listed}");
    let again = operator(&["agent", "spawn", "alice", "--owner", "ops", "--tool", "*", "--node", &api[0]]);
    assert!(again.unwrap_err().to_string().contains("already exists"));
    let resumed = operator(&["agent", "resume", "alice", "--node", &api[0]]);
    assert!(resumed.unwrap_err().to_string().contains("terminated"));

    // A memory quota is enforced in apply, whichever node the write enters.
    let quota = [
        "agent",
        "spawn",
        "tiny",
        "--owner",
        "ops",
        "--tool",
        "*",
        "--memory-quota-bytes",
        "32",
        "--max-concurrent-calls",
        "2",
        "--node",
        &api[1],
    ];
    operator(&quota).expect("spawned with a quota");
    let fits = testnet.call(2, "memory_put", json!({ "path": "tiny/a", "value": "0123456789" })).await.unwrap();
    assert_eq!(fits["outcome"], "written", "{fits}");
    let over = testnet.call(0, "memory_put", json!({ "path": "tiny/b", "value": "x".repeat(30) })).await.unwrap();
    assert_eq!(over["outcome"], "over_quota", "{over}");
    assert_eq!((over["stored_bytes"].as_u64(), over["quota_bytes"].as_u64()), (Some(20), Some(32)), "{over}");
    wait_until("node 2 to count tiny's bytes", WAIT, || async {
        let shown = testnet.call(2, "agent_show", json!({ "id": "tiny" })).await.ok()?;
        let quotas = (shown["memory_quota_bytes"].as_u64(), shown["max_concurrent_calls"].as_u64());
        (shown["memory_bytes"].as_u64() == Some(20) && quotas == (Some(32), Some(2))).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_own_quota_is_never_overrun_whichever_nodes_its_calls_enter_through() {
    const QUOTA: usize = 5;
    let testnet =
        Testnet::start(3, TestnetOptions { auth: true, ..Default::default() }).await.expect("a testnet starts");
    let admin = testnet.admin_token.clone().expect("node 0 printed the first admin token");
    let api: Vec<String> = testnet.nodes.iter().map(|node| node.address.api.clone()).collect();
    let operator = |args: &[&str]| cli_as(Some(&admin), args);
    let quota = format!("calls={QUOTA}/hour");
    let spawn =
        ["agent", "spawn", "meter", "--owner", "ops", "--tool", "memory_*", "--limit", &quota, "--node", &api[1]];
    assert!(operator(&spawn).unwrap().contains("agent meter running"));
    let token = operator(&["token", "create", "--role", "agent", "--agent", "meter", "--node", &api[0]]).unwrap();
    let token = token.trim().to_owned();

    // Four callers per node, one call each, all at once.
    let mut callers = Vec::new();
    for caller in 0..12 {
        let (node, token) = (api[caller % 3].clone(), token.clone());
        callers.push(tokio::spawn(async move {
            let mut client = connect_when_known(&node, &token, WAIT).await.unwrap();
            let put = json!({ "path": format!("meter/call-{caller}"), "value": "v" });
            match client.request("tools/call", json!({ "name": "memory_put", "arguments": put })).await {
                Ok(result) => {
                    assert_eq!(result["_meta"]["zeromesh/usage"]["agreement"], "agent/meter", "{result}");
                    true
                }
                Err(ClientError::Rpc { code: -32004, message }) => {
                    assert!(message.contains("agent meter: its own quota of 5 calls per hour is reached"), "{message}");
                    false
                }
                Err(other) => panic!("a call failed without a fault: {other}"),
            }
        }));
    }
    let mut served = 0;
    for caller in callers {
        served += usize::from(caller.await.unwrap());
    }
    assert_eq!(served, QUOTA, "exactly the quota's worth of calls ran");
    for index in 0..3 {
        let shown = wait_until(&format!("node {index} to count every call"), WAIT, || async {
            let shown: Value = testnet.call(index, "agent_show", json!({ "id": "meter" })).await.ok()?;
            (shown["quotas"]["refused"] == 12 - QUOTA).then_some(shown)
        })
        .await
        .unwrap();
        assert_eq!(shown["quotas"]["limits"][0]["used"], QUOTA, "node {index}: {shown}");
    }
}
