//! The node's log on stderr: human-readable lines (the default), or one
//! JSON object per line (`--log-format json`) for log collectors, each with
//! the node's id and, inside a request, the request span's fields (its
//! JSON-RPC id, method, and the Raft term when it arrived).

use std::sync::OnceLock;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How the log is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not a log format; accepted: human, json")),
        }
    }
}

/// This process's node id, once known: every JSON line carries it.
static NODE_ID: OnceLock<u64> = OnceLock::new();

/// Records the node id for the log lines that follow.
pub fn set_node_id(node_id: u64) {
    let _ = NODE_ID.set(node_id);
}

/// tracing-subscriber's JSON lines with `node_id` first.
struct NodeJson(Format<Json>);

impl<S, N> FormatEvent<S, N> for NodeJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(context, Writer::new(&mut line), event)?;
        match (NODE_ID.get(), line.strip_prefix('{')) {
            (Some(node_id), Some(rest)) => write!(writer, "{{\"node_id\":{node_id},{rest}"),
            _ => writer.write_str(&line),
        }
    }
}

/// The log filter when `ZEROMESH_LOG` is not set. openraft reports every
/// unreachable peer (the demo crashes one on purpose), so its messages are
/// off. libp2p-kad's behaviour warns "Failed to trigger bootstrap: No known
/// peers" half a second after a node starts listening with nobody connected:
/// always on the first node of a mesh, and on a joining node until its
/// first connection. The node says itself when a join keeps failing and why
/// (`cluster::membership::join`), and the module's only other warning is
/// about record replication, which zeromesh does not use: errors only.
/// What federated servers write to their stderr is logged at info, under
/// its own target, and shown.
pub const DEFAULT_LOG_FILTER: &str = "warn,zeromesh::federated_server=info,openraft=off,libp2p_kad::behaviour=error";

/// Starts logging to stderr in `format`, filtered by `ZEROMESH_LOG`
/// (tracing's `EnvFilter` syntax; default [`DEFAULT_LOG_FILTER`]).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("ZEROMESH_LOG").unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format().json().with_current_span(true).with_span_list(false);
            builder.fmt_fields(JsonFields::new()).event_format(NodeJson(json)).init()
        }
    }
}
