//! The state machine's applied state (last applied log id and membership),
//! stored by `zeromesh-storage` as opaque bytes in the same write batch as the
//! state it describes.

use serde::{Deserialize, Serialize};

use crate::types::{LogId, StoredMembership};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

impl AppliedState {
    pub fn encode(&self) -> Result<Vec<u8>, bincode::Error> {
        bincode::serialize(self)
    }

    /// Decodes stored bytes; none or empty bytes mean nothing was applied.
    pub fn decode(bytes: Option<&[u8]>) -> Result<AppliedState, bincode::Error> {
        match bytes {
            Some(bytes) if !bytes.is_empty() => bincode::deserialize(bytes),
            _ => Ok(AppliedState::default()),
        }
    }
}
