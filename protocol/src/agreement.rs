//! Agreements: terms that bind a consumer (an agent) and a provider (a
//! trusted publisher or operator key), signed by both with ed25519, and the
//! usage ledger that enforces their limits in apply.
//!
//! Everything here is a function of its inputs: the ledger takes the time
//! the leader stamped into the entry, never a clock.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::agent::check_tool_pattern;
use crate::auth::check_agent_id;
use crate::limits::{
    MAX_AGENT_TEXT_BYTES, MAX_AGENT_TOOL_PATTERNS, MAX_AGREEMENT_LIMITS, MAX_IDEMPOTENCY_KEY_BYTES,
    MAX_RESERVATION_AMOUNT,
};
use crate::plugin::PublisherKey;
use crate::validate::{check_count, check_len, ValidationError};

/// Domain separation: a zeromesh agreement signature is never valid for
/// anything else.
const SIGNING_CONTEXT: &[u8] = b"zeromesh-agreement-v1\0";

/// What an agreement meters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Metric {
    /// Tool calls.
    Calls,
    /// WebAssembly fuel burnt by plugin tools.
    Fuel,
    /// Wall-clock milliseconds a call ran.
    WallMs,
    /// Bytes of arguments sent to tools.
    BytesIn,
    /// Bytes of results returned by tools.
    BytesOut,
}

impl Metric {
    pub const ALL: [Metric; 5] = [Metric::Calls, Metric::Fuel, Metric::WallMs, Metric::BytesIn, Metric::BytesOut];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Calls => "calls",
            Metric::Fuel => "fuel",
            Metric::WallMs => "wall_ms",
            Metric::BytesIn => "bytes_in",
            Metric::BytesOut => "bytes_out",
        }
    }

    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|metric| metric.name() == name)
    }

    /// Whether a call's amount is known before it runs (reserved exactly);
    /// otherwise it is reserved up to what remains and settled afterwards.
    pub fn known_before(self) -> bool {
        matches!(self, Metric::Calls | Metric::BytesIn)
    }
}

/// The span a limit counts over. Windows are aligned to the Unix epoch, so
/// every node computes the same window from the leader's stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Window {
    Minute,
    Hour,
    Day,
    /// The agreement's whole life: never resets.
    Lifetime,
}

impl Window {
    pub const ALL: [Window; 4] = [Window::Minute, Window::Hour, Window::Day, Window::Lifetime];

    pub fn name(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Lifetime => "lifetime",
        }
    }

    pub fn parse(name: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|window| window.name() == name)
    }

    fn length_ms(self) -> Option<u64> {
        match self {
            Window::Minute => Some(60_000),
            Window::Hour => Some(3_600_000),
            Window::Day => Some(86_400_000),
            Window::Lifetime => None,
        }
    }

    /// When the window holding `now_ms` began.
    pub fn start(self, now_ms: u64) -> u64 {
        self.length_ms().map_or(0, |length| now_ms - now_ms % length)
    }

    /// When the window that began at `start_ms` ends, if it ever does.
    pub fn resets_at(self, start_ms: u64) -> Option<u64> {
        self.length_ms().map(|length| start_ms.saturating_add(length))
    }
}

/// At most `max` of `metric` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub metric: Metric,
    pub window: Window,
    pub max: u64,
}

impl Limit {
    /// Parses `metric=max/window`, e.g. `calls=100/minute`, `fuel=5000000/day`.
    pub fn parse(text: &str) -> Result<Limit, String> {
        let usage = "a limit is metric=max/window, e.g. calls=100/minute";
        let (metric, rest) = text.split_once('=').ok_or(usage)?;
        let (max, window) = rest.split_once('/').ok_or(usage)?;
        let metric = Metric::parse(metric.trim()).ok_or_else(|| {
            format!("unknown metric {metric:?}; metrics: {}", Metric::ALL.map(Metric::name).join(", "))
        })?;
        let window = Window::parse(window.trim()).ok_or_else(|| {
            format!("unknown window {window:?}; windows: {}", Window::ALL.map(Window::name).join(", "))
        })?;
        let max = max.trim().parse().map_err(|_| format!("{max:?} is not a whole number"))?;
        Ok(Limit { metric, window, max })
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}/{}", self.metric.name(), self.max, self.window.name())
    }
}

