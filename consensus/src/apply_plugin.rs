//! Deterministic apply of plugin registry commands. Signature, manifest,
//! trust and expiry are checked here, against the registry as this entry
//! finds it and the time the leader stamped into it, so every node accepts
//! or refuses an install alike.

use std::collections::BTreeMap;

use zeromesh_protocol::limits::{MAX_FEDERATED_SERVERS, MAX_INSTALLED_PLUGINS, MAX_TRUSTED_PUBLISHERS};
use zeromesh_protocol::plugin::{
    InstalledPlugin, PackageError, PluginCommand, PluginOutcome, PublisherKey, RegisteredServer, SignedManifest,
    TrustedPublisher,
};
use zeromesh_storage::StorageError;

use crate::apply::Applier;

/// Registry changes staged earlier in the same apply call: `None` removed.
#[derive(Default)]
pub(crate) struct RegistryOverlay {
    plugins: BTreeMap<String, Option<InstalledPlugin>>,
    publishers: BTreeMap<PublisherKey, Option<TrustedPublisher>>,
    servers: BTreeMap<String, Option<RegisteredServer>>,
}

impl RegistryOverlay {
    pub fn changed(&self) -> bool {
        !self.plugins.is_empty() || !self.publishers.is_empty() || !self.servers.is_empty()
    }
}

