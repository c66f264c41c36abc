//! Agreements and their metering, and agents' stored bytes (`b/`), in the
//! replicated registry table:
//! agreement records (`g/`), usage ledgers (`l/`), reservations by
//! idempotency key (`r/`) with their order of arrival (`q/`), and the
//! violations log (`v/`, numbered by `n/violations`), and the versions of the
//! policy set (`y/`).

use rocksdb::{Direction, IteratorMode};
use zeromesh_protocol::agent::AgentSnapshot;
use zeromesh_protocol::agreement::{AgreementRecord, Ledger, Reservation, Violation};
use zeromesh_protocol::limits::{MAX_AGREEMENTS, MAX_POLICY_HISTORY};
use zeromesh_protocol::policy::PolicyRecord;

use crate::error::{decode, encode, StorageError};
use crate::keys::CF_PLUGIN_REGISTRY;
use crate::store::Store;
use crate::tables::StateBatch;

pub(crate) const AGREEMENT_KEY_PREFIX: &[u8] = b"g/";
pub(crate) const LEDGER_KEY_PREFIX: &[u8] = b"l/";
pub(crate) const RESERVATION_KEY_PREFIX: &[u8] = b"r/";
pub(crate) const ARRIVAL_KEY_PREFIX: &[u8] = b"q/";
pub(crate) const VIOLATION_KEY_PREFIX: &[u8] = b"v/";
pub(crate) const VIOLATION_SEQ_KEY: &[u8] = b"n/violations";
/// `b/{agent}`: the bytes an agent's live memories hold.
pub(crate) const STORED_BYTES_KEY_PREFIX: &[u8] = b"b/";

fn stored_bytes_key(agent: &str) -> Vec<u8> {
    [STORED_BYTES_KEY_PREFIX, agent.as_bytes()].concat()
}

/// `s/{snapshot}`: agent snapshots, counted by `n/snapshots`.
pub(crate) const SNAPSHOT_KEY_PREFIX: &[u8] = b"s/";
pub(crate) const SNAPSHOT_COUNT_KEY: &[u8] = b"n/snapshots";

fn snapshot_key(id: &str) -> Vec<u8> {
    [SNAPSHOT_KEY_PREFIX, id.as_bytes()].concat()
}

/// `y/{version}`: the policy set's versions, the current one last.
pub(crate) const POLICY_KEY_PREFIX: &[u8] = b"y/";

/// `n/policy`: the current policy set's version, a point read for every call.
pub(crate) const POLICY_VERSION_KEY: &[u8] = b"n/policy";

fn policy_key(version: u64) -> Vec<u8> {
    [POLICY_KEY_PREFIX, &version.to_be_bytes()].concat()
}

/// `n/voters`: the voters the cluster keeps, once set through the log.
pub(crate) const VOTER_COUNT_KEY: &[u8] = b"n/voters";

/// `n/clock`: the latest entry time applied (ms since the Unix epoch): an
/// entry stamped earlier by its leader takes effect at this time instead.
pub(crate) const APPLIED_CLOCK_KEY: &[u8] = b"n/clock";

/// `c/{consumer} NUL {agreement}`: an agent's agreements, without a scan of all.
pub(crate) const CONSUMER_KEY_PREFIX: &[u8] = b"c/";

fn consumer_prefix(agent: &str) -> Vec<u8> {
    [CONSUMER_KEY_PREFIX, agent.as_bytes(), b"\0"].concat()
}

fn agreement_key(id: &str) -> Vec<u8> {
    [AGREEMENT_KEY_PREFIX, id.as_bytes()].concat()
}

fn ledger_key(id: &str) -> Vec<u8> {
    [LEDGER_KEY_PREFIX, id.as_bytes()].concat()
}

/// `r/{agreement} NUL {key}`: ids and keys never hold NUL.
fn reservation_key(id: &str, key: &str) -> Vec<u8> {
    [RESERVATION_KEY_PREFIX, id.as_bytes(), b"\0", key.as_bytes()].concat()
}

fn arrival_key(id: &str, seq: u64) -> Vec<u8> {
    [ARRIVAL_KEY_PREFIX, id.as_bytes(), b"\0", &seq.to_be_bytes()].concat()
}

