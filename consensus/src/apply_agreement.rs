//! Deterministic apply of agreements and their metering. Signatures, trust
//! and expiry are checked against the registry as the entry finds it and
//! the leader's stamp; every reservation's check and increment happen here,
//! so no two nodes can together overrun a limit.

use std::collections::BTreeMap;

use zeromesh_protocol::agreement::{
    account_agent, agent_account, AgreementCheck, AgreementCommand, AgreementOutcome, AgreementRecord, AgreementState,
    Change, Ledger, Metric, OverLimit, Party, Reservation, Terms, Usage, UsageCommand, UsageOutcome, Violation,
};
use zeromesh_protocol::limits::{MAX_AGREEMENTS, MAX_AGREEMENT_HISTORY, MAX_KEPT_RESERVATIONS, MAX_VIOLATIONS};
use zeromesh_protocol::policy::{PolicyCommand, PolicyOutcome, PolicyRecord};
use zeromesh_storage::StorageError;

use crate::apply::Applier;

/// Agreement state staged earlier in the same apply call (`None`: forgotten).
#[derive(Default)]
pub(crate) struct AgreementOverlay {
    agreements: BTreeMap<String, AgreementRecord>,
    ledgers: BTreeMap<String, Ledger>,
    reservations: BTreeMap<(String, String), Option<Reservation>>,
    arrivals: BTreeMap<(String, u64), Option<String>>,
    next_violation: Option<u64>,
    /// The policy set's version, once set in this apply call.
    policy: Option<u64>,
}

/// Where an entry is: its index and the leader's stamp.
#[derive(Clone, Copy)]
pub(crate) struct At {
    pub log_index: u64,
    pub at_ms: u64,
}

