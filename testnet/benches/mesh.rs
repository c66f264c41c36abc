//! Mesh benchmarks on real node processes on 127.0.0.1, each operation one
//! `tools/call` through the WebSocket API: durable writes of 256-byte values
//! (`memory_put`) and linearizable reads (`memory_get`) at 1, 10 and 64
//! concurrent clients (ops/s, p50, p99), an installed plugin's tool at 1, 10
//! and 64 clients, the same tool under an agreement (each call reserved
//! through the log, or served from the node's lease), the time an advert
//! takes to reach every node of a 10-node testnet, and one idle node's RSS
//! and CPU. The same plugin tool offloaded (called on a member that runs no
//! plugins), and a federated MCP server's tool through its host, through
//! another node and called directly, with how long a failed host keeps
//! receiving calls (mesh/federation.rs); `mesh-tools` runs only these.
//! `mesh-etcd` runs only the writes and linearizable reads on the leader and
//! a follower and etcd's writes, with the ratios between them; etcd's writes
//! at each client count run right after the leader's, and each write load
//! also prints the CPU time per write of its servers and of the load
//! generator.
//! Then the peer API layer alone (`memory_get`, stale, and the
//! plugin's tool at 1, 10 and 64 clients, over WebSocket and over Streamable
//! HTTP), for this build and, when `ZEROMESH_BASELINE_BIN` names another
//! node binary (scripts/bench.sh builds the commit before the API moved to
//! rmcp), for that one too, in the same run. With `mesh-trace`, durable
//! writes through the leader at 1, 10 and 64 clients, for this build and the
//! baseline (`ZEROMESH_BASELINE_COMMIT=<the commit before the trace log>`):
//! what the trace log costs the write path, in one run. With `soak`, ten
//! minutes of mixed load on 3 nodes, memory, descriptors and p99 each
//! minute (mesh/soak.rs). Last (or alone with `mesh-scale`), testnets of 3,
//! 10 and 30 nodes: time to join, advert convergence, idle cost per node,
//! and on the largest, writes and reads through a non-voter.
//!
//! `cargo bench -p zeromesh-testnet --bench mesh` (scripts/bench.sh builds
//! the release node first). Under `cargo test` it runs a short smoke pass.
//! With `ZEROMESH_BENCH_REQUESTS=<folder>`, every load (writes, reads,
//! plugin calls, etcd's writes) also leaves each request's send time and
//! latency there, one file per load in the order printed.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use zeromesh_testnet::{stateless_headers, stateless_request, wait_until, HttpConnection, Testnet, TestnetOptions};

struct Scale {
    measure: Duration,
    max_ops_per_client: usize,
    advert_nodes: usize,
    advert_rounds: usize,
    idle: Duration,
    /// Rounds of each fault in the federated failover measure.
    fault_rounds: usize,
    /// Testnet sizes of the scaling measure (`mesh-scale`).
    scaling_nodes: &'static [usize],
}

const FULL: Scale = Scale {
    measure: Duration::from_secs(10),
    max_ops_per_client: 100_000,
    advert_nodes: 10,
    advert_rounds: 10,
    idle: Duration::from_secs(10),
    fault_rounds: 5,
    scaling_nodes: &[3, 10, 30],
};
const SMOKE: Scale = Scale {
    measure: Duration::from_millis(300),
    max_ops_per_client: 20,
    advert_nodes: 3,
    advert_rounds: 1,
    idle: Duration::from_millis(500),
    fault_rounds: 1,
    scaling_nodes: &[4],
};

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * fraction) as usize).min(sorted.len() - 1)]
}

/// What the load generator talks to: a zeromesh node's API, or etcd.
#[derive(Clone)]
enum Target {
    Zeromesh {
        api: String,
    },
    /// A node's Streamable HTTP endpoint.
    ZeromeshHttp {
        api: String,
    },
    /// An MCP server called directly, every client through one connection
    /// (as a node that hosts it calls it).
    McpDirect {
        peer: rmcp::service::Peer<rmcp::RoleClient>,
    },
    #[cfg(feature = "etcd")]
    Etcd {
        endpoints: Vec<String>,
    },
}

enum Connection {
    Zeromesh(zeromesh::client::ApiClient),
    McpDirect(rmcp::service::Peer<rmcp::RoleClient>),
    /// `modern`: the node speaks 2026-07-28 (stateless requests); otherwise
    /// each POST is one message of the handshake era without a session, as
    /// nodes before rmcp served them.
    Http {
        connection: HttpConnection,
        modern: bool,
        next_id: u64,
    },
    #[cfg(feature = "etcd")]
    Etcd(etcd_client::Client),
}

#[derive(Clone, Copy, PartialEq)]
enum Operation {
    Write,
    LinearizableRead,
    /// `memory_get` of this node's state (`consistency: stale`): the API
    /// layer's cost with no Raft round.
    StaleRead,
    /// `tools/call` of the `echo` example plugin.
    PluginEcho,
    /// The same, for agent `bench` under its agreement: with a key of the
    /// caller's own (reserved through the log) or none (from a lease).
    PluginEchoMetered {
        own_key: bool,
    },
    /// `tools/call` of the notes fixture's `lookup`, a federated MCP
    /// server's tool (`notes.lookup` through a node).
    FederatedLookup,
}

/// Calls for agent `bench` that ran; keys are numbered from it too.
static METERED_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Target {
    async fn connect(&self) -> Connection {
        match self {
            Target::Zeromesh { api } => {
                Connection::Zeromesh(zeromesh::client::ApiClient::connect(api).await.expect("connects"))
            }
            Target::ZeromeshHttp { api } => {
                let mut connection = HttpConnection::connect(api).await.expect("connects");
                let discover = stateless_request(0, "server/discover", json!({}));
                let (status, _) =
                    connection.post(&stateless_headers(&discover), &discover.to_string()).await.expect("answers");
                Connection::Http { connection, modern: status == 200, next_id: 1 }
            }
            Target::McpDirect { peer } => Connection::McpDirect(peer.clone()),
            #[cfg(feature = "etcd")]
            Target::Etcd { endpoints } => {
                Connection::Etcd(etcd_client::Client::connect(endpoints, None).await.expect("connects to etcd"))
            }
        }
    }
}

