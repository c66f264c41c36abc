//! The agent registry's tools: spawn, pause, resume and terminate agents
//! (admin only, through Raft), and show them.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use zeromesh_kernel::Access;
use zeromesh_protocol::agent::{AgentCommand, AgentOutcome, AgentRecord, AgentState};
use zeromesh_protocol::plugin::PublisherKey;
use zeromesh_protocol::{Command, CommandReply};

use super::{invalid, Invocation, NoArgs, ToolDecl, ToolEnv, ToolOutcome};
use crate::cluster::ServiceError;

pub(super) fn tools() -> Vec<ToolDecl> {
    vec![
        ToolDecl::new(
            "agent_spawn",
            "Register an agent: an identity whose calls the mesh governs, with the tools it may call.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: SpawnArgs| async move {
                let key = match &args.key {
                    Some(text) => Some(PublisherKey::parse(text).map_err(|error| invalid("agent_spawn", error))?),
                    None => None,
                };
                let command = AgentCommand::Spawn {
                    id: args.id,
                    owner: args.owner,
                    description: args.description,
                    tools: args.tools,
                    key,
                    memory_quota_bytes: args.memory_quota_bytes,
                };
                change(&env, "agent_spawn", command).await
            },
        ),
        ToolDecl::new(
            "agent_pause",
            "Pause an agent: every node refuses its calls, with the reason, until it is resumed.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: PauseArgs| async move {
                change(&env, "agent_pause", AgentCommand::Pause { id: args.id, reason: args.reason }).await
            },
        ),
        by_id("agent_resume", "Resume a paused agent.", |id| AgentCommand::Resume { id }),
        by_id(
            "agent_terminate",
            "Terminate an agent for good: its calls are refused and its tokens revoked; its memories stay.",
            |id| AgentCommand::Terminate { id },
        ),
        ToolDecl::new(
            "agent_show",
            "One agent: owner, description, allowed tools, state, memory bytes stored and its quota.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, args: IdArgs| async move {
                match env.cluster.consensus.agent(&args.id).map_err(ServiceError::from)? {
                    Some(agent) => {
                        let mut shown = agent_json(&agent);
                        shown["memory_bytes"] =
                            json!(env.cluster.consensus.stored_bytes(&args.id).map_err(ServiceError::from)?);
                        Ok(shown)
                    }
                    None => Err(ServiceError::Invalid(format!("no agent {:?} is registered", args.id)).into()),
                }
            },
        ),
        ToolDecl::new(
            "agent_list",
            "Every registered agent, terminated ones included, in id order.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, _: NoArgs| async move {
                let agents = env.cluster.consensus.agents().await.map_err(ServiceError::from)?;
                Ok(json!({ "agents": agents.iter().map(agent_json).collect::<Vec<_>>() }))
            },
        ),
    ]
}

/// An admin tool whose one argument is the agent's id.
fn by_id(name: &'static str, description: &'static str, command: fn(String) -> AgentCommand) -> ToolDecl {
    ToolDecl::new(name, description, Access::Admin, move |env: Arc<ToolEnv>, _: Invocation, args: IdArgs| async move {
        change(&env, name, command(args.id)).await
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SpawnArgs {
    /// The agent's id: the first segment of its memory paths.
    id: String,
    /// Who answers for the agent (an operator's name or key).
    owner: String,
    #[serde(default)]
    description: String,
    /// Tools it may call: exact names, `prefix*`, or `*` for all.
    tools: Vec<String>,
    /// The ed25519 public key (64 hex digits) it signs agreements with.
    #[serde(default)]
    key: Option<String>,
    /// Most bytes its live memories may hold (values, content types, tags).
    #[serde(default)]
    memory_quota_bytes: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PauseArgs {
    id: String,
    /// Shown to the agent with every refused call.
    reason: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct IdArgs {
    /// The agent's id.
    id: String,
}

fn agent_json(agent: &AgentRecord) -> Value {
    let mut shown = json!({
        "id": agent.id,
        "owner": agent.owner,
        "description": agent.description,
        "tools": agent.tools,
        "key": agent.key.map(|key| key.to_string()),
        "memory_quota_bytes": agent.memory_quota_bytes,
        "state": agent.state.name(),
        "spawned_at_ms": agent.spawned_at_ms,
        "changed_at_ms": agent.changed_at_ms,
        "log_index": agent.log_index,
    });
    if let AgentState::Paused { reason } = &agent.state {
        shown["reason"] = json!(reason);
    }
    shown
}

async fn change(env: &ToolEnv, tool: &str, command: AgentCommand) -> ToolOutcome {
    command.validate().map_err(|error| invalid(tool, error))?;
    let (log_index, reply) = env.cluster.propose(Command::Agent(command)).await?;
    match reply {
        CommandReply::Agent(AgentOutcome::Changed { id, state, tokens_revoked }) => Ok(json!({
            "id": id, "state": state.name(), "tokens_revoked": tokens_revoked, "log_index": log_index,
        })),
        CommandReply::Agent(AgentOutcome::Exists { id }) => {
            Err(ServiceError::Invalid(format!("agent {id} already exists (a terminated agent's id is not reused)"))
                .into())
        }
        CommandReply::Agent(AgentOutcome::NotFound { id }) => {
            Err(ServiceError::Invalid(format!("no agent {id:?} is registered")).into())
        }
        CommandReply::Agent(AgentOutcome::IsTerminated { id }) => {
            Err(ServiceError::Invalid(format!("agent {id} is terminated; nothing more can change it")).into())
        }
        CommandReply::Agent(AgentOutcome::Full { limit }) => {
            Err(ServiceError::Refused(format!("the registry already keeps its maximum of {limit} agents")).into())
        }
        other => Err(ServiceError::Unknown(format!("unexpected reply {other:?}")).into()),
    }
}
