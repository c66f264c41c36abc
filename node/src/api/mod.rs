//! The peer API: JSON-RPC 2.0 in the Model Context Protocol's message
//! shapes, over WebSocket (subprotocol `mcp`).

pub mod auth;
mod http;
pub mod jsonrpc;
pub mod metrics;
mod plugin_tools;
mod resources;
mod server;
mod status;
mod token_tools;
pub mod tools;

pub use http::serve;
pub use server::PROTOCOL_VERSIONS;
