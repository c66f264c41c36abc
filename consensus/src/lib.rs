//! openraft wiring for zeromesh: the type config, the deterministic state
//! machine of the memory log, reads at a chosen consistency, and the network
//! seam ([`RaftTransport`]) that the mesh implements.
//!
//! The state machine does not know how entries reach it: tests drive it
//! through [`InProcessRouter`], the node through the libp2p mesh.

mod applied;
mod apply;
mod apply_agent;
mod apply_agreement;
mod apply_plugin;
mod apply_snapshot;
mod apply_token;
mod apply_usage;
mod backup;
mod clock;
mod error;
mod in_process;
mod network;
mod node;
mod read_batch;
mod reads;
mod registry;
mod settings;
mod snapshot_schedule;
mod state_machine;
mod trace;
mod types;

pub use backup::{restore, verify_backup, Backup, Restored, VerifiedBackup};
pub use clock::{step_wall_clock, wall_clock_ms};
pub use error::ConsensusError;
pub use in_process::InProcessRouter;
pub use network::{RaftTransport, RemoteResult, TransportError, TransportNetwork};
pub use node::{ClusterView, ConsensusNode, WriteReceipt};
pub use read_batch::SharedRounds;
pub use reads::{Consistency, ReadQuery, ReadReply};
pub use settings::RaftSettings;
pub use state_machine::{check_snapshot, MemoryStateMachine, StateChange};
pub use trace::{entry_leaf, trace_leaf, trace_payload, TraceError, TraceHead};
pub use types::{Entry, Raft, TypeConfig};
pub use zeromesh_storage::{HistoryPage, ListPage, MemoryUsage, MIN_MEMORY_BUDGET_BYTES};
