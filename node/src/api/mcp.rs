//! The node as an MCP server, on the official Rust SDK (`rmcp`): rmcp
//! carries the protocol (message types, version negotiation for both eras,
//! `initialize` and `server/discover`, sessions, `subscriptions/listen`,
//! result types and caching hints); [`Handler`] answers each request with the
//! node's tools and resources. Every request is admitted first: the caller's
//! token must still exist, be within its rate limit and allow the request.
//!
//! The caller travels with each request: the WebSocket transport puts it in
//! the request's extensions, Streamable HTTP in the HTTP request's (which
//! rmcp hands on as [`http::request::Parts`]).

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientNotification, ClientRequest, CreateTaskResult,
    DiscoverResult, ErrorCode, Extensions, GetTaskParams, GetTaskResult, Implementation, InitializeRequestParams,
    InitializeResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ResourceUpdatedNotificationParam, ServerCapabilities, ServerConfig, ServerResult, SubscribeRequestParams,
    SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{MaybeSendFuture, NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};
use tracing::Instrument as _;
use zeromesh_consensus::StateChange;
use zeromesh_kernel::Caller;
use zeromesh_protocol::limits::MAX_SUBSCRIPTIONS_PER_CONNECTION;

use super::resources::{self, Resource, Subscriptions};
use super::{rpc_error, tools, ApiState, RpcError};

/// Where a `tools/call` names the agent it acts for (`params._meta`); plugin
/// memory access is confined to that agent's memories.
pub const AGENT_META_KEY: &str = "zeromesh/agent";
/// A call's idempotency key in `tools/call` `params._meta`: a retry with the
/// same key is counted once against its agreement.
pub const IDEMPOTENCY_META_KEY: &str = "zeromesh/idempotency-key";
/// Where a metered call's result says how it was counted (`result._meta`).
pub const USAGE_META_KEY: &str = "zeromesh/usage";
/// `_meta` key of a failed tool result: the failure's kind (`invalid`,
/// `refused`, `unavailable`, or `outcome_unknown` when it may have been
/// applied).
pub const ERROR_META_KEY: &str = "zeromesh/error";
/// A plugin tool's result's `_meta` key: the node that ran the call
/// (`nodeId`, `offloaded`, and for a peer its `peerId`).
pub const HOST_META_KEY: &str = "zeromesh/host";
/// An offloaded call's result's `_meta` key: the receipt the peer signed.
pub const RECEIPT_META_KEY: &str = "zeromesh/receipt";

const INSTRUCTIONS: &str = "A zeromesh node. Memory tools read and write agents' memories in the replicated log; cluster_status and mesh_peers describe the mesh; plugin_* tools manage signed WASM plugins, whose tools are listed too. Memories are resources mem://{agent}/{path}; subscribe to hear when one changes anywhere in the mesh. Name the calling agent in tools/call params._meta[\"zeromesh/agent\"].";

/// The protocol revisions this node speaks, newest first: the stateless
/// revision and the handshake revisions before it.
pub fn protocol_versions() -> Vec<ProtocolVersion> {
    vec![
        ProtocolVersion::V_2026_07_28,
        ProtocolVersion::V_2025_11_25,
        ProtocolVersion::V_2025_06_18,
        ProtocolVersion::V_2025_03_26,
    ]
}

/// [`Handler`] as the WebSocket transport serves it: every request's
/// future boxed. rmcp runs each request in a task of its own, and without
/// the box that task holds the largest of all the handler's futures (a
/// `tools/call` with the kernel and the Raft write inside it), moved in and
/// out of the task whole on every request. (rmcp's Streamable HTTP service
/// takes the handler itself.)
pub struct Boxed(pub Handler);

impl rmcp::Service<RoleServer> for Boxed {
    fn handle_request(
        &self,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> impl std::future::Future<Output = Result<ServerResult, ErrorData>> + MaybeSendFuture + '_ {
        Box::pin(rmcp::Service::handle_request(&self.0, request, context))
    }

    fn handle_notification(
        &self,
        notification: ClientNotification,
        context: NotificationContext<RoleServer>,
    ) -> impl std::future::Future<Output = Result<(), ErrorData>> + MaybeSendFuture + '_ {
        rmcp::Service::handle_notification(&self.0, notification, context)
    }

    fn get_info(&self) -> ServerConfig {
        ServerHandler::get_info(&self.0)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        rmcp::Service::supported_protocol_versions(&self.0)
    }
}

