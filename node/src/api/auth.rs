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

use serde_json::Value;
use sha2::{Digest, Sha256};
use zeromesh_consensus::ConsensusNode;
use zeromesh_protocol::auth::{check_token_id, Role, TokenCommand, TOKEN_ID_HEX_DIGITS};
use zeromesh_protocol::MemoryPath;

use super::jsonrpc::RpcError;

/// JSON-RPC error code for a request the caller's token does not allow.
pub const FORBIDDEN: i64 = -32003;
/// JSON-RPC error code for a request over the token's rate limit.
pub const RATE_LIMITED: i64 = -32029;
/// Token buckets kept per node; the least recently used is dropped beyond.
const MAX_BUCKETS: usize = 10_000;
const SECRET_BYTES: usize = 32;

/// Who is calling: from a verified token, or anyone in `--dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    pub agent: Option<String>,
    /// `None` in `--dev`.
    pub token_id: Option<String>,
}

impl Caller {
    pub fn dev() -> Caller {
        Caller { role: Role::Admin, agent: None, token_id: None }
    }

    fn describe(&self) -> String {
        match (&self.token_id, &self.agent) {
            (Some(id), Some(agent)) => format!("token {id} (role {} for agent {agent})", self.role.name()),
            (Some(id), None) => format!("token {id} (role {})", self.role.name()),
            (None, _) => "this caller".to_owned(),
        }
    }
}

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

