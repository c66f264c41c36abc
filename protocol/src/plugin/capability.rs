//! What a plugin may ask the host to do. Deny by default: a plugin gets a
//! host function only if it declared the capability and an admin granted it.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Capability {
    /// Write lines to the node's log.
    #[serde(rename = "log")]
    Log,
    /// Read the calling agent's own memories.
    #[serde(rename = "memory.read")]
    MemoryRead,
    /// Write the calling agent's own memories (through the replicated log).
    #[serde(rename = "memory.write")]
    MemoryWrite,
    /// Read the wall clock.
    #[serde(rename = "clock")]
    Clock,
    /// Draw random bytes.
    #[serde(rename = "random")]
    Random,
}

impl Capability {
    pub const ALL: [Capability; 5] =
        [Capability::Log, Capability::MemoryRead, Capability::MemoryWrite, Capability::Clock, Capability::Random];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::MemoryRead => "memory.read",
            Capability::MemoryWrite => "memory.write",
            Capability::Clock => "clock",
            Capability::Random => "random",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities (declared by a manifest, or granted by an admin).
pub type CapabilitySet = BTreeSet<Capability>;
