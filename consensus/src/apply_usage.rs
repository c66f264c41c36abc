//! Usage records in apply: an amount is committed to when it is final (a
//! call's count and bytes in when it is reserved, the rest when it settles,
//! all of a lease when it settles), one Poseidon commitment per limit it
//! counts against, carried in the entry's trace leaf; the openings are kept
//! with the leaf so a node can prove a window later. The blinding comes
//! from the command (apply draws nothing). And the registration of keys for
//! proofs of usage.

use std::collections::{BTreeMap, BTreeSet};

use zeromesh_protocol::agreement::{Limit, Metric, Usage};
use zeromesh_protocol::limits::{MAX_USAGE_KEYS, MAX_USAGE_RECORDS_PER_WINDOW, MAX_USAGE_WINDOWS_KEPT};
use zeromesh_protocol::trace::{
    usage_blinding, TraceCommand, TraceLeaf, TraceOutcome, UsageCommitment, UsageKeyRecord, UsageRecord,
};
use zeromesh_storage::{StorageError, OVERFLOW_ORDINAL};
use zeromesh_trace::usage::{Opening, UsageVerifier, CIRCUIT_VERSION};

use crate::apply::Applier;
use crate::apply_agreement::At;

/// A window: account, limit index, start.
type WindowId = (String, u8, u64);

/// Usage records staged by the entries of one apply call. It answers as
/// the store would after each entry, so the outcome does not depend on how
/// entries are grouped into apply calls (nodes group them differently).
#[derive(Default)]
pub(crate) struct UsageOverlay {
    /// The next ordinal of each window touched so far (0 once dropped).
    next: BTreeMap<WindowId, u32>,
    /// The windows holding records of each limit touched so far.
    windows: BTreeMap<(String, u8), BTreeSet<u64>>,
    /// The current entry's commitments and their openings, until its leaf
    /// is made.
    pending: Vec<(UsageCommitment, Opening)>,
    /// Keys registered so far: (version, node).
    keys: BTreeSet<(u32, zeromesh_protocol::NodeId)>,
}

impl Applier<'_> {
    /// Commits to `used`'s amount of each of `limits` (counted in windows
    /// `starts`) in `account` whose metric is `final_now`, for the current
    /// entry's leaf.
    pub(crate) fn record_usage(
        &mut self,
        account: &str,
        limits: &[Limit],
        starts: &[u64],
        used: &Usage,
        seed: &[u8; 32],
        final_now: impl Fn(Metric) -> bool,
    ) -> Result<(), StorageError> {
        for (index, (limit, start)) in limits.iter().zip(starts).enumerate() {
            if !final_now(limit.metric) {
                continue;
            }
            let limit_index = u8::try_from(index).expect("at most 16 limits");
            let window: WindowId = (account.to_owned(), limit_index, *start);
            let ordinal = match self.usage.next.get(&window) {
                Some(next) => *next,
                None => self.store.usage_window_next(account, limit_index, *start)?,
            };
            if ordinal == OVERFLOW_ORDINAL {
                continue;
            }
            if ordinal >= MAX_USAGE_RECORDS_PER_WINDOW {
                self.batch.mark_usage_overflow(account, limit_index, *start)?;
                self.usage.next.insert(window, OVERFLOW_ORDINAL);
                continue;
            }
            if ordinal == 0 {
                self.forget_old_windows(account, limit_index, *start)?;
            }
            self.usage.next.insert(window, ordinal + 1);
            let opening =
                Opening { amount: used.get(limit.metric), blinding: usage_blinding(seed, account, limit_index) };
            let commitment = UsageCommitment {
                account: account.to_owned(),
                limit_index,
                limit: *limit,
                window_start_ms: *start,
                ordinal,
                commitment: opening.commit().0,
            };
            self.usage.pending.push((commitment, opening));
        }
        Ok(())
    }

    /// A window begins: the windows of that limit older than the newest
    /// kept ones are dropped.
    fn forget_old_windows(&mut self, account: &str, limit: u8, start: u64) -> Result<(), StorageError> {
        let key = (account.to_owned(), limit);
        if !self.usage.windows.contains_key(&key) {
            let stored = self.store.usage_windows(account, limit)?;
            self.usage.windows.insert(key.clone(), stored.into_iter().collect());
        }
        let windows = self.usage.windows.get_mut(&key).expect("inserted above");
        let older: Vec<u64> = windows.range(..start).copied().collect();
        let drop = older.len().saturating_sub(MAX_USAGE_WINDOWS_KEPT - 1);
        for old in &older[..drop] {
            windows.remove(old);
            self.batch.drop_usage_window(account, limit, *old)?;
            self.usage.next.insert((account.to_owned(), limit, *old), 0);
        }
        windows.insert(start);
        Ok(())
    }

    /// Puts the current entry's commitments in its leaf, keeps the records
    /// with the finished leaf, and returns the leaf's bytes.
    pub(crate) fn finish_leaf(&mut self, mut leaf: TraceLeaf) -> Result<Vec<u8>, StorageError> {
        let pending = std::mem::take(&mut self.usage.pending);
        leaf.commitments = pending.iter().map(|(commitment, _)| commitment.clone()).collect();
        let bytes = leaf.to_bytes();
        for (commitment, opening) in pending {
            let record = UsageRecord {
                log_index: leaf.index,
                leaf: bytes.clone(),
                amount: opening.amount,
                blinding: opening.blinding,
            };
            let UsageCommitment { account, limit_index, window_start_ms, ordinal, .. } = &commitment;
            self.batch.put_usage_record(account, *limit_index, *window_start_ms, *ordinal, &record)?;
        }
        Ok(bytes)
    }

    pub(crate) fn apply_trace(&mut self, at: At, command: &TraceCommand) -> Result<TraceOutcome, StorageError> {
        match command {
            TraceCommand::RegisterUsageKey { node, version, verifying_key, proving_key_sha256 } => {
                if *version != CIRCUIT_VERSION {
                    return Ok(TraceOutcome::Refused(format!(
                        "a key for circuit version {version}; this mesh proves with version {CIRCUIT_VERSION}"
                    )));
                }
                if let Err(error) = UsageVerifier::from_bytes(verifying_key) {
                    return Ok(TraceOutcome::Refused(error.to_string()));
                }
                let staged = &self.usage.keys;
                let replaced = staged.contains(&(*version, *node)) || self.store.usage_key(*version, *node)?.is_some();
                let stored = self.store.usage_keys()?;
                let new_here = staged.iter().filter(|(v, n)| !stored.iter().any(|k| k.version == *v && k.node == *n));
                if !replaced && stored.len() + new_here.count() >= MAX_USAGE_KEYS {
                    return Ok(TraceOutcome::Refused(format!(
                        "the mesh already keeps its maximum of {MAX_USAGE_KEYS} usage keys"
                    )));
                }
                self.usage.keys.insert((*version, *node));
                self.batch.put_usage_key(&UsageKeyRecord {
                    node: *node,
                    version: *version,
                    verifying_key: verifying_key.clone(),
                    proving_key_sha256: *proving_key_sha256,
                    log_index: at.log_index,
                })?;
                Ok(TraceOutcome::Registered { log_index: at.log_index, replaced })
            }
        }
    }
}
