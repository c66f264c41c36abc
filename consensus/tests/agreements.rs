//! Agreements in apply: both signatures and the provider's trust are checked
//! there, with the check that failed named; reservations never exceed a
//! limit, a retried key counts once, a settlement returns what was not used;
//! every machine applying the same entries holds the same usage, and a
//! snapshot carries it; policy sets are versioned, and a reservation decided
//! under a replaced one is refused.

use ed25519_dalek::SigningKey;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};
use proptest::prelude::*;
use zeromesh_consensus::Entry;
use zeromesh_protocol::agent::AgentCommand;
use zeromesh_protocol::agreement::Window;
use zeromesh_protocol::agreement::{
    agent_account, AgreementCheck, AgreementCommand, AgreementOutcome, AgreementState, Limit, Party, Terms, Usage,
    UsageCommand, UsageOutcome,
};
use zeromesh_protocol::plugin::{PluginCommand, PublisherKey};
use zeromesh_protocol::policy::{PolicyCommand, PolicyOutcome};
use zeromesh_protocol::trace::{TraceCommand, TraceLeaf, TraceOutcome, UsageCommitment, UsageRecord};
use zeromesh_protocol::{Command, CommandReply, Request};
use zeromesh_storage::Store;
use zeromesh_trace::usage::Opening;

mod common;
use common::{open_machine, runtime};

const START_MS: u64 = 1_000_000;

fn consumer_key() -> SigningKey {
    SigningKey::from_bytes(&[3; 32])
}

fn provider_key() -> SigningKey {
    SigningKey::from_bytes(&[4; 32])
}

fn terms(id: &str, limits: &[&str]) -> Terms {
    Terms {
        id: id.into(),
        consumer: "bot".into(),
        provider: PublisherKey::of(&provider_key()),
        tools: vec!["echo".into()],
        limits: limits.iter().map(|limit| Limit::parse(limit).unwrap()).collect(),
        expires_at_ms: START_MS + 600_000,
        description: String::new(),
    }
}

/// Entries numbered from `first`, each stamped one millisecond after the last.
fn entries(first: u64, commands: Vec<Command>) -> Vec<Entry> {
    commands
        .into_iter()
        .zip(first..)
        .map(|(command, index)| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request { stamped_at_ms: START_MS + index, command }),
        })
        .collect()
}

fn sign(terms: &Terms, key: &SigningKey) -> Command {
    Command::Agreement(AgreementCommand::Sign {
        id: terms.id.clone(),
        signer: PublisherKey::of(key),
        signature: terms.sign(key),
    })
}

fn agreement(command: AgreementCommand) -> Command {
    Command::Agreement(command)
}

fn activate(id: &str) -> Command {
    agreement(AgreementCommand::Activate { id: id.into() })
}

/// A trusted provider, an agent with a key, and agreement `terms` signed by
/// both and activated.
fn active(terms: &Terms) -> Vec<Command> {
    active_with_quotas(terms, &[])
}

/// The same, the agent spawned with quotas `limits` of its own.
fn active_with_quotas(terms: &Terms, limits: &[&str]) -> Vec<Command> {
    vec![
        Command::Plugin(PluginCommand::TrustPublisher { publisher: PublisherKey::of(&provider_key()) }),
        Command::Agent(AgentCommand::Spawn {
            id: "bot".into(),
            owner: "ops".into(),
            description: String::new(),
            tools: vec!["*".into()],
            tags: Vec::new(),
            key: Some(PublisherKey::of(&consumer_key())),
            memory_quota_bytes: None,
            max_concurrent_calls: None,
            limits: limits.iter().map(|limit| Limit::parse(limit).unwrap()).collect(),
        }),
        agreement(AgreementCommand::Create { terms: terms.clone() }),
        sign(terms, &consumer_key()),
        sign(terms, &provider_key()),
        activate(&terms.id),
    ]
}

fn reserve(id: &str, key: &str, want: Usage) -> Command {
    reserve_under(0, id, key, want)
}

