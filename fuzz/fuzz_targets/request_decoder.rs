//! The peer API's request decoder on arbitrary bytes: it never panics, a
//! parsed request has a JSON object for params, and every answer it leads
//! to is itself valid JSON-RPC.
//!
//! Run: `cargo +nightly fuzz run request_decoder -- -max_total_time=60`
//! (from the repository root; `cargo install cargo-fuzz` once).

#![no_main]

use libfuzzer_sys::fuzz_target;
use zeromesh_protocol::jsonrpc;

fuzz_target!(|bytes: &[u8]| {
    // The transports deliver text: WebSocket text frames and HTTP bodies are
    // refused unless UTF-8 before they reach the decoder.
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    match jsonrpc::parse(text) {
        Ok(incoming) => {
            assert!(incoming.params.is_object());
            let id = incoming.id.unwrap_or(serde_json::Value::Null);
            let answer = jsonrpc::result(id, serde_json::json!({}));
            assert!(serde_json::from_str::<serde_json::Value>(&answer).is_ok());
        }
        Err((id, error)) => {
            let answer = jsonrpc::error(id, &error);
            let parsed: serde_json::Value = serde_json::from_str(&answer).expect("an error answer is JSON");
            assert_eq!(parsed["error"]["code"], error.code);
        }
    }
});