/// Amounts of every metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub calls: u64,
    pub fuel: u64,
    pub wall_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Usage {
    pub fn get(&self, metric: Metric) -> u64 {
        match metric {
            Metric::Calls => self.calls,
            Metric::Fuel => self.fuel,
            Metric::WallMs => self.wall_ms,
            Metric::BytesIn => self.bytes_in,
            Metric::BytesOut => self.bytes_out,
        }
    }

    fn slot(&mut self, metric: Metric) -> &mut u64 {
        match metric {
            Metric::Calls => &mut self.calls,
            Metric::Fuel => &mut self.fuel,
            Metric::WallMs => &mut self.wall_ms,
            Metric::BytesIn => &mut self.bytes_in,
            Metric::BytesOut => &mut self.bytes_out,
        }
    }

    pub fn set(&mut self, metric: Metric, amount: u64) {
        *self.slot(metric) = amount;
    }

    /// Each metric of `self`, at most the same metric of `cap`.
    pub fn capped_by(&self, cap: &Usage) -> Usage {
        let mut capped = *self;
        for metric in Metric::ALL {
            capped.set(metric, self.get(metric).min(cap.get(metric)));
        }
        capped
    }

    /// `self - other`, per metric, never below zero.
    pub fn minus(&self, other: &Usage) -> Usage {
        let mut left = *self;
        for metric in Metric::ALL {
            left.set(metric, self.get(metric).saturating_sub(other.get(metric)));
        }
        left
    }

    fn add(&mut self, other: &Usage) {
        for metric in Metric::ALL {
            let sum = self.get(metric).saturating_add(other.get(metric));
            self.set(metric, sum);
        }
    }

    fn validate(&self, what: &'static str) -> Result<(), ValidationError> {
        if Metric::ALL.iter().any(|metric| self.get(*metric) > MAX_RESERVATION_AMOUNT) {
            return Err(ValidationError::BadField {
                what,
                value: format!("{self:?}"),
                reason: "has an amount over 2^40",
            });
        }
        Ok(())
    }
}

/// What both parties sign. Immutable once created: a change is a new agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub id: String,
    /// The agent whose calls the agreement governs.
    pub consumer: String,
    /// The provider's ed25519 key: a publisher or operator key the mesh trusts.
    pub provider: PublisherKey,
    /// The tools covered: exact names, `prefix*`, or `*`.
    pub tools: Vec<String>,
    pub limits: Vec<Limit>,
    /// Calls are refused from this time on (leader's clock, ms since the epoch).
    pub expires_at_ms: u64,
    pub description: String,
}

impl Terms {
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_agreement_id(&self.id)?;
        check_agent_id(&self.consumer)?;
        check_count("agreement tool patterns", self.tools.len(), MAX_AGENT_TOOL_PATTERNS)?;
        if self.tools.is_empty() {
            return Err(ValidationError::Empty { what: "agreement tool patterns" });
        }
        for pattern in &self.tools {
            check_tool_pattern(pattern)?;
        }
        check_count("agreement limits", self.limits.len(), MAX_AGREEMENT_LIMITS)?;
        check_len("agreement description", self.description.len(), MAX_AGENT_TEXT_BYTES)
    }

    /// Whether the agreement covers tool `name`.
    pub fn covers(&self, name: &str) -> bool {
        crate::agent::patterns_allow(&self.tools, name)
    }

    /// The bytes both parties sign: a context string, then the terms as JSON
    /// in field order. Only these bytes count; nothing else is signed.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut bytes = SIGNING_CONTEXT.to_vec();
        bytes.extend(serde_json::to_vec(self).expect("terms serialize"));
        bytes
    }

    /// `key`'s signature over these terms.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        key.sign(&self.signed_bytes()).to_bytes().to_vec()
    }

    /// Whether `signature` is `key`'s over these exact terms.
    pub fn verify(&self, key: &PublisherKey, signature: &[u8]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&key.0) else { return false };
        let Ok(signature) = <[u8; 64]>::try_from(signature) else { return false };
        key.verify_strict(&self.signed_bytes(), &Signature::from_bytes(&signature)).is_ok()
    }
}

