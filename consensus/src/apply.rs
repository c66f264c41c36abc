//! Deterministic apply of memory commands. Everything here is a function of
//! the entry and the stored state: no clock, no randomness, no network.

use std::collections::BTreeMap;

use zeromesh_protocol::limits::MAX_HISTORY_VERSIONS_PER_PATH;
use zeromesh_protocol::{ClusterCommand, ClusterOutcome, Command};
use zeromesh_protocol::{CommandOutcome, CommandReply, MemoryBatch, MemoryCommand, MemoryPath, MemoryValue, Request};
use zeromesh_storage::{Head, StateBatch, StorageError, Store, StoredVersion};

/// Applies the commands of one `apply` call into a single write batch. Later
/// commands see the writes of earlier ones through `overlay` (memory) and
/// `registry` (plugin registry).
pub(crate) struct Applier<'a> {
    pub(crate) store: &'a Store,
    pub(crate) batch: StateBatch<'a>,
    pub(crate) overlay: BTreeMap<MemoryPath, StoredVersion>,
    pub(crate) registry: crate::apply_plugin::RegistryOverlay,
    pub(crate) tokens: BTreeMap<String, Option<zeromesh_protocol::auth::TokenRecord>>,
    pub(crate) agents: BTreeMap<String, zeromesh_protocol::agent::AgentRecord>,
    pub(crate) deals: crate::apply_agreement::AgreementOverlay,
    pub(crate) usage: crate::apply_usage::UsageOverlay,
    /// Agents' stored bytes as changed so far, written to the batch once
    /// per agent when the call ends ([`Applier::into_batch`]).
    stored: BTreeMap<String, u64>,
    /// Agent records read from the store so far (`None`: no such agent):
    /// a batch of writes checks the same agents' quotas again and again.
    /// Records staged in `agents` come first.
    pub(crate) agents_read: std::cell::RefCell<BTreeMap<String, Option<zeromesh_protocol::agent::AgentRecord>>>,
    /// Agent snapshots taken so far, with the count of kept ones after each.
    pub(crate) snapshots: BTreeMap<String, (zeromesh_protocol::agent::AgentSnapshot, u64)>,
    /// The latest entry time applied so far, once read, and whether it
    /// moved past the stored one.
    clock: Option<u64>,
    clock_moved: bool,
    /// The voter count set so far in this apply call.
    voter_count: Option<u64>,
}

impl Applier<'_> {
    /// The memory paths written (put, compare-and-set, delete) so far.
    pub fn written_paths(&self) -> Vec<MemoryPath> {
        self.overlay.keys().cloned().collect()
    }
}

impl<'a> Applier<'a> {
    pub fn new(store: &'a Store) -> Self {
        Applier {
            store,
            batch: store.state_batch(),
            overlay: BTreeMap::new(),
            registry: crate::apply_plugin::RegistryOverlay::default(),
            tokens: BTreeMap::new(),
            agents: BTreeMap::new(),
            deals: crate::apply_agreement::AgreementOverlay::default(),
            usage: crate::apply_usage::UsageOverlay::default(),
            stored: BTreeMap::new(),
            agents_read: std::cell::RefCell::default(),
            snapshots: BTreeMap::new(),
            clock: None,
            clock_moved: false,
            voter_count: None,
        }
    }

    /// Whether an applied command changed the plugin registry.
    pub fn registry_changed(&self) -> bool {
        self.registry.changed()
    }

    /// The latest entry time applied, if an entry was.
    pub fn applied_clock(&self) -> Option<u64> {
        self.clock
    }