impl Connection {
    async fn run(&mut self, operation: Operation, path: &str, value: &str) {
        match self {
            Connection::Http { connection, modern, next_id } => {
                let (tool, arguments) = match operation {
                    Operation::StaleRead => ("memory_get", json!({ "path": path, "consistency": "stale" })),
                    Operation::PluginEcho => ("echo", json!({ "path": path })),
                    _ => unreachable!("the HTTP load generator reads and calls the plugin"),
                };
                *next_id += 1;
                let params = json!({ "name": tool, "arguments": arguments });
                let answer = if *modern {
                    let request = stateless_request(*next_id, "tools/call", params);
                    connection.post(&stateless_headers(&request), &request.to_string()).await
                } else {
                    let request = json!({ "jsonrpc": "2.0", "id": *next_id, "method": "tools/call", "params": params });
                    connection.post(&[], &request.to_string()).await
                };
                let (status, body) = answer.expect("the node answers");
                assert!(status == 200 && body.contains("\"result\""), "{status} {body}");
            }
            Connection::Zeromesh(client) => {
                let (tool, arguments) = match operation {
                    Operation::Write => ("memory_put", json!({ "path": path, "value": value })),
                    Operation::LinearizableRead => {
                        ("memory_get", json!({ "path": path, "consistency": "linearizable" }))
                    }
                    Operation::StaleRead => ("memory_get", json!({ "path": path, "consistency": "stale" })),
                    Operation::PluginEcho => ("echo", json!({ "path": path })),
                    Operation::FederatedLookup => ("notes.lookup", json!({ "key": path })),
                    Operation::PluginEchoMetered { own_key } => {
                        let call = METERED_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let mut meta = json!({ "zeromesh/agent": "bench" });
                        if own_key {
                            meta["zeromesh/idempotency-key"] = json!(format!("bench-{call}"));
                        }
                        let params = json!({ "name": "echo", "arguments": { "path": path }, "_meta": meta });
                        let result = client.request("tools/call", params).await.expect("the metered call succeeds");
                        assert_eq!(result["_meta"]["zeromesh/usage"]["agreement"], "bench-deal", "{result}");
                        return;
                    }
                };
                client.call_tool(tool, arguments).await.expect("the call succeeds");
            }
            Connection::McpDirect(peer) => {
                assert!(operation == Operation::FederatedLookup, "an MCP server is only called for lookup");
                let arguments = json!({ "key": path }).as_object().cloned().unwrap();
                let params = rmcp::model::CallToolRequestParams::new("lookup").with_arguments(arguments);
                let result = peer.call_tool(params).await.expect("the server answers");
                assert_ne!(result.is_error, Some(true), "{result:?}");
            }
            #[cfg(feature = "etcd")]
            Connection::Etcd(client) => match operation {
                Operation::Write => drop(client.put(path, value, None).await.expect("etcd put succeeds")),
                // etcd's default range read is linearizable.
                Operation::LinearizableRead => drop(client.get(path, None).await.expect("etcd get succeeds")),
                Operation::StaleRead
                | Operation::PluginEcho
                | Operation::PluginEchoMetered { .. }
                | Operation::FederatedLookup => {
                    unreachable!("etcd runs no plugins")
                }
            },
        }
    }
}

