//! Federated MCP servers on real node processes with authentication, set up
//! through the command line: a stdio server written with the official
//! Python SDK, registered to run on node 1, is callable from node 3 (as an
//! admin, also through the official Python SDK as a client in both protocol
//! eras, and as an agent under an agreement, with the host's receipt);
//! its process killed, every node stops offering it within the configured
//! time, and it comes back on its own; with a second host, calls fail
//! over (its server down, or the host itself killed); two hosts whose server gives a tool different schemas are
//! reported; no process outlives its node (killed or stopped) or its
//! registration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use zeromesh_protocol::limits::{MAX_OFFLOAD_SENT_IN_FLIGHT, MAX_OFFLOAD_SERVED_IN_FLIGHT};
use zeromesh_testnet::parties::Parties;
use zeromesh_testnet::{cli_as, connect_when_known, http_request, run_within, wait_until, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);
/// The health settings the servers are registered with: a check every
/// 300 ms, unhealthy after 2 failed in a row.
const HEALTH_INTERVAL_MS: u64 = 300;
const UNHEALTHY_AFTER: u64 = 2;
/// What an unhealthy host may take to reach every node: its next advert
/// (published at once) through gossip, and this test's polling.
const PROPAGATION: Duration = Duration::from_secs(5);

/// The Python with the official MCP SDK 2.x (scripts/mcp-clients.sh).
fn python() -> String {
    std::env::var("ZEROMESH_MCP_PYTHON2")
        .expect("ZEROMESH_MCP_PYTHON2 names a Python with the MCP SDK 2.x: run through scripts/test.sh")
}

fn fixture() -> String {
    let path = zeromesh_testnet::package_dir().join("fixtures/notes_server.py");
    path.to_str().unwrap().to_owned()
}

/// Calls `tool` on node `index` with the official Python SDK 2.x as a
/// client, in the 2026-07-28 era and in the handshake era, and checks that
/// its text is `expected` (`tests/clients/python_federated_call.py`).
async fn sdk_client_calls(testnet: &Testnet, index: usize, tool: &str, arguments: Value, expected: &str) {
    let script = zeromesh_testnet::package_dir().join("tests/clients/python_federated_call.py");
    let url = format!("http://{}/mcp", testnet.nodes[index].address.api.trim_start_matches("ws://"));
    let token = testnet.admin_token.clone().unwrap();
    let mut command = tokio::process::Command::new(python());
    command.args([script.to_str().unwrap(), &url, &token, tool, &arguments.to_string(), expected]);
    let (succeeded, text) = run_within(command, WAIT).await.unwrap_or_else(|error| panic!("{error:#}"));
    assert!(succeeded && text.contains("client: ok"), "the Python client failed:\n{text}");
}

fn node_id(testnet: &Testnet, index: usize) -> String {
    testnet.nodes[index].address.node_id.to_string()
}

/// The folder node `index` runs federated server `name` in.
fn server_folder(testnet: &Testnet, index: usize, name: &str) -> PathBuf {
    testnet.nodes[index].data_dir.join("federation").join(name)
}

/// Processes running the fixture whose working folder is under `dir`.
fn fixture_processes_under(dir: &Path) -> Vec<u32> {
    let fixture = fixture();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if !String::from_utf8_lossy(&cmdline).contains(&fixture) {
            continue;
        }
        if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir)) {
            found.push(pid);
        }
    }
    found
}

/// Registers the fixture as `name` on the nodes `hosts` through node
/// `through`, and waits for a host to serve it.
fn register(testnet: &Testnet, through: usize, name: &str, hosts: &[usize]) -> String {
    register_with(testnet, through, name, hosts, HEALTH_INTERVAL_MS, 10_000)
}

