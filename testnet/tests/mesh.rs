//! The mesh, end to end: real node processes on 127.0.0.1 forming a cluster
//! through bootstrap peers, Raft over libp2p, the WebSocket peer API, and
//! faults (kill -9, restart, isolation).
//!
//! The tests run one at a time: each starts several processes, and the
//! machine has two cores.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{Mutex, MutexGuard};
use zeromesh::client::ClientError;
use zeromesh_protocol::limits::{MAX_API_MESSAGE_BYTES, MAX_VALUE_BYTES};
use zeromesh_testnet::{wait_until, Testnet, TestnetOptions};

/// Under `cargo test`, which runs a binary's tests on threads side by side;
/// nextest runs each in a process of its own and takes turns by its
/// `node-processes` group (`.config/nextest.toml`).
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(60);

async fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

async fn put(testnet: &Testnet, node: usize, path: &str, value: &str) -> Result<Value, ClientError> {
    testnet.call(node, "memory_put", json!({ "path": path, "value": value })).await
}

async fn get(testnet: &Testnet, node: usize, path: &str, consistency: &str) -> Option<String> {
    let answer = testnet.call(node, "memory_get", json!({ "path": path, "consistency": consistency })).await.ok()?;
    answer["record"]["value"].as_str().map(str::to_owned)
}

/// Counts the live memories under `prefix` in node `node`'s applied state.
async fn count_stale(testnet: &Testnet, node: usize, prefix: &str) -> Option<usize> {
    let mut client = testnet.client(node).await.ok()?;
    let mut after: Option<String> = None;
    let mut count = 0;
    loop {
        let page = client
            .call_tool(
                "memory_list",
                json!({ "prefix": prefix, "after": after, "limit": 1000, "consistency": "stale" }),
            )
            .await
            .ok()?;
        count += page["records"].as_array()?.len();
        match page["next_cursor"].as_str() {
            Some(cursor) => after = Some(cursor.to_owned()),
            None => return Some(count),
        }
    }
}

/// A 3-node testnet, once all three are voters.
async fn three_voters() -> Testnet {
    let testnet = Testnet::start(3, TestnetOptions::default()).await.expect("a 3-node testnet starts");
    testnet.wait_for_cluster("three voters", WAIT, |status| voters(status).len() == 3).await.expect("three voters");
    testnet
}

