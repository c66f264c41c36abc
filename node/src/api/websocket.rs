//! The WebSocket peer API (subprotocol `mcp`) as an rmcp transport: one
//! JSON-RPC message per text frame. rmcp serves the session; this adapter
//! keeps the connection's limits: a bounded number of requests running at
//! once (reading stops until one finishes, so TCP pushes back on the
//! client), the idle timeout (the node pings, so only a silent or dead peer
//! reaches it), and a clear error for a message that is not JSON-RPC, after
//! which the session goes on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use rmcp::model::{
    CallToolRequest, ClientJsonRpcMessage, ClientNotification, ErrorCode, GetExtensions, JsonRpcError, JsonRpcRequest,
    RequestId, ServerJsonRpcMessage,
};
use rmcp::transport::Transport;
use rmcp::RoleServer;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use zeromesh_kernel::Caller;
use zeromesh_protocol::limits::MAX_API_REQUESTS_PER_CONNECTION;

use super::mcp::{check_envelope, Unreadable};
use super::{rpc_error, ApiState};

pub const SUBPROTOCOL: &str = "mcp";

/// Serves one WebSocket session with rmcp until the client leaves.
pub async fn serve<S>(socket: WebSocketStream<S>, state: Arc<ApiState>, caller: Caller)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let transport = WebSocketTransport::new(socket, caller, state.idle_timeout);
    match rmcp::serve_server(super::mcp::Boxed(super::mcp::Handler::new(state)), transport).await {
        Ok(running) => {
            let _ = running.waiting().await;
        }
        Err(error) => tracing::debug!(%error, "a WebSocket session ended before it began"),
    }
}

/// Requests running on one connection, by id, each holding its slot.
type Running = Arc<Mutex<HashMap<RequestId, OwnedSemaphorePermit>>>;

pub struct WebSocketTransport<S> {
    source: SplitStream<WebSocketStream<S>>,
    /// Text frames to the writer task, which also pings.
    frames: mpsc::Sender<String>,
    caller: Caller,
    idle_timeout: Duration,
    slots: Arc<Semaphore>,
    running: Running,
}

impl<S> WebSocketTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn new(socket: WebSocketStream<S>, caller: Caller, idle_timeout: Duration) -> Self {
        let (sink, source) = socket.split();
        let (frames, queued) = mpsc::channel(MAX_API_REQUESTS_PER_CONNECTION);
        tokio::spawn(write_frames(sink, queued, idle_timeout));
        WebSocketTransport {
            source,
            frames,
            caller,
            idle_timeout,
            slots: Arc::new(Semaphore::new(MAX_API_REQUESTS_PER_CONNECTION)),
            running: Arc::default(),
        }
    }

    fn release(running: &Running, id: &RequestId) {
        running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id);
    }

    /// Answers a message that could not be read, without ending the session.
    async fn refuse(&self, id: Option<RequestId>, code: ErrorCode, message: String) {
        let refusal = ServerJsonRpcMessage::Error(JsonRpcError::new(id, rpc_error(code.0, message)));
        if let Ok(text) = serde_json::to_string(&refusal) {
            let _ = self.frames.send(text).await;
        }
    }
}

