//! The node's own MCP tools: memory reads and writes, cluster status, mesh
//! peers, plugin administration (and, with `--test-faults`, the isolate/heal
//! switch), then the tools of installed plugins. Each has a JSON Schema for
//! its input; arguments are checked against it before anything runs.

use std::sync::Arc;

use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use zeromesh_consensus::{Consistency, ReadQuery, ReadReply};
use zeromesh_protocol::{
    CommandOutcome, MemoryBatch, MemoryCommand, MemoryPath, MemoryRecord, MemoryValue, PathPrefix,
};

use super::jsonrpc::RpcError;
use crate::cluster::{NodeService, ServiceError};

/// A tool's answer: its structured result, or a failure the caller can read.
pub type ToolResult = Result<Value, ServiceError>;

fn schema(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
}

fn value_properties() -> Value {
    json!({
        "path": { "type": "string", "description": "`{agent}/{name}...`, e.g. agent-7/notes/today" },
        "value": { "type": "string", "description": "UTF-8 text to store" },
        "value_base64": { "type": "string", "description": "bytes to store, base64; instead of `value`" },
        "content_type": { "type": "string", "default": "text/plain" },
        "tags": { "type": "array", "items": { "type": "string" } }
    })
}

fn consistency_property() -> Value {
    json!({ "type": "string", "enum": ["linearizable", "stale"], "default": "linearizable" })
}

/// Names of the node's own tools; a plugin tool with one of these names is
/// namespaced (`plugin.tool`).
pub const BUILTIN_TOOL_NAMES: [&str; 18] = [
    "memory_put",
    "memory_get",
    "memory_list",
    "memory_history",
    "memory_delete",
    "memory_cas",
    "cluster_status",
    "mesh_peers",
    "plugin_install",
    "plugin_uninstall",
    "plugin_trust",
    "plugin_distrust",
    "plugin_list",
    "token_create",
    "token_revoke",
    "token_list",
    "mesh_isolate",
    "mesh_heal",
];

/// Every tool this node offers, its own and its plugins', as `tools/list`
/// shows them.
pub fn definitions(service: &NodeService) -> Vec<Value> {
    let mut tools = builtin_definitions(service.test_faults);
    tools.extend(service.plugins.tool_definitions());
    tools
}

/// Tools per `tools/list` page.
const TOOLS_PAGE: usize = 100;

/// One page of `tools/list`: the node's own tools, then its plugins' tools
/// in name order. The cursor is the position to continue from; a change of
/// the tools between pages (announced by `list_changed`) may shift entries.
pub fn list_page(service: &NodeService, params: &Value) -> Result<Value, RpcError> {
    page_of(definitions(service), params)
}

fn page_of(all: Vec<Value>, params: &Value) -> Result<Value, RpcError> {
    let start = match params.get("cursor") {
        None | Some(Value::Null) => 0,
        Some(Value::String(cursor)) => cursor.parse::<usize>().map_err(|_| {
            RpcError::invalid_params(format!("cursor {cursor:?} did not come from this node's tools/list"))
        })?,
        Some(_) => return Err(RpcError::invalid_params("`cursor` must be a string from an earlier page")),
    };
    let page: Vec<Value> = all.iter().skip(start).take(TOOLS_PAGE).cloned().collect();
    let mut answer = json!({ "tools": page });
    if start + TOOLS_PAGE < all.len() {
        answer["nextCursor"] = json!((start + TOOLS_PAGE).to_string());
    }
    Ok(answer)
}

fn builtin_definitions(test_faults: bool) -> Vec<Value> {
    let put_properties = value_properties();
    let mut cas_properties = value_properties();
    cas_properties["expected_version"] =
        json!({ "type": "integer", "minimum": 0, "description": "the live version expected; 0: none" });
    let mut tools = vec![
        json!({ "name": "memory_put", "description": "Write a new version of an agent memory.", "inputSchema": schema(put_properties, &["path"]) }),
        json!({ "name": "memory_get", "description": "Read an agent memory (the live version, or a kept one).",
                "inputSchema": schema(json!({ "path": { "type": "string" }, "version": { "type": "integer", "minimum": 1 }, "consistency": consistency_property() }), &["path"]) }),
        json!({ "name": "memory_list", "description": "List live memories under a path prefix, in path order, a page at a time.",
                "inputSchema": schema(json!({ "prefix": { "type": "string", "default": "" }, "after": { "type": "string", "description": "next_cursor of the previous page" }, "limit": { "type": "integer", "minimum": 1, "maximum": 1000 }, "consistency": consistency_property() }), &[]) }),
        json!({ "name": "memory_history", "description": "A memory's kept versions, newest first, a page at a time.",
                "inputSchema": schema(json!({ "path": { "type": "string" }, "before": { "type": "integer", "minimum": 1 }, "limit": { "type": "integer", "minimum": 1, "maximum": 1000 }, "consistency": consistency_property() }), &["path"]) }),
        json!({ "name": "memory_delete", "description": "Delete an agent memory (a tombstone version is written).",
                "inputSchema": schema(json!({ "path": { "type": "string" } }), &["path"]) }),
        json!({ "name": "memory_cas", "description": "Write a memory only if its live version is `expected_version`.",
                "inputSchema": schema(cas_properties, &["path", "expected_version"]) }),
        json!({ "name": "cluster_status", "description": "Leader, term, voters, non-voters and each member's log position.", "inputSchema": schema(json!({}), &[]) }),
        json!({ "name": "mesh_peers", "description": "Connected peers and the resource adverts this node has received.", "inputSchema": schema(json!({}), &[]) }),
    ];
    tools.extend(super::plugin_tools::definitions());
    tools.extend(super::token_tools::definitions());
    if test_faults {
        tools.push(json!({ "name": "mesh_isolate", "description": "TEST ONLY: drop all mesh traffic to and from these peers.",
                           "inputSchema": schema(json!({ "peers": { "type": "array", "items": { "type": "string" } } }), &["peers"]) }));
        tools.push(json!({ "name": "mesh_heal", "description": "TEST ONLY: undo every mesh_isolate.", "inputSchema": schema(json!({}), &[]) }));
    }
    tools
}

