//! The agent registry's tools: spawn, pause, resume and terminate agents
//! (admin only, through Raft), and show them; snapshot, recover, and import
//! them from signed export files.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use zeromesh_kernel::Access;
use zeromesh_protocol::agent::{AgentCommand, AgentOutcome, AgentRecord, AgentSnapshot, AgentState};
use zeromesh_protocol::agreement::{AgreementRecord, Limit};
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
                let limits = args
                    .limits
                    .iter()
                    .map(|limit| Limit::parse(limit))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| invalid("agent_spawn", error))?;
                let command = AgentCommand::Spawn {
                    id: args.id,
                    owner: args.owner,
                    description: args.description,
                    tools: args.tools,
                    tags: args.tags,
                    key,
                    memory_quota_bytes: args.memory_quota_bytes,
                    max_concurrent_calls: args.max_concurrent_calls,
                    limits,
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
            "One agent: owner, description, allowed tools, state, memory bytes stored and its quota, and its own quotas per window with their usage.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, args: IdArgs| async move {
                match env.cluster.consensus.agent(&args.id).map_err(ServiceError::from)? {
                    Some(agent) => {
                        let mut shown = agent_json(&agent);
                        shown["memory_bytes"] =
                            json!(env.cluster.consensus.stored_bytes(&args.id).map_err(ServiceError::from)?);
                        if !agent.limits.is_empty() {
                            let account = AgreementRecord::for_agent(&agent);
                            let ledger = env.cluster.consensus.ledger(&account.terms.id).map_err(ServiceError::from)?;
                            shown["quotas"] = super::agreements::usage_json(&account, &ledger);
                        }
                        Ok(shown)
                    }
                    None => Err(ServiceError::Invalid(format!("no agent {:?} is registered", args.id)).into()),
                }
            },
        ),
        ToolDecl::new(
            "agent_snapshot",
            "Keep a snapshot of an agent: its manifest and all its live memories at one log index, as an immutable record (its SHA-256 answered).",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: SnapshotArgs| async move {
                change(&env, "agent_snapshot", AgentCommand::Snapshot { id: args.id, snapshot: args.snapshot }).await
            },
        )
        .long(),
        ToolDecl::new(
            "agent_recover",
            "Restore a snapshot into an agent: a new id (spawned with the snapshot's manifest) or an existing agent, whose memories become the snapshot's.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: RecoverArgs| async move {
                change(&env, "agent_recover", AgentCommand::Recover { id: args.into, snapshot: args.snapshot }).await
            },
        )
        .long(),
        ToolDecl::new(
            "agent_snapshot_show",
            "A snapshot whole: manifest, memories (values in hex), log index, SHA-256; `zeromesh agent export` signs it into a file.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: SnapshotIdArgs| async move {
                let found = env.cluster.consensus.agent_snapshot(args.snapshot.clone()).await.map_err(ServiceError::from)?;
                let snapshot = found
                    .ok_or_else(|| ServiceError::Invalid(format!("no snapshot {:?}", args.snapshot)))?;
                Ok(json!({ "snapshot": snapshot, "sha256": hex::encode(snapshot.sha256()) }))
            },
        ),
        ToolDecl::new(
            "agent_import",
            "Import an agent from an export file's contents (`zeromesh agent export`): its signature and SHA-256 are checked, then it is restored into an agent as agent_recover does.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: ImportArgs| async move {
                let (snapshot, _) = verify_export(&args.export).map_err(|reason| invalid("agent_import", reason))?;
                let into = args.into.unwrap_or_else(|| snapshot.agent.id.clone());
                change(&env, "agent_import", AgentCommand::Import { id: into, snapshot: Box::new(snapshot) }).await
            },
        )
        .long(),
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
    /// Labels policies can match on (`principal.tags.contains("...")`).
    #[serde(default)]
    #[schemars(length(max = zeromesh_protocol::limits::MAX_TAGS_PER_RECORD))]
    tags: Vec<String>,
    /// The ed25519 public key (64 hex digits) it signs agreements with.
    #[serde(default)]
    key: Option<String>,
    /// Most bytes its live memories may hold (values, content types, tags).
    #[serde(default)]
    memory_quota_bytes: Option<u64>,
    /// Most of its calls one node serves at once.
    #[serde(default)]
    #[schemars(range(min = 1))]
    max_concurrent_calls: Option<u32>,
    /// Its own quotas as `metric=max/window` (as an agreement's limits):
    /// every metered call it makes counts against them.
    #[serde(default)]
    #[schemars(length(max = zeromesh_protocol::limits::MAX_AGREEMENT_LIMITS))]
    limits: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SnapshotArgs {
    /// The agent to copy.
    id: String,
    /// The new snapshot's id.
    snapshot: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RecoverArgs {
    snapshot: String,
    /// The agent to restore into: a new id, or an existing agent.
    into: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SnapshotIdArgs {
    snapshot: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ImportArgs {
    /// An export file's contents, as `zeromesh agent export` wrote it.
    export: Value,
    /// The agent to restore into (default: the exported agent's id).
    into: Option<String>,
}

/// What an export file says it is.
pub const EXPORT_FORMAT: &str = "zeromesh-agent-export";
/// The export format's version this node writes and reads.
pub const EXPORT_VERSION: u64 = 1;
/// Domain separation of an export's signature.
const EXPORT_CONTEXT: &[u8] = b"zeromesh-agent-export-v1\0";

/// An export file's contents: `snapshot` signed by `key` over its SHA-256.
pub fn export_document(snapshot: &AgentSnapshot, key: &ed25519_dalek::SigningKey) -> Value {
    use ed25519_dalek::Signer;
    let sha256 = snapshot.sha256();
    let signature = key.sign(&[EXPORT_CONTEXT, &sha256].concat());
    json!({
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "snapshot": snapshot,
        "sha256": hex::encode(sha256),
        "signer": PublisherKey::of(key).to_string(),
        "signature": hex::encode(signature.to_bytes()),
    })
}

/// Checks an export file's contents: format and version, that the snapshot
/// hashes to its SHA-256, that the signature over it is its signer's, and
/// every limit of the snapshot. Names the check that failed.
pub fn verify_export(document: &Value) -> Result<(AgentSnapshot, PublisherKey), String> {
    if document["format"] != EXPORT_FORMAT {
        return Err(format!("format check failed: not a {EXPORT_FORMAT} file"));
    }
    if document["version"] != EXPORT_VERSION {
        return Err(format!(
            "version check failed: version {} (this node reads {EXPORT_VERSION})",
            document["version"]
        ));
    }
    let snapshot: AgentSnapshot = serde_json::from_value(document["snapshot"].clone())
        .map_err(|error| format!("format check failed: the snapshot does not parse: {error}"))?;
    snapshot.validate().map_err(|error| format!("limit check failed: {error}"))?;
    let sha256 = snapshot.sha256();
    if document["sha256"].as_str() != Some(hex::encode(sha256).as_str()) {
        return Err("hash check failed: the snapshot's SHA-256 is not the one the file states".to_owned());
    }
    let signer = PublisherKey::parse(document["signer"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
    let signature: [u8; 64] = hex::decode(document["signature"].as_str().unwrap_or_default())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or("signature check failed: the signature is not 64 bytes in hex")?;
    let key =
        ed25519_dalek::VerifyingKey::from_bytes(&signer.0).map_err(|_| "signature check failed: a bad signer key")?;
    key.verify_strict(&[EXPORT_CONTEXT, &sha256].concat(), &ed25519_dalek::Signature::from_bytes(&signature))
        .map_err(|_| format!("signature check failed: not signed by {signer}, or changed after signing"))?;
    Ok((snapshot, signer))
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
        "tags": agent.tags,
        "key": agent.key.map(|key| key.to_string()),
        "memory_quota_bytes": agent.memory_quota_bytes,
        "max_concurrent_calls": agent.max_concurrent_calls,
        "limits": agent.limits.iter().map(ToString::to_string).collect::<Vec<_>>(),
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
        CommandReply::Agent(AgentOutcome::Snapshotted { id, snapshot, sha256, memories, bytes }) => Ok(json!({
            "id": id, "snapshot": snapshot, "sha256": hex::encode(sha256), "memories": memories, "bytes": bytes,
            "log_index": log_index,
        })),
        CommandReply::Agent(AgentOutcome::Recovered { id, snapshot, memories, spawned }) => Ok(json!({
            "id": id, "snapshot": snapshot, "memories": memories, "spawned": spawned, "log_index": log_index,
        })),
        CommandReply::Agent(AgentOutcome::SnapshotExists { snapshot }) => {
            Err(ServiceError::Invalid(format!("snapshot {snapshot} already exists")).into())
        }
        CommandReply::Agent(AgentOutcome::SnapshotNotFound { snapshot }) => {
            Err(ServiceError::Invalid(format!("no snapshot {snapshot:?}")).into())
        }
        CommandReply::Agent(AgentOutcome::SnapshotRefused { reason }) => Err(ServiceError::Refused(reason).into()),
        CommandReply::Rejected(reason) => Err(ServiceError::Invalid(reason).into()),
        CommandReply::Agent(AgentOutcome::Full { limit }) => {
            Err(ServiceError::Refused(format!("the registry already keeps its maximum of {limit} agents")).into())
        }
        other => Err(ServiceError::Unknown(format!("unexpected reply {other:?}")).into()),
    }
}