/// [`register`] with other health check interval and call timeout.
fn register_with(
    testnet: &Testnet,
    through: usize,
    name: &str,
    hosts: &[usize],
    health_interval_ms: u64,
    call_timeout_ms: u64,
) -> String {
    let token = testnet.admin_token.clone().unwrap();
    let interval = health_interval_ms.to_string();
    let call_timeout = call_timeout_ms.to_string();
    let unhealthy_after = UNHEALTHY_AFTER.to_string();
    let host_ids: Vec<String> = hosts.iter().map(|index| node_id(testnet, *index)).collect();
    let mut args = vec!["server", "register", name, "--node", &testnet.nodes[through].address.api];
    for id in &host_ids {
        args.extend(["--host-node", id]);
    }
    args.extend([
        "--env",
        "NOTES_HOST=mesh",
        "--secret",
        "NOTES_SECRET=env:NOTES_TEST_SECRET",
        "--health-interval-ms",
        &interval,
        "--health-timeout-ms",
        "250",
        "--unhealthy-after",
        &unhealthy_after,
        "--call-timeout-ms",
        &call_timeout,
        "--max-memory-mb",
        "2048",
        "--wait",
        "60",
    ]);
    let (python, fixture) = (python(), fixture());
    args.extend(["--", &python, &fixture]);
    cli_as(Some(&token), &args).unwrap_or_else(|error| panic!("{error:#}"))
}

/// The whole result of calling `tool` on node `index` as the admin.
async fn call(testnet: &Testnet, index: usize, tool: &str, arguments: Value) -> Value {
    let mut client = testnet.client(index).await.unwrap();
    client.request("tools/call", json!({ "name": tool, "arguments": arguments })).await.unwrap()
}

fn text_of(result: &Value) -> String {
    result["content"][0]["text"].as_str().unwrap_or_default().to_owned()
}

/// Whether node `index` lists tool `name`.
async fn lists(testnet: &Testnet, index: usize, name: &str) -> Option<Value> {
    let tools = testnet.client(index).await.ok()?.request("tools/list", json!({})).await.ok()?;
    tools["tools"].as_array()?.iter().find(|tool| tool["name"] == name).cloned()
}

/// Server `name` as node `index`'s `server_list` shows it.
async fn listed_server(testnet: &Testnet, index: usize, name: &str) -> Option<Value> {
    let list = match testnet.call(index, "server_list", json!({})).await {
        Ok(list) => list,
        Err(error) => {
            eprintln!("server_list on node {index}: {error}");
            return None;
        }
    };
    list["servers"].as_array()?.iter().find(|server| server["name"] == name).cloned()
}

/// A call of `server.lookup` on node `index` is refused, saying that no
/// host serves it.
async fn assert_no_host_serves(testnet: &Testnet, index: usize, server: &str) {
    let tool = format!("{server}.lookup");
    let mut client = testnet.client(index).await.unwrap();
    let refused = client.request("tools/call", json!({ "name": tool, "arguments": { "key": "k" } })).await;
    let refused = refused.expect_err("no host serves it").to_string();
    assert!(refused.contains(&format!("no host of federated server {server} serves tool {tool:?} now")), "{refused}");
}

