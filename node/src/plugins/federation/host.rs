//! One federated server on a node that hosts it: started with rmcp's
//! client side (a child process, or a Streamable HTTP connection), its
//! tools listed and hashed, probed every health interval, restarted with
//! backoff, its calls behind a circuit breaker, and stopped without leaving
//! a process behind.
//!
//! A child process runs in its own process group with a cleared
//! environment (PATH, HOME, LANG and TMPDIR kept, then the registration's
//! variables and secrets), in its own folder under the node's data
//! folder, with `RLIMIT_AS` when the registration sets a memory limit. It
//! is killed with its whole group when it is stopped, and by the kernel
//! when the node dies (`PR_SET_PDEATHSIG`). What it writes to its stderr
//! goes to the node's log, line by line and named by the server, and its
//! last lines are repeated in the log's line that says why it failed. The
//! API's health reason (which any token may read) only says that they are
//! there: a server's output may hold what it should not show.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject, Tool};
use rmcp::service::{RoleClient, RunningService, ServiceError as McpError};
use rmcp::ServiceExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;
use zeromesh_protocol::limits::{
    MAX_FEDERATED_SECRET_BYTES, MAX_FEDERATED_TOOLS, MAX_FEDERATED_TOOL_DEFINITION_BYTES, MAX_PLUGIN_NAME_BYTES,
};
use zeromesh_protocol::plugin::{RegisteredServer, SecretRef, ServerRegistration, ServerTransport};

use crate::mesh::offload::sha256;

/// The first pause before a server that failed is started again; it
/// doubles with each failure in a row, up to `RESTART_MAX`.
const RESTART_MIN: Duration = Duration::from_millis(500);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A server up this long starts its backoff over when it fails.
const RESTART_RESET: Duration = Duration::from_secs(60);
/// Longest a server may take to start and answer the handshake.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a child process is looked at between health checks: its exit
/// is seen this fast.
const EXIT_POLL: Duration = Duration::from_millis(100);
/// Variables of the node's environment a child process keeps.
const KEPT_ENV: [&str; 5] = ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"];
/// The last lines of a child's stderr kept to repeat in the log line that
/// says why it failed, and how much of each.
const TAIL_LINES: usize = 5;
const TAIL_LINE_BYTES: usize = 240;
/// Longest piece of a child's stderr read as one line; a longer line is
/// logged in pieces of this size.
const STDERR_LINE_BYTES: u64 = 16 * 1024;
/// The log target of a child's stderr lines, on by default
/// ([`crate::logging::DEFAULT_LOG_FILTER`]).
const STDERR_TARGET: &str = "zeromesh::federated_server";
/// How long a failed start waits for the rest of its child's stderr.
const STDERR_DRAIN: Duration = Duration::from_secs(1);

/// One tool of a hosted server as the mesh offers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedTool {
    pub name: String,
    /// SHA-256 of `definition`.
    pub sha256: [u8; 32],
    /// The server's definition of the tool, canonical JSON (keys sorted).
    pub definition: Arc<Vec<u8>>,
}

/// Whether a tool's definition (JSON) says it only reads, or may be
/// repeated safely: a call that may have reached a server may then be
/// made again on another host.
pub fn retry_safe(definition: &[u8]) -> bool {
    let tool: Value = serde_json::from_slice(definition).unwrap_or(Value::Null);
    let annotations = &tool["annotations"];
    annotations["readOnlyHint"] == Value::Bool(true) || annotations["idempotentHint"] == Value::Bool(true)
}

/// How a hosted server is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy(String),
}

/// A circuit breaker over a server's calls.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// A call let through while the circuit is half open.
    trial: bool,
}

/// What is known of a hosted server now.
#[derive(Debug)]
pub struct HostState {
    pub health: Health,
    pub tools: Vec<HostedTool>,
    /// Tools the server has that the mesh does not offer, and why.
    pub left_out: Vec<String>,
    pub pid: Option<u32>,
    pub restarts: u64,
    failed_checks: u32,
    breaker: Breaker,
}

