//! The memory tools: write, compare-and-set and delete an agent's memories
//! through Raft; read one, list a prefix, page through a memory's versions.

use std::sync::Arc;

use base64::Engine;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use zeromesh_consensus::{Consistency, ReadQuery, ReadReply};
use zeromesh_kernel::Access;
use zeromesh_protocol::limits::MAX_PAGE_ENTRIES;
use zeromesh_protocol::{
    CommandOutcome, MemoryBatch, MemoryCommand, MemoryPath, MemoryRecord, MemoryValue, PathPrefix,
};

use super::{invalid, Invocation, ToolDecl, ToolEnv, ToolError, ToolOutcome};

pub(super) fn tools() -> Vec<ToolDecl> {
    vec![
        ToolDecl::new("memory_put", "Write a new version of an agent memory.", Access::MemoryWrite, put),
        ToolDecl::new("memory_get", "Read an agent memory (the live version, or a kept one).", Access::MemoryRead, get),
        ToolDecl::new(
            "memory_list",
            "List live memories under a path prefix, in path order, a page at a time.",
            Access::MemoryRead,
            list,
        ),
        ToolDecl::new(
            "memory_history",
            "A memory's kept versions, newest first, a page at a time.",
            Access::MemoryRead,
            history,
        ),
        ToolDecl::new(
            "memory_delete",
            "Delete an agent memory (a tombstone version is written).",
            Access::MemoryWrite,
            delete,
        ),
        ToolDecl::new(
            "memory_cas",
            "Write a memory only if its live version is `expected_version`.",
            Access::MemoryWrite,
            cas,
        ),
    ]
}

/// Declares a write's arguments: the path and the value, plus `$extra` fields.
macro_rules! write_args {
    ($(#[$meta:meta])* $name:ident { $($extra:tt)* }) => {
        $(#[$meta])*
        #[derive(Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct $name {
            /// `{agent}/{name}...`, e.g. agent-7/notes/today
            #[schemars(with = "String")]
            path: MemoryPath,
            /// UTF-8 text to store.
            value: Option<String>,
            /// Bytes to store, base64; instead of `value`.
            value_base64: Option<String>,
            /// The value's media type; text/plain when absent.
            content_type: Option<String>,
            /// Labels kept with the value.
            #[serde(default)]
            tags: Vec<String>,
            $($extra)*
        }

        impl $name {
            fn memory_value(&self, tool: &str) -> Result<MemoryValue, ToolError> {
                memory_value(tool, &self.value, &self.value_base64, &self.content_type, &self.tags)
            }
        }
    };
}

write_args!(PutArgs {});
write_args!(CasArgs {
    /// The live version expected; 0: none.
    expected_version: u64,
});

fn memory_value(
    tool: &str,
    text: &Option<String>,
    base64: &Option<String>,
    content_type: &Option<String>,
    tags: &[String],
) -> Result<MemoryValue, ToolError> {
    let value = match (text, base64) {
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|error| invalid(tool, format!("value_base64: {error}")))?,
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => return Err(invalid(tool, "give `value` or `value_base64`, not both")),
    };
    Ok(MemoryValue {
        value,
        content_type: content_type.clone().unwrap_or_else(|| "text/plain".into()),
        tags: tags.to_vec(),
    })
}

/// How fresh a read must be.
#[derive(Deserialize, JsonSchema, Clone, Copy, Default)]
#[serde(rename_all = "lowercase")]
enum ConsistencyArg {
    /// Reflects every write acknowledged before the read began.
    #[default]
    Linearizable,
    /// This node's state as it is: faster, possibly behind.
    Stale,
}

