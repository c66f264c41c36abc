//! A minimal openraft type config for exercising the generic log store in
//! tests and benchmarks (string entries, no state machine).

use std::io::Cursor;

use openraft::BasicNode;

openraft::declare_raft_types!(
    pub Config:
        D = String,
        R = String,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<Config>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<Config>,
);
