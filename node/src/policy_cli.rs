//! `zeromesh policy ...`: the mesh's Cedar policy set, through a node's
//! peer API. Setting one needs an admin token in ZEROMESH_TOKEN; `validate`
//! and `schema` need no node.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};
use zeromesh::client::ApiClient;
use zeromesh_kernel::{Policies, SCHEMA};
use zeromesh_protocol::limits::MAX_POLICY_BYTES;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Replaces the policy set with the Cedar policies in FILE, validated
    /// against the schema first, as a new version.
    Set {
        file: PathBuf,
        /// Why this version, kept with it.
        #[arg(long, default_value = "")]
        description: String,
        /// Sets it only if VERSION is still the current one.
        #[arg(long, value_name = "VERSION")]
        expect_version: Option<u64>,
    },
    /// Shows the current policy set, or an earlier version.
    Show {
        #[arg(long)]
        version: Option<u64>,
    },
    /// Lists the versions the mesh keeps, newest first.
    History,
    /// Checks the policies in FILE against the schema, without a node.
    Validate { file: PathBuf },
    /// Prints the Cedar schema policies are written against.
    Schema,
}

fn read_policies(file: &Path) -> anyhow::Result<String> {
    let size = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?.len();
    anyhow::ensure!(
        size <= MAX_POLICY_BYTES as u64,
        "{} has {size} bytes; a policy set holds at most {MAX_POLICY_BYTES}",
        file.display()
    );
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

fn names(policies: &Value) -> String {
    let listed: Vec<String> = policies
        .as_array()
        .into_iter()
        .flatten()
        .map(|policy| {
            format!(
                "{} ({})",
                policy["name"].as_str().unwrap_or_default(),
                policy["effect"].as_str().unwrap_or_default()
            )
        })
        .collect();
    if listed.is_empty() {
        "no policies".to_owned()
    } else {
        listed.join(", ")
    }
}

/// Runs a policy command against `node`.
pub async fn run(node: &str, command: PolicyCommand) -> anyhow::Result<()> {
    let (tool, arguments) = match &command {
        PolicyCommand::Validate { file } => {
            let text = read_policies(file)?;
            return match Policies::compile(0, &text) {
                Ok(compiled) => {
                    println!("{}: valid, {} policies", file.display(), compiled.names().len());
                    Ok(())
                }
                Err(errors) => {
                    for problem in &errors.problems {
                        eprintln!("{}: {problem}", file.display());
                    }
                    let count = errors.problems.len();
                    let plural = if count == 1 { "" } else { "s" };
                    anyhow::bail!("{} is not a valid policy set ({count} problem{plural})", file.display())
                }
            };
        }
        PolicyCommand::Schema => {
            print!("{SCHEMA}");
            return Ok(());
        }
        PolicyCommand::Set { file, description, expect_version } => {
            let text = read_policies(file)?;
            ("policy_set", json!({ "text": text, "description": description, "expect_version": expect_version }))
        }
        PolicyCommand::Show { version } => ("policy_show", json!({ "version": version })),
        PolicyCommand::History => ("policy_history", json!({})),
    };
    let mut client = ApiClient::connect(node).await.with_context(|| format!("connecting to {node}"))?;
    let answer = client.call_tool(tool, arguments).await.with_context(|| format!("{tool} on {node}"))?;
    match command {
        PolicyCommand::Set { .. } => println!(
            "policy set version {}: {} (log index {})",
            answer["version"],
            names(&answer["policies"]),
            answer["log_index"]
        ),
        PolicyCommand::Show { .. } => {
            println!("// policy set version {}: {}", answer["version"], names(&answer["policies"]));
            if let Some(description) = answer["description"].as_str().filter(|text| !text.is_empty()) {
                println!("// {description}");
            }
            print!("{}", answer["text"].as_str().unwrap_or_default());
        }
        PolicyCommand::History => {
            for version in answer["versions"].as_array().into_iter().flatten() {
                println!(
                    "version {} at log index {}: {}",
                    version["version"],
                    version["log_index"],
                    version["description"].as_str().unwrap_or_default()
                );
            }
        }
        PolicyCommand::Validate { .. } | PolicyCommand::Schema => {}
    }
    Ok(())
}
