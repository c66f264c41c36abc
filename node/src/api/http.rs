//! The peer API's listener: HTTP/1.1 on one port. `GET /` and `/ws` with a
//! WebSocket upgrade start an MCP WebSocket session (subprotocol `mcp`);
//! `/mcp` is MCP's Streamable HTTP, served by rmcp (stateless requests for
//! 2026-07-28 clients; sessions with their event stream, resumable, for
//! handshake-era clients); `/health`, `/ready` and `/metrics` serve
//! operators. Every connection counts against the connection limit and must
//! send its request head within the handshake timeout; request bodies and
//! sessions are bounded. On a loopback address, requests naming another host
//! (`Host`) or coming from another site's page (`Origin`) are refused, so DNS
//! rebinding cannot reach the node.
//!
//! Authentication comes first, for every path but `/health` and `/ready`: a
//! bearer token in `Authorization`, or, for WebSocket clients that cannot
//! set headers (browsers, some SDKs), in the URL (`?token=zm_...`) or as a
//! WebSocket subprotocol (`bearer.zm_...`, beside `mcp`). A token in the URL
//! is refused on plain `ws://` to a non-loopback address, where anyone on the
//! path could read it.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use zeromesh_protocol::limits::{
    API_READ_CHUNK_BYTES, MAX_API_CONNECTIONS, MAX_API_MESSAGE_BYTES, MAX_API_REQUESTS_PER_CONNECTION,
};

use rmcp::model::{ErrorCode, JsonRpcError, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::mcp::Handler;
use super::websocket::SUBPROTOCOL;
use super::ApiState;
use zeromesh_kernel::Caller;

/// A connection that has not sent its request head by then is dropped, so
/// silent sockets cannot hold connection slots.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers), in bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;

type Body = BoxBody<Bytes, Infallible>;
/// Streamable HTTP sessions (handshake-era clients) one node keeps at once.
const MAX_HTTP_SESSIONS: usize = MAX_API_CONNECTIONS;
/// The WebSocket subprotocol prefix that carries a bearer token.
const TOKEN_SUBPROTOCOL: &str = "bearer.";

/// MCP over Streamable HTTP, as rmcp serves it, and its sessions.
struct StreamableHttp {
    service: StreamableHttpService<Handler, LocalSessionManager>,
    sessions: Arc<LocalSessionManager>,
    /// Which token opened each session (`None`: `--dev`): only that token
    /// may use it, its event stream included.
    owners: std::sync::Mutex<std::collections::HashMap<String, Option<String>>>,
}

impl StreamableHttp {
    fn new(state: &Arc<ApiState>) -> StreamableHttp {
        let mut sessions = LocalSessionManager::default();
        sessions.session_config.channel_capacity = MAX_API_REQUESTS_PER_CONNECTION;
        let sessions = Arc::new(sessions);
        // Host and Origin are checked in front (loopback listeners only), and
        // body size is bounded by the same limit as WebSocket messages.
        let config = StreamableHttpServerConfig::default()
            .disable_allowed_hosts()
            .disable_allowed_origins()
            .with_json_response(true)
            .with_max_request_body_bytes(MAX_API_MESSAGE_BYTES);
        let factory_state = state.clone();
        let service =
            StreamableHttpService::new(move || Ok(Handler::new(factory_state.clone())), sessions.clone(), config);
        StreamableHttp { service, sessions, owners: Default::default() }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Option<String>>> {
        self.owners.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn serve(&self, request: Request<Incoming>, caller: Caller) -> Response<Body> {
        let session = request.headers().get("mcp-session-id").and_then(|id| id.to_str().ok()).map(str::to_owned);
        if let Some(id) = &session {
            if self.owners().get(id).is_some_and(|owner| *owner != caller.token_id) {
                return text(StatusCode::NOT_FOUND, &format!("no MCP session {id} for this token"));
            }
        }
        let token = caller.token_id.clone();
        let answered = self.route(request, caller).await;
        match (&session, answered.headers().get("mcp-session-id").and_then(|id| id.to_str().ok())) {
            (None, Some(opened)) => {
                let opened = opened.to_owned();
                if self.owners().len() >= 2 * MAX_HTTP_SESSIONS {
                    let live: std::collections::HashSet<String> =
                        self.sessions.sessions.read().await.keys().map(|id| id.to_string()).collect();
                    self.owners().retain(|id, _| live.contains(id));
                }
                self.owners().insert(opened, token);
            }
            (Some(id), _) if answered.status() == StatusCode::NO_CONTENT => drop(self.owners().remove(id)),
            _ => {}
        }
        answered
    }

    async fn route(&self, request: Request<Incoming>, caller: Caller) -> Response<Body> {
        let outside_sessions = !request.headers().contains_key("mcp-session-id");
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(caller);
        if parts.method == Method::DELETE {
            // rmcp answers an ended session 202; clients expect 200 or 204.
            let mut ended = self.service.handle(Request::from_parts(parts, body)).await;
            if ended.status() == StatusCode::ACCEPTED {
                *ended.status_mut() = StatusCode::NO_CONTENT;
            }
            return ended;
        }
        if parts.method != Method::POST {
            return self.service.handle(Request::from_parts(parts, body)).await;
        }
        let body = match Limited::new(body, MAX_API_MESSAGE_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the request body could not be read or exceeds {MAX_API_MESSAGE_BYTES} bytes: {error}"),
                )
            }
        };
        if outside_sessions && self.sessions.sessions.read().await.len() >= MAX_HTTP_SESSIONS {
            // Only an `initialize` opens a session; stateless requests go on.
            let method = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|message| message.get("method").and_then(|method| method.as_str().map(str::to_owned)));
            if method.as_deref() == Some("initialize") {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "this node keeps {MAX_HTTP_SESSIONS} MCP sessions already; end one (DELETE /mcp) or retry later"
                    ),
                );
            }
        }
        let answered = self.service.handle(Request::from_parts(parts, Full::new(body.clone()))).await;
        if answered.status() != StatusCode::UNSUPPORTED_MEDIA_TYPE {
            return answered;
        }
        // rmcp answers a bare 415 to a body that is not one JSON-RPC message:
        // say what is wrong with it, as JSON-RPC does.
        let refusal = match serde_json::from_slice::<serde_json::Value>(&body) {
            Err(error) => Some((None, ErrorCode::PARSE_ERROR, format!("the body is not JSON: {error}"))),
            Ok(message) => super::mcp::check_envelope(&message).err(),
        };
        match refusal {
            Some((id, code, reason)) => {
                let refusal = ServerJsonRpcMessage::Error(JsonRpcError::new(id, super::rpc_error(code.0, reason)));
                json_response(StatusCode::BAD_REQUEST, json!(refusal))
            }
            None => answered,
        }
    }
}

