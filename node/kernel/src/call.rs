//! The kernel's one entry point for tool calls, and what it refuses.

use std::future::Future;

use serde_json::Value;

use crate::access::{memory_target, permits, Access};
use crate::caller::{acting_agent, Caller};

/// Why the kernel refused a call. A refused call ran nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown tool {name:?}; tools/list shows the tools this node offers")]
    UnknownTool { name: String },
    #[error("the agent named in the call is not valid: {reason}")]
    InvalidAgent { reason: String },
    #[error("{caller} may not {what}")]
    Forbidden { caller: String, what: String },
}

/// One tool call as the kernel sees it.
#[derive(Debug, Clone)]
pub struct ToolCall<'a> {
    pub caller: &'a Caller,
    pub tool: &'a str,
    pub arguments: Value,
    /// The agent the call names (MCP `params._meta["zeromesh/agent"]`).
    pub named_agent: Option<&'a str>,
}

/// The tools a node offers: the kernel asks what a tool touches, then runs it.
pub trait Tools {
    /// What running a tool answers.
    type Outcome;

    /// The access of the tool named `name`, or `None` when the node offers
    /// no such tool.
    fn access(&self, name: &str) -> Option<Access>;

    /// Runs tool `name` for `agent`.
    fn run(&self, name: &str, agent: &str, arguments: Value) -> impl Future<Output = Self::Outcome> + Send;
}

/// The kernel of one node.
#[derive(Debug, Default)]
pub struct Kernel {}

impl Kernel {
    /// Decides `call` and, if allowed, runs it through `tools`: the tool
    /// must exist, the agent it acts for must be valid and the caller's
    /// own, and the caller's role must allow what the tool touches.
    pub async fn call<T: Tools>(&self, tools: &T, call: ToolCall<'_>) -> Result<T::Outcome, Refusal> {
        let access = tools.access(call.tool).ok_or_else(|| Refusal::UnknownTool { name: call.tool.to_owned() })?;
        let agent = acting_agent(call.caller, call.named_agent)?;
        let target = match access {
            Access::MemoryRead | Access::MemoryWrite => memory_target(&call.arguments),
            Access::Observe | Access::RunPlugin | Access::Admin => String::new(),
        };
        permits(call.caller, &format!("call {}", call.tool), access, &target)?;
        Ok(tools.run(call.tool, &agent, call.arguments).await)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;
    use zeromesh_protocol::auth::Role;

    use super::*;

    /// Tools that record what ran.
    #[derive(Default)]
    struct Recorded {
        runs: Mutex<Vec<(String, String, Value)>>,
    }

    impl Tools for Recorded {
        type Outcome = ();

        fn access(&self, name: &str) -> Option<Access> {
            match name {
                "memory_put" => Some(Access::MemoryWrite),
                "token_create" => Some(Access::Admin),
                "echo.say" => Some(Access::RunPlugin),
                _ => None,
            }
        }

        fn run(&self, name: &str, agent: &str, arguments: Value) -> impl Future<Output = ()> + Send {
            self.runs.lock().unwrap().push((name.to_owned(), agent.to_owned(), arguments));
            std::future::ready(())
        }
    }

    fn agent_token(agent: &str) -> Caller {
        Caller { role: Role::Agent, agent: Some(agent.into()), token_id: Some("0123456789abcdef".into()) }
    }

    async fn call(tools: &Recorded, caller: &Caller, tool: &str, arguments: Value) -> Result<(), Refusal> {
        Kernel::default().call(tools, ToolCall { caller, tool, arguments, named_agent: None }).await
    }

    #[tokio::test]
    async fn an_allowed_call_runs_once_for_the_acting_agent() {
        let tools = Recorded::default();
        call(&tools, &agent_token("alice"), "memory_put", json!({ "path": "alice/x" })).await.unwrap();
        call(&tools, &agent_token("alice"), "echo.say", json!({})).await.unwrap();
        let runs = tools.runs.lock().unwrap().clone();
        assert_eq!(
            runs,
            vec![
                ("memory_put".into(), "alice".into(), json!({ "path": "alice/x" })),
                ("echo.say".into(), "alice".into(), json!({})),
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_call_runs_nothing() {
        let tools = Recorded::default();
        let unknown = call(&tools, &Caller::dev(), "no_such_tool", json!({})).await.unwrap_err();
        assert_eq!(unknown, Refusal::UnknownTool { name: "no_such_tool".into() });
        let admin_only = call(&tools, &agent_token("alice"), "token_create", json!({})).await.unwrap_err();
        assert!(admin_only.to_string().contains("may not call token_create: it needs an admin token"), "{admin_only}");
        let foreign = call(&tools, &agent_token("alice"), "memory_put", json!({ "path": "bob/x" })).await;
        assert!(matches!(foreign, Err(Refusal::Forbidden { .. })));
        let named_other = Kernel::default()
            .call(
                &tools,
                ToolCall {
                    caller: &agent_token("alice"),
                    tool: "echo.say",
                    arguments: json!({}),
                    named_agent: Some("bob"),
                },
            )
            .await;
        assert!(matches!(named_other, Err(Refusal::Forbidden { .. })));
        assert!(tools.runs.lock().unwrap().is_empty());
    }
}