fn violation_key(seq: u64) -> Vec<u8> {
    [VIOLATION_KEY_PREFIX, &seq.to_be_bytes()].concat()
}

/// Checks one agreement-related registry record from a snapshot; `None`
/// when the key is not one of them.
pub(crate) fn check_agreement_record(key: &[u8], value: &[u8]) -> Option<Result<(), String>> {
    let check = |what: &'static str, ok: Result<bool, StorageError>| match ok {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("a {what}'s key and record disagree")),
        Err(error) => Err(error.to_string()),
    };
    if let Some(id) = key.strip_prefix(AGREEMENT_KEY_PREFIX) {
        let record = decode::<AgreementRecord>("agreement", value);
        return Some(check("agreement", record.map(|record| record.terms.id.as_bytes() == id)));
    }
    if key.starts_with(LEDGER_KEY_PREFIX) {
        return Some(check("ledger", decode::<Ledger>("ledger", value).map(|_| true)));
    }
    if let Some(rest) = key.strip_prefix(RESERVATION_KEY_PREFIX) {
        let reservation = decode::<Reservation>("reservation", value);
        return Some(check("reservation", reservation.map(|r| rest.ends_with(r.key.as_bytes()))));
    }
    if key.starts_with(ARRIVAL_KEY_PREFIX) {
        return Some(check("reservation order", decode::<String>("reservation order", value).map(|_| true)));
    }
    if let Some(seq) = key.strip_prefix(VIOLATION_KEY_PREFIX) {
        let violation = decode::<Violation>("violation", value);
        return Some(check("violation", violation.map(|v| seq == v.seq.to_be_bytes())));
    }
    if let Some(rest) = key.strip_prefix(CONSUMER_KEY_PREFIX) {
        let shaped = rest.contains(&0) && value.is_empty();
        return Some(if shaped { Ok(()) } else { Err("a consumer index record is malformed".into()) });
    }
    if key.starts_with(STORED_BYTES_KEY_PREFIX) {
        return Some(check("stored bytes", decode::<u64>("stored bytes", value).map(|_| true)));
    }
    if let Some(id) = key.strip_prefix(SNAPSHOT_KEY_PREFIX) {
        let snapshot = decode::<AgentSnapshot>("agent snapshot", value);
        return Some(check("agent snapshot", snapshot.map(|snapshot| snapshot.snapshot.as_bytes() == id)));
    }
    if let Some(version) = key.strip_prefix(POLICY_KEY_PREFIX) {
        let policy = decode::<PolicyRecord>("policy set", value);
        return Some(check("policy set", policy.map(|policy| version == policy.version.to_be_bytes())));
    }
    if key == SNAPSHOT_COUNT_KEY {
        return Some(check("snapshot count", decode::<u64>("snapshot count", value).map(|_| true)));
    }
    if key == VOTER_COUNT_KEY {
        return Some(check("voter count", decode::<u64>("voter count", value).map(|_| true)));
    }
    if key == APPLIED_CLOCK_KEY {
        return Some(check("applied clock", decode::<u64>("applied clock", value).map(|_| true)));
    }
    if key == POLICY_VERSION_KEY {
        return Some(check("policy version", decode::<u64>("policy version", value).map(|_| true)));
    }
    if key == VIOLATION_SEQ_KEY {
        return Some(check("violation count", decode::<u64>("violation count", value).map(|_| true)));
    }
    None
}

