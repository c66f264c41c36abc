//! Plugin calls run on peers. A call of a plugin this node does not run (it
//! runs no plugins, or has not loaded this one), or one made while this node
//! is loaded past `offload_above_load`, goes to peers that run the plugin's
//! module, chosen from their adverts (`zeromesh_kernel::placement`), over
//! the offload protocol. The peer runs it under the same limits and answers
//! with a receipt signed by its peer key, which is verified before the
//! result is used and the usage settled with it.
//!
//! A call is never run twice when its first run may have had an effect the
//! caller could see: the only such effect a plugin has is a memory write,
//! so a call of a plugin granted `memory.write` goes to another node only
//! when the one before certainly did not run it (it answered "not run", or
//! the request was never delivered). When that is not certain (no answer,
//! a lost connection, a receipt that does not verify), such a call fails as
//! `outcome_unknown`; a call of any other plugin, which has no effect
//! outside its own fresh instance, is tried on the next node.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use zeromesh_kernel::placement::{self, Candidate, Here, Place};
use zeromesh_plugins::CallCaps;
use zeromesh_protocol::limits::{MAX_OFFLOAD_ATTEMPTS, MAX_OFFLOAD_SENT_IN_FLIGHT, MAX_PLUGIN_WALL_CLOCK_MS};
use zeromesh_protocol::plugin::{Capability, InstalledPlugin};

use super::PluginRuntime;
use crate::cluster::{Cluster, ServiceError};
use crate::identity::node_id_of;
use crate::mesh::advert::{cores, load_milli, Advert};
use crate::mesh::offload::{
    sha256, CallKind, OffloadMessage, OffloadRequest, OffloadResponse, Receipt, ReceiptReservation, SignedReceipt,
};
use crate::mesh::{MeshSendError, OffloadHandler};

/// Time an offloaded call's answer may take past the call's own wall-clock
/// budget: to carry it both ways and queue it.
const OFFLOAD_MARGIN: Duration = Duration::from_secs(2);

/// How a node takes part in offloading.
pub struct OffloadSettings {
    /// Whether this node runs plugins itself (`run_plugins`).
    pub run_plugins: bool,
    /// Load per core, in thousandths, at or above which this node sends
    /// calls of plugins it runs to less loaded peers (`offload_above_load`).
    pub offload_above_milli: Option<u64>,
    /// The node's peer key, which signs the receipts of calls it runs for peers.
    pub keypair: Keypair,
}

/// What the node counts of offloaded calls.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Calls sent to a peer, by what came of them.
    pub sent_ran: u64,
    pub sent_not_run: u64,
    pub sent_unknown: u64,
    pub receipts_refused: u64,
    /// Calls run for peers, and calls of peers answered "not run".
    pub served_ran: u64,
    pub served_not_run: u64,
    /// Calls running for peers now.
    pub serving: i64,
}

#[derive(Default)]
struct AtomicCounters {
    sent_ran: AtomicU64,
    sent_not_run: AtomicU64,
    sent_unknown: AtomicU64,
    receipts_refused: AtomicU64,
    served_ran: AtomicU64,
    served_not_run: AtomicU64,
    serving: AtomicI64,
}