/// Runs `clients` connections against `target` for `scale.measure`:
/// operations/s, p50 and p99.
async fn load(target: &Target, clients: usize, scale: &Scale, operation: Operation) -> (f64, Duration, Duration) {
    let value = "v".repeat(256);
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(target.connect().await);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client_index, mut connection) in connections.into_iter().enumerate() {
        let value = value.clone();
        let measure = scale.measure;
        let max_ops = scale.max_ops_per_client;
        tasks.push(tokio::spawn(async move {
            // When each request was sent (from `started`), and its latency.
            let mut requests = Vec::new();
            let begin = Instant::now();
            let mut sequence = 0usize;
            while begin.elapsed() < measure && sequence < max_ops {
                let path = format!("agent-b/c{client_index}/{}", sequence % 1000);
                let sent = Instant::now();
                connection.run(operation, &path, &value).await;
                requests.push((sent - started, sent.elapsed()));
                sequence += 1;
            }
            requests
        }));
    }
    let mut requests = Vec::new();
    for task in tasks {
        requests.extend(task.await.expect("client finished"));
    }
    let elapsed = started.elapsed();
    if let Some(dir) = std::env::var_os("ZEROMESH_BENCH_REQUESTS") {
        save_requests(&PathBuf::from(dir), clients, elapsed, &requests);
    }
    let mut latencies: Vec<Duration> = requests.into_iter().map(|(_, latency)| latency).collect();
    latencies.sort();
    (latencies.len() as f64 / elapsed.as_secs_f64(), percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

/// Writes one load's requests to `dir` as text, for a look at when the slow
/// ones happened: a first line `start <unix µs>`, then `<µs after start>
/// <latency µs>` per request. Files are numbered in the order of the loads.
fn save_requests(dir: &std::path::Path, clients: usize, elapsed: Duration, requests: &[(Duration, Duration)]) {
    static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let number = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = std::time::SystemTime::now() - elapsed;
    let start_us = start.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
    let mut text = format!("start {start_us}\n");
    for (sent, latency) in requests {
        text.push_str(&format!("{} {}\n", sent.as_micros(), latency.as_micros()));
    }
    let path = dir.join(format!("load-{number:02}-{clients}-clients.txt"));
    std::fs::write(&path, text).unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
}

fn report(name: &str, unit: &str, (rate, p50, p99): (f64, Duration, Duration)) -> f64 {
    println!(
        "{name:<44} {rate:>9.0} {unit}/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    rate
}

/// Milliseconds between an advert's first and last sighting across the nodes,
/// polled every few milliseconds, for `rounds` publications of node 0.
async fn advert_spread(testnet: &Testnet, rounds: usize) -> Vec<Duration> {
    let publisher = testnet.nodes[0].address.peer_id.clone();
    let mut clients = Vec::new();
    for index in 0..testnet.nodes.len() {
        clients.push(testnet.client(index).await.expect("connects"));
    }
    let mut first_seen: HashMap<u64, Vec<Option<Instant>>> = HashMap::new();
    let mut counted: HashSet<u64> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(5 + 2 * rounds as u64);
    let mut spreads = Vec::new();
    while spreads.len() < rounds && Instant::now() < deadline {
        for (index, client) in clients.iter_mut().enumerate() {
            let Ok(answer) = client.call_tool("mesh_peers", json!({})).await else { continue };
            let now = Instant::now();
            let sequence = answer["adverts"]
                .as_array()
                .and_then(|adverts| adverts.iter().find(|advert| advert["peer_id"] == json!(publisher)))
                .and_then(|advert| advert["sequence"].as_u64());
            let Some(sequence) = sequence.filter(|sequence| !counted.contains(sequence)) else { continue };
            let seen = first_seen.entry(sequence).or_insert_with(|| vec![None; testnet.nodes.len()]);
            seen[index].get_or_insert(now);
            if seen.iter().all(Option::is_some) {
                let times: Vec<Instant> = seen.iter().flatten().copied().collect();
                spreads.push(*times.iter().max().expect("times") - *times.iter().min().expect("times"));
                first_seen.remove(&sequence);
                counted.insert(sequence);
            }
        }
    }
    spreads
}

/// Builds, signs (with a new publisher key), trusts and installs the `echo`
/// example plugin through the command line, as a user would. Returns the
/// folder holding the publisher key (`publisher.key`).
fn install_echo_plugin(testnet: &Testnet, node: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let examples = zeromesh_testnet::package_dir().join("../plugins/examples");
    let module = dir.path().join("echo.wasm");
    std::fs::write(&module, wat::parse_file(examples.join("echo.wat")).expect("echo.wat compiles")).unwrap();
    let key = dir.path().join("publisher.key");
    let package = dir.path().join("echo.zmp");
    let api = testnet.nodes[node].address.api.as_str();
    let public = format!("{}.pub", key.display());
    zeromesh_testnet::cli(&["plugin", "keygen", "--out", key.to_str().unwrap()]).expect("a publisher key");
    zeromesh_testnet::sign_plugin(&module, &examples.join("echo.json"), &key, &package).expect("signs");
    zeromesh_testnet::cli(&["plugin", "trust", &public, "--node", api]).expect("trusts the key");
    zeromesh_testnet::cli(&["plugin", "install", package.to_str().unwrap(), "--node", api]).expect("installs");
    dir
}

/// `tools/call` of `echo` for an agent under an agreement against the same
/// call for no agent, at 1, 10 and 64 clients, on a follower of a testnet
/// whose nodes lease 256 calls at a time; then checks that the agreement
/// counted exactly the calls that ran.
async fn agreement_overhead(scale: &Scale) {
    let options = TestnetOptions { args: vec!["--lease-calls".into(), "256".into()], ..Default::default() };
    let testnet = Testnet::start(3, options).await.expect("the agreement testnet starts");
    let leader = testnet.leader(Duration::from_secs(60)).await.expect("a leader");
    let follower = (leader + 1) % 3;
    let keys = install_echo_plugin(&testnet, leader);
    let api = testnet.nodes[leader].address.api.as_str();
    let (provider, consumer) = (keys.path().join("publisher.key"), keys.path().join("bench.key"));
    let (provider_pub, consumer_pub) = (format!("{}.pub", provider.display()), format!("{}.pub", consumer.display()));
    let cli = |args: &[&str]| zeromesh_testnet::cli(args).expect("the agreement command succeeds");
    cli(&["plugin", "keygen", "--out", consumer.to_str().unwrap()]);
    cli(&["agent", "spawn", "bench", "--owner", "bench", "--tool", "echo", "--key", &consumer_pub, "--node", api]);
    let limit = format!("calls={LIMIT}/lifetime");
    cli(&[
        "agreement",
        "create",
        "bench-deal",
        "--consumer",
        "bench",
        "--provider",
        &provider_pub,
        "--tool",
        "echo",
        "--limit",
        &limit,
        "--expires-in",
        "1d",
        "--node",
        api,
    ]);
    cli(&["agreement", "sign", "bench-deal", "--key", consumer.to_str().unwrap(), "--node", api]);
    cli(&["agreement", "sign", "bench-deal", "--key", provider.to_str().unwrap(), "--node", api]);
    cli(&["agreement", "activate", "bench-deal", "--node", api]);
    // An agent with agreements calls only what a policy permits.
    let permit = json!({ "text": "permit(principal, action, resource);", "description": "bench" });
    testnet.call(leader, "policy_set", permit).await.expect("the policy set is set");
    let ready = || async {
        let shown = testnet.call(follower, "agreement_show", json!({ "id": "bench-deal" })).await.ok()?;
        let policies = testnet.call(follower, "policy_show", json!({})).await.ok()?;
        let echo = testnet.call(follower, "echo", json!({})).await.ok();
        (shown["state"] == "active" && policies["version"] == 1 && echo.is_some()).then_some(())
    };
    wait_until("the follower to run echo under the agreement", Duration::from_secs(60), ready)
        .await
        .expect("the follower is ready");
    println!("mesh/agreement: echo on node {follower}, for no agent / under an agreement, reserved per call / leased");
    let on_follower = Target::Zeromesh { api: testnet.nodes[follower].address.api.clone() };
    for clients in [1, 10, 64] {
        let free = report(
            &format!("mesh/echo-unmetered/clients={clients}"),
            "calls",
            load(&on_follower, clients, scale, Operation::PluginEcho).await,
        );
        let per_call = report(
            &format!("mesh/echo-agreement-per-call/clients={clients}"),
            "calls",
            load(&on_follower, clients, scale, Operation::PluginEchoMetered { own_key: true }).await,
        );
        let leased = report(
            &format!("mesh/echo-agreement-leased/clients={clients}"),
            "calls",
            load(&on_follower, clients, scale, Operation::PluginEchoMetered { own_key: false }).await,
        );
        println!(
            "mesh/agreement/clients={clients}: per call {:.2}x, leased {:.2}x the unmetered rate",
            per_call / free,
            leased / free
        );
    }
    let ran = METERED_CALLS.load(std::sync::atomic::Ordering::Relaxed);
    let counted = wait_until("every lease to return", Duration::from_secs(30), || async {
        let usage = testnet.call(follower, "agreement_usage", json!({ "id": "bench-deal" })).await.ok()?;
        usage["limits"][0]["used"].as_u64().filter(|used| *used == ran)
    })
    .await
    .expect("the agreement counts exactly the calls that ran");
    println!("mesh/agreement: {counted} calls counted for {ran} that ran, limit {LIMIT}");
}

/// `echo` called through a member that runs no plugins (each call runs on
/// a peer, with a receipt) against the same call run locally (`local`: the
/// rates at 1, 10 and 64 clients measured just before, on the follower).
async fn offload_overhead(testnet: &mut Testnet, scale: &Scale, local: &[f64]) {
    let caller = testnet.add_node_with(&["--run-plugins", "false"]).await.expect("a node without plugins joins");
    wait_until("the node without plugins to call echo on a peer", Duration::from_secs(60), || async {
        let mut client = testnet.client(caller).await.ok()?;
        let result = client.request("tools/call", json!({ "name": "echo", "arguments": {} })).await.ok()?;
        (result["_meta"]["zeromesh/host"]["offloaded"] == true).then_some(())
    })
    .await
    .expect("the node without plugins offloads echo");
    println!("mesh/offload: echo called on node {caller}, which runs no plugins: every call runs on a peer");
    let on_caller = Target::Zeromesh { api: testnet.nodes[caller].address.api.clone() };
    for (clients, local) in [1, 10, 64].into_iter().zip(local) {
        let offloaded = report(
            &format!("mesh/plugin-echo/offloaded/clients={clients}"),
            "calls",
            load(&on_caller, clients, scale, Operation::PluginEcho).await,
        );
        println!("mesh/offload/clients={clients}: {:.2}x the local rate", offloaded / local);
    }
}

/// The benchmark agreement's limit: never reached, always checked.
const LIMIT: u64 = 1_000_000_000;

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// A size in KiB from `/proc/<pid>/status` (`VmRSS`, `RssAnon`, `RssFile`...).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The CPU time process `pid` used so far, in seconds (0 once it is gone).
fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> =
        text.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let field = |index: usize| fields.get(index).and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
    // utime + stime, in clock ticks: Linux counts 100 per second.
    (field(11) + field(12)) as f64 / 100.0
}

/// CPU time used over one load by its servers (`pids`) and by this process,
/// the load generator. On a machine whose cores the load fills, a write's
/// CPU time decides the rate, and it moves less than the rate when the
/// machine's speed drifts: a second measure of the same load.
struct CpuMeter {
    pids: Vec<u32>,
    servers: f64,
    own: f64,
    started: Instant,
}

impl CpuMeter {
    fn start(pids: &[u32]) -> CpuMeter {
        let servers = pids.iter().map(|pid| cpu_seconds(*pid)).sum();
        CpuMeter { pids: pids.to_vec(), servers, own: cpu_seconds(std::process::id()), started: Instant::now() }
    }

    /// Prints the servers' and the load generator's CPU time per operation
    /// at `rate` operations/s since `start` (connections included) and
    /// returns the servers' (µs).
    fn per_op(&self, name: &str, operation: &str, rate: f64) -> f64 {
        let operations = (rate * self.started.elapsed().as_secs_f64()).max(1.0);
        let servers: f64 = self.pids.iter().map(|pid| cpu_seconds(*pid)).sum();
        // A process gone meanwhile reads as 0: no time, not a negative one.
        let micros = |seconds: f64| seconds.max(0.0) * 1e6 / operations;
        let (servers, own) = (micros(servers - self.servers), micros(cpu_seconds(std::process::id()) - self.own));
        println!("{name}: CPU per {operation} {servers:.0} µs in the servers, {own:.0} µs in the load generator");
        servers
    }
}

/// Prints one node's RSS and its CPU use over `scale.idle` of idleness.
async fn idle_usage(node: &zeromesh_testnet::TestNode, scale: &Scale, when: &str) {
    let pid = node.pid().expect("running");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = cpu_seconds(pid);
    let idle_started = Instant::now();
    tokio::time::sleep(scale.idle).await;
    let cpu_percent = (cpu_seconds(pid) - cpu_before) / idle_started.elapsed().as_secs_f64() * 100.0;
    println!("mesh/idle-node: RSS {} MiB, CPU {cpu_percent:.2}% of a core ({when})", rss_kib(pid) / 1024);
}

/// Mean and largest RSS (MiB) and CPU (% of a core) of every node of
/// `testnet` over `scale.idle` of idleness, after a second of rest.
async fn idle_all(testnet: &Testnet, scale: &Scale) -> ((f64, f64), (f64, f64)) {
    let pids: Vec<u32> = testnet.nodes.iter().filter_map(|node| node.pid()).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<f64> = pids.iter().map(|pid| cpu_seconds(*pid)).collect();
    let started = Instant::now();
    tokio::time::sleep(scale.idle).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu: Vec<f64> =
        pids.iter().zip(before).map(|(pid, before)| (cpu_seconds(*pid) - before) / seconds * 100.0).collect();
    let rss: Vec<f64> = pids.iter().map(|pid| rss_kib(*pid) as f64 / 1024.0).collect();
    let mean_and_max = |values: &[f64]| {
        (values.iter().sum::<f64>() / values.len().max(1) as f64, values.iter().copied().fold(0.0, f64::max))
    };
    (mean_and_max(&rss), mean_and_max(&cpu))
}

/// Testnets of growing size (3 voters, the rest non-voting members): how
/// long every node takes to join, how long until every node holds every
/// advert, each node's idle RSS and CPU; on the largest, writes and
/// linearizable reads through a non-voter against the leader.
async fn scaling(scale: &Scale) {
    for nodes in scale.scaling_nodes {
        // Default settings (an advert every 5 s): what idle costs as shipped.
        let started = Instant::now();
        let testnet = Testnet::start(*nodes, TestnetOptions::default()).await.expect("the testnet starts");
        let joined = started.elapsed();
        wait_until("every node to hold every advert", Duration::from_secs(120), || async {
            for index in 0..*nodes {
                let answer = testnet.call(index, "mesh_peers", json!({})).await.ok()?;
                (answer["adverts"].as_array()?.len() >= *nodes).then_some(())?;
            }
            Some(())
        })
        .await
        .expect("adverts spread");
        let converged = started.elapsed();
        println!(
            "mesh/scale/{nodes}-nodes: all members and 3 voters after {:.1} s, every advert on every node after {:.1} s",
            joined.as_secs_f64(),
            converged.as_secs_f64()
        );
        let ((rss_mean, rss_max), (cpu_mean, cpu_max)) = idle_all(&testnet, scale).await;
        println!(
            "mesh/scale/{nodes}-nodes: idle RSS mean {rss_mean:.0} MiB (max {rss_max:.0}), CPU mean {cpu_mean:.2}% of a core (max {cpu_max:.2}%)"
        );
        if Some(nodes) != scale.scaling_nodes.last() {
            continue;
        }
        let leader = testnet.leader(Duration::from_secs(60)).await.expect("a leader");
        let status = testnet.status(leader).await.expect("the cluster's status");
        let member = status["non_voters"].as_array().and_then(|ids| ids.first()?.as_u64()).expect("a non-voter");
        let non_voter =
            testnet.nodes.iter().position(|node| node.address.node_id == member).expect("the non-voter's node");
        let on_leader = Target::Zeromesh { api: testnet.nodes[leader].address.api.clone() };
        let on_non_voter = Target::Zeromesh { api: testnet.nodes[non_voter].address.api.clone() };
        for (name, operation) in [("write", Operation::Write), ("linearizable-read", Operation::LinearizableRead)] {
            let here = report(
                &format!("mesh/scale/{nodes}-nodes/{name}/leader/clients=64"),
                "ops",
                load(&on_leader, 64, scale, operation).await,
            );
            let there = report(
                &format!("mesh/scale/{nodes}-nodes/{name}/non-voter/clients=64"),
                "ops",
                load(&on_non_voter, 64, scale, operation).await,
            );
            println!("ratio non-voter/leader {name}s/s at 64 clients: {:.2}", there / here.max(1e-9));
        }
        let ((rss_mean, rss_max), (cpu_mean, cpu_max)) = idle_all(&testnet, scale).await;
        println!(
            "mesh/scale/{nodes}-nodes: after the load, RSS mean {rss_mean:.0} MiB (max {rss_max:.0}), CPU mean {cpu_mean:.2}% (max {cpu_max:.2}%)"
        );
    }
}

/// The peer API layer on a follower of a 3-node `--dev` testnet running
/// `binary`: stale `memory_get` and the echo plugin's `tools/call` at 1, 10
/// and 64 clients, over WebSocket and over Streamable HTTP. Calls/s by name.
async fn api_layer(scale: &Scale, label: &str, binary: Option<PathBuf>) -> Vec<(String, f64)> {
    let options = TestnetOptions { binary, ..Default::default() };
    let testnet = Testnet::start(3, options).await.expect("a 3-node testnet starts");
    let leader = testnet.leader(Duration::from_secs(60)).await.expect("a leader");
    let follower = (leader + 1) % 3;
    let _keys = install_echo_plugin(&testnet, leader);
    wait_until("the follower to run the plugin", Duration::from_secs(60), || async {
        testnet.call(follower, "echo", json!({})).await.ok()
    })
    .await
    .expect("the follower runs the echo plugin");
    let api = testnet.nodes[follower].address.api.clone();
    testnet.call(follower, "memory_put", json!({ "path": "agent-b/c0/0", "value": "v" })).await.expect("writes");
    let mut rates = Vec::new();
    for (transport, target) in
        [("ws", Target::Zeromesh { api: api.clone() }), ("http", Target::ZeromeshHttp { api: api.clone() })]
    {
        for (operation, name) in [(Operation::StaleRead, "memory_get"), (Operation::PluginEcho, "echo")] {
            for clients in [1, 10, 64] {
                let name = format!("mesh/api/{transport}/{name}/clients={clients}");
                let rate =
                    report(&format!("{name} ({label})"), "calls", load(&target, clients, scale, operation).await);
                rates.push((name, rate));
            }
        }
    }
    rates
}

/// The API layer of this build, and of `ZEROMESH_BASELINE_BIN` when set,
/// with the ratio of each figure to the baseline's.
async fn api_layer_comparison(scale: &Scale) {
    let current = api_layer(scale, "this build", None).await;
    let Some(baseline_bin) = std::env::var_os("ZEROMESH_BASELINE_BIN").map(PathBuf::from) else {
        println!("mesh/api: ZEROMESH_BASELINE_BIN is not set; no baseline to compare with");
        return;
    };
    let baseline = api_layer(scale, "baseline", Some(baseline_bin)).await;
    for ((name, rate), (_, base)) in current.iter().zip(&baseline) {
        println!("ratio {name}: this build / baseline calls/s {:.2}", rate / base.max(1e-9));
    }
}

/// Durable writes through the leader of a 3-node `--dev` testnet running
/// `binary`, at 1, 10 and 64 clients. Writes/s by name.
async fn writes(scale: &Scale, label: &str, binary: Option<PathBuf>) -> Vec<(String, f64)> {
    let testnet = Testnet::start(3, TestnetOptions { binary, ..Default::default() }).await.expect("a testnet starts");
    let leader = testnet.leader(Duration::from_secs(60)).await.expect("a leader");
    let target = Target::Zeromesh { api: testnet.nodes[leader].address.api.clone() };
    let mut rates = Vec::new();
    for clients in [1, 10, 64] {
        let name = format!("mesh/trace/memory_put/clients={clients}");
        rates.push((
            name.clone(),
            report(&format!("{name} ({label})"), "writes", load(&target, clients, scale, Operation::Write).await),
        ));
        // The leader makes a checkpoint every 10 s while the tree grows:
        // its last cosigning round, under this load (a baseline may have none).
        if let Some(seconds) = checkpoint_round_seconds(&testnet.nodes[leader].address.api).await {
            println!("{name} ({label}): last cosigning round {:.2} ms", seconds * 1e3);
        }
    }
    rates
}

/// The values of unlabelled series `names` on a node's /metrics, if found.
async fn metric_values<const N: usize>(api: &str, names: [&str; N]) -> [Option<f64>; N] {
    let body = zeromesh_testnet::http_request(api, "GET", "/metrics", &[], b"").await.map(|(_, body)| body);
    let body = body.unwrap_or_default();
    names.map(|name| body.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()))
}

