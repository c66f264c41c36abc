//! The MCP clients people install, unmodified, against a 2-node testnet
//! with authentication on:
//! - handshake era over WebSocket: the Python SDK 1.x (`mcp[ws]` 1.30,
//!   `websocket_client`) and the TypeScript SDK 1.x
//!   (`@modelcontextprotocol/sdk`, `WebSocketClientTransport`), which cannot
//!   set headers and so present the token in the URL (`?token=`);
//! - both eras over Streamable HTTP: the Python SDK 2.x (`mcp` 2.3) and the
//!   TypeScript client 2.x (`@modelcontextprotocol/client`), with the token
//!   in `Authorization`;
//! - MCP Inspector's CLI mode, listing and calling tools.
//!
//! Each SDK client lists and calls tools, reads a memory as a resource,
//! subscribes, and hears of a write made through the other node.
//!
//! Then the MCP conformance suite (0.2) runs its server scenarios for both
//! revisions against a `--dev` node's Streamable HTTP endpoint, with an
//! expected-failures file per revision (`clients/conformance-*.yml`).
//!
//! `scripts/test.sh` installs the clients and the suite (in the build cache)
//! and names them in `ZEROMESH_MCP_*`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use zeromesh_testnet::{run_within, Testnet, TestnetOptions};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// One revision's whole conformance run (about fifty scenarios).
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

fn clients_dir() -> std::path::PathBuf {
    zeromesh_testnet::package_dir().join("tests/clients")
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/test.sh, which installs the MCP client SDKs and sets it")
    })
}

async fn run_client(program: &str, args: &[&str], current_dir: &Path) {
    let mut command = tokio::process::Command::new(program);
    command.args(args).current_dir(current_dir);
    let (succeeded, text) = run_within(command, CLIENT_TIMEOUT).await.unwrap_or_else(|error| panic!("{error:#}"));
    assert!(succeeded && text.contains("client: ok"), "{program} {args:?} failed:\n{text}");
}

/// Runs a client script copied into `dir`, whose node_modules it resolves.
async fn run_node_client(dir: &Path, script: &str, args: &[&str]) {
    std::fs::copy(clients_dir().join(script), dir.join(script)).expect("copies the client script");
    let args: Vec<&str> = std::iter::once(script).chain(args.iter().copied()).collect();
    run_client("node", &args, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_and_the_inspector_use_an_authenticated_mesh_unmodified() {
    let testnet =
        Testnet::start(2, TestnetOptions { auth: true, ..Default::default() }).await.expect("a testnet starts");
    let token = testnet.admin_token.clone().expect("the first node printed an admin token");
    let (first, second) = (testnet.nodes[0].address.api.as_str(), testnet.nodes[1].address.api.as_str());
    let with_token = |api: &str| format!("{api}/?token={token}");
    let http = |api: &str| format!("http://{}/mcp", api.trim_start_matches("ws://"));
    let (first_ws, second_ws) = (with_token(first), with_token(second));
    let (first_http, second_http) = (http(first), http(second));

    let python = required_env("ZEROMESH_MCP_PYTHON");
    let script = clients_dir().join("python_client.py");
    run_client(&python, &[script.to_str().unwrap(), &first_ws, &second_ws], &clients_dir()).await;
    let ts_dir = std::path::PathBuf::from(required_env("ZEROMESH_MCP_TS_DIR"));
    run_node_client(&ts_dir, "ts_client.mjs", &[&first_ws, &second_ws]).await;

    let python2 = required_env("ZEROMESH_MCP_PYTHON2");
    let script = clients_dir().join("python_http_client.py");
    run_client(&python2, &[script.to_str().unwrap(), &first_http, &second_http, &token], &clients_dir()).await;
    let ts2_dir = std::path::PathBuf::from(required_env("ZEROMESH_MCP_TS2_DIR"));
    run_node_client(&ts2_dir, "ts_http_client.mjs", &[&first_http, &second_http, &token]).await;

    inspector_lists_and_calls_tools(&first_http, &token).await;
}

/// MCP Inspector's CLI mode (`mcp-inspector --cli`), one invocation per method.
async fn inspector_lists_and_calls_tools(url: &str, token: &str) {
    let dir = std::path::PathBuf::from(required_env("ZEROMESH_MCP_INSPECTOR_DIR"));
    let catalog = tempfile::tempdir().unwrap();
    let inspector = |args: Vec<String>| {
        let authorization = format!("Authorization: Bearer {token}");
        let mut command = tokio::process::Command::new(dir.join("node_modules/.bin/mcp-inspector"));
        command
            .args(["--cli", url, "--header", &authorization])
            .args(args)
            .env("MCP_CATALOG_PATH", catalog.path().join("mcp.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        async move {
            let output = tokio::time::timeout(CLIENT_TIMEOUT, command.output())
                .await
                .expect("the inspector answers in time")
                .expect("the inspector starts");
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(output.status.success(), "inspector failed: {text}{}", String::from_utf8_lossy(&output.stderr));
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|error| panic!("{error}: {text}"))
        }
    };
    let listed = inspector(vec!["--method".into(), "tools/list".into()]).await;
    let tools = listed["tools"].as_array().expect("a tool list");
    assert!(tools.iter().any(|tool| tool["name"] == "memory_put"), "{listed}");
    let args = ["--method", "tools/call", "--tool-name", "memory_put", "--tool-arg", "path=inspector/notes/a"];
    let mut args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    args.push("value=from the inspector".into());
    let called = inspector(args).await;
    assert_eq!(
        (called["isError"].as_bool(), &called["structuredContent"]["outcome"]),
        (Some(false), &serde_json::json!("written")),
        "{called}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_both_revisions_but_the_listed_scenarios() {
    let testnet = Testnet::start(1, TestnetOptions::default()).await.expect("a --dev node starts");
    let url = format!("http://{}/mcp", testnet.nodes[0].address.api.trim_start_matches("ws://"));
    let suite = std::path::PathBuf::from(required_env("ZEROMESH_MCP_CONFORMANCE_DIR"));
    let node22 = suite.join("node_modules/.bin/node");
    let cli = suite.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    for (revision, must_pass) in [
        (
            "2026-07-28",
            &[
                "server-sse-multiple-streams",
                "tools-list",
                "resources-list",
                "sep-2164-resource-not-found",
                "dns-rebinding-protection",
            ][..],
        ),
        (
            "2025-11-25",
            &[
                "server-initialize",
                "ping",
                "tools-list",
                "resources-list",
                "logging-set-level",
                "server-session-lifecycle",
                "server-sse-polling",
                "dns-rebinding-protection",
            ][..],
        ),
    ] {
        let expected = clients_dir().join(format!("conformance-{revision}-expected-failures.yml"));
        let results = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(&node22);
        command.arg(&cli).current_dir(results.path()).args([
            "server",
            "--url",
            &url,
            "--requirements",
            revision,
            "--expected-failures",
            expected.to_str().unwrap(),
        ]);
        let (succeeded, text) = run_within(command, SUITE_TIMEOUT).await.expect("the conformance suite runs");
        assert!(succeeded, "{revision}: unexpected failures or a stale baseline:\n{text}");
        for scenario in must_pass {
            assert!(text.contains(&format!("✓ {scenario}:")), "{revision}: {scenario} did not pass:\n{text}");
        }
    }
}
