//! The web dashboard: `GET /ui` is one page built into the binary (no build
//! step, no server of its own), which asks its node for `GET /ui/state` once
//! a second with the token the operator typed in (kept in the browser tab's
//! session). The page holds no data; `/ui/state` is behind the API's
//! authentication like everything else.

use std::sync::Arc;

use serde_json::{json, Value};

use zeromesh_kernel::Caller;

use super::ApiState;
use crate::tools::CallMeta;

/// The page, HTML with its script and style inline.
pub const PAGE: &str = include_str!("dashboard.html");

/// Agreements whose usage one state shows.
const AGREEMENTS_SHOWN: usize = 50;
/// The latest violations one state shows.
const VIOLATIONS_SHOWN: u64 = 10;

/// Calls tool `name` for `caller` exactly as `tools/call` would (the
/// kernel's checks included), answering its result or `{"error": why}`.
async fn part(state: &ApiState, caller: &Caller, name: &str, arguments: Value) -> Value {
    let no_progress: crate::tools::Progress = Arc::new(|_, _, _| {});
    match state.tools.call(caller, name, arguments, CallMeta::default(), no_progress).await {
        Ok(served) => served.outcome.outcome.unwrap_or_else(|error| json!({ "error": error.to_string() })),
        Err(refusal) => json!({ "error": refusal.to_string() }),
    }
}

/// Everything the dashboard shows, in one answer: the cluster as this node
/// sees it (each member's own log position), the mesh with its links and
/// adverts, agents, agreements with their usage, the latest violations,
/// plugins and this node's request counters. Each part comes from the tool
/// an MCP client would call, with the caller's rights; a part the caller may
/// not see holds the refusal instead. Node ids are text: they are 64-bit
/// and a browser's numbers are not.
pub async fn state(state: &ApiState, caller: &Caller) -> Value {
    let cluster = part(state, caller, "cluster_status", json!({})).await;
    let mesh = part(state, caller, "mesh_peers", json!({})).await;
    let agents = part(state, caller, "agent_list", json!({})).await;
    let mut agreements = part(state, caller, "agreement_list", json!({})).await;
    if let Some(listed) = agreements["agreements"].as_array_mut() {
        listed.truncate(AGREEMENTS_SHOWN);
        for agreement in listed.iter_mut() {
            let id = agreement["id"].clone();
            agreement["usage"] = part(state, caller, "agreement_usage", json!({ "id": id })).await;
        }
    }
    let next_violation = state.cluster.consensus.next_violation_seq().unwrap_or(0);
    let violations = part(
        state,
        caller,
        "agreement_violations",
        json!({ "from": next_violation.saturating_sub(VIOLATIONS_SHOWN), "limit": VIOLATIONS_SHOWN }),
    )
    .await;
    let plugins = part(state, caller, "plugin_list", json!({})).await;
    let servers = part(state, caller, "server_list", json!({})).await;
    let mut shown = json!({
        "now_ms": zeromesh_consensus::wall_clock_ms(),
        "advert_ttl_ms": state.cluster.mesh.advert_ttl().as_millis() as u64,
        "cluster": cluster,
        "mesh": mesh,
        "agents": agents.get("agents").cloned().unwrap_or(agents),
        "agreements": agreements.get("agreements").cloned().unwrap_or(agreements),
        "violations": violations.get("violations").cloned().unwrap_or(violations),
        "plugins": plugins,
        "servers": servers.get("servers").cloned().unwrap_or(servers),
        "requests": state.metrics.request_totals(),
    });
    ids_as_text(&mut shown);
    shown
}

/// Turns every node id (`node_id`, `leader`, `voters`, `non_voters`) into text.
fn ids_as_text(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                match (key.as_str(), field) {
                    ("node_id" | "leader", id @ Value::Number(_)) => *id = json!(id.to_string()),
                    ("voters" | "non_voters", Value::Array(ids)) => {
                        for id in ids.iter_mut().filter(|id| id.is_number()) {
                            *id = json!(id.to_string());
                        }
                    }
                    (_, field) => ids_as_text(field),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(ids_as_text),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_become_text_wherever_they_are_and_nothing_else_changes() {
        let mut value = json!({
            "cluster": { "node_id": 12920783261531997791u64, "leader": 1, "voters": [1, 12920783261531997791u64],
                         "members": [{ "node_id": 2, "term": 7 }] },
            "mesh": { "adverts": [{ "node_id": 3, "load_milli": 10 }] },
            "leader": null,
        });
        ids_as_text(&mut value);
        assert_eq!(
            value,
            json!({
                "cluster": { "node_id": "12920783261531997791", "leader": "1", "voters": ["1", "12920783261531997791"],
                             "members": [{ "node_id": "2", "term": 7 }] },
                "mesh": { "adverts": [{ "node_id": "3", "load_milli": 10 }] },
                "leader": null,
            })
        );
    }
}
