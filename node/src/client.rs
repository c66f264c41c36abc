//! A client of the peer API: one WebSocket connection speaking JSON-RPC,
//! used by the command line and by the test harness.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use zeromesh_protocol::limits::API_READ_CHUNK_BYTES;

/// A byte stream a WebSocket runs over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
/// A WebSocket to a node.
pub type Socket = WebSocketStream<Box<dyn Io>>;

/// The variable holding the API token clients send (`zm_...`).
pub const TOKEN_ENV: &str = "ZEROMESH_TOKEN";

/// Opens a WebSocket (subprotocol `mcp`) to `url`: `ws://` over TCP, or
/// `wss://` over TLS trusting the PEM certificates `ca_pem` (by default the
/// file named by `ZEROMESH_CA_CERT`), sending `token` (by default
/// `ZEROMESH_TOKEN`) as the bearer token.
pub async fn open_websocket(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Socket, String> {
    open_websocket_as(url, ca_pem, std::env::var(TOKEN_ENV).ok()).await
}

/// [`open_websocket`] with an explicit token.
pub async fn open_websocket_as(url: &str, ca_pem: Option<Vec<u8>>, token: Option<String>) -> Result<Socket, String> {
    let mut request = url.into_client_request().map_err(|error| error.to_string())?;
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("mcp"));
    if let Some(token) = token.filter(|token| !token.is_empty()) {
        let value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| format!("{TOKEN_ENV} holds characters a header cannot carry"))?;
        request.headers_mut().insert("authorization", value);
    }
    let stream = connect(url, ca_pem).await?;
    let config = WebSocketConfig::default().read_buffer_size(API_READ_CHUNK_BYTES);
    let (socket, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await.map_err(|error| {
            match error {
                // The node says why it refused the connection (e.g. a revoked token) in the body.
                tokio_tungstenite::tungstenite::Error::Http(response) => {
                    let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                    format!("{}: {}", response.status(), body.trim())
                }
                other => other.to_string(),
            }
        })?;
    Ok(socket)
}

/// A TCP stream to the host and port of `url`, or a TLS one for `wss://`
/// and `https://`, trusting the PEM certificates `ca_pem` (by default the
/// file named by `ZEROMESH_CA_CERT`).
async fn connect(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Box<dyn Io>, String> {
    let uri: tokio_tungstenite::tungstenite::http::Uri =
        url.parse().map_err(|error| format!("{url:?} is not a URL: {error}"))?;
    let host = uri.host().ok_or("the URL has no host")?.to_owned();
    let secure = match uri.scheme_str() {
        Some("ws" | "http") => false,
        Some("wss" | "https") => true,
        other => return Err(format!("the URL's scheme {other:?} is not ws or wss")),
    };
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    if secure {
        let ca_pem = match ca_pem {
            Some(pem) => pem,
            None => {
                let path = std::env::var_os(crate::tls::CA_CERT_ENV).ok_or_else(|| {
                    format!(
                        "to reach {url}, set {} to a PEM file of the certificates to trust",
                        crate::tls::CA_CERT_ENV
                    )
                })?;
                std::fs::read(&path)
                    .map_err(|error| format!("reading {}: {error}", std::path::Path::new(&path).display()))?
            }
        };
        let config = crate::tls::client_config(&ca_pem).map_err(|error| format!("{error:#}"))?;
        Ok(Box::new(crate::tls::connect(&host, port, config).await.map_err(|error| format!("TLS: {error:#}"))?))
    } else {
        let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .map_err(|error| error.to_string())?;
        let _ = tcp.set_nodelay(true);
        Ok(Box::new(tcp))
    }
}

/// The answer to one HTTP `GET`, its head read.
pub struct HttpAnswer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// `Content-Length`, when the node sent one.
    pub length: Option<u64>,
    /// The body: at most `length` bytes, or up to the end of the connection.
    pub body: Box<dyn AsyncRead + Unpin + Send>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header, _)| header == name).map(|(_, value)| value.as_str())
    }
}

/// Longest response head read, in bytes.
const MAX_HEAD_BYTES: u64 = 16 * 1024;

