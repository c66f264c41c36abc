//! Every size limit of zeromesh, declared once. Anything that arrives from
//! outside the process is checked against one of these before it is used.

/// Longest memory path, in bytes (`agent-7/notes/2026-11-21`).
pub const MAX_PATH_BYTES: usize = 512;
/// Most `/`-separated segments in a memory path, the agent id included.
pub const MAX_PATH_SEGMENTS: usize = 32;
/// Longest agent id (the first path segment), in bytes.
pub const MAX_AGENT_ID_BYTES: usize = 64;
/// Largest memory value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Longest content type (`text/plain; charset=utf-8`), in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 128;
/// Most tags on one memory record.
pub const MAX_TAGS_PER_RECORD: usize = 16;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 64;
/// Most commands carried by one replicated batch (one Raft entry).
pub const MAX_BATCH_COMMANDS: usize = 1024;
/// Largest sum of value, path, content-type and tag bytes in one batch.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Versions of one path kept for `history` and versioned `get`; older ones are
/// dropped by apply, deterministically, when a newer version is written.
pub const MAX_HISTORY_VERSIONS_PER_PATH: u64 = 256;
/// Largest page a `list` or `history` read returns.
pub const MAX_PAGE_ENTRIES: usize = 1000;
/// A read page stops growing once its values reach this many bytes (it
/// always holds at least one record).
pub const MAX_READ_PAGE_BYTES: usize = 8 * 1024 * 1024;
/// Page size used when a reader does not ask for one.
pub const DEFAULT_PAGE_ENTRIES: usize = 100;
/// Largest snapshot chunk sent in one install-snapshot message, in bytes.
pub const MAX_SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Most log entries sent in one append-entries message.
pub const MAX_APPEND_ENTRIES_PER_MESSAGE: u64 = 512;
/// Largest encoded snapshot header (the snapshot's Raft metadata), in bytes.
pub const MAX_SNAPSHOT_HEADER_BYTES: usize = 1024 * 1024;
/// Largest encoded state-machine record in a snapshot file, in bytes.
pub const MAX_SNAPSHOT_RECORD_BYTES: usize = MAX_VALUE_BYTES + 64 * 1024;
/// Most voters a cluster may be configured with.
pub const MAX_VOTER_COUNT: usize = 7;
