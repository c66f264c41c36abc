//! The kernel: every tool call a node serves passes through [`Kernel::call`],
//! which decides whether the caller may make it, for which agent, and then
//! runs it through the [`Tools`] the node supplies. It does no I/O of its
//! own: the node's adapters implement its traits, so its decisions are
//! tested in milliseconds.

mod access;
mod call;
mod caller;
mod leases;
mod metering;
pub mod placement;
mod policy;
#[cfg(test)]
mod testing;

pub use access::{memory_target, permits, Access};
pub use call::{Kernel, Ran, Refusal, Registry, Served, ToolCall, Tools};
pub use caller::{acting_agent, Caller, ANONYMOUS_AGENT};
pub use leases::{LeaseBook, Spent, Taken};
pub use metering::{budget, needs_settling, Budget, Meter, Metered, Reservation};
pub use policy::{Policies, PolicyCall, PolicyErrors, Verdict, SCHEMA};
