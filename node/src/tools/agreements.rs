//! The agreement tools: create, sign, activate, suspend and terminate
//! agreements (admin only, through Raft), and read them back with their
//! usage, history and the violations log.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use zeromesh_kernel::Access;
use zeromesh_protocol::agreement::{
    AgreementCommand, AgreementOutcome, AgreementRecord, Ledger, Limit, Metric, Terms, Usage, Violation,
};
use zeromesh_protocol::limits::{MAX_AGREEMENT_LIMITS, MAX_PAGE_ENTRIES};
use zeromesh_protocol::plugin::PublisherKey;
use zeromesh_protocol::{Command, CommandReply};

use super::{invalid, Invocation, NoArgs, ToolDecl, ToolEnv, ToolOutcome, UNKNOWN_NAME_CATCH_UP};
use crate::cluster::ServiceError;

pub(super) fn tools() -> Vec<ToolDecl> {
    vec![
        ToolDecl::new(
            "agreement_create",
            "Create a draft agreement binding an agent (consumer) and a trusted provider key to terms: tools covered, limits per window, expiry. Both parties then sign it and an admin activates it.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: CreateArgs| async move {
                let terms = args.into_terms().map_err(|reason| invalid("agreement_create", reason))?;
                change(&env, "agreement_create", AgreementCommand::Create { terms }).await
            },
        ),
        ToolDecl::new(
            "agreement_sign",
            "Add a party's ed25519 signature over the agreement's terms (`zeromesh agreement sign` makes it with the party's key file).",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: SignArgs| async move {
                let signer = PublisherKey::parse(&args.signer).map_err(|error| invalid("agreement_sign", error))?;
                let signature = hex::decode(&args.signature)
                    .map_err(|error| invalid("agreement_sign", format!("the signature is not hex: {error}")))?;
                change(&env, "agreement_sign", AgreementCommand::Sign { id: args.id, signer, signature }).await
            },
        ),
        ToolDecl::new(
            "agreement_activate",
            "Activate a signed agreement (both signatures are verified, and the expiry), or resume a suspended one.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: IdArgs| async move {
                change(&env, "agreement_activate", AgreementCommand::Activate { id: args.id }).await
            },
        ),
        ToolDecl::new(
            "agreement_suspend",
            "Suspend an active agreement: every node refuses its calls from the entry on, until it is activated again.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: ReasonArgs| async move {
                change(&env, "agreement_suspend", AgreementCommand::Suspend { id: args.id, reason: args.reason }).await
            },
        ),
        ToolDecl::new(
            "agreement_terminate",
            "Terminate an agreement for good.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: ReasonArgs| async move {
                change(&env, "agreement_terminate", AgreementCommand::Terminate { id: args.id, reason: args.reason })
                    .await
            },
        ),
        ToolDecl::new(
            "agreement_show",
            "One agreement: its terms, signatures, state, history and usage against each limit.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, args: IdArgs| async move {
                let record = found(&env, &args.id).await?;
                let ledger = env.cluster.consensus.ledger(&args.id).map_err(ServiceError::from)?;
                Ok(agreement_json(&record, &ledger))
            },
        ),
        ToolDecl::new(
            "agreement_usage",
            "An agreement's usage: per limit, the amount used in its current window and when it resets; totals; calls refused.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, args: IdArgs| async move {
                let record = found(&env, &args.id).await?;
                let ledger = env.cluster.consensus.ledger(&args.id).map_err(ServiceError::from)?;
                Ok(usage_json(&record, &ledger))
            },
        ),
        ToolDecl::new(
            "agreement_list",
            "Every agreement (id, consumer, state), in id order.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, _: NoArgs| async move {
                let all = env.cluster.consensus.agreements().await.map_err(ServiceError::from)?;
                let listed: Vec<Value> = all
                    .iter()
                    .map(|record| {
                        json!({ "id": record.terms.id, "consumer": record.terms.consumer, "state": record.state.name() })
                    })
                    .collect();
                Ok(json!({ "agreements": listed }))
            },
        ),
        ToolDecl::new(
            "agreement_violations",
            "Calls refused by agreements (over a limit, outside every agreement, agreement not active), oldest first.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, args: ViolationArgs| async move {
                let limit = args.limit.unwrap_or(100).min(MAX_PAGE_ENTRIES);
                let found = env.cluster.consensus.violations(args.from.unwrap_or(0), limit).await.map_err(ServiceError::from)?;
                let next = found.last().map(|violation| violation.seq + 1);
                let listed: Vec<Value> = found.iter().map(violation_json).collect();
                Ok(json!({ "violations": listed, "next_from": next }))
            },
        ),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateArgs {
    /// The agreement's id.
    id: String,
    /// The agent whose calls it governs; it must have been spawned with a key.
    consumer: String,
    /// The provider's ed25519 public key (64 hex digits), trusted on this mesh.
    provider: String,
    /// Tools covered: exact names, `prefix*`, or `*`.
    tools: Vec<String>,
    /// Limits as `metric=max/window`: metrics calls, fuel, wall_ms, bytes_in,
    /// bytes_out; windows minute, hour, day, lifetime.
    #[serde(default)]
    #[schemars(length(max = MAX_AGREEMENT_LIMITS))]
    limits: Vec<String>,
    /// When calls stop being served, in ms since the Unix epoch.
    expires_at_ms: u64,
    #[serde(default)]
    description: String,
}

