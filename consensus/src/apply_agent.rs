//! Deterministic apply of agent registry commands. Terminating an agent
//! deletes its access tokens in the same entry, so no node accepts them
//! once the entry is applied.

use std::collections::BTreeMap;

use zeromesh_protocol::agent::{AgentCommand, AgentOutcome, AgentRecord, AgentState};
use zeromesh_protocol::limits::MAX_AGENTS;
use zeromesh_storage::StorageError;

use crate::apply::Applier;

impl Applier<'_> {
    pub(crate) fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StorageError> {
        if let Some(staged) = self.agents.get(id) {
            return Ok(Some(staged.clone()));
        }
        if let Some(read) = self.agents_read.borrow().get(id) {
            return Ok(read.clone());
        }
        let read = self.store.agent(id)?;
        self.agents_read.borrow_mut().insert(id.to_owned(), read.clone());
        Ok(read)
    }

    pub(crate) fn agent_count(&self) -> Result<usize, StorageError> {
        let mut ids: BTreeMap<String, ()> = self.store.agents()?.into_iter().map(|agent| (agent.id, ())).collect();
        ids.extend(self.agents.keys().map(|id| (id.clone(), ())));
        Ok(ids.len())
    }

    /// Deletes every token of agent `id`; returns how many there were.
    fn revoke_tokens_of(&mut self, id: &str) -> Result<usize, StorageError> {
        let mut tokens: BTreeMap<String, Option<String>> =
            self.store.tokens()?.into_iter().map(|token| (token.id, token.agent)).collect();
        for (token_id, staged) in &self.tokens {
            tokens.insert(token_id.clone(), staged.as_ref().and_then(|token| token.agent.clone()));
        }
        let of_agent: Vec<String> = tokens
            .into_iter()
            .filter(|(_, agent)| agent.as_deref() == Some(id))
            .map(|(token_id, _)| token_id)
            .collect();
        for token_id in &of_agent {
            self.batch.delete_token(token_id)?;
            self.tokens.insert(token_id.clone(), None);
        }
        Ok(of_agent.len())
    }

    /// Stages agent record `agent`.
    pub(crate) fn put_agent_record(&mut self, agent: AgentRecord) -> Result<(), StorageError> {
        self.batch.put_agent(&agent)?;
        self.agents.insert(agent.id.clone(), agent);
        Ok(())
    }

    fn change_state(
        &mut self,
        mut agent: AgentRecord,
        state: AgentState,
        log_index: u64,
        at_ms: u64,
    ) -> Result<AgentOutcome, StorageError> {
        let tokens_revoked = if state == AgentState::Terminated { self.revoke_tokens_of(&agent.id)? } else { 0 };
        agent.state = state.clone();
        agent.changed_at_ms = at_ms;
        agent.log_index = log_index;
        self.batch.put_agent(&agent)?;
        let id = agent.id.clone();
        self.agents.insert(id.clone(), agent);
        Ok(AgentOutcome::Changed { id, state, tokens_revoked })
    }

    pub(crate) fn apply_agent(
        &mut self,
        log_index: u64,
        at_ms: u64,
        command: &AgentCommand,
    ) -> Result<AgentOutcome, StorageError> {
        let id = command.id().to_owned();
        let at = crate::apply_agreement::At { log_index, at_ms };
        match command {
            AgentCommand::Snapshot { snapshot, .. } => return self.take_snapshot(at, &id, snapshot),
            AgentCommand::Recover { snapshot, .. } => return self.recover_snapshot(at, &id, snapshot),
            AgentCommand::Import { snapshot, .. } => return self.restore(at, &id, snapshot),
            _ => {}
        }
        let existing = self.agent(&id)?;
        if let AgentCommand::Spawn {
            owner,
            description,
            tools,
            tags,
            key,
            memory_quota_bytes,
            max_concurrent_calls,
            limits,
            ..
        } = command
        {
            if existing.is_some() {
                return Ok(AgentOutcome::Exists { id });
            }
            if self.agent_count()? >= MAX_AGENTS {
                return Ok(AgentOutcome::Full { limit: MAX_AGENTS });
            }
            let agent = AgentRecord {
                id: id.clone(),
                owner: owner.clone(),
                description: description.clone(),
                tools: tools.clone(),
                tags: tags.clone(),
                key: *key,
                memory_quota_bytes: *memory_quota_bytes,
                max_concurrent_calls: *max_concurrent_calls,
                limits: limits.clone(),
                state: AgentState::Running,
                spawned_at_ms: at_ms,
                changed_at_ms: at_ms,
                log_index,
            };
            return self.change_state(agent, AgentState::Running, log_index, at_ms);
        }
        let Some(agent) = existing else { return Ok(AgentOutcome::NotFound { id }) };
        if agent.state == AgentState::Terminated {
            return Ok(AgentOutcome::IsTerminated { id });
        }
        let state = match command {
            AgentCommand::Pause { reason, .. } => AgentState::Paused { reason: reason.clone() },
            AgentCommand::Resume { .. } => AgentState::Running,
            _ => AgentState::Terminated,
        };
        self.change_state(agent, state, log_index, at_ms)
    }
}