/// What a call on the server came to.
pub enum HostCall {
    /// The server answered (a result, which may be its own error result).
    Answered(CallToolResult),
    /// It may have reached the server, and no result came back.
    Failed(String),
    /// It certainly did not reach the server.
    NotRun(String),
}

type Client = RunningService<RoleClient, ()>;

/// A server this node hosts, and its supervisor's handle.
pub struct Host {
    pub server: RegisteredServer,
    state: Mutex<HostState>,
    client: Mutex<Option<rmcp::Peer<RoleClient>>>,
    stop: watch::Sender<bool>,
    /// Bumped on every change others should see (health, tools).
    changes: watch::Sender<u64>,
    stopped: tokio::sync::Notify,
    finished: std::sync::atomic::AtomicBool,
}

/// The canonical JSON of `value`: object keys sorted at every level.
pub fn canonical(value: &Value) -> Vec<u8> {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let ordered: BTreeMap<&String, Value> = map.iter().map(|(key, value)| (key, sorted(value))).collect();
                let mut out = serde_json::Map::new();
                for (key, value) in ordered {
                    out.insert(key.clone(), value);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).unwrap_or_default()
}

/// The tools of `server`'s list that the mesh offers (allowed, named and
/// sized within the limits), hashed, and the others with the reason.
pub fn offered_tools(server: &ServerRegistration, listed: Vec<Tool>) -> (Vec<HostedTool>, Vec<String>) {
    let mut offered = Vec::new();
    let mut left_out = Vec::new();
    for tool in listed {
        let name = tool.name.to_string();
        if !server.allows(&name) {
            continue;
        }
        if name.is_empty() || name.len() > MAX_PLUGIN_NAME_BYTES || name.contains(char::is_control) {
            left_out.push(format!("{name:?}: a tool name must be 1 to {MAX_PLUGIN_NAME_BYTES} bytes"));
            continue;
        }
        if offered.len() == MAX_FEDERATED_TOOLS {
            left_out.push(format!("{name}: the mesh offers at most {MAX_FEDERATED_TOOLS} tools of one server"));
            continue;
        }
        let definition = canonical(&serde_json::to_value(&tool).unwrap_or(Value::Null));
        if definition.len() > MAX_FEDERATED_TOOL_DEFINITION_BYTES {
            left_out.push(format!(
                "{name}: its definition is {} bytes, over the limit of {MAX_FEDERATED_TOOL_DEFINITION_BYTES}",
                definition.len()
            ));
            continue;
        }
        offered.push(HostedTool { name, sha256: sha256(&definition), definition: Arc::new(definition) });
    }
    offered.sort_by(|a, b| a.name.cmp(&b.name));
    (offered, left_out)
}

/// Reads a secret where this node runs.
fn read_secret(reference: &SecretRef) -> Result<String, String> {
    match reference {
        SecretRef::Env(name) => std::env::var(name).map_err(|_| format!("secret {reference}: not set on this node")),
        SecretRef::File(path) => {
            let bytes = std::fs::read(path).map_err(|error| format!("secret {reference}: {error}"))?;
            if bytes.len() > MAX_FEDERATED_SECRET_BYTES {
                return Err(format!("secret {reference}: over {MAX_FEDERATED_SECRET_BYTES} bytes"));
            }
            let text = String::from_utf8(bytes).map_err(|_| format!("secret {reference}: not UTF-8"))?;
            Ok(text.trim_end_matches(['\n', '\r']).to_owned())
        }
    }
}

/// The command that starts a stdio server: no shell, a cleared environment,
/// its own process group and folder, killed if the node dies.
fn child_command(
    server: &ServerRegistration,
    argv: &[String],
    folder: &Path,
) -> Result<tokio::process::Command, String> {
    let mut command = tokio::process::Command::new(&argv[0]);
    command.args(&argv[1..]).env_clear().current_dir(folder).kill_on_drop(true).process_group(0);
    for name in KEPT_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(&server.env);
    for (name, reference) in &server.secrets {
        command.env(name, read_secret(reference)?);
    }
    let memory = server.max_memory_mb.map(|mib| mib << 20);
    // SAFETY: runs in the child between fork and exec; it only makes two
    // system calls (prctl, setrlimit), which are async-signal-safe, and
    // touches no lock or allocation.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            if let Some(bytes) = memory {
                let limit = rustix::process::Rlimit { current: Some(bytes), maximum: Some(bytes) };
                rustix::process::setrlimit(rustix::process::Resource::As, limit)?;
            }
            Ok(())
        });
    }
    Ok(command)
}