/// A reservation decided under policy set version `policy`.
fn reserve_under(policy: u64, id: &str, key: &str, want: Usage) -> Command {
    Command::Usage(UsageCommand::Reserve {
        agreement: id.into(),
        key: key.into(),
        want,
        policy,
        blinding: blinding(key),
    })
}

/// The random bytes a node would draw for a call's usage commitments: here
/// fixed by the call's key, so runs repeat.
fn blinding(key: &str) -> [u8; 32] {
    let mut bytes = [7u8; 32];
    for (slot, byte) in bytes.iter_mut().zip(key.bytes()) {
        *slot = byte;
    }
    bytes
}

/// A node's lease, asked for under policy set version `policy`.
fn lease_under(policy: u64, id: &str, key: &str, want: Usage) -> Command {
    Command::Usage(UsageCommand::Lease { agreement: id.into(), key: key.into(), want, policy })
}

/// What a reservation's reply granted; any other reply fails the test.
fn granted(reply: &CommandReply) -> Usage {
    match reply {
        CommandReply::Usage(UsageOutcome::Reserved { granted, .. }) => *granted,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn settle(id: &str, key: &str, used: Usage) -> Command {
    Command::Usage(UsageCommand::Settle { agreement: id.into(), key: key.into(), used, blinding: blinding(key) })
}

fn one_call() -> Usage {
    Usage { calls: 1, ..Usage::default() }
}

fn apply(machine: &mut zeromesh_consensus::MemoryStateMachine, batch: Vec<Entry>) -> Vec<CommandReply> {
    runtime().block_on(machine.apply(batch)).unwrap()
}

fn refused(reply: &CommandReply) -> AgreementCheck {
    match reply {
        CommandReply::Agreement(AgreementOutcome::Refused(check)) => check.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn forged_half_signed_tampered_and_expired_agreements_are_refused_with_the_check_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let deal = terms("deal", &["calls=5/minute"]);
    let setup = active(&deal);
    let mut commands: Vec<Command> = setup[..3].to_vec();
    let stranger = SigningKey::from_bytes(&[5; 32]);
    let mut tampered = deal.clone();
    tampered.limits[0].max = 5_000;
    commands.extend([
        sign(&deal, &stranger),
        agreement(AgreementCommand::Sign {
            id: deal.id.clone(),
            signer: PublisherKey::of(&consumer_key()),
            signature: deal.sign(&stranger),
        }),
        agreement(AgreementCommand::Sign {
            id: deal.id.clone(),
            signer: PublisherKey::of(&consumer_key()),
            signature: tampered.sign(&consumer_key()),
        }),
        sign(&deal, &consumer_key()),
        activate(&deal.id),
        reserve(&deal.id, "early", one_call()),
    ]);
    let replies = apply(&mut machine, entries(1, commands));
    assert_eq!(refused(&replies[3]), AgreementCheck::NotAParty { key: PublisherKey::of(&stranger) });
    assert_eq!(refused(&replies[4]), AgreementCheck::BadSignature { party: Party::Consumer }, "forged");
    assert_eq!(refused(&replies[5]), AgreementCheck::BadSignature { party: Party::Consumer }, "tampered");
    assert_eq!(refused(&replies[7]), AgreementCheck::MissingSignature { party: Party::Provider }, "half-signed");
    assert_eq!(
        replies[8],
        CommandReply::Usage(UsageOutcome::NotActive { state: AgreementState::Draft }),
        "a draft serves no call"
    );

    let mut expired = terms("old", &[]);
    expired.expires_at_ms = START_MS;
    let later = vec![
        agreement(AgreementCommand::Create { terms: expired.clone() }),
        sign(&expired, &consumer_key()),
        sign(&expired, &provider_key()),
        activate(&expired.id),
    ];
    let replies = apply(&mut machine, entries(10, later));
    assert!(matches!(refused(&replies[3]), AgreementCheck::Expired { expires_at_ms: START_MS, .. }));
    assert_eq!(store.agreement("old").unwrap().unwrap().state, AgreementState::Draft, "a refusal changes nothing");

    let mut untrusted = terms("untrusted", &[]);
    untrusted.provider = PublisherKey::of(&stranger);
    let replies = apply(&mut machine, entries(14, vec![agreement(AgreementCommand::Create { terms: untrusted })]));
    assert_eq!(refused(&replies[0]), AgreementCheck::ProviderUntrusted { key: PublisherKey::of(&stranger) });
}

#[test]
fn reservations_stop_at_the_limit_a_retried_key_counts_once_and_settlements_return_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let deal = terms("deal", &["calls=2/minute", "fuel=1000/lifetime"]);
    let mut commands = active(&deal);
    let want = Usage { calls: 1, fuel: 800, ..Usage::default() };
    commands.extend([
        reserve("deal", "a", want),
        reserve("deal", "a", want),
        reserve("deal", "b", want),
        settle("deal", "a", Usage { fuel: 100, ..Usage::default() }),
        settle("deal", "a", Usage::default()),
        reserve("deal", "c", want),
        reserve("deal", "a", want),
        agreement(AgreementCommand::Suspend { id: "deal".into(), reason: "audit".into() }),
        reserve("deal", "d", want),
    ]);
    let replies = apply(&mut machine, entries(1, commands));
    let usage: Vec<&CommandReply> = replies[6..].iter().collect();
    let first = Usage { calls: 1, fuel: 800, ..Usage::default() };
    assert_eq!(
        *usage[0],
        CommandReply::Usage(UsageOutcome::Reserved { granted: first, log_index: 7, duplicate: false })
    );
    assert_eq!(
        *usage[1],
        CommandReply::Usage(UsageOutcome::Reserved { granted: first, log_index: 7, duplicate: true })
    );
    let second = Usage { calls: 1, fuel: 200, ..Usage::default() };
    assert_eq!(
        *usage[2],
        CommandReply::Usage(UsageOutcome::Reserved { granted: second, log_index: 9, duplicate: false }),
        "fuel is granted up to what is left"
    );
    let returned = Usage { fuel: 700, ..Usage::default() };
    assert_eq!(*usage[3], CommandReply::Usage(UsageOutcome::Settled { returned }));
    assert_eq!(*usage[4], CommandReply::Usage(UsageOutcome::AlreadySettled { log_index: 7 }));
    let CommandReply::Usage(UsageOutcome::OverLimit(over)) = usage[5] else { panic!("{:?}", usage[5]) };
    assert_eq!((over.metric.name(), over.used, over.limit), ("calls", 2, 2));
    assert_eq!(*usage[6], CommandReply::Usage(UsageOutcome::AlreadySettled { log_index: 7 }));
    assert!(matches!(
        usage[8],
        CommandReply::Usage(UsageOutcome::NotActive { state: AgreementState::Suspended { .. } })
    ));

    let ledger = store.ledger("deal").unwrap();
    assert_eq!(ledger.windows[0].used, 2);
    assert_eq!(ledger.windows[1].used, 300, "800 + 200 granted, 700 returned");
    assert_eq!(ledger.refused, 1);
    let violations = store.violations(0, 10).unwrap();
    assert_eq!(violations.len(), 2, "the over-limit call and the call on a suspended agreement");
    assert!(violations[0].reason.contains("calls=2/minute"), "{}", violations[0].reason);
    assert!(violations[1].reason.contains("suspended"), "{}", violations[1].reason);
    let history: Vec<String> = store.agreement("deal").unwrap().unwrap().history.into_iter().map(|c| c.what).collect();
    assert_eq!(
        history,
        ["created", "signed by the consumer", "signed by the provider", "activated", "suspended: audit"]
    );
}

/// The state a machine holds for agreement `id`: its record and ledger.
fn held(store: &Store, id: &str) -> String {
    format!("{:?} {:?}", store.agreement(id).unwrap(), store.ledger(id).unwrap())
}

#[derive(Debug, Clone)]
enum Step {
    Reserve { key: u8, calls: u64, fuel: u64 },
    Settle { key: u8, fuel: u64 },
    Wait { ms: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..12, 0u64..3, 0u64..400).prop_map(|(key, calls, fuel)| Step::Reserve { key, calls, fuel }),
        (0u8..12, 0u64..400).prop_map(|(key, fuel)| Step::Settle { key, fuel }),
        (1u64..40_000).prop_map(|ms| Step::Wait { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The same reservations and settlements applied on two fresh machines
    /// (one entry per apply on the first, all in one apply on the second)
    /// give identical usage, and no window ever counts over its limit.
    #[test]
    fn two_machines_agree_on_usage_and_it_never_exceeds_a_limit(steps in prop::collection::vec(step(), 1..60)) {
        let deal = terms("deal", &["calls=4/minute", "fuel=900/lifetime"]);
        let mut commands = active(&deal);
        let mut stamps = Vec::new();
        let mut now = START_MS + 100;
        for step in &steps {
            match step {
                Step::Reserve { key, calls, fuel } => {
                    commands.push(reserve("deal", &format!("k{key}"), Usage { calls: *calls, fuel: *fuel, ..Usage::default() }));
                }
                Step::Settle { key, fuel } => {
                    commands.push(settle("deal", &format!("k{key}"), Usage { fuel: *fuel, ..Usage::default() }));
                }
                Step::Wait { ms } => {
                    now += ms;
                    continue;
                }
            }
            stamps.push(now);
        }
        let mut all = entries(1, commands);
        let setup = all.len() - stamps.len();
        for (entry, stamp) in all[setup..].iter_mut().zip(&stamps) {
            if let EntryPayload::Normal(request) = &mut entry.payload {
                request.stamped_at_ms = *stamp;
            }
        }
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (store_a, mut machine_a) = open_machine(&dir_a);
        let (store_b, mut machine_b) = open_machine(&dir_b);
        for entry in &all {
            apply(&mut machine_a, vec![entry.clone()]);
            let ledger = store_a.ledger("deal").unwrap();
            for (limit, window) in deal.limits.iter().zip(&ledger.windows) {
                prop_assert!(window.used <= limit.max, "{limit} counts {}", window.used);
            }
        }
        apply(&mut machine_b, all);
        prop_assert_eq!(held(&store_a, "deal"), held(&store_b, "deal"));
        prop_assert_eq!(store_a.violations(0, 1000).unwrap(), store_b.violations(0, 1000).unwrap());
    }
}

#[test]
fn a_snapshot_carries_agreements_usage_reservations_and_violations() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, mut machine_a) = open_machine(&dir_a);
    let (store_b, mut machine_b) = open_machine(&dir_b);
    let deal = terms("deal", &["calls=1/minute"]);
    let mut commands = active(&deal);
    commands.extend([reserve("deal", "a", one_call()), reserve("deal", "b", one_call())]);
    apply(&mut machine_a, entries(1, commands));
    runtime().block_on(async {
        let mut snapshot = machine_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut received = machine_b.begin_receiving_snapshot().await.unwrap();
        tokio::io::copy(&mut snapshot.snapshot, &mut received).await.unwrap();
        machine_b.install_snapshot(&snapshot.meta, received).await.unwrap();
    });
    assert_eq!(held(&store_b, "deal"), held(&store_a, "deal"));
    assert_eq!(store_b.reservation("deal", "a").unwrap(), store_a.reservation("deal", "a").unwrap());
    assert_eq!(store_b.violations(0, 10).unwrap().len(), 1);
    assert_eq!(store_b.agreements_of("bot").unwrap().len(), 1);
    let replies = apply(&mut machine_b, entries(9, vec![reserve("deal", "a", one_call())]));
    assert!(matches!(replies[0], CommandReply::Usage(UsageOutcome::Reserved { duplicate: true, .. })));
}

#[test]
fn a_lease_is_granted_up_to_what_is_left_and_its_settlement_returns_every_unused_amount() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let deal = terms("deal", &["calls=10/hour"]);
    let mut commands = active(&deal);
    let lease = |key: &str, calls| lease_under(0, "deal", key, Usage { calls, ..Usage::default() });
    commands.extend([
        lease("node-a", 8),
        lease("node-b", 8),
        lease("node-c", 8),
        reserve("deal", "exact", one_call()),
        settle("deal", "node-a", Usage { calls: 3, ..Usage::default() }),
        reserve("deal", "exact-2", one_call()),
    ]);
    let replies = apply(&mut machine, entries(1, commands));
    assert_eq!((granted(&replies[6]).calls, granted(&replies[7]).calls), (8, 2), "the second lease gets what is left");
    assert!(matches!(replies[8], CommandReply::Usage(UsageOutcome::OverLimit(_))), "nothing left for a third");
    assert!(matches!(replies[9], CommandReply::Usage(UsageOutcome::OverLimit(_))), "nor for one exact call");
    let returned = Usage { calls: 5, ..Usage::default() };
    assert_eq!(replies[10], CommandReply::Usage(UsageOutcome::Settled { returned }), "a lease returns unused calls");
    assert_eq!(granted(&replies[11]).calls, 1);
    assert_eq!(store.ledger("deal").unwrap().windows[0].used, 3 + 2 + 1);
}

#[test]
fn a_lease_outlives_the_keys_an_agreement_remembers_until_it_is_settled() {
    use zeromesh_protocol::limits::MAX_KEPT_RESERVATIONS;
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let deal = terms("deal", &["calls=100000/lifetime"]);
    let mut commands = active(&deal);
    let want = Usage { calls: 50, ..Usage::default() };
    commands.push(lease_under(0, "deal", "lease", want));
    commands.extend((0..=MAX_KEPT_RESERVATIONS).map(|call| reserve("deal", &format!("call-{call}"), one_call())));
    commands.push(settle("deal", "lease", Usage { calls: 20, ..Usage::default() }));
    let replies = apply(&mut machine, entries(1, commands));
    let returned = Usage { calls: 30, ..Usage::default() };
    assert_eq!(replies.last().unwrap(), &CommandReply::Usage(UsageOutcome::Settled { returned }));
    assert_eq!(store.ledger("deal").unwrap().windows[0].used, 20 + MAX_KEPT_RESERVATIONS as u64 + 1);
    assert_eq!(store.reservation("deal", "lease").unwrap(), None, "settled past its turn, it is forgotten");
    assert_eq!(store.reservation("deal", "call-0").unwrap(), None, "the oldest call keys are forgotten");
    assert!(store.reservation("deal", &format!("call-{MAX_KEPT_RESERVATIONS}")).unwrap().is_some());
}

fn set_policy(text: &str, expect_version: Option<u64>) -> Command {
    Command::Policy(PolicyCommand::Set { text: text.into(), description: "test".into(), expect_version })
}

#[test]
fn policy_sets_are_versioned_and_a_reservation_decided_under_a_replaced_one_is_refused() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, mut machine_a) = open_machine(&dir_a);
    let (store_b, mut machine_b) = open_machine(&dir_b);
    assert_eq!(store_a.policy_version().unwrap(), 0, "a mesh starts with no policy set");
    let deal = terms("deal", &["calls=10/minute"]);
    let mut commands = active(&deal);
    commands.extend([
        set_policy("permit(principal, action, resource);", None),
        set_policy("forbid(principal, action, resource);", Some(0)),
        reserve("deal", "decided-under-nothing", one_call()),
        reserve_under(1, "deal", "ok", one_call()),
        set_policy("permit(principal, action, resource);", Some(1)),
        lease_under(1, "deal", "lease", one_call()),
    ]);
    let first = active(&deal).len();
    let replies = apply(&mut machine_a, entries(1, commands.clone()));
    assert_eq!(replies[first], CommandReply::Policy(PolicyOutcome::Set { version: 1 }));
    assert_eq!(replies[first + 1], CommandReply::Policy(PolicyOutcome::VersionMismatch { current: 1 }));
    assert_eq!(replies[first + 2], CommandReply::Usage(UsageOutcome::StalePolicy { decided: 0, current: 1 }));
    assert!(matches!(replies[first + 3], CommandReply::Usage(UsageOutcome::Reserved { duplicate: false, .. })));
    assert_eq!(replies[first + 4], CommandReply::Policy(PolicyOutcome::Set { version: 2 }));
    assert_eq!(replies[first + 5], CommandReply::Usage(UsageOutcome::StalePolicy { decided: 1, current: 2 }));
    assert_eq!(
        store_a.ledger("deal").unwrap().windows[0].used,
        1,
        "only the reservation under the current set counted"
    );
    assert_eq!(store_a.policy_version().unwrap(), 2);
    let kept: Vec<u64> = store_a.policies(10).unwrap().iter().map(|policy| policy.version).collect();
    assert_eq!(kept, [2, 1], "newest first");
    assert_eq!(store_a.current_policy().unwrap().log_index, (first + 5) as u64);
    // Another machine applying the same entries holds the same versions.
    apply(&mut machine_b, entries(1, commands));
    assert_eq!(store_b.policies(10).unwrap(), store_a.policies(10).unwrap());
}

