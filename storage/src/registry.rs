//! The plugin registry's table (replicated: installed plugins and trusted
//! publisher keys) and this node's plugin module blobs (local, content
//! addressed by SHA-256).

use rocksdb::{Direction, IteratorMode};
use zeromesh_protocol::agent::AgentRecord;
use zeromesh_protocol::auth::TokenRecord;
use zeromesh_protocol::limits::{
    MAX_AGENTS, MAX_FEDERATED_SERVERS, MAX_INSTALLED_PLUGINS, MAX_PLUGIN_PACKAGE_BYTES, MAX_TOKENS,
    MAX_TRUSTED_PUBLISHERS,
};
use zeromesh_protocol::plugin::{InstalledPlugin, PublisherKey, RegisteredServer, TrustedPublisher};

use crate::error::{decode, encode, StorageError};
use crate::keys::*;
use crate::store::Store;
use crate::tables::StateBatch;

/// Checks one registry record from a snapshot: a known key shape whose value
/// decodes and agrees with its key.
pub(crate) fn check_registry_record(key: &[u8], value: &[u8]) -> Result<(), String> {
    if let Some(name) = key.strip_prefix(PLUGIN_KEY_PREFIX) {
        let plugin: InstalledPlugin = decode("installed plugin", value).map_err(|e| e.to_string())?;
        if plugin.name.as_bytes() != name {
            return Err(format!(
                "key names plugin {:?}, record names {:?}",
                String::from_utf8_lossy(name),
                plugin.name
            ));
        }
        return Ok(());
    }
    if let Some(publisher) = key.strip_prefix(PUBLISHER_KEY_PREFIX) {
        let trusted: TrustedPublisher = decode("trusted publisher", value).map_err(|e| e.to_string())?;
        if trusted.publisher.0.as_slice() != publisher {
            return Err("a trusted publisher's key and record disagree".into());
        }
        return Ok(());
    }
    if let Some(id) = key.strip_prefix(TOKEN_KEY_PREFIX) {
        let token: TokenRecord = decode("access token", value).map_err(|e| e.to_string())?;
        if token.id.as_bytes() != id {
            return Err("an access token's key and record disagree".into());
        }
        return Ok(());
    }
    if let Some(name) = key.strip_prefix(SERVER_KEY_PREFIX) {
        let server: RegisteredServer = decode("federated server", value).map_err(|e| e.to_string())?;
        if server.registration.name.as_bytes() != name {
            return Err("a federated server's key and record disagree".into());
        }
        return Ok(());
    }
    if let Some(id) = key.strip_prefix(AGENT_KEY_PREFIX) {
        let agent: AgentRecord = decode("agent", value).map_err(|e| e.to_string())?;
        if agent.id.as_bytes() != id {
            return Err("an agent's key and record disagree".into());
        }
        return Ok(());
    }
    crate::agreements::check_agreement_record(key, value)
        .or_else(|| crate::usage::check_usage_record(key, value))
        .unwrap_or_else(|| Err("unknown key prefix".into()))
}

