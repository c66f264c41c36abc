//! The node's tools: each is declared once ([`ToolDecl`]: name, description,
//! the access it needs, and its input as a Rust type whose JSON Schema is
//! derived), and every call goes through the kernel's one entry point,
//! [`Tooling::call`]. Plugins' tools are looked up in the plugin runtime.

pub mod agents;
pub mod agreements;
mod leasing;
mod memory;
mod plugins;
mod policies;
mod servers;
mod status;
mod tokens;
mod trace;
mod usage_proofs;

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use zeromesh_kernel::{
    needs_settling, Access, Budget, Caller, Kernel, Meter, Ran, Refusal, Registry, Served, ToolCall, Tools,
};
use zeromesh_plugins::CallCaps;
use zeromesh_protocol::agent::AgentRecord;
use zeromesh_protocol::agreement::{AgreementRecord, Usage, UsageCommand, UsageOutcome};
use zeromesh_protocol::{Command, CommandReply};

use crate::cluster::{Cluster, ServiceError};
use crate::mesh::offload::ReceiptReservation;
use crate::plugins::PluginRuntime;

/// What tools reach: the cluster and the plugin runtime.
pub struct ToolEnv {
    pub cluster: Arc<Cluster>,
    pub plugins: Arc<PluginRuntime>,
    /// Whether the test-only fault tools are offered (`--test-faults`).
    pub test_faults: bool,
    /// This node's leases of agreements' allowances.
    pub leasing: Arc<Leasing>,
    /// The policy set this node has applied, compiled.
    pub policies: PolicyCache,
    /// This node's proving key and prover thread for proofs of usage.
    pub usage_proofs: Arc<UsageProofs>,
}

pub use leasing::Leasing;
pub use policies::PolicyCache;
pub use usage_proofs::UsageProofs;

/// Reports a long tool's progress: `(step, steps, message)`.
pub type Progress = Arc<dyn Fn(u64, u64, &str) + Send + Sync>;

/// One call of a tool, after the kernel allowed it.
pub struct Invocation {
    /// The agent the call acts for.
    pub agent: String,
    pub progress: Progress,
}

/// Why a tool that was allowed did not answer a result.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not fit the tool: a protocol error; nothing ran.
    #[error("invalid arguments for {tool}: {reason}")]
    InvalidArguments { tool: String, reason: String },
    /// The tool ran and failed.
    #[error(transparent)]
    Failed(#[from] ServiceError),
}

/// What a tool answers.
pub type ToolOutcome = Result<Value, ToolError>;

/// What a call answered, and where a plugin tool's call ran.
#[derive(Debug)]
pub struct Answer {
    pub outcome: ToolOutcome,
    pub served_by: Option<crate::plugins::ServedBy>,
    /// The outcome is an MCP tool result already (a federated server's),
    /// passed on as it is.
    pub mcp_result: bool,
}

type Handler = Box<dyn Fn(Arc<ToolEnv>, Invocation, Value) -> BoxFuture<'static, ToolOutcome> + Send + Sync>;

/// One of the node's own tools.
pub struct ToolDecl {
    pub name: &'static str,
    pub description: &'static str,
    pub access: Access,
    /// Offered only with `--test-faults`.
    pub test_only: bool,
    /// May run long (seconds): offered as a task to clients that support
    /// MCP's Tasks extension.
    pub long: bool,
    /// Derived from the handler's argument type.
    pub input_schema: Value,
    handler: Handler,
}

