//! The wasmtime sandbox. Every call gets a fresh instance (from an
//! `InstancePre` and the pooling allocator), fuel, a memory cap covering all
//! of the instance's memories, and an epoch deadline; the module may import
//! only the host functions of capabilities it declared and was granted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use thiserror::Error;
use wasmtime::{
    Caller, Config, Engine, Extern, InstanceAllocationStrategy, InstancePre, Linker, Memory, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, TypedFunc,
};
use zeromesh_protocol::limits::*;
use zeromesh_protocol::MemoryPath;

use crate::package::VerifiedPackage;
use zeromesh_protocol::plugin::{Capability, CapabilitySet};

/// The module every host function is imported from.
pub const HOST_MODULE: &str = "zeromesh";
/// How often the epoch advances; wall-clock deadlines are counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Native stack a plugin may use before it traps with a stack overflow.
const MAX_WASM_STACK_BYTES: usize = 512 * 1024;

/// The host functions, the capability each needs, and its signature.
const HOST_FUNCTIONS: [(&str, Capability); 5] = [
    ("log", Capability::Log),
    ("clock_ms", Capability::Clock),
    ("random_fill", Capability::Random),
    ("memory_read", Capability::MemoryRead),
    ("memory_write", Capability::MemoryWrite),
];

/// What a call may reach outside the sandbox: supplied by the node per call.
pub trait PluginContext: Send {
    /// The agent on whose behalf the tool runs; memory paths are under it.
    fn agent(&self) -> &str;
    fn now_ms(&self) -> u64;
    fn log(&mut self, line: &str);
    fn memory_read(&mut self, path: &MemoryPath) -> Result<Option<Vec<u8>>, String>;
    fn memory_write(&mut self, path: &MemoryPath, value: Vec<u8>) -> Result<(), String>;
}

/// The node's ceilings for every plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    pub max_fuel_per_call: u64,
    pub max_memory_bytes: u64,
    pub max_wall_clock_ms: u64,
    pub max_instances: u32,
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits {
            max_fuel_per_call: MAX_PLUGIN_FUEL_PER_CALL,
            max_memory_bytes: 64 * 1024 * 1024,
            max_wall_clock_ms: 5_000,
            max_instances: MAX_PLUGIN_INSTANCES,
        }
    }
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("the module does not compile: {0}")]
    Compile(String),
    #[error("the module imports {module}::{name}, which {reason}")]
    ImportRefused { module: String, name: String, reason: String },
    #[error("the module lacks the export {name}: {reason} (see plugins/ABI.md)")]
    MissingExport { name: &'static str, reason: String },
    #[error("the plugin engine could not start: {0}")]
    Engine(String),
}

/// Why a call produced no result. Each names its cause; the node and the
/// next call are unaffected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CallError {
    #[error("plugin {plugin} has no tool {tool}")]
    UnknownTool { plugin: String, tool: String },
    #[error("arguments of {actual} bytes exceed the {limit}-byte limit")]
    ArgumentsTooLarge { actual: usize, limit: usize },
    #[error("the plugin ran out of fuel ({fuel} units): it computed too long")]
    OutOfFuel { fuel: u64 },
    #[error("the plugin passed its wall-clock deadline of {deadline_ms} ms")]
    Deadline { deadline_ms: u64 },
    #[error("the plugin tried to use more than its {limit_bytes}-byte memory limit")]
    MemoryLimit { limit_bytes: u64 },
    #[error("the plugin overflowed its stack")]
    StackOverflow,
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin returned an invalid result: {0}")]
    BadResult(String),
    #[error("no plugin instance slot is free; retry shortly")]
    Busy,
}

/// Limits on one call tighter than the plugin's own (an agreement's
/// remaining allowance); `None` leaves the plugin's limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCaps {
    pub fuel: Option<u64>,
    pub wall_clock_ms: Option<u64>,
}

/// A successful call's JSON result. `is_error` is set when the plugin
/// reported a tool-level failure (`{"error": ...}`).
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutput {
    pub result: serde_json::Value,
    pub is_error: bool,
    pub fuel_used: u64,
}

struct CallState {
    context: Box<dyn PluginContext>,
    capabilities: CapabilitySet,
    limiter: MemoryCap,
}

/// Caps the sum of all of an instance's memories and records a refusal, so
/// the trap that follows can be named.
struct MemoryCap {
    limit_bytes: usize,
    used_bytes: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.used_bytes - current.min(self.used_bytes) + desired;
        if total > self.limit_bytes {
            self.refused = true;
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        self.used_bytes = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 10_000)
    }
}

