//! The official MCP SDKs, unmodified, against a 2-node testnet: the Python
//! SDK (`mcp[ws]` 1.30.0, `websocket_client`) and the TypeScript SDK
//! (`@modelcontextprotocol/sdk` 1.x, `WebSocketClientTransport` with `ws` on
//! Node). Each initialises, lists and calls tools, reads a memory as a
//! resource, subscribes, and hears of a write made through the other node.
//!
//! Then the MCP conformance suite runs against the node's Streamable HTTP
//! endpoint with `clients/conformance-expected-failures.yml`.
//!
//! `scripts/test.sh` installs the SDKs and the suite (in the build cache) and
//! names them in `ZEROMESH_MCP_PYTHON`, `ZEROMESH_MCP_TS_DIR` and
//! `ZEROMESH_MCP_CONFORMANCE_DIR`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use zeromesh_testnet::{Testnet, TestnetOptions};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn clients_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/test.sh, which installs the MCP client SDKs and sets it")
    })
}

async fn run_client(program: &str, args: &[&str], current_dir: &Path) {
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(current_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {program}: {error}"));
    let output = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within {CLIENT_TIMEOUT:?}"))
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && text.contains("client: ok"), "{program} {args:?} failed:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_and_the_conformance_suite_use_the_mesh_unmodified() {
    let testnet = Testnet::start(2, TestnetOptions::default()).await.expect("a 2-node testnet starts");
    let (first, second) = (testnet.nodes[0].address.api.as_str(), testnet.nodes[1].address.api.as_str());

    let python = required_env("ZEROMESH_MCP_PYTHON");
    let script = clients_dir().join("python_client.py");
    run_client(&python, &[script.to_str().unwrap(), first, second], &clients_dir()).await;

    // Node resolves the SDK from the script's folder: run a copy placed there.
    let ts_dir = std::path::PathBuf::from(required_env("ZEROMESH_MCP_TS_DIR"));
    std::fs::copy(clients_dir().join("ts_client.mjs"), ts_dir.join("ts_client.mjs")).expect("copies the TS client");
    run_client("node", &["ts_client.mjs", first, second], &ts_dir).await;

    // The conformance suite over Streamable HTTP: every scenario passes but
    // those listed, with reasons, in the expected-failures file.
    let suite = std::path::PathBuf::from(required_env("ZEROMESH_MCP_CONFORMANCE_DIR"));
    let node22 = suite.join("node_modules/.bin/node");
    let cli = suite.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    let url = format!("http://{}/mcp", first.trim_start_matches("ws://"));
    let expected = clients_dir().join("conformance-expected-failures.yml");
    let results = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(&node22)
        .arg(&cli)
        .args(["server", "--url", &url, "--expected-failures", expected.to_str().unwrap()])
        .current_dir(results.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the conformance suite starts");
    let output = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .expect("the conformance suite finishes in time")
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the conformance suite found unexpected failures or a stale baseline:\n{text}");
    for scenario in
        ["server-initialize", "ping", "tools-list", "resources-list", "logging-set-level", "dns-rebinding-protection"]
    {
        assert!(text.contains(&format!("✓ {scenario}:")), "{scenario} did not pass:\n{text}");
    }
}