/// An agreement id: the same alphabet as agent ids.
pub fn check_agreement_id(id: &str) -> Result<(), ValidationError> {
    check_agent_id(id).map_err(|_| ValidationError::BadField {
        what: "agreement id",
        value: id.chars().take(80).collect(),
        reason: "is 1 to 64 ASCII letters, digits and -_.:@+~=,",
    })
}

/// The account an agent's own quotas are metered in, like an agreement's:
/// `agent/{id}` (no agreement id holds a `/`).
pub const AGENT_ACCOUNT_PREFIX: &str = "agent/";

pub fn agent_account(agent: &str) -> String {
    format!("{AGENT_ACCOUNT_PREFIX}{agent}")
}

/// The agent whose own account `account` is, if it is one.
pub fn account_agent(account: &str) -> Option<&str> {
    account.strip_prefix(AGENT_ACCOUNT_PREFIX)
}

/// An account metering is counted in: an agreement id, or an agent's own
/// account.
pub fn check_account_id(id: &str) -> Result<(), ValidationError> {
    match account_agent(id) {
        Some(agent) => check_agent_id(agent),
        None => check_agreement_id(id),
    }
}

/// An idempotency key: 1 to 64 ASCII letters, digits and `-_.:`.
pub fn check_idempotency_key(key: &str) -> Result<(), ValidationError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES
        && key.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte));
    if !valid {
        return Err(ValidationError::BadField {
            what: "idempotency key",
            value: key.chars().take(80).collect(),
            reason: "is 1 to 64 ASCII letters, digits and -_.:",
        });
    }
    Ok(())
}

/// Where an agreement is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgreementState {
    /// Created, waiting for signatures and activation.
    Draft,
    /// Both signatures verified: calls are served within its limits.
    Active,
    /// Calls refused until it is activated again.
    Suspended { reason: String },
    /// For good.
    Terminated { reason: String },
    /// Its expiry passed (by the leader's stamp): for good.
    Expired,
}

impl AgreementState {
    pub fn name(&self) -> &'static str {
        match self {
            AgreementState::Draft => "draft",
            AgreementState::Active => "active",
            AgreementState::Suspended { .. } => "suspended",
            AgreementState::Terminated { .. } => "terminated",
            AgreementState::Expired => "expired",
        }
    }

    /// Terminated and expired agreements never change again.
    pub fn is_final(&self) -> bool {
        matches!(self, AgreementState::Terminated { .. } | AgreementState::Expired)
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            AgreementState::Suspended { reason } | AgreementState::Terminated { reason } => Some(reason),
            _ => None,
        }
    }
}

/// Which side of an agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Party {
    Consumer,
    Provider,
}

impl Party {
    pub fn name(self) -> &'static str {
        match self {
            Party::Consumer => "consumer",
            Party::Provider => "provider",
        }
    }
}

/// One change of an agreement, as its history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub log_index: u64,
    pub at_ms: u64,
    /// e.g. "created", "signed by consumer", "suspended: over budget".
    pub what: String,
}

/// An agreement as the replicated registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementRecord {
    pub terms: Terms,
    pub consumer_signature: Option<Vec<u8>>,
    pub provider_signature: Option<Vec<u8>>,
    pub state: AgreementState,
    /// Its changes, oldest first; `history_dropped` older ones were dropped.
    pub history: Vec<Change>,
    pub history_dropped: u64,
}

/// A change to an agreement, made by an admin (signatures come from the
/// parties' keys, never from the node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgreementCommand {
    Create {
        terms: Terms,
    },
    Sign {
        id: String,
        signer: PublisherKey,
        signature: Vec<u8>,
    },
    /// Verifies both signatures and the expiry; also resumes a suspended one.
    Activate {
        id: String,
    },
    Suspend {
        id: String,
        reason: String,
    },
    Terminate {
        id: String,
        reason: String,
    },
}

