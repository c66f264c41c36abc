//! The shared vocabulary of zeromesh: ids, the replicated command set, record
//! types and every named limit. Pure data: no I/O, no clock, no randomness.

pub mod agent;
pub mod agreement;
pub mod auth;
pub mod command;
pub mod ids;
pub mod limits;
pub mod memory;
pub mod plugin;
pub mod policy;
pub mod trace;
pub mod validate;

pub use command::{ClusterCommand, ClusterOutcome, Command, CommandReply, Request};
pub use ids::{MemberInfo, NodeId};
pub use memory::{CommandOutcome, MemoryBatch, MemoryCommand, MemoryPath, MemoryRecord, MemoryValue, PathPrefix};
pub use validate::ValidationError;