fn voters(status: &Value) -> Vec<u64> {
    status["voters"].as_array().map(|ids| ids.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_cluster_and_a_write_through_any_node_is_readable_through_every_node() {
    let _serial = serial().await;
    let testnet = Testnet::start(3, TestnetOptions::default()).await.expect("a 3-node testnet starts");
    testnet
        .wait_for_cluster("three voters", WAIT, |status| voters(status).len() == 3 && status["leader"].is_u64())
        .await
        .expect("the joiners are promoted to voters");

    for writer in 0..3 {
        let path = format!("agent-{writer}/notes/today");
        let answer = put(&testnet, writer, &path, &format!("written through node {writer}"))
            .await
            .expect("the write is accepted");
        assert!(answer["log_index"].as_u64().is_some_and(|index| index > 0), "{answer}");
        for reader in 0..3 {
            assert_eq!(
                get(&testnet, reader, &path, "linearizable").await.as_deref(),
                Some(format!("written through node {writer}").as_str()),
                "node {reader} reads what node {writer} wrote"
            );
        }
    }
    // The command line's status, as a table and as JSON for scripts.
    let api = testnet.nodes[1].address.api.clone();
    let table = zeromesh_testnet::cli(&["status", "--node", &api]).expect("status");
    assert!(
        table.contains("members:") && table.lines().filter(|line| line.contains(" voter ")).count() == 3,
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&zeromesh_testnet::cli(&["status", "--json", "--node", &api]).unwrap()).unwrap();
    assert_eq!(json["cluster"]["members"].as_array().map(Vec::len), Some(3), "{json}");
    for member in json["cluster"]["members"].as_array().unwrap() {
        assert!(member["api_addr"].as_str().is_some_and(|api| api.starts_with("ws://127.0.0.1:")), "{member}");
    }
    assert!(json["mesh"]["adverts"].is_array(), "{json}");
}

/// Concurrent writes through a follower travel to the leader together, each
/// answered with its own outcome; concurrent linearizable reads share their
/// requests for the leader's read index and still see every write
/// acknowledged before they began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_and_reads_through_a_follower_share_requests_to_the_leader() {
    let _serial = serial().await;
    let testnet = three_voters().await;
    let leader = testnet.leader(WAIT).await.expect("a leader");
    let follower = (leader + 1) % 3;
    put(&testnet, leader, "agent-f/cas", "first").await.expect("the first version");
    const CLIENTS: usize = 48;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(testnet.client(follower).await.expect("a connection to the follower"));
    }
    let net = &testnet;
    let metric = move |name: &'static str| async move { net.metric(follower, name).await.unwrap_or(0) };
    // Up to ten bursts, until one had its writes and its reads grouped.
    let mut grouped = (false, false);
    for burst in 0..10 {
        let (writes_before, write_requests_before) =
            (metric("zeromesh_forwarded_writes_total").await, metric("zeromesh_forwarded_write_requests_total").await);
        let calls = clients.iter_mut().enumerate().map(|(client, connection)| async move {
            let answer = if client == 0 {
                // A compare-and-set that must fail, grouped with writes that must not.
                connection
                    .call_tool("memory_cas", json!({ "path": "agent-f/cas", "expected_version": 99, "value": "x" }))
            } else {
                let path = format!("agent-f/b{burst}/c{client}");
                connection.call_tool("memory_put", json!({ "path": path, "value": format!("{burst}-{client}") }))
            };
            answer.await.expect("each write is answered")
        });
        let answers = futures::future::join_all(calls).await;
        assert_eq!(answers[0]["outcome"], "version_mismatch", "{}", answers[0]);
        assert_eq!(answers[0]["current_version"], 1, "{}", answers[0]);
        for answer in &answers[1..] {
            assert_eq!(answer["outcome"], "written", "{answer}");
        }
        let (writes, write_requests) =
            (metric("zeromesh_forwarded_writes_total").await, metric("zeromesh_forwarded_write_requests_total").await);
        assert_eq!(writes - writes_before, CLIENTS as u64, "every write was forwarded once");
        grouped.0 |= write_requests - write_requests_before < CLIENTS as u64;

        let (reads_before, read_requests_before) = (
            metric("zeromesh_forwarded_reads_total").await,
            metric("zeromesh_forwarded_read_index_requests_total").await,
        );
        let reads = clients.iter_mut().enumerate().skip(1).map(|(client, connection)| async move {
            let path = format!("agent-f/b{burst}/c{client}");
            let answer = connection
                .call_tool("memory_get", json!({ "path": path, "consistency": "linearizable" }))
                .await
                .expect("each read is answered");
            assert_eq!(answer["record"]["value"], format!("{burst}-{client}"), "{answer}");
        });
        futures::future::join_all(reads).await;
        let (reads, read_requests) = (
            metric("zeromesh_forwarded_reads_total").await,
            metric("zeromesh_forwarded_read_index_requests_total").await,
        );
        assert_eq!(reads - reads_before, CLIENTS as u64 - 1, "every read asked the leader");
        grouped.1 |= read_requests - read_requests_before < CLIENTS as u64 - 1;
        if grouped == (true, true) {
            break;
        }
    }
    assert_eq!(grouped, (true, true), "(writes, reads) grouped in one of ten bursts of {CLIENTS}");
}

/// Raft's messages, forwarded writes and read-index requests travel on one
/// long-lived link per peer, not on a stream of their own each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_and_forwarded_messages_ride_one_long_lived_link_per_peer() {
    let _serial = serial().await;
    let testnet = three_voters().await;
    let leader = testnet.leader(WAIT).await.expect("a leader");
    let follower = (leader + 1) % 3;
    const WRITES: u64 = 40;
    let before = testnet.metric(follower, "zeromesh_mesh_link_requests_total").await.unwrap_or(0);
    let leader_before = testnet.metric(leader, "zeromesh_mesh_link_requests_total").await.unwrap_or(0);
    let mut client = testnet.client(follower).await.expect("a connection to the follower");
    for write in 0..WRITES {
        let answer = client
            .call_tool("memory_put", json!({ "path": format!("agent-l/w{write}"), "value": "v" }))
            .await
            .expect("a write through the follower");
        assert_eq!(answer["outcome"], "written", "{answer}");
        let read = client
            .call_tool("memory_get", json!({ "path": format!("agent-l/w{write}"), "consistency": "linearizable" }))
            .await
            .expect("a linearizable read on the follower");
        assert_eq!(read["record"]["value"], "v", "{read}");
    }
    let metric = |node: usize, name: &'static str| {
        let net = &testnet;
        async move { net.metric(node, name).await.unwrap_or(0) }
    };
    // Each write and each read's read index went to the leader on the
    // follower's link; the leader replicated each write on its links.
    let sent = metric(follower, "zeromesh_mesh_link_requests_total").await - before;
    assert!(sent >= 2 * WRITES - 2, "{sent} requests on the follower's links for {WRITES} writes and reads");
    let replicated = metric(leader, "zeromesh_mesh_link_requests_total").await - leader_before;
    assert!(replicated >= 2 * WRITES, "{replicated} requests on the leader's links for {WRITES} writes to 2 followers");
    // One link per peer, not one stream per message.
    for node in [leader, follower] {
        let opened = metric(node, "zeromesh_mesh_links_opened_total").await;
        assert!((1..=8).contains(&opened), "node {node} opened {opened} links to its 2 peers\n{}", testnet.logs());
    }
}

