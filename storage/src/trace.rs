//! The trace log's stored node hashes (`trace_nodes`, replicated state,
//! carried in snapshots) and this node's latest cosigned checkpoint (local).

use zeromesh_trace::merkle::{Hash, NodeId, NodeReader, ProofError};

use crate::error::StorageError;
use crate::keys::{trace_node_key, CF_SM_META, CF_TRACE_NODES, KEY_CHECKPOINT};
use crate::store::Store;
use crate::tables::StateBatch;

impl NodeReader for Store {
    fn node(&self, id: NodeId) -> Result<Hash, ProofError> {
        let read_error = |reason: String| ProofError::Read { level: id.level, index: id.index, reason };
        let cf = self.cf(CF_TRACE_NODES).map_err(|e| read_error(e.to_string()))?;
        match self.db.get_pinned_cf(cf, trace_node_key(id)).map_err(|e| read_error(e.to_string()))? {
            Some(bytes) => {
                let array: [u8; 32] = bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| read_error(format!("a stored hash of {} bytes", bytes.len())))?;
                Ok(Hash(array))
            }
            None => Err(ProofError::MissingNode { level: id.level, index: id.index }),
        }
    }
}

impl StateBatch<'_> {
    /// Stages one node of the trace tree.
    pub fn put_trace_node(&mut self, id: NodeId, hash: Hash) -> Result<(), StorageError> {
        self.batch.put_cf(self.store.cf(CF_TRACE_NODES)?, trace_node_key(id), hash.0);
        Ok(())
    }
}

impl Store {
    /// The latest checkpoint this node accepted, as its signed-note text.
    pub fn trace_checkpoint(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get_cf(self.cf(CF_SM_META)?, KEY_CHECKPOINT)?)
    }

    /// Keeps `note` as this node's latest checkpoint. Not replicated: every
    /// node checks the cosignatures of what it keeps.
    pub fn set_trace_checkpoint(&self, note: &[u8]) -> Result<(), StorageError> {
        self.db.put_cf_opt(self.cf(CF_SM_META)?, KEY_CHECKPOINT, note, &Store::synced())?;
        Ok(())
    }
}

/// Checks a `trace_nodes` record of a snapshot: a 9-byte key, a 32-byte hash.
pub(crate) fn check_trace_record(key: &[u8], value: &[u8]) -> Result<(), String> {
    if key.len() != 9 || key[0] as usize >= zeromesh_trace::merkle::MAX_LEVELS {
        return Err(format!("a trace node key of {} bytes", key.len()));
    }
    if value.len() != 32 {
        return Err(format!("a trace node hash of {} bytes", value.len()));
    }
    Ok(())
}
