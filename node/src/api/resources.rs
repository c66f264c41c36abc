//! Agent memories as MCP resources: `mem://{agent}/{path}`. Listing and
//! reading go through the memory log (linearizable); a connection may
//! subscribe to memories and is told when one changes anywhere in the mesh
//! (`notifications/resources/updated`), as soon as this node applies it.

use std::collections::BTreeSet;
use std::sync::Mutex;

use base64::Engine;
use serde_json::{json, Value};
use zeromesh_consensus::{Consistency, MemoryChange, ReadQuery, ReadReply};
use zeromesh_protocol::limits::MAX_SUBSCRIPTIONS_PER_CONNECTION;
use zeromesh_protocol::{MemoryPath, PathPrefix};

use super::jsonrpc::RpcError;
use crate::cluster::Cluster;

pub const URI_SCHEME: &str = "mem://";
/// MCP's error code for a resource that does not exist.
pub const RESOURCE_NOT_FOUND: i64 = -32002;
/// Resources per `resources/list` page.
const LIST_PAGE: usize = 100;

/// The memory path a `mem://` URI names.
pub fn parse_uri(uri: &str) -> Result<MemoryPath, RpcError> {
    let path = uri
        .strip_prefix(URI_SCHEME)
        .ok_or_else(|| RpcError::invalid_params(format!("resource URI {uri:?} is not mem://{{agent}}/{{path}}")))?;
    MemoryPath::parse(path).map_err(|error| RpcError::invalid_params(format!("resource URI {uri:?}: {error}")))
}

pub fn uri_of(path: &MemoryPath) -> String {
    format!("{URI_SCHEME}{path}")
}

fn uri_param(params: &Value) -> Result<MemoryPath, RpcError> {
    let uri = params
        .get("uri")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("`uri`, a string, is required"))?;
    parse_uri(uri)
}

fn unavailable(error: impl std::fmt::Display) -> RpcError {
    RpcError::new(super::jsonrpc::INTERNAL_ERROR, error.to_string())
}

pub fn templates() -> Value {
    json!({ "resourceTemplates": [{
        "uriTemplate": "mem://{agent}/{path}",
        "name": "agent-memory",
        "title": "Agent memory",
        "description": "The live version of an agent's memory at a path in the replicated memory log.",
    }] })
}

/// One page of every live memory (under `prefix` when given), in path order.
pub async fn list(cluster: &Cluster, params: &Value, prefix: Option<String>) -> Result<Value, RpcError> {
    let after = match params.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(cursor)) => Some(cursor.clone()),
        Some(_) => return Err(RpcError::invalid_params("`cursor` must be a string from an earlier page")),
    };
    let prefix = match prefix {
        Some(prefix) => PathPrefix::parse(&prefix).map_err(|error| RpcError::invalid_params(error.to_string()))?,
        None => PathPrefix::default(),
    };
    let query = ReadQuery::List { prefix, after, limit: Some(LIST_PAGE) };
    let page = match cluster.read(Consistency::Linearizable, query).await {
        Ok(ReadReply::List(page)) => page,
        Ok(_) => return Err(unavailable("unexpected read reply")),
        Err(error) => return Err(unavailable(error)),
    };
    let resources: Vec<Value> = page
        .records
        .iter()
        .map(|record| {
            json!({
                "uri": uri_of(&record.path),
                "name": record.path.as_str(),
                "mimeType": record.content_type,
                "size": record.value.len(),
            })
        })
        .collect();
    let mut answer = json!({ "resources": resources });
    if let Some(cursor) = page.next_cursor {
        answer["nextCursor"] = json!(cursor);
    }
    Ok(answer)
}