/// A failure's message as a host sent it: JSON text, or other JSON.
fn text_of(message: Value) -> String {
    match message {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(super) struct Offload {
    pub(super) settings: OffloadSettings,
    sent_slots: Semaphore,
    forge: AtomicBool,
    counters: AtomicCounters,
}

/// One call, as the runtime resolved it from the registry: of a plugin's
/// tool (`hash`: its module's SHA-256) or a federated server's (`hash`: the
/// tool's definition's SHA-256).
pub(super) struct Call<'a> {
    pub kind: CallKind,
    pub name: &'a str,
    pub hash: [u8; 32],
    pub tool: &'a str,
    pub arguments: Value,
    pub agent: &'a str,
    pub caps: CallCaps,
    pub reservation: Option<ReceiptReservation>,
}

/// Where a call ran.
#[derive(Debug, Clone)]
pub enum ServedBy {
    Here { node_id: u64 },
    Peer { node_id: u64, peer_id: PeerId, receipt: Box<Receipt>, signed: SignedReceipt },
}

impl ServedBy {
    /// The host, as a result's `_meta["zeromesh/host"]` shows it. Node ids
    /// are text: they are 64-bit, and a JavaScript client's numbers are not.
    pub fn host_meta(&self) -> Value {
        match self {
            ServedBy::Here { node_id } => json!({ "nodeId": node_id.to_string(), "offloaded": false }),
            ServedBy::Peer { node_id, peer_id, .. } => {
                json!({ "nodeId": node_id.to_string(), "peerId": peer_id.to_string(), "offloaded": true })
            }
        }
    }

    /// A peer's receipt, as a result's `_meta["zeromesh/receipt"]` shows it:
    /// its fields, and the signed bytes, key and signature to check it with.
    pub fn receipt_meta(&self) -> Option<Value> {
        let ServedBy::Peer { receipt, signed, .. } = self else { return None };
        Some(json!({
            "callId": hex::encode(receipt.call_id),
            "kind": match receipt.kind { CallKind::Plugin => "plugin", CallKind::Federated => "federated" },
            "peerId": receipt.peer_id,
            "nodeId": receipt.node_id.to_string(),
            "plugin": receipt.plugin,
            "tool": receipt.tool,
            "moduleSha256": hex::encode(receipt.module_sha256),
            "inputSha256": hex::encode(receipt.input_sha256),
            "outputSha256": hex::encode(receipt.output_sha256),
            "isError": receipt.is_error,
            "fuelUsed": receipt.fuel_used,
            "wallMs": receipt.wall_ms,
            "reservation": receipt.reservation.as_ref().map(|reservation| json!({
                "agreement": reservation.agreement,
                "key": reservation.key,
                "logIndex": reservation.log_index,
            })),
            "signed": hex::encode(&signed.receipt),
            "publicKey": hex::encode(&signed.public_key),
            "signature": hex::encode(&signed.signature),
        }))
    }
}

/// What a plugin call came to.
#[derive(Debug)]
pub struct PluginRun {
    pub answer: Result<Value, ServiceError>,
    /// Fuel counted: what the run that answered burnt (by its receipt, for
    /// a peer's), plus the whole cap of any run whose outcome is unknown.
    pub fuel: u64,
    pub served_by: Option<ServedBy>,
    /// The answer is an MCP tool result already (a federated server's),
    /// to pass on as it is.
    pub mcp_result: bool,
}

/// What one try on a peer came to.
pub(super) enum Attempt {
    Ran(PluginRun),
    /// Certainly not run there.
    NotRun(String),
    /// Perhaps run there.
    Unknown(String),
}

/// The live adverts of members other than this node, with their peer ids:
/// the advert's node id must be the one its (signing) peer id derives.
pub(super) fn peer_adverts(cluster: &Cluster) -> Vec<(PeerId, Advert)> {
    let own = cluster.mesh.peer_id();
    let members = cluster.consensus.members();
    cluster
        .mesh
        .adverts()
        .into_iter()
        .filter_map(|known| {
            let peer: PeerId = known.advert.peer_id.parse().ok()?;
            let member = node_id_of(&peer) == known.advert.node_id && members.contains_key(&known.advert.node_id);
            (peer != own && member).then_some((peer, known.advert))
        })
        .collect()
}

/// Module hashes that members other than this node advertise running.
pub fn modules_on_peers(cluster: &Cluster) -> HashSet<[u8; 32]> {
    peer_adverts(cluster)
        .into_iter()
        .flat_map(|(_, advert)| advert.plugin_hashes)
        .filter_map(|text| hex::decode(text).ok()?.try_into().ok())
        .collect()
}

/// A peer that may run a call: its id, addresses and node id.
pub(super) type Peer = (PeerId, Vec<Multiaddr>, u64);

/// Members other than this node whose live advert says they run `module`.
fn candidates(cluster: &Cluster, module: &[u8; 32]) -> Vec<Candidate<Peer>> {
    let module = hex::encode(module);
    let rtts: std::collections::HashMap<PeerId, Duration> =
        cluster.mesh.connected_peers().into_iter().filter_map(|peer| Some((peer.peer_id, peer.rtt?))).collect();
    peer_adverts(cluster)
        .into_iter()
        .filter(|(_, advert)| advert.plugin_hashes.contains(&module))
        .map(|(peer, advert)| Candidate {
            load_per_core_milli: advert.load_per_core_milli(),
            rtt_ms: rtts.get(&peer).map(|rtt| rtt.as_millis() as u64),
            peer: (
                peer,
                advert.listen_addrs.iter().filter_map(|address| address.parse().ok()).collect(),
                advert.node_id,
            ),
        })
        .collect()
}

fn random_call_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    if getrandom::fill(&mut id).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        id = nanos.as_nanos().to_be_bytes();
    }
    id
}

impl Offload {
    pub(super) fn new(settings: OffloadSettings) -> Offload {
        Offload {
            settings,
            sent_slots: Semaphore::new(MAX_OFFLOAD_SENT_IN_FLIGHT),
            forge: AtomicBool::new(false),
            counters: AtomicCounters::default(),
        }
    }

