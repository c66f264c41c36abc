//! Proofs of usage on this node: its proving key (made once, kept in the
//! data directory, its verifying key registered in the replicated state),
//! and the pool proofs run on: one thread of its own, so a proof never
//! holds a Raft, mesh or API thread, and one proof at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use zeromesh_consensus::TraceError;
use zeromesh_protocol::agreement::{check_account_id, Limit, Metric, Window};
use zeromesh_protocol::trace::{TraceCommand, TraceOutcome, UsageKeyRecord};
use zeromesh_protocol::{Command, CommandReply};
use zeromesh_trace::bundle::{encode_bytes, LeafProof, ProofBundle, UsageBundle};
use zeromesh_trace::checkpoint::SignedCheckpoint;
use zeromesh_trace::usage::{encode_verifying_key, Chunk, Opening, CIRCUIT_VERSION, MAX_RECORDS_PER_WINDOW};
use zeromesh_trace::usage_circuit::UsageProver;

use super::trace::{failed, trace_failed};
use super::{invalid, Invocation, ToolEnv, ToolError, ToolOutcome};
use crate::cluster::{Cluster, ServiceError};

/// Largest proving key file read back (about 5.5 MB for version 1).
const MAX_PROVING_KEY_BYTES: u64 = 64 * 1024 * 1024;
/// How long a proof waits for a checkpoint that covers its entries.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(60);

/// A proving key loaded, with what names it in the replicated state.
struct LoadedKey {
    prover: UsageProver,
    verifying_key: Vec<u8>,
    sha256: [u8; 32],
}

pub struct UsageProofs {
    key_file: PathBuf,
    pool: rayon::ThreadPool,
    key: tokio::sync::Mutex<Option<Arc<LoadedKey>>>,
    /// One proof at a time; another asked meanwhile is refused, not queued.
    busy: Arc<tokio::sync::Semaphore>,
}

fn random_seed() -> Result<[u8; 32], ToolError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| failed(format!("no randomness for a proof of usage: {e}")))?;
    Ok(seed)
}

