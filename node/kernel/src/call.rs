//! The kernel's one entry point for tool calls, and what it refuses.

use std::future::Future;

use serde_json::Value;
use zeromesh_protocol::agent::{AgentRecord, AgentState};
use zeromesh_protocol::auth::Role;

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
    #[error("agent {agent:?} is not in the agent registry; an admin spawns it with `zeromesh agent spawn`")]
    UnknownAgent { agent: String },
    #[error("agent {agent} is paused: {reason}")]
    AgentPaused { agent: String, reason: String },
    #[error("agent {agent} is terminated")]
    AgentTerminated { agent: String },
    #[error("agent {agent} may not call {tool}: its tools are {allowed}")]
    ToolNotAllowed { agent: String, tool: String, allowed: String },
    #[error("the agent registry cannot be read here: {reason}")]
    Unavailable { reason: String },
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

/// The replicated state the kernel reads, as this node has applied it.
pub trait Registry {
    /// Agent `id`, or `None` when the registry has no such agent.
    fn agent(&self, id: &str) -> Result<Option<AgentRecord>, String>;
}

/// The kernel of one node.
#[derive(Debug, Default)]
pub struct Kernel {}

impl Kernel {
    /// Decides `call` and, if allowed, runs it through `world`: the tool
    /// must exist; the agent it acts for must be valid and the caller's own,
    /// and, when the call names one (or comes with an agent token), be in
    /// the registry, running, and allowed the tool; the caller's role must
    /// allow what the tool touches. A call that names no agent acts for the
    /// anonymous one, ungoverned, as before agents existed.
    pub async fn call<W: Tools + Registry>(&self, world: &W, call: ToolCall<'_>) -> Result<W::Outcome, Refusal> {
        let access = world.access(call.tool).ok_or_else(|| Refusal::UnknownTool { name: call.tool.to_owned() })?;
        let agent = acting_agent(call.caller, call.named_agent)?;
        if call.caller.role == Role::Agent || call.named_agent.is_some() {
            let record = world.agent(&agent).map_err(|reason| Refusal::Unavailable { reason })?;
            admit_agent(record, &agent, call.tool)?;
        }
        let target = match access {
            Access::MemoryRead | Access::MemoryWrite => memory_target(&call.arguments),
            Access::Observe | Access::RunPlugin | Access::Admin => String::new(),
        };
        permits(call.caller, &format!("call {}", call.tool), access, &target)?;
        Ok(world.run(call.tool, &agent, call.arguments).await)
    }
}

/// Whether agent `id`'s record lets it call `tool` now.
fn admit_agent(record: Option<AgentRecord>, id: &str, tool: &str) -> Result<(), Refusal> {
    let agent = record.ok_or_else(|| Refusal::UnknownAgent { agent: id.to_owned() })?;
    match &agent.state {
        AgentState::Running => {}
        AgentState::Paused { reason } => {
            return Err(Refusal::AgentPaused { agent: agent.id.clone(), reason: reason.clone() })
        }
        AgentState::Terminated => return Err(Refusal::AgentTerminated { agent: agent.id.clone() }),
    }
    if !agent.may_call(tool) {
        let allowed = if agent.tools.is_empty() { "none".to_owned() } else { agent.tools.join(", ") };
        return Err(Refusal::ToolNotAllowed { agent: agent.id.clone(), tool: tool.to_owned(), allowed });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;
    use zeromesh_protocol::auth::Role;

    use super::*;

    /// Tools that record what ran, and a registry of agents.
    #[derive(Default)]
    struct Recorded {
        runs: Mutex<Vec<(String, String, Value)>>,
        agents: Vec<AgentRecord>,
    }

    impl Registry for Recorded {
        fn agent(&self, id: &str) -> Result<Option<AgentRecord>, String> {
            Ok(self.agents.iter().find(|agent| agent.id == id).cloned())
        }
    }

    fn registered(id: &str, state: AgentState, tools: &[&str]) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            owner: "ops".into(),
            description: String::new(),
            tools: tools.iter().map(|tool| (*tool).to_owned()).collect(),
            state,
            spawned_at_ms: 0,
            changed_at_ms: 0,
            log_index: 1,
        }
    }

    fn with_alice() -> Recorded {
        Recorded { agents: vec![registered("alice", AgentState::Running, &["*"])], ..Recorded::default() }
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
        let tools = with_alice();
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
        let tools = with_alice();
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

    async fn call_as(tools: &Recorded, agent: &str, tool: &str) -> Result<(), Refusal> {
        let caller = Caller::dev();
        Kernel::default()
            .call(tools, ToolCall { caller: &caller, tool, arguments: json!({}), named_agent: Some(agent) })
            .await
    }

    #[tokio::test]
    async fn paused_terminated_and_unknown_agents_are_refused_and_run_nothing() {
        let tools = Recorded {
            agents: vec![
                registered("paused", AgentState::Paused { reason: "over budget".into() }, &["*"]),
                registered("gone", AgentState::Terminated, &["*"]),
            ],
            ..Recorded::default()
        };
        let paused = call_as(&tools, "paused", "echo.say").await.unwrap_err();
        assert_eq!(paused, Refusal::AgentPaused { agent: "paused".into(), reason: "over budget".into() });
        assert_eq!(call_as(&tools, "gone", "echo.say").await, Err(Refusal::AgentTerminated { agent: "gone".into() }));
        assert_eq!(call_as(&tools, "nobody", "echo.say").await, Err(Refusal::UnknownAgent { agent: "nobody".into() }));
        let token = agent_token("nobody");
        let by_token = call(&tools, &token, "echo.say", json!({})).await;
        assert_eq!(by_token, Err(Refusal::UnknownAgent { agent: "nobody".into() }));
        assert!(tools.runs.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_agent_calls_only_the_tools_its_list_allows() {
        let tools =
            Recorded { agents: vec![registered("bot", AgentState::Running, &["echo.*"])], ..Recorded::default() };
        call_as(&tools, "bot", "echo.say").await.unwrap();
        let refused = call_as(&tools, "bot", "memory_put").await.unwrap_err();
        assert!(matches!(refused, Refusal::ToolNotAllowed { ref tool, .. } if tool == "memory_put"), "{refused}");
        assert_eq!(tools.runs.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_call_that_names_no_agent_is_not_governed() {
        let tools = Recorded::default();
        call(&tools, &Caller::dev(), "echo.say", json!({})).await.unwrap();
        assert_eq!(tools.runs.lock().unwrap()[0].1, crate::ANONYMOUS_AGENT);
    }
}
