//! The node's runtime: starts the mesh, Raft over it, the plugin runtime,
//! the tools and the peer API, hands each part the narrow surface it needs,
//! and runs them until the node is stopped.

mod advertise;
mod test_clock;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use zeromesh_consensus::ConsensusNode;
use zeromesh_plugins::HostLimits;
use zeromesh_protocol::{ClusterCommand, Command, MemberInfo};

use crate::api::auth::Auth;
use crate::api::ApiState;
use crate::cluster::{self, Cluster, Inbound, Liveness, MeshTransport};
use crate::config::NodeConfig;
use crate::identity;
use crate::mesh::{MeshConfig, MeshHandle};
use crate::plugins::{FederationSettings, OffloadServer, OffloadSettings, PluginRuntime};
use crate::tools::{self, ToolEnv, Tooling};

/// Starts the node described by `config` and runs it until Ctrl-C or
/// SIGTERM, or until the cluster refuses to admit it.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let keypair = identity::load_or_generate(&config.data_dir)?;
    let peer_id = keypair.public().to_peer_id();
    let node_id = identity::node_id_of(&peer_id);
    crate::logging::set_node_id(node_id);

    let api_listener = tokio::net::TcpListener::bind(config.api)
        .await
        .with_context(|| format!("the peer API cannot listen on {} (setting `api`)", config.api))?;
    let api_addr = api_listener.local_addr()?;

    let inbound = Inbound::default();
    let mesh = MeshHandle::start(
        MeshConfig {
            keypair: keypair.clone(),
            private_mesh_key: config.private_mesh_key,
            listen: config.listen.clone(),
            bootstrap: config.bootstrap.clone(),
            advert_ttl: config.advert_ttl,
        },
        Arc::new(inbound.clone()),
    )
    .await
    .with_context(|| format!("the mesh cannot listen on {} (setting `listen`)", config.listen))?;
    let p2p_addr = advertised_p2p(&mesh, &config).await?;
    let api_scheme = if config.tls.is_some() { "wss" } else { "ws" };
    let api_host = advertised_api_host(&config, &p2p_addr, api_addr);
    let info = MemberInfo { p2p_addr: p2p_addr.to_string(), api_addr: format!("{api_scheme}://{api_host}") };

    let raft_dir = config.data_dir.join("raft");
    let restored = match &config.restore {
        Some(backup) => {
            let restoring = crate::cli::spinner(format!("restoring {}", backup.display()));
            let restored = zeromesh_consensus::restore(&raft_dir, backup, node_id, info.clone())
                .await
                .with_context(|| format!("restoring {} into {}", backup.display(), raft_dir.display()));
            restoring.finish_and_clear();
            let restored = restored?;
            println!(
                "restored log index {} ({} records, {} plugin modules) from {}",
                restored.log_index,
                restored.records,
                restored.modules,
                backup.display()
            );
            true
        }
        None => false,
    };
    let liveness = Liveness::default();
    let consensus =
        ConsensusNode::open(node_id, &raft_dir, &config.raft, MeshTransport::new(mesh.clone(), liveness.clone()))
            .await
            .with_context(|| format!("opening the Raft store in {}", raft_dir.display()))?;
    let cluster = Arc::new(
        Cluster::new(
            consensus,
            mesh.clone(),
            info.clone(),
            liveness,
            config.voter_count,
            config.voter_timeout,
            &config.data_dir,
        )?
        .with_checkpoint_key(cluster::signing_key(&keypair)?)
        .with_member_removal(config.member_remove_after)
        .with_disk_reserve(config.min_free_disk),
    );
    cluster.load_checkpoint().await;
    inbound.set(cluster.clone());
    let offload = OffloadSettings {
        run_plugins: config.run_plugins,
        offload_above_milli: config.offload_above_milli,
        keypair: keypair.clone(),
    };
    let federation =
        FederationSettings { node_id, labels: config.labels.clone(), folder: config.data_dir.join("federation") };
    let plugins = Arc::new(PluginRuntime::new(HostLimits::default(), tools::builtin_names(), offload, federation)?);
    mesh.set_offload_handler(Arc::new(OffloadServer { runtime: plugins.clone(), cluster: cluster.clone() }));
    let tool_env = Arc::new(ToolEnv {
        cluster: cluster.clone(),
        plugins: plugins.clone(),
        test_faults: config.test_faults,
        leasing: Arc::new(tools::Leasing::new(config.lease_calls)),
        policies: tools::PolicyCache::default(),
        usage_proofs: Arc::new(tools::UsageProofs::new(&config.data_dir)?),
    });
    tokio::spawn(tools::Leasing::return_idle(tool_env.clone()));
    let api = Arc::new(ApiState {
        cluster: cluster.clone(),
        plugins: plugins.clone(),
        tools: Tooling::new(tool_env),
        auth: Auth::new(config.dev, config.rate_limit_per_token),
        metrics: Default::default(),
        idle_timeout: config.api_idle_timeout,
        tasks: Default::default(),
        backup: Default::default(),
    });

    let initialized = cluster.consensus.is_initialized().await?;
    let mut founded = false;
    if restored {
        // A new cluster: its own join token; the backup's API tokens stay.
        let token = new_token()?;
        cluster.remember_token(&token)?;
        println!("join_token={token}");
    } else if !initialized && config.init {
        // The operator's join token (from a secret store, say) if given;
        // else a new one, shown once: nodes keep only its hash.
        let token = match &config.join_token {
            Some(given) => given.clone(),
            None => {
                let token = new_token()?;
                println!("join_token={token}");
                token
            }
        };
        cluster.remember_token(&token)?;
        cluster.consensus.initialize(BTreeMap::from([(node_id, info.clone())])).await?;
        founded = true;
    } else if initialized && config.init {
        tracing::warn!("this node already belongs to a cluster; --init is ignored");
    }
    if founded {
        // The operator's (not shown again), or a new one shown once.
        let given = config.admin_token.as_deref();
        let token = first_admin_token(&cluster, given).await?;
        if given.is_none() {
            println!("admin_token={token}");
        }
        // The cluster's voter count is the founding node's, whichever node leads later.
        let count = config.voter_count as u64;
        cluster.propose(Command::Cluster(ClusterCommand::SetVoterCount { count })).await?;
    }
    println!("ready node_id={node_id} peer_id={peer_id} p2p={p2p_addr} api={}", info.api_addr);

    tokio::spawn(crate::api::serve(api_listener, api, config.tls.clone()));
    tokio::spawn(cluster::upkeep(cluster.clone()));
    tokio::spawn(cluster::checkpoints(cluster.clone(), config.checkpoint_interval));
    tokio::spawn(plugins.clone().run(cluster.clone()));
    tokio::spawn(plugins.federation.clone().run(cluster.clone()));
    let federation = plugins.federation.clone();
    tokio::spawn(advertise::publish(cluster.clone(), plugins, keypair, config.advert_interval));
    if let Some(path) = config.test_clock_file.clone() {
        tokio::spawn(test_clock::follow(path));
    }

    let joining = async {
        if initialized || config.init {
            return std::future::pending::<anyhow::Result<()>>().await;
        }
        let token = config.join_token.clone().context(
            "this node has no cluster yet: give --join-token (or ZEROMESH_JOIN_TOKEN) with --bootstrap to join one, or --init to start one",
        )?;
        if config.bootstrap.is_empty() {
            anyhow::bail!(
                "this node has no cluster yet: give --bootstrap <multiaddr> to join one, or --init to start one"
            );
        }
        cluster::join(&cluster, &config.bootstrap, &token).await?;
        println!("joined node_id={node_id}");
        std::future::pending::<anyhow::Result<()>>().await
    };
    let outcome = tokio::select! {
        outcome = joining => outcome,
        signal = shutdown_signal() => signal,
    };
    // The federated servers' processes go first, so none outlives the node.
    federation.stop_all().await;
    // Background tasks still hold the cluster: stop Raft through its handle.
    // Why the node stops matters more than how the stop went: report both,
    // return the first.
    if let Err(error) = cluster.consensus.raft().shutdown().await {
        tracing::warn!(%error, "Raft did not stop cleanly");
    }
    outcome
}

