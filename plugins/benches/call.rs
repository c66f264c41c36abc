//! Instantiate-and-call latency of a trivial plugin (fresh instance per
//! call from the pooling allocator, fuel and epoch deadline on), and calls/s
//! on one core.
//!
//! Run: `scripts/bench.sh plugin_call`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use zeromesh_plugins::{
    generate_signing_key, CapabilitySet, HostLimits, Manifest, Package, PluginContext, PluginHost, PluginLimits,
    PublisherKey, ToolSpec,
};
use zeromesh_protocol::MemoryPath;

const TRIVIAL: &str = r#"(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "zm_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (local.get $ptr))
  (func (export "zm_call") (param i32 i32 i32 i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get 2)) (i64.const 32)) (i64.extend_i32_u (local.get 3)))))"#;

struct NoContext;

impl PluginContext for NoContext {
    fn agent(&self) -> &str {
        "agent-bench"
    }
    fn now_ms(&self) -> u64 {
        0
    }
    fn log(&mut self, _line: &str) {}
    fn memory_read(&mut self, _path: &MemoryPath) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    fn memory_write(&mut self, _path: &MemoryPath, _value: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

fn plugin_call(c: &mut Criterion) {
    let host = PluginHost::new(HostLimits::default()).unwrap();
    let manifest = Manifest {
        name: "echo".into(),
        version: "1".into(),
        description: "echo".into(),
        tools: vec![ToolSpec {
            name: "echo".into(),
            description: "echo".into(),
            input_schema: json!({"type": "object"}),
        }],
        capabilities: CapabilitySet::new(),
        limits: PluginLimits { fuel_per_call: 1_000_000, memory_bytes: 1 << 20, wall_clock_ms: 1000 },
        module_sha256: String::new(),
        expires_at_ms: None,
    };
    let key = generate_signing_key().unwrap();
    let verified = Package::sign(wat::parse_str(TRIVIAL).unwrap(), manifest, &key)
        .unwrap()
        .verify(&[PublisherKey::of(&key)], 0)
        .unwrap();
    let plugin = host.load(verified, &CapabilitySet::new()).unwrap();
    let arguments = json!({"text": "hello"});

    let mut group = c.benchmark_group("plugin_call");
    group.throughput(Throughput::Elements(1));
    group.bench_function("instantiate_and_call_trivial", |b| {
        b.iter(|| host.call(&plugin, "echo", &arguments, Box::new(NoContext)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, plugin_call);
criterion_main!(benches);
