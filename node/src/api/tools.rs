//! `tools/list` and `tools/call` in MCP's shapes: pages of the node's tool
//! definitions, and a call's outcome as a result (`isError` when the tool
//! ran and failed) or a JSON-RPC error (refused, or arguments that do not fit).

use std::sync::Arc;

use serde_json::{json, Value};

use super::jsonrpc::RpcError;
use super::server::{Progress, AGENT_META_KEY, IDEMPOTENCY_META_KEY, USAGE_META_KEY};
use super::ApiState;
use crate::tools::{CallMeta, ToolError};
use zeromesh_kernel::{Caller, Metered};
use zeromesh_protocol::agreement::{Metric, Usage};

/// Tools per `tools/list` page.
const TOOLS_PAGE: usize = 100;

/// One page of `tools/list`: the node's own tools, then its plugins' tools
/// in name order. The cursor is the position to continue from; a change of
/// the tools between pages (announced by `list_changed`) may shift entries.
pub fn list_page(state: &ApiState, params: &Value) -> Result<Value, RpcError> {
    page_of(state.tools.definitions(), params)
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

/// `tools/call`: the tool named in `params`, for `caller`, through the kernel.
pub async fn call(state: &ApiState, caller: &Caller, params: &Value, progress: &Progress) -> Result<Value, RpcError> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("tools/call needs `name`, a string"))?;
    let arguments = params.get("arguments").cloned().unwrap_or_else(|| json!({}));
    if !arguments.is_object() {
        return Err(RpcError::invalid_params("tools/call `arguments` must be an object"));
    }
    let named_agent = match params.get("_meta").and_then(|meta| meta.get(AGENT_META_KEY)) {
        None => None,
        Some(Value::String(agent)) => Some(agent.as_str()),
        Some(_) => return Err(RpcError::invalid_params(format!("_meta.{AGENT_META_KEY} must be a string"))),
    };
    let idempotency_key = match params.get("_meta").and_then(|meta| meta.get(IDEMPOTENCY_META_KEY)) {
        None => None,
        Some(Value::String(key)) => Some(key.as_str()),
        Some(_) => return Err(RpcError::invalid_params(format!("_meta.{IDEMPOTENCY_META_KEY} must be a string"))),
    };
    let progress = progress.clone();
    let report = Arc::new(move |step: u64, steps: u64, message: &str| progress.report(step, steps, message));
    let meta = CallMeta { agent: named_agent, idempotency_key };
    let served = state.tools.call(caller, name, arguments, meta, report).await;
    state.metrics.count_call(&served);
    let served = served.map_err(|refusal| super::auth::refusal_error(&refusal))?;
    let mut answer = match served.outcome {
        Ok(result) => json!({
            "content": [{ "type": "text", "text": result.to_string() }],
            "structuredContent": result,
            "isError": false,
        }),
        Err(error @ ToolError::InvalidArguments { .. }) => return Err(RpcError::invalid_params(error.to_string())),
        Err(ToolError::Failed(failure)) => json!({
            "content": [{ "type": "text", "text": failure.to_string() }],
            "isError": true,
        }),
    };
    if let Some(metered) = served.metered {
        answer["_meta"] = json!({ USAGE_META_KEY: usage_meta(&metered) });
    }
    Ok(answer)
}

/// How a metered call was counted, as its result's `_meta` shows it.
fn usage_meta(metered: &Metered) -> Value {
    let mut shown = json!({
        "agreement": metered.agreement,
        "idempotencyKey": metered.key,
        "logIndex": metered.log_index,
        "used": usage_json(&metered.used),
    });
    if let Some(error) = &metered.settle_error {
        shown["settleError"] = json!(error);
    }
    shown
}

/// Every metric of `usage` by name.
pub fn usage_json(usage: &Usage) -> Value {
    Value::Object(Metric::ALL.iter().map(|metric| (metric.name().to_owned(), json!(usage.get(*metric)))).collect())
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
