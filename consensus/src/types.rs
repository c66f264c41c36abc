//! The openraft type configuration of zeromesh.

use zeromesh_protocol::{CommandReply, MemberInfo, NodeId, Request};
use zeromesh_storage::SnapshotFile;

openraft::declare_raft_types!(
    /// zeromesh's Raft types: entries carry [`Request`]s, apply answers
    /// [`CommandReply`]s, snapshots are files on disk.
    pub TypeConfig:
        D = Request,
        R = CommandReply,
        NodeId = NodeId,
        Node = MemberInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MemberInfo>;
pub type StorageError = openraft::StorageError<NodeId>;
