//! Agent memories as MCP resources: `mem://{agent}/{path}`; and agreements:
//! `agreement://{id}` (terms, state, history, usage), `agreement://{id}/usage`
//! and `agreement://violations` (the latest); and the policy set:
//! `policy://current`; and the trace log's latest cosigned checkpoint:
//! `trace://checkpoint/latest` (a C2SP signed note, not notified). Listing and reading memories go
//! through the memory log (linearizable); agreements and policies are read as this node
//! applied them. A connection may subscribe to any of them and is told when
//! one changes anywhere in the mesh (`notifications/resources/updated`), as
//! soon as this node applies the change.

use std::collections::BTreeSet;
use std::sync::Mutex;

use base64::Engine;
use serde_json::{json, Value};
use zeromesh_consensus::{Consistency, ReadQuery, ReadReply, StateChange};
use zeromesh_protocol::agreement::check_agreement_id;
use zeromesh_protocol::limits::MAX_SUBSCRIPTIONS_PER_CONNECTION;
use zeromesh_protocol::{MemoryPath, PathPrefix};

use super::{rpc_error, RpcError};
use crate::cluster::Cluster;
use crate::tools::agreements;

pub const URI_SCHEME: &str = "mem://";
pub const AGREEMENT_SCHEME: &str = "agreement://";
const VIOLATIONS_URI: &str = "agreement://violations";
pub const POLICY_URI: &str = "policy://current";
pub const CHECKPOINT_URI: &str = "trace://checkpoint/latest";
/// Violations `agreement://violations` shows.
const VIOLATIONS_SHOWN: usize = 100;

/// What a resource URI names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Memory(MemoryPath),
    Agreement(String),
    Usage(String),
    Violations,
    Policy,
    Checkpoint,
}

impl Resource {
    pub fn parse(uri: &str) -> Result<Resource, RpcError> {
        if uri == POLICY_URI {
            return Ok(Resource::Policy);
        }
        if uri == CHECKPOINT_URI {
            return Ok(Resource::Checkpoint);
        }
        let Some(rest) = uri.strip_prefix(AGREEMENT_SCHEME) else { return parse_uri(uri).map(Resource::Memory) };
        let bad = |reason: String| {
            RpcError::invalid_params(
                format!(
                    "resource URI {uri:?}: {reason}; agreement resources are agreement://{{id}}, agreement://{{id}}/usage and {VIOLATIONS_URI}"
                ),
                None,
            )
        };
        if uri == VIOLATIONS_URI {
            return Ok(Resource::Violations);
        }
        let (id, usage) = match rest.strip_suffix("/usage") {
            Some(id) => (id, true),
            None => (rest, false),
        };
        check_agreement_id(id).map_err(|error| bad(error.to_string()))?;
        Ok(if usage { Resource::Usage(id.to_owned()) } else { Resource::Agreement(id.to_owned()) })
    }

    pub fn uri(&self) -> String {
        match self {
            Resource::Memory(path) => uri_of(path),
            Resource::Agreement(id) => format!("{AGREEMENT_SCHEME}{id}"),
            Resource::Usage(id) => format!("{AGREEMENT_SCHEME}{id}/usage"),
            Resource::Violations => VIOLATIONS_URI.to_owned(),
            Resource::Policy => POLICY_URI.to_owned(),
            Resource::Checkpoint => CHECKPOINT_URI.to_owned(),
        }
    }

    /// Whether `change` may have changed this resource; `None` (a snapshot,
    /// or a listener that lagged) means anything may have changed.
    pub fn changed(&self, change: Option<&StateChange>) -> bool {
        change.is_none_or(|change| self.changed_by(change))
    }

    /// Whether `change` may have changed this resource.
    fn changed_by(&self, change: &StateChange) -> bool {
        match (self, change) {
            (Resource::Memory(path), StateChange::Paths(paths)) => paths.contains(path),
            (Resource::Agreement(id) | Resource::Usage(id), StateChange::Agreements { ids, .. }) => ids.contains(id),
            (Resource::Violations, StateChange::Agreements { violations, .. }) => *violations,
            (Resource::Policy, StateChange::Policy { .. }) => true,
            (_, StateChange::Everything) => true,
            _ => false,
        }
    }
}
/// MCP's error code for a resource that does not exist.
pub const RESOURCE_NOT_FOUND: i32 = -32002;
/// Resources per `resources/list` page.
const LIST_PAGE: usize = 100;

