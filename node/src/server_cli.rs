//! `zeromesh server ...`: external MCP servers federated into the mesh,
//! through a node's peer API. Registering and unregistering need an admin
//! token in ZEROMESH_TOKEN.

use std::collections::BTreeMap;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};
use zeromesh::client::ApiClient;

#[derive(Subcommand)]
pub enum ServerCommand {
    /// Registers an MCP server with the whole mesh (replaces one of the
    /// same name): a stdio command after `--`, or `--url`. The hosts start
    /// and supervise it; every node offers its tools as NAME.tool.
    Register {
        /// The namespace of its tools.
        name: String,
        /// A Streamable HTTP server's URL (instead of a command).
        #[arg(long)]
        url: Option<String>,
        /// The bearer token for --url, by reference: env:NAME or file:/path,
        /// read on each hosting node.
        #[arg(long)]
        bearer: Option<String>,
        /// A node id that hosts it (repeatable).
        #[arg(long = "host-node", value_name = "NODE_ID")]
        host_nodes: Vec<String>,
        /// A node label (`--labels` of `zeromesh run`) whose nodes host it (repeatable).
        #[arg(long = "host-label", value_name = "LABEL")]
        host_labels: Vec<String>,
        /// An environment variable of the process, in clear: NAME=VALUE (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// An environment variable read from a secret on each host:
        /// NAME=env:VARIABLE or NAME=file:/path (repeatable).
        #[arg(long = "secret", value_name = "NAME=REFERENCE")]
        secrets: Vec<String>,
        /// Longest one call may take (default 30000).
        #[arg(long)]
        call_timeout_ms: Option<u64>,
        /// A tool the mesh offers (repeatable; default: all of them).
        #[arg(long = "allow-tool", value_name = "TOOL")]
        allow_tools: Vec<String>,
        /// Time between health checks (default 5000).
        #[arg(long)]
        health_interval_ms: Option<u64>,
        /// Longest a health check may take (default 2000).
        #[arg(long)]
        health_timeout_ms: Option<u64>,
        /// Failed health checks in a row before a host counts it unhealthy (default 2).
        #[arg(long)]
        unhealthy_after: Option<u32>,
        /// Failed calls in a row that open the circuit (default 5).
        #[arg(long)]
        breaker_after: Option<u32>,
        /// How long an open circuit refuses calls (default 30000).
        #[arg(long)]
        breaker_open_ms: Option<u64>,
        /// Address space the process may map, in MiB.
        #[arg(long)]
        max_memory_mb: Option<u64>,
        /// Waits up to SECONDS for a host to serve its tools.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        wait: u64,
        /// The stdio server's program and arguments, after `--`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Removes a server from the mesh: its hosts stop it.
    Unregister { name: String },
    /// The registered servers, their hosts and health.
    List {
        /// Prints the whole answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `NAME=VALUE` pairs, as a map.
fn pairs(what: &str, given: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    given
        .iter()
        .map(|pair| {
            let (name, value) = pair.split_once('=').with_context(|| format!("--{what} {pair:?}: write NAME=VALUE"))?;
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

fn print_list(answer: &Value) {
    let servers = answer["servers"].as_array().cloned().unwrap_or_default();
    if servers.is_empty() {
        println!("no federated servers");
    }
    for server in servers {
        let running: Vec<String> = server["running"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|host| {
                let state = if host["serving"] == json!(true) { "serving" } else { "not serving" };
                format!("node {} {state}", host["nodeId"].as_str().unwrap_or_default())
            })
            .collect();
        println!(
            "{} (log index {}): {}",
            server["name"].as_str().unwrap_or_default(),
            server["logIndex"],
            if running.is_empty() { "no host runs it".to_owned() } else { running.join(", ") }
        );
        for tool in server["tools"].as_array().into_iter().flatten() {
            let mismatch = if tool["schemaMismatch"] == json!(true) { "  SCHEMA MISMATCH between hosts" } else { "" };
            println!("  {}{mismatch}", tool["name"].as_str().unwrap_or_default());
        }
        if let Some(here) = server["here"].as_object() {
            println!("  here: {}, restarts {}", here["health"].as_str().unwrap_or_default(), here["restarts"]);
        }
    }
}

/// Runs a server command against `node`.
pub async fn run(node: &str, command: ServerCommand) -> anyhow::Result<()> {
    let (tool, arguments) = match &command {
        ServerCommand::Register {
            name,
            url,
            bearer,
            host_nodes,
            host_labels,
            env,
            secrets,
            call_timeout_ms,
            allow_tools,
            health_interval_ms,
            health_timeout_ms,
            unhealthy_after,
            breaker_after,
            breaker_open_ms,
            max_memory_mb,
            wait,
            command,
        } => (
            "server_register",
            json!({
                "name": name,
                "command": command,
                "url": url,
                "bearer": bearer,
                "host_nodes": host_nodes,
                "host_labels": host_labels,
                "env": pairs("env", env)?,
                "secrets": pairs("secret", secrets)?,
                "call_timeout_ms": call_timeout_ms,
                "allow_tools": allow_tools,
                "health_interval_ms": health_interval_ms,
                "health_timeout_ms": health_timeout_ms,
                "unhealthy_after": unhealthy_after,
                "breaker_after": breaker_after,
                "breaker_open_ms": breaker_open_ms,
                "max_memory_mb": max_memory_mb,
                "wait_ms": wait.saturating_mul(1000),
            }),
        ),
        ServerCommand::Unregister { name } => ("server_unregister", json!({ "name": name })),
        ServerCommand::List { .. } => ("server_list", json!({})),
    };
    let mut client = ApiClient::connect(node).await.with_context(|| format!("connecting to {node}"))?;
    let answer = client.call_tool(tool, arguments).await.with_context(|| format!("{tool} on {node}"))?;
    match command {
        ServerCommand::Register { name, wait, .. } => {
            let verb = if answer["replaced"] == json!(true) { "replaced" } else { "registered" };
            println!("server {name} {verb} at log index {}", answer["log_index"]);
            if wait > 0 {
                let tools: Vec<&str> =
                    answer["serving"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                anyhow::ensure!(!tools.is_empty(), "no host served {name} within {wait} s: see `zeromesh server list`");
                println!("served: {}", tools.join(", "));
            }
        }
        ServerCommand::Unregister { name } => {
            println!("server {name} unregistered at log index {}", answer["log_index"])
        }
        ServerCommand::List { json: true } => println!("{}", serde_json::to_string_pretty(&answer)?),
        ServerCommand::List { json: false } => print_list(&answer),
    }
    Ok(())
}
