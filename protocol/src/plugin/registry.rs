//! The replicated plugin registry: which publishers are trusted, which
//! plugins are installed (their signed manifests and granted capabilities).
//! Module bytes are not replicated: each node fetches them by SHA-256.

use serde::{Deserialize, Serialize};

use super::capability::CapabilitySet;
use super::federation::ServerRegistration;
use super::manifest::check_name;
use super::signed::{PackageError, PublisherKey, SignedManifest};
use crate::validate::ValidationError;

/// A change to the plugin registry, made by an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PluginCommand {
    /// Adds a publisher key to the trusted set.
    TrustPublisher { publisher: PublisherKey },
    /// Removes a key from the trusted set and uninstalls every plugin it signed.
    DistrustPublisher { publisher: PublisherKey },
    /// Installs (or replaces, by name) a plugin. Apply checks the signature,
    /// the manifest, that the publisher is trusted at that point of the log,
    /// expiry at the entry's time, and that every grant was declared.
    Install { manifest: SignedManifest, granted: CapabilitySet },
    /// Removes an installed plugin by name.
    Uninstall { name: String },
    /// Registers (or replaces, by name) a federated MCP server.
    RegisterServer { registration: ServerRegistration },
    /// Removes a federated server by name: its hosts stop it.
    UnregisterServer { name: String },
}

impl PluginCommand {
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            PluginCommand::TrustPublisher { .. } | PluginCommand::DistrustPublisher { .. } => Ok(()),
            PluginCommand::Install { manifest, .. } => manifest.check_sizes().map_err(|error| {
                ValidationError::BadField { what: "signed manifest", value: error.to_string(), reason: "is malformed" }
            }),
            PluginCommand::Uninstall { name } => check_name("plugin name", name),
            PluginCommand::RegisterServer { registration } => registration.validate(),
            PluginCommand::UnregisterServer { name } => check_name("server name", name),
        }
    }
}

/// What applying a [`PluginCommand`] answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PluginOutcome {
    Trusted {
        already: bool,
    },
    /// The key was removed; these plugins, signed by it, were uninstalled.
    Distrusted {
        was_trusted: bool,
        uninstalled: Vec<String>,
    },
    /// Installed; `replaced` is the version it replaced, if any.
    Installed {
        name: String,
        version: String,
        module_sha256: [u8; 32],
        replaced: Option<String>,
    },
    Uninstalled {
        name: String,
    },
    NotInstalled {
        name: String,
    },
    /// A federated server was registered; `replaced` when one of that name was.
    ServerRegistered {
        name: String,
        replaced: bool,
    },
    ServerUnregistered {
        name: String,
    },
    ServerNotRegistered {
        name: String,
    },
    /// The install was refused; nothing changed.
    Refused(PackageError),
    /// The registry already holds its maximum of plugins or publishers.
    Full {
        what: String,
        limit: usize,
    },
}

/// An installed plugin as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPlugin {
    pub name: String,
    pub version: String,
    pub module_sha256: [u8; 32],
    pub manifest: SignedManifest,
    pub granted: CapabilitySet,
    pub installed_at_ms: u64,
    pub log_index: u64,
}

/// A trusted publisher as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedPublisher {
    pub publisher: PublisherKey,
    pub trusted_at_ms: u64,
    pub log_index: u64,
}
