//! The peer API: JSON-RPC 2.0 in the Model Context Protocol's message
//! shapes, over WebSocket (subprotocol `mcp`).

pub mod jsonrpc;
mod plugin_tools;
mod resources;
mod server;
mod status;
pub mod tools;

pub use server::{serve, PROTOCOL_VERSIONS};
