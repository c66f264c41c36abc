//! Column-family names and key encodings.

/// Raft log entries, keyed by big-endian log index.
pub(crate) const CF_RAFT_LOG: &str = "raft_log";
/// Raft's own durable state: vote, committed log id, last purged log id.
pub(crate) const CF_RAFT_META: &str = "raft_meta";
/// The state machine's own metadata: applied state, install marker.
pub(crate) const CF_SM_META: &str = "sm_meta";
/// The live (latest) version of every memory path, keyed by path.
pub(crate) const CF_MEM_LATEST: &str = "mem_latest";
/// Every kept version of every path, keyed by path, NUL, big-endian version.
pub(crate) const CF_MEM_HISTORY: &str = "mem_history";

/// The registry: `p/{name}` installed plugins, `k/{key}` trusted publisher
/// keys (32 bytes), `t/{id}` API access tokens, `a/{id}` agents.
pub(crate) const CF_PLUGIN_REGISTRY: &str = "plugin_registry";
/// Plugin modules held by this node, keyed by SHA-256. Not replicated and not
/// in snapshots: each node fetches the modules its registry names.
pub(crate) const CF_PLUGIN_BLOBS: &str = "plugin_blobs";
/// The trace tree's node hashes, keyed by level (one byte) and big-endian
/// index: every leaf and every complete subtree, about two per entry.
pub(crate) const CF_TRACE_NODES: &str = "trace_nodes";

pub(crate) const ALL_CFS: [&str; 8] = [
    CF_RAFT_LOG,
    CF_RAFT_META,
    CF_SM_META,
    CF_MEM_LATEST,
    CF_MEM_HISTORY,
    CF_PLUGIN_REGISTRY,
    CF_PLUGIN_BLOBS,
    CF_TRACE_NODES,
];
/// The column families a snapshot carries, in file order. The trace's nodes
/// travel with the state, so a node that installs a snapshot can still prove
/// every leaf before it.
pub(crate) const STATE_TABLES: [&str; 4] = [CF_MEM_LATEST, CF_MEM_HISTORY, CF_PLUGIN_REGISTRY, CF_TRACE_NODES];

pub(crate) const PLUGIN_KEY_PREFIX: &[u8] = b"p/";
pub(crate) const PUBLISHER_KEY_PREFIX: &[u8] = b"k/";
pub(crate) const TOKEN_KEY_PREFIX: &[u8] = b"t/";
pub(crate) const AGENT_KEY_PREFIX: &[u8] = b"a/";
pub(crate) const SERVER_KEY_PREFIX: &[u8] = b"m/";

pub(crate) fn server_key(name: &str) -> Vec<u8> {
    [SERVER_KEY_PREFIX, name.as_bytes()].concat()
}

pub(crate) fn agent_key(id: &str) -> Vec<u8> {
    [AGENT_KEY_PREFIX, id.as_bytes()].concat()
}

pub(crate) fn token_key(id: &str) -> Vec<u8> {
    [TOKEN_KEY_PREFIX, id.as_bytes()].concat()
}

pub(crate) fn plugin_key(name: &str) -> Vec<u8> {
    [PLUGIN_KEY_PREFIX, name.as_bytes()].concat()
}

pub(crate) fn publisher_key(key: &[u8; 32]) -> Vec<u8> {
    [PUBLISHER_KEY_PREFIX, key.as_slice()].concat()
}

pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";
/// The consensus layer's encoded applied state (last applied log id and
/// membership); opaque to storage.
pub(crate) const KEY_APPLIED: &[u8] = b"applied";
/// Present while a snapshot install is in progress; found at open, it means
/// the install was interrupted and is redone from the current snapshot file.
pub(crate) const KEY_INSTALLING: &[u8] = b"installing";
/// This node's latest accepted checkpoint (a signed note); local, not
/// replicated and not in snapshots.
pub(crate) const KEY_CHECKPOINT: &[u8] = b"checkpoint";

pub(crate) fn trace_node_key(id: zeromesh_trace::merkle::NodeId) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = id.level;
    key[1..].copy_from_slice(&id.index.to_be_bytes());
    key
}

pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// `path NUL`: every history key of `path` starts with it. Paths never hold
/// NUL (see `MemoryPath`), so one path's prefix never covers another's keys.
pub(crate) fn history_prefix(path: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(path.len() + 9);
    key.extend_from_slice(path.as_bytes());
    key.push(0);
    key
}

pub(crate) fn history_key(path: &str, version: u64) -> Vec<u8> {
    let mut key = history_prefix(path);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The version at the end of a history key.
pub(crate) fn history_version(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[tail..].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_sort_by_path_then_version() {
        assert!(history_key("a/b", 2) < history_key("a/b", 10));
        assert!(history_key("a/b", u64::MAX) < history_key("a/b/c", 1));
        assert!(!history_key("a/b/c", 1).starts_with(&history_prefix("a/b")));
        assert_eq!(history_version(&history_key("a/b", 42)), Some(42));
    }
}
