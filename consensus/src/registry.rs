//! Typed reads of the replicated registry (access tokens, agents, agreements and
//! their usage, policy sets, installed
//! plugins, trusted publishers) and this node's own plugin module blobs, so that the
//! node's runtime never reaches into RocksDB itself.

use std::collections::BTreeSet;

use zeromesh_protocol::agent::{AgentRecord, AgentSnapshot};
use zeromesh_protocol::agreement::{AgreementRecord, Ledger, Violation};
use zeromesh_protocol::auth::TokenRecord;
use zeromesh_protocol::plugin::{InstalledPlugin, RegisteredServer, TrustedPublisher};
use zeromesh_protocol::policy::PolicyRecord;
use zeromesh_storage::{StorageError, Store};

use crate::error::ConsensusError;
use crate::node::ConsensusNode;

impl ConsensusNode {
    /// The access token `id` in this node's applied state. A point read,
    /// cheap enough to run on every API request.
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, ConsensusError> {
        Ok(self.store().token(id)?)
    }

    /// Every access token (hashed), in id order.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, ConsensusError> {
        self.off_thread(|store| store.tokens()).await
    }

    /// Agent `id` in this node's applied state. A point read, cheap enough
    /// to run on every tool call.
    pub fn agent(&self, id: &str) -> Result<Option<AgentRecord>, ConsensusError> {
        Ok(self.store().agent(id)?)
    }

    /// Every agent, terminated ones included, in id order.
    pub async fn agents(&self) -> Result<Vec<AgentRecord>, ConsensusError> {
        self.off_thread(|store| store.agents()).await
    }

    /// Agreement `id` in this node's applied state.
    pub fn agreement(&self, id: &str) -> Result<Option<AgreementRecord>, ConsensusError> {
        Ok(self.store().agreement(id)?)
    }

    /// Every agreement whose consumer is `agent`. Cheap enough to run on
    /// every tool call of a governed agent (an index scan).
    pub fn agreements_of(&self, agent: &str) -> Result<Vec<AgreementRecord>, ConsensusError> {
        Ok(self.store().agreements_of(agent)?)
    }

    /// Every agreement, in id order.
    pub async fn agreements(&self) -> Result<Vec<AgreementRecord>, ConsensusError> {
        self.off_thread(|store| store.agreements()).await
    }

    /// Agreement `id`'s usage ledger.
    pub fn ledger(&self, id: &str) -> Result<Ledger, ConsensusError> {
        Ok(self.store().ledger(id)?)
    }

    /// The number the next violation gets.
    /// The policy set as this node has applied it (version 0 before any is set).
    pub fn current_policy(&self) -> Result<PolicyRecord, ConsensusError> {
        Ok(self.store().current_policy()?)
    }

    /// The voters the cluster keeps, as set through the log (`None`: never set).
    pub fn voter_count_setting(&self) -> Result<Option<u64>, ConsensusError> {
        Ok(self.store().voter_count()?)
    }

    /// The current policy set's version as this node has applied it: a point read.
    pub fn policy_version(&self) -> Result<u64, ConsensusError> {
        Ok(self.store().policy_version()?)
    }

    /// Policy set version `version`, while it is kept.
    pub fn policy(&self, version: u64) -> Result<Option<PolicyRecord>, ConsensusError> {
        Ok(self.store().policy(version)?)
    }

    /// The newest `limit` versions of the policy set kept, newest first.
    pub async fn policies(&self, limit: usize) -> Result<Vec<PolicyRecord>, ConsensusError> {
        self.off_thread(move |store| store.policies(limit)).await
    }

    pub fn next_violation_seq(&self) -> Result<u64, ConsensusError> {
        Ok(self.store().next_violation_seq()?)
    }

    /// Up to `limit` violations numbered `from` or later, oldest first.
    pub async fn violations(&self, from: u64, limit: usize) -> Result<Vec<Violation>, ConsensusError> {
        self.off_thread(move |store| store.violations(from, limit)).await
    }

    /// The bytes agent `id`'s live memories hold, counted in apply.
    pub fn stored_bytes(&self, id: &str) -> Result<u64, ConsensusError> {
        Ok(self.store().stored_bytes(id)?)
    }

    /// Agent snapshot `id`.
    pub async fn agent_snapshot(&self, id: String) -> Result<Option<AgentSnapshot>, ConsensusError> {
        self.off_thread(move |store| store.agent_snapshot(&id)).await
    }

    /// Every installed plugin, in name order.
    pub async fn installed_plugins(&self) -> Result<Vec<InstalledPlugin>, ConsensusError> {
        self.off_thread(|store| store.installed_plugins()).await
    }

    /// Every registered federated MCP server, in name order.
    pub async fn registered_servers(&self) -> Result<Vec<RegisteredServer>, ConsensusError> {
        self.off_thread(|store| store.registered_servers()).await
    }

    /// Every trusted publisher key.
    pub async fn trusted_publishers(&self) -> Result<Vec<TrustedPublisher>, ConsensusError> {
        self.off_thread(|store| store.trusted_publishers()).await
    }

    /// The plugin module with SHA-256 `sha256`, if this node holds it. Blobs
    /// are local, not replicated: the caller checks the hash before use.
    pub async fn module(&self, sha256: [u8; 32]) -> Result<Option<Vec<u8>>, ConsensusError> {
        self.off_thread(move |store| store.plugin_blob(&sha256)).await
    }

    /// Keeps `module` on this node under its SHA-256 (which the caller
    /// computed), synced.
    pub async fn keep_module(&self, sha256: [u8; 32], module: Vec<u8>) -> Result<(), ConsensusError> {
        self.off_thread(move |store| store.put_plugin_blob(&sha256, &module)).await
    }

    /// Deletes every module this node holds whose hash is not in `kept`.
    pub async fn drop_modules_except(&self, kept: BTreeSet<[u8; 32]>) -> Result<(), ConsensusError> {
        self.off_thread(move |store| {
            for hash in store.plugin_blob_hashes()? {
                if !kept.contains(&hash) {
                    store.delete_plugin_blob(&hash)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Runs a blocking RocksDB `read` on tokio's blocking pool.
    async fn off_thread<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, ConsensusError> {
        let store = self.store().clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|error| ConsensusError::Raft(format!("a storage task panicked: {error}")))?
            .map_err(ConsensusError::from)
    }
}