/// Serves the peer API on `listener` until the process ends; over TLS
/// only, when `tls` is given.
pub async fn serve(listener: TcpListener, state: Arc<ApiState>, tls: Option<Arc<rustls::ServerConfig>>) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let encrypted = acceptor.is_some();
    let streamable = Arc::new(StreamableHttp::new(&state));
    let connections = Arc::new(Semaphore::new(MAX_API_CONNECTIONS));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting an API connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = connections.clone().try_acquire_owned().ok().map(Arc::new);
        let state = state.clone();
        let loopback = stream.local_addr().is_ok_and(|local| local.ip().is_loopback());
        let acceptor = acceptor.clone();
        let streamable = streamable.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            state.metrics.connections.fetch_add(1, Ordering::Relaxed);
            let serving = {
                let state = state.clone();
                let listener = Listener { loopback, encrypted };
                hyper::service::service_fn(move |request| {
                    route(request, state.clone(), streamable.clone(), slot.clone(), listener)
                })
            };
            let io: Box<dyn crate::client::Io> = match acceptor {
                None => Box::new(stream),
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => Box::new(tls),
                    Ok(Err(error)) => {
                        tracing::debug!(%remote, %error, "TLS handshake failed");
                        state.metrics.connections.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "no TLS handshake within the handshake timeout");
                        state.metrics.connections.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                },
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES.max(8192))
                .serve_connection(TokioIo::new(io), serving)
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%remote, %error, "API connection ended");
            }
            state.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// What a connection came in on.
#[derive(Clone, Copy)]
struct Listener {
    loopback: bool,
    encrypted: bool,
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    respond(status, "application/json", value.to_string())
}