/// The memory path a `mem://` URI names.
pub fn parse_uri(uri: &str) -> Result<MemoryPath, RpcError> {
    let path = uri.strip_prefix(URI_SCHEME).ok_or_else(|| {
        RpcError::invalid_params(format!("resource URI {uri:?} is not mem://{{agent}}/{{path}}"), None)
    })?;
    MemoryPath::parse(path).map_err(|error| RpcError::invalid_params(format!("resource URI {uri:?}: {error}"), None))
}

pub fn uri_of(path: &MemoryPath) -> String {
    format!("{URI_SCHEME}{path}")
}

fn unavailable(error: impl std::fmt::Display) -> RpcError {
    rpc_error(rmcp::model::ErrorCode::INTERNAL_ERROR.0, error.to_string())
}

pub fn templates() -> Value {
    json!({ "resourceTemplates": [
        {
            "uriTemplate": "mem://{agent}/{path}",
            "name": "agent-memory",
            "title": "Agent memory",
            "description": "The live version of an agent's memory at a path in the replicated memory log.",
        },
        {
            "uriTemplate": "agreement://{id}",
            "name": "agreement",
            "title": "Agreement",
            "description": "An agreement: terms, state, history and usage against each limit.",
            "mimeType": "application/json",
        },
        {
            "uriTemplate": "agreement://{id}/usage",
            "name": "agreement-usage",
            "title": "Agreement usage",
            "description": "An agreement's usage against each limit in its current window.",
            "mimeType": "application/json",
        },
    ] })
}