#[test]
fn only_the_newest_policy_sets_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let kept = zeromesh_protocol::limits::MAX_POLICY_HISTORY as u64 + 1;
    let sets =
        (0..kept + 3).map(|n| set_policy(&format!("// version {}\npermit(principal, action, resource);", n + 1), None));
    apply(&mut machine, entries(1, sets.collect()));
    assert_eq!(store.policy_version().unwrap(), kept + 3);
    assert_eq!(store.policies(usize::MAX).unwrap().len() as u64, kept);
    assert!(store.policy(3).unwrap().is_none(), "the oldest are forgotten");
    assert!(store.current_policy().unwrap().text.starts_with(&format!("// version {}", kept + 3)));
}

#[test]
fn an_agents_own_quotas_count_its_calls_under_every_agreement_and_outside_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let deal = terms("deal", &["calls=10/minute", "fuel=1000/lifetime"]);
    let mut commands = active_with_quotas(&deal, &["calls=3/minute", "fuel=600/day"]);
    let own = agent_account("bot");
    let want = Usage { calls: 1, fuel: 400, ..Usage::default() };
    commands.extend([
        reserve("deal", "a", want),
        reserve("deal", "b", want),
        settle("deal", "a", Usage { fuel: 100, ..Usage::default() }),
        reserve(&own, "c", want),
        reserve(&own, "d", want),
        reserve("deal", "e", want),
    ]);
    let first = active(&deal).len();
    let replies = apply(&mut machine, entries(1, commands));
    assert_eq!(granted(&replies[first]).fuel, 400);
    assert_eq!(granted(&replies[first + 1]).fuel, 200, "the agent's fuel quota grants less than the agreement would");
    assert_eq!(granted(&replies[first + 3]).fuel, 300, "a, settled, gave back to both");
    let CommandReply::Usage(UsageOutcome::OverLimit(over)) = &replies[first + 4] else {
        panic!("{:?}", replies[first + 4])
    };
    assert_eq!((over.metric.name(), over.used, over.limit), ("calls", 3, 3), "the own account refuses the fourth call");
    let CommandReply::Usage(UsageOutcome::AgentOverLimit(over)) = &replies[first + 5] else {
        panic!("{:?}", replies[first + 5])
    };
    assert_eq!((over.metric.name(), over.used), ("calls", 3), "the agreement has room, the agent's quota has not");
    let quota = store.ledger(&own).unwrap();
    assert_eq!((quota.windows[0].used, quota.windows[1].used), (3, 600));
    let ledger = store.ledger("deal").unwrap();
    assert_eq!((ledger.windows[0].used, ledger.windows[1].used), (2, 300), "the refused call changed nothing here");
    let violations = store.violations(0, 10).unwrap();
    assert!(violations.last().unwrap().reason.contains("over agent bot's own quota calls=3/minute"));
}