/// Whether `host` (a `Host` header, or an origin's host, with or without a
/// port) names this machine's loopback.
fn is_loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host
            .rsplit_once(':')
            .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// On a loopback listener: `Host` must name loopback, and an `Origin`, when
/// sent, must be a loopback origin.
fn check_host_and_origin(request: &Request<Incoming>) -> Result<(), String> {
    let header = |name: hyper::header::HeaderName| request.headers().get(name).and_then(|value| value.to_str().ok());
    if let Some(host) = header(hyper::header::HOST) {
        if !is_loopback_name(host) {
            return Err(format!("Host {host:?} is not this node's loopback address; requests must name localhost"));
        }
    }
    if let Some(origin) = header(hyper::header::ORIGIN) {
        let host = origin.split_once("://").map_or(origin, |(_, rest)| rest).trim_end_matches('/');
        if origin != "null" && !is_loopback_name(host) {
            return Err(format!("Origin {origin:?} is not a loopback origin; cross-site requests are refused"));
        }
    }
    Ok(())
}

async fn route(
    request: Request<Incoming>,
    state: Arc<ApiState>,
    streamable: Arc<StreamableHttp>,
    slot: Option<Arc<OwnedSemaphorePermit>>,
    listener: Listener,
) -> Result<Response<Body>, Infallible> {
    let Some(slot) = slot else {
        return Ok(text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("this node serves {MAX_API_CONNECTIONS} API connections already; retry later"),
        ));
    };
    if listener.loopback {
        if let Err(reason) = check_host_and_origin(&request) {
            return Ok(text(StatusCode::FORBIDDEN, &reason));
        }
    }
    let path = request.uri().path().to_owned();
    // The dashboard's page holds no data: its state (`/ui/state`) needs a token.
    let caller = if matches!(path.as_str(), "/health" | "/ready" | "/ui" | "/ui/") {
        None
    } else {
        let presented = presented_token(request.headers(), request.uri(), listener);
        match presented.and_then(|token| state.auth.authenticate(&state.cluster.consensus, token.as_deref())) {
            Ok(caller) => Some(caller),
            Err(reason) => {
                let mut refused = text(StatusCode::UNAUTHORIZED, &reason);
                refused.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return Ok(refused);
            }
        }
    };
    let caller = caller.unwrap_or_else(Caller::dev);
    Ok(match (request.method().clone(), path.as_str()) {
        (Method::GET, "/" | "/ws") if is_websocket_upgrade(&request) => upgrade(request, state, slot, caller),
        (_, "/" | "/ws") => {
            text(StatusCode::BAD_REQUEST, "the WebSocket peer API at / and /ws needs a WebSocket upgrade")
        }
        (_, "/mcp") => streamable.serve(request, caller).await,
        (Method::GET, "/health") => json_response(StatusCode::OK, json!({ "status": "ok" })),
        (Method::GET, "/ready") => ready(&state),
        (Method::GET, "/metrics") => {
            respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", super::metrics::render(&state))
        }
        (Method::GET, "/ui" | "/ui/") => {
            let mut page = respond(StatusCode::OK, "text/html; charset=utf-8", super::dashboard::PAGE);
            page.headers_mut().insert(
                hyper::header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                ),
            );
            page
        }
        // Like every MCP request: the token still exists, within its rate limit.
        (Method::GET, path @ ("/ui/state" | "/backup")) => match state.auth.admit(&state.cluster.consensus, &caller) {
            Err(refusal) if refusal.code.0 == super::auth::RATE_LIMITED => {
                text(StatusCode::TOO_MANY_REQUESTS, &refusal.message)
            }
            Err(refusal) => text(StatusCode::FORBIDDEN, &refusal.message),
            Ok(()) if path == "/backup" => backup(&state, &caller).await,
            Ok(()) => json_response(StatusCode::OK, super::dashboard::state(&state, &caller).await),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: the peer API serves /, /ws, /mcp, /health, /ready, /metrics, /ui (the dashboard), /ui/state and /backup",
        ),
    })
}

/// How long a backup waits for the snapshot it asked for.
const BACKUP_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes read from the snapshot file per chunk sent.
const BACKUP_CHUNK_BYTES: usize = 256 * 1024;