/// One page of every live memory (under `prefix` when given), in path order.
pub async fn list(cluster: &Cluster, params: &Value, prefix: Option<String>) -> Result<Value, RpcError> {
    let after = match params.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(cursor)) => Some(cursor.clone()),
        Some(_) => return Err(RpcError::invalid_params("`cursor` must be a string from an earlier page", None)),
    };
    let prefix = match prefix {
        Some(prefix) => {
            PathPrefix::parse(&prefix).map_err(|error| RpcError::invalid_params(error.to_string(), None))?
        }
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

/// One resource: the live version of a memory, or an agreement's state.
pub async fn read(cluster: &Cluster, uri: &str) -> Result<Value, RpcError> {
    let resource = Resource::parse(uri)?;
    let shown = match &resource {
        Resource::Memory(path) => return read_memory(cluster, path.clone()).await,
        Resource::Agreement(id) | Resource::Usage(id) => {
            let consensus = &cluster.consensus;
            let record = consensus.agreement(id).map_err(unavailable)?.ok_or_else(|| {
                rpc_error(RESOURCE_NOT_FOUND, format!("no agreement {id:?}: agreement_list shows them"))
            })?;
            let ledger = consensus.ledger(id).map_err(unavailable)?;
            match resource {
                Resource::Usage(_) => agreements::usage_json(&record, &ledger),
                _ => agreements::agreement_json(&record, &ledger),
            }
        }
        Resource::Violations => {
            let next = cluster.consensus.next_violation_seq().map_err(unavailable)?;
            let from = next.saturating_sub(VIOLATIONS_SHOWN as u64);
            let found = cluster.consensus.violations(from, VIOLATIONS_SHOWN).await.map_err(unavailable)?;
            json!({ "violations": found.iter().map(agreements::violation_json).collect::<Vec<_>>() })
        }
        Resource::Checkpoint => {
            let text = cluster.consensus.trace_checkpoint().await.map_err(unavailable)?.ok_or_else(|| {
                rpc_error(
                    RESOURCE_NOT_FOUND,
                    "no trace checkpoint yet: the leader makes one every checkpoint_interval_ms once the log grew",
                )
            })?;
            let content = json!({ "uri": CHECKPOINT_URI, "mimeType": "text/plain", "text": text });
            return Ok(json!({ "contents": [content] }));
        }
        Resource::Policy => {
            let policy = cluster.consensus.current_policy().map_err(unavailable)?;
            json!({
                "version": policy.version,
                "description": policy.description,
                "log_index": policy.log_index,
                "at_ms": policy.at_ms,
                "text": policy.text,
            })
        }
    };
    let content = json!({ "uri": resource.uri(), "mimeType": "application/json", "text": shown.to_string() });
    Ok(json!({ "contents": [content] }))
}

/// The live version of one memory.
async fn read_memory(cluster: &Cluster, path: MemoryPath) -> Result<Value, RpcError> {
    let query = ReadQuery::Get { path: path.clone(), version: None };
    let record = match cluster.read(Consistency::Linearizable, query).await {
        Ok(ReadReply::Record(Some(record))) => record,
        Ok(_) => return Err(rpc_error(RESOURCE_NOT_FOUND, format!("no live memory at {}", uri_of(&path)))),
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

/// The resources one connection is subscribed to.
#[derive(Default)]
pub struct Subscriptions(Mutex<BTreeSet<Resource>>);

impl Subscriptions {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<Resource>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn subscribe(&self, uri: &str) -> Result<(), RpcError> {
        let resource = Resource::parse(uri)?;
        let mut subscribed = self.lock();
        if !subscribed.contains(&resource) && subscribed.len() >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
            return Err(RpcError::invalid_params(
                format!("this session already has {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions, the limit; unsubscribe first"),
                None,
            ));
        }
        subscribed.insert(resource);
        Ok(())
    }

    pub fn unsubscribe(&self, uri: &str) -> Result<(), RpcError> {
        let resource = Resource::parse(uri)?;
        self.lock().remove(&resource);
        Ok(())
    }

    /// The URIs of the subscribed resources `change` may have changed
    /// (`None`: any of them).
    pub fn updated(&self, change: Option<&StateChange>) -> Vec<String> {
        self.lock().iter().filter(|resource| resource.changed(change)).map(Resource::uri).collect()
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
            assert_eq!(parse_uri(bad).unwrap_err().code, rmcp::model::ErrorCode::INVALID_PARAMS, "{bad}");
        }
    }

    #[test]
    fn a_change_notifies_only_subscribed_paths_and_a_lag_notifies_all() {
        let subscriptions = Subscriptions::default();
        subscriptions.subscribe("mem://a/x").unwrap();
        subscriptions.subscribe("mem://a/y").unwrap();
        let change =
            StateChange::Paths(vec![MemoryPath::parse("a/x").unwrap(), MemoryPath::parse("b/z").unwrap()].into());
        assert_eq!(subscriptions.updated(Some(&change)), ["mem://a/x"]);
        assert_eq!(subscriptions.updated(None).len(), 2);
        subscriptions.subscribe("agreement://deal/usage").unwrap();
        subscriptions.subscribe("agreement://violations").unwrap();
        let usage = StateChange::Agreements { ids: vec!["deal".to_owned()].into(), violations: false };
        assert_eq!(subscriptions.updated(Some(&usage)), ["agreement://deal/usage"]);
        let violation = StateChange::Agreements { ids: Vec::new().into(), violations: true };
        assert_eq!(subscriptions.updated(Some(&violation)), ["agreement://violations"]);
        subscriptions.unsubscribe("mem://a/x").unwrap();
        assert!(subscriptions.updated(Some(&change)).is_empty());
    }

    #[test]
    fn agreement_uris_name_an_agreement_its_usage_or_the_violations() {
        assert_eq!(Resource::parse("agreement://deal-1").unwrap(), Resource::Agreement("deal-1".into()));
        assert_eq!(Resource::parse("agreement://deal-1/usage").unwrap(), Resource::Usage("deal-1".into()));
        assert_eq!(Resource::parse("agreement://violations").unwrap(), Resource::Violations);
        for bad in ["agreement://", "agreement://a/b", "agreement://a/usage/x", "agreement://no spaces"] {
            let refused = Resource::parse(bad).unwrap_err();
            assert!(refused.message.contains("agreement://{id}/usage"), "{bad}: {}", refused.message);
        }
        for uri in ["agreement://deal-1", "agreement://deal-1/usage", "agreement://violations", "mem://a/b", POLICY_URI]
        {
            assert_eq!(Resource::parse(uri).unwrap().uri(), uri);
        }
        assert!(Resource::parse("policy://old").is_err());
        assert!(Resource::Policy.changed_by(&StateChange::Policy { version: 2 }));
        assert!(!Resource::Violations.changed_by(&StateChange::Policy { version: 2 }));
    }

    #[test]
    fn subscriptions_per_connection_are_bounded() {
        let subscriptions = Subscriptions::default();
        for index in 0..MAX_SUBSCRIPTIONS_PER_CONNECTION {
            subscriptions.subscribe(&format!("mem://a/{index}")).unwrap();
        }
        assert!(subscriptions.subscribe("mem://a/one-more").is_err());
        subscriptions.subscribe("mem://a/0").expect("a repeated subscription is not a new one");
    }
}