/// A new token's text (shown once) and the command that creates it.
pub fn new_token(role: Role, agent: Option<String>) -> anyhow::Result<(String, TokenCommand)> {
    let mut bytes = [0u8; TOKEN_ID_HEX_DIGITS / 2 + SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("no randomness for a token: {error}"))?;
    let (id, secret) = bytes.split_at(TOKEN_ID_HEX_DIGITS / 2);
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    let secret_sha256 = Sha256::digest(secret.as_bytes()).into();
    Ok((format!("zm_{id}_{secret}"), TokenCommand::Create { id, secret_sha256, role, agent }))
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
        let malformed = "the token is not a zeromesh token (zm_<id>_<secret>)";
        let rest = token.strip_prefix("zm_").ok_or(malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(malformed)?;
        check_token_id(id).map_err(|_| malformed)?;
        if secret.len() != SECRET_BYTES * 2 {
            return Err(malformed.into());
        }
        let record = consensus
            .token(id)
            .map_err(|error| format!("tokens cannot be read: {error}"))?
            .ok_or_else(|| format!("token {id} is not known to this node (revoked, or not yet replicated here)"))?;
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
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
            Ok(None) => return Err(RpcError::new(FORBIDDEN, format!("token {id} has been revoked"))),
            Err(error) => return Err(RpcError::new(FORBIDDEN, format!("tokens cannot be read: {error}"))),
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
            return Err(RpcError::new(
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

fn forbidden(caller: &Caller, what: &str) -> RpcError {
    RpcError::new(FORBIDDEN, format!("{} may not {what}", caller.describe()))
}

/// The memory path or prefix a request names, for the agent check.
fn memory_target(method: &str, params: &Value) -> Option<String> {
    match method {
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => params
            .get("uri")
            .and_then(Value::as_str)
            .map(|uri| uri.strip_prefix(super::resources::URI_SCHEME).unwrap_or(uri).to_owned()),
        _ => {
            let arguments = params.get("arguments")?;
            arguments
                .get("path")
                .or_else(|| arguments.get("prefix"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| Some(String::new()))
        }
    }
}

/// Whether `caller` may make this request. Plugin tools are checked by
/// role here; their memory access is confined to the caller's agent.
pub fn authorize(caller: &Caller, method: &str, params: &Value) -> Result<(), RpcError> {
    if caller.role == Role::Admin {
        return Ok(());
    }
    let tool = if method == "tools/call" { params.get("name").and_then(Value::as_str) } else { None };
    let reads_memory = matches!(method, "resources/read" | "resources/subscribe" | "resources/unsubscribe")
        || matches!(tool, Some("memory_get" | "memory_list" | "memory_history"));
    let writes_memory = matches!(tool, Some("memory_put" | "memory_delete" | "memory_cas"));
    let admin_only = tool.is_some_and(|tool| {
        tool.starts_with("plugin_") && tool != "plugin_list"
            || tool.starts_with("token_")
            || tool.starts_with("mesh_isolate")
            || tool == "mesh_heal"
    });
    if admin_only {
        return Err(forbidden(caller, &format!("call {}: it needs an admin token", tool.unwrap_or_default())));
    }
    if writes_memory && caller.role == Role::Read {
        return Err(forbidden(caller, "write memories: it is read-only"));
    }
    if (reads_memory || writes_memory) && caller.role == Role::Agent {
        let agent = caller.agent.as_deref().unwrap_or_default();
        let target = memory_target(method, params).unwrap_or_default();
        let own = MemoryPath::parse(&target).map(|path| path.agent() == agent).unwrap_or(false)
            || target.starts_with(&format!("{agent}/"));
        if !own {
            return Err(forbidden(caller, &format!("reach {target:?}: only memories under {agent}/")));
        }
    }
    let builtin = tool.is_some_and(|tool| super::tools::BUILTIN_TOOL_NAMES.contains(&tool));
    if tool.is_some() && !builtin && caller.role == Role::Read {
        return Err(forbidden(caller, "run plugin tools: it is read-only"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn agent(name: &str) -> Caller {
        Caller { role: Role::Agent, agent: Some(name.into()), token_id: Some("0123456789abcdef".into()) }
    }

    fn call(tool: &str, arguments: Value) -> Value {
        json!({ "name": tool, "arguments": arguments })
    }

    #[test]
    fn an_agent_token_reaches_only_its_own_memories() {
        let alice = agent("alice");
        assert!(authorize(&alice, "tools/call", &call("memory_put", json!({ "path": "alice/notes" }))).is_ok());
        assert!(authorize(&alice, "tools/call", &call("memory_list", json!({ "prefix": "alice/" }))).is_ok());
        assert!(authorize(&alice, "resources/read", &json!({ "uri": "mem://alice/notes" })).is_ok());
        for (method, params) in [
            ("tools/call", call("memory_get", json!({ "path": "bob/notes" }))),
            ("tools/call", call("memory_list", json!({ "prefix": "" }))),
            ("tools/call", call("memory_list", json!({ "prefix": "alice-evil/" }))),
            ("resources/subscribe", json!({ "uri": "mem://bob/notes" })),
            ("tools/call", call("plugin_install", json!({}))),
            ("tools/call", call("token_create", json!({}))),
        ] {
            let refused = authorize(&alice, method, &params).unwrap_err();
            assert_eq!(refused.code, FORBIDDEN, "{method} {params}");
            assert!(refused.message.contains("agent alice"), "{}", refused.message);
        }
    }

    #[test]
    fn a_read_token_only_reads() {
        let reader = Caller { role: Role::Read, agent: None, token_id: Some("0123456789abcdef".into()) };
        assert!(authorize(&reader, "tools/call", &call("memory_get", json!({ "path": "bob/x" }))).is_ok());
        assert!(authorize(&reader, "tools/list", &json!({})).is_ok());
        assert!(authorize(&reader, "tools/call", &call("memory_put", json!({ "path": "bob/x" }))).is_err());
        assert!(authorize(&reader, "tools/call", &call("swap_note", json!({}))).is_err());
    }

    #[test]
    fn a_new_token_verifies_only_with_its_own_secret() {
        let (text, command) = new_token(Role::Read, None).unwrap();
        let TokenCommand::Create { id, secret_sha256, .. } = command else { panic!("a create command") };
        let secret = text.rsplit('_').next().unwrap();
        assert_eq!(<[u8; 32]>::from(Sha256::digest(secret.as_bytes())), secret_sha256);
        assert!(text.starts_with(&format!("zm_{id}_")));
    }
}
