//! `zeromesh trace ...`: the trace log's checkpoints and proofs, fetched
//! from a node, and checked offline (`verify` needs no node).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};
use zeromesh::client::ApiClient;
use zeromesh_protocol::trace::{TraceCommand as RegisterCommand, TraceLeaf, TracePayload};
use zeromesh_protocol::Command;
use zeromesh_trace::bundle::{LeafProof, ProofBundle, UsageBundle};
use zeromesh_trace::note::{NoteVerifier, MAX_NOTE_BYTES};
use zeromesh_trace::usage::{Commitment, UsageVerifier, CIRCUIT_VERSION};

/// Largest proof file `verify` reads (a leaf holds up to one 4 MiB batch).
const MAX_PROOF_FILE_BYTES: usize = 16 * 1024 * 1024;
/// Largest verifier-keys file.
const MAX_KEYS_FILE_BYTES: usize = 64 * 1024;

#[derive(Subcommand)]
pub enum TraceCommand {
    /// Prints the latest checkpoint cosigned by a majority of voters.
    Checkpoint {
        /// Writes it to FILE instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Prints the voters' verifier keys, one per line (for `verify --keys`).
    Keys {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fetches an inclusion proof of log entry INDEX in the latest
    /// checkpoint, with the entry's leaf and payload. Needs an admin token.
    Prove {
        #[arg(long)]
        index: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Has a node prove that the usage recorded in one window of an
    /// agreement's limit sums to at most the limit, without revealing the
    /// amounts. Needs an admin token.
    ProveUsage {
        /// The agreement, or `agent/ID` for an agent's own quotas.
        #[arg(long)]
        agreement: String,
        /// The limit and window: `metric/window` for its newest window with
        /// records (e.g. `calls/minute`), or `metric/window@START_MS`.
        #[arg(long)]
        window: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fetches a consistency proof from tree size FROM to TO (the latest
    /// checkpoint's size when left out).
    Consistency {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: Option<u64>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Checks a proof offline: the checkpoint's cosignatures by a majority
    /// of the voters in KEYS, then the proof against its root.
    Verify {
        /// A proof file written by `prove`, `prove-usage` or `consistency`.
        #[arg(long)]
        proof: PathBuf,
        /// The voters' verifier keys, one per line (`zeromesh trace keys`).
        #[arg(long)]
        keys: PathBuf,
        /// A checkpoint to check against instead of the one in the proof.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// For a consistency proof: an earlier checkpoint you kept, whose
        /// root the proof's old root must be.
        #[arg(long)]
        old_checkpoint: Option<PathBuf>,
    },
}

/// A text file of at most `max_bytes`.
fn read_text(path: &Path, max_bytes: usize, what: &str) -> anyhow::Result<String> {
    let bytes = zeromesh::files::read_limited(path, max_bytes, what)?;
    String::from_utf8(bytes).with_context(|| format!("{what} {} is not UTF-8 text", path.display()))
}

/// Verifier keys from a file: one per line, `#` starts a comment.
pub fn read_keys(path: &Path) -> anyhow::Result<Vec<NoteVerifier>> {
    let text = read_text(path, MAX_KEYS_FILE_BYTES, "keys file")?;
    let keys = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(|line| NoteVerifier::parse(line).with_context(|| format!("{}: {line:?}", path.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if keys.is_empty() {
        bail!("{} holds no verifier key", path.display());
    }
    Ok(keys)
}

fn emit(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Runs a trace command; all but `verify` ask `node`.
pub async fn run(node: &str, command: TraceCommand) -> anyhow::Result<()> {
    if let TraceCommand::Verify { proof, keys, checkpoint, old_checkpoint } = &command {
        return verify(proof, keys, checkpoint.as_deref(), old_checkpoint.as_deref());
    }
    let client = ApiClient::connect(node).await.with_context(|| format!("connecting to {node}"))?;
    let call = |tool: &'static str, arguments: Value| {
        let (mut client, node) = (client, node.to_owned());
        async move { client.call_tool(tool, arguments).await.with_context(|| format!("{tool} on {node}")) }
    };
    match command {
        TraceCommand::Checkpoint { out } => {
            let answer = call("trace_checkpoint", json!({})).await?;
            let Some(text) = answer["checkpoint"].as_str() else {
                bail!(
                    "{node} has no cosigned checkpoint yet (tree size {}); retry in a few seconds",
                    answer["tree_size"]
                );
            };
            emit(out.as_deref(), text)
        }
        TraceCommand::Keys { out } => {
            let answer = call("trace_checkpoint", json!({})).await?;
            let keys: String = answer["voters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|k| format!("{k}\n"))
                .collect();
            emit(out.as_deref(), &keys)
        }
        TraceCommand::Prove { index, out } => {
            let answer = call("trace_prove", json!({ "index": index })).await?;
            emit(out.as_deref(), &format!("{}\n", serde_json::to_string_pretty(&answer)?))
        }
        TraceCommand::ProveUsage { agreement, window, out } => {
            let (limit, start) = match window.split_once('@') {
                Some((limit, start)) => {
                    let start: u64 = start
                        .parse()
                        .with_context(|| format!("{start:?} is not a window start in ms since the epoch"))?;
                    (limit.to_owned(), Some(start))
                }
                None => (window, None),
            };
            let arguments = json!({ "agreement": agreement, "limit": limit, "window_start_ms": start });
            let answer = call("trace_prove_usage", arguments).await?;
            emit(out.as_deref(), &format!("{}\n", serde_json::to_string_pretty(&answer)?))
        }
        TraceCommand::Consistency { from, to, out } => {
            let answer = call("trace_consistency", json!({ "from": from, "to": to })).await?;
            emit(out.as_deref(), &format!("{}\n", serde_json::to_string_pretty(&answer)?))
        }
        TraceCommand::Verify { .. } => unreachable!("handled above"),
    }
}

/// `zeromesh trace verify`: no node, only files.
fn verify(proof: &Path, keys: &Path, checkpoint: Option<&Path>, old_checkpoint: Option<&Path>) -> anyhow::Result<()> {
    let keys = read_keys(keys)?;
    let text = read_text(proof, MAX_PROOF_FILE_BYTES, "proof file")?;
    let mut bundle: ProofBundle =
        serde_json::from_str(&text).with_context(|| format!("{} is not a zeromesh proof", proof.display()))?;
    if let Some(path) = checkpoint {
        let replacement = read_text(path, MAX_NOTE_BYTES, "checkpoint")?;
        match &mut bundle {
            ProofBundle::Inclusion(inclusion) => inclusion.checkpoint = replacement,
            ProofBundle::Consistency(consistency) => consistency.checkpoint = replacement,
            ProofBundle::Usage(usage) => usage.checkpoint = replacement,
        }
    }
    match bundle {
        ProofBundle::Inclusion(inclusion) => {
            let verified = inclusion.verify(&keys).map_err(|e| anyhow::anyhow!("FAILED: {e}"))?;
            let what = describe_leaf(verified.leaf.as_deref(), verified.payload.as_deref())
                .map_err(|e| anyhow::anyhow!("FAILED: {e}"))?;
            println!(
                "OK: entry {} ({what}) is in log {} of {} entries, root {}, cosigned by {} of {} voters",
                inclusion.index,
                verified.origin,
                verified.tree_size,
                verified.root,
                verified.cosigners.len(),
                keys.len()
            );
        }
        ProofBundle::Usage(usage) => {
            println!("{}", verify_usage(&usage, &keys).map_err(|e| anyhow::anyhow!("FAILED: {e}"))?);
        }
        ProofBundle::Consistency(consistency) => {
            if consistency.checkpoint.is_empty() {
                bail!("this proof carries no checkpoint of size {}: give one with --checkpoint", consistency.new_size);
            }
            let older = old_checkpoint.map(|path| read_text(path, MAX_NOTE_BYTES, "checkpoint")).transpose()?;
            let verified = consistency.verify(&keys, older.as_deref()).map_err(|e| anyhow::anyhow!("FAILED: {e}"))?;
            println!(
                "OK: log {} at {} entries (root {}) extends its first {} entries (root {}), cosigned by {} of {} voters",
                verified.origin,
                verified.tree_size,
                verified.root,
                consistency.old_size,
                consistency.old_root,
                verified.cosigners.len(),
                keys.len()
            );
        }
    }
    Ok(())
}

/// Checks a proof of usage: every record's leaf and the key's entry in the
/// cosigned checkpoint, the records numbered 0, 1, 2... in their window,
/// the verifying key from the entry that registered it, and the chained
/// Groth16 proofs over the leaves' commitments. What it established, or why
/// not.
fn verify_usage(bundle: &UsageBundle, keys: &[NoteVerifier]) -> Result<String, String> {
    let leaves = bundle.verify_leaves(keys).map_err(|e| e.to_string())?;
    let (account, start) = (&bundle.account, bundle.window_start_ms);
    let mut commitments = Vec::with_capacity(leaves.records.len());
    let mut limit = None;
    for (ordinal, (proof, bytes)) in bundle.records.iter().zip(&leaves.records).enumerate() {
        let header = TraceLeaf::from_bytes(bytes).map_err(|e| format!("leaf {}: {e}", proof.index))?;
        if header.index != proof.index {
            return Err(format!("the leaf proved at {} is the leaf of entry {}", proof.index, header.index));
        }
        let record = header
            .commitments
            .iter()
            .find(|c| c.account == *account && c.limit_index == bundle.limit_index && c.window_start_ms == start)
            .ok_or_else(|| {
                format!("leaf {} holds no usage record of {account} in the window from {start} ms", header.index)
            })?;
        if record.ordinal as usize != ordinal {
            return Err(format!(
                "leaf {} holds record {} of the window where record {ordinal} belongs: a record is missing, repeated or out of order",
                header.index, record.ordinal
            ));
        }
        if limit.is_some_and(|limit| limit != record.limit) {
            return Err(format!("leaf {} names another limit than the records before it", header.index));
        }
        limit = Some(record.limit);
        commitments.push(Commitment(record.commitment));
    }
    let limit = limit.ok_or("the proof holds no usage record")?;
    let key_header = TraceLeaf::from_bytes(&leaves.key_leaf).map_err(|e| format!("the key's leaf: {e}"))?;
    let payload = leaves.key_payload.as_deref().ok_or("the key's entry is shown without its payload")?;
    key_header.check_payload(payload).map_err(|e| format!("the key's entry: {e}"))?;
    let decoded = TracePayload::from_bytes(payload, payload.len()).map_err(|e| format!("the key's entry: {e}"))?;
    let TracePayload::Command(request) = decoded else {
        return Err(format!("entry {} is not a command", key_header.index));
    };
    let Command::Trace(RegisterCommand::RegisterUsageKey { node, version, verifying_key, .. }) = &request.command
    else {
        return Err(format!("entry {} does not register a key for proofs of usage", key_header.index));
    };
    if *version != CIRCUIT_VERSION {
        return Err(format!("the key is for circuit version {version}; this build checks version {CIRCUIT_VERSION}"));
    }
    let verifier = UsageVerifier::from_bytes(verifying_key).map_err(|e| e.to_string())?;
    verifier.verify_window(limit.max, &commitments, &bundle.chunks).map_err(|e| format!("the proof of usage: {e}"))?;
    let checkpoint = &leaves.checkpoint;
    let entries = |which: Option<&LeafProof>| which.map_or(0, |leaf| leaf.index);
    Ok(format!(
        "OK: the {records} usage records of {account}'s limit {limit} in the window from {start} ms \
         (entries {first} to {last}) sum to at most {max}; the amounts are not revealed.\n\
         Proved with node {node}'s key (registered at entry {key}) in log {origin} of {size} entries, \
         root {root}, cosigned by {cosigners} of {voters} voters.\n\
         Not shown: that the window has no record after number {final_ordinal}; only the log holds them all.",
        records = commitments.len(),
        first = entries(bundle.records.first()),
        last = entries(bundle.records.last()),
        max = limit.max,
        key = key_header.index,
        origin = checkpoint.origin,
        size = checkpoint.tree_size,
        root = checkpoint.root,
        cosigners = checkpoint.cosigners.len(),
        voters = keys.len(),
        final_ordinal = commitments.len() - 1,
    ))
}

/// What a verified leaf holds, its payload checked against the hash the
/// leaf names.
fn describe_leaf(leaf: Option<&[u8]>, payload: Option<&[u8]>) -> Result<String, String> {
    let Some(leaf) = leaf else {
        return Ok("only its hash: the node had compacted the entry away".to_owned());
    };
    let header = TraceLeaf::from_bytes(leaf)?;
    let Some(payload) = payload else {
        return Ok(format!("{:?} entry of term {}, payload not shown", header.kind, header.term));
    };
    header.check_payload(payload)?;
    // The payload is proved by its hash; one this build cannot decode (a
    // newer command) is still proved, only not described.
    let decoded = match TracePayload::from_bytes(payload, payload.len()) {
        Ok(decoded) => decoded,
        Err(error) => {
            return Ok(format!("{:?} entry of term {}, payload not decoded: {error}", header.kind, header.term))
        }
    };
    Ok(match decoded {
        TracePayload::Blank => format!("term {} blank entry", header.term),
        TracePayload::Membership { configs, members } => {
            format!("membership: {} members, voters {configs:?}", members.len())
        }
        TracePayload::Command(request) => {
            let kind = serde_json::to_value(&request.command)
                .ok()
                .and_then(|value| value.as_object().and_then(|o| o.keys().next().cloned()))
                .unwrap_or_else(|| "command".into());
            format!("{kind} command stamped at {} ms", request.stamped_at_ms)
        }
    })
}
