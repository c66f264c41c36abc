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

/// Largest plugin package file (manifest, signature and module), in bytes.
/// A package travels base64-encoded in one API message, and its module in
/// one mesh message, so this stays well under both limits.
pub const MAX_PLUGIN_PACKAGE_BYTES: usize = 4 * 1024 * 1024;
/// API access tokens a cluster keeps.
pub const MAX_TOKENS: usize = 10_000;
/// Plugins installed in a cluster at once.
pub const MAX_INSTALLED_PLUGINS: usize = 256;
/// Publisher keys in a cluster's trusted set.
pub const MAX_TRUSTED_PUBLISHERS: usize = 64;
/// Plugin calls a node runs at once; more wait for a slot.
pub const MAX_PLUGIN_CALLS_IN_FLIGHT: usize = 32;
/// Largest plugin manifest (JSON), in bytes.
pub const MAX_PLUGIN_MANIFEST_BYTES: usize = 256 * 1024;
/// Longest plugin or tool name, in bytes.
pub const MAX_PLUGIN_NAME_BYTES: usize = 64;
/// Longest plugin or tool description, in bytes.
pub const MAX_PLUGIN_DESCRIPTION_BYTES: usize = 4096;
/// Most tools one plugin may offer.
pub const MAX_TOOLS_PER_PLUGIN: usize = 64;
/// Largest JSON Schema of one tool's input, in bytes.
pub const MAX_TOOL_SCHEMA_BYTES: usize = 64 * 1024;
/// Largest JSON arguments passed to one plugin call, in bytes.
pub const MAX_PLUGIN_ARGS_BYTES: usize = 1024 * 1024;
/// Largest JSON result a plugin call may return, in bytes.
pub const MAX_PLUGIN_RESULT_BYTES: usize = 1024 * 1024;
/// Longest line a plugin may log; longer lines are refused.
pub const MAX_PLUGIN_LOG_LINE_BYTES: usize = 4096;
/// Most bytes one `random` host call may fill.
pub const MAX_PLUGIN_RANDOM_BYTES: usize = 4096;
/// Compiled plugin modules kept in a node's cache.
pub const MAX_COMPILED_PLUGINS_CACHED: usize = 64;
/// The node's ceilings on what a manifest may ask for per call.
pub const MAX_PLUGIN_FUEL_PER_CALL: u64 = 1_000_000_000;
pub const MAX_PLUGIN_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
pub const MAX_PLUGIN_WALL_CLOCK_MS: u64 = 30_000;
/// Plugin instances that may exist at once on a node (pooling allocator slots).
pub const MAX_PLUGIN_INSTANCES: u32 = 64;

