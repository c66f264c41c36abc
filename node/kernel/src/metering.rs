//! Which agreement governs a call, what it reserves, and the budget the
//! tool then runs under.

use std::future::Future;

use zeromesh_protocol::agreement::{AgreementRecord, AgreementState, Metric, Usage, UsageOutcome};

/// Metering through the replicated log: the node proposes, apply decides.
pub trait Meter {
    /// Reserves `want` of `agreement` for call `key` (the caller's own key
    /// when `client_key`, else a fresh one), decided under policy set version
    /// `policy`, through the log or from a lease the log granted under that
    /// version; answers apply's outcome, or why the reservation could not be
    /// proposed (then it may or may not have been applied; the key makes a
    /// retry count once).
    fn reserve(
        &self,
        agreement: &AgreementRecord,
        key: &str,
        client_key: bool,
        want: Usage,
        policy: u64,
    ) -> impl Future<Output = Result<UsageOutcome, String>> + Send;

    /// Call `key`, granted by [`Meter::reserve`], is done and used `used`:
    /// the rest of its grant returns (through the log, or to its lease).
    fn settle(
        &self,
        agreement: &AgreementRecord,
        key: &str,
        used: Usage,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Call `key` was granted but will not be settled: its caller went away
    /// (the call was cancelled or its connection closed) before it ended.
    /// All it was granted counts as used: never under-counted.
    fn abandon(&self, agreement: &AgreementRecord, key: &str);

    /// Records a call refused before any reservation, for reading back.
    fn record_violation(
        &self,
        agent: &str,
        agreement: Option<&str>,
        tool: &str,
        reason: &str,
    ) -> impl Future<Output = ()> + Send;

    /// A key no other call has, for calls that bring none.
    fn fresh_key(&self) -> String;
}

/// What a call may use of the amounts known only afterwards; `None` leaves
/// the tool's own limit. A governed call's budget names the reservation
/// it is settled against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budget {
    pub fuel: Option<u64>,
    pub wall_ms: Option<u64>,
    pub bytes_out: Option<u64>,
    pub reservation: Option<Reservation>,
}

/// The reservation a governed call runs under: its agreement, its key and
/// the log entry that granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub agreement: String,
    pub key: String,
    pub log_index: u64,
}

impl Budget {
    pub fn get(&self, metric: Metric) -> Option<u64> {
        match metric {
            Metric::Fuel => self.fuel,
            Metric::WallMs => self.wall_ms,
            Metric::BytesOut => self.bytes_out,
            Metric::Calls | Metric::BytesIn => None,
        }
    }

    fn set(&mut self, metric: Metric, amount: u64) {
        match metric {
            Metric::Fuel => self.fuel = Some(amount),
            Metric::WallMs => self.wall_ms = Some(amount),
            Metric::BytesOut => self.bytes_out = Some(amount),
            Metric::Calls | Metric::BytesIn => {}
        }
    }
}

/// How a metered call was counted, for the result's `_meta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metered {
    pub agreement: String,
    pub key: String,
    /// The log entry of its reservation.
    pub log_index: u64,
    /// What the call consumed, as counted against the agreement.
    pub used: Usage,
    /// Why its settlement could not be recorded (its reservation then stays
    /// counted whole: never under-counted).
    pub settle_error: Option<String>,
}

/// Which of `agreements` governs a call of `tool`: the first active one
/// (in id order) that covers it. `Err(None)` when none covers it;
/// `Err(Some(record))` when only inactive ones do.
pub fn governing<'a>(
    agreements: &'a [AgreementRecord],
    tool: &str,
) -> Result<&'a AgreementRecord, Option<&'a AgreementRecord>> {
    let covering: Vec<&AgreementRecord> = agreements.iter().filter(|record| record.terms.covers(tool)).collect();
    covering
        .iter()
        .find(|record| record.state == AgreementState::Active)
        .copied()
        .ok_or_else(|| covering.first().copied())
}

/// What a call reserves: one call and its argument bytes exactly; of the
/// amounts known only afterwards, the tool's ceiling for each metric the
/// agreement limits (others are not metered).
pub fn wanted(record: &AgreementRecord, bytes_in: u64, ceiling: &Usage) -> Usage {
    let mut want = Usage { calls: 1, bytes_in, ..Usage::default() };
    for limit in &record.terms.limits {
        if !limit.metric.known_before() {
            want.set(limit.metric, ceiling.get(limit.metric));
        }
    }
    want
}

/// The budget granted amounts give a call: a cap for each metric the
/// agreement limits.
pub fn budget(record: &AgreementRecord, granted: &Usage) -> Budget {
    let mut budget = Budget::default();
    for limit in &record.terms.limits {
        if !limit.metric.known_before() {
            budget.set(limit.metric, granted.get(limit.metric));
        }
    }
    budget
}

/// Whether a reservation has amounts to settle afterwards.
pub fn needs_settling(record: &AgreementRecord) -> bool {
    record.terms.limits.iter().any(|limit| !limit.metric.known_before())
}