/// Serves one MCP session (a WebSocket connection, a Streamable HTTP
/// session, or one stateless HTTP request).
pub struct Handler {
    state: Arc<ApiState>,
    session: Arc<Session>,
}

/// What a handshake-era session keeps: its `resources/subscribe`
/// subscriptions and the tasks telling it of changes.
#[derive(Default)]
struct Session {
    subscriptions: Subscriptions,
    /// Each dropped with the session, which ends its watcher.
    watchers: Mutex<Watchers>,
}

/// A session's watcher tasks, each started at most once.
#[derive(Default)]
struct Watchers {
    /// `notifications/tools/list_changed`: from `initialize` on.
    tools: Option<oneshot::Sender<()>>,
    /// `notifications/resources/updated`: from the first
    /// `resources/subscribe` on. Only then does the session hear of every
    /// applied change; a session that never subscribes costs no wake-up
    /// per write.
    resources: Option<oneshot::Sender<()>>,
}

/// Which of a session's watchers to start.
#[derive(Clone, Copy)]
enum Watch {
    Tools,
    Resources,
}

impl Handler {
    pub fn new(state: Arc<ApiState>) -> Handler {
        Handler { state, session: Arc::default() }
    }

    /// Admits one request: the caller's token still exists, is within its
    /// rate limit and allows `method` on `uri` (resource methods).
    fn admit(&self, extensions: &Extensions, method: &str, uri: Option<&str>) -> Result<Caller, RpcError> {
        let caller = caller_of(extensions)?;
        self.state.auth.admit(&self.state.cluster.consensus, &caller)?;
        super::auth::authorize(&caller, method, uri)?;
        Ok(caller)
    }

    /// Runs one request's answer, counting it in the metrics by outcome.
    async fn counted<T>(
        &self,
        method: &str,
        context: &RequestContext<RoleServer>,
        answer: impl std::future::Future<Output = Result<T, RpcError>>,
    ) -> Result<T, RpcError> {
        let started = Instant::now();
        let outcome = answer.instrument(self.request_span(method, context)).await;
        let label = if outcome.is_ok() { "ok" } else { "error" };
        self.state.metrics.record(method, label, started.elapsed());
        outcome
    }

    /// Answers a `tools/call`, inside its request span.
    async fn answer_call(
        &self,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let caller = match self.admit(&context.extensions, "tools/call", None) {
            Ok(caller) => caller,
            Err(refused) => {
                self.state.metrics.record("tools/call", "error", started.elapsed());
                return Err(refused);
            }
        };
        let arguments = Value::Object(request.arguments.take().unwrap_or_default());
        let wants_task = context.client_capabilities().is_some_and(|capabilities| capabilities.supports_tasks());
        if wants_task && self.state.tools.is_long(&request.name) {
            let call = super::tasks::LongCall {
                name: request.name.to_string(),
                arguments,
                agent: meta_string(&request, &context, AGENT_META_KEY)?.map(str::to_owned),
                idempotency_key: meta_string(&request, &context, IDEMPOTENCY_META_KEY)?.map(str::to_owned),
            };
            let task = self.state.tasks.start(self.state.clone(), caller, call);
            self.state.metrics.record("tools/call", if task.is_ok() { "task" } else { "error" }, started.elapsed());
            return Ok(CallToolResponse::Task(CreateTaskResult::new(task?)));
        }
        let answer = async {
            let agent = meta_string(&request, &context, AGENT_META_KEY)?;
            let idempotency_key = meta_string(&request, &context, IDEMPOTENCY_META_KEY)?;
            let progress = ProgressSender::start(&context);
            let reporter =
                progress.as_ref().map_or_else(|| Arc::new(|_, _, _: &str| {}) as _, ProgressSender::reporter);
            let call = tools::Call { name: &request.name, arguments, agent, idempotency_key };
            let answer = tokio::select! {
                answer = tools::call(&self.state, &caller, call, reporter) => answer,
                () = context.ct.cancelled() => Err(rpc_error(ErrorCode::INTERNAL_ERROR.0, "cancelled by the client")),
            };
            if let Some(progress) = progress {
                progress.flush().await;
            }
            answer
        };
        let outcome = answer.await;
        if context.ct.is_cancelled() {
            // Work already committed (a write that reached Raft) stays done.
            self.state.metrics.record("cancelled-request", "cancelled", started.elapsed());
        }
        let label = match &outcome {
            Ok(result) if result.is_error == Some(true) => "tool_error",
            Ok(_) => "ok",
            Err(_) => "error",
        };
        self.state.metrics.record("tools/call", label, started.elapsed());
        outcome.map(CallToolResponse::from)
    }