/// Counters `names` on a node's /metrics, 0 for one not found (not yet counted).
async fn counter_values<const N: usize>(api: &str, names: [&str; N]) -> [f64; N] {
    metric_values(api, names).await.map(|value| value.unwrap_or(0.0))
}

/// A node's forwarding counters from its /metrics: writes, the requests
/// that carried them, reads, and their read-index requests.
async fn forwarding(api: &str) -> [f64; 4] {
    let names = [
        "zeromesh_forwarded_writes_total",
        "zeromesh_forwarded_write_requests_total",
        "zeromesh_forwarded_reads_total",
        "zeromesh_forwarded_read_index_requests_total",
    ];
    counter_values(api, names).await
}

/// Each node's counts of writes that waited for RocksDB's flushes: seconds
/// stalled, and stops at the memory budget.
async fn write_stalls(testnet: &Testnet) -> Vec<[f64; 2]> {
    let names = ["zeromesh_storage_write_stall_seconds_total", "zeromesh_storage_memory_limit_stops_total"];
    let mut stalls = Vec::new();
    for node in &testnet.nodes {
        stalls.push(counter_values(&node.address.api, names).await);
    }
    stalls
}

/// Prints how writes waited for flushes on each node between two readings
/// of [`write_stalls`].
fn report_write_stalls(name: &str, before: &[[f64; 2]], after: &[[f64; 2]]) {
    let per_node: Vec<String> = before
        .iter()
        .zip(after)
        .map(|(before, after)| format!("{:.0} ms, {:.0} stops", (after[0] - before[0]) * 1e3, after[1] - before[1]))
        .collect();
    println!(
        "{name}: writes held by flushes per node (stalled, stopped at the memory budget): {}",
        per_node.join("; ")
    );
}

