//! The policy tools: set a new version of the mesh's Cedar policy set
//! (admin only, validated here against the kernel's schema before it is
//! proposed), and read it back; and this node's compiled copy of the
//! current version, which the kernel decides calls with.

use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use zeromesh_consensus::ConsensusNode;
use zeromesh_kernel::{Access, Policies, SCHEMA};
use zeromesh_protocol::limits::{MAX_AGENT_TEXT_BYTES, MAX_POLICY_BYTES, MAX_POLICY_HISTORY};
use zeromesh_protocol::policy::{PolicyCommand, PolicyOutcome, PolicyRecord};
use zeromesh_protocol::{Command, CommandReply};

use super::{invalid, Invocation, NoArgs, ToolDecl, ToolEnv};
use crate::cluster::ServiceError;

/// This node's compiled copy of the policy set it has applied, compiled
/// again only when the version changes.
pub struct PolicyCache {
    current: Mutex<Arc<Policies>>,
}

impl Default for PolicyCache {
    fn default() -> Self {
        PolicyCache { current: Mutex::new(Arc::new(Policies::empty())) }
    }
}

impl PolicyCache {
    /// The current policy set, as `consensus` has applied it.
    pub fn current(&self, consensus: &ConsensusNode) -> Result<Arc<Policies>, String> {
        let version = consensus.policy_version().map_err(|error| error.to_string())?;
        let cached = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        if cached.version() == version {
            return Ok(cached);
        }
        let record =
            consensus.policy(version).map_err(|error| error.to_string())?.unwrap_or_else(PolicyRecord::initial);
        let compiled = Arc::new(Policies::committed(record.version, &record.text));
        *self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = compiled.clone();
        Ok(compiled)
    }
}

pub(super) fn tools() -> Vec<ToolDecl> {
    vec![
        ToolDecl::new(
            "policy_set",
            "Replace the mesh's Cedar policy set with a new version. It is validated against the schema (policy_schema) first; an agent that has agreements may call only what a permit allows, and a forbid stops any agent's call.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: SetArgs| async move {
                let compiled = Policies::compile(0, &args.text).map_err(|errors| invalid("policy_set", errors))?;
                let command =
                    PolicyCommand::Set { text: args.text, description: args.description, expect_version: args.expect_version };
                command.validate().map_err(|error| invalid("policy_set", error))?;
                let (log_index, reply) = env.cluster.propose(Command::Policy(command)).await?;
                match reply {
                    CommandReply::Policy(PolicyOutcome::Set { version }) => {
                        Ok(json!({ "version": version, "log_index": log_index, "policies": names_json(&compiled) }))
                    }
                    CommandReply::Policy(PolicyOutcome::VersionMismatch { current }) => Err(ServiceError::Refused(
                        format!("the policy set is at version {current}, not the expected one; read it again and retry"),
                    )
                    .into()),
                    CommandReply::Rejected(reason) => Err(ServiceError::Invalid(reason).into()),
                    other => Err(ServiceError::Unknown(format!("unexpected reply {other:?}")).into()),
                }
            },
        ),
        ToolDecl::new(
            "policy_show",
            "The mesh's policy set: the current version, or an earlier one while it is kept, with its text and its policies' names.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, args: ShowArgs| async move {
                let consensus = &env.cluster.consensus;
                let record = match args.version {
                    None => consensus.current_policy().map_err(ServiceError::from)?,
                    Some(version) => consensus.policy(version).map_err(ServiceError::from)?.ok_or_else(|| {
                        ServiceError::Invalid(format!(
                            "policy set version {version} is not kept (the last {} versions are)",
                            MAX_POLICY_HISTORY + 1
                        ))
                    })?,
                };
                let compiled = Policies::committed(record.version, &record.text);
                let mut shown = record_json(&record);
                shown["text"] = json!(record.text);
                shown["policies"] = names_json(&compiled);
                Ok(shown)
            },
        ),
        ToolDecl::new(
            "policy_history",
            "The versions of the policy set this mesh keeps, newest first.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, _: NoArgs| async move {
                let kept = env.cluster.consensus.policies(MAX_POLICY_HISTORY + 1).await.map_err(ServiceError::from)?;
                Ok(json!({ "versions": kept.iter().map(record_json).collect::<Vec<_>>() }))
            },
        ),
        ToolDecl::new(
            "policy_validate",
            "Check a Cedar policy set against the schema without setting it: each problem, by policy.",
            Access::Observe,
            |_: Arc<ToolEnv>, _: Invocation, args: ValidateArgs| async move {
                Ok(match Policies::compile(0, &args.text) {
                    Ok(compiled) => json!({ "valid": true, "policies": names_json(&compiled) }),
                    Err(errors) => json!({ "valid": false, "problems": errors.problems }),
                })
            },
        ),
        ToolDecl::new(
            "policy_schema",
            "The Cedar schema policies are written against: the Agent principal, the Tool resource, the call action and its context.",
            Access::Observe,
            |_: Arc<ToolEnv>, _: Invocation, _: NoArgs| async move { Ok(json!({ "schema": SCHEMA })) },
        ),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SetArgs {
    /// The whole policy set, in Cedar's policy language.
    #[schemars(length(max = MAX_POLICY_BYTES))]
    text: String,
    /// Why this version, kept with it.
    #[serde(default)]
    #[schemars(length(max = MAX_AGENT_TEXT_BYTES))]
    description: String,
    /// Set only if this is still the current version (from policy_show).
    expect_version: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ShowArgs {
    /// An earlier version; the current one when left out.
    version: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ValidateArgs {
    #[schemars(length(max = MAX_POLICY_BYTES))]
    text: String,
}

fn record_json(record: &PolicyRecord) -> Value {
    json!({
        "version": record.version,
        "description": record.description,
        "log_index": record.log_index,
        "at_ms": record.at_ms,
    })
}

fn names_json(policies: &Policies) -> Value {
    let listed: Vec<Value> = policies
        .names()
        .into_iter()
        .map(|(name, permit)| json!({ "name": name, "effect": if permit { "permit" } else { "forbid" } }))
        .collect();
    json!(listed)
}
