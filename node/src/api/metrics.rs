//! The node's Prometheus metrics (`GET /metrics`, text format 0.0.4):
//! API requests by method and outcome, their latency histogram, Raft's
//! term, log, commit and applied positions, peers, plugins, connections,
//! the data disk's free space and reserve, and agreement violations.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use zeromesh_kernel::{Refusal, Served};

use super::ApiState;

/// Methods counted under their own name; anything else is `other`, so a
/// client cannot grow the label set.
const KNOWN_METHODS: [&str; 17] = [
    "cancelled-request",
    "tasks/get",
    "tasks/cancel",
    "initialize",
    "server/discover",
    "subscriptions/listen",
    "ping",
    "logging/setLevel",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "notifications/initialized",
    "notifications/cancelled",
];
/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    /// Count per bucket (not cumulative), then the overflow bucket.
    buckets: [u64; LATENCY_BUCKETS_S.len() + 1],
    sum_s: f64,
    count: u64,
}

/// Counters the API keeps as it serves.
#[derive(Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Open API connections (WebSocket sessions and HTTP connections).
    pub connections: AtomicI64,
    /// Tool calls by the kernel's decision: `allowed`, `metered` (allowed
    /// under an agreement), `settled`, or the refusal's kind.
    kernel: Mutex<BTreeMap<&'static str, u64>>,
}

fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS.iter().find(|known| **known == method).copied().unwrap_or("other")
}

impl ApiMetrics {
    /// Counts one answered (or failed) message.
    pub fn record(&self, method: &str, outcome: &'static str, elapsed: Duration) {
        let method = method_label(method);
        *self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).entry((method, outcome)).or_default() +=
            1;
        let seconds = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let histogram = latency.entry(method).or_default();
        let bucket = LATENCY_BUCKETS_S.iter().position(|bound| seconds <= *bound).unwrap_or(LATENCY_BUCKETS_S.len());
        histogram.buckets[bucket] += 1;
        histogram.sum_s += seconds;
        histogram.count += 1;
    }

    /// Messages answered and the seconds spent on them, by method, since
    /// the node started: `{"tools/call": {"count": 3, "sum_s": 0.01}, ...}`.
    pub fn request_totals(&self) -> serde_json::Value {
        let latency = self.latency.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        serde_json::Value::Object(
            latency
                .iter()
                .map(|(method, histogram)| {
                    (method.to_string(), serde_json::json!({ "count": histogram.count, "sum_s": histogram.sum_s }))
                })
                .collect(),
        )
    }

    /// Counts one tool call by the kernel's decision.
    pub fn count_call<O>(&self, served: &Result<Served<O>, Refusal>) {
        let mut kernel = self.kernel.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match served {
            Ok(Served { metered: None, .. }) => *kernel.entry("allowed").or_default() += 1,
            Ok(Served { metered: Some(metered), .. }) => {
                *kernel.entry("metered").or_default() += 1;
                if metered.settle_error.is_none() {
                    *kernel.entry("settled").or_default() += 1;
                }
            }
            Err(refusal) => *kernel.entry(refusal.kind()).or_default() += 1,
        }
    }

    fn write_kernel(&self, out: &mut String) {
        out.push_str("# HELP zeromesh_kernel_calls_total Tool calls by the kernel's decision: allowed, metered (allowed under an agreement), settled, or the refusal's reason.\n");
        out.push_str("# TYPE zeromesh_kernel_calls_total counter\n");
        for (decision, count) in self.kernel.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
            let _ = writeln!(out, "zeromesh_kernel_calls_total{{decision=\"{decision}\"}} {count}");
        }
    }

    fn write_api(&self, out: &mut String) {
        out.push_str("# HELP zeromesh_api_requests_total API messages handled, by method and outcome.\n");
        out.push_str("# TYPE zeromesh_api_requests_total counter\n");
        for ((method, outcome), count) in self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
            let _ = writeln!(out, "zeromesh_api_requests_total{{method=\"{method}\",outcome=\"{outcome}\"}} {count}");
        }
        out.push_str("# HELP zeromesh_api_request_seconds Time to answer an API message, by method.\n");
        out.push_str("# TYPE zeromesh_api_request_seconds histogram\n");
        for (method, histogram) in self.latency.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
            let mut cumulative = 0;
            for (bound, count) in LATENCY_BUCKETS_S.iter().zip(histogram.buckets.iter()) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "zeromesh_api_request_seconds_bucket{{method=\"{method}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "zeromesh_api_request_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(out, "zeromesh_api_request_seconds_sum{{method=\"{method}\"}} {}", histogram.sum_s);
            let _ = writeln!(out, "zeromesh_api_request_seconds_count{{method=\"{method}\"}} {}", histogram.count);
        }
        gauge(out, "zeromesh_api_connections", "Open API connections.", self.connections.load(Ordering::Relaxed));
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

