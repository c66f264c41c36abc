//! The `zeromesh` command: `run` (a node), `keygen`, the client commands
//! `status` and `memory`, `demo` (a cluster inside one process) and `plugin`
//! (publisher keys and signed plugin packages).

mod agent_cli;
mod agreement_cli;
mod backup_cli;
mod demo;
mod plugin_cli;
mod policy_cli;
mod server_cli;
mod trace_cli;

use zeromesh::cli::{self as client_cli, DEFAULT_NODE};
use zeromesh::config::{NodeConfig, RunArgs};
use zeromesh_protocol::limits::MAX_PLUGIN_CALLS_IN_FLIGHT;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "zeromesh", version, about = "A peer-to-peer mesh node for AI-agent infrastructure")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Resolves and validates the settings `run` would use (the same flags,
    /// ZEROMESH_* variables and --config file), prints them and exits:
    /// non-zero, naming the setting, when one is wrong.
    Check(RunArgs),
}

#[derive(Subcommand)]
enum Commands {
    /// Runs a node: the mesh, Raft over the mesh and the peer API.
    Run(RunArgs),
    /// Writes the whole replicated state at one log index (a snapshot the
    /// node takes now, checksummed) to a file, and verifies it. Needs an
    /// admin token in ZEROMESH_TOKEN.
    Backup {
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE)]
        node: String,
        /// The file to write (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Starts a new cluster from a backup: `run --init` on a new data
    /// directory that first receives the backup's state. This node is its
    /// one member; others join it with the join token it prints. The
    /// backup's tokens, agents, agreements and plugins are all there.
    Restore {
        /// A file `zeromesh backup` wrote.
        file: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Node settings without a node.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Makes a node key in a data directory (`run` makes one if missing).
    Keygen {
        #[arg(long, env = "ZEROMESH_DATA", default_value = zeromesh::config::DEFAULT_DATA)]
        data: PathBuf,
    },
    /// Shows the cluster and the mesh as a node sees them.
    Status {
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE)]
        node: String,
        /// Prints `{"cluster": ..., "mesh": ...}` as JSON, for scripts.
        #[arg(long)]
        json: bool,
        /// First waits, showing progress, until the cluster has N members
        /// and min(N, voter count) voters (at most `--wait-timeout` seconds).
        #[arg(long, value_name = "N")]
        wait_members: Option<usize>,
        /// Seconds `--wait-members` waits before it fails.
        #[arg(long, default_value_t = 60)]
        wait_timeout: u64,
    },
    /// Sets how many voters the cluster keeps (1 to 7): the leader promotes
    /// caught-up non-voters up to it (a single node's cluster grows this way).
    SetVoters {
        count: u64,
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE)]
        node: String,
    },
    /// Prints a shell completion script: `zeromesh completions bash >
    /// /etc/bash_completion.d/zeromesh` (or zsh, fish).
    Completions { shell: clap_complete::Shell },
    /// Reads and writes agent memories through a node.
    Memory {
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE, global = true)]
        node: String,
        #[command(subcommand)]
        command: client_cli::MemoryCommand,
    },
    /// Runs a Raft cluster of real RocksDB-backed members in this process:
    /// writes, reads, crashes the leader and shows that nothing acknowledged
    /// was lost. Run it again on the same folder to see the data recovered.
    Demo {
        /// Folder holding each member's data directory.
        #[arg(long, default_value = ".testnet/demo")]
        data: PathBuf,
        /// Number of voting members (1 to 7).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=7))]
        nodes: u64,
        /// Memories to write, in batches of up to 64 commands per Raft entry.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        writes: u64,
        /// Delete the data folder first.
        #[arg(long)]
        clean: bool,
    },
    /// API tokens: create (shown once), revoke, list. Needs an admin token in
    /// ZEROMESH_TOKEN.
    Token {
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE, global = true)]
        node: String,
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// TLS certificates for the peer API.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Makes a private-mesh pre-shared key file (mode 0600) for
    /// `run --private-mesh-key`: nodes without the same key cannot connect.
    MeshKey {
        #[arg(long, default_value = "swarm.key")]
        out: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Bridges MCP over stdio to a node: for hosts that start MCP servers as
    /// processes. One JSON-RPC message per line on stdin and stdout.
    McpStdio {
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE)]
        node: String,
    },
    /// The agent registry: spawn, pause, resume, terminate, show, list.
    /// Changes need an admin token in ZEROMESH_TOKEN.
    Agent {
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE, global = true)]
        node: String,
        #[command(subcommand)]
        command: agent_cli::AgentCommand,
    },
    /// Agreements: create, sign, activate, suspend, terminate, show, usage,
    /// list, violations. Changes need an admin token in ZEROMESH_TOKEN.
    Agreement {
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE, global = true)]
        node: String,
        #[command(subcommand)]
        command: agreement_cli::AgreementCommand,
    },
    /// The mesh's Cedar policy set: set, show, history, validate, schema.
    /// Setting one needs an admin token in ZEROMESH_TOKEN.
    Policy {
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE, global = true)]
        node: String,
        #[command(subcommand)]
        command: policy_cli::PolicyCommand,
    },
    /// External MCP servers federated into the mesh: register, unregister,
    /// list. Changes need an admin token in ZEROMESH_TOKEN.
    Server {
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE, global = true)]
        node: String,
        #[command(subcommand)]
        command: server_cli::ServerCommand,
    },
    /// The trace log: checkpoints cosigned by the voters, inclusion and
    /// consistency proofs, and their offline verification.
    Trace {
        #[arg(long, env = "ZEROMESH_NODE", default_value = DEFAULT_NODE, global = true)]
        node: String,
        #[command(subcommand)]
        command: trace_cli::TraceCommand,
    },
    /// Publisher keys and signed plugin packages; the mesh's plugin registry.
    #[command(subcommand)]
    Plugin(plugin_cli::PluginCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Creates a token and prints it (once; nodes keep only its hash).
    Create {
        /// admin, agent or read.
        #[arg(long)]
        role: String,
        /// The agent an agent token acts for.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Revokes a token by id (the 16 hex digits after `zm_`).
    Revoke { id: String },
    /// Prints a new token's text without asking any node: for
    /// `run --init --admin-token` (a deployment's secret, say).
    Generate,
    /// Lists tokens: ids, roles, agents.
    List,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Makes a self-signed certificate and key (PEM) for testing
    /// `run --tls-cert --tls-key`; clients trust it with ZEROMESH_CA_CERT.
    SelfSigned {
        /// A DNS name or IP address the certificate is for; repeatable.
        #[arg(long = "name", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
        names: Vec<String>,
        #[arg(long, default_value = "api-cert.pem")]
        cert: PathBuf,
        #[arg(long, default_value = "api-key.pem")]
        key: PathBuf,
        /// Replace the files if they exist.
        #[arg(long)]
        force: bool,
    },
}

/// The exit status of a command whose change may or may not have been
/// applied (any other failure exits with 1): a script reads it back before
/// retrying.
const EXIT_OUTCOME_UNKNOWN: u8 = 3;

/// The process's allocator: jemalloc, overriding glibc's `malloc`, so that
/// RocksDB's C++ allocates from it too. Against glibc (two arenas) in the
/// same runs it wrote 13% more per second at 64 clients (21% through a
/// follower), and in the ten-minute soak the busiest node peaked at 107 MiB
/// instead of 117 to 123 (BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (its `malloc_conf`; `MALLOC_CONF` in the environment
/// overrides any of them): two arenas, as glibc had, so that memory freed
/// under load is not scattered over four per core; freed pages go back to
/// the system after a second rather than ten, and are not kept
/// half-released. Read once, when the first allocation starts jemalloc.
#[export_name = "malloc_conf"]
static MALLOC_CONF: &u8 = &b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

/// Threads of the async runtime's blocking pool (tokio's default: 512).
/// Each plugin call holds one for its length, and a plugin's host calls wait
/// there on memory reads and writes that need another (storage reads, the
/// leader's background fsync; an apply or a follower's fsynced append runs
/// on the worker thread that waits for it, `zeromesh_storage::run_blocking`,
/// and never waits for this pool): with a thread for every call the plugin
/// semaphore admits and `STORAGE_BLOCKING_THREADS` more, those always find
/// one. Bounded, and with plugin calls no longer in `block_in_place`, a
/// busy node keeps fewer threads, stacks and allocator caches: in the soak
/// the node taking every kind of request kept 66 to 91 threads before, 23
/// to 39 now, and stayed within 128 MiB (BENCHMARKS.md, "Soak").
const BLOCKING_THREADS: usize = MAX_PLUGIN_CALLS_IN_FLIGHT + STORAGE_BLOCKING_THREADS;
const STORAGE_BLOCKING_THREADS: usize = 16;

fn main() -> std::process::ExitCode {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(BLOCKING_THREADS).build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: starting the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            let unknown = error
                .chain()
                .any(|cause| matches!(cause.downcast_ref(), Some(zeromesh::client::ClientError::OutcomeUnknown(_))));
            std::process::ExitCode::from(if unknown { EXIT_OUTCOME_UNKNOWN } else { 1 })
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Commands::Run(args) = &cli.command {
        // The settings first: they choose the log's format.
        let config = NodeConfig::resolve(args)?;
        zeromesh::logging::init(config.log_format);
        return zeromesh::runtime::run(config).await;
    }
    if let Commands::Restore { file, run } = &cli.command {
        anyhow::ensure!(
            run.init,
            "restore starts a new cluster from the backup: give --init (and the settings `run` takes)"
        );
        let mut config = NodeConfig::resolve(run)?;
        zeromesh::logging::init(config.log_format);
        config.restore = Some(file.clone());
        return zeromesh::runtime::run(config).await;
    }
    zeromesh::logging::init(zeromesh::logging::LogFormat::Human);
    match cli.command {
        Commands::Run(_) | Commands::Restore { .. } => unreachable!("handled above"),
        Commands::Backup { node, out } => backup_cli::backup(&node, &out).await,
        Commands::Keygen { data } => {
            let keypair = zeromesh::identity::generate(&zeromesh::identity::key_path(&data))?;
            let peer_id = keypair.public().to_peer_id();
            println!("peer_id={peer_id} node_id={}", zeromesh::identity::node_id_of(&peer_id));
            Ok(())
        }
        Commands::Status { node, json, wait_members, wait_timeout } => {
            if let Some(members) = wait_members {
                client_cli::wait_for_members(&node, members, std::time::Duration::from_secs(wait_timeout)).await?;
            }
            client_cli::status(&node, json).await
        }
        Commands::Config { command: ConfigCommand::Check(args) } => {
            let config = NodeConfig::resolve(&args)?;
            println!("data        {}", config.data_dir.display());
            println!("listen      {}", config.listen);
            println!("api         {} ({})", config.api, if config.tls.is_some() { "TLS" } else { "plain" });
            println!("bootstrap   {} peer(s){}", config.bootstrap.len(), if config.init { ", --init" } else { "" });
            println!("advertise   {}", config.advertise_host.as_deref().unwrap_or("(the listen address)"));
            println!("voters      {}", config.voter_count);
            println!("disk kept   {} MiB", config.min_free_disk >> 20);
            let background = match config.raft.storage_background_write_bytes_per_sec >> 20 {
                0 => "no limit".to_owned(),
                rate => format!("{rate} MiB/s"),
            };
            println!(
                "storage     {} MiB in memory, background writes {background}",
                config.raft.storage_memory_bytes >> 20
            );
            println!("log format  {:?}", config.log_format);
            println!("mesh        {}", if config.private_mesh_key.is_some() { "private" } else { "open" });
            println!("auth        {}", if config.dev { "off (--dev)" } else { "tokens" });
            println!("ok");
            Ok(())
        }
        Commands::SetVoters { count, node } => {
            let mut client = zeromesh::client::ApiClient::connect(&node).await?;
            let answer = client.call_tool("cluster_set_voters", serde_json::json!({ "count": count })).await?;
            println!("the cluster keeps {} voters (log index {})", answer["voter_count"], answer["log_index"]);
            Ok(())
        }
        Commands::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "zeromesh", &mut std::io::stdout());
            Ok(())
        }
        Commands::Memory { node, command } => client_cli::memory(&node, command).await,
        Commands::Demo { data, nodes, writes, clean } => demo::run(&data, nodes, writes, clean).await,
        Commands::Token { command: TokenCommand::Generate, .. } => {
            let (text, _) = zeromesh::tokens::mint(zeromesh_protocol::auth::Role::Admin, None)?;
            println!("{text}");
            Ok(())
        }
        Commands::Token { node, command } => {
            let mut client = zeromesh::client::ApiClient::connect(&node).await?;
            match command {
                TokenCommand::Generate => unreachable!("handled above"),
                TokenCommand::Create { role, agent } => {
                    let made =
                        client.call_tool("token_create", serde_json::json!({ "role": role, "agent": agent })).await?;
                    println!("{}", made["token"].as_str().unwrap_or_default());
                    eprintln!(
                        "token {} ({role}) created; it is shown only now",
                        made["id"].as_str().unwrap_or_default()
                    );
                }
                TokenCommand::Revoke { id } => {
                    client.call_tool("token_revoke", serde_json::json!({ "id": id })).await?;
                    println!("revoked {id}");
                }
                TokenCommand::List => {
                    let listed = client.call_tool("token_list", serde_json::json!({})).await?;
                    for token in listed["tokens"].as_array().into_iter().flatten() {
                        println!(
                            "{} {} {}",
                            token["id"].as_str().unwrap_or_default(),
                            token["role"].as_str().unwrap_or_default(),
                            token["agent"].as_str().unwrap_or("-")
                        );
                    }
                }
            }
            Ok(())
        }
        Commands::Cert(CertCommand::SelfSigned { names, cert, key, force }) => {
            for path in [&cert, &key] {
                if path.exists() && !force {
                    anyhow::bail!("{} exists; pass --force to replace it", path.display());
                }
            }
            let (cert_pem, key_pem) = zeromesh::tls::self_signed(&names)?;
            std::fs::write(&cert, cert_pem).with_context(|| format!("writing {}", cert.display()))?;
            plugin_cli::write_secret(&key, key_pem.trim_end())?;
            println!("{}", cert.display());
            eprintln!("self-signed for {}; key in {} (mode 0600)", names.join(", "), key.display());
            Ok(())
        }
        Commands::MeshKey { out, force } => {
            if out.exists() && !force {
                anyhow::bail!("{} exists; pass --force to replace it", out.display());
            }
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|error| anyhow::anyhow!("no randomness for the key: {error}"))?;
            plugin_cli::write_secret(&out, &libp2p::pnet::PreSharedKey::new(key).to_string())?;
            eprintln!("private mesh key in {}; give every node --private-mesh-key {}", out.display(), out.display());
            Ok(())
        }
        Commands::McpStdio { node } => zeromesh::stdio_bridge::run(&node).await,
        Commands::Plugin(command) => plugin_cli::run(command).await,
        Commands::Agent { node, command } => agent_cli::run(&node, command).await,
        Commands::Agreement { node, command } => agreement_cli::run(&node, command).await,
        Commands::Policy { node, command } => policy_cli::run(&node, command).await,
        Commands::Trace { node, command } => trace_cli::run(&node, command).await,
        Commands::Server { node, command } => server_cli::run(&node, command).await,
    }
}
