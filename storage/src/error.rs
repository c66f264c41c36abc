//! Storage errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("I/O on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("could not decode a stored {what}: {source}")]
    Decode { what: &'static str, source: bincode::Error },
    #[error("could not encode a {what}: {source}")]
    Encode { what: &'static str, source: bincode::Error },
    #[error("snapshot file {path} is invalid: {reason}")]
    BadSnapshot { path: String, reason: String },
    #[error("column family {0} is missing; the data directory is not a zeromesh store")]
    MissingColumnFamily(&'static str),
    #[error("a {what} of {actual} bytes is over the limit of {limit} bytes")]
    TooLarge { what: &'static str, actual: usize, limit: usize },
    #[error("a blocking storage task failed: {0}")]
    Join(String),
    /// The store's files are damaged: opening it was refused rather than
    /// serving what is left.
    #[error("the store in {dir} is damaged and was not opened: {detail}")]
    Damaged { dir: String, detail: String },
    /// The Raft log could not be made durable.
    #[error("Raft log fsync: {0}")]
    LogSync(String),
}

impl StorageError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        StorageError::Io { path: path.display().to_string(), source }
    }
}

pub(crate) fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StorageError> {
    bincode::serialize(value).map_err(|source| StorageError::Encode { what, source })
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StorageError> {
    bincode::deserialize(bytes).map_err(|source| StorageError::Decode { what, source })
}