    pub(super) fn forge_receipts(&self, forge: bool) {
        self.forge.store(forge, Ordering::Relaxed);
    }

    pub(super) fn counters(&self) -> Counters {
        let c = &self.counters;
        Counters {
            sent_ran: c.sent_ran.load(Ordering::Relaxed),
            sent_not_run: c.sent_not_run.load(Ordering::Relaxed),
            sent_unknown: c.sent_unknown.load(Ordering::Relaxed),
            receipts_refused: c.receipts_refused.load(Ordering::Relaxed),
            served_ran: c.served_ran.load(Ordering::Relaxed),
            served_not_run: c.served_not_run.load(Ordering::Relaxed),
            serving: c.serving.load(Ordering::Relaxed),
        }
    }

    /// Runs `call` at the places [`placement::plan`] gives, in order, until
    /// one answers (see the module's documentation for when a call goes on
    /// to the next).
    pub(super) async fn route(
        &self,
        runtime: &PluginRuntime,
        cluster: &Arc<Cluster>,
        record: &InstalledPlugin,
        call: Call<'_>,
    ) -> PluginRun {
        let running = runtime.running_here(&record.name, &record.module_sha256);
        let threshold = self.settings.offload_above_milli;
        let load = if threshold.is_some() { load_milli() / cores().max(1) } else { 0 };
        let here = Here { runs_plugin: running.is_some(), load_per_core_milli: load };
        let places = placement::plan(here, candidates(cluster, &record.module_sha256), threshold, MAX_OFFLOAD_ATTEMPTS);
        let may_write = record.granted.contains(&Capability::MemoryWrite);
        let wall_cap = call.caps.wall_clock_ms.unwrap_or(MAX_PLUGIN_WALL_CLOCK_MS);
        let started = Instant::now();
        let mut unknown_fuel = 0u64;
        let mut why_not = Vec::new();
        for place in places {
            let remaining = wall_cap.saturating_sub(started.elapsed().as_millis() as u64);
            if remaining == 0 {
                why_not.push(format!("its wall-clock budget of {wall_cap} ms is spent"));
                break;
            }
            let caps = CallCaps { fuel: call.caps.fuel, wall_clock_ms: Some(remaining) };
            let (peer, addresses, node_id) = match place {
                Place::Here => {
                    let Some(running) = &running else { continue };
                    match runtime.run_here(cluster, running, call.tool, &call.arguments, call.agent, caps).await {
                        Ok((answer, fuel)) => {
                            return PluginRun {
                                answer: answer.map_err(ServiceError::Refused),
                                fuel: fuel.saturating_add(unknown_fuel),
                                served_by: Some(ServedBy::Here { node_id: cluster.node_id() }),
                                mcp_result: false,
                            }
                        }
                        Err(reason) => {
                            why_not.push(format!("this node: {reason}"));
                            continue;
                        }
                    }
                }
                Place::Peer(peer) => peer,
            };
            match self.attempt(cluster, peer, addresses, node_id, &call, caps).await {
                Attempt::Ran(mut run) => {
                    run.fuel = run.fuel.saturating_add(unknown_fuel);
                    return run;
                }
                Attempt::NotRun(reason) => why_not.push(format!("node {node_id} did not run it: {reason}")),
                Attempt::Unknown(reason) if !may_write => {
                    tracing::warn!(node_id, plugin = %record.name, %reason, "offloaded call lost; trying the next node");
                    unknown_fuel = unknown_fuel.saturating_add(call.caps.fuel.unwrap_or(0));
                    why_not.push(format!("node {node_id} {reason}"));
                }
                Attempt::Unknown(reason) => {
                    return PluginRun {
                        answer: Err(ServiceError::Unknown(format!(
                            "the call of {}.{} on node {node_id} {reason}, and plugin {} may write memories, so it is not run again",
                            record.name, call.tool, record.name
                        ))),
                        fuel: unknown_fuel.saturating_add(call.caps.fuel.unwrap_or(0)),
                        served_by: None,
                        mcp_result: false,
                    }
                }
            }
        }
        let reason = if why_not.is_empty() {
            format!(
                "no node runs plugin {} now: no member's live advert holds its module {}; retry when one does",
                record.name,
                hex::encode(record.module_sha256)
            )
        } else {
            format!("no node could run {}.{}: {}", record.name, call.tool, why_not.join("; "))
        };
        // Only lost runs (of a plugin that writes nothing) can have burnt fuel here.
        let answer =
            if unknown_fuel > 0 { Err(ServiceError::Refused(reason)) } else { Err(ServiceError::Unavailable(reason)) };
        PluginRun { answer, fuel: unknown_fuel, served_by: None, mcp_result: false }
    }