/// The last lines a child process wrote to its stderr, shared with the
/// task that reads it.
#[derive(Debug, Clone, Default)]
struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn lines(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, line: &str) {
        let mut end = line.len().min(TAIL_LINE_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let kept = if end < line.len() { format!("{}...", &line[..end]) } else { line.to_owned() };
        let mut lines = self.lines();
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(kept);
    }

    /// The kept lines, joined, if there are any.
    fn summary(&self) -> Option<String> {
        let lines = self.lines();
        (!lines.is_empty()).then(|| lines.iter().map(String::as_str).collect::<Vec<_>>().join(" | "))
    }
}

/// Reads a child's stderr until it closes: each line into the node's log,
/// the last few into `tail`.
async fn read_stderr(server: String, stderr: impl tokio::io::AsyncRead + Unpin, tail: StderrTail) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(STDERR_LINE_BYTES).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if !text.is_empty() {
            tracing::info!(target: STDERR_TARGET, %server, output = %text, "stderr");
            tail.push(text);
        }
    }
}

/// Connects to the server: spawns it (its stderr's last lines into
/// `tail`), or opens its URL; then the MCP handshake. The client, and a
/// child's pid.
async fn connect(
    server: &ServerRegistration,
    folder: &Path,
    tail: &StderrTail,
) -> Result<(Client, Option<u32>), String> {
    match &server.transport {
        ServerTransport::Stdio { command } => {
            std::fs::create_dir_all(folder).map_err(|error| format!("{}: {error}", folder.display()))?;
            let command = child_command(server, command, folder)?;
            let spawned = on_spawner_thread(move || {
                rmcp::transport::TokioChildProcess::builder(command).stderr(std::process::Stdio::piped()).spawn()
            })
            .await;
            let (transport, stderr) = spawned
                .and_then(|spawned| spawned)
                .map_err(|error| format!("could not start {:?}: {error}", server.name))?;
            let pid = transport.id();
            let reader = stderr.map(|stderr| tokio::spawn(read_stderr(server.name.clone(), stderr, tail.clone())));
            // A failed handshake drops the transport, which kills the child;
            // what it wrote last is waited for (briefly) to be read.
            match ().serve(transport).await {
                Ok(client) => Ok((client, pid)),
                Err(error) => {
                    if let Some(reader) = reader {
                        let _ = tokio::time::timeout(STDERR_DRAIN, reader).await;
                    }
                    Err(format!("the MCP handshake failed: {error}"))
                }
            }
        }
        ServerTransport::Http { url, bearer } => {
            // reqwest's rustls needs a process-wide provider: the node's (ring).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut config =
                rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(url.as_str());
            if let Some(bearer) = bearer {
                config = config.auth_header(read_secret(bearer)?);
            }
            let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
            let client = ().serve(transport).await.map_err(|error| format!("the MCP handshake failed: {error}"))?;
            Ok((client, None))
        }
    }
}

/// A job for the spawner thread.
type SpawnJob = Box<dyn FnOnce() + Send>;

/// Runs `job` on the one thread that spawns child processes, which lives
/// as long as the node: a child's `PR_SET_PDEATHSIG` fires when the thread
/// that spawned it exits, and the runtime's threads come and go.
async fn on_spawner_thread<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<SpawnJob>>> =
        std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::channel::<SpawnJob>();
        let runtime = tokio::runtime::Handle::current();
        let started = std::thread::Builder::new().name("federation-spawner".into()).spawn(move || {
            // Child processes register with the runtime's process driver.
            let _entered = runtime.enter();
            while let Ok(job) = queue.recv() {
                job();
            }
        });
        if let Err(error) = started {
            tracing::error!(%error, "the thread that starts federated servers did not start");
        }
        std::sync::Mutex::new(jobs)
    });
    let (done, result) = tokio::sync::oneshot::channel();
    let job: SpawnJob = Box::new(move || {
        let _ = done.send(job());
    });
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send(job)
        .map_err(|_| std::io::Error::other("the spawner thread has stopped"))?;
    result.await.map_err(|_| std::io::Error::other("the spawner thread has stopped"))
}