impl UsageProofs {
    pub fn new(data_dir: &Path) -> anyhow::Result<UsageProofs> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "usage-prover".into())
            .build()
            .map_err(|e| anyhow::anyhow!("starting the usage prover's thread: {e}"))?;
        Ok(UsageProofs {
            key_file: data_dir.join(format!("usage-proving-key-v{CIRCUIT_VERSION}.bin")),
            pool,
            key: tokio::sync::Mutex::new(None),
            busy: Arc::new(tokio::sync::Semaphore::new(1)),
        })
    }

    /// Runs `job` on the prover's thread.
    async fn on_pool<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, ToolError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.pool.spawn(move || {
            let _ = done.send(job());
        });
        answer.await.map_err(|_| failed("the usage prover's thread stopped"))
    }

    /// This node's proving key: read from its file, or made (once) and
    /// written there.
    async fn key(&self) -> Result<Arc<LoadedKey>, ToolError> {
        let mut slot = self.key.lock().await;
        if let Some(key) = slot.as_ref() {
            return Ok(key.clone());
        }
        let file = self.key_file.clone();
        let seed = random_seed()?;
        let loaded = self
            .on_pool(move || -> anyhow::Result<LoadedKey> {
                let (prover, bytes) = match std::fs::metadata(&file) {
                    Ok(meta) if meta.len() <= MAX_PROVING_KEY_BYTES => {
                        let bytes = std::fs::read(&file)?;
                        let prover = UsageProver::from_bytes(&bytes)
                            .map_err(|e| anyhow::anyhow!("{}: {e}; delete it to make a new key", file.display()))?;
                        (prover, bytes)
                    }
                    Ok(_) => anyhow::bail!("{} is larger than any proving key", file.display()),
                    Err(_) => {
                        let prover = UsageProver::setup_from_seed(seed)?;
                        let bytes = prover.to_bytes();
                        crate::cluster::write_durably(&file, &bytes)?;
                        (prover, bytes)
                    }
                };
                let verifying_key = encode_verifying_key(prover.verifying_key());
                Ok(LoadedKey { prover, verifying_key, sha256: Sha256::digest(&bytes).into() })
            })
            .await?
            .map_err(|e| failed(format!("the proving key for proofs of usage: {e:#}")))?;
        let loaded = Arc::new(loaded);
        *slot = Some(loaded.clone());
        Ok(loaded)
    }

    /// This node's key as the replicated state holds it, registering it
    /// first when it is not there, not this one, or (`again`) its entry was
    /// compacted away.
    async fn registered(&self, cluster: &Cluster, key: &LoadedKey, again: bool) -> Result<UsageKeyRecord, ToolError> {
        let node = cluster.node_id();
        let kept = cluster.consensus.usage_key(CIRCUIT_VERSION, node).map_err(failed)?;
        if let Some(record) =
            kept.filter(|r| !again && r.verifying_key == key.verifying_key && r.proving_key_sha256 == key.sha256)
        {
            return Ok(record);
        }
        let command = TraceCommand::RegisterUsageKey {
            node,
            version: CIRCUIT_VERSION,
            verifying_key: key.verifying_key.clone(),
            proving_key_sha256: key.sha256,
        };
        let (index, reply) = cluster.propose(Command::Trace(command)).await.map_err(ToolError::Failed)?;
        match reply {
            CommandReply::Trace(TraceOutcome::Registered { .. }) => {}
            CommandReply::Trace(TraceOutcome::Refused(reason)) => {
                return Err(ToolError::Failed(ServiceError::Refused(format!("the usage key was refused: {reason}"))))
            }
            other => return Err(failed(format!("unexpected reply {other:?}"))),
        }
        cluster.consensus.wait_trace(index + 1, CHECKPOINT_WAIT).await.map_err(trace_failed)?;
        cluster
            .consensus
            .usage_key(CIRCUIT_VERSION, node)
            .map_err(failed)?
            .ok_or_else(|| failed("the usage key registered is not in the state"))
    }

    /// Proves that `openings` sum to at most `limit`, on the prover's thread.
    async fn prove(&self, key: Arc<LoadedKey>, limit: u64, openings: Vec<Opening>) -> Result<Vec<Chunk>, ToolError> {
        let seed = random_seed()?;
        self.on_pool(move || key.prover.prove_window_from_seed(limit, &openings, seed))
            .await?
            .map_err(|e| ToolError::Failed(ServiceError::Refused(e.to_string())))
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ProveUsageArgs {
    /// The agreement, or `agent/{id}` for an agent's own quotas.
    agreement: String,
    /// Which of its limits: `metric/window`, e.g. `calls/minute`.
    limit: String,
    /// When the window began (ms since the epoch); the newest window with
    /// records when left out.
    window_start_ms: Option<u64>,
}

/// The limit `text` (`metric/window`) names among `limits`, by position.
fn find_limit(limits: &[Limit], text: &str) -> Result<(u8, Limit), String> {
    let named =
        text.split_once('/').and_then(|(metric, window)| Some((Metric::parse(metric)?, Window::parse(window)?)));
    let listed =
        || limits.iter().map(|l| format!("{}/{}", l.metric.name(), l.window.name())).collect::<Vec<_>>().join(", ");
    let (metric, window) = named.ok_or_else(|| format!("{text:?} is not metric/window, e.g. calls/minute"))?;
    let position = limits.iter().position(|l| l.metric == metric && l.window == window);
    let index = position.ok_or_else(|| format!("no limit {text}; its limits are: {}", listed()))?;
    Ok((index as u8, limits[index]))
}

/// The latest checkpoint, once it covers the first `size` entries.
async fn checkpoint_covering(cluster: &Cluster, size: u64) -> Result<(String, u64), ToolError> {
    let mut latest = cluster.checkpoints.latest_size.subscribe();
    let covered =
        matches!(tokio::time::timeout(CHECKPOINT_WAIT, latest.wait_for(|latest| *latest >= size)).await, Ok(Ok(_)));
    if !covered {
        return Err(failed(format!(
            "no cosigned checkpoint covers entry {} yet; the leader makes one every checkpoint_interval_ms once the log grew: retry then",
            size - 1
        )));
    }
    let text = cluster.consensus.trace_checkpoint().await.map_err(failed)?;
    let text = text.ok_or_else(|| failed("the checkpoint kept here could not be read back"))?;
    let signed = SignedCheckpoint::parse(&text).map_err(failed)?;
    Ok((text, signed.checkpoint.size))
}

async fn leaf_proof(
    cluster: &Cluster,
    index: u64,
    leaf: Vec<u8>,
    payload: Option<Vec<u8>>,
    size: u64,
) -> Result<LeafProof, ToolError> {
    let path = cluster.consensus.trace_inclusion(index, size).await.map_err(trace_failed)?;
    Ok(LeafProof { index, leaf: encode_bytes(&leaf), payload: payload.as_deref().map(encode_bytes), path })
}

pub(super) async fn prove_usage(env: Arc<ToolEnv>, invocation: Invocation, args: ProveUsageArgs) -> ToolOutcome {
    const TOOL: &str = "trace_prove_usage";
    let cluster = &env.cluster;
    check_account_id(&args.agreement).map_err(|e| invalid(TOOL, e))?;
    let record = match zeromesh_protocol::agreement::account_agent(&args.agreement) {
        Some(agent) => cluster
            .consensus
            .agent(agent)
            .map_err(ServiceError::from)?
            .map(|agent| zeromesh_protocol::agreement::AgreementRecord::for_agent(&agent)),
        None => cluster.consensus.agreement(&args.agreement).map_err(ServiceError::from)?,
    };
    let record = record.ok_or_else(|| invalid(TOOL, format!("no agreement or agent account {:?}", args.agreement)))?;
    let (limit_index, limit) = find_limit(&record.terms.limits, &args.limit).map_err(|e| invalid(TOOL, e))?;
    let account = args.agreement.clone();
    let start = match args.window_start_ms {
        Some(start) => start,
        None => *cluster
            .consensus
            .usage_windows(account.clone(), limit_index)
            .await
            .map_err(trace_failed)?
            .last()
            .ok_or_else(|| invalid(TOOL, format!("no usage of {account}'s limit {limit} is recorded")))?,
    };
    let window = cluster.consensus.usage_window(account.clone(), limit_index, start).await.map_err(trace_failed)?;
    if window.overflowed {
        return Err(invalid(
            TOOL,
            format!("the window from {start} ms had more than the {MAX_RECORDS_PER_WINDOW} records a proof covers"),
        ));
    }
    if window.records.is_empty() {
        return Err(invalid(
            TOOL,
            format!("no record of {account}'s limit {limit} in the window from {start} ms is kept"),
        ));
    }

    let permit = env.usage_proofs.busy.clone().try_acquire_owned().map_err(|_| {
        ToolError::Failed(ServiceError::Unavailable(
            "this node is making another proof of usage; retry when it is done".into(),
        ))
    })?;
    (invocation.progress)(1, 4, "loading or making this node's proving key");
    let key = env.usage_proofs.key().await?;
    let mut registered = env.usage_proofs.registered(cluster, &key, false).await?;
    let (key_leaf, key_payload) = match cluster.consensus.trace_leaf_bytes(registered.log_index).await {
        Ok(bytes) => bytes,
        // Its entry was compacted away: registered again, it is shown anew.
        Err(TraceError::Compacted { .. }) => {
            registered = env.usage_proofs.registered(cluster, &key, true).await?;
            cluster.consensus.trace_leaf_bytes(registered.log_index).await.map_err(trace_failed)?
        }
        Err(other) => return Err(trace_failed(other)),
    };
    (invocation.progress)(2, 4, "proving");
    let openings = window.records.iter().map(|r| Opening { amount: r.amount, blinding: r.blinding }).collect();
    let chunks = env.usage_proofs.prove(key, limit.max, openings).await?;
    drop(permit);

    (invocation.progress)(3, 4, "waiting for a checkpoint that covers the records");
    let last = window.records.iter().map(|r| r.log_index).max().unwrap_or(0).max(registered.log_index);
    let (checkpoint, size) = checkpoint_covering(cluster, last + 1).await?;
    let mut records = Vec::with_capacity(window.records.len());
    for record in &window.records {
        records.push(leaf_proof(cluster, record.log_index, record.leaf.clone(), None, size).await?);
    }
    let key = leaf_proof(cluster, registered.log_index, key_leaf, Some(key_payload), size).await?;
    let bundle = ProofBundle::Usage(UsageBundle {
        account: account.clone(),
        limit_index,
        window_start_ms: start,
        records,
        key,
        chunks,
        tree_size: size,
        checkpoint,
    });
    let mut answer = serde_json::to_value(&bundle).map_err(failed)?;
    answer["statement"] = json!({
        "limit": limit.to_string(),
        "records": window.records.len(),
        "prover": cluster.node_id(),
    });
    Ok(answer)
}
