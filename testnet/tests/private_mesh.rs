//! The private mesh: nodes given the same pre-shared key (`--private-mesh-key`)
//! form a cluster; a node without it, or with another key, cannot connect at
//! all, so it can neither join nor reach the members.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use zeromesh_testnet::{zeromesh_binary, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);

fn mesh_key(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(name);
    let output = std::process::Command::new(zeromesh_binary().unwrap())
        .args(["mesh-key", "--out", path.to_str().unwrap()])
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_nodes_holding_the_private_mesh_key_can_connect() {
    let dir = tempfile::tempdir().unwrap();
    let key = mesh_key(dir.path(), "swarm.key");
    let other_key = mesh_key(dir.path(), "other.key");
    let options = TestnetOptions { args: vec!["--private-mesh-key".into(), key], ..Default::default() };
    let mut testnet = Testnet::start(1, options).await.expect("a node with the key starts");
    testnet.add_node().await.expect("a second node with the key joins");
    testnet
        .wait_for_cluster("both keyed nodes to be members", WAIT, |status| {
            status["members"].as_array().is_some_and(|members| members.len() == 2)
        })
        .await
        .expect("nodes holding the key form a cluster");

    for intruder_key in [None, Some(other_key)] {
        let data = tempfile::tempdir().unwrap();
        let mut args = vec![
            "run".to_owned(),
            "--data".into(),
            data.path().to_str().unwrap().into(),
            "--listen".into(),
            "/ip4/127.0.0.1/tcp/0".into(),
            "--api".into(),
            "127.0.0.1:0".into(),
            "--bootstrap".into(),
            testnet.nodes[0].address.p2p.clone(),
            "--join-token".into(),
            testnet.join_token.clone(),
        ];
        if let Some(key) = &intruder_key {
            args.extend(["--private-mesh-key".into(), key.clone()]);
        }
        let mut intruder = tokio::process::Command::new(zeromesh_binary().unwrap())
            .args(&args)
            .env("ZEROMESH_LOG", "info,openraft=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the intruder starts");
        let mut log = BufReader::new(intruder.stderr.take().unwrap()).lines();
        let mut stdout = BufReader::new(intruder.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(WAIT, stdout.next_line()).await.expect("a ready line").unwrap().unwrap();
        let intruder_peer =
            ready.split("peer_id=").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap().to_owned();
        // Its join attempts fail at the connection, again and again.
        let mut failures = 0;
        while failures < 3 {
            let line = tokio::time::timeout(WAIT, log.next_line()).await.expect("join attempts are logged").unwrap();
            let line = line.expect("the intruder keeps running");
            if line.contains("not a member yet") && line.contains("reason=not reachable") {
                failures += 1;
            }
        }
        let peers = testnet.call(0, "mesh_peers", json!({})).await.unwrap();
        assert!(!peers.to_string().contains(&intruder_peer), "the intruder ({intruder_key:?}) connected: {peers}");
        let status = testnet.status(0).await.unwrap();
        assert_eq!(status["members"].as_array().unwrap().len(), 2, "the intruder ({intruder_key:?}) joined: {status}");
        intruder.kill().await.unwrap();
    }
}