/// The commitment leaf `record` carries for `account`'s limit `limit`,
/// checked against the record's opening and the tree's leaf hash.
fn committed(store: &Store, record: &UsageRecord, account: &str, limit: u8) -> UsageCommitment {
    use zeromesh_trace::merkle::{leaf_hash, NodeId, NodeReader};
    assert_eq!(store.node(NodeId { level: 0, index: record.log_index }).unwrap(), leaf_hash(&record.leaf));
    let leaf = TraceLeaf::from_bytes(&record.leaf).unwrap();
    assert_eq!(leaf.index, record.log_index);
    let found = leaf.commitments.iter().find(|c| c.account == account && c.limit_index == limit).unwrap().clone();
    let opening = Opening { amount: record.amount, blinding: record.blinding };
    assert_eq!(found.commitment, opening.commit().0, "the kept opening opens the leaf's commitment");
    found
}

#[test]
fn the_final_amount_of_each_call_is_committed_in_its_leaf_and_its_opening_kept_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let deal = terms("deal", &["calls=400/minute", "fuel=100000/lifetime"]);
    let mut commands = active_with_quotas(&deal, &["calls=1000/hour"]);
    let first = commands.len() as u64 + 1;
    commands.extend([reserve("deal", "a", Usage { calls: 1, fuel: 800, ..Usage::default() })]);
    commands.push(settle("deal", "a", Usage { fuel: 100, ..Usage::default() }));
    commands.push(settle("deal", "a", Usage { fuel: 5, ..Usage::default() }));
    let replies = apply(&mut machine, entries(1, commands));
    assert!(matches!(replies.last().unwrap(), CommandReply::Usage(UsageOutcome::AlreadySettled { .. })));
    let at = START_MS + first;

    // The call's count is final when it is reserved: its leaf commits to it,
    // in the agreement and in the consumer's own quota.
    let calls = store.usage_window("deal", 0, Window::Minute.start(at)).unwrap();
    assert_eq!((calls.records.len(), calls.overflowed), (1, false));
    assert_eq!((calls.records[0].log_index, calls.records[0].amount), (first, 1));
    let commitment = committed(&store, &calls.records[0], "deal", 0);
    assert_eq!((commitment.ordinal, commitment.window_start_ms), (0, Window::Minute.start(at)));
    assert_eq!(commitment.limit, Limit::parse("calls=400/minute").unwrap());
    let quota = store.usage_window(&agent_account("bot"), 0, Window::Hour.start(at)).unwrap();
    assert_eq!(quota.records[0].leaf, calls.records[0].leaf, "one leaf carries both commitments");
    committed(&store, &quota.records[0], &agent_account("bot"), 0);
    // Its fuel only when it settles; a second settlement commits nothing.
    let fuel = store.usage_window("deal", 1, 0).unwrap();
    assert_eq!(fuel.records.len(), 1);
    assert_eq!((fuel.records[0].log_index, fuel.records[0].amount), (first + 1, 100));
    committed(&store, &fuel.records[0], "deal", 1);
    assert_ne!(fuel.records[0].blinding, calls.records[0].blinding);

    // A window keeps at most 256 records, then is marked overflowed.
    let reserves: Vec<Command> =
        (0..260).map(|n| reserve("deal", &format!("k{n}"), Usage { calls: 1, ..Usage::default() })).collect();
    apply(&mut machine, entries(first + 3, reserves));
    let calls = store.usage_window("deal", 0, Window::Minute.start(at)).unwrap();
    assert_eq!((calls.records.len(), calls.overflowed), (256, true));
    let ordinals: Vec<u32> = calls.records.iter().map(|r| committed(&store, r, "deal", 0).ordinal).collect();
    assert_eq!(ordinals, (0..256).collect::<Vec<u32>>(), "numbered with no gap, across apply calls");
    let past = TraceLeaf::from_bytes(&store.usage_window("deal", 1, 0).unwrap().records[0].leaf).unwrap();
    assert_eq!(past.commitments.len(), 1);

    // A new minute's window begins: only the newest windows stay.
    for minute in 1..=5u64 {
        let index = first + 262 + minute;
        let command = reserve("deal", &format!("m{minute}"), Usage { calls: 1, ..Usage::default() });
        let payload = EntryPayload::Normal(Request { stamped_at_ms: at + minute * 60_000, command });
        apply(&mut machine, vec![Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload }]);
    }
    let kept = store.usage_windows("deal", 0).unwrap();
    let newest: Vec<u64> = (2..=5).map(|minute| Window::Minute.start(at + minute * 60_000)).collect();
    assert_eq!(kept, newest);
    assert!(store.usage_window("deal", 0, Window::Minute.start(at)).unwrap().records.is_empty());
}

