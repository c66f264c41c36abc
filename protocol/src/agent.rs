//! Agents as the replicated registry keeps them: identities the mesh
//! governs (not processes it hosts), each with an owner, the tools it may
//! call and a lifecycle state.

use serde::{Deserialize, Serialize};

use crate::agreement::Limit;
use crate::auth::check_agent_id;
use crate::limits::{
    MAX_AGENT_SNAPSHOT_BYTES, MAX_AGENT_SNAPSHOT_MEMORIES, MAX_AGENT_TEXT_BYTES, MAX_AGENT_TOOL_PATTERNS,
    MAX_AGREEMENT_LIMITS, MAX_TOOL_PATTERN_BYTES,
};
use crate::memory::{MemoryPath, MemoryValue};
use crate::plugin::PublisherKey;
use crate::validate::{check_count, check_len, ValidationError};

/// Where an agent is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentState {
    /// Its calls are served.
    Running,
    /// Its calls are refused with `reason` until it is resumed.
    Paused { reason: String },
    /// For good: its calls are refused, its tokens are gone, its memories
    /// stay readable by an admin until deleted. Its id is not reused.
    Terminated,
}

impl AgentState {
    pub fn name(&self) -> &'static str {
        match self {
            AgentState::Running => "running",
            AgentState::Paused { .. } => "paused",
            AgentState::Terminated => "terminated",
        }
    }
}

/// An agent as the replicated registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    /// Who answers for the agent (an operator's name or key).
    pub owner: String,
    pub description: String,
    /// The tools it may call: exact names, `prefix*`, or `*` for all.
    pub tools: Vec<String>,
    /// Labels policies can match on (`principal.tags.contains("...")`);
    /// absent from exports written before agents had tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The ed25519 key the agent signs its agreements with.
    pub key: Option<PublisherKey>,
    /// Most bytes its live memories may hold (values, content types and
    /// tags), enforced in apply; `None`: no quota.
    pub memory_quota_bytes: Option<u64>,
    /// Most of its calls one node serves at once; `None`: no quota.
    pub max_concurrent_calls: Option<u32>,
    /// Its own quotas per window (calls, fuel, ...): every metered call it
    /// makes counts against them, under an agreement or not.
    #[serde(default)]
    pub limits: Vec<Limit>,
    pub state: AgentState,
    /// The leader's clock when it was spawned, and when its state last changed.
    pub spawned_at_ms: u64,
    pub changed_at_ms: u64,
    /// The log entry of its last change.
    pub log_index: u64,
}

impl AgentRecord {
    /// Whether the agent's tool list allows tool `name`.
    pub fn may_call(&self, name: &str) -> bool {
        patterns_allow(&self.tools, name)
    }
}

/// A change to the agent registry, made by an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentCommand {
    Spawn {
        id: String,
        owner: String,
        description: String,
        tools: Vec<String>,
        tags: Vec<String>,
        key: Option<PublisherKey>,
        memory_quota_bytes: Option<u64>,
        max_concurrent_calls: Option<u32>,
        limits: Vec<Limit>,
    },
    Pause {
        id: String,
        reason: String,
    },
    Resume {
        id: String,
    },
    Terminate {
        id: String,
    },
    /// Keeps a copy of agent `id`'s manifest and live memories, as apply
    /// finds them at this entry, as snapshot `snapshot`.
    Snapshot {
        id: String,
        snapshot: String,
    },
    /// Restores snapshot `snapshot` into agent `id`: a new agent (with the
    /// snapshot's manifest) or an existing one, whose memories become the
    /// snapshot's.
    Recover {
        id: String,
        snapshot: String,
    },
    /// Restores an imported snapshot into agent `id`, as `Recover` does.
    Import {
        id: String,
        snapshot: Box<AgentSnapshot>,
    },
}