/// The live version of one memory.
pub async fn read(cluster: &Cluster, params: &Value) -> Result<Value, RpcError> {
    let path = uri_param(params)?;
    let query = ReadQuery::Get { path: path.clone(), version: None };
    let record = match cluster.read(Consistency::Linearizable, query).await {
        Ok(ReadReply::Record(Some(record))) => record,
        Ok(_) => return Err(RpcError::new(RESOURCE_NOT_FOUND, format!("no live memory at {}", uri_of(&path)))),
        Err(error) => return Err(unavailable(error)),
    };
    let mut content = json!({ "uri": uri_of(&path), "mimeType": record.content_type });
    match std::str::from_utf8(&record.value) {
        Ok(text) => content["text"] = json!(text),
        Err(_) => content["blob"] = json!(base64::engine::general_purpose::STANDARD.encode(&record.value)),
    }
    content["_meta"] = json!({ "zeromesh/version": record.version, "zeromesh/log_index": record.log_index });
    Ok(json!({ "contents": [content] }))
}

/// The memories one connection is subscribed to.
#[derive(Default)]
pub struct Subscriptions(Mutex<BTreeSet<MemoryPath>>);

impl Subscriptions {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<MemoryPath>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn subscribe(&self, params: &Value) -> Result<Value, RpcError> {
        let path = uri_param(params)?;
        let mut subscribed = self.lock();
        if !subscribed.contains(&path) && subscribed.len() >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
            return Err(RpcError::invalid_params(format!(
                "this connection already has {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions, the limit; unsubscribe first"
            )));
        }
        subscribed.insert(path);
        Ok(json!({}))
    }

    pub fn unsubscribe(&self, params: &Value) -> Result<Value, RpcError> {
        let path = uri_param(params)?;
        self.lock().remove(&path);
        Ok(json!({}))
    }

    /// The `notifications/resources/updated` messages a change calls for.
    /// `None` (a snapshot, or a listener that lagged) means anything may
    /// have changed.
    pub fn updates(&self, change: Option<&MemoryChange>) -> Vec<String> {
        let subscribed = self.lock();
        let updated: Vec<&MemoryPath> = match change {
            Some(MemoryChange::Paths(paths)) => paths.iter().filter(|path| subscribed.contains(*path)).collect(),
            Some(MemoryChange::Everything) | None => subscribed.iter().collect(),
        };
        updated
            .into_iter()
            .map(|path| {
                json!({ "jsonrpc": "2.0", "method": "notifications/resources/updated", "params": { "uri": uri_of(path) } })
                    .to_string()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_memory_paths_and_anything_else_is_refused() {
        let path = parse_uri("mem://alice/notes/today").unwrap();
        assert_eq!((path.agent(), uri_of(&path).as_str()), ("alice", "mem://alice/notes/today"));
        for bad in ["alice/notes", "mem://alice", "mem://alice/../bob/x", "http://alice/x", "mem:///x"] {
            assert_eq!(parse_uri(bad).unwrap_err().code, super::super::jsonrpc::INVALID_PARAMS, "{bad}");
        }
    }

    #[test]
    fn a_change_notifies_only_subscribed_paths_and_a_lag_notifies_all() {
        let subscriptions = Subscriptions::default();
        subscriptions.subscribe(&json!({ "uri": "mem://a/x" })).unwrap();
        subscriptions.subscribe(&json!({ "uri": "mem://a/y" })).unwrap();
        let change =
            MemoryChange::Paths(vec![MemoryPath::parse("a/x").unwrap(), MemoryPath::parse("b/z").unwrap()].into());
        let updates = subscriptions.updates(Some(&change));
        assert_eq!(updates.len(), 1);
        assert!(updates[0].contains("mem://a/x"));
        assert_eq!(subscriptions.updates(None).len(), 2);
        subscriptions.unsubscribe(&json!({ "uri": "mem://a/x" })).unwrap();
        assert!(subscriptions.updates(Some(&change)).is_empty());
    }

    #[test]
    fn subscriptions_per_connection_are_bounded() {
        let subscriptions = Subscriptions::default();
        for index in 0..MAX_SUBSCRIPTIONS_PER_CONNECTION {
            subscriptions.subscribe(&json!({ "uri": format!("mem://a/{index}") })).unwrap();
        }
        assert!(subscriptions.subscribe(&json!({ "uri": "mem://a/one-more" })).is_err());
        subscriptions.subscribe(&json!({ "uri": "mem://a/0" })).expect("a repeated subscription is not a new one");
    }
}
