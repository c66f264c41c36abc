//! The token administration tools (admin only): create a token (its text is
//! shown once; nodes keep its hash), revoke one, list them.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use zeromesh_kernel::Access;
use zeromesh_protocol::auth::{Role, TokenCommand, TokenOutcome};
use zeromesh_protocol::{Command, CommandReply};

use super::{invalid, Invocation, NoArgs, ToolDecl, ToolEnv, ToolError, ToolOutcome};
use crate::cluster::ServiceError;

pub(super) fn tools() -> Vec<ToolDecl> {
    vec![
        ToolDecl::new(
            "token_create",
            "Create an API token (shown once). Roles: admin, agent (one agent's memories and plugin calls), read.",
            Access::Admin,
            create,
        ),
        ToolDecl::new(
            "token_revoke",
            "Revoke an API token by id; every node refuses it once applied.",
            Access::Admin,
            revoke,
        ),
        ToolDecl::new("token_list", "API tokens: ids, roles, agents (never secrets).", Access::Admin, list),
    ]
}

/// What a token may do.
#[derive(Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RoleArg {
    /// Everything.
    Admin,
    /// One agent's memories and plugin calls.
    Agent,
    /// Reads only.
    Read,
}

impl From<RoleArg> for Role {
    fn from(arg: RoleArg) -> Role {
        match arg {
            RoleArg::Admin => Role::Admin,
            RoleArg::Agent => Role::Agent,
            RoleArg::Read => Role::Read,
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateArgs {
    role: RoleArg,
    /// The agent of an agent token.
    agent: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RevokeArgs {
    /// 16 hex digits, the part after zm_.
    id: String,
}

async fn propose(env: &ToolEnv, command: TokenCommand) -> Result<(u64, TokenOutcome), ToolError> {
    match env.cluster.propose(Command::Token(command)).await? {
        (index, CommandReply::Token(outcome)) => Ok((index, outcome)),
        (_, other) => Err(ServiceError::Unknown(format!("unexpected reply {other:?}")).into()),
    }
}

async fn create(env: Arc<ToolEnv>, _: Invocation, args: CreateArgs) -> ToolOutcome {
    let role = Role::from(args.role);
    let (token, command) =
        crate::tokens::mint(role, args.agent.clone()).map_err(|error| ServiceError::Unavailable(error.to_string()))?;
    command.validate().map_err(|error| invalid("token_create", error))?;
    match propose(&env, command).await? {
        (log_index, TokenOutcome::Created { id }) => Ok(json!({
            "token": token, "id": id, "role": role.name(), "agent": args.agent, "log_index": log_index,
        })),
        (_, TokenOutcome::Full { limit }) => {
            Err(ServiceError::Refused(format!("the cluster already keeps {limit} tokens; revoke some")).into())
        }
        (_, other) => Err(ServiceError::Unknown(format!("unexpected outcome {other:?}")).into()),
    }
}

async fn revoke(env: Arc<ToolEnv>, _: Invocation, args: RevokeArgs) -> ToolOutcome {
    match propose(&env, TokenCommand::Revoke { id: args.id }).await? {
        (log_index, TokenOutcome::Revoked { id }) => Ok(json!({ "revoked": id, "log_index": log_index })),
        (_, TokenOutcome::NotFound { id }) => Err(ServiceError::Invalid(format!("no token {id} exists")).into()),
        (_, other) => Err(ServiceError::Unknown(format!("unexpected outcome {other:?}")).into()),
    }
}

async fn list(env: Arc<ToolEnv>, _: Invocation, _: NoArgs) -> ToolOutcome {
    let tokens = env.cluster.consensus.tokens().await.map_err(ServiceError::from)?;
    Ok(json!({ "tokens": tokens.iter().map(|token| json!({
        "id": token.id, "role": token.role.name(), "agent": token.agent,
        "created_at_ms": token.created_at_ms, "log_index": token.log_index,
    })).collect::<Vec<_>>() }))
}
