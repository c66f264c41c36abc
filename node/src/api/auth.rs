//! Who may use the API, and for what. Outside `--dev`, every request carries
//! a bearer token `zm_{id}_{secret}`: the node looks its id up in the
//! replicated state and compares SHA-256 digests of the secret, so every node
//! accepts a token as soon as it has applied its creation, and none after its
//! revocation. Roles: `admin` may do everything; `agent` may touch only its
//! own agent's memories and run plugins for it; `read` may only read. Each
//! token is rate-limited (a token bucket per node).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use zeromesh_consensus::ConsensusNode;
use zeromesh_kernel::{permits, Access, Caller, Refusal};
use zeromesh_protocol::agreement::OverLimit;

use super::{rpc_error, with_data, RpcError};

/// JSON-RPC error code for a request the caller's token does not allow.
pub const FORBIDDEN: i32 = -32003;
/// JSON-RPC error code for a request over the token's rate limit.
pub const RATE_LIMITED: i32 = -32029;
/// A tool call refused by an agreement's limit; `data` says which, how much
/// is used and when the window resets.
pub const OVER_LIMIT: i32 = -32004;
/// JSON-RPC error code of a call this node cannot serve yet (a plugin whose
/// module it is still fetching): the same call may succeed shortly.
pub const NOT_READY: i32 = -32005;
/// Token buckets kept per node; the least recently used is dropped beyond.
const MAX_BUCKETS: usize = 10_000;

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// The node's authentication and rate limits.
pub struct Auth {
    dev: bool,
    requests_per_second: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Auth {
    pub fn new(dev: bool, requests_per_second: u32) -> Auth {
        Auth { dev, requests_per_second, buckets: Mutex::new(HashMap::new()) }
    }

    pub fn is_dev(&self) -> bool {
        self.dev
    }

    /// The caller an `Authorization` header names. In `--dev`, everyone is
    /// an admin.
    pub fn authenticate(&self, consensus: &ConsensusNode, authorization: Option<&str>) -> Result<Caller, String> {
        if self.dev {
            return Ok(Caller::dev());
        }
        let header = authorization.ok_or(
            "this node needs a bearer token (Authorization: Bearer zm_...); an admin makes one with `zeromesh token create`",
        )?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or("the Authorization header must be `Bearer <token>`")?
            .trim();
        self.verify(consensus, token)
    }

    fn verify(&self, consensus: &ConsensusNode, token: &str) -> Result<Caller, String> {
        let (id, presented) = crate::tokens::parse(token)?;
        let record = consensus
            .token(id)
            .map_err(|error| format!("tokens cannot be read: {error}"))?
            .ok_or_else(|| format!("token {id} is not known to this node (revoked, or not yet replicated here)"))?;
        // Digests of the secret are compared, so timing says nothing about it.
        if presented != record.secret_sha256 {
            return Err(format!("token {id}: the secret does not match"));
        }
        Ok(Caller { role: record.role, agent: record.agent, token_id: Some(record.id) })
    }

    /// Checks, before each request, that the caller's token still exists and
    /// is within its rate limit.
    pub fn admit(&self, consensus: &ConsensusNode, caller: &Caller) -> Result<(), RpcError> {
        let Some(id) = &caller.token_id else { return Ok(()) };
        match consensus.token(id) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(rpc_error(FORBIDDEN, format!("token {id} has been revoked"))),
            Err(error) => return Err(rpc_error(FORBIDDEN, format!("tokens cannot be read: {error}"))),
        }
        let rate = f64::from(self.requests_per_second.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(id) && buckets.len() >= MAX_BUCKETS {
            if let Some(stalest) = buckets.iter().min_by_key(|(_, bucket)| bucket.refilled).map(|(id, _)| id.clone()) {
                buckets.remove(&stalest);
            }
        }
        let now = Instant::now();
        let bucket = buckets.entry(id.clone()).or_insert(Bucket { tokens: rate, refilled: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.refilled).as_secs_f64() * rate).min(rate);
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            let retry_after = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
            return Err(rpc_error(
                RATE_LIMITED,
                format!(
                    "rate limit: token {id} may make {} requests per second on this node; retry after {} ms",
                    self.requests_per_second,
                    retry_after.as_millis().max(1)
                ),
            ));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

/// A kernel refusal as a JSON-RPC error: a forbidden request gets
/// [`FORBIDDEN`], a call over an agreement's limit [`OVER_LIMIT`] with the
/// limit in `data`, anything else is a request the caller must correct.
/// Every refusal's `data.reason` is its kind.
pub fn refusal_error(refusal: &Refusal) -> RpcError {
    let error = match refusal {
        Refusal::Forbidden { .. }
        | Refusal::UnknownAgent { .. }
        | Refusal::AgentPaused { .. }
        | Refusal::AgentTerminated { .. }
        | Refusal::ToolNotAllowed { .. }
        | Refusal::NotCovered { .. }
        | Refusal::NotPermitted { .. }
        | Refusal::AgreementInactive { .. }
        | Refusal::AlreadyRan { .. } => rpc_error(FORBIDDEN, refusal.to_string()),
        Refusal::OverLimit { agreement, over } => return over_limit(refusal, over, ("agreement", agreement)),
        Refusal::AgentOverLimit { agent, over } => return over_limit(refusal, over, ("agent", agent)),
        Refusal::PolicyDenied { version, policies, .. } => {
            let data = json!({ "reason": refusal.kind(), "policies": policies, "policyVersion": version });
            return with_data(rpc_error(FORBIDDEN, refusal.to_string()), data);
        }
        Refusal::TooManyCalls { .. } => rpc_error(RATE_LIMITED, refusal.to_string()),
        Refusal::UnknownTool { .. } | Refusal::InvalidAgent { .. } | Refusal::InvalidKey { .. } => {
            RpcError::invalid_params(refusal.to_string(), None)
        }
        Refusal::ToolLoading { .. } | Refusal::ServerUnavailable { .. } => rpc_error(NOT_READY, refusal.to_string()),
        Refusal::Unavailable { .. } | Refusal::ToolFailed { .. } => {
            rpc_error(rmcp::model::ErrorCode::INTERNAL_ERROR.0, refusal.to_string())
        }
    };
    with_data(error, json!({ "reason": refusal.kind() }))
}

/// [`OVER_LIMIT`] for `refusal`, with the limit `over` and whose it is
/// (`owner`: the agreement's or the agent's id) in `data`.
fn over_limit(refusal: &Refusal, over: &OverLimit, owner: (&str, &str)) -> RpcError {
    let mut data = json!({
        "reason": refusal.kind(),
        "metric": over.metric.name(),
        "window": over.window.name(),
        "used": over.used,
        "limit": over.limit,
        "resetsAtMs": over.resets_at_ms,
    });
    data[owner.0] = json!(owner.1);
    with_data(rpc_error(OVER_LIMIT, refusal.to_string()), data)
}

/// Whether `caller` may make this request. Resource reads are memory
/// reads (agreement, policy and checkpoint resources: observations); `tools/call` is decided by the kernel; every other method is open
/// to every authenticated caller.
pub fn authorize(caller: &Caller, method: &str, uri: Option<&str>) -> Result<(), RpcError> {
    if !matches!(method, "resources/read" | "resources/subscribe" | "resources/unsubscribe") {
        return Ok(());
    }
    let uri = uri.unwrap_or_default();
    // Agreements, their usage and violations, and the policy set are
    // observed, like agreement_show and policy_show.
    let observed = uri.starts_with(super::resources::AGREEMENT_SCHEME)
        || uri == super::resources::POLICY_URI
        || uri == super::resources::CHECKPOINT_URI;
    let (access, target) = match observed {
        true => (Access::Observe, ""),
        false => (Access::MemoryRead, uri.strip_prefix(super::resources::URI_SCHEME).unwrap_or(uri)),
    };
    permits(caller, &format!("call {method}"), access, target).map_err(|refusal| refusal_error(&refusal))
}

#[cfg(test)]
mod tests {
    use zeromesh_protocol::auth::Role;

    use super::*;

    #[test]
    fn an_agent_token_reads_only_its_own_resources() {
        let alice =
            Caller { role: Role::Agent, agent: Some("alice".into()), token_id: Some("0123456789abcdef".into()) };
        assert!(authorize(&alice, "resources/read", Some("mem://alice/notes")).is_ok());
        assert!(authorize(&alice, "tools/list", None).is_ok());
        for method in ["resources/read", "resources/subscribe", "resources/unsubscribe"] {
            let refused = authorize(&alice, method, Some("mem://bob/notes")).unwrap_err();
            assert_eq!(refused.code.0, FORBIDDEN, "{method}");
            assert!(refused.message.contains("agent alice"), "{}", refused.message);
        }
    }
}