    /// The span a request is answered in: what the log says of it carries
    /// its JSON-RPC id, its method and the Raft term it arrived in. At the
    /// error level so that it exists whatever the filter lets through.
    fn request_span(&self, method: &str, context: &RequestContext<RoleServer>) -> tracing::Span {
        let term = self.state.cluster.consensus.current_term();
        let span = tracing::error_span!("request", id = %context.id, method, term);
        span.in_scope(|| tracing::debug!("received"));
        span
    }

    /// Starts, once per handshake-era session, the task that sends it
    /// `notifications/tools/list_changed` or the one that sends the
    /// `notifications/resources/updated` its subscriptions call for. Each
    /// ends with the session. A watcher hears of changes from the moment
    /// this returns.
    fn watch(&self, peer: rmcp::Peer<RoleServer>, what: Watch) {
        let mut watchers = self.session.watchers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = match what {
            Watch::Tools => &mut watchers.tools,
            Watch::Resources => &mut watchers.resources,
        };
        if slot.is_some() {
            return;
        }
        let (ended_tx, ended) = oneshot::channel();
        *slot = Some(ended_tx);
        match what {
            Watch::Tools => {
                tokio::spawn(watch_tools(peer, self.state.plugins.subscribe_tools_changed(), ended));
            }
            Watch::Resources => {
                let changes = self.state.cluster.consensus.state_changes();
                tokio::spawn(watch_resources(peer, Arc::downgrade(&self.session), changes, ended));
            }
        }
    }
}

/// Tells the client each time the tools on offer change, until `ended`.
async fn watch_tools(
    peer: rmcp::Peer<RoleServer>,
    mut changed: broadcast::Receiver<()>,
    mut ended: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut ended => return,
            change = changed.recv() => match change {
                Err(broadcast::error::RecvError::Closed) => return,
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if peer.notify_tool_list_changed().await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

/// Tells the client of each subscribed resource an applied change may have
/// changed (all of them when this watcher fell behind), until `ended`.
async fn watch_resources(
    peer: rmcp::Peer<RoleServer>,
    session: std::sync::Weak<Session>,
    mut changes: broadcast::Receiver<StateChange>,
    mut ended: oneshot::Receiver<()>,
) {
    loop {
        let change = tokio::select! {
            _ = &mut ended => return,
            change = changes.recv() => match change {
                Ok(change) => Some(change),
                Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let Some(session) = session.upgrade() else { return };
        for uri in session.subscriptions.updated(change.as_ref()) {
            if peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri)).await.is_err() {
                return;
            }
        }
    }
}

/// Why a message could not be read: the id to answer (when it could be
/// read), the error code and the reason.
pub type Unreadable = (Option<rmcp::model::RequestId>, ErrorCode, String);

/// Checks that a JSON message is one JSON-RPC 2.0 message, so that what is
/// not gets a JSON-RPC error naming what is wrong.
pub fn check_envelope(message: &Value) -> Result<(), Unreadable> {
    let Some(object) = message.as_object() else {
        let reason = match message.is_array() {
            true => "batch requests are not supported: send one JSON-RPC message at a time",
            false => "a JSON-RPC message is a JSON object",
        };
        return Err((None, ErrorCode::INVALID_REQUEST, reason.to_owned()));
    };
    let id = object.get("id").and_then(|id| serde_json::from_value(id.clone()).ok());
    if object.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err((id, ErrorCode::INVALID_REQUEST, "`jsonrpc` must be \"2.0\"".to_owned()));
    }
    if !object.get("method").is_none_or(Value::is_string) {
        return Err((id, ErrorCode::INVALID_REQUEST, "`method` must be a string".to_owned()));
    }
    Ok(())
}

/// The caller the transport attached to a request.
fn caller_of(extensions: &Extensions) -> Result<Caller, RpcError> {
    extensions
        .get::<Caller>()
        .or_else(|| extensions.get::<hyper::http::request::Parts>().and_then(|parts| parts.extensions.get::<Caller>()))
        .cloned()
        .ok_or_else(|| rpc_error(super::auth::FORBIDDEN, "the request carries no authenticated caller"))
}

/// A result of ours in one of rmcp's result types, complete (rmcp drops
/// `resultType` for handshake-era peers, and adds caching hints for others:
/// none of the node's answers may be cached, as memories change anywhere).
fn shaped<T: DeserializeOwned>(mut value: Value) -> Result<T, RpcError> {
    if let Some(object) = value.as_object_mut() {
        object.entry("resultType").or_insert_with(|| json!("complete"));
    }
    serde_json::from_value(value)
        .map_err(|error| rpc_error(ErrorCode::INTERNAL_ERROR.0, format!("malformed result: {error}")))
}

fn cursor_of(request: &Option<PaginatedRequestParams>) -> Value {
    match request.as_ref().and_then(|params| params.cursor.clone()) {
        Some(cursor) => json!({ "cursor": cursor }),
        None => json!({}),
    }
}

/// A string `_meta` entry of a request, wherever rmcp left it.
fn meta_string<'a>(
    request: &'a CallToolRequestParams,
    context: &'a RequestContext<RoleServer>,
    key: &str,
) -> Result<Option<&'a str>, RpcError> {
    let found = request.meta.as_ref().and_then(|meta| meta.get(key)).or_else(|| context.meta.get(key));
    match found {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.as_str())),
        Some(_) => Err(RpcError::invalid_params(format!("_meta.{key} must be a string"), None)),
    }
}

