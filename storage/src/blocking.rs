//! Blocking storage work on the Raft path, without a hand-off to another
//! thread where the runtime allows.
//!
//! A follower's fsynced append and every apply block their task. Handed to
//! tokio's blocking pool, each costs two waits for a core: a blocking
//! thread woken to run it, then the waiting task woken when it ends. On a
//! runtime with worker threads, [`tokio::task::block_in_place`] runs the
//! work on the calling thread at once and lends the worker's other tasks to
//! another thread meanwhile, so nothing else waits for it.

use tokio::runtime::{Handle, RuntimeFlavor};

use crate::error::StorageError;

/// Runs `work`, which blocks, from an async task: on the calling thread when
/// it is a worker of a multi-threaded runtime, else on the blocking pool.
pub async fn run_blocking<R, F>(work: F) -> Result<R, StorageError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let on_worker_threads =
        Handle::try_current().is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::MultiThread);
    if on_worker_threads {
        Ok(tokio::task::block_in_place(work))
    } else {
        tokio::task::spawn_blocking(work).await.map_err(|error| StorageError::Join(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_worker_threads_the_work_runs_on_the_calling_thread() {
        let caller = std::thread::current().id();
        let ran_on = run_blocking(|| std::thread::current().id()).await.expect("the work runs");
        assert_eq!(ran_on, caller);
    }

    #[tokio::test]
    async fn on_a_single_threaded_runtime_the_work_runs_on_the_blocking_pool() {
        let caller = std::thread::current().id();
        let ran_on = run_blocking(|| std::thread::current().id()).await.expect("the work runs");
        assert_ne!(ran_on, caller, "block_in_place would panic here");
    }
}
