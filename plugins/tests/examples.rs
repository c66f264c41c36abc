//! The example plugins in `plugins/examples`, built here from source (C with
//! Debian's clang and lld, WAT with the `wat` crate), signed and run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::json;
use zeromesh_plugins::{
    generate_signing_key, Capability, CapabilitySet, HostLimits, LoadedPlugin, Manifest, Package, PluginContext,
    PluginHost, PublisherKey,
};
use zeromesh_protocol::MemoryPath;

/// `examples/` of the checkout under test (cargo and nextest say where it
/// is when they run a test; the binary may come from another clone).
fn examples() -> PathBuf {
    let package =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    package.join("examples")
}

fn load(host: &PluginHost, wasm: Vec<u8>, manifest_file: &str, granted: &[Capability]) -> LoadedPlugin {
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(examples().join(manifest_file)).unwrap()).unwrap();
    let key = generate_signing_key().unwrap();
    let verified = Package::sign(wasm, manifest, &key).unwrap().verify(&[PublisherKey::of(&key)], 0).unwrap();
    host.load(verified, &granted.iter().copied().collect::<CapabilitySet>()).unwrap()
}

#[derive(Clone, Default)]
struct Agent {
    name: String,
    memories: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl PluginContext for Agent {
    fn agent(&self) -> &str {
        &self.name
    }
    fn now_ms(&self) -> u64 {
        0
    }
    fn log(&mut self, _line: &str) {}
    fn memory_read(&mut self, path: &MemoryPath) -> Result<Option<Vec<u8>>, String> {
        Ok(self.memories.lock().unwrap().get(path.as_str()).cloned())
    }
    fn memory_write(&mut self, path: &MemoryPath, value: Vec<u8>) -> Result<(), String> {
        self.memories.lock().unwrap().insert(path.as_str().to_owned(), value);
        Ok(())
    }
}

#[test]
fn the_c_text_statistics_plugin_counts_bytes_words_and_lines() {
    let out = tempfile::tempdir().unwrap();
    let wasm_path = out.path().join("text_stats.wasm");
    let status = Command::new("clang")
        .args(["--target=wasm32", "-O2", "-nostdlib", "-Wl,--no-entry", "-o"])
        .arg(&wasm_path)
        .arg(examples().join("text_stats.c"))
        .status()
        .expect("clang is needed to build the C example plugin; scripts/setup.sh installs it");
    assert!(status.success(), "clang failed to build text_stats.c");

    let host = PluginHost::new(HostLimits::default()).unwrap();
    let plugin = load(&host, std::fs::read(&wasm_path).unwrap(), "text_stats.json", &[]);
    let agent = Box::new(Agent { name: "agent-1".into(), ..Agent::default() });
    let output =
        host.call(&plugin, "text_stats", &json!({"text": "two words\nand \"three\" more"}), agent.clone()).unwrap();
    assert_eq!(output.result, json!({"bytes": 26, "words": 5, "lines": 2}));
    let output = host.call(&plugin, "text_stats", &json!({"other": 1}), agent).unwrap();
    assert!(output.is_error, "missing text is a tool error: {:?}", output.result);
}

#[test]
fn the_wat_notes_plugin_reads_and_writes_only_the_calling_agents_memory() {
    let wasm = wat::parse_file(examples().join("notes.wat")).unwrap();
    let host = PluginHost::new(HostLimits::default()).unwrap();
    let plugin = load(&host, wasm, "notes.json", &[Capability::MemoryRead, Capability::MemoryWrite]);
    let memories = Arc::new(Mutex::new(BTreeMap::new()));
    let agent = |name: &str| Box::new(Agent { name: name.into(), memories: memories.clone() });

    let first = host.call(&plugin, "swap_note", &json!({"note": "first"}), agent("agent-1")).unwrap();
    assert_eq!(first.result, json!(null));
    let second = host.call(&plugin, "swap_note", &json!({"note": "second"}), agent("agent-1")).unwrap();
    assert_eq!(second.result, json!({"note": "first"}));
    let other = host.call(&plugin, "swap_note", &json!({"note": "mine"}), agent("agent-2")).unwrap();
    assert_eq!(other.result, json!(null), "agent-2 does not see agent-1's note");
    let stored = memories.lock().unwrap().clone();
    assert_eq!(stored.keys().cloned().collect::<Vec<_>>(), vec!["agent-1/notes/last", "agent-2/notes/last"]);
}
