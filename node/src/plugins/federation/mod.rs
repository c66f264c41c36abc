//! Federated MCP servers: registered in the replicated registry, started
//! and supervised by the nodes a registration names (`host`), advertised
//! with a hash of each tool's definition, and served from every node as
//! `server.tool`, each call routed to a host that serves the tool with the
//! definition this node lists.
//!
//! Which definition a node lists for a tool: the one most serving hosts
//! advertise (ties: the lowest node id's). Hosts that advertise another
//! definition for it are reported as a schema mismatch and get none of its
//! calls. A call goes to another host only when the one before certainly
//! did not make it (it answered "not run", or was unreachable): an MCP
//! server's tool may change things, so a call that may have reached one
//! is not repeated, unless the server marks the tool read-only or
//! idempotent. A host whose call from this node failed without an answer
//! is tried after the others until its own health checks have had time to
//! report it ([`Suspects`]).

mod host;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use zeromesh_kernel::placement::{self, Candidate, Here, Place};
use zeromesh_plugins::CallCaps;
use zeromesh_protocol::limits::{
    MAX_FEDERATED_TOOLS, MAX_HOSTED_SERVERS, MAX_OFFLOAD_ATTEMPTS, MAX_OFFLOAD_MESSAGE_BYTES,
};
use zeromesh_protocol::plugin::{RegisteredServer, ServerTransport};

use super::offload::{peer_adverts, Attempt, Call, Offload, Peer, PluginRun, ServedBy};
use crate::cluster::{Cluster, ServiceError};
use crate::lock;
use crate::mesh::advert::{Advert, AdvertServer};
use crate::mesh::offload::{sha256, CallKind, OffloadMessage, OffloadRequest, OffloadResponse, ReceiptReservation};
pub use host::Health;
use host::{Host, HostCall};

/// How often the mesh's view of the federated servers is refreshed while
/// any is registered (adverts read, missing definitions fetched).
const REFRESH: Duration = Duration::from_millis(250);
/// Longest a request for tool definitions waits for a host.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how this node hosts federated servers.
pub struct FederationSettings {
    pub node_id: u64,
    /// This node's labels (`labels`).
    pub labels: Vec<String>,
    /// Under the data folder: each child process runs in its own folder here.
    pub folder: PathBuf,
}

/// One node's hosting of a server, as this node sees it.
#[derive(Debug, Clone)]
struct HostView {
    node_id: u64,
    /// `None`: this node.
    peer: Option<Peer>,
    serving: bool,
    tools: BTreeMap<String, [u8; 32]>,
    load_per_core_milli: u64,
}

/// The federated servers of one node: those it hosts, and the mesh's.
pub struct Federation {
    settings: FederationSettings,
    registry: RwLock<BTreeMap<String, RegisteredServer>>,
    hosted: Mutex<BTreeMap<String, Arc<Host>>>,
    /// Registrations naming this node that it does not host, and why.
    not_hosted: RwLock<BTreeMap<String, String>>,
    /// Tool definitions (canonical JSON) by SHA-256, fetched from hosts.
    definitions: RwLock<HashMap<[u8; 32], Arc<Vec<u8>>>>,
    /// Bumped when what this node hosts changes (its advert says it).
    changes: watch::Sender<u64>,
    /// The federated tools `tools/list` showed last, to announce changes.
    listed: Mutex<Vec<String>>,
    /// Mismatches reported last, so each is logged once.
    mismatches: Mutex<BTreeSet<String>>,
    suspects: Mutex<Suspects>,
    tools_changed: broadcast::Sender<()>,
    /// Set when the node stops: nothing is started any more.
    stopping: std::sync::atomic::AtomicBool,
}

/// Hosts (server, node id) whose call from this node failed without an
/// answer, until when they are tried after the others: long enough for
/// the host's own health checks to find the server unhealthy and its
/// advert to say so, so that callers do not wait on a hung server again
/// in the meantime.
#[derive(Default)]
struct Suspects(HashMap<(String, u64), Instant>);