/// `zeromesh_trace_checkpoint_round_seconds` from a node's /metrics.
async fn checkpoint_round_seconds(api: &str) -> Option<f64> {
    let [seconds] = metric_values(api, ["zeromesh_trace_checkpoint_round_seconds"]).await;
    seconds
}

/// Writes with this build (every entry a trace leaf) and with the baseline
/// build, with the ratio of each figure to the baseline's.
async fn trace_cost_comparison(scale: &Scale) {
    let Some(baseline_bin) = std::env::var_os("ZEROMESH_BASELINE_BIN").map(PathBuf::from) else {
        println!("mesh/trace: ZEROMESH_BASELINE_BIN is not set; no baseline to compare with");
        return;
    };
    // Alternate the builds, so a slower stretch of a shared machine does not
    // fall on one of them only.
    let first = writes(scale, "this build", None).await;
    let baseline = writes(scale, "baseline", Some(baseline_bin.clone())).await;
    let second = writes(scale, "this build", None).await;
    let again = writes(scale, "baseline", Some(baseline_bin)).await;
    for (((name, a), (_, b)), ((_, c), (_, d))) in first.iter().zip(&baseline).zip(second.iter().zip(&again)) {
        println!("ratio {name}: this build / baseline writes/s {:.2}", (a + c) / (b + d).max(1e-9));
    }
}