/// Whether child `pid` has exited: a zombie not reaped yet (the client
/// holds it until it is dropped), or gone.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// Kills a child's whole process group (its id is the child's pid).
fn kill_group(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Why a connected server's supervision ended.
enum Ended {
    Stopped,
    Failed(String),
}

impl Host {
    pub fn new(server: RegisteredServer, changes: watch::Sender<u64>) -> Arc<Host> {
        Arc::new(Host {
            server,
            state: Mutex::new(HostState {
                health: Health::Starting,
                tools: Vec::new(),
                left_out: Vec::new(),
                pid: None,
                restarts: 0,
                failed_checks: 0,
                breaker: Breaker::default(),
            }),
            client: Mutex::new(None),
            stop: watch::Sender::new(false),
            changes,
            stopped: tokio::sync::Notify::new(),
            finished: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HostState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the state under its lock.
    pub fn with_state<T>(&self, read: impl FnOnce(&HostState) -> T) -> T {
        read(&self.state())
    }

    /// Its tools by name, with their definitions' hashes.
    pub fn tool_hashes(&self) -> BTreeMap<String, [u8; 32]> {
        self.state().tools.iter().map(|tool| (tool.name.clone(), tool.sha256)).collect()
    }

    /// Whether calls may be sent to the server now: healthy, circuit not open.
    pub fn serving(&self) -> bool {
        let state = self.state();
        state.health == Health::Healthy && state.breaker.open_until.is_none_or(|until| Instant::now() >= until)
    }

    fn update(&self, change: impl FnOnce(&mut HostState)) {
        let changed = {
            let mut state = self.state();
            let before = (state.health.clone(), state.tools.clone());
            change(&mut state);
            before != (state.health.clone(), state.tools.clone())
        };
        if changed {
            self.changes.send_modify(|count| *count += 1);
        }
    }

    /// Supervises the server until [`Host::stop`]: starts it, watches it,
    /// restarts it with backoff.
    pub async fn supervise(self: Arc<Self>, folder: PathBuf) {
        let registration = self.server.registration.clone();
        let mut stop = self.stop.subscribe();
        let mut backoff = RESTART_MIN;
        while !*stop.borrow() {
            self.update(|state| state.health = Health::Starting);
            let tail = StderrTail::default();
            let connected = tokio::select! {
                connected = tokio::time::timeout(START_TIMEOUT, connect(&registration, &folder, &tail)) => {
                    connected.unwrap_or_else(|_| Err(format!("no handshake within {} s", START_TIMEOUT.as_secs())))
                }
                _ = stop.changed() => break,
            };
            let reason = match connected {
                Ok((client, pid)) => {
                    let started = Instant::now();
                    self.state().pid = pid;
                    *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.peer().clone());
                    let ended = self.watch(&client, &mut stop).await;
                    *self.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    // The child is not reaped before the client is dropped,
                    // so its group id cannot name another process yet.
                    if let Some(pid) = pid {
                        kill_group(pid);
                    }
                    self.state().pid = None;
                    let _ = tokio::time::timeout(Duration::from_secs(3), client.cancel()).await;
                    if started.elapsed() >= RESTART_RESET {
                        backoff = RESTART_MIN;
                    }
                    match ended {
                        Ended::Stopped => break,
                        Ended::Failed(reason) => reason,
                    }
                }
                Err(reason) => reason,
            };
            let output = tail.summary();
            let retry_ms = backoff.as_millis() as u64;
            let last_output = output.as_deref().unwrap_or("");
            tracing::warn!(server = %registration.name, %reason, last_output, retry_ms, "federated server unhealthy");
            let reason = match output {
                Some(_) => format!("{reason} (what it wrote to its stderr is in this node's log)"),
                None => reason,
            };
            self.update(|state| {
                state.health = Health::Unhealthy(reason);
                state.restarts += 1;
            });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => break,
            }
            backoff = (backoff * 2).min(RESTART_MAX);
        }
        self.update(|state| state.health = Health::Unhealthy("stopped".into()));
        self.finished.store(true, std::sync::atomic::Ordering::SeqCst);
        self.stopped.notify_waiters();
    }

    /// Lists the tools, then checks the server every health interval (a
    /// `tools/list` answered in time), until it is stopped or fails.
    async fn watch(&self, client: &Client, stop: &mut watch::Receiver<bool>) -> Ended {
        let health = self.server.registration.health;
        let interval = Duration::from_millis(health.interval_ms);
        let mut next_check = Instant::now();
        loop {
            if Instant::now() >= next_check {
                next_check = Instant::now() + interval;
                let listed =
                    tokio::time::timeout(Duration::from_millis(health.timeout_ms), client.peer().list_all_tools());
                match listed.await {
                    Ok(Ok(tools)) => {
                        let (tools, left_out) = offered_tools(&self.server.registration, tools);
                        self.update(|state| {
                            state.health = Health::Healthy;
                            state.failed_checks = 0;
                            state.tools = tools;
                            state.left_out = left_out;
                        });
                    }
                    failed => {
                        let why = match failed {
                            Ok(Err(error)) => error.to_string(),
                            _ => format!("no answer within {} ms", health.timeout_ms),
                        };
                        let failed_checks = {
                            let mut state = self.state();
                            state.failed_checks += 1;
                            state.failed_checks
                        };
                        if failed_checks >= health.unhealthy_after {
                            let reason = format!("{failed_checks} health checks failed in a row, the last: {why}");
                            self.update(|state| state.health = Health::Unhealthy(reason.clone()));
                            if failed_checks >= health.unhealthy_after.saturating_mul(2) {
                                return Ended::Failed(reason);
                            }
                        }
                    }
                }
            }
            if client.is_closed() || client.peer().is_transport_closed() {
                let reason = match self.server.registration.transport {
                    ServerTransport::Stdio { .. } => "the server's process exited",
                    ServerTransport::Http { .. } => "the connection to the server closed",
                };
                return Ended::Failed(reason.into());
            }
            let wait = next_check.saturating_duration_since(Instant::now()).min(EXIT_POLL);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return Ended::Stopped,
            }
        }
    }

    /// Stops the server and waits (bounded) until its supervisor has
    /// killed its process group.
    pub async fn stop(&self) {
        let stopped = self.stopped.notified();
        let _ = self.stop.send(true);
        if !self.finished.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
        }
    }

    /// Calls `tool` (whose definition must hash to `definition`) with
    /// `arguments`, waiting at most `timeout`, behind the circuit breaker.
    pub async fn call(&self, tool: &str, definition: &[u8; 32], arguments: JsonObject, timeout: Duration) -> HostCall {
        let (peer, pid) = {
            let mut state = self.state();
            if let Health::Unhealthy(reason) = &state.health {
                return HostCall::NotRun(format!(
                    "server {} is unhealthy here: {reason}",
                    self.server.registration.name
                ));
            }
            if !state.tools.iter().any(|offered| offered.name == tool && offered.sha256 == *definition) {
                return HostCall::NotRun(format!(
                    "server {} here has no tool {tool} with definition {}",
                    self.server.registration.name,
                    hex::encode(definition)
                ));
            }
            let now = Instant::now();
            match state.breaker.open_until {
                Some(until) if now < until => {
                    return HostCall::NotRun(format!(
                        "the circuit of server {} is open for {} ms more after {} failed calls",
                        self.server.registration.name,
                        (until - now).as_millis(),
                        state.breaker.failures
                    ))
                }
                Some(_) if state.breaker.trial => {
                    return HostCall::NotRun(format!(
                        "the circuit of server {} is half open and its trial call is running",
                        self.server.registration.name
                    ))
                }
                Some(_) => state.breaker.trial = true,
                None => {}
            }
            match self.client.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                Some(peer) => (peer, state.pid),
                None => {
                    return HostCall::NotRun(format!("server {} is not connected here", self.server.registration.name))
                }
            }
        };
        if peer.is_transport_closed() || pid.is_some_and(exited) {
            // Its process has exited (or its connection closed), and the
            // supervisor has not noticed yet: nothing is sent.
            self.state().breaker.trial = false;
            return HostCall::NotRun(format!("server {} has just stopped here", self.server.registration.name));
        }
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let outcome = tokio::time::timeout(timeout, peer.call_tool(params)).await;
        let failure = match &outcome {
            Ok(Ok(_)) | Ok(Err(McpError::McpError(_))) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no answer within {} ms", timeout.as_millis())),
        };
        self.record_call(failure.is_none());
        match outcome {
            Ok(Ok(result)) => HostCall::Answered(result),
            Ok(Err(McpError::McpError(error))) => {
                HostCall::Answered(CallToolResult::error(vec![rmcp::model::ContentBlock::text(format!(
                    "server {} refused the call: {}",
                    self.server.registration.name, error.message
                ))]))
            }
            _ => HostCall::Failed(format!(
                "the call of {}.{tool} may have reached the server, and failed: {}",
                self.server.registration.name,
                failure.unwrap_or_default()
            )),
        }
    }

    /// Counts a call's outcome in the circuit breaker; opening or closing
    /// the circuit changes what the advert says.
    fn record_call(&self, succeeded: bool) {
        let health = self.server.registration.health;
        let (was_open, open) = {
            let mut state = self.state();
            let breaker = &mut state.breaker;
            let was_open = breaker.open_until.is_some();
            breaker.trial = false;
            if succeeded {
                *breaker = Breaker::default();
            } else {
                breaker.failures += 1;
                if breaker.failures >= health.breaker_after {
                    breaker.open_until = Some(Instant::now() + Duration::from_millis(health.breaker_open_ms));
                    tracing::warn!(server = %self.server.registration.name, failures = breaker.failures, "federated server's circuit opened");
                }
            }
            (was_open, breaker.open_until.is_some())
        };
        if was_open != open || (open && !succeeded) {
            self.changes.send_modify(|count| *count += 1);
        }
    }

    /// Whether the circuit is open now.
    pub fn circuit_open(&self) -> bool {
        self.state().breaker.open_until.is_some_and(|until| Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_child_s_last_stderr_lines_are_kept_bounded() {
        let tail = StderrTail::default();
        assert_eq!(tail.summary(), None, "nothing written");
        let long = "é".repeat(STDERR_LINE_BYTES as usize);
        let written = format!("one\n\ntwo\r\n{long}\nthree\nfour\nfive\nsix");
        read_stderr("notes".into(), written.as_bytes(), tail.clone()).await;
        let lines: Vec<String> = tail.lines().iter().cloned().collect();
        // The 32 KiB line is read in two pieces; the last five lines stay.
        assert_eq!(lines.len(), TAIL_LINES, "{lines:?}");
        assert!(lines[0].starts_with('é') && lines[0].ends_with("...") && lines[0].len() <= TAIL_LINE_BYTES + 3);
        assert_eq!(lines[1..], ["three", "four", "five", "six"]);
        let summary = tail.summary().unwrap();
        assert!(summary.starts_with('é') && summary.ends_with("... | three | four | five | six"), "{summary}");
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({ "b": 1, "a": { "d": [ { "z": 1, "y": 2 } ], "c": null } });
        assert_eq!(canonical(&a), br#"{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}"#.to_vec());
    }

    #[test]
    fn only_read_only_or_idempotent_tools_may_be_called_again() {
        assert!(retry_safe(br#"{"annotations":{"readOnlyHint":true}}"#));
        assert!(retry_safe(br#"{"annotations":{"idempotentHint":true}}"#));
        assert!(!retry_safe(br#"{"annotations":{"readOnlyHint":false,"destructiveHint":true}}"#));
        assert!(!retry_safe(br#"{"name":"lookup"}"#));
        assert!(!retry_safe(b"not json"));
    }
}
