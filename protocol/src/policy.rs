//! Policy sets: Cedar policies over which agent may call which tool with
//! what, versioned in the log. The kernel compiles and evaluates them; the
//! log only orders and keeps their text.

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_AGENT_TEXT_BYTES, MAX_POLICY_BYTES};
use crate::validate::{check_len, ValidationError};

/// A change to the policy set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyCommand {
    /// Replaces the policy set with `text` (Cedar policies, validated against
    /// the kernel's schema by the node that proposes it). With
    /// `expect_version`, applies only while that is the current version, so
    /// two operators editing at once do not overwrite each other unseen.
    Set { text: String, description: String, expect_version: Option<u64> },
}

impl PolicyCommand {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let PolicyCommand::Set { text, description, .. } = self;
        check_len("policy set", text.len(), MAX_POLICY_BYTES)?;
        check_len("policy description", description.len(), MAX_AGENT_TEXT_BYTES)
    }
}

/// One version of the policy set, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// 1 for the first set, one more for each later one; 0 is the empty set
    /// a mesh starts with.
    pub version: u64,
    pub text: String,
    pub description: String,
    /// The entry that set it, and the leader's clock in it.
    pub log_index: u64,
    pub at_ms: u64,
}

impl PolicyRecord {
    /// The set a mesh has before any is set: no policies.
    pub fn initial() -> PolicyRecord {
        PolicyRecord { version: 0, text: String::new(), description: String::new(), log_index: 0, at_ms: 0 }
    }
}

/// What applying a [`PolicyCommand`] answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyOutcome {
    Set {
        version: u64,
    },
    /// `expect_version` was not the current version; nothing changed.
    VersionMismatch {
        current: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_set_is_bounded() {
        let set = |text: String| PolicyCommand::Set { text, description: String::new(), expect_version: None };
        assert!(set("permit(principal, action, resource);".into()).validate().is_ok());
        assert!(set("x".repeat(MAX_POLICY_BYTES + 1)).validate().is_err());
    }
}