/// `GET path` on the node at `url` (as for every command: `ws://host:port`
/// or `wss://`), with `token` (by default `ZEROMESH_TOKEN`) as the bearer
/// token, over a connection of its own.
pub async fn http_get(url: &str, path: &str, token: Option<String>) -> Result<HttpAnswer, String> {
    let token = token.or_else(|| std::env::var(TOKEN_ENV).ok()).filter(|token| !token.is_empty());
    let authorization = token.map(|token| format!("Bearer {}", token.trim()));
    let headers: Vec<(&str, &str)> = authorization.iter().map(|value| ("Authorization", value.as_str())).collect();
    http_request(url, "GET", path, &headers, b"").await
}

/// One HTTP/1.1 request to the node at `url` (`ws://`, `wss://`, `http://`
/// or `https://`), with exactly `headers` and `body`, over a connection of
/// its own; the answer's head read, its body left to read.
pub async fn http_request(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpAnswer, String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest).split('/').next().unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = connect(url, None).await?;
    stream.write_all(head.as_bytes()).await.map_err(|error| error.to_string())?;
    stream.write_all(body).await.map_err(|error| error.to_string())?;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut lines = Vec::new();
    let mut limited = (&mut reader).take(MAX_HEAD_BYTES);
    loop {
        let mut line = String::new();
        if limited.read_line(&mut line).await.map_err(|error| error.to_string())? == 0 {
            return Err("the node closed the connection before answering".into());
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let status = lines
        .first()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or("the node's answer is not HTTP")?;
    let headers: Vec<(String, String)> = lines[1..]
        .iter()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length = headers.iter().find(|(name, _)| name == "content-length").and_then(|(_, value)| value.parse().ok());
    let body: Box<dyn AsyncRead + Unpin + Send> = match length {
        Some(length) => Box::new(reader.take(length)),
        None => Box::new(reader),
    };
    Ok(HttpAnswer { status, headers, length, body })
}

/// How long the client waits for one answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The node answered with a JSON-RPC error.
    #[error("error {code}: {message}")]
    Rpc { code: i64, message: String },
    /// The tool ran and failed (`isError`); nothing was done.
    #[error("{0}")]
    Tool(String),
    /// The tool's change may or may not have been applied (`isError` with
    /// `_meta["zeromesh/error"] == "outcome_unknown"`): read it back before
    /// retrying.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// The connection failed or the answer did not come.
    #[error("{0}")]
    Transport(String),
}

/// One connection to a node's peer API.
pub struct ApiClient {
    socket: Socket,
    next_id: u64,
    /// The `initialize` result.
    pub server: Value,
    /// Notifications that arrived while waiting for an answer.
    notifications: VecDeque<Value>,
}

/// Notifications kept for `next_notification`; older ones are dropped.
const MAX_KEPT_NOTIFICATIONS: usize = 64;

impl ApiClient {
    /// Connects to `url` (`ws://host:port`, or `wss://` trusting
    /// `ZEROMESH_CA_CERT`) with subprotocol `mcp` and initialises.
    pub async fn connect(url: &str) -> Result<ApiClient, ClientError> {
        ApiClient::connect_trusting(url, None).await
    }

    /// Connects as [`ApiClient::connect`], trusting `ca_pem` for `wss://`.
    pub async fn connect_trusting(url: &str, ca_pem: Option<Vec<u8>>) -> Result<ApiClient, ClientError> {
        ApiClient::connect_with(url, ca_pem, std::env::var(TOKEN_ENV).ok()).await
    }