// Logging (`logging/setLevel`) is deprecated from 2026-07-28 on, and still
// offered to the handshake-era clients that use it.
#[allow(deprecated)]
impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_logging()
            .enable_tasks()
            .build();
        let mut info = InitializeResult::new(capabilities);
        info.protocol_version = ProtocolVersion::V_2025_11_25;
        info.server_info = Implementation::new("zeromesh", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(INSTRUCTIONS.to_owned());
        info
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Owned(protocol_versions())
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        self.counted("initialize", &context, async {
            self.admit(&context.extensions, "initialize", None)?;
            context.peer.set_peer_info(request.clone());
            let answer = self.negotiate_initialize(&request)?;
            self.watch(context.peer.clone(), Watch::Tools);
            Ok(answer)
        })
        .await
    }

    async fn discover(&self, context: RequestContext<RoleServer>) -> Result<DiscoverResult, ErrorData> {
        self.counted("server/discover", &context, async {
            self.admit(&context.extensions, "server/discover", None)?;
            Ok(DiscoverResult::from_server_info(protocol_versions(), self.get_info()))
        })
        .await
    }

    async fn ping(&self, context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.counted("ping", &context, async { self.admit(&context.extensions, "ping", None).map(drop) }).await
    }

    async fn set_level(
        &self,
        _request: rmcp::model::SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // The level is parsed (and refused when unknown) by rmcp; the node
        // sends no log messages, so there is nothing to filter.
        self.counted("logging/setLevel", &context, async {
            self.admit(&context.extensions, "logging/setLevel", None).map(drop)
        })
        .await
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.counted("tools/list", &context, async {
            self.admit(&context.extensions, "tools/list", None)?;
            shaped(tools::list_page(&self.state, &cursor_of(&request))?)
        })
        .await
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let span = self.request_span("tools/call", &context);
        self.answer_call(request, context).instrument(span).await
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.counted("resources/list", &context, async {
            let caller = self.admit(&context.extensions, "resources/list", None)?;
            let own = caller.agent.as_ref().filter(|_| caller.role == zeromesh_protocol::auth::Role::Agent);
            let listed =
                resources::list(&self.state.cluster, &cursor_of(&request), own.map(|agent| format!("{agent}/")))
                    .await?;
            shaped(listed)
        })
        .await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.counted("resources/templates/list", &context, async {
            self.admit(&context.extensions, "resources/templates/list", None)?;
            shaped(resources::templates())
        })
        .await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.counted("resources/read", &context, async {
            self.admit(&context.extensions, "resources/read", Some(&request.uri))?;
            // A resource that is not there (or cannot be) is named in the
            // error's data, as 2026-07-28 asks.
            let read = resources::read(&self.state.cluster, &request.uri).await.map_err(|error| match error.data {
                Some(_) => error,
                None => super::with_data(error, json!({ "uri": request.uri })),
            })?;
            shaped::<rmcp::model::ReadResourceResult>(read).map(ReadResourceResponse::from)
        })
        .await
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.counted("resources/subscribe", &context, async {
            self.admit(&context.extensions, "resources/subscribe", Some(&request.uri))?;
            self.session.subscriptions.subscribe(&request.uri)?;
            self.watch(context.peer.clone(), Watch::Tools);
            self.watch(context.peer.clone(), Watch::Resources);
            Ok(())
        })
        .await
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.counted("resources/unsubscribe", &context, async {
            self.admit(&context.extensions, "resources/unsubscribe", Some(&request.uri))?;
            self.session.subscriptions.unsubscribe(&request.uri)
        })
        .await
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        // Tool list changes, and updates of resources this node has; the
        // caller's right to read each is checked when the stream starts.
        let mut accepted = SubscriptionFilter::new();
        accepted.tools_list_changed = requested.tools_list_changed;
        accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|uri| Resource::parse(uri).is_ok())
                .take(MAX_SUBSCRIPTIONS_PER_CONNECTION)
                .cloned()
                .collect()
        });
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let extensions = &context.request_context().extensions;
        let accepted = context.accepted().clone();
        let mut watched = Vec::new();
        for uri in accepted.resource_subscriptions.iter().flatten() {
            self.admit(extensions, "resources/subscribe", Some(uri))?;
            watched.push(Resource::parse(uri)?);
        }
        self.state.metrics.record("subscriptions/listen", "ok", std::time::Duration::ZERO);
        let sink = context.sink().clone();
        let mut tools_changed = self.state.plugins.subscribe_tools_changed();
        let mut changes = self.state.cluster.consensus.state_changes();
        let tools_wanted = accepted.tools_list_changed == Some(true);
        loop {
            let sent = tokio::select! {
                () = context.cancelled() => return Ok(()),
                changed = tools_changed.recv() => match changed {
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) if tools_wanted => sink.notify_tool_list_changed().await,
                    Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                },
                change = changes.recv() => {
                    let change: Option<StateChange> = match change {
                        Ok(change) => Some(change),
                        Err(broadcast::error::RecvError::Lagged(_)) => None,
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    };
                    let mut sent = Ok(());
                    for resource in watched.iter().filter(|resource| resource.changed(change.as_ref())) {
                        sent = sink.notify_resource_updated(resource.uri()).await;
                        if sent.is_err() {
                            break;
                        }
                    }
                    sent
                }
            };
            if sent.is_err() {
                // The client went away.
                return Ok(());
            }
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        self.counted("tasks/get", &context, async {
            let caller = self.admit(&context.extensions, "tasks/get", None)?;
            self.state.tasks.get(&caller, &request.task_id).map(GetTaskResult::new)
        })
        .await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.counted("tasks/cancel", &context, async {
            let caller = self.admit(&context.extensions, "tasks/cancel", None)?;
            self.state.tasks.cancel(&caller, &request.task_id)
        })
        .await
    }

    /// Quiet: rmcp's default logs every session's start at info level.
    async fn on_initialized(&self, _context: NotificationContext<RoleServer>) {}
}

