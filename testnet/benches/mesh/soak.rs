//! A soak run: a 3-node testnet under a steady mixed load (durable writes
//! through the leader and a follower, linearizable reads, plugin calls) for
//! `ZEROMESH_SOAK_MINUTES` (default 10), reporting each minute every
//! node's RSS (anonymous memory apart from code and files) and open file
//! descriptors, RocksDB's memory against its budget and the writes its
//! flushes held, and the minute's operations and p99; then the same after
//! a minute idle. Growth from minute to minute is what it is for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

/// Clients per kind of operation.
const WRITERS_PER_TARGET: usize = 4;
const READERS: usize = 4;
const CALLERS: usize = 4;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|entries| entries.count()).unwrap_or(0)
}

/// One line per node: RSS, descriptors, RocksDB's cache and memtables, and
/// how writes waited for its flushes so far.
async fn node_lines(testnet: &Testnet, label: &str) {
    let stalls = write_stalls(testnet).await;
    for (index, node) in testnet.nodes.iter().enumerate() {
        let pid = node.pid().expect("the node runs");
        let metric = |name: &'static str| testnet.metric(index, name);
        let (cache, memtables, budget) = (
            metric("zeromesh_storage_cache_bytes").await.unwrap_or(0),
            metric("zeromesh_storage_memtable_bytes").await.unwrap_or(0),
            metric("zeromesh_storage_memory_budget_bytes").await.unwrap_or(0),
        );
        println!(
            "mesh/soak/{label}/node-{index}: RSS {} MiB (anonymous {} MiB, code and files {} MiB), {} open descriptors, \
             RocksDB cache {} MiB (memtables {} MiB) of {} MiB, writes held by its flushes {:.0} ms and {} stops in all",
            rss_kib(pid) / 1024,
            status_kib(pid, "RssAnon") / 1024,
            (status_kib(pid, "RssFile") + status_kib(pid, "RssShmem")) / 1024,
            open_fds(pid),
            cache >> 20,
            memtables >> 20,
            budget >> 20,
            stalls[index][0] * 1e3,
            stalls[index][1],
        );
    }
}

pub async fn run(scale: &Scale) {
    // The smoke pass makes two short "minutes".
    let full = scale.measure >= Duration::from_secs(10);
    let minutes: u64 = match std::env::var("ZEROMESH_SOAK_MINUTES").ok().and_then(|text| text.parse().ok()) {
        Some(minutes) if full => minutes,
        _ if full => 10,
        _ => 2,
    };
    let minute = if full { Duration::from_secs(60) } else { scale.measure };
    let (testnet, leader, follower) = three_voters().await;
    install_echo_plugin(&testnet, leader);
    for index in 0..3 {
        wait_until(&format!("node {index} to run the plugin"), Duration::from_secs(60), || async {
            testnet.call(index, "echo", json!({})).await.ok()
        })
        .await
        .expect("every node runs the echo plugin");
    }
    tokio::time::sleep(minute).await;
    println!(
        "mesh/soak: {minutes} minutes of {} writers (half through the leader, half through a follower), \
         {READERS} linearizable readers and {CALLERS} plugin callers on a follower, back to back",
        2 * WRITERS_PER_TARGET
    );
    node_lines(&testnet, "idle-before").await;

    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let on = |index: usize| Target::Zeromesh { api: testnet.nodes[index].address.api.clone() };
    let mut clients = Vec::new();
    for _ in 0..WRITERS_PER_TARGET {
        clients.push((on(leader), Operation::Write));
        clients.push((on(follower), Operation::Write));
    }
    clients.extend((0..READERS).map(|_| (on(follower), Operation::LinearizableRead)));
    clients.extend((0..CALLERS).map(|_| (on(follower), Operation::PluginEcho)));
    let mut tasks = Vec::new();
    for (client_index, (target, operation)) in clients.into_iter().enumerate() {
        let (latencies, stop) = (latencies.clone(), stop.clone());
        let mut connection = target.connect().await;
        tasks.push(tokio::spawn(async move {
            let value = "v".repeat(256);
            let mut sequence = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("agent-b/soak{client_index}/{}", sequence % 1000);
                let sent = Instant::now();
                connection.run(operation, &path, &value).await;
                latencies.lock().unwrap().push(sent.elapsed());
                sequence += 1;
            }
        }));
    }
    for done in 1..=minutes {
        tokio::time::sleep(minute).await;
        let mut taken = std::mem::take(&mut *latencies.lock().unwrap());
        taken.sort();
        println!(
            "mesh/soak/minute-{done}: {:.0} operations/s, p50 {:.2} ms, p99 {:.2} ms",
            taken.len() as f64 / minute.as_secs_f64(),
            percentile(&taken, 0.5).as_secs_f64() * 1e3,
            percentile(&taken, 0.99).as_secs_f64() * 1e3,
        );
        node_lines(&testnet, &format!("minute-{done}")).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a soak client finished");
    }
    tokio::time::sleep(minute).await;
    node_lines(&testnet, "idle-after").await;
}