/// The trace log: tree size, root, checkpoints and alarms.
fn write_trace(out: &mut String, cluster: &crate::cluster::Cluster) {
    use std::sync::atomic::Ordering::Relaxed;
    let head = cluster.consensus.trace_head();
    gauge(out, "zeromesh_trace_leaves", "Leaves in this node's trace tree (entries applied).", head.size);
    let mut prefix = [0u8; 8];
    prefix[2..].copy_from_slice(&head.root.0[..6]);
    let prefix = u64::from_be_bytes(prefix);
    gauge(
        out,
        "zeromesh_trace_root_prefix",
        "The trace root's first 48 bits as a number: equal on nodes with equal zeromesh_trace_leaves.",
        prefix,
    );
    let checkpoints = &cluster.checkpoints;
    gauge(
        out,
        "zeromesh_trace_checkpoint_size",
        "Tree size of the latest cosigned checkpoint kept here.",
        *checkpoints.latest_size.borrow(),
    );
    gauge(
        out,
        "zeromesh_trace_checkpoint_round_seconds",
        "How long this node's last cosigning round as leader took.",
        checkpoints.last_round_micros.load(Relaxed) as f64 / 1e6,
    );
    let counters = [
        ("zeromesh_trace_checkpoints_cosigned_total", "Checkpoints this node cosigned.", &checkpoints.cosigned),
        (
            "zeromesh_trace_checkpoints_published_total",
            "Checkpoints this node published as leader.",
            &checkpoints.published,
        ),
        (
            "zeromesh_trace_root_mismatches_total",
            "ALARM: roots this node was asked to sign or keep that differ from its own.",
            &checkpoints.mismatches,
        ),
    ];
    atomic_counters(out, &counters);
}

/// What this node forwarded to the leader: writes and the requests that
/// carried them (grouped), linearizable reads and the read-index requests
/// they shared.
fn write_forwarding(out: &mut String, forwarded: &crate::cluster::ForwardCounters) {
    let counters = [
        ("zeromesh_forwarded_writes_total", "Writes this node forwarded to the leader.", &forwarded.writes),
        (
            "zeromesh_forwarded_write_requests_total",
            "Requests that carried them (concurrent writes travel together).",
            &forwarded.write_requests,
        ),
        (
            "zeromesh_forwarded_reads_total",
            "Linearizable reads this node served at a read index asked of the leader.",
            &forwarded.reads,
        ),
        (
            "zeromesh_forwarded_read_index_requests_total",
            "Read-index requests this node sent (concurrent reads share one).",
            &forwarded.read_index_requests,
        ),
    ];
    atomic_counters(out, &counters);
}

