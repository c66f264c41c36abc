//! Agent memories as MCP resources on real node processes: listed, read and
//! subscribed to on one node, written through another, and the subscriber
//! told of the change.

use std::time::Duration;

use serde_json::json;
use zeromesh::client::ClientError;
use zeromesh_testnet::{wait_until, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_node_hears_of_a_memory_written_through_another() {
    let testnet = Testnet::start(3, TestnetOptions::default()).await.expect("a 3-node testnet starts");
    testnet.call(0, "memory_put", json!({ "path": "alice/notes/today", "value": "first" })).await.unwrap();

    let mut reader = testnet.client(2).await.unwrap();
    assert_eq!(reader.server["capabilities"]["resources"]["subscribe"], json!(true));
    let templates = reader.request("resources/templates/list", json!({})).await.unwrap();
    assert_eq!(templates["resourceTemplates"][0]["uriTemplate"], "mem://{agent}/{path}");
    let listed = reader.request("resources/list", json!({})).await.unwrap();
    let uris: Vec<&str> = listed["resources"].as_array().unwrap().iter().filter_map(|r| r["uri"].as_str()).collect();
    assert_eq!(uris, ["mem://alice/notes/today"]);
    let read = reader.request("resources/read", json!({ "uri": "mem://alice/notes/today" })).await.unwrap();
    assert_eq!(
        (read["contents"][0]["text"].as_str(), read["contents"][0]["mimeType"].as_str()),
        (Some("first"), Some("text/plain"))
    );

    reader.request("resources/subscribe", json!({ "uri": "mem://alice/notes/today" })).await.unwrap();
    testnet.call(0, "memory_put", json!({ "path": "bob/notes/today", "value": "not watched" })).await.unwrap();
    testnet.call(1, "memory_put", json!({ "path": "alice/notes/today", "value": "second" })).await.unwrap();
    let update = reader.next_notification(WAIT).await.expect("an update notification");
    assert_eq!(update["method"], "notifications/resources/updated");
    assert_eq!(update["params"]["uri"], "mem://alice/notes/today", "only the subscribed memory is announced");
    let read = reader.request("resources/read", json!({ "uri": "mem://alice/notes/today" })).await.unwrap();
    assert_eq!(read["contents"][0]["text"], "second");

    // A deletion is a change too; then the memory is not found.
    testnet.call(0, "memory_delete", json!({ "path": "alice/notes/today" })).await.unwrap();
    let update = reader.next_notification(WAIT).await.expect("a notification of the deletion");
    assert_eq!(update["params"]["uri"], "mem://alice/notes/today");
    match reader.request("resources/read", json!({ "uri": "mem://alice/notes/today" })).await {
        Err(ClientError::Rpc { code, .. }) => assert_eq!(code, -32002),
        other => panic!("a deleted memory is not found, got {other:?}"),
    }
    match reader.request("resources/read", json!({ "uri": "file:///etc/passwd" })).await {
        Err(ClientError::Rpc { code, message }) => assert!(code == -32602 && message.contains("mem://"), "{message}"),
        other => panic!("a URI outside mem:// is refused, got {other:?}"),
    }

    // Paging walks every memory exactly once.
    for index in 0..150 {
        testnet.call(0, "memory_put", json!({ "path": format!("carol/n/{index:03}"), "value": "x" })).await.unwrap();
    }
    let all = wait_until("paging to list every memory", WAIT, || async {
        let mut client = testnet.client(1).await.ok()?;
        let mut seen = Vec::new();
        let mut cursor = serde_json::Value::Null;
        loop {
            let page = client.request("resources/list", json!({ "cursor": cursor })).await.ok()?;
            seen.extend(page["resources"].as_array()?.iter().filter_map(|r| r["uri"].as_str().map(str::to_owned)));
            match page.get("nextCursor") {
                Some(next) => cursor = next.clone(),
                None => return (seen.len() == 151).then_some(seen),
            }
        }
    })
    .await
    .unwrap();
    let mut sorted = all.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 151);
}
