//! The zeromesh node: configuration and identity, the libp2p mesh, Raft over
//! the mesh (the cluster), the plugin runtime, the tools (called through the
//! kernel), the peer API, the runtime that starts them, and the client the
//! command line and the test harness use.

// rmcp's service futures nest deeply (the WebSocket session's spawn).
#![recursion_limit = "256"]

pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod files;
pub mod fuzzing;
pub mod identity;
pub mod logging;
pub mod mesh;
pub mod plugins;
pub mod runtime;
pub mod stdio_bridge;
pub mod tls;
pub mod tokens;
pub mod tools;

/// Locks `mutex`, taking over its data when a thread panicked holding it:
/// every guarded structure here stays consistent between statements.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