/// Creates the cluster's first admin token through Raft, once this new
/// single-member cluster has elected itself: `given`, or a new one. Nodes
/// keep only its hash.
async fn first_admin_token(cluster: &Cluster, given: Option<&str>) -> anyhow::Result<String> {
    let (token, command) = match given {
        Some(text) => (text.to_owned(), crate::tokens::admin_command(text)?),
        None => crate::tokens::mint(zeromesh_protocol::auth::Role::Admin, None)?,
    };
    let (_, reply) = cluster
        .propose(zeromesh_protocol::Command::Token(command))
        .await
        .map_err(|error| anyhow::anyhow!("the first admin token was not created: {error}"))?;
    match reply {
        zeromesh_protocol::CommandReply::Token(zeromesh_protocol::auth::TokenOutcome::Created { .. }) => Ok(token),
        other => anyhow::bail!("the first admin token was not created: {other:?}"),
    }
}

/// How long a node listening on every interface waits for one other than
/// loopback to be reported, before it settles for loopback.
const INTERFACE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The mesh address the membership holds for this node: on the
/// `advertise_host` if set; else where it listens, preferring, when it
/// listens on every interface, one other than loopback.
async fn advertised_p2p(mesh: &MeshHandle, config: &NodeConfig) -> anyhow::Result<Multiaddr> {
    let everywhere = config.listen.iter().any(|part| match part {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    });
    let deadline = tokio::time::Instant::now() + INTERFACE_WAIT;
    let listening = loop {
        let listening = mesh.listen_addrs();
        let outside = listening.iter().any(|address| !is_loopback(address));
        if !everywhere || outside || tokio::time::Instant::now() >= deadline {
            break listening;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let first = listening.iter().find(|address| !is_loopback(address)).or(listening.first());
    let first = first.cloned().context("the mesh has no listen address")?;
    let Some(host) = &config.advertise_host else { return Ok(first) };
    let port = first
        .iter()
        .find_map(|part| if let Protocol::Tcp(port) = part { Some(port) } else { None })
        .context("the mesh listens on no TCP port")?;
    let mut address = host_multiaddr(host);
    address.push(Protocol::Tcp(port));
    address.push(Protocol::P2p(mesh.peer_id()));
    Ok(address)
}

fn is_loopback(address: &Multiaddr) -> bool {
    address.iter().any(|part| match part {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// `/ip4/...`, `/ip6/...` or `/dns/...` for a host.
fn host_multiaddr(host: &str) -> Multiaddr {
    let part = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => Protocol::Ip4(ip),
        Ok(std::net::IpAddr::V6(ip)) => Protocol::Ip6(ip),
        Err(_) => Protocol::Dns(host.to_owned().into()),
    };
    Multiaddr::empty().with(part)
}

/// `host:port` of the API as others reach it: the bound address, with the
/// advertised host (or the mesh address's IP) in place of an unspecified IP.
fn advertised_api_host(config: &NodeConfig, p2p: &Multiaddr, bound: std::net::SocketAddr) -> String {
    let port = bound.port();
    if let Some(host) = &config.advertise_host {
        return if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    }
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let ip = p2p.iter().find_map(|part| match part {
        Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    });
    std::net::SocketAddr::new(ip.unwrap_or(bound.ip()), port).to_string()
}

fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("no randomness for the join token: {error}"))?;
    Ok(hex::encode(bytes))
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}