impl ToolDecl {
    /// Declares tool `name` run by `handler`, whose arguments `A` are parsed
    /// (unknown fields refused) before it runs.
    fn new<A, F, Fut>(name: &'static str, description: &'static str, access: Access, handler: F) -> ToolDecl
    where
        A: JsonSchema + DeserializeOwned + 'static,
        F: Fn(Arc<ToolEnv>, Invocation, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ToolOutcome> + Send + 'static,
    {
        let handler: Handler =
            Box::new(move |env, invocation, arguments| match serde_json::from_value::<A>(arguments) {
                Ok(parsed) => handler(env, invocation, parsed).boxed(),
                Err(error) => futures::future::ready(Err(invalid(name, error))).boxed(),
            });
        ToolDecl {
            name,
            description,
            access,
            test_only: false,
            long: false,
            input_schema: input_schema::<A>(),
            handler,
        }
    }

    fn test_only(self) -> ToolDecl {
        ToolDecl { test_only: true, ..self }
    }

    fn long(self) -> ToolDecl {
        ToolDecl { long: true, ..self }
    }

    /// The tool as `tools/list` shows it.
    pub fn definition(&self) -> Value {
        json!({ "name": self.name, "description": self.description, "inputSchema": self.input_schema })
    }
}

/// `A`'s JSON Schema, as MCP wants a tool's `inputSchema`: an object schema,
/// without the Rust type's name as its title.
fn input_schema<A: JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|settings| settings.meta_schema = None)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<A>().to_value();
    if let Some(object) = schema.as_object_mut() {
        object.remove("title");
    }
    schema
}

/// Arguments that do not fit a tool.
fn invalid(tool: &str, reason: impl std::fmt::Display) -> ToolError {
    ToolError::InvalidArguments { tool: tool.to_owned(), reason: reason.to_string() }
}

/// Tools that take no arguments.
#[derive(serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Every tool the node declares, in `tools/list` order, test-only ones included.
fn declarations() -> Vec<ToolDecl> {
    let mut all = memory::tools();
    all.extend(status::tools());
    all.extend(plugins::tools());
    all.extend(servers::tools());
    all.extend(tokens::tools());
    all.extend(agents::tools());
    all.extend(agreements::tools());
    all.extend(policies::tools());
    all.extend(trace::tools());
    all
}

/// Names of all the node's own tools; a plugin tool with one of these names
/// is namespaced (`plugin.tool`).
pub fn builtin_names() -> Vec<&'static str> {
    declarations().iter().map(|tool| tool.name).collect()
}

/// The node's tools and the kernel they are called through.
pub struct Tooling {
    env: Arc<ToolEnv>,
    builtin: Vec<ToolDecl>,
    kernel: Kernel,
}

impl Tooling {
    pub fn new(env: Arc<ToolEnv>) -> Tooling {
        let test_faults = env.test_faults;
        let builtin = declarations().into_iter().filter(|tool| test_faults || !tool.test_only).collect();
        Tooling { env, builtin, kernel: Kernel::default() }
    }

    fn builtin(&self, name: &str) -> Option<&ToolDecl> {
        self.builtin.iter().find(|tool| tool.name == name)
    }

    /// Whether tool `name` may run long (one of the node's own, so declared).
    pub fn is_long(&self, name: &str) -> bool {
        self.builtin(name).is_some_and(|tool| tool.long)
    }

    /// Every tool this node offers, its own then its plugins', as
    /// `tools/list` shows them.
    pub fn definitions(&self) -> Vec<Value> {
        let mut all: Vec<Value> = self.builtin.iter().map(ToolDecl::definition).collect();
        all.extend(self.env.plugins.tool_definitions(&self.env.cluster));
        all
    }

    /// Calls tool `name` for `caller`: the kernel decides (and meters, under
    /// an agreement), then the tool runs.
    pub async fn call(
        &self,
        caller: &Caller,
        name: &str,
        arguments: Value,
        meta: CallMeta<'_>,
        progress: Progress,
    ) -> Result<Served<Answer>, Refusal> {
        if self.builtin(name).is_none() {
            self.wait_for_plugin(name).await?;
        }
        let site = Site { tooling: self, progress };
        let call =
            ToolCall { caller, tool: name, arguments, named_agent: meta.agent, idempotency_key: meta.idempotency_key };
        self.kernel.call(&site, call).await
    }
}

/// How long a call of a plugin tool that is installed but not running here
/// yet waits for it (its module being fetched) before it is refused with
/// "retry".
const PLUGIN_LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a call naming a tool or an agreement this node does not know
/// waits to apply what the leader has committed, in case it names a plugin
/// just installed or an agreement just created through another node.
const UNKNOWN_NAME_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