/// `GET /backup`, for admin tokens: a snapshot taken now (the whole
/// replicated state at one log index, checksummed), streamed from its open
/// file, and the plugin modules this node holds (`consensus::backup` has
/// the layout). One at a time per node. The log index and snapshot id are
/// in `X-Zeromesh-Log-Index` and `X-Zeromesh-Snapshot-Id`; installed
/// plugins whose module this node lacks are counted in
/// `X-Zeromesh-Modules-Missing`.
async fn backup(state: &ApiState, caller: &Caller) -> Response<Body> {
    if caller.role != zeromesh_protocol::auth::Role::Admin {
        return text(
            StatusCode::FORBIDDEN,
            &format!("{} may not take backups: an admin token is needed", caller.describe()),
        );
    }
    let Ok(running) = state.backup.clone().try_lock_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "a backup is being taken on this node already; retry when it ends",
        );
    };
    let backup = match state.cluster.consensus.backup(BACKUP_SNAPSHOT_TIMEOUT).await {
        Ok(backup) => backup,
        Err(error) => return text(StatusCode::SERVICE_UNAVAILABLE, &format!("no backup: {error}")),
    };
    tracing::info!(log_index = backup.log_index, bytes = backup.bytes(), "streaming a backup");
    use futures::StreamExt;
    let bytes = backup.bytes();
    let head = futures::stream::iter([Bytes::from(backup.prefix())]);
    let modules_head = futures::stream::iter([Bytes::from(backup.modules_prefix())]);
    let (log_index, missing, snapshot_id) = (backup.log_index, backup.modules_missing, backup.header.snapshot_id);
    let file = tokio::fs::File::from_std(backup.file);
    // The snapshot file, chunk by chunk; a read error ends the body short of
    // its length, and the client sees the backup cut and refuses it.
    let snapshot = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; BACKUP_CHUNK_BYTES];
        match file.read(&mut chunk).await {
            Ok(0) => None,
            Ok(read) => {
                chunk.truncate(read);
                Some((Bytes::from(chunk), file))
            }
            Err(error) => {
                tracing::warn!(%error, "reading the snapshot file for a backup failed");
                None
            }
        }
    });
    let cluster = state.cluster.clone();
    let modules = futures::stream::iter(backup.modules).filter_map(move |(sha256, len)| {
        let cluster = cluster.clone();
        async move {
            match cluster.consensus.module(sha256).await {
                Ok(Some(module)) if module.len() as u64 == len => {
                    Some(Bytes::from([zeromesh_consensus::Backup::module_prefix(&sha256, len), module].concat()))
                }
                // Gone meanwhile: the body ends short and the client refuses it.
                _ => None,
            }
        }
    });
    let chunks = head.chain(snapshot).chain(modules_head).chain(modules).map(move |bytes| {
        // The backup slot is held for as long as the body is sent.
        let _running = &running;
        Ok::<_, Infallible>(hyper::body::Frame::data(bytes))
    });
    let mut response = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(chunks)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(bytes));
    headers.insert("x-zeromesh-log-index", HeaderValue::from(log_index));
    headers.insert("x-zeromesh-modules-missing", HeaderValue::from(missing));
    if let Ok(id) = HeaderValue::from_str(&snapshot_id) {
        headers.insert("x-zeromesh-snapshot-id", id);
    }
    response
}

/// Ready: a member of a cluster that knows its leader.
fn ready(state: &ApiState) -> Response<Body> {
    let view = state.cluster.consensus.cluster_view();
    let member = view.voters.contains(&view.node_id) || view.learners.contains(&view.node_id);
    let reason = match (member, view.leader) {
        (false, _) => Some("this node is not a member of a cluster yet"),
        (true, None) => Some("no leader is known"),
        (true, Some(_)) => None,
    };
    let body = json!({ "ready": reason.is_none(), "reason": reason, "leader": view.leader, "term": view.term });
    json_response(if reason.is_none() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}

fn header_has(request: &Request<Incoming>, name: hyper::header::HeaderName, wanted: &str) -> bool {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(wanted))
}

fn is_websocket_upgrade(request: &Request<Incoming>) -> bool {
    header_has(request, UPGRADE, "websocket") && header_has(request, CONNECTION, "upgrade")
}

