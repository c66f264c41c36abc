//! The kernel's one entry point for tool calls, and what it refuses.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use zeromesh_protocol::agent::{AgentRecord, AgentState};
use zeromesh_protocol::agreement::{
    account_agent, check_idempotency_key, AgreementRecord, OverLimit, Usage, UsageOutcome,
};
use zeromesh_protocol::auth::Role;

use crate::access::{memory_target, permits, Access};
use crate::caller::{acting_agent, Caller};
use crate::metering::{budget, governing, wanted, Budget, Meter, Metered, Reservation};
use crate::policy::{Policies, PolicyCall, Verdict};

/// Times a call is decided again when the policy set changed between its
/// decision and its reservation.
const POLICY_RETRIES: usize = 3;

/// Why the kernel refused a call. A refused call ran nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown tool {name:?}; tools/list shows the tools this node offers")]
    UnknownTool { name: String },
    #[error("tool {name:?} of plugin {plugin} is not running on this node yet (its module is being fetched from peers); retry in a few seconds")]
    ToolLoading { name: String, plugin: String },
    #[error("tool {name:?} of plugin {plugin} does not run on this node: {reason}")]
    ToolFailed { name: String, plugin: String, reason: String },
    #[error("no host of federated server {server} serves tool {name:?} now (see server_list); retry when one does")]
    ServerUnavailable { name: String, server: String },
    #[error("the agent named in the call is not valid: {reason}")]
    InvalidAgent { reason: String },
    #[error("the call's idempotency key is not valid: {reason}")]
    InvalidKey { reason: String },
    #[error("{caller} may not {what}")]
    Forbidden { caller: String, what: String },
    #[error("agent {agent:?} is not in the agent registry; an admin spawns it with `zeromesh agent spawn`")]
    UnknownAgent { agent: String },
    #[error("agent {agent} is paused: {reason}")]
    AgentPaused { agent: String, reason: String },
    #[error("agent {agent} is terminated")]
    AgentTerminated { agent: String },
    #[error("agent {agent} already has {limit} calls running on this node, its quota; retry when one ends")]
    TooManyCalls { agent: String, limit: u32 },
    #[error("agent {agent} may not call {tool}: its tools are {allowed}")]
    ToolNotAllowed { agent: String, tool: String, allowed: String },
    #[error("agent {agent} has agreements, and none of them covers {tool}")]
    NotCovered { agent: String, tool: String },
    #[error("agent {agent} may not call {tool}: denied by policy {} (policy set version {version})", policies.join(", "))]
    PolicyDenied { agent: String, tool: String, version: u64, policies: Vec<String> },
    #[error("agent {agent} may not call {tool}: it has agreements, and no policy permits the call (policy set version {version}; `zeromesh policy set` adds a permit)")]
    NotPermitted { agent: String, tool: String, version: u64 },
    #[error("agreement {agreement} is {state}{}", reason.as_ref().map(|reason| format!(": {reason}")).unwrap_or_default())]
    AgreementInactive { agreement: String, state: String, reason: Option<String> },
    #[error("agreement {agreement}: the limit of {} {} per {} is reached ({} used){}", over.limit, over.metric.name(), over.window.name(), over.used, over.resets_at_ms.map(|at| format!("; the window resets at {at} ms")).unwrap_or_default())]
    OverLimit { agreement: String, over: OverLimit },
    #[error("agent {agent}: its own quota of {} {} per {} is reached ({} used){}", over.limit, over.metric.name(), over.window.name(), over.used, over.resets_at_ms.map(|at| format!("; the window resets at {at} ms")).unwrap_or_default())]
    AgentOverLimit { agent: String, over: OverLimit },
    #[error(
        "the call with idempotency key {key:?} already ran (reserved at log index {log_index}); it is not run twice"
    )]
    AlreadyRan { key: String, log_index: u64 },
    #[error("the agent registry cannot be read here: {reason}")]
    Unavailable { reason: String },
}

impl Refusal {
    /// The refusal's kind, a fixed label for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::UnknownTool { .. } => "unknown_tool",
            Refusal::ToolLoading { .. } => "tool_loading",
            Refusal::ToolFailed { .. } => "tool_failed",
            Refusal::ServerUnavailable { .. } => "server_unavailable",
            Refusal::InvalidAgent { .. } => "invalid_agent",
            Refusal::InvalidKey { .. } => "invalid_key",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::UnknownAgent { .. } => "unknown_agent",
            Refusal::AgentPaused { .. } => "agent_paused",
            Refusal::AgentTerminated { .. } => "agent_terminated",
            Refusal::ToolNotAllowed { .. } => "tool_not_allowed",
            Refusal::TooManyCalls { .. } => "too_many_calls",
            Refusal::NotCovered { .. } => "not_covered",
            Refusal::PolicyDenied { .. } => "policy_denied",
            Refusal::NotPermitted { .. } => "not_permitted",
            Refusal::AgreementInactive { .. } => "agreement_inactive",
            Refusal::OverLimit { .. } => "over_limit",
            Refusal::AgentOverLimit { .. } => "agent_over_limit",
            Refusal::AlreadyRan { .. } => "already_ran",
            Refusal::Unavailable { .. } => "unavailable",
        }
    }
}

