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
