//! The zeromesh plugin host: signed plugin packages and a wasmtime sandbox
//! that runs their tools under fuel, memory and wall-clock limits, with only
//! the host functions the plugin declared and was granted.
//!
//! Knows nothing of Raft or the mesh: the node gives it a [`PluginContext`]
//! for each call (the calling agent, its memories, a clock).

mod host;
mod package;

pub use host::{CallCaps, CallError, CallOutput, HostLimits, LoadError, LoadedPlugin, PluginContext, PluginHost};
pub use package::{generate_signing_key, sha256, Package, VerifiedPackage};
pub use zeromesh_protocol::plugin::{
    Capability, CapabilitySet, Manifest, PackageError, PluginLimits, PublisherKey, SignedManifest, ToolSpec,
};
