//! The peer API: JSON-RPC 2.0 in the Model Context Protocol's message
//! shapes, over WebSocket (subprotocol `mcp`) and Streamable HTTP, with
//! `/health`, `/ready` and `/metrics` beside them.

pub mod auth;
mod http;
pub mod jsonrpc;
pub mod metrics;
mod resources;
mod server;
mod tools;

use std::sync::Arc;
use std::time::Duration;

pub use http::serve;
pub use server::PROTOCOL_VERSIONS;

use crate::cluster::Cluster;
use crate::plugins::PluginRuntime;
use crate::tools::Tooling;

/// What the peer API reaches.
pub struct ApiState {
    pub cluster: Arc<Cluster>,
    pub plugins: Arc<PluginRuntime>,
    pub tools: Tooling,
    pub auth: auth::Auth,
    pub metrics: metrics::ApiMetrics,
    /// A silent WebSocket connection is closed after this long.
    pub idle_timeout: Duration,
}
