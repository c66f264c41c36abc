//! Deterministic apply of API access token commands.

use zeromesh_protocol::auth::{TokenCommand, TokenOutcome, TokenRecord};
use zeromesh_protocol::limits::MAX_TOKENS;
use zeromesh_storage::StorageError;

use crate::apply::Applier;

impl Applier<'_> {
    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StorageError> {
        match self.tokens.get(id) {
            Some(staged) => Ok(staged.clone()),
            None => self.store.token(id),
        }
    }

    fn token_count(&self) -> Result<usize, StorageError> {
        let mut ids: std::collections::BTreeMap<String, bool> =
            self.store.tokens()?.into_iter().map(|token| (token.id, true)).collect();
        for (id, staged) in &self.tokens {
            ids.insert(id.clone(), staged.is_some());
        }
        Ok(ids.values().filter(|present| **present).count())
    }

    pub(crate) fn apply_token(
        &mut self,
        log_index: u64,
        at_ms: u64,
        command: &TokenCommand,
    ) -> Result<TokenOutcome, StorageError> {
        Ok(match command {
            TokenCommand::Create { id, secret_sha256, role, agent } => {
                if self.token(id)?.is_some() {
                    TokenOutcome::AlreadyExists { id: id.clone() }
                } else if self.token_count()? >= MAX_TOKENS {
                    TokenOutcome::Full { limit: MAX_TOKENS }
                } else {
                    let record = TokenRecord {
                        id: id.clone(),
                        secret_sha256: *secret_sha256,
                        role: *role,
                        agent: agent.clone(),
                        created_at_ms: at_ms,
                        log_index,
                    };
                    self.batch.put_token(&record)?;
                    self.tokens.insert(id.clone(), Some(record));
                    TokenOutcome::Created { id: id.clone() }
                }
            }
            TokenCommand::Revoke { id } => {
                if self.token(id)?.is_some() {
                    self.batch.delete_token(id)?;
                    self.tokens.insert(id.clone(), None);
                    TokenOutcome::Revoked { id: id.clone() }
                } else {
                    TokenOutcome::NotFound { id: id.clone() }
                }
            }
        })
    }
}