impl Applier<'_> {
    /// The agreements whose record or usage changed so far, and whether a
    /// violation was recorded.
    pub fn changed_agreements(&self) -> (Vec<String>, bool) {
        let mut ids: Vec<String> = self.deals.agreements.keys().chain(self.deals.ledgers.keys()).cloned().collect();
        ids.sort_unstable();
        ids.dedup();
        (ids, self.deals.next_violation.is_some())
    }

    /// The policy set's new version, when one was set so far.
    pub fn changed_policy(&self) -> Option<u64> {
        self.deals.policy
    }

    fn policy_version(&self) -> Result<u64, StorageError> {
        match self.deals.policy {
            Some(version) => Ok(version),
            None => self.store.policy_version(),
        }
    }

    /// Sets a new version of the policy set. Its text was validated by the
    /// node that proposed it; apply only orders and keeps it.
    pub(crate) fn apply_policy(&mut self, at: At, command: &PolicyCommand) -> Result<PolicyOutcome, StorageError> {
        let PolicyCommand::Set { text, description, expect_version } = command;
        let current = self.policy_version()?;
        if expect_version.is_some_and(|expected| expected != current) {
            return Ok(PolicyOutcome::VersionMismatch { current });
        }
        let version = current + 1;
        let record = PolicyRecord {
            version,
            text: text.clone(),
            description: description.clone(),
            log_index: at.log_index,
            at_ms: at.at_ms,
        };
        self.batch.put_policy(&record)?;
        self.deals.policy = Some(version);
        Ok(PolicyOutcome::Set { version })
    }

    /// The account `id` meters in: an agreement, or an agent's own
    /// account (its quotas, as an agreement with itself).
    fn account(&self, id: &str) -> Result<Option<AgreementRecord>, StorageError> {
        match account_agent(id) {
            Some(agent) => Ok(self.agent(agent)?.map(|agent| AgreementRecord::for_agent(&agent))),
            None => self.agreement(id),
        }
    }

    fn agreement(&self, id: &str) -> Result<Option<AgreementRecord>, StorageError> {
        match self.deals.agreements.get(id) {
            Some(staged) => Ok(Some(staged.clone())),
            None => self.store.agreement(id),
        }
    }

    fn ledger(&self, id: &str) -> Result<Ledger, StorageError> {
        match self.deals.ledgers.get(id) {
            Some(staged) => Ok(staged.clone()),
            None => self.store.ledger(id),
        }
    }

    fn reservation(&self, id: &str, key: &str) -> Result<Option<Reservation>, StorageError> {
        match self.deals.reservations.get(&(id.to_owned(), key.to_owned())) {
            Some(staged) => Ok(staged.clone()),
            None => self.store.reservation(id, key),
        }
    }

    fn reservation_at(&self, id: &str, seq: u64) -> Result<Option<String>, StorageError> {
        match self.deals.arrivals.get(&(id.to_owned(), seq)) {
            Some(staged) => Ok(staged.clone()),
            None => self.store.reservation_at(id, seq),
        }
    }

    fn stage_agreement(&mut self, record: AgreementRecord) -> Result<(), StorageError> {
        self.batch.put_agreement(&record)?;
        self.deals.agreements.insert(record.terms.id.clone(), record);
        Ok(())
    }

    fn stage_ledger(&mut self, id: &str, ledger: Ledger) -> Result<(), StorageError> {
        self.batch.put_ledger(id, &ledger)?;
        self.deals.ledgers.insert(id.to_owned(), ledger);
        Ok(())
    }

    fn stage_reservation(&mut self, id: &str, reservation: Reservation) -> Result<(), StorageError> {
        self.batch.put_reservation(id, &reservation)?;
        self.deals.arrivals.insert((id.to_owned(), reservation.seq), Some(reservation.key.clone()));
        self.deals.reservations.insert((id.to_owned(), reservation.key.clone()), Some(reservation));
        Ok(())
    }

    /// Forgets agreement `id`'s reservation number `seq`, if still kept.
    /// A reservation still waiting to give back what it did not use (a lease,
    /// or a call metered afterwards) is kept until it is settled, so that its
    /// settlement is never lost; it is forgotten then.
    fn forget_reservation(&mut self, id: &str, seq: u64) -> Result<(), StorageError> {
        let Some(key) = self.reservation_at(id, seq)? else { return Ok(()) };
        let awaits_settlement = self.reservation(id, &key)?.is_some_and(|reservation| {
            reservation.settled.is_none()
                && (reservation.lease
                    || Metric::ALL.iter().any(|metric| !metric.known_before() && reservation.granted.get(*metric) > 0))
        });
        if awaits_settlement {
            return Ok(());
        }
        self.batch.forget_reservation(id, &key, seq)?;
        self.deals.arrivals.insert((id.to_owned(), seq), None);
        self.deals.reservations.insert((id.to_owned(), key), None);
        Ok(())
    }

    /// Records a violation; the oldest beyond [`MAX_VIOLATIONS`] is dropped.
    pub(crate) fn record_violation(
        &mut self,
        at: At,
        agent: &str,
        agreement: Option<&str>,
        tool: &str,
        reason: String,
    ) -> Result<u64, StorageError> {
        let seq = match self.deals.next_violation {
            Some(seq) => seq,
            None => self.store.next_violation_seq()?,
        };
        let violation = Violation {
            seq,
            log_index: at.log_index,
            at_ms: at.at_ms,
            agent: agent.to_owned(),
            agreement: agreement.map(str::to_owned),
            tool: tool.to_owned(),
            reason,
        };
        self.batch.put_violation(&violation)?;
        if let Some(oldest) = seq.checked_sub(MAX_VIOLATIONS as u64) {
            self.batch.forget_violation(oldest)?;
        }
        self.deals.next_violation = Some(seq + 1);
        Ok(seq)
    }

    fn agreement_count(&self) -> Result<usize, StorageError> {
        let mut ids: BTreeMap<String, ()> =
            self.store.agreements()?.into_iter().map(|record| (record.terms.id, ())).collect();
        ids.extend(self.deals.agreements.keys().map(|id| (id.clone(), ())));
        Ok(ids.len())
    }

    /// The consumer's signing key, or the check that fails.
    fn consumer_key(
        &self,
        terms: &Terms,
    ) -> Result<Result<zeromesh_protocol::plugin::PublisherKey, AgreementCheck>, StorageError> {
        let Some(agent) = self.agent(&terms.consumer)? else {
            return Ok(Err(AgreementCheck::UnknownAgent { agent: terms.consumer.clone() }));
        };
        Ok(agent.key.ok_or(AgreementCheck::AgentHasNoKey { agent: terms.consumer.clone() }))
    }

    pub(crate) fn apply_agreement(
        &mut self,
        at: At,
        command: &AgreementCommand,
    ) -> Result<AgreementOutcome, StorageError> {
        let id = command.id().to_owned();
        let existing = self.agreement(&id)?;
        let refuse = |check: AgreementCheck| Ok(AgreementOutcome::Refused(check));
        if let AgreementCommand::Create { terms } = command {
            if existing.is_some() {
                return refuse(AgreementCheck::Exists { id });
            }
            if self.agreement_count()? >= MAX_AGREEMENTS {
                return refuse(AgreementCheck::Full { limit: MAX_AGREEMENTS });
            }
            if let Err(check) = self.consumer_key(terms)? {
                return refuse(check);
            }
            if !self.is_trusted(&terms.provider)? {
                return refuse(AgreementCheck::ProviderUntrusted { key: terms.provider });
            }
            let record = AgreementRecord {
                terms: terms.clone(),
                consumer_signature: None,
                provider_signature: None,
                state: AgreementState::Draft,
                history: Vec::new(),
                history_dropped: 0,
            };
            return self.change(at, record, AgreementState::Draft, "created".to_owned());
        }
        let Some(mut record) = existing else { return refuse(AgreementCheck::NotFound { id }) };
        let wrong_state = |record: &AgreementRecord, action: &str| {
            Ok(AgreementOutcome::Refused(AgreementCheck::WrongState {
                state: record.state.name().to_owned(),
                action: action.to_owned(),
            }))
        };
        if record.state.is_final() {
            return wrong_state(&record, "changed");
        }
        match command {
            AgreementCommand::Create { .. } => unreachable!("handled above"),
            AgreementCommand::Sign { signer, signature, .. } => {
                if record.state != AgreementState::Draft {
                    return wrong_state(&record, "signed");
                }
                let consumer = match self.consumer_key(&record.terms)? {
                    Ok(key) => key,
                    Err(check) => return refuse(check),
                };
                let party = if *signer == consumer {
                    Party::Consumer
                } else if *signer == record.terms.provider {
                    Party::Provider
                } else {
                    return refuse(AgreementCheck::NotAParty { key: *signer });
                };
                if !record.terms.verify(signer, signature) {
                    return refuse(AgreementCheck::BadSignature { party });
                }
                match party {
                    Party::Consumer => record.consumer_signature = Some(signature.clone()),
                    Party::Provider => record.provider_signature = Some(signature.clone()),
                }
                self.change(at, record, AgreementState::Draft, format!("signed by the {}", party.name()))
            }
            AgreementCommand::Activate { .. } => {
                if record.state == AgreementState::Active {
                    return wrong_state(&record, "activated again");
                }
                if let Err(check) = self.check_signed(&record)? {
                    return refuse(check);
                }
                if at.at_ms >= record.terms.expires_at_ms {
                    return refuse(AgreementCheck::Expired {
                        expires_at_ms: record.terms.expires_at_ms,
                        now_ms: at.at_ms,
                    });
                }
                let what = if record.state == AgreementState::Draft { "activated" } else { "resumed" };
                self.change(at, record, AgreementState::Active, what.to_owned())
            }
            AgreementCommand::Suspend { reason, .. } => {
                if record.state != AgreementState::Active {
                    return wrong_state(&record, "suspended");
                }
                let state = AgreementState::Suspended { reason: reason.clone() };
                self.change(at, record, state, format!("suspended: {reason}"))
            }
            AgreementCommand::Terminate { reason, .. } => {
                let state = AgreementState::Terminated { reason: reason.clone() };
                self.change(at, record, state, format!("terminated: {reason}"))
            }
        }
    }

    /// Both signatures present and verifying over the terms as stored.
    fn check_signed(&self, record: &AgreementRecord) -> Result<Result<(), AgreementCheck>, StorageError> {
        let consumer = match self.consumer_key(&record.terms)? {
            Ok(key) => key,
            Err(check) => return Ok(Err(check)),
        };
        let signatures = [
            (Party::Consumer, consumer, &record.consumer_signature),
            (Party::Provider, record.terms.provider, &record.provider_signature),
        ];
        for (party, key, signature) in signatures {
            let Some(signature) = signature else { return Ok(Err(AgreementCheck::MissingSignature { party })) };
            if !record.terms.verify(&key, signature) {
                return Ok(Err(AgreementCheck::BadSignature { party }));
            }
        }
        if !self.is_trusted(&record.terms.provider)? {
            return Ok(Err(AgreementCheck::ProviderUntrusted { key: record.terms.provider }));
        }
        Ok(Ok(()))
    }

    fn change(
        &mut self,
        at: At,
        mut record: AgreementRecord,
        state: AgreementState,
        what: String,
    ) -> Result<AgreementOutcome, StorageError> {
        record.state = state.clone();
        record.history.push(Change { log_index: at.log_index, at_ms: at.at_ms, what: what.clone() });
        if record.history.len() > MAX_AGREEMENT_HISTORY {
            record.history.remove(0);
            record.history_dropped += 1;
        }
        let id = record.terms.id.clone();
        self.stage_agreement(record)?;
        Ok(AgreementOutcome::Changed { id, state, what })
    }

    pub(crate) fn apply_usage(&mut self, at: At, command: &UsageCommand) -> Result<UsageOutcome, StorageError> {
        match command {
            UsageCommand::Reserve { agreement, key, want, policy, blinding } => {
                self.reserve(at, agreement, key, want, *policy, Some(blinding))
            }
            UsageCommand::Lease { agreement, key, want, policy } => {
                self.reserve(at, agreement, key, want, *policy, None)
            }
            UsageCommand::Settle { agreement, key, used, blinding } => self.settle(at, agreement, key, used, blinding),
            UsageCommand::Violation { agent, agreement, tool, reason } => {
                let seq = self.record_violation(at, agent, agreement.as_deref(), tool, reason.clone())?;
                Ok(UsageOutcome::Recorded { seq })
            }
        }
    }

    /// Reserves for one call (with the blinding of its usage commitments),
    /// or a node's lease (`None`: its amounts are final when it settles),
    /// decided under policy set version `policy`.
    fn reserve(
        &mut self,
        at: At,
        id: &str,
        key: &str,
        want: &Usage,
        policy: u64,
        call: Option<&[u8; 32]>,
    ) -> Result<UsageOutcome, StorageError> {
        let lease = call.is_none();
        let Some(mut record) = self.account(id)? else { return Ok(UsageOutcome::NotFound) };
        let consumer = record.terms.consumer.clone();
        if record.state == AgreementState::Active && at.at_ms >= record.terms.expires_at_ms {
            let what = format!("expired at {} ms", record.terms.expires_at_ms);
            self.change(at, record.clone(), AgreementState::Expired, what)?;
            record.state = AgreementState::Expired;
        }
        if record.state != AgreementState::Active {
            let reason = format!("agreement {id} is {}", record.state.name());
            self.record_violation(at, &consumer, Some(id), "*", reason)?;
            return Ok(UsageOutcome::NotActive { state: record.state });
        }
        if let Some(earlier) = self.reservation(id, key)? {
            return Ok(match earlier.settled {
                Some(_) => UsageOutcome::AlreadySettled { log_index: earlier.log_index },
                None => {
                    UsageOutcome::Reserved { granted: earlier.granted, log_index: earlier.log_index, duplicate: true }
                }
            });
        }
        // Decided under an older policy set: the node decides again.
        let current = self.policy_version()?;
        if policy != current {
            return Ok(UsageOutcome::StalePolicy { decided: policy, current });
        }
        // The consumer's own quotas count its agreements' calls too: first
        // what they grant, then the agreement grants within that.
        let quota = match account_agent(id) {
            Some(_) => None,
            None => self.agent(&consumer)?.filter(|agent| !agent.limits.is_empty()),
        };
        let mut want = *want;
        let mut held = None;
        if let Some(agent) = quota {
            let account = agent_account(&consumer);
            let mut quota_ledger = self.ledger(&account)?;
            let next_seq = quota_ledger.next_seq;
            let granted = if lease {
                quota_ledger.lease(&agent.limits, at.at_ms, &want)
            } else {
                quota_ledger.reserve(&agent.limits, at.at_ms, &want)
            };
            // The account numbers only its own reservations.
            quota_ledger.next_seq = next_seq;
            match granted {
                Ok((granted, starts)) => {
                    want = granted;
                    held = Some((account, quota_ledger, agent.limits, starts));
                }
                Err(over) => {
                    self.stage_ledger(&account, quota_ledger)?;
                    let reason = format!("over agent {consumer}'s own quota {}", over_text(&over));
                    self.record_violation(at, &consumer, Some(id), "*", reason)?;
                    return Ok(UsageOutcome::AgentOverLimit(over));
                }
            }
        }
        let mut ledger = self.ledger(id)?;
        let seq = ledger.next_seq;
        let reserved = if lease {
            ledger.lease(&record.terms.limits, at.at_ms, &want)
        } else {
            ledger.reserve(&record.terms.limits, at.at_ms, &want)
        };
        self.stage_ledger(id, ledger)?;
        let (granted, window_starts) = match reserved {
            Ok(reserved) => reserved,
            Err(over) => {
                let reason = format!("over the limit {}", over_text(&over));
                self.record_violation(at, &consumer, Some(id), "*", reason)?;
                return Ok(UsageOutcome::OverLimit(over));
            }
        };
        // A call's amounts known before it runs are final: committed to now.
        if let Some(blinding) = call {
            self.record_usage(id, &record.terms.limits, &window_starts, &granted, blinding, Metric::known_before)?;
        }
        let mut agent_window_starts = Vec::new();
        if let Some((account, mut quota_ledger, limits, starts)) = held {
            // The agreement may grant less than the quota did: the rest goes back.
            quota_ledger.release(&limits, at.at_ms, &starts, &want.minus(&granted));
            self.stage_ledger(&account, quota_ledger)?;
            if let Some(blinding) = call {
                self.record_usage(&account, &limits, &starts, &granted, blinding, Metric::known_before)?;
            }
            agent_window_starts = starts;
        }
        let reservation = Reservation {
            key: key.to_owned(),
            seq,
            granted,
            window_starts,
            log_index: at.log_index,
            settled: None,
            lease,
            agent_window_starts,
        };
        self.stage_reservation(id, reservation)?;
        if let Some(oldest) = seq.checked_sub(MAX_KEPT_RESERVATIONS as u64) {
            self.forget_reservation(id, oldest)?;
        }
        Ok(UsageOutcome::Reserved { granted, log_index: at.log_index, duplicate: false })
    }

    fn settle(
        &mut self,
        at: At,
        id: &str,
        key: &str,
        used: &Usage,
        blinding: &[u8; 32],
    ) -> Result<UsageOutcome, StorageError> {
        let Some(record) = self.account(id)? else { return Ok(UsageOutcome::NotFound) };
        let Some(mut reservation) = self.reservation(id, key)? else { return Ok(UsageOutcome::UnknownReservation) };
        if reservation.settled.is_some() {
            return Ok(UsageOutcome::AlreadySettled { log_index: reservation.log_index });
        }
        // A call's amounts known before it ran (calls, bytes in) were spent
        // when it ran; only the others can come back. A lease returns all it
        // did not use.
        let mut used = used.capped_by(&reservation.granted);
        if !reservation.lease {
            for metric in Metric::ALL.into_iter().filter(|metric| metric.known_before()) {
                used.set(metric, reservation.granted.get(metric));
            }
        }
        let returned = reservation.granted.minus(&used);
        let mut ledger = self.ledger(id)?;
        ledger.release(&record.terms.limits, at.at_ms, &reservation.window_starts, &returned);
        let ledger_next_seq = ledger.next_seq;
        self.stage_ledger(id, ledger)?;
        // What is final now is committed to in the entry's leaf, per limit:
        // all a lease used; a call's amounts not known before it ran.
        let lease = reservation.lease;
        let settled_now = move |metric: Metric| lease || !metric.known_before();
        self.record_usage(id, &record.terms.limits, &reservation.window_starts, &used, blinding, settled_now)?;
        let consumer = &record.terms.consumer;
        if let Some(agent) = self.agent(consumer)?.filter(|_| !reservation.agent_window_starts.is_empty()) {
            let account = agent_account(consumer);
            let mut quota_ledger = self.ledger(&account)?;
            quota_ledger.release(&agent.limits, at.at_ms, &reservation.agent_window_starts, &returned);
            self.stage_ledger(&account, quota_ledger)?;
            self.record_usage(&account, &agent.limits, &reservation.agent_window_starts, &used, blinding, settled_now)?;
        }
        let (seq, past_keeping) = (reservation.seq, reservation.seq + MAX_KEPT_RESERVATIONS as u64 <= ledger_next_seq);
        reservation.settled = Some(used);
        self.stage_reservation(id, reservation)?;
        if past_keeping {
            // Kept past its turn only to be settled: forgotten now.
            self.forget_reservation(id, seq)?;
        }
        Ok(UsageOutcome::Settled { returned })
    }
}

/// A limit a call would overrun, for a violation's reason: `calls=2/minute: 2 used`.
fn over_text(over: &OverLimit) -> String {
    format!("{}={}/{}: {} used", over.metric.name(), over.limit, over.window.name(), over.used)
}