pub(super) fn arguments<T: DeserializeOwned>(tool: &str, arguments: Value) -> Result<T, RpcError> {
    serde_json::from_value(arguments)
        .map_err(|error| RpcError::invalid_params(format!("invalid arguments for {tool}: {error}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueArgs {
    path: MemoryPath,
    value: Option<String>,
    value_base64: Option<String>,
    content_type: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    expected_version: Option<u64>,
}

impl ValueArgs {
    fn memory_value(&self, tool: &str) -> Result<MemoryValue, RpcError> {
        let value = match (&self.value, &self.value_base64) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|error| {
                RpcError::invalid_params(format!("invalid arguments for {tool}: value_base64: {error}"))
            })?,
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => {
                return Err(RpcError::invalid_params(format!(
                    "invalid arguments for {tool}: give `value` or `value_base64`, not both"
                )))
            }
        };
        Ok(MemoryValue {
            value,
            content_type: self.content_type.clone().unwrap_or_else(|| "text/plain".into()),
            tags: self.tags.clone(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    path: MemoryPath,
    version: Option<u64>,
    consistency: Option<ConsistencyArg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    prefix: PathPrefix,
    after: Option<String>,
    limit: Option<usize>,
    consistency: Option<ConsistencyArg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryArgs {
    path: MemoryPath,
    before: Option<u64>,
    limit: Option<usize>,
    consistency: Option<ConsistencyArg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathArgs {
    path: MemoryPath,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersArgs {
    peers: Vec<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ConsistencyArg {
    Linearizable,
    Stale,
}

fn consistency(arg: Option<ConsistencyArg>) -> Consistency {
    match arg {
        Some(ConsistencyArg::Stale) => Consistency::Stale,
        _ => Consistency::Linearizable,
    }
}

/// A memory record as the API shows it: text values as `value`, other
/// bytes as `value_base64`.
pub fn record_json(record: &MemoryRecord) -> Value {
    let mut shown = json!({
        "path": record.path.as_str(),
        "version": record.version,
        "written_at_ms": record.written_at_ms,
        "log_index": record.log_index,
        "deleted": record.deleted,
        "content_type": record.content_type,
        "tags": record.tags,
    });
    match std::str::from_utf8(&record.value) {
        Ok(text) => shown["value"] = json!(text),
        Err(_) => shown["value_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&record.value)),
    }
    shown
}

fn outcome_json(outcome: &CommandOutcome) -> Value {
    match outcome {
        CommandOutcome::Written { version } => json!({ "outcome": "written", "version": version }),
        CommandOutcome::Deleted { version } => json!({ "outcome": "deleted", "version": version }),
        CommandOutcome::NotFound => json!({ "outcome": "not_found" }),
        CommandOutcome::VersionMismatch { current_version } => {
            json!({ "outcome": "version_mismatch", "current_version": current_version })
        }
    }
}

async fn write_one(service: &NodeService, command: MemoryCommand) -> ToolResult {
    let accepted = service.write(MemoryBatch { commands: vec![command] }).await?;
    let mut answer = accepted.outcomes.first().map(outcome_json).unwrap_or_else(|| json!({}));
    answer["log_index"] = json!(accepted.log_index);
    Ok(answer)
}

async fn read(service: &NodeService, arg: Option<ConsistencyArg>, query: ReadQuery) -> Result<ReadReply, ServiceError> {
    service.read(consistency(arg), query).await
}

/// Runs tool `name` for `agent`. Unknown tools and invalid arguments are
/// protocol errors (`Err`); a tool that ran and failed is `Ok(Err(..))`.
pub async fn call(
    service: &Arc<NodeService>,
    name: &str,
    args: Value,
    agent: &str,
    progress: &super::server::Progress,
) -> Result<ToolResult, RpcError> {
    if let Some(answer) = super::plugin_tools::call(service, name, &args, progress).await {
        return answer;
    }
    if let Some(answer) = super::token_tools::call(service, name, &args).await {
        return answer;
    }
    if !BUILTIN_TOOL_NAMES.contains(&name) {
        return match service.plugins.call(service, name, args, agent).await {
            Some(Ok(result)) => Ok(Ok(result)),
            Some(Err(failure)) => Ok(Err(ServiceError::Refused(failure))),
            None => Err(RpcError::invalid_params(format!(
                "unknown tool {name:?}; tools/list shows the tools this node offers"
            ))),
        };
    }
    let service = service.as_ref();
    Ok(match name {
        "memory_put" | "memory_cas" => {
            let parsed: ValueArgs = arguments(name, args)?;
            let value = parsed.memory_value(name)?;
            let command = match (name, parsed.expected_version) {
                ("memory_put", None) => MemoryCommand::Put { path: parsed.path, value },
                ("memory_cas", Some(expected_version)) => {
                    MemoryCommand::CompareAndSet { path: parsed.path, expected_version, value }
                }
                ("memory_put", Some(_)) => {
                    return Err(RpcError::invalid_params(
                        "invalid arguments for memory_put: `expected_version` belongs to memory_cas",
                    ))
                }
                _ => {
                    return Err(RpcError::invalid_params(
                        "invalid arguments for memory_cas: `expected_version` is required",
                    ))
                }
            };
            write_one(service, command).await
        }
        "memory_delete" => {
            let parsed: PathArgs = arguments(name, args)?;
            write_one(service, MemoryCommand::Delete { path: parsed.path }).await
        }
        "memory_get" => {
            let parsed: GetArgs = arguments(name, args)?;
            read(service, parsed.consistency, ReadQuery::Get { path: parsed.path, version: parsed.version }).await.map(
                |reply| match reply {
                    ReadReply::Record(Some(record)) => json!({ "found": true, "record": record_json(&record) }),
                    _ => json!({ "found": false }),
                },
            )
        }
        "memory_list" => {
            let parsed: ListArgs = arguments(name, args)?;
            let query = ReadQuery::List { prefix: parsed.prefix, after: parsed.after, limit: parsed.limit };
            read(service, parsed.consistency, query).await.map(|reply| match reply {
                ReadReply::List(page) => json!({ "records": page.records.iter().map(record_json).collect::<Vec<_>>(), "next_cursor": page.next_cursor }),
                _ => json!({ "records": [] }),
            })
        }
        "memory_history" => {
            let parsed: HistoryArgs = arguments(name, args)?;
            let query = ReadQuery::History { path: parsed.path, before: parsed.before, limit: parsed.limit };
            read(service, parsed.consistency, query).await.map(|reply| match reply {
                ReadReply::History(page) => json!({ "records": page.records.iter().map(record_json).collect::<Vec<_>>(), "next_before": page.next_before }),
                _ => json!({ "records": [] }),
            })
        }
        "cluster_status" => {
            let _: NoArgs = arguments(name, args)?;
            Ok(super::status::cluster_status(service).await)
        }
        "mesh_peers" => {
            let _: NoArgs = arguments(name, args)?;
            Ok(super::status::mesh_peers(service))
        }
        "mesh_isolate" if service.test_faults => {
            let parsed: PeersArgs = arguments(name, args)?;
            let mut peers = Vec::new();
            for text in &parsed.peers {
                peers.push(text.parse::<libp2p::PeerId>().map_err(|_| {
                    RpcError::invalid_params(format!("invalid arguments for mesh_isolate: {text:?} is not a peer id"))
                })?);
            }
            service.mesh.isolate(peers);
            Ok(json!({ "isolated": service.mesh.isolated().iter().map(ToString::to_string).collect::<Vec<_>>() }))
        }
        "mesh_heal" if service.test_faults => {
            let _: NoArgs = arguments(name, args)?;
            service.mesh.heal();
            Ok(json!({ "isolated": [] }))
        }
        other => {
            return Err(RpcError::invalid_params(format!(
                "unknown tool {other:?}; tools/list shows the tools this node offers"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_list_pages_cover_every_tool_once_and_refuse_foreign_cursors() {
        let all: Vec<Value> = (0..250).map(|index| json!({ "name": format!("tool-{index}") })).collect();
        let mut seen = Vec::new();
        let mut params = json!({});
        loop {
            let page = page_of(all.clone(), &params).unwrap();
            seen.extend(page["tools"].as_array().unwrap().iter().cloned());
            match page.get("nextCursor") {
                Some(cursor) => params = json!({ "cursor": cursor }),
                None => break,
            }
        }
        assert_eq!(seen, all);
        assert!(page_of(all.clone(), &json!({ "cursor": "not-a-cursor" })).is_err());
        assert!(page_of(all, &json!({ "cursor": 7 })).is_err());
    }
}