impl From<ConsistencyArg> for Consistency {
    fn from(arg: ConsistencyArg) -> Consistency {
        match arg {
            ConsistencyArg::Linearizable => Consistency::Linearizable,
            ConsistencyArg::Stale => Consistency::Stale,
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    /// `{agent}/{name}...`
    #[schemars(with = "String")]
    path: MemoryPath,
    /// A kept version to read instead of the live one.
    #[schemars(range(min = 1))]
    version: Option<u64>,
    #[serde(default)]
    consistency: ConsistencyArg,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    /// Lists memories whose path starts with this; empty: all.
    #[serde(default)]
    #[schemars(with = "String")]
    prefix: PathPrefix,
    /// `next_cursor` of the previous page.
    after: Option<String>,
    /// Records per page.
    #[schemars(range(min = 1, max = MAX_PAGE_ENTRIES))]
    limit: Option<usize>,
    #[serde(default)]
    consistency: ConsistencyArg,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct HistoryArgs {
    /// `{agent}/{name}...`
    #[schemars(with = "String")]
    path: MemoryPath,
    /// `next_before` of the previous page.
    #[schemars(range(min = 1))]
    before: Option<u64>,
    /// Versions per page.
    #[schemars(range(min = 1, max = MAX_PAGE_ENTRIES))]
    limit: Option<usize>,
    #[serde(default)]
    consistency: ConsistencyArg,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PathArgs {
    /// `{agent}/{name}...`
    #[schemars(with = "String")]
    path: MemoryPath,
}

/// A memory record as the API shows it: text values as `value`, other
/// bytes as `value_base64`.
fn record_json(record: &MemoryRecord) -> Value {
    let mut shown = json!({
        "path": record.path.as_str(),
        "version": record.version,
        "written_at_ms": record.written_at_ms,
        "log_index": record.log_index,
        "deleted": record.deleted,
        "content_type": record.content_type,
        "tags": record.tags,
    });
    match std::str::from_utf8(&record.value) {
        Ok(text) => shown["value"] = json!(text),
        Err(_) => shown["value_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&record.value)),
    }
    shown
}

fn outcome_json(outcome: &CommandOutcome) -> Value {
    match outcome {
        CommandOutcome::Written { version } => json!({ "outcome": "written", "version": version }),
        CommandOutcome::Deleted { version } => json!({ "outcome": "deleted", "version": version }),
        CommandOutcome::NotFound => json!({ "outcome": "not_found" }),
        CommandOutcome::VersionMismatch { current_version } => {
            json!({ "outcome": "version_mismatch", "current_version": current_version })
        }
        CommandOutcome::OverQuota { agent, stored, quota } => json!({
            "outcome": "over_quota",
            "agent": agent,
            "stored_bytes": stored,
            "quota_bytes": quota,
        }),
    }
}

async fn write_one(env: &ToolEnv, command: MemoryCommand) -> ToolOutcome {
    let accepted = env.cluster.write(MemoryBatch { commands: vec![command] }).await?;
    let mut answer = accepted.outcomes.first().map(outcome_json).unwrap_or_else(|| json!({}));
    answer["log_index"] = json!(accepted.log_index);
    Ok(answer)
}

async fn read(env: &ToolEnv, consistency: ConsistencyArg, query: ReadQuery) -> Result<ReadReply, ToolError> {
    Ok(env.cluster.read(consistency.into(), query).await?)
}

fn records_json(records: &[MemoryRecord]) -> Vec<Value> {
    records.iter().map(record_json).collect()
}

async fn put(env: Arc<ToolEnv>, _: Invocation, args: PutArgs) -> ToolOutcome {
    let value = args.memory_value("memory_put")?;
    write_one(&env, MemoryCommand::Put { path: args.path, value }).await
}

async fn cas(env: Arc<ToolEnv>, _: Invocation, args: CasArgs) -> ToolOutcome {
    let value = args.memory_value("memory_cas")?;
    write_one(&env, MemoryCommand::CompareAndSet { path: args.path, expected_version: args.expected_version, value })
        .await
}

async fn delete(env: Arc<ToolEnv>, _: Invocation, args: PathArgs) -> ToolOutcome {
    write_one(&env, MemoryCommand::Delete { path: args.path }).await
}

async fn get(env: Arc<ToolEnv>, _: Invocation, args: GetArgs) -> ToolOutcome {
    let query = ReadQuery::Get { path: args.path, version: args.version };
    Ok(match read(&env, args.consistency, query).await? {
        ReadReply::Record(Some(record)) => json!({ "found": true, "record": record_json(&record) }),
        _ => json!({ "found": false }),
    })
}

async fn list(env: Arc<ToolEnv>, _: Invocation, args: ListArgs) -> ToolOutcome {
    let query = ReadQuery::List { prefix: args.prefix, after: args.after, limit: args.limit };
    Ok(match read(&env, args.consistency, query).await? {
        ReadReply::List(page) => json!({ "records": records_json(&page.records), "next_cursor": page.next_cursor }),
        _ => json!({ "records": [] }),
    })
}

async fn history(env: Arc<ToolEnv>, _: Invocation, args: HistoryArgs) -> ToolOutcome {
    let query = ReadQuery::History { path: args.path, before: args.before, limit: args.limit };
    Ok(match read(&env, args.consistency, query).await? {
        ReadReply::History(page) => json!({ "records": records_json(&page.records), "next_before": page.next_before }),
        _ => json!({ "records": [] }),
    })
}
