//! A node whose data is damaged on disk (a byte range of its write-ahead
//! log overwritten while it was stopped) refuses to start, naming the file,
//! rather than serving what is left; the rest of the mesh goes on serving.

use std::time::Duration;

use serde_json::json;
use zeromesh_testnet::{Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_write_ahead_log_is_damaged_refuses_to_start_naming_the_file() {
    let mut testnet = Testnet::start(3, TestnetOptions::default()).await.expect("a testnet starts");
    for index in 0..40 {
        let value = format!("{index} {}", "x".repeat(200));
        testnet.call(index % 3, "memory_put", json!({ "path": format!("d/{index}"), "value": value })).await.unwrap();
    }
    let leader = testnet.leader(WAIT).await.unwrap();
    let damaged = (leader + 1) % 3;
    testnet.kill9(damaged).await.unwrap();

    let db = testnet.nodes[damaged].data_dir.join("raft/db");
    let mut logs: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    logs.sort();
    let wal = logs.pop().expect("a write-ahead log file");
    let mut bytes = std::fs::read(&wal).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 16] {
        *byte ^= 0xa5;
    }
    std::fs::write(&wal, bytes).unwrap();

    let refused = testnet.restart(damaged).await.expect_err("a node on a damaged store does not start");
    let refused = format!("{refused:#}");
    assert!(refused.contains("is damaged") && refused.contains(&wal.display().to_string()), "{refused}");

    // The others still commit and serve.
    let written = testnet.call(leader, "memory_put", json!({ "path": "d/after", "value": "yes" })).await.unwrap();
    assert_eq!(written["outcome"], "written");
}
