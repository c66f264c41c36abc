//! A federated MCP server's tool (the notes fixture's `lookup`, a stdio
//! server written with the official Python SDK) called through the node
//! that hosts it and through a node that does not, against the same server
//! called directly by rmcp's client, at 1, 10 and 64 clients; then how long
//! calls from another node keep going to a host whose server failed
//! (killed, or hung), with the health settings stated.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::ServiceExt;

use super::*;

/// The health settings of the failover registration.
const HEALTH_INTERVAL_MS: u64 = 1_000;
const HEALTH_TIMEOUT_MS: u64 = 500;
const UNHEALTHY_AFTER: u64 = 2;
/// The per-call timeout of the failover registration: a call to a hung
/// server fails after it.
const CALL_TIMEOUT_MS: u64 = 2_000;
const WAIT: Duration = Duration::from_secs(60);

fn fixture() -> String {
    let path = zeromesh_testnet::package_dir().join("fixtures/notes_server.py");
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// Registers the fixture as `notes` on the nodes `hosts` (through node 0)
/// and waits until node `caller` sees every one of them serving it.
async fn register(testnet: &Testnet, python: &str, hosts: &[usize], caller: usize) {
    let host_nodes: Vec<String> = hosts.iter().map(|index| testnet.nodes[*index].address.node_id.to_string()).collect();
    let arguments = json!({
        "name": "notes",
        "command": [python, fixture()],
        "env": { "NOTES_HOST": "mesh" },
        "host_nodes": host_nodes,
        "call_timeout_ms": CALL_TIMEOUT_MS,
        "health_interval_ms": HEALTH_INTERVAL_MS,
        "health_timeout_ms": HEALTH_TIMEOUT_MS,
        "unhealthy_after": UNHEALTHY_AFTER,
        "wait_ms": WAIT.as_millis() as u64,
    });
    testnet.call(0, "server_register", arguments).await.expect("the server registers");
    for id in &host_nodes {
        wait_until(&format!("node {caller} to see node {id} serving notes"), WAIT, || async {
            serving(testnet, caller, id).await.filter(|serving| *serving)
        })
        .await
        .expect("every host serves notes");
    }
}

/// Whether node `index` sees host `host` serving `notes`.
async fn serving(testnet: &Testnet, index: usize, host: &str) -> Option<bool> {
    let list = testnet.call(index, "server_list", json!({})).await.ok()?;
    let server = list["servers"].as_array()?.iter().find(|server| server["name"] == "notes")?.clone();
    Some(server["running"].as_array()?.iter().any(|entry| entry["nodeId"] == host && entry["serving"] == true))
}

/// The pid of the server process node `index` runs for `notes`.
async fn server_pid(testnet: &Testnet, index: usize) -> Option<u32> {
    let list = testnet.call(index, "server_list", json!({})).await.ok()?;
    let server = list["servers"].as_array()?.iter().find(|server| server["name"] == "notes")?.clone();
    server["here"]["pid"].as_u64().map(|pid| pid as u32)
}

/// `kill -name pid`; whether the process was there to receive it.
fn signal(pid: u32, name: &str) -> bool {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
    status.is_ok_and(|status| status.success())
}

/// One call of the failover load: when it was sent (after the fault),
/// how long it took, whether it succeeded, and the node that served it.
struct Sent {
    at: Duration,
    took: Duration,
    ok: bool,
    host: String,
}

/// Calls `notes.lookup` on node `caller` one after another until `stop`.
fn call_loop(
    api: String,
    fault: Arc<Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Sent>> {
    tokio::spawn(async move {
        let mut client = zeromesh::client::ApiClient::connect(&api).await.expect("connects");
        let mut sent = Vec::new();
        let mut sequence = 0u64;
        while !stop.load(Ordering::Relaxed) {
            sequence += 1;
            let started = Instant::now();
            let params = json!({ "name": "notes.lookup", "arguments": { "key": format!("k{sequence}") } });
            let answer = client.request("tools/call", params).await;
            let took = started.elapsed();
            // Only calls sent after the fault count.
            let Some(fault) = *fault.lock().unwrap() else { continue };
            let Some(at) = started.checked_duration_since(fault) else { continue };
            let (ok, host) = match &answer {
                Ok(result) => (
                    result["isError"] != true,
                    result["_meta"]["zeromesh/host"]["nodeId"].as_str().unwrap_or_default().to_owned(),
                ),
                Err(_) => (false, String::new()),
            };
            sent.push(Sent { at, took, ok, host });
        }
        sent
    })
}

/// Throughput through the host, through another node and directly, then
/// the failover rounds.
pub async fn compare(scale: &Scale) {
    let Ok(python) = std::env::var("ZEROMESH_MCP_PYTHON2") else {
        println!("mesh/federated: ZEROMESH_MCP_PYTHON2 is not set (scripts/mcp-clients.sh sets it); skipped");
        return;
    };
    let testnet = Testnet::start(3, TestnetOptions::default()).await.expect("the federation testnet starts");

    // The same server, one process, called directly and through the mesh.
    let folder = tempfile::tempdir().expect("a temporary folder");
    let mut command = tokio::process::Command::new(&python);
    command.arg(fixture()).env("NOTES_HOST", "direct").current_dir(folder.path());
    let transport = rmcp::transport::TokioChildProcess::new(command).expect("the fixture starts");
    let direct = ().serve(transport).await.expect("the MCP handshake with the fixture");
    let target = Target::McpDirect { peer: direct.peer().clone() };
    let direct_rates = calls_at_1_10_64("mesh/federated/direct", &target, scale, Operation::FederatedLookup).await;
    drop(direct.cancel().await);

    register(&testnet, &python, &[0], 2).await;
    println!("mesh/federated: notes hosted by node 0, called on node 0 (its host) and on node 2 (a hop over the mesh)");
    for (clients, direct) in [1, 10, 64].into_iter().zip(&direct_rates) {
        for (caller, label) in [(0, "on-host"), (2, "through-peer")] {
            let target = Target::Zeromesh { api: testnet.nodes[caller].address.api.clone() };
            let rate = report(
                &format!("mesh/federated/{label}/clients={clients}"),
                "calls",
                load(&target, clients, scale, Operation::FederatedLookup).await,
            );
            println!("mesh/federated/{label}/clients={clients}: {:.2}x the direct rate", rate / direct);
        }
    }

    // Two hosts; node 2 calls one after another while the host its calls
    // go to has its server killed, or stopped (hung: SIGSTOP).
    register(&testnet, &python, &[0, 1], 2).await;
    println!(
        "mesh/federated/failover: hosts node 0 and 1, calls from node 2; health check every {HEALTH_INTERVAL_MS} ms, \
         timeout {HEALTH_TIMEOUT_MS} ms, unhealthy after {UNHEALTHY_AFTER}; calls time out after {CALL_TIMEOUT_MS} ms"
    );
    let api = testnet.nodes[2].address.api.clone();
    for fault in ["KILL", "STOP"] {
        let mut seen = Vec::new();
        let (mut calls, mut failed, mut longest) = (0, 0, Duration::ZERO);
        let mut rerouted = Vec::new();
        for _ in 0..scale.fault_rounds {
            let mut client = testnet.client(2).await.expect("connects");
            let params = json!({ "name": "notes.lookup", "arguments": { "key": "probe" } });
            let probe = client.request("tools/call", params).await.expect("a host serves notes");
            let victim_id = probe["_meta"]["zeromesh/host"]["nodeId"].as_str().expect("the host is named").to_owned();
            let victim = (0..3).find(|index| testnet.nodes[*index].address.node_id.to_string() == victim_id).unwrap();
            let pid = server_pid(&testnet, victim).await.expect("the victim runs the server");
            let fault_at = Arc::new(Mutex::new(None));
            let stop = Arc::new(AtomicBool::new(false));
            let loader = call_loop(api.clone(), fault_at.clone(), stop.clone());
            let started = Instant::now();
            *fault_at.lock().unwrap() = Some(started);
            assert!(signal(pid, fault), "kill -{fault} {pid}");
            wait_until("node 2 to stop routing to the failed host", WAIT, || async {
                (serving(&testnet, 2, &victim_id).await == Some(false)).then_some(())
            })
            .await
            .expect("the failed host is seen");
            seen.push(started.elapsed());
            // Long enough for a call to a hung server to time out.
            tokio::time::sleep(Duration::from_millis(CALL_TIMEOUT_MS + 500)).await;
            stop.store(true, Ordering::Relaxed);
            let sent = loader.await.expect("the load finished");
            calls += sent.len();
            failed += sent.iter().filter(|call| !call.ok).count();
            longest = longest.max(sent.iter().map(|call| call.took).max().unwrap_or_default());
            // From the fault to the first call sent that the other host served.
            if let Some(first) = sent.iter().find(|call| call.ok && call.host != victim_id) {
                rerouted.push(first.at);
            }
            if fault == "STOP" {
                // Its host may have stopped it for good already.
                signal(pid, "CONT");
            }
            wait_until("the failed host to serve again", WAIT, || async {
                serving(&testnet, 2, &victim_id).await.filter(|serving| *serving)
            })
            .await
            .expect("the host recovers");
        }
        seen.sort();
        rerouted.sort();
        let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
        let what = if fault == "KILL" { "killed" } else { "hung" };
        println!(
            "mesh/federated/failover/{what}: {} rounds; node 2 sees the host unhealthy after median {:.0} ms \
             (max {:.0}); first call served by the other host sent median {:.0} ms after the fault; \
             {failed} of {calls} calls failed, longest call {:.0} ms",
            seen.len(),
            ms(percentile(&seen, 0.5)),
            ms(seen.last().copied().unwrap_or_default()),
            ms(percentile(&rerouted, 0.5)),
            ms(longest),
        );
    }
}