fn upgrade(
    mut request: Request<Incoming>,
    state: Arc<ApiState>,
    slot: Arc<OwnedSemaphorePermit>,
    caller: Caller,
) -> Response<Body> {
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        return text(StatusCode::BAD_REQUEST, "a WebSocket upgrade needs Sec-WebSocket-Key");
    };
    if request.headers().get("sec-websocket-version").and_then(|value| value.to_str().ok()) != Some("13") {
        let mut refused = text(StatusCode::UPGRADE_REQUIRED, "this node speaks WebSocket version 13");
        refused.headers_mut().insert("sec-websocket-version", HeaderValue::from_static("13"));
        return refused;
    }
    let offers_mcp = header_has(&request, hyper::header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
    let upgrading = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = match upgrading.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "WebSocket upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(API_READ_CHUNK_BYTES)
            .max_message_size(Some(MAX_API_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_API_MESSAGE_BYTES));
        let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        super::websocket::serve(socket, state, caller).await;
        drop(slot);
    });
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert("sec-websocket-accept", accept);
    }
    if offers_mcp {
        headers.insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    }
    response
}

/// The token a request presents, as an `Authorization` header value:
/// the header itself, or a token in the URL (`?token=`) or in the WebSocket
/// subprotocols (`bearer.<token>`), for clients that cannot set headers.
fn presented_token(headers: &hyper::HeaderMap, uri: &hyper::Uri, listener: Listener) -> Result<Option<String>, String> {
    if let Some(header) = headers.get(hyper::header::AUTHORIZATION) {
        let header = header.to_str().map_err(|_| "the Authorization header is not text".to_owned())?;
        return Ok(Some(header.to_owned()));
    }
    let from_subprotocol = headers
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|offered| offered.trim().strip_prefix(TOKEN_SUBPROTOCOL).map(str::to_owned));
    if let Some(token) = from_subprotocol {
        return Ok(Some(format!("Bearer {token}")));
    }
    let from_query = uri.query().into_iter().flat_map(|query| query.split('&')).find_map(|pair| {
        pair.strip_prefix("token=")
            .map(|token| percent_encoding::percent_decode_str(token).decode_utf8_lossy().into_owned())
    });
    match from_query {
        None => Ok(None),
        Some(_) if !listener.encrypted && !listener.loopback => Err(
            "a token in the URL is refused over plain ws:// or http:// to a non-loopback address, where it travels in clear; use TLS, or send it in the Authorization header".to_owned(),
        ),
        Some(token) => Ok(Some(format!("Bearer {token}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_comes_from_the_header_the_subprotocols_or_the_url_but_never_in_clear_off_loopback() {
        let token = "zm_0123456789abcdef_00";
        let presented = |headers: &[(&str, &str)], uri: &str, loopback: bool, encrypted: bool| {
            let mut map = hyper::HeaderMap::new();
            for (name, value) in headers {
                map.append(hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            }
            presented_token(&map, &uri.parse().unwrap(), Listener { loopback, encrypted })
        };
        let bearer = Some(format!("Bearer {token}"));
        assert_eq!(presented(&[("authorization", &format!("Bearer {token}"))], "/", false, false), Ok(bearer.clone()));
        let offered = format!("mcp, bearer.{token}");
        assert_eq!(presented(&[("sec-websocket-protocol", &offered)], "/", false, false), Ok(bearer.clone()));
        assert_eq!(presented(&[], &format!("/?token={token}"), true, false), Ok(bearer.clone()));
        assert_eq!(presented(&[], &format!("/mcp?x=1&token={token}"), false, true), Ok(bearer.clone()));
        let refused = presented(&[], &format!("/?token={token}"), false, false).unwrap_err();
        assert!(refused.contains("travels in clear"), "{refused}");
        assert_eq!(presented(&[], "/?tokens=x", false, false), Ok(None));
        assert_eq!(presented(&[], "/", true, false), Ok(None));
    }

    #[test]
    fn only_loopback_names_pass_the_rebinding_check() {
        for good in ["localhost", "localhost:8764", "127.0.0.1", "127.0.0.1:80", "[::1]:8764", "[::1]", "LOCALHOST"] {
            assert!(is_loopback_name(good), "{good}");
        }
        for bad in
            ["evil.example.com", "evil.example.com:8764", "10.0.0.1:80", "localhost.evil.com", "127.0.0.1.nip.io"]
        {
            assert!(!is_loopback_name(bad), "{bad}");
        }
    }
}
