//! The peer API: the Model Context Protocol, carried by the official Rust
//! SDK (`rmcp`), over WebSocket (subprotocol `mcp`) and Streamable HTTP,
//! with `/health`, `/ready` and `/metrics` beside them.

pub mod auth;
mod dashboard;
mod http;
mod mcp;
pub mod metrics;
mod resources;
pub mod tasks;
mod tools;
mod websocket;

use std::sync::Arc;
use std::time::Duration;

pub use http::serve;
pub use mcp::protocol_versions;
pub use websocket::decode as decode_websocket_message;

use crate::cluster::Cluster;
use crate::plugins::PluginRuntime;
use crate::tools::Tooling;

/// A JSON-RPC error as the peer API answers it.
pub type RpcError = rmcp::ErrorData;

/// An error with `code` and `message`.
pub fn rpc_error(code: i32, message: impl Into<String>) -> RpcError {
    RpcError::new(rmcp::model::ErrorCode(code), message.into(), None)
}

/// `error` with details a client can act on (e.g. which limit refused a call).
pub fn with_data(error: RpcError, data: serde_json::Value) -> RpcError {
    RpcError { data: Some(data), ..error }
}

/// What the peer API reaches.
pub struct ApiState {
    pub cluster: Arc<Cluster>,
    pub plugins: Arc<PluginRuntime>,
    pub tools: Tooling,
    pub auth: auth::Auth,
    pub metrics: metrics::ApiMetrics,
    /// A silent WebSocket connection is closed after this long.
    pub idle_timeout: Duration,
    /// Long tool calls running or kept as MCP tasks.
    pub tasks: tasks::Tasks,
    /// Held while a backup is streamed: one at a time.
    pub backup: Arc<tokio::sync::Mutex<()>>,
}
