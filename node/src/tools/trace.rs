//! The trace log's tools: the latest cosigned checkpoint with the voters'
//! keys, inclusion proofs of entries, consistency proofs between sizes.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use zeromesh_consensus::TraceError;
use zeromesh_kernel::Access;
use zeromesh_protocol::trace::TracePayload;
use zeromesh_trace::bundle::{encode_bytes, ConsistencyBundle, InclusionBundle, ProofBundle};
use zeromesh_trace::checkpoint::SignedCheckpoint;

use super::{invalid, Invocation, NoArgs, ToolDecl, ToolEnv, ToolError, ToolOutcome};
use crate::cluster::{Cluster, ServiceError};

pub(super) fn tools() -> Vec<ToolDecl> {
    vec![
        ToolDecl::new(
            "trace_checkpoint",
            "The latest checkpoint of the trace log cosigned by a majority of voters (C2SP signed note), this node's tree size and root, and the voters' verifier keys.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, _: NoArgs| async move { checkpoint(&env.cluster).await },
        ),
        ToolDecl::new(
            "trace_prove",
            "An inclusion proof of log entry INDEX in the latest checkpoint, with the entry's leaf and payload bytes; check it offline with `zeromesh trace verify`.",
            Access::Admin,
            prove,
        ),
        ToolDecl::new(
            "trace_prove_usage",
            "A proof that the usage recorded in one window of an agreement's limit sums to at most the limit, without revealing the amounts: Groth16 over the records' Poseidon commitments, with each record's leaf proved in the latest checkpoint. Made on this node's prover thread; check it offline with `zeromesh trace verify`.",
            Access::Admin,
            super::usage_proofs::prove_usage,
        ),
        ToolDecl::new(
            "trace_consistency",
            "A consistency proof that the trace log at size FROM is a prefix of the log the latest checkpoint signs.",
            Access::Observe,
            consistency,
        ),
    ]
}

pub(super) fn failed(error: impl std::fmt::Display) -> ToolError {
    ToolError::Failed(ServiceError::Unavailable(error.to_string()))
}

pub(super) fn trace_failed(error: TraceError) -> ToolError {
    match error {
        TraceError::Proof(_) | TraceError::NotYetApplied { .. } => {
            ToolError::Failed(ServiceError::Invalid(error.to_string()))
        }
        other => failed(other),
    }
}

/// The latest checkpoint this node keeps, parsed; an error a user can act
/// on when there is none yet.
async fn latest(cluster: &Cluster) -> Result<(String, SignedCheckpoint), ToolError> {
    let text = cluster.consensus.trace_checkpoint().await.map_err(failed)?.ok_or_else(|| {
        ToolError::Failed(ServiceError::Unavailable(
            "no trace checkpoint yet: the leader makes one every checkpoint_interval_ms (10 s by default) once the log grew; retry then".into(),
        ))
    })?;
    let signed = SignedCheckpoint::parse(&text).map_err(failed)?;
    Ok((text, signed))
}

async fn checkpoint(cluster: &Cluster) -> ToolOutcome {
    let head = cluster.consensus.trace_head();
    let text = cluster.consensus.trace_checkpoint().await.map_err(failed)?;
    let voters: Vec<String> =
        cluster.voter_verifiers().map_err(failed)?.into_iter().map(|(_, verifier)| verifier.encode()).collect();
    Ok(json!({
        "checkpoint": text,
        "tree_size": head.size,
        "root": head.root.to_hex(),
        "origin": cluster.trace_origin().await.ok(),
        "voters": voters,
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ProveArgs {
    /// The entry's log index (every write's answer carries it).
    index: u64,
}

async fn prove(env: Arc<ToolEnv>, _: Invocation, args: ProveArgs) -> ToolOutcome {
    let consensus = &env.cluster.consensus;
    let (text, signed) = latest(&env.cluster).await?;
    let size = signed.checkpoint.size;
    if args.index >= size {
        return Err(invalid(
            "trace_prove",
            format!(
                "entry {} is not in the latest checkpoint yet (it covers entries 0 to {}); retry after the next checkpoint",
                args.index,
                size.saturating_sub(1)
            ),
        ));
    }
    let path = consensus.trace_inclusion(args.index, size).await.map_err(trace_failed)?;
    let leaf_hash = consensus.trace_leaf_hash(args.index).await.map_err(trace_failed)?;
    let (leaf, payload) = match consensus.trace_leaf_bytes(args.index).await {
        Ok((leaf, payload)) => (Some(leaf), Some(payload)),
        Err(TraceError::Compacted { .. }) => (None, None),
        Err(other) => return Err(trace_failed(other)),
    };
    let entry = payload.as_deref().and_then(|bytes| TracePayload::from_bytes(bytes, usize::MAX).ok());
    let bundle = ProofBundle::Inclusion(InclusionBundle {
        index: args.index,
        leaf: leaf.as_deref().map(encode_bytes),
        payload: payload.as_deref().map(encode_bytes),
        leaf_hash,
        tree_size: size,
        path,
        checkpoint: text,
    });
    let mut answer = serde_json::to_value(&bundle).map_err(failed)?;
    answer["entry"] = entry.map_or(Value::Null, |entry| serde_json::to_value(entry).unwrap_or(Value::Null));
    Ok(answer)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConsistencyArgs {
    /// The older tree size (an earlier checkpoint's).
    from: u64,
    /// The newer tree size; the latest checkpoint's when left out. A proof
    /// to another size carries no checkpoint: verify it against one you
    /// kept of that size.
    to: Option<u64>,
}

async fn consistency(env: Arc<ToolEnv>, _: Invocation, args: ConsistencyArgs) -> ToolOutcome {
    let consensus = &env.cluster.consensus;
    let (text, signed) = latest(&env.cluster).await?;
    let to = args.to.unwrap_or(signed.checkpoint.size);
    if args.from > to {
        return Err(invalid("trace_consistency", format!("size {} is beyond size {to}", args.from)));
    }
    let path = consensus.trace_consistency(args.from, to).await.map_err(trace_failed)?;
    let old_root = consensus.trace_root(args.from).await.map_err(trace_failed)?;
    let checkpoint = if to == signed.checkpoint.size { text } else { String::new() };
    let bundle =
        ProofBundle::Consistency(ConsistencyBundle { old_size: args.from, old_root, new_size: to, path, checkpoint });
    serde_json::to_value(&bundle).map_err(failed)
}