/// What applying an [`AgentCommand`] answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentOutcome {
    /// The agent is now in `state` (spawned, paused, resumed or terminated).
    Changed {
        id: String,
        state: AgentState,
        tokens_revoked: usize,
    },
    /// A spawn named an id the registry already has (terminated ids included).
    Exists {
        id: String,
    },
    NotFound {
        id: String,
    },
    /// The command does not apply to a terminated agent.
    IsTerminated {
        id: String,
    },
    /// The registry already keeps its maximum of agents.
    Full {
        limit: usize,
    },
    /// Snapshot `snapshot` of agent `id` was taken.
    Snapshotted {
        id: String,
        snapshot: String,
        sha256: [u8; 32],
        memories: usize,
        bytes: u64,
    },
    /// Agent `id`'s memories are now the snapshot's.
    Recovered {
        id: String,
        snapshot: String,
        memories: usize,
        spawned: bool,
    },
    SnapshotExists {
        snapshot: String,
    },
    SnapshotNotFound {
        snapshot: String,
    },
    /// The agent's memories do not fit a snapshot, or the snapshots kept are
    /// at their maximum, or a memory's path is too long under the new id.
    SnapshotRefused {
        reason: String,
    },
}

/// A consistent copy of an agent's manifest and live memories at one log
/// index: what `agent snapshot` keeps and `agent export` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSnapshot {
    pub snapshot: String,
    pub agent: AgentRecord,
    /// In path order; paths relative to the agent (without `{id}/`).
    pub memories: Vec<SnapshotMemory>,
    /// The entry that took it, and the leader's clock then.
    pub log_index: u64,
    pub taken_at_ms: u64,
}

/// One memory in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMemory {
    /// The path under the agent (`notes/today` for `alice/notes/today`).
    pub path: String,
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
    pub content_type: String,
    pub tags: Vec<String>,
}

impl SnapshotMemory {
    pub fn bytes(&self) -> u64 {
        crate::memory::stored_bytes(&self.value, &self.content_type, &self.tags)
    }

    pub fn value(&self) -> MemoryValue {
        MemoryValue { value: self.value.clone(), content_type: self.content_type.clone(), tags: self.tags.clone() }
    }
}

impl AgentSnapshot {
    /// SHA-256 of the snapshot as JSON (field order; values in hex): the same
    /// on every node and in an export file.
    pub fn sha256(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(serde_json::to_vec(self).expect("a snapshot serializes")).into()
    }

    /// The bytes its memories hold.
    pub fn bytes(&self) -> u64 {
        self.memories.iter().map(SnapshotMemory::bytes).sum()
    }

    /// Checks every limit of a snapshot from outside (an import).
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_snapshot_id(&self.snapshot)?;
        check_agent_id(&self.agent.id)?;
        check_count("snapshot memories", self.memories.len(), MAX_AGENT_SNAPSHOT_MEMORIES)?;
        check_len("snapshot", self.bytes() as usize, MAX_AGENT_SNAPSHOT_BYTES)?;
        check_len("agent owner", self.agent.owner.len(), MAX_AGENT_TEXT_BYTES)?;
        check_len("agent description", self.agent.description.len(), MAX_AGENT_TEXT_BYTES)?;
        check_count("agent tool patterns", self.agent.tools.len(), MAX_AGENT_TOOL_PATTERNS)?;
        for pattern in &self.agent.tools {
            check_tool_pattern(pattern)?;
        }
        crate::memory::check_tags(&self.agent.tags)?;
        check_count("agent limits", self.agent.limits.len(), MAX_AGREEMENT_LIMITS)?;
        for memory in &self.memories {
            memory.value().validate()?;
            MemoryPath::parse(&format!("{}/{}", self.agent.id, memory.path))?;
        }
        Ok(())
    }
}

/// A snapshot id: the same alphabet as agent ids.
pub fn check_snapshot_id(id: &str) -> Result<(), ValidationError> {
    check_agent_id(id).map_err(|_| ValidationError::BadField {
        what: "snapshot id",
        value: id.chars().take(80).collect(),
        reason: "is 1 to 64 ASCII letters, digits and -_.:@+~=,",
    })
}

/// Byte strings as hex in JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

