//! The libp2p mesh: the swarm and its task, the wire codec, the messages
//! nodes exchange, and signed resource adverts.

pub mod advert;
pub mod codec;
pub mod messages;
mod swarm;

pub use swarm::{peer_of, InboundHandler, MeshConfig, MeshCounters, MeshHandle, MeshSendError, PeerSummary};
