//! The cluster: Raft over the mesh, and the operations every node accepts
//! (writes and reads forwarded to the leader when needed, commands, joins,
//! status), membership upkeep, and the mesh's inbound side.

mod batcher;
mod checkpoint;
mod disk;
mod forward;
mod inbound;
mod membership;
mod propose;
mod service;
mod transport;

pub use checkpoint::{checkpoints, member_verifier, signing_key, Checkpoints};
pub use forward::ForwardCounters;
pub use inbound::Inbound;
pub use membership::{join, next_voters, upkeep};
pub(crate) use service::write_durably;
pub use service::{token_hash, Cluster, ServiceError};
pub use transport::{member_address, Liveness, MeshTransport};
