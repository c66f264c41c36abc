//! Identities of cluster members.

use serde::{Deserialize, Serialize};

/// A Raft node id. Ids are assigned once and never reused.
pub type NodeId = u64;

/// What the cluster knows about a member: where to reach it.
/// Kept in the Raft membership, so every node agrees on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's mesh address (a multiaddr once the mesh exists).
    pub p2p_addr: String,
    /// The member's peer API address (`ws://host:port`).
    pub api_addr: String,
}

impl std::fmt::Display for MemberInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{p2p: {}, api: {}}}", self.p2p_addr, self.api_addr)
    }
}