/// Largest message carried on the mesh's request-response protocol (a Raft
/// append-entries, a snapshot chunk, a forwarded write), in bytes. An
/// append-entries over it is retried by Raft with fewer entries.
pub const MAX_MESH_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Largest frame on a mesh link (the stream per peer that carries Raft's
/// messages, forwarded writes and read-index requests). A bigger message
/// takes the request-response protocol, so it cannot hold up a link's
/// heartbeats.
pub const MAX_MESH_LINK_FRAME_BYTES: usize = 1024 * 1024;
/// Mesh requests this node waits on at once (outbound), and inbound requests
/// it handles at once; more are refused as busy.
pub const MAX_MESH_REQUESTS_IN_FLIGHT: usize = 1024;
/// Concurrent request-response streams per peer connection.
pub const MAX_MESH_STREAMS_PER_CONNECTION: usize = 256;
/// Mesh connections kept at once (both directions).
pub const MAX_MESH_CONNECTIONS: u32 = 256;
/// Largest message of the offload protocol (a plugin call run on a peer
/// and its answer): the arguments or the result, a receipt, names.
pub const MAX_OFFLOAD_MESSAGE_BYTES: usize =
    if MAX_PLUGIN_ARGS_BYTES > MAX_PLUGIN_RESULT_BYTES { MAX_PLUGIN_ARGS_BYTES } else { MAX_PLUGIN_RESULT_BYTES }
        + 64 * 1024;
/// Plugin calls a node runs for its peers at once; more wait for a slot
/// (at most [`MAX_OFFLOAD_QUEUED`] of them, each no longer than its own
/// wall-clock budget, which the wait uses up).
pub const MAX_OFFLOAD_SERVED_IN_FLIGHT: usize = 32;
/// Calls from peers that wait for one of [`MAX_OFFLOAD_SERVED_IN_FLIGHT`]
/// slots; more are answered "busy" without running, so the caller tries
/// another peer.
pub const MAX_OFFLOAD_QUEUED: usize = 256;
/// Plugin calls a node has running on its peers at once; more wait, each
/// within its own deadline.
pub const MAX_OFFLOAD_SENT_IN_FLIGHT: usize = 64;
/// Concurrent offload streams per peer connection.
pub const MAX_OFFLOAD_STREAMS_PER_CONNECTION: usize = 64;
/// Peers one call is tried on before it runs locally (or fails).
pub const MAX_OFFLOAD_ATTEMPTS: usize = 3;
/// Federated MCP servers registered in a cluster at once.
pub const MAX_FEDERATED_SERVERS: usize = 32;
/// Federated servers one node hosts at once (each may be a child process):
/// registrations past it are not started there, and say so.
pub const MAX_HOSTED_SERVERS: usize = 16;
/// Tools of one federated server the mesh offers; more are left out, and
/// the host says so.
pub const MAX_FEDERATED_TOOLS: usize = 64;
/// Names in a registration's tool allow-list.
pub const MAX_FEDERATED_ALLOWED_TOOLS: usize = 64;
/// Arguments of a federated server's command line, and bytes in each.
pub const MAX_FEDERATED_ARGV: usize = 64;
pub const MAX_FEDERATED_ARG_BYTES: usize = 1024;
/// Longest Streamable HTTP URL of a federated server.
pub const MAX_FEDERATED_URL_BYTES: usize = 2048;
/// Nodes and labels one registration may name as hosts.
pub const MAX_FEDERATED_HOSTS: usize = 16;
/// Environment variables (in clear and from secrets) of one server, and
/// the longest value in clear; a secret read on the host is at most
/// `MAX_FEDERATED_SECRET_BYTES`.
pub const MAX_FEDERATED_ENV: usize = 32;
pub const MAX_FEDERATED_ENV_VALUE_BYTES: usize = 4096;
pub const MAX_FEDERATED_SECRET_BYTES: usize = 16 * 1024;
/// Longest per-call timeout a registration may set.
pub const MAX_FEDERATED_CALL_TIMEOUT_MS: u64 = 300_000;
/// Largest address space limit a registration may set for its process, in MiB.
pub const MAX_FEDERATED_MEMORY_MB: u64 = 1 << 20;
/// Largest tool definition (name, description, schemas) taken from a
/// federated server, in bytes; larger ones are left out.
pub const MAX_FEDERATED_TOOL_DEFINITION_BYTES: usize = 64 * 1024;
/// Federated tools one advert may list (over all the servers the node hosts).
pub const MAX_ADVERT_FEDERATED_TOOLS: usize = 256;
/// Bootstrap peers a node may be given.
pub const MAX_BOOTSTRAP_PEERS: usize = 32;
/// Longest join token, in bytes (the generated ones are 64 hex digits).
pub const MAX_JOIN_TOKEN_BYTES: usize = 256;
/// Largest resource advert on the gossip topic, in bytes.
pub const MAX_ADVERT_BYTES: usize = 48 * 1024;
/// Adverts kept in a node's resource table; the stalest is evicted.
pub const MAX_ADVERTS: usize = 1024;
/// Listen addresses one advert may list.
pub const MAX_ADVERT_ADDRESSES: usize = 16;
/// Plugin hashes one advert may list.
pub const MAX_ADVERT_PLUGINS: usize = 256;
/// Largest WebSocket message (one JSON-RPC request) the peer API reads, in
/// bytes: room for a plugin package in base64.
pub const MAX_API_MESSAGE_BYTES: usize = 6 * 1024 * 1024;
/// Bytes a WebSocket connection reads from its socket at a time. The
/// WebSocket library zeroes this much of its buffer before every read, so a
/// large value costs CPU on every message (at 128 KiB, its default, 8% of a
/// busy leader's CPU); a longer message is still read whole, in steps.
pub const API_READ_CHUNK_BYTES: usize = 8 * 1024;
/// Peer API connections served at once; more are refused at the handshake.
pub const MAX_API_CONNECTIONS: usize = 256;
/// Resources one API connection may be subscribed to at once.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 256;
/// Requests one API connection may have running at once.
pub const MAX_API_REQUESTS_PER_CONNECTION: usize = 64;
/// Largest configuration file, in bytes.
pub const MAX_CONFIG_FILE_BYTES: usize = 64 * 1024;
/// Writes waiting on a node to be grouped into a Raft entry; more wait to enqueue.
pub const MAX_PENDING_WRITES: usize = 4096;
/// Grouped writes a node has proposed to Raft and not yet seen answered.
pub const MAX_PROPOSALS_IN_FLIGHT: usize = 4;

/// Agents a cluster's registry keeps, terminated ones included.
pub const MAX_AGENTS: usize = 1000;
/// Tool patterns an agent may be allowed.
pub const MAX_AGENT_TOOL_PATTERNS: usize = 64;
/// Longest tool pattern (`name`, `prefix*` or `*`), in bytes.
pub const MAX_TOOL_PATTERN_BYTES: usize = 128;
/// Longest agent owner, description or pause reason, in bytes.
pub const MAX_AGENT_TEXT_BYTES: usize = 1024;

/// Most bytes an agent snapshot may hold (memory values, content types and
/// tags): an export must fit one API message in hex.
pub const MAX_AGENT_SNAPSHOT_BYTES: usize = 2 * 1024 * 1024;
/// Most memories one agent snapshot may hold.
pub const MAX_AGENT_SNAPSHOT_MEMORIES: usize = 10_000;
/// Agent snapshots a cluster keeps.
pub const MAX_AGENT_SNAPSHOTS: usize = 256;

/// Agreements a cluster keeps, in every state.
pub const MAX_AGREEMENTS: usize = 10_000;
/// Limits one agreement may set.
pub const MAX_AGREEMENT_LIMITS: usize = 16;
/// State changes an agreement's record keeps; older ones are dropped and counted.
pub const MAX_AGREEMENT_HISTORY: usize = 64;
/// Longest idempotency key of a call, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 64;
/// Reservations an agreement remembers by idempotency key; the oldest are
/// forgotten first, except one still to be settled (a lease, or a call
/// metered afterwards), which is kept until its settlement.
pub const MAX_KEPT_RESERVATIONS: usize = 4096;
/// Violations the cluster keeps; the oldest are dropped first.
pub const MAX_VIOLATIONS: usize = 10_000;
/// Largest amount a call may reserve of fuel, wall-clock milliseconds or
/// bytes out at once.
pub const MAX_RESERVATION_AMOUNT: u64 = 1 << 40;

/// Largest policy set (Cedar text), in bytes.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// Policies one set may hold.
pub const MAX_POLICIES: usize = 256;
/// Earlier policy sets the cluster keeps readable; older ones are dropped.
pub const MAX_POLICY_HISTORY: usize = 32;
/// Largest trace leaf header, in bytes: the fixed fields and up to 32
/// usage commitments (an agreement's 16 limits and its consumer's 16), each
/// under 200 bytes.
pub const MAX_LEAF_BYTES: usize = 8192;
/// Largest verifying key for proofs of usage (compressed Groth16 over
/// BN254 with 4 public inputs: about 500 bytes).
pub const MAX_VERIFYING_KEY_BYTES: usize = 4096;
/// Keys for proofs of usage the mesh keeps: one per node and circuit version.
pub const MAX_USAGE_KEYS: usize = 64;
/// Usage records one window of one limit keeps (four chained proofs of 64);
/// a window with more is marked overflowed and cannot be proved.
pub const MAX_USAGE_RECORDS_PER_WINDOW: u32 = 256;
/// Windows of one limit whose records are kept for proofs; older ones are
/// dropped when a new window begins.
pub const MAX_USAGE_WINDOWS_KEPT: usize = 4;
