//! The plugin vocabulary shared by the host, the replicated registry and the
//! node: capabilities, manifests, publisher keys, signed manifests, and the
//! registry's replicated commands.

mod capability;
mod federation;
mod manifest;
mod registry;
mod signed;

pub use capability::{Capability, CapabilitySet};
pub use federation::{
    HealthSettings, RegisteredServer, SecretRef, ServerHosts, ServerRegistration, ServerTransport,
    MAX_HEALTH_INTERVAL_MS, MIN_HEALTH_INTERVAL_MS,
};
pub use manifest::{check_name, Manifest, PluginLimits, ToolSpec};
pub use registry::{InstalledPlugin, PluginCommand, PluginOutcome, TrustedPublisher};
pub use signed::{PackageError, PublisherKey, SignedManifest, SIGNATURE_BYTES};
