//! This node's leases of agreements' allowances: with `lease_calls` > 0, a
//! governed call that brings no idempotency key is served from a lease (a
//! `UsageCommand::Lease` granted in apply) instead of a Raft round of its
//! own. The accounting is the kernel's `LeaseBook`; here are its clock, the
//! proposals, and the task that returns idle leases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeromesh_kernel::{LeaseBook, Spent, Taken};
use zeromesh_protocol::agreement::{AgreementRecord, Metric, Usage, UsageCommand, UsageOutcome};
use zeromesh_protocol::limits::MAX_RESERVATION_AMOUNT;

use super::ToolEnv;

/// A lease no call used for this long goes back to the mesh.
const IDLE_RETURN: Duration = Duration::from_millis(500);
/// How often idle leases are looked for.
const IDLE_SCAN: Duration = Duration::from_millis(100);
/// Tries to settle a done lease before it is left counted whole.
const SETTLE_TRIES: u32 = 20;

/// The leases this node holds and the calls running on them.
pub struct Leasing {
    /// Calls one lease asks for; 0: none are taken.
    calls_per_lease: u64,
    book: Mutex<LeaseBook>,
    /// Calls served from a lease, by call key: agreement, lease key, grant.
    running: Mutex<HashMap<String, (String, String, Usage)>>,
    /// One lease request at a time, so concurrent calls share it.
    renewing: tokio::sync::Mutex<()>,
    started: Instant,
}

impl Leasing {
    pub fn new(calls_per_lease: u64) -> Leasing {
        Leasing {
            calls_per_lease,
            book: Mutex::new(LeaseBook::default()),
            running: Mutex::new(HashMap::new()),
            renewing: tokio::sync::Mutex::new(()),
            started: Instant::now(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.calls_per_lease > 0
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn book(&self) -> std::sync::MutexGuard<'_, LeaseBook> {
        self.book.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take(&self, agreement: &str, call_key: &str, want: &Usage, policy: u64) -> Option<UsageOutcome> {
        let Taken { lease_key, log_index, grant } = self.book().take(agreement, want, policy, self.now_ms())?;
        let mut running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        running.insert(call_key.to_owned(), (agreement.to_owned(), lease_key, grant));
        Some(UsageOutcome::Reserved { granted: grant, log_index, duplicate: false })
    }

    /// Serves call `call_key` of `record`, decided under policy set version
    /// `policy`, from this node's lease granted under that version, asking
    /// the log for a new lease when there is none or it cannot cover the call.
    /// `None` when a lease cannot serve it: the call then reserves through
    /// the log alone, which gives it the exact answer.
    pub async fn reserve(
        &self,
        env: &Arc<ToolEnv>,
        record: &AgreementRecord,
        call_key: &str,
        want: &Usage,
        policy: u64,
    ) -> Option<Result<UsageOutcome, String>> {
        let id = &record.terms.id;
        if let Some(taken) = self.take(id, call_key, want, policy) {
            return Some(Ok(taken));
        }
        let _renewing = self.renewing.lock().await;
        if let Some(taken) = self.take(id, call_key, want, policy) {
            return Some(Ok(taken));
        }
        let mut lease_want = Usage::default();
        for metric in Metric::ALL {
            lease_want.set(metric, want.get(metric).saturating_mul(self.calls_per_lease).min(MAX_RESERVATION_AMOUNT));
        }
        let lease_key = super::fresh_key(env);
        let command = UsageCommand::Lease { agreement: id.clone(), key: lease_key.clone(), want: lease_want, policy };
        match super::propose_usage(env.cluster.clone(), command).await {
            Ok(UsageOutcome::Reserved { granted, log_index, .. }) => {
                let replaced = self.book().install(id, lease_key, log_index, granted, policy, self.now_ms());
                if let Some(spent) = replaced {
                    tokio::spawn(settle(env.clone(), spent));
                }
                self.take(id, call_key, want, policy).map(Ok)
            }
            Ok(UsageOutcome::OverLimit(_)) => None,
            other => Some(other),
        }
    }

    /// Gives back what call `call_key` did not use; `false` when the call
    /// was not served from a lease.
    pub fn settle(&self, env: &Arc<ToolEnv>, call_key: &str, used: &Usage) -> bool {
        let running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(call_key);
        let Some((agreement, lease_key, grant)) = running else { return false };
        let mut unused = grant.minus(used);
        // The call ran: what was known before it is spent.
        for metric in Metric::ALL.into_iter().filter(|metric| metric.known_before()) {
            unused.set(metric, 0);
        }
        if let Some(spent) = self.book().give_back(&agreement, &lease_key, &unused, self.now_ms()) {
            tokio::spawn(settle(env.clone(), spent));
        }
        true
    }

    /// Call `call_key` will not give back: all it took from its lease counts
    /// as used, and the lease no longer waits for it.
    pub fn abandon(&self, env: &Arc<ToolEnv>, call_key: &str) {
        let running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(call_key);
        let Some((agreement, lease_key, _)) = running else { return };
        if let Some(spent) = self.book().give_back(&agreement, &lease_key, &Usage::default(), self.now_ms()) {
            // Called while a dropped call unwinds: settle from a task of the runtime, if there is one.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(settle(env.clone(), spent));
            }
        }
    }

    /// Returns idle leases to the mesh, forever.
    pub async fn return_idle(env: Arc<ToolEnv>) {
        if !env.leasing.enabled() {
            return;
        }
        loop {
            tokio::time::sleep(IDLE_SCAN).await;
            let leasing = &env.leasing;
            let idle = leasing.book().idle(leasing.now_ms(), IDLE_RETURN.as_millis() as u64);
            for spent in idle {
                settle(env.clone(), spent).await;
            }
        }
    }
}

/// Settles a done lease: what its calls did not use goes back to the
/// agreement. Retried across leader changes; a lease that cannot be settled
/// stays counted whole (over-counted, never under-counted).
async fn settle(env: Arc<ToolEnv>, spent: Spent) {
    let Spent { agreement, lease_key, used } = spent;
    for attempt in 0..SETTLE_TRIES {
        let settled = match super::usage_blinding() {
            Ok(blinding) => {
                let command =
                    UsageCommand::Settle { agreement: agreement.clone(), key: lease_key.clone(), used, blinding };
                super::propose_usage(env.cluster.clone(), command).await
            }
            Err(error) => Err(error),
        };
        match settled {
            Ok(_) => return,
            Err(error) if attempt + 1 == SETTLE_TRIES => {
                tracing::warn!(%agreement, %lease_key, %error, "a lease could not be settled; it stays counted whole");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