impl Suspects {
    fn failed(&mut self, server: &str, node_id: u64, until: Instant) {
        let now = Instant::now();
        self.0.retain(|_, expires| *expires > now);
        self.0.insert((server.to_owned(), node_id), until);
    }

    fn answered(&mut self, server: &str, node_id: u64) {
        self.0.remove(&(server.to_owned(), node_id));
    }

    fn suspect(&self, server: &str, node_id: u64, now: Instant) -> bool {
        self.0.get(&(server.to_owned(), node_id)).is_some_and(|expires| *expires > now)
    }
}

/// The definition most serving hosts give `tool` (ties: the lowest node
/// id's), and whether some serving host gives another.
fn listed_definition(hosts: &[HostView], tool: &str) -> Option<([u8; 32], bool)> {
    let mut votes: BTreeMap<[u8; 32], (usize, std::cmp::Reverse<u64>)> = BTreeMap::new();
    for host in hosts.iter().filter(|host| host.serving) {
        if let Some(hash) = host.tools.get(tool) {
            let entry = votes.entry(*hash).or_insert((0, std::cmp::Reverse(u64::MAX)));
            entry.0 += 1;
            entry.1 = entry.1.max(std::cmp::Reverse(host.node_id));
        }
    }
    let mismatch = votes.len() > 1;
    votes.into_iter().max_by_key(|(_, vote)| *vote).map(|(hash, _)| (hash, mismatch))
}

