//! Real network partitions: three node processes, each in a network
//! namespace of its own, with packets dropped in the kernel (iptables in the
//! receiver's namespace). A leader cut off both ways is replaced by the
//! majority, cannot commit what it is sent meanwhile, and catches up once
//! the partition heals; a follower that hears nothing (one-way drops) does
//! not take the mesh down, and catches up too.
//!
//! Needs root, `ip` and `iptables` (scripts/setup.sh installs the tools);
//! elsewhere the test says so and checks nothing.

use std::time::Duration;

use serde_json::{json, Value};
use zeromesh::client::ClientError;
use zeromesh_testnet::{wait_until, Network, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);

async fn put(testnet: &Testnet, node: usize, path: &str, value: &str) -> Result<Value, ClientError> {
    testnet.call(node, "memory_put", json!({ "path": path, "value": value })).await
}

/// `path`'s value in node `node`'s applied state.
async fn stale_value(testnet: &Testnet, node: usize, path: &str) -> Option<String> {
    let answer = testnet.call(node, "memory_get", json!({ "path": path, "consistency": "stale" })).await.ok()?;
    answer["record"]["value"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_partitioned_in_the_kernel_is_replaced_and_catches_up_after_healing() {
    if !Network::namespaces_available() {
        eprintln!("skipped: kernel partitions need root, ip and iptables");
        return;
    }
    let options = TestnetOptions { network: Network::Namespaces, ..Default::default() };
    let testnet = Testnet::start(3, options).await.expect("a namespaced testnet starts");
    let old = testnet.leader(WAIT).await.unwrap();
    let others: Vec<usize> = (0..3).filter(|node| *node != old).collect();
    put(&testnet, others[0], "a/before", "1").await.expect("a write before the partition");

    for other in &others {
        testnet.drop_packets(old, *other).unwrap();
        testnet.drop_packets(*other, old).unwrap();
    }
    // The majority elects another leader and serves writes.
    let new = wait_until("the majority to elect another leader", WAIT, || async {
        let first = testnet.leader_seen_by(others[0]).await?;
        (first != old && testnet.leader_seen_by(others[1]).await == Some(first)).then_some(first)
    })
    .await
    .unwrap();
    put(&testnet, others[1], "a/during", "2").await.expect("the majority side commits");
    // The old leader cannot commit: a write through it is not acknowledged.
    let cut_off = tokio::time::timeout(Duration::from_secs(20), put(&testnet, old, "a/cut-off", "3")).await;
    assert!(!matches!(cut_off, Ok(Ok(_))), "a write through the cut-off node was acknowledged: {cut_off:?}");

    testnet.heal_network().unwrap();
    wait_until("the old leader to follow and catch up", WAIT, || async {
        (testnet.leader_seen_by(old).await == Some(new)
            && stale_value(&testnet, old, "a/during").await.as_deref() == Some("2"))
        .then_some(())
    })
    .await
    .unwrap();

    // One way: a follower hears nobody (packets to it dropped), yet still sends.
    let deaf = *others.iter().find(|node| **node != new).unwrap();
    for other in (0..3).filter(|node| *node != deaf) {
        testnet.drop_packets(other, deaf).unwrap();
    }
    put(&testnet, new, "a/one-way", "4").await.expect("the leader and the other follower commit");
    assert_eq!(stale_value(&testnet, new, "a/one-way").await.as_deref(), Some("4"));
    testnet.heal_network().unwrap();
    wait_until("the deaf follower to catch up", WAIT, || async {
        (stale_value(&testnet, deaf, "a/one-way").await.as_deref() == Some("4")).then_some(())
    })
    .await
    .unwrap();
    let leader = testnet.leader(WAIT).await.unwrap();
    put(&testnet, leader, "a/after", "5").await.expect("a write after healing");
}