/// Counters kept in atomics: name, help, value.
fn atomic_counters(out: &mut String, counters: &[(&str, &str, &std::sync::atomic::AtomicU64)]) {
    for (name, help, count) in counters {
        counter(out, name, help, count.load(Ordering::Relaxed));
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

/// The whole metrics page.
fn write_offload(out: &mut String, counters: &crate::plugins::OffloadCounters) {
    out.push_str("# HELP zeromesh_offload_sent_total Plugin calls this node sent to a peer, by outcome: ran (a verified receipt), not_run (the peer did not run it), unknown (no answer, or a receipt that did not verify).\n");
    out.push_str("# TYPE zeromesh_offload_sent_total counter\n");
    for (outcome, count) in
        [("ran", counters.sent_ran), ("not_run", counters.sent_not_run), ("unknown", counters.sent_unknown)]
    {
        let _ = writeln!(out, "zeromesh_offload_sent_total{{outcome=\"{outcome}\"}} {count}");
    }
    counter(
        out,
        "zeromesh_offload_receipts_refused_total",
        "Receipts of offloaded calls that did not verify.",
        counters.receipts_refused,
    );
    out.push_str(
        "# HELP zeromesh_offload_served_total Plugin calls peers sent to this node, by outcome: ran, or not_run.\n",
    );
    out.push_str("# TYPE zeromesh_offload_served_total counter\n");
    for (outcome, count) in [("ran", counters.served_ran), ("not_run", counters.served_not_run)] {
        let _ = writeln!(out, "zeromesh_offload_served_total{{outcome=\"{outcome}\"}} {count}");
    }
    gauge(out, "zeromesh_offload_serving", "Plugin calls running on this node for peers now.", counters.serving);
}

pub fn render(state: &ApiState) -> String {
    let mut out = String::new();
    state.metrics.write_api(&mut out);
    state.metrics.write_kernel(&mut out);
    let view = state.cluster.consensus.cluster_view();
    gauge(&mut out, "zeromesh_raft_term", "Raft's current term.", view.term);
    gauge(
        &mut out,
        "zeromesh_raft_last_log_index",
        "Index of the last entry in this node's log.",
        view.last_log_index.unwrap_or(0),
    );
    if let Some(committed) = state.cluster.consensus.committed_index() {
        gauge(&mut out, "zeromesh_raft_committed_index", "Commit index (exported by the leader only).", committed);
    }
    gauge(
        &mut out,
        "zeromesh_raft_applied_index",
        "Index of the last entry applied here.",
        view.applied_index.unwrap_or(0),
    );
    gauge(&mut out, "zeromesh_raft_is_leader", "1 when this node leads.", u8::from(view.leader == Some(view.node_id)));
    gauge(&mut out, "zeromesh_raft_leader_known", "1 when this node knows a leader.", u8::from(view.leader.is_some()));
    gauge(&mut out, "zeromesh_raft_voters", "Voters in the cluster's membership.", view.voters.len());
    gauge(&mut out, "zeromesh_raft_non_voters", "Non-voting members.", view.learners.len());
    gauge(&mut out, "zeromesh_mesh_peers", "Connected mesh peers.", state.cluster.mesh.connected_peers().len());
    let mesh = state.cluster.mesh.counters();
    counter(
        &mut out,
        "zeromesh_mesh_links_opened_total",
        "Links (one stream per peer for Raft) opened.",
        mesh.links_opened,
    );
    counter(
        &mut out,
        "zeromesh_mesh_link_requests_total",
        "Requests sent on a link rather than on a request-response stream of their own.",
        mesh.link_requests,
    );
    counter(
        &mut out,
        "zeromesh_mesh_link_requests_served_total",
        "Requests peers sent this node on links.",
        mesh.link_requests_served,
    );
    gauge(&mut out, "zeromesh_plugins_running", "Plugins this node runs.", state.plugins.running_count());
    write_offload(&mut out, &state.plugins.offload_counters());
    let federation = &state.plugins.federation;
    gauge(&mut out, "zeromesh_federation_hosted", "Federated MCP servers this node hosts.", federation.hosted_count());
    gauge(
        &mut out,
        "zeromesh_federation_serving",
        "Federated MCP servers hosted here that take calls now (healthy, circuit closed).",
        federation.serving_count(),
    );
    gauge(
        &mut out,
        "zeromesh_federation_schema_mismatches",
        "Federated tools whose hosts give different definitions.",
        federation.schema_mismatches(),
    );
    let storage = state.cluster.consensus.storage_memory();
    gauge(
        &mut out,
        "zeromesh_storage_memory_budget_bytes",
        "What RocksDB may hold in memory (storage_memory_mb).",
        storage.budget_bytes,
    );
    gauge(
        &mut out,
        "zeromesh_storage_cache_bytes",
        "RocksDB's shared block cache in use, the memtables' charge included.",
        storage.cache_bytes,
    );
    gauge(
        &mut out,
        "zeromesh_storage_memtable_bytes",
        "RocksDB's memtables, all column families.",
        storage.memtable_bytes,
    );
    counter(
        &mut out,
        "zeromesh_storage_background_write_wait_seconds_total",
        "Time RocksDB's flushes and compactions waited for the background write limit (storage_background_write_mb_per_sec).",
        state.cluster.consensus.storage_background_write_wait_micros() as f64 / 1e6,
    );
    let stalls = state.cluster.consensus.storage_write_stalls();
    counter(
        &mut out,
        "zeromesh_storage_write_stall_seconds_total",
        "Time writes waited because RocksDB's flushes or compactions were behind (memtables all full, or too many level-0 files).",
        stalls.behind_micros as f64 / 1e6,
    );
    counter(
        &mut out,
        "zeromesh_storage_memory_limit_stops_total",
        "Writes stopped until a flush because RocksDB's memtables reached half of storage_memory_mb.",
        stalls.memory_limit_stops,
    );
    if let Some(free) = state.cluster.free_disk_bytes() {
        gauge(&mut out, "zeromesh_disk_free_bytes", "Bytes free on this node's data disk.", free);
    }
    gauge(
        &mut out,
        "zeromesh_disk_reserve_bytes",
        "Bytes this node keeps free on its data disk: below, writes stop on every node.",
        state.cluster.min_free_disk,
    );
    if let Ok(recorded) = state.cluster.consensus.next_violation_seq() {
        counter(&mut out, "zeromesh_agreement_violations_total", "Agreement violations recorded in the log.", recorded);
    }
    write_trace(&mut out, &state.cluster);
    write_forwarding(&mut out, state.cluster.forwarded());
    out
}
