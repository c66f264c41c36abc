//! The client commands: `zeromesh status` and `zeromesh memory ...`, which
//! talk to a node's peer API.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::ApiClient;

pub const DEFAULT_NODE: &str = "ws://127.0.0.1:8765";

/// A span like `90s`, `30m`, `12h` or `30d`: a whole number and a unit.
pub fn parse_span(text: &str) -> Result<std::time::Duration, String> {
    let split = text.char_indices().last().map_or(0, |(at, _)| at);
    let (number, unit) = text.split_at(split);
    let count: u64 = number.parse().map_err(|_| format!("{text:?}: a span is a number and s, m, h or d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: a span ends in s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(count.saturating_mul(seconds)))
}

#[derive(Subcommand)]
pub enum MemoryCommand {
    /// Write a new version of a memory.
    Put {
        path: String,
        value: String,
        #[arg(long, default_value = "text/plain")]
        content_type: String,
        /// A tag; repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Read a memory (the live version, or --version N).
    Get {
        path: String,
        #[arg(long)]
        version: Option<u64>,
        /// Read this node's applied state without asking the leader.
        #[arg(long)]
        stale: bool,
    },
    /// List live memories under a prefix.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// A memory's kept versions, newest first.
    History {
        path: String,
        #[arg(long)]
        before: Option<u64>,
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Delete a memory.
    Rm { path: String },
}

fn show_record(record: &Value) -> String {
    let value = record.get("value").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| {
        format!("(base64) {}", record.get("value_base64").and_then(Value::as_str).unwrap_or_default())
    });
    let state = if record["deleted"] == json!(true) { " (deleted)" } else { "" };
    format!(
        "{} v{} @{}{}: {}",
        record["path"].as_str().unwrap_or_default(),
        record["version"],
        record["log_index"],
        state,
        value
    )
}

pub async fn memory(node: &str, command: MemoryCommand) -> anyhow::Result<()> {
    let mut client = ApiClient::connect(node).await?;
    match command {
        MemoryCommand::Put { path, value, content_type, tags } => {
            let answer = client
                .call_tool(
                    "memory_put",
                    json!({ "path": path, "value": value, "content_type": content_type, "tags": tags }),
                )
                .await?;
            println!("{path}: version {} at log index {}", answer["version"], answer["log_index"]);
        }
        MemoryCommand::Get { path, version, stale } => {
            let consistency = if stale { "stale" } else { "linearizable" };
            let mut arguments = json!({ "path": path, "consistency": consistency });
            if let Some(version) = version {
                arguments["version"] = json!(version);
            }
            let answer = client.call_tool("memory_get", arguments).await?;
            if answer["found"] == json!(true) {
                println!("{}", show_record(&answer["record"]));
            } else {
                anyhow::bail!("{path}: not found");
            }
        }
        MemoryCommand::Ls { prefix, after, limit } => {
            let answer =
                client.call_tool("memory_list", json!({ "prefix": prefix, "after": after, "limit": limit })).await?;
            for record in answer["records"].as_array().into_iter().flatten() {
                println!("{}", show_record(record));
            }
            if let Some(cursor) = answer["next_cursor"].as_str() {
                println!("(more: --after {cursor})");
            }
        }
        MemoryCommand::History { path, before, limit } => {
            let answer =
                client.call_tool("memory_history", json!({ "path": path, "before": before, "limit": limit })).await?;
            for record in answer["records"].as_array().into_iter().flatten() {
                println!("{}", show_record(record));
            }
            if let Some(before) = answer["next_before"].as_u64() {
                println!("(more: --before {before})");
            }
        }
        MemoryCommand::Rm { path } => {
            let answer = client.call_tool("memory_delete", json!({ "path": path })).await?;
            match answer["outcome"].as_str() {
                Some("deleted") => {
                    println!("{path}: deleted (version {}) at log index {}", answer["version"], answer["log_index"])
                }
                _ => anyhow::bail!("{path}: not found"),
            }
        }
    }
    Ok(())
}

/// A spinner on stderr saying what is under way; drawn only on a terminal.
pub fn spinner(message: impl Into<std::borrow::Cow<'static, str>>) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A bar on stderr counting `total` bytes (`message` says of what); drawn
/// only on a terminal.
pub fn bytes_bar(total: u64, message: impl Into<std::borrow::Cow<'static, str>>) -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    let bar = indicatif::ProgressBar::new(total).with_style(style).with_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A bar on stderr counting members that have done something (`message`
/// says what); drawn only on a terminal.
pub fn members_bar(message: &'static str) -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} members")
        .expect("a valid template")
        .progress_chars("=> ");
    let bar = indicatif::ProgressBar::new(0).with_style(style).with_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Waits, with a progress bar, until the cluster `node` belongs to has
/// `members` members and `min(members, voter count)` voters.
pub async fn wait_for_members(node: &str, members: usize, timeout: std::time::Duration) -> anyhow::Result<()> {
    let bar = members_bar("joining");
    bar.set_length(members as u64);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = String::from("no answer yet");
    loop {
        let status = match ApiClient::connect(node).await {
            Ok(mut client) => client.call_tool("cluster_status", json!({})).await.ok(),
            Err(_) => None,
        };
        if let Some(status) = status {
            let joined = status["members"].as_array().map_or(0, Vec::len);
            let voters = status["voters"].as_array().map_or(0, Vec::len);
            let wanted_voters = members.min(status["voter_count"].as_u64().unwrap_or(3) as usize);
            bar.set_position(joined as u64);
            bar.set_message(format!("voters {voters}/{wanted_voters}"));
            seen = format!("{joined} members, {voters} voters");
            if joined >= members && voters >= wanted_voters {
                bar.finish_and_clear();
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bar.abandon();
            anyhow::bail!("the cluster did not reach {members} members within {timeout:?} (last seen: {seen})");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn opt(value: &Value) -> String {
    if value.is_null() {
        "-".into()
    } else {
        value.to_string()
    }
}

pub async fn status(node: &str, as_json: bool) -> anyhow::Result<()> {
    let mut client = ApiClient::connect(node).await?;
    let cluster = client.call_tool("cluster_status", json!({})).await.context("cluster_status")?;
    let mesh = client.call_tool("mesh_peers", json!({})).await.context("mesh_peers")?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!({ "cluster": cluster, "mesh": mesh }))?);
        return Ok(());
    }
    println!("node       {} ({})", cluster["node_id"], cluster["role"].as_str().unwrap_or_default());
    println!("leader     {}", opt(&cluster["leader"]));
    println!("term       {}", cluster["term"]);
    println!("voters     {}", cluster["voters"]);
    println!("non-voters {}", cluster["non_voters"]);
    println!("members:");
    for member in cluster["members"].as_array().into_iter().flatten() {
        let kind = if member["voter"] == json!(true) { "voter" } else { "non-voter" };
        if member["reachable"] == json!(true) {
            println!(
                "  {:<20} {:<9} {:<10} term {} last log {} applied {} api {} peer {}",
                member["node_id"],
                kind,
                member["role"].as_str().unwrap_or_default(),
                member["term"],
                opt(&member["last_log_index"]),
                opt(&member["applied_index"]),
                member["api_addr"].as_str().unwrap_or_default(),
                member["peer_id"].as_str().unwrap_or_default()
            );
        } else {
            println!(
                "  {:<20} {:<9} unreachable at {}: {}",
                member["node_id"],
                kind,
                member["api_addr"].as_str().unwrap_or_default(),
                member["error"].as_str().unwrap_or_default()
            );
        }
    }
    println!(
        "mesh peers ({} connected, {} adverts):",
        mesh["connected"].as_array().map_or(0, Vec::len),
        mesh["adverts"].as_array().map_or(0, Vec::len)
    );
    for advert in mesh["adverts"].as_array().into_iter().flatten() {
        println!(
            "  {} node {} api {} load {:.2} free memory {} MiB free disk {}",
            advert["peer_id"].as_str().unwrap_or_default(),
            advert["node_id"],
            advert["api_addr"].as_str().unwrap_or_default(),
            advert["load_milli"].as_f64().unwrap_or_default() / 1000.0,
            advert["free_memory_bytes"].as_u64().unwrap_or_default() / (1024 * 1024),
            match (advert["free_disk_bytes"].as_u64(), advert["min_free_disk_bytes"].as_u64()) {
                (Some(free), Some(kept)) if free < kept =>
                    format!("{} MiB (BELOW the {} MiB kept)", free >> 20, kept >> 20),
                (Some(free), _) => format!("{} MiB", free >> 20),
                _ => "unknown".to_owned(),
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_span;
    use std::time::Duration;

    #[test]
    fn spans_read_seconds_minutes_hours_and_days() {
        assert_eq!(parse_span("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_span("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_span("2w").is_err());
        assert!(parse_span("").is_err());
        assert!(parse_span("1é").is_err(), "a unit that is not ASCII is refused, not a panic");
    }
}
