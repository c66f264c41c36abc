//! The peer API's HTTP side on real node processes: health, readiness and
//! Prometheus metrics, and MCP over Streamable HTTP (`/mcp`, both protocol
//! eras: stateless 2026-07-28 requests, and handshake-era sessions with
//! their event stream) next to the WebSocket endpoint on the same port.

use std::time::Duration;

use serde_json::{json, Value};
use zeromesh_protocol::limits::MAX_API_MESSAGE_BYTES;
use zeromesh_testnet::{
    http_exchange, http_request, stateless_headers, stateless_request, wait_until, HttpAnswer, Testnet, TestnetOptions,
};

const WAIT: Duration = Duration::from_secs(60);
const JSON: [(&str, &str); 2] =
    [("content-type", "application/json"), ("accept", "application/json, text/event-stream")];

/// The value of `zeromesh_api_requests_total` for `method` and `outcome`.
fn requests(metrics: &str, method: &str, outcome: &str) -> u64 {
    let series = format!(r#"zeromesh_api_requests_total{{method="{method}",outcome="{outcome}"}} "#);
    metrics.lines().find_map(|line| line.strip_prefix(&series)).and_then(|count| count.parse().ok()).unwrap_or(0)
}

/// The JSON-RPC answer in an HTTP answer: its JSON body, or the first
/// answer (a message with an id) in its event stream.
fn answer_of(answer: &HttpAnswer) -> Value {
    if answer.header("content-type").is_some_and(|kind| kind.starts_with("text/event-stream")) {
        let messages = answer.body.lines().filter_map(|line| line.strip_prefix("data:"));
        let mut parsed = messages.filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok());
        return parsed.find(|message| message.get("id").is_some()).unwrap_or(Value::Null);
    }
    serde_json::from_str(&answer.body).unwrap_or(Value::Null)
}

/// One POST of `message` to `/mcp` with `extra` headers.
async fn post(api: &str, extra: &[(&str, &str)], message: Value) -> HttpAnswer {
    let headers: Vec<(&str, &str)> = JSON.iter().chain(extra).copied().collect();
    http_exchange(api, "POST", "/mcp", &headers, message.to_string().as_bytes()).await.expect("answers")
}

