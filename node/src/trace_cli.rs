//! `zeromesh trace ...`: the trace log's checkpoints and proofs, fetched
//! from a node, and checked offline (`verify` needs no node).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};
use zeromesh::client::ApiClient;
use zeromesh_protocol::trace::{TraceLeaf, TracePayload};
use zeromesh_trace::bundle::ProofBundle;
use zeromesh_trace::note::{NoteVerifier, MAX_NOTE_BYTES};

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
        /// A proof file written by `prove` or `consistency`.
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
    let bytes = crate::plugin_cli::read_limited(path, max_bytes, what)?;
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