    /// The write batch, with the latest applied time if it moved and each
    /// changed agent's stored bytes: written once per apply call, not once
    /// per entry or write.
    pub fn into_batch(mut self) -> Result<StateBatch<'a>, StorageError> {
        if let (true, Some(at_ms)) = (self.clock_moved, self.clock) {
            self.batch.put_applied_clock(at_ms)?;
        }
        for (agent, bytes) in &self.stored {
            self.batch.put_stored_bytes(agent, *bytes)?;
        }
        Ok(self.batch)
    }

    /// Applies one request written at `log_index`, at [`Applier::entry_time`].
    pub fn apply_request(&mut self, log_index: u64, request: &Request) -> Result<CommandReply, StorageError> {
        if let Err(error) = request.command.validate() {
            // The leader validates before proposing; an invalid entry can only
            // come from an old or faulty proposer. Every node rejects it alike.
            return Ok(CommandReply::Rejected(error.to_string()));
        }
        let at_ms = self.entry_time(request.stamped_at_ms)?;
        let at = crate::apply_agreement::At { log_index, at_ms };
        match &request.command {
            Command::Memory(batch) => self.apply_memory(log_index, at_ms, batch).map(CommandReply::Memory),
            Command::Plugin(command) => self.apply_plugin(log_index, at_ms, command).map(CommandReply::Plugin),
            Command::Token(command) => self.apply_token(log_index, at_ms, command).map(CommandReply::Token),
            Command::Agent(command) => self.apply_agent(log_index, at_ms, command).map(CommandReply::Agent),
            Command::Agreement(command) => self.apply_agreement(at, command).map(CommandReply::Agreement),
            Command::Usage(command) => self.apply_usage(at, command).map(CommandReply::Usage),
            Command::Policy(command) => self.apply_policy(at, command).map(CommandReply::Policy),
            Command::Trace(command) => self.apply_trace(at, command).map(CommandReply::Trace),
            Command::Cluster(command) => self.apply_cluster(command).map(CommandReply::Cluster),
        }
    }

    fn apply_cluster(&mut self, command: &ClusterCommand) -> Result<ClusterOutcome, StorageError> {
        match command {
            ClusterCommand::SetVoterCount { count } => {
                // Read through the batch's own writes: an earlier entry of
                // this apply call may have set it.
                let previous = match self.voter_count {
                    Some(set) => Some(set),
                    None => self.store.voter_count()?,
                };
                self.batch.put_voter_count(*count)?;
                self.voter_count = Some(*count);
                Ok(ClusterOutcome::VoterCountSet { count: *count, previous })
            }
        }
    }

    /// The time an entry takes effect at: the stamp its leader gave it, or,
    /// when that is earlier, the latest time applied before it (a new
    /// leader whose clock is behind the old one's). Applied time never goes
    /// back, whatever the leaders' clocks do, and every node computes it
    /// alike from the log.
    fn entry_time(&mut self, stamped_at_ms: u64) -> Result<u64, StorageError> {
        let latest = match self.clock {
            Some(latest) => latest,
            None => self.store.applied_clock()?,
        };
        let at_ms = stamped_at_ms.max(latest);
        self.clock_moved |= at_ms != latest;
        self.clock = Some(at_ms);
        Ok(at_ms)
    }

    pub(crate) fn apply_memory(
        &mut self,
        log_index: u64,
        at_ms: u64,
        batch: &MemoryBatch,
    ) -> Result<Vec<CommandOutcome>, StorageError> {
        let mut outcomes = Vec::with_capacity(batch.commands.len());
        for command in &batch.commands {
            let path = command.path();
            let current = self.head(path)?;
            let current_version = current.map_or(0, |head| head.version);
            let live = current.filter(|head| !head.deleted);
            let live_version = live.map_or(0, |head| head.version);
            let next_version = current_version.checked_add(1).expect("a path's version cannot reach u64::MAX");
            let live_bytes = live.map_or(0, |head| head.stored_bytes);
            let outcome = match command {
                MemoryCommand::Put { value, .. } => match self.over_quota(path, live_bytes, value)? {
                    Some(refused) => refused,
                    None => {
                        self.write(path, written(next_version, at_ms, log_index, value))?;
                        CommandOutcome::Written { version: next_version }
                    }
                },
                MemoryCommand::CompareAndSet { expected_version, value, .. } => {
                    if *expected_version != live_version {
                        CommandOutcome::VersionMismatch { current_version: live_version }
                    } else if let Some(refused) = self.over_quota(path, live_bytes, value)? {
                        refused
                    } else {
                        self.write(path, written(next_version, at_ms, log_index, value))?;
                        CommandOutcome::Written { version: next_version }
                    }
                }
                MemoryCommand::Delete { .. } => {
                    if live_version == 0 {
                        CommandOutcome::NotFound
                    } else {
                        let tombstone = StoredVersion {
                            version: next_version,
                            written_at_ms: at_ms,
                            log_index,
                            deleted: true,
                            value: Vec::new(),
                            content_type: String::new(),
                            tags: Vec::new(),
                        };
                        self.write(path, tombstone)?;
                        self.count_stored(path.agent(), live_bytes, 0)?;
                        CommandOutcome::Deleted { version: next_version }
                    }
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// The bytes agent `agent`'s live memories hold, as changed so far.
    fn stored(&self, agent: &str) -> Result<u64, StorageError> {
        match self.stored.get(agent) {
            Some(bytes) => Ok(*bytes),
            None => self.store.stored_bytes(agent),
        }
    }

    /// Counts a live value of `old` bytes replaced by one of `new` bytes.
    fn count_stored(&mut self, agent: &str, old: u64, new: u64) -> Result<u64, StorageError> {
        let bytes = (self.stored(agent)? + new).saturating_sub(old);
        match self.stored.get_mut(agent) {
            Some(counted) => *counted = bytes,
            None => _ = self.stored.insert(agent.to_owned(), bytes),
        }
        Ok(bytes)
    }

    /// Refuses writing `value` at `path` (whose live value holds
    /// `live_bytes`) when it would take a registered agent with a quota over
    /// it; otherwise counts the write. A write that does not grow the agent's
    /// bytes is never refused.
    fn over_quota(
        &mut self,
        path: &MemoryPath,
        live_bytes: u64,
        value: &MemoryValue,
    ) -> Result<Option<CommandOutcome>, StorageError> {
        let agent = path.agent();
        let new_bytes = value.stored_bytes();
        if new_bytes > live_bytes {
            let quota = self.agent(agent)?.and_then(|record| record.memory_quota_bytes);
            let stored = self.stored(agent)?;
            if let Some(quota) = quota.filter(|quota| stored + new_bytes - live_bytes > *quota) {
                return Ok(Some(CommandOutcome::OverQuota { agent: agent.to_owned(), stored, quota }));
            }
        }
        self.count_stored(agent, live_bytes, new_bytes)?;
        Ok(None)
    }

    /// The head of `path`'s latest version, as written so far.
    fn head(&self, path: &MemoryPath) -> Result<Option<Head>, StorageError> {
        match self.overlay.get(path) {
            Some(stored) => Ok(Some(stored.head())),
            None => self.store.head(path),
        }
    }

    fn write(&mut self, path: &MemoryPath, stored: StoredVersion) -> Result<(), StorageError> {
        self.batch.put_version(path, &stored)?;
        if stored.version > MAX_HISTORY_VERSIONS_PER_PATH {
            self.batch.forget_version(path, stored.version - MAX_HISTORY_VERSIONS_PER_PATH)?;
        }
        self.overlay.insert(path.clone(), stored);
        Ok(())
    }
}

fn written(version: u64, at_ms: u64, log_index: u64, value: &MemoryValue) -> StoredVersion {
    StoredVersion {
        version,
        written_at_ms: at_ms,
        log_index,
        deleted: false,
        value: value.value.clone(),
        content_type: value.content_type.clone(),
        tags: value.tags.clone(),
    }
}
