//! `zeromesh agent ...`: the mesh's agent registry, through a node's peer
//! API. Changes need an admin token in ZEROMESH_TOKEN.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};
use zeromesh::client::ApiClient;
use zeromesh::tools::agents::{export_document, verify_export};
use zeromesh_protocol::agent::AgentSnapshot;
use zeromesh_protocol::limits::MAX_API_MESSAGE_BYTES;

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Registers an agent with the tools it may call.
    Spawn {
        /// The agent's id: the first segment of its memory paths.
        id: String,
        /// Who answers for the agent.
        #[arg(long)]
        owner: String,
        /// A tool it may call: a name, `prefix*`, or `*` for all; repeatable.
        #[arg(long = "tool", required = true)]
        tools: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// A label policies can match on (`principal.tags.contains("...")`); repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// The public key it signs agreements with: 64 hex digits, or a file
        /// holding them (`zeromesh plugin keygen` writes one as FILE.pub).
        #[arg(long)]
        key: Option<String>,
        /// Most bytes its live memories may hold; writes past it are refused.
        #[arg(long)]
        memory_quota_bytes: Option<u64>,
        /// Most of its calls one node serves at once; more are refused.
        #[arg(long)]
        max_concurrent_calls: Option<u32>,
        /// Its own quota, `metric=max/window` (calls, fuel, wall_ms, bytes_in,
        /// bytes_out per minute, hour, day or lifetime), counting every call
        /// it makes, under an agreement or not; repeatable.
        #[arg(long = "limit")]
        limits: Vec<String>,
    },
    /// Pauses an agent: its calls are refused, with the reason, everywhere.
    Pause {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Resumes a paused agent.
    Resume { id: String },
    /// Terminates an agent for good and revokes its tokens; its memories stay.
    Terminate { id: String },
    /// Keeps a snapshot of an agent: its manifest and live memories at one log index.
    Snapshot { id: String, snapshot: String },
    /// Restores a snapshot into an agent: a new id, or an existing agent.
    Recover {
        snapshot: String,
        #[arg(long)]
        into: String,
    },
    /// Writes a snapshot to a portable file signed with KEY (a key file
    /// from `zeromesh plugin keygen`).
    Export {
        snapshot: String,
        #[arg(long)]
        key: std::path::PathBuf,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Imports an exported agent into this mesh, after checking the file's
    /// signature (by the key in --trust, when given) and hash.
    Import {
        file: std::path::PathBuf,
        /// The agent to restore into (default: the exported agent's id).
        #[arg(long)]
        into: Option<String>,
        /// The exporter's public key (64 hex digits or a .pub file).
        #[arg(long)]
        trust: Option<String>,
    },
    /// Shows one agent.
    Show { id: String },
    /// Lists every agent.
    List,
}

/// Runs an agent command against `node`.
pub async fn run(node: &str, command: AgentCommand) -> anyhow::Result<()> {
    let mut client = ApiClient::connect(node).await.with_context(|| format!("connecting to {node}"))?;
    let (tool, arguments) = match &command {
        AgentCommand::Spawn {
            id,
            owner,
            tools,
            description,
            tags,
            key,
            memory_quota_bytes,
            max_concurrent_calls,
            limits,
        } => {
            let key = key.as_deref().map(public_key_text).transpose()?;
            let arguments = json!({
                "id": id, "owner": owner, "tools": tools, "description": description, "tags": tags, "key": key,
                "memory_quota_bytes": memory_quota_bytes, "max_concurrent_calls": max_concurrent_calls,
                "limits": limits,
            });
            ("agent_spawn", arguments)
        }
        AgentCommand::Pause { id, reason } => ("agent_pause", json!({ "id": id, "reason": reason })),
        AgentCommand::Resume { id } => ("agent_resume", json!({ "id": id })),
        AgentCommand::Terminate { id } => ("agent_terminate", json!({ "id": id })),
        AgentCommand::Show { id } => ("agent_show", json!({ "id": id })),
        AgentCommand::Snapshot { id, snapshot } => ("agent_snapshot", json!({ "id": id, "snapshot": snapshot })),
        AgentCommand::Recover { snapshot, into } => ("agent_recover", json!({ "snapshot": snapshot, "into": into })),
        AgentCommand::Export { snapshot, key, out } => {
            let key = crate::plugin_cli::read_key(key)?;
            let reading = zeromesh::cli::spinner(format!("reading snapshot {snapshot} from {node}"));
            let shown = client.call_tool("agent_snapshot_show", json!({ "snapshot": snapshot })).await;
            reading.finish_and_clear();
            let shown = shown?;
            let snapshot: AgentSnapshot = serde_json::from_value(shown["snapshot"].clone()).context("the snapshot")?;
            let document = export_document(&snapshot, &key);
            std::fs::write(out, serde_json::to_vec_pretty(&document)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "exported agent {} ({} memories, sha256 {}) to {}",
                snapshot.agent.id,
                snapshot.memories.len(),
                document["sha256"].as_str().unwrap_or_default(),
                out.display()
            );
            return Ok(());
        }
        AgentCommand::Import { file, into, trust } => {
            let text = zeromesh::files::read_limited(file, MAX_API_MESSAGE_BYTES - 64 * 1024, "export file")?;
            let document: Value = serde_json::from_slice(&text).context("the export file is not JSON")?;
            let (snapshot, signer) =
                verify_export(&document).map_err(|reason| anyhow::anyhow!("{}: {reason}", file.display()))?;
            if let Some(trusted) = trust {
                let trusted = public_key_text(trusted)?;
                anyhow::ensure!(signer.to_string() == trusted, "trust check failed: signed by {signer}, not {trusted}");
            }
            let into = into.clone().unwrap_or(snapshot.agent.id);
            ("agent_import", json!({ "export": document, "into": into }))
        }
        AgentCommand::List => ("agent_list", json!({})),
    };
    let working = zeromesh::cli::spinner(format!("{tool} on {node}"));
    let answer = client.call_tool(tool, arguments).await.with_context(|| format!("{tool} on {node}"));
    working.finish_and_clear();
    let answer = answer?;
    match command {
        AgentCommand::List => {
            for agent in answer["agents"].as_array().into_iter().flatten() {
                println!("{}", line(agent));
            }
        }
        AgentCommand::Show { .. } => println!("{}", serde_json::to_string_pretty(&answer)?),
        AgentCommand::Snapshot { .. } => println!(
            "snapshot {} of agent {}: {} memories, {} bytes, sha256 {} (log index {})",
            answer["snapshot"].as_str().unwrap_or_default(),
            answer["id"].as_str().unwrap_or_default(),
            answer["memories"],
            answer["bytes"],
            answer["sha256"].as_str().unwrap_or_default(),
            answer["log_index"]
        ),
        AgentCommand::Recover { .. } | AgentCommand::Import { .. } => println!(
            "agent {} now holds snapshot {} ({} memories{}; log index {})",
            answer["id"].as_str().unwrap_or_default(),
            answer["snapshot"].as_str().unwrap_or_default(),
            answer["memories"],
            if answer["spawned"] == true { ", spawned" } else { "" },
            answer["log_index"]
        ),
        _ => println!(
            "agent {} {} (log index {}{})",
            answer["id"].as_str().unwrap_or_default(),
            answer["state"].as_str().unwrap_or_default(),
            answer["log_index"],
            match answer["tokens_revoked"].as_u64() {
                Some(revoked) if revoked > 0 => format!(", tokens revoked: {revoked}"),
                _ => String::new(),
            }
        ),
    }
    Ok(())
}

/// One agent on one line: id, state, owner, tools.
fn line(agent: &Value) -> String {
    let tools: Vec<&str> = agent["tools"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    format!(
        "{} {} owner={} tools={}",
        agent["id"].as_str().unwrap_or_default(),
        agent["state"].as_str().unwrap_or_default(),
        agent["owner"].as_str().unwrap_or_default(),
        tools.join(",")
    )
}

/// A public key given on the command line: 64 hex digits, or a file holding them.
pub fn public_key_text(given: &str) -> anyhow::Result<String> {
    if given.len() == 64 && given.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Ok(given.to_owned());
    }
    let text = zeromesh::files::read_limited(std::path::Path::new(given), 1024, "public key file")?;
    let text = String::from_utf8(text).context("the public key file is not text")?;
    let key = text.trim();
    if key.len() != 64 || !key.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        anyhow::bail!("{given}: a public key is 64 hex digits");
    }
    Ok(key.to_owned())
}