#[test]
fn usage_keys_are_kept_up_to_their_limit_however_their_entries_are_grouped() {
    use zeromesh_protocol::limits::MAX_USAGE_KEYS;
    let prover = zeromesh_trace::usage_circuit::UsageProver::setup_from_seed([5; 32]).unwrap();
    let verifying_key = zeromesh_trace::usage::encode_verifying_key(prover.verifying_key());
    // One more node than the mesh keeps keys for, and the first node again.
    let nodes: Vec<u64> = (1..=MAX_USAGE_KEYS as u64 + 1).chain([1]).collect();
    let commands: Vec<Command> = nodes
        .iter()
        .map(|node| {
            Command::Trace(TraceCommand::RegisterUsageKey {
                node: *node,
                version: zeromesh_trace::usage::CIRCUIT_VERSION,
                verifying_key: verifying_key.clone(),
                proving_key_sha256: [*node as u8; 32],
            })
        })
        .collect();
    let mut seen = Vec::new();
    for group in [commands.len(), 1, 10] {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut machine) = open_machine(&dir);
        let mut replies = Vec::new();
        for entries in entries(1, commands.clone()).chunks(group) {
            replies.extend(apply(&mut machine, entries.to_vec()));
        }
        assert_eq!(store.usage_keys().unwrap().len(), MAX_USAGE_KEYS, "groups of {group}");
        assert!(matches!(replies[MAX_USAGE_KEYS], CommandReply::Trace(TraceOutcome::Refused(_))), "groups of {group}");
        assert!(
            matches!(replies[MAX_USAGE_KEYS + 1], CommandReply::Trace(TraceOutcome::Registered { replaced: true, .. })),
            "a node registers its key again: groups of {group}"
        );
        seen.push((replies, common::effects(&store, 100_000)));
    }
    assert!(seen.iter().all(|other| *other == seen[0]), "the same replies and state in every grouping");
}

