//! Who is calling, and the agent a call acts for.

use zeromesh_protocol::auth::{check_agent_id, Role};

use crate::call::Refusal;

/// The agent of calls that name none.
pub const ANONYMOUS_AGENT: &str = "anonymous";

/// Who is calling: from a verified token, or anyone in `--dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The agent of an agent token.
    pub agent: Option<String>,
    /// `None` in `--dev`.
    pub token_id: Option<String>,
}

impl Caller {
    /// Anyone, on a `--dev` node: an admin without a token.
    pub fn dev() -> Caller {
        Caller { role: Role::Admin, agent: None, token_id: None }
    }

    /// The caller in words, for refusals.
    pub fn describe(&self) -> String {
        match (&self.token_id, &self.agent) {
            (Some(id), Some(agent)) => format!("token {id} (role {} for agent {agent})", self.role.name()),
            (Some(id), None) => format!("token {id} (role {})", self.role.name()),
            (None, _) => "this caller".to_owned(),
        }
    }
}

/// The agent a call acts for: an agent token's own agent (it may not name
/// another); else the agent the call names, or [`ANONYMOUS_AGENT`].
pub fn acting_agent(caller: &Caller, named: Option<&str>) -> Result<String, Refusal> {
    if let (Role::Agent, Some(own)) = (caller.role, &caller.agent) {
        if let Some(named) = named.filter(|named| named != own) {
            return Err(Refusal::Forbidden {
                caller: caller.describe(),
                what: format!("act for agent {named:?}: an agent token acts only for {own}"),
            });
        }
        return Ok(own.clone());
    }
    match named {
        None => Ok(ANONYMOUS_AGENT.to_owned()),
        Some(agent) => {
            check_agent_id(agent).map_err(|error| Refusal::InvalidAgent { reason: error.to_string() })?;
            Ok(agent.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent_token(agent: &str) -> Caller {
        Caller { role: Role::Agent, agent: Some(agent.into()), token_id: Some("0123456789abcdef".into()) }
    }

    #[test]
    fn an_agent_token_acts_only_for_its_own_agent() {
        assert_eq!(acting_agent(&agent_token("alice"), None).unwrap(), "alice");
        assert_eq!(acting_agent(&agent_token("alice"), Some("alice")).unwrap(), "alice");
        let refused = acting_agent(&agent_token("alice"), Some("bob")).unwrap_err();
        assert!(matches!(refused, Refusal::Forbidden { .. }), "{refused}");
        assert!(refused.to_string().contains("agent alice"), "{refused}");
    }

    #[test]
    fn an_admin_acts_for_the_agent_it_names_or_the_anonymous_one() {
        assert_eq!(acting_agent(&Caller::dev(), None).unwrap(), ANONYMOUS_AGENT);
        assert_eq!(acting_agent(&Caller::dev(), Some("agent-7")).unwrap(), "agent-7");
        for bad in ["", "a/b", "..", "spaces are not allowed"] {
            assert!(matches!(acting_agent(&Caller::dev(), Some(bad)), Err(Refusal::InvalidAgent { .. })), "{bad:?}");
        }
    }
}