impl Tooling {
    /// A plugin tool that the registry names but neither this node nor a
    /// peer runs yet is waited for a bounded time, then refused as loading
    /// (or failed), never as unknown.
    async fn wait_for_plugin(&self, name: &str) -> Result<(), Refusal> {
        let (plugins, cluster) = (&self.env.plugins, &self.env.cluster);
        if plugins.offers_in_mesh(cluster, name) {
            return Ok(());
        }
        if plugins.federation.names(name) {
            // A federated tool: served once a host advertises it serving.
            if plugins.wait_offered(cluster, name, PLUGIN_LOAD_WAIT).await {
                return Ok(());
            }
            let server = name.split_once('.').map_or(name, |(server, _)| server).to_owned();
            return Err(Refusal::ServerUnavailable { name: name.to_owned(), server });
        }
        let mut named = plugins.not_running_for(cluster, name).await;
        if named.is_none() && !plugins.offers(name) {
            // Unknown here: this node may not have applied the install yet.
            // Caught up briefly, so a mistyped name on a cut-off node is not
            // held long.
            if let Ok(Ok(())) = tokio::time::timeout(UNKNOWN_NAME_CATCH_UP, cluster.catch_up()).await {
                named = plugins.not_running_for(cluster, name).await;
            }
        }
        match named {
            None => Ok(()),
            Some(Err((plugin, reason))) => Err(Refusal::ToolFailed { name: name.to_owned(), plugin, reason }),
            Some(Ok(plugin)) => match plugins.wait_offered(cluster, name, PLUGIN_LOAD_WAIT).await {
                true => Ok(()),
                false if !plugins.runs_plugins() => Err(Refusal::ToolFailed {
                    name: name.to_owned(),
                    plugin,
                    reason: format!(
                        "this node runs no plugins (run_plugins = false) and no peer has advertised running it within {} ms",
                        PLUGIN_LOAD_WAIT.as_millis()
                    ),
                }),
                false => Err(Refusal::ToolLoading { name: name.to_owned(), plugin }),
            },
        }
    }
}

/// What a call's `_meta` says to the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallMeta<'a> {
    /// The agent the call acts for (`zeromesh/agent`).
    pub agent: Option<&'a str>,
    /// The caller's key for the call (`zeromesh/idempotency-key`).
    pub idempotency_key: Option<&'a str>,
}

/// The largest result a metered call may return, in bytes (what it reserves
/// of an agreement's `bytes_out`).
const MAX_RESULT_BYTES: u64 = zeromesh_protocol::limits::MAX_API_MESSAGE_BYTES as u64;

/// The most a built-in tool may run for under an agreement that limits
/// wall-clock time, in milliseconds.
const BUILTIN_WALL_MS: u64 = 30_000;

impl Registry for Site<'_> {
    fn agent(&self, id: &str) -> Result<Option<AgentRecord>, String> {
        self.tooling.env.cluster.consensus.agent(id).map_err(|error| error.to_string())
    }

    fn agreements_of(&self, id: &str) -> Result<Vec<AgreementRecord>, String> {
        self.tooling.env.cluster.consensus.agreements_of(id).map_err(|error| error.to_string())
    }

    fn catch_up(&self) -> impl Future<Output = ()> + Send {
        let cluster = self.tooling.env.cluster.clone();
        async move {
            if let Err(error) = cluster.catch_up().await {
                tracing::debug!(%error, "could not catch up with the leader");
            }
        }
    }

    fn policies(&self) -> Result<Arc<zeromesh_kernel::Policies>, String> {
        self.tooling.env.policies.current(&self.tooling.env.cluster.consensus)
    }
}

