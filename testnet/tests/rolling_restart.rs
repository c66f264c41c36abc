//! A rolling restart, as an upgrade does it: each node of an authenticated
//! 3-node mesh in turn is stopped with SIGTERM (as systemd and Kubernetes
//! stop it), restarted on its data, and waited for until it has caught up,
//! while clients keep writing through every node. The mesh goes on
//! acknowledging writes while each node is down, and at the end every
//! acknowledged write is on every node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use zeromesh::client::ApiClient;
use zeromesh_testnet::{own_applied_index, wait_until, Testnet, TestnetOptions};

const WAIT: Duration = Duration::from_secs(60);
const WRITERS: usize = 2;

/// What the writers saw: each acknowledged write (path, value, log index,
/// when), and how many writes failed and were retried elsewhere.
#[derive(Default)]
struct Seen {
    acknowledged: Vec<(String, String, u64, Instant)>,
    retried: u64,
}

/// Writes numbered values to its own path through node after node; a node
/// that fails (stopped, not yet caught up, no leader) is left for the next.
async fn writer(apis: Vec<String>, token: String, id: usize, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut clients: Vec<Option<ApiClient>> = apis.iter().map(|_| None).collect();
    let mut node = id % apis.len();
    let mut number = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let path = format!("rolling/writer-{id}-{number}");
        let value = format!("value {number} of writer {id}");
        if clients[node].is_none() {
            clients[node] = ApiClient::connect_with(&apis[node], None, Some(token.clone())).await.ok();
        }
        let answer = match clients[node].as_mut() {
            Some(client) => tokio::time::timeout(
                Duration::from_secs(10),
                client.call_tool("memory_put", json!({ "path": path, "value": value })),
            )
            .await
            .ok()
            .and_then(Result::ok),
            None => None,
        };
        match answer.and_then(|answer| answer["log_index"].as_u64()) {
            Some(index) => {
                seen.lock().unwrap().acknowledged.push((path, value, index, Instant::now()));
                number += 1;
            }
            None => {
                // Unknown outcomes included: the next write uses a new path,
                // so a write that did happen is simply not checked.
                seen.lock().unwrap().retried += 1;
                clients[node] = None;
                number += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        node = (node + 1) % apis.len();
        // A steady load, not a flood: the machine also runs three nodes.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn acknowledged_since(seen: &Mutex<Seen>, since: Instant) -> usize {
    seen.lock().unwrap().acknowledged.iter().filter(|(_, _, _, at)| *at > since).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_keeps_the_mesh_serving_and_loses_no_acknowledged_write() {
    // Started, the testnet has its three voters.
    let mut testnet = Testnet::start(3, TestnetOptions { auth: true, ..Default::default() }).await.unwrap();
    let apis: Vec<String> = testnet.nodes.iter().map(|node| node.address.api.clone()).collect();
    let token = testnet.admin_token.clone().expect("an authenticated testnet has an admin token");
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(apis.clone(), token.clone(), id, stop.clone(), seen.clone())))
        .collect();
    wait_until("writes before the restarts", WAIT, || async {
        (acknowledged_since(&seen, Instant::now() - WAIT) >= 20).then_some(())
    })
    .await
    .unwrap();

    // The leader last, as an operator would: one election, not three.
    let leader = testnet.leader(WAIT).await.unwrap();
    let order: Vec<usize> = (0..3).filter(|index| *index != leader).chain([leader]).collect();
    for index in order {
        let status = testnet.stop(index, WAIT).await.unwrap();
        assert!(status.success(), "node {index} did not stop cleanly on SIGTERM ({status}):\n{}", testnet.logs());
        let stopped_at = Instant::now();
        wait_until(&format!("writes acknowledged while node {index} is down"), WAIT, || async {
            (acknowledged_since(&seen, stopped_at) >= 10).then_some(())
        })
        .await
        .unwrap_or_else(|error| panic!("{error:#}\n{}", testnet.logs()));
        let first_after = seen.lock().unwrap().acknowledged.iter().find(|(_, _, _, at)| *at > stopped_at).map(|w| w.3);
        eprintln!(
            "node {index} stopped: the first write acknowledged after it exited came {:?} later",
            first_after.map(|at| at - stopped_at)
        );
        testnet.restart(index).await.unwrap();
        // Caught up: it applied a write acknowledged after it came back.
        let restarted_at = Instant::now();
        wait_until(&format!("node {index} to catch up"), WAIT, || async {
            let target = seen
                .lock()
                .unwrap()
                .acknowledged
                .iter()
                .find(|(_, _, _, at)| *at > restarted_at)
                .map(|(_, _, index, _)| *index)?;
            let status = testnet.status(index).await.ok()?;
            (own_applied_index(&status)? >= target && status["leader"].is_u64()).then_some(())
        })
        .await
        .unwrap_or_else(|error| {
            let acknowledged = acknowledged_since(&seen, restarted_at);
            panic!("{error:#}; {acknowledged} writes acknowledged since the restart\n{}", testnet.logs())
        });
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!("{} writes acknowledged, {} failed and retried elsewhere", seen.acknowledged.len(), seen.retried);
    let last = seen.acknowledged.iter().map(|(_, _, index, _)| *index).max().unwrap();
    testnet
        .wait_for_cluster("every node to apply the last acknowledged write", WAIT, |status| {
            own_applied_index(status).is_some_and(|applied| applied >= last)
        })
        .await
        .unwrap();
    for index in 0..3 {
        let held = testnet.memories(index, "rolling/").await.unwrap();
        for (path, value, _, _) in &seen.acknowledged {
            assert_eq!(held.get(path), Some(value), "node {index} lost the acknowledged write of {path}");
        }
    }
}
