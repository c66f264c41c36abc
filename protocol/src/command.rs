//! The replicated command set: what one Raft entry carries, and what applying
//! it answers.

use serde::{Deserialize, Serialize};

use crate::agent::{AgentCommand, AgentOutcome};
use crate::agreement::{AgreementCommand, AgreementOutcome, UsageCommand, UsageOutcome};
use crate::auth::{TokenCommand, TokenOutcome};
use crate::memory::{CommandOutcome, MemoryBatch};
use crate::plugin::{PluginCommand, PluginOutcome};
use crate::policy::{PolicyCommand, PolicyOutcome};
use crate::trace::{TraceCommand, TraceOutcome};
use crate::validate::ValidationError;

/// The application data of one Raft entry. The leader stamps the wall-clock
/// time into it when it proposes, so apply never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Milliseconds since the Unix epoch, stamped by the proposing leader.
    pub stamped_at_ms: u64,
    /// What to do.
    pub command: Command,
}

/// One replicated command. New parts of the kernel add variants here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A batch of memory-log commands, applied in order.
    Memory(MemoryBatch),
    /// A change to the plugin registry.
    Plugin(PluginCommand),
    /// A change to the API's access tokens.
    Token(TokenCommand),
    /// A change to the agent registry.
    Agent(AgentCommand),
    /// A change to an agreement.
    Agreement(AgreementCommand),
    /// Metering of an agreement's calls.
    Usage(UsageCommand),
    /// A new version of the policy set.
    Policy(PolicyCommand),
    /// A key for proofs of usage.
    Trace(TraceCommand),
}

impl Command {
    /// Checks every limit of the command. A proposer calls this before a
    /// command reaches the log; apply calls it again and rejects, never panics.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Command::Memory(batch) => batch.validate(),
            Command::Plugin(command) => command.validate(),
            Command::Token(command) => command.validate(),
            Command::Agent(command) => command.validate(),
            Command::Agreement(command) => command.validate(),
            Command::Usage(command) => command.validate(),
            Command::Policy(command) => command.validate(),
            Command::Trace(command) => command.validate(),
        }
    }
}

/// What applying one entry answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandReply {
    /// Entries with no application data (blank or membership entries).
    None,
    /// One outcome per command of a memory batch, in the batch's order.
    Memory(Vec<CommandOutcome>),
    /// The outcome of a plugin registry command.
    Plugin(PluginOutcome),
    /// The outcome of a token command.
    Token(TokenOutcome),
    /// The entry failed validation at apply time; nothing was changed.
    Rejected(String),
    /// The outcome of an agent registry command.
    Agent(AgentOutcome),
    Agreement(AgreementOutcome),
    Usage(UsageOutcome),
    Policy(PolicyOutcome),
    Trace(TraceOutcome),
}