/// One tool call as the kernel sees it.
#[derive(Debug, Clone)]
pub struct ToolCall<'a> {
    pub caller: &'a Caller,
    pub tool: &'a str,
    pub arguments: Value,
    /// The agent the call names (MCP `params._meta["zeromesh/agent"]`).
    pub named_agent: Option<&'a str>,
    /// The caller's key for this call (`params._meta["zeromesh/idempotency-key"]`):
    /// a retry with the same key is counted once.
    pub idempotency_key: Option<&'a str>,
}

/// What a tool answered and what it used.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran<O> {
    pub outcome: O,
    /// Of the amounts known only afterwards: fuel, wall-clock ms, bytes out.
    pub used: Usage,
}

/// What a served call answers: the tool's outcome, and how it was metered
/// when an agreement governs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<O> {
    pub outcome: O,
    pub metered: Option<Metered>,
}

/// The tools a node offers: the kernel asks what a tool touches, then runs it.
pub trait Tools {
    /// What running a tool answers.
    type Outcome;

    /// The access of the tool named `name`, or `None` when the node offers
    /// no such tool.
    fn access(&self, name: &str) -> Option<Access>;

    /// The most one call of `name` may use of fuel, wall-clock ms and bytes out.
    fn ceiling(&self, name: &str) -> Usage;

    /// Runs tool `name` for `agent`, within `budget`.
    fn run(
        &self,
        name: &str,
        agent: &str,
        arguments: Value,
        budget: Budget,
    ) -> impl Future<Output = Ran<Self::Outcome>> + Send;
}

/// The replicated state the kernel reads, as this node has applied it.
pub trait Registry {
    /// Agent `id`, or `None` when the registry has no such agent.
    fn agent(&self, id: &str) -> Result<Option<AgentRecord>, String>;

    /// Every agreement whose consumer is agent `id`.
    fn agreements_of(&self, id: &str) -> Result<Vec<AgreementRecord>, String>;

    /// Waits until this node has applied every entry committed when it was
    /// called (a read index), so a just-spawned agent is known here.
    fn catch_up(&self) -> impl Future<Output = ()> + Send;

    /// The policy set this node has applied, compiled.
    fn policies(&self) -> Result<Arc<Policies>, String>;
}

/// The kernel of one node.
#[derive(Debug, Default)]
pub struct Kernel {
    /// Calls running here per agent with a concurrency quota.
    running: Mutex<HashMap<String, u32>>,
}

/// One running call of an agent with a concurrency quota; counted out on drop.
struct Running<'a> {
    kernel: &'a Kernel,
    agent: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = self.kernel.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = running.get_mut(&self.agent) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.agent);
            }
        }
    }
}

impl Kernel {
    /// Decides `call` and, if allowed, runs it through `world`: the tool
    /// must exist; the agent it acts for must be valid and the caller's own,
    /// and, when the call names one (or comes with an agent token), be in
    /// the registry, running, and allowed the tool; the caller's role must
    /// allow what the tool touches. An agent with agreements calls only the
    /// tools an active one covers, each call reserved through the log before
    /// it runs and settled after. A call for an agent is then put to the
    /// policy set: a forbid refuses it, and an agent with agreements needs a
    /// permit. A call that names no agent acts for the anonymous one,
    /// ungoverned, as before agents existed.
    pub async fn call<W: Tools + Registry + Meter>(
        &self,
        world: &W,
        call: ToolCall<'_>,
    ) -> Result<Served<W::Outcome>, Refusal> {
        let access = world.access(call.tool).ok_or_else(|| Refusal::UnknownTool { name: call.tool.to_owned() })?;
        let agent = acting_agent(call.caller, call.named_agent)?;
        if let Some(key) = call.idempotency_key {
            check_idempotency_key(key).map_err(|error| Refusal::InvalidKey { reason: error.to_string() })?;
        }
        let governed = call.caller.role == Role::Agent || call.named_agent.is_some();
        let admitted = if governed {
            let mut record = world.agent(&agent).map_err(|reason| Refusal::Unavailable { reason })?;
            if record.is_none() {
                // This node may not have applied the spawn yet.
                world.catch_up().await;
                record = world.agent(&agent).map_err(|reason| Refusal::Unavailable { reason })?;
            }
            Some(admit_agent(record, &agent, call.tool)?)
        } else {
            None
        };
        // Held until the call ends: it counts against the agent's concurrency quota.
        let _running = match &admitted {
            Some(record) => self.enter(record)?,
            None => None,
        };
        let target = match access {
            Access::MemoryRead | Access::MemoryWrite => memory_target(&call.arguments),
            Access::Observe | Access::RunPlugin | Access::Admin => String::new(),
        };
        permits(call.caller, &format!("call {}", call.tool), access, &target)?;
        let Some(admitted) = admitted else {
            let ran = world.run(call.tool, &agent, call.arguments, Budget::default()).await;
            return Ok(Served { outcome: ran.outcome, metered: None });
        };
        let mut agreements = world.agreements_of(&agent).map_err(|reason| Refusal::Unavailable { reason })?;
        let covered = |agreements: &[AgreementRecord]| governing(agreements, call.tool).is_ok();
        // Only an agent with a key can sign agreements. This node may not have
        // applied the one just activated for it: catch up rather than run the
        // call unmetered, or refuse it as not covered.
        if admitted.key.is_some() && !covered(&agreements) {
            world.catch_up().await;
            agreements = world.agreements_of(&agent).map_err(|reason| Refusal::Unavailable { reason })?;
        }
        // An agent with quotas of its own but no agreements meters its calls
        // in its own account.
        let own = (agreements.is_empty() && !admitted.limits.is_empty()).then(|| AgreementRecord::for_agent(&admitted));
        let record = if agreements.is_empty() {
            own.as_ref()
        } else {
            match governing(&agreements, call.tool) {
                Ok(record) => Some(record),
                Err(inactive) => {
                    let refusal = match inactive {
                        None => Refusal::NotCovered { agent: agent.clone(), tool: call.tool.to_owned() },
                        Some(record) => inactive_refusal(record.terms.id.clone(), &record.state),
                    };
                    let agreement = inactive.map(|record| record.terms.id.as_str());
                    world.record_violation(&agent, agreement, call.tool, &refusal.to_string()).await;
                    return Err(refusal);
                }
            }
        };
        let under_agreement = !agreements.is_empty();
        let agreement_id = record.filter(|_| under_agreement).map_or("", |record| record.terms.id.as_str());
        let policy_call = PolicyCall {
            agent: &admitted,
            tool: call.tool,
            agreement: agreement_id,
            target: &target,
            arguments: &call.arguments,
        };
        for attempt in 1..=POLICY_RETRIES {
            let policies = world.policies().map_err(|reason| Refusal::Unavailable { reason })?;
            if let Err(refusal) = check_policies(&policies, policy_call, under_agreement) {
                let agreement = record.map(|record| record.terms.id.as_str());
                world.record_violation(&agent, agreement, call.tool, &refusal.to_string()).await;
                return Err(refusal);
            }
            let Some(record) = record else {
                let ran = world.run(call.tool, &agent, call.arguments, Budget::default()).await;
                return Ok(Served { outcome: ran.outcome, metered: None });
            };
            match self.reserve(world, record, &call, policies.version()).await? {
                Some(reserved) => return self.metered(world, record, &agent, call, reserved).await,
                // The policy set changed since this node decided: decide again
                // under the version the log now holds.
                None if attempt < POLICY_RETRIES => world.catch_up().await,
                None => break,
            }
        }
        Err(Refusal::Unavailable {
            reason: format!("the policy set kept changing while the call was decided ({POLICY_RETRIES} tries); retry"),
        })
    }

