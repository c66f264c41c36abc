//! The peer API's message decoder on arbitrary bytes: rmcp's JSON-RPC
//! message types, which every transport decodes a client's messages into.
//! It never panics, and a decoded message encodes again to JSON that decodes
//! to a message.
//!
//! Run: `cargo +nightly fuzz run request_decoder -- -max_total_time=60`
//! (from the repository root; `cargo install cargo-fuzz` once).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rmcp::model::ClientJsonRpcMessage;

fuzz_target!(|bytes: &[u8]| {
    // The transports deliver text: WebSocket text frames and HTTP bodies are
    // refused unless UTF-8 before they reach the decoder.
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(message) = serde_json::from_str::<ClientJsonRpcMessage>(text) {
        let encoded = serde_json::to_string(&message).expect("a decoded message encodes");
        serde_json::from_str::<ClientJsonRpcMessage>(&encoded).expect("an encoded message decodes");
    }
});
