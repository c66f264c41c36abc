//! `tools/list` and `tools/call` in MCP's shapes: pages of the node's tool
//! definitions, and a call's outcome as a result (`isError` when the tool
//! ran and failed) or a JSON-RPC error (refused, or arguments that do not fit).

use serde_json::{json, Value};

use rmcp::model::{CallToolResult, ContentBlock, MetaObject, ResultType};

use super::mcp::{ERROR_META_KEY, HOST_META_KEY, RECEIPT_META_KEY, USAGE_META_KEY};
use super::{ApiState, RpcError};
use crate::tools::{CallMeta, Progress, ToolError};
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
            RpcError::invalid_params(format!("cursor {cursor:?} did not come from this node's tools/list"), None)
        })?,
        Some(_) => return Err(RpcError::invalid_params("`cursor` must be a string from an earlier page", None)),
    };
    let page: Vec<Value> = all.iter().skip(start).take(TOOLS_PAGE).cloned().collect();
    let mut answer = json!({ "tools": page });
    if start + TOOLS_PAGE < all.len() {
        answer["nextCursor"] = json!((start + TOOLS_PAGE).to_string());
    }
    Ok(answer)
}

/// One `tools/call` as the client sent it.
pub struct Call<'a> {
    pub name: &'a str,
    /// An object.
    pub arguments: Value,
    /// `_meta.zeromesh/agent`: the agent the call acts for.
    pub agent: Option<&'a str>,
    /// `_meta.zeromesh/idempotency-key`.
    pub idempotency_key: Option<&'a str>,
}

/// `tools/call` for `caller`, through the kernel: its result (`isError`
/// when the tool ran and failed), or an error when the call was refused or
/// its arguments do not fit.
pub async fn call(
    state: &ApiState,
    caller: &Caller,
    call: Call<'_>,
    progress: Progress,
) -> Result<CallToolResult, RpcError> {
    let Call { name, arguments, agent, idempotency_key } = call;
    let meta = CallMeta { agent, idempotency_key };
    let served = state.tools.call(caller, name, arguments, meta, progress).await;
    state.metrics.count_call(&served);
    let served = served.map_err(|refusal| super::auth::refusal_error(&refusal))?;
    let mut meta = MetaObject::default();
    if let Some(served_by) = &served.outcome.served_by {
        meta.insert(HOST_META_KEY.to_owned(), served_by.host_meta());
        if let Some(receipt) = served_by.receipt_meta() {
            meta.insert(RECEIPT_META_KEY.to_owned(), receipt);
        }
    }
    let answer = match served.outcome.outcome {
        Ok(result) if served.outcome.mcp_result => server_result(result),
        Ok(result) => CallToolResult::structured(result),
        Err(error @ ToolError::InvalidArguments { .. }) => {
            return Err(RpcError::invalid_params(error.to_string(), None))
        }
        Err(ToolError::Failed(failure)) => {
            meta.insert(ERROR_META_KEY.to_owned(), json!(failure.kind()));
            CallToolResult::error(vec![ContentBlock::text(failure.to_string())])
        }
    };
    if let Some(metered) = &served.metered {
        meta.insert(USAGE_META_KEY.to_owned(), usage_meta(metered));
    }
    Ok(if meta.is_empty() { answer } else { answer.with_meta(Some(meta)) })
}

/// A federated server's `tools/call` result, as this node answers it. The
/// host speaks to its server in whichever era the server offers, and a
/// handshake-era result has no `resultType`; it is complete all the same
/// (anything else does not decode), and 2026-07-28 clients need it said.
fn server_result(result: Value) -> CallToolResult {
    match serde_json::from_value::<CallToolResult>(result) {
        Ok(mut result) => {
            result.result_type = Some(ResultType::COMPLETE);
            result
        }
        Err(error) => {
            CallToolResult::error(vec![ContentBlock::text(format!("the server's result does not decode: {error}"))])
        }
    }
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
    fn a_server_result_without_a_result_type_is_answered_as_complete() {
        let handshake_era = json!({ "content": [{ "type": "text", "text": "note k1" }], "isError": false });
        let answered = serde_json::to_value(server_result(handshake_era)).unwrap();
        assert_eq!(answered["resultType"], "complete", "{answered}");
        assert_eq!(answered["content"][0]["text"], "note k1", "{answered}");
        let unfinished = json!({ "resultType": "input_required", "inputRequests": {} });
        let answered = serde_json::to_value(server_result(unfinished)).unwrap();
        assert_eq!(answered["isError"], true, "{answered}");
        assert_eq!(answered["resultType"], "complete", "{answered}");
    }

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
