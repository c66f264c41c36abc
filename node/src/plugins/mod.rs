//! The node's plugins: keeps the loaded set equal to the replicated
//! registry (fetching missing modules from peers by SHA-256 and verifying
//! them), names their tools, installs packages and runs tool calls, here or
//! on a peer that runs the plugin (`offload`).

mod context;
mod federation;
mod fetch;
mod naming;
mod offload;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, watch, Semaphore};
use zeromesh_consensus::ConsensusNode;
use zeromesh_plugins::{CallCaps, CallError, HostLimits, LoadedPlugin, Package, PluginHost, PublisherKey};
use zeromesh_protocol::limits::MAX_PLUGIN_CALLS_IN_FLIGHT;
use zeromesh_protocol::plugin::{Capability, CapabilitySet, InstalledPlugin, PluginCommand, PluginOutcome};
use zeromesh_protocol::{Command, CommandReply};

use crate::mesh::offload::CallKind;

use crate::cluster::{Cluster, ServiceError};
pub use federation::{Federation, FederationSettings};
pub use naming::ExposedTool;
pub use offload::{Counters as OffloadCounters, OffloadServer, OffloadSettings, PluginRun, ServedBy};

/// How long an install waits for this node to load what it installed, and a
/// call for a plugin the registry has but this node is still fetching.
const LOAD_WAIT: Duration = Duration::from_secs(10);
/// Pause before fetching missing modules again when no peer had them.
const FETCH_RETRY: Duration = Duration::from_secs(1);
/// How often a call waiting for a plugin to be served looks at the adverts.
const ADVERT_POLL: Duration = Duration::from_millis(100);

/// One plugin as this node runs it.
struct Running {
    record: InstalledPlugin,
    plugin: LoadedPlugin,
}

/// Why a plugin of the registry does not run here.
#[derive(Debug, Clone)]
enum NotRunning {
    /// No peer that was asked had its module yet; fetching is retried.
    Fetching,
    /// It failed a check or did not load; retried only when the registry changes.
    Failed(String),
    /// This node runs no plugins (`run_plugins = false`).
    NotHere,
}

impl NotRunning {
    fn reason(&self) -> String {
        match self {
            NotRunning::Fetching => "its module is being fetched from peers".to_owned(),
            NotRunning::Failed(reason) => reason.clone(),
            NotRunning::NotHere => "this node runs no plugins (run_plugins = false); peers serve its tools".to_owned(),
        }
    }
}

/// A plugin of the replicated registry, with its verified manifest.
struct Registered {
    record: InstalledPlugin,
    manifest: zeromesh_protocol::plugin::Manifest,
}

#[derive(Default)]
struct Loaded {
    running: BTreeMap<String, Arc<Running>>,
    /// Plugins in the registry that do not run here, and why.
    not_running: BTreeMap<String, NotRunning>,
    /// The tools of the plugins that run here, by exposed name.
    tools: BTreeMap<String, ExposedTool>,
    /// Every plugin of the registry, and every tool by its exposed name,
    /// wherever they run.
    registry: BTreeMap<String, Arc<Registered>>,
    named: BTreeMap<String, ExposedTool>,
    /// Module hashes an install on this node has stored and not yet seen
    /// applied: kept from blob cleanup.
    pinned: BTreeSet<[u8; 32]>,
}

/// The plugins of one node.
pub struct PluginRuntime {
    host: Arc<PluginHost>,
    limits: HostLimits,
    offload: offload::Offload,
    /// The federated MCP servers: those this node hosts, and the mesh's.
    pub federation: Arc<Federation>,
    loaded: RwLock<Loaded>,
    /// Fires when the tools this node offers change (MCP `list_changed`).
    tools_changed: broadcast::Sender<()>,
    /// Counts changes of the loaded set; installs wait on it.
    loaded_changes: watch::Sender<u64>,
    calls: Arc<Semaphore>,
    /// The node's own tools' names, which plugin tools do not take.
    reserved_names: Vec<&'static str>,
}

/// What a tool call of a plugin answered: a result, or a failure whose
/// message names its cause.
pub type PluginCallResult = Result<Value, String>;

