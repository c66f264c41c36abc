//! The federated server tools: register an external MCP server with the
//! mesh (through Raft), unregister it, and list the registered servers with
//! where they run and how they are doing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use zeromesh_kernel::Access;
use zeromesh_protocol::plugin::{
    HealthSettings, PluginCommand, PluginOutcome, SecretRef, ServerHosts, ServerRegistration, ServerTransport,
};
use zeromesh_protocol::{Command, CommandReply};

use super::{invalid, Invocation, NoArgs, ToolDecl, ToolEnv, ToolOutcome};
use crate::cluster::ServiceError;
use crate::plugins::outcome_text;

/// The per-call timeout of a registration that sets none.
const DEFAULT_CALL_TIMEOUT_MS: u64 = 30_000;
/// The longest `server_register` waits for a host to serve the server.
const MAX_WAIT_MS: u64 = 120_000;
const WAIT_POLL: Duration = Duration::from_millis(100);

pub(super) fn tools() -> Vec<ToolDecl> {
    vec![
        ToolDecl::new(
            "server_register",
            "Register an external MCP server with the whole mesh (replaces one of the same name): the nodes it names start and supervise it, and every node offers its tools as `name.tool`.",
            Access::Admin,
            register,
        )
        .long(),
        ToolDecl::new(
            "server_unregister",
            "Remove a federated MCP server from the mesh: its hosts stop it.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: ServerNameArgs| async move {
                let (log_index, reply) =
                    env.cluster.propose(Command::Plugin(PluginCommand::UnregisterServer { name: args.name })).await?;
                match reply {
                    CommandReply::Plugin(PluginOutcome::ServerUnregistered { name }) => {
                        Ok(json!({ "unregistered": name, "log_index": log_index }))
                    }
                    CommandReply::Plugin(PluginOutcome::ServerNotRegistered { name }) => {
                        Err(ServiceError::Invalid(format!("no server named {name:?} is registered")).into())
                    }
                    other => Err(ServiceError::Refused(outcome_text(&other)).into()),
                }
            },
        ),
        ToolDecl::new(
            "server_list",
            "Federated MCP servers: their registrations (secrets by reference only), the nodes that host them, their health, and each tool's definition hash on every host (schema mismatches marked).",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, _: NoArgs| async move { Ok(env.plugins.federation.list(&env.cluster)) },
        ),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ServerNameArgs {
    /// The registered server's name.
    name: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RegisterArgs {
    /// The server's name: the namespace of its tools (`name.tool`). ASCII
    /// letters, digits, `_` and `-`.
    name: String,
    /// A stdio server's command line: the program, then its arguments (no shell).
    #[serde(default)]
    command: Vec<String>,
    /// A Streamable HTTP server's URL (instead of `command`).
    url: Option<String>,
    /// The bearer token sent to `url`, by reference: `env:NAME` or
    /// `file:/absolute/path`, read on each hosting node.
    bearer: Option<String>,
    /// Ids of the nodes that host it (decimal text).
    #[serde(default)]
    host_nodes: Vec<String>,
    /// Labels (`--labels`) of the nodes that host it.
    #[serde(default)]
    host_labels: Vec<String>,
    /// Environment variables of a stdio server, in clear.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Environment variables of a stdio server read from secrets on each
    /// hosting node: NAME to `env:VARIABLE` or `file:/absolute/path`.
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    /// Longest one call may take (default 30000).
    call_timeout_ms: Option<u64>,
    /// The server's tools the mesh offers (default: all).
    #[serde(default)]
    allow_tools: Vec<String>,
    /// Time between health checks (a `tools/list` answered in time); default 5000.
    health_interval_ms: Option<u64>,
    /// Longest a health check may take; default 2000.
    health_timeout_ms: Option<u64>,
    /// Failed health checks in a row after which a host counts the server
    /// unhealthy (a process that exits is unhealthy at once); default 2.
    unhealthy_after: Option<u32>,
    /// Failed calls in a row after which the circuit opens; default 5.
    breaker_after: Option<u32>,
    /// How long an open circuit refuses calls before one is tried; default 30000.
    breaker_open_ms: Option<u64>,
    /// Address space a child process may map, in MiB.
    max_memory_mb: Option<u64>,
    /// Waits at most this long (ms) for a host to serve the server's tools.
    #[serde(default)]
    #[schemars(range(max = 120000))]
    wait_ms: u64,
}

fn registration(args: RegisterArgs) -> Result<ServerRegistration, String> {
    let transport = match (args.command.is_empty(), args.url) {
        (false, None) => {
            if args.bearer.is_some() {
                return Err("bearer applies to a url".into());
            }
            ServerTransport::Stdio { command: args.command }
        }
        (true, Some(url)) => {
            let bearer = args.bearer.as_deref().map(SecretRef::parse).transpose().map_err(|error| error.to_string())?;
            ServerTransport::Http { url, bearer }
        }
        _ => return Err("give either command (a stdio server) or url (a Streamable HTTP server)".into()),
    };
    let nodes = args
        .host_nodes
        .iter()
        .map(|id| id.trim().parse::<u64>().map_err(|_| format!("host_nodes: {id:?} is not a node id")))
        .collect::<Result<Vec<u64>, String>>()?;
    let secrets = args
        .secrets
        .into_iter()
        .map(|(name, reference)| Ok((name, SecretRef::parse(&reference).map_err(|error| error.to_string())?)))
        .collect::<Result<BTreeMap<String, SecretRef>, String>>()?;
    let defaults = HealthSettings::default();
    let registration = ServerRegistration {
        name: args.name,
        transport,
        hosts: ServerHosts { nodes, labels: args.host_labels },
        env: args.env,
        secrets,
        call_timeout_ms: args.call_timeout_ms.unwrap_or(DEFAULT_CALL_TIMEOUT_MS),
        allow_tools: args.allow_tools,
        health: HealthSettings {
            interval_ms: args.health_interval_ms.unwrap_or(defaults.interval_ms),
            timeout_ms: args.health_timeout_ms.unwrap_or(defaults.timeout_ms),
            unhealthy_after: args.unhealthy_after.unwrap_or(defaults.unhealthy_after),
            breaker_after: args.breaker_after.unwrap_or(defaults.breaker_after),
            breaker_open_ms: args.breaker_open_ms.unwrap_or(defaults.breaker_open_ms),
        },
        max_memory_mb: args.max_memory_mb,
    };
    registration.validate().map_err(|error| error.to_string())?;
    Ok(registration)
}

async fn register(env: Arc<ToolEnv>, invocation: Invocation, args: RegisterArgs) -> ToolOutcome {
    let wait_ms = args.wait_ms;
    if wait_ms > MAX_WAIT_MS {
        return Err(invalid("server_register", format!("wait_ms is at most {MAX_WAIT_MS}")));
    }
    let registration = registration(args).map_err(|reason| invalid("server_register", reason))?;
    let name = registration.name.clone();
    if env
        .cluster
        .consensus
        .installed_plugins()
        .await
        .map_err(ServiceError::from)?
        .iter()
        .any(|plugin| plugin.name == name)
    {
        return Err(ServiceError::Invalid(format!(
            "a plugin named {name:?} is installed: a server's tools would share its namespace; choose another name"
        ))
        .into());
    }
    (invocation.progress)(1, 2, "registering through the log");
    let (log_index, reply) =
        env.cluster.propose(Command::Plugin(PluginCommand::RegisterServer { registration })).await?;
    let replaced = match reply {
        CommandReply::Plugin(PluginOutcome::ServerRegistered { replaced, .. }) => replaced,
        other => return Err(ServiceError::Refused(outcome_text(&other)).into()),
    };
    let mut answer = json!({ "registered": name, "replaced": replaced, "log_index": log_index });
    if wait_ms > 0 {
        (invocation.progress)(2, 2, "waiting for a host to serve it");
        answer["serving"] = json!(wait_serving(&env, &name, log_index, Duration::from_millis(wait_ms)).await);
    }
    Ok::<Value, _>(answer)
}

/// Waits at most `wait` for this node to see a host serving `name`'s
/// registration at `log_index` with tools: the tools it serves then.
async fn wait_serving(env: &ToolEnv, name: &str, log_index: u64, wait: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let tools = env.plugins.federation.serving_tools(&env.cluster, name, log_index);
        if !tools.is_empty() || tokio::time::Instant::now() >= deadline {
            return tools;
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}
