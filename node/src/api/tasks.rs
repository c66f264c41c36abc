//! Long tool calls as MCP Tasks (the `io.modelcontextprotocol/tasks`
//! extension): a client that declares the extension gets, for a tool
//! declared long (`plugin_install`, agent snapshots and imports), a task it
//! polls with `tasks/get` and may cancel with `tasks/cancel`, instead of a
//! request held open. rmcp's `TaskManager` runs and keeps them; this store
//! lets only the caller that started a task see or cancel it, and bounds
//! how many a node keeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{DetailedTask, Task};
use rmcp::task_manager::{TaskExit, TaskManager, TaskOptions};
use zeromesh_kernel::Caller;

use super::{rpc_error, tools, ApiState, RpcError};

/// Tasks a node keeps at once, running or finished and not yet expired.
pub const MAX_TASKS: usize = 256;
/// A task not finished by then fails; a finished one is kept as long again.
const TASK_TTL_MS: u64 = 10 * 60 * 1000;
const POLL_INTERVAL_MS: u64 = 500;

/// The node's tasks, for every session and stateless request alike.
#[derive(Default)]
pub struct Tasks {
    manager: TaskManager,
    /// Task id to the token that started it (`None`: `--dev`).
    owners: Mutex<HashMap<String, Option<String>>>,
}

/// A `tools/call` to run as a task, owned so that it outlives its request.
pub struct LongCall {
    pub name: String,
    pub arguments: serde_json::Value,
    pub agent: Option<String>,
    pub idempotency_key: Option<String>,
}

impl Tasks {
    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.owners.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts `call` for `caller` as a task.
    pub fn start(&self, state: Arc<ApiState>, caller: Caller, call: LongCall) -> Result<Task, RpcError> {
        let mut owners = self.owners();
        if owners.len() >= MAX_TASKS {
            owners.retain(|id, _| self.manager.get_task(id).is_ok());
        }
        if owners.len() >= MAX_TASKS {
            return Err(rpc_error(
                rmcp::model::ErrorCode::INTERNAL_ERROR.0,
                format!("this node keeps {MAX_TASKS} tasks already; retry once some have finished and expired"),
            ));
        }
        let owner = caller.token_id.clone();
        let options = TaskOptions::new().with_ttl_ms(TASK_TTL_MS).with_poll_interval_ms(POLL_INTERVAL_MS);
        let task = self.manager.spawn(options, move |context| {
            Box::pin(async move {
                let progress_context = context.clone();
                let progress: crate::tools::Progress = Arc::new(move |step, steps, message: &str| {
                    progress_context.set_status_message(format!("{step}/{steps}: {message}"));
                });
                let call = tools::Call {
                    name: &call.name,
                    arguments: call.arguments,
                    agent: call.agent.as_deref(),
                    idempotency_key: call.idempotency_key.as_deref(),
                };
                let answer = tokio::select! {
                    answer = tools::call(&state, &caller, call, progress) => answer,
                    () = context.cancelled() => return Err(TaskExit::Cancelled),
                };
                answer.map_err(TaskExit::Error)
            })
        });
        owners.insert(task.task_id.clone(), owner);
        Ok(task)
    }

    /// Checks that `caller` started task `id`; anyone else is told it does
    /// not exist.
    fn owned(&self, caller: &Caller, id: &str) -> Result<(), RpcError> {
        match self.owners().get(id) {
            Some(owner) if *owner == caller.token_id => Ok(()),
            _ => Err(RpcError::invalid_params(format!("no task {id:?} started by this caller"), None)),
        }
    }

    /// `tasks/get`.
    pub fn get(&self, caller: &Caller, id: &str) -> Result<DetailedTask, RpcError> {
        self.owned(caller, id)?;
        self.manager.get_task(id).inspect_err(|_| drop(self.owners().remove(id)))
    }

    /// `tasks/cancel`: the call stops at its next await; what it already
    /// committed (a write that reached Raft) stays done.
    pub fn cancel(&self, caller: &Caller, id: &str) -> Result<(), RpcError> {
        self.owned(caller, id)?;
        self.manager.cancel_task(id)
    }
}

#[cfg(test)]
mod tests {
    use zeromesh_protocol::auth::Role;

    use super::*;

    #[test]
    fn only_the_token_that_started_a_task_sees_it() {
        let tasks = Tasks::default();
        tasks.owners().insert("t-1".into(), Some("0123456789abcdef".into()));
        let caller = |token: &str| Caller { role: Role::Admin, agent: None, token_id: Some(token.into()) };
        assert!(tasks.owned(&caller("0123456789abcdef"), "t-1").is_ok());
        for (who, id) in
            [(caller("fedcba9876543210"), "t-1"), (Caller::dev(), "t-1"), (caller("0123456789abcdef"), "t-2")]
        {
            let refused = tasks.owned(&who, id).unwrap_err();
            assert!(refused.message.contains("no task"), "{}", refused.message);
        }
    }
}
