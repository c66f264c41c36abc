//! JSON-RPC 2.0 framing of the peer API (in `zeromesh-protocol`, where the
//! fuzz target reaches it).

pub use zeromesh_protocol::jsonrpc::*;