impl AgentCommand {
    pub fn id(&self) -> &str {
        match self {
            AgentCommand::Spawn { id, .. }
            | AgentCommand::Pause { id, .. }
            | AgentCommand::Resume { id }
            | AgentCommand::Terminate { id }
            | AgentCommand::Snapshot { id, .. }
            | AgentCommand::Recover { id, .. }
            | AgentCommand::Import { id, .. } => id,
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        check_agent_id(self.id())?;
        match self {
            AgentCommand::Spawn { owner, description, tools, tags, max_concurrent_calls, limits, .. } => {
                check_count("agent limits", limits.len(), MAX_AGREEMENT_LIMITS)?;
                if *max_concurrent_calls == Some(0) {
                    return Err(ValidationError::BadField {
                        what: "max concurrent calls",
                        value: "0".into(),
                        reason: "is at least 1 (leave it out for no quota)",
                    });
                }
                check_len("agent owner", owner.len(), MAX_AGENT_TEXT_BYTES)?;
                check_len("agent description", description.len(), MAX_AGENT_TEXT_BYTES)?;
                check_count("agent tool patterns", tools.len(), MAX_AGENT_TOOL_PATTERNS)?;
                for pattern in tools {
                    check_tool_pattern(pattern)?;
                }
                crate::memory::check_tags(tags)
            }
            AgentCommand::Pause { reason, .. } => check_len("pause reason", reason.len(), MAX_AGENT_TEXT_BYTES),
            AgentCommand::Resume { .. } | AgentCommand::Terminate { .. } => Ok(()),
            AgentCommand::Snapshot { snapshot, .. } | AgentCommand::Recover { snapshot, .. } => {
                check_snapshot_id(snapshot)
            }
            AgentCommand::Import { snapshot, .. } => snapshot.validate(),
        }
    }
}

/// Whether tool `name` matches one of `patterns` (exact names, `prefix*`, `*`).
pub fn patterns_allow(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    })
}

/// A tool pattern: a tool name, a name's prefix followed by `*`, or `*`.
pub(crate) fn check_tool_pattern(pattern: &str) -> Result<(), ValidationError> {
    check_len("tool pattern", pattern.len(), MAX_TOOL_PATTERN_BYTES)?;
    let name = pattern.strip_suffix('*').unwrap_or(pattern);
    let valid = (!name.is_empty() || pattern == "*")
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_.:/".contains(&byte));
    if !valid {
        return Err(ValidationError::BadField {
            what: "tool pattern",
            value: pattern.chars().take(80).collect(),
            reason: "is a tool name, a prefix followed by *, or *",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(tools: &[&str]) -> AgentRecord {
        AgentRecord {
            id: "a".into(),
            owner: String::new(),
            description: String::new(),
            tools: tools.iter().map(|tool| (*tool).to_owned()).collect(),
            tags: Vec::new(),
            key: None,
            limits: Vec::new(),
            memory_quota_bytes: None,
            max_concurrent_calls: None,
            state: AgentState::Running,
            spawned_at_ms: 0,
            changed_at_ms: 0,
            log_index: 1,
        }
    }

    #[test]
    fn a_tool_list_allows_exact_names_prefixes_and_everything() {
        assert!(agent(&["memory_get"]).may_call("memory_get"));
        assert!(!agent(&["memory_get"]).may_call("memory_get_all"));
        assert!(agent(&["echo.*"]).may_call("echo.say"));
        assert!(!agent(&["echo.*"]).may_call("echoes"));
        assert!(agent(&["*"]).may_call("anything"));
        assert!(!agent(&[]).may_call("memory_get"));
    }

    #[test]
    fn spawn_refuses_bad_ids_patterns_and_oversized_text() {
        let spawn = |id: &str, tools: &[&str], owner: usize| AgentCommand::Spawn {
            id: id.into(),
            owner: "o".repeat(owner),
            description: String::new(),
            tools: tools.iter().map(|tool| (*tool).to_owned()).collect(),
            tags: Vec::new(),
            key: None,
            limits: Vec::new(),
            memory_quota_bytes: None,
            max_concurrent_calls: None,
        };
        assert!(spawn("agent-7", &["memory_*", "echo.say", "*"], 10).validate().is_ok());
        assert!(spawn("a/b", &[], 1).validate().is_err());
        assert!(spawn("ok", &["**"], 1).validate().is_err());
        assert!(spawn("ok", &["a b"], 1).validate().is_err());
        assert!(spawn("ok", &[""], 1).validate().is_err());
        assert!(spawn("ok", &[], MAX_AGENT_TEXT_BYTES + 1).validate().is_err());
        let many: Vec<String> = (0..=MAX_AGENT_TOOL_PATTERNS).map(|index| format!("t{index}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(spawn("ok", &refs, 1).validate().is_err());
    }
}