/// A call's progress as `notifications/progress`, when the request asked
/// for it (`_meta.progressToken`): reports go out in order and are dropped
/// when the client does not keep up.
struct ProgressSender {
    queue: tokio::sync::mpsc::Sender<Report>,
}

enum Report {
    Step(u64, u64, String),
    /// Answered once every report before it was sent.
    Flush(oneshot::Sender<()>),
}

impl ProgressSender {
    fn start(context: &RequestContext<RoleServer>) -> Option<ProgressSender> {
        let token = context.meta.get_progress_token()?;
        let (queue, mut queued) = tokio::sync::mpsc::channel::<Report>(16);
        let peer = context.peer.clone();
        tokio::spawn(async move {
            while let Some(report) = queued.recv().await {
                match report {
                    Report::Step(step, steps, message) => {
                        let mut param = ProgressNotificationParam::new(token.clone(), step as f64);
                        param.total = Some(steps as f64);
                        param.message = Some(message);
                        if peer.notify_progress(param).await.is_err() {
                            return;
                        }
                    }
                    Report::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Some(ProgressSender { queue })
    }

    fn reporter(&self) -> crate::tools::Progress {
        let queue = self.queue.clone();
        Arc::new(move |step, steps, message: &str| {
            let _ = queue.try_send(Report::Step(step, steps, message.to_owned()));
        })
    }

    /// Waits until every report made so far went out, so they come before
    /// the answer.
    async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Report::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}
