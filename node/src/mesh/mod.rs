//! The libp2p mesh: the swarm and its task, the wire codec, the messages
//! nodes exchange, the long-lived links Raft travels on, offloaded plugin calls and their receipts, and signed
//! resource adverts.

pub mod advert;
pub mod codec;
pub mod link;
pub mod messages;
pub mod offload;
mod swarm;

pub use swarm::{
    peer_of, InboundHandler, MeshConfig, MeshCounters, MeshHandle, MeshSendError, OffloadHandler, PeerSummary,
};
