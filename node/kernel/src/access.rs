//! Which callers may make which requests. Every tool declares its
//! [`Access`]; memory requests are confined, for agent tokens, to the
//! agent's own memories.

use serde_json::Value;
use zeromesh_protocol::auth::Role;
use zeromesh_protocol::MemoryPath;

use crate::call::Refusal;
use crate::caller::Caller;

/// What a request touches, which decides who may make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Describes the node, the mesh or the registry: any caller.
    Observe,
    /// Reads memories under a path or prefix: any caller; an agent token
    /// only its own agent's.
    MemoryRead,
    /// Writes memories: admin and agent tokens; an agent token only its own.
    MemoryWrite,
    /// Runs a plugin's tool: admin and agent tokens.
    RunPlugin,
    /// Administers the mesh (plugins, tokens, faults): admin tokens only.
    Admin,
}

/// The memory path or prefix a memory tool's arguments name (`path`, else
/// `prefix`, else the empty prefix: every agent's memories).
pub fn memory_target(arguments: &Value) -> String {
    arguments.get("path").or_else(|| arguments.get("prefix")).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// Whether `caller` may make `request` (e.g. "call token_create"), of
/// `access`, reaching `target` (a memory path or prefix; ignored for other
/// accesses).
pub fn permits(caller: &Caller, request: &str, access: Access, target: &str) -> Result<(), Refusal> {
    let forbidden = |what: String| Refusal::Forbidden { caller: caller.describe(), what };
    match (caller.role, access) {
        (Role::Admin, _) | (_, Access::Observe) => Ok(()),
        (_, Access::Admin) => Err(forbidden(format!("{request}: it needs an admin token"))),
        (Role::Read, Access::MemoryWrite) => Err(forbidden("write memories: it is read-only".to_owned())),
        (Role::Read, Access::RunPlugin) => Err(forbidden("run plugin tools: it is read-only".to_owned())),
        (Role::Read, Access::MemoryRead) | (Role::Agent, Access::RunPlugin) => Ok(()),
        (Role::Agent, Access::MemoryRead | Access::MemoryWrite) => {
            let agent = caller.agent.as_deref().unwrap_or_default();
            let own = MemoryPath::parse(target).is_ok_and(|path| path.agent() == agent)
                || target.starts_with(&format!("{agent}/"));
            if own {
                Ok(())
            } else {
                Err(forbidden(format!("reach {target:?}: only memories under {agent}/")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn agent(name: &str) -> Caller {
        Caller { role: Role::Agent, agent: Some(name.into()), token_id: Some("0123456789abcdef".into()) }
    }

    fn reader() -> Caller {
        Caller { role: Role::Read, agent: None, token_id: Some("0123456789abcdef".into()) }
    }

    #[test]
    fn an_agent_token_reaches_only_its_own_memories() {
        let alice = agent("alice");
        assert!(permits(&alice, "call a tool", Access::MemoryWrite, "alice/notes").is_ok());
        assert!(permits(&alice, "call a tool", Access::MemoryRead, "alice/").is_ok());
        assert!(permits(&alice, "call a tool", Access::RunPlugin, "").is_ok());
        for (access, target) in [
            (Access::MemoryRead, "bob/notes"),
            (Access::MemoryRead, ""),
            (Access::MemoryRead, "alice-evil/"),
            (Access::MemoryWrite, "bob/notes"),
            (Access::Admin, ""),
        ] {
            let refused = permits(&alice, "call a tool", access, target).unwrap_err();
            assert!(matches!(refused, Refusal::Forbidden { .. }), "{access:?} {target}");
            assert!(refused.to_string().contains("agent alice"), "{refused}");
        }
    }

    #[test]
    fn a_read_token_only_reads_and_observes() {
        assert!(permits(&reader(), "call a tool", Access::MemoryRead, "bob/x").is_ok());
        assert!(permits(&reader(), "call a tool", Access::Observe, "").is_ok());
        for access in [Access::MemoryWrite, Access::RunPlugin, Access::Admin] {
            assert!(permits(&reader(), "call a tool", access, "bob/x").is_err(), "{access:?}");
        }
    }

    #[test]
    fn an_admin_may_do_everything() {
        for access in [Access::Observe, Access::MemoryRead, Access::MemoryWrite, Access::RunPlugin, Access::Admin] {
            assert!(permits(&Caller::dev(), "call a tool", access, "").is_ok(), "{access:?}");
        }
    }

    #[test]
    fn the_memory_target_is_the_path_else_the_prefix_else_everything() {
        assert_eq!(memory_target(&json!({ "path": "a/b", "prefix": "c/" })), "a/b");
        assert_eq!(memory_target(&json!({ "prefix": "c/" })), "c/");
        assert_eq!(memory_target(&json!({ "limit": 3 })), "");
    }
}
