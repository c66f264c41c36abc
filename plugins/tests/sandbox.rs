//! The sandbox: limits stop runaway plugins with a named cause, the node and
//! the next call are unharmed, and only granted host functions exist.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use zeromesh_plugins::{
    generate_signing_key, CallError, Capability, CapabilitySet, HostLimits, LoadError, Manifest, Package,
    PluginContext, PluginHost, PluginLimits, PublisherKey, ToolSpec,
};
use zeromesh_protocol::MemoryPath;

/// The guest side of the ABI shared by the test modules: a bump allocator.
const ALLOCATOR: &str = r#"
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 4096))
  (func (export "zm_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (local.get $ptr))
"#;

/// Returns `(ptr << 32) | len` for the given pointer and length.
const PACK: &str = r#"
  (func $pack (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
"#;

fn module(imports: &str, body: &str) -> Vec<u8> {
    let text = format!(
        "(module {imports} {ALLOCATOR} {PACK}
           (func (export \"zm_call\") (param $tool i32) (param $tool_len i32) (param $args i32) (param $args_len i32) (result i64)
             {body}))"
    );
    wat::parse_str(&text).expect("test modules are valid WAT")
}

const ECHO: &str = "(call $pack (local.get $args) (local.get $args_len))";

fn manifest(capabilities: &[Capability], limits: PluginLimits) -> Manifest {
    Manifest {
        name: "test-plugin".into(),
        version: "0.1.0".into(),
        description: "a test plugin".into(),
        tools: ["run", "read_own", "read_other"]
            .map(|name| ToolSpec {
                name: name.into(),
                description: name.into(),
                input_schema: json!({"type": "object"}),
            })
            .into(),
        capabilities: capabilities.iter().copied().collect(),
        limits,
        module_sha256: String::new(),
        expires_at_ms: None,
    }
}

const LIMITS: PluginLimits = PluginLimits { fuel_per_call: 10_000_000, memory_bytes: 4 << 20, wall_clock_ms: 2_000 };

#[derive(Default, Clone)]
struct TestContext {
    agent: String,
    memories: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl PluginContext for TestContext {
    fn agent(&self) -> &str {
        &self.agent
    }
    fn now_ms(&self) -> u64 {
        42
    }
    fn log(&mut self, line: &str) {
        self.logs.lock().unwrap().push(line.to_owned());
    }
    fn memory_read(&mut self, path: &MemoryPath) -> Result<Option<Vec<u8>>, String> {
        Ok(self.memories.lock().unwrap().get(path.as_str()).cloned())
    }
    fn memory_write(&mut self, path: &MemoryPath, value: Vec<u8>) -> Result<(), String> {
        self.memories.lock().unwrap().insert(path.as_str().to_owned(), value);
        Ok(())
    }
}

fn context(agent: &str) -> Box<TestContext> {
    Box::new(TestContext { agent: agent.into(), ..TestContext::default() })
}

struct Setup {
    host: PluginHost,
}

impl Setup {
    fn new() -> Self {
        Setup { host: PluginHost::new(HostLimits::default()).expect("a plugin host") }
    }

    fn load(
        &self,
        wasm: Vec<u8>,
        manifest: Manifest,
        granted: &[Capability],
    ) -> Result<zeromesh_plugins::LoadedPlugin, LoadError> {
        let key = generate_signing_key().unwrap();
        let verified = Package::sign(wasm, manifest, &key).unwrap().verify(&[PublisherKey::of(&key)], 0).unwrap();
        let granted: CapabilitySet = granted.iter().copied().collect();
        self.host.load(verified, &granted)
    }
}

#[test]
fn a_plugin_gets_its_arguments_and_returns_json() {
    let setup = Setup::new();
    let plugin = setup.load(module("", ECHO), manifest(&[], LIMITS), &[]).unwrap();
    let output = setup.host.call(&plugin, "run", &json!({"text": "hello"}), context("agent-a")).unwrap();
    assert_eq!(output.result, json!({"text": "hello"}));
    assert!(!output.is_error);
    assert!(output.fuel_used > 0);
    let unknown = setup.host.call(&plugin, "nope", &json!({}), context("agent-a"));
    assert!(matches!(unknown, Err(CallError::UnknownTool { .. })));
}

#[test]
fn a_plugin_that_loops_forever_runs_out_of_fuel_and_the_next_call_works() {
    let setup = Setup::new();
    let looping =
        setup.load(module("", "(loop $forever (br $forever)) (i64.const 0)"), manifest(&[], LIMITS), &[]).unwrap();
    let error = setup.host.call(&looping, "run", &json!({}), context("agent-a")).unwrap_err();
    assert_eq!(error, CallError::OutOfFuel { fuel: LIMITS.fuel_per_call });
    let echo = setup.load(module("", ECHO), manifest(&[], LIMITS), &[]).unwrap();
    assert!(setup.host.call(&echo, "run", &json!({}), context("agent-a")).is_ok());
}

#[test]
fn a_plugin_with_ample_fuel_is_stopped_at_its_wall_clock_deadline() {
    let setup = Setup::new();
    let limits = PluginLimits { fuel_per_call: 1_000_000_000, memory_bytes: 1 << 20, wall_clock_ms: 20 };
    let looping =
        setup.load(module("", "(loop $forever (br $forever)) (i64.const 0)"), manifest(&[], limits), &[]).unwrap();
    let error = setup.host.call(&looping, "run", &json!({}), context("agent-a")).unwrap_err();
    assert_eq!(error, CallError::Deadline { deadline_ms: 20 });
}

#[test]
fn the_deadline_clock_ticks_only_while_a_call_runs() {
    let setup = Setup::new();
    let idle = std::time::Duration::from_millis(60);
    std::thread::sleep(idle);
    assert_eq!(setup.host.epoch_ticks(), 0, "no call has run");
    let limits = PluginLimits { fuel_per_call: 1_000_000_000, memory_bytes: 1 << 20, wall_clock_ms: 20 };
    let looping =
        setup.load(module("", "(loop $forever (br $forever)) (i64.const 0)"), manifest(&[], limits), &[]).unwrap();
    let error = setup.host.call(&looping, "run", &json!({}), context("agent-a")).unwrap_err();
    assert_eq!(error, CallError::Deadline { deadline_ms: 20 });
    let after_call = setup.host.epoch_ticks();
    assert!(after_call >= 1, "the call was stopped by ticks");
    std::thread::sleep(idle);
    // A tick already under way when the call ended may still land.
    assert!(setup.host.epoch_ticks() <= after_call + 1, "idle again");
}

#[test]
fn a_plugin_that_grows_memory_without_bound_hits_its_memory_limit() {
    let setup = Setup::new();
    let grow = "(loop $more (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) (i64.const 0)";
    let plugin = setup.load(module("", grow), manifest(&[], LIMITS), &[]).unwrap();
    let error = setup.host.call(&plugin, "run", &json!({}), context("agent-a")).unwrap_err();
    assert_eq!(error, CallError::MemoryLimit { limit_bytes: LIMITS.memory_bytes });
    let echo = setup.load(module("", ECHO), manifest(&[], LIMITS), &[]).unwrap();
    assert!(setup.host.call(&echo, "run", &json!({}), context("agent-a")).is_ok());
}

#[test]
fn a_plugin_that_recurses_forever_overflows_its_stack() {
    let setup = Setup::new();
    let recursive = wat::parse_str(format!(
        "(module {ALLOCATOR} {PACK}
           (func $down (call $down))
           (func (export \"zm_call\") (param i32 i32 i32 i32) (result i64) (call $down) (i64.const 0)))"
    ))
    .unwrap();
    let plugin = setup.load(recursive, manifest(&[], LIMITS), &[]).unwrap();
    let error = setup.host.call(&plugin, "run", &json!({}), context("agent-a")).unwrap_err();
    assert_eq!(error, CallError::StackOverflow);
}

#[test]
fn an_import_of_an_undeclared_or_ungranted_capability_is_refused_at_load() {
    let setup = Setup::new();
    let clock = r#"(import "zeromesh" "clock_ms" (func $clock (result i64)))"#;
    let undeclared = setup.load(module(clock, ECHO), manifest(&[], LIMITS), &[Capability::Clock]);
    assert!(
        matches!(&undeclared, Err(LoadError::ImportRefused { reason, .. }) if reason.contains("does not declare")),
        "{:?}",
        undeclared.err()
    );
    let ungranted = setup.load(module(clock, ECHO), manifest(&[Capability::Clock], LIMITS), &[]);
    assert!(matches!(&ungranted, Err(LoadError::ImportRefused { reason, .. }) if reason.contains("not granted")));
    let foreign = r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#;
    let refused = setup.load(module(foreign, ECHO), manifest(&Capability::ALL, LIMITS), &Capability::ALL);
    assert!(matches!(refused, Err(LoadError::ImportRefused { .. })));
    assert!(setup.load(module(clock, ECHO), manifest(&[Capability::Clock], LIMITS), &[Capability::Clock]).is_ok());
}

#[test]
fn a_plugin_reads_only_its_calling_agents_memories() {
    let setup = Setup::new();
    let imports = r#"(import "zeromesh" "memory_read" (func $read (param i32 i32 i32 i32) (result i32)))
                     (data (i32.const 100) "notes/x")
                     (data (i32.const 200) "../agent-b/notes/x")"#;
    // read_own (8 bytes) reads `notes/x`; read_other reads `../agent-b/notes/x`.
    let body = r#"
        (local $len i32)
        (if (i32.eq (local.get $tool_len) (i32.const 8))
          (then (local.set $len (call $read (i32.const 100) (i32.const 7) (i32.const 1024) (i32.const 512))))
          (else (local.set $len (call $read (i32.const 200) (i32.const 18) (i32.const 1024) (i32.const 512)))))
        (call $pack (i32.const 1024) (local.get $len))"#;
    let plugin = setup
        .load(module(imports, body), manifest(&[Capability::MemoryRead], LIMITS), &[Capability::MemoryRead])
        .unwrap();
    let ctx = context("agent-a");
    ctx.memories.lock().unwrap().insert("agent-a/notes/x".into(), b"\"mine\"".to_vec());
    ctx.memories.lock().unwrap().insert("agent-b/notes/x".into(), b"\"theirs\"".to_vec());
    let own = setup.host.call(&plugin, "read_own", &json!({}), ctx.clone()).unwrap();
    assert_eq!(own.result, json!("mine"));
    let other = setup.host.call(&plugin, "read_other", &json!({}), ctx).unwrap_err();
    assert!(matches!(&other, CallError::Trap(reason) if reason.contains("invalid memory path")), "{other:?}");
}

/// Logs by signalling `entered`, then blocks until `release` fires: holds its
/// instance for as long as the test wants.
struct BlockingLog {
    entered: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

impl PluginContext for BlockingLog {
    fn agent(&self) -> &str {
        "agent-a"
    }
    fn now_ms(&self) -> u64 {
        0
    }
    fn log(&mut self, _line: &str) {
        let _ = self.entered.send(());
        let _ = self.release.recv_timeout(std::time::Duration::from_secs(30));
    }
    fn memory_read(&mut self, _path: &MemoryPath) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    fn memory_write(&mut self, _path: &MemoryPath, _value: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn when_every_instance_slot_is_taken_a_call_is_refused_as_busy_and_later_succeeds() {
    let host = Arc::new(PluginHost::new(HostLimits { max_instances: 1, ..HostLimits::default() }).unwrap());
    let key = generate_signing_key().unwrap();
    let logging = r#"(import "zeromesh" "log" (func $log (param i32 i32)))"#;
    let body =
        "(call $log (local.get $args) (local.get $args_len)) (call $pack (local.get $args) (local.get $args_len))";
    let verified = Package::sign(module(logging, body), manifest(&[Capability::Log], LIMITS), &key)
        .unwrap()
        .verify(&[PublisherKey::of(&key)], 0)
        .unwrap();
    let plugin = Arc::new(host.load(verified, &[Capability::Log].into()).unwrap());

    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let holder = {
        let (host, plugin) = (host.clone(), plugin.clone());
        std::thread::spawn(move || {
            host.call(&plugin, "run", &json!({}), Box::new(BlockingLog { entered: entered_tx, release: release_rx }))
        })
    };
    entered_rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the first call is running");
    let (idle_tx, _) = std::sync::mpsc::channel();
    let (_never, idle_rx) = std::sync::mpsc::channel();
    let refused = host.call(&plugin, "run", &json!({}), Box::new(BlockingLog { entered: idle_tx, release: idle_rx }));
    assert_eq!(refused, Err(CallError::Busy));
    release_tx.send(()).unwrap();
    assert!(holder.join().unwrap().is_ok(), "the first call finishes normally");
    let (after_tx, _) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    done_tx.send(()).unwrap();
    assert!(host
        .call(&plugin, "run", &json!({}), Box::new(BlockingLog { entered: after_tx, release: done_rx }))
        .is_ok());
}
