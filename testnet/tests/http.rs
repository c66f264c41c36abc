//! The peer API's HTTP side on real node processes: health, readiness and
//! Prometheus metrics, and MCP over Streamable HTTP (`POST /mcp`) next to
//! the WebSocket endpoint on the same port.

use std::time::Duration;

use serde_json::{json, Value};
use zeromesh_protocol::limits::MAX_API_MESSAGE_BYTES;
use zeromesh_testnet::{http_request, wait_until, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);
const JSON: [(&str, &str); 2] =
    [("content-type", "application/json"), ("accept", "application/json, text/event-stream")];

/// The value of `zeromesh_api_requests_total` for `method` and `outcome`.
fn requests(metrics: &str, method: &str, outcome: &str) -> u64 {
    let series = format!(r#"zeromesh_api_requests_total{{method="{method}",outcome="{outcome}"}} "#);
    metrics.lines().find_map(|line| line.strip_prefix(&series)).and_then(|count| count.parse().ok()).unwrap_or(0)
}

async fn mcp(api: &str, message: Value) -> (u16, Value) {
    let (status, body) =
        http_request(api, "POST", "/mcp", &JSON, message.to_string().as_bytes()).await.expect("answers");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
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

    // MCP over Streamable HTTP: initialise, write, read back, one JSON answer per POST.
    let (status, initialized) = mcp(&api, json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": { "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "test", "version": "1" } } })).await;
    assert_eq!((status, &initialized["result"]["protocolVersion"]), (200, &json!("2025-06-18")));
    let (status, _) = mcp(&api, json!({ "jsonrpc": "2.0", "method": "notifications/initialized" })).await;
    assert_eq!(status, 202, "a notification is accepted without an answer");
    let put = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": { "name": "memory_put", "arguments": { "path": "http/notes/a", "value": "over http" } } });
    let (status, written) = mcp(&api, put).await;
    assert_eq!((status, &written["result"]["isError"]), (200, &json!(false)), "{written}");
    let read =
        json!({ "jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": { "uri": "mem://http/notes/a" } });
    let (_, read) = mcp(&api, read).await;
    assert_eq!(read["result"]["contents"][0]["text"], "over http");
    let subscribe = json!({ "jsonrpc": "2.0", "id": 4, "method": "resources/subscribe", "params": { "uri": "mem://http/notes/a" } });
    let (_, refused) = mcp(&api, subscribe).await;
    assert!(refused["error"]["message"].as_str().unwrap_or_default().contains("WebSocket"), "{refused}");

    // Bad requests get precise refusals and change nothing.
    let (status, _) = http_request(&api, "GET", "/mcp", &[], b"").await.unwrap();
    assert_eq!(status, 405);
    let (status, _) = http_request(&api, "GET", "/nowhere", &[], b"").await.unwrap();
    assert_eq!(status, 404);
    let (status, body) = http_request(&api, "POST", "/mcp", &JSON, b"{not json").await.unwrap();
    assert!(status == 200 && body.contains("-32700"), "{status} {body}");
    let too_big = vec![b' '; MAX_API_MESSAGE_BYTES + 1];
    let (status, _) = http_request(&api, "POST", "/mcp", &JSON, &too_big).await.unwrap();
    assert_eq!(status, 413);

    // The metrics count what was served and show Raft's positions.
    let (status, metrics) = http_request(&api, "GET", "/metrics", &[], b"").await.unwrap();
    assert_eq!(status, 200);
    let served = |method, outcome| requests(&metrics, method, outcome) - requests(&metrics_before, method, outcome);
    assert_eq!(served("tools/call", "ok"), 1, "{metrics}");
    assert_eq!(served("resources/subscribe", "error"), 1, "{metrics}");
    assert!(metrics.contains(r#"zeromesh_api_request_seconds_count{method="initialize"}"#), "{metrics}");
    for gauge in
        ["zeromesh_raft_term ", "zeromesh_raft_applied_index ", "zeromesh_raft_leader_known 1", "zeromesh_mesh_peers "]
    {
        assert!(metrics.contains(gauge), "{gauge} missing from {metrics}");
    }
    // The WebSocket endpoint still answers on the same port.
    assert!(testnet.status(1).await.is_ok());

    stdio_bridge_serves_line_delimited_mcp(&testnet.nodes[0].address.api).await;

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

/// `zeromesh mcp-stdio` as a stdio-only MCP host would run it.
async fn stdio_bridge_serves_line_delimited_mcp(api: &str) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut bridge = tokio::process::Command::new(zeromesh_testnet::zeromesh_binary().unwrap())
        .args(["mcp-stdio", "--node", api])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the bridge starts");
    let mut stdin = bridge.stdin.take().unwrap();
    let mut stdout = BufReader::new(bridge.stdout.take().unwrap()).lines();
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
