//! Reading a client's `tools/call` message on the peer API: the node's
//! decoder against rmcp's reading of any message, in the same run.
//!
//! Run: `scripts/bench.sh api_decode`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rmcp::model::ClientJsonRpcMessage;
use serde_json::json;

fn decode(c: &mut Criterion) {
    // What the mesh benchmark's clients send: a 256-byte value.
    let call = json!({
        "jsonrpc": "2.0",
        "id": 4711,
        "method": "tools/call",
        "params": { "name": "memory_put", "arguments": { "path": "agent-b/c12/345", "value": "v".repeat(256) } },
    })
    .to_string();
    let mut group = c.benchmark_group("api_decode_tools_call");
    group.throughput(Throughput::Elements(1));
    group.bench_function("rmcp", |b| {
        b.iter(|| serde_json::from_str::<ClientJsonRpcMessage>(std::hint::black_box(&call)).unwrap())
    });
    group.bench_function("zeromesh", |b| {
        b.iter(|| zeromesh::api::decode_websocket_message(std::hint::black_box(&call)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
