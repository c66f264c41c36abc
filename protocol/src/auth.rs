//! API access tokens as the replicated state keeps them: a public id, the
//! SHA-256 of the secret (never the secret), a role, and for agent tokens
//! the one agent they act for.

use serde::{Deserialize, Serialize};

use crate::limits::MAX_AGENT_ID_BYTES;
use crate::validate::ValidationError;

/// Hex digits of a token's public id.
pub const TOKEN_ID_HEX_DIGITS: usize = 16;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: tokens, plugins, trust, every agent's memories.
    Admin,
    /// One agent's memories and the plugins' tools on its behalf.
    Agent,
    /// Reads only: memories, resources, status.
    Read,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Read => "read",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Admin, Role::Agent, Role::Read].into_iter().find(|role| role.name() == text)
    }
}

/// A token as the replicated state keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub secret_sha256: [u8; 32],
    pub role: Role,
    pub agent: Option<String>,
    pub created_at_ms: u64,
    pub log_index: u64,
}

/// A change to the set of tokens, made by an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenCommand {
    Create { id: String, secret_sha256: [u8; 32], role: Role, agent: Option<String> },
    Revoke { id: String },
}

/// What applying a [`TokenCommand`] answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenOutcome {
    Created { id: String },
    Revoked { id: String },
    NotFound { id: String },
    AlreadyExists { id: String },
    Full { limit: usize },
}

/// Checks a token id: 16 lowercase hex digits.
pub fn check_token_id(id: &str) -> Result<(), ValidationError> {
    if id.len() != TOKEN_ID_HEX_DIGITS || !id.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    {
        return Err(ValidationError::BadField {
            what: "token id",
            value: id.chars().take(32).collect(),
            reason: "is 16 lowercase hex digits",
        });
    }
    Ok(())
}

/// Checks an agent id: what a memory path's first segment may be.
pub fn check_agent_id(agent: &str) -> Result<(), ValidationError> {
    let valid = !agent.is_empty()
        && agent.len() <= MAX_AGENT_ID_BYTES
        && agent != "."
        && agent != ".."
        && agent.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_.:@+~=,".contains(&byte));
    if !valid {
        return Err(ValidationError::BadField {
            what: "agent id",
            value: agent.chars().take(80).collect(),
            reason: "is 1 to 64 ASCII letters, digits and -_.:@+~=,",
        });
    }
    Ok(())
}

impl TokenCommand {
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            TokenCommand::Create { id, role, agent, .. } => {
                check_token_id(id)?;
                match (role, agent) {
                    (Role::Agent, Some(agent)) => check_agent_id(agent),
                    (Role::Agent, None) => Err(ValidationError::Empty { what: "agent of an agent token" }),
                    (_, Some(_)) => Err(ValidationError::BadField {
                        what: "agent",
                        value: role.name().into(),
                        reason: "is given only for agent tokens",
                    }),
                    (_, None) => Ok(()),
                }
            }
            TokenCommand::Revoke { id } => check_token_id(id),
        }
    }
}