/// POSTs a 2026-07-28 request with the standard headers that mirror it.
async fn post_modern(api: &str, message: Value) -> HttpAnswer {
    post(api, &stateless_headers(&message), message.clone()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_and_http_clients_are_served_on_the_api_port() {
    let options = TestnetOptions { args: vec!["--api-idle-timeout-ms".into(), "1500".into()], ..Default::default() };
    let mut testnet = Testnet::start(2, options).await.expect("a 2-node testnet starts");
    let api = testnet.nodes[1].address.api.clone();

    let (status, body) = http_request(&api, "GET", "/health", &[], b"").await.unwrap();
    assert_eq!((status, body.contains("ok")), (200, true), "{body}");
    wait_until("the node to be ready", WAIT, || async {
        let (status, body) = http_request(&api, "GET", "/ready", &[], b"").await.ok()?;
        (status == 200 && body.contains("\"ready\":true")).then_some(())
    })
    .await
    .expect("a member with a known leader is ready");

    let (_, metrics_before) = http_request(&api, "GET", "/metrics", &[], b"").await.unwrap();

    // MCP over Streamable HTTP, 2026-07-28: no handshake, every request
    // self-contained and answered as JSON, with no session.
    let discovered = post_modern(&api, stateless_request(1, "server/discover", json!({}))).await;
    let discovered_answer = answer_of(&discovered);
    assert_eq!(discovered.status, 200, "{}", discovered.body);
    assert!(discovered.header("mcp-session-id").is_none(), "a stateless revision keeps no session");
    let versions = &discovered_answer["result"]["supportedVersions"];
    assert!(versions.as_array().is_some_and(|all| all.contains(&json!("2026-07-28"))), "{discovered_answer}");
    let put = stateless_request(
        2,
        "tools/call",
        json!({ "name": "memory_put", "arguments": { "path": "http/notes/a", "value": "over http" } }),
    );
    let written = answer_of(&post_modern(&api, put).await);
    assert_eq!(written["result"]["isError"], json!(false), "{written}");
    assert_eq!(written["result"]["resultType"], "complete", "{written}");
    let read = answer_of(
        &post_modern(&api, stateless_request(3, "resources/read", json!({ "uri": "mem://http/notes/a" }))).await,
    );
    assert_eq!(read["result"]["contents"][0]["text"], "over http", "{read}");
    let legacy_method = answer_of(
        &post_modern(&api, stateless_request(4, "resources/subscribe", json!({ "uri": "mem://http/notes/a" }))).await,
    );
    assert_eq!(
        legacy_method["error"]["code"], -32601,
        "2026-07-28 subscribes with subscriptions/listen: {legacy_method}"
    );

    // A long tool, for a client that declares the Tasks extension, is a task:
    // polled with tasks/get until it completes with the call's result.
    let spawn = stateless_request(
        20,
        "tools/call",
        json!({ "name": "agent_spawn", "arguments": { "id": "tasker", "owner": "ops", "tools": ["*"] } }),
    );
    assert_eq!(answer_of(&post_modern(&api, spawn).await)["result"]["isError"], json!(false));
    let mut snapshot = stateless_request(
        21,
        "tools/call",
        json!({ "name": "agent_snapshot", "arguments": { "id": "tasker", "snapshot": "first" } }),
    );
    snapshot["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
        json!({ "extensions": { "io.modelcontextprotocol/tasks": {} } });
    let created = answer_of(&post_modern(&api, snapshot.clone()).await);
    assert_eq!(created["result"]["resultType"], "task", "{created}");
    let task_id = created["result"]["taskId"].as_str().unwrap_or_else(|| panic!("a task id: {created}")).to_owned();
    let mut get = stateless_request(22, "tasks/get", json!({ "taskId": task_id }));
    get["params"]["_meta"] = snapshot["params"]["_meta"].clone();
    let done = wait_until("the task to complete", WAIT, || async {
        let polled = answer_of(
            &post(
                &api,
                &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tasks/get"), ("mcp-name", &task_id)],
                get.clone(),
            )
            .await,
        );
        (polled["result"]["status"] != "working").then_some(polled)
    })
    .await
    .expect("the task ends");
    assert_eq!(done["result"]["status"], "completed", "{done}");
    assert_eq!(done["result"]["result"]["isError"], json!(false), "{done}");
    assert!(done["result"]["result"]["structuredContent"]["sha256"].is_string(), "{done}");
    let mut unknown = get.clone();
    unknown["params"]["taskId"] = json!("no-such-task");
    let refused = answer_of(
        &post(
            &api,
            &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tasks/get"), ("mcp-name", "no-such-task")],
            unknown,
        )
        .await,
    );
    assert_eq!(refused["error"]["code"], -32602, "{refused}");

    // The handshake era: `initialize` opens a session, whose id later
    // requests carry; the session is ended with DELETE.
    let initialize = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": { "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "test", "version": "1" } } });
    let opened = post(&api, &[], initialize).await;
    assert_eq!(
        (opened.status, &answer_of(&opened)["result"]["protocolVersion"]),
        (200, &json!("2025-06-18")),
        "{}",
        opened.body
    );
    let session = opened.header("mcp-session-id").expect("a session id").to_owned();
    let in_session = [("mcp-session-id", session.as_str()), ("mcp-protocol-version", "2025-06-18")];
    let notified = post(&api, &in_session, json!({ "jsonrpc": "2.0", "method": "notifications/initialized" })).await;
    assert_eq!(notified.status, 202, "a notification is accepted without an answer");
    let subscribe = json!({ "jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": { "uri": "mem://http/notes/a" } });
    let subscribed = answer_of(&post(&api, &in_session, subscribe).await);
    assert_eq!(subscribed["result"], json!({}), "{subscribed}");
    let unknown = answer_of(&post(&api, &in_session, json!({ "jsonrpc": "2.0", "id": 3, "method": "no/such" })).await);
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    let ended = http_exchange(&api, "DELETE", "/mcp", &in_session, b"").await.unwrap();
    assert!(ended.status < 300, "DELETE ends the session: {}", ended.status);
    let after = post(&api, &in_session, json!({ "jsonrpc": "2.0", "id": 4, "method": "tools/list" })).await;
    assert_eq!(after.status, 404, "an ended session is gone: {}", after.body);

    // Bad requests get precise refusals and change nothing.
    let (status, _) = http_request(&api, "GET", "/nowhere", &[], b"").await.unwrap();
    assert_eq!(status, 404);
    let (status, body) = http_request(&api, "POST", "/mcp", &JSON, b"{not json").await.unwrap();
    assert!(status == 400 && body.contains("-32700"), "{status} {body}");
    let too_big = vec![b' '; MAX_API_MESSAGE_BYTES + 1];
    let (status, _) = http_request(&api, "POST", "/mcp", &JSON, &too_big).await.unwrap();
    assert_eq!(status, 413);
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, body) = http_request(&api, "POST", "/mcp", &JSON, deep.as_bytes()).await.unwrap();
    assert!(status == 400 && body.contains("-32700") && body.contains("recursion limit"), "{status} {body}");
    let (status, body) = http_request(&api, "POST", "/mcp", &JSON, b"[1,2]").await.unwrap();
    assert!(status == 400, "a batch is refused: {status} {body}");
    for (call, status, code) in [
        (stateless_request(5, "no/such", json!({})), 404, -32601),
        (stateless_request(6, "tools/call", json!({ "name": "no_such_tool" })), 200, -32602),
        (
            stateless_request(
                7,
                "tools/call",
                json!({ "name": "memory_put", "arguments": { "path": "a/../b", "value": "x" } }),
            ),
            200,
            -32602,
        ),
        (stateless_request(8, "tools/call", json!({ "name": "memory_get", "arguments": { "path": 7 } })), 200, -32602),
    ] {
        let answered = post_modern(&api, call.clone()).await;
        let answer = answer_of(&answered);
        assert_eq!((answered.status, &answer["error"]["code"]), (status, &json!(code)), "{call} -> {answer}");
    }

    // The metrics count what was served and show Raft's positions.
    let (status, metrics) = http_request(&api, "GET", "/metrics", &[], b"").await.unwrap();
    assert_eq!(status, 200);
    let served = |method, outcome| requests(&metrics, method, outcome) - requests(&metrics_before, method, outcome);
    assert_eq!((served("tools/call", "ok"), served("tools/call", "task")), (2, 1), "{metrics}");
    assert!(served("tasks/get", "ok") >= 1, "{metrics}");
    assert_eq!(served("resources/subscribe", "ok"), 1, "{metrics}");
    assert_eq!(served("server/discover", "ok"), 1, "{metrics}");
    assert!(metrics.contains(r#"zeromesh_api_request_seconds_count{method="initialize"}"#), "{metrics}");
    for gauge in
        ["zeromesh_raft_term ", "zeromesh_raft_applied_index ", "zeromesh_raft_leader_known 1", "zeromesh_mesh_peers "]
    {
        assert!(metrics.contains(gauge), "{gauge} missing from {metrics}");
    }
    // Sessions are bounded: past the limit, `initialize` is refused with 503
    // until one ends; stateless requests, which keep none, go on.
    let open = |id: u64| json!({ "jsonrpc": "2.0", "id": id, "method": "initialize", "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "filler", "version": "1" } } });
    let mut sessions = Vec::new();
    for id in 0.. {
        let opened = post(&api, &[], open(id)).await;
        if opened.status != 200 {
            assert_eq!(opened.status, 503, "{}", opened.body);
            assert!(opened.body.contains("MCP sessions already"), "{}", opened.body);
            break;
        }
        sessions.push(opened.header("mcp-session-id").expect("a session id").to_owned());
        assert!(sessions.len() <= 256, "no more than 256 sessions are kept");
    }
    assert_eq!(sessions.len(), 256);
    let stateless = answer_of(&post_modern(&api, stateless_request(30, "tools/list", json!({}))).await);
    assert!(stateless["result"]["tools"].is_array(), "{stateless}");
    let ended = http_exchange(&api, "DELETE", "/mcp", &[("mcp-session-id", sessions[0].as_str())], b"").await.unwrap();
    assert_eq!(ended.status, 204);
    assert_eq!(post(&api, &[], open(1000)).await.status, 200, "an ended session frees its place");

    // The WebSocket endpoint still answers on the same port.
    assert!(testnet.status(1).await.is_ok());

    stdio_bridge_serves_line_delimited_mcp(&testnet.nodes[0].address.api).await;
    stdio_bridge_serves_the_stateless_revision(&testnet.nodes[0].address.api).await;

    // Idle timeout: a client that reads (and so answers the node's pings)
    // stays connected past it; one that goes silent is closed.
    let mut live = testnet.client(1).await.unwrap();
    let mut silent = testnet.client(1).await.unwrap();
    let _ = live.next_notification(Duration::from_secs(4)).await;
    live.request("ping", json!({})).await.expect("a client that answers pings stays connected");
    assert!(
        silent.request("ping", json!({})).await.is_err(),
        "a client silent for 4 s past a 1.5 s idle timeout is closed"
    );

    // Cancellation: with its peer gone, node 0 cannot confirm a linearizable
    // read; the client cancels it, and the connection goes on serving.
    testnet.kill9(1).await.unwrap();
    let first = testnet.nodes[0].address.api.clone();
    let mut client = testnet.client(0).await.unwrap();
    let stuck = client
        .start_request("tools/call", json!({ "name": "memory_get", "arguments": { "path": "http/notes/a" } }))
        .await
        .unwrap();
    client
        .notify("notifications/cancelled", json!({ "requestId": stuck, "reason": "the user gave up" }))
        .await
        .unwrap();
    client.request("ping", json!({})).await.expect("the connection still answers");
    wait_until("the cancellation to be counted", WAIT, || async {
        let (_, metrics) = http_request(&first, "GET", "/metrics", &[], b"").await.ok()?;
        (requests(&metrics, "cancelled-request", "cancelled") == 1).then_some(())
    })
    .await
    .expect("the cancelled request was stopped");
}

/// Starts `zeromesh mcp-stdio` to `api`: the process, its stdin and its
/// stdout's lines.
fn start_bridge(
    api: &str,
) -> (
    tokio::process::Child,
    tokio::process::ChildStdin,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut bridge = tokio::process::Command::new(zeromesh_testnet::zeromesh_binary().unwrap())
        .args(["mcp-stdio", "--node", api])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the bridge starts");
    let stdin = bridge.stdin.take().unwrap();
    let stdout = tokio::io::BufReader::new(bridge.stdout.take().unwrap()).lines();
    (bridge, stdin, stdout)
}

/// `zeromesh mcp-stdio` as a stdio-only MCP host would run it.
async fn stdio_bridge_serves_line_delimited_mcp(api: &str) {
    use tokio::io::AsyncWriteExt;
    let (mut bridge, mut stdin, mut stdout) = start_bridge(api);
    let initialize = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "stdio-host", "version": "1" } } });
    let read =
        json!({ "jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": { "uri": "mem://http/notes/a" } });
    let mut input = format!("{initialize}\n{read}\n{{broken\n");
    input.push_str(&"x".repeat(MAX_API_MESSAGE_BYTES + 10));
    input.push('\n');
    stdin.write_all(input.as_bytes()).await.unwrap();
    let mut answers = Vec::new();
    while answers.len() < 4 {
        let line = tokio::time::timeout(WAIT, stdout.next_line()).await.expect("the bridge answers").unwrap().unwrap();
        answers.push(serde_json::from_str::<Value>(&line).expect("each line is one JSON message"));
    }
    let by_id = |id: i64| answers.iter().find(|answer| answer["id"] == json!(id)).cloned().unwrap_or(Value::Null);
    assert_eq!(by_id(1)["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(by_id(2)["result"]["contents"][0]["text"], "over http");
    let errors: Vec<i64> = answers.iter().filter_map(|answer| answer["error"]["code"].as_i64()).collect();
    assert!(errors.contains(&-32700) && errors.contains(&-32600), "{answers:?}");
    drop(stdin);
    let status = tokio::time::timeout(WAIT, bridge.wait()).await.expect("the bridge exits when stdin closes").unwrap();
    assert!(status.success(), "{status}");
}

/// A 2026-07-28 client over the WebSocket (through the stdio bridge, which
/// relays messages as they are): no handshake, each request self-contained.
async fn stdio_bridge_serves_the_stateless_revision(api: &str) {
    use tokio::io::AsyncWriteExt;
    let (_bridge, mut stdin, mut stdout) = start_bridge(api);
    let requests = [
        stateless_request(1, "server/discover", json!({})),
        stateless_request(2, "tools/call", json!({ "name": "memory_get", "arguments": { "path": "http/notes/a" } })),
        stateless_request(3, "initialize", json!({})),
    ];
    for request in &requests {
        stdin.write_all(format!("{request}\n").as_bytes()).await.unwrap();
    }
    let mut answers = Vec::new();
    while answers.len() < requests.len() {
        let line = tokio::time::timeout(WAIT, stdout.next_line()).await.expect("the bridge answers").unwrap().unwrap();
        answers.push(serde_json::from_str::<Value>(&line).expect("each line is one JSON message"));
    }
    let by_id = |id: i64| answers.iter().find(|answer| answer["id"] == json!(id)).cloned().unwrap_or(Value::Null);
    assert!(by_id(1)["result"]["supportedVersions"].to_string().contains("2026-07-28"), "{answers:?}");
    assert_eq!(by_id(2)["result"]["structuredContent"]["record"]["value"], "over http", "{answers:?}");
    assert!(by_id(3)["error"]["code"].is_i64(), "no handshake once the stateless revision is in use: {answers:?}");
}