/// Writes queued frames and pings every third of the idle timeout, so live
/// clients answer (every WebSocket client pongs).
async fn write_frames<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut queued: mpsc::Receiver<String>,
    idle_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut ping = tokio::time::interval(idle_timeout / 3);
    ping.tick().await;
    loop {
        let sent = tokio::select! {
            frame = queued.recv() => match frame {
                Some(frame) => sink.send(Message::text(frame)).await,
                None => break,
            },
            _ = ping.tick() => sink.send(Message::Ping(Default::default())).await,
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

/// Decodes one text frame as a client's JSON-RPC message. Pure, so it can
/// be fuzzed alone (`fuzz/`, target `request_decoder`).
pub fn decode(text: &str) -> Result<ClientJsonRpcMessage, Unreadable> {
    if let Some(call) = decode_tool_call(text) {
        return Ok(call);
    }
    if let Ok(message) = serde_json::from_str(text) {
        return Ok(message);
    }
    // Not a message: read it again, untyped, to say what is wrong with it.
    let value: Value = serde_json::from_str(text)
        .map_err(|error| (None, ErrorCode::PARSE_ERROR, format!("the message is not JSON: {error}")))?;
    check_envelope(&value)?;
    let id = value.get("id").and_then(|id| serde_json::from_value::<RequestId>(id.clone()).ok());
    serde_json::from_value(value)
        .map_err(|error| (id, ErrorCode::INVALID_REQUEST, format!("not a JSON-RPC message MCP defines: {error}")))
}

/// A `tools/call` request (nearly every request a busy node reads) read
/// straight into rmcp's type for it. rmcp's reading of any message (an
/// untagged enum of every kind of message, then of every request type in
/// turn) buffers the message several times and tries thirteen request types
/// before `tools/call`; the message it gives is this one. Anything else, or
/// anything this refuses, is left to rmcp's reading, which also gives the
/// errors.
fn decode_tool_call(text: &str) -> Option<ClientJsonRpcMessage> {
    let kind: Kind = serde_json::from_str(text).ok()?;
    // rmcp's own test of a message's kind: a request has a method and an
    // id and neither a result nor an error, whatever their values.
    if kind.method != Some("tools/call") || !kind.id || kind.result || kind.error {
        return None;
    }
    let call: JsonRpcRequest<CallToolRequest> = serde_json::from_str(text).ok()?;
    Some(ClientJsonRpcMessage::Request(JsonRpcRequest::new(call.id, call.request.into())))
}

/// The members of a JSON-RPC message that tell its kind, read without
/// copying anything: its method, and which of the others are there.
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(borrow, default)]
    method: Option<&'a str>,
    #[serde(default, deserialize_with = "present")]
    id: bool,
    #[serde(default, deserialize_with = "present")]
    result: bool,
    #[serde(default, deserialize_with = "present")]
    error: bool,
}

/// A member that is there, whatever its value (`null` included).
fn present<'de, D: Deserializer<'de>>(member: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(member).map(|_| true)
}