    /// Counts a call of `agent` in, refusing it when the agent's concurrency
    /// quota is reached on this node.
    fn enter(&self, agent: &AgentRecord) -> Result<Option<Running<'_>>, Refusal> {
        let Some(limit) = agent.max_concurrent_calls else { return Ok(None) };
        let mut running = self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = running.entry(agent.id.clone()).or_default();
        if *count >= limit {
            return Err(Refusal::TooManyCalls { agent: agent.id.clone(), limit });
        }
        *count += 1;
        Ok(Some(Running { kernel: self, agent: agent.id.clone() }))
    }

    /// Reserves for a call governed by agreement `record`, decided under
    /// policy set version `policy`: the grant, its key and its entry, or
    /// `None` when that version is no longer the current one.
    async fn reserve<W: Tools + Meter>(
        &self,
        world: &W,
        record: &AgreementRecord,
        call: &ToolCall<'_>,
        policy: u64,
    ) -> Result<Option<Reserved>, Refusal> {
        let id = record.terms.id.clone();
        let bytes_in = serde_json::to_vec(&call.arguments).map_or(0, |bytes| bytes.len() as u64);
        let want = wanted(record, bytes_in, &world.ceiling(call.tool));
        let key = call.idempotency_key.map_or_else(|| world.fresh_key(), str::to_owned);
        let reserved = world
            .reserve(record, &key, call.idempotency_key.is_some(), want, policy)
            .await
            .map_err(|reason| Refusal::Unavailable { reason })?;
        match reserved {
            UsageOutcome::Reserved { granted, log_index, .. } => Ok(Some(Reserved { key, granted, log_index })),
            UsageOutcome::StalePolicy { .. } => Ok(None),
            UsageOutcome::OverLimit(over) if account_agent(&id).is_some() => {
                Err(Refusal::AgentOverLimit { agent: record.terms.consumer.clone(), over })
            }
            UsageOutcome::OverLimit(over) => Err(Refusal::OverLimit { agreement: id, over }),
            UsageOutcome::AgentOverLimit(over) => {
                Err(Refusal::AgentOverLimit { agent: record.terms.consumer.clone(), over })
            }
            UsageOutcome::NotActive { state } => Err(inactive_refusal(id, &state)),
            UsageOutcome::AlreadySettled { log_index } => Err(Refusal::AlreadyRan { key, log_index }),
            other => Err(Refusal::Unavailable {
                reason: format!("agreement {id}: unexpected reservation outcome {other:?}"),
            }),
        }
    }

    /// Runs a call governed by agreement `record` within what was
    /// `reserved`, then settles.
    async fn metered<W: Tools + Registry + Meter>(
        &self,
        world: &W,
        record: &AgreementRecord,
        agent: &str,
        call: ToolCall<'_>,
        reserved: Reserved,
    ) -> Result<Served<W::Outcome>, Refusal> {
        let Reserved { key, granted, log_index } = reserved;
        let mut unsettled = Unsettled { world, record, key: &key, armed: true };
        let reservation = Reservation { agreement: record.terms.id.clone(), key: key.clone(), log_index };
        let allowed = Budget { reservation: Some(reservation), ..budget(record, &granted) };
        let ran = world.run(call.tool, agent, call.arguments, allowed).await;
        let mut used = ran.used;
        used.calls = granted.calls;
        used.bytes_in = granted.bytes_in;
        let settle_error = world.settle(record, &key, used.capped_by(&granted)).await.err();
        unsettled.armed = false;
        drop(unsettled);
        let metered = Metered { agreement: record.terms.id.clone(), key, log_index, used, settle_error };
        Ok(Served { outcome: ran.outcome, metered: Some(metered) })
    }
}