/// Whether node `index` sees host `host` serving server `name`.
async fn sees_serving(testnet: &Testnet, index: usize, name: &str, host: &str) -> Option<bool> {
    let server = listed_server(testnet, index, name).await?;
    let running = server["running"].as_array()?;
    Some(running.iter().any(|entry| entry["nodeId"] == host && entry["serving"] == true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federated_server_is_served_from_every_node_supervised_and_leaves_no_process() {
    let options = TestnetOptions {
        auth: true,
        env: vec![("NOTES_TEST_SECRET".into(), "s3cret-value".into())],
        ..Default::default()
    };
    let mut testnet = Testnet::start(3, options).await.expect("a testnet starts");

    // Registered through node 2 to run on node 0; called from node 2.
    let registered = register(&testnet, 2, "notes", &[0]);
    assert!(registered.contains("server notes registered") && registered.contains("notes.lookup"), "{registered}");
    let listed = wait_until("node 2 to list notes.lookup", WAIT, || lists(&testnet, 2, "notes.lookup")).await.unwrap();
    assert_eq!(listed["inputSchema"]["properties"]["key"]["type"], "string", "{listed}");
    assert!(listed["title"].as_str().unwrap().contains("(notes)"), "{listed}");
    let result = call(&testnet, 2, "notes.lookup", json!({ "key": "k1" })).await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(text_of(&result), "note k1 from mesh", "{result}");
    sdk_client_calls(&testnet, 2, "notes.lookup", json!({ "key": "k1" }), "note k1 from mesh").await;
    let host = &result["_meta"]["zeromesh/host"];
    assert_eq!(host["nodeId"], node_id(&testnet, 0), "{result}");
    assert_eq!(host["offloaded"], true, "{result}");
    let receipt = &result["_meta"]["zeromesh/receipt"];
    assert_eq!(receipt["kind"], "federated", "{receipt}");
    assert_eq!((&receipt["plugin"], &receipt["tool"]), (&json!("notes"), &json!("lookup")));
    let server = listed_server(&testnet, 0, "notes").await.unwrap();
    let tool = server["tools"].as_array().unwrap().iter().find(|tool| tool["name"] == "notes.lookup").unwrap();
    assert_eq!(receipt["moduleSha256"], tool["definitionSha256"], "the receipt names the listed definition");
    // The process: its own folder, the secret from the host's environment,
    // none of the node's own variables; no secret value in the listing.
    let whoami = call(&testnet, 2, "notes.whoami", json!({})).await;
    let whoami: Value = serde_json::from_str(&text_of(&whoami)).unwrap_or_else(|_| panic!("{whoami}"));
    assert_eq!(whoami["secret_length"], "s3cret-value".len(), "{whoami}");
    assert_eq!(whoami["sees_node_token"], false, "{whoami}");
    assert_eq!(server["secrets"]["NOTES_SECRET"], "env:NOTES_TEST_SECRET", "{server}");
    assert!(!server.to_string().contains("s3cret-value"), "{server}");
    let pid = server["here"]["pid"].as_u64().unwrap() as u32;
    assert_eq!(fixture_processes_under(&server_folder(&testnet, 0, "notes")), [pid]);
    // The dashboard's feed shows it, with its serving host, on any node.
    let authorization = format!("Bearer {}", testnet.admin_token.clone().unwrap());
    let api = &testnet.nodes[2].address.api;
    let (status, body) =
        http_request(api, "GET", "/ui/state", &[("Authorization", &authorization)], b"").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let shown: Value = serde_json::from_str(&body).unwrap();
    let servers = shown["servers"].as_array().unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(servers.iter().map(|server| &server["name"]).collect::<Vec<_>>(), [&json!("notes")], "{shown}");
    let running = &servers[0]["running"];
    assert_eq!(running[0]["nodeId"], node_id(&testnet, 0), "{running}");
    assert_eq!(running[0]["serving"], true, "{running}");

    // Through the kernel: an agent's call under an agreement is checked,
    // reserved and settled, with the host's receipt.
    let parties = Parties::new(&testnet, "worker", &["notes.lookup"]);
    parties.create("notes-deal", "worker", "*", &["calls=100/lifetime"]);
    parties.sign_and_activate("notes-deal");
    let token = parties.agent_token("worker");
    let mut agent = connect_when_known(&parties.api[2], &token, WAIT).await.unwrap();
    let params = json!({ "name": "notes.lookup", "arguments": { "key": "k2" } });
    let result = agent.request("tools/call", params).await.unwrap();
    assert_eq!(text_of(&result), "note k2 from mesh", "{result}");
    let usage = &result["_meta"]["zeromesh/usage"];
    assert_eq!(usage["agreement"], "notes-deal", "{result}");
    assert_eq!(usage["used"]["calls"], 1, "{result}");
    assert_eq!(result["_meta"]["zeromesh/receipt"]["reservation"]["logIndex"], usage["logIndex"], "{result}");
    assert!(
        usage["used"]["wall_ms"].as_u64().unwrap() >= result["_meta"]["zeromesh/receipt"]["wallMs"].as_u64().unwrap(),
        "usage counts the remote time: {result}"
    );
    let params = json!({ "name": "notes.whoami", "arguments": {} });
    let refused = agent.request("tools/call", params).await;
    assert!(refused.is_err(), "the agent was not given notes.whoami: {refused:?}");

    // Killed, and kept down: every node stops offering it within the
    // configured time; calls fail saying why; it recovers by itself.
    std::fs::write(server_folder(&testnet, 0, "notes").join("down"), "").unwrap();
    let killed = std::time::Instant::now();
    kill_process(pid);
    let configured = Duration::from_millis(HEALTH_INTERVAL_MS * UNHEALTHY_AFTER) + PROPAGATION;
    for index in 0..3 {
        wait_until(&format!("node {index} to see notes unhealthy"), configured, || async {
            (sees_serving(&testnet, index, "notes", &node_id(&testnet, 0)).await == Some(false)).then_some(())
        })
        .await
        .unwrap();
    }
    eprintln!("notes seen unhealthy on every node {} ms after the kill", killed.elapsed().as_millis());
    wait_until("node 2 to stop listing notes.lookup", PROPAGATION, || async {
        lists(&testnet, 2, "notes.lookup").await.is_none().then_some(())
    })
    .await
    .unwrap();
    assert_no_host_serves(&testnet, 2, "notes").await;
    let here = listed_server(&testnet, 0, "notes").await.unwrap()["here"].clone();
    assert_eq!(here["serving"], false, "{here}");
    assert!(here["restarts"].as_u64().unwrap() >= 1, "its host keeps trying to start it: {here}");
    // Why, in the server's own words: its stderr, in the host's log (and
    // not in the API's answer, which any token may read).
    let reason = wait_until("the host to point at the server's stderr", WAIT, || async {
        let here = listed_server(&testnet, 0, "notes").await?["here"].clone();
        let health = here["health"].as_str()?.to_owned();
        health.contains("what it wrote to its stderr is in this node's log").then_some(health)
    })
    .await
    .unwrap();
    assert!(!reason.contains("told to stay down"), "{reason}");
    let log = std::fs::read_to_string(testnet.nodes[0].data_dir.join("node.log")).unwrap();
    let said = |what: &str| log.lines().any(|line| line.contains(what) && line.contains("notes: told to stay down"));
    assert!(said("zeromesh::federated_server"), "the host logs the server's stderr by default");
    assert!(said("federated server unhealthy"), "the host's log repeats the server's last words where it says why");
    std::fs::remove_file(server_folder(&testnet, 0, "notes").join("down")).unwrap();
    wait_until("notes to recover by itself", WAIT, || async {
        sees_serving(&testnet, 2, "notes", &node_id(&testnet, 0)).await.filter(|serving| *serving)
    })
    .await
    .unwrap();

    // A second host. Its server process killed (and kept down), calls go
    // to the other host; the first host killed outright, while node 2
    // still holds its last advert, a call tries it first (as it did before)
    // and fails over to the other, counted as "not run" there.
    register(&testnet, 1, "notes", &[0, 1]);
    for host in [0, 1] {
        wait_until(&format!("node 2 to see node {host} serving notes"), WAIT, || async {
            sees_serving(&testnet, 2, "notes", &node_id(&testnet, host)).await.filter(|serving| *serving)
        })
        .await
        .unwrap();
    }
    std::fs::write(server_folder(&testnet, 0, "notes").join("down"), "").unwrap();
    let pid = listed_server(&testnet, 0, "notes").await.unwrap()["here"]["pid"].as_u64().unwrap() as u32;
    kill_process(pid);
    // Once its host has seen it die (a call racing the kill itself may have
    // reached the dying process, and is then not made again).
    wait_until("node 0 to see its notes process die", WAIT, || async {
        let here = listed_server(&testnet, 0, "notes").await?["here"].clone();
        (here["pid"] != json!(pid) || here["serving"] == false).then_some(())
    })
    .await
    .unwrap();
    for attempt in 0..5 {
        let result = call(&testnet, 2, "notes.lookup", json!({ "key": format!("f{attempt}") })).await;
        assert_eq!(result["isError"], false, "{result}");
        assert_eq!(result["_meta"]["zeromesh/host"]["nodeId"], node_id(&testnet, 1), "{result}");
    }
    std::fs::remove_file(server_folder(&testnet, 0, "notes").join("down")).unwrap();
    wait_until("node 2 to see node 0 serving notes again", WAIT, || async {
        sees_serving(&testnet, 2, "notes", &node_id(&testnet, 0)).await.filter(|serving| *serving)
    })
    .await
    .unwrap();
    let first = call(&testnet, 2, "notes.lookup", json!({ "key": "first" })).await;
    let first = first["_meta"]["zeromesh/host"]["nodeId"].as_str().unwrap().to_owned();
    let (tried, other) = if first == node_id(&testnet, 0) { (0, 1) } else { (1, 0) };
    const NOT_RUN: &str = "zeromesh_offload_sent_total{outcome=\"not_run\"}";
    let not_run_before = testnet.metric(2, NOT_RUN).await.unwrap();
    testnet.kill9(tried).await.unwrap();
    let result = call(&testnet, 2, "notes.lookup", json!({ "key": "over" })).await;
    if result["isError"] == true {
        for index in 0..3 {
            eprintln!("=== node {index}\n{}", testnet.nodes[index].log_tail(60));
        }
    }
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(result["_meta"]["zeromesh/host"]["nodeId"], node_id(&testnet, other), "{result}");
    assert!(testnet.metric(2, NOT_RUN).await.unwrap() > not_run_before, "node {tried} was tried first");
    testnet.restart(tried).await.unwrap();

    // Two hosts whose local installations differ: the mismatch is reported
    // on every node, and calls go only to hosts with the listed definition.
    std::fs::create_dir_all(server_folder(&testnet, 1, "notes-v")).unwrap();
    std::fs::write(server_folder(&testnet, 1, "notes-v").join("variant"), "2").unwrap();
    register(&testnet, 2, "notes-v", &[0, 1]);
    let tool = wait_until("node 2 to report the schema mismatch", WAIT, || async {
        let server = listed_server(&testnet, 2, "notes-v").await?;
        let tool = server["tools"].as_array()?.iter().find(|tool| tool["name"] == "notes-v.lookup")?.clone();
        (tool["schemaMismatch"] == true).then_some(tool)
    })
    .await
    .unwrap();
    let agreeing: Vec<Value> = tool["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|host| host["definitionSha256"] == tool["definitionSha256"])
        .map(|host| host["nodeId"].clone())
        .collect();
    assert_eq!(agreeing.len(), 1, "{tool}");
    wait_until("node 2's metric to count the mismatch", WAIT, || async {
        (testnet.metric(2, "zeromesh_federation_schema_mismatches").await == Some(1)).then_some(())
    })
    .await
    .unwrap();
    for attempt in 0..4 {
        let result = call(&testnet, 2, "notes-v.lookup", json!({ "key": format!("v{attempt}") })).await;
        assert_eq!(result["isError"], false, "{result}");
        assert_eq!(result["_meta"]["zeromesh/host"]["nodeId"], agreeing[0], "{result}");
    }

    // A hung server (stopped, so its process is there and its health
    // checks, a minute apart, have not noticed): the call that times out
    // there fails (`lookup` may change things), and the next calls go to
    // the other host rather than wait on the hung one again.
    register_with(&testnet, 2, "notes-h", &[0, 1], 60_000, 1_000);
    for host in [0, 1] {
        wait_until(&format!("node 2 to see node {host} serving notes-h"), WAIT, || async {
            sees_serving(&testnet, 2, "notes-h", &node_id(&testnet, host)).await.filter(|serving| *serving)
        })
        .await
        .unwrap();
    }
    let first = call(&testnet, 2, "notes-h.lookup", json!({ "key": "h0" })).await;
    let hung = first["_meta"]["zeromesh/host"]["nodeId"].as_str().unwrap().to_owned();
    let (hung_index, other) = if hung == node_id(&testnet, 0) { (0, 1) } else { (1, 0) };
    let pid = listed_server(&testnet, hung_index, "notes-h").await.unwrap()["here"]["pid"].as_u64().unwrap() as u32;
    signal_process(pid, "STOP");
    let mut client = testnet.client(2).await.unwrap();
    let timed_out =
        client.request("tools/call", json!({ "name": "notes-h.lookup", "arguments": { "key": "h1" } })).await;
    let timed_out = timed_out.unwrap();
    assert_eq!(timed_out["isError"], true, "{timed_out}");
    assert_eq!(timed_out["_meta"]["zeromesh/error"], "outcome_unknown", "{timed_out}");
    assert!(text_of(&timed_out).contains("no answer within 1000 ms"), "{timed_out}");
    for attempt in 2..5 {
        let result = call(&testnet, 2, "notes-h.lookup", json!({ "key": format!("h{attempt}") })).await;
        assert_eq!(result["isError"], false, "{result}");
        assert_eq!(result["_meta"]["zeromesh/host"]["nodeId"], node_id(&testnet, other), "{result}");
    }
    signal_process(pid, "CONT");
    let api = testnet.nodes[2].address.api.clone();
    let out = cli_as(testnet.admin_token.as_deref(), &["server", "unregister", "notes-h", "--node", &api]).unwrap();
    assert!(out.contains("unregistered"), "{out}");

    // A node killed outright, then one stopped: neither leaves a process.
    testnet.kill9(1).await.unwrap();
    wait_until("node 1's servers to die with it", WAIT, || async {
        fixture_processes_under(&testnet.nodes[1].data_dir).is_empty().then_some(())
    })
    .await
    .unwrap();
    testnet.restart(1).await.unwrap();
    wait_until("node 1 to host its servers again", WAIT, || async {
        (testnet.metric(1, "zeromesh_federation_serving").await == Some(2)).then_some(())
    })
    .await
    .unwrap();
    let status = testnet.stop(1, WAIT).await.unwrap();
    assert!(status.success(), "{status}");
    assert!(fixture_processes_under(&testnet.nodes[1].data_dir).is_empty(), "a stopped node waits for its servers");
    testnet.restart(1).await.unwrap();

    // Unregistered: no process on any node, and no node lists the tools.
    let token = testnet.admin_token.clone().unwrap();
    for name in ["notes", "notes-v"] {
        let api = &testnet.nodes[2].address.api;
        let out = cli_as(Some(&token), &["server", "unregister", name, "--node", api]).unwrap();
        assert!(out.contains("unregistered"), "{out}");
    }
    for index in 0..3 {
        let dir = testnet.nodes[index].data_dir.clone();
        wait_until(&format!("node {index}'s server processes to stop"), WAIT, || async {
            fixture_processes_under(&dir).is_empty().then_some(())
        })
        .await
        .unwrap();
        wait_until(&format!("node {index} to stop listing notes.lookup"), WAIT, || async {
            lists(&testnet, index, "notes.lookup").await.is_none().then_some(())
        })
        .await
        .unwrap();
    }
    let out = cli_as(Some(&token), &["server", "list", "--node", &testnet.nodes[0].address.api]).unwrap();
    assert!(out.contains("no federated servers"), "{out}");
}

/// The fixture serving over Streamable HTTP on 127.0.0.1:`port`, killed
/// when dropped; returns once it accepts connections.
async fn start_http_fixture(port: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new(python())
        .args([fixture(), "http".into(), port.to_string()])
        .env("NOTES_HOST", "the-url")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the HTTP fixture starts");
    wait_until("the HTTP fixture to listen", WAIT, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
    })
    .await
    .unwrap();
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamable_http_server_is_reached_by_url_and_followed_through_its_restarts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = start_http_fixture(port).await;
    let testnet = Testnet::start(2, TestnetOptions { auth: true, ..Default::default() }).await.unwrap();
    let token = testnet.admin_token.clone().unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let host = node_id(&testnet, 0);
    let interval = HEALTH_INTERVAL_MS.to_string();
    let unhealthy_after = UNHEALTHY_AFTER.to_string();
    let api = testnet.nodes[1].address.api.clone();
    #[rustfmt::skip]
    let args = [
        "server", "register", "web", "--node", &api, "--url", &url, "--host-node", &host,
        "--health-interval-ms", &interval, "--health-timeout-ms", "250", "--unhealthy-after", &unhealthy_after,
        "--wait", "60",
    ];
    let registered = cli_as(Some(&token), &args).unwrap_or_else(|error| panic!("{error:#}"));
    assert!(registered.contains("server web registered") && registered.contains("web.lookup"), "{registered}");
    let listed = listed_server(&testnet, 1, "web").await.unwrap();
    assert_eq!(listed["transport"]["http"], url, "{listed}");

    // Called through node 1, served by node 0 from the URL.
    let result = call(&testnet, 1, "web.lookup", json!({ "key": "h1" })).await;
    assert_eq!(text_of(&result), "note h1 from the-url", "{result}");
    assert_eq!(result["_meta"]["zeromesh/host"]["nodeId"], host, "{result}");
    assert_eq!(result["_meta"]["zeromesh/receipt"]["kind"], "federated", "{result}");

    // More calls at once, each taking a while, than a node sends to its
    // peers and than a host runs for them: the rest wait for a slot, and
    // every one is made.
    const AT_ONCE: usize = MAX_OFFLOAD_SENT_IN_FLIGHT + MAX_OFFLOAD_SERVED_IN_FLIGHT;
    let mut clients = Vec::new();
    for _ in 0..AT_ONCE {
        clients.push(testnet.client(1).await.unwrap());
    }
    let mut calls = tokio::task::JoinSet::new();
    for mut client in clients {
        calls.spawn(async move {
            let params = json!({ "name": "web.pause", "arguments": { "ms": 500 } });
            let result = client.request("tools/call", params).await.unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(text_of(&result), "paused 500 ms", "{result}");
        });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }

    // The server stops: its host's health checks fail, every node stops
    // offering it and calls say why.
    server.kill().await.unwrap();
    let configured = Duration::from_millis(HEALTH_INTERVAL_MS * UNHEALTHY_AFTER) + PROPAGATION;
    for index in 0..2 {
        wait_until(&format!("node {index} to see web unhealthy"), configured, || async {
            (sees_serving(&testnet, index, "web", &host).await == Some(false)).then_some(())
        })
        .await
        .unwrap();
    }
    assert_no_host_serves(&testnet, 1, "web").await;

    // Started again at the same URL (a new process, without the old
    // session): its host connects again by itself.
    let _server = start_http_fixture(port).await;
    wait_until("node 1 to see web serving again", WAIT, || async {
        sees_serving(&testnet, 1, "web", &host).await.filter(|serving| *serving)
    })
    .await
    .unwrap();
    let result = call(&testnet, 1, "web.lookup", json!({ "key": "h3" })).await;
    assert_eq!(text_of(&result), "note h3 from the-url", "{result}");

    let out = cli_as(Some(&token), &["server", "unregister", "web", "--node", &api]).unwrap();
    assert!(out.contains("unregistered"), "{out}");
    for index in 0..2 {
        wait_until(&format!("node {index} to stop listing web.lookup"), WAIT, || async {
            lists(&testnet, index, "web.lookup").await.is_none().then_some(())
        })
        .await
        .unwrap();
    }
}

/// `kill -9 pid`: the process dies without a word.
fn kill_process(pid: u32) {
    signal_process(pid, "KILL");
}

fn signal_process(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}
