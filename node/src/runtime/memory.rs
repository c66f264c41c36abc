//! Hands back to the system the memory the allocator keeps but no longer
//! uses. glibc returns freed memory only from the top of its main heap; what
//! a burst of load freed elsewhere in its arenas stays in the process, so a
//! node's RSS would stay near its peak after the load. `malloc_trim` gives
//! back every arena's free pages; it runs every `TRIM_EVERY` on the blocking
//! pool (idle, one wake-up per period).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs for the node's lifetime.
pub async fn return_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // SAFETY: `malloc_trim` may be called at any time, from any thread.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    }
}
