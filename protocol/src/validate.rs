//! Validation errors: each says what was wrong and what is accepted.

use thiserror::Error;

/// Why a piece of outside input was refused. Nothing is truncated: an input
/// over a limit is refused whole.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("{what} is {actual} bytes, over the limit of {limit} bytes")]
    TooLong { what: &'static str, actual: usize, limit: usize },
    #[error("{what} has {actual} items, over the limit of {limit}")]
    TooMany { what: &'static str, actual: usize, limit: usize },
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("invalid memory path {path:?}: {reason}")]
    BadPath { path: String, reason: String },
    #[error("invalid {what} {value:?}: {reason}")]
    BadField { what: &'static str, value: String, reason: &'static str },
}

/// Refuses `actual > limit` with a [`ValidationError::TooLong`].
pub fn check_len(what: &'static str, actual: usize, limit: usize) -> Result<(), ValidationError> {
    if actual > limit {
        return Err(ValidationError::TooLong { what, actual, limit });
    }
    Ok(())
}

/// Refuses `count > limit` with a [`ValidationError::TooMany`].
pub fn check_count(what: &'static str, count: usize, limit: usize) -> Result<(), ValidationError> {
    if count > limit {
        return Err(ValidationError::TooMany { what, actual: count, limit });
    }
    Ok(())
}
