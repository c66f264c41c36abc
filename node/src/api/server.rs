//! MCP sessions of the peer API: the WebSocket session loop, which reads
//! JSON-RPC messages, runs each in its own bounded task and writes answers,
//! and, once the client has initialised, `notifications/tools/list_changed`
//! and `notifications/resources/updated` for its subscriptions; and the
//! dispatch of one message, shared with Streamable HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use zeromesh_protocol::limits::MAX_API_REQUESTS_PER_CONNECTION;

use super::jsonrpc::{self, RpcError, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND};
use super::{resources, tools, ApiState};
use zeromesh_kernel::Caller;

/// MCP protocol versions this node speaks, newest first.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
pub const SUBPROTOCOL: &str = "mcp";
/// Where a `tools/call` names the agent it acts for (`params._meta`); plugin
/// memory access is confined to that agent's memories.
pub const AGENT_META_KEY: &str = "zeromesh/agent";
/// A call's idempotency key in `tools/call` `params._meta`: a retry with the
/// same key is counted once against its agreement.
pub const IDEMPOTENCY_META_KEY: &str = "zeromesh/idempotency-key";
/// Where a metered call's result says how it was counted (`result._meta`).
pub const USAGE_META_KEY: &str = "zeromesh/usage";

/// What the server knows about one connection.
pub struct Session {
    /// Who is calling: checked on every request.
    caller: Caller,
    /// Set once the client sent `initialize`: notifications may flow.
    initialized: AtomicBool,
    subscriptions: resources::Subscriptions,
    /// Streamable HTTP requests are one-shot: they cannot carry notifications.
    one_shot: bool,
}

impl Session {
    pub fn new(caller: Caller) -> Session {
        Session { caller, initialized: AtomicBool::new(false), subscriptions: Default::default(), one_shot: false }
    }

    /// A session for one Streamable HTTP request.
    pub fn one_shot(caller: Caller) -> Session {
        Session { one_shot: true, ..Session::new(caller) }
    }
}