#[test]
fn a_usage_key_that_does_not_decode_or_is_for_another_circuit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut machine) = open_machine(&dir);
    let register = |version, verifying_key| {
        Command::Trace(TraceCommand::RegisterUsageKey { node: 1, version, verifying_key, proving_key_sha256: [0; 32] })
    };
    let replies = apply(&mut machine, entries(1, vec![register(1, vec![1; 40]), register(99, vec![1; 40])]));
    for reply in &replies {
        assert!(matches!(reply, CommandReply::Trace(TraceOutcome::Refused(_))), "{reply:?}");
    }
    assert!(store.usage_keys().unwrap().is_empty());
}

#[test]
fn usage_records_are_the_same_however_entries_are_grouped_into_apply_calls() {
    let deal = terms("deal", &["calls=400/minute", "calls=1000/lifetime"]);
    let commands = active(&deal);
    let first = commands.len() as u64 + 1;
    let mut all = entries(1, commands);
    // Three calls in each of seven minutes, and a second settlement of each.
    for call in 0..21u64 {
        let key = format!("c{call}");
        let stamped_at_ms = START_MS + (call / 3) * 60_000 + call;
        for (offset, command) in
            [reserve("deal", &key, Usage { calls: 1, ..Usage::default() }), settle("deal", &key, Usage::default())]
                .into_iter()
                .enumerate()
        {
            let index = first + 2 * call + offset as u64;
            let payload = EntryPayload::Normal(Request { stamped_at_ms, command });
            all.push(Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload });
        }
    }
    let mut seen = Vec::new();
    for group in [all.len(), 1, 4, 7] {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut machine) = open_machine(&dir);
        for entries in all.chunks(group) {
            apply(&mut machine, entries.to_vec());
        }
        let starts = store.usage_windows("deal", 0).unwrap();
        assert_eq!(starts.len(), 4, "the newest windows are kept, applied in groups of {group}");
        assert_eq!(store.usage_window("deal", 1, 0).unwrap().records.len(), 21);
        seen.push((group, common::effects(&store, 100_000), machine.trace_heads().borrow().root));
    }
    for (group, effects, root) in &seen[1..] {
        assert!(*effects == seen[0].1, "groups of {group} left other state than one apply call");
        assert_eq!(*root, seen[0].2, "groups of {group} made another trace root");
    }
}