impl<S> Transport<RoleServer> for WebSocketTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        let answered = match &item {
            ServerJsonRpcMessage::Response(response) => Some(response.id.clone()),
            ServerJsonRpcMessage::Error(error) => error.id.clone(),
            _ => None,
        };
        let frames = self.frames.clone();
        let running = self.running.clone();
        async move {
            let text = serde_json::to_string(&item).map_err(std::io::Error::other)?;
            let sent = frames.send(text).await.map_err(|_| std::io::Error::other("the connection is closed"));
            if let Some(id) = answered {
                Self::release(&running, &id);
            }
            sent
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        loop {
            let message = match tokio::time::timeout(self.idle_timeout, self.source.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => return None,
                Err(_) => {
                    tracing::debug!(idle = ?self.idle_timeout, "closing a silent WebSocket");
                    return None;
                }
            };
            let text = match message {
                Ok(Message::Text(text)) => text,
                Ok(Message::Binary(_)) => {
                    let reason = "binary messages are not JSON-RPC: send text".to_owned();
                    self.refuse(None, ErrorCode::INVALID_REQUEST, reason).await;
                    continue;
                }
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(error) => {
                    // An over-limit message or broken framing: say so, then close.
                    self.refuse(None, ErrorCode::INVALID_REQUEST, format!("unreadable message: {error}")).await;
                    return None;
                }
            };
            let mut message = match decode(&text) {
                Ok(message) => message,
                Err((id, code, reason)) => {
                    self.refuse(id, code, reason).await;
                    continue;
                }
            };
            match &mut message {
                ClientJsonRpcMessage::Request(request) => {
                    // Waits while this connection has its maximum running.
                    let slot = self.slots.clone().acquire_owned().await.ok()?;
                    self.running
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .insert(request.id.clone(), slot);
                    request.request.extensions_mut().insert(self.caller.clone());
                }
                ClientJsonRpcMessage::Notification(notification) => {
                    // A cancelled request gets no answer: free its slot now.
                    if let ClientNotification::CancelledNotification(cancelled) = &notification.notification {
                        if let Some(id) = &cancelled.params.request_id {
                            Self::release(&self.running, id);
                        }
                    }
                    notification.notification.extensions_mut().insert(self.caller.clone());
                }
                _ => {}
            }
            return Some(message);
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_notifications_decode_and_anything_else_gets_its_error() {
        assert!(matches!(decode(r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#), Ok(ClientJsonRpcMessage::Request(_))));
        let note = decode(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert!(matches!(note, Ok(ClientJsonRpcMessage::Notification(_))));
        let code = |text: &str| decode(text).err().map(|(_, code, _)| code);
        assert_eq!(code("{nope"), Some(ErrorCode::PARSE_ERROR));
        assert_eq!(code("[]"), Some(ErrorCode::INVALID_REQUEST));
        assert_eq!(code("7"), Some(ErrorCode::INVALID_REQUEST));
        assert_eq!(code(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#), Some(ErrorCode::INVALID_REQUEST));
        let (id, code, _) = decode(r#"{"jsonrpc":"2.0","id":"a","method":3}"#).unwrap_err();
        assert_eq!((id, code), (Some(RequestId::String("a".into())), ErrorCode::INVALID_REQUEST));
    }

    /// `text` read by `decode` and by rmcp alone, each as its `Debug` and
    /// its JSON again (which shows what `Debug` leaves out: `_meta`).
    fn read_both_ways(text: &str) -> (Option<(String, Value)>, Option<(String, Value)>) {
        let shown = |message: ClientJsonRpcMessage| (format!("{message:?}"), serde_json::to_value(&message).unwrap());
        (decode(text).ok().map(shown), serde_json::from_str(text).ok().map(shown))
    }

    #[test]
    fn a_tool_call_is_read_directly_into_what_rmcp_makes_of_it() {
        let calls = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"memory_put","arguments":{"path":"a/b","value":"v"}}}"#,
            r#"{"id":"x-7","method":"tools/call","jsonrpc":"2.0","params":{"_meta":{"progressToken":3},"name":"echo","arguments":{"n":1.5,"s":"\u00e9\n"}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"},"extra":[1,{"a":null}]}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{},"task":{"ttl":1000}}}"#,
        ];
        for text in calls {
            assert!(decode_tool_call(text).is_some(), "not read directly: {text}");
            let (ours, rmcps) = read_both_ways(text);
            assert!(rmcps.is_some(), "rmcp reads {text}");
            assert_eq!(ours, rmcps, "{text}");
        }
    }

    #[test]
    fn what_is_not_a_plain_tool_call_is_left_to_rmcp() {
        let others = [
            // A stray result or error: rmcp refuses the message.
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"result":null}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"error":{}}"#,
            // No id: a notification.
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo"}}"#,
            // Not a call's parameters: rmcp reads a custom request.
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        ];
        for text in others {
            assert!(decode_tool_call(text).is_none(), "read directly: {text}");
            let (ours, rmcps) = read_both_ways(text);
            if rmcps.is_some() {
                assert_eq!(ours, rmcps, "{text}");
            }
        }
        let (ours, _) = read_both_ways(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#);
        assert!(ours.is_some_and(|(shown, _)| shown.contains("CustomRequest")));
    }

    #[test]
    fn deeply_nested_json_is_refused_as_unparseable_not_a_crash() {
        let nested = |depth: usize| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","arguments":{{"a":{}1{}}}}}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        let (_, code, reason) = decode(&nested(100_000)).unwrap_err();
        assert_eq!(code, ErrorCode::PARSE_ERROR);
        assert!(reason.contains("recursion limit"), "{reason}");
        decode(&nested(100)).expect("100 levels are fine");
    }
}