impl Federation {
    pub fn new(settings: FederationSettings, tools_changed: broadcast::Sender<()>) -> Federation {
        Federation {
            settings,
            registry: RwLock::new(BTreeMap::new()),
            hosted: Mutex::new(BTreeMap::new()),
            not_hosted: RwLock::new(BTreeMap::new()),
            definitions: RwLock::new(HashMap::new()),
            changes: watch::Sender::new(0),
            listed: Mutex::new(Vec::new()),
            mismatches: Mutex::new(BTreeSet::new()),
            suspects: Mutex::new(Suspects::default()),
            tools_changed,
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Wakes when a server this node hosts changes health or tools.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn registry(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, RegisteredServer>> {
        self.registry.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn hosted(&self, name: &str) -> Option<Arc<Host>> {
        lock(&self.hosted).get(name).cloned()
    }

    /// How many federated servers this node hosts now (each may be a process).
    pub fn hosted_count(&self) -> usize {
        lock(&self.hosted).len()
    }

    /// How many servers hosted here take calls now.
    pub fn serving_count(&self) -> usize {
        lock(&self.hosted).values().filter(|host| host.serving()).count()
    }

    /// The servers this node hosts, as its advert says them.
    pub fn advertised(&self) -> Vec<AdvertServer> {
        lock(&self.hosted)
            .values()
            .map(|host| AdvertServer {
                name: host.server.registration.name.clone(),
                log_index: host.server.log_index,
                serving: host.serving(),
                tools: host.tool_hashes().into_iter().collect(),
            })
            .collect()
    }

    /// Keeps the servers this node hosts equal to the registry's, and the
    /// view of the mesh's fresh, until the registry's feed ends.
    pub async fn run(self: Arc<Self>, cluster: Arc<Cluster>) {
        let mut changes = cluster.consensus.registry_changes();
        loop {
            if let Err(error) = self.sync(&cluster).await {
                tracing::warn!(%error, "federated servers: registry not read");
            }
            self.refresh(&cluster).await;
            let any = !self.registry().is_empty();
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(REFRESH), if any => {}
            }
        }
        self.stop_all().await;
    }

    /// Starts the servers the registry names this node for, and stops the
    /// others (and those whose registration changed, to start them anew).
    async fn sync(&self, cluster: &Cluster) -> Result<(), ServiceError> {
        let servers = cluster.consensus.registered_servers().await?;
        let node_id = self.settings.node_id;
        let mut wanted: Vec<&RegisteredServer> = servers
            .iter()
            .filter(|server| server.registration.hosts.includes(node_id, &self.settings.labels))
            .collect();
        let mut not_hosted = BTreeMap::new();
        if wanted.len() > MAX_HOSTED_SERVERS {
            for server in wanted.split_off(MAX_HOSTED_SERVERS) {
                not_hosted.insert(
                    server.registration.name.clone(),
                    format!("this node already hosts its maximum of {MAX_HOSTED_SERVERS} servers"),
                );
            }
        }
        let stale: Vec<Arc<Host>> = {
            let mut hosted = lock(&self.hosted);
            let keep: BTreeMap<&str, &RegisteredServer> =
                wanted.iter().map(|server| (server.registration.name.as_str(), *server)).collect();
            let stale_names: Vec<String> = hosted
                .iter()
                .filter(|(name, host)| keep.get(name.as_str()).is_none_or(|server| **server != host.server))
                .map(|(name, _)| name.clone())
                .collect();
            stale_names.iter().filter_map(|name| hosted.remove(name)).collect()
        };
        for host in stale {
            tracing::info!(server = %host.server.registration.name, "federated server stopped here");
            host.stop().await;
        }
        for server in wanted {
            if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            let name = server.registration.name.clone();
            if self.hosted(&name).is_some() {
                continue;
            }
            let host = Host::new(server.clone(), self.changes.clone());
            let folder = self.settings.folder.join(&name);
            tracing::info!(server = %name, "starting federated server here");
            tokio::spawn(host.clone().supervise(folder));
            lock(&self.hosted).insert(name, host);
        }
        *self.not_hosted.write().unwrap_or_else(|p| p.into_inner()) = not_hosted;
        let changed = {
            let mut registry = self.registry.write().unwrap_or_else(|p| p.into_inner());
            let fresh: BTreeMap<String, RegisteredServer> =
                servers.into_iter().map(|server| (server.registration.name.clone(), server)).collect();
            let changed = *registry != fresh;
            *registry = fresh;
            changed
        };
        if changed {
            self.changes.send_modify(|count| *count += 1);
        }
        Ok(())
    }

    /// Stops every server this node hosts (the node is stopping).
    pub async fn stop_all(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let hosts: Vec<Arc<Host>> = std::mem::take(&mut *lock(&self.hosted)).into_values().collect();
        futures::future::join_all(hosts.iter().map(|host| host.stop())).await;
    }

    /// Every node's hosting of `server` that runs its current registration.
    fn hosts_of(&self, cluster: &Cluster, adverts: &[(PeerId, Advert)], server: &RegisteredServer) -> Vec<HostView> {
        let name = &server.registration.name;
        let mut hosts = Vec::new();
        if let Some(host) = self.hosted(name).filter(|host| host.server.log_index == server.log_index) {
            let tools = host.tool_hashes();
            hosts.push(HostView {
                node_id: cluster.node_id(),
                peer: None,
                serving: host.serving(),
                tools,
                load_per_core_milli: 0,
            });
        }
        for (peer, advert) in adverts {
            let Some(hosting) = advert.servers.iter().find(|hosting| hosting.name == *name) else { continue };
            if hosting.log_index != server.log_index {
                continue;
            }
            let addresses = advert.listen_addrs.iter().filter_map(|address| address.parse().ok()).collect();
            hosts.push(HostView {
                node_id: advert.node_id,
                peer: Some((*peer, addresses, advert.node_id)),
                serving: hosting.serving,
                tools: hosting.tools.iter().cloned().collect(),
                load_per_core_milli: advert.load_per_core_milli(),
            });
        }
        hosts
    }

    /// A definition by hash: from a server hosted here, or the cache.
    fn definition(&self, hash: &[u8; 32]) -> Option<Arc<Vec<u8>>> {
        let here = lock(&self.hosted).values().find_map(|host| {
            host.with_state(|state| {
                state.tools.iter().find(|tool| tool.sha256 == *hash).map(|tool| tool.definition.clone())
            })
        });
        here.or_else(|| self.definitions.read().unwrap_or_else(|p| p.into_inner()).get(hash).cloned())
    }

    /// `(server, tool)` of an exposed name `server.tool` naming a
    /// registered server and a tool its registration allows.
    fn resolve(&self, exposed: &str) -> Option<(RegisteredServer, String)> {
        let (server, tool) = exposed.split_once('.')?;
        let registered = self.registry().get(server)?.clone();
        registered.registration.allows(tool).then(|| (registered, tool.to_owned()))
    }

    /// Fetches the definitions that serving hosts advertise and this node
    /// lacks, logs new schema mismatches, and announces a changed tool list.
    async fn refresh(&self, cluster: &Arc<Cluster>) {
        let adverts = peer_adverts(cluster);
        let servers: Vec<RegisteredServer> = self.registry().values().cloned().collect();
        let mut mismatches = BTreeSet::new();
        for server in &servers {
            let hosts = self.hosts_of(cluster, &adverts, server);
            let names: BTreeSet<&String> =
                hosts.iter().filter(|host| host.serving).flat_map(|host| host.tools.keys()).collect();
            for name in names {
                if let Some((_, true)) = listed_definition(&hosts, name) {
                    mismatches.insert(format!("{}.{name}", server.registration.name));
                }
            }
            for host in hosts.iter().filter(|host| host.serving) {
                let Some(peer) = &host.peer else { continue };
                let missing: Vec<[u8; 32]> = host
                    .tools
                    .values()
                    .filter(|hash| self.definition(hash).is_none())
                    .copied()
                    .take(MAX_FEDERATED_TOOLS)
                    .collect();
                if !missing.is_empty() {
                    self.fetch_definitions(cluster, peer, &server.registration.name, missing).await;
                }
            }
        }
        {
            let mut reported = lock(&self.mismatches);
            for tool in mismatches.difference(&reported) {
                tracing::warn!(%tool, "federated tool: its hosts give different definitions (schema mismatch); calls go only to hosts with the listed one");
            }
            *reported = mismatches;
        }
        let listed: Vec<String> =
            self.tool_definitions(cluster).iter().filter_map(|tool| Some(format!("{}", tool.get("name")?))).collect();
        let changed = {
            let mut last = lock(&self.listed);
            let changed = *last != listed;
            *last = listed;
            changed
        };
        if changed {
            let _ = self.tools_changed.send(());
        }
    }

    async fn fetch_definitions(&self, cluster: &Cluster, peer: &Peer, server: &str, wanted: Vec<[u8; 32]>) {
        let (peer_id, addresses, node_id) = peer.clone();
        let message = OffloadMessage::Describe { server: server.to_owned(), definitions: wanted.clone() };
        match cluster.mesh.offload(peer_id, addresses, message, DESCRIBE_TIMEOUT).await {
            Ok(OffloadResponse::Described(definitions)) => {
                let mut cache = self.definitions.write().unwrap_or_else(|p| p.into_inner());
                for definition in definitions {
                    let hash = sha256(&definition);
                    // Only what was asked for, and only what hashes to it.
                    if wanted.contains(&hash) && serde_json::from_slice::<Value>(&definition).is_ok() {
                        cache.insert(hash, Arc::new(definition));
                    }
                }
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(node_id, %error, "tool definitions not fetched"),
        }
        // Forget definitions no registered server's host advertises any more.
        let live: BTreeSet<[u8; 32]> = peer_adverts(cluster)
            .iter()
            .flat_map(|(_, advert)| advert.servers.iter().flat_map(|server| server.tools.iter().map(|(_, hash)| *hash)))
            .collect();
        self.definitions.write().unwrap_or_else(|p| p.into_inner()).retain(|hash, _| live.contains(hash));
    }

    /// Answers a peer's request for definitions of `server`'s tools.
    pub fn describe(&self, server: &str, wanted: &[[u8; 32]]) -> Vec<Vec<u8>> {
        let Some(host) = self.hosted(server) else { return Vec::new() };
        let mut budget = MAX_OFFLOAD_MESSAGE_BYTES - 4096;
        host.with_state(|state| {
            state
                .tools
                .iter()
                .filter(|tool| wanted.contains(&tool.sha256))
                .filter(|tool| {
                    let fits = tool.definition.len() + 16 <= budget;
                    if fits {
                        budget -= tool.definition.len() + 16;
                    }
                    fits
                })
                .map(|tool| tool.definition.as_ref().clone())
                .collect()
        })
    }

    /// The federated tools every node offers, as `tools/list` shows them:
    /// `server.tool`, with the definition listed for it, except names in `taken`.
    pub fn tool_definitions(&self, cluster: &Cluster) -> Vec<Value> {
        let adverts = peer_adverts(cluster);
        let servers: Vec<RegisteredServer> = self.registry().values().cloned().collect();
        let mut listed = Vec::new();
        for server in &servers {
            let hosts = self.hosts_of(cluster, &adverts, server);
            let names: BTreeSet<String> =
                hosts.iter().filter(|host| host.serving).flat_map(|host| host.tools.keys().cloned()).collect();
            for name in names {
                let Some((hash, _)) = listed_definition(&hosts, &name) else { continue };
                let Some(definition) = self.definition(&hash) else { continue };
                let Ok(Value::Object(mut tool)) = serde_json::from_slice::<Value>(&definition) else { continue };
                tool.insert("name".into(), json!(format!("{}.{name}", server.registration.name)));
                let title = tool.get("title").and_then(Value::as_str).unwrap_or(&name).to_owned();
                tool.insert("title".into(), json!(format!("{title} ({})", server.registration.name)));
                listed.push(Value::Object(tool));
            }
        }
        listed
    }

    /// Whether tool `exposed` is a federated tool some host serves now.
    pub fn offers(&self, cluster: &Cluster, exposed: &str) -> bool {
        let Some((server, tool)) = self.resolve(exposed) else { return false };
        let hosts = self.hosts_of(cluster, &peer_adverts(cluster), &server);
        listed_definition(&hosts, &tool).is_some()
    }

    /// The exposed names of the tools that some host serving `name`'s
    /// registration at `log_index` gives (none while it is registered at
    /// another index, or no host serves it).
    pub fn serving_tools(&self, cluster: &Cluster, name: &str, log_index: u64) -> Vec<String> {
        let Some(server) = self.registry().get(name).filter(|server| server.log_index == log_index).cloned() else {
            return Vec::new();
        };
        let hosts = self.hosts_of(cluster, &peer_adverts(cluster), &server);
        let tools: BTreeSet<&String> =
            hosts.iter().filter(|host| host.serving).flat_map(|host| host.tools.keys()).collect();
        tools.into_iter().map(|tool| format!("{name}.{tool}")).collect()
    }

    /// Whether `exposed` names a registered server's allowed tool.
    pub fn names(&self, exposed: &str) -> bool {
        self.resolve(exposed).is_some()
    }

    /// The longest a call of `exposed` may take, by its registration.
    pub fn call_timeout_ms(&self, exposed: &str) -> Option<u64> {
        self.resolve(exposed).map(|(server, _)| server.registration.call_timeout_ms)
    }

    /// Calls federated tool `exposed` on a host that serves it (this node
    /// first when it is one), failing over as the module's documentation
    /// says; `None` when no registered server names it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn call(
        &self,
        offload: &Offload,
        cluster: &Arc<Cluster>,
        exposed: &str,
        arguments: Value,
        agent: &str,
        wall_ms: u64,
        reservation: Option<ReceiptReservation>,
    ) -> Option<PluginRun> {
        let (server, tool) = self.resolve(exposed)?;
        let name = server.registration.name.clone();
        let hosts = self.hosts_of(cluster, &peer_adverts(cluster), &server);
        let Some((hash, _)) = listed_definition(&hosts, &tool) else {
            return Some(unserved(format!("no host of server {name} serves tool {tool} now; retry when one does")));
        };
        let retry_safe = self.definition(&hash).is_some_and(|definition| host::retry_safe(&definition));
        let here = hosts.iter().any(|host| host.peer.is_none() && host.serving && host.tools.get(&tool) == Some(&hash));
        let now = Instant::now();
        let candidates: Vec<Candidate<Peer>> = {
            let suspects = lock(&self.suspects);
            hosts
                .iter()
                .filter(|host| host.serving && host.tools.get(&tool) == Some(&hash))
                .filter_map(|host| {
                    // A suspect host counts as fully loaded: tried last.
                    let suspect = suspects.suspect(&name, host.node_id, now);
                    Some(Candidate {
                        load_per_core_milli: if suspect { u64::MAX } else { host.load_per_core_milli },
                        rtt_ms: None,
                        peer: host.peer.clone()?,
                    })
                })
                .collect()
        };
        let health = &server.registration.health;
        let suspect_for = Duration::from_millis(
            health.interval_ms.saturating_mul(u64::from(health.unhealthy_after)).saturating_add(health.timeout_ms),
        ) + REFRESH;
        // This node first when it hosts the tool, then its other hosts.
        let mut places = placement::plan(
            Here { runs_plugin: false, load_per_core_milli: 0 },
            candidates,
            None,
            MAX_OFFLOAD_ATTEMPTS,
        );
        if here {
            places.insert(0, Place::Here);
        }
        let arguments_object = match &arguments {
            Value::Object(map) => map.clone(),
            _ => {
                return Some(PluginRun {
                    answer: Err(ServiceError::Invalid("arguments must be an object".into())),
                    fuel: 0,
                    served_by: None,
                    mcp_result: false,
                })
            }
        };
        let started = std::time::Instant::now();
        let mut why_not = Vec::new();
        for place in places {
            let remaining = wall_ms.saturating_sub(started.elapsed().as_millis() as u64);
            if remaining == 0 {
                why_not.push(format!("its time budget of {wall_ms} ms is spent"));
                break;
            }
            match place {
                Place::Here => {
                    let Some(host) = self.hosted(&name) else { continue };
                    match host.call(&tool, &hash, arguments_object.clone(), Duration::from_millis(remaining)).await {
                        HostCall::Answered(result) => {
                            let value = serde_json::to_value(&result).unwrap_or(Value::Null);
                            return Some(PluginRun {
                                answer: Ok(value),
                                fuel: 0,
                                served_by: Some(ServedBy::Here { node_id: cluster.node_id() }),
                                mcp_result: true,
                            });
                        }
                        HostCall::Failed(reason) if !retry_safe => {
                            return Some(PluginRun {
                                answer: Err(ServiceError::Unknown(reason)),
                                fuel: 0,
                                served_by: None,
                                mcp_result: false,
                            })
                        }
                        HostCall::Failed(reason) | HostCall::NotRun(reason) => {
                            why_not.push(format!("this node: {reason}"))
                        }
                    }
                }
                Place::Peer(peer) => {
                    let (peer_id, addresses, node_id) = peer;
                    let call = Call {
                        kind: CallKind::Federated,
                        name: &name,
                        hash,
                        tool: &tool,
                        arguments: arguments.clone(),
                        agent,
                        caps: CallCaps { fuel: None, wall_clock_ms: Some(remaining) },
                        reservation: reservation.clone(),
                    };
                    let caps = call.caps;
                    let attempt = offload.attempt(cluster, peer_id, addresses, node_id, &call, caps).await;
                    // A host that ran the call but got no answer from its
                    // server (a timeout, a broken pipe) failed it too; the
                    // server's own error result is an answer.
                    match &attempt {
                        Attempt::Ran(run) if run.answer.is_ok() => lock(&self.suspects).answered(&name, node_id),
                        _ => lock(&self.suspects).failed(&name, node_id, Instant::now() + suspect_for),
                    }
                    match attempt {
                        Attempt::Ran(run) => {
                            if !retry_safe || run.answer.is_ok() {
                                return Some(run);
                            }
                            why_not.push(format!("node {node_id}: {}", run.answer.err().map(|e| e.to_string()).unwrap_or_default()));
                        }
                        Attempt::NotRun(reason) => why_not.push(format!("node {node_id} did not make it: {reason}")),
                        Attempt::Unknown(reason) if retry_safe => why_not.push(format!("node {node_id} {reason}")),
                        Attempt::Unknown(reason) => {
                            return Some(PluginRun {
                                answer: Err(ServiceError::Unknown(format!(
                                    "the call of {exposed} on node {node_id} {reason}; the server's tool is not marked read-only or idempotent, so it is not made again"
                                ))),
                                fuel: 0,
                                served_by: None,
                                mcp_result: false,
                            })
                        }
                    }
                }
            }
        }
        Some(unserved(if why_not.is_empty() {
            format!("no host of server {name} serves tool {tool} now; retry when one does")
        } else {
            format!("no host could make the call of {exposed}: {}", why_not.join("; "))
        }))
    }

    /// Makes a call a peer sent to this node as a host: the output (the
    /// tool's result, JSON) and whether it is a failure message instead.
    pub async fn serve(&self, request: &OffloadRequest) -> Result<(Vec<u8>, bool), String> {
        let Some(host) = self.hosted(&request.plugin) else {
            return Err(format!("this node does not host server {}", request.plugin));
        };
        let Ok(Value::Object(arguments)) = serde_json::from_slice::<Value>(&request.arguments) else {
            return Err("the arguments are not a JSON object".into());
        };
        let timeout = request.wall_ms.min(host.server.registration.call_timeout_ms);
        let (value, is_error) =
            match host.call(&request.tool, &request.module_sha256, arguments, Duration::from_millis(timeout)).await {
                HostCall::NotRun(reason) => return Err(reason),
                HostCall::Answered(result) => (serde_json::to_value(&result).unwrap_or(Value::Null), false),
                HostCall::Failed(reason) => (Value::String(reason), true),
            };
        Ok((serde_json::to_vec(&value).unwrap_or_default(), is_error))
    }

    /// The registered servers and where they run, as `server_list` shows them.
    pub fn list(&self, cluster: &Cluster) -> Value {
        let adverts = peer_adverts(cluster);
        let not_hosted = self.not_hosted.read().unwrap_or_else(|p| p.into_inner()).clone();
        let servers: Vec<Value> = self
            .registry()
            .values()
            .map(|server| {
                let registration = &server.registration;
                let hosts = self.hosts_of(cluster, &adverts, server);
                let names: BTreeSet<&String> = hosts.iter().flat_map(|host| host.tools.keys()).collect();
                let tools: Vec<Value> = names
                    .iter()
                    .map(|name| {
                        let listed = listed_definition(&hosts, name);
                        json!({
                            "name": format!("{}.{name}", registration.name),
                            "definitionSha256": listed.map(|(hash, _)| hex::encode(hash)),
                            "schemaMismatch": listed.is_some_and(|(_, mismatch)| mismatch),
                            "hosts": hosts.iter().filter_map(|host| Some(json!({
                                "nodeId": host.node_id.to_string(),
                                "definitionSha256": hex::encode(host.tools.get(*name)?),
                            }))).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let here = self.hosted(&registration.name).map(|host| {
                    let (serving, circuit_open) = (host.serving(), host.circuit_open());
                    host.with_state(|state| {
                        json!({
                            "health": health_text(&state.health),
                            "serving": serving,
                            "circuitOpen": circuit_open,
                            "pid": state.pid,
                            "restarts": state.restarts,
                            "toolsLeftOut": state.left_out,
                        })
                    })
                });
                json!({
                    "name": registration.name,
                    "transport": match &registration.transport {
                        ServerTransport::Stdio { command } => json!({ "stdio": command }),
                        ServerTransport::Http { url, bearer } => json!({ "http": url, "bearer": bearer.as_ref().map(ToString::to_string) }),
                    },
                    "hosts": { "nodes": registration.hosts.nodes.iter().map(ToString::to_string).collect::<Vec<_>>(), "labels": registration.hosts.labels },
                    "env": registration.env.keys().collect::<Vec<_>>(),
                    "secrets": registration.secrets.iter().map(|(name, reference)| (name.clone(), json!(reference.to_string()))).collect::<serde_json::Map<_, _>>(),
                    "callTimeoutMs": registration.call_timeout_ms,
                    "allowTools": registration.allow_tools,
                    "health": {
                        "intervalMs": registration.health.interval_ms,
                        "timeoutMs": registration.health.timeout_ms,
                        "unhealthyAfter": registration.health.unhealthy_after,
                        "breakerAfter": registration.health.breaker_after,
                        "breakerOpenMs": registration.health.breaker_open_ms,
                    },
                    "maxMemoryMb": registration.max_memory_mb,
                    "logIndex": server.log_index,
                    "registeredAtMs": server.registered_at_ms,
                    "running": hosts.iter().map(|host| json!({
                        "nodeId": host.node_id.to_string(),
                        "serving": host.serving,
                        "tools": host.tools.len(),
                    })).collect::<Vec<_>>(),
                    "tools": tools,
                    "here": here,
                    "notHostedHere": not_hosted.get(&registration.name),
                })
            })
            .collect();
        json!({ "servers": servers })
    }

    /// Tools whose serving hosts disagree on their definition now.
    pub fn schema_mismatches(&self) -> usize {
        lock(&self.mismatches).len()
    }
}

fn health_text(health: &Health) -> String {
    match health {
        Health::Starting => "starting".into(),
        Health::Healthy => "healthy".into(),
        Health::Unhealthy(reason) => format!("unhealthy: {reason}"),
    }
}

fn unserved(reason: String) -> PluginRun {
    PluginRun { answer: Err(ServiceError::Unavailable(reason)), fuel: 0, served_by: None, mcp_result: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(node_id: u64, serving: bool, tools: &[(&str, u8)]) -> HostView {
        HostView {
            node_id,
            peer: None,
            serving,
            tools: tools.iter().map(|(name, hash)| (name.to_string(), [*hash; 32])).collect(),
            load_per_core_milli: 0,
        }
    }

    #[test]
    fn the_listed_definition_is_the_majority_and_a_disagreement_is_a_mismatch() {
        let agreed = [host(1, true, &[("search", 1)]), host(2, true, &[("search", 1)])];
        assert_eq!(listed_definition(&agreed, "search"), Some(([1; 32], false)));
        let split = [host(3, true, &[("search", 2)]), host(1, true, &[("search", 1)])];
        assert_eq!(listed_definition(&split, "search"), Some(([1; 32], true)), "a tie goes to the lowest node id");
        let majority =
            [host(1, true, &[("search", 1)]), host(2, true, &[("search", 2)]), host(3, true, &[("search", 2)])];
        assert_eq!(listed_definition(&majority, "search"), Some(([2; 32], true)));
        let unhealthy = [host(1, false, &[("search", 1)]), host(2, true, &[("search", 2)])];
        assert_eq!(listed_definition(&unhealthy, "search"), Some(([2; 32], false)), "hosts not serving do not count");
        assert_eq!(listed_definition(&unhealthy, "other"), None);
    }

    #[test]
    fn a_host_that_failed_a_call_is_suspect_until_its_time_is_up_or_it_answers() {
        let mut suspects = Suspects::default();
        let now = Instant::now();
        suspects.failed("notes", 1, now + Duration::from_secs(5));
        assert!(suspects.suspect("notes", 1, now));
        assert!(!suspects.suspect("notes", 2, now), "only the host that failed");
        assert!(!suspects.suspect("other", 1, now), "only for the server that failed");
        assert!(!suspects.suspect("notes", 1, now + Duration::from_secs(6)), "until its time is up");
        suspects.answered("notes", 1);
        assert!(!suspects.suspect("notes", 1, now), "an answer clears it");
        suspects.failed("notes", 3, now);
        suspects.failed("notes", 4, now + Duration::from_secs(5));
        assert_eq!(suspects.0.len(), 1, "expired entries are dropped as others are added");
    }
}