/// Runs one WebSocket session: reads JSON-RPC messages, runs each in its
/// own bounded task, writes answers and notifications.
pub async fn websocket<S>(socket: WebSocketStream<S>, state: Arc<ApiState>, caller: Caller) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = socket.split();
    let (answers_tx, mut answers) = mpsc::channel::<String>(MAX_API_REQUESTS_PER_CONNECTION);
    let idle_timeout = state.idle_timeout;
    let writer = tokio::spawn(async move {
        // Pings make live clients answer (every WebSocket client pongs), so
        // only a silent or dead peer reaches the idle timeout.
        let mut ping = tokio::time::interval(idle_timeout / 3);
        ping.tick().await;
        loop {
            let sent = tokio::select! {
                answer = answers.recv() => match answer {
                    Some(answer) => sink.send(Message::text(answer)).await,
                    None => break,
                },
                _ = ping.tick() => sink.send(Message::Ping(Default::default())).await,
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let session = Arc::new(Session::new(caller));
    let notifier = {
        let (session, answers_tx) = (session.clone(), answers_tx.clone());
        let mut changes = state.plugins.subscribe_tools_changed();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
                if session.initialized.load(Ordering::Acquire) {
                    let notification = json!({ "jsonrpc": "2.0", "method": "notifications/tools/list_changed" });
                    if answers_tx.send(notification.to_string()).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let updater = {
        let (session, answers_tx) = (session.clone(), answers_tx.clone());
        let mut changes = state.cluster.consensus.state_changes();
        tokio::spawn(async move {
            loop {
                let change = match changes.recv().await {
                    Ok(change) => Some(change),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                for update in session.subscriptions.updates(change.as_ref()) {
                    if answers_tx.send(update).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let in_flight = Arc::new(Semaphore::new(MAX_API_REQUESTS_PER_CONNECTION));
    let running: Running = Arc::new(Mutex::new(HashMap::new()));
    loop {
        let message = match tokio::time::timeout(idle_timeout, source.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(_) => {
                tracing::debug!("closing a WebSocket silent for {idle_timeout:?}");
                break;
            }
        };
        let text = match message {
            Ok(Message::Text(text)) => text.to_string(),
            Ok(Message::Binary(_)) => {
                let refusal = RpcError::new(INVALID_REQUEST, "binary messages are not JSON-RPC: send text");
                let _ = answers_tx.send(jsonrpc::error(Value::Null, &refusal)).await;
                continue;
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(error) => {
                // An over-limit message or broken framing: say so, then close.
                let refusal = RpcError::new(INVALID_REQUEST, format!("unreadable message: {error}"));
                let _ = answers_tx.send(jsonrpc::error(Value::Null, &refusal)).await;
                break;
            }
        };
        // Waits when this connection already has its maximum running: reading
        // stops, and TCP pushes back on the client.
        let Ok(slot) = in_flight.clone().acquire_owned().await else { break };
        let incoming = match jsonrpc::parse(&text) {
            Ok(incoming) => incoming,
            Err((id, error)) => {
                let _ = answers_tx.send(jsonrpc::error(id, &error)).await;
                continue;
            }
        };
        if incoming.method == "notifications/cancelled" {
            cancel(&state, &running, &incoming.params);
            continue;
        }
        let key = incoming.id.as_ref().map(Value::to_string);
        let state = state.clone();
        let answers_tx = answers_tx.clone();
        let session = session.clone();
        let progress = Progress::new(&incoming.params, answers_tx.clone());
        let task = {
            let (running, key) = (running.clone(), key.clone());
            tokio::spawn(async move {
                if let Some(answer) = answer_incoming(&state, &session, incoming, &progress).await {
                    let _ = answers_tx.send(answer).await;
                }
                if let Some(key) = key {
                    running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&key);
                }
                drop(slot);
            })
        };
        if let Some(key) = key {
            // At most MAX_API_REQUESTS_PER_CONNECTION entries: one per running request.
            let mut running = running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if !task.is_finished() {
                running.insert(key, task.abort_handle());
            }
        }
    }
    for (_, task) in running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).drain() {
        task.abort();
    }
    notifier.abort();
    updater.abort();
    drop(answers_tx);
    let _ = writer.await;
    Ok(())
}

/// Requests running on one connection, by JSON id, for cancellation.
type Running = Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>;

/// `notifications/cancelled`: stops the named request, which then gets no
/// answer. Work already committed (a write that reached Raft) stays done.
fn cancel(state: &ApiState, running: &Running, params: &Value) {
    let Some(id) = params.get("requestId") else { return };
    if let Some(task) = running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&id.to_string()) {
        task.abort();
        state.metrics.record("cancelled-request", "cancelled", std::time::Duration::ZERO);
    }
}

/// Progress notifications for one request that asked for them with
/// `params._meta.progressToken` (WebSocket sessions only).
#[derive(Clone)]
pub struct Progress {
    token: Option<Value>,
    sink: Option<mpsc::Sender<String>>,
}

impl Progress {
    fn new(params: &Value, sink: mpsc::Sender<String>) -> Progress {
        let token = params.get("_meta").and_then(|meta| meta.get("progressToken")).cloned();
        Progress { sink: token.as_ref().map(|_| sink), token }
    }

    /// No progress reported (one-shot HTTP, or not asked for).
    pub fn none() -> Progress {
        Progress { token: None, sink: None }
    }

    /// Reports `progress` of `total` steps; dropped if the connection is full.
    pub fn report(&self, progress: u64, total: u64, message: &str) {
        if let (Some(token), Some(sink)) = (&self.token, &self.sink) {
            let notification = json!({ "jsonrpc": "2.0", "method": "notifications/progress",
                "params": { "progressToken": token, "progress": progress, "total": total, "message": message } });
            let _ = sink.try_send(notification.to_string());
        }
    }
}

/// The answer to one parsed message, or none for a notification.
pub async fn answer_incoming(
    state: &Arc<ApiState>,
    session: &Session,
    incoming: jsonrpc::Incoming,
    progress: &Progress,
) -> Option<String> {
    let started = std::time::Instant::now();
    let outcome = match checked(state, session, &incoming.method, &incoming.params) {
        Ok(()) => dispatch(state, session, &incoming.method, incoming.params, progress).await,
        Err(refusal) => Err(refusal),
    };
    state.metrics.record(&incoming.method, outcome_label(&outcome), started.elapsed());
    let id = incoming.id?;
    Some(match outcome {
        Ok(result) => jsonrpc::result(id, result),
        Err(error) => jsonrpc::error(id, &error),
    })
}

/// The caller's token is still valid, within its rate limit, and allows
/// this request.
fn checked(state: &ApiState, session: &Session, method: &str, params: &Value) -> Result<(), RpcError> {
    state.auth.admit(&state.cluster.consensus, &session.caller)?;
    super::auth::authorize(&session.caller, method, params)
}

fn outcome_label(outcome: &Result<Value, RpcError>) -> &'static str {
    match outcome {
        Ok(result) if result.get("isError") == Some(&Value::Bool(true)) => "tool_error",
        Ok(_) => "ok",
        Err(_) => "error",
    }
}

fn negotiate(params: &Value) -> &'static str {
    let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
    PROTOCOL_VERSIONS.iter().find(|version| **version == asked).copied().unwrap_or(PROTOCOL_VERSIONS[0])
}

async fn dispatch(
    state: &Arc<ApiState>,
    session: &Session,
    method: &str,
    params: Value,
    progress: &Progress,
) -> Result<Value, RpcError> {
    match method {
        "initialize" => {
            session.initialized.store(true, Ordering::Release);
            Ok(json!({
                "protocolVersion": negotiate(&params),
                "capabilities": {
                    "tools": { "listChanged": true },
                    "resources": { "subscribe": true, "listChanged": false },
                    "logging": {},
                },
                "serverInfo": { "name": "zeromesh", "version": env!("CARGO_PKG_VERSION") },
                "instructions": "A zeromesh node. Memory tools read and write agents' memories in the replicated log; cluster_status and mesh_peers describe the mesh; plugin_* tools manage signed WASM plugins, whose tools are listed too. Memories are resources mem://{agent}/{path}; subscribe to hear when one changes anywhere in the mesh. Name the calling agent in tools/call params._meta[\"zeromesh/agent\"].",
            }))
        }
        "ping" => Ok(json!({})),
        "logging/setLevel" => {
            const LEVELS: [&str; 8] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];
            match params.get("level").and_then(Value::as_str) {
                Some(level) if LEVELS.contains(&level) => Ok(json!({})),
                _ => Err(RpcError::invalid_params(format!("`level` must be one of {}", LEVELS.join(", ")))),
            }
        }
        "resources/list" => {
            let own =
                session.caller.agent.as_ref().filter(|_| session.caller.role == zeromesh_protocol::auth::Role::Agent);
            resources::list(&state.cluster, &params, own.map(|agent| format!("{agent}/"))).await
        }
        "resources/templates/list" => Ok(resources::templates()),
        "resources/read" => resources::read(&state.cluster, &params).await,
        "resources/subscribe" if session.one_shot => Err(RpcError::new(
            METHOD_NOT_FOUND,
            "subscriptions need a connection that stays open: use the WebSocket endpoint (ws://<node>/)",
        )),
        "resources/subscribe" => session.subscriptions.subscribe(&params),
        "resources/unsubscribe" => session.subscriptions.unsubscribe(&params),
        "tools/list" => tools::list_page(state, &params),
        "tools/call" => tools::call(state, &session.caller, &params, progress).await,
        method if method.starts_with("notifications/") => Ok(Value::Null),
        "" => Err(RpcError::new(INTERNAL_ERROR, "empty method")),
        other => Err(RpcError::new(METHOD_NOT_FOUND, format!("method {other:?} is not offered by this node"))),
    }
}