/// A plugin ready to be called: verified, compiled, linked.
pub struct LoadedPlugin {
    package: Arc<VerifiedPackage>,
    granted: CapabilitySet,
    pre: InstancePre<CallState>,
}

impl LoadedPlugin {
    pub fn package(&self) -> &VerifiedPackage {
        &self.package
    }
}

/// The plugin engine of one node.
pub struct PluginHost {
    engine: Engine,
    limits: HostLimits,
    compiled: Mutex<HashMap<[u8; 32], Module>>,
    ticker: Arc<Ticker>,
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        lock(&self.ticker.state).stopped = true;
        self.ticker.wake.notify_one();
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while a call runs,
/// and sleeps while none does: an idle node is not woken 200 times a
/// second. A call's deadline is counted in ticks from its start, so ticks
/// only matter while calls run.
#[derive(Default)]
struct Ticker {
    state: Mutex<TickerState>,
    wake: Condvar,
    /// Epochs advanced since the host started.
    ticks: AtomicU64,
}

#[derive(Default)]
struct TickerState {
    running: usize,
    stopped: bool,
}

/// A call that keeps the epoch advancing until it is dropped.
struct Ticking(Arc<Ticker>);

impl Drop for Ticking {
    fn drop(&mut self) {
        lock(&self.0.state).running -= 1;
    }
}

impl Ticker {
    fn start_call(self: &Arc<Self>) -> Ticking {
        let mut state = lock(&self.state);
        state.running += 1;
        if state.running == 1 {
            self.wake.notify_one();
        }
        Ticking(self.clone())
    }

