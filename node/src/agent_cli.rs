//! `zeromesh agent ...`: the mesh's agent registry, through a node's peer
//! API. Changes need an admin token in ZEROMESH_TOKEN.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};
use zeromesh::client::ApiClient;

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
        /// The public key it signs agreements with: 64 hex digits, or a file
        /// holding them (`zeromesh plugin keygen` writes one as FILE.pub).
        #[arg(long)]
        key: Option<String>,
        /// Most bytes its live memories may hold; writes past it are refused.
        #[arg(long)]
        memory_quota_bytes: Option<u64>,
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
    /// Shows one agent.
    Show { id: String },
    /// Lists every agent.
    List,
}

/// Runs an agent command against `node`.
pub async fn run(node: &str, command: AgentCommand) -> anyhow::Result<()> {
    let mut client = ApiClient::connect(node).await.with_context(|| format!("connecting to {node}"))?;
    let (tool, arguments) = match &command {
        AgentCommand::Spawn { id, owner, tools, description, key, memory_quota_bytes } => {
            let key = key.as_deref().map(public_key_text).transpose()?;
            let arguments = json!({
                "id": id, "owner": owner, "tools": tools, "description": description, "key": key,
                "memory_quota_bytes": memory_quota_bytes,
            });
            ("agent_spawn", arguments)
        }
        AgentCommand::Pause { id, reason } => ("agent_pause", json!({ "id": id, "reason": reason })),
        AgentCommand::Resume { id } => ("agent_resume", json!({ "id": id })),
        AgentCommand::Terminate { id } => ("agent_terminate", json!({ "id": id })),
        AgentCommand::Show { id } => ("agent_show", json!({ "id": id })),
        AgentCommand::List => ("agent_list", json!({})),
    };
    let answer = client.call_tool(tool, arguments).await.with_context(|| format!("{tool} on {node}"))?;
    match command {
        AgentCommand::List => {
            for agent in answer["agents"].as_array().into_iter().flatten() {
                println!("{}", line(agent));
            }
        }
        AgentCommand::Show { .. } => println!("{}", serde_json::to_string_pretty(&answer)?),
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
    let text = crate::plugin_cli::read_limited(std::path::Path::new(given), 1024, "public key file")?;
    let text = String::from_utf8(text).context("the public key file is not text")?;
    let key = text.trim();
    if key.len() != 64 || !key.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        anyhow::bail!("{given}: a public key is 64 hex digits");
    }
    Ok(key.to_owned())
}
