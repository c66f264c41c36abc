//! A running node: its mesh, its Raft over the mesh, the cluster service
//! (forwarding, joins, status), membership upkeep and advert publishing.

mod advertise;
mod batcher;
mod inbound;
mod membership;
mod propose;
mod service;
mod transport;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use zeromesh_consensus::ConsensusNode;
use zeromesh_protocol::MemberInfo;

pub use membership::next_voters;
pub use service::{token_hash, NodeService, ServiceError};
pub use transport::member_address;

use crate::config::NodeConfig;
use crate::identity;
use crate::mesh::{MeshConfig, MeshHandle};

/// Starts the node described by `config` and runs it until Ctrl-C or
/// SIGTERM, or until the cluster refuses to admit it.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let keypair = identity::load_or_generate(&config.data_dir)?;
    let peer_id = keypair.public().to_peer_id();
    let node_id = identity::node_id_of(&peer_id);

    let api_listener = tokio::net::TcpListener::bind(config.api)
        .await
        .with_context(|| format!("the peer API cannot listen on {} (setting `api`)", config.api))?;
    let api_addr = api_listener.local_addr()?;

    let inbound = inbound::Inbound::default();
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
    let p2p_addr = mesh.listen_addrs().first().cloned().context("the mesh has no listen address")?;
    let api_scheme = if config.tls.is_some() { "wss" } else { "ws" };
    let info = MemberInfo { p2p_addr: p2p_addr.to_string(), api_addr: format!("{api_scheme}://{api_addr}") };

    let liveness = transport::Liveness::default();
    let consensus = ConsensusNode::open(
        node_id,
        &config.data_dir.join("raft"),
        &config.raft,
        transport::MeshTransport::new(mesh.clone(), liveness.clone()),
    )
    .await
    .with_context(|| format!("opening the Raft store in {}", config.data_dir.join("raft").display()))?;
    let service = Arc::new(NodeService::new(
        consensus,
        mesh.clone(),
        info.clone(),
        liveness,
        config.voter_count,
        config.voter_timeout,
        config.test_faults,
        &config.data_dir,
        crate::api::auth::Auth::new(config.dev, config.rate_limit_per_token),
        config.api_idle_timeout,
    )?);
    inbound.set(service.clone());

    let initialized = service.consensus.is_initialized().await?;
    let mut join_token_line = None;
    if !initialized && config.init {
        let token = new_token()?;
        service.remember_token(&token)?;
        service.consensus.initialize(BTreeMap::from([(node_id, info.clone())])).await?;
        join_token_line = Some(token);
    } else if initialized && config.init {
        tracing::warn!("this node already belongs to a cluster; --init is ignored");
    }
    if let Some(token) = &join_token_line {
        // Shown once: nodes keep only its hash.
        println!("join_token={token}");
        println!("admin_token={}", first_admin_token(&service).await?);
    }
    println!("ready node_id={node_id} peer_id={peer_id} p2p={p2p_addr} api={}", info.api_addr);

    tokio::spawn(crate::api::serve(api_listener, service.clone(), config.tls.clone()));
    tokio::spawn(membership::upkeep(service.clone()));
    tokio::spawn(crate::plugins::PluginRuntime::run(service.clone()));
    tokio::spawn(advertise::publish(service.clone(), keypair, config.advert_interval));

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
        membership::join(&service, &config.bootstrap, &token).await?;
        println!("joined node_id={node_id}");
        std::future::pending::<anyhow::Result<()>>().await
    };
    let outcome = tokio::select! {
        outcome = joining => outcome,
        signal = shutdown_signal() => signal,
    };
    // Background tasks still hold the service: stop Raft through its handle.
    // Why the node stops matters more than how the stop went: report both,
    // return the first.
    if let Err(error) = service.consensus.raft().shutdown().await {
        tracing::warn!(%error, "Raft did not stop cleanly");
    }
    outcome
}

/// Creates the cluster's first admin token through Raft, once this new
/// single-member cluster has elected itself. Shown once: nodes keep its hash.
async fn first_admin_token(service: &NodeService) -> anyhow::Result<String> {
    let (token, command) = crate::api::auth::new_token(zeromesh_protocol::auth::Role::Admin, None)?;
    let (_, reply) = service
        .propose(zeromesh_protocol::Command::Token(command))
        .await
        .map_err(|error| anyhow::anyhow!("the first admin token was not created: {error}"))?;
    match reply {
        zeromesh_protocol::CommandReply::Token(zeromesh_protocol::auth::TokenOutcome::Created { .. }) => Ok(token),
        other => anyhow::bail!("the first admin token was not created: {other:?}"),
    }
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