fn now_ms() -> u64 {
    zeromesh_consensus::wall_clock_ms()
}

/// The publisher keys the replicated registry trusts now.
async fn trusted_keys(consensus: &ConsensusNode) -> Result<Vec<PublisherKey>, ServiceError> {
    Ok(consensus.trusted_publishers().await?.into_iter().map(|trusted| trusted.publisher).collect())
}

impl PluginRuntime {
    pub fn new(
        limits: HostLimits,
        reserved_names: Vec<&'static str>,
        settings: OffloadSettings,
        federation: FederationSettings,
    ) -> anyhow::Result<PluginRuntime> {
        let tools_changed = broadcast::channel(16).0;
        Ok(PluginRuntime {
            host: Arc::new(PluginHost::new(limits)?),
            limits,
            offload: offload::Offload::new(settings),
            federation: Arc::new(Federation::new(federation, tools_changed.clone())),
            loaded: RwLock::new(Loaded::default()),
            tools_changed,
            loaded_changes: watch::Sender::new(0),
            calls: Arc::new(Semaphore::new(MAX_PLUGIN_CALLS_IN_FLIGHT)),
            reserved_names,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Loaded> {
        self.loaded.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes on every change of the tools this node offers.
    pub fn subscribe_tools_changed(&self) -> broadcast::Receiver<()> {
        self.tools_changed.subscribe()
    }

    /// Wakes on every change of the loaded set (for the advert).
    pub fn subscribe_loaded(&self) -> watch::Receiver<u64> {
        self.loaded_changes.subscribe()
    }

    /// How many plugins this node runs.
    pub fn running_count(&self) -> usize {
        self.read().running.len()
    }

    /// SHA-256 (hex) of every module this node runs.
    pub fn module_hashes(&self) -> Vec<String> {
        let hashes: BTreeSet<String> =
            self.read().running.values().map(|running| hex::encode(running.record.module_sha256)).collect();
        hashes.into_iter().collect()
    }

    /// Whether this node runs plugins itself (`run_plugins`).
    pub fn runs_plugins(&self) -> bool {
        self.offload.settings.run_plugins
    }

    /// The plugin tools this node serves, here or through a peer that runs
    /// them, as `tools/list` shows them.
    pub fn tool_definitions(&self, cluster: &Cluster) -> Vec<Value> {
        let elsewhere = offload::modules_on_peers(cluster);
        let loaded = self.read();
        loaded
            .named
            .iter()
            .filter_map(|(exposed, tool)| {
                let registered = loaded.registry.get(&tool.plugin)?;
                let served = loaded.tools.contains_key(exposed) || elsewhere.contains(&registered.record.module_sha256);
                let spec = registered.manifest.tool(&tool.tool).filter(|_| served)?;
                let record = &registered.record;
                Some(json!({
                    "name": exposed,
                    "title": format!("{} ({} {})", spec.name, record.name, record.version),
                    "description": spec.description,
                    "inputSchema": spec.input_schema,
                }))
            })
            .chain(
                // A plugin's name wins over a federated tool's.
                self.federation
                    .tool_definitions(cluster)
                    .into_iter()
                    .filter(|tool| tool["name"].as_str().is_some_and(|name| !loaded.named.contains_key(name))),
            )
            .collect()
    }

    /// Whether a plugin offers tool `exposed` here.
    pub fn offers(&self, exposed: &str) -> bool {
        self.read().tools.contains_key(exposed)
    }

    /// Whether tool `exposed` is served here or by a peer that runs it.
    pub fn offers_in_mesh(&self, cluster: &Cluster, exposed: &str) -> bool {
        if self.offers(exposed) {
            return true;
        }
        let module = {
            let loaded = self.read();
            let Some(tool) = loaded.named.get(exposed) else { return self.federation.offers(cluster, exposed) };
            let Some(registered) = loaded.registry.get(&tool.plugin) else { return false };
            registered.record.module_sha256
        };
        offload::modules_on_peers(cluster).contains(&module)
    }

    /// The most fuel and wall-clock time a call of tool `exposed` may take,
    /// wherever it runs, or `None` when the registry names no such tool.
    pub fn ceiling(&self, exposed: &str) -> Option<CallCaps> {
        let loaded = self.read();
        let Some(tool) = loaded.named.get(exposed) else {
            let wall_ms = self.federation.call_timeout_ms(exposed)?;
            return Some(CallCaps { fuel: None, wall_clock_ms: Some(wall_ms) });
        };
        let limits = &loaded.registry.get(&tool.plugin)?.manifest.limits;
        Some(CallCaps {
            fuel: Some(limits.fuel_per_call.min(self.limits.max_fuel_per_call)),
            wall_clock_ms: Some(limits.wall_clock_ms.min(self.limits.max_wall_clock_ms)),
        })
    }

    /// Keeps the loaded set equal to the registry, forever.
    pub async fn run(self: Arc<Self>, cluster: Arc<Cluster>) {
        let mut changes = cluster.consensus.registry_changes();
        loop {
            let missing = match self.sync(&cluster).await {
                Ok(missing) => missing,
                Err(error) => {
                    tracing::warn!(%error, "plugin sync failed");
                    true
                }
            };
            if missing {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(FETCH_RETRY) => {}
                }
            } else if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// One pass: loads what the registry has and this node lacks, drops what
    /// it no longer has. Returns whether some module is still missing.
    async fn sync(&self, cluster: &Cluster) -> Result<bool, ServiceError> {
        let registry = cluster.consensus.installed_plugins().await?;
        let trusted = trusted_keys(&cluster.consensus).await?;
        let mut missing = false;
        let mut not_running = BTreeMap::new();
        let mut running = BTreeMap::new();
        for record in &registry {
            if !self.runs_plugins() {
                not_running.insert(record.name.clone(), NotRunning::NotHere);
                continue;
            }
            let current = self.read().running.get(&record.name).cloned();
            if let Some(current) = current.filter(|current| current.record == *record) {
                running.insert(record.name.clone(), current);
                continue;
            }
            let Some(module) = fetch::module(cluster, &record.module_sha256).await? else {
                missing = true;
                not_running.insert(record.name.clone(), NotRunning::Fetching);
                continue;
            };
            match self.load(record, module, &trusted).await {
                Ok(plugin) => {
                    running.insert(record.name.clone(), Arc::new(Running { record: record.clone(), plugin }));
                }
                Err(reason) => {
                    tracing::warn!(plugin = %record.name, %reason, "plugin not loaded");
                    not_running.insert(record.name.clone(), NotRunning::Failed(reason));
                }
            }
        }
        let tools = naming::expose(&registry, &self.reserved_names, |name| running.contains_key(name));
        let named = naming::expose(&registry, &self.reserved_names, |_| true);
        let registered: BTreeMap<String, Arc<Registered>> = registry
            .iter()
            .filter_map(|record| {
                // The registry holds only manifests whose signature verified at apply.
                let manifest = zeromesh_protocol::plugin::SignedManifest::check_signature(&record.manifest).ok()?;
                Some((record.name.clone(), Arc::new(Registered { record: record.clone(), manifest })))
            })
            .collect();
        let (tools_changed, loaded_changed, referenced, pinned) = {
            let mut loaded = self.write();
            let tools_changed = loaded.tools != tools || loaded.named != named;
            loaded.named = named;
            loaded.registry = registered;
            let loaded_changed = loaded.running.keys().ne(running.keys())
                || loaded.running.iter().zip(running.iter()).any(|((_, old), (_, new))| !Arc::ptr_eq(old, new));
            loaded.running = running;
            loaded.not_running = not_running;
            loaded.tools = tools;
            let referenced: BTreeSet<[u8; 32]> = registry.iter().map(|record| record.module_sha256).collect();
            (tools_changed, loaded_changed, referenced, loaded.pinned.clone())
        };
        if loaded_changed {
            self.loaded_changes.send_modify(|count| *count += 1);
        }
        if tools_changed {
            let _ = self.tools_changed.send(());
        }
        cluster.consensus.drop_modules_except(referenced.union(&pinned).copied().collect()).await?;
        Ok(missing)
    }

    /// Verifies a registry record's module against its signed manifest and
    /// the trusted set, then compiles and links it.
    async fn load(
        &self,
        record: &InstalledPlugin,
        module: Vec<u8>,
        trusted: &[PublisherKey],
    ) -> Result<LoadedPlugin, String> {
        let package = Package::from_parts(record.manifest.clone(), module);
        let verified = package.verify(trusted, now_ms()).map_err(|error| error.to_string())?;
        if verified.manifest.name != record.name || verified.module_sha256 != record.module_sha256 {
            return Err("the registry record does not match its signed manifest".into());
        }
        let granted = record.granted.clone();
        tokio::task::block_in_place(|| self.host.load(verified, &granted)).map_err(|error| error.to_string())
    }

    /// Installs a package through Raft: every check runs here first (so the
    /// caller learns which failed), the module is stored on this node, and the
    /// signed manifest is proposed. Waits until this node runs the plugin.
    pub async fn install(
        &self,
        cluster: &Cluster,
        package_bytes: &[u8],
        granted: CapabilitySet,
        progress: &(dyn Fn(u64, &str) + Sync),
    ) -> Result<Value, ServiceError> {
        let package = Package::decode(package_bytes).map_err(|error| ServiceError::Invalid(error.to_string()))?;
        let trusted = trusted_keys(&cluster.consensus).await?;
        let verified = package.verify(&trusted, now_ms()).map_err(|error| ServiceError::Refused(error.to_string()))?;
        if let Some(extra) = granted.iter().find(|capability| !verified.manifest.capabilities.contains(capability)) {
            return Err(ServiceError::Invalid(format!(
                "capability {extra} is granted but the plugin's manifest does not declare it"
            )));
        }
        let sha256 = verified.module_sha256;
        let module = verified.module().to_vec();
        let signed = verified.signed.clone();
        // Linking refuses a module that imports a host function whose
        // capability was not granted: say so before anything is replicated.
        tokio::task::block_in_place(|| self.host.load(verified, &granted)).map_err(|error| {
            ServiceError::Refused(format!("capability check failed: {error}; grant it with --grant if you trust it"))
        })?;
        progress(1, "verified and linked");
        self.write().pinned.insert(sha256);
        let stored = cluster.consensus.keep_module(sha256, module).await.map_err(ServiceError::from);
        let proposed = match stored {
            Ok(()) => {
                progress(2, "module stored on this node");
                cluster.propose(Command::Plugin(PluginCommand::Install { manifest: signed, granted })).await
            }
            Err(error) => Err(error),
        };
        let mut loaded_changes = self.subscribe_loaded();
        self.write().pinned.remove(&sha256);
        let (log_index, reply) = proposed?;
        let (name, version, replaced) = match reply {
            CommandReply::Plugin(PluginOutcome::Installed { name, version, replaced, .. }) => (name, version, replaced),
            CommandReply::Plugin(PluginOutcome::Refused(error)) => {
                return Err(ServiceError::Refused(error.to_string()))
            }
            other => return Err(ServiceError::Refused(outcome_text(&other))),
        };
        progress(3, "committed through Raft");
        let waited = tokio::time::timeout(LOAD_WAIT, async {
            loop {
                if let Some(answer) = self.load_state(&name, log_index) {
                    return answer;
                }
                if loaded_changes.changed().await.is_err() {
                    return Err("the plugin runtime stopped".to_owned());
                }
            }
        })
        .await;
        let tools = self.exposed_tools_of(&name);
        match waited {
            Ok(Ok(())) => progress(4, "running on this node"),
            Ok(Err(reason)) => {
                return Err(ServiceError::Unavailable(format!("installed at log index {log_index}, but: {reason}")))
            }
            Err(_) => {
                return Err(ServiceError::Unavailable(format!(
                    "installed at log index {log_index}, but this node has not loaded it within {} ms",
                    LOAD_WAIT.as_millis()
                )))
            }
        }
        Ok(json!({
            "installed": name,
            "version": version,
            "replaced": replaced,
            "module_sha256": hex::encode(sha256),
            "log_index": log_index,
            "tools": tools,
        }))
    }

    /// `Some(Ok)` once plugin `name` from entry `log_index` (or later) runs
    /// here, `Some(Err)` if it failed to load, `None` while undecided.
    fn load_state(&self, name: &str, log_index: u64) -> Option<Result<(), String>> {
        let loaded = self.read();
        if loaded.running.get(name).is_some_and(|running| running.record.log_index >= log_index) {
            return Some(Ok(()));
        }
        match loaded.not_running.get(name) {
            Some(NotRunning::Failed(reason)) => Some(Err(reason.clone())),
            // Running elsewhere only: installed is all this node can wait for.
            Some(NotRunning::NotHere) => Some(Ok(())),
            Some(NotRunning::Fetching) | None => None,
        }
    }

    /// The plugin the replicated registry names tool `exposed` for, when it
    /// does not run here: `Ok(plugin)` while it is being loaded (its module
    /// fetched), `Err((plugin, reason))` when it failed to load. `None` for
    /// a tool no installed plugin names, or one that runs.
    pub async fn not_running_for(&self, cluster: &Cluster, exposed: &str) -> Option<Result<String, (String, String)>> {
        if self.offers(exposed) {
            return None;
        }
        let registry = cluster.consensus.installed_plugins().await.ok()?;
        let named = naming::expose(&registry, &self.reserved_names, |_| true);
        let plugin = named.get(exposed)?.plugin.clone();
        Some(match self.read().not_running.get(&plugin) {
            Some(NotRunning::Failed(reason)) => Err((plugin, reason.clone())),
            Some(NotRunning::Fetching | NotRunning::NotHere) | None => Ok(plugin),
        })
    }

    /// Waits at most `timeout` for tool `exposed` to be served here or by
    /// a peer that runs it: the plugins loaded here change, or a peer's
    /// advert (looked at every [`ADVERT_POLL`]) says it runs the plugin.
    pub async fn wait_offered(&self, cluster: &Cluster, exposed: &str, timeout: std::time::Duration) -> bool {
        let mut changes = self.subscribe_tools_changed();
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.offers_in_mesh(cluster, exposed) {
            let next = (tokio::time::Instant::now() + ADVERT_POLL).min(deadline);
            match tokio::time::timeout_at(next, changes.recv()).await {
                Ok(Ok(())) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Err(_) if next < deadline => {}
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return self.offers_in_mesh(cluster, exposed),
            }
        }
        true
    }

    fn exposed_tools_of(&self, plugin: &str) -> Vec<String> {
        self.read().named.iter().filter(|(_, tool)| tool.plugin == plugin).map(|(name, _)| name.clone()).collect()
    }

    /// The registry as this node sees it, with what runs here.
    pub async fn list(&self, cluster: &Cluster) -> Result<Value, ServiceError> {
        let registry = cluster.consensus.installed_plugins().await?;
        let trusted = cluster.consensus.trusted_publishers().await?;
        let loaded = self.read();
        let plugins: Vec<Value> = registry
            .iter()
            .map(|record| {
                let running = loaded.running.get(&record.name).is_some_and(|running| running.record == *record);
                json!({
                    "name": record.name,
                    "version": record.version,
                    "publisher": record.manifest.publisher.to_string(),
                    "module_sha256": hex::encode(record.module_sha256),
                    "granted": record.granted.iter().map(|capability| capability.name()).collect::<Vec<_>>(),
                    "installed_at_ms": record.installed_at_ms,
                    "log_index": record.log_index,
                    "running_here": running,
                    "not_running_because": loaded.not_running.get(&record.name).map(NotRunning::reason),
                    "tools": loaded.named.iter().filter(|(_, tool)| tool.plugin == record.name).map(|(name, _)| name.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let trusted: Vec<Value> = trusted
            .iter()
            .map(|t| json!({ "publisher": t.publisher.to_string(), "trusted_at_ms": t.trusted_at_ms, "log_index": t.log_index }))
            .collect();
        Ok(json!({ "plugins": plugins, "trusted_publishers": trusted }))
    }

    /// Runs plugin tool `exposed` for `agent` under `caps`, here or on a
    /// peer that runs it (`offload`), or returns `None` when the registry
    /// names no such tool. `reservation` is the agreement's reservation the
    /// call settles, which a peer's receipt names.
    pub async fn call(
        &self,
        cluster: &Arc<Cluster>,
        exposed: &str,
        arguments: Value,
        agent: &str,
        caps: CallCaps,
        reservation: Option<crate::mesh::offload::ReceiptReservation>,
    ) -> Option<PluginRun> {
        let plugin = {
            let loaded = self.read();
            loaded
                .named
                .get(exposed)
                .and_then(|tool| Some((loaded.registry.get(&tool.plugin)?.clone(), tool.tool.clone())))
        };
        let Some((registered, tool)) = plugin else {
            let timeout = self.federation.call_timeout_ms(exposed)?;
            let wall_ms = caps.wall_clock_ms.map_or(timeout, |cap| cap.min(timeout));
            return self.federation.call(&self.offload, cluster, exposed, arguments, agent, wall_ms, reservation).await;
        };
        let record = &registered.record;
        let call = offload::Call {
            kind: CallKind::Plugin,
            name: &record.name,
            hash: record.module_sha256,
            tool: &tool,
            arguments,
            agent,
            caps,
            reservation,
        };
        Some(self.offload.route(self, cluster, record, call).await)
    }

    /// The plugin `name` as it runs here, if it runs here as the registry
    /// holds it with module `module`.
    fn running_here(&self, name: &str, module: &[u8; 32]) -> Option<Arc<Running>> {
        self.read().running.get(name).filter(|running| running.record.module_sha256 == *module).cloned()
    }

    /// Runs `tool` of a plugin running here: the answer and the fuel burnt,
    /// or why it did not run at all (no slot free, the runtime stopping).
    async fn run_here(
        &self,
        cluster: &Arc<Cluster>,
        running: &Arc<Running>,
        tool: &str,
        arguments: &Value,
        agent: &str,
        caps: CallCaps,
    ) -> Result<(PluginCallResult, u64), String> {
        let Ok(slot) = self.calls.clone().acquire_owned().await else {
            return Err("the plugin runtime is stopping".into());
        };
        let needs_memory = [Capability::MemoryRead, Capability::MemoryWrite]
            .iter()
            .any(|capability| running.record.granted.contains(capability));
        let context = context::NodeContext::new(cluster.clone(), agent, &running.record.name, needs_memory);
        // On the blocking pool, which has a thread for every call this
        // semaphore admits and more for storage (`BLOCKING_THREADS` in
        // main.rs); the slot is held by the thread, so a caller that stops
        // waiting does not free it while the call still runs.
        // `block_in_place` would hand the worker's queue to a new thread at
        // every call instead: under a steady stream of calls the node kept
        // dozens of threads alive (BENCHMARKS.md, "Soak").
        let (host, plugin) = (self.host.clone(), running.clone());
        let (tool_name, arguments) = (tool.to_owned(), arguments.clone());
        let (outcome, fuel_used) = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            host.call_capped(&plugin.plugin, &tool_name, &arguments, Box::new(context), caps)
        })
        .await
        .map_err(|error| format!("the plugin call's thread failed: {error}"))?;
        let answer = match outcome {
            Ok(output) if output.is_error => Err(output.result.get("error").map_or_else(
                || output.result.to_string(),
                |error| error.as_str().map_or_else(|| error.to_string(), str::to_owned),
            )),
            Ok(output) => Ok(output.result),
            Err(error @ CallError::Busy) => return Err(error.to_string()),
            Err(error) => Err(format!("plugin {} tool {tool}: {error}", running.record.name)),
        };
        Ok((answer, fuel_used))
    }

    /// Offload counters, for metrics.
    pub fn offload_counters(&self) -> OffloadCounters {
        self.offload.counters()
    }

    /// Test switch: this node signs the receipts of calls it runs for peers
    /// with a key that is not its own.
    pub fn forge_receipts(&self, forge: bool) {
        self.offload.forge_receipts(forge);
    }
}

/// A registry command's outcome in words.
pub fn outcome_text(reply: &CommandReply) -> String {
    match reply {
        CommandReply::Plugin(PluginOutcome::Full { what, limit }) => {
            format!("the cluster already holds its maximum of {limit} {what}")
        }
        CommandReply::Plugin(PluginOutcome::Refused(error)) => error.to_string(),
        other => format!("unexpected outcome {other:?}"),
    }
}
