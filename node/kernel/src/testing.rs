//! Fixtures the kernel's unit tests share.

use zeromesh_protocol::agent::{AgentRecord, AgentState};

/// Agent `id` as the registry holds it, in `state`, allowed `tools`.
pub(crate) fn registered(id: &str, state: AgentState, tools: &[&str]) -> AgentRecord {
    AgentRecord {
        id: id.into(),
        owner: "ops".into(),
        description: String::new(),
        tools: tools.iter().map(|tool| (*tool).to_owned()).collect(),
        tags: Vec::new(),
        key: None,
        memory_quota_bytes: None,
        max_concurrent_calls: None,
        limits: Vec::new(),
        state,
        spawned_at_ms: 0,
        changed_at_ms: 0,
        log_index: 1,
    }
}

/// Agent `id`, running, allowed every tool, labelled `tags`.
pub(crate) fn tagged(id: &str, tags: &[&str]) -> AgentRecord {
    let mut agent = registered(id, AgentState::Running, &["*"]);
    agent.tags = tags.iter().map(|tag| (*tag).to_owned()).collect();
    agent
}