/// What a reservation granted a call, under which key, at which entry.
struct Reserved {
    key: String,
    granted: Usage,
    log_index: u64,
}

/// Whether the policies let a governed call through: never when a forbid
/// matches; for an agent with agreements (`governed_by_agreement`), only
/// when a permit matches (deny by default).
fn check_policies(policies: &Policies, call: PolicyCall<'_>, governed_by_agreement: bool) -> Result<(), Refusal> {
    let (agent, tool, version) = (call.agent.id.clone(), call.tool.to_owned(), policies.version());
    match policies.decide(call) {
        Verdict::Forbidden { by } => Err(Refusal::PolicyDenied { agent, tool, version, policies: by }),
        Verdict::NoPermit if governed_by_agreement => Err(Refusal::NotPermitted { agent, tool, version }),
        Verdict::NoPermit | Verdict::Permitted { .. } => Ok(()),
    }
}

/// A granted call not settled yet: dropped armed (the call's future was
/// dropped: cancelled, or its connection closed), it is abandoned.
struct Unsettled<'a, W: Meter> {
    world: &'a W,
    record: &'a AgreementRecord,
    key: &'a str,
    armed: bool,
}

impl<W: Meter> Drop for Unsettled<'_, W> {
    fn drop(&mut self) {
        if self.armed {
            self.world.abandon(self.record, self.key);
        }
    }
}

fn inactive_refusal(agreement: String, state: &zeromesh_protocol::agreement::AgreementState) -> Refusal {
    Refusal::AgreementInactive { agreement, state: state.name().to_owned(), reason: state.reason().map(str::to_owned) }
}