    /// Connects with an explicit bearer token (`None`: none).
    pub async fn connect_with(
        url: &str,
        ca_pem: Option<Vec<u8>>,
        token: Option<String>,
    ) -> Result<ApiClient, ClientError> {
        let transport = |error: String| ClientError::Transport(format!("cannot connect to {url}: {error}"));
        let socket = tokio::time::timeout(ANSWER_TIMEOUT, open_websocket_as(url, ca_pem, token))
            .await
            .map_err(|_| transport("timed out".into()))?
            .map_err(transport)?;
        let mut client = ApiClient { socket, next_id: 1, server: Value::Null, notifications: VecDeque::new() };
        client.server = client
            .request(
                "initialize",
                json!({ "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "zeromesh-cli", "version": env!("CARGO_PKG_VERSION") } }),
            )
            .await?;
        client.notify("notifications/initialized", json!({})).await?;
        Ok(client)
    }

    async fn send(&mut self, message: Value) -> Result<(), ClientError> {
        self.socket.send(Message::text(message.to_string())).await.map_err(|e| ClientError::Transport(e.to_string()))
    }

    pub async fn notify(&mut self, method: &str, params: Value) -> Result<(), ClientError> {
        self.send(json!({ "jsonrpc": "2.0", "method": method, "params": params })).await
    }

    /// Sends raw text and returns the next answer's text (for tests of malformed input).
    pub async fn raw(&mut self, text: String) -> Result<Value, ClientError> {
        self.socket.send(Message::text(text)).await.map_err(|e| ClientError::Transport(e.to_string()))?;
        self.next_message().await
    }

    async fn next_message(&mut self) -> Result<Value, ClientError> {
        loop {
            let message = tokio::time::timeout(ANSWER_TIMEOUT, self.socket.next())
                .await
                .map_err(|_| ClientError::Transport(format!("no answer within {ANSWER_TIMEOUT:?}")))?
                .ok_or_else(|| ClientError::Transport("the node closed the connection".into()))?
                .map_err(|e| ClientError::Transport(e.to_string()))?;
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text)
                        .map_err(|e| ClientError::Transport(format!("the node sent bad JSON: {e}")))
                }
                Message::Close(_) => return Err(ClientError::Transport("the node closed the connection".into())),
                _ => continue,
            }
        }
    }

    /// Sends a call of `method` without waiting for its answer; returns its id.
    pub async fn start_request(&mut self, method: &str, params: Value) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })).await?;
        Ok(id)
    }

    /// Calls `method` and returns its result.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })).await?;
        loop {
            let mut answer = self.next_message().await?;
            if answer.get("id") != Some(&json!(id)) {
                if answer.get("method").is_some() && answer.get("id").is_none() {
                    if self.notifications.len() == MAX_KEPT_NOTIFICATIONS {
                        self.notifications.pop_front();
                    }
                    self.notifications.push_back(answer);
                }
                continue; // a notification, or an answer to an earlier call
            }
            if let Some(error) = answer.get("error") {
                return Err(ClientError::Rpc {
                    code: error.get("code").and_then(Value::as_i64).unwrap_or_default(),
                    message: error.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
                });
            }
            return Ok(answer["result"].take());
        }
    }

    /// The next notification from the node (kept if it arrived during a
    /// request), waiting at most `timeout`.
    pub async fn next_notification(&mut self, timeout: std::time::Duration) -> Result<Value, ClientError> {
        if let Some(kept) = self.notifications.pop_front() {
            return Ok(kept);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = tokio::time::timeout(remaining, self.next_message())
                .await
                .map_err(|_| ClientError::Transport(format!("no notification within {timeout:?}")))??;
            if message.get("method").is_some() && message.get("id").is_none() {
                return Ok(message);
            }
        }
    }

    /// Calls tool `name` and returns its structured result.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Result<Value, ClientError> {
        self.call_tool_as(name, arguments, None).await
    }

    /// Calls tool `name` on behalf of `agent` (`_meta["zeromesh/agent"]`).
    pub async fn call_tool_as(
        &mut self,
        name: &str,
        arguments: Value,
        agent: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut params = json!({ "name": name, "arguments": arguments });
        if let Some(agent) = agent {
            params["_meta"] = json!({ "zeromesh/agent": agent });
        }
        let mut result = self.request("tools/call", params).await?;
        if result.get("isError") == Some(&Value::Bool(true)) {
            let message = result["content"][0]["text"].as_str().unwrap_or("the tool failed").to_owned();
            if result["_meta"]["zeromesh/error"] == "outcome_unknown" {
                return Err(ClientError::OutcomeUnknown(message));
            }
            return Err(ClientError::Tool(message));
        }
        Ok(result["structuredContent"].take())
    }
}
