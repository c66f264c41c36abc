//! The tools that describe the node: `cluster_status` (with each member's
//! trace tree size and root) and `mesh_peers`; `cluster_set_voters`, the
//! cluster's voter count; and, with `--test-faults`, `mesh_isolate`,
//! `mesh_heal`, `mesh_refuse_links` and `offload_forge_receipts`.

use std::sync::Arc;
use std::time::Instant;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use zeromesh_kernel::Access;
use zeromesh_protocol::{ClusterCommand, ClusterOutcome, Command, CommandReply};

use super::{invalid, Invocation, NoArgs, ToolDecl, ToolEnv, ToolOutcome};
use crate::cluster::Cluster;

pub(super) fn tools() -> Vec<ToolDecl> {
    vec![
        ToolDecl::new(
            "cluster_status",
            "Leader, term, voters, non-voters and each member's log position and trace root.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, _: NoArgs| async move { Ok(cluster_status(&env.cluster).await) },
        ),
        ToolDecl::new(
            "mesh_peers",
            "Connected peers and the resource adverts this node has received.",
            Access::Observe,
            |env: Arc<ToolEnv>, _: Invocation, _: NoArgs| async move { Ok(mesh_peers(&env.cluster)) },
        ),
        ToolDecl::new(
            "cluster_set_voters",
            "Sets how many voters the cluster keeps (1 to 7): the leader promotes caught-up non-voters up to it.",
            Access::Admin,
            set_voters,
        ),
        ToolDecl::new(
            "mesh_isolate",
            "TEST ONLY: drop all mesh traffic to and from these peers.",
            Access::Admin,
            isolate,
        )
        .test_only(),
        ToolDecl::new(
            "mesh_heal",
            "TEST ONLY: undo every mesh_isolate.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, _: NoArgs| async move {
                env.cluster.mesh.heal();
                Ok(json!({ "isolated": [] }))
            },
        )
        .test_only(),
        ToolDecl::new(
            "mesh_refuse_links",
            "TEST ONLY: stop serving mesh links and close those peers opened, as a node that predates them.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, _: NoArgs| async move {
                env.cluster.mesh.refuse_links();
                Ok(json!({ "links": "refused" }))
            },
        )
        .test_only(),
        ToolDecl::new(
            "offload_forge_receipts",
            "TEST ONLY: sign the receipts of calls this node runs for peers with a key not its own.",
            Access::Admin,
            |env: Arc<ToolEnv>, _: Invocation, args: ForgeArgs| async move {
                env.plugins.forge_receipts(args.forge);
                Ok(json!({ "forging": args.forge }))
            },
        )
        .test_only(),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ForgeArgs {
    /// Forge from now on (true) or sign with the node's own key again (false).
    forge: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct VotersArgs {
    /// Voters to keep, 1 to 7. A lower count than the voters there are demotes no one.
    #[schemars(range(min = 1, max = 7))]
    count: u64,
}

async fn set_voters(env: Arc<ToolEnv>, _: Invocation, args: VotersArgs) -> ToolOutcome {
    let command = ClusterCommand::SetVoterCount { count: args.count };
    command.validate().map_err(|error| invalid("cluster_set_voters", error))?;
    let (log_index, reply) = env.cluster.propose(Command::Cluster(command)).await?;
    let CommandReply::Cluster(ClusterOutcome::VoterCountSet { count, previous }) = reply else {
        return Err(invalid("cluster_set_voters", format!("an unexpected reply: {reply:?}")));
    };
    Ok(json!({ "voter_count": count, "previous": previous, "log_index": log_index }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PeersArgs {
    /// libp2p peer ids.
    peers: Vec<String>,
}

async fn isolate(env: Arc<ToolEnv>, _: Invocation, args: PeersArgs) -> ToolOutcome {
    let mut peers = Vec::new();
    for text in &args.peers {
        peers.push(
            text.parse::<libp2p::PeerId>()
                .map_err(|_| invalid("mesh_isolate", format!("{text:?} is not a peer id")))?,
        );
    }
    env.cluster.mesh.isolate(peers);
    Ok(json!({ "isolated": env.cluster.mesh.isolated().iter().map(ToString::to_string).collect::<Vec<_>>() }))
}

/// Leader, term, voters and non-voters as this node sees them, and each
/// member's addresses in the membership (where the cluster reaches it) and
/// own log position (asked over the mesh; `error` when it did not answer).
async fn cluster_status(cluster: &Cluster) -> Value {
    let own = cluster.own_status();
    let members: Vec<Value> = cluster
        .member_statuses()
        .await
        .into_iter()
        .map(|(id, (info, answer))| match answer {
            Ok(status) => json!({
                "node_id": id,
                "voter": own.voters.contains(&id),
                "reachable": true,
                "role": status.role,
                "term": status.term,
                "last_log_index": status.last_log_index,
                "applied_index": status.applied_index,
                "snapshot_index": status.snapshot_index,
                "trace_size": status.trace_size,
                "trace_root": status.trace_root,
                "peer_id": status.peer_id,
                "p2p_addr": info.p2p_addr,
                "api_addr": info.api_addr,
            }),
            Err(error) => json!({
                "node_id": id,
                "voter": own.voters.contains(&id),
                "reachable": false,
                "error": error,
                "p2p_addr": info.p2p_addr,
                "api_addr": info.api_addr,
            }),
        })
        .collect();
    json!({
        "node_id": own.node_id,
        "peer_id": own.peer_id,
        "role": own.role,
        "term": own.term,
        "leader": own.leader,
        "voters": own.voters,
        "non_voters": own.non_voters,
        "voter_count": cluster.voter_count(),
        "members": members,
        "mesh_peers": cluster.mesh.connected_peers().len(),
        "trace": {
            "size": own.trace_size,
            "root": own.trace_root,
            "checkpoint_size": *cluster.checkpoints.latest_size.borrow(),
        },
    })
}

/// Connected peers and the resource table.
fn mesh_peers(cluster: &Cluster) -> Value {
    let now = Instant::now();
    let connected: Vec<Value> = cluster
        .mesh
        .connected_peers()
        .into_iter()
        .map(|peer| {
            json!({
                "peer_id": peer.peer_id.to_string(),
                "addresses": peer.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "rtt_ms": peer.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
            })
        })
        .collect();
    let adverts: Vec<Value> = cluster
        .mesh
        .adverts()
        .into_iter()
        .map(|known| {
            let advert = known.advert;
            json!({
                "peer_id": advert.peer_id,
                "node_id": advert.node_id,
                "listen_addrs": advert.listen_addrs,
                "api_addr": advert.api_addr,
                "version": advert.version,
                "free_cpu_millicores": advert.free_cpu_millicores,
                "free_memory_bytes": advert.free_memory_bytes,
                "load_milli": advert.load_milli,
                "cores": advert.cores,
                "runs_plugins": advert.runs_plugins,
                "plugin_hashes": advert.plugin_hashes,
                "free_disk_bytes": advert.free_disk_bytes,
                "min_free_disk_bytes": advert.min_free_disk_bytes,
                "sequence": advert.sequence,
                "age_ms": now.saturating_duration_since(known.received_at).as_millis() as u64,
            })
        })
        .collect();
    let counters = cluster.mesh.counters();
    json!({
        "peer_id": cluster.mesh.peer_id().to_string(),
        "connected": connected,
        "adverts": adverts,
        "adverts_received": counters.adverts_received,
        "adverts_rejected": counters.adverts_rejected,
        "adverts_published": counters.adverts_published,
        "offload_refused_busy": counters.offload_refused_busy,
    })
}
