//! Reads of the memory log and the consistency they are served at.

use zeromesh_protocol::limits::{DEFAULT_PAGE_ENTRIES, MAX_PAGE_ENTRIES};
use zeromesh_protocol::validate::ValidationError;
use zeromesh_protocol::{MemoryPath, MemoryRecord, PathPrefix};
use zeromesh_storage::{HistoryPage, ListPage, StorageError, Store};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable: the leader confirms it still leads (read index) and the
    /// read waits until this node has applied up to that index. Served only by
    /// the leader; a follower answers `NotLeader` with the leader's address.
    Linearizable,
    /// Whatever this node has applied, possibly behind the leader. Never
    /// waits on the network.
    Stale,
}

/// A read of the memory log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadQuery {
    /// The live value of a path (`version: None`), or a kept version.
    Get { path: MemoryPath, version: Option<u64> },
    /// Live paths under a prefix, in path order, after a cursor.
    List { prefix: PathPrefix, after: Option<String>, limit: Option<usize> },
    /// A path's kept versions, newest first, below a version.
    History { path: MemoryPath, before: Option<u64>, limit: Option<usize> },
}

/// The answer to a [`ReadQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadReply {
    Record(Option<MemoryRecord>),
    List(ListPage),
    History(HistoryPage),
}

fn page_size(limit: Option<usize>) -> Result<usize, ValidationError> {
    match limit {
        None => Ok(DEFAULT_PAGE_ENTRIES),
        Some(0) => Err(ValidationError::BadField { what: "limit", value: "0".into(), reason: "must be at least 1" }),
        Some(limit) if limit > MAX_PAGE_ENTRIES => {
            Err(ValidationError::TooMany { what: "page limit", actual: limit, limit: MAX_PAGE_ENTRIES })
        }
        Some(limit) => Ok(limit),
    }
}

impl ReadQuery {
    /// Checks the query's limits before it touches storage.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            ReadQuery::Get { .. } => Ok(()),
            ReadQuery::List { limit, after, .. } => {
                if let Some(after) = after {
                    zeromesh_protocol::validate::check_len(
                        "list cursor",
                        after.len(),
                        zeromesh_protocol::limits::MAX_PATH_BYTES,
                    )?;
                }
                page_size(*limit).map(drop)
            }
            ReadQuery::History { limit, .. } => page_size(*limit).map(drop),
        }
    }

    /// Runs the query against local storage.
    pub(crate) fn run(&self, store: &Store) -> Result<ReadReply, StorageError> {
        Ok(match self {
            ReadQuery::Get { path, version: None } => {
                let latest = store.latest(path)?.filter(|stored| !stored.deleted);
                ReadReply::Record(latest.map(|stored| stored.into_record(path.clone())))
            }
            ReadQuery::Get { path, version: Some(version) } => {
                ReadReply::Record(store.version(path, *version)?.map(|stored| stored.into_record(path.clone())))
            }
            ReadQuery::List { prefix, after, limit } => {
                let limit = page_size(*limit).unwrap_or(DEFAULT_PAGE_ENTRIES);
                ReadReply::List(store.list(prefix.as_str(), after.as_deref(), limit)?)
            }
            ReadQuery::History { path, before, limit } => {
                let limit = page_size(*limit).unwrap_or(DEFAULT_PAGE_ENTRIES);
                ReadReply::History(store.history(path, *before, limit)?)
            }
        })
    }
}