    /// Sends `call` to `peer` and checks what comes back.
    pub(super) async fn attempt(
        &self,
        cluster: &Cluster,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        node_id: u64,
        call: &Call<'_>,
        caps: CallCaps,
    ) -> Attempt {
        let wall_ms = caps.wall_clock_ms.unwrap_or(MAX_PLUGIN_WALL_CLOCK_MS);
        let deadline = Duration::from_millis(wall_ms);
        let Ok(Ok(_slot)) = tokio::time::timeout(deadline, self.sent_slots.acquire()).await else {
            return Attempt::NotRun(format!("{MAX_OFFLOAD_SENT_IN_FLIGHT} offloaded calls are in flight already"));
        };
        let arguments = match serde_json::to_vec(&call.arguments) {
            Ok(bytes) => bytes,
            Err(error) => return Attempt::NotRun(format!("arguments do not encode: {error}")),
        };
        let request = OffloadRequest {
            call_id: random_call_id(),
            kind: call.kind,
            plugin: call.name.to_owned(),
            module_sha256: call.hash,
            tool: call.tool.to_owned(),
            arguments,
            agent: call.agent.to_owned(),
            fuel: caps.fuel,
            wall_ms,
            reservation: call.reservation.clone(),
        };
        let message = OffloadMessage::Call(request.clone());
        let answer = cluster.mesh.offload(peer, addresses, message, deadline + OFFLOAD_MARGIN).await;
        let attempt = match answer {
            Ok(OffloadResponse::Ran { output, receipt: signed }) => match signed.verify(&peer, &request, &output) {
                Ok(receipt) => match serde_json::from_slice::<Value>(&output) {
                    Ok(value) => {
                        let answer = match (receipt.is_error, value) {
                            (false, value) => Ok(value),
                            // A host that got no answer from its server
                            // cannot say whether the call had an effect.
                            (true, message) if call.kind == CallKind::Federated => {
                                Err(ServiceError::Unknown(text_of(message)))
                            }
                            (true, message) => Err(ServiceError::Refused(text_of(message))),
                        };
                        let fuel = receipt.fuel_used;
                        let served_by = ServedBy::Peer { node_id, peer_id: peer, receipt: Box::new(receipt), signed };
                        let mcp_result = call.kind == CallKind::Federated;
                        Attempt::Ran(PluginRun { answer, fuel, served_by: Some(served_by), mcp_result })
                    }
                    Err(error) => Attempt::Unknown(format!("answered an output that is not JSON ({error})")),
                },
                Err(error) => {
                    bump(&self.counters.receipts_refused);
                    tracing::warn!(node_id, %peer, %error, "an offloaded call's receipt was refused");
                    Attempt::Unknown(format!("answered with a receipt that does not verify ({error})"))
                }
            },
            Ok(OffloadResponse::NotRun(reason)) => Attempt::NotRun(reason),
            Ok(OffloadResponse::Described(_)) => Attempt::Unknown("answered a call with tool definitions".into()),
            Err(MeshSendError::Unreachable { reason, .. }) => Attempt::NotRun(format!("unreachable: {reason}")),
            Err(MeshSendError::Stopped) => Attempt::NotRun("this node's mesh has stopped".into()),
            Err(error) => Attempt::Unknown(format!("gave no answer ({error})")),
        };
        bump(match &attempt {
            Attempt::Ran(_) => &self.counters.sent_ran,
            Attempt::NotRun(_) => &self.counters.sent_not_run,
            Attempt::Unknown(_) => &self.counters.sent_unknown,
        });
        attempt
    }

    /// Runs a call a peer offloaded here, or says why not.
    async fn serve(
        &self,
        runtime: &PluginRuntime,
        cluster: &Arc<Cluster>,
        peer: PeerId,
        request: OffloadRequest,
    ) -> OffloadResponse {
        self.counters.serving.fetch_add(1, Ordering::Relaxed);
        let response = self.serve_counted(runtime, cluster, peer, request).await;
        self.counters.serving.fetch_sub(1, Ordering::Relaxed);
        bump(match &response {
            OffloadResponse::Ran { .. } => &self.counters.served_ran,
            OffloadResponse::NotRun(_) | OffloadResponse::Described(_) => &self.counters.served_not_run,
        });
        response
    }