impl Applier<'_> {
    fn plugin(&self, name: &str) -> Result<Option<InstalledPlugin>, StorageError> {
        match self.registry.plugins.get(name) {
            Some(staged) => Ok(staged.clone()),
            None => self.store.installed_plugin(name),
        }
    }

    fn plugins(&self) -> Result<Vec<InstalledPlugin>, StorageError> {
        let mut merged: BTreeMap<String, InstalledPlugin> =
            self.store.installed_plugins()?.into_iter().map(|plugin| (plugin.name.clone(), plugin)).collect();
        for (name, staged) in &self.registry.plugins {
            match staged {
                Some(plugin) => merged.insert(name.clone(), plugin.clone()),
                None => merged.remove(name),
            };
        }
        Ok(merged.into_values().collect())
    }

    fn server(&self, name: &str) -> Result<Option<RegisteredServer>, StorageError> {
        match self.registry.servers.get(name) {
            Some(staged) => Ok(staged.clone()),
            None => self.store.registered_server(name),
        }
    }

    fn server_count(&self) -> Result<usize, StorageError> {
        let mut names: BTreeMap<String, bool> =
            self.store.registered_servers()?.into_iter().map(|server| (server.registration.name, true)).collect();
        for (name, staged) in &self.registry.servers {
            names.insert(name.clone(), staged.is_some());
        }
        Ok(names.values().filter(|present| **present).count())
    }

    fn stage_server(&mut self, name: &str, server: Option<RegisteredServer>) -> Result<(), StorageError> {
        match &server {
            Some(server) => self.batch.put_registered_server(server)?,
            None => self.batch.delete_registered_server(name)?,
        }
        self.registry.servers.insert(name.to_owned(), server);
        Ok(())
    }

    pub(crate) fn is_trusted(&self, publisher: &PublisherKey) -> Result<bool, StorageError> {
        match self.registry.publishers.get(publisher) {
            Some(staged) => Ok(staged.is_some()),
            None => Ok(self.store.trusted_publisher(publisher)?.is_some()),
        }
    }

    fn trusted_count(&self) -> Result<usize, StorageError> {
        let mut keys: BTreeMap<PublisherKey, bool> =
            self.store.trusted_publishers()?.into_iter().map(|trusted| (trusted.publisher, true)).collect();
        for (key, staged) in &self.registry.publishers {
            keys.insert(*key, staged.is_some());
        }
        Ok(keys.values().filter(|present| **present).count())
    }

    fn stage_plugin(&mut self, name: &str, plugin: Option<InstalledPlugin>) -> Result<(), StorageError> {
        match &plugin {
            Some(plugin) => self.batch.put_installed_plugin(plugin)?,
            None => self.batch.delete_installed_plugin(name)?,
        }
        self.registry.plugins.insert(name.to_owned(), plugin);
        Ok(())
    }

    fn stage_publisher(&mut self, key: PublisherKey, trusted: Option<TrustedPublisher>) -> Result<(), StorageError> {
        match &trusted {
            Some(trusted) => self.batch.put_trusted_publisher(trusted)?,
            None => self.batch.delete_trusted_publisher(&key)?,
        }
        self.registry.publishers.insert(key, trusted);
        Ok(())
    }

    pub(crate) fn apply_plugin(
        &mut self,
        log_index: u64,
        at_ms: u64,
        command: &PluginCommand,
    ) -> Result<PluginOutcome, StorageError> {
        Ok(match command {
            PluginCommand::TrustPublisher { publisher } => {
                if self.is_trusted(publisher)? {
                    PluginOutcome::Trusted { already: true }
                } else if self.trusted_count()? >= MAX_TRUSTED_PUBLISHERS {
                    PluginOutcome::Full { what: "trusted publishers".into(), limit: MAX_TRUSTED_PUBLISHERS }
                } else {
                    let trusted = TrustedPublisher { publisher: *publisher, trusted_at_ms: at_ms, log_index };
                    self.stage_publisher(*publisher, Some(trusted))?;
                    PluginOutcome::Trusted { already: false }
                }
            }
            PluginCommand::DistrustPublisher { publisher } => {
                let was_trusted = self.is_trusted(publisher)?;
                if was_trusted {
                    self.stage_publisher(*publisher, None)?;
                }
                let mut uninstalled = Vec::new();
                for plugin in self.plugins()? {
                    if plugin.manifest.publisher == *publisher {
                        self.stage_plugin(&plugin.name, None)?;
                        uninstalled.push(plugin.name);
                    }
                }
                PluginOutcome::Distrusted { was_trusted, uninstalled }
            }
            PluginCommand::Install { manifest, granted } => match self.check_install(manifest, granted, at_ms)? {
                Err(refusal) => PluginOutcome::Refused(refusal),
                Ok((name, version, module_sha256)) => {
                    let replaced = self.plugin(&name)?.map(|old| old.version);
                    if replaced.is_none() && self.plugins()?.len() >= MAX_INSTALLED_PLUGINS {
                        PluginOutcome::Full { what: "installed plugins".into(), limit: MAX_INSTALLED_PLUGINS }
                    } else {
                        let installed = InstalledPlugin {
                            name: name.clone(),
                            version: version.clone(),
                            module_sha256,
                            manifest: manifest.clone(),
                            granted: granted.clone(),
                            installed_at_ms: at_ms,
                            log_index,
                        };
                        self.stage_plugin(&name, Some(installed))?;
                        PluginOutcome::Installed { name, version, module_sha256, replaced }
                    }
                }
            },
            PluginCommand::Uninstall { name } => {
                if self.plugin(name)?.is_some() {
                    self.stage_plugin(name, None)?;
                    PluginOutcome::Uninstalled { name: name.clone() }
                } else {
                    PluginOutcome::NotInstalled { name: name.clone() }
                }
            }
            PluginCommand::RegisterServer { registration } => {
                let name = registration.name.clone();
                let replaced = self.server(&name)?.is_some();
                if !replaced && self.server_count()? >= MAX_FEDERATED_SERVERS {
                    PluginOutcome::Full { what: "federated servers".into(), limit: MAX_FEDERATED_SERVERS }
                } else {
                    let server =
                        RegisteredServer { registration: registration.clone(), registered_at_ms: at_ms, log_index };
                    self.stage_server(&name, Some(server))?;
                    PluginOutcome::ServerRegistered { name, replaced }
                }
            }
            PluginCommand::UnregisterServer { name } => {
                if self.server(name)?.is_some() {
                    self.stage_server(name, None)?;
                    PluginOutcome::ServerUnregistered { name: name.clone() }
                } else {
                    PluginOutcome::ServerNotRegistered { name: name.clone() }
                }
            }
        })
    }

    /// Every check of an install, in the order a package's are made. The
    /// outer `Result` is storage; the inner one is the refusal.
    #[allow(clippy::type_complexity)]
    fn check_install(
        &self,
        signed: &SignedManifest,
        granted: &zeromesh_protocol::plugin::CapabilitySet,
        at_ms: u64,
    ) -> Result<Result<(String, String, [u8; 32]), PackageError>, StorageError> {
        let manifest = match signed.check_signature() {
            Ok(manifest) => manifest,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let trusted = self.is_trusted(&signed.publisher)?;
        if let Err(refusal) = signed.check_policy(&manifest, |_| trusted, at_ms) {
            return Ok(Err(refusal));
        }
        let module_sha256 = match SignedManifest::module_sha256(&manifest) {
            Ok(hash) => hash,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if let Some(extra) = granted.iter().find(|capability| !manifest.capabilities.contains(capability)) {
            return Ok(Err(PackageError::InvalidManifest(format!(
                "capability {extra} is granted but the manifest does not declare it"
            ))));
        }
        Ok(Ok((manifest.name, manifest.version, module_sha256)))
    }
}