/// Whether agent `id`'s record lets it call `tool` now; its record if so.
fn admit_agent(record: Option<AgentRecord>, id: &str, tool: &str) -> Result<AgentRecord, Refusal> {
    let agent = record.ok_or_else(|| Refusal::UnknownAgent { agent: id.to_owned() })?;
    match &agent.state {
        AgentState::Running => {}
        AgentState::Paused { reason } => {
            return Err(Refusal::AgentPaused { agent: agent.id.clone(), reason: reason.clone() })
        }
        AgentState::Terminated => return Err(Refusal::AgentTerminated { agent: agent.id.clone() }),
    }
    if !agent.may_call(tool) {
        let allowed = if agent.tools.is_empty() { "none".to_owned() } else { agent.tools.join(", ") };
        return Err(Refusal::ToolNotAllowed { agent: agent.id.clone(), tool: tool.to_owned(), allowed });
    }
    Ok(agent)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;
    use zeromesh_protocol::auth::Role;

    use zeromesh_protocol::agreement::{AgreementState, Ledger, Limit, Terms};
    use zeromesh_protocol::plugin::PublisherKey;

    use super::*;
    use crate::testing::{registered, tagged};

    /// A reservation the in-memory ledger holds: key, grant, windows.
    type Held = (String, Usage, Vec<u64>);

    /// Tools that record what ran, a registry of agents and agreements, and
    /// a ledger kept in memory the way apply keeps it.
    #[derive(Default)]
    struct Recorded {
        runs: Mutex<Vec<(String, String, Value, Budget)>>,
        agents: Vec<AgentRecord>,
        agreements: Vec<AgreementRecord>,
        ledger: Mutex<Ledger>,
        reservations: Mutex<Vec<Held>>,
        violations: Mutex<Vec<String>>,
        fuel_burnt: u64,
        /// Agents and agreements this node learns of only once it catches up.
        late: Vec<AgentRecord>,
        late_agreements: Vec<AgreementRecord>,
        caught_up: Mutex<bool>,
        /// When set, each run waits for a permit: a call that keeps running.
        gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
        abandoned: Mutex<Vec<String>>,
        /// The policy set; `None`: one that permits everything.
        policies: Option<Arc<Policies>>,
        /// Reservations to refuse as decided under a replaced policy set:
        /// each refusal makes the permit-all set one version newer.
        stale_reservations: Mutex<usize>,
        /// The policy set version each reservation was decided under.
        policy_versions_seen: Mutex<Vec<u64>>,
        policy_version: Mutex<u64>,
    }

    impl Registry for Recorded {
        fn agent(&self, id: &str) -> Result<Option<AgentRecord>, String> {
            let late = if *self.caught_up.lock().unwrap() { self.late.as_slice() } else { &[] };
            Ok(self.agents.iter().chain(late).find(|agent| agent.id == id).cloned())
        }

        fn agreements_of(&self, id: &str) -> Result<Vec<AgreementRecord>, String> {
            let late = if *self.caught_up.lock().unwrap() { self.late_agreements.as_slice() } else { &[] };
            Ok(self.agreements.iter().chain(late).filter(|record| record.terms.consumer == id).cloned().collect())
        }

        fn catch_up(&self) -> impl Future<Output = ()> + Send {
            *self.caught_up.lock().unwrap() = true;
            std::future::ready(())
        }

        fn policies(&self) -> Result<Arc<Policies>, String> {
            let version = *self.policy_version.lock().unwrap();
            Ok(self.policies.clone().unwrap_or_else(|| {
                Arc::new(Policies::compile(version, "permit(principal, action, resource);").unwrap())
            }))
        }
    }

    impl Meter for Recorded {
        fn reserve(
            &self,
            record: &AgreementRecord,
            key: &str,
            _: bool,
            want: Usage,
            policy: u64,
        ) -> impl Future<Output = Result<UsageOutcome, String>> + Send {
            self.policy_versions_seen.lock().unwrap().push(policy);
            let mut stale = self.stale_reservations.lock().unwrap();
            if *stale > 0 {
                *stale -= 1;
                *self.policy_version.lock().unwrap() += 1;
                return std::future::ready(Ok(UsageOutcome::StalePolicy { decided: policy, current: policy + 1 }));
            }
            let mut reservations = self.reservations.lock().unwrap();
            let outcome = if let Some(earlier) = reservations.iter().find(|(earlier, ..)| earlier == key) {
                UsageOutcome::Reserved { granted: earlier.1, log_index: 7, duplicate: true }
            } else {
                match self.ledger.lock().unwrap().reserve(&record.terms.limits, 1_000, &want) {
                    Ok((granted, starts)) => {
                        reservations.push((key.to_owned(), granted, starts));
                        UsageOutcome::Reserved { granted, log_index: 7, duplicate: false }
                    }
                    Err(over) => UsageOutcome::OverLimit(over),
                }
            };
            std::future::ready(Ok(outcome))
        }

        fn settle(
            &self,
            record: &AgreementRecord,
            key: &str,
            used: Usage,
        ) -> impl Future<Output = Result<(), String>> + Send {
            let reservations = self.reservations.lock().unwrap();
            let reservation = reservations.iter().find(|(earlier, ..)| earlier == key).unwrap();
            let mut returned = reservation.1.minus(&used);
            returned.calls = 0;
            self.ledger.lock().unwrap().release(&record.terms.limits, 1_000, &reservation.2, &returned);
            std::future::ready(Ok(()))
        }

        fn abandon(&self, _: &AgreementRecord, key: &str) {
            self.abandoned.lock().unwrap().push(key.to_owned());
        }

        fn record_violation(
            &self,
            agent: &str,
            _: Option<&str>,
            tool: &str,
            reason: &str,
        ) -> impl Future<Output = ()> + Send {
            self.violations.lock().unwrap().push(format!("{agent} {tool}: {reason}"));
            std::future::ready(())
        }

        fn fresh_key(&self) -> String {
            format!("k{}", self.reservations.lock().unwrap().len())
        }
    }

    fn with_alice() -> Recorded {
        Recorded { agents: vec![registered("alice", AgentState::Running, &["*"])], ..Recorded::default() }
    }

    impl Tools for Recorded {
        type Outcome = ();

        fn ceiling(&self, _: &str) -> Usage {
            Usage { fuel: 1_000, wall_ms: 100, bytes_out: 4096, ..Usage::default() }
        }

        fn access(&self, name: &str) -> Option<Access> {
            match name {
                "memory_put" => Some(Access::MemoryWrite),
                "token_create" => Some(Access::Admin),
                "echo.say" => Some(Access::RunPlugin),
                _ => None,
            }
        }

        fn run(
            &self,
            name: &str,
            agent: &str,
            arguments: Value,
            budget: Budget,
        ) -> impl Future<Output = Ran<()>> + Send {
            self.runs.lock().unwrap().push((name.to_owned(), agent.to_owned(), arguments, budget));
            let used = Usage { fuel: self.fuel_burnt, bytes_out: 2, ..Usage::default() };
            let gate = self.gate.clone();
            async move {
                if let Some(gate) = gate {
                    gate.acquire().await.unwrap().forget();
                }
                Ran { outcome: (), used }
            }
        }
    }

    fn agent_token(agent: &str) -> Caller {
        Caller { role: Role::Agent, agent: Some(agent.into()), token_id: Some("0123456789abcdef".into()) }
    }

    async fn call(tools: &Recorded, caller: &Caller, tool: &str, arguments: Value) -> Result<(), Refusal> {
        let call = ToolCall { caller, tool, arguments, named_agent: None, idempotency_key: None };
        Kernel::default().call(tools, call).await.map(|served| served.outcome)
    }

    fn runs(tools: &Recorded) -> Vec<(String, String, Value)> {
        tools
            .runs
            .lock()
            .unwrap()
            .iter()
            .map(|(name, agent, arguments, _)| (name.clone(), agent.clone(), arguments.clone()))
            .collect()
    }

    #[tokio::test]
    async fn an_allowed_call_runs_once_for_the_acting_agent() {
        let tools = with_alice();
        call(&tools, &agent_token("alice"), "memory_put", json!({ "path": "alice/x" })).await.unwrap();
        call(&tools, &agent_token("alice"), "echo.say", json!({})).await.unwrap();
        assert_eq!(
            runs(&tools),
            vec![
                ("memory_put".into(), "alice".into(), json!({ "path": "alice/x" })),
                ("echo.say".into(), "alice".into(), json!({})),
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_call_runs_nothing() {
        let tools = with_alice();
        let unknown = call(&tools, &Caller::dev(), "no_such_tool", json!({})).await.unwrap_err();
        assert_eq!(unknown, Refusal::UnknownTool { name: "no_such_tool".into() });
        let admin_only = call(&tools, &agent_token("alice"), "token_create", json!({})).await.unwrap_err();
        assert!(admin_only.to_string().contains("may not call token_create: it needs an admin token"), "{admin_only}");
        let foreign = call(&tools, &agent_token("alice"), "memory_put", json!({ "path": "bob/x" })).await;
        assert!(matches!(foreign, Err(Refusal::Forbidden { .. })));
        let named_other = Kernel::default()
            .call(
                &tools,
                ToolCall {
                    caller: &agent_token("alice"),
                    tool: "echo.say",
                    arguments: json!({}),
                    named_agent: Some("bob"),
                    idempotency_key: None,
                },
            )
            .await;
        assert!(matches!(named_other, Err(Refusal::Forbidden { .. })));
        assert!(tools.runs.lock().unwrap().is_empty());
    }

    async fn call_as(tools: &Recorded, agent: &str, tool: &str) -> Result<(), Refusal> {
        metered_call(tools, agent, tool, None).await.map(|_| ())
    }

    async fn metered_call(
        tools: &Recorded,
        agent: &str,
        tool: &str,
        key: Option<&str>,
    ) -> Result<Option<Metered>, Refusal> {
        let caller = Caller::dev();
        let call =
            ToolCall { caller: &caller, tool, arguments: json!({}), named_agent: Some(agent), idempotency_key: key };
        Kernel::default().call(tools, call).await.map(|served| served.metered)
    }

    #[tokio::test]
    async fn paused_terminated_and_unknown_agents_are_refused_and_run_nothing() {
        let tools = Recorded {
            agents: vec![
                registered("paused", AgentState::Paused { reason: "over budget".into() }, &["*"]),
                registered("gone", AgentState::Terminated, &["*"]),
            ],
            ..Recorded::default()
        };
        let paused = call_as(&tools, "paused", "echo.say").await.unwrap_err();
        assert_eq!(paused, Refusal::AgentPaused { agent: "paused".into(), reason: "over budget".into() });
        assert_eq!(call_as(&tools, "gone", "echo.say").await, Err(Refusal::AgentTerminated { agent: "gone".into() }));
        assert_eq!(call_as(&tools, "nobody", "echo.say").await, Err(Refusal::UnknownAgent { agent: "nobody".into() }));
        let token = agent_token("nobody");
        let by_token = call(&tools, &token, "echo.say", json!({})).await;
        assert_eq!(by_token, Err(Refusal::UnknownAgent { agent: "nobody".into() }));
        assert!(tools.runs.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_agent_this_node_has_not_applied_yet_is_found_after_catching_up() {
        let tools = Recorded { late: vec![registered("fresh", AgentState::Running, &["*"])], ..Recorded::default() };
        call_as(&tools, "fresh", "echo.say").await.unwrap();
        assert!(*tools.caught_up.lock().unwrap());
    }

    #[tokio::test]
    async fn an_agent_at_its_concurrency_quota_is_refused_until_one_of_its_calls_ends() {
        use std::sync::Arc;
        let mut bot = registered("bot", AgentState::Running, &["*"]);
        bot.max_concurrent_calls = Some(1);
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let tools = Arc::new(Recorded { agents: vec![bot], gate: Some(gate.clone()), ..Recorded::default() });
        let kernel = Arc::new(Kernel::default());
        let call = |kernel: Arc<Kernel>, tools: Arc<Recorded>| async move {
            let caller = Caller::dev();
            let call = ToolCall {
                caller: &caller,
                tool: "echo.say",
                arguments: json!({}),
                named_agent: Some("bot"),
                idempotency_key: None,
            };
            kernel.call(&*tools, call).await.map(drop)
        };
        let first = tokio::spawn(call(kernel.clone(), tools.clone()));
        while tools.runs.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let refused = call(kernel.clone(), tools.clone()).await.unwrap_err();
        assert_eq!(refused, Refusal::TooManyCalls { agent: "bot".into(), limit: 1 });
        gate.add_permits(2);
        first.await.unwrap().unwrap();
        call(kernel.clone(), tools.clone()).await.expect("the quota is free again once the first call ended");
        assert!(kernel.running.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_metered_call_dropped_before_it_ends_is_abandoned_and_one_that_ends_is_not() {
        use std::sync::Arc;
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut tools = bot_under(vec![agreement("deal", &["*"], &["calls=5/minute"], AgreementState::Active)]);
        tools.gate = Some(gate.clone());
        let tools = Arc::new(tools);
        let running = {
            let tools = tools.clone();
            tokio::spawn(async move { metered_call(&tools, "bot", "echo.say", Some("cut-off")).await })
        };
        while tools.runs.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        running.abort();
        assert!(running.await.unwrap_err().is_cancelled());
        assert_eq!(*tools.abandoned.lock().unwrap(), ["cut-off"]);
        gate.add_permits(1);
        metered_call(&tools, "bot", "echo.say", Some("finished")).await.unwrap();
        assert_eq!(tools.abandoned.lock().unwrap().len(), 1, "a settled call is not abandoned");
    }

    #[tokio::test]
    async fn an_agent_calls_only_the_tools_its_list_allows() {
        let tools =
            Recorded { agents: vec![registered("bot", AgentState::Running, &["echo.*"])], ..Recorded::default() };
        call_as(&tools, "bot", "echo.say").await.unwrap();
        let refused = call_as(&tools, "bot", "memory_put").await.unwrap_err();
        assert!(matches!(refused, Refusal::ToolNotAllowed { ref tool, .. } if tool == "memory_put"), "{refused}");
        assert_eq!(tools.runs.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_call_that_names_no_agent_is_not_governed() {
        let tools = Recorded::default();
        call(&tools, &Caller::dev(), "echo.say", json!({})).await.unwrap();
        assert_eq!(tools.runs.lock().unwrap()[0].1, crate::ANONYMOUS_AGENT);
    }

    fn agreement(id: &str, tools: &[&str], limits: &[&str], state: AgreementState) -> AgreementRecord {
        AgreementRecord {
            terms: Terms {
                id: id.into(),
                consumer: "bot".into(),
                provider: PublisherKey([1; 32]),
                tools: tools.iter().map(|tool| (*tool).to_owned()).collect(),
                limits: limits.iter().map(|limit| Limit::parse(limit).unwrap()).collect(),
                expires_at_ms: u64::MAX,
                description: String::new(),
            },
            consumer_signature: None,
            provider_signature: None,
            state,
            history: Vec::new(),
            history_dropped: 0,
        }
    }

    fn bot_under(agreements: Vec<AgreementRecord>) -> Recorded {
        Recorded { agents: vec![registered("bot", AgentState::Running, &["*"])], agreements, ..Recorded::default() }
    }

    #[tokio::test]
    async fn an_agreement_limit_refuses_the_call_past_it_and_runs_nothing() {
        let tools = bot_under(vec![agreement("deal", &["echo.*"], &["calls=2/minute"], AgreementState::Active)]);
        for _ in 0..2 {
            let metered = metered_call(&tools, "bot", "echo.say", None).await.unwrap().unwrap();
            assert_eq!((metered.agreement.as_str(), metered.used.calls, metered.log_index), ("deal", 1, 7));
        }
        let refused = metered_call(&tools, "bot", "echo.say", None).await.unwrap_err();
        let Refusal::OverLimit { over, .. } = &refused else { panic!("{refused}") };
        assert_eq!((over.used, over.limit, over.resets_at_ms), (2, 2, Some(60_000)));
        assert!(refused.to_string().contains("the limit of 2 calls per minute is reached"), "{refused}");
        assert_eq!(tools.runs.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_retried_key_counts_once() {
        let tools = bot_under(vec![agreement("deal", &["*"], &["calls=1/minute"], AgreementState::Active)]);
        let metered = metered_call(&tools, "bot", "echo.say", Some("try-1")).await.unwrap().unwrap();
        metered_call(&tools, "bot", "echo.say", Some("try-1")).await.unwrap();
        assert!(metered_call(&tools, "bot", "echo.say", Some("try-2")).await.is_err());
        // The tool is told the reservation it runs under (a peer's receipt names it).
        let reservation = tools.runs.lock().unwrap()[0].3.reservation.clone();
        let expected = Reservation { agreement: "deal".into(), key: "try-1".into(), log_index: metered.log_index };
        assert_eq!(reservation, Some(expected));
        assert_eq!(tools.ledger.lock().unwrap().windows[0].used, 1);
        let bad = metered_call(&tools, "bot", "echo.say", Some("no spaces")).await.unwrap_err();
        assert!(matches!(bad, Refusal::InvalidKey { .. }), "{bad}");
    }

    #[tokio::test]
    async fn fuel_is_reserved_up_to_the_ceiling_run_under_the_grant_and_settled() {
        let mut tools = bot_under(vec![agreement("deal", &["*"], &["fuel=1500/day"], AgreementState::Active)]);
        tools.fuel_burnt = 300;
        let metered = metered_call(&tools, "bot", "echo.say", None).await.unwrap().unwrap();
        assert_eq!(metered.used.fuel, 300);
        assert_eq!(tools.ledger.lock().unwrap().windows[0].used, 300, "the unused 700 returned");
        metered_call(&tools, "bot", "echo.say", None).await.unwrap();
        metered_call(&tools, "bot", "echo.say", None).await.unwrap();
        let budgets: Vec<Option<u64>> = tools.runs.lock().unwrap().iter().map(|run| run.3.fuel).collect();
        assert_eq!(budgets, [Some(1_000), Some(1_000), Some(900)], "the third call gets only what is left");
        assert!(
            tools.runs.lock().unwrap().iter().all(|run| run.3.wall_ms.is_none()),
            "unlimited metrics are not capped"
        );
    }

    #[tokio::test]
    async fn calls_outside_every_active_agreement_are_refused_and_recorded() {
        let tools = bot_under(vec![
            agreement("a-echo", &["echo.*"], &[], AgreementState::Active),
            agreement("b-mem", &["memory_*"], &[], AgreementState::Suspended { reason: "audit".into() }),
        ]);
        let outside = call_as(&tools, "bot", "token_create").await.unwrap_err();
        assert_eq!(outside, Refusal::NotCovered { agent: "bot".into(), tool: "token_create".into() });
        let suspended = call_as(&tools, "bot", "memory_put").await.unwrap_err();
        assert_eq!(suspended.to_string(), "agreement b-mem is suspended: audit");
        assert_eq!(tools.violations.lock().unwrap().len(), 2);
        assert!(tools.runs.lock().unwrap().is_empty());
        call_as(&tools, "bot", "echo.say").await.unwrap();
    }

    fn policies(version: u64, text: &str) -> Option<Arc<Policies>> {
        Some(Arc::new(Policies::compile(version, text).unwrap()))
    }

    #[tokio::test]
    async fn a_forbid_stops_any_agents_call_names_the_policy_and_is_recorded() {
        let text = r#"
            @id("all") permit(principal, action, resource);
            @id("no-writes-for-untrusted") forbid(principal, action, resource)
            when { principal.tags.contains("untrusted") && resource.name == "memory_put" };
        "#;
        let mut tools = bot_under(vec![agreement("deal", &["*"], &[], AgreementState::Active)]);
        tools.agents = vec![tagged("bot", &["untrusted"]), tagged("free", &["untrusted"]), tagged("ok", &[])];
        tools.policies = policies(4, text);
        let refused = call_as(&tools, "bot", "memory_put").await.unwrap_err();
        let expected = Refusal::PolicyDenied {
            agent: "bot".into(),
            tool: "memory_put".into(),
            version: 4,
            policies: vec!["no-writes-for-untrusted".into()],
        };
        assert_eq!(refused, expected);
        assert!(refused.to_string().contains("denied by policy no-writes-for-untrusted (policy set version 4)"));
        // An agent without agreements is stopped by a forbid too.
        assert!(matches!(call_as(&tools, "free", "memory_put").await, Err(Refusal::PolicyDenied { .. })));
        call_as(&tools, "ok", "memory_put").await.unwrap();
        call_as(&tools, "bot", "echo.say").await.unwrap();
        let violations = tools.violations.lock().unwrap().clone();
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations[0].starts_with("bot memory_put: agent bot may not call memory_put: denied by policy"));
        assert_eq!(tools.runs.lock().unwrap().len(), 2, "the refused calls ran nothing");
    }

    #[tokio::test]
    async fn an_agent_with_agreements_calls_only_what_a_permit_allows() {
        let mut tools = bot_under(vec![agreement("deal", &["*"], &[], AgreementState::Active)]);
        tools.agents.push(tagged("free", &[]));
        tools.policies = Some(Arc::new(Policies::empty()));
        let refused = call_as(&tools, "bot", "echo.say").await.unwrap_err();
        assert_eq!(refused, Refusal::NotPermitted { agent: "bot".into(), tool: "echo.say".into(), version: 0 });
        call_as(&tools, "free", "echo.say").await.expect("an agent without agreements is not denied by default");
        tools.policies = policies(
            1,
            r#"permit(principal, action, resource == Tool::"echo.say") when { context.agreement == "deal" };"#,
        );
        call_as(&tools, "bot", "echo.say").await.unwrap();
        assert!(matches!(call_as(&tools, "bot", "memory_put").await, Err(Refusal::NotPermitted { .. })));
        assert!(tools.reservations.lock().unwrap().len() == 1, "refused calls reserve nothing");
    }

    #[tokio::test]
    async fn a_call_decided_under_a_replaced_policy_set_is_decided_again_under_the_new_one() {
        let tools = bot_under(vec![agreement("deal", &["*"], &["calls=5/minute"], AgreementState::Active)]);
        *tools.policy_version.lock().unwrap() = 1;
        *tools.stale_reservations.lock().unwrap() = 2;
        metered_call(&tools, "bot", "echo.say", None).await.unwrap();
        assert_eq!(*tools.policy_versions_seen.lock().unwrap(), [1, 2, 3]);
        assert_eq!(tools.runs.lock().unwrap().len(), 1, "it ran once, under the version apply holds");
        *tools.stale_reservations.lock().unwrap() = POLICY_RETRIES;
        let refused = metered_call(&tools, "bot", "echo.say", None).await.unwrap_err();
        assert!(refused.to_string().contains("the policy set kept changing"), "{refused}");
        assert_eq!(tools.runs.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_agreement_this_node_has_not_applied_yet_governs_its_agents_call_after_catching_up() {
        let mut tools = bot_under(Vec::new());
        tools.agents[0].key = Some(PublisherKey([2; 32]));
        tools.late_agreements = vec![agreement("deal", &["echo.*"], &["calls=1/minute"], AgreementState::Active)];
        let metered = metered_call(&tools, "bot", "echo.say", None).await.unwrap();
        assert_eq!(metered.map(|metered| metered.agreement), Some("deal".into()), "metered, not run unmetered");
        assert!(matches!(call_as(&tools, "bot", "echo.say").await, Err(Refusal::OverLimit { .. })));
        // An agent without a key can sign no agreement: nothing to catch up on.
        let keyless = with_alice();
        call_as(&keyless, "alice", "echo.say").await.unwrap();
        assert!(!*keyless.caught_up.lock().unwrap());
    }

    #[tokio::test]
    async fn an_agent_with_quotas_of_its_own_and_no_agreement_is_metered_in_its_own_account() {
        let mut tools = bot_under(Vec::new());
        tools.agents[0].limits = vec![Limit::parse("calls=1/minute").unwrap()];
        tools.policies = Some(Arc::new(Policies::empty()));
        let metered = metered_call(&tools, "bot", "echo.say", None).await.unwrap().unwrap();
        assert_eq!(metered.agreement, "agent/bot");
        let refused = call_as(&tools, "bot", "echo.say").await.unwrap_err();
        assert!(matches!(&refused, Refusal::AgentOverLimit { agent, .. } if agent == "bot"), "{refused}");
        assert!(refused.to_string().starts_with("agent bot: its own quota of 1 calls per minute is reached"));
        assert_eq!(tools.runs.lock().unwrap().len(), 1);
    }
}
