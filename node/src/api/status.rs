//! The answers of `cluster_status` and `mesh_peers`.

use std::time::Instant;

use serde_json::{json, Value};

use crate::cluster::NodeService;

/// Leader, term, voters and non-voters as this node sees them, and each
/// member's own log position (asked over the mesh; `error` when it did not
/// answer).
pub async fn cluster_status(service: &NodeService) -> Value {
    let own = service.own_status();
    let members: Vec<Value> = service
        .member_statuses()
        .await
        .into_iter()
        .map(|(id, answer)| match answer {
            Ok(status) => json!({
                "node_id": id,
                "voter": own.voters.contains(&id),
                "reachable": true,
                "role": status.role,
                "term": status.term,
                "last_log_index": status.last_log_index,
                "applied_index": status.applied_index,
                "snapshot_index": status.snapshot_index,
                "peer_id": status.peer_id,
                "p2p_addr": status.info.p2p_addr,
                "api_addr": status.info.api_addr,
            }),
            Err(error) => {
                json!({ "node_id": id, "voter": own.voters.contains(&id), "reachable": false, "error": error })
            }
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
        "members": members,
        "mesh_peers": service.mesh.connected_peers().len(),
    })
}

/// Connected peers and the resource table.
pub fn mesh_peers(service: &NodeService) -> Value {
    let now = Instant::now();
    let connected: Vec<Value> = service
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
    let adverts: Vec<Value> = service
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
                "plugin_hashes": advert.plugin_hashes,
                "sequence": advert.sequence,
                "age_ms": now.saturating_duration_since(known.received_at).as_millis() as u64,
            })
        })
        .collect();
    let counters = service.mesh.counters();
    json!({
        "peer_id": service.mesh.peer_id().to_string(),
        "connected": connected,
        "adverts": adverts,
        "adverts_received": counters.adverts_received,
        "adverts_rejected": counters.adverts_rejected,
        "adverts_published": counters.adverts_published,
    })
}
