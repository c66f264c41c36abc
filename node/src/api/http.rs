//! The peer API's listener: HTTP/1.1 on one port. `GET /` and `/ws` with a
//! WebSocket upgrade start an MCP WebSocket session (subprotocol `mcp`);
//! `POST /mcp` is MCP's Streamable HTTP (one JSON answer per request);
//! `/health`, `/ready` and `/metrics` serve operators. Every connection
//! counts against the connection limit and must send its request head within
//! the handshake timeout; request bodies are bounded. On a loopback address,
//! requests naming another host (`Host`) or coming from another site's page
//! (`Origin`) are refused, so DNS rebinding cannot reach the node.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
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
use zeromesh_protocol::limits::{MAX_API_CONNECTIONS, MAX_API_MESSAGE_BYTES};

use super::server::{self, Session, SUBPROTOCOL};
use super::ApiState;
use zeromesh_kernel::Caller;

/// A connection that has not sent its request head by then is dropped, so
/// silent sockets cannot hold connection slots.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers), in bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;

type Body = Full<Bytes>;

/// Serves the peer API on `listener` until the process ends; over TLS
/// only, when `tls` is given.
pub async fn serve(listener: TcpListener, state: Arc<ApiState>, tls: Option<Arc<rustls::ServerConfig>>) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
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
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            state.metrics.connections.fetch_add(1, Ordering::Relaxed);
            let serving = {
                let state = state.clone();
                hyper::service::service_fn(move |request| route(request, state.clone(), slot.clone(), loopback))
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

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
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
    slot: Option<Arc<OwnedSemaphorePermit>>,
    loopback: bool,
) -> Result<Response<Body>, Infallible> {
    let Some(slot) = slot else {
        return Ok(text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("this node serves {MAX_API_CONNECTIONS} API connections already; retry later"),
        ));
    };
    if loopback {
        if let Err(reason) = check_host_and_origin(&request) {
            return Ok(text(StatusCode::FORBIDDEN, &reason));
        }
    }
    let path = request.uri().path().to_owned();
    let caller = if matches!(path.as_str(), "/health" | "/ready") {
        None
    } else {
        let authorization = request.headers().get(hyper::header::AUTHORIZATION).and_then(|value| value.to_str().ok());
        match state.auth.authenticate(&state.cluster.consensus, authorization) {
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
        (Method::POST, "/mcp") => mcp_post(request, &state, caller).await,
        (_, "/mcp") => {
            let mut refused = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "this node answers MCP over Streamable HTTP with POST /mcp only (no server-sent event stream, and sessions need no ending); use the WebSocket endpoint for notifications",
            );
            refused.headers_mut().insert("allow", HeaderValue::from_static("POST"));
            refused
        }
        (Method::GET, "/health") => json_response(StatusCode::OK, json!({ "status": "ok" })),
        (Method::GET, "/ready") => ready(&state),
        (Method::GET, "/metrics") => {
            respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", super::metrics::render(&state))
        }
        _ => text(StatusCode::NOT_FOUND, "not found: the peer API serves /, /ws, /mcp, /health, /ready and /metrics"),
    })
}

#[cfg(test)]
mod tests {
    use super::is_loopback_name;

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
            .max_message_size(Some(MAX_API_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_API_MESSAGE_BYTES));
        let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        if let Err(error) = server::websocket(socket, state, caller).await {
            tracing::debug!(%error, "WebSocket session ended");
        }
        drop(slot);
    });
    let mut response = Response::new(Full::new(Bytes::new()));
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

/// Streamable HTTP: one JSON-RPC message per POST, answered as JSON; a
/// notification or a response from the client is accepted with 202.
async fn mcp_post(request: Request<Incoming>, state: &Arc<ApiState>, caller: Caller) -> Response<Body> {
    let accepts_json = request
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_none_or(|accept| accept.contains("application/json") || accept.contains("*/*"));
    if !accepts_json {
        return text(StatusCode::NOT_ACCEPTABLE, "POST /mcp answers with application/json: accept it");
    }
    let body = match Limited::new(request.into_body(), MAX_API_MESSAGE_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body could not be read or exceeds {MAX_API_MESSAGE_BYTES} bytes: {error}"),
            )
        }
    };
    let Ok(message) = std::str::from_utf8(&body) else {
        let refusal = super::jsonrpc::RpcError::new(super::jsonrpc::PARSE_ERROR, "the body is not UTF-8");
        return respond(
            StatusCode::BAD_REQUEST,
            "application/json",
            super::jsonrpc::error(serde_json::Value::Null, &refusal),
        );
    };
    let incoming = match super::jsonrpc::parse(message) {
        Ok(incoming) => incoming,
        Err((id, error)) => return respond(StatusCode::OK, "application/json", super::jsonrpc::error(id, &error)),
    };
    let initializing = incoming.method == "initialize";
    let session = Session::one_shot(caller);
    match server::answer_incoming(state, &session, incoming, &server::Progress::none()).await {
        Some(answer) => {
            let mut answered = respond(StatusCode::OK, "application/json", answer);
            if initializing {
                // The endpoint keeps no per-session state, so any session id a
                // client sends back is accepted and none ever expires; the id
                // lets clients that expect one correlate their requests.
                let mut id = [0u8; 16];
                if getrandom::fill(&mut id).is_ok() {
                    if let Ok(value) = HeaderValue::from_str(&hex::encode(id)) {
                        answered.headers_mut().insert("mcp-session-id", value);
                    }
                }
            }
            answered
        }
        None => {
            let mut accepted = Response::new(Full::new(Bytes::new()));
            *accepted.status_mut() = StatusCode::ACCEPTED;
            accepted
        }
    }
}
