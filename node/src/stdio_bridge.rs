//! `zeromesh mcp-stdio --node <url>`: MCP over stdio for hosts that can only
//! start servers as processes. Each line on stdin (one JSON-RPC message) goes
//! to the node's WebSocket endpoint; each message from the node (answers and
//! notifications) is written to stdout as one line. Ends when stdin closes or
//! the node closes the connection. Logs go to stderr only.

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use zeromesh_protocol::limits::MAX_API_MESSAGE_BYTES;

/// One line from `reader`, at most `MAX_API_MESSAGE_BYTES`; `Err(true)` for
/// an over-long line (whose rest is skipped), `Err(false)` at the end.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Result<Vec<u8>, bool>> {
    let mut line = Vec::new();
    let read = (&mut *reader).take(MAX_API_MESSAGE_BYTES as u64 + 1).read_until(b'\n', &mut line).await?;
    if read == 0 {
        return Ok(Err(false));
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Ok(line));
    }
    if line.len() <= MAX_API_MESSAGE_BYTES {
        return Ok(Ok(line)); // the last line, without a newline
    }
    // Over the limit: skip to the end of the line.
    loop {
        let mut rest = Vec::new();
        let read = (&mut *reader).take(64 * 1024).read_until(b'\n', &mut rest).await?;
        if read == 0 || rest.last() == Some(&b'\n') {
            return Ok(Err(true));
        }
    }
}

pub async fn run(node: &str) -> anyhow::Result<()> {
    let socket = crate::client::open_websocket(node, None)
        .await
        .map_err(|error| anyhow::anyhow!("cannot connect to {node}: {error}"))?;
    let (mut sink, mut source) = socket.split();
    let (to_stdout, mut stdout_queue) = tokio::sync::mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = stdout_queue.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.write_all(b"\n").await.is_err() {
                break;
            }
            let _ = stdout.flush().await;
        }
    });
    let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
    let from_node = {
        let to_stdout = to_stdout.clone();
        tokio::spawn(async move {
            while let Some(message) = source.next().await {
                match message {
                    // Lines are the framing: a message holds no raw newline (JSON escapes them).
                    Ok(Message::Text(text)) => {
                        if to_stdout.send(text.replace('\n', " ")).await.is_err() {
                            break;
                        }
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = closed_tx.send(());
        })
    };
    let mut stdin = BufReader::new(tokio::io::stdin());
    let outcome: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                line = read_line(&mut stdin) => match line? {
                    Ok(line) if line.iter().all(u8::is_ascii_whitespace) => {}
                    Ok(line) => {
                        let text = String::from_utf8(line).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned());
                        sink.send(Message::text(text)).await?;
                    }
                    Err(true) => {
                        let refusal = json!({ "jsonrpc": "2.0", "id": null, "error": { "code": -32600,
                            "message": format!("a message longer than {MAX_API_MESSAGE_BYTES} bytes was skipped") } });
                        let _ = to_stdout.send(refusal.to_string()).await;
                    }
                    Err(false) => return Ok(()),
                },
                _ = &mut closed => anyhow::bail!("the node closed the connection"),
            }
        }
    }
    .await;
    let _ = sink.close().await;
    drop(to_stdout);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), from_node).await;
    let _ = writer.await;
    outcome
}