/// A node that does not serve links (as one of a release before them, in a
/// rolling upgrade) is still replicated to and still forwards writes: its
/// peers fall back to the request-response protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_serve_links_is_sent_everything_on_the_request_response_protocol() {
    let _serial = serial().await;
    let testnet = three_voters().await;
    let leader = testnet.leader(WAIT).await.expect("a leader");
    let without_links = (leader + 1) % 3;
    // It closes the links the others opened to it and no longer offers the
    // protocol: as a node of a release before links, during a rolling upgrade.
    testnet.call(without_links, "mesh_refuse_links", json!({})).await.expect("the test switch");
    let served = || async { testnet.metric(without_links, "zeromesh_mesh_link_requests_served_total").await };
    let served_before = served().await.expect("the served counter");
    const WRITES: usize = 20;
    for write in 0..WRITES {
        put(&testnet, leader, &format!("agent-o/l{write}"), "v").await.expect("a write through the leader");
        let through = put(&testnet, without_links, &format!("agent-o/o{write}"), "v").await;
        through.expect("a write through the node without links");
    }
    // Raft reaches it on the request-response protocol: it holds every write.
    wait_until("the node without links to hold every write", WAIT, || async {
        (count_stale(&testnet, without_links, "agent-o/").await? == 2 * WRITES).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", testnet.logs()));
    // Each of the writes reached it; on a link, none but one or two in
    // flight as the switch turned.
    let served_after = served().await.expect("the served counter");
    assert!(served_after - served_before < 4, "{} requests reached it on links", served_after - served_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_writes_loses_no_acknowledged_write_and_it_rejoins_after_restart() {
    let _serial = serial().await;
    let mut testnet = three_voters().await;
    let old_leader = testnet.leader(WAIT).await.expect("a leader");
    let writer = (old_leader + 1) % 3;

    let mut client = testnet.client(writer).await.expect("connects");
    let mut acknowledged = Vec::new();
    for sequence in 0..200u32 {
        if sequence == 50 {
            testnet.kill9(old_leader).await.expect("kill -9");
        }
        let path = format!("agent-k/stream/{sequence:04}");
        // A write refused or unanswered around the crash is not acknowledged;
        // later writes go on once a new leader is elected.
        if client.call_tool("memory_put", json!({ "path": path, "value": sequence.to_string() })).await.is_ok() {
            acknowledged.push(path);
        }
    }
    assert!(
        acknowledged.len() >= 150,
        "writes resume under a new leader: {} of 200 acknowledged\n{}",
        acknowledged.len(),
        testnet.logs()
    );
    let new_leader = testnet.leader(WAIT).await.expect("a new leader");
    assert_ne!(new_leader, old_leader);
    for path in &acknowledged {
        assert!(get(&testnet, writer, path, "linearizable").await.is_some(), "acknowledged write {path} survived");
    }

    testnet.restart(old_leader).await.expect("the old leader restarts on its data");
    let expected = acknowledged.len();
    wait_until("the old leader to catch up", WAIT, || async {
        (count_stale(&testnet, old_leader, "agent-k/").await? == expected).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", testnet.logs()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_fourth_node_catches_up_ten_thousand_entries_by_snapshot() {
    let _serial = serial().await;
    let options = TestnetOptions { args: vec!["--snapshot-every-entries".into(), "1000".into()], ..Default::default() };
    let mut testnet = Testnet::start(3, options).await.expect("a 3-node testnet starts");
    testnet.wait_for_cluster("three voters", WAIT, |status| voters(status).len() == 3).await.expect("three voters");

    // Enough writers at once that their writes share Raft entries.
    const WRITERS: usize = 16;
    const ENTRIES: usize = 10_000;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let mut client = testnet.client(writer % 3).await.expect("connects");
        tasks.push(tokio::spawn(async move {
            for sequence in (writer..ENTRIES).step_by(WRITERS) {
                let arguments = json!({ "path": format!("agent-s/entry/{sequence:05}"), "value": "x".repeat(64) });
                client.call_tool("memory_put", arguments).await.expect("every write is acknowledged");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer finished");
    }

    let late = testnet.add_node().await.expect("the fourth node starts");
    wait_until("the late node to hold all 10,000 memories", Duration::from_secs(120), || async {
        (count_stale(&testnet, late, "agent-s/").await? == ENTRIES).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", testnet.logs()));
    let status = testnet.status(late).await.expect("status");
    let own = status["members"]
        .as_array()
        .and_then(|members| members.iter().find(|member| member["node_id"] == status["node_id"]).cloned());
    let snapshot_index = own.and_then(|member| member["snapshot_index"].as_u64());
    assert!(snapshot_index.is_some_and(|index| index >= 1000), "the late node installed a snapshot: {status}");
    assert_eq!(voters(&status).len(), 3, "a fourth node stays a non-voter: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_wrong_join_token_is_refused() {
    let _serial = serial().await;
    let mut testnet = Testnet::start(1, TestnetOptions::default()).await.expect("a 1-node testnet starts");
    let intruder = testnet.add_node_with(&["--join-token", "not-the-token"]).await.expect("the process starts");
    let (status, log) = testnet.wait_exit(intruder, WAIT).await.expect("the refused node exits");
    assert!(!status.success(), "a refused node exits with an error");
    assert!(log.contains("wrong join token"), "the reason is given: {log}");
    let cluster = testnet.status(0).await.expect("status");
    assert_eq!(cluster["members"].as_array().map(Vec::len), Some(1), "nothing changed: {cluster}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_cannot_commit_and_catches_up_after_healing() {
    let _serial = serial().await;
    let testnet = three_voters().await;
    let isolated = testnet.leader(WAIT).await.expect("a leader");
    let majority: Vec<usize> = (0..3).filter(|index| *index != isolated).collect();
    testnet.isolate(isolated).await.expect("isolates");

    // Proposed on the cut-off leader, it did not commit in time: the answer
    // says the outcome is unknown (here it will in fact never commit).
    let refused = put(&testnet, isolated, "agent-p/minority", "must not commit").await;
    assert!(matches!(refused, Err(ClientError::OutcomeUnknown(_))), "the minority cannot commit: {refused:?}");
    put(&testnet, majority[0], "agent-p/majority", "committed")
        .await
        .expect("the majority elects a leader and commits");

    testnet.heal().await.expect("heals");
    wait_until("the healed node to catch up", WAIT, || async {
        get(&testnet, isolated, "agent-p/majority", "stale").await.filter(|value| value == "committed").map(drop)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", testnet.logs()));
    for index in 0..3 {
        assert_eq!(
            get(&testnet, index, "agent-p/minority", "linearizable").await,
            None,
            "node {index}: the minority's write never committed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advert_published_by_one_node_reaches_every_node() {
    let _serial = serial().await;
    let options = TestnetOptions { args: vec!["--advert-interval-ms".into(), "500".into()], ..Default::default() };
    let testnet = Testnet::start(3, options).await.expect("a 3-node testnet starts");
    let peers: Vec<String> = testnet.nodes.iter().map(|node| node.address.peer_id.clone()).collect();
    for index in 0..3 {
        let answer = wait_until("every advert", WAIT, || async {
            let answer = testnet.call(index, "mesh_peers", json!({})).await.ok()?;
            let seen: Vec<&str> =
                answer["adverts"].as_array()?.iter().filter_map(|advert| advert["peer_id"].as_str()).collect();
            peers.iter().all(|peer| seen.contains(&peer.as_str())).then_some(answer)
        })
        .await
        .unwrap_or_else(|error| panic!("node {index}: {error}\n{}", testnet.logs()));
        let own = answer["adverts"]
            .as_array()
            .and_then(|adverts| adverts.iter().find(|advert| advert["peer_id"] == json!(peers[index])).cloned());
        assert!(own.is_some_and(|advert| advert["api_addr"] == json!(testnet.nodes[index].address.api)), "{answer}");
        assert_eq!(answer["adverts_rejected"], json!(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_voter_is_replaced_by_a_caught_up_non_voter_and_removed_when_it_stays_away() {
    let _serial = serial().await;
    let args = ["--voter-timeout-ms", "2000", "--member-remove-after-ms", "4000"].map(String::from).to_vec();
    let options = TestnetOptions { args, ..Default::default() };
    let mut testnet = Testnet::start(4, options).await.expect("a 4-node testnet starts");
    testnet.wait_for_cluster("three voters", WAIT, |status| voters(status).len() == 3).await.expect("three voters");
    let leader = testnet.leader(WAIT).await.expect("a leader");
    let status = testnet.status(leader).await.expect("status");
    let voter_ids = voters(&status);
    let victim = (0..4)
        .find(|index| *index != leader && voter_ids.contains(&testnet.nodes[*index].address.node_id))
        .expect("a voter other than the leader");
    let victim_id = testnet.nodes[victim].address.node_id;
    testnet.kill9(victim).await.expect("kill -9");
    testnet
        .wait_for_cluster("the dead voter to be replaced", WAIT, |status| {
            let ids = voters(status);
            ids.len() == 3 && !ids.contains(&victim_id)
        })
        .await
        .expect("a non-voter takes the dead voter's place");
    put(&testnet, leader, "agent-r/after", "still writable").await.expect("the cluster still commits");
    // Kept as a non-voter a while, in case it returns; then removed.
    let members = |status: &Value| -> Vec<u64> {
        status["members"].as_array().into_iter().flatten().filter_map(|m| m["node_id"].as_u64()).collect()
    };
    testnet
        .wait_for_cluster("the dead member to be removed", WAIT, |status| {
            let gone = |ids: &Value| !ids.as_array().into_iter().flatten().any(|id| id.as_u64() == Some(victim_id));
            members(status).len() == 3 && !members(status).contains(&victim_id) && gone(&status["non_voters"])
        })
        .await
        .expect("a member silent past member_remove_after_ms is removed");
    put(&testnet, leader, "agent-r/later", "still writable").await.expect("the cluster still commits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_rpc_errors_and_the_connection_stays_usable() {
    let _serial = serial().await;
    let testnet = Testnet::start(1, TestnetOptions::default()).await.expect("a 1-node testnet starts");
    let mut client = testnet.client(0).await.expect("connects");
    assert_eq!(client.server["protocolVersion"], json!("2025-11-25"));
    let cases = [
        ("{not json".to_owned(), -32700),
        ("[1,2]".to_owned(), -32600),
        (json!({ "jsonrpc": "2.0", "id": 1, "method": "no/such" }).to_string(), -32601),
        (json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": { "name": "no_such_tool" } }).to_string(), -32602),
        (json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": { "name": "memory_put", "arguments": { "path": "a/../b", "value": "x" } } }).to_string(), -32602),
        (json!({ "jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": { "name": "memory_get", "arguments": { "path": 7 } } }).to_string(), -32602),
    ];
    for (text, code) in cases {
        let answer = client.raw(text.clone()).await.expect("an answer");
        assert_eq!(answer["error"]["code"], json!(code), "{text} -> {answer}");
    }
    let over_limit = put(&testnet, 0, "agent-x/big", &"x".repeat(MAX_VALUE_BYTES + 1)).await;
    assert!(over_limit.is_err(), "an over-limit value is refused");
    let tools = client.request("tools/list", json!({})).await.expect("tools/list still works");
    let names: Vec<&str> =
        tools["tools"].as_array().expect("tools").iter().filter_map(|tool| tool["name"].as_str()).collect();
    for expected in [
        "memory_put",
        "memory_get",
        "memory_list",
        "memory_history",
        "memory_delete",
        "memory_cas",
        "cluster_status",
        "mesh_peers",
    ] {
        assert!(names.contains(&expected), "{expected} is listed: {names:?}");
    }
    client
        .call_tool("memory_put", json!({ "path": "agent-x/ok", "value": "fine" }))
        .await
        .expect("the connection still serves");

    let mut flooder = testnet.client(0).await.expect("connects");
    // The node stops reading at the frame header, answers with an error and
    // closes; the client may still be writing the payload and see the close first.
    match flooder.raw("x".repeat(MAX_API_MESSAGE_BYTES + 1)).await {
        Ok(answer) => assert_eq!(answer["error"]["code"], json!(-32600), "{answer}"),
        Err(error) => assert!(matches!(error, ClientError::Transport(_)), "{error}"),
    }
    assert!(flooder.request("ping", json!({})).await.is_err(), "an over-limit message closes its connection");
    client.request("ping", json!({})).await.expect("other connections are unharmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_writes_reads_and_shows_status_through_the_api() {
    let _serial = serial().await;
    let testnet = Testnet::start(2, TestnetOptions::default()).await.expect("a 2-node testnet starts");
    let binary = zeromesh_testnet::zeromesh_binary().expect("the zeromesh binary");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(&binary).args(args).output().expect("runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (first, second) = (testnet.nodes[0].address.api.as_str(), testnet.nodes[1].address.api.as_str());

    let (ok, out) = run(&["memory", "put", "agent-7/notes/today", "met the client", "--node", second]);
    assert!(ok && out.contains("version 1"), "{out}");
    let (ok, out) = run(&["memory", "get", "agent-7/notes/today", "--node", first]);
    assert!(ok && out.contains("met the client"), "{out}");
    let (ok, out) = run(&["memory", "ls", "agent-7/", "--node", first]);
    assert!(ok && out.contains("agent-7/notes/today"), "{out}");
    let (ok, out) = run(&["memory", "rm", "agent-7/notes/today", "--node", first]);
    assert!(ok && out.contains("deleted"), "{out}");
    let (ok, out) = run(&["memory", "history", "agent-7/notes/today", "--node", second]);
    assert!(ok && out.contains("(deleted)") && out.contains("met the client"), "{out}");
    let (ok, out) = run(&["memory", "get", "agent-7/notes/today", "--node", first]);
    assert!(!ok && out.contains("not found"), "{out}");

    let (ok, out) = run(&["status", "--node", first, "--wait-members", "2"]);
    assert!(ok, "{out}");
    for node in &testnet.nodes {
        assert!(out.contains(&node.address.node_id.to_string()) && out.contains(&node.address.peer_id), "{out}");
    }
    assert!(out.contains("leader") && out.contains("voters"), "{out}");
    let (ok, out) = run(&["status", "--node", first, "--wait-members", "3", "--wait-timeout", "1"]);
    assert!(!ok && out.contains("did not reach 3 members within 1s (last seen: 2 members, 2 voters)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_completes_its_handshake_is_dropped() {
    use tokio::io::AsyncReadExt;
    let _serial = serial().await;
    let testnet = Testnet::start(1, TestnetOptions::default()).await.expect("a 1-node testnet starts");
    let address = testnet.nodes[0].address.api.trim_start_matches("ws://").to_owned();
    let mut silent = tokio::net::TcpStream::connect(&address).await.expect("connects");
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(WAIT, silent.read(&mut buffer)).await.expect("the node closes a silent socket");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, not answered: {read:?}");
    testnet.call(0, "cluster_status", json!({})).await.expect("the node still serves others");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_the_cluster_can_neither_write_read_nor_propose_through_the_mesh() {
    use zeromesh::mesh::messages::{MeshError, MeshRequest, MeshResponse};
    use zeromesh::mesh::{peer_of, MeshConfig, MeshHandle};
    use zeromesh_protocol::memory::{MemoryBatch, MemoryCommand, MemoryPath, MemoryValue};

    let _serial = serial().await;
    let testnet =
        Testnet::start(3, TestnetOptions { auth: true, ..Default::default() }).await.expect("a testnet starts");
    let leader = testnet.leader(WAIT).await.unwrap();
    // A peer that speaks the mesh's protocol but never joined: it answers
    // nothing itself (its inbound side has no cluster).
    let dir = tempfile::tempdir().unwrap();
    let config = MeshConfig {
        keypair: zeromesh::identity::generate(&dir.path().join("node.key")).unwrap(),
        private_mesh_key: None,
        listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        bootstrap: Vec::new(),
        advert_ttl: Duration::from_secs(30),
    };
    let outsider = MeshHandle::start(config, std::sync::Arc::new(zeromesh::cluster::Inbound::default())).await.unwrap();
    let put = || {
        let path = MemoryPath::parse("outsider/notes/x").unwrap();
        let value = MemoryValue { value: b"planted".to_vec(), content_type: "text/plain".into(), tags: Vec::new() };
        MemoryBatch { commands: vec![MemoryCommand::Put { path, value }] }
    };
    let requests = || {
        [
            ("forwarded writes", MeshRequest::Writes(vec![put()])),
            ("a read-index request", MeshRequest::ReadIndex),
            ("a proposal", MeshRequest::Propose(zeromesh_protocol::Command::Memory(put()))),
            ("a module fetch", MeshRequest::FetchPluginModule { sha256: [0; 32] }),
        ]
    };
    for index in [leader, (leader + 1) % 3] {
        let address = testnet.nodes[index].address.p2p.parse().unwrap();
        let peer = peer_of(&address).expect("the address names its peer");
        for (what, request) in requests() {
            let answer = outsider.request(peer, vec![address.clone()], request, WAIT).await.expect("an answer");
            match answer {
                MeshResponse::Refused(MeshError::Refused(reason)) => {
                    assert!(reason.contains("is not a member of this node's cluster"), "{what}: {reason}")
                }
                other => panic!("{what} from a peer outside the cluster was answered {other:?}"),
            }
        }
        // Asking for status stays open: joiners and monitors use it.
        let status = outsider.request(peer, vec![address], MeshRequest::Status, WAIT).await.unwrap();
        assert!(matches!(status, MeshResponse::Status(_)), "{status:?}");
    }
    assert_eq!(get(&testnet, 0, "outsider/notes/x", "linearizable").await, None, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_to_a_leader_that_cannot_commit_answers_that_its_outcome_is_unknown() {
    let _serial = serial().await;
    let options = TestnetOptions { args: ["--voter-count", "2"].map(String::from).to_vec(), ..Default::default() };
    let testnet = Testnet::start(3, options).await.expect("a testnet starts");
    testnet.wait_for_cluster("two voters", WAIT, |status| voters(status).len() == 2).await.expect("two voters");
    let leader = testnet.leader(WAIT).await.unwrap();
    let status = testnet.status(leader).await.unwrap();
    let ids: Vec<u64> = testnet.nodes.iter().map(|node| node.address.node_id).collect();
    let voter_ids = voters(&status);
    let other_voter = (0..3).find(|i| *i != leader && voter_ids.contains(&ids[*i])).expect("a second voter");
    let follower = (0..3).find(|i| !voter_ids.contains(&ids[*i])).expect("a non-voter");

    // The other voter is paused: the leader keeps leading (the follower
    // still hears it) but cannot commit. A write through the follower goes
    // to the leader, which proposes it and then cannot say.
    testnet.pause(other_voter).unwrap();
    let answer = put(&testnet, follower, "agent-u/notes/x", "maybe").await;
    testnet.resume(other_voter).unwrap();
    match &answer {
        Err(ClientError::OutcomeUnknown(message)) => {
            assert!(
                message.contains("the outcome is unknown") && message.contains("the leader proposed it"),
                "{message}"
            )
        }
        other => panic!("a write the leader proposed but could not commit was answered {other:?}"),
    }
    // The command line says so too, with its own exit status. First the
    // cluster commits again: the resumed voter may have called an election
    // while it was paused, and pausing it in the middle of one would leave
    // no leader at all rather than one that cannot commit.
    wait_until("a write to commit after the voter is back", WAIT, || async {
        put(&testnet, follower, "agent-u/notes/w", "committed").await.ok()
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", testnet.logs()));
    let leader = testnet.leader(WAIT).await.unwrap();
    let other_voter = (0..3).find(|i| *i != leader && *i != follower).expect("the other voter");
    testnet.pause(other_voter).unwrap();
    let api = testnet.nodes[follower].address.api.clone();
    let output = std::process::Command::new(zeromesh_testnet::zeromesh_binary().unwrap())
        .args(["memory", "put", "agent-u/notes/y", "maybe", "--node", &api])
        .output()
        .unwrap();
    testnet.resume(other_voter).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("the outcome is unknown"), "{stderr}");

    // Once the voter is back, the cluster commits again.
    wait_until("a write to commit after the voter is back", WAIT, || async {
        put(&testnet, follower, "agent-u/notes/z", "committed").await.ok()
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", testnet.logs()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_on_other_ports_is_found_at_its_new_addresses() {
    let _serial = serial().await;
    let mut testnet = three_voters().await;
    let leader = testnet.leader(WAIT).await.expect("a leader");
    let moved = (leader + 1) % 3;
    let before = testnet.nodes[moved].address.clone();
    testnet.restart_elsewhere(moved).await.expect("restarts on new ports");
    let after = testnet.nodes[moved].address.clone();
    assert!(after.p2p != before.p2p && after.api != before.api, "{before:?} -> {after:?}");

    // Every node's membership holds the new addresses.
    testnet
        .wait_for_cluster("the membership to hold the moved member's new addresses", WAIT, |status| {
            status["members"].as_array().into_iter().flatten().any(|member| {
                member["node_id"] == json!(after.node_id)
                    && member["p2p_addr"] == json!(after.p2p)
                    && member["api_addr"] == json!(after.api)
            })
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", testnet.logs()));
    // It is replicated to and writes through it commit.
    put(&testnet, leader, "agent-m/notes/after-move", "here").await.expect("a write through the leader");
    wait_until("the moved member to apply the write", WAIT, || async {
        get(&testnet, moved, "agent-m/notes/after-move", "stale").await.filter(|value| value == "here")
    })
    .await
    .expect("the moved member is replicated to");
    put(&testnet, moved, "agent-m/notes/from-moved", "ok").await.expect("a write through the moved member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_log_format_json_every_log_line_is_an_object_naming_the_node_and_the_request() {
    let _serial = serial().await;
    let options = TestnetOptions {
        args: vec!["--log-format".into(), "json".into()],
        env: vec![("ZEROMESH_LOG".into(), "warn,zeromesh::api=debug".into())],
        ..Default::default()
    };
    let testnet = Testnet::start(1, options).await.expect("a node starts");
    put(&testnet, 0, "log/x", "1").await.unwrap();
    let node_id = testnet.nodes[0].address.node_id;
    let log = wait_until("the call's log line", WAIT, || async {
        let log = std::fs::read_to_string(testnet.nodes[0].data_dir.join("node.log")).ok()?;
        log.contains("tools/call").then_some(log)
    })
    .await
    .unwrap();
    let lines: Vec<Value> =
        log.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"))).collect();
    assert!(lines.iter().all(|line| line["node_id"] == node_id), "every line names node {node_id}: {log}");
    let call = lines.iter().find(|line| line["span"]["method"] == "tools/call").expect("a line inside the call");
    assert!(call["span"]["id"].as_str().is_some_and(|id| !id.is_empty()), "{call}");
    assert!(call["span"]["term"].as_u64().is_some_and(|term| term >= 1), "{call}");
    assert!(call["timestamp"].is_string() && call["level"] == "DEBUG", "{call}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_cluster_grows_a_second_voter_once_its_voter_count_is_raised() {
    let _serial = serial().await;
    let options = TestnetOptions { args: vec!["--voter-count".into(), "1".into()], auth: true, ..Default::default() };
    let mut testnet = Testnet::start(1, options).await.expect("a single node starts");
    let admin = testnet.admin_token.clone().expect("the admin token");
    put(&testnet, 0, "solo/a", "1").await.expect("a single node commits alone");
    assert_eq!(testnet.status(0).await.unwrap()["voter_count"], 1);

    // A second node joins as a non-voter: the cluster keeps one voter.
    let second = testnet.add_node().await.unwrap();
    testnet
        .wait_for_cluster("two members, one voter", WAIT, |status| {
            status["members"].as_array().is_some_and(|members| members.len() == 2) && voters(status).len() == 1
        })
        .await
        .unwrap();
    // The voter count is the cluster's, replicated: the joiner reads the founder's.
    assert_eq!(testnet.status(second).await.unwrap()["voter_count"], 1);

    let first = testnet.nodes[0].address.api.clone();
    let raised = zeromesh_testnet::cli_as(Some(&admin), &["set-voters", "2", "--node", &first]).unwrap();
    assert!(raised.contains("the cluster keeps 2 voters"), "{raised}");
    testnet
        .wait_for_cluster("two voters", WAIT, |status| voters(status).len() == 2 && status["voter_count"] == 2)
        .await
        .unwrap();
    let refused = zeromesh_testnet::cli_as(Some(&admin), &["set-voters", "9", "--node", &first]).unwrap_err();
    assert!(format!("{refused:#}").contains("1 to 7"), "{refused:#}");
    put(&testnet, second, "solo/b", "2").await.expect("a write through the new voter");
}
