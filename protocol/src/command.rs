//! The replicated command set: what one Raft entry carries, and what applying
//! it answers.

use serde::{Deserialize, Serialize};

use crate::agent::{AgentCommand, AgentOutcome};
use crate::agreement::{AgreementCommand, AgreementOutcome, UsageCommand, UsageOutcome};
use crate::auth::{TokenCommand, TokenOutcome};
use crate::limits::MAX_VOTER_COUNT;
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
    /// A cluster-wide setting.
    Cluster(ClusterCommand),
}

/// A cluster-wide setting, the same for whichever node leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterCommand {
    /// The voters the leader keeps, 1 to [`MAX_VOTER_COUNT`]: it promotes
    /// caught-up non-voters up to this many. A lower count demotes no one.
    SetVoterCount { count: u64 },
}

impl ClusterCommand {
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            ClusterCommand::SetVoterCount { count } if !(1..=MAX_VOTER_COUNT as u64).contains(count) => {
                Err(ValidationError::BadField {
                    what: "voter count",
                    value: count.to_string(),
                    reason: "a cluster keeps 1 to 7 voters",
                })
            }
            ClusterCommand::SetVoterCount { .. } => Ok(()),
        }
    }
}

/// What a cluster setting's entry answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterOutcome {
    /// The voter count is now `count`; it was `previous` (`None`: never set).
    VoterCountSet { count: u64, previous: Option<u64> },
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
            Command::Cluster(command) => command.validate(),
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
    Cluster(ClusterOutcome),
}