    /// The ticker thread's loop, until the host is dropped.
    fn run(&self, engine: &Engine) {
        loop {
            {
                let mut state = lock(&self.state);
                while state.running == 0 && !state.stopped {
                    state = self.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                if state.stopped {
                    return;
                }
            }
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PluginHost {
    pub fn new(limits: HostLimits) -> Result<PluginHost, LoadError> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_core_instances(limits.max_instances)
            .total_memories(limits.max_instances)
            .total_tables(limits.max_instances)
            .max_memories_per_module(1)
            .max_memory_size(limits.max_memory_bytes as usize);
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK_BYTES)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        let ticker = Arc::new(Ticker::default());
        let (ticker_engine, ticking) = (engine.clone(), ticker.clone());
        std::thread::Builder::new()
            .name("zeromesh-plugin-epoch".into())
            .spawn(move || ticking.run(&ticker_engine))
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(PluginHost { engine, limits, compiled: Mutex::new(HashMap::new()), ticker })
    }

    /// How many times the deadline clock has ticked: only while calls run.
    pub fn epoch_ticks(&self) -> u64 {
        self.ticker.ticks.load(Ordering::Relaxed)
    }

    fn compile(&self, package: &VerifiedPackage) -> Result<Module, LoadError> {
        let mut compiled = lock(&self.compiled);
        if let Some(module) = compiled.get(&package.module_sha256) {
            return Ok(module.clone());
        }
        let module = Module::new(&self.engine, &package.module).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        if compiled.len() >= MAX_COMPILED_PLUGINS_CACHED {
            // Evict an arbitrary entry: loaded plugins keep their own handle.
            if let Some(key) = compiled.keys().next().copied() {
                compiled.remove(&key);
            }
        }
        compiled.insert(package.module_sha256, module.clone());
        Ok(module)
    }

    /// Compiles (or reuses) the module and links exactly the host functions
    /// of `granted ∩ declared` capabilities. Any other import is refused.
    pub fn load(&self, package: VerifiedPackage, granted: &CapabilitySet) -> Result<LoadedPlugin, LoadError> {
        let module = self.compile(&package)?;
        let usable: CapabilitySet = package.manifest.capabilities.intersection(granted).copied().collect();
        for import in module.imports() {
            let refuse = |reason: String| LoadError::ImportRefused {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
                reason,
            };
            if import.module() != HOST_MODULE {
                return Err(refuse(format!("is not a zeromesh host function (only `{HOST_MODULE}` imports exist)")));
            }
            let Some((_, capability)) = HOST_FUNCTIONS.iter().find(|(name, _)| *name == import.name()) else {
                return Err(refuse("is not a zeromesh host function".into()));
            };
            if !package.manifest.capabilities.contains(capability) {
                return Err(refuse(format!("needs capability `{capability}`, which the manifest does not declare")));
            }
            if !usable.contains(capability) {
                return Err(refuse(format!("needs capability `{capability}`, which was not granted to this plugin")));
            }
        }
        check_exports(&module)?;
        let mut linker: Linker<CallState> = Linker::new(&self.engine);
        link_host_functions(&mut linker, &usable).map_err(|e| LoadError::Engine(e.to_string()))?;
        let pre = linker.instantiate_pre(&module).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        Ok(LoadedPlugin { package: Arc::new(package), granted: usable, pre })
    }

    /// The most fuel and wall-clock time one call of `plugin` may take here.
    pub fn ceiling(&self, plugin: &LoadedPlugin) -> CallCaps {
        let limits = &plugin.package.manifest.limits;
        CallCaps {
            fuel: Some(limits.fuel_per_call.min(self.limits.max_fuel_per_call)),
            wall_clock_ms: Some(limits.wall_clock_ms.min(self.limits.max_wall_clock_ms)),
        }
    }

    /// Calls `tool` with JSON `arguments` in a fresh instance.
    pub fn call(
        &self,
        plugin: &LoadedPlugin,
        tool: &str,
        arguments: &serde_json::Value,
        context: Box<dyn PluginContext>,
    ) -> Result<CallOutput, CallError> {
        self.call_capped(plugin, tool, arguments, context, CallCaps::default()).0
    }

    /// Calls `tool` like [`PluginHost::call`], under `caps` too (tighter
    /// than the plugin's own limits, never looser), and tells the fuel
    /// burnt whether or not the call succeeded.
    pub fn call_capped(
        &self,
        plugin: &LoadedPlugin,
        tool: &str,
        arguments: &serde_json::Value,
        context: Box<dyn PluginContext>,
        caps: CallCaps,
    ) -> (Result<CallOutput, CallError>, u64) {
        let mut fuel_used = 0;
        let outcome = self.call_inner(plugin, tool, arguments, context, caps, &mut fuel_used);
        (outcome, fuel_used)
    }

    fn call_inner(
        &self,
        plugin: &LoadedPlugin,
        tool: &str,
        arguments: &serde_json::Value,
        context: Box<dyn PluginContext>,
        caps: CallCaps,
        fuel_used: &mut u64,
    ) -> Result<CallOutput, CallError> {
        let manifest = &plugin.package.manifest;
        if manifest.tool(tool).is_none() {
            return Err(CallError::UnknownTool { plugin: manifest.name.clone(), tool: tool.to_owned() });
        }
        let arguments = serde_json::to_vec(arguments).map_err(|e| CallError::BadResult(e.to_string()))?;
        if arguments.len() > MAX_PLUGIN_ARGS_BYTES {
            return Err(CallError::ArgumentsTooLarge { actual: arguments.len(), limit: MAX_PLUGIN_ARGS_BYTES });
        }
        let fuel = manifest.limits.fuel_per_call.min(self.limits.max_fuel_per_call).min(caps.fuel.unwrap_or(u64::MAX));
        let memory_limit = manifest.limits.memory_bytes.min(self.limits.max_memory_bytes);
        let deadline_ms = manifest
            .limits
            .wall_clock_ms
            .min(self.limits.max_wall_clock_ms)
            .min(caps.wall_clock_ms.unwrap_or(u64::MAX));
        let state = CallState {
            context,
            capabilities: plugin.granted.clone(),
            limiter: MemoryCap { limit_bytes: memory_limit as usize, used_bytes: 0, refused: false },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_fuel(fuel).map_err(|e| CallError::Trap(e.to_string()))?;
        let _ticking = self.ticker.start_call();
        store.set_epoch_deadline(deadline_ms.div_ceil(EPOCH_TICK.as_millis() as u64).max(1));

        let outcome = run(&mut store, &plugin.pre, tool.as_bytes(), &arguments);
        *fuel_used = fuel - store.get_fuel().unwrap_or(0);
        match outcome {
            Ok(bytes) => {
                let result: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| CallError::BadResult(format!("not JSON: {e}")))?;
                let is_error = result.as_object().is_some_and(|object| object.contains_key("error"));
                Ok(CallOutput { result, is_error, fuel_used: *fuel_used })
            }
            Err(error) => Err(classify(error, &store, fuel, deadline_ms, memory_limit)),
        }
    }
}

fn classify(
    error: wasmtime::Error,
    store: &Store<CallState>,
    fuel: u64,
    deadline_ms: u64,
    memory_limit: u64,
) -> CallError {
    if store.data().limiter.refused {
        return CallError::MemoryLimit { limit_bytes: memory_limit };
    }
    if let Some(call_error) = error.downcast_ref::<CallError>() {
        return match call_error {
            CallError::BadResult(reason) => CallError::BadResult(reason.clone()),
            other => CallError::Trap(other.to_string()),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::OutOfFuel { fuel },
        Some(Trap::Interrupt) => CallError::Deadline { deadline_ms },
        Some(Trap::StackOverflow) => CallError::StackOverflow,
        Some(Trap::AllocationTooLarge) => CallError::MemoryLimit { limit_bytes: memory_limit },
        Some(trap) => CallError::Trap(trap.to_string()),
        None if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() => CallError::Busy,
        None => CallError::Trap(format!("{error:#}")),
    }
}

fn run(
    store: &mut Store<CallState>,
    pre: &InstancePre<CallState>,
    tool: &[u8],
    arguments: &[u8],
) -> wasmtime::Result<Vec<u8>> {
    let instance = pre.instantiate(&mut *store)?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::Error::msg("the module exports no memory"))?;
    let alloc: TypedFunc<i32, i32> = instance.get_typed_func(&mut *store, "zm_alloc")?;
    let call: TypedFunc<(i32, i32, i32, i32), i64> = instance.get_typed_func(&mut *store, "zm_call")?;
    let tool_ptr = write_guest(store, &memory, &alloc, tool)?;
    let args_ptr = write_guest(store, &memory, &alloc, arguments)?;
    let packed = call.call(&mut *store, (tool_ptr, tool.len() as i32, args_ptr, arguments.len() as i32))?;
    let (result_ptr, result_len) = ((packed as u64 >> 32) as usize, (packed as u64 & 0xFFFF_FFFF) as usize);
    if result_len > MAX_PLUGIN_RESULT_BYTES {
        return Err(wasmtime::Error::new(CallError::BadResult(format!(
            "a result of {result_len} bytes exceeds the {MAX_PLUGIN_RESULT_BYTES}-byte limit"
        ))));
    }
    let data = memory.data(&*store);
    let end = result_ptr.checked_add(result_len).filter(|end| *end <= data.len());
    let Some(end) = end else {
        return Err(wasmtime::Error::new(CallError::BadResult("the result lies outside the module's memory".into())));
    };
    Ok(data[result_ptr..end].to_vec())
}

fn write_guest(
    store: &mut Store<CallState>,
    memory: &Memory,
    alloc: &TypedFunc<i32, i32>,
    bytes: &[u8],
) -> wasmtime::Result<i32> {
    let ptr = alloc.call(&mut *store, bytes.len() as i32)?;
    memory.write(&mut *store, ptr as u32 as usize, bytes).map_err(|_| {
        wasmtime::Error::new(CallError::BadResult("zm_alloc returned memory outside the module".into()))
    })?;
    Ok(ptr)
}

fn check_exports(module: &Module) -> Result<(), LoadError> {
    let missing = |name, reason: &str| LoadError::MissingExport { name, reason: reason.to_owned() };
    let export = |name: &str| module.exports().find(|export| export.name() == name).map(|export| export.ty());
    match export("memory") {
        Some(wasmtime::ExternType::Memory(_)) => {}
        _ => return Err(missing("memory", "a linear memory named `memory`")),
    }
    for (name, params, results) in [("zm_alloc", 1, 1), ("zm_call", 4, 1)] {
        match export(name) {
            Some(wasmtime::ExternType::Func(func))
                if func.params().len() == params && func.results().len() == results => {}
            _ => return Err(missing(name, "a function of the documented signature")),
        }
    }
    Ok(())
}

/// Copies `len` bytes at `ptr` out of the caller's memory, refusing reads
/// outside it or over `limit`.
fn read_guest(caller: &mut Caller<'_, CallState>, ptr: i32, len: i32, limit: usize) -> wasmtime::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| wasmtime::Error::msg("negative length"))?;
    if len > limit {
        return Err(wasmtime::Error::msg(format!("{len} bytes exceed the {limit}-byte limit")));
    }
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(wasmtime::Error::msg("the module exports no memory"));
    };
    let mut bytes = vec![0u8; len];
    memory
        .read(&*caller, ptr as u32 as usize, &mut bytes)
        .map_err(|_| wasmtime::Error::msg("pointer outside memory"))?;
    Ok(bytes)
}

fn write_back(caller: &mut Caller<'_, CallState>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(wasmtime::Error::msg("the module exports no memory"));
    };
    memory.write(&mut *caller, ptr as u32 as usize, bytes).map_err(|_| wasmtime::Error::msg("pointer outside memory"))
}

/// The calling agent's memory path for a plugin-relative `path`.
fn agent_path(caller: &mut Caller<'_, CallState>, ptr: i32, len: i32) -> wasmtime::Result<MemoryPath> {
    let relative = read_guest(caller, ptr, len, MAX_PATH_BYTES)?;
    let relative = String::from_utf8(relative).map_err(|_| wasmtime::Error::msg("memory path is not UTF-8"))?;
    let full = format!("{}/{relative}", caller.data().context.agent());
    MemoryPath::parse(&full).map_err(|e| wasmtime::Error::msg(e.to_string()))
}

fn link_host_functions(linker: &mut Linker<CallState>, usable: &CapabilitySet) -> wasmtime::Result<()> {
    if usable.contains(&Capability::Log) {
        linker.func_wrap(HOST_MODULE, "log", |mut caller: Caller<'_, CallState>, ptr: i32, len: i32| {
            let bytes = read_guest(&mut caller, ptr, len, MAX_PLUGIN_LOG_LINE_BYTES)?;
            let line = String::from_utf8_lossy(&bytes).into_owned();
            caller.data_mut().context.log(&line);
            Ok(())
        })?;
    }
    if usable.contains(&Capability::Clock) {
        linker.func_wrap(HOST_MODULE, "clock_ms", |caller: Caller<'_, CallState>| {
            caller.data().context.now_ms() as i64
        })?;
    }
    if usable.contains(&Capability::Random) {
        linker.func_wrap(HOST_MODULE, "random_fill", |mut caller: Caller<'_, CallState>, ptr: i32, len: i32| {
            let len = usize::try_from(len).map_err(|_| wasmtime::Error::msg("negative length"))?;
            if len > MAX_PLUGIN_RANDOM_BYTES {
                return Err(wasmtime::Error::msg(format!("at most {MAX_PLUGIN_RANDOM_BYTES} random bytes per call")));
            }
            let mut bytes = vec![0u8; len];
            getrandom::fill(&mut bytes).map_err(|e| wasmtime::Error::msg(e.to_string()))?;
            write_back(&mut caller, ptr, &bytes)
        })?;
    }
    if usable.contains(&Capability::MemoryRead) {
        linker.func_wrap(
            HOST_MODULE,
            "memory_read",
            |mut caller: Caller<'_, CallState>,
             path_ptr: i32,
             path_len: i32,
             out_ptr: i32,
             out_cap: i32|
             -> wasmtime::Result<i32> {
                debug_assert!(caller.data().capabilities.contains(&Capability::MemoryRead));
                let path = agent_path(&mut caller, path_ptr, path_len)?;
                match caller.data_mut().context.memory_read(&path) {
                    Ok(None) => Ok(-1),
                    Ok(Some(value)) if value.len() > out_cap.max(0) as usize => Ok(-2),
                    Ok(Some(value)) => {
                        write_back(&mut caller, out_ptr, &value)?;
                        Ok(value.len() as i32)
                    }
                    Err(reason) => {
                        caller.data_mut().context.log(&format!("memory_read of {path} failed: {reason}"));
                        Ok(-3)
                    }
                }
            },
        )?;
    }
    if usable.contains(&Capability::MemoryWrite) {
        linker.func_wrap(
            HOST_MODULE,
            "memory_write",
            |mut caller: Caller<'_, CallState>,
             path_ptr: i32,
             path_len: i32,
             value_ptr: i32,
             value_len: i32|
             -> wasmtime::Result<i32> {
                let path = agent_path(&mut caller, path_ptr, path_len)?;
                let value = read_guest(&mut caller, value_ptr, value_len, MAX_VALUE_BYTES)?;
                match caller.data_mut().context.memory_write(&path, value) {
                    Ok(()) => Ok(0),
                    Err(reason) => {
                        caller.data_mut().context.log(&format!("memory_write of {path} failed: {reason}"));
                        Ok(-3)
                    }
                }
            },
        )?;
    }
    Ok(())
}
