//! Deterministic apply of agent snapshots: a snapshot copies an agent's
//! manifest and live memories as this entry finds them; a recovery or an
//! import makes an agent's memories the snapshot's, in the same entry.

use std::collections::BTreeMap;

use zeromesh_protocol::agent::{AgentOutcome, AgentRecord, AgentSnapshot, AgentState, SnapshotMemory};
use zeromesh_protocol::limits::{
    MAX_AGENTS, MAX_AGENT_SNAPSHOTS, MAX_AGENT_SNAPSHOT_BYTES, MAX_AGENT_SNAPSHOT_MEMORIES,
};
use zeromesh_protocol::memory::stored_bytes;
use zeromesh_protocol::{CommandOutcome, MemoryBatch, MemoryCommand, MemoryPath};
use zeromesh_storage::{StorageError, StoredVersion};

use crate::apply::Applier;
use crate::apply_agreement::At;

impl Applier<'_> {
    /// Agent `id`'s live memories as this entry finds them, with their paths
    /// under the agent; `Err` with the reason when they do not fit a snapshot.
    fn live_memories(&self, id: &str) -> Result<Result<BTreeMap<String, StoredVersion>, String>, StorageError> {
        let prefix = format!("{id}/");
        // Twice the limits: paths this apply call deleted may still be live in the store.
        let stored =
            match self.store.live_under(&prefix, 2 * MAX_AGENT_SNAPSHOT_MEMORIES, 2 * MAX_AGENT_SNAPSHOT_BYTES)? {
                Ok(stored) => stored,
                Err(reason) => return Ok(Err(reason)),
            };
        let mut live: BTreeMap<String, StoredVersion> = stored.into_iter().collect();
        for (path, version) in self.overlay.iter().filter(|(path, _)| path.as_str().starts_with(&prefix)) {
            if version.deleted {
                live.remove(path.as_str());
            } else {
                live.insert(path.as_str().to_owned(), version.clone());
            }
        }
        let relative = live.into_iter().map(|(path, version)| (path[prefix.len()..].to_owned(), version)).collect();
        Ok(Ok(relative))
    }

    pub(crate) fn take_snapshot(&mut self, at: At, id: &str, snapshot: &str) -> Result<AgentOutcome, StorageError> {
        let Some(agent) = self.agent(id)? else { return Ok(AgentOutcome::NotFound { id: id.to_owned() }) };
        if self.snapshot(snapshot)?.is_some() {
            return Ok(AgentOutcome::SnapshotExists { snapshot: snapshot.to_owned() });
        }
        let count = self.snapshot_count()?;
        if count >= MAX_AGENT_SNAPSHOTS as u64 {
            let reason = format!("the cluster already keeps its maximum of {MAX_AGENT_SNAPSHOTS} snapshots");
            return Ok(AgentOutcome::SnapshotRefused { reason });
        }
        let live = match self.live_memories(id)? {
            Ok(live) => live,
            Err(reason) => return Ok(refused_size(id, &reason)),
        };
        let memories: Vec<SnapshotMemory> = live
            .into_iter()
            .map(|(path, version)| SnapshotMemory {
                path,
                value: version.value,
                content_type: version.content_type,
                tags: version.tags,
            })
            .collect();
        let taken = AgentSnapshot {
            snapshot: snapshot.to_owned(),
            agent,
            memories,
            log_index: at.log_index,
            taken_at_ms: at.at_ms,
        };
        if taken.memories.len() > MAX_AGENT_SNAPSHOT_MEMORIES || taken.bytes() > MAX_AGENT_SNAPSHOT_BYTES as u64 {
            let reason = format!("{} memories, {} bytes", taken.memories.len(), taken.bytes());
            return Ok(refused_size(id, &reason));
        }
        self.batch.put_agent_snapshot(&taken, count + 1)?;
        self.snapshots.insert(snapshot.to_owned(), (taken.clone(), count + 1));
        Ok(AgentOutcome::Snapshotted {
            id: id.to_owned(),
            snapshot: snapshot.to_owned(),
            sha256: taken.sha256(),
            memories: taken.memories.len(),
            bytes: taken.bytes(),
        })
    }

    fn snapshot(&self, snapshot: &str) -> Result<Option<AgentSnapshot>, StorageError> {
        match self.snapshots.get(snapshot) {
            Some((staged, _)) => Ok(Some(staged.clone())),
            None => self.store.agent_snapshot(snapshot),
        }
    }

    fn snapshot_count(&self) -> Result<u64, StorageError> {
        match self.snapshots.values().map(|(_, count)| *count).max() {
            Some(count) => Ok(count),
            None => self.store.snapshot_count(),
        }
    }

    pub(crate) fn recover_snapshot(&mut self, at: At, id: &str, snapshot: &str) -> Result<AgentOutcome, StorageError> {
        match self.snapshot(snapshot)? {
            Some(found) => self.restore(at, id, &found),
            None => Ok(AgentOutcome::SnapshotNotFound { snapshot: snapshot.to_owned() }),
        }
    }

    /// Makes agent `id`'s live memories `snapshot`'s: spawns the agent (with
    /// the snapshot's manifest) when it does not exist; deletes its memories
    /// the snapshot lacks; writes the snapshot's. Refused whole, before any
    /// change, when a path does not fit under `id` or the memories pass the
    /// agent's quota.
    pub(crate) fn restore(&mut self, at: At, id: &str, snapshot: &AgentSnapshot) -> Result<AgentOutcome, StorageError> {
        let existing = self.agent(id)?;
        let mut targets = Vec::with_capacity(snapshot.memories.len());
        for memory in &snapshot.memories {
            match MemoryPath::parse(&format!("{id}/{}", memory.path)) {
                Ok(path) => targets.push((path, memory)),
                Err(error) => return Ok(AgentOutcome::SnapshotRefused { reason: format!("under {id}: {error}") }),
            }
        }
        let agent = match existing {
            Some(agent) if agent.state == AgentState::Terminated => {
                return Ok(AgentOutcome::IsTerminated { id: id.to_owned() })
            }
            Some(agent) => agent,
            None => {
                if self.agent_count()? >= MAX_AGENTS {
                    return Ok(AgentOutcome::Full { limit: MAX_AGENTS });
                }
                AgentRecord {
                    id: id.to_owned(),
                    state: AgentState::Running,
                    spawned_at_ms: at.at_ms,
                    changed_at_ms: at.at_ms,
                    log_index: at.log_index,
                    ..snapshot.agent.clone()
                }
            }
        };
        if let Some(quota) = agent.memory_quota_bytes.filter(|quota| snapshot.bytes() > *quota) {
            let reason = format!("its {} bytes pass agent {id}'s memory quota of {quota} bytes", snapshot.bytes());
            return Ok(AgentOutcome::SnapshotRefused { reason });
        }
        let current = match self.live_memories(id)? {
            Ok(current) => current,
            Err(reason) => return Ok(AgentOutcome::SnapshotRefused { reason: format!("agent {id} holds {reason}") }),
        };
        let spawned = self.agent(id)?.is_none();
        if spawned {
            self.put_agent_record(agent)?;
        }
        // Deletes first, then writes that shrink a memory, then the others:
        // the agent's bytes never pass what they end at.
        let kept: BTreeMap<&str, ()> = snapshot.memories.iter().map(|memory| (memory.path.as_str(), ())).collect();
        let mut commands: Vec<MemoryCommand> = current
            .keys()
            .filter(|path| !kept.contains_key(path.as_str()))
            .filter_map(|path| MemoryPath::parse(&format!("{id}/{path}")).ok())
            .map(|path| MemoryCommand::Delete { path })
            .collect();
        let old_size = |memory: &SnapshotMemory| {
            current.get(&memory.path).map_or(0, |old| stored_bytes(&old.value, &old.content_type, &old.tags))
        };
        targets.sort_by_key(|(_, memory)| memory.bytes() > old_size(memory));
        commands.extend(targets.into_iter().map(|(path, memory)| MemoryCommand::Put { path, value: memory.value() }));
        let outcomes = self.apply_memory(at.log_index, at.at_ms, &MemoryBatch { commands })?;
        if let Some(refused) = outcomes.iter().find(|outcome| matches!(outcome, CommandOutcome::OverQuota { .. })) {
            // Cannot happen: the quota was checked above and the order keeps under it.
            return Ok(AgentOutcome::SnapshotRefused { reason: format!("{refused:?}") });
        }
        Ok(AgentOutcome::Recovered {
            id: id.to_owned(),
            snapshot: snapshot.snapshot.clone(),
            memories: snapshot.memories.len(),
            spawned,
        })
    }
}

fn refused_size(id: &str, reason: &str) -> AgentOutcome {
    AgentOutcome::SnapshotRefused {
        reason: format!(
            "agent {id}'s memories ({reason}) do not fit a snapshot: at most {MAX_AGENT_SNAPSHOT_MEMORIES} memories and {MAX_AGENT_SNAPSHOT_BYTES} bytes"
        ),
    }
}
