//! `zeromesh agreement ...`: agreements between agents and providers,
//! through a node's peer API. Changes need an admin token in
//! ZEROMESH_TOKEN; signatures are made here, with the party's key file,
//! over the terms the node shows (printed before signing).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use zeromesh::cli::parse_span;
use zeromesh::client::ApiClient;
use zeromesh::tools::agreements::terms_from_json;
use zeromesh_protocol::plugin::PublisherKey;

use crate::agent_cli::public_key_text;
use crate::plugin_cli::read_key;

#[derive(Subcommand)]
pub enum AgreementCommand {
    /// Creates a draft agreement; both parties then sign it.
    Create {
        id: String,
        /// The agent whose calls it governs (spawned with --key).
        #[arg(long)]
        consumer: String,
        /// The provider's public key: 64 hex digits or a .pub file; trusted
        /// on the mesh (`zeromesh plugin trust`).
        #[arg(long)]
        provider: String,
        /// A tool it covers: a name, `prefix*` or `*`; repeatable.
        #[arg(long = "tool", required = true)]
        tools: Vec<String>,
        /// A limit, `metric=max/window` (calls, fuel, wall_ms, bytes_in,
        /// bytes_out per minute, hour, day or lifetime); repeatable.
        #[arg(long = "limit")]
        limits: Vec<String>,
        /// How long it runs from now: e.g. 90s, 30m, 12h, 30d.
        #[arg(long, value_parser = parse_span)]
        expires_in: Duration,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Signs an agreement's terms with a party's key file and submits the signature.
    Sign {
        id: String,
        /// The consumer's or the provider's secret key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Activates a signed agreement, or resumes a suspended one.
    Activate { id: String },
    /// Suspends an agreement: its calls are refused everywhere.
    Suspend {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Terminates an agreement for good.
    Terminate {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Shows an agreement: terms, state, history, usage.
    Show { id: String },
    /// Shows an agreement's usage against each limit.
    Usage { id: String },
    /// Lists every agreement.
    List,
    /// Shows calls refused by agreements.
    Violations {
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
}

/// Runs an agreement command against `node`.
pub async fn run(node: &str, command: AgreementCommand) -> anyhow::Result<()> {
    let mut client = ApiClient::connect(node).await.with_context(|| format!("connecting to {node}"))?;
    let (tool, arguments) = match &command {
        AgreementCommand::Create { id, consumer, provider, tools, limits, expires_in, description } => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            let expires_at_ms = (now + *expires_in).as_millis() as u64;
            let provider = public_key_text(provider)?;
            let arguments = json!({
                "id": id, "consumer": consumer, "provider": provider, "tools": tools, "limits": limits,
                "expires_at_ms": expires_at_ms, "description": description,
            });
            ("agreement_create", arguments)
        }
        AgreementCommand::Sign { id, key } => {
            let key = read_key(key)?;
            let shown = client.call_tool("agreement_show", json!({ "id": id })).await.context("reading the terms")?;
            let terms =
                terms_from_json(&shown["terms"]).map_err(|reason| anyhow::anyhow!("the node showed {reason}"))?;
            eprintln!("signing the terms:\n{}", serde_json::to_string_pretty(&shown["terms"])?);
            let signer = PublisherKey::of(&key).to_string();
            ("agreement_sign", json!({ "id": id, "signer": signer, "signature": hex::encode(terms.sign(&key)) }))
        }
        AgreementCommand::Activate { id } => ("agreement_activate", json!({ "id": id })),
        AgreementCommand::Suspend { id, reason } => ("agreement_suspend", json!({ "id": id, "reason": reason })),
        AgreementCommand::Terminate { id, reason } => ("agreement_terminate", json!({ "id": id, "reason": reason })),
        AgreementCommand::Show { id } => ("agreement_show", json!({ "id": id })),
        AgreementCommand::Usage { id } => ("agreement_usage", json!({ "id": id })),
        AgreementCommand::List => ("agreement_list", json!({})),
        AgreementCommand::Violations { from } => ("agreement_violations", json!({ "from": from })),
    };
    let answer = client.call_tool(tool, arguments).await.with_context(|| format!("{tool} on {node}"))?;
    match command {
        AgreementCommand::List => {
            for agreement in answer["agreements"].as_array().into_iter().flatten() {
                println!(
                    "{} {} consumer={}",
                    agreement["id"].as_str().unwrap_or_default(),
                    agreement["state"].as_str().unwrap_or_default(),
                    agreement["consumer"].as_str().unwrap_or_default()
                );
            }
        }
        AgreementCommand::Usage { .. } => {
            for limit in answer["limits"].as_array().into_iter().flatten() {
                println!("{} used {} of {}", limit["limit"].as_str().unwrap_or_default(), limit["used"], limit["max"]);
            }
            println!("refused calls: {}", answer["refused"]);
        }
        AgreementCommand::Show { .. } | AgreementCommand::Violations { .. } => {
            println!("{}", serde_json::to_string_pretty(&answer)?)
        }
        _ => println!(
            "agreement {} {}: {} (log index {})",
            answer["id"].as_str().unwrap_or_default(),
            answer["state"].as_str().unwrap_or_default(),
            answer["what"].as_str().unwrap_or_default(),
            answer["log_index"]
        ),
    }
    Ok(())
}
