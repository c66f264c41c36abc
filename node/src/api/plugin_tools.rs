//! The plugin administration tools: install (a package, through Raft),
//! uninstall, trust and distrust publisher keys, and list the registry.

use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use zeromesh_plugins::{CapabilitySet, PublisherKey};
use zeromesh_protocol::plugin::{PluginCommand, PluginOutcome};
use zeromesh_protocol::{Command, CommandReply};

use super::jsonrpc::RpcError;
use super::tools::{arguments, ToolResult};
use crate::cluster::{NodeService, ServiceError};
use crate::plugins::outcome_text;

fn schema(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
}

pub fn definitions() -> Vec<Value> {
    let capabilities = json!({ "type": "array", "items": { "type": "string", "enum": ["log", "memory.read", "memory.write", "clock", "random"] } });
    let publisher = json!({ "type": "string", "description": "publisher public key, 64 hex digits" });
    vec![
        json!({ "name": "plugin_install", "description": "Install a signed plugin package in the whole mesh (replaces an installed plugin of the same name).",
                "inputSchema": schema(json!({ "package_base64": { "type": "string", "description": "the .zmp package file, base64" }, "grant": capabilities }), &["package_base64"]) }),
        json!({ "name": "plugin_uninstall", "description": "Remove an installed plugin from the whole mesh.",
                "inputSchema": schema(json!({ "name": { "type": "string" } }), &["name"]) }),
        json!({ "name": "plugin_trust", "description": "Add a publisher key to the mesh's trusted set.",
                "inputSchema": schema(json!({ "publisher": publisher }), &["publisher"]) }),
        json!({ "name": "plugin_distrust", "description": "Remove a publisher key from the trusted set and uninstall every plugin it signed.",
                "inputSchema": schema(json!({ "publisher": publisher }), &["publisher"]) }),
        json!({ "name": "plugin_list", "description": "Installed plugins, trusted publishers, and what runs on this node.",
                "inputSchema": schema(json!({}), &[]) }),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallArgs {
    package_base64: String,
    #[serde(default)]
    grant: CapabilitySet,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameArgs {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublisherArgs {
    publisher: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

fn publisher(tool: &str, args: Value) -> Result<PublisherKey, RpcError> {
    let parsed: PublisherArgs = arguments(tool, args)?;
    PublisherKey::parse(&parsed.publisher)
        .map_err(|error| RpcError::invalid_params(format!("invalid arguments for {tool}: {error}")))
}

async fn registry(service: &NodeService, command: PluginCommand) -> ToolResult {
    let (log_index, reply) = service.propose(Command::Plugin(command)).await?;
    let mut answer = match &reply {
        CommandReply::Plugin(PluginOutcome::Trusted { already }) => json!({ "trusted": true, "already": already }),
        CommandReply::Plugin(PluginOutcome::Distrusted { was_trusted, uninstalled }) => {
            json!({ "distrusted": true, "was_trusted": was_trusted, "uninstalled": uninstalled })
        }
        CommandReply::Plugin(PluginOutcome::Uninstalled { name }) => json!({ "uninstalled": name }),
        CommandReply::Plugin(PluginOutcome::NotInstalled { name }) => {
            return Err(ServiceError::Invalid(format!("no plugin named {name:?} is installed")))
        }
        other => return Err(ServiceError::Refused(outcome_text(other))),
    };
    answer["log_index"] = json!(log_index);
    Ok(answer)
}

/// Runs plugin administration tool `name`, or `None` if it is not one.
pub async fn call(
    service: &Arc<NodeService>,
    name: &str,
    args: &Value,
    progress: &super::server::Progress,
) -> Option<Result<ToolResult, RpcError>> {
    let args = args.clone();
    let answer = match name {
        "plugin_install" => {
            let parsed: InstallArgs = match arguments(name, args) {
                Ok(parsed) => parsed,
                Err(error) => return Some(Err(error)),
            };
            let package = match base64::engine::general_purpose::STANDARD.decode(parsed.package_base64.as_bytes()) {
                Ok(package) => package,
                Err(error) => {
                    return Some(Err(RpcError::invalid_params(format!(
                        "invalid arguments for plugin_install: package_base64: {error}"
                    ))))
                }
            };
            service
                .plugins
                .install(service, &package, parsed.grant, &|step, message| progress.report(step, 4, message))
                .await
        }
        "plugin_uninstall" => match arguments::<NameArgs>(name, args) {
            Ok(parsed) => registry(service, PluginCommand::Uninstall { name: parsed.name }).await,
            Err(error) => return Some(Err(error)),
        },
        "plugin_trust" | "plugin_distrust" => match publisher(name, args) {
            Ok(publisher) if name == "plugin_trust" => {
                registry(service, PluginCommand::TrustPublisher { publisher }).await
            }
            Ok(publisher) => registry(service, PluginCommand::DistrustPublisher { publisher }).await,
            Err(error) => return Some(Err(error)),
        },
        "plugin_list" => match arguments::<NoArgs>(name, args) {
            Ok(_) => service.plugins.list(service).await,
            Err(error) => return Some(Err(error)),
        },
        _ => return None,
    };
    Some(Ok(answer))
}
