//! The zeromesh node: configuration and identity, the libp2p mesh, Raft over
//! the mesh (the cluster service), the WebSocket peer API, and the client
//! the command line and the test harness use.

pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod identity;
pub mod mesh;
pub mod plugins;
pub mod stdio_bridge;
pub mod tls;