impl AgreementCommand {
    pub fn id(&self) -> &str {
        match self {
            AgreementCommand::Create { terms } => &terms.id,
            AgreementCommand::Sign { id, .. }
            | AgreementCommand::Activate { id }
            | AgreementCommand::Suspend { id, .. }
            | AgreementCommand::Terminate { id, .. } => id,
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        check_agreement_id(self.id())?;
        match self {
            AgreementCommand::Create { terms } => terms.validate(),
            AgreementCommand::Sign { signature, .. } => check_len("signature", signature.len(), 64),
            AgreementCommand::Activate { .. } => Ok(()),
            AgreementCommand::Suspend { reason, .. } | AgreementCommand::Terminate { reason, .. } => {
                check_len("reason", reason.len(), MAX_AGENT_TEXT_BYTES)
            }
        }
    }
}

/// The check an agreement command failed. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AgreementCheck {
    #[error("agreement {id:?} already exists")]
    Exists { id: String },
    #[error("no agreement {id:?}")]
    NotFound { id: String },
    #[error("the cluster already keeps its maximum of {limit} agreements")]
    Full { limit: usize },
    #[error("consumer check failed: agent {agent:?} is not registered")]
    UnknownAgent { agent: String },
    #[error("consumer check failed: agent {agent:?} has no key to sign with; spawn it with --key")]
    AgentHasNoKey { agent: String },
    #[error("provider check failed: key {key} is not trusted on this mesh (`zeromesh plugin trust`)")]
    ProviderUntrusted { key: PublisherKey },
    #[error("signer check failed: key {key} is neither the consumer's nor the provider's")]
    NotAParty { key: PublisherKey },
    #[error("signature check failed: the {} signature does not verify over these terms (forged, or the terms were changed after signing)", party.name())]
    BadSignature { party: Party },
    #[error("signature check failed: the {} has not signed", party.name())]
    MissingSignature { party: Party },
    #[error("expiry check failed: it expired at {expires_at_ms} ms (the leader's clock read {now_ms} ms)")]
    Expired { expires_at_ms: u64, now_ms: u64 },
    #[error("state check failed: a {state} agreement cannot be {action}")]
    WrongState { state: String, action: String },
}

/// What applying an [`AgreementCommand`] answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgreementOutcome {
    /// Created, signed, activated, suspended or terminated.
    Changed {
        id: String,
        state: AgreementState,
        what: String,
    },
    Refused(AgreementCheck),
}

/// A limit a call would overrun, as the refusal reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverLimit {
    pub metric: Metric,
    pub window: Window,
    pub used: u64,
    pub limit: u64,
    /// When the window resets (`None` for a lifetime limit).
    pub resets_at_ms: Option<u64>,
}

/// One limit's count in its current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowUse {
    pub start_ms: u64,
    pub used: u64,
}

/// An agreement's usage: per limit, the amount used or reserved in its
/// current window (never above the limit), and totals since activation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// One per limit of the terms, in the same order.
    pub windows: Vec<WindowUse>,
    /// Reserved and not returned, over the agreement's life.
    pub totals: Usage,
    /// Calls refused by a limit.
    pub refused: u64,
    /// Sequence number of the next reservation.
    pub next_seq: u64,
}

impl Ledger {
    /// Moves each limit's count into the window holding `now_ms`. A stamp
    /// older than a window already counted (a new leader's clock behind the
    /// old one's) keeps the newer window: counts never reset backwards.
    fn roll(&mut self, limits: &[Limit], now_ms: u64) {
        self.windows.resize(limits.len(), WindowUse::default());
        for (limit, window) in limits.iter().zip(&mut self.windows) {
            let start_ms = limit.window.start(now_ms);
            if start_ms > window.start_ms {
                *window = WindowUse { start_ms, used: 0 };
            }
        }
    }

    /// Reserves `want` at `now_ms`: amounts known before the call exactly,
    /// the others up to what every limit has left. Returns the amounts
    /// granted and the windows they count in, or the first limit the call
    /// would overrun (and then changes nothing but the refusal count).
    pub fn reserve(&mut self, limits: &[Limit], now_ms: u64, want: &Usage) -> Result<(Usage, Vec<u64>), OverLimit> {
        self.grant(limits, now_ms, want, true)
    }