    async fn serve_counted(
        &self,
        runtime: &PluginRuntime,
        cluster: &Arc<Cluster>,
        peer: PeerId,
        request: OffloadRequest,
    ) -> OffloadResponse {
        if let Err(reason) = request.check() {
            return OffloadResponse::NotRun(reason);
        }
        if !cluster.consensus.members().contains_key(&node_id_of(&peer)) {
            return OffloadResponse::NotRun(format!("peer {peer} is not a member of this node's cluster"));
        }
        if request.kind == CallKind::Federated {
            let started = Instant::now();
            return match runtime.federation.serve(&request).await {
                Ok((output, is_error)) => {
                    let wall_ms = started.elapsed().as_millis() as u64;
                    OffloadResponse::Ran {
                        receipt: self.receipt(cluster, &request, &output, is_error, 0, wall_ms),
                        output,
                    }
                }
                Err(reason) => OffloadResponse::NotRun(reason),
            };
        }
        if !self.settings.run_plugins {
            return OffloadResponse::NotRun("this node runs no plugins".into());
        }
        let Some(running) = runtime.running_here(&request.plugin, &request.module_sha256) else {
            return OffloadResponse::NotRun(format!(
                "this node does not run plugin {} with module {}",
                request.plugin,
                hex::encode(request.module_sha256)
            ));
        };
        let arguments: Value = match serde_json::from_slice(&request.arguments) {
            Ok(arguments) => arguments,
            Err(error) => return OffloadResponse::NotRun(format!("the arguments are not JSON: {error}")),
        };
        let caps = CallCaps { fuel: request.fuel, wall_clock_ms: Some(request.wall_ms.min(MAX_PLUGIN_WALL_CLOCK_MS)) };
        let started = Instant::now();
        let (answer, fuel_used) =
            match runtime.run_here(cluster, &running, &request.tool, &arguments, &request.agent, caps).await {
                Ok(ran) => ran,
                Err(reason) => return OffloadResponse::NotRun(reason),
            };
        let wall_ms = started.elapsed().as_millis() as u64;
        let (output, is_error) = match &answer {
            Ok(value) => (serde_json::to_vec(value), false),
            Err(message) => (serde_json::to_vec(&Value::String(message.clone())), true),
        };
        // A JSON value always encodes; an empty output fails the caller's checks.
        let output = output.unwrap_or_default();
        OffloadResponse::Ran { receipt: self.receipt(cluster, &request, &output, is_error, fuel_used, wall_ms), output }
    }

    /// The signed receipt of `request`, run here with `output`.
    fn receipt(
        &self,
        cluster: &Cluster,
        request: &OffloadRequest,
        output: &[u8],
        is_error: bool,
        fuel_used: u64,
        wall_ms: u64,
    ) -> SignedReceipt {
        let receipt = Receipt {
            call_id: request.call_id,
            kind: request.kind,
            peer_id: cluster.mesh.peer_id().to_string(),
            node_id: cluster.node_id(),
            plugin: request.plugin.clone(),
            tool: request.tool.clone(),
            module_sha256: request.module_sha256,
            input_sha256: sha256(&request.arguments),
            output_sha256: sha256(output),
            is_error,
            fuel_used,
            wall_ms,
            reservation: request.reservation.clone(),
        };
        let forged;
        let key = if self.forge.load(Ordering::Relaxed) {
            forged = Keypair::generate_ed25519();
            &forged
        } else {
            &self.settings.keypair
        };
        // It ran: a receipt that cannot be signed still says so, and fails verification.
        SignedReceipt::sign(&receipt, key).unwrap_or_else(|error| {
            tracing::warn!(%error, "an offloaded call's receipt could not be signed");
            SignedReceipt { receipt: Vec::new(), public_key: Vec::new(), signature: Vec::new() }
        })
    }
}

/// Runs the plugin calls peers offload to this node.
pub struct OffloadServer {
    pub runtime: Arc<PluginRuntime>,
    pub cluster: Arc<Cluster>,
}

impl OffloadHandler for OffloadServer {
    fn handle(&self, peer: PeerId, message: OffloadMessage) -> BoxFuture<'static, OffloadResponse> {
        let (runtime, cluster) = (self.runtime.clone(), self.cluster.clone());
        async move {
            if let Err(reason) = message.check() {
                return OffloadResponse::NotRun(reason);
            }
            match message {
                OffloadMessage::Call(request) => runtime.offload.serve(&runtime, &cluster, peer, request).await,
                OffloadMessage::Describe { server, definitions } => {
                    if !cluster.consensus.members().contains_key(&node_id_of(&peer)) {
                        return OffloadResponse::NotRun(format!("peer {peer} is not a member of this node's cluster"));
                    }
                    OffloadResponse::Described(runtime.federation.describe(&server, &definitions))
                }
            }
        }
        .boxed()
    }
}