/// A 3-node testnet once all three are voters, its leader and a follower.
async fn three_voters() -> (Testnet, usize, usize) {
    let testnet = Testnet::start(3, TestnetOptions::default()).await.expect("a 3-node testnet starts");
    testnet
        .wait_for_cluster("three voters", Duration::from_secs(60), |status| {
            status["voters"].as_array().is_some_and(|v| v.len() == 3)
        })
        .await
        .expect("three voters");
    let leader = testnet.leader(Duration::from_secs(60)).await.expect("a leader");
    (testnet, leader, (leader + 1) % 3)
}

/// The echo plugin installed through the leader and called on a follower at
/// 1, 10 and 64 clients, then the same through a member that runs no
/// plugins (offloaded).
async fn plugin_calls(testnet: &mut Testnet, leader: usize, follower: usize, scale: &Scale) {
    install_echo_plugin(testnet, leader);
    wait_until("the follower to run the plugin", Duration::from_secs(60), || async {
        testnet.call(follower, "echo", json!({})).await.ok()
    })
    .await
    .expect("the follower runs the echo plugin");
    println!("mesh/plugin: the echo example plugin, installed through node {leader}, called on node {follower}");
    let on_follower = Target::Zeromesh { api: testnet.nodes[follower].address.api.clone() };
    let local = calls_at_1_10_64("mesh/plugin-echo/follower", &on_follower, scale, Operation::PluginEcho).await;
    offload_overhead(testnet, scale, &local).await;
}