impl Meter for Site<'_> {
    fn reserve(
        &self,
        agreement: &AgreementRecord,
        key: &str,
        client_key: bool,
        want: Usage,
        policy: u64,
    ) -> impl Future<Output = Result<UsageOutcome, String>> + Send {
        let env = self.tooling.env.clone();
        let (record, key) = (agreement.clone(), key.to_owned());
        async move {
            // A caller's own key must count once through any node: only the log
            // can tell. Past its expiry (by this node's clock), only apply may
            // say whether an agreement still serves a call.
            let now_ms = zeromesh_consensus::wall_clock_ms();
            if env.leasing.enabled() && !client_key && now_ms < record.terms.expires_at_ms {
                if let Some(leased) = env.leasing.reserve(&env, &record, &key, &want, policy).await {
                    return leased;
                }
            }
            let blinding = usage_blinding()?;
            let command = UsageCommand::Reserve { agreement: record.terms.id.clone(), key, want, policy, blinding };
            propose_usage(env.cluster.clone(), command).await
        }
    }

    fn settle(
        &self,
        agreement: &AgreementRecord,
        key: &str,
        used: Usage,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let env = self.tooling.env.clone();
        let (id, key, through_log) = (agreement.terms.id.clone(), key.to_owned(), needs_settling(agreement));
        async move {
            if env.leasing.settle(&env, &key, &used) || !through_log {
                return Ok(());
            }
            let blinding = usage_blinding()?;
            match propose_usage(env.cluster.clone(), UsageCommand::Settle { agreement: id, key, used, blinding })
                .await?
            {
                UsageOutcome::Settled { .. } => Ok(()),
                other => Err(format!("unexpected settlement outcome {other:?}")),
            }
        }
    }

    fn abandon(&self, _: &AgreementRecord, key: &str) {
        self.tooling.env.leasing.abandon(&self.tooling.env, key);
    }

    fn record_violation(
        &self,
        agent: &str,
        agreement: Option<&str>,
        tool: &str,
        reason: &str,
    ) -> impl Future<Output = ()> + Send {
        let command = UsageCommand::Violation {
            agent: agent.to_owned(),
            agreement: agreement.map(str::to_owned),
            tool: tool.to_owned(),
            reason: reason.chars().take(zeromesh_protocol::limits::MAX_AGENT_TEXT_BYTES / 4).collect(),
        };
        let cluster = self.tooling.env.cluster.clone();
        async move {
            if let Err(error) = propose_usage(cluster, command).await {
                tracing::warn!(%error, "a violation could not be recorded");
            }
        }
    }

    fn fresh_key(&self) -> String {
        fresh_key(&self.tooling.env)
    }
}

/// A key no other call or lease has: this node's id, random bits and a counter.
fn fresh_key(env: &ToolEnv) -> String {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut random = [0u8; 12];
    if getrandom::fill(&mut random).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        random.copy_from_slice(&nanos.as_nanos().to_be_bytes()[4..]);
    }
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("n{:x}-{}-{call:x}", env.cluster.node_id(), hex::encode(random))
}

/// 32 random bytes for the usage commitments of a call's reservation or
/// settlement: they hide the amounts in the trace, so there is no fallback
/// to anything guessable (a call that cannot draw them is not served; a
/// settlement that cannot leaves the reservation counted whole).
pub(crate) fn usage_blinding() -> Result<[u8; 32], String> {
    let mut blinding = [0u8; 32];
    getrandom::fill(&mut blinding).map_err(|error| format!("no randomness for a usage commitment: {error}"))?;
    Ok(blinding)
}

async fn propose_usage(cluster: Arc<Cluster>, command: UsageCommand) -> Result<UsageOutcome, String> {
    match cluster.propose(Command::Usage(command)).await {
        Ok((_, CommandReply::Usage(outcome))) => Ok(outcome),
        Ok((_, other)) => Err(format!("unexpected reply {other:?}")),
        Err(error) => Err(error.to_string()),
    }
}

/// The kernel's view of this node's tools for one call.
struct Site<'a> {
    tooling: &'a Tooling,
    progress: Progress,
}

