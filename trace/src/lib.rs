//! The trace engine's mathematics. Pure: no I/O, no clock, no randomness
//! (the prover takes its random source from the caller).

pub mod bundle;
pub mod checkpoint;
pub mod merkle;
pub mod note;
pub mod poseidon;
mod poseidon_constants;
pub mod usage;
#[cfg(feature = "prover")]
pub mod usage_circuit;
