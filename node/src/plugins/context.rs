//! What a running plugin reaches outside its sandbox: the calling agent's
//! memories (linearizable reads; writes through Raft), the clock and the log.
//! Host calls are synchronous; they wait on the node's runtime from the
//! plugin's (blocking) thread.

use std::sync::Arc;

use zeromesh_consensus::{Consistency, ReadQuery, ReadReply};
use zeromesh_plugins::PluginContext;
use zeromesh_protocol::{MemoryBatch, MemoryCommand, MemoryPath, MemoryValue};

use crate::cluster::Cluster;

pub struct NodeContext {
    cluster: Arc<Cluster>,
    runtime: Option<tokio::runtime::Handle>,
    agent: String,
    plugin: String,
}

impl NodeContext {
    pub fn new(cluster: Arc<Cluster>, agent: &str, plugin: &str, needs_memory: bool) -> NodeContext {
        let runtime = needs_memory.then(tokio::runtime::Handle::current);
        NodeContext { cluster, runtime, agent: agent.to_owned(), plugin: plugin.to_owned() }
    }

    fn runtime(&self) -> Result<&tokio::runtime::Handle, String> {
        self.runtime.as_ref().ok_or_else(|| "this plugin was not granted memory access".to_owned())
    }
}

impl PluginContext for NodeContext {
    fn agent(&self) -> &str {
        &self.agent
    }

    fn now_ms(&self) -> u64 {
        zeromesh_consensus::wall_clock_ms()
    }

    fn log(&mut self, line: &str) {
        tracing::info!(plugin = %self.plugin, agent = %self.agent, "{line}");
    }

    fn memory_read(&mut self, path: &MemoryPath) -> Result<Option<Vec<u8>>, String> {
        // The host builds `path` under this context's agent; check anyway.
        if path.agent() != self.agent {
            return Err(format!("{path} belongs to another agent"));
        }
        let query = ReadQuery::Get { path: path.clone(), version: None };
        match self.runtime()?.block_on(self.cluster.read(Consistency::Linearizable, query)) {
            Ok(ReadReply::Record(record)) => Ok(record.map(|record| record.value)),
            Ok(_) => Err("unexpected read reply".into()),
            Err(error) => Err(error.to_string()),
        }
    }

    fn memory_write(&mut self, path: &MemoryPath, value: Vec<u8>) -> Result<(), String> {
        if path.agent() != self.agent {
            return Err(format!("{path} belongs to another agent"));
        }
        let value = MemoryValue { value, content_type: "application/octet-stream".into(), tags: Vec::new() };
        let batch = MemoryBatch { commands: vec![MemoryCommand::Put { path: path.clone(), value }] };
        self.runtime()?.block_on(self.cluster.write(batch)).map(drop).map_err(|error| error.to_string())
    }
}