    /// Reserves a lease: every amount up to what every limit has left (a
    /// node serves calls from it and returns what they did not use).
    /// Refused only when a wanted amount has nothing left at all.
    pub fn lease(&mut self, limits: &[Limit], now_ms: u64, want: &Usage) -> Result<(Usage, Vec<u64>), OverLimit> {
        self.grant(limits, now_ms, want, false)
    }

    fn grant(
        &mut self,
        limits: &[Limit],
        now_ms: u64,
        want: &Usage,
        exact_when_known: bool,
    ) -> Result<(Usage, Vec<u64>), OverLimit> {
        self.roll(limits, now_ms);
        let mut granted = *want;
        for (limit, window) in limits.iter().zip(&self.windows) {
            let left = limit.max.saturating_sub(window.used);
            let wanted = want.get(limit.metric);
            let exact = exact_when_known && limit.metric.known_before();
            let short = if exact { wanted > left } else { wanted > 0 && left == 0 };
            if short {
                self.refused += 1;
                return Err(OverLimit {
                    metric: limit.metric,
                    window: limit.window,
                    used: window.used,
                    limit: limit.max,
                    resets_at_ms: limit.window.resets_at(window.start_ms),
                });
            }
            granted.set(limit.metric, granted.get(limit.metric).min(left));
        }
        for (limit, window) in limits.iter().zip(&mut self.windows) {
            window.used += granted.get(limit.metric);
        }
        self.totals.add(&granted);
        self.next_seq += 1;
        Ok((granted, self.windows.iter().map(|window| window.start_ms).collect()))
    }

    /// Gives back `returned` of a reservation counted in windows `starts`:
    /// only to the limits still in the window it was counted in.
    pub fn release(&mut self, limits: &[Limit], now_ms: u64, starts: &[u64], returned: &Usage) {
        self.roll(limits, now_ms);
        for ((limit, window), start_ms) in limits.iter().zip(&mut self.windows).zip(starts) {
            if window.start_ms == *start_ms {
                window.used = window.used.saturating_sub(returned.get(limit.metric));
            }
        }
        self.totals = self.totals.minus(returned);
    }
}

impl AgreementRecord {
    /// Agent `agent`'s own account as an agreement with itself: every tool,
    /// its own limits, active while it runs. Its calls no agreement governs
    /// are metered in it.
    pub fn for_agent(agent: &crate::agent::AgentRecord) -> AgreementRecord {
        let state = match &agent.state {
            crate::agent::AgentState::Running => AgreementState::Active,
            crate::agent::AgentState::Paused { reason } => AgreementState::Suspended { reason: reason.clone() },
            crate::agent::AgentState::Terminated => AgreementState::Terminated { reason: "agent terminated".into() },
        };
        AgreementRecord {
            terms: Terms {
                id: agent_account(&agent.id),
                consumer: agent.id.clone(),
                provider: PublisherKey([0; 32]),
                tools: vec!["*".into()],
                limits: agent.limits.clone(),
                expires_at_ms: u64::MAX,
                description: format!("agent {}'s own quotas", agent.id),
            },
            consumer_signature: None,
            provider_signature: None,
            state,
            history: Vec::new(),
            history_dropped: 0,
        }
    }
}

/// A reservation, remembered by its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub key: String,
    pub seq: u64,
    pub granted: Usage,
    /// The window each limit counted it in.
    pub window_starts: Vec<u64>,
    pub log_index: u64,
    /// What the call used, once settled.
    pub settled: Option<Usage>,
    /// A node's lease: a settlement returns every amount it did not use.
    pub lease: bool,
    /// The windows its consumer agent's own quotas counted it in (empty
    /// when they did not: the agent has none, or this is its own account).
    pub agent_window_starts: Vec<u64>,
}