/// `operation` against `target` at 1, 10 and 64 clients, each reported as
/// `{name}/clients=N`: the calls/s of each.
async fn calls_at_1_10_64(name: &str, target: &Target, scale: &Scale, operation: Operation) -> Vec<f64> {
    let mut rates = Vec::new();
    for clients in [1, 10, 64] {
        rates.push(report(
            &format!("{name}/clients={clients}"),
            "calls",
            load(target, clients, scale, operation).await,
        ));
    }
    rates
}

/// Durable writes and linearizable reads on the leader and on a follower of
/// a 3-node testnet, and the same writes against etcd: the ratios the
/// consensus path is judged by (follower against leader, zeromesh against
/// etcd), all from one run. etcd's writes at each client count run right
/// after the leader's: this machine's speed drifts over a minute, so each
/// ratio compares two loads seconds apart, not a minute.
async fn consensus_against_etcd(testnet: &Testnet, leader: usize, follower: usize, scale: &Scale) {
    let on_leader = Target::Zeromesh { api: testnet.nodes[leader].address.api.clone() };
    let on_follower = Target::Zeromesh { api: testnet.nodes[follower].address.api.clone() };
    let etcd = etcd::start().await;
    println!("mesh: 3 nodes on 127.0.0.1, durable writes, 256-byte values");
    let nodes: Vec<u32> = testnet.nodes.iter().filter_map(|node| node.pid()).collect();
    let mut zeromesh_writes = Vec::new();
    for clients in [1, 64] {
        let name = format!("mesh/write/leader/clients={clients}");
        let meter = CpuMeter::start(&nodes);
        let stalls = write_stalls(testnet).await;
        let ours = report(&name, "writes", load(&on_leader, clients, scale, Operation::Write).await);
        let our_cpu = meter.per_op(&name, "write", ours);
        report_write_stalls(&name, &stalls, &write_stalls(testnet).await);
        zeromesh_writes.push(ours);
        if let Some(etcd) = &etcd {
            let name = format!("etcd/write/clients={clients}");
            let meter = CpuMeter::start(&etcd.pids);
            let theirs = report(&name, "writes", load(&etcd.target, clients, scale, Operation::Write).await);
            let their_cpu = meter.per_op(&name, "write", theirs);
            println!("ratio zeromesh/etcd writes/s at {clients} clients: {:.2}", ours / theirs.max(1e-9));
            println!(
                "ratio etcd/zeromesh server CPU per write at {clients} clients: {:.2}",
                their_cpu / our_cpu.max(1e-9)
            );
        }
    }
    drop(etcd);
    report("mesh/write/leader/clients=10", "writes", load(&on_leader, 10, scale, Operation::Write).await);
    let api = &testnet.nodes[follower].address.api;
    let before = forwarding(api).await;
    let meter = CpuMeter::start(&nodes);
    let stalls = write_stalls(testnet).await;
    let forwarded =
        report("mesh/write/follower/clients=64", "writes", load(&on_follower, 64, scale, Operation::Write).await);
    meter.per_op("mesh/write/follower/clients=64", "write", forwarded);
    report_write_stalls("mesh/write/follower/clients=64", &stalls, &write_stalls(testnet).await);
    println!("ratio follower/leader writes/s at 64 clients: {:.2}", forwarded / zeromesh_writes[1].max(1e-9));
    let after = forwarding(api).await;
    println!(
        "mesh/write/follower/clients=64: {:.1} writes per forwarded request",
        (after[0] - before[0]) / (after[1] - before[1]).max(1.0)
    );
    for clients in [1, 10] {
        report(
            &format!("mesh/linearizable-read/leader/clients={clients}"),
            "reads",
            load(&on_leader, clients, scale, Operation::LinearizableRead).await,
        );
    }
    let on_leader_reads = report(
        "mesh/linearizable-read/leader/clients=64",
        "reads",
        load(&on_leader, 64, scale, Operation::LinearizableRead).await,
    );
    let on_follower_reads = report(
        "mesh/linearizable-read/follower/clients=64",
        "reads",
        load(&on_follower, 64, scale, Operation::LinearizableRead).await,
    );
    println!(
        "ratio follower/leader linearizable reads/s at 64 clients: {:.2}",
        on_follower_reads / on_leader_reads.max(1e-9)
    );
    let read = forwarding(api).await;
    println!(
        "mesh/linearizable-read/follower/clients=64: {:.1} reads per read-index request",
        (read[2] - after[2]) / (read[3] - after[3]).max(1.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    // `scripts/bench.sh log_append` runs only the benchmarks matching its filter.
    if let Some(filter) = std::env::args().skip(1).find(|arg| !arg.starts_with("--")) {
        if !"mesh".contains(filter.as_str()) && !filter.contains("mesh") && filter != "soak" {
            return;
        }
    }
    let scale = if full { &FULL } else { &SMOKE };
    if std::env::args().any(|arg| arg == "mesh-api") {
        api_layer_comparison(scale).await;
        return;
    }
    if std::env::args().any(|arg| arg == "mesh-trace") {
        trace_cost_comparison(scale).await;
        return;
    }
    if std::env::args().any(|arg| arg == "soak") {
        soak::run(scale).await;
        return;
    }
    if std::env::args().any(|arg| arg == "mesh-scale") {
        scaling(scale).await;
        return;
    }
    if std::env::args().any(|arg| arg == "mesh-etcd") {
        let (testnet, leader, follower) = three_voters().await;
        consensus_against_etcd(&testnet, leader, follower, scale).await;
        return;
    }
    if std::env::args().any(|arg| arg == "mesh-tools") {
        let (mut testnet, leader, follower) = three_voters().await;
        plugin_calls(&mut testnet, leader, follower, scale).await;
        drop(testnet);
        federation::compare(scale).await;
        return;
    }

    let (mut testnet, leader, follower) = three_voters().await;
    consensus_against_etcd(&testnet, leader, follower, scale).await;
    plugin_calls(&mut testnet, leader, follower, scale).await;
    idle_usage(&testnet.nodes[follower], scale, "after the load above").await;
    drop(testnet);

    agreement_overhead(scale).await;
    federation::compare(scale).await;
    api_layer_comparison(scale).await;

    let testnet = Testnet::start(3, TestnetOptions::default()).await.expect("an idle 3-node testnet starts");
    tokio::time::sleep(Duration::from_secs(2)).await;
    idle_usage(&testnet.nodes[1], scale, "a fresh member, no load").await;
    drop(testnet);

    let nodes = scale.advert_nodes;
    let options = TestnetOptions { args: vec!["--advert-interval-ms".into(), "1000".into()], ..Default::default() };
    let testnet = Testnet::start(nodes, options).await.expect("the advert testnet starts");
    let peers: Vec<String> = testnet.nodes.iter().map(|node| node.address.peer_id.clone()).collect();
    wait_until("every node to hold every advert", Duration::from_secs(60), || async {
        for index in 0..nodes {
            let answer = testnet.call(index, "mesh_peers", json!({})).await.ok()?;
            let seen = answer["adverts"].as_array()?.len();
            (seen >= peers.len()).then_some(())?;
        }
        Some(())
    })
    .await
    .expect("adverts spread");
    let mut spreads = advert_spread(&testnet, scale.advert_rounds).await;
    spreads.sort();
    println!(
        "mesh/advert-to-{nodes}-nodes: {} publications, median {:.0} ms, max {:.0} ms (polling every node in turn)",
        spreads.len(),
        percentile(&spreads, 0.5).as_secs_f64() * 1e3,
        spreads.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    drop(testnet);
    scaling(scale).await;
    if !full {
        // The soak run is `soak` alone (ten minutes); the smoke pass tries it.
        soak::run(scale).await;
    }
}

#[path = "mesh/federation.rs"]
mod federation;
#[path = "mesh/soak.rs"]
mod soak;

/// The same write workload against a 3-member etcd on 127.0.0.1, when built
/// with the `etcd` feature and Debian's `etcd` is installed (scripts/bench.sh
/// installs it).
mod etcd {
    use super::*;

    /// A running etcd cluster; dropping it stops its members.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub struct Etcd {
        pub target: Target,
        /// The members' process ids.
        pub pids: Vec<u32>,
        #[cfg(feature = "etcd")]
        _members: Vec<tokio::process::Child>,
        #[cfg(feature = "etcd")]
        _dir: tempfile::TempDir,
    }

    /// Starts 3 etcd members, or says why there are none.
    #[cfg(feature = "etcd")]
    pub async fn start() -> Option<Etcd> {
        if std::process::Command::new("etcd").arg("--version").output().is_err() {
            println!("etcd: not installed; comparison skipped");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let base = 23790 + (std::process::id() % 100) as u16 * 10;
        let peer = |member: u16| format!("http://127.0.0.1:{}", base + 5 + member);
        let client = |member: u16| format!("http://127.0.0.1:{}", base + member);
        let cluster = (0..3).map(|member| format!("e{member}={}", peer(member))).collect::<Vec<_>>().join(",");
        let mut members = Vec::new();
        for member in 0..3u16 {
            let child = tokio::process::Command::new("etcd")
                .args(["--name", &format!("e{member}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("e{member}")))
                .args(["--listen-client-urls", &client(member), "--advertise-client-urls", &client(member)])
                .args(["--listen-peer-urls", &peer(member), "--initial-advertise-peer-urls", &peer(member)])
                .args([
                    "--initial-cluster",
                    &cluster,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "zeromesh-bench",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("etcd starts");
            members.push(child);
        }
        let endpoints: Vec<String> = (0..3).map(client).collect();
        let target = Target::Etcd { endpoints: endpoints.clone() };
        wait_until("etcd to accept writes", Duration::from_secs(60), || {
            let endpoints = endpoints.clone();
            async move {
                let mut client = etcd_client::Client::connect(&endpoints, None).await.ok()?;
                client.put("ready", "1", None).await.ok().map(drop)
            }
        })
        .await
        .expect("etcd is up");
        println!("etcd {}: 3 members on 127.0.0.1, default (fsynced) settings, same load generator", etcd_version());
        let pids = members.iter().filter_map(tokio::process::Child::id).collect();
        Some(Etcd { target, pids, _members: members, _dir: dir })
    }

    #[cfg(feature = "etcd")]
    fn etcd_version() -> String {
        std::process::Command::new("etcd")
            .arg("--version")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.lines().next().map(|line| line.trim_start_matches("etcd Version: ").to_owned()))
            .unwrap_or_default()
    }

    #[cfg(not(feature = "etcd"))]
    pub async fn start() -> Option<Etcd> {
        println!("etcd: comparison not built (scripts/bench.sh builds it with --features etcd)");
        None
    }
}