impl CreateArgs {
    fn into_terms(self) -> Result<Terms, String> {
        let provider = PublisherKey::parse(&self.provider).map_err(|error| error.to_string())?;
        let limits = self.limits.iter().map(|limit| Limit::parse(limit)).collect::<Result<Vec<_>, _>>()?;
        let terms = Terms {
            id: self.id,
            consumer: self.consumer,
            provider,
            tools: self.tools,
            limits,
            expires_at_ms: self.expires_at_ms,
            description: self.description,
        };
        terms.validate().map_err(|error| error.to_string())?;
        Ok(terms)
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SignArgs {
    id: String,
    /// The signer's ed25519 public key (64 hex digits): the consumer's or the provider's.
    signer: String,
    /// The ed25519 signature over the terms' signed bytes (128 hex digits).
    signature: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct IdArgs {
    /// The agreement's id.
    id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReasonArgs {
    id: String,
    /// Kept in the agreement's history and shown with refused calls.
    reason: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ViolationArgs {
    /// The first violation number to show (`next_from` of the previous page).
    from: Option<u64>,
    #[schemars(range(min = 1, max = MAX_PAGE_ENTRIES))]
    limit: Option<usize>,
}

/// Agreement `id`. One this node has not applied yet is looked up again once
/// the node has caught up with the leader (briefly), so an agreement created
/// through another node is found here right after.
async fn found(env: &ToolEnv, id: &str) -> Result<AgreementRecord, ServiceError> {
    let lookup = || env.cluster.consensus.agreement(id).map_err(ServiceError::from);
    if let Some(record) = lookup()? {
        return Ok(record);
    }
    match tokio::time::timeout(UNKNOWN_NAME_CATCH_UP, env.cluster.catch_up()).await {
        Ok(Ok(())) => lookup()?.ok_or_else(|| ServiceError::Invalid(format!("no agreement {id:?}"))),
        Ok(Err(error)) => Err(ServiceError::Invalid(format!(
            "no agreement {id:?} on this node, which could not catch up with the leader: {error}"
        ))),
        Err(_) => Err(ServiceError::Invalid(format!(
            "no agreement {id:?} on this node, which did not catch up with the leader within {} ms",
            UNKNOWN_NAME_CATCH_UP.as_millis()
        ))),
    }
}

/// Terms as the tools show them (keys in hex, limits as text); read back
/// by [`terms_from_json`] to sign exactly what was shown.
pub fn terms_json(terms: &Terms) -> Value {
    json!({
        "id": terms.id,
        "consumer": terms.consumer,
        "provider": terms.provider.to_string(),
        "tools": terms.tools,
        "limits": terms.limits.iter().map(Limit::to_string).collect::<Vec<_>>(),
        "expires_at_ms": terms.expires_at_ms,
        "description": terms.description,
    })
}

/// The terms [`terms_json`] showed.
pub fn terms_from_json(shown: &Value) -> Result<Terms, String> {
    let text = |field: &str| shown[field].as_str().map(str::to_owned).ok_or_else(|| format!("terms lack {field}"));
    let list = |field: &str| -> Result<Vec<String>, String> {
        shown[field]
            .as_array()
            .ok_or_else(|| format!("terms lack {field}"))?
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(|| format!("{field} holds a non-string")))
            .collect()
    };
    let terms = Terms {
        id: text("id")?,
        consumer: text("consumer")?,
        provider: PublisherKey::parse(&text("provider")?).map_err(|error| error.to_string())?,
        tools: list("tools")?,
        limits: list("limits")?.iter().map(|limit| Limit::parse(limit)).collect::<Result<_, _>>()?,
        expires_at_ms: shown["expires_at_ms"].as_u64().ok_or("terms lack expires_at_ms")?,
        description: text("description")?,
    };
    terms.validate().map_err(|error| error.to_string())?;
    Ok(terms)
}

/// One violation as the tools and resources show it.
pub fn violation_json(violation: &Violation) -> Value {
    json!({
        "seq": violation.seq, "log_index": violation.log_index, "at_ms": violation.at_ms,
        "agent": violation.agent, "agreement": violation.agreement, "tool": violation.tool,
        "reason": violation.reason,
    })
}

fn usage_totals(usage: &Usage) -> Value {
    Value::Object(Metric::ALL.iter().map(|metric| (metric.name().to_owned(), json!(usage.get(*metric)))).collect())
}

/// Usage against each limit in its current window, as `agreement_usage`
/// and `agreement://{id}/usage` show it.
pub fn usage_json(record: &AgreementRecord, ledger: &Ledger) -> Value {
    let limits: Vec<Value> = record
        .terms
        .limits
        .iter()
        .enumerate()
        .map(|(index, limit)| {
            let window = ledger.windows.get(index).copied().unwrap_or_default();
            json!({
                "limit": limit.to_string(), "metric": limit.metric.name(), "window": limit.window.name(),
                "max": limit.max, "used": window.used, "window_start_ms": window.start_ms,
                "resets_at_ms": limit.window.resets_at(window.start_ms),
            })
        })
        .collect();
    json!({
        "id": record.terms.id,
        "state": record.state.name(),
        "limits": limits,
        "totals": usage_totals(&ledger.totals),
        "refused": ledger.refused,
        "reservations": ledger.next_seq,
    })
}

/// An agreement as `agreement_show` and `agreement://{id}` show it.
pub fn agreement_json(record: &AgreementRecord, ledger: &Ledger) -> Value {
    let history: Vec<Value> = record
        .history
        .iter()
        .map(|change| json!({ "log_index": change.log_index, "at_ms": change.at_ms, "what": change.what }))
        .collect();
    json!({
        "terms": terms_json(&record.terms),
        "state": record.state.name(),
        "reason": record.state.reason(),
        "signed_by_consumer": record.consumer_signature.is_some(),
        "signed_by_provider": record.provider_signature.is_some(),
        "history": history,
        "history_dropped": record.history_dropped,
        "usage": usage_json(record, ledger),
    })
}

async fn change(env: &ToolEnv, tool: &str, command: AgreementCommand) -> ToolOutcome {
    command.validate().map_err(|error| invalid(tool, error))?;
    let (log_index, reply) = env.cluster.propose(Command::Agreement(command)).await?;
    match reply {
        CommandReply::Agreement(AgreementOutcome::Changed { id, state, what }) => {
            Ok(json!({ "id": id, "state": state.name(), "what": what, "log_index": log_index }))
        }
        CommandReply::Agreement(AgreementOutcome::Refused(check)) => {
            Err(ServiceError::Refused(check.to_string()).into())
        }
        CommandReply::Rejected(reason) => Err(ServiceError::Invalid(reason).into()),
        other => Err(ServiceError::Unknown(format!("unexpected reply {other:?}")).into()),
    }
}