/// Metering of one agreement's calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UsageCommand {
    /// Reserve `want` for call `key` (a retried key counts once), decided
    /// under policy set version `policy`: apply refuses it when that is no
    /// longer the current version. The amounts known before the call are
    /// final here, and committed to with `blinding` (as in `Settle`).
    Reserve { agreement: String, key: String, want: Usage, policy: u64, blinding: [u8; 32] },
    /// Lease up to `want` under key `key`, for a node to serve calls from
    /// while policy set version `policy` is current.
    Lease { agreement: String, key: String, want: Usage, policy: u64 },
    /// The call `key` used `used` (at most what was granted); the rest
    /// returns. `blinding` is 32 random bytes the proposing node drew: apply
    /// derives from them the blinding of each usage commitment, since apply
    /// itself draws nothing.
    Settle { agreement: String, key: String, used: Usage, blinding: [u8; 32] },
    /// A call refused before it reached a limit, recorded for reading back.
    Violation { agent: String, agreement: Option<String>, tool: String, reason: String },
}

impl UsageCommand {
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            UsageCommand::Reserve { agreement, key, want, .. } | UsageCommand::Lease { agreement, key, want, .. } => {
                check_account_id(agreement)?;
                check_idempotency_key(key)?;
                want.validate("reservation")
            }
            UsageCommand::Settle { agreement, key, used, .. } => {
                check_account_id(agreement)?;
                check_idempotency_key(key)?;
                used.validate("settlement")
            }
            UsageCommand::Violation { agent, agreement, tool, reason } => {
                check_agent_id(agent)?;
                if let Some(agreement) = agreement {
                    check_account_id(agreement)?;
                }
                check_tool_pattern(tool)?;
                check_len("violation reason", reason.len(), MAX_AGENT_TEXT_BYTES)
            }
        }
    }
}

/// What applying a [`UsageCommand`] answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UsageOutcome {
    /// Granted; `log_index` is the reservation's entry (an earlier one for a
    /// retried key, with `duplicate`).
    Reserved {
        granted: Usage,
        log_index: u64,
        duplicate: bool,
    },
    /// Refused by a limit; recorded as a violation.
    OverLimit(OverLimit),
    /// Refused by a quota of the consumer agent's own; recorded as a violation.
    AgentOverLimit(OverLimit),
    /// The agreement is not active (suspended, terminated, expired, draft).
    NotActive {
        state: AgreementState,
    },
    NotFound,
    /// The call was decided under policy set version `decided`, and
    /// `current` has replaced it since; nothing was reserved.
    StalePolicy {
        decided: u64,
        current: u64,
    },
    /// The key's call already ran and was settled at `log_index`.
    AlreadySettled {
        log_index: u64,
    },
    Settled {
        returned: Usage,
    },
    /// No unsettled reservation has this key (never made, or forgotten).
    UnknownReservation,
    Recorded {
        seq: u64,
    },
}

