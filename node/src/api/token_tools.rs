//! The token administration tools (admin only): create a token (its text is
//! shown once; nodes keep its hash), revoke one, list them.

use serde::Deserialize;
use serde_json::{json, Value};
use zeromesh_protocol::auth::{Role, TokenCommand, TokenOutcome};
use zeromesh_protocol::{Command, CommandReply};

use super::jsonrpc::RpcError;
use super::tools::{arguments, ToolResult};
use crate::cluster::{NodeService, ServiceError};

fn schema(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
}

pub fn definitions() -> Vec<Value> {
    vec![
        json!({ "name": "token_create", "description": "Create an API token (shown once). Roles: admin, agent (one agent's memories and plugin calls), read.",
                "inputSchema": schema(json!({ "role": { "type": "string", "enum": ["admin", "agent", "read"] }, "agent": { "type": "string", "description": "the agent of an agent token" } }), &["role"]) }),
        json!({ "name": "token_revoke", "description": "Revoke an API token by id; every node refuses it once applied.",
                "inputSchema": schema(json!({ "id": { "type": "string", "description": "16 hex digits, the part after zm_" } }), &["id"]) }),
        json!({ "name": "token_list", "description": "API tokens: ids, roles, agents (never secrets).", "inputSchema": schema(json!({}), &[]) }),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateArgs {
    role: String,
    agent: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeArgs {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

async fn propose(service: &NodeService, command: TokenCommand) -> Result<(u64, TokenOutcome), ServiceError> {
    match service.propose(Command::Token(command)).await? {
        (index, CommandReply::Token(outcome)) => Ok((index, outcome)),
        (_, other) => Err(ServiceError::Unknown(format!("unexpected reply {other:?}"))),
    }
}

/// Runs token tool `name`, or `None` if it is not one.
pub async fn call(service: &NodeService, name: &str, args: &Value) -> Option<Result<ToolResult, RpcError>> {
    let args = args.clone();
    Some(Ok(match name {
        "token_create" => {
            let parsed: CreateArgs = match arguments(name, args) {
                Ok(parsed) => parsed,
                Err(error) => return Some(Err(error)),
            };
            let Some(role) = Role::parse(&parsed.role) else {
                return Some(Err(RpcError::invalid_params(
                    "invalid arguments for token_create: role is admin, agent or read",
                )));
            };
            let (token, command) = match super::auth::new_token(role, parsed.agent.clone()) {
                Ok(made) => made,
                Err(error) => return Some(Ok(Err(ServiceError::Unavailable(error.to_string())))),
            };
            if let Err(error) = command.validate() {
                return Some(Err(RpcError::invalid_params(format!("invalid arguments for token_create: {error}"))));
            }
            match propose(service, command).await {
                Ok((log_index, TokenOutcome::Created { id })) => Ok(json!({
                    "token": token, "id": id, "role": role.name(), "agent": parsed.agent, "log_index": log_index,
                })),
                Ok((_, TokenOutcome::Full { limit })) => {
                    Err(ServiceError::Refused(format!("the cluster already keeps {limit} tokens; revoke some")))
                }
                Ok((_, other)) => Err(ServiceError::Unknown(format!("unexpected outcome {other:?}"))),
                Err(error) => Err(error),
            }
        }
        "token_revoke" => {
            let parsed: RevokeArgs = match arguments(name, args) {
                Ok(parsed) => parsed,
                Err(error) => return Some(Err(error)),
            };
            match propose(service, TokenCommand::Revoke { id: parsed.id }).await {
                Ok((log_index, TokenOutcome::Revoked { id })) => Ok(json!({ "revoked": id, "log_index": log_index })),
                Ok((_, TokenOutcome::NotFound { id })) => Err(ServiceError::Invalid(format!("no token {id} exists"))),
                Ok((_, other)) => Err(ServiceError::Unknown(format!("unexpected outcome {other:?}"))),
                Err(error) => Err(error),
            }
        }
        "token_list" => {
            if let Err(error) = arguments::<NoArgs>(name, args) {
                return Some(Err(error));
            }
            match service.consensus.tokens().await {
                Ok(tokens) => Ok(json!({ "tokens": tokens.iter().map(|token| json!({
                    "id": token.id, "role": token.role.name(), "agent": token.agent,
                    "created_at_ms": token.created_at_ms, "log_index": token.log_index,
                })).collect::<Vec<_>>() })),
                Err(error) => Err(ServiceError::from(error)),
            }
        }
        _ => return None,
    }))
}