impl Store {
    pub(crate) fn registry_scan<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
        what: &'static str,
        limit: usize,
    ) -> Result<Vec<T>, StorageError> {
        let mut found = Vec::new();
        let cf = self.cf(CF_PLUGIN_REGISTRY)?;
        for item in self.db.iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward)) {
            let (key, value) = item?;
            if !key.starts_with(prefix) || found.len() == limit {
                break;
            }
            found.push(decode(what, &value)?);
        }
        Ok(found)
    }

    /// Every installed plugin, in name order.
    pub fn installed_plugins(&self) -> Result<Vec<InstalledPlugin>, StorageError> {
        self.registry_scan(PLUGIN_KEY_PREFIX, "installed plugin", MAX_INSTALLED_PLUGINS)
    }

    pub fn installed_plugin(&self, name: &str) -> Result<Option<InstalledPlugin>, StorageError> {
        match self.db.get_pinned_cf(self.cf(CF_PLUGIN_REGISTRY)?, plugin_key(name))? {
            Some(bytes) => Ok(Some(decode("installed plugin", &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every registered federated MCP server, in name order.
    pub fn registered_servers(&self) -> Result<Vec<RegisteredServer>, StorageError> {
        self.registry_scan(SERVER_KEY_PREFIX, "federated server", MAX_FEDERATED_SERVERS)
    }

    pub fn registered_server(&self, name: &str) -> Result<Option<RegisteredServer>, StorageError> {
        match self.db.get_pinned_cf(self.cf(CF_PLUGIN_REGISTRY)?, server_key(name))? {
            Some(bytes) => Ok(Some(decode("federated server", &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every trusted publisher key.
    pub fn trusted_publishers(&self) -> Result<Vec<TrustedPublisher>, StorageError> {
        self.registry_scan(PUBLISHER_KEY_PREFIX, "trusted publisher", MAX_TRUSTED_PUBLISHERS)
    }

    pub fn trusted_publisher(&self, publisher: &PublisherKey) -> Result<Option<TrustedPublisher>, StorageError> {
        match self.db.get_pinned_cf(self.cf(CF_PLUGIN_REGISTRY)?, publisher_key(&publisher.0))? {
            Some(bytes) => Ok(Some(decode("trusted publisher", &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every API access token (hashed), in id order.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StorageError> {
        self.registry_scan(TOKEN_KEY_PREFIX, "access token", MAX_TOKENS)
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, StorageError> {
        match self.db.get_pinned_cf(self.cf(CF_PLUGIN_REGISTRY)?, token_key(id))? {
            Some(bytes) => Ok(Some(decode("access token", &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every agent, terminated ones included, in id order.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, StorageError> {
        self.registry_scan(AGENT_KEY_PREFIX, "agent", MAX_AGENTS)
    }

    pub fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StorageError> {
        match self.db.get_pinned_cf(self.cf(CF_PLUGIN_REGISTRY)?, agent_key(id))? {
            Some(bytes) => Ok(Some(decode("agent", &bytes)?)),
            None => Ok(None),
        }
    }

    /// The module with SHA-256 `sha256`, if this node holds it. The caller
    /// verifies the hash before use.
    pub fn plugin_blob(&self, sha256: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.cf(CF_PLUGIN_BLOBS)?, sha256)?)
    }

    /// Stores a module under its SHA-256 (which the caller computed), synced.
    pub fn put_plugin_blob(&self, sha256: &[u8; 32], module: &[u8]) -> Result<(), StorageError> {
        if module.len() > MAX_PLUGIN_PACKAGE_BYTES {
            return Err(StorageError::TooLarge {
                what: "plugin module",
                actual: module.len(),
                limit: MAX_PLUGIN_PACKAGE_BYTES,
            });
        }
        self.db.put_cf_opt(self.cf(CF_PLUGIN_BLOBS)?, sha256, module, &Store::synced())?;
        Ok(())
    }

    pub fn delete_plugin_blob(&self, sha256: &[u8; 32]) -> Result<(), StorageError> {
        self.db.delete_cf(self.cf(CF_PLUGIN_BLOBS)?, sha256)?;
        Ok(())
    }

    /// The SHA-256 of every module this node holds.
    pub fn plugin_blob_hashes(&self) -> Result<Vec<[u8; 32]>, StorageError> {
        let mut hashes = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_PLUGIN_BLOBS)?, IteratorMode::Start) {
            let (key, _) = item?;
            if let Ok(hash) = <[u8; 32]>::try_from(&key[..]) {
                hashes.push(hash);
            }
        }
        Ok(hashes)
    }
}

impl StateBatch<'_> {
    pub fn put_installed_plugin(&mut self, plugin: &InstalledPlugin) -> Result<(), StorageError> {
        let bytes = encode("installed plugin", plugin)?;
        self.batch.put_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, plugin_key(&plugin.name), bytes);
        Ok(())
    }

    pub fn delete_installed_plugin(&mut self, name: &str) -> Result<(), StorageError> {
        self.batch.delete_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, plugin_key(name));
        Ok(())
    }

    pub fn put_registered_server(&mut self, server: &RegisteredServer) -> Result<(), StorageError> {
        let bytes = encode("federated server", server)?;
        self.batch.put_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, server_key(&server.registration.name), bytes);
        Ok(())
    }

    pub fn delete_registered_server(&mut self, name: &str) -> Result<(), StorageError> {
        self.batch.delete_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, server_key(name));
        Ok(())
    }

    pub fn put_trusted_publisher(&mut self, trusted: &TrustedPublisher) -> Result<(), StorageError> {
        let bytes = encode("trusted publisher", trusted)?;
        self.batch.put_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, publisher_key(&trusted.publisher.0), bytes);
        Ok(())
    }

    pub fn put_token(&mut self, token: &TokenRecord) -> Result<(), StorageError> {
        let bytes = encode("access token", token)?;
        self.batch.put_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, token_key(&token.id), bytes);
        Ok(())
    }

    pub fn delete_token(&mut self, id: &str) -> Result<(), StorageError> {
        self.batch.delete_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, token_key(id));
        Ok(())
    }

    pub fn put_agent(&mut self, agent: &AgentRecord) -> Result<(), StorageError> {
        let bytes = encode("agent", agent)?;
        self.batch.put_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, agent_key(&agent.id), bytes);
        Ok(())
    }

    pub fn delete_trusted_publisher(&mut self, publisher: &PublisherKey) -> Result<(), StorageError> {
        self.batch.delete_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, publisher_key(&publisher.0));
        Ok(())
    }
}