impl Store {
    pub(crate) fn registry_get<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StorageError> {
        match self.db.get_pinned_cf(self.cf(CF_PLUGIN_REGISTRY)?, key)? {
            Some(bytes) => Ok(Some(decode(what, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The current policy set's version (0 before any is set).
    pub fn policy_version(&self) -> Result<u64, StorageError> {
        Ok(self.registry_get(POLICY_VERSION_KEY, "policy version")?.unwrap_or(0))
    }

    /// The current policy set, or the empty one.
    pub fn current_policy(&self) -> Result<PolicyRecord, StorageError> {
        let version = self.policy_version()?;
        Ok(self.policy(version)?.unwrap_or_else(PolicyRecord::initial))
    }

    /// Policy set version `version`, while it is kept.
    pub fn policy(&self, version: u64) -> Result<Option<PolicyRecord>, StorageError> {
        self.registry_get(&policy_key(version), "policy set")
    }

    /// The newest `limit` versions of the policy set kept, newest first.
    pub fn policies(&self, limit: usize) -> Result<Vec<PolicyRecord>, StorageError> {
        let cf = self.cf(CF_PLUGIN_REGISTRY)?;
        let end = policy_key(u64::MAX);
        let mut found = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&end, Direction::Reverse)) {
            let (key, value) = item?;
            if !key.starts_with(POLICY_KEY_PREFIX) || found.len() >= limit.min(MAX_POLICY_HISTORY + 1) {
                break;
            }
            found.push(decode("policy set", &value)?);
        }
        Ok(found)
    }

    pub fn agreement(&self, id: &str) -> Result<Option<AgreementRecord>, StorageError> {
        self.registry_get(&agreement_key(id), "agreement")
    }

    /// Every agreement, in id order.
    pub fn agreements(&self) -> Result<Vec<AgreementRecord>, StorageError> {
        self.registry_scan(AGREEMENT_KEY_PREFIX, "agreement", MAX_AGREEMENTS)
    }

    /// Every agreement whose consumer is `agent`, in id order.
    pub fn agreements_of(&self, agent: &str) -> Result<Vec<AgreementRecord>, StorageError> {
        let prefix = consumer_prefix(agent);
        let cf = self.cf(CF_PLUGIN_REGISTRY)?;
        let mut found = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
            let (key, _) = item?;
            let Some(id) = key.strip_prefix(prefix.as_slice()) else { break };
            let id = String::from_utf8_lossy(id);
            if let Some(record) = self.agreement(&id)? {
                found.push(record);
            }
            if found.len() == MAX_AGREEMENTS {
                break;
            }
        }
        Ok(found)
    }

    /// Agreement `id`'s usage ledger (empty before its first reservation).
    pub fn ledger(&self, id: &str) -> Result<Ledger, StorageError> {
        Ok(self.registry_get(&ledger_key(id), "ledger")?.unwrap_or_default())
    }

    pub fn reservation(&self, id: &str, key: &str) -> Result<Option<Reservation>, StorageError> {
        self.registry_get(&reservation_key(id, key), "reservation")
    }

    /// The key of agreement `id`'s reservation number `seq`, while it is kept.
    pub fn reservation_at(&self, id: &str, seq: u64) -> Result<Option<String>, StorageError> {
        self.registry_get(&arrival_key(id, seq), "reservation order")
    }

    /// The bytes agent `agent`'s live memories hold (values, content types, tags).
    /// The voters the cluster keeps, if set through the log.
    pub fn voter_count(&self) -> Result<Option<u64>, StorageError> {
        self.registry_get(VOTER_COUNT_KEY, "voter count")
    }

    /// The latest entry time applied; 0 before the first.
    pub fn applied_clock(&self) -> Result<u64, StorageError> {
        Ok(self.registry_get(APPLIED_CLOCK_KEY, "applied clock")?.unwrap_or(0))
    }

    pub fn stored_bytes(&self, agent: &str) -> Result<u64, StorageError> {
        Ok(self.registry_get(&stored_bytes_key(agent), "stored bytes")?.unwrap_or(0))
    }

    pub fn agent_snapshot(&self, id: &str) -> Result<Option<AgentSnapshot>, StorageError> {
        self.registry_get(&snapshot_key(id), "agent snapshot")
    }

    /// Agent snapshots kept.
    pub fn snapshot_count(&self) -> Result<u64, StorageError> {
        Ok(self.registry_get(SNAPSHOT_COUNT_KEY, "snapshot count")?.unwrap_or(0))
    }

    /// The number the next violation gets.
    pub fn next_violation_seq(&self) -> Result<u64, StorageError> {
        Ok(self.registry_get(VIOLATION_SEQ_KEY, "violation count")?.unwrap_or(0))
    }

    /// Up to `limit` violations numbered `from` or later, oldest first.
    pub fn violations(&self, from: u64, limit: usize) -> Result<Vec<Violation>, StorageError> {
        let mut found = Vec::new();
        let start = violation_key(from);
        let cf = self.cf(CF_PLUGIN_REGISTRY)?;
        for item in self.db.iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item?;
            if !key.starts_with(VIOLATION_KEY_PREFIX) || found.len() == limit {
                break;
            }
            found.push(decode("violation", &value)?);
        }
        Ok(found)
    }
}

impl StateBatch<'_> {
    pub(crate) fn put_registry<T: serde::Serialize>(
        &mut self,
        key: &[u8],
        what: &'static str,
        value: &T,
    ) -> Result<(), StorageError> {
        let bytes = encode(what, value)?;
        self.batch.put_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, key, bytes);
        Ok(())
    }

    pub(crate) fn delete_registry(&mut self, key: &[u8]) -> Result<(), StorageError> {
        self.batch.delete_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, key);
        Ok(())
    }

    /// Stages an agreement and its place in its consumer's index.
    pub fn put_agreement(&mut self, record: &AgreementRecord) -> Result<(), StorageError> {
        let indexed = [consumer_prefix(&record.terms.consumer), record.terms.id.as_bytes().to_vec()].concat();
        self.batch.put_cf(self.store.cf(CF_PLUGIN_REGISTRY)?, indexed, []);
        self.put_registry(&agreement_key(&record.terms.id), "agreement", record)
    }

    pub fn put_ledger(&mut self, id: &str, ledger: &Ledger) -> Result<(), StorageError> {
        self.put_registry(&ledger_key(id), "ledger", ledger)
    }

    /// Stages a reservation and, for a new one, its place in the order of arrival.
    pub fn put_reservation(&mut self, id: &str, reservation: &Reservation) -> Result<(), StorageError> {
        self.put_registry(&arrival_key(id, reservation.seq), "reservation order", &reservation.key)?;
        self.put_registry(&reservation_key(id, &reservation.key), "reservation", reservation)
    }

    /// Forgets reservation `key`, number `seq`, of agreement `id`.
    pub fn forget_reservation(&mut self, id: &str, key: &str, seq: u64) -> Result<(), StorageError> {
        self.delete_registry(&arrival_key(id, seq))?;
        self.delete_registry(&reservation_key(id, key))
    }

    /// Stages violation `violation` and the number the next one gets.
    pub fn put_violation(&mut self, violation: &Violation) -> Result<(), StorageError> {
        self.put_registry(&violation_key(violation.seq), "violation", violation)?;
        self.put_registry(VIOLATION_SEQ_KEY, "violation count", &(violation.seq + 1))
    }

    /// Stages snapshot `snapshot`, the `count`th kept.
    pub fn put_agent_snapshot(&mut self, snapshot: &AgentSnapshot, count: u64) -> Result<(), StorageError> {
        self.put_registry(SNAPSHOT_COUNT_KEY, "snapshot count", &count)?;
        self.put_registry(&snapshot_key(&snapshot.snapshot), "agent snapshot", snapshot)
    }

    pub fn put_voter_count(&mut self, count: u64) -> Result<(), StorageError> {
        self.put_registry(VOTER_COUNT_KEY, "voter count", &count)
    }

    pub fn put_applied_clock(&mut self, at_ms: u64) -> Result<(), StorageError> {
        self.put_registry(APPLIED_CLOCK_KEY, "applied clock", &at_ms)
    }

    pub fn put_stored_bytes(&mut self, agent: &str, bytes: u64) -> Result<(), StorageError> {
        self.put_registry(&stored_bytes_key(agent), "stored bytes", &bytes)
    }

    /// Stages a new version of the policy set, forgetting the one that falls
    /// out of the kept history.
    pub fn put_policy(&mut self, policy: &PolicyRecord) -> Result<(), StorageError> {
        if let Some(oldest) = policy.version.checked_sub(MAX_POLICY_HISTORY as u64 + 1) {
            self.delete_registry(&policy_key(oldest))?;
        }
        self.put_registry(POLICY_VERSION_KEY, "policy version", &policy.version)?;
        self.put_registry(&policy_key(policy.version), "policy set", policy)
    }

    pub fn forget_violation(&mut self, seq: u64) -> Result<(), StorageError> {
        self.delete_registry(&violation_key(seq))
    }
}
