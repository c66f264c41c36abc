//! API authentication on real node processes: without `--dev`, every API
//! request needs a bearer token; tokens live hashed in the replicated state,
//! so a token made through one node works on every node, and a revocation
//! reaches every node too. Roles confine what a token may do, and each token
//! has a rate limit with a "retry after" refusal.

use std::time::Duration;

use serde_json::{json, Value};
use zeromesh::client::{ApiClient, ClientError};
use zeromesh_testnet::{connect_when_known, http_request, zeromesh_binary, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);

fn create_token(api: &str, admin: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(zeromesh_binary().unwrap())
        .args(["token", "create", "--node", api])
        .args(args)
        .env("ZEROMESH_TOKEN", admin)
        .output()
        .expect("runs");
    assert!(output.status.success(), "token create: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn refusal(outcome: Result<Value, ClientError>) -> (i64, String) {
    match outcome {
        Err(ClientError::Rpc { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_replicated_confined_revocable_and_rate_limited() {
    let options =
        TestnetOptions { args: vec!["--rate-limit-per-token".into(), "50".into()], auth: true, ..Default::default() };
    let testnet = Testnet::start(2, options).await.expect("a 2-node testnet with authentication starts");
    let admin = testnet.admin_token.clone().expect("node 0 printed the first admin token");
    let (first, second) = (testnet.nodes[0].address.api.clone(), testnet.nodes[1].address.api.clone());

    // No token, or a wrong one: refused at the handshake, with the reason.
    let anonymous = ApiClient::connect_with(&second, None, None).await.err().expect("refused");
    assert!(anonymous.to_string().contains("401"), "{anonymous}");
    assert!(anonymous.to_string().contains("bearer token"), "the client shows the node's reason: {anonymous}");
    let (status, body) =
        http_request(&second, "POST", "/mcp", &[("content-type", "application/json")], b"{}").await.unwrap();
    assert!(status == 401 && body.contains("bearer token"), "{status} {body}");
    let forged = format!("{}{}", &admin[..admin.len() - 4], "0000");
    assert!(ApiClient::connect_with(&second, None, Some(forged)).await.is_err());
    let (status, _) = http_request(&second, "GET", "/health", &[], b"").await.unwrap();
    assert_eq!(status, 200, "health needs no token");

    // Tokens made through node 0 work on node 1 once replicated.
    let spawn = ["agent", "spawn", "alice", "--owner", "ops", "--tool", "*", "--node", &first];
    zeromesh_testnet::cli_as(Some(&admin), &spawn).expect("alice is spawned");
    let alice_token = create_token(&first, &admin, &["--role", "agent", "--agent", "alice"]);
    let reader_token = create_token(&first, &admin, &["--role", "read"]);
    let mut alice = connect_when_known(&second, &alice_token, WAIT).await.unwrap();
    http_sessions_belong_to_the_token_that_opened_them(&second, &admin, &reader_token).await;
    alice.call_tool("memory_put", json!({ "path": "alice/notes/a", "value": "mine" })).await.expect("own memory");
    let (code, message) = refusal(alice.call_tool("memory_put", json!({ "path": "bob/notes/a", "value": "x" })).await);
    assert!(code == -32003 && message.contains("agent alice") && message.contains("bob/notes/a"), "{message}");
    let (code, message) = refusal(alice.call_tool("plugin_trust", json!({ "publisher": "00".repeat(32) })).await);
    assert!(code == -32003 && message.contains("admin"), "{message}");
    let (code, _) = refusal(alice.request("resources/read", json!({ "uri": "mem://bob/notes/a" })).await);
    assert_eq!(code, -32003);

    let mut reader = connect_when_known(&second, &reader_token, WAIT).await.unwrap();
    let read = reader.call_tool("memory_get", json!({ "path": "alice/notes/a" })).await.unwrap();
    assert_eq!(read["record"]["value"], "mine");
    let (_, message) = refusal(reader.call_tool("memory_put", json!({ "path": "alice/notes/a", "value": "x" })).await);
    assert!(message.contains("read-only"), "{message}");

    // The rate limit: a burst beyond 50 requests per second is told when to retry.
    let mut limited = None;
    for _ in 0..200 {
        if let Err(ClientError::Rpc { code: -32029, message }) = reader.request("ping", json!({})).await {
            limited = Some(message);
            break;
        }
    }
    let limited = limited.expect("a burst of 200 requests meets the rate limit");
    assert!(limited.contains("retry after"), "{limited}");

    // Revoked through node 0: node 1 refuses the open connection's next request.
    let id = alice_token.split('_').nth(1).unwrap().to_owned();
    let output = std::process::Command::new(zeromesh_binary().unwrap())
        .args(["token", "revoke", &id, "--node", &first])
        .env("ZEROMESH_TOKEN", &admin)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let deadline = tokio::time::Instant::now() + WAIT;
    let revoked = loop {
        match alice.request("ping", json!({})).await {
            Err(ClientError::Rpc { code: -32003, message }) => break message,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "node 1 still serves the revoked token: {other:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(revoked.contains("revoked"), "{revoked}");
}

/// A Streamable HTTP session opened with one token cannot be used, or its
/// event stream read, with another.
async fn http_sessions_belong_to_the_token_that_opened_them(api: &str, owner: &str, other: &str) {
    let bearer = |token: &str| format!("Bearer {token}");
    let json = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
    let initialize = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "1" } } });
    let mut headers = json.to_vec();
    let owner_bearer = bearer(owner);
    headers.push(("authorization", owner_bearer.as_str()));
    let opened = zeromesh_testnet::http_exchange(api, "POST", "/mcp", &headers, initialize.to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(opened.status, 200, "{}", opened.body);
    let session = opened.header("mcp-session-id").expect("a session").to_owned();
    let list = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }).to_string();
    let in_session = |token: String| {
        let mut headers: Vec<(String, String)> = json.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        headers.push(("authorization".into(), token));
        headers.push(("mcp-session-id".into(), session.clone()));
        headers.push(("mcp-protocol-version".into(), "2025-11-25".into()));
        headers
    };
    for (token, expected) in [(bearer(other), 404), (owner_bearer.clone(), 200)] {
        let headers = in_session(token);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let answer = zeromesh_testnet::http_exchange(api, "POST", "/mcp", &headers, list.as_bytes()).await.unwrap();
        assert_eq!(answer.status, expected, "{}", answer.body);
    }
    let headers = in_session(bearer(other));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let stream = zeromesh_testnet::http_exchange(api, "GET", "/mcp", &headers, b"").await.unwrap();
    assert_eq!(stream.status, 404, "another token cannot read the session's event stream: {}", stream.body);
}