/// A refused call, as the violations log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub seq: u64,
    pub log_index: u64,
    pub at_ms: u64,
    pub agent: String,
    pub agreement: Option<String>,
    pub tool: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn terms() -> Terms {
        Terms {
            id: "deal-1".into(),
            consumer: "bot".into(),
            provider: PublisherKey([7; 32]),
            tools: vec!["echo.*".into()],
            limits: vec![Limit { metric: Metric::Calls, window: Window::Minute, max: 3 }],
            expires_at_ms: 1_000_000,
            description: String::new(),
        }
    }

    #[test]
    fn a_signature_covers_exactly_the_terms_it_was_made_over() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let public = PublisherKey::of(&key);
        let signature = terms().sign(&key);
        assert!(terms().verify(&public, &signature));
        let mut changed = terms();
        changed.limits[0].max = 4;
        assert!(!changed.verify(&public, &signature));
        assert!(!terms().verify(&PublisherKey([7; 32]), &signature));
        assert!(!terms().verify(&public, &signature[..63]));
    }

    #[test]
    fn limits_parse_from_text_and_print_back() {
        let limit = Limit::parse("fuel=5000/day").unwrap();
        assert_eq!(limit, Limit { metric: Metric::Fuel, window: Window::Day, max: 5000 });
        assert_eq!(limit.to_string(), "fuel=5000/day");
        assert!(Limit::parse("coins=1/day").unwrap_err().contains("metrics: calls"));
        assert!(Limit::parse("calls=1/fortnight").unwrap_err().contains("windows: minute"));
        assert!(Limit::parse("calls=-1/day").is_err());
    }

    #[test]
    fn a_call_over_a_limit_is_refused_with_the_window_reset() {
        let limits = terms().limits;
        let mut ledger = Ledger::default();
        let one = Usage { calls: 1, ..Usage::default() };
        for _ in 0..3 {
            ledger.reserve(&limits, 61_000, &one).unwrap();
        }
        let refused = ledger.reserve(&limits, 61_500, &one).unwrap_err();
        assert_eq!(
            refused,
            OverLimit { metric: Metric::Calls, window: Window::Minute, used: 3, limit: 3, resets_at_ms: Some(120_000) }
        );
        assert_eq!(ledger.refused, 1);
        assert!(ledger.reserve(&limits, 120_000, &one).is_ok(), "a new window starts from zero");
    }

    #[test]
    fn amounts_known_only_afterwards_are_granted_up_to_what_is_left_and_returned() {
        let limits = vec![Limit { metric: Metric::Fuel, window: Window::Lifetime, max: 100 }];
        let mut ledger = Ledger::default();
        let (granted, starts) = ledger.reserve(&limits, 5, &Usage { fuel: 70, ..Usage::default() }).unwrap();
        assert_eq!(granted.fuel, 70);
        let (second, _) = ledger.reserve(&limits, 6, &Usage { fuel: 70, ..Usage::default() }).unwrap();
        assert_eq!(second.fuel, 30, "only what is left is granted");
        assert!(ledger.reserve(&limits, 7, &Usage { fuel: 1, ..Usage::default() }).is_err());
        ledger.release(&limits, 8, &starts, &Usage { fuel: 60, ..Usage::default() });
        assert_eq!(ledger.windows[0].used, 40);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Reserve { at: u64, want: Usage },
        Settle { which: usize, at: u64, used: Usage },
    }

    fn usage() -> impl Strategy<Value = Usage> {
        (0u64..3, 0u64..50, 0u64..20).prop_map(|(calls, fuel, bytes_out)| Usage {
            calls,
            fuel,
            bytes_out,
            ..Usage::default()
        })
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..200_000, usage()).prop_map(|(at, want)| Step::Reserve { at, want }),
            (0usize..64, 0u64..200_000, usage()).prop_map(|(which, at, used)| Step::Settle { which, at, used }),
        ]
    }

    proptest! {
        /// Whatever the order of reservations and settlements, no window
        /// ever counts more than its limit.
        #[test]
        fn usage_never_exceeds_a_limit(steps in prop::collection::vec(step(), 1..120)) {
            let limits = vec![
                Limit { metric: Metric::Calls, window: Window::Minute, max: 10 },
                Limit { metric: Metric::Fuel, window: Window::Lifetime, max: 300 },
                Limit { metric: Metric::BytesOut, window: Window::Hour, max: 100 },
            ];
            let mut ledger = Ledger::default();
            let mut open: Vec<(Usage, Vec<u64>)> = Vec::new();
            let mut now = 0;
            for step in steps {
                match step {
                    Step::Reserve { at, want } => {
                        now = now.max(at);
                        if let Ok(reserved) = ledger.reserve(&limits, now, &want) {
                            prop_assert!(reserved.0.calls == want.calls);
                            open.push(reserved);
                        }
                    }
                    Step::Settle { which, at, used } if !open.is_empty() => {
                        now = now.max(at);
                        let (granted, starts) = open.remove(which % open.len());
                        let returned = granted.minus(&used.capped_by(&granted));
                        ledger.release(&limits, now, &starts, &returned);
                    }
                    Step::Settle { .. } => {}
                }
                for (limit, window) in limits.iter().zip(&ledger.windows) {
                    prop_assert!(window.used <= limit.max, "{limit} counts {}", window.used);
                }
            }
        }
    }
}