impl Tools for Site<'_> {
    type Outcome = Answer;

    fn access(&self, name: &str) -> Option<Access> {
        match self.tooling.builtin(name) {
            Some(tool) => Some(tool.access),
            None => {
                let env = &self.tooling.env;
                env.plugins.offers_in_mesh(&env.cluster, name).then_some(Access::RunPlugin)
            }
        }
    }

    fn ceiling(&self, name: &str) -> Usage {
        let caps = self.tooling.env.plugins.ceiling(name).unwrap_or_default();
        Usage {
            fuel: caps.fuel.unwrap_or(0),
            wall_ms: caps.wall_clock_ms.unwrap_or(BUILTIN_WALL_MS),
            bytes_out: MAX_RESULT_BYTES,
            ..Usage::default()
        }
    }

    fn run(
        &self,
        name: &str,
        agent: &str,
        arguments: Value,
        budget: Budget,
    ) -> impl Future<Output = Ran<Answer>> + Send {
        let env = self.tooling.env.clone();
        let (name, agent) = (name.to_owned(), agent.to_owned());
        let builtin = match self.tooling.builtin(&name) {
            Some(tool) => {
                let invocation = Invocation { agent: agent.clone(), progress: self.progress.clone() };
                Ok((tool.handler)(env.clone(), invocation, arguments))
            }
            None => Err(arguments),
        };
        async move {
            let started = std::time::Instant::now();
            let (outcome, fuel, served_by, mcp_result) = match builtin {
                Ok(running) => match budget.wall_ms {
                    None => (running.await, 0, None, false),
                    Some(ms) => match tokio::time::timeout(std::time::Duration::from_millis(ms), running).await {
                        Ok(outcome) => (outcome, 0, None, false),
                        Err(_) => (Err(out_of("wall_ms", ms)), 0, None, false),
                    },
                },
                Err(arguments) => {
                    let caps = CallCaps { fuel: budget.fuel, wall_clock_ms: budget.wall_ms };
                    let reservation = budget.reservation.map(|reserved| ReceiptReservation {
                        agreement: reserved.agreement,
                        key: reserved.key,
                        log_index: reserved.log_index,
                    });
                    match env.plugins.call(&env.cluster, &name, arguments, &agent, caps, reservation).await {
                        Some(run) => (run.answer.map_err(ToolError::Failed), run.fuel, run.served_by, run.mcp_result),
                        None => (
                            Err(ToolError::Failed(ServiceError::Unavailable(format!(
                                "tool {name:?} is no longer installed or registered"
                            )))),
                            0,
                            None,
                            false,
                        ),
                    }
                }
            };
            let wall_ms = started.elapsed().as_millis() as u64;
            let bytes_out = match &outcome {
                Ok(result) => serde_json::to_vec(result).map_or(0, |bytes| bytes.len() as u64),
                Err(_) => 0,
            };
            let outcome = match budget.bytes_out {
                Some(allowed) if bytes_out > allowed => Err(out_of("bytes_out", allowed)),
                _ => outcome,
            };
            Ran {
                outcome: Answer { outcome, served_by, mcp_result },
                used: Usage { fuel, wall_ms, bytes_out, ..Usage::default() },
            }
        }
    }
}

/// A call stopped by what its agreement had left of `metric`.
fn out_of(metric: &str, allowed: u64) -> ToolError {
    ToolError::Failed(ServiceError::Refused(format!(
        "the call needed more {metric} than its agreement had left ({allowed})"
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_tool_is_declared_once_with_an_object_schema_that_refuses_unknown_arguments() {
        let all = declarations();
        let names: BTreeSet<&str> = all.iter().map(|tool| tool.name).collect();
        assert_eq!(names.len(), all.len(), "a tool name is declared twice");
        for tool in &all {
            let schema = &tool.input_schema;
            assert_eq!(schema["type"], "object", "{}: {schema}", tool.name);
            assert_eq!(schema["additionalProperties"], false, "{}: {schema}", tool.name);
            assert!(schema.get("title").is_none(), "{}: {schema}", tool.name);
        }
        let put = &all.iter().find(|tool| tool.name == "memory_put").unwrap().input_schema;
        assert_eq!(put["required"], json!(["path"]));
        assert!(put["properties"]["path"]["description"].as_str().unwrap().contains("agent-7/notes/today"));
        let list = &all.iter().find(|tool| tool.name == "memory_list").unwrap().input_schema;
        assert_eq!(list["properties"]["limit"]["maximum"], json!(zeromesh_protocol::limits::MAX_PAGE_ENTRIES));
        let install = &all.iter().find(|tool| tool.name == "plugin_install").unwrap().input_schema;
        assert_eq!(install["properties"]["grant"]["items"]["enum"][1], "memory.read");
    }

    #[test]
    fn the_fault_switch_is_declared_test_only() {
        let test_only: Vec<&str> = declarations().iter().filter(|tool| tool.test_only).map(|tool| tool.name).collect();
        assert_eq!(test_only, ["mesh_isolate", "mesh_heal", "mesh_refuse_links", "offload_forge_receipts"]);
    }
}
